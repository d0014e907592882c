"""A clip session's shot ids (:class:`ShotLog`): the shot-cut detector of
:mod:`vosfx.session.shots` fed the session's frames once each, in order from the range start.

A memory policy whose row says ``needs_shots`` (:data:`vosfx.policies.MEMORY_POLICIES`) asks
for them, and so does a caller whose refiner smooths over time (``ClipSession(detect_shots=)``:
its temporal filter must not blend across a cut); otherwise each frame is shot 0 and no
detector is made. A sweep
asks for each frame it visits (:meth:`ShotLog.see`); frames the detector has not seen before
it are fetched from the session's frame provider first, so the ids never depend on where a
sweep started. ``cuts`` lists the frames inside the range where a new shot starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vosfx.config import MemoryConfig
from vosfx.errors import PromptError
from vosfx.types import Frame

if TYPE_CHECKING:
    from vosfx.session.clip import FrameProvider
    from vosfx.session.shots import ShotDetector


class ShotLog:
    """Shot ids of the frames from ``start`` on that the detector has seen.

    ``memory``: the detector's settings (``shot_threshold``, ``shot_min_frames``).
    ``frames``: the session's provider, for frames the detector missed (None: a session that
    only sweeps its own frames in order, which must not miss any). ``enabled``: the policy
    needs shots; False, every frame is shot 0.
    """

    def __init__(
        self, memory: MemoryConfig, start: int, frames: FrameProvider | None, *, enabled: bool
    ) -> None:
        self.memory, self.start, self.frames, self.enabled = memory, start, frames, enabled
        self._shots: dict[int, int] = {}
        self._detector: ShotDetector | None = None  # made on the first frame that needs it
        self.next_index = start  # the next frame the detector sees
        self.cuts: list[int] = []

    def see(self, frame: Frame) -> int:
        """The frame's shot id; the detector sees every frame in order from the range start
        (frames it missed are fetched from the provider first)."""
        if not self.enabled:
            return 0
        if frame.index in self._shots:
            return self._shots[frame.index]
        if self._detector is None:
            from vosfx.session.shots import ShotDetector

            self._detector = ShotDetector(
                threshold=self.memory.shot_threshold, min_shot_frames=self.memory.shot_min_frames
            )
        while self.next_index < frame.index:
            if self.frames is None:
                raise PromptError(f"internal: shot detector missed frames before {frame.index}")
            self._push(self.frames.get(self.next_index))
        return self._push(frame)

    def _push(self, frame: Frame) -> int:
        assert self._detector is not None
        sid = self._detector.push(frame)
        if sid != self._shots.get(frame.index - 1, 0) and frame.index > self.start:
            self.cuts.append(frame.index)
        self._shots[frame.index] = sid
        self.next_index = frame.index + 1
        return sid

    def shot_id(self, frame_index: int) -> int:
        """The frame's shot id as seen so far (0 for a frame the detector has not seen)."""
        return self._shots.get(frame_index, 0)


__all__ = ["ShotLog"]

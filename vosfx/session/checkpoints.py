"""Snapshots of a session's tracking passes, so that a correction replays a few frames and a
pass stopped part-way goes on from where it stopped.

A click on a frame a pass tracked is decoded with the memory that pass attended there
(docs/session.md), which exists only once the pass has stepped every frame before it. Without
snapshots the session replays the pass from its prompted frame: exact, but as many frames of
memory attention as the click is far from that frame (minutes on a CPU for a frame a few
hundred frames on). So while a session tracks, :class:`PassCheckpoints` keeps the engine's
snapshot of each pass (:meth:`Tracker.snapshot`) every ``spacing`` frames, and a correction
resumes from the nearest one before the clicked frame: at most ``spacing - 1`` frames replayed,
the same result bit for bit (tests/test_session_checkpoints.py).

A snapshot shares the bank's arrays with the pass and with the other snapshots (a memory is
stored once however many snapshots hold it), so they cost what they keep alive: about one
frame's memory (1 MiB at 1024) per frame tracked at the first spacing. Within the byte budget
they stay; above it the spacing doubles and every other snapshot goes, so a long clip keeps
snapshots over its whole length, further apart. Snapshots belong to a pass as computed with
its prompted frames' current versions (:meth:`PromptBook.key`): a changed prompt makes its
passes' snapshots unreachable, and they are dropped when the next sweep starts.

Each pass also keeps the snapshots after its last :data:`RECENT` steps, off the spacing: a
viewer stopped on the frame a pass has just tracked (the OpenFX effect's worker tracks up to
the frame the host shows), or stepped a frame back from it, is where a correction comes most
often, and it then resumes from the frame before with nothing to replay. They cost about one
frame's memory each, and go with their pass's. A sweep stopped part-way (a cancelled track)
leaves them after the last frame it computed: the next sweep resumes the pass there
(``ClipSession.resume_point``) instead of tracking it again from its prompt.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from vosfx.types import nbytes

# what the snapshots may keep alive (the feature LRU's own budget is 256 MiB)
CHECKPOINT_BYTES = 128 << 20
# frames between two snapshots of a pass to start with (doubled whenever over the budget)
FIRST_SPACING = 4
# snapshots kept after each pass's last steps, whatever the spacing
RECENT = 3


class PassCheckpoints:
    """Per pass (its key), snapshots by the frame they were taken after. ``engine``: the
    engine session (``snapshot``, ``snapshot_arrays``); ``budget``: bytes, 0 keeps none."""

    def __init__(self, engine: Any, budget: int = CHECKPOINT_BYTES) -> None:
        self.engine = engine
        self.budget = int(budget)
        self.spacing = FIRST_SPACING
        self.bytes = 0  # of the distinct arrays the snapshots hold
        self._snaps: dict[Hashable, tuple[int, dict[int, Any]]] = {}  # key -> (anchor, frames)
        self._recent: dict[Hashable, dict[int, Any]] = {}  # key -> the last RECENT steps'
        self._held: dict[int, tuple[Any, int]] = {}  # id(array) -> (array, snapshots holding it)

    def after_step(self, key: Hashable, anchor: int, pass_id: int, frame_index: int) -> None:
        """The pass ``pass_id`` (keyed ``key``, from ``anchor``) has just stepped
        ``frame_index``: snapshot it, kept as one of its last steps' and, if that is on the
        spacing, for good."""
        if self.budget <= 0:
            return
        snap = self.engine.snapshot(pass_id)
        if snap is None:  # a pass whose corrections are refused (SAM2Long)
            return
        recent = self._recent.setdefault(key, {})
        recent[frame_index] = snap
        self._hold(snap, +1)
        while len(recent) > RECENT:  # steps go one way: the first one in is the oldest
            self._hold(recent.pop(next(iter(recent))), -1)
        if abs(frame_index - anchor) % self.spacing == 0:
            self._snaps.setdefault(key, (anchor, {}))[1][frame_index] = snap
            self._hold(snap, +1)
        while self.bytes > self.budget and any(f for _a, f in self._snaps.values()):
            self._space_out()

    def latest(self, key: Hashable, direction: int, before: int) -> tuple[int, Any] | None:
        """The snapshot of pass ``key`` nearest to frame ``before`` on the pass's side of it
        (taken after a frame the pass reaches first), as (frame, snapshot); None if none."""
        frames = {**self._snaps.get(key, (0, {}))[1], **self._recent.get(key, {})}
        behind = [u for u in frames if (u - before) * direction < 0]
        if not behind:
            return None
        u = max(behind, key=lambda f: f * direction)
        return u, frames[u]

    def keep_only(self, keys: Iterable[Hashable]) -> None:
        """Drop the snapshots of every pass not in ``keys`` (passes of outdated prompts)."""
        keep = set(keys)
        for key in [k for k in self._snaps if k not in keep]:
            for snap in self._snaps.pop(key)[1].values():
                self._hold(snap, -1)
        for key in [k for k in self._recent if k not in keep]:
            for snap in self._recent.pop(key).values():
                self._hold(snap, -1)

    def clear(self) -> None:
        self.keep_only(())

    def __len__(self) -> int:
        return sum(len(frames) for _anchor, frames in self._snaps.values())

    def _space_out(self) -> None:
        """Double the spacing: the snapshots off it go."""
        self.spacing *= 2
        for anchor, frames in self._snaps.values():
            for u in [u for u in frames if abs(u - anchor) % self.spacing]:
                self._hold(frames.pop(u), -1)

    def _hold(self, snap: Any, step: int) -> None:
        """Count ``snap``'s arrays in (+1) or out (-1); :attr:`bytes` counts each array once."""
        for a in self.engine.snapshot_arrays(snap):
            held = self._held.get(id(a), (a, 0))[1] + step
            if held == 0:
                del self._held[id(a)]
                self.bytes -= nbytes(a)
            else:
                if held == 1 and step > 0:
                    self.bytes += nbytes(a)
                self._held[id(a)] = (a, held)


__all__ = ["CHECKPOINT_BYTES", "FIRST_SPACING", "RECENT", "PassCheckpoints"]

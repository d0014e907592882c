"""A clip session's prompts and which passes of the rule they leave stale (:class:`PromptBook`).

The book holds each object's prompt per prompted frame, the prompts a sweep still has to
compute when it reaches their frames (a pipeline's, :meth:`ClipSession.set_prompts`), and the
passes of the rule (:mod:`vosfx.session.plan`) already computed. Each prompted frame has a
version, bumped whenever its prompt is set or removed or its output computed; a pass is up to
date while it is still in the plan and its anchor and neighbour have the versions it ran with.
So a prompt makes stale only its object's passes between its neighbouring prompted frames.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from vosfx.errors import PromptError
from vosfx.session.plan import PassPlan, plan_object
from vosfx.types import Prompt


class PassKey(NamedTuple):
    """A pass of the rule as computed: its plan and its prompted frames' versions."""

    obj_id: int
    anchor: int
    direction: int
    neighbour: int | None
    start: int
    stop: int
    anchor_version: int | None
    neighbour_version: int | None


class PromptBook:
    """The prompts of one session over the frames [``start``, ``end``), and its passes
    computed so far; ``backward``: the rule tracks backwards (``[memory] track_backward``)."""

    def __init__(self, start: int, end: int, *, backward: bool) -> None:
        self.start, self.end, self.backward = start, end, backward
        self.by_object: dict[int, dict[int, Prompt]] = {}  # obj -> frame -> prompt
        self.pending: dict[int, list[Prompt]] = defaultdict(list)  # frame -> to compute
        self._version: dict[tuple[int, int], int] = {}  # (obj, frame) -> anchor version
        self._counter = 0
        self._done: set[PassKey] = set()  # passes computed, with their anchors' versions

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.by_object))

    def prompts(self) -> list[Prompt]:
        return [
            p for obj in sorted(self.by_object) for _f, p in sorted(self.by_object[obj].items())
        ]

    def prompted_frames(self, obj_id: int) -> list[int]:
        return sorted(self.by_object.get(obj_id, {}))

    def defer(self, prompts: Iterable[Prompt]) -> None:
        """Prompts a sweep computes when it reaches their frames; later prompts for the same
        object and frame replace earlier."""
        for p in prompts:
            self.check(p)
            self.by_object.setdefault(p.obj_id, {})[p.frame_index] = p
            self.pending[p.frame_index] = [
                q for q in self.pending[p.frame_index] if q.obj_id != p.obj_id
            ] + [p]
            self.bump(p.obj_id, p.frame_index)
            self._overwritten(p.obj_id, range(p.frame_index, p.frame_index + 1))

    def put(self, prompt: Prompt) -> None:
        """``prompt``, whose output the caller has computed (and bumped): no sweep computes it
        again."""
        t, obj = prompt.frame_index, prompt.obj_id
        self.by_object.setdefault(obj, {})[t] = prompt
        self._overwritten(obj, range(t, t + 1))
        self.pending[t] = [q for q in self.pending.get(t, []) if q.obj_id != obj]

    def remove(self, obj_id: int, frame_index: int) -> None:
        """Drop the object's prompt on ``frame_index`` (the caller bumps its version once the
        frame's output is gone)."""
        frames = self.by_object.get(obj_id, {})
        if frame_index not in frames:
            raise PromptError(f"object {obj_id} has no prompt on frame {frame_index}")
        del frames[frame_index]
        self.pending[frame_index] = [
            q for q in self.pending.get(frame_index, []) if q.obj_id != obj_id
        ]

    def drop(self, obj_id: int) -> None:
        """The object's prompts, pending prompts and computed passes go."""
        self.by_object.pop(obj_id, None)
        for t in list(self.pending):
            self.pending[t] = [q for q in self.pending[t] if q.obj_id != obj_id]
        self._done = {k for k in self._done if k.obj_id != obj_id}

    def check(self, p: Prompt) -> None:
        if not self.start <= p.frame_index < self.end:
            raise PromptError(
                f"prompt for object {p.obj_id} on frame {p.frame_index} is "
                f"outside the frames being matted ({self.start}.."
                f"{self.end - 1})"
            )

    def bump(self, obj_id: int, frame_index: int) -> None:
        """The object's output on its prompted frame ``frame_index`` changed."""
        self._counter += 1
        self._version[(obj_id, frame_index)] = self._counter

    # --- passes -------------------------------------------------------------------------
    def plan(self) -> list[PassPlan]:
        """Every pass of the rule for the current prompts."""
        return [
            pl
            for obj in sorted(self.by_object)
            for pl in plan_object(
                obj, self.by_object[obj], self.start, self.end, backward=self.backward
            )
        ]

    def key(self, pl: PassPlan) -> PassKey:
        """The pass as computed with its prompted frames' current versions."""
        return PassKey(
            pl.obj_id,
            pl.anchor,
            pl.direction,
            pl.neighbour,
            pl.frames.start,
            pl.frames.stop,
            self._version.get((pl.obj_id, pl.anchor)),
            None if pl.neighbour is None else self._version.get((pl.obj_id, pl.neighbour)),
        )

    def running(self, pl: PassPlan) -> None:
        """``pl`` is about to write its frames (a sweep that may be cancelled half-way)."""
        self._overwritten(pl.obj_id, pl.frames)

    def ran(self, pl: PassPlan) -> None:
        """``pl`` has been computed with the current prompts (after :meth:`running`)."""
        self._done.add(self.key(pl))

    def _overwritten(self, obj_id: int, frames: range) -> None:
        """The object's results on ``frames`` are no longer those of the passes computed
        before: those passes are not done any more, so that a plan that needs one of them
        again (a prompt removed) computes it again instead of trusting what is stored."""
        self._done = {
            k
            for k in self._done
            if k.obj_id != obj_id or k.stop <= frames.start or frames.stop <= k.start
        }

    def stale(self) -> list[PassPlan]:
        """The passes whose results are missing or out of date."""
        return [pl for pl in self.plan() if self.key(pl) not in self._done]

    def covering(self, obj_id: int, frame_index: int) -> PassPlan | None:
        """The up-to-date pass whose result the object has on ``frame_index``, if any."""
        for pl in plan_object(
            obj_id,
            self.by_object.get(obj_id, {}),
            self.start,
            self.end,
            backward=self.backward,
        ):
            if frame_index in pl.frames and self.key(pl) in self._done:
                return pl
        return None


__all__ = ["PassKey", "PromptBook"]

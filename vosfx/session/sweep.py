"""One visit of a clip session's frames in order (:class:`Sweep`), doing its stale work.

The session (:mod:`vosfx.session.clip`) knows the prompts, the plan and the results; a sweep
walks the frames once and, at each, computes the prompts due there, stashes the frames a
segment will read back, steps the forward passes that stream with it, and at a segment's
right-hand prompted frame runs that segment's passes over the stashed frames.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from vosfx.errors import Cancelled, PromptError
from vosfx.session import corrections
from vosfx.session.plan import PassPlan
from vosfx.types import Frame

if TYPE_CHECKING:
    from typing_extensions import Self

    from vosfx.session.clip import ClipSession, FrameCallback


def span(session: ClipSession, until: int | None = None) -> range:
    """The frames a track visits to compute every stale pass (empty: nothing to do), or, with
    ``until``, every result up to that frame: a tail stops there (a later sweep resumes it,
    as after a Stop, or a sweep the OpenFX worker closes), a segment or lead-in reaching into
    it runs whole (to its right-hand prompted frame)."""
    stale, pending = session.stale(), session.pending_frames()
    if not stale and not pending:
        return range(0)
    lo = min([*session.first_to_step(stale).values(), *pending], default=session.start)
    hi = max(
        [pl.frames.stop if pl.is_tail else pl.due + 1 for pl in stale] + [t + 1 for t in pending],
        default=lo,
    )
    if until is not None:
        need = [until + 1] + [t + 1 for t in pending if t <= until]
        need += [pl.due + 1 for pl in stale if not pl.is_tail and pl.frames.start <= until]
        hi = min(hi, max(need))
    if session._shots.enabled:
        lo = min(lo, session._shots.next_index)
    return range(lo, max(lo, hi))


class Sweep:
    """One visit of a clip's frames in order, doing the session's stale work as it goes.

    :meth:`visit` each frame (consecutive indices). At a frame it computes that frame's
    pending prompts, stashes it if a segment will read it back, steps the forward passes of
    objects past their last prompted frame, and runs the segments whose right-hand prompted
    frame it is. ``visit(frame, keep=False)`` hands results to ``on_frame`` only (a pipeline
    past :meth:`ClipSession.split_point`, so nothing is stored for a long clip).
    """

    def __init__(
        self, session: ClipSession, on_frame: FrameCallback | None, cancel: threading.Event | None
    ) -> None:
        self.s, self.on_frame, self.cancel = session, on_frame, cancel
        stale = session.stale()
        # forward passes attending their anchor alone, by (object, anchor): an object has one
        # after its last prompted frame and one before each correction (rule d)
        self.tails = {(pl.obj_id, pl.anchor): pl for pl in stale if pl.is_tail}
        # where each tail starts stepping: after its prompted frame, or after the snapshot a
        # sweep stopped part-way left (ClipSession.resume_point), with that snapshot
        self.begin = {
            (pl.obj_id, pl.anchor): session.resume_point(pl) for pl in stale if pl.is_tail
        }
        self.segments: dict[int, list[PassPlan]] = defaultdict(list)  # due frame -> passes
        self.need_stash = np.zeros(session.info.num_frames, np.int32)
        for pl in stale:
            if pl.is_tail:  # its frames before where it starts stay computed
                first = self.begin[(pl.obj_id, pl.anchor)][0]
                session._book.running(dataclasses.replace(pl, frames=range(first, pl.frames.stop)))
            else:
                session._book.running(pl)
                self.segments[pl.due].append(pl)
                self.need_stash[pl.frames.start : pl.frames.stop] += 1
        self.live: dict[int, tuple[PassPlan, int]] = {}  # obj -> (tail plan, pass id)
        # the last frame whose live tails' results were stored (each live tail has stepped
        # every frame from its first up to it)
        self.stored = -1
        # (obj, correction frame) -> the pass of the tail that ends the frame before it, which
        # the correction continues (rule d)
        self.handoff: dict[tuple[int, int], int] = {}
        # snapshots of passes computed with outdated prompts can no longer be reached
        session._checkpoints.keep_only(session._book.state_key(pl) for pl in session._book.plan())

    def visit(self, frame: Frame, *, keep: bool = True) -> None:
        s = self.s
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled; no output was written")
        t = frame.index
        s._shots.see(frame)
        shot = s.engine_shot(t)
        prompted = s._book.pending.pop(t, [])
        for p in prompted:
            if p.correction:
                corrections.compute(s, frame, p, self.handoff.pop((p.obj_id, t), None))
            else:
                s._compute_prompt(frame, p, None)
        for obj, frames in s._book.by_object.items():
            if t in frames:
                s.engine.set_shot(obj, t, shot)
        if self.need_stash[t]:
            s._stash.put(t, s.engine.model_input(frame).image)
        for (obj, anchor), pl in self.tails.items():
            first, snap = self.begin[(obj, anchor)]
            if first == t and obj not in self.live:
                if snap is None:
                    self.live[obj] = (pl, s.engine.start_pass(obj, anchor, 1))
                else:
                    self.live[obj] = (pl, s.engine.resume(snap))
                    s.stats["resumed"] += 1
        live = [(pl, pid) for pl, pid in self.live.values() if t in pl.frames]
        stepping = [pid for _pl, pid in live]
        feats = None
        if stepping:
            feats = s.features.get(frame)
            results = s.engine.step(frame, stepping, shot_id=shot, features=feats)
            s.stats["stepped"] += 1
            self._checkpoint(live, t)
            for res in results:
                s._put(res, self.on_frame, keep)
            if keep:
                self.stored = t
        if self.need_stash[t] and (stepping or prompted):
            # a segment due later steps this frame again (another object's gap): the
            # features made here go to disk for it (the LRU may have dropped them by then;
            # a prompt's are still in it)
            s.features.keep_on_disk(t, feats if feats is not None else s.features.get(frame))
        for obj in [o for o, (pl, _p) in self.live.items() if t == pl.frames.stop - 1]:
            pl, pid = self.live.pop(obj)
            nxt = pl.frames.stop
            if any(p.obj_id == obj and p.correction for p in s._book.pending.get(nxt, ())):
                self.handoff[(obj, nxt)] = pid  # the correction there continues it
            else:
                s._end_pass(pid, self.on_frame, keep)
            s._book.ran(pl)
            del self.tails[(obj, pl.anchor)]
        due = self.segments.pop(t, [])
        if due:
            for group in (
                [pl for pl in due if pl.direction > 0],
                [pl for pl in due if pl.direction < 0],
            ):
                self._run_segments(group)
                for pl in group:  # read: what still counts is later passes' reads
                    self.need_stash[pl.frames.start : pl.frames.stop] -= 1
            for pl in due:
                s._book.ran(pl)
                unread = [u for u in pl.frames if not self.need_stash[u]]
                s._stash.discard(unread)
                s.features.release(unread)

    def _run_segments(self, plans: list[PassPlan]) -> None:
        """Run passes over stashed frames: forward ones together in ascending order, backward
        ones together in descending order (one image encoding per frame for the group)."""
        if not plans:
            return
        s = self.s
        direction = plans[0].direction
        pids = [
            s.engine.start_pass(pl.obj_id, pl.anchor, direction, neighbour=pl.neighbour)
            for pl in plans
        ]
        lo = min(pl.frames.start for pl in plans)
        hi = max(pl.frames.stop for pl in plans)
        order = range(lo, hi) if direction > 0 else range(hi - 1, lo - 1, -1)
        try:
            for u in order:
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled("cancelled; no output was written")
                # each pass's frames start next to its anchor, so it steps consecutive frames
                stepping = [(pl, pid) for pl, pid in zip(plans, pids) if u in pl.frames]
                active = [pid for _pl, pid in stepping]
                if not active:
                    continue
                image = s._stash.get(u)
                if image is None:
                    if s.frames is None:
                        raise PromptError(f"internal: frame {u} was not stashed")
                    frame = s.engine.model_input(s.frames.get(u))
                else:
                    frame = Frame(u, image, None, s.info.time_base)
                feats = s.features.get(frame)
                results = s.engine.step(frame, active, shot_id=s.shot_id(u), features=feats)
                s.stats["stepped"] += 1
                self._checkpoint(stepping, u)
                if self.need_stash[u] > len(active):
                    # another segment (another object's gap, or another object's pass in the
                    # other direction) steps this frame later, maybe after the LRU has dropped
                    # it: keep its features
                    s.features.keep_on_disk(u, feats)
                for res in results:
                    s._put(res, self.on_frame, True)
        finally:
            for pid in pids:
                s._end_pass(pid, self.on_frame, True)

    def _checkpoint(self, stepped: list[tuple[PassPlan, int]], frame_index: int) -> None:
        """Snapshots of the passes that just stepped ``frame_index``, where due."""
        s = self.s
        for pl, pid in stepped:
            s._checkpoints.after_step(s._book.state_key(pl), pl.anchor, pid, frame_index)

    def close(self) -> None:
        # a tail stopped part-way (the OpenFX worker's sweep, closed when the prompts change;
        # a cancel) has computed its frames so far: recorded as done up to there, so a plan
        # that ends it sooner (a correction after them) does not track them again
        for pl, _pid in self.live.values():
            if self.stored >= pl.frames.start:
                done = range(pl.frames.start, self.stored + 1)
                self.s._book.ran(dataclasses.replace(pl, frames=done))
        for pid in [*(pid for _pl, pid in self.live.values()), *self.handoff.values()]:
            self.s.engine.end_pass(pid)
        self.live.clear()
        self.handoff.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

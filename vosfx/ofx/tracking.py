"""Tracking for the OFX worker: one session sweep kept open between renders, so each render
tracks only up to the frame it shows, in order from where the previous one stopped.

The session's rule (vosfx/session/clip.py) plans passes per object: lead-in backwards from the
first prompted frame, segments between prompted frames (each runs once the sweep reaches its
right-hand prompted frame, its ``due``), and a tail forwards after the last one. A tail steps
with the sweep itself, so keeping the sweep open keeps the tail's memory alive: rendering frame
``t`` then ``t + 1`` steps one frame, not the clip. ``ClipSession.track`` would instead run
every stale pass to the clip's end on the first render.

A sweep only goes forwards. When a frame the sweep has passed needs work again (prompts or
settings changed), the worker calls :meth:`IncrementalTracker.reset` and a new sweep starts at
the earliest stale frame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from vosfx.errors import Cancelled

IDLE_S = 0.5  # seconds without a message after a render before the shown frame is prepared


def idle_seconds() -> float:
    """How long the host must have sent nothing after a render before the worker prepares
    the shown frame for a point (:meth:`IncrementalTracker.prepare`): ``$VOSFX_OFX_IDLE_S``,
    else :data:`IDLE_S`; 0 (or less) turns it off."""
    said = os.environ.get("VOSFX_OFX_IDLE_S", "").strip()
    if not said:
        return IDLE_S
    try:
        return max(float(said), 0.0)
    except ValueError:
        logging.getLogger("vosfx.ofx").warning(
            "VOSFX_OFX_IDLE_S: expected seconds (0 turns it off), found %r; %s s taken",
            said,
            IDLE_S,
        )
        return IDLE_S


class IncrementalTracker:
    """``session``: a :class:`vosfx.session.ClipSession` with frame access; ``on_result``:
    called with each ObjectResult the sweep produces (progress)."""

    def __init__(self, session: Any, on_result: Callable[[Any], None]) -> None:
        self.session = session
        self.on_result = on_result
        self.sweep: Any = None  # vosfx.session.Sweep while open
        self.next_frame = 0  # the next frame index the open sweep visits

    def sync(self, prompts: dict, applied: dict) -> None:
        """Make the session hold exactly ``prompts`` ({(frame, obj): (signature, Prompt)});
        ``applied`` ({(frame, obj): signature}, updated here) is what it holds. Objects that
        lost every prompt are deleted, removed prompts removed, new or changed ones computed
        at once, corrections when the sweep reaches them (from the pass before them, so a
        matte depends on the prompts and not on the order of edits, the same as `vosfx matte
        --edit-tracked`)."""
        session = self.session
        wanted = {k: s for k, (s, _p) in prompts.items()}
        if wanted != applied:
            self.reset()  # the open sweep's plan is out of date
        objects_left = {o for (_f, o) in wanted}
        for obj in sorted({o for (_f, o) in applied} - objects_left):
            session.delete_object(obj)
        for frame, obj in sorted(set(applied) - set(wanted)):
            if obj in objects_left:
                session.remove_prompt(obj, frame)
            del applied[(frame, obj)]
        for k, (sig, prompt) in sorted(prompts.items()):
            if applied.get(k) != sig:
                if prompt.correction:
                    session.set_prompts([prompt])
                else:
                    session.add_prompt(prompt, refine=False)
                applied[k] = sig

    def prepare(self, t: int, frames: Any) -> int:
        """While the host is idle on frame ``t``: what a point there would start from, made
        now for each object that has a prompt before ``t`` (``ClipSession.
        prepare_correction``: memory attention on ``t``), so the first point the user adds
        there costs the decoder alone. Only from what the worker keeps (``frames``, a
        :class:`~vosfx.ofx.frames.HostFrames`, asked nothing of the host: it answers no NEED
        between renders): where that is not enough (the pass's snapshot is far from ``t``),
        nothing more is made. Returns how many objects were prepared."""
        from vosfx.ofx.frames import NotKept

        made = 0
        frames.kept_only = True
        try:
            for obj in self.session.obj_ids:
                made += bool(self.session.prepare_correction(obj, t))
        except NotKept:
            pass
        finally:
            frames.kept_only = False
        return made

    def reset(self) -> None:
        """Close the sweep (after a prompt change: its plan is out of date)."""
        if self.sweep is not None:
            sweep, self.sweep = self.sweep, None
            sweep.close()

    def target(self, t: int) -> int | None:
        """The frame the sweep must reach for frame ``t``'s results to be current (a tail: ``t``
        itself; a segment or lead-in: its due frame), or None when they are."""
        need = None
        for pl in self.session.stale():
            if t not in pl.frames:
                continue
            if pl.is_tail and self.sweep is not None and t < self.next_frame:
                continue  # the open sweep has stepped this tail past t
            if pl.is_tail and t < self.session.resume_point(pl)[0]:
                continue  # a sweep stopped part-way computed this tail past t
            frame = t if pl.is_tail else pl.due
            need = frame if need is None else max(need, frame)
        if t in self.session.pending_frames():  # a correction the sweep computes there
            need = t if need is None else max(need, t)
        return need

    def frames_to(self, t: int) -> range:
        """The frames :meth:`track_to` visits for ``t`` (empty when none)."""
        target = self.target(t)
        if target is None:
            return range(0)
        if self.sweep is not None and target >= self.next_frame:
            return range(self.next_frame, target + 1)
        return range(self._first_stale(), target + 1)

    def _first_stale(self) -> int:
        # a tail starts when the sweep visits the frame after its anchor (or after its
        # snapshot, where a sweep stopped part-way), a segment or lead-in needs its frames
        # stashed from their start: the earliest start of any stale pass (or a prompt still
        # to compute, a correction whose pass was computed before)
        firsts = self.session.first_to_step(self.session.stale()).values()
        return min([*firsts, *self.session.pending_frames()])

    def track_to(self, t: int) -> int:
        """Visit frames in order until frame ``t``'s results are current; returns how many
        frames were visited. Frames come from the session's provider (the host)."""
        target = self.target(t)
        if target is None:
            return 0
        if self.sweep is not None and target < self.next_frame:
            self.reset()  # cannot go back: start again where the stale work starts
        if self.sweep is None:
            self.next_frame = self._first_stale()
            self.sweep = self.session.open_sweep(on_frame=self.on_result)
        visited = 0
        while self.next_frame <= target:
            frame = self.session.frames.get(self.next_frame)  # Cancelled here: sweep intact
            try:
                self.sweep.visit(frame)
            except Cancelled:
                self.reset()  # part of a segment may have run: do it again next time
                raise
            self.next_frame += 1
            visited += 1
        return visited

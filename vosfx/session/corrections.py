"""Corrections: clicks decoded with the memory of a pass that tracked up to their frame, as SAM
2 decodes clicks on a frame it has tracked (``is_init_cond_frame=False``). Two callers: rule d
(``Prompt.correction``: the pass forwards from the object's previous prompted frame, the mask it
tracks onto the frame as the dense prompt; computed by a sweep or at once), and
``ClipSession.add_prompt(refine=True)`` on a frame an up-to-date pass tracked (that pass, the
frame's stored mask). Either way the pass is brought to the frame before: handed over by the
sweep that stepped it, resumed from its nearest snapshot, or replayed from its prompted frame,
the same state bit for bit (session/checkpoints.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vosfx.errors import PromptError
from vosfx.session.plan import PassPlan
from vosfx.types import Frame, Prompt

if TYPE_CHECKING:
    from vosfx.session.clip import ClipSession


def pass_before(s: ClipSession, pl: PassPlan, frame_index: int) -> int:
    """A pass of ``pl`` brought to the frame before ``frame_index`` in its direction, from
    its nearest snapshot, else from its prompted frame (replayed: the same state bit for
    bit); the caller ends it."""
    found = s._checkpoints.latest(s._book.state_key(pl), pl.direction, frame_index)
    if found is None:
        pid = s.engine.start_pass(pl.obj_id, pl.anchor, pl.direction, neighbour=pl.neighbour)
        u = pl.anchor + pl.direction
    else:
        pid = s.engine.resume(found[1])
        u = found[0] + pl.direction
    try:
        while u != frame_index:
            if s.frames is None:
                raise PromptError(f"internal: frame {u} is needed again and cannot be read")
            fu = s.frames.get(u)
            s.engine.step(fu, [pid], shot_id=s.engine_shot(u), features=s.features.get(fu))
            s.stats["replayed"] += 1
            u += pl.direction
    except BaseException:
        s.engine.end_pass(pid)
        raise
    return pid


def compute(s: ClipSession, frame: Frame, prompt: Prompt, live: int | None = None) -> None:
    """Rule d: the clicks on ``frame`` decoded with the memory of the pass forwards from
    the object's previous prompted frame, its mask on ``frame`` as the dense prompt (SAM
    2's correction on a frame it has tracked). ``live``: that pass, already at the frame
    before (a sweep's; ended here), else it is resumed or replayed. The pass's memory
    attended on the frame and its mask there are kept per object
    (``ClipSession.correction_bases``), so editing the same correction again costs the
    decoder alone. On the object's first prompted frame: an ordinary prompt."""
    t, obj = frame.index, prompt.obj_id
    prev = s._book.previous(obj, t)
    if prev is None:
        if live is not None:
            s.engine.end_pass(live)
        s._compute_prompt(frame, prompt, None)
        s._book.corrected(obj, t)
        return
    attended = _base(s, obj, prev, frame, live)
    s._compute_prompt(frame, prompt, attended.tracked, attended=attended)
    s._book.corrected(obj, t)


def prepare(s: ClipSession, obj: int, t: int) -> bool:
    """The base a correction of ``obj`` on frame ``t`` would start from (:func:`_base`), made
    now, so that the correction's clicks, when they come, cost the decoder alone. False, and
    no frame read, where a click there would not be a correction (no prompt of the object
    before the frame) or the frame is prompted already (its base is kept since)."""
    prev = s._book.previous(obj, t)
    if prev is None or t in s._book.prompted_frames(obj):
        return False
    assert s.frames is not None  # ClipSession.prepare_correction checked
    _base(s, obj, prev, s.frames.get(t), None)
    return True


def _base(s: ClipSession, obj: int, prev: int, frame: Frame, live: int | None) -> Any:
    """Memory attention of the pass forwards from the object's previous prompted frame
    ``prev``, on ``frame``, and the mask it tracks there (``Attended``): kept per object
    (``ClipSession.correction_bases``) under what it depends on, and reused while that holds
    (the same frame edited again: no pass at all). ``live``: that pass, already at the frame
    before (ended here), else it is resumed or replayed."""
    t = frame.index
    plan = PassPlan(obj, prev, 1, None, range(prev + 1, t))
    key = (s._book.state_key(plan), t)
    base = s.correction_bases.get(obj)
    if base is not None and base[0] == key:
        if live is not None:
            s.engine.end_pass(live)
        return base[1]
    pid = live if live is not None else pass_before(s, plan, t)
    try:
        # memory attention once, and the mask the pass tracks onto this frame (the clicks'
        # dense prompt), the pass not moved: SAM 2 decodes the clicks with its memory up to
        # the frame before
        attended = s.engine.attend(
            pid, frame, shot_id=s.engine_shot(t), features=s.features.get(frame)
        )
    finally:
        s.engine.end_pass(pid)
    s.correction_bases[obj] = (key, attended)
    return attended


def correct(
    s: ClipSession, frame: Frame, prompt: Prompt, pl: PassPlan, previous: np.ndarray | None
) -> None:
    """A correction on a tracked frame: bring ``pl`` to the frame before (from its nearest
    snapshot, else from its prompted frame), then decode the clicks with the pass's memory
    (SAM 2's ``is_init_cond_frame=False``)."""
    pid = pass_before(s, pl, frame.index)
    try:
        attended = s.engine.attend(
            pid,
            frame,
            shot_id=s.engine_shot(frame.index),
            features=s.features.get(frame),
            track=False,
        )
    finally:
        s.engine.end_pass(pid)
    s._compute_prompt(frame, prompt, previous, attended=attended)


__all__ = ["compute", "correct", "pass_before", "prepare"]

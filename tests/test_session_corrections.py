"""Rule d: a correction (``Prompt.correction``) edits the mask the object's previous prompted
frame tracks forwards to its frame, decoded with that pass's memory, the same whatever order
the prompts came in (with the FakeEngine, whose corrections edit the tracked mask as the
model's do; the model's parity with SAM 2's own correction is tests/test_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fakes import FakeEngine, exclude_discs, prompt_logits
from tests.test_session import H, N, W, _frames, _info, _mask
from vosfx.config import MemoryConfig
from vosfx.errors import InputError, PromptError
from vosfx.ofx.tracking import IncrementalTracker
from vosfx.pipeline import track_arrays
from vosfx.session import ClipSession, plan_object
from vosfx.session.frames import ListFrames
from vosfx.types import Prompt


def _drift(t, obj, base):
    """Tracked frames differ from their prompted frame's logits (shifted a pixel a frame), so
    a frame's result says which pass made it."""
    return np.roll(base, t % 7, axis=1)


def _session(memory=None, **kw):
    engine = FakeEngine(logit_fn=_drift)
    info = _info()
    session = ClipSession(
        engine,
        info,
        memory or MemoryConfig(policy="sam2"),
        frames=ListFrames(info, _frames()),
        **kw,
    )
    return session, engine.sessions[0]


MASK = Prompt(0, 1, mask=_mask(4, 30))
# an exclude click on the right of the object: it cuts the tracked mask there
FIX = Prompt(
    10,
    1,
    points=np.array([[26.0, 16.0]], np.float32),
    labels=np.array([0], np.int32),
    correction=True,
)


def _all(session) -> np.ndarray:
    return np.stack([session.result(t).logits[0] for t in range(N)])


def test_the_gap_before_a_correction_is_one_forward_pass():
    want = [
        (0, 1, None, range(1, 10)),  # up to the correction: forwards from 0 alone
        (10, 1, 20, range(11, 16)),  # an ordinary gap after it
        (20, -1, 10, range(16, 20)),
        (20, 1, None, range(21, 30)),
    ]
    got = plan_object(1, [0, 10, 20], 0, 30, corrections=[10])
    assert [(p.anchor, p.direction, p.neighbour, p.frames) for p in got] == want
    # on the first prompted frame a correction is an ordinary prompt; next to its previous
    # prompted frame there is no gap to track
    got = plan_object(1, [5, 6], 0, 10, corrections=[5, 6])
    assert [(p.anchor, p.direction, p.neighbour, p.frames) for p in got] == [
        (5, -1, None, range(5)),
        (6, 1, None, range(7, 10)),
    ]


def test_a_correction_edits_the_mask_tracked_there_from_the_pass_before_it():
    session, fake = _session()
    session.set_prompts([MASK, FIX])
    session.track()
    assert fake.corrections == [(1, 10, 1)]  # decoded with the forward pass's memory
    assert session.stats["replayed"] == 0  # the sweep's own pass, handed over
    assert sorted(f for o, f, d in fake.stepped if d < 0) == []  # nothing backwards
    tracked = _drift(10, 1, prompt_logits(MASK.mask))  # what the pass tracks onto frame 10
    cut = exclude_discs(FIX, W, H)
    want = np.where(cut, -10.0, prompt_logits(tracked > 0))
    np.testing.assert_array_equal(session.result(10).logits[0], want)
    assert (want > 0).any() and ((tracked > 0) & cut).any()  # the click cut the mask
    # frames after it are tracked from the corrected mask
    np.testing.assert_array_equal(session.result(14).logits[0], _drift(14, 1, want))
    session.close()


def _orders():
    """The same two prompts set three ways: together before tracking, the correction after
    tracking, the correction first (an ordinary prompt until the mask comes before it)."""
    together, _fake1 = _session()
    together.set_prompts([MASK, FIX])
    together.track()
    after, _fake2 = _session()
    after.add_prompt(MASK)
    after.track()
    after.add_prompt(FIX)
    after.track()
    first, fake3 = _session()
    first.add_prompt(FIX)
    first.track()
    assert fake3.corrections == []  # no prompt before it yet: ordinary
    first.add_prompt(MASK)
    first.track()
    assert fake3.corrections == [(1, 10, 1)]  # computed again once the mask came before it
    return together, after, first


def test_the_prompts_order_does_not_matter():
    sessions = _orders()
    want = _all(sessions[0])
    for s in sessions[1:]:
        np.testing.assert_array_equal(_all(s), want)
    for s in sessions:
        s.close()


def test_a_changed_earlier_prompt_computes_the_corrections_after_it_again_in_order():
    session, fake = _session()
    fix20 = Prompt(
        20, 1, points=np.array([[6.0, 16.0]], np.float32), labels=np.array([0]), correction=True
    )
    session.set_prompts([MASK, FIX, fix20])
    session.track()
    assert fake.corrections == [(1, 10, 1), (1, 20, 1)]
    other = Prompt(0, 1, mask=_mask(10, 40))
    session.add_prompt(other)
    session.track()
    assert fake.corrections[2:] == [(1, 10, 1), (1, 20, 1)]  # both again, in order
    fresh, _f = _session()
    fresh.set_prompts([other, FIX, fix20])
    fresh.track()
    np.testing.assert_array_equal(_all(session), _all(fresh))
    # only the correction changed: the memory its pass attends there, kept when the sweep
    # computed it, decodes the clicks; nothing is resumed, stepped, replayed or attended
    stepped, resumed, attended = len(fake.stepped), len(fake.resumed), len(fake.attended)
    session.add_prompt(
        Prompt(
            20, 1, points=np.array([[8.0, 16.0]], np.float32), labels=np.array([0]), correction=True
        )
    )
    assert (len(fake.stepped), len(fake.resumed), len(fake.attended)) == (
        stepped,
        resumed,
        attended,
    )
    assert session.stats["replayed"] == 0 and fake.corrections[-1] == (1, 20, 1)
    stepped = len(fake.stepped)
    session.track()
    assert [f for _o, f, _d in fake.stepped[stepped:]] == list(range(21, N))
    session.close()
    fresh.close()


def test_removing_the_prompt_before_a_correction_makes_it_an_ordinary_prompt():
    session, fake = _session()
    session.set_prompts([MASK, FIX])
    session.track()
    session.remove_prompt(1, 0)
    session.track()
    alone, _f = _session()
    alone.add_prompt(FIX)
    alone.track()
    np.testing.assert_array_equal(_all(session), _all(alone))
    assert any(d < 0 for _o, f, d in fake.stepped if f < 10)  # the frames before: backwards
    session.close()
    alone.close()


def test_a_pipeline_sweep_takes_corrections_without_reading_a_frame_twice():
    """track_arrays: the one loop's tracking half, no frame access (a pipeline)."""
    rgb = [f.rgb8 for f in _frames()]
    engine = FakeEngine(logit_fn=_drift)
    got = np.stack([r.logits[0] for _f, r in track_arrays(engine, rgb, [MASK, FIX])])
    ref, _fake = _session()
    ref.set_prompts([MASK, FIX])
    ref.track()
    np.testing.assert_array_equal(got, _all(ref))
    assert engine.sessions[0].corrections == [(1, 10, 1)]
    ref.close()


def test_the_ofx_trackers_render_of_a_correction_frame_computes_it():
    """The OpenFX worker's sweep: rendering the correction's frame brings the sweep there;
    frames before it need nothing of it."""
    session, fake = _session()
    tracker = IncrementalTracker(session, lambda res: None)
    applied: dict = {}
    tracker.sync({(0, 1): ("m", MASK), (10, 1): ("c", FIX)}, applied)
    assert tracker.target(5) == 5 and tracker.target(10) == 10
    tracker.track_to(5)
    assert fake.corrections == []
    tracker.track_to(10)
    assert fake.corrections == [(1, 10, 1)]
    # the correction's clicks change: the sweep starts again at it, resuming the pass before
    moved = Prompt(
        10, 1, points=np.array([[24.0, 16.0]], np.float32), labels=np.array([0]), correction=True
    )
    tracker.sync({(0, 1): ("m", MASK), (10, 1): ("c2", moved)}, applied)
    assert tracker.frames_to(10) == range(10, 11)
    tracker.track_to(12)
    assert fake.corrections[-1] == (1, 10, 1) and len(fake.corrections) == 2
    tracker.reset()
    session.close()


def test_corrections_are_points_or_a_box_and_refused_where_passes_keep_no_snapshots():
    session, _fake = _session()
    with pytest.raises(PromptError, match="a correction is points or a box"):
        session.set_prompts([Prompt(3, 1, mask=_mask(4, 12), correction=True)])
    with pytest.raises(PromptError, match="takes no prior"):
        session.set_prompts(
            [
                Prompt(
                    3,
                    1,
                    points=FIX.points,
                    labels=FIX.labels,
                    prior=np.zeros((16, 16), np.float32),
                    correction=True,
                )
            ]
        )
    session.close()
    deferred, _f = _session(memory=MemoryConfig(policy="sam2long"))
    with pytest.raises(PromptError, match="sam2long: a correction"):
        deferred.set_prompts([MASK, FIX])
    deferred.close()


def test_another_objects_tail_steps_on_beside_a_correction():
    """Two objects in one sweep: object 2's tail steps every frame while object 1's pass hands
    over to its correction; each equals its own session."""
    obj2 = Prompt(0, 2, mask=_mask(34, 44))
    both, fake = _session()
    both.set_prompts([MASK, FIX, obj2])
    both.track()
    assert fake.corrections == [(1, 10, 1)]
    assert sorted(f for o, f, _d in fake.stepped if o == 2) == list(range(1, N))
    for prompts, row in (([MASK, FIX], 0), ([obj2], 1)):
        alone, _f = _session()
        alone.set_prompts(prompts)
        alone.track()
        np.testing.assert_array_equal(
            np.stack([both.result(t).logits[row] for t in range(N)]), _all(alone)
        )
        alone.close()
    both.close()


@pytest.mark.parametrize("backward", [True, False])
def test_corrections_next_to_each_other_and_without_backward_tracking(backward):
    """Corrections on frames 10 and 11 (no gap between them: the second's pass starts at the
    first), with and without ``--forward-only``: as the same prompts added one by one."""
    memory = MemoryConfig(policy="sam2", track_backward=backward)
    fix11 = Prompt(
        11, 1, points=np.array([[20.0, 16.0]], np.float32), labels=np.array([0]), correction=True
    )
    together, fake = _session(memory=memory)
    together.set_prompts([MASK, FIX, fix11])
    together.track()
    assert fake.corrections == [(1, 10, 1), (1, 11, 1)]
    one_by_one, _f = _session(memory=memory)
    for p in (fix11, FIX, MASK):  # backwards: each an ordinary prompt until one comes before
        one_by_one.add_prompt(p)
        one_by_one.track()
    np.testing.assert_array_equal(_all(together), _all(one_by_one))
    together.close()
    one_by_one.close()


def test_editing_the_same_correction_again_steps_nothing():
    """Each click on a correction's frame recomputes the prompt: the memory its pass attends
    there and its mask there are kept, so only the decoder runs again; a change before it
    drops them."""
    session, fake = _session()
    session.add_prompt(MASK)
    session.track()
    session.add_prompt(FIX)
    stepped, replayed, attended = len(fake.stepped), session.stats["replayed"], len(fake.attended)
    again = Prompt(
        10,
        1,
        points=np.array([[26.0, 16.0], [24.0, 12.0]], np.float32),
        labels=np.array([0, 0]),
        correction=True,
    )
    session.add_prompt(again)
    assert len(fake.stepped) == stepped and session.stats["replayed"] == replayed
    assert len(fake.attended) == attended  # the decoder alone
    assert fake.corrections[-1] == (1, 10, 1)
    fresh, _f = _session()
    fresh.set_prompts([MASK, again])
    fresh.track()
    session.track()
    np.testing.assert_array_equal(_all(session), _all(fresh))
    session.add_prompt(Prompt(0, 1, mask=_mask(10, 40)))  # the pass before it changes
    session.track()
    assert len(fake.stepped) > stepped + (N - 11)  # its pass tracked again, then the rest
    fresh.close()
    session.close()


def test_a_correction_prepared_before_its_clicks_costs_the_decoder_alone():
    """``prepare_correction`` makes what a correction on a frame starts from (memory
    attention there) before any click: the correction then attends nothing more, and the
    clip is the same as without it. Where a click would not be a correction it does nothing."""
    session, fake = _session()
    session.add_prompt(MASK)
    session.track()
    assert not session.prepare_correction(1, 0)  # the prompted frame itself
    assert not session.prepare_correction(2, 10)  # no such object
    assert len(fake.attended) == 0
    assert session.prepare_correction(1, 10)
    assert len(fake.attended) == 1
    assert session.prepare_correction(1, 10) and len(fake.attended) == 1  # kept
    stepped = len(fake.stepped)
    session.add_prompt(FIX)
    assert len(fake.attended) == 1 and len(fake.stepped) == stepped  # the decoder alone
    fresh, _f = _session()
    fresh.set_prompts([MASK, FIX])
    fresh.track()
    session.track()
    np.testing.assert_array_equal(_all(session), _all(fresh))
    with pytest.raises(InputError, match="frame 99 is outside the clip"):
        session.prepare_correction(1, 99)
    assert not ClipSession(
        FakeEngine(), _info(), MemoryConfig(policy="sam2"), frames=ListFrames(_info(), _frames())
    ).prepare_correction(1, 3)  # no objects at all


def test_the_ofx_tracker_prepares_only_from_the_frames_it_keeps():
    """The OpenFX worker prepares the shown frame while the host is idle, reading no frame
    the host would have to send: where the pass's snapshots are too far back (a replay),
    nothing is made and nothing asked."""
    from vosfx.ofx.frames import NotKept

    class Kept(ListFrames):
        """The worker's frames: only the last few can be read between renders."""

        kept_only = False

        def get(self, index, **kw):
            if self.kept_only and index not in (8, 9, 10):
                raise NotKept(f"frame {index}")
            return super().get(index)

    engine = FakeEngine(logit_fn=_drift)
    frames = Kept(_info(), _frames())
    session = ClipSession(engine, _info(), MemoryConfig(policy="sam2"), frames=frames)
    fake = engine.sessions[0]
    tracker = IncrementalTracker(session, lambda res: None)
    tracker.sync({(0, 1): ("m", MASK)}, {})
    tracker.track_to(10)  # snapshots after frames 8, 9, 10 (the last steps), spaced ones before
    assert tracker.prepare(10, frames) == 1 and len(fake.attended) == 1
    assert not frames.kept_only
    # frame 14: the pass's nearest snapshot (10) is four frames back, frames 11-13 not kept
    assert tracker.prepare(14, frames) == 0 and len(fake.attended) == 1
    assert not frames.kept_only
    tracker.reset()
    session.close()


def test_a_correction_after_a_sweep_stopped_part_way_steps_nothing_before_it():
    """The OpenFX worker's sweep stops at the frame shown; a point added there (a correction)
    ends the tail before it, whose frames the stopped sweep computed already: they are not
    tracked again (Sweep.close records how far the tail went), and the clip equals a fresh
    session's with the same prompts."""
    session, fake = _session()
    tracker = IncrementalTracker(session, lambda res: None)
    applied: dict = {}
    tracker.sync({(0, 1): ("m", MASK)}, applied)
    tracker.track_to(12)
    fix = Prompt(12, 1, points=FIX.points, labels=FIX.labels, correction=True)
    tracker.sync({(0, 1): ("m", MASK), (12, 1): ("c", fix)}, applied)
    assert tracker.frames_to(12) == range(12, 13)
    stepped = len(fake.stepped)
    tracker.track_to(12)
    assert len(fake.stepped) == stepped and fake.corrections == [(1, 12, 1)]
    tracker.track_to(N - 1)
    tracker.reset()
    fresh, _f = _session()
    fresh.set_prompts([MASK, fix])
    fresh.track()
    np.testing.assert_array_equal(_all(session), _all(fresh))
    # the tail as a whole again (the point removed): it goes on from its snapshot after
    # frame 11, the last it computed before the correction; frames 12 on are tracked anew
    tracker.sync({(0, 1): ("m", MASK)}, applied)
    assert tracker.frames_to(N - 1) == range(12, N)
    stepped = len(fake.stepped)
    tracker.track_to(N - 1)
    assert len(fake.stepped) - stepped == N - 12 and session.stats["resumed"] == 1
    tracker.reset()
    alone, _f = _session()
    alone.set_prompts([MASK])
    alone.track()
    np.testing.assert_array_equal(_all(session), _all(alone))
    alone.close()
    session.close()


def test_the_ofx_trackers_other_objects_go_on_from_where_they_were():
    """The viewer played to frame 12 with one object, then a second object's mask is added
    on frame 0: rendering frame 13 tracks the new object from its prompt and the first one
    from its snapshot after frame 12 (before, it was tracked again from frame 1), and the clip
    equals a fresh session's with both prompts."""
    session, fake = _session()
    tracker = IncrementalTracker(session, lambda res: None)
    applied: dict = {}
    other = Prompt(0, 2, mask=_mask(30, 40))
    tracker.sync({(0, 1): ("m", MASK)}, applied)
    tracker.track_to(12)
    tracker.sync({(0, 1): ("m", MASK), (0, 2): ("o", other)}, applied)
    (first,) = [pl for pl in session.stale() if pl.obj_id == 1]
    assert session.resume_point(first)[0] == 13
    assert tracker.frames_to(13) == range(1, 14)
    stepped = len(fake.stepped)
    tracker.track_to(13)
    new = fake.stepped[stepped:]
    assert [t for o, t, _d in new if o == 1] == [13] and session.stats["resumed"] == 1
    assert [t for o, t, _d in new if o == 2] == list(range(1, 14))
    tracker.track_to(N - 1)
    tracker.reset()
    fresh, _f = _session()
    fresh.set_prompts([MASK, other])
    fresh.track()
    for t in range(N):
        np.testing.assert_array_equal(session.result(t).logits, fresh.result(t).logits)
    fresh.close()
    session.close()

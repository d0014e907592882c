"""The clip session: the nearest-prompt rule, incremental prompts, corrections that stick,
results on disk, decoding each frame at most twice (with the FakeEngine; the real model's
parity is tests/test_parity.py)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from fractions import Fraction

import numpy as np
import pytest

from tests.fakes import LOWRES, FakeEngine, prompt_logits
from vosfx.config import MemoryConfig
from vosfx.errors import Cancelled, ConfigError, InputError, PromptError
from vosfx.pipeline import results_in_order
from vosfx.session import ClipSession, plan_object
from vosfx.session.frames import ListFrames
from vosfx.session.store import FrameStash
from vosfx.types import Frame, Prompt, VideoInfo

H, W, N = 32, 48, 30


def _info(n=N):
    return VideoInfo(
        path="", width=W, height=H, num_frames=n, fps=Fraction(25), time_base=Fraction(1, 25)
    )


def _frames(n=N):
    rng = np.random.default_rng(0)
    return [
        Frame(t, rng.integers(0, 256, (H, W, 3), np.uint8), t, Fraction(1, 25)) for t in range(n)
    ]


def _mask(x0, x1):
    m = np.zeros((H, W), bool)
    m[8:24, x0:x1] = True
    return m


def _session(n=N, memory=None, **kw):
    engine = FakeEngine()
    info = _info(n)
    session = ClipSession(
        engine,
        info,
        memory or MemoryConfig(policy="sam2"),
        frames=ListFrames(info, _frames(n)),
        **kw,
    )
    return session, engine.sessions[0]


@pytest.mark.parametrize(
    "prompted, start, end, backward, want",
    [
        # one prompt mid-range: back to the start, on to the end
        ([10], 0, 30, True, [(10, -1, None, range(10)), (10, 1, None, range(11, 30))]),
        # two prompts: the gap split at its middle (ties go forwards), each half attends both
        (
            [0, 10],
            0,
            30,
            True,
            [(0, 1, 10, range(1, 6)), (10, -1, 0, range(6, 10)), (10, 1, None, range(11, 30))],
        ),
        (
            [0, 9],
            0,
            12,
            True,
            [(0, 1, 9, range(1, 5)), (9, -1, 0, range(5, 9)), (9, 1, None, range(10, 12))],
        ),
        # adjacent prompts leave no gap; a prompt on the last frame has no tail
        ([3, 4], 0, 5, True, [(3, -1, None, range(3))]),
        # the range clips prompts outside it
        ([2, 20], 5, 15, True, []),
        ([2, 8, 20], 5, 15, True, [(8, -1, None, range(5, 8)), (8, 1, None, range(9, 15))]),
        # --forward-only: nothing before the first prompt, each gap forwards from its left end
        ([5, 10], 0, 15, False, [(5, 1, 10, range(6, 10)), (10, 1, None, range(11, 15))]),
    ],
)
def test_plan_object_is_the_nearest_prompt_rule(prompted, start, end, backward, want):
    got = plan_object(1, prompted, start, end, backward=backward)
    assert [(p.anchor, p.direction, p.neighbour, p.frames) for p in got] == want
    covered = sorted(t for p in got for t in p.frames)
    in_range = [f for f in prompted if start <= f < end]
    if backward and in_range:  # every frame of the range: a prompt or exactly one pass
        assert sorted(covered + in_range) == list(range(start, end))


def test_add_prompt_answers_at_once_and_track_fills_every_frame():
    session, fake = _session()
    res = session.add_prompt(Prompt(12, 1, mask=_mask(4, 20)))
    assert res.frame_index == 12 and res.obj_ids == (1,)
    np.testing.assert_array_equal(res.logits[0], prompt_logits(_mask(4, 20)))
    assert fake.steps == []  # image mode: nothing tracked yet
    assert not session.has_result(3)
    stepped = session.track()
    assert stepped == N - 1
    for t in range(N):
        r = session.result(t)
        np.testing.assert_array_equal(r.logits[0], prompt_logits(_mask(4, 20)))
    # frames 0..11 backwards from 12, 13..29 forwards, each once
    assert sorted(f for _o, f, _d in fake.stepped) == [t for t in range(N) if t != 12]
    assert {d for _o, f, d in fake.stepped if f < 12} == {-1}
    assert session.track() == 0  # nothing stale


def test_an_object_added_later_is_tracked_back_to_the_start():
    session, fake = _session()
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.track()
    session.add_prompt(Prompt(20, 2, mask=_mask(30, 44)))
    fake.stepped.clear()
    session.track()
    assert all(o == 2 for o, _f, _d in fake.stepped)  # object 1 is not redone
    for t in (0, 10, 19, 25):
        r = session.result(t)
        assert r.obj_ids == (1, 2) and (r.object_score_logits > 0).all()
        np.testing.assert_array_equal(r.logits[1], prompt_logits(_mask(30, 44)))


def test_a_correction_sticks_and_only_its_gap_is_redone():
    session, fake = _session()
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.add_prompt(Prompt(20, 1, mask=_mask(4, 12)))
    session.track()
    fixed = Prompt(8, 1, mask=_mask(20, 36))  # the user fixes tracked frame 8
    corrected = session.add_prompt(fixed).logits[0].copy()
    fake.stepped.clear()
    session.track()
    redone = sorted(f for _o, f, _d in fake.stepped)
    assert redone == [t for t in range(1, 20) if t != 8]  # only between its neighbours
    np.testing.assert_array_equal(session.result(8).logits[0], corrected)  # unchanged
    # the frames nearer to frame 8 follow the correction, the others their own prompts
    for t in (5, 6, 7, 9, 13, 14):
        np.testing.assert_array_equal(session.result(t).logits[0], corrected)
    for t in (1, 4, 15, 19, 25):
        np.testing.assert_array_equal(session.result(t).logits[0], prompt_logits(_mask(4, 12)))


def test_clicks_on_a_frame_refine_its_previous_output():
    seen = []
    session, fake = _session()
    real = fake.prompt

    def spy(frame, prompt, **kw):
        seen.append(kw.get("previous"))
        return real(frame, prompt, **kw)

    fake.prompt = spy
    click = Prompt(5, 1, points=np.array([[10, 10]], np.float32), labels=np.array([1]))
    first = session.add_prompt(click).logits[0].copy()
    session.add_prompt(
        Prompt(5, 1, points=np.array([[10, 10], [30, 10]], np.float32), labels=np.array([1, 0]))
    )
    session.add_prompt(click, refine=False)
    assert seen[0] is None  # nothing on the frame yet
    np.testing.assert_array_equal(seen[1], first)  # SAM 2's prev_sam_mask_logits
    assert seen[2] is None


def test_remove_prompt_and_delete_object():
    session, _fake = _session()
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.add_prompt(Prompt(10, 1, mask=_mask(20, 30)))
    session.add_prompt(Prompt(0, 2, mask=_mask(30, 40)))
    session.track()
    session.remove_prompt(1, 10)
    assert session.prompted_frames(1) == [0]
    assert any(pl.obj_id == 1 for pl in session.stale())
    session.track()
    np.testing.assert_array_equal(session.result(15).logits[0], prompt_logits(_mask(4, 12)))
    session.delete_object(2)
    assert session.obj_ids == (1,) and session.result(3).obj_ids == (1,)
    with pytest.raises(PromptError, match="no prompt on frame 4"):
        session.remove_prompt(1, 4)
    session.remove_prompt(1, 0)  # the last prompt: the object goes
    assert session.obj_ids == ()


def test_prompts_outside_the_range_are_refused():
    session, _fake = _session(start=5, end=20)
    with pytest.raises(PromptError, match=r"outside the frames being matted \(5..19\)"):
        session.add_prompt(Prompt(20, 1, mask=_mask(4, 12)))


def test_a_malformed_prompt_is_refused_when_given_not_when_swept():
    """The engine checks a prompt's values (tests/test_tracker.py::test_invalid_prompts); the
    session checks them when they are given, so that a pipeline's deferred prompt does not
    fail half-way through a sweep, and whatever the engine."""
    session, fake = _session()
    bad = Prompt(3, 1, points=np.array([[5.0, 5.0]], np.float32), labels=np.array([2]))
    with pytest.raises(PromptError, match=r"object 1 frame 3: expected labels"):
        session.set_prompts([Prompt(0, 1, mask=_mask(4, 12)), bad])
    box = Prompt(3, 1, box=np.array([30, 4, 10, 20], np.float32))
    with pytest.raises(PromptError, match=r"x0 < x1"):
        session.add_prompt(box)
    assert session.prompts() == [] and fake.prompted == []


@pytest.mark.parametrize("start, end", [(-2, None), (12, 8), (31, None)])
def test_a_range_outside_the_clip_is_refused(start, end):
    """start -2 failed in the first track() as frame -2 "not available"; start after end
    refused every prompt as outside "12..7"."""
    with pytest.raises(ConfigError, match=rf"start {start}, end {end}: expected 0 <= start"):
        _session(start=start, end=end)


def test_a_frame_outside_the_clip_has_no_result():
    """-1 read the last frame's state (and failed in pread), 30 an IndexError."""
    session, _fake = _session()
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.track()
    for t in (-1, N):
        with pytest.raises(InputError, match=rf"frame {t} is outside the clip \(0..29\)"):
            session.result(t)
        with pytest.raises(InputError, match="outside the clip"):
            session.has_result(t)
    assert session.has_result(N - 1) and session.result(N - 1).object_score_logits[0] > 0


def test_cancel_stops_tracking():
    session, _fake = _session()
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    stop = threading.Event()
    done = []

    def on_frame(res):
        done.append(res.frame_index)
        if len(done) == 3:
            stop.set()

    with pytest.raises(Cancelled):
        session.track(on_frame=on_frame, cancel=stop)
    assert len(done) == 3 and session.stale()  # still to do


def _counting_open(frames, counts):
    @contextmanager
    def open_frames(lo, hi, _final):
        def gen():
            for f in frames[lo:hi]:
                counts[f.index] = counts.get(f.index, 0) + 1
                yield f

        yield gen()

    return open_frames


@pytest.mark.parametrize(
    "prompt_frames, split",
    [
        ([0], 0),  # prompt on the first frame: one pass, nothing decoded twice
        ([12], 13),  # mid-clip: the lead-in first, then everything written in order
        ([3, 17, 25], 26),
    ],
)
def test_the_loop_decodes_each_frame_at_most_twice(prompt_frames, split):
    frames = _frames()
    engine = FakeEngine()
    counts: dict[int, int] = {}
    with ClipSession(engine, _info(), MemoryConfig(policy="sam2")) as session:
        session.set_prompts(
            [Prompt(f, 1 + i % 2, mask=_mask(4 + i, 20 + i)) for i, f in enumerate(prompt_frames)]
        )
        assert session.split_point() == split
        out = list(results_in_order(session, _counting_open(frames, counts)))
    assert [f.index for f, _r in out] == list(range(N))
    assert all(counts[t] == (2 if t < split else 1) for t in range(N)), counts
    fake = engine.sessions[0]
    assert sorted(f for _o, f in fake.prompted) == sorted(prompt_frames)  # once each
    for _f, res in out:  # every object has a result on every frame it is tracked
        assert (res.object_score_logits > 0).all()


def test_results_and_stash_stay_on_disk_and_bounded():
    stash = FrameStash(__import__("pathlib").Path(__import__("tempfile").mkdtemp()))
    img = np.zeros((8, 8, 3), np.uint8)
    for t in range(200):  # a sweep that stashes 10 frames at a time, then frees them
        stash.put(t, img + t % 250)
        if t % 10 == 9:
            np.testing.assert_array_equal(stash.get(t - 4), img + (t - 4) % 250)
            stash.discard(range(t - 9, t + 1))
    assert stash.get(199) is None
    assert stash.slots == 10  # slots reused: the most frames waiting at once, not one per frame
    session, _fake = _session(n=N)
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.track()
    path = session._scratch.path
    assert (path / "logits_1.f32").stat().st_size == N * LOWRES * LOWRES * 4
    session.close()
    assert not path.exists()


def test_a_click_on_a_tracked_frame_replays_its_pass_and_attends_its_memory():
    session, fake = _session()
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.add_prompt(Prompt(20, 1, mask=_mask(4, 12)))
    session.track()
    click = Prompt(14, 1, points=np.array([[30, 16]], np.float32), labels=np.array([1]))
    fake.stepped.clear()
    session.add_prompt(click)
    # frame 14 was tracked backwards from 20: that pass resumes from its snapshot after
    # frame 16 (every 4 frames) and steps 15, then the click is decoded with its memory
    assert fake.corrections == [(1, 14, -1)]
    assert fake.resumed == [16]
    assert [f for _o, f, _d in fake.stepped] == [15]
    assert session.stats["replayed"] == 1
    # a second click on the same frame: it is now prompted, so image mode again
    session.add_prompt(
        Prompt(14, 1, points=np.array([[30, 16], [5, 5]], np.float32), labels=np.array([1, 0]))
    )
    assert len(fake.corrections) == 1
    # refine=False: never the pass
    session.add_prompt(
        Prompt(3, 1, points=np.array([[30, 16]], np.float32), labels=np.array([1])), refine=False
    )
    assert len(fake.corrections) == 1


def test_warm_makes_a_frames_features_so_a_click_there_does_not_encode():
    session, fake = _session()
    frame = session.frames.get(7)
    assert session.warm(frame) is True
    assert fake.encoded == [7] and session.has_features(7)
    assert session.warm(frame) is False  # cached: nothing to do
    click = Prompt(
        7, 1, points=np.array([[10.0, 10.0]], np.float32), labels=np.array([1], np.int32)
    )
    session.add_prompt(click)
    assert fake.encoded == [7]  # the click took the warmed features
    assert session.stats["warmed"] == 1 and session.stats["feature_hits"] == 1


def test_a_click_during_a_warm_up_of_its_frame_waits_for_those_features():
    session, fake = _session()
    started, release = threading.Event(), threading.Event()
    encode = fake.encode

    def slow_encode(frame, interrupt=None):
        """The image encoder as ONNX Runtime runs it: stops when interrupted."""
        started.set()
        while not release.wait(0.01):
            if interrupt is not None and interrupt.is_set:
                raise Cancelled("interrupted")
        return encode(frame)

    fake.encode = slow_encode
    warm = threading.Thread(target=session.warm, args=(session.frames.get(5),))
    warm.start()
    assert started.wait(10)
    started.clear()
    clicked: list = []
    click = threading.Thread(
        target=lambda: clicked.append(session.add_prompt(Prompt(5, 1, mask=_mask(4, 20))))
    )
    click.start()
    click.join(0.3)
    assert click.is_alive() and not started.is_set()  # waiting, not encoding again
    release.set()
    warm.join(10)
    click.join(10)
    assert clicked and fake.encoded == [5] and session.stats["warmed"] == 1
    # a click on another frame interrupts a warm-up: it does not share the cores with it
    release.clear()
    result: list = []
    warm = threading.Thread(target=lambda: result.append(session.warm(session.frames.get(9))))
    warm.start()
    assert started.wait(10)
    fake.encode = encode
    session.add_prompt(Prompt(11, 1, mask=_mask(4, 20)))
    warm.join(10)
    assert result == [False] and fake.encoded == [5, 11]
    assert not session.has_features(9) and session.stats["warmed"] == 1
    assert session.warm(session.frames.get(9)) is True  # a later warm-up runs again


def test_a_failed_warm_up_leaves_the_frame_to_the_click():
    session, fake = _session()
    encode = fake.encode

    def broken(frame, interrupt=None):
        fake.encode = encode
        raise RuntimeError("boom")

    fake.encode = broken
    with pytest.raises(RuntimeError):
        session.warm(session.frames.get(3))
    assert not session.has_features(3)
    session.add_prompt(Prompt(3, 1, mask=_mask(4, 20)))
    assert fake.encoded == [3]


def _array_features(fake):
    """The fake's encode gives features of numpy arrays marked with the frame index (as the
    ONNX backend's are arrays), and its step checks that it gets the frame's own."""
    from vosfx.engine.backend import ImageFeatures

    encode, step = fake.encode, fake.step

    def array_encode(frame, interrupt=None):
        encode(frame, interrupt)
        return ImageFeatures(
            *(np.full((1, 2, 4, 4), frame.index + k, np.float32) for k in range(4))
        )

    def checked_step(frame, pass_ids, *, shot_id=0, features=None):
        assert features is not None and features.vision_feat[0, 0, 0, 0] == frame.index + 2
        return step(frame, pass_ids, shot_id=shot_id, features=features)

    fake.encode, fake.step = array_encode, checked_step


@pytest.mark.parametrize("spill", [True, False])
def test_frames_of_overlapping_gaps_are_encoded_once(spill):
    # object 1 prompted on 0 and 20, object 2 on 0 and 12: the frames of object 2's gap are
    # stepped again by object 1's segment (and its tail's frames 13..19 too), long after an
    # LRU of one frame has dropped them; the disk tier keeps them (features bit for bit)
    session, fake = _session(n=N, feature_cache_bytes=1)
    _array_features(fake)
    if not spill:
        session._spill.budget = 0  # no disk: the frames are encoded again
    for obj, frames in ((1, (0, 20)), (2, (0, 12))):
        for t in frames:
            session.add_prompt(Prompt(t, obj, mask=_mask(4 + t % 7, 12 + t % 7)), refine=False)
    fake.encoded.clear()  # (the prompts' own encodes)
    session.track()
    counts = np.bincount(fake.encoded, minlength=N)
    if spill:  # every frame but the prompted 0 is stepped by some pass: once each
        assert counts[0] == 0 and counts[1:].min() == counts[1:].max() == 1
        assert (
            session.stats["spill_hits"] > 0
            and session.stats["spilled"] >= session.stats["spill_hits"]
        )
    else:
        assert counts[1:12].min() == counts[13:20].min() == 2  # twice: both objects step them
        assert session.stats["spill_hits"] == 0
    assert all(session.has_result(t) for t in range(N))
    session.close()


@pytest.mark.parametrize("spill", [True, False])
def test_a_render_keeps_two_frames_of_features_and_encodes_each_frame_once(spill):
    # a render's session (no random access: it only sweeps) holds at most two frames of
    # features, whatever their size, and still encodes every frame once: object 1 prompted on
    # 0 and 20, object 2 on 0 and 12, object 3 on 12 and 25 (its prompt on 12 is computed in
    # the sweep and stepped again by object 1's segment, from the disk tier)
    frames = _frames()
    engine = FakeEngine()
    held = []
    with ClipSession(engine, _info(), MemoryConfig(policy="sam2")) as session:
        fake = engine.sessions[0]
        _array_features(fake)
        if not spill:
            session._spill.budget = 0
        encode = fake.encode

        def counting_encode(frame, interrupt=None):
            held.append(len(session.features._features))
            return encode(frame, interrupt)

        fake.encode = counting_encode
        session.set_prompts(
            [
                Prompt(t, obj, mask=_mask(4 + t % 7, 12 + t % 7))
                for obj, ts in ((1, (0, 20)), (2, (0, 12)), (3, (12, 25)))
                for t in ts
            ]
        )
        out = list(results_in_order(session, _counting_open(frames, {})))
    assert [f.index for f, _r in out] == list(range(N))
    assert max(held) <= 2  # the LRU before each encode: two frames at most
    counts = np.bincount(fake.encoded, minlength=N)
    if spill:
        assert counts.min() == counts.max() == 1, counts
    else:  # without the disk tier, the frames that several passes step are encoded again
        assert counts.max() >= 2, counts


def test_feature_spill_round_trips_and_refuses_what_it_cannot_keep(tmp_path, monkeypatch):
    from vosfx.engine.backend import ImageFeatures
    from vosfx.session.features import FeatureSpill

    def feats(t, dtype=np.float32):
        return ImageFeatures(*(np.arange(8, dtype=dtype).reshape(2, 4) + t + k for k in range(4)))

    spill = FeatureSpill(tmp_path, budget=3 * 4 * 8 * 4)  # three frames
    assert all(spill.put(t, feats(t)) for t in range(3))
    assert not spill.put(3, feats(3))  # over the budget
    got = spill.get(1)
    for name in ("feat_s0", "feat_s1", "vision_feat", "vision_pos"):
        np.testing.assert_array_equal(getattr(got, name), getattr(feats(1), name))
    spill.discard([0])
    assert spill.get(0) is None and spill.put(3, feats(3))  # the freed slot reused
    assert not spill.put(4, feats(4, np.float64))  # another layout
    assert not spill.put(5, {"t": 5})  # not a dataclass of arrays (the torch backend's tensors)
    spill.discard([1])

    def full(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.pwrite", full)
    assert not spill.put(6, feats(6))  # a full disk: encoded again instead
    spill.close()


def test_without_snapshots_a_correction_replays_its_pass_from_the_prompt():
    session, fake = _session(checkpoint_bytes=0)
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.add_prompt(Prompt(20, 1, mask=_mask(4, 12)))
    session.track()
    assert getattr(fake, "snapshots_taken", 0) == 0
    fake.stepped.clear()
    session.add_prompt(Prompt(14, 1, points=np.array([[30, 16]], np.float32), labels=np.array([1])))
    assert fake.corrections == [(1, 14, -1)]
    assert [f for _o, f, _d in fake.stepped] == [19, 18, 17, 16, 15]


@pytest.mark.parametrize("click, resumed, replayed", [(9, 8, []), (10, 8, [9]), (5, 4, [])])
def test_a_correction_resumes_from_the_nearest_snapshot_before_it(click, resumed, replayed):
    """Forward from 0 alone (the tail pass): snapshots after frames 4, 8, 12, ...; a click
    on a snapshot's frame itself uses the one before (the pass must stand before it)."""
    session, fake = _session()
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.track()
    fake.stepped.clear()
    session.add_prompt(
        Prompt(click, 1, points=np.array([[30, 16]], np.float32), labels=np.array([1]))
    )
    assert fake.resumed == [resumed]
    assert [f for _o, f, _d in fake.stepped] == replayed


@pytest.mark.parametrize("back", [1, 2])
def test_a_correction_where_the_viewer_stopped_replays_nothing(back):
    """A pass keeps snapshots after its last steps whatever the spacing: a click on the frame
    the sweep tracked last (a viewer stopped there), or the one before, resumes from the frame
    before it and replays nothing; within the byte budget, and the result is the replay's."""
    n = 28  # the tail from 0 ends at 27: its spaced snapshots are after 4, 8, ..., 24
    session, fake = _session(n=n)
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.track()
    fake.stepped.clear()
    click = Prompt(n - back, 1, points=np.array([[30, 16]], np.float32), labels=np.array([0]))
    session.add_prompt(click)
    assert fake.resumed == [n - back - 1] and fake.stepped == []
    assert session.stats["replayed"] == 0
    fresh, _fake = _session(n=n, checkpoint_bytes=0)  # no snapshots: replayed from frame 0
    fresh.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    fresh.track()
    fresh.add_prompt(click)
    assert fresh.stats["replayed"] == n - back - 1
    np.testing.assert_array_equal(session.result(n - back).logits, fresh.result(n - back).logits)
    session.close()
    fresh.close()


def test_snapshots_stay_within_their_budget_by_spacing_out():
    """Over the budget the spacing doubles and every other snapshot goes: the clip stays
    covered, further apart; a changed prompt's passes lose theirs at the next sweep."""
    from vosfx.session import checkpoints

    n = 200
    session, _fake = _session(n=n, checkpoint_bytes=10 * 1024)  # 10 snapshots of 1 KiB
    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.track()
    cps = session._checkpoints
    assert cps.bytes <= 10 * 1024 and len(cps) <= 10
    assert cps.spacing > checkpoints.FIRST_SPACING
    (frames,) = [sorted(f) for _anchor, f in cps._snaps.values()]
    assert frames == list(range(cps.spacing, n, cps.spacing))  # evenly over the whole pass
    assert frames[-1] >= n - cps.spacing
    # a new prompt on frame 100: the pass from 0 now ends at 50 and attends frame 100 too
    # (another state), so the old tail's snapshots go at the next sweep
    old_keys = set(cps._snaps)
    session.add_prompt(Prompt(100, 1, mask=_mask(4, 12)))
    session.track()
    keys = set(cps._snaps)
    assert keys <= {session._book.state_key(pl) for pl in session.plan()}
    assert not keys & old_keys


def test_removing_a_prompt_tracks_again_what_its_passes_overwrote():
    """A pass computed before a prompt was added is not trusted once the prompt's passes
    (or its own output) overwrote its frames: removing the prompt tracks it again (the
    test double's tracked frames repeat their pass's prompt)."""
    session, _fake = _session()

    def logits(t):
        return session.store.get(1, t).logits

    session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
    session.track()
    session.add_prompt(Prompt(14, 1, mask=_mask(20, 30)))
    session.track()
    np.testing.assert_array_equal(logits(12), logits(14))  # follows the prompt on 14
    session.remove_prompt(1, 14)
    assert session.track() == N - 1
    for t in (12, 14, 20):
        np.testing.assert_array_equal(logits(t), logits(0))  # the prompt on 0 again
    # a prompt set and removed with no tracking in between: its frame is tracked again, the
    # tail going on from its snapshot before it (taken every 4 frames: after frame 16)
    session.add_prompt(Prompt(20, 1, mask=_mask(20, 30)))
    session.remove_prompt(1, 20)
    assert session.store.get(1, 20) is None
    assert session.track() == N - 17 and session.stats["resumed"] == 1
    np.testing.assert_array_equal(logits(20), logits(0))


def test_a_track_stopped_part_way_resumes_and_its_frames_take_corrections():
    """A cancelled track leaves its tail computed up to the frame it reached: a click there
    (``refine=True``) is a correction from that pass's memory, as on a finished track, and the
    next track resumes the tail from its snapshot after that frame (no frame stepped twice);
    without snapshots (``checkpoint_bytes=0``) it tracks again from the prompt."""
    from vosfx.errors import Cancelled

    for budget, first in ((1 << 20, 9), (0, 1)):
        session, fake = _session(checkpoint_bytes=budget)
        session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
        cancel = threading.Event()

        def on_frame(res, cancel=cancel):
            if res.frame_index == 8:
                cancel.set()

        with pytest.raises(Cancelled):
            session.track(on_frame=on_frame, cancel=cancel)
        (tail,) = session.stale()
        assert session._book.done_through(tail) == 8
        assert session.first_to_step([tail]) == {tail: first}
        click = Prompt(5, 1, points=np.array([[8.0, 8.0]], np.float32), labels=np.array([1]))
        session.add_prompt(click)  # frame 5: tracked by the stopped tail
        assert fake.attended == [(1, 5, 1)]
        session.remove_prompt(1, 5)
        steps = len(fake.steps)
        # frame 5's result went with its prompt: the tail resumes after the snapshot before
        # it (every 4 frames: frame 4) where it has snapshots
        want = N - 5 if budget else N - 1
        assert session.track() == want and len(fake.steps) - steps == want
        assert not session.stale()
        session.close()


def test_an_edit_undone_leaves_nothing_to_track_again():
    """A prompted frame's prompt changed, then changed back before any tracking (the studio's
    Undo, a point removed again in the OpenFX effect): its output gets its old version back
    (the output of a prompt computed from itself alone depends on its content only), so the
    passes computed with it still count as done; with a track between the two, the frames
    it overwrote are tracked again. Either way the clip equals a fresh session's."""
    first, other = Prompt(20, 1, mask=_mask(20, 30)), Prompt(20, 1, mask=_mask(10, 16))

    def fresh_logits():
        fresh, _f = _session()
        fresh.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
        fresh.add_prompt(first)
        fresh.track()
        out = [fresh.result(t).logits for t in range(N)]
        fresh.close()
        return out

    want = fresh_logits()
    for track_between in (False, True):
        session, fake = _session()
        session.add_prompt(Prompt(0, 1, mask=_mask(4, 12)))
        session.add_prompt(first)
        session.track()
        session.add_prompt(other)
        assert len(session.stale()) == 3  # the gap's two halves and the tail after 20
        if track_between:
            session.track()
        steps = len(fake.steps)
        session.add_prompt(first)  # changed back
        if track_between:
            assert session.track() == N - 2 and len(session.stale()) == 0
        else:
            assert session.stale() == [] and session.track() == 0
            assert len(fake.steps) == steps
        for t in range(N):
            np.testing.assert_array_equal(session.result(t).logits, want[t])
        session.close()


def test_a_prompts_digest_is_its_content():
    from vosfx.session.prompts import prompt_digest

    click = Prompt(3, 1, points=np.array([[4.0, 5.0]], np.float32), labels=np.array([1]))
    same = Prompt(3, 1, points=np.array([[4.0, 5.0]], np.float32), labels=np.array([1]))
    moved = Prompt(3, 1, points=np.array([[4.0, 6.0]], np.float32), labels=np.array([1]))
    excluded = Prompt(3, 1, points=np.array([[4.0, 5.0]], np.float32), labels=np.array([0]))
    prior = Prompt(
        3,
        1,
        points=click.points,
        labels=click.labels,
        prior=np.zeros((8, 8), np.float32),
    )
    assert prompt_digest(click, 0) == prompt_digest(same, 0)
    digests = {prompt_digest(p, 0) for p in (click, moved, excluded, prior)}
    assert len(digests) == 4 and prompt_digest(click, 1) != prompt_digest(click, 0)
    assert (
        prompt_digest(Prompt(3, 1, points=click.points, labels=click.labels, correction=True), 0)
        is None
    )

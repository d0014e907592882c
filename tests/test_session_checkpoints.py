"""Corrections from pass snapshots (vosfx/session/checkpoints.py) on the real tracker: a click
on a frame far from its pass's prompt resumes from the nearest snapshot and gives the same
result, bit for bit, as replaying the pass from its prompt, for every memory policy whose
corrections are taken (their state is copied with the snapshot: SAMURAI's Kalman filter,
DAM4SAM's and RCMS's bookkeeping, re-prompting's recent masks)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.conftest import shared_data

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from PIL import Image

from vosfx.config import MemoryConfig
from vosfx.engine.loader import SamEngine, torch_backend_for
from vosfx.models.checkpoint import build_model
from vosfx.session import ClipSession
from vosfx.session.frames import ListFrames
from vosfx.types import Frame, Prompt, VideoInfo

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
N = 14


@pytest.fixture(scope="module")
def engine():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: two per process thrash on a loaded shared machine
    torch.manual_seed(0)
    net = build_model(CONFIG, image_size=256)
    yield SamEngine(torch_backend_for(net, "cpu"), "test", None, fill_hole_area=0)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip():
    src = shared_data("davis", "JPEGImages", "blackswan")
    ann = shared_data("davis", "Annotations", "blackswan", "00000.png")
    frames = [np.asarray(Image.open(src / f"{i:05d}.jpg").convert("RGB")) for i in range(N)]
    return frames, np.asarray(Image.open(ann)) == 1


def _correct(engine, clip, memory, click, checkpoint_bytes, prompts):
    frames, mask = clip
    h, w = frames[0].shape[:2]
    info = VideoInfo(path="", width=w, height=h, num_frames=N, fps=None, time_base=1)
    provider = ListFrames(info, [Frame(t, frames[t], None, 1) for t in range(N)])
    with ClipSession(
        engine, info, memory, frames=provider, checkpoint_bytes=checkpoint_bytes
    ) as session:
        for f in prompts:
            session.add_prompt(Prompt(f, 1, mask=mask))
        session.track()
        tracked = session.store.get(1, click.frame_index).logits.copy()
        got = session.add_prompt(click)
        return got.logits[0].copy(), tracked, session.stats["replayed"]


def _click(frame_index, mask):
    ys, xs = np.nonzero(mask)
    return Prompt(
        frame_index,
        1,
        points=np.array([[xs[len(xs) // 3], ys[len(ys) // 3]]], np.float32),
        labels=np.array([0], np.int32),
    )


@pytest.mark.parametrize(
    "policy, reprompt", [("sam2", False), ("rcms", False), ("samurai", False), ("dam4sam", True)]
)
def test_a_correction_from_a_snapshot_equals_the_replay_from_the_prompt(
    engine, clip, policy, reprompt
):
    memory = MemoryConfig(policy=policy, reprompt=reprompt)
    click = _click(11, clip[1])  # the tail pass from 0: snapshots after 4 and 8
    fast, tracked, replayed = _correct(engine, clip, memory, click, 64 << 20, [0])
    slow, tracked0, replayed0 = _correct(engine, clip, memory, click, 0, [0])
    assert (replayed, replayed0) == (2, 10)
    np.testing.assert_array_equal(tracked, tracked0)
    np.testing.assert_array_equal(fast, slow)
    # the click changed the frame: what is compared is a correction, not the tracked mask
    assert float(np.abs(fast - tracked).max()) > 0.05


def test_a_backward_pass_resumes_too(engine, clip):
    """Prompts on 0 and 13: frame 8 is on the backward half (7..12 from 13; a snapshot
    after frame 9)."""
    click = _click(8, clip[1])
    memory = MemoryConfig(policy="sam2")
    fast, _t, replayed = _correct(engine, clip, memory, click, 64 << 20, [0, 13])
    slow, _t0, replayed0 = _correct(engine, clip, memory, click, 0, [0, 13])
    assert (replayed, replayed0) == (0, 4)
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize(
    "policy, reprompt",
    [("sam2", False), ("rcms+shots", False), ("samurai", False), ("dam4sam", True)],
)
def test_a_track_stopped_part_way_goes_on_from_where_it_stopped(engine, clip, policy, reprompt):
    """A track cancelled after frame 6 (the studio's Stop), then run again: the tail goes on
    from its snapshot after frame 6, stepping frames 7-13 only, and every frame equals a track
    run in one go (the pass's state, the policy's included, comes back bit for bit)."""
    from vosfx.errors import Cancelled

    frames, mask = clip
    h, w = frames[0].shape[:2]
    info = VideoInfo(path="", width=w, height=h, num_frames=N, fps=None, time_base=1)
    memory = MemoryConfig(policy=policy, reprompt=reprompt)

    def session():
        provider = ListFrames(info, [Frame(t, frames[t], None, 1) for t in range(N)])
        s = ClipSession(engine, info, memory, frames=provider)
        s.add_prompt(Prompt(0, 1, mask=mask))
        return s

    with session() as whole, session() as stopped:
        whole.track()
        cancel = threading.Event()

        def on_frame(res):
            if res.frame_index == 6:
                cancel.set()

        with pytest.raises(Cancelled):
            stopped.track(on_frame=on_frame, cancel=cancel)
        assert stopped.stats["stepped"] == 6
        assert stopped.first_to_step(stopped.stale()) == {stopped.plan()[0]: 7}
        assert stopped.track() == N - 7 and stopped.stats["resumed"] == 1
        for t in range(N):
            np.testing.assert_array_equal(
                stopped.store.get(1, t).logits, whole.store.get(1, t).logits
            )


@pytest.mark.parametrize("prompts, until, first", [([0], 6, 7), ([0, 13], 5, None)])
def test_a_track_up_to_a_frame_then_the_rest_equals_one_track(engine, clip, prompts, until, first):
    """The studio's "Track to here": frames up to ``until`` computed (a tail stops there; a
    segment reaching into it runs whole), none after it on a tail; the next track goes on from
    there, and every frame equals a track run in one go."""
    frames, mask = clip
    h, w = frames[0].shape[:2]
    info = VideoInfo(path="", width=w, height=h, num_frames=N, fps=None, time_base=1)
    memory = MemoryConfig(policy="sam2")

    def session():
        provider = ListFrames(info, [Frame(t, frames[t], None, 1) for t in range(N)])
        s = ClipSession(engine, info, memory, frames=provider, checkpoint_bytes=64 << 20)
        for f in prompts:
            s.add_prompt(Prompt(f, 1, mask=mask))
        return s

    with session() as whole, session() as partial:
        whole.track()
        partial.track(until=until)
        assert all(partial.store.get(1, t) is not None for t in range(until + 1))
        if first is not None:  # a tail: nothing past until yet, and it goes on from there
            assert partial.store.get(1, until + 1) is None
            assert partial.first_to_step(partial.stale()) == {partial.plan()[0]: first}
        assert partial.track(until=until) == 0  # done up to there: nothing to do
        partial.track()
        assert not partial.stale()
        for t in range(N):
            np.testing.assert_array_equal(
                partial.store.get(1, t).logits, whole.store.get(1, t).logits
            )

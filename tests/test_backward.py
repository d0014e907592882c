"""Frames before the first prompt, tracked backwards from it (vosfx/backward.py)."""

from __future__ import annotations

import json
from fractions import Fraction

import cv2
import numpy as np
import pytest
from fakes import FakeEngine, shift_logits
from media import make_clip, moving_square_frame
from PIL import Image

from vosfx.backward import track_backward
from vosfx.config import MemoryConfig
from vosfx.io.source import probe
from vosfx.job import Job, PromptSpec
from vosfx.pipeline import run
from vosfx.presets import resolve_config
from vosfx.types import Prompt

K = 7  # the prompted frame


@pytest.fixture
def clip(tmp_path):
    path = make_clip(tmp_path / "clip.mkv", n=12, width=96, height=64, codec="ffv1",
                     pix_fmt="yuv444p")
    _, mask = moving_square_frame(K, 96, 64)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    return path, mask


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_reversed_order_and_indices_across_chunks(clip, chunk):
    """The session sees frames K, K-1, ..., 0 as 0, 1, ..., K; results come back under their
    source indices, whatever the chunking."""
    path, mask = clip
    engine = FakeEngine(logit_fn=shift_logits(1))  # logits move 1 column per session index
    info = probe(path)
    store = track_backward(str(path), None, info, engine, MemoryConfig(policy="sam2"),
                           [Prompt(K, 1, mask=mask)], 0, shots=False, chunk=chunk)
    try:
        session = engine.sessions[0]
        assert session.steps == list(range(K + 1)) and session.closed
        base = session.base[1]
        for t in range(K):
            got = store.get(t)
            assert got.frame_index == t and got.obj_ids == (1,)
            want = shift_logits(1)(K - t, 1, base)
            np.testing.assert_allclose(got.logits[0], want, atol=1e-2)  # float16 on disk
        assert not store.covers(K) and store.covers(0)
    finally:
        store.close()


def _job(tmp_path, backward: bool):
    return Job(input=str(tmp_path / "clip.mkv"),
               prompts=(PromptSpec(frame=K, mask=str(tmp_path / "mask.png")),),
               output=str(tmp_path / "out"),
               config=resolve_config(["png16"], {"memory": {"track_backward": backward}}),
               overwrite=True)


@pytest.mark.parametrize("backward", [True, False])
def test_pipeline_mattes_frames_before_the_prompt(tmp_path, clip, config_home, backward):
    events = []
    report = run(_job(tmp_path, backward), engine=FakeEngine(), on_progress=events.append)
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 12
    alpha = [cv2.imread(str(f), cv2.IMREAD_UNCHANGED)[..., 3] / 65535.0 for f in files]
    _, mask = clip
    if backward:
        # the fake repeats the prompt: every frame before K carries the prompt's mask
        assert all(((a > 0.5) ^ mask).mean() < 0.02 for a in alpha[:K])
        assert report.presence[1] == [(0, 11, True)]
        back = [e for e in events if e.event == "backward"]
        assert [e.frames_done for e in back] == list(range(1, K + 1))
        assert events.index(back[-1]) < [e.event for e in events].index("start")
    else:
        assert all(a.max() == 0 for a in alpha[:K])
        assert report.presence[1] == [(0, K - 1, False), (K, 11, True)]
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["frames"] == 12


@pytest.mark.slow
def test_real_tracker_backwards_equals_tracking_the_reversed_clip(tmp_path, config_home):
    """Plumbing check on the real engine (random weights): the chunked backward pass gives
    exactly what a Tracker gives when fed the reversed frames directly."""
    from ckpt import make_checkpoint

    from vosfx.config import ModelConfig
    from vosfx.engine import load_engine
    from vosfx.io.source import open_source

    path = make_clip(tmp_path / "c.mkv", n=10, width=96, height=64, codec="ffv1",
                     pix_fmt="yuv444p")
    _, mask = moving_square_frame(6, 96, 64)
    ckpt, _ = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    engine = load_engine(ModelConfig(backend="torch", device="cpu", image_size=64,
                                     checkpoint=str(ckpt), threads=1))
    info = probe(path)
    mem = MemoryConfig(policy="sam2")
    store = track_backward(str(path), None, info, engine, mem, [Prompt(6, 1, mask=mask)], 0,
                           shots=False, chunk=4)
    with open_source(path) as src:
        frames = list(src)[:7]
    session = engine.start(info, mem)
    session.add_prompt(Prompt(0, 1, mask=mask))
    from vosfx.types import Frame

    direct = [session.step(Frame(r, f.image, f.pts, Fraction(1, 24)))
              for r, f in enumerate(reversed(frames))]
    assert np.ptp(direct[-1].logits) > 0.05  # not degenerate: the comparison can fail
    try:
        for r, res in enumerate(direct[1:], start=1):
            t = 6 - r
            # stored as float16 on disk: relative error <= 2**-11
            np.testing.assert_allclose(store.get(t).logits, res.logits, rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(store.get(t).object_score_logits,
                                       res.object_score_logits, atol=1e-5)
    finally:
        store.close()

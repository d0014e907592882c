"""Tracker: prompts, objects, memory bound, hole filling; a real small model for one run."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from vosfx.engine.backend import TrackOutput
from vosfx.engine.policies import Sam2Policy
from vosfx.engine.tracker import NO_OBJ_SCORE, Tracker, fill_holes
from vosfx.errors import PromptError
from vosfx.types import Frame, Prompt, VideoInfo

H, W = 24, 32


class FakeBackend:
    """Deterministic double: records what each track() call attended."""

    image_size, num_maskmem, max_obj_ptrs, device = 64, 7, 16, "cpu"
    multimask_output_in_sam = multimask_output_for_tracking = True
    multimask_min_pt_num, multimask_max_pt_num = 0, 1
    use_mask_input_as_output_without_sam = binarize_mask_from_pts_for_mem_enc = True

    def __init__(self):
        self.calls = []
        self.encoded = 0

    def encode_image(self, rgb8):
        self.encoded += 1
        return {"t": self.encoded}

    def track(self, req):
        coords = req.point_coords
        self.calls.append((req.memories, req.pointers, None if coords is None else coords.copy()))
        logits = np.full((3, 16, 16), -1.0, np.float32)
        logits[:, 4:12, 4:12] = 2.0
        return TrackOutput(logits, np.array([0.2, 0.9, 0.5], np.float32), logits[0], 0.4, 1.5,
                           ["p0", "p1", "p2"], "ps")

    def mask_as_output(self, features, mask):
        return np.where(np.zeros((16, 16)), 0, 10.0).astype(np.float32), 10.0, "pm"

    def encode_memory(self, features, low_res, score, binarize):
        return ("mem", features["t"], binarize)

    def nbytes(self, value):
        return 8


def _info(n=100):
    return VideoInfo(path="", width=W, height=H, num_frames=n, fps=Fraction(25),
                     time_base=Fraction(1, 25))


def _frame(t):
    return Frame(t, np.zeros((H, W, 3), np.uint8), t, Fraction(1, 25))


def test_multiple_objects_share_one_encode_and_later_objects_start_later():
    be = FakeBackend()
    trk = Tracker(be, Sam2Policy(), _info(), fill_hole_area=0)
    trk.add_prompt(Prompt(0, 7, mask=np.ones((H, W), bool)))
    trk.add_prompt(Prompt(3, 9, points=np.array([[8, 8]], np.float32),
                          labels=np.array([1], np.int32)))
    results = [trk.step(_frame(t)) for t in range(6)]
    assert be.encoded == 6
    assert results[0].obj_ids == (7, 9)
    assert np.all(results[2].logits[1] == NO_OBJ_SCORE)  # object 9 not started yet
    assert results[3].object_score_logits[1] == pytest.approx(1.5)
    assert results[3].iou[1] == pytest.approx(0.9)  # one click: multimask, best IoU
    # the click is scaled to model pixels as sam2 does: x / W * S
    clicks = [c[2] for c in be.calls if c[2] is not None]
    assert len(clicks) == 1
    np.testing.assert_allclose(clicks[0], [[8 / W * 64, 8 / H * 64]], rtol=1e-6)
    assert trk.report()["9"]["peak_bank_entries"] >= 1


def test_prompted_frame_attends_no_memory_and_becomes_conditioning():
    be = FakeBackend()
    trk = Tracker(be, Sam2Policy(), _info(), fill_hole_area=0)
    trk.add_prompt(Prompt(0, 1, mask=np.ones((H, W), bool)))
    trk.add_prompt(Prompt(4, 1, box=np.array([1, 1, 10, 10], np.float32)))
    for t in range(7):
        trk.step(_frame(t))
    memories, pointers, coords = be.calls[3]  # frame 4: the correction
    assert memories is None and coords.shape == (2, 2)
    memories, pointers, _ = be.calls[5]  # frame 6 attends both prompts at t_pos 0
    assert [m.t_pos for m in memories][:2] == [0, 0]
    assert [p.t_diff for p in pointers][:2] == [6, 2]


def test_bank_bounded_over_a_long_clip():
    be = FakeBackend()
    trk = Tracker(be, Sam2Policy(), _info(3000), fill_hole_area=0)
    trk.add_prompt(Prompt(0, 1, mask=np.ones((H, W), bool)))
    for t in range(3000):
        res = trk.step(_frame(t))
        assert res.info["memory"][1]["entries"] <= 1 + 6 + 16
    assert trk.report()["1"]["peak_bank_entries"] <= 1 + 15 + 1


@pytest.mark.parametrize("bad, match", [
    (Prompt(0, 1, mask=np.ones((H + 1, W), bool)), "mask"),
    (Prompt(0, 1), "none"),
    (Prompt(0, 1, points=np.zeros((2, 2), np.float32), labels=np.zeros(3, np.int32)), "labels"),
    (Prompt(0, 1, box=np.zeros(3, np.float32)), "box"),
])
def test_invalid_prompts(bad, match):
    with pytest.raises(PromptError, match=match):
        Tracker(FakeBackend(), Sam2Policy(), _info()).add_prompt(bad)


def test_prompt_for_a_past_frame_and_frames_out_of_order():
    trk = Tracker(FakeBackend(), Sam2Policy(), _info())
    trk.add_prompt(Prompt(0, 1, mask=np.ones((H, W), bool)))
    trk.step(_frame(0))
    with pytest.raises(PromptError, match="not yet tracked"):
        trk.add_prompt(Prompt(0, 1, mask=np.ones((H, W), bool)))
    with pytest.raises(PromptError, match="expected frame 1"):
        trk.step(_frame(2))


def test_a_range_may_start_at_any_frame():
    """vosfx matte --start 10: the first frame stepped is 10, then 11, 12, ..."""
    trk = Tracker(FakeBackend(), Sam2Policy(), _info())
    trk.add_prompt(Prompt(12, 1, mask=np.ones((H, W), bool)))
    for t in (10, 11, 12, 13):
        res = trk.step(_frame(t))
    assert res.frame_index == 13 and res.object_score_logits[0] > 0
    with pytest.raises(PromptError, match="expected frame 14"):
        trk.step(_frame(10))


@pytest.mark.parametrize("hole_px, max_area, filled", [(1, 8, True), (9, 8, False),
                                                        (4, 4, True), (4, 0, False)])
def test_fill_holes(hole_px, max_area, filled):
    logits = np.full((20, 20), 5.0, np.float32)
    logits[2, 2:2 + hole_px] = -3.0
    out = fill_holes(logits, max_area)
    assert (out[2, 2] == np.float32(0.1)) == filled
    assert out[10, 10] == 5.0


def test_real_model_small_run():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from vosfx.engine.loader import torch_backend_for
    from vosfx.models.checkpoint import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads thrash on the shared 2-core machine
    torch.manual_seed(0)
    be = torch_backend_for(build_model("configs/sam2.1/sam2.1_hiera_t.yaml", image_size=64),
                           "cpu")
    rng = np.random.default_rng(0)
    trk = Tracker(be, Sam2Policy(), _info(20))
    mask = np.zeros((H, W), bool)
    mask[5:15, 8:20] = True
    trk.add_prompt(Prompt(0, 1, mask=mask))
    for t in range(20):
        res = trk.step(Frame(t, rng.integers(0, 256, (H, W, 3), np.uint8), t, Fraction(1, 25)))
        assert res.logits.shape == (1, 16, 16) and np.isfinite(res.logits).all()
    torch.set_num_threads(threads)
    rep = trk.report()["1"]
    assert rep["peak_bank_entries"] <= 1 + 15 + 1
    # bf16 memories (1, 64, 4, 4) + float32 pointers (1, 256)
    assert rep["bank_bytes"] <= (1 + 15) * (64 * 4 * 4 * 2 + 256 * 4)


def test_load_engine_from_a_checkpoint_file(tmp_path, config_home):
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.ckpt import make_checkpoint
    from vosfx.config import MemoryConfig, ModelConfig
    from vosfx.engine import load_engine

    path, digest = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    engine = load_engine(ModelConfig(backend="torch", device="cpu", image_size=64,
                                     checkpoint=str(path)))
    assert engine.model_sha256 == digest
    with engine:
        trk = engine.start(_info(3), MemoryConfig(policy="sam2"))
        trk.add_prompt(Prompt(0, 1, mask=np.ones((H, W), bool)))
        res = trk.step(_frame(0))
        assert res.logits.shape == (1, 16, 16) and res.object_score_logits[0] == 10.0


def test_missing_torch_names_the_extra(monkeypatch):
    import sys

    from vosfx.config import ModelConfig
    from vosfx.engine import load_engine
    from vosfx.errors import BackendError

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackendError, match=r'pip install "vosfx\[torch\]"'):
        load_engine(ModelConfig(backend="torch"))

"""Tracker: prompts (anchors), passes both ways, memory bound, hole filling; a real small
model for one run."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from vosfx.engine.backend import TrackOutput
from vosfx.engine.decoding import fill_holes
from vosfx.engine.policies import Sam2Policy
from vosfx.engine.tracker import Tracker
from vosfx.errors import PromptError, VosfxError
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

    def encode_image(self, rgb8, interrupt=None):
        self.encoded += 1
        return {"t": self.encoded}

    def track(self, req):
        coords = req.point_coords
        self.calls.append((req.memories, req.pointers, None if coords is None else coords.copy()))
        logits = np.full((3, 16, 16), -1.0, np.float32)
        logits[:, 4:12, 4:12] = 2.0
        return TrackOutput(
            logits,
            np.array([0.2, 0.9, 0.5], np.float32),
            logits[0],
            0.4,
            1.5,
            ["p0", "p1", "p2"],
            "ps",
        )

    def mask_as_output(self, features, mask):
        return np.where(np.zeros((16, 16)), 0, 10.0).astype(np.float32), 10.0, "pm"

    def encode_memory(self, features, low_res, score, binarize):
        return ("mem", features["t"], binarize)

    def nbytes(self, value):
        return 8


def _info(n=100):
    return VideoInfo(
        path="", width=W, height=H, num_frames=n, fps=Fraction(25), time_base=Fraction(1, 25)
    )


def _frame(t):
    return Frame(t, np.zeros((H, W, 3), np.uint8), t, Fraction(1, 25))


def _mask(on=True):
    return np.full((H, W), on, bool)


def test_prompts_then_one_encode_per_frame_for_all_passes():
    be = FakeBackend()
    trk = Tracker(be, Sam2Policy(), _info(), fill_hole_area=0)
    r7 = trk.prompt(_frame(0), Prompt(0, 7, mask=_mask()))
    r9 = trk.prompt(
        _frame(0),
        Prompt(0, 9, points=np.array([[8, 8]], np.float32), labels=np.array([1], np.int32)),
    )
    assert r7.object_score_logit == 10.0 and r9.object_score_logit == pytest.approx(1.5)
    assert r9.iou == pytest.approx(0.9)  # one click: multimask, best predicted IoU
    # the click is scaled to model pixels as sam2 does: x / W * S
    np.testing.assert_allclose(be.calls[0][2], [[8 / W * 64, 8 / H * 64]], rtol=1e-6)
    p7, p9 = trk.start_pass(7, 0, 1), trk.start_pass(9, 0, 1)
    encoded = be.encoded
    for t in range(1, 6):
        out = trk.step(_frame(t), [p7, p9])
        assert [r.obj_id for r in out] == [7, 9] and all(r.frame_index == t for r in out)
    assert be.encoded == encoded + 5  # once per frame for both objects
    trk.end_pass(p7)
    trk.end_pass(p9)
    assert trk.report()["9"]["peak_bank_entries"] >= 1


def test_a_pass_attends_its_anchor_and_neighbour_and_only_past_pointers():
    be = FakeBackend()
    trk = Tracker(be, Sam2Policy(), _info(), fill_hole_area=0)
    trk.prompt(_frame(0), Prompt(0, 1, mask=_mask()))
    trk.prompt(_frame(4), Prompt(4, 1, box=np.array([1, 1, 10, 10], np.float32)))
    memories, _pointers, coords = be.calls[-1]  # the box prompt: no memory, 2 corner points
    assert memories is None and coords.shape == (2, 2)
    fwd = trk.start_pass(1, 0, 1, neighbour=4)
    trk.step(_frame(1), [fwd])
    memories, pointers, _ = be.calls[-1]
    assert [m.t_pos for m in memories] == [0, 0]  # both prompted frames, conditioning
    assert [p.t_diff for p in pointers] == [1]  # frame 0's pointer only: 4 is in the future
    back = trk.start_pass(1, 4, -1, neighbour=0)
    trk.step(_frame(3), [back])
    memories, pointers, _ = be.calls[-1]
    assert [m.t_pos for m in memories] == [0, 0]
    assert [p.t_diff for p in pointers] == [1]  # backwards, frame 4 is the past, 1 away
    trk.step(_frame(2), [back])
    memories, pointers, _ = be.calls[-1]
    assert [m.t_pos for m in memories] == [0, 0, 6]  # + frame 3 as the previous frame
    assert [p.t_diff for p in pointers] == [2, 1]


def test_bank_bounded_over_a_long_clip():
    be = FakeBackend()
    trk = Tracker(be, Sam2Policy(), _info(3000), fill_hole_area=0)
    trk.prompt(_frame(0), Prompt(0, 1, mask=_mask()))
    pid = trk.start_pass(1, 0, 1)
    for t in range(1, 3000):
        (res,) = trk.step(_frame(t), [pid])
        assert res.info["memory"]["entries"] <= 1 + 6 + 16
    trk.end_pass(pid)
    assert trk.report()["1"]["peak_bank_entries"] <= 1 + 15 + 1


def _clicks(xy, labels=None) -> Prompt:
    pts = np.asarray(xy, np.float32).reshape(-1, 2)
    lab = np.asarray([1] * len(pts) if labels is None else labels, np.int32)
    return Prompt(0, 1, points=pts, labels=lab)


@pytest.mark.parametrize(
    "bad, match",
    [
        (Prompt(0, 1, mask=np.ones((H + 1, W), bool)), "mask"),
        (Prompt(0, 1), "none"),
        (Prompt(0, 1, points=np.zeros((2, 2), np.float32), labels=np.zeros(3, np.int32)), "labels"),
        (Prompt(0, 1, box=np.zeros(3, np.float32)), "box"),
        (Prompt(1, 1, mask=np.ones((H, W), bool)), "given with frame 0"),
        # values SAM 2 takes without a word: NaN logits or a mask of nothing in particular
        (_clicks([[float("nan"), 5]]), r"points: expected x, y inside the 32x24 frame.*nan"),
        (_clicks([[5, 5], [W + 1, 5]]), r"points: .*inside the 32x24 frame.*\(33, 5\)"),
        (_clicks([[5, -0.5]]), r"\(5, -0.5\)"),
        (_clicks([[5, 5]], [2]), r"labels of 1 \(include\) or 0 \(exclude\), found \[2\]"),
        (_clicks([]), "at least one point or a box"),
        (Prompt(0, 1, box=np.array([20, 2, 4, 10], np.float32)), r"x0 < x1 and y0 < y1.*20"),
        (Prompt(0, 1, box=np.array([2, 2, 40, 10], np.float32)), r"box: .*\(40, 10\)"),
        (Prompt(0, 0, mask=_mask()), "expected an object id.*found 0"),
        (Prompt(0, -5, mask=_mask()), "expected an object id.*found -5"),
        (Prompt(0, 1.5, mask=_mask()), "expected an object id.*found 1.5"),  # type: ignore[arg-type]
        (Prompt(0, 2**40, mask=_mask()), "expected an object id"),
        (Prompt(0, True, mask=_mask()), "expected an object id.*found True"),
    ],
)
def test_invalid_prompts(bad, match):
    with pytest.raises(PromptError, match=match):
        Tracker(FakeBackend(), Sam2Policy(), _info()).prompt(_frame(0), bad)


def test_passes_step_consecutive_frames_from_a_known_anchor():
    trk = Tracker(FakeBackend(), Sam2Policy(), _info())
    with pytest.raises(PromptError, match="no prompt on frame 3"):
        trk.start_pass(1, 3, 1)
    trk.prompt(_frame(3), Prompt(3, 1, mask=_mask()))
    pid = trk.start_pass(1, 3, -1)
    with pytest.raises(VosfxError, match="expected frame 2, found 4"):
        trk.step(_frame(4), [pid])
    (res,) = trk.step(_frame(2), [pid])
    assert res.frame_index == 2 and res.info["direction"] == -1


def test_model_input_is_what_the_encoder_resizes_to():
    trk = Tracker(FakeBackend(), Sam2Policy(), _info())
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), np.uint8)
    small = trk.model_input(Frame(0, rgb, None, Fraction(1)))
    assert small.image.shape == (64, 64, 3) and small.image.dtype == np.uint8
    from vosfx.engine.backend import preprocess

    np.testing.assert_array_equal(preprocess(small.image, 64), preprocess(rgb, 64))


def test_encode_takes_the_model_input_prepared_on_the_decode_thread():
    # A frame prepared by the source (Frame.model_input) is encoded from that S x S image,
    # and model_input hands it back without resizing again.
    backend = FakeBackend()
    seen = []
    backend.encode_image = lambda rgb8, interrupt=None: seen.append(rgb8) or {"t": len(seen)}
    trk = Tracker(backend, Sam2Policy(), _info())
    rgb = np.random.default_rng(1).integers(0, 256, (H, W, 3), np.uint8)
    small = trk.model_input(Frame(0, rgb, None, Fraction(1))).image
    prepared = Frame(0, rgb, None, Fraction(1), model_input=small)
    trk.encode(prepared)
    trk.encode(Frame(0, rgb, None, Fraction(1)))
    assert seen[0] is small and seen[1] is rgb
    assert trk.model_input(prepared).image is small


@pytest.mark.parametrize(
    "hole_px, max_area, filled", [(1, 8, True), (9, 8, False), (4, 4, True), (4, 0, False)]
)
def test_fill_holes(hole_px, max_area, filled):
    logits = np.full((20, 20), 5.0, np.float32)
    logits[2, 2 : 2 + hole_px] = -3.0
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
    be = torch_backend_for(build_model("configs/sam2.1/sam2.1_hiera_t.yaml", image_size=64), "cpu")
    rng = np.random.default_rng(0)
    trk = Tracker(be, Sam2Policy(), _info(20))
    mask = np.zeros((H, W), bool)
    mask[5:15, 8:20] = True

    def frame(t):
        return Frame(t, rng.integers(0, 256, (H, W, 3), np.uint8), t, Fraction(1, 25))

    trk.prompt(frame(0), Prompt(0, 1, mask=mask))
    pid = trk.start_pass(1, 0, 1)
    for t in range(1, 20):
        (res,) = trk.step(frame(t), [pid])
        assert res.logits.shape == (16, 16) and np.isfinite(res.logits).all()
    trk.end_pass(pid)
    torch.set_num_threads(threads)
    assert trk.report()["1"]["peak_bank_entries"] <= 1 + 15 + 1


def test_load_engine_from_a_checkpoint_file(tmp_path, config_home):
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.ckpt import make_checkpoint
    from vosfx.config import MemoryConfig, ModelConfig
    from vosfx.engine import load_engine

    path, digest = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    engine = load_engine(
        ModelConfig(backend="torch", device="cpu", image_size=64, checkpoint=str(path))
    )
    assert engine.model_sha256 == digest
    with engine:
        trk = engine.start(_info(3), MemoryConfig(policy="sam2"))
        res = trk.prompt(_frame(0), Prompt(0, 1, mask=np.ones((H, W), bool)))
        assert res.logits.shape == (16, 16) and res.object_score_logit == 10.0


def test_missing_torch_names_the_extra(monkeypatch):
    import sys

    from vosfx.config import ModelConfig
    from vosfx.engine import load_engine
    from vosfx.errors import BackendError

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackendError, match=r'pip install "vosfx\[torch\]"'):
        load_engine(ModelConfig(backend="torch"))


def test_a_backend_without_dense_masks_decodes_clicks_alone(caplog):
    be = FakeBackend()
    be.supports_mask_input = False
    seen = []
    real = be.track

    def spy(req):
        seen.append(req.mask_logits)
        return real(req)

    be.track = spy
    trk = Tracker(be, Sam2Policy(), _info(), fill_hole_area=0)
    click = Prompt(0, 1, points=np.array([[8, 8]], np.float32), labels=np.array([1], np.int32))
    with caplog.at_level("WARNING"):
        trk.prompt(_frame(0), click, previous=np.zeros((16, 16), np.float32))
    assert seen == [None]
    be.supports_mask_input = True
    trk.prompt(_frame(0), click, previous=np.full((16, 16), 50.0, np.float32))
    np.testing.assert_array_equal(seen[1], np.full((16, 16), 32.0))  # clamped as SAM 2

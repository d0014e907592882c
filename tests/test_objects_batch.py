"""Several objects of a frame as one batch: ``track_many`` / ``encode_memory_many`` give the
single calls' results (torch backend, seeded random weights), the fallback loops for a backend
without them, and the tracker sends a frame's passes in one call."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from vosfx.engine.backend import (
    MemoryItem,
    MemoryRequest,
    PointerItem,
    TrackOutput,
    TrackRequest,
    encode_memory_many,
    track_many,
)
from vosfx.engine.policies import Sam2Policy
from vosfx.engine.tracker import Tracker
from vosfx.types import Frame, Prompt, VideoInfo

S = 128
TOL = 1e-5  # a batch's kernels may sum in another order than one item's


@pytest.fixture(scope="module")
def backend():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from vosfx.engine.loader import torch_backend_for
    from vosfx.models.checkpoint import build_model

    torch.manual_seed(0)
    return torch_backend_for(build_model("configs/sam2.1/sam2.1_hiera_t.yaml", image_size=S))


@pytest.fixture(scope="module")
def frame(backend):
    rng = np.random.default_rng(0)
    feats = backend.encode_image(rng.integers(0, 255, (S, S, 3), dtype=np.uint8))
    masks = []
    for i in range(3):
        m = np.zeros((S, S), bool)
        m[8 + 12 * i : 60 + 12 * i, 10 + 20 * i : 50 + 9 * i] = True
        masks.append(m)
    outs = [backend.mask_as_output(feats, m) for m in masks]
    return feats, outs


def _same(a: TrackOutput, b: TrackOutput) -> None:
    for x, y in [
        (a.multi_logits, b.multi_logits),
        (a.multi_ious, b.multi_ious),
        (a.single_logits, b.single_logits),
        (np.float32(a.object_score_logit), np.float32(b.object_score_logit)),
        (a.multi_ptrs.numpy(), b.multi_ptrs.numpy()),
        (a.single_ptr.numpy(), b.single_ptr.numpy()),
    ]:
        assert np.shape(x) == np.shape(y)
        assert float(np.abs(np.asarray(x) - np.asarray(y)).max()) <= TOL
    np.testing.assert_array_equal(a.multi_logits > 0, b.multi_logits > 0)
    np.testing.assert_array_equal(a.single_logits > 0, b.single_logits > 0)


def _mixed_requests(feats, mems: list, ptrs: list, scale: float) -> list[TrackRequest]:
    """Six requests on one frame: three objects with the same layout (two memories, one of
    them key-scaled for object 1, one pointer; object 2 gated at -1), interleaved with one of
    another layout (one memory, two pointer distances: a batch of its own) and two prompts
    without memory, with points."""
    objs = [
        TrackRequest(
            feats,
            [MemoryItem(mems[i], 0), MemoryItem(mems[(i + 1) % 3], 6, scale if i == 1 else 1.0)],
            [PointerItem(ptrs[i], 1)],
            1,
            min_object_score=-1.0 if i == 2 else 0.0,
        )
        for i in range(3)
    ]
    odd = TrackRequest(feats, [MemoryItem(mems[0], 0)], [PointerItem(ptrs[0], 2)], 2)
    pts = [
        TrackRequest(
            feats,
            point_coords=np.array([[20.0 + 9 * i, 40.0]], np.float32),
            point_labels=np.array([1], np.int32),
        )
        for i in range(2)
    ]
    return [objs[0], odd, objs[1], pts[0], objs[2], pts[1]]


def test_encode_memory_many_equals_single_calls(backend, frame):
    import torch

    feats, outs = frame
    reqs = [MemoryRequest(feats, low, score, i == 1) for i, (low, score, _p) in enumerate(outs)]
    single = [backend.encode_memory(r.features, r.low_res, r.object_score_logit, r.binarize) for r in reqs]  # fmt: skip
    many = backend.encode_memory_many(reqs)
    assert len(many) == 3
    for a, b in zip(single, many, strict=True):
        assert a.shape == b.shape == (1, 64, S // 16, S // 16) and b.dtype == torch.bfloat16
        # stored in bfloat16: a float32 difference in the last bits may round to the
        # neighbouring bfloat16 value (one step: at most 2^-7 relative)
        np.testing.assert_allclose(b.float().numpy(), a.float().numpy(), rtol=2**-7, atol=TOL)
        assert float((a == b).float().mean()) > 0.99
    # the binarize flag is per item: item 1 encoded binarised differs from its soft encoding
    soft = backend.encode_memory(feats, outs[1][0], outs[1][1], False)
    assert not torch.equal(soft, many[1])


def test_track_many_equals_single_calls(backend, frame):
    feats, outs = frame
    mems = [backend.encode_memory(feats, low, score, True) for low, score, _p in outs]
    all_reqs = _mixed_requests(feats, mems, [p for _l, _s, p in outs], scale=0.5)
    many = backend.track_many(all_reqs)
    assert len(many) == len(all_reqs)
    for r, got in zip(all_reqs, many, strict=True):
        _same(backend.track(r), got)
    # the objects really differ (a batch that repeated item 0 would fail above)
    assert not np.array_equal(many[0].multi_logits, many[2].multi_logits)


class _Recording:
    """A backend double with the batched calls, recording how many requests each call had."""

    image_size, num_maskmem, max_obj_ptrs, device = 64, 7, 16, "cpu"
    multimask_output_in_sam = multimask_output_for_tracking = True
    multimask_min_pt_num, multimask_max_pt_num = 0, 1
    use_mask_input_as_output_without_sam = binarize_mask_from_pts_for_mem_enc = True

    def __init__(self, batched: bool) -> None:
        self.calls: list[tuple[str, int]] = []
        if batched:
            self.track_many = self._track_many
            self.encode_memory_many = self._encode_memory_many

    def encode_image(self, rgb8, interrupt=None):
        return {"frame": int(rgb8[0, 0, 0])}

    def track(self, req):
        self.calls.append(("track", 1))
        return self._out(req)

    def _out(self, req):
        logits = np.full((3, 16, 16), -1.0, np.float32)
        k = int(np.asarray(req.memories[0].maskmem[1]))  # the object, from its anchor memory
        logits[:, k : k + 4, 4:12] = 2.0
        return TrackOutput(
            logits, np.array([0.2, 0.9, 0.5], np.float32), logits[0], 0.4, 1.5, [k] * 3, [k]
        )

    def _track_many(self, reqs):
        self.calls.append(("track_many", len(reqs)))
        return [self._out(r) for r in reqs]

    def mask_as_output(self, features, mask):
        return np.where(mask[::2, ::2][:16, :16], 10.0, -10.0).astype(np.float32), 10.0, "p"

    def encode_memory(self, features, low_res, score, binarize):
        self.calls.append(("encode_memory", 1))
        return ("mem", int(np.argmax((low_res > 0).any(axis=1))))

    def _encode_memory_many(self, reqs):
        self.calls.append(("encode_memory_many", len(reqs)))
        return [("mem", int(np.argmax((r.low_res > 0).any(axis=1)))) for r in reqs]

    def nbytes(self, value):
        return 8


def _run(batched: bool):
    h = w = 32
    info = VideoInfo(
        path="", width=w, height=h, num_frames=5, fps=Fraction(25), time_base=Fraction(1, 25)
    )
    be = _Recording(batched)
    trk = Tracker(be, Sam2Policy(), info, fill_hole_area=0)
    img = np.zeros((h, w, 3), np.uint8)
    for k in range(3):
        m = np.zeros((h, w), bool)
        m[4 * k : 4 * k + 8, 8:24] = True
        trk.prompt(Frame(0, img, 0, Fraction(1, 25)), Prompt(0, k + 1, mask=m))
    pids = [trk.start_pass(k + 1, 0, 1) for k in range(3)]
    be.calls.clear()
    results = [trk.step(Frame(t, img, t, Fraction(1, 25)), pids) for t in (1, 2)]
    return be.calls, results


def test_tracker_sends_a_frames_passes_in_one_call():
    calls, results = _run(batched=True)
    assert calls == [("track_many", 3), ("encode_memory_many", 3)] * 2
    loop_calls, loop_results = _run(batched=False)
    assert loop_calls == ([("track", 1)] * 3 + [("encode_memory", 1)] * 3) * 2
    for got, want in zip(results, loop_results, strict=True):
        assert [r.obj_id for r in got] == [1, 2, 3]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a.logits, b.logits)
            assert a.info == b.info
    # each object kept its own memory (the double's logits follow the anchor's row)
    assert [int(np.argmax((r.logits > 0).any(axis=1))) for r in results[1]] == [0, 2, 4]


def test_module_functions_loop_without_batched_calls():
    be = _Recording(batched=False)
    feats = {"frame": 0}
    low = np.zeros((16, 16), np.float32)
    assert encode_memory_many(be, [MemoryRequest(feats, low, 1.0, True)] * 2) == [("mem", 0)] * 2
    req = TrackRequest(feats, [MemoryItem(("mem", 3), 0)])
    outs = track_many(be, [req, req])
    assert [o.multi_ptrs for o in outs] == [[3] * 3] * 2
    assert be.calls == [("encode_memory", 1)] * 2 + [("track", 1)] * 2


# --- the ONNX backend: the graphs' batch axis -----------------------------------------------


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def onnx_backend(request):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")  # the test bundle is exported from seeded random weights
    pytest.importorskip("sam2")
    from tests.onnx_bundle import exported
    from vosfx.engine.onnx_backend import OnnxBackend

    _ckpt, _sha, bundle = exported(("bf16",) if request.param == "bf16" else ())
    if request.param == "bf16":
        ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
        caps = [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
        if "BF16" not in caps:
            pytest.skip(f"this CPU has no bfloat16 arithmetic (OpenVINO: {caps})")
    return OnnxBackend(bundle, device="cpu", threads=2, precision=request.param)


def test_onnx_track_many_and_encode_memory_many_equal_single_calls(onnx_backend):
    """Three objects of a frame in one call of each per-object graph (memory attention,
    decoder, memory encoder; OpenVINO compiles the bf16 graphs once per batch size) give the
    single calls' results; requests of other layouts run in batches of their own."""
    from vosfx.engine.backend import from_bf16_bits

    be = onnx_backend
    bf16 = be.precision == "bf16"
    s = be.image_size
    rng = np.random.default_rng(0)
    feats = be.encode_image(rng.integers(0, 255, (s, s, 3), dtype=np.uint8))
    outs = []
    for i in range(3):
        m = np.zeros((s, s), bool)
        m[s // 8 + 16 * i : s // 2 + 16 * i, s // 10 + 24 * i : s // 2 + 8 * i] = True
        outs.append(be.mask_as_output(feats, m))

    reqs = [MemoryRequest(feats, low, sc, i == 1) for i, (low, sc, _p) in enumerate(outs)]
    single = [be.encode_memory(r.features, r.low_res, r.object_score_logit, r.binarize) for r in reqs]  # fmt: skip
    many = be.encode_memory_many(reqs)
    assert len(many) == 3
    for a, b in zip(single, many, strict=True):
        assert a.shape == b.shape == ((s // 16) ** 2, 64) and b.dtype == np.uint16
        # bfloat16 memories: a last-bit difference of the float32 may land on the
        # neighbouring value; the bf16 tier's graph compiled for another batch size rounds
        # its bfloat16 arithmetic in its own order (measured: within 0.004 of values up to
        # ~1.2; the tier itself is 0.2-0.3 from fp32 in logits, docs/onnx.md)
        np.testing.assert_allclose(
            from_bf16_bits(b),
            from_bf16_bits(a),
            rtol=2**-7,
            atol=0.02 if bf16 else TOL,
        )
    soft = be.encode_memory(feats, outs[1][0], outs[1][1], False)
    assert not np.array_equal(soft, many[1])  # the binarize flag is per item

    all_reqs = _mixed_requests(feats, single, [p for _l, _s, p in outs], scale=0.5)
    got = be.track_many(all_reqs)
    assert len(got) == len(all_reqs)
    tol = 0.05 if bf16 else TOL
    for r, b in zip(all_reqs, got, strict=True):
        a = be.track(r)
        for x, y in [
            (a.multi_logits, b.multi_logits),
            (a.multi_ious, b.multi_ious),
            (a.single_logits, b.single_logits),
            (a.multi_ptrs, b.multi_ptrs),
            (a.single_ptr, b.single_ptr),
        ]:
            assert np.shape(x) == np.shape(y)
            assert float(np.abs(np.asarray(x) - np.asarray(y)).max()) <= tol
        assert abs(a.object_score_logit - b.object_score_logit) <= tol
    assert not np.array_equal(got[0].multi_logits, got[2].multi_logits)
    if bf16:  # OpenVINO compiled its per-object stages once per batch size met (the memory
        # encoder runs on OpenVINO on CPUs with AMX only: openvino_runtime.tier_stages)
        from vosfx.engine import openvino_runtime as ovr

        on_ov = ovr.tier_stages(ovr.cpu_has_amx())
        # the single calls above repeat their shapes, so memory attention ran its steady form
        # (compiled for them, its batch forms dropped: OvSession's steady_shapes); new shapes
        # bring the batch forms back
        be.track_many(all_reqs)
        be.track(all_reqs[0])
        assert be._sess["memory_attention"]._steady is None
        for stage in ("memory_attention", "memory_encoder"):
            if stage in on_ov:
                assert set(be._sess[stage]._compiled) == {1, 3}, stage
            else:
                assert type(be._sess[stage]).__name__ == "InferenceSession", stage

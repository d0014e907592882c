"""The reduced-precision tiers (``--precision bf16|int8``): they load, run, and their masks
agree with the fp32 path; bad values and missing prerequisites give the documented error.

The bf16 tier runs the four per-frame stages on OpenVINO in bfloat16; its slow
test needs ``openvino`` and a CPU with bfloat16 arithmetic (AMX / AVX512_BF16) and skips
otherwise, saying which is missing.
"""

from __future__ import annotations

import builtins
import logging
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data
from vosfx.errors import BackendError

pytest.importorskip("onnxruntime")
N_FRAMES = 8
BAR = 0.99  # binary-mask IoU against the fp32 path (issue 17), at BAR_SIZE
# The bar is the issue's, measured where it applies: at 1024 (benchmarks/precision.py). At the
# other tests' 256 a low-resolution logit cell is 16 times the area, and the bf16 tier measured
# 0.9891 on blackswan on an AMD EPYC without AMX (0.9955 at 1024 there).
BAR_SIZE = 1024
BAR_FRAMES = 4


@pytest.fixture(scope="module")
def bundle():
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.onnx_bundle import exported

    return exported()


def test_bad_precision_is_refused(bundle):
    from vosfx.engine.onnx_backend import OnnxBackend

    with pytest.raises(BackendError, match=r"precision: expected one of fp32, fp16, bf16, int8"):
        OnnxBackend(bundle[2], device="cpu", precision="int4")


def test_bad_precision_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from vosfx.cli import cli

    res = CliRunner().invoke(cli, ["matte", "in.mp4", "--precision", "int4"])
    assert res.exit_code == 2, res.output  # usage error (README: exit codes)
    assert "--precision" in res.output and "int4" in res.output


def test_torch_backend_refuses_reduced_precision(config_home):
    from vosfx.config import ModelConfig
    from vosfx.engine.loader import build_engine

    with pytest.raises(BackendError, match="--precision int8 runs on the onnx backend") as err:
        build_engine(ModelConfig(backend="torch", precision="int8"))
    assert err.value.exit_code == 9


def test_bf16_without_openvino_says_how_to_get_it(bundle, monkeypatch):
    from vosfx.engine.onnx_backend import OnnxBackend

    real = builtins.__import__

    def no_openvino(name, *a, **k):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(BackendError, match=r"--precision bf16 .*pip install openvino"):
        OnnxBackend(bundle[2], device="cpu", precision="bf16")


def test_bf16_on_a_cpu_without_bf16_says_so(bundle, monkeypatch):
    pytest.importorskip("openvino")
    from vosfx.engine import openvino_runtime as ovr
    from vosfx.engine.onnx_backend import OnnxBackend

    monkeypatch.setattr(ovr, "cpu_capabilities", lambda _core: ["FP32", "INT8", "EXPORT_IMPORT"])
    with pytest.raises(BackendError, match="this CPU has no bfloat16 arithmetic"):
        OnnxBackend(bundle[2], device="cpu", precision="bf16")


# --- the tiers against fp32 --------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip():
    from PIL import Image

    src = shared_data("davis", "JPEGImages", "blackswan")
    ann = shared_data("davis", "Annotations", "blackswan", "00000.png")
    frames = [np.asarray(Image.open(src / f"{i:05d}.jpg").convert("RGB")) for i in range(N_FRAMES)]
    return frames, np.asarray(Image.open(ann)) == 1


def _masks(backend, frames, mask):
    from vosfx.engine.loader import SamEngine
    from vosfx.pipeline import track_arrays
    from vosfx.types import Prompt

    h, w = frames[0].shape[:2]
    engine = SamEngine(backend, "test", None)
    return [
        (res.video_logits(h, w)[0] > 0, res.logits[0].copy())
        for _f, res in track_arrays(engine, frames, [Prompt(0, 1, mask=mask)])
    ]


_FP32: dict = {}


def _fp32_masks(folder, frames, mask):
    """The fp32 path's masks, made once for both tiers."""
    from vosfx.engine.onnx_backend import OnnxBackend

    if folder not in _FP32:
        _FP32[folder] = _masks(OnnxBackend(folder, device="cpu", threads=2), frames, mask)
    return _FP32[folder]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _bf16_or_skip():
    pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    from vosfx.engine import openvino_runtime as ovr

    caps = ovr.cpu_capabilities(ovr.core("fp32"))
    if "BF16" not in caps:
        pytest.skip(f"this CPU has no bfloat16 arithmetic (OpenVINO: {caps})")
    return ovr


@pytest.mark.parametrize(
    "amx,asked,blocks",
    [
        (True, None, 8),
        (False, None, 8),
        (True, "fused", 0),
        (False, "fused", 0),
        (False, "split", 8),
    ],
)
def test_bf16_splits_memory_attention_into_query_blocks(monkeypatch, amx, asked, blocks):
    """Memory attention's attention in query blocks on every CPU (2.6x faster than OpenVINO's
    own kernel on the Xeon with AMX, 1.4-1.6x on Zen 4 without: docs/benchmarks/onnx.md, tenth
    and twenty-second passes); ``attention="fused"`` keeps the kernel, for comparisons. With
    AMX the four per-frame stages run on OpenVINO, without it the two heavy ones (the others'
    bfloat16 cost the masks' IoU its margin there), the rest float32 on ONNX Runtime; the
    image encoder's weights float16 only without AMX (with it the masks' IoU fell). The
    attentions the kernels take run in one: the int8 kernel without AMX, with it the int16
    kernel's AMX form in bfloat16 (stood in for as measured worth it: no AMX here)."""
    ovr = _bf16_or_skip()
    from tests.onnx_bundle import exported
    from vosfx.engine import amx_attention
    from vosfx.engine.onnx_backend import OnnxBackend

    _, _, folder = exported(("bf16",))
    monkeypatch.setattr(ovr, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(amx_attention, "why_unavailable", lambda threads: None)
    # the test graphs' attentions have 256 queries: the kernel takes them all here
    monkeypatch.setattr(ovr, "FUSED_ATTENTION_QUERIES", 1)
    low = OnnxBackend(folder, device="cpu", threads=1, precision="bf16", attention=asked)
    on_ov = ovr.STAGES if amx else ("image_encoder", "memory_attention")
    assert ovr.tier_stages(amx) == on_ov
    for stage in ovr.STAGES:
        if stage not in on_ov:
            assert type(low._sess[stage]).__name__ == "InferenceSession", stage
            assert low.runtime()["stages"][stage] == "onnxruntime CPUExecutionProvider"
            continue
        assert low._sess[stage].attention_blocks == (blocks if stage == "memory_attention" else 0)
        # float16 image-encoder weights where the CPU has no AMX
        assert low._sess[stage].float16_weights == (stage == "image_encoder" and not amx)
        # where they stay float32 or memory attention runs in blocks, the heavy stages'
        # buffers go back after every call
        heavy = stage in ("image_encoder", "memory_attention")
        assert low._sess[stage].release_buffers == (heavy and (amx or blocks > 0))
        # Hiera's qkv products one per part; memory attention compiled for its steady shapes,
        # whose buffers it keeps (and the encoder its own with them)
        assert low._sess[stage].separate_products == (stage == "image_encoder")
        assert low._sess[stage].steady_shapes == (stage == "memory_attention")
        assert low._sess[stage].hold_steady_buffers
        # the attentions in a kernel (the int8 kernel's twenty-eighth pass; the AMX kernel's
        # forty-sixth): memory attention's 8 (4 layers x 2), none left in blocks; Hiera's 3
        # global attentions
        kernel = blocks > 0
        assert low._sess[stage].fused_kernel == ("amx-bf16" if amx else "int8")
        fused = {"memory_attention": 8, "image_encoder": 3}.get(stage, 0) if kernel else 0
        assert low._sess[stage].fused_attentions == fused
        in_blocks = stage == "memory_attention" and blocks > 0 and not kernel
        assert low._sess[stage].split_attentions == (8 if in_blocks else 0)
        assert low._sess[stage].int8_products == 0
        assert not low._sess[stage].deferred_normalisation
    assert low._sess["image_encoder"].release_unless is low._sess["memory_attention"]
    kernel = (", AMX bf16 attention kernel" if amx else ", int8 attention kernel") if blocks else ""
    assert low.runtime()["stages"]["memory_attention"] == f"openvino CPU bf16{kernel}"
    assert low.runtime()["stages"]["image_encoder"] == f"openvino CPU bf16{kernel}"


def test_bf16_on_amx_keeps_its_blocks_where_the_amx_kernel_is_not_taken(monkeypatch):
    """With AMX, where the AMX kernel is not taken (no tiles granted, its check failed, or
    measured slower than the query blocks), memory attention runs in the blocks as before the
    kernel and the image encoder's attentions stay OpenVINO's; the sidecar says why, and
    nothing is warned (nothing is slower than before it)."""
    ovr = _bf16_or_skip()
    from tests.onnx_bundle import exported
    from vosfx.engine import amx_attention
    from vosfx.engine.onnx_backend import OnnxBackend

    _, _, folder = exported(("bf16",))
    monkeypatch.setattr(ovr, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(ovr, "FUSED_ATTENTION_QUERIES", 256)
    said = "its attentions ran 0.90x OpenVINO's query blocks here, under the 1.2x the tier takes"
    monkeypatch.setattr(amx_attention, "why_unavailable", lambda threads: said)
    low = OnnxBackend(folder, device="cpu", threads=1, precision="bf16")
    sess, encoder = low._sess["memory_attention"], low._sess["image_encoder"]
    assert sess.fused_attentions == 0 and sess.split_attentions == 8
    assert sess.int8_products == 0  # with AMX the blocks' scores stay bfloat16
    assert encoder.fused_attentions == 0 and encoder.fused_unavailable == said
    assert low.runtime()["stages"]["memory_attention"] == (
        f"openvino CPU bf16, attention in 8 query blocks (AMX bf16 attention kernel unavailable: "
        f"{said})"
    )
    assert low.warnings == []


def test_bf16_keeps_small_attentions_out_of_the_int8_kernel(monkeypatch):
    """Attentions of fewer than FUSED_ATTENTION_QUERIES queries stay in the graph form (at
    512 px, 1,024 queries, the kernel ran memory attention 0.96x and the image encoder 0.975x):
    the test graphs' 256 queries keep memory attention's blocks with int8 scores and the image
    encoder's global attentions OpenVINO's."""
    ovr = _bf16_or_skip()
    from tests.onnx_bundle import exported
    from vosfx.engine import int8_attention
    from vosfx.engine.onnx_backend import OnnxBackend

    assert ovr.FUSED_ATTENTION_QUERIES == 2048
    _, _, folder = exported(("bf16",))
    monkeypatch.setattr(ovr, "cpu_has_amx", lambda: False)
    # nothing for the kernel to take: it is not built, and nothing is said of it
    monkeypatch.setattr(int8_attention, "why_unavailable", lambda: pytest.fail("built"))
    low = OnnxBackend(folder, device="cpu", threads=1, precision="bf16")
    attention, encoder = low._sess["memory_attention"], low._sess["image_encoder"]
    assert attention.fused_attentions == 0 and attention.fused_unavailable is None
    assert low.warnings == []
    assert attention.split_attentions == 8 and attention.int8_products == 64
    assert encoder.fused_attentions == 0 and encoder.split_attentions == 0
    assert low.runtime()["stages"]["memory_attention"] == (
        "openvino CPU bf16, attention in 8 query blocks, int8 scores"
    )


def test_bf16_without_the_int8_kernel_keeps_its_blocks_with_int8_scores(monkeypatch):
    """Where the int8 attention kernel cannot run (no C compiler, a compile error, a CPU
    without its instructions), memory attention keeps the graph form of the same arithmetic:
    query blocks with int8 scores, their normalisation deferred (4 layers x 2 attentions x 8
    blocks), the runtime's description says why the kernel is not used and the backend
    warns once (the test graphs' 256 queries count as the kernel's here)."""
    ovr = _bf16_or_skip()
    from tests.onnx_bundle import exported
    from vosfx.engine import int8_attention
    from vosfx.engine.onnx_backend import OnnxBackend

    _, _, folder = exported(("bf16",))
    monkeypatch.setattr(ovr, "cpu_has_amx", lambda: False)
    monkeypatch.setattr(ovr, "FUSED_ATTENTION_QUERIES", 256)
    monkeypatch.setattr(int8_attention, "why_unavailable", lambda: "no C compiler found")
    low = OnnxBackend(folder, device="cpu", threads=1, precision="bf16")
    sess = low._sess["memory_attention"]
    assert sess.fused_attentions == 0 and sess.fused_unavailable == "no C compiler found"
    assert sess.split_attentions == 8 and sess.int8_products == 64
    assert sess.deferred_normalisation
    # the image encoder's global attentions stay OpenVINO's own
    encoder = low._sess["image_encoder"]
    assert encoder.fused_attentions == 0 and encoder.split_attentions == 0
    assert encoder.fused_unavailable == "no C compiler found"
    assert low.runtime()["stages"]["memory_attention"] == (
        "openvino CPU bf16, attention in 8 query blocks, int8 scores "
        "(int8 attention kernel unavailable: no C compiler found)"
    )
    # one warning for both stages, naming the flag, why, and what builds the kernel
    assert len(low.warnings) == 1
    assert low.warnings[0].startswith(
        "--precision bf16: the int8 attention kernel cannot run here (no C compiler found): "
    )
    assert "a C compiler (gcc or clang) builds the kernel" in low.warnings[0]


def test_bf16_low_memory_releases_the_heavy_stages_buffers(monkeypatch):
    """With ``--low-memory`` (the arena off) the heavy stages' buffers go back after every call
    on any CPU, memory attention's steady form's too."""
    ovr = _bf16_or_skip()
    from tests.onnx_bundle import exported
    from vosfx.engine.onnx_backend import OnnxBackend

    _, _, folder = exported(("bf16",))
    monkeypatch.setattr(ovr, "cpu_has_amx", lambda: False)
    low = OnnxBackend(folder, device="cpu", threads=1, precision="bf16", memory_arena=False)
    for stage in ovr.tier_stages(False):
        assert low._sess[stage].release_buffers == (stage in ovr.RELEASE_BUFFERS), stage
        assert not low._sess[stage].hold_steady_buffers, stage


def test_bf16_stage_forms_compute_what_their_graphs_compute():
    """On the real architecture's graphs (SAM 2.1 tiny, 256 px), in float32 arithmetic so that
    any difference is the rewrite's: the image encoder with its qkv products one per part
    (all 12 of Hiera-T's blocks) computes what the graph computes, and memory attention's
    steady form, compiled on the second call with the same shapes, what its dynamic form
    computed on the first (docs/benchmarks/onnx.md, twenty-third pass); its scores from int8
    queries and keys stay within int8's rounding of it (twenty-fifth pass)."""
    ovr = _bf16_or_skip()
    import json

    import openvino as ov

    from tests.onnx_bundle import SIZE, exported

    _, _, folder = exported(("bf16",))
    man = json.loads((folder / "manifest.json").read_text())
    files = {
        name: folder / man["variants"]["bf16"].get(name, g["file"])
        for name, g in man["graphs"].items()
    }
    model = ov.Core().read_model(str(files["image_encoder"]))
    assert ovr.split_products(model) == 12
    rng = np.random.default_rng(0)
    g, tokens = SIZE // 16, 2 * (SIZE // 16) ** 2 + 4 * 3
    feeds = {
        "image": rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32),
        "vision_feat": rng.standard_normal((1, 256, g, g)).astype(np.float32),
        "vision_pos": rng.standard_normal((1, 256, g, g)).astype(np.float32),
        "memory": rng.standard_normal((tokens, 1, 64)).astype(np.float32),
        "memory_pos": rng.standard_normal((tokens, 1, 64)).astype(np.float32),
        "num_obj_ptr_tokens": np.array(4 * 3, np.int64),
        "key_scale": np.ones((1, tokens), np.float32),
    }

    def session(name, **kw):
        inputs = [i["name"] for i in man["graphs"][name]["inputs"]]
        sess = ovr.OvSession(ov.Core(), files[name], inputs, precision="f32", threads=1, **kw)
        return sess, {n: feeds[n] for n in inputs}

    (whole, image), (parts, _) = (
        session("image_encoder", separate_products=p) for p in (False, True)
    )
    for got, want in zip(parts.run(None, image), whole.run(None, image), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    attention, memory = session("memory_attention", steady_shapes=True)
    (dynamic,) = attention.run(None, memory)
    (steady,) = attention.run(None, memory)
    assert attention._steady is not None and not attention._compiled
    np.testing.assert_allclose(steady, dynamic, rtol=1e-4, atol=1e-4 * float(np.abs(dynamic).max()))
    # its scores from int8 queries and keys, in its query blocks
    int8, _ = session("memory_attention", attention_blocks=8, int8_attention=True)
    assert int8.int8_products == 64
    (got,) = int8.run(None, memory)
    err = float(np.linalg.norm(got - dynamic) / np.linalg.norm(dynamic))
    print("int8 scores, relative L2 against float32:", round(err, 5))
    assert 0 < err < 0.002, err  # measured 0.00036
    # the same with the normalisation deferred past the values' product: the same attention
    deferred, _ = session(
        "memory_attention", attention_blocks=8, int8_attention=True, deferred_normalisation=True
    )
    assert deferred.deferred_normalisation and not int8.deferred_normalisation
    (later,) = deferred.run(None, memory)
    np.testing.assert_allclose(later, got, rtol=1e-4, atol=1e-4 * float(np.abs(got).max()))


def test_bf16_image_encoder_keeps_hieras_pooled_queries_in_order(clip):
    """The tier's image encoder on the real architecture (SAM 2.1 tiny, 256 px) against the
    fp32 path: OpenVINO's attention kernel read the pooled queries of Hiera's block 3 (4 heads,
    4 queries a window) in the wrong order and left the embedding 3.0 % off float32 (relative
    L2 norm); kept apart (guard_attention_transposes), the bfloat16 rounding alone leaves
    1.1 % (blackswan's first frame; twenty-fourth pass). Its convolutions run in float32
    (FLOAT32_OPS): the high-resolution features 0.57 / 0.74 % off in bfloat16, ~0.35 / 0.6 %
    so."""
    ovr = _bf16_or_skip()
    from tests.onnx_bundle import SIZE, exported
    from vosfx.engine.backend import preprocess
    from vosfx.engine.onnx_backend import OnnxBackend

    _, _, folder = exported(("bf16",))
    tier = OnnxBackend(folder, device="cpu", threads=2, precision="bf16")
    fp32 = OnnxBackend(folder, device="cpu", threads=2)
    encoder = tier._sess["image_encoder"]
    assert isinstance(encoder, ovr.OvSession) and encoder.guarded_transposes == 2
    # its convolutions kept out of bfloat16 (FLOAT32_OPS)
    assert encoder.float32_ops == ("Convolution",)
    compiled = encoder._compiled[None][0].get_runtime_model()
    convs = [
        op.get_rt_info()["runtimePrecision"].value
        for op in compiled.get_ordered_ops()
        if op.get_rt_info()["layerType"].value == "Convolution"
    ]
    assert len(convs) == 7 and "bf16" not in convs, convs
    image = preprocess(clip[0][0], SIZE).reshape(1, 3, SIZE, SIZE)
    got = encoder.run(None, {"image": image})
    want = fp32._sess["image_encoder"].run(None, {"image": image})
    names = [o.name for o in fp32._sess["image_encoder"].get_outputs()]
    err = {
        n: float(np.linalg.norm(g - w) / np.linalg.norm(w))
        for n, g, w in zip(names, got, want, strict=True)
    }
    print("relative L2 against fp32:", {n: round(e, 4) for n, e in err.items()})
    assert 0.0 < err["vision_feat"] < 0.02, err
    assert err["feat_s0"] < 0.0045 and err["feat_s1"] < 0.0068, err


def test_bad_attention_is_refused(bundle):
    from vosfx.engine.onnx_backend import OnnxBackend

    with pytest.raises(
        BackendError, match=r"attention: expected split, fused or kernel, found 'x'"
    ):
        OnnxBackend(bundle[2], device="cpu", precision="bf16", attention="x")


@pytest.mark.slow
@pytest.mark.parametrize("tier,attention", [("bf16", "split"), ("bf16", "fused")])
def test_tier_agrees_with_fp32(clip, tier, attention):
    from tests.onnx_bundle import exported
    from vosfx.engine.onnx_backend import OnnxBackend

    if tier == "bf16":
        ovr = _bf16_or_skip()
    _, _, folder = exported((tier,), size=BAR_SIZE)
    frames, mask = clip
    frames = frames[:BAR_FRAMES]
    low = OnnxBackend(folder, device="cpu", threads=2, precision=tier, attention=attention)
    if tier == "bf16":  # the tier's stages really run on OpenVINO (four with AMX, else two)
        on_ov = ovr.tier_stages(ovr.cpu_has_amx())
        for stage in ("image_encoder", "memory_attention", "memory_encoder", "decoder"):
            runs_on = "OvSession" if stage in on_ov else "InferenceSession"
            assert type(low._sess[stage]).__name__ == runs_on, stage
            if stage not in on_ov:
                continue
            # float16 weights for the image encoder only (the others' cost the masks' IoU),
            # and not on CPUs with AMX (there they cost it too)
            f16 = stage == "image_encoder" and not ovr.cpu_has_amx()
            assert low._sess[stage].float16_weights == f16, stage
        # memory attention's attention in query blocks or in OpenVINO's kernel
        assert (low._sess["memory_attention"].attention_blocks > 0) == (attention == "split")
        assert type(low._sess["mask_as_output"]).__name__ == "InferenceSession"
        described = low.runtime()  # what the sidecar records
        assert described["precision"] == "bf16" and described["openvino"]
        assert described["stages"]["memory_attention"].startswith("openvino CPU bf16")
        assert described["stages"]["mask_as_output"] == "onnxruntime CPUExecutionProvider"
    want, got = _fp32_masks(folder, frames, mask), _masks(low, frames, mask)
    ious = [_iou(g[0], w[0]) for g, w in zip(got[1:], want[1:])]
    err = max(float(np.abs(g[1] - w[1]).max()) for g, w in zip(got, want))
    print(
        f"{tier} {attention}: min IoU vs fp32 {min(ious):.4f}, max abs low-res logit error {err:.3g}"
    )
    assert err > 0.0  # the tier does compute differently (else this test could not fail)
    assert min(ious) >= BAR, ious


@pytest.mark.slow
def test_tier_with_the_amx_kernel_agrees_with_fp32(clip, monkeypatch):
    """The bf16 tier as it runs on a CPU with AMX (the four per-frame stages on OpenVINO, the
    image encoder's weights float32), its attentions in the AMX kernel (the int16 kernel's AMX
    form in bfloat16; the tile instructions emulated, its measure stood in for): the masks
    within the bar of the fp32 path's."""
    import functools

    from tests.onnx_bundle import exported
    from vosfx.engine import amx_attention, int16_attention
    from vosfx.engine.onnx_backend import OnnxBackend

    ovr = _bf16_or_skip()
    try:
        int16_attention.library(emulated=True)
    except int16_attention.Unavailable as err:
        pytest.skip(f"the int16 kernel's emulated AMX form cannot run here: {err}")
    if int16_attention.why_unavailable(worth_it=False) is not None:
        pytest.skip("the int16 kernel cannot run here (AVX512_VNNI)")
    _, _, folder = exported(("bf16",), size=BAR_SIZE)
    frames, mask = clip
    frames = frames[:BAR_FRAMES]
    monkeypatch.setattr(ovr, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(amx_attention, "why_unavailable", lambda threads: None)
    monkeypatch.setattr(
        amx_attention, "attention", functools.partial(amx_attention.attention, emulated=True)
    )
    low = OnnxBackend(folder, device="cpu", threads=2, precision="bf16")
    assert low._sess["memory_attention"].fused_attentions == 8
    assert low._sess["image_encoder"].fused_attentions == 3
    assert type(low._sess["decoder"]).__name__ == "OvSession"
    want, got = _fp32_masks(folder, frames, mask), _masks(low, frames, mask)
    ious = [_iou(g[0], w[0]) for g, w in zip(got[1:], want[1:])]
    err = max(float(np.abs(g[1] - w[1]).max()) for g, w in zip(got, want))
    print(f"bf16 with the AMX kernel: min IoU vs fp32 {min(ious):.4f}, max abs logit {err:.3g}")
    assert err > 0.0
    assert min(ious) >= BAR, ious


@pytest.mark.parametrize(
    "machine,flags,weights",
    [
        ("x86_64", "fpu avx2 fma", "u8"),  # AMD Zen 3: uint8 x int8 saturates (vpmaddubsw)
        ("x86_64", "avx2 avx512f avx512bw", "u8"),  # Skylake-X: AVX-512 without VNNI
        ("x86_64", "avx2 avx512f avx512_vnni", "s8"),  # Cascade Lake, Zen 4/5
        ("x86_64", "avx2 avx_vnni", "s8"),  # Alder Lake (AVX-VNNI)
        ("AMD64", "avx2 amx_int8 amx_tile", "s8"),  # Sapphire Rapids (Windows' name)
        ("aarch64", "fp asimd", "s8"),  # ARM's dot products have no saturating step
        ("arm64", None, "s8"),  # Apple silicon
    ],
)
def test_int8_weights_follow_the_cpus_int8_products(machine, flags, weights):
    from vosfx.engine.cpu_features import int8_weights

    got = int8_weights(machine, None if flags is None else frozenset(flags.split()))
    assert got == weights


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    from vosfx.engine.cpu_features import cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 fma\n\n")
    assert cpu_flags(info) == frozenset({"fpu", "avx2", "fma"})
    assert cpu_flags(tmp_path / "none") is None


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["s8", "u8"])
def test_int8_tier_makes_and_runs_the_variant_for_the_cpus_weights(clip, monkeypatch, weights):
    """``--precision int8`` makes and runs ``int8`` (int8 weights) on CPUs that multiply
    uint8 x int8 exactly and ``int8-u8`` (uint8 weights) on x86 CPUs without VNNI, where the
    int8 weights' products saturated and the masks fell to IoU 0.90-0.99 against fp32 (AMD
    EPYC Zen 3). The uint8 one agrees with fp32 on any CPU (its products cannot saturate), so
    it is checked against the bar everywhere; the int8 one, whose memory attention also takes
    its scores from int8 queries and keys, where the CPU has VNNI."""
    import onnx

    from tests.onnx_bundle import exported
    from vosfx.engine import cpu_features, ort_attention
    from vosfx.engine.onnx_backend import OnnxBackend

    monkeypatch.setattr(cpu_features, "int8_weights", lambda: weights)
    _, _, folder = exported(("int8",), size=BAR_SIZE)
    variant = "int8" if weights == "s8" else "int8-u8"
    files = read_variants(folder)
    assert variant in files, files
    graph = onnx.load(str(folder / files[variant]["image_encoder"]), load_external_data=False)
    quantised = [i for i in graph.graph.initializer if i.name.endswith("_quantized")]
    want = onnx.TensorProto.INT8 if weights == "s8" else onnx.TensorProto.UINT8
    assert quantised and {i.data_type for i in quantised} == {want}
    # Hiera's first two stages (blocks 0-2 of tiny: the high-resolution features) float32,
    # every other block's products 8-bit
    kinds: dict[str, set[str]] = {}
    for node in graph.graph.node:
        if node.op_type in ("MatMul", "MatMulInteger") and "/trunk/blocks." in node.name:
            block = int(node.name.split("/trunk/blocks.")[1].split("/")[0])
            kinds.setdefault(node.op_type, set()).add(block)
    assert max(kinds["MatMulInteger"]) == 11 and min(kinds["MatMulInteger"]) == 3, kinds
    float_products = {n.name for n in graph.graph.node if n.op_type == "MatMul" and "qkv" in n.name}
    assert {f"/stage/image_encoder/trunk/blocks.{b}/attn/qkv/MatMul" for b in range(3)} <= (
        float_products
    )
    low = OnnxBackend(folder, device="cpu", threads=2, precision="int8")
    described = low.runtime()["stages"]
    assert described["image_encoder"].endswith(
        ("int8" if weights == "s8" else "uint8") + " weights"
    )
    # with int8 weights memory attention's scores come from int8 queries and keys too (its
    # query blocks); with uint8 weights (no VNNI) they stay float32
    blocks = "onnxruntime CPUExecutionProvider, attention in query blocks"
    if weights == "s8":
        assert files[variant]["memory_attention"] == "memory_attention.int8.onnx"
        assert described["memory_attention"] == blocks + ", int8 scores"
        assert low.graphs.int8_scores == ("memory_attention",)
        # not where the attention is asked fused, nor with the tier's list emptied
        fused = OnnxBackend(folder, device="cpu", threads=2, precision="int8", attention="fused")
        want_fused = "onnxruntime CPUExecutionProvider"
        assert fused.runtime()["stages"]["memory_attention"] == want_fused
        with monkeypatch.context() as m:
            m.setattr(ort_attention, "INT8_SCORES", ())
            plain = OnnxBackend(folder, device="cpu", threads=2, precision="int8")
        assert plain.runtime()["stages"]["memory_attention"] == blocks
    else:
        assert "memory_attention" not in files[variant]
        assert described["memory_attention"] == blocks and not low.graphs.int8_scores
    flags = cpu_features.cpu_flags()
    if weights == "s8" and flags is not None and not cpu_features.VNNI_FLAGS & flags:
        return  # made and run; on this CPU its products saturate (what the u8 case is for)
    frames, mask = clip
    frames = frames[:BAR_FRAMES]
    want_masks, got = _fp32_masks(folder, frames, mask), _masks(low, frames, mask)
    ious = [_iou(g[0], w[0]) for g, w in zip(got[1:], want_masks[1:])]
    print(f"int8 {weights} weights: min IoU vs fp32 {min(ious):.4f}")
    assert min(ious) >= BAR, ious


def read_variants(folder):
    from vosfx.engine.bundle import read_manifest

    return read_manifest(folder)["variants"]


@pytest.mark.slow
def test_bf16_decodes_clicks_and_boxes(clip):
    # the decoder on OpenVINO takes any number of points (its point axis is dynamic): clicks
    # and a box on frame 0, then tracking, agree with fp32 like the mask prompt does
    pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    from tests.onnx_bundle import exported
    from vosfx.engine import openvino_runtime as ovr
    from vosfx.engine.loader import SamEngine
    from vosfx.engine.onnx_backend import OnnxBackend
    from vosfx.pipeline import track_arrays
    from vosfx.types import Prompt

    if "BF16" not in ovr.cpu_capabilities(ovr.core("fp32")):
        pytest.skip("this CPU has no bfloat16 arithmetic")
    _, _, folder = exported(("bf16",))
    frames, mask = clip
    frames = frames[:3]
    ys, xs = np.nonzero(mask)
    inside = [float(xs.mean()), float(ys.mean())]
    prompts = [
        Prompt(0, 1, points=np.array([inside], np.float32), labels=np.array([1], np.int32)),
        Prompt(
            0,
            1,
            points=np.array([inside, [1.0, 1.0], [5.0, 3.0]], np.float32),
            labels=np.array([1, 0, 0], np.int32),
        ),
        Prompt(0, 1, box=np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)),
    ]
    fp32 = OnnxBackend(folder, device="cpu", threads=2)
    low = OnnxBackend(folder, device="cpu", threads=2, precision="bf16")
    h, w = frames[0].shape[:2]
    for prompt in prompts:
        runs = [
            [
                res.video_logits(h, w)[0] > 0
                for _f, res in track_arrays(SamEngine(b, "test", None), frames, [prompt])
            ]
            for b in (fp32, low)
        ]
        ious = [_iou(g, w_) for g, w_ in zip(runs[1], runs[0])]
        print(f"bf16 vs fp32, {len(prompt.labels) if prompt.box is None else 'box'}: {ious}")
        assert all(r.any() for r in runs[0]), "an empty fp32 mask would make the IoU trivial"
        assert min(ious) >= 0.98, (prompt, ious)


def test_bf16_image_encoder_call_is_interrupted_and_a_stale_interrupt_cancels_nothing(bundle):
    """OpenVINO cancels the inference an Interrupt belongs to, and only that one: its infer
    request is shared by every caller."""
    pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    from tests.interrupts import check_interrupts
    from tests.onnx_bundle import exported
    from vosfx.engine import openvino_runtime as ovr
    from vosfx.engine.onnx_backend import OnnxBackend

    if "BF16" not in ovr.cpu_capabilities(ovr.core("fp32")):
        pytest.skip("this CPU has no bfloat16 arithmetic")
    _, _, folder = exported(("bf16",))
    check_interrupts(OnnxBackend(folder, device="cpu", threads=2, precision="bf16"))


def test_fp16_graph_runs_attention_in_float16_and_once_per_cast(tmp_path):
    """The fp16 variant's fused attention reads float16 (a GPU runs it with its float16
    kernel; the CPU provider casts around it when the session is made, and the results match
    the float32 graph's), and a float tensor read by two nodes that stay float32 gets one Cast
    back, whatever ONNX Runtime's converter does: onnxruntime-gpu 1.31 writes one Cast per
    reader, all of one name, and ONNX Runtime then refuses the graph (seen on an H200,
    docs/benchmarks/gpu.md)."""
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from vosfx.engine.variants import _fp16, drop_repeated_nodes

    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 4, 8])
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 4, 8]) for i in (0, 1)]
    outs.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4, 8]))
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], np.eye(8, dtype=np.float32).ravel())
    nodes = [
        helper.make_node("MatMul", ["q", "w"], ["t"], name="proj"),  # t: float16 after
        # Max and Min stay float32 in ONNX Runtime's converter (its default block list)
        helper.make_node("Max", ["t", "t"], ["y0"], name="max"),
        helper.make_node("Min", ["t", "t"], ["y1"], name="min"),
        helper.make_node(
            "MultiHeadAttention",
            ["t", "t", "t"],
            ["a"],
            name="mha",
            domain="com.microsoft",
            num_heads=2,
        ),
    ]
    graph = helper.make_graph(nodes, "g", [q], outs, [w])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx.save(model, str(tmp_path / "memory_attention.onnx"))
    files = _fp16(tmp_path, {"graphs": {"memory_attention": {"file": "memory_attention.onnx"}}})
    half = onnx.load(str(tmp_path / files["memory_attention"]))
    names = [n.name for n in half.graph.node]
    assert len(names) == len(set(names)), names
    (mha,) = [n for n in half.graph.node if n.op_type == "MultiHeadAttention"]
    assert mha.input[0] == "t"  # the float16 tensor itself, no Cast back to float32 between
    x = np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "memory_attention.onnx")).run(None, {"q": x})
    got = ort.InferenceSession(str(tmp_path / files["memory_attention"])).run(None, {"q": x})
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=5e-3)

    # the repeated Casts 1.31 writes, built by hand: the copies go, one stays
    cast = helper.make_node("Cast", ["t"], ["t_cast_to_fp32"], to=1, name="t_cast_to_fp32_node")
    info = helper.make_tensor_value_info("t_cast_to_fp32", TensorProto.FLOAT, [1, 4, 8])
    twice = helper.make_graph([nodes[0], cast, cast], "g", [q], outs, [w], value_info=[info, info])
    drop_repeated_nodes(twice)
    assert [n.name for n in twice.node] == ["proj", "t_cast_to_fp32_node"]
    assert [v.name for v in twice.value_info] == ["t_cast_to_fp32"]


@pytest.mark.parametrize("writable", [True, False])
def test_an_fp16_variant_of_an_older_recipe_is_made_again_where_it_can(
    bundle, config_home, monkeypatch, writable
):
    """A cached bundle whose fp16 variant an older vosfx made (its attention in float32, no
    recipe in the manifest) gets it made again on first use; a cache it cannot write is used
    as it is, without an error."""
    import json
    import shutil

    from vosfx.config import ModelConfig
    from vosfx.engine import export
    from vosfx.engine.bundle import bundle_dir
    from vosfx.engine.variants import RECIPES, add_variants

    ckpt, sha, folder = bundle
    cached = Path(shutil.copytree(folder, bundle_dir(ckpt.name, sha, 256)))
    add_variants(cached, ("fp16",), lambda _msg: None)
    man = json.loads((cached / "manifest.json").read_text())
    assert man["recipes"]["fp16"] == RECIPES["fp16"]
    del man["recipes"]  # as the older vosfx left it
    (cached / "manifest.json").write_text(json.dumps(man))
    stale = cached / man["variants"]["fp16"]["memory_attention"]
    shutil.copyfile(cached / man["graphs"]["memory_attention"]["file"], stale)  # a marker
    before = stale.read_bytes()
    monkeypatch.setattr(export, "_writable", lambda _folder: writable)
    got = export.ensure_bundle_for_config(
        ModelConfig(checkpoint=str(ckpt), image_size=256, precision="fp16")
    )
    assert got == cached
    after = json.loads((cached / "manifest.json").read_text())
    assert (stale.read_bytes() != before) == writable
    assert after.get("recipes", {}).get("fp16") == (RECIPES["fp16"] if writable else None)


def test_an_int8_variant_of_an_older_recipe_gets_memory_attentions_int8_scores(
    bundle, tmp_path, caplog
):
    """A bundle whose int8 variant an older vosfx made (the image encoder alone, no recipe)
    gets it made again on first use, with memory attention's int8 scores where the weights
    are int8; the uint8 variant (CPUs without VNNI) has none. ONNX Runtime's quantiser's
    advice to pre-process (a root-logger warning on every call) is not passed on, and the
    root logger is left as it was."""
    import json
    import shutil

    from vosfx.engine.ort_attention import INT8_FILES
    from vosfx.engine.variants import RECIPES, add_variants

    folder = Path(shutil.copytree(bundle[2], tmp_path / "b"))
    root = logging.getLogger()
    handlers, filters = list(root.handlers), list(root.filters)
    with caplog.at_level(logging.INFO):
        add_variants(folder, ("int8", "int8-u8"), lambda _msg: None)
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    assert root.handlers == handlers and root.filters == filters
    root.warning("Please consider to run pre-processing (not from the quantiser)")
    assert "not from the quantiser" in caplog.text  # only the quantiser's call is filtered
    man = json.loads((folder / "manifest.json").read_text())
    assert man["recipes"]["int8"] == RECIPES["int8"] == 3  # 3: the channels balanced
    assert man["recipes"]["int8-u8"] == RECIPES["int8-u8"] == 2
    assert man["variants"]["int8"]["memory_attention"] == INT8_FILES["memory_attention"]
    assert set(man["variants"]["int8-u8"]) == {"image_encoder"}
    del man["recipes"]["int8"], man["variants"]["int8"]["memory_attention"]  # the older one
    (folder / "manifest.json").write_text(json.dumps(man))
    (folder / INT8_FILES["memory_attention"]).unlink()
    add_variants(folder, ("int8",), lambda _msg: None)
    again = json.loads((folder / "manifest.json").read_text())
    assert again["variants"]["int8"]["memory_attention"] == INT8_FILES["memory_attention"]
    assert (folder / INT8_FILES["memory_attention"]).is_file()


def test_the_int8_products_benchmark_times_correct_products():
    """benchmarks/cpu_levers.py int8-products, the ceiling of any int8 tier on a CPU
    (docs/benchmarks/onnx.md, twentieth pass): each quantised chain computes the product it
    times (uint8 weights within 2 % of float32's largest value on any CPU)."""
    import json
    import subprocess
    import sys

    pytest.importorskip("onnx")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_levers.py"
    done = subprocess.run(
        [sys.executable, str(script), "int8-products", "--calls", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if '"product"' in line]
    assert len(rows) == 3
    for row in rows:
        assert all(v > 0 for v in row["gops"].values()), row
        assert row["max_error_of_max"]["fp32"] == 0.0
        assert row["max_error_of_max"]["u8"] < 0.02, row


def test_the_memory_attention_benchmark_compares_the_same_stage():
    """benchmarks/cpu_levers.py memory-attention (docs/benchmarks/onnx.md, twenty-second pass):
    ONNX Runtime's query blocks and fused op give the same outputs; the int8 tier's query
    blocks with int8 scores where its variant has them (CPUs with VNNI), and on a bf16 CPU the
    tier's graph with OpenVINO's kernel and in query blocks are timed too, each within 1 % of
    float32 (mean abs)."""
    import json
    import subprocess
    import sys

    from tests.onnx_bundle import SIZE, exported

    try:
        _bf16_or_skip()
        bf16 = True
    except pytest.skip.Exception:  # the ONNX Runtime rows only
        bf16 = False
    _, _, folder = exported(("int8", "bf16") if bf16 else ("int8",))
    # the int8 tier's query blocks with int8 scores: where this CPU's int8 variant has them
    int8_scores = "memory_attention" in read_variants(folder).get("int8", {})
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_levers.py"
    args = ["memory-attention", "--size", str(SIZE), "--bundle", str(folder), "--calls", "1"]
    done = subprocess.run(
        [sys.executable, str(script), *args, *(["--openvino", "--blocks", "2"] if bf16 else [])],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {
        row["run"]: row
        for row in (json.loads(line) for line in done.stdout.splitlines() if '"run"' in line)
    }
    want = {"ort-blocks", "ort-fused"} | ({"ov-bf16-kernel", "ov-bf16-2-blocks"} if bf16 else set())
    assert set(rows) == want | ({"ort-int8-scores"} if int8_scores else set())
    assert rows["ort-fused"]["vs_ort_blocks_max"] < 1e-4
    for row in rows.values():
        assert row["median_ms"] > 0 and row["best_ms"] <= row["median_ms"]
        assert row["vs_ort_blocks_mean"] < 0.01, row


@pytest.mark.parametrize(
    "names,kept",
    [
        # Hiera-T: widths change at blocks 1, 3 and 10; stages 1-2 are blocks 0-2
        (
            ["0/attn/qkv", "1/proj", "1/mlp/layers.0", "2/attn/proj", "3/proj", "3/attn/qkv"]
            + ["10/proj", "11/mlp/layers.1"],
            ["0/attn/qkv", "1/proj", "1/mlp/layers.0", "2/attn/proj"],
        ),
        # Hiera-B+: widths change at blocks 2, 5 and 21; stages 1-2 are blocks 0-4
        (
            ["1/attn/qkv", "2/proj", "4/mlp/layers.1", "5/proj", "20/attn/proj", "21/proj"],
            ["1/attn/qkv", "2/proj", "4/mlp/layers.1"],
        ),
        # not named as vosfx exports Hiera: nothing kept (every product quantised)
        (["0/attn/qkv", "1/proj"], []),
    ],
)
def test_the_int8_tier_keeps_hieras_first_two_stages_float32(names, kept):
    from onnx import helper

    from vosfx.engine.variants import high_resolution_products

    def named(tail: str) -> str:
        return f"/stage/image_encoder/trunk/blocks.{tail}/MatMul"

    nodes = [
        helper.make_node("MatMul", ["x", "w"], [f"y{i}"], named(n)) for i, n in enumerate(names)
    ]
    nodes.append(helper.make_node("MatMul", ["x", "w"], ["z"], "/stage/image_encoder/neck/MatMul"))
    graph = helper.make_graph(nodes, "g", [], [])
    assert high_resolution_products(helper.make_model(graph)) == [named(n) for n in kept]

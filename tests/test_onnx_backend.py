"""The ONNX Runtime backend: its numpy helpers equal torch's operations, and the Tracker on it
equals the Tracker on the torch backend end to end on 12 real DAVIS frames (per-frame mask
logits within 1e-3, binary-mask IoU >= 0.999) for one and two objects; fp16/int8 variants
within IoU 0.98 of fp32; providers are chosen and reported as documented."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data
from vosfx.engine import onnx_backend as ob_mod
from vosfx.engine.backend import aa_weights, from_bf16_bits, resize_mask, to_bf16_bits
from vosfx.errors import BackendError

pytest.importorskip("onnxruntime")
N_FRAMES = 12


# --- numpy helpers against torch -------------------------------------------------------------


@pytest.mark.parametrize(
    "size_in, size_out", [(480, 256), (854, 256), (480, 1024), (1024, 256), (256, 64), (100, 100)]
)
def test_aa_weights_equal_torch_antialias(size_in, size_out):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x = torch.rand(1, 1, size_in, 7)
    want = F.interpolate(
        x, size=(size_out, 7), mode="bilinear", align_corners=False, antialias=True
    )[0, 0].numpy()
    got = aa_weights(size_in, size_out) @ x[0, 0].numpy()
    assert float(np.abs(got - want).max()) <= 1e-6


def test_resize_mask_equals_torch_on_davis_masks():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from PIL import Image

    ann = shared_data("davis", "Annotations")
    files = sorted(ann.glob("*/0000[0-4].png"))
    assert files
    for f in files:
        m = np.asarray(Image.open(f)) == 1
        for size in (256, 1024):
            x = torch.from_numpy(m)[None, None].float()
            want = (
                F.interpolate(
                    x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )
                >= 0.5
            )[0, 0].numpy()
            got = resize_mask(m, size).astype(bool)
            assert (got == want).all(), (f, size)


def test_bf16_rounding_equals_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.normal(0, 10, 10000).astype(np.float32),
            # exact ties between two bfloat16 values: round half to even
            np.array([1 + 2**-8, 1 + 3 * 2**-8, -0.0, 0.0], np.float32),
        ]
    )
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    bits = to_bf16_bits(x)
    assert (bits == want).all()
    assert (from_bf16_bits(bits) == torch.from_numpy(x).to(torch.bfloat16).float().numpy()).all()


# --- providers ---------------------------------------------------------------------------------


def test_unavailable_provider_warns_once_and_runs_on_cpu(bundle, caplog):
    """The fallback is one warning in the backend's ``warnings`` (a run says it as a "warning"
    event and in its sidecar: tests/test_pipeline.py), not logged while the backend opens."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with caplog.at_level(logging.WARNING, logger="vosfx"):
        be = ob_mod.OnnxBackend(bundle[2], device="cuda", threads=1)
    assert be.providers == ["CPUExecutionProvider"] and be.device == "cpu"
    assert len(be.warnings) == 1  # once, not once per graph
    assert be.warnings[0].startswith("--device cuda: ONNX Runtime has no CUDAExecutionProvider")
    assert "running on CPU" in be.warnings[0]
    assert not [r for r in caplog.records if "CUDAExecutionProvider" in r.getMessage()]
    assert ob_mod.OnnxBackend(bundle[2], device="cpu", threads=1).warnings == []


def test_a_session_opened_later_logs_its_fallback_too(bundle, caplog):
    """A graph opened on first use (the dense-mask decoder) falls back after the run said the
    backend's warnings: it is logged then, and recorded."""
    from vosfx.engine import backend as backend_mod

    be = ob_mod.OnnxBackend(bundle[2], device="cpu", threads=1)
    backend_mod._WARNED.clear()  # the once-per-process memory of logged warnings
    with caplog.at_level(logging.WARNING, logger="vosfx"):
        be.graphs._say("a late fallback")
        be.graphs._say("a late fallback")
    assert be.warnings == ["a late fallback"]
    assert [r.getMessage() for r in caplog.records] == ["a late fallback"]


def test_unknown_device_and_missing_variant_raise(bundle):
    with pytest.raises(BackendError, match="found 'tpu'"):
        ob_mod.OnnxBackend(bundle[2], device="tpu")
    folder = bundle[2]
    man = ob_mod.read_manifest(folder)
    if "fp16" not in man["variants"]:
        with pytest.raises(BackendError, match="--variant fp16"):
            ob_mod.OnnxBackend(folder, device="cpu", precision="fp16")


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle():
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.onnx_bundle import exported

    return exported()


@pytest.fixture(scope="module")
def clip():
    from PIL import Image

    src = shared_data("davis", "JPEGImages", "blackswan")
    ann = shared_data("davis", "Annotations", "blackswan", "00000.png")
    frames = [np.asarray(Image.open(src / f"{i:05d}.jpg").convert("RGB")) for i in range(N_FRAMES)]
    return frames, np.asarray(Image.open(ann)) == 1


@pytest.fixture(scope="module")
def torch_backend(bundle):
    from tests.onnx_bundle import SIZE
    from vosfx.engine.loader import torch_backend_for
    from vosfx.models.checkpoint import load_sam2

    return torch_backend_for(load_sam2(str(bundle[0]), image_size=SIZE), "cpu")


def track(backend, frames, prompts):
    """[(O, s, s) low-res logits] and [(O, H, W) video-res logits] per frame."""
    from vosfx.engine.loader import SamEngine
    from vosfx.pipeline import track_arrays

    h, w = frames[0].shape[:2]
    low, vid = [], []
    for _frame, res in track_arrays(SamEngine(backend, "test", None), frames, prompts):
        low.append(res.logits.copy())
        vid.append(res.video_logits(h, w))
    return low, vid


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _prompts(mask, two: bool):
    from vosfx.types import Prompt

    if not two:
        return [Prompt(0, 1, mask=mask)]
    cols = np.nonzero(mask.any(0))[0]
    split = (cols.min() + cols.max()) // 2
    left, right = mask.copy(), mask.copy()
    left[:, split:] = False
    right[:, :split] = False
    ys, xs = np.nonzero(right)
    k = len(xs) // 2
    return [
        Prompt(0, 1, mask=left),
        Prompt(0, 2, points=np.array([[xs[k], ys[k]]], np.float32), labels=np.array([1], np.int32)),
    ]


def _kernel_runs() -> bool:
    from vosfx.engine import int16_attention

    return int16_attention.why_unavailable(worth_it=False) is None


ATTENTIONS = {  # attention= -> what the sidecar says runs memory attention
    "split": "onnxruntime CPUExecutionProvider, attention in query blocks",
    "kernel": "onnxruntime CPUExecutionProvider, attentions in vosfx's int16 kernel",
    # the kernel's AMX form, its tile instructions emulated (CPUs with AVX-512 and no AMX)
    "kernel-amx-emulated": "onnxruntime CPUExecutionProvider, attentions in vosfx's int16 "
    "kernel (AMX form: bfloat16 triples)",
    # and the linear layers' products in that form (the parts-linear variant)
    "kernel-amx-linear-emulated": "onnxruntime CPUExecutionProvider, attentions in vosfx's "
    "int16 kernel (AMX form: bfloat16 triples), linear products in its AMX form",
}


def _emulated_amx(monkeypatch) -> None:
    """The kernel's AMX form chosen (VOSFX_INT16_ATTENTION=amx) and run by the build that
    emulates the tile instructions, its linear products measured worth it."""
    import functools

    from vosfx.engine import int16_attention as ka

    try:
        ka.library(emulated=True)
    except ka.Unavailable as err:
        pytest.skip(f"the AMX form's emulating build cannot run here: {err}")
    real = ka.supported
    monkeypatch.setattr(ka, "supported", lambda name, emulated=False: name == "amx" or real(name))
    monkeypatch.setattr(ka, "attention", functools.partial(ka.attention, emulated=True))
    monkeypatch.setenv("VOSFX_INT16_ATTENTION", "amx")
    from vosfx.engine import amx_linear

    monkeypatch.setattr(amx_linear, "pack", functools.partial(amx_linear.pack, emulated=True))
    # its products' measure against numpy's stood in for (emulated, they run ~0.2x numpy's),
    # with a block of rows other than the kernel's default
    monkeypatch.setattr(amx_linear, "gain", lambda: amx_linear.Gain(2.0, 64))


@pytest.fixture(scope="module")
def linear_bundle(bundle, tmp_path_factory):
    """A copy of the bundle with the parts-linear variant (the AMX form's linear products)."""
    import shutil

    from vosfx.engine.variants import add_variants

    folder = tmp_path_factory.mktemp("linear") / "bundle"
    shutil.copytree(bundle[2], folder)
    add_variants(folder, ("parts-linear",), lambda _msg: None)
    return folder


@pytest.mark.parametrize("attention", list(ATTENTIONS))
@pytest.mark.parametrize("two", [False, True], ids=["one_object", "two_objects"])
def test_tracker_onnx_equals_torch(request, torch_backend, clip, two, attention, monkeypatch):
    """ONNX Runtime's query blocks (the bundle's cpu variant) and the int16 attention kernel
    between the parts variant's graphs (in its AVX-512 form, and in its AMX form with the tile
    instructions emulated, with the linear layers' products in that form too between the
    parts-linear variant's), each against torch within the parity contract."""
    if attention.startswith("kernel") and not _kernel_runs():
        pytest.skip("the int16 attention kernel cannot run on this CPU (AVX512_VNNI)")
    folder = request.getfixturevalue("bundle")[2]
    if attention.startswith("kernel-amx"):
        _emulated_amx(monkeypatch)
    if attention == "kernel-amx-linear-emulated":
        folder = request.getfixturevalue("linear_bundle")
    else:  # the linear products stay ONNX Runtime's where the bundle lacks their variant
        monkeypatch.setenv("VOSFX_AMX_LINEAR", "0")
    frames, mask = clip
    prompts = _prompts(mask, two)
    want_low, want_vid = track(torch_backend, frames, prompts)
    asked = "kernel" if attention.startswith("kernel") else attention
    onnx = ob_mod.OnnxBackend(folder, device="cpu", threads=2, attention=asked)
    got_low, got_vid = track(onnx, frames, prompts)
    # what each says ran it (the sidecar's model.runtime)
    assert torch_backend.runtime()["backend"] == "torch"
    assert torch_backend.runtime()["precision"] == "fp32"
    described = onnx.runtime()
    assert (described["backend"], described["threads"]) == ("onnx", 2)
    said = ATTENTIONS[attention]
    if attention == "kernel" and onnx.graphs.kernel_form == "amx":  # this CPU's first form
        said = ATTENTIONS["kernel-amx-emulated"]
    assert described["stages"]["memory_attention"] == said
    worst, lo, hi = 0.0, np.inf, np.inf * -1
    for t in range(N_FRAMES):
        worst = max(worst, float(np.abs(got_low[t] - want_low[t]).max()))
        if t:
            lo, hi = min(lo, float(want_low[t].min())), max(hi, float(want_low[t].max()))
        for o in range(len(prompts)):
            assert _iou(got_vid[t][o] > 0, want_vid[t][o] > 0) >= 0.999, (t, o)
    # the tracked frames' logits must span far more than the tolerance, or this could not fail
    assert hi - lo > 50 * 1e-3, (lo, hi)
    assert worst <= 1e-3, worst
    print(f"{attention}: largest low-resolution logit difference {worst:.2e}")


@pytest.mark.parametrize("kind", ["onnx", "onnx_io_binding", "torch"])
def test_memory_attended_once_decodes_as_the_whole_track(bundle, torch_backend, clip, kind):
    """``Backend.condition`` (memory attention alone: what a correction keeps so that its
    further clicks run the decoder alone) and a request carrying its output give the outputs
    of the whole track call: bit for bit alone on ONNX Runtime, within the kernels' summation
    order on torch and two in one batch (track_many)."""
    from vosfx.engine.backend import MemoryItem, PointerItem, TrackRequest

    frames, mask = clip
    if kind == "torch":
        b = torch_backend
    else:
        b = ob_mod.OnnxBackend(
            bundle[2], device="cpu", threads=2, io_binding=kind == "onnx_io_binding"
        )
    f0, f1 = b.encode_image(frames[0]), b.encode_image(frames[1])
    low, score, ptr = b.mask_as_output(f0, mask)
    memory = b.encode_memory(f0, low, score, True)
    ys, xs = np.nonzero(mask)
    req = TrackRequest(
        f1,
        [MemoryItem(memory, 0)],
        [PointerItem(ptr, 1)],
        1,
        point_coords=np.array([[xs[0] / 4.0, ys[0] / 4.0]], np.float32),
        point_labels=np.array([0], np.int32),
    )
    whole = b.track(req)
    carried = dataclasses.replace(req, conditioned=b.condition(req))
    alone = b.track(carried)
    # torch's CPU kernels may sum in another order for a buffer at another address (~2e-7)
    atol = 1e-6 if kind == "torch" else 0.0
    np.testing.assert_allclose(alone.multi_logits, whole.multi_logits, rtol=0, atol=atol)
    np.testing.assert_allclose(alone.single_logits, whole.single_logits, rtol=0, atol=atol)
    assert abs(alone.object_score_logit - whole.object_score_logit) <= atol
    for got in b.track_many([carried, carried]):
        np.testing.assert_allclose(got.multi_logits, whole.multi_logits, rtol=0, atol=1e-4)
    # the memory mattered: without it (no_mem_embed) the decoder answers otherwise
    bare = b.track(dataclasses.replace(req, memories=None, pointers=[]))
    assert float(np.abs(bare.multi_logits - whole.multi_logits).max()) > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_variants_close_to_fp32(bundle, clip, variant):
    from tests.onnx_bundle import exported

    _, _, folder = exported((variant,))
    frames, mask = clip
    prompts = _prompts(mask, False)
    _, want = track(ob_mod.OnnxBackend(folder, device="cpu", threads=2), frames, prompts)
    _, got = track(
        ob_mod.OnnxBackend(folder, device="cpu", threads=2, precision=variant), frames, prompts
    )
    ious = [_iou(g[0] > 0, w[0] > 0) for g, w in zip(got, want)]
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    print(f"{variant}: max abs logit error {err:.3g}, min IoU vs fp32 {min(ious):.4f}")
    from vosfx.engine.variants import variant_for

    assert ob_mod.read_manifest(folder)["variants"][variant_for(variant)]
    assert min(ious) >= 0.98
    # float16 graphs on the CPU provider run, but the user hears they are slower than fp32
    said = ob_mod.OnnxBackend(folder, device="cpu", threads=1, precision=variant).warnings
    assert [w.split(":")[0] for w in said] == (
        ["--precision fp16 is for GPUs"] * (variant == "fp16")
    )


# --- loading through the engine seam -------------------------------------------------------------


def test_load_engine_picks_onnx_when_bundle_exists(bundle, config_home, monkeypatch):
    from tests.onnx_bundle import SIZE
    from vosfx.config import ModelConfig
    from vosfx.engine import load_engine
    from vosfx.engine.export import bundle_dir

    ckpt, sha, folder = bundle
    shutil.copytree(folder, bundle_dir(ckpt.name, sha, SIZE))
    cfg = ModelConfig(
        backend="auto", device="cpu", image_size=SIZE, checkpoint=str(ckpt), threads=1
    )
    engine = load_engine(cfg)
    assert isinstance(engine.backend, ob_mod.OnnxBackend)
    assert engine.model_sha256 == sha
    assert engine.backend.memory_arena  # the default: fastest
    # --low-memory: the arena off and large blocks mapped on their own (process-wide, so
    # recorded here, not applied to the test process: tests/test_heap.py checks it)
    from vosfx.engine import heap

    mapped = []
    monkeypatch.setattr(heap, "map_large_blocks", lambda: mapped.append(True) or True)
    assert mapped == []  # not by the default
    lean = load_engine(dataclasses.replace(cfg, low_memory=True))
    assert lean.backend.memory_arena is False and mapped == [True]
    assert engine.backend.io_binding is False  # auto: on with CUDA and TensorRT only
    bound = load_engine(dataclasses.replace(cfg, io_binding="on"))
    assert bound.backend.io_binding is True


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_the_torch_backend_refuses_a_device_this_torch_cannot_use(device, monkeypatch):
    """`--backend torch --device cuda` with a CPU build of torch (or no GPU) is the backend's
    error (exit 9) naming the flag and why, not torch's AssertionError from moving the
    weights; `auto` takes the CPU there."""
    import torch

    from vosfx.engine.torch_backend import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(BackendError, match=f"^--device {device}: torch ") as err:
        pick_device(device)
    assert err.value.exit_code == 9
    assert ("CPU build" in str(err.value)) == (device == "cuda" and torch.version.cuda is None)
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")


def test_an_interrupt_stops_the_image_encoder_and_the_next_call_runs(bundle):
    """ONNX Runtime ends an interrupted run between nodes (its terminate flag)."""
    from tests.interrupts import check_interrupts

    check_interrupts(ob_mod.OnnxBackend(bundle[2], device="cpu", threads=2))


def test_the_torch_backend_stops_between_image_encoder_blocks(torch_backend):
    """torch cannot end a kernel, but every Hiera block (and the neck) checks the calling
    thread's Interrupt before it runs."""
    from tests.interrupts import check_interrupts

    check_interrupts(torch_backend)


# --- IOBinding and the GPU providers' options ---------------------------------------------------


@pytest.mark.parametrize("two", [False, True], ids=["one_object", "two_objects"])
def test_io_binding_keeps_features_as_ort_values_and_gives_the_same_masks(bundle, clip, two):
    # IOBinding (on by default on CUDA and TensorRT; forced here on the CPU): each frame's image
    # features stay ONNX Runtime values between the stages, and the masks are the plain runs'
    import onnxruntime as ort

    from vosfx.session.features import nbytes

    frames, mask = clip
    prompts = _prompts(mask, two)
    # the same graphs as IOBinding's (not the int16 kernel's parts, which hand numpy on)
    plain = ob_mod.OnnxBackend(bundle[2], device="cpu", threads=2, attention="split")
    bound = ob_mod.OnnxBackend(bundle[2], device="cpu", threads=2, io_binding=True)
    assert plain.io_binding is False and bound.runtime()["io_binding"] is True
    feats = bound.encode_image(frames[0])
    for field in dataclasses.fields(feats):
        assert isinstance(getattr(feats, field.name), ort.OrtValue), field.name
    # the feature cache's byte budget counts them like numpy features
    assert nbytes(feats) == nbytes(plain.encode_image(frames[0])) > 0
    want, _ = track(plain, frames, prompts)
    got, _ = track(bound, frames, prompts)
    assert len(got) == len(want) == N_FRAMES
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)


def test_the_frame_normalised_on_the_provider_gives_the_same_features(bundle, clip, monkeypatch):
    # on GPU providers with IOBinding the frame goes up as uint8 and the normalisation graph
    # looks it up there (vosfx.engine.ort_normalise); forced here on the CPU provider, where
    # it is off by default (cv2's lookup is faster there): the encoder's input bit for bit
    frames, _mask = clip
    plain = ob_mod.OnnxBackend(bundle[2], device="cpu", threads=2, attention="split")
    bound = ob_mod.OnnxBackend(bundle[2], device="cpu", threads=2, io_binding=True)
    assert bound.graphs.device_normalise is False and "normalise" not in bound._sess
    on_device = ob_mod.OnnxBackend(
        bundle[2], device="cpu", threads=2, io_binding=True, device_normalise=True
    )
    assert on_device.graphs.device_normalise is True
    (node_input,) = on_device._sess["normalise"].get_inputs()
    assert node_input.type == "tensor(uint8)"
    want = plain.encode_image(frames[1])

    def refuse(*_a, **_k):
        raise AssertionError("preprocess ran on the host")

    monkeypatch.setattr(ob_mod, "preprocess", refuse)
    got = on_device.encode_image(frames[1])
    for field in dataclasses.fields(got):
        np.testing.assert_array_equal(getattr(got, field.name).numpy(), getattr(want, field.name))
    # the normalisation needs IOBinding (its output stays where it was made)
    off = ob_mod.OnnxBackend(bundle[2], device="cpu", threads=2, device_normalise=True)
    assert off.graphs.device_normalise is False


def test_the_shipped_normalisation_graph_is_what_build_makes():
    pytest.importorskip("onnx")
    from vosfx.engine import ort_normalise

    assert ort_normalise.GRAPH.read_bytes() == ort_normalise.build(), (
        "write it again: ort_normalise.GRAPH.write_bytes(ort_normalise.build())"
    )


def test_tensorrt_gets_its_engine_cache_and_fp16(bundle, config_home, monkeypatch):
    # without the engine cache TensorRT builds every engine again at each start (minutes);
    # fp16 kernels with the bundle's fp16 variant only. No GPU here: the session's provider
    # list is checked, and the session itself runs on the CPU.
    import onnxruntime as ort

    from vosfx.engine import backend as backend_mod
    from vosfx.models.cache import home

    real = ort.InferenceSession
    asked: list = []
    normalise: list = []

    class Session(real):
        def __init__(self, path, sess_options=None, providers=None):
            if Path(path).name == "normalise.onnx":  # the frame's normalisation, not a stage
                normalise.append(providers)
            else:
                asked.append(providers)
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(
        ort,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    backend_mod._WARNED.clear()
    be = ob_mod.OnnxBackend(bundle[2], device="tensorrt", threads=1)
    assert be.io_binding is True  # a GPU provider: features stay on the device
    trt, cuda, cpu = asked[0]
    name, options = trt
    assert name == "TensorrtExecutionProvider" and (cuda, cpu) == (
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    )
    cache = home() / "tensorrt"
    assert Path(options["trt_engine_cache_path"]).parent == cache
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_timing_cache_path"] == options["trt_engine_cache_path"]
    assert options["trt_fp16_enable"] == "False"  # the fp32 graphs
    assert all(a == asked[0] for a in asked)  # every graph the same
    # the frame's normalisation on the device: CUDA's Gather (no TensorRT engine for it)
    assert normalise == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
    man = ob_mod.read_manifest(bundle[2])
    assert Path(options["trt_engine_cache_path"]).name.startswith(man["model_id"])


def _os_threads() -> set[str]:
    """The process's thread ids: threads started between two reads are the second's new ids
    (a count would go down with an earlier test's threads ending meanwhile: Ray's, after its
    shutdown, took it to -28 in a full run)."""
    return set(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_a_batch_workers_thread_share_reaches_onnx_runtime(bundle, monkeypatch):
    """ONNX Runtime's pool does not read OMP_NUM_THREADS (a CPU batch worker's share of the
    cores): the loader hands it over, so a worker with a share of 1 starts no intra-op
    threads, where the default starts one pool per session on a machine of 2+ cores."""
    from vosfx.config import ModelConfig
    from vosfx.engine import export, load_engine

    monkeypatch.setattr(export, "ensure_bundle_for_config", lambda model, progress=None: bundle[2])
    model = dataclasses.replace(
        ModelConfig(), backend="onnx", device="cpu", checkpoint=str(bundle[0]), threads=0
    )
    started = {}
    for share in ("1", None):
        if share is None:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", share)
        before = _os_threads()
        engine = load_engine(model)
        started[share] = len(_os_threads() - before)
        threads = engine.runtime()["threads"]
        engine.close()
        assert threads == (1 if share else 0)
    assert started["1"] <= 1  # no pool per session (at most one helper thread)
    # the contrast: by default a pool per session, of one thread per physical core but the
    # caller's (none where ONNX Runtime counts one physical core)
    if len(os.sched_getaffinity(0)) >= 2 and started[None]:
        assert started[None] >= 4, started
    # threads asked for in the job win over the share
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    engine = load_engine(dataclasses.replace(model, threads=2))
    assert engine.runtime()["threads"] == 2
    engine.close()

"""The SAM 2 stages on ONNX Runtime: the :class:`~vosfx.engine.backend.Backend` without torch.

It runs the graphs :mod:`vosfx.engine.export` wrote (one per stage of
:mod:`vosfx.engine.stages`) and does the rest in numpy exactly as
:class:`~vosfx.engine.torch_backend.TorchBackend` does with torch: memory tokens and their
position encodings are assembled in SAM 2's order, mask memories are rounded to bfloat16 as
SAM 2's predictor stores them, and prompt masks are resized with torch's antialiased bilinear
weights (:func:`aa_weights`). Nothing here imports torch.

Backend-native arrays are numpy (CPU). Mask memories are kept as bfloat16 bit patterns
(uint16) in token order, (g*g, 64): half the bytes of float32 and no transpose per frame.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from vosfx.engine.backend import (
    ImageFeatures,
    Interrupt,
    MemoryRequest,
    TrackOutput,
    TrackRequest,
    aa_weights,
    in_batches,
    preprocess,
    resize_mask,
    to_bf16_bits,
    warn_once,
)
from vosfx.engine.bundle import read_manifest
from vosfx.engine.memory_tokens import MemoryTokens
from vosfx.engine.ort_runtime import (
    AUTO_ORDER,
    GPU_PROVIDERS,
    PROVIDERS,
    gpu_install_hint,
    session_options,
    with_options,
)
from vosfx.errors import BackendError, Cancelled

log = logging.getLogger(__name__)

# fp32 exact; fp16: the bundle's fp16 variant (GPUs); int8: the int8 image encoder variant
# (ONNX Runtime, VNNI); bf16: the four per-frame stages on OpenVINO in bfloat16
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# graphs whose session opens when first run, not with the backend: the dense-mask decoder
# (a further click on a frame in the studio or a session; a render never uses it), so a
# render does not hold a second copy of the decoder's weights (~29 MiB of peak RSS at 1024)
ON_FIRST_USE = ("decoder_mask",)


def _layout(r: TrackRequest) -> tuple:
    """What must agree for requests to share a batch: the frame's features, the number of
    memory tokens and pointers, the number of points, and a dense prompt or not."""
    mem = None
    if r.memories is not None:
        mem = (sum(int(m.maskmem.shape[0]) for m in r.memories), len(r.pointers))
    points = 0 if r.point_coords is None else len(r.point_coords)
    return (id(r.features), mem, points, r.mask_logits is None)


# --- the backend ------------------------------------------------------------------------------


class OnnxBackend:
    """:class:`~vosfx.engine.backend.Backend` over an exported bundle.

    ``device``: cpu, cuda, tensorrt, coreml, dml or auto (the best available provider).
    ``threads``: intra-op threads per session (0: ONNX Runtime's default, one per core).
    ``precision``: fp32; fp16 (the bundle's fp16 variant, for GPUs); int8 (the dynamically
    quantised image encoder, CPU; other stages stay fp32); bf16 (image encoder and memory
    attention compiled by OpenVINO in bfloat16, :mod:`vosfx.engine.openvino_runtime`; CPUs
    with AMX or AVX512_BF16 only). A variant the bundle lacks raises.
    ``optimization``: ONNX Runtime graph optimisation, ``all`` (default: every fusion) or
    ``basic`` (constant folding and redundant-node removal only), for comparisons.
    ``shared_arena``: one CPU arena for all sessions of the process (default) or ONNX Runtime's
    own arena per session (for comparisons: docs/benchmarks/onnx.md).
    ``bf16_stages``: the graphs the bf16 tier compiles with OpenVINO (default
    :data:`vosfx.engine.openvino_runtime.STAGES`; for comparisons).
    ``io_binding``: run the graphs through ONNX Runtime's IOBinding, keeping each frame's image
    features (and memory attention's output) where the provider computes them instead of
    copying them out and back in for every stage (~20 MB a frame at 1024, read by three
    stages); None (default) uses it on CUDA and TensorRT, True forces it (tests, on the CPU).
    """

    def __init__(
        self,
        bundle: str | Path,
        *,
        device: str = "auto",
        threads: int = 0,
        precision: str = "fp32",
        optimization: str = "all",
        memory_arena: bool = True,
        shared_arena: bool = True,
        bf16_stages: tuple[str, ...] | None = None,
        io_binding: bool | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendError(
                "the onnx backend needs onnxruntime: pip install onnxruntime "
                f"(or onnxruntime-gpu) ({err})"
            ) from err
        self.bundle = Path(bundle)
        self.memory_arena = memory_arena
        self.shared_arena = shared_arena
        self._bf16_stages = bf16_stages
        self.manifest = man = read_manifest(self.bundle)
        a = man["attrs"]
        self.image_size = int(man["image_size"])
        self.num_maskmem = int(a["num_maskmem"])
        self.max_obj_ptrs = int(a["max_obj_ptrs"])
        self.multimask_output_in_sam = bool(a["multimask_output_in_sam"])
        self.multimask_output_for_tracking = bool(a["multimask_output_for_tracking"])
        self.multimask_min_pt_num = int(a["multimask_min_pt_num"])
        self.multimask_max_pt_num = int(a["multimask_max_pt_num"])
        self.use_mask_input_as_output_without_sam = bool(a["use_mask_input_as_output_without_sam"])
        self.binarize_mask_from_pts_for_mem_enc = bool(a["binarize_mask_from_pts_for_mem_enc"])
        self.providers = self._providers(ort, device)
        self.device = "cpu" if self.providers[0] == "CPUExecutionProvider" else device
        if precision not in PRECISIONS:
            raise BackendError(
                f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}"
            )
        self.precision = precision
        if optimization not in ("all", "basic"):
            raise BackendError(f"optimization: expected all or basic, found {optimization!r}")
        self.optimization = optimization
        on_gpu = self.providers[0] in GPU_PROVIDERS
        self.io_binding = on_gpu if io_binding is None else bool(io_binding)
        if self.io_binding and precision == "bf16":
            raise BackendError("io_binding: the bf16 tier runs on OpenVINO, which has none")
        self._io_device = "cuda" if on_gpu else "cpu"  # where kept outputs stay
        self._threads = threads
        self._open_lock = threading.Lock()  # ON_FIRST_USE sessions: opened once
        self._ort = ort
        self._sess = self._sessions(ort, threads)
        # the exporter prunes inputs a graph does not use (mask_as_output's pointer never
        # reads the high-res features): feed each graph only what it declares
        self._inputs = {
            name: {i.name for i in sess.get_inputs()} for name, sess in self._sess.items()
        }
        for name in ON_FIRST_USE:
            if name in self.manifest["graphs"]:
                self._inputs[name] = {i["name"] for i in self.manifest["graphs"][name]["inputs"]}
        # SAM2Long's attention modulation (MemoryItem/PointerItem.key_scale): the memory
        # attention graph's key_scale input
        self.supports_key_scale = "key_scale" in self._inputs["memory_attention"]
        # a further click on a frame takes the frame's previous mask as the decoder's dense
        # input (SAM 2's prev_sam_mask_logits): the decoder_mask graph
        self.supports_mask_input = "decoder_mask" in self.manifest["graphs"]
        self._mask_size = self.image_size // 4  # the prompt encoder's mask_input_size
        consts = np.load(self.bundle / man["constants"])
        self._tokens = MemoryTokens(
            int(a["hidden_dim"]),
            int(a["mem_dim"]),
            consts["maskmem_tpos_enc"],
            lambda t: self._run("pointer_pos", {"t_norm": t})[0],
        )

    def _providers(self, ort, device: str) -> list[str]:
        available = ort.get_available_providers()
        if device == "auto":
            return [p for p in AUTO_ORDER if p in available] or ["CPUExecutionProvider"]
        wanted = PROVIDERS.get(device)
        if wanted is None:
            raise BackendError(
                f"onnx backend device: expected one of auto, "
                f"{', '.join(PROVIDERS)}; found {device!r}"
            )
        if wanted[0] not in available:
            warn_once(
                log,
                f"ONNX Runtime has no {wanted[0]} in this install (available: "
                f"{', '.join(available)}): running on CPU. {gpu_install_hint()}",
            )
        return [p for p in wanted if p in available] or ["CPUExecutionProvider"]

    def _sessions(self, ort, threads: int) -> dict[str, Any]:
        """One session per graph: ONNX Runtime's, or OpenVINO's for the bf16 tier."""
        if self.precision != "bf16":
            return {
                name: self._session(ort, name, self._graph_file(name), threads)
                for name in self.manifest["graphs"]
                if name not in ON_FIRST_USE
            }
        from vosfx.engine import openvino_runtime as ovr

        if self.providers[0] != "CPUExecutionProvider":
            raise BackendError(
                f"--precision bf16 runs on CPUs (OpenVINO); found device {self.device!r}: "
                "use --precision fp16 on GPUs"
            )
        core = ovr.core("bf16")
        on_ov = ovr.STAGES if self._bf16_stages is None else self._bf16_stages
        sessions: dict[str, Any] = {}
        for name, g in self.manifest["graphs"].items():
            if name in ON_FIRST_USE:
                continue
            if name in on_ov:
                inputs = [i["name"] for i in g["inputs"]]
                batch_axes = {
                    i["name"]: list(i["shape"]).index("batch")
                    for i in g["inputs"]
                    if name in ovr.STATIC_BATCH and "batch" in list(i["shape"])
                }
                sessions[name] = ovr.OvSession(
                    core,
                    self._graph_file(name),
                    inputs,
                    precision="bf16",
                    threads=threads,
                    batch_axes=batch_axes,
                )
            else:  # the light stages stay float32 on ONNX Runtime (closer to fp32, no slower)
                sessions[name] = self._session(ort, name, self._graph_file(name), threads)
        return sessions

    def _graph_file(self, name: str) -> Path:
        variants = self.manifest.get("variants", {})
        if self.precision == "fp32":
            return self.bundle / self.manifest["graphs"][name]["file"]
        files = variants.get(self.precision)
        if files is None:
            raise BackendError(
                f"precision {self.precision!r}: expected the bundle {self.bundle} "
                f"to have that variant, found {sorted(variants) or 'none'} "
                f"(vosfx models export --variant {self.precision})"
            )
        return self.bundle / files.get(name, self.manifest["graphs"][name]["file"])

    def _session(self, ort, name: str, path: Path, threads: int):
        cpu = self.providers[0] == "CPUExecutionProvider"
        # ORT 1.31's extended CPU fusions crash (SIGSEGV) on the fp16 memory-attention graph;
        # basic optimisation runs it correctly
        basic = self.optimization == "basic" or (self.precision == "fp16" and cpu)
        opts = session_options(
            ort,
            threads=threads,
            memory_arena=self.memory_arena,
            basic=basic,
            shared_arena=self.shared_arena,
        )
        providers = with_options(
            self.providers, fp16=self.precision == "fp16", engine_cache=self._engine_cache()
        )
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        got = sess.get_providers()
        if self.providers[0] not in got:
            warn_once(
                log,
                f"ONNX Runtime fell back from {self.providers[0]} to {got[0]} for "
                f"{name} (often a CUDA/cuDNN version mismatch): running on {got[0]}",
            )
        return sess

    def _engine_cache(self) -> Path:
        """Where TensorRT keeps the engines it builds for this bundle (one folder per model,
        checkpoint and image size, in the model cache)."""
        from vosfx.models.cache import home

        man = self.manifest
        key = f"{man['model_id']}-{str(man['checkpoint_sha256'])[:12]}-{self.image_size}"
        return home() / "tensorrt" / key

    def _run(
        self,
        name: str,
        feeds: dict,
        interrupt: Interrupt | None = None,
        keep: tuple[str, ...] = (),
    ) -> list[Any]:
        """Run graph ``name`` on ``feeds`` (numpy arrays, or ONNX Runtime OrtValues that an
        earlier run kept); its outputs in order, as numpy arrays, except those named in
        ``keep``, which stay OrtValues where the provider made them (with :attr:`io_binding`;
        without it every output is numpy)."""
        names = self._inputs[name]
        sess = self._sess.get(name)
        if sess is None:  # a graph of ON_FIRST_USE: its session opens now, once
            with self._open_lock:
                sess = self._sess.get(name)
                if sess is None:
                    path = self._graph_file(name)
                    sess = self._sess[name] = self._session(self._ort, name, path, self._threads)
        feeds = {k: v for k, v in feeds.items() if k in names}
        ort_session = isinstance(sess, self._ort.InferenceSession)
        if interrupt is not None and not ort_session:  # an OvSession: its own cancel
            return sess.run(None, feeds, interrupt=interrupt)
        options = None
        if interrupt is not None:
            options = self._ort.RunOptions()
            interrupt.bind(lambda: setattr(options, "terminate", True))
        try:
            if self.io_binding and ort_session:
                return self._run_bound(sess, feeds, keep, options)
            return sess.run(None, feeds, options)
        except Exception as err:
            if interrupt is not None and interrupt.is_set:
                raise Cancelled(f"{name} interrupted") from err
            raise

    def _run_bound(self, sess, feeds: dict, keep: tuple[str, ...], options) -> list[Any]:
        """One run through IOBinding: OrtValue inputs bound where they are, numpy inputs from
        host memory, the outputs in ``keep`` left on the provider's device, the rest copied
        to host memory (numpy)."""
        binding = sess.io_binding()
        held = []  # the numpy inputs must outlive the run
        for key, value in feeds.items():
            if isinstance(value, self._ort.OrtValue):
                binding.bind_ortvalue_input(key, value)
            else:
                held.append(np.ascontiguousarray(value))
                binding.bind_cpu_input(key, held[-1])
        outputs = [o.name for o in sess.get_outputs()]
        for out in outputs:
            binding.bind_output(out, self._io_device if out in keep else "cpu")
        sess.run_with_iobinding(binding, options)
        values = binding.get_outputs()
        return [v if out in keep else v.numpy() for out, v in zip(outputs, values, strict=True)]

    # --- stages -------------------------------------------------------------------------

    def encode_image(self, rgb8: np.ndarray, interrupt: Interrupt | None = None) -> ImageFeatures:
        img = preprocess(rgb8, self.image_size)[None]
        kept = tuple(o["name"] for o in self.manifest["graphs"]["image_encoder"]["outputs"])
        s0, s1, feat, pos = self._run("image_encoder", {"image": img}, interrupt, keep=kept)
        return ImageFeatures(s0, s1, feat, pos)

    def track(self, request: TrackRequest) -> TrackOutput:
        return self._track_batch([request])[0]

    def track_many(self, requests: Sequence[TrackRequest]) -> list[TrackOutput]:
        """Requests with the same layout (the same frame's features, the same number of memory
        tokens and pointers, the same number of points, a dense prompt or not) run as one
        batch through memory attention and the decoder (the graphs' ``batch`` axis); each
        item's arithmetic is its own, so the results are those of :meth:`track` up to the
        kernels' summation order. Others run in batches of their own."""
        return in_batches(requests, _layout, self._track_batch)

    def _track_batch(self, requests: Sequence[TrackRequest]) -> list[TrackOutput]:
        """Requests of one :func:`_layout`, as one batch of B = len(requests)."""
        dense = requests[0].mask_logits is not None
        if dense and not self.supports_mask_input:
            raise BackendError(
                f"the ONNX bundle {self.bundle} has no dense mask-prompt decoder graph "
                "(decoder_mask.onnx): re-export it with `vosfx models export MODEL`"
            )
        features, b = requests[0].features, len(requests)
        pix = self._conditioned(requests)
        if requests[0].point_coords is None or len(requests[0].point_coords) == 0:
            coords = np.zeros((b, 1, 2), np.float32)  # one padding point, as SAM 2 passes
            labels = -np.ones((b, 1), np.int32)
        else:
            coords = np.stack([np.asarray(r.point_coords, np.float32) for r in requests])
            labels = np.stack([np.asarray(r.point_labels, np.int32) for r in requests])
        feeds = {
            "pix_feat": pix,
            "feat_s0": features.feat_s0,
            "feat_s1": features.feat_s1,
            "point_coords": coords,
            "point_labels": labels,
            "min_object_score": np.array([[r.min_object_score] for r in requests], np.float32),
        }
        if dense:
            feeds["mask_input"] = np.stack(
                [self._dense_prompt(cast(np.ndarray, r.mask_logits)) for r in requests]
            )[:, None]  # (B, 1, s, s)
        ml, mi, sl, si, score, mptr, sptr = self._run("decoder_mask" if dense else "decoder", feeds)
        if "min_object_score" not in self._inputs["decoder"]:
            for r, sc in zip(requests, score[:, 0], strict=True):
                gate = r.min_object_score
                if gate != 0.0 and gate < float(sc) <= 0.0:
                    # a bundle exported before the gate was a graph input: its decoder
                    # gates at 0, so its masks for this frame are already blanked
                    raise BackendError(
                        f"object score {float(sc):.3f} lies between the policy's object "
                        f"threshold {gate} and 0, which the decoder graph of the ONNX bundle "
                        f"{self.bundle} (exported without the min_object_score input, gated "
                        "at 0) cannot follow: delete that folder and re-export it with "
                        "`vosfx models export MODEL` (a bundle in the model cache is also "
                        "made again on the next run), or use the torch runtime"
                    )
        return [
            TrackOutput(
                multi_logits=ml[i],
                multi_ious=mi[i],
                single_logits=sl[i, 0],
                single_iou=float(si[i, 0]),
                object_score_logit=float(score[i, 0]),
                multi_ptrs=mptr[i],
                single_ptr=sptr[i : i + 1],
            )
            for i in range(b)
        ]

    def _conditioned(self, requests: Sequence[TrackRequest]) -> Any:
        """(B, 256, g, g) features conditioned on each request's memory (memory attention, one
        batch), or on no memory (``no_mem_embed``, the same for every request)."""
        features, b = requests[0].features, len(requests)
        if requests[0].memories is None:
            kept = ("pix_feat",) if b == 1 else ()  # several: repeated on the host
            (pix,) = self._run("no_memory", {"vision_feat": features.vision_feat}, keep=kept)
            return np.repeat(pix, b, axis=0) if b > 1 else pix
        parts = [
            self._tokens.assemble(cast(list, r.memories), r.pointers, r.t_diff_max)
            for r in requests
        ]
        # (M, B, 64); one request's buffers as they are (no copy)
        memory = parts[0][0] if b == 1 else np.concatenate([p[0] for p in parts], axis=1)
        memory_pos = parts[0][1] if b == 1 else np.concatenate([p[1] for p in parts], axis=1)
        scales = [
            self._tokens.key_scale(cast(list, r.memories), r.pointers, memory.shape[0])
            for r in requests
        ]
        (pix,) = self._run(
            "memory_attention",
            {
                "vision_feat": features.vision_feat,
                "vision_pos": features.vision_pos,
                "memory": memory,
                "memory_pos": memory_pos,
                "num_obj_ptr_tokens": np.array(parts[0][2], np.int64),
                "key_scale": np.stack(scales),  # (B, M)
            },
            keep=("pix_feat",),
        )
        return pix

    def _dense_prompt(self, logits: np.ndarray) -> np.ndarray:
        """(h, w) logits -> (s, s) float32 at the prompt encoder's mask size (antialiased
        bilinear with torch's weights when the size differs, as the torch backend does)."""
        x = np.asarray(logits, np.float32)
        s = self._mask_size
        if x.shape == (s, s):
            return x
        wy, wx = aa_weights(x.shape[0], s), aa_weights(x.shape[1], s)
        return (wy @ x @ wx.T).astype(np.float32)

    def mask_as_output(
        self, features: ImageFeatures, mask: np.ndarray
    ) -> tuple[np.ndarray, float, Any]:
        m = resize_mask(mask, self.image_size)[None, None]  # (1, 1, S, S)
        low, score, _iou, ptr = self._run(
            "mask_as_output",
            {
                "vision_feat": features.vision_feat,
                "feat_s0": features.feat_s0,
                "feat_s1": features.feat_s1,
                "mask": m,
            },
        )
        return low[0, 0], float(score[0, 0]), ptr

    def encode_memory(
        self,
        features: ImageFeatures,
        low_res: np.ndarray,
        object_score_logit: float,
        binarize: bool,
    ) -> Any:
        request = MemoryRequest(features, low_res, object_score_logit, binarize)
        return self._encode_batch([request])[0]

    def encode_memory_many(self, requests: Sequence[MemoryRequest]) -> list[Any]:
        """Requests on the same frame's features run as one batch through the memory encoder
        (the graph's ``batch`` axis)."""
        return in_batches(requests, lambda r: id(r.features), self._encode_batch)

    def _encode_batch(self, requests: Sequence[MemoryRequest]) -> list[np.ndarray]:
        b = len(requests)
        maskmem, pos = self._run(
            "memory_encoder",
            {
                "vision_feat": requests[0].features.vision_feat,
                "low_res": np.stack([np.asarray(r.low_res, np.float32) for r in requests])[
                    :, None
                ],  # (B, 1, s, s)
                "object_score_logit": np.array(
                    [[r.object_score_logit] for r in requests], np.float32
                ),
                "binarize": np.array([r.binarize for r in requests]).reshape(b, 1, 1, 1),
            },
        )
        self._tokens.set_maskmem_pos(pos)
        # (B, 64, g, g) -> B x (g*g, 64) token order, bfloat16 as SAM 2's predictor stores it
        c = maskmem.shape[1]
        return [to_bf16_bits(maskmem[i].reshape(c, -1).T) for i in range(b)]

    def nbytes(self, value: Any) -> int:
        return int(value.nbytes)

    def runtime(self) -> dict[str, Any]:
        """What computes the masks, for the sidecar: runtime, precision, and per stage the
        library and execution provider that runs it."""
        import onnxruntime as ort

        stages = {}
        for name, sess in self._sess.items():
            if type(sess).__name__ == "OvSession":
                stages[name] = "openvino CPU bf16"
            else:
                stages[name] = f"onnxruntime {sess.get_providers()[0]}"
        for name in ON_FIRST_USE:
            if name in self.manifest["graphs"] and name not in stages:
                stages[name] = f"onnxruntime {self.providers[0]} (opened when first used)"
        out: dict[str, Any] = {
            "backend": "onnx",
            "onnxruntime": ort.__version__,
            "precision": self.precision,
            "device": self.device,
            "threads": self._threads,
            "io_binding": self.io_binding,
            "memory_arena": "shared"
            if self.memory_arena and self.shared_arena
            else ("per session" if self.memory_arena else "off"),
            "stages": stages,
        }
        if any(v.startswith("openvino") for v in stages.values()):
            import openvino

            out["openvino"] = openvino.__version__
        return out

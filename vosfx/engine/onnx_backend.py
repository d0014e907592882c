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

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from vosfx.engine import ort_normalise
from vosfx.engine.backend import (
    ImageFeatures,
    Interrupt,
    MemoryRequest,
    TrackOutput,
    TrackRequest,
    aa_weights,
    in_batches,
    model_sized,
    preprocess,
    resize_mask,
    to_bf16_bits,
)
from vosfx.engine.bundle import read_manifest
from vosfx.engine.memory_tokens import MemoryTokens
from vosfx.engine.ort_graphs import NORMALISE, ON_FIRST_USE, PRECISIONS, BundleGraphs
from vosfx.errors import BackendError

__all__ = ["ON_FIRST_USE", "PRECISIONS", "OnnxBackend", "read_manifest"]


def _layout(r: TrackRequest) -> tuple:
    """What must agree for requests to share a batch: the frame's features, the number of
    memory tokens and pointers, the number of points, and a dense prompt or not."""
    mem = None
    if r.memories is not None:
        mem = (sum(int(m.maskmem.shape[0]) for m in r.memories), len(r.pointers))
    points = 0 if r.point_coords is None else len(r.point_coords)
    return (id(r.features), mem, points, r.mask_logits is None, r.conditioned is None)


def _on_host(value: Any) -> np.ndarray:
    """An output a run kept on the provider's device (an OrtValue) as numpy; numpy as it is."""
    return value if isinstance(value, np.ndarray) else value.numpy()


# --- the backend ------------------------------------------------------------------------------


class OnnxBackend:
    """:class:`~vosfx.engine.backend.Backend` over an exported bundle.

    ``device``: cpu, cuda, tensorrt, coreml, dml or auto (the best available provider).
    ``threads``: intra-op threads per session (0: ONNX Runtime's default, one per core).
    ``precision``: fp32; fp16 (the bundle's fp16 variant, for GPUs); int8 (the dynamically
    quantised image encoder and, with int8 weights, memory attention's scores from int8
    operands, CPU; other stages stay fp32); bf16 (image encoder and memory
    attention compiled by OpenVINO in bfloat16, :mod:`vosfx.engine.openvino_runtime`; CPUs
    with AMX or AVX512_BF16 only). A variant the bundle lacks raises.
    ``optimization``: ONNX Runtime graph optimisation, ``all`` (default: every fusion) or
    ``basic`` (constant folding and redundant-node removal only), for comparisons.
    ``shared_arena``: one CPU arena for all sessions of the process (default) or ONNX Runtime's
    own arena per session (for comparisons: docs/benchmarks/onnx.md).
    ``bf16_stages``: the graphs the bf16 tier compiles with OpenVINO (default
    :func:`vosfx.engine.openvino_runtime.tier_stages`: all four per-frame stages with AMX,
    the two heavy ones without; for comparisons).
    ``attention``: how memory attention's attentions run: ``split`` (blocks of queries through
    plain matrix products: on ONNX Runtime the bundle's ``cpu`` variant,
    :mod:`vosfx.engine.ort_attention`; in the bf16 tier
    :func:`vosfx.engine.openvino_runtime.split_attention`), ``fused`` (the runtime's fused
    attention kernel) or None (default: split on ONNX Runtime's CPU provider where the bundle
    has the variant, and always in the bf16 tier; fused elsewhere).
    ``io_binding``: run the graphs through ONNX Runtime's IOBinding, keeping each frame's image
    features (and memory attention's output) where the provider computes them instead of
    copying them out and back in for every stage (~20 MB a frame at 1024, read by three
    stages); None (default) uses it on CUDA and TensorRT, True forces it (tests, on the CPU).
    ``device_normalise``: with IOBinding, normalise the frame in a graph on the provider
    (:mod:`vosfx.engine.ort_normalise`: a uint8 upload instead of float32, no lookup on the
    tracking thread; the same values); None (default) on GPU providers, True forces it.
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
        attention: str | None = None,
        device_normalise: bool | None = None,
    ) -> None:
        try:
            import onnxruntime  # noqa: F401 - the clear message here, not deep in a stage
        except ImportError as err:
            raise BackendError(
                "the onnx backend needs onnxruntime: pip install onnxruntime "
                f"(or onnxruntime-gpu) ({err})"
            ) from err
        self.bundle = Path(bundle)
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
        self.graphs = BundleGraphs(
            self.bundle,
            man,
            device=device,
            threads=threads,
            precision=precision,
            optimization=optimization,
            memory_arena=memory_arena,
            shared_arena=shared_arena,
            bf16_stages=bf16_stages,
            io_binding=io_binding,
            attention=attention,
            device_normalise=device_normalise,
        )
        g = self.graphs
        self.providers, self.device, self.precision = g.providers, g.device, g.precision
        self.optimization, self.io_binding = g.optimization, g.io_binding
        self.memory_arena, self.shared_arena = memory_arena, shared_arena
        self._sess, self._inputs, self._run = g.sessions, g.inputs, g.run
        self.warnings = g.warnings  # the same list: a session opened later adds to it
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

    # --- stages -------------------------------------------------------------------------

    def encode_image(self, rgb8: np.ndarray, interrupt: Interrupt | None = None) -> ImageFeatures:
        if self.graphs.device_normalise:  # a uint8 upload, the lookup where the encoder runs
            sized = np.ascontiguousarray(model_sized(rgb8, self.image_size))
            (img,) = self._run(
                NORMALISE, {ort_normalise.INPUT: sized}, keep=(ort_normalise.OUTPUT,)
            )
        else:
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

    def condition(self, request: TrackRequest) -> Any:
        return self._conditioned([request])

    def _conditioned(self, requests: Sequence[TrackRequest]) -> Any:
        """(B, 256, g, g) features conditioned on each request's memory (memory attention, one
        batch), or on no memory (``no_mem_embed``, the same for every request), or as the
        requests carry them already (:attr:`TrackRequest.conditioned`)."""
        features, b = requests[0].features, len(requests)
        if requests[0].conditioned is not None:  # one layout: every request carries them
            if b == 1:
                return requests[0].conditioned
            return np.concatenate([_on_host(r.conditioned) for r in requests])
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

        stages = self.graphs.describe()
        out: dict[str, Any] = {
            "backend": "onnx",
            "onnxruntime": ort.__version__,
            "precision": self.precision,
            "device": self.device,
            "threads": self.graphs.threads,
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

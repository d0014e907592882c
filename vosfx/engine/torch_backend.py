"""The SAM 2 stages on the official ``sam2`` torch modules: the reference backend."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from vosfx.engine.backend import (
    ImageFeatures,
    Interrupt,
    MemoryItem,
    MemoryRequest,
    PointerItem,
    TrackOutput,
    TrackRequest,
    in_batches,
    model_sized,
    normalise_table,
    preprocess,
)
from vosfx.engine.stages import (
    DecoderStage,
    ImageEncoderStage,
    MaskAsOutputStage,
    MemoryAttentionStage,
    MemoryEncoderStage,
    NoMemoryStage,
    PointerPosStage,
)
from vosfx.errors import BackendError, Cancelled

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base


@functools.cache
def _table_on(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(normalise_table()).to(device)  # (3, 256)


def normalised_on(device: torch.device, rgb8: np.ndarray, image_size: int) -> torch.Tensor:
    """:func:`~vosfx.engine.backend.preprocess` with its per-value table looked up on
    ``device``: the (1, 3, S, S) float32 input bit for bit, from a uint8 upload (a quarter of
    the float32 one) and without the lookups' CPU time on the tracking thread, which on a GPU
    is the bound (a tiny frame at 1024 on an H200: ~10 ms of GPU work, ~38 ms of host time a
    frame; docs/benchmarks/gpu.md)."""
    sized = np.ascontiguousarray(model_sized(rgb8, image_size))
    if not sized.flags.writeable:  # PIL's resize gives a read-only view: torch warns on those
        sized = sized.copy()
    pixels = torch.from_numpy(sized).to(device).permute(2, 0, 1).reshape(3, -1).long()
    # one lookup for the three planes: on a GPU each launch counts
    return _table_on(device).gather(1, pixels).reshape(1, 3, image_size, image_size)


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu; otherwise the named device, which must be usable
    here: a ``cuda`` or ``mps`` this torch cannot use is a :class:`BackendError` naming the
    flag and why (it had been torch's own AssertionError, deep in moving the weights). The
    torch backend runs where it is asked or not at all; the onnx backend's runs on the CPU,
    with a warning."""
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        why = (
            f"torch {torch.__version__} is a CPU build"
            if torch.version.cuda is None
            else f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no NVIDIA GPU "
            "or driver"
        )
        raise BackendError(
            f"--device cuda: {why}. Install the torch build for your CUDA version "
            "(pytorch.org), or use --device cpu, or --backend onnx with onnxruntime-gpu"
        )
    if name == "mps" and not (mps is not None and mps.is_available()):
        raise BackendError(
            f"--device mps: torch {torch.__version__} finds no Apple GPU (MPS needs macOS 12.3 "
            "or later on Apple silicon or an AMD GPU); use --device cpu"
        )
    return torch.device(name)


class TorchBackend:
    """:class:`~vosfx.engine.backend.Backend` over a loaded ``SAM2Base`` (eval mode).

    On CUDA the stages run under bfloat16 autocast, as SAM 2's own examples do; elsewhere in
    float32. Position encodings that depend only on the image size are computed once.
    """

    def __init__(self, model: SAM2Base, device: torch.device | str = "cpu") -> None:
        self.device_t = torch.device(device)
        self.model = model.to(self.device_t).eval()
        self.device = str(self.device_t)
        m = self.model
        self.image_size = int(m.image_size)
        self.num_maskmem = int(m.num_maskmem)
        self.max_obj_ptrs = int(m.max_obj_ptrs_in_encoder)
        self.multimask_output_in_sam = bool(m.multimask_output_in_sam)
        self.multimask_output_for_tracking = bool(m.multimask_output_for_tracking)
        self.multimask_min_pt_num = int(m.multimask_min_pt_num)
        self.multimask_max_pt_num = int(m.multimask_max_pt_num)
        self.use_mask_input_as_output_without_sam = bool(m.use_mask_input_as_output_without_sam)
        self.binarize_mask_from_pts_for_mem_enc = bool(m.binarize_mask_from_pts_for_mem_enc)
        self.supports_key_scale = True  # MemoryItem/PointerItem.key_scale (SAM2Long)
        self.warnings: list[str] = []  # it runs where it is asked or not at all
        self.encoder = ImageEncoderStage(m)
        self.attention = MemoryAttentionStage(m)
        self.no_memory = NoMemoryStage(m)
        self.decoder = DecoderStage(m).to(self.device_t)
        self.mask_output = MaskAsOutputStage(m, self.decoder)
        self.memory_encoder = MemoryEncoderStage(m)
        self.pointer_pos = PointerPosStage(m)
        self._mem_pos: dict[int, torch.Tensor] = {}  # t_pos -> (g*g, 1, 64)
        self._ptr_pos: dict[tuple[int, int], torch.Tensor] = {}  # (t_diff, max) -> (4, 1, 64)
        self._maskmem_pos: torch.Tensor | None = None  # (1, 64, g, g), constant
        # encode_image's Interrupt: every block of the image encoder checks the calling
        # thread's before it runs. The hooks are made once: adding them per call would change
        # a module's hook table while another thread may be running that module.
        self._interrupt = threading.local()
        trunk = getattr(m.image_encoder, "trunk", None)
        for block in [*getattr(trunk, "blocks", ()), m.image_encoder.neck]:
            block.register_forward_pre_hook(self._check_interrupt)

    def _check_interrupt(self, _module: Any, _args: Any) -> None:
        interrupt = getattr(self._interrupt, "current", None)
        if interrupt is not None and interrupt.is_set:
            raise Cancelled("image encoder interrupted")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device_t.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- stages -------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_image(self, rgb8: np.ndarray, interrupt: Interrupt | None = None) -> ImageFeatures:
        """``interrupt``: checked before each block of the image encoder (Hiera's blocks and
        the neck), so a set interrupt stops the call within one block."""
        if self.device_t.type == "cpu":
            img = torch.from_numpy(preprocess(rgb8, self.image_size))[None]
        else:
            img = normalised_on(self.device_t, rgb8, self.image_size)
        self._interrupt.current = interrupt
        try:
            with self._autocast():
                s0, s1, feat, pos = self.encoder(img)
        finally:
            self._interrupt.current = None
        return ImageFeatures(s0, s1, feat, pos)

    @torch.inference_mode()
    def track(self, request: TrackRequest) -> TrackOutput:
        return self._track_batch([request])[0]

    @torch.inference_mode()
    def track_many(self, requests: Sequence[TrackRequest]) -> list[TrackOutput]:
        """Requests with the same layout (the same frame's features, the same number of memory
        tokens and pointer tokens, the same number of points, a dense prompt or not) run as one
        batch through memory attention and the decoder; each item's arithmetic is its own (no
        padding), so the results are those of :meth:`track` up to the kernels' summation order
        for another batch size. Others run in their own batches."""
        return in_batches(requests, self._layout, self._track_batch)

    @torch.inference_mode()
    def condition(self, request: TrackRequest) -> Any:
        with self._autocast():
            return self._conditioned([request])

    def _conditioned(self, requests: Sequence[TrackRequest]) -> Any:
        """(B, 256, g, g) features conditioned on each request's memory (memory attention, one
        batch), or on no memory (``no_mem_embed``), or as the requests carry them already
        (:attr:`TrackRequest.conditioned`). Inside :meth:`_autocast`."""
        features, b = requests[0].features, len(requests)
        if requests[0].conditioned is not None:  # one layout: every request carries them
            return torch.cat([r.conditioned for r in requests])
        if requests[0].memories is None:
            return self.no_memory(features.vision_feat).expand(b, -1, -1, -1)
        parts = [self._assemble(cast(list, r.memories), r.pointers, r.t_diff_max) for r in requests]
        memory = torch.cat([p[0] for p in parts], dim=1)  # (M, B, 64)
        memory_pos = torch.cat([p[1] for p in parts], dim=1)
        scales = [self._key_scale(cast(list, r.memories), r.pointers) for r in requests]
        key_scale = None
        if any(s is not None for s in scales):
            ones = torch.ones(memory.shape[0], device=self.device_t)
            key_scale = torch.stack([ones if s is None else s for s in scales])
        return self.attention(
            features.vision_feat.expand(b, -1, -1, -1),
            features.vision_pos.expand(b, -1, -1, -1),
            memory,
            memory_pos,
            parts[0][2],
            key_scale,
        )

    def _layout(self, r: TrackRequest) -> tuple:
        mem = None
        if r.memories is not None:
            tokens = sum(m.maskmem.shape[-2] * m.maskmem.shape[-1] for m in r.memories)
            mem = (tokens, len(r.pointers))
        points = 0 if r.point_coords is None else len(r.point_coords)
        return (id(r.features), mem, points, r.mask_logits is None, r.conditioned is None)

    def _track_batch(self, requests: Sequence[TrackRequest]) -> list[TrackOutput]:
        """Requests of one :meth:`_layout`, as one batch of B = len(requests)."""
        features, b = requests[0].features, len(requests)
        dev = self.device_t
        with self._autocast():
            pix = self._conditioned(requests)
            if requests[0].point_coords is None or len(requests[0].point_coords) == 0:
                # no points: one padding point (label -1), as SAM 2 passes
                coords = torch.zeros(b, 1, 2, device=dev)
                labels = -torch.ones(b, 1, dtype=torch.int32, device=dev)
            else:
                coords = torch.from_numpy(
                    np.stack([np.asarray(r.point_coords, np.float32) for r in requests])
                ).to(dev)
                labels = torch.from_numpy(
                    np.stack([np.asarray(r.point_labels, np.int32) for r in requests])
                ).to(dev)
            mask_in = None
            if requests[0].mask_logits is not None:
                dense = np.stack([np.asarray(r.mask_logits, np.float32) for r in requests])
                mask_in = self._mask_prompt(torch.from_numpy(dense)[:, None].to(dev))
            gate = None
            if any(r.min_object_score != 0.0 for r in requests):
                gate = torch.tensor(
                    [[r.min_object_score] for r in requests], dtype=torch.float32, device=dev
                )
            out = self.decoder(
                pix, features.feat_s0, features.feat_s1, coords, labels, mask_in, gate
            )
        ml, mi, sl, si, score, mptr, sptr = (x.float() for x in out)
        ml_np, mi_np, sl_np = ml.cpu().numpy(), mi.cpu().numpy(), sl.cpu().numpy()
        si_np, score_np = si.cpu().numpy(), score.cpu().numpy()
        return [
            TrackOutput(
                multi_logits=ml_np[i],
                multi_ious=mi_np[i],
                single_logits=sl_np[i, 0],
                single_iou=float(si_np[i, 0]),
                object_score_logit=float(score_np[i, 0]),
                multi_ptrs=mptr[i] if b == 1 else mptr[i].clone(),
                single_ptr=sptr if b == 1 else sptr[i : i + 1].clone(),
            )
            for i in range(b)
        ]

    def _mask_prompt(self, mask: torch.Tensor) -> torch.Tensor:
        """A dense prompt at the prompt encoder's size (antialiased down if needed)."""
        size = tuple(self.model.sam_prompt_encoder.mask_input_size)
        if tuple(mask.shape[-2:]) == size:
            return mask
        return F.interpolate(
            mask.float(), size=size, align_corners=False, mode="bilinear", antialias=True
        )

    @torch.inference_mode()
    def mask_as_output(
        self, features: ImageFeatures, mask: np.ndarray
    ) -> tuple[np.ndarray, float, Any]:
        m = torch.from_numpy(np.asarray(mask, bool))[None, None].float().to(self.device_t)
        s = self.image_size
        if m.shape[-2:] != (s, s):
            m = F.interpolate(m, size=(s, s), align_corners=False, mode="bilinear", antialias=True)
            m = (m >= 0.5).float()
        with self._autocast():
            low, score, _iou, ptr = self.mask_output(
                features.vision_feat, features.feat_s0, features.feat_s1, m
            )
        return low[0, 0].float().cpu().numpy(), float(score[0, 0]), ptr.float()

    @torch.inference_mode()
    def encode_memory(
        self,
        features: ImageFeatures,
        low_res: np.ndarray,
        object_score_logit: float,
        binarize: bool,
    ) -> Any:
        request = MemoryRequest(features, low_res, object_score_logit, binarize)
        return self._encode_batch([request])[0]

    @torch.inference_mode()
    def encode_memory_many(self, requests: Sequence[MemoryRequest]) -> list[Any]:
        """Requests on the same frame's features run as one batch through the memory encoder
        (the features' projection once, the mask path and fuser per item)."""
        return in_batches(requests, lambda r: id(r.features), self._encode_batch)

    def _encode_batch(self, requests: Sequence[MemoryRequest]) -> list[Any]:
        dev = self.device_t
        low = torch.from_numpy(np.stack([np.asarray(r.low_res, np.float32) for r in requests]))
        low = low[:, None].to(dev)  # (B, 1, s, s)
        score = torch.tensor(
            [[r.object_score_logit] for r in requests], dtype=torch.float32, device=dev
        )
        # (B, 1, 1, 1): one flag per item, broadcast over its mask ((1,) for one item, as before)
        flag = torch.tensor([r.binarize for r in requests], device=dev)
        if len(requests) > 1:
            flag = flag[:, None, None, None]
        with self._autocast():
            # the (1, 256, g, g) features: projected once, broadcast against the B masks
            maskmem, pos = self.memory_encoder(requests[0].features.vision_feat, low, score, flag)
        if self._maskmem_pos is None:
            self._maskmem_pos = pos[0:1].float().clone()
        # SAM 2's predictor stores memories in bfloat16 (_run_single_frame_inference): keep
        # the same rounding, which also halves the bank
        return [maskmem[i : i + 1].to(torch.bfloat16) for i in range(len(requests))]

    def runtime(self) -> dict[str, Any]:
        """What computes the masks, for the sidecar (as the ONNX backend's)."""
        return {
            "backend": "torch",
            "torch": torch.__version__,
            "device": self.device,
            "precision": "bf16 autocast" if self.device_t.type == "cuda" else "fp32",
            "threads": torch.get_num_threads() if self.device_t.type == "cpu" else None,
        }

    def nbytes(self, value: Any) -> int:
        return int(value.numel() * value.element_size())

    # --- memory assembly ----------------------------------------------------------------

    def _assemble(
        self, memories: list[MemoryItem], pointers: list[PointerItem], t_diff_max: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(M, 1, 64) memory tokens and position encodings, in SAM 2's order: spatial
        memories in selection order, then 4 tokens per pointer."""
        toks, poss = [], []
        for item in memories:
            toks.append(item.maskmem.flatten(2).permute(2, 0, 1).float())  # (g*g, 1, 64)
            poss.append(self._memory_pos(item.t_pos))
        for pointer in pointers:
            toks.append(self._split_ptr(pointer.obj_ptr))  # (4, 1, 64)
            poss.append(self._pointer_pos(pointer.t_diff, t_diff_max))
        n_ptr = 4 * len(pointers) if self.model.mem_dim < self.model.hidden_dim else len(pointers)
        return torch.cat(toks, dim=0), torch.cat(poss, dim=0), n_ptr

    def _key_scale(
        self, memories: list[MemoryItem], pointers: list[PointerItem]
    ) -> torch.Tensor | None:
        """(M,) float32 per-token key scales in :meth:`_assemble`'s order, or None when every
        item's scale is 1."""
        if all(m.key_scale == 1.0 for m in memories) and all(p.key_scale == 1.0 for p in pointers):
            return None
        per_ptr = 4 if self.model.mem_dim < self.model.hidden_dim else 1  # as _split_ptr
        scales = [m.key_scale for m in memories] + [p.key_scale for p in pointers]
        counts = [m.maskmem.shape[-2] * m.maskmem.shape[-1] for m in memories]
        counts += [per_ptr] * len(pointers)
        return torch.repeat_interleave(
            torch.tensor(scales, dtype=torch.float32), torch.tensor(counts)
        ).to(self.device_t)

    def _memory_pos(self, t_pos: int) -> torch.Tensor:
        pos = self._mem_pos.get(t_pos)
        if pos is None:
            if self._maskmem_pos is None:
                raise RuntimeError("memory position requested before any memory was encoded")
            flat = self._maskmem_pos.flatten(2).permute(2, 0, 1)  # (g*g, 1, 64)
            tpos = self.model.maskmem_tpos_enc[self.num_maskmem - t_pos - 1]  # (1, 1, 64)
            pos = self._mem_pos[t_pos] = flat + tpos
        return pos

    def _split_ptr(self, ptr: torch.Tensor) -> torch.Tensor:
        """(1, 256) -> (4, 1, 64): the pointer as 4 memory tokens (mem_dim 64 < 256)."""
        c, d = self.model.hidden_dim, self.model.mem_dim
        ptr = ptr.reshape(1, 1, c)
        if d < c:
            ptr = ptr.reshape(-1, 1, c // d, d).permute(0, 2, 1, 3).flatten(0, 1)
        return ptr

    def _pointer_pos(self, t_diff: int, t_diff_max: int) -> torch.Tensor:
        key = (t_diff, t_diff_max)
        pos = self._ptr_pos.get(key)
        if pos is None:
            c, d = self.model.hidden_dim, self.model.mem_dim
            t = torch.tensor([t_diff]).to(self.device_t) / t_diff_max
            pos = self.pointer_pos(t).unsqueeze(1)  # (1, 1, 64)
            if d < c:
                pos = pos.repeat_interleave(c // d, dim=0)
            self._ptr_pos[key] = pos
        return pos

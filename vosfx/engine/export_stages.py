"""Export-time versions of the :mod:`vosfx.engine.stages` modules, and the table of graphs.

Each entry of :func:`stage_specs` is one ONNX graph: the stage module (the engine's own, or a
thin wrapper over it where the original is not exportable), example inputs, and the names and
dynamic axes of its inputs and outputs. The per-object graphs (memory attention, the two
decoders, memory encoder) are traced with a batch of two objects and a dynamic ``batch`` axis.
Three stages need a wrapper:

- memory attention: SAM 2's RoPE uses complex tensors and a Python-int pointer-token count;
  the wrapper runs a copy of the attention with :class:`~vosfx.engine.export_rope.
  RealRoPEAttention` and takes the count as an int64 input;
- mask-as-output: ``F.interpolate(..., antialias=True)`` has no ONNX export; the wrapper does
  the same antialiased bilinear resize as two matrix products with torch's own weights
  (:func:`vosfx.engine.backend.aa_weights`);
- decoder: the object-score gate (``min_object_score``, SAMURAI's -1, SAM 2's 0) is a graph
  input, not the traced constant 0; the dense mask prompt is a second graph (``decoder_mask``)
  with ``mask_input``, the plain one leaves it None.

The memory encoder's ``binarize`` is a (B, 1, 1, 1) input, one flag per object broadcast over
its mask (a graph input of that shape, not a reshape inside, keeps OpenVINO's fused
elementwise kernel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from vosfx.engine.backend import aa_weights
from vosfx.engine.export_rope import attention, real_rope_memory_attention, tokens
from vosfx.engine.stages import (
    DecoderStage,
    ImageEncoderStage,
    MaskAsOutputStage,
    MemoryAttentionStage,
    MemoryEncoderStage,
    NoMemoryStage,
    PointerPosStage,
)

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base


class ImageEncoderExport(nn.Module):
    """:class:`ImageEncoderStage` whose attention (Hiera's ``F.scaled_dot_product_attention``)
    exports as the fused :func:`~vosfx.engine.export_rope.attention` (same inputs, outputs)."""

    def __init__(self, model: SAM2Base) -> None:
        super().__init__()
        self.stage = ImageEncoderStage(model)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import torch.nn.functional as F

        real = F.scaled_dot_product_attention

        def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args, **kwargs):
            b, h, n, _ = q.shape
            # only the global blocks (one window: the whole token grid) go fused; Hiera's
            # windowed blocks (thousands of windows of <= 196 tokens) run faster unfused
            if args or kwargs or int(b) != 1:
                return real(q, k, v, *args, **kwargs)
            out = attention(tokens(q), tokens(k), tokens(v), int(h))  # (B, N, H*Dv)
            return out.reshape(b, n, h, -1).transpose(1, 2)

        F.scaled_dot_product_attention = cast(Any, sdpa)  # same call, loosely typed
        try:
            return self.stage(image)
        finally:
            F.scaled_dot_product_attention = real


class MemoryAttentionExport(nn.Module):
    """:class:`MemoryAttentionStage` with a real-valued RoPE and a tensor pointer count.

    ``num_obj_ptr_tokens``: () int64. ``vision_feat``/``vision_pos`` (1, 256, g, g),
    ``memory``/``memory_pos`` (M, B, 64) for B objects with the same token layout;
    ``key_scale`` (B, M) float32: each memory token's key input to the cross-attentions is
    multiplied by it (SAM2Long's attention modulation; ones for every other policy, which
    leaves the keys bit for bit). Returns (B, 256, g, g).
    """

    def __init__(self, model: SAM2Base) -> None:
        super().__init__()
        clone, self._rope = real_rope_memory_attention(model.memory_attention)
        self.stage = MemoryAttentionStage(SimpleNamespace(memory_attention=clone))

    def forward(
        self,
        vision_feat: torch.Tensor,
        vision_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: torch.Tensor,
        key_scale: torch.Tensor,
    ) -> torch.Tensor:
        # a batch of B objects of one frame: memory (M, B, 64); the frame's (1, 256, g, g)
        # features are broadcast to B here, so a caller feeds them once
        b = memory.shape[1]
        tables: dict = {}  # the key rotation tables, made by the first layer, shared by all
        for attn in self._rope:
            attn.n_exclude = num_obj_ptr_tokens
            attn.tables = tables
        try:
            return self.stage(
                vision_feat.expand(b, -1, -1, -1),
                vision_pos.expand(b, -1, -1, -1),
                memory,
                memory_pos,
                0,
                key_scale,
            )
        finally:
            for attn in self._rope:
                attn.n_exclude = 0
                attn.tables = None


class DecoderExport(nn.Module):
    """:class:`DecoderStage` without a mask prompt and with the object-score gate as an input.

    ``min_object_score``: (B, 1) float32, the logit above which masks and pointer count as
    present (0 for SAM 2). Other inputs and the outputs as the stage, for a batch of B objects
    of one frame: ``pix_feat``, ``point_coords``, ``point_labels`` and every output have B
    rows; ``feat_s0``/``feat_s1`` stay (1, ...) (broadcast).
    """

    def __init__(self, decoder: DecoderStage) -> None:
        super().__init__()
        self.stage = decoder

    def forward(
        self,
        pix_feat: torch.Tensor,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        min_object_score: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        return self.stage(
            pix_feat, feat_s0, feat_s1, point_coords, point_labels, None, min_object_score
        )


class _AAResize(nn.Module):
    """Antialiased bilinear resize (torch's ``antialias=True`` weights) as matrix products:
    (N, C, H, W) -> (N, C, out, out)."""

    wy: torch.Tensor  # (out, in) float32, a buffer
    wxt: torch.Tensor  # (in, out) float32, a buffer

    def __init__(self, size_in: int, size_out: int) -> None:
        super().__init__()
        w = torch.from_numpy(aa_weights(size_in, size_out))  # (out, in)
        self.register_buffer("wy", w, persistent=False)
        self.register_buffer("wxt", w.t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wy @ (x @ self.wxt)


class MaskAsOutputExport(nn.Module):
    """:class:`MaskAsOutputStage` with the antialiased downsample done by :class:`_AAResize`
    (same inputs and outputs)."""

    def __init__(self, model: SAM2Base, decoder: DecoderStage) -> None:
        super().__init__()
        self.stage = MaskAsOutputStage(model, decoder)
        size = int(model.image_size)
        self.resize = _AAResize(size, size // 4)

    def forward(
        self,
        vision_feat: torch.Tensor,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        import torch.nn.functional as F

        resize = self.resize
        real = F.interpolate

        def interpolate(
            x: torch.Tensor, *args: Any, antialias: bool = False, **kwargs: Any
        ) -> torch.Tensor:
            # only the stage's own antialiased low-res downsample is redirected
            return resize(x) if antialias else real(x, *args, **kwargs)

        # it takes F.interpolate's arguments, spelled loosely
        F.interpolate = cast(Callable[..., torch.Tensor], interpolate)
        try:
            return self.stage(vision_feat, feat_s0, feat_s1, mask)
        finally:
            F.interpolate = real


DECODER_OUTPUTS = [
    "multi_logits",
    "multi_ious",
    "single_logits",
    "single_iou",
    "object_score_logit",
    "multi_ptrs",
    "single_ptr",
]


@dataclass
class StageSpec:
    """One graph: ``module(*example)`` traced to ``<name>.onnx``."""

    name: str
    module: nn.Module
    example: tuple
    inputs: list[str]
    outputs: list[str]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)


def _decoder_spec(
    name: str,
    module: nn.Module,
    pix: torch.Tensor,
    s0: torch.Tensor,
    s1: torch.Tensor,
    pts: torch.Tensor,
    *,
    dense: bool,
) -> StageSpec:
    """The decoder graph (``decoder``) or, ``dense``, the decoder with a dense mask prompt
    (``decoder_mask``: ``mask_input`` (B, 1, s, s) low-res logits at the prompt encoder's
    mask size, a frame's previous output clamped to +-32 as SAM 2 passes
    ``prev_sam_mask_logits``, before ``min_object_score``: :class:`DecoderStage` itself, whose
    arguments are in that order). ``pix``: (B, 256, g, g) example features of a batch of B
    objects; ``s0`` (1, 32, s, s)."""
    batch = {0: "batch"}
    nb, s = pix.shape[0], s0.shape[-1]
    example: tuple = (
        pix,
        s0,
        s1,
        pts,
        torch.tensor([[1, 0]], dtype=torch.int32).expand(nb, -1),
    )
    inputs = ["pix_feat", "feat_s0", "feat_s1", "point_coords", "point_labels"]
    dynamic: dict[str, dict[int, str]] = {
        "pix_feat": batch,
        "point_coords": {0: "batch", 1: "num_points"},
        "point_labels": {0: "batch", 1: "num_points"},
        "min_object_score": batch,
        **{out: batch for out in DECODER_OUTPUTS},
    }
    if dense:
        example += (torch.randn(nb, 1, s, s) * 8,)
        inputs.append("mask_input")
        dynamic["mask_input"] = batch
    return StageSpec(
        name,
        module,
        (*example, torch.zeros(nb, 1)),
        [*inputs, "min_object_score"],
        DECODER_OUTPUTS,
        dynamic,
    )


def stage_specs(model: SAM2Base) -> list[StageSpec]:
    """The bundle's graphs for a loaded ``SAM2Base`` (eval mode, CPU, float32)."""
    size = int(model.image_size)
    g, s = size // 16, size // 4
    hidden, mem = int(model.hidden_dim), int(model.mem_dim)
    feat = torch.randn(1, hidden, g, g)
    s0, s1 = torch.randn(1, hidden // 8, s, s), torch.randn(1, hidden // 4, size // 8, size // 8)
    decoder = DecoderStage(model)
    n_mem, n_ptr = 2, 4 * 2  # example: 2 spatial memories, 2 pointers (4 tokens each)
    m_tokens = n_mem * g * g + n_ptr
    # the per-object graphs are traced with a batch of 2 objects, so that no reshape bakes
    # in a batch of 1 (their batch axis is dynamic)
    nb = 2
    pts = torch.tensor([[[size * 0.3, size * 0.4], [size * 0.6, size * 0.5]]]).expand(nb, -1, -1)
    pix = torch.randn(nb, hidden, g, g)
    batch = {0: "batch"}
    return [
        StageSpec(
            "image_encoder",
            ImageEncoderExport(model),
            (torch.randn(1, 3, size, size),),
            ["image"],
            ["feat_s0", "feat_s1", "vision_feat", "vision_pos"],
        ),
        StageSpec("no_memory", NoMemoryStage(model), (feat,), ["vision_feat"], ["pix_feat"]),
        StageSpec(
            "memory_attention",
            MemoryAttentionExport(model),
            (
                feat,
                torch.randn(1, hidden, g, g),
                torch.randn(m_tokens, nb, mem),
                torch.randn(m_tokens, nb, mem),
                torch.tensor(n_ptr, dtype=torch.int64),
                torch.rand(nb, m_tokens) + 0.5,
            ),
            [
                "vision_feat",
                "vision_pos",
                "memory",
                "memory_pos",
                "num_obj_ptr_tokens",
                "key_scale",
            ],
            ["pix_feat"],
            {
                "memory": {0: "num_tokens", 1: "batch"},
                "memory_pos": {0: "num_tokens", 1: "batch"},
                "key_scale": {0: "batch", 1: "num_tokens"},
                "pix_feat": batch,
            },
        ),
        _decoder_spec("decoder", DecoderExport(decoder), pix, s0, s1, pts, dense=False),
        _decoder_spec("decoder_mask", decoder, pix, s0, s1, pts, dense=True),
        StageSpec(
            "mask_as_output",
            MaskAsOutputExport(model, decoder),
            (feat, s0, s1, (torch.rand(1, 1, size, size) > 0.5).float()),
            ["vision_feat", "feat_s0", "feat_s1", "mask"],
            ["low_res", "object_score_logit", "iou", "obj_ptr"],
        ),
        StageSpec(
            "memory_encoder",
            MemoryEncoderStage(model),
            (
                feat,
                torch.randn(nb, 1, s, s),
                torch.tensor([[1.0], [-1.0]]),
                torch.tensor([True, False]).reshape(nb, 1, 1, 1),
            ),
            ["vision_feat", "low_res", "object_score_logit", "binarize"],
            ["maskmem", "maskmem_pos"],
            {name: batch for name in ("low_res", "object_score_logit", "binarize", "maskmem")},
        ),
        StageSpec(
            "pointer_pos",
            PointerPosStage(model),
            (torch.tensor([0.25, -0.5]),),
            ["t_norm"],
            ["pos"],
            {"t_norm": {0: "num_pointers"}, "pos": {0: "num_pointers"}},
        ),
    ]

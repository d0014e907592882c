"""SAM 2's four inference stages as tensor-in/tensor-out modules.

Each stage wraps sub-modules of a loaded ``sam2.modeling.sam2_base.SAM2Base`` (it calls them; no
SAM 2 code is copied) and has fixed, documented shapes with no Python control flow on data, so
the same stages can be exported to ONNX. ``S`` is the model's ``image_size`` (1024 for the
released checkpoints), ``s = S // 4`` the low-res mask size and ``g = S // 16`` the feature grid.

The Python-side choices (which memories to attend, multimask or single mask, no-memory embedding
on initial conditioning frames) live with the tracker (:mod:`vosfx.engine.passes`,
:mod:`vosfx.engine.decoding`, :mod:`vosfx.engine.anchors`); the stages compute every candidate
and the tracker picks, the way ``SAM2Base._forward_sam_heads`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

# SAM 2's logit for "object absent" (sam2.modeling.sam2_base.NO_OBJ_SCORE)
NO_OBJ_SCORE = -1024.0


class ImageEncoderStage(nn.Module):
    """image (1, 3, S, S) float32, normalised with ImageNet mean/std ->

    - ``feat_s0``: (1, 32, S/4, S/4) high-res FPN level 0 after the decoder's ``conv_s0``;
    - ``feat_s1``: (1, 64, S/8, S/8) FPN level 1 after ``conv_s1``;
    - ``vision_feat``: (1, 256, g, g) top-level features (memory attention and memory encoder);
    - ``vision_pos``: (1, 256, g, g) their sine position encoding (constant for a given S).

    The same as ``SAM2Base.forward_image`` followed by ``_prepare_backbone_features``.
    """

    def __init__(self, model: SAM2Base) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.conv_s0 = model.sam_mask_decoder.conv_s0
        self.conv_s1 = model.sam_mask_decoder.conv_s1

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.image_encoder(image)
        fpn, pos = out["backbone_fpn"], out["vision_pos_enc"]
        return self.conv_s0(fpn[0]), self.conv_s1(fpn[1]), fpn[-1], pos[-1]


class MemoryAttentionStage(nn.Module):
    """Condition the current frame's features on the memory.

    ``vision_feat``, ``vision_pos``: (1, 256, g, g). ``memory``: (M, 1, 64) tokens: spatial
    memories (g*g tokens per frame) then object-pointer tokens (4 per pointer: the 256-d pointer
    split into 4 x 64, as SAM 2 does). ``memory_pos``: (M, 1, 64). ``num_obj_ptr_tokens``: how
    many trailing tokens are pointers (they get no RoPE). Returns (1, 256, g, g).
    """

    def __init__(self, model: SAM2Base) -> None:
        super().__init__()
        self.memory_attention = model.memory_attention

    def forward(
        self,
        vision_feat: torch.Tensor,
        vision_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int,
        key_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A batch of B objects: ``vision_feat``/``vision_pos`` (B, 256, g, g) (the same frame's
        features expanded), ``memory``/``memory_pos`` (M, B, 64); returns (B, 256, g, g).
        ``key_scale`` (M,), (B, M) or None: each memory token's key input to the cross-attention
        (memory + position encoding, before the key projection and RoPE) is multiplied by it,
        in every layer; the values are not (SAM2Long's attention modulation)."""
        b, c, h, w = vision_feat.shape
        curr = vision_feat.flatten(2).permute(2, 0, 1)  # (g*g, 1, 256)
        curr_pos = vision_pos.flatten(2).permute(2, 0, 1)
        hooks = []
        if key_scale is not None:
            # (M,) or (B, M) -> (1 or B, M, 1): the layers see batch-first (B, M, 64) keys
            scale = key_scale.reshape(-1, key_scale.shape[-1], 1)

            def scaled(_module, args, kwargs):
                return args, {**kwargs, "k": kwargs["k"] * scale.to(kwargs["k"].dtype)}

            for layer in self.memory_attention.layers:
                hooks.append(
                    layer.cross_attn_image.register_forward_pre_hook(scaled, with_kwargs=True)
                )
        try:
            out = self.memory_attention(
                curr=[curr],
                curr_pos=[curr_pos],
                memory=memory,
                memory_pos=memory_pos,
                num_obj_ptr_tokens=num_obj_ptr_tokens,
            )
        finally:
            for hook in hooks:
                hook.remove()
        return out.permute(1, 2, 0).view(b, c, h, w)


class NoMemoryStage(nn.Module):
    """Initial conditioning frames attend to nothing: SAM 2 adds its learned ``no_mem_embed``
    to the features instead (``directly_add_no_mem_embed``). (1, 256, g, g) -> same."""

    def __init__(self, model: SAM2Base) -> None:
        super().__init__()
        self.no_mem_embed = model.no_mem_embed  # (1, 1, 256)

    def forward(self, vision_feat: torch.Tensor) -> torch.Tensor:
        b, c, h, w = vision_feat.shape
        curr = vision_feat.flatten(2).permute(2, 0, 1) + self.no_mem_embed
        return curr.permute(1, 2, 0).view(b, c, h, w)


class DecoderStage(nn.Module):
    """Prompt encoder + mask decoder + object pointer, every candidate at once.

    Inputs: ``pix_feat`` (1, 256, g, g) memory-conditioned features; ``feat_s0``/``feat_s1`` from
    :class:`ImageEncoderStage`; ``point_coords`` (1, P, 2) float32 in model pixels [0, S]
    (x, y); ``point_labels`` (1, P) int32 (1 positive, 0 negative, 2/3 box corners, -1 padding);
    ``mask_input`` None or (1, 1, s, s) float logits/probabilities (a dense prompt). Whether a
    mask is given is structure, not data: an exported graph exists once with and once without.

    Returns, with ``is_obj = object_score_logit > min_object_score`` applied as SAM 2 does
    (masks forced to NO_OBJ_SCORE and the pointer blended with ``no_obj_ptr`` when absent;
    ``min_object_score`` None means SAM 2's 0, a (1, 1) tensor moves the gate, as SAMURAI's
    ``min_obj_score_logits`` does; exported graphs are traced without it):

    - ``multi_logits`` (1, 3, s, s) float32, ``multi_ious`` (1, 3): the three multimask outputs;
    - ``single_logits`` (1, 1, s, s), ``single_iou`` (1, 1): token 0, or the best multimask
      when token 0 is unstable (the decoder's ``dynamic_multimask_via_stability``);
    - ``object_score_logit`` (1, 1);
    - ``multi_ptrs`` (1, 3, 256) and ``single_ptr`` (1, 256): object pointers for each choice.
    """

    dense_pe: torch.Tensor  # (1, 256, g, g), a buffer

    def __init__(self, model: SAM2Base) -> None:
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder
        self.obj_ptr_proj = model.obj_ptr_proj
        self.no_obj_ptr = model.no_obj_ptr  # (1, 256)
        self.soft_no_obj_ptr = bool(model.soft_no_obj_ptr)
        self.fixed_no_obj_ptr = bool(model.fixed_no_obj_ptr)
        self.use_multimask_token_for_obj_ptr = bool(model.use_multimask_token_for_obj_ptr)
        self.dynamic_single = bool(self.mask_decoder.dynamic_multimask_via_stability)
        with torch.no_grad():  # constant for a given S: computed once, not per frame
            self.register_buffer("dense_pe", self.prompt_encoder.get_dense_pe(), persistent=False)

    def forward(
        self,
        pix_feat: torch.Tensor,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor | None = None,
        min_object_score: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        sparse, dense = self.prompt_encoder(
            points=(point_coords, point_labels), boxes=None, masks=mask_input
        )
        masks, ious, tokens, score = self.mask_decoder.predict_masks(
            image_embeddings=pix_feat,
            image_pe=self.dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=[feat_s0, feat_s1],
        )  # masks (1, 4, s, s), ious (1, 4), tokens (1, 4, 256), score (1, 1)
        if self.dynamic_single:
            single_logits, single_iou = self.mask_decoder._dynamic_multimask_via_stability(
                masks, ious
            )
        else:
            single_logits, single_iou = masks[:, :1], ious[:, :1]
        is_obj = score > (0 if min_object_score is None else min_object_score)  # (1, 1)
        multi_logits = torch.where(is_obj[:, None, None], masks[:, 1:], NO_OBJ_SCORE).float()
        single_logits = torch.where(is_obj[:, None, None], single_logits, NO_OBJ_SCORE).float()
        multi_tokens = tokens[:, 1:] if self.use_multimask_token_for_obj_ptr else tokens[:, :1]
        multi_ptrs = self._blend(self.obj_ptr_proj(multi_tokens), score[:, None], is_obj[:, None])
        single_ptr = self._blend(self.obj_ptr_proj(tokens[:, 0]), score, is_obj)
        if multi_ptrs.shape[1] == 1:
            multi_ptrs = multi_ptrs.expand(-1, 3, -1)
        return multi_logits, ious[:, 1:], single_logits, single_iou, score, multi_ptrs, single_ptr

    def _blend(self, ptr: torch.Tensor, score: torch.Tensor, is_obj: torch.Tensor) -> torch.Tensor:
        """SAM 2's occlusion handling of the pointer (``_forward_sam_heads``, pred_obj_scores)."""
        lam = score.sigmoid() if self.soft_no_obj_ptr else is_obj.float()
        if self.fixed_no_obj_ptr:
            ptr = lam * ptr
        return ptr + (1 - lam) * self.no_obj_ptr


class MaskAsOutputStage(nn.Module):
    """A mask prompt used directly as the output (``use_mask_input_as_output_without_sam``).

    ``mask`` (1, 1, S, S) float32 in {0, 1} at model resolution -> ``low_res`` (1, 1, s, s)
    logits (+-10 antialiased down), ``object_score_logit`` (1, 1) = +10 if any pixel is set
    else -10, ``iou`` (1, 1) = 1, ``obj_ptr`` (1, 256) from the decoder fed the 4x-downsampled
    mask. Same as ``SAM2Base._use_mask_as_output``.
    """

    def __init__(self, model: SAM2Base, decoder: DecoderStage) -> None:
        super().__init__()
        self.mask_downsample = model.mask_downsample
        self.decoder = decoder

    def forward(
        self,
        vision_feat: torch.Tensor,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        out_scale, out_bias = 20.0, -10.0  # sigmoid(-10) = 4.5e-5: "certainly background"
        high_res = mask * out_scale + out_bias
        low_res = F.interpolate(
            high_res,
            size=(high_res.size(-2) // 4, high_res.size(-1) // 4),
            align_corners=False,
            mode="bilinear",
            antialias=True,
        )
        iou = mask.new_ones(1, 1)
        # no points: the prompt encoder's single padding point (label -1), as SAM 2 passes
        coords = torch.zeros(1, 1, 2, device=mask.device)
        labels = -torch.ones(1, 1, dtype=torch.int32, device=mask.device)
        *_, single_ptr = self.decoder(
            vision_feat, feat_s0, feat_s1, coords, labels, self.mask_downsample(mask)
        )
        lam = torch.any(mask.flatten(1) > 0.0, dim=1)[..., None].float()  # (1, 1)
        score = out_scale * lam + out_bias
        # the decoder already blended its pointer by its own score; SAM 2 then blends the result
        # again, hard, by the mask's presence (never soft here), so do the same
        ptr = single_ptr
        if self.decoder.fixed_no_obj_ptr:
            ptr = lam * ptr
        ptr = ptr + (1 - lam) * self.decoder.no_obj_ptr
        return low_res, score, iou, ptr


class MemoryEncoderStage(nn.Module):
    """Encode one frame's prediction into memory (``SAM2Base._encode_new_memory``).

    ``vision_feat`` (1, 256, g, g) raw image features (not memory-conditioned); ``low_res``
    (B, 1, s, s) float32 mask logits of B objects (upsampled to S x S here, as SAM 2 does
    before encoding); ``object_score_logit`` (B, 1); ``binarize`` (1,) or (B, 1, 1, 1) bool: use
    (logit > 0) instead of the sigmoid (SAM 2 does on prompted frames when
    ``binarize_mask_from_pts_for_mem_enc``), one flag per object when (B, 1, 1, 1).

    Returns ``maskmem`` (B, 64, g, g) float32 and ``maskmem_pos`` (B, 64, g, g) (constant).
    """

    def __init__(self, model: SAM2Base) -> None:
        super().__init__()
        self.memory_encoder = model.memory_encoder
        self.image_size = int(model.image_size)
        self.scale = float(model.sigmoid_scale_for_mem_enc)
        self.bias = float(model.sigmoid_bias_for_mem_enc)
        self.no_obj_embed_spatial = model.no_obj_embed_spatial  # (1, 64) or None

    def forward(
        self,
        vision_feat: torch.Tensor,
        low_res: torch.Tensor,
        object_score_logit: torch.Tensor,
        binarize: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        high_res = F.interpolate(
            low_res, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )  # (1, 1, S, S)
        mask = torch.where(binarize, (high_res > 0).float(), torch.sigmoid(high_res))
        if self.scale != 1.0:
            mask = mask * self.scale
        if self.bias != 0.0:
            mask = mask + self.bias
        out = self.memory_encoder(vision_feat, mask, skip_mask_sigmoid=True)
        maskmem, pos = out["vision_features"], out["vision_pos_enc"][-1]
        if self.no_obj_embed_spatial is not None:
            absent = 1 - (object_score_logit > 0).float()  # (1, 1)
            maskmem = maskmem + absent[..., None, None] * self.no_obj_embed_spatial[
                ..., None, None
            ].expand(*maskmem.shape)
        return maskmem, pos


class PointerPosStage(nn.Module):
    """Temporal encoding of object pointers: ``t_norm`` (P,) float32 signed frame distances
    divided by ``t_diff_max`` -> (P, 64) = ``obj_ptr_tpos_proj(get_1d_sine_pe(t_norm, 256))``."""

    def __init__(self, model: SAM2Base) -> None:
        super().__init__()
        self.proj = model.obj_ptr_tpos_proj
        self.dim = int(model.hidden_dim) if model.proj_tpos_enc_in_obj_ptrs else int(model.mem_dim)

    def forward(self, t_norm: torch.Tensor) -> torch.Tensor:
        from sam2.modeling.sam2_utils import get_1d_sine_pe

        return self.proj(get_1d_sine_pe(t_norm, dim=self.dim))

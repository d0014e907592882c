"""The decoder's candidate masks on one frame, for policies that choose among them.

SAM 2 keeps the candidate with the highest predicted IoU. SAMURAI scores candidates by their
boxes' agreement with a motion model, DAM4SAM looks at the alternatives for distractors: such
a policy defines ``choose(frame_index, candidates) -> k`` and the tracker keeps candidate k
(its mask, IoU and object pointer). Plain arrays only: no backend tensor reaches a policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: inclusive pixel indices


@dataclass(frozen=True)
class Candidates:
    """``logits`` (K, s, s) float32 low-res candidate masks (NO_OBJ_SCORE everywhere when the
    object is absent), ``ious`` (K,) float32 predicted IoUs, ``object_score_logit``,
    ``image_size`` S (the model input side, s = S / 4), ``video_hw`` (H, W) of the video."""

    logits: np.ndarray
    ious: np.ndarray
    object_score_logit: float
    image_size: int
    video_hw: tuple[int, int] = (0, 0)
    _boxes: dict[int, Box] = field(default_factory=dict, repr=False, compare=False)

    def video_mask(self, k: int) -> np.ndarray:
        """(H, W) bool: candidate k upsampled to the video as SAM 2 outputs it, > 0."""
        return upsample_bilinear(self.logits[k], self.video_hw) > 0

    def box(self, k: int) -> Box:
        """Bounding box of candidate k's positive pixels after bilinear upsampling to S x S
        (SAM 2's ``high_res_masks``); (0, 0, 0, 0) when no pixel is positive."""
        if k not in self._boxes:
            up = upsample_bilinear(self.logits[k], (self.image_size, self.image_size))
            ys, xs = np.nonzero(up > 0)
            self._boxes[k] = ((int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
                              if len(xs) else (0, 0, 0, 0))
        return self._boxes[k]


def upsample_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 -> (H, W) = ``size`` float32, ``F.interpolate(mode="bilinear",
    align_corners=False)`` computed the way PyTorch's CPU kernel does (float32 source
    coordinates clamped at 0, neighbour weights 1 - l and l), so positive pixels agree."""
    x = np.asarray(x, np.float32)

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(n_in / n_out)
        src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale
                         - np.float32(0.5), np.float32(0))
        i0 = src.astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0).astype(np.float32)

    r0, r1, lr = axis(x.shape[0], size[0])
    c0, c1, lc = axis(x.shape[1], size[1])
    top = x[r0][:, c0] * (1 - lc) + x[r0][:, c1] * lc  # (H, W)
    bottom = x[r1][:, c0] * (1 - lc) + x[r1][:, c1] * lc
    return (top * (1 - lr)[:, None] + bottom * lr[:, None]).astype(np.float32)

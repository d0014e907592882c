"""The decoder's candidate masks on one frame, for policies that choose among them.

SAM 2 keeps the candidate with the highest predicted IoU. SAMURAI scores candidates by their
boxes' agreement with a motion model, DAM4SAM looks at the alternatives for distractors: such
a policy defines ``choose(frame_index, candidates) -> k`` and the tracker keeps candidate k
(its mask, IoU and object pointer). Plain arrays only: no backend tensor reaches a policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

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
        out = np.zeros(self.video_hw, bool)
        top, left, sub = positive_upsampled(self.logits[k], self.video_hw)
        out[top : top + sub.shape[0], left : left + sub.shape[1]] = sub
        return out

    def box(self, k: int) -> Box:
        """Bounding box of candidate k's positive pixels after bilinear upsampling to S x S
        (SAM 2's ``high_res_masks``); (0, 0, 0, 0) when no pixel is positive."""
        if k not in self._boxes:
            top, left, sub = positive_upsampled(self.logits[k], (self.image_size, self.image_size))
            ys, xs = np.nonzero(sub)
            self._boxes[k] = (
                (
                    left + int(xs.min()),
                    top + int(ys.min()),
                    left + int(xs.max()),
                    top + int(ys.max()),
                )
                if len(xs)
                else (0, 0, 0, 0)
            )
        return self._boxes[k]


def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows (or columns) and weights of PyTorch's bilinear, align_corners=False:
    float32 source coordinates clamped at 0, neighbours i0 and min(i0 + 1, n_in - 1)."""
    scale = np.float32(n_in / n_out)
    src = np.maximum(
        (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
        np.float32(0),
    )
    i0 = src.astype(np.int64)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)


def _lerp(x: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    r0, r1, lr = rows
    c0, c1, lc = cols
    across = x[:, c0] * (1 - lc) + x[:, c1] * lc  # (h, w_out): per source row
    return (across[r0] * (1 - lr)[:, None] + across[r1] * lr[:, None]).astype(np.float32)


def upsample_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 -> (H, W) = ``size`` float32, ``F.interpolate(mode="bilinear",
    align_corners=False)`` computed the way PyTorch's CPU kernel does (each output pixel the
    same lerp of the same four neighbours), so positive pixels agree."""
    x = np.asarray(x, np.float32)
    return _lerp(x, _axis(x.shape[0], size[0]), _axis(x.shape[1], size[1]))


def positive_upsampled(x: np.ndarray, size: tuple[int, int]) -> tuple[int, int, np.ndarray]:
    """``upsample_bilinear(x, size) > 0`` computed only where it can be true: an output pixel
    is a blend of its four nearest source pixels, so outside the rows and columns next to a
    positive source pixel it is not positive. Returns (top, left, (h', w') bool window); the
    window is empty when no source pixel is positive. At 1080p for a typical object this is
    ~10x cheaper than the whole frame."""
    x = np.asarray(x, np.float32)
    pos = x > 0
    if not pos.any():
        return 0, 0, np.zeros((0, 0), bool)
    rows, cols = _axis(x.shape[0], size[0]), _axis(x.shape[1], size[1])

    def span(ax: tuple, hit: np.ndarray) -> tuple[int, int]:
        lo, hi = int(np.argmax(hit)), len(hit) - 1 - int(np.argmax(hit[::-1]))
        i0, i1, _ = ax
        touched = np.flatnonzero((i1 >= lo) & (i0 <= hi))
        return int(touched[0]), int(touched[-1]) + 1

    # (h,) and (w,) bool; numpy's stub also allows a scalar for any(axis=...)
    top, bottom = span(rows, cast(np.ndarray, pos.any(axis=1)))
    left, right = span(cols, cast(np.ndarray, pos.any(axis=0)))
    sub_rows = tuple(a[top:bottom] for a in rows)
    sub_cols = tuple(a[left:right] for a in cols)
    return top, left, _lerp(x, sub_rows, sub_cols) > 0

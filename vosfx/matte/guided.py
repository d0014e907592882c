"""Fast colour guided filter: edges of a low-resolution alpha snapped to the full-resolution frame.

He, Sun and Tang's guided filter models the output as a local linear function of the guide
image, ``q = a·I + b`` over each (2r+1)² window, fitted by least squares to the input alpha.
Where the window straddles an image edge the fit follows the edge; where the image is flat,
``a`` goes to zero and ``q`` is the (smooth) mean of the input, so alpha cannot bleed into flat
background. The "fast" variant (He and Sun, 2015) fits ``a`` and ``b`` on a copy subsampled by
``s`` and only evaluates ``a·I + b`` at full resolution: about s² less work, and a 256² SAM 2
mask carries no more detail than the subsampled copy anyway.

:class:`GuidePrep` holds what depends on the frame only (the subsampled guide, its window means
and inverse covariances), so a frame with several objects pays for it once.
"""

from __future__ import annotations

import cv2
import numpy as np

from vosfx.errors import VosfxError


def guide_to_float(guide_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 | uint16 | float32 RGB -> (H, W, 3) float32 in [0, 1]."""
    if guide_rgb.ndim != 3 or guide_rgb.shape[2] != 3:
        raise VosfxError(f"guide image: expected (H, W, 3) RGB, found shape {guide_rgb.shape}")
    if guide_rgb.dtype == np.uint8:
        return guide_rgb.astype(np.float32) * np.float32(1 / 255)
    if guide_rgb.dtype == np.uint16:
        return guide_rgb.astype(np.float32) * np.float32(1 / 65535)
    if guide_rgb.dtype == np.float32:
        return guide_rgb
    raise VosfxError(
        f"guide image: expected uint8, uint16 or float32, found {guide_rgb.dtype}"
    )


def subsample_for(radius_px: int) -> int:
    """The subsampling factor for a radius: the low-resolution radius stays >= 2 px, which the
    fast guided filter paper shows is where its error stays negligible (s = r / 4 .. r / 2)."""
    return max(1, min(8, radius_px // 2))


def _box(x: np.ndarray, r: int) -> np.ndarray:
    # Reflect at the border so edge windows are not biased towards zero.
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


class GuidePrep:
    """Per-frame part of the colour guided filter.

    ``guide_rgb``: (H, W, 3) uint8 | uint16 | float32 RGB (float in [0, 1]), source resolution.
    ``radius_px``: window radius in source pixels (>= 1). ``eps``: regularisation in the guide's
    [0, 1] units squared; larger values smooth more and follow the image less.
    """

    def __init__(self, guide_rgb: np.ndarray, radius_px: int, eps: float) -> None:
        if radius_px < 1:
            raise VosfxError(f"guided filter radius: expected >= 1 px, found {radius_px}")
        if eps <= 0:
            raise VosfxError(f"guided filter eps: expected > 0, found {eps}")
        self.full = guide_to_float(guide_rgb)  # (H, W, 3) f32 [0, 1]
        self.height, self.width = self.full.shape[:2]
        s = subsample_for(radius_px)
        self.low_hw = (max(1, round(self.height / s)), max(1, round(self.width / s)))
        self.r = max(1, round(radius_px / s))
        low = cv2.resize(self.full, self.low_hw[::-1], interpolation=cv2.INTER_AREA)
        self.low = low  # (h, w, 3) f32
        self.mean_i = _box(low, self.r)  # (h, w, 3)
        r_, g_, b_ = low[..., 0], low[..., 1], low[..., 2]
        prods = np.stack([r_ * r_, r_ * g_, r_ * b_, g_ * g_, g_ * b_, b_ * b_], axis=-1)
        m = self.mean_i
        corr = _box(prods, self.r)  # (h, w, 6)
        # Covariance of the guide in each window (+ eps on the diagonal), then its inverse by
        # the adjugate: a closed form over whole arrays instead of 3x3 solves per pixel.
        rr = corr[..., 0] - m[..., 0] * m[..., 0] + eps
        rg = corr[..., 1] - m[..., 0] * m[..., 1]
        rb = corr[..., 2] - m[..., 0] * m[..., 2]
        gg = corr[..., 3] - m[..., 1] * m[..., 1] + eps
        gb = corr[..., 4] - m[..., 1] * m[..., 2]
        bb = corr[..., 5] - m[..., 2] * m[..., 2] + eps
        inv = np.stack([gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb,
                        rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg], axis=-1)
        det = rr * inv[..., 0] + rg * inv[..., 1] + rb * inv[..., 2]
        self.inv_cov = inv / det[..., None]  # (h, w, 6): xx, xy, xz, yy, yz, zz
        # [R, G, B, 1] so that a·I + b is one multiply and one channel sum in cv2.
        self.full1 = np.dstack([self.full, np.ones((self.height, self.width), np.float32)])

    def to_low(self, alpha: np.ndarray) -> np.ndarray:
        """(H, W) or any-size float32 alpha -> (h, w) float32 at the filter's resolution."""
        if alpha.shape == self.low_hw:
            return alpha.astype(np.float32, copy=False)
        shrinking = alpha.shape[0] > self.low_hw[0]
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return cv2.resize(alpha.astype(np.float32, copy=False), self.low_hw[::-1],
                          interpolation=interp)

    def filter(self, alpha: np.ndarray) -> np.ndarray:
        """Guided-filter one alpha.

        ``alpha``: float32 in [0, 1], either (H, W) or already at any other size (for example
        SAM 2's 256² probabilities); it is resampled to the low-resolution grid first.
        Returns (H, W) float32 clipped to [0, 1], source resolution.
        """
        p = self.to_low(alpha)  # (h, w)
        r = self.r
        mean_p = _box(p, r)
        cov_ip = _box(self.low * p[..., None], r) - self.mean_i * mean_p[..., None]  # (h, w, 3)
        iv = self.inv_cov
        cr, cg, cb = cov_ip[..., 0], cov_ip[..., 1], cov_ip[..., 2]
        a_r = iv[..., 0] * cr + iv[..., 1] * cg + iv[..., 2] * cb
        a_g = iv[..., 1] * cr + iv[..., 3] * cg + iv[..., 4] * cb
        a_b = iv[..., 2] * cr + iv[..., 4] * cg + iv[..., 5] * cb
        m = self.mean_i
        b = mean_p - a_r * m[..., 0] - a_g * m[..., 1] - a_b * m[..., 2]
        coef = _box(np.stack([a_r, a_g, a_b, b], axis=-1), r)  # (h, w, 4)
        # Only this part runs at full resolution: upsample (a, b), evaluate a·I + b.
        coef = cv2.resize(coef, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        q = cv2.transform(cv2.multiply(coef, self.full1), np.ones((1, 4), np.float32))
        return np.clip(q, 0.0, 1.0, out=q)


def guided_refine(alpha: np.ndarray, guide_rgb: np.ndarray, radius_px: int,
                  eps: float) -> np.ndarray:
    """Snap an alpha's edges to the image edges of ``guide_rgb`` (fast colour guided filter).

    ``alpha``: float32 in [0, 1], (H, W) or any lower resolution (resampled).
    ``guide_rgb``: (H, W, 3) uint8 | uint16 | float32 in [0, 1] RGB, source resolution.
    ``radius_px``: window radius in source pixels; it should cover the input's edge error
    (a 256² SAM 2 mask is off by up to one cell, W / 256 px). ``eps``: in [0, 1]² guide units;
    1e-3 follows edges with a contrast above about 0.03.
    Returns (H, W) float32 in [0, 1].
    """
    return GuidePrep(guide_rgb, radius_px, eps).filter(alpha)

"""Image-guided edge refinement: a low-resolution alpha's uncertain edge snapped to the frame.

He, Sun and Tang's guided filter models its output as a local linear function of the guide
image, ``q = a·I + b`` over each (2r+1)² window, fitted by least squares to the input alpha.
Where the window straddles an image edge the fit follows that edge; where the picture is flat,
``a`` is zero and ``q`` is just the windowed mean of the input. The "fast" variant (He and Sun,
2015) fits ``a`` and ``b`` on a copy subsampled by ``s`` and only evaluates ``a·I + b`` at full
resolution: about s² less work, and a 256² SAM 2 mask has no finer detail to lose.

Used as is, the filter's windowed mean eats thin structures and rounds corners (on DAVIS with
simulated 256² logits it lowered J by 3-19 %: docs/benchmarks/refine.md). So vosfx keeps only its
edge part, ``detail = q - windowed mean``, which is zero over flat picture, and adds it to the
bilinear alpha where that alpha is uncertain (weight 4·alpha·(1 - alpha)). Confident interior,
confident background and flat regions are left exactly as bilinear upsampling has them.

:class:`GuidePrep` holds what depends on the frame only (the subsampled guide, its window means
and inverse covariances), so a frame with several objects pays for it once.
"""

from __future__ import annotations

import cv2
import numpy as np

from vosfx.errors import VosfxError
from vosfx.matte import kernels

_SCALE = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535, np.dtype(np.float32): 1.0}


def _check_guide(guide_rgb: np.ndarray) -> None:
    if guide_rgb.ndim != 3 or guide_rgb.shape[2] != 3:
        raise VosfxError(f"guide image: expected (H, W, 3) RGB, found shape {guide_rgb.shape}")
    if guide_rgb.dtype not in _SCALE:
        raise VosfxError(f"guide image: expected uint8, uint16 or float32, found {guide_rgb.dtype}")


def subsample_for(radius_px: int, height: int = 0, width: int = 0) -> int:
    """The subsampling factor for a radius: the low-resolution radius stays >= 2 px, which the
    fast guided filter paper shows is where its error stays negligible (s = r / 4 .. r / 2).

    With the frame's ``height`` and ``width``: where ``r // 2`` does not divide both and one
    more does (at most 8, the low radius still rounding to >= 2), that one. OpenCV's area
    downscale of the guide takes its fast whole-block path only for a factor that divides,
    and the temporal filter can then reuse the grid (:func:`~vosfx.matte.temporal.small_luma`);
    the larger factor also means fewer grid cells (one less would mean more, and cost more
    than the slow downscale saves). At 3840x2160 (radius 15 px from SAM 2's 256² logits) 8
    instead of 7: the refiner's CPU a frame 82 -> 56 ms with the same J and F on DAVIS
    upscaled to 4K (docs/benchmarks/refine.md). 1080p (4), 1440p (5), 720p (2) and DCI 4K
    (8) divide already."""
    s = max(1, min(8, radius_px // 2))
    k = s + 1
    if (
        height > 0
        and width > 0
        and (height % s or width % s)
        and k <= 8
        and height % k == 0
        and width % k == 0
        and round(radius_px / k) >= 2
    ):
        return k
    return s


_MIN_WEIGHT = 0.01


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
        _check_guide(guide_rgb)
        self.radius_px, self.eps = int(radius_px), float(eps)  # what it was made for
        self.guide = guide_rgb  # (H, W, 3), kept as is: only the edge band is ever read
        self.scale = np.float32(_SCALE[guide_rgb.dtype])
        self.height, self.width = guide_rgb.shape[:2]
        s = subsample_for(radius_px, self.height, self.width)
        self.low_hw = (max(1, round(self.height / s)), max(1, round(self.width / s)))
        self.r = max(1, round(radius_px / s))
        # (h, w, 3) in the guide's dtype; kept: the temporal filter reuses it when its grid is
        # the same size (temporal.small_luma)
        self.low_image = cv2.resize(guide_rgb, self.low_hw[::-1], interpolation=cv2.INTER_AREA)
        low = np.multiply(self.low_image, self.scale, dtype=np.float32)  # (h, w, 3) in [0, 1]
        self.low = low
        # the window means of the channels and of their pairwise products (one 9-channel box
        # filter), then each window's inverse covariance (+ eps on the diagonal) in one loop
        sums = _box(kernels.guide_moments(low), self.r)  # (h, w, 9)
        # (h, w, 3) window means of r, g, b: a copy, so that the 9-channel sums are not kept
        # (a frame queued with its guide holds 12 float planes on the grid, not 18)
        self.mean_i = np.ascontiguousarray(sums[..., :3])
        self.inv_cov = kernels.inverse_covariance(sums, eps)  # (h, w, 6): xx, xy, xz, yy, yz, zz

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held (what a frame queued with it costs: at 854x480 with
        balanced refinement the grid is the frame's own size, 12 float planes: ~21 MiB)."""
        arrays = [self.guide, self.low_image, self.low, self.mean_i, self.inv_cov]
        return sum(a.nbytes for a in arrays)

    def to_low(self, alpha: np.ndarray) -> np.ndarray:
        """(H, W) or any-size float32 alpha -> (h, w) float32 at the filter's resolution."""
        if alpha.shape == self.low_hw:
            return alpha.astype(np.float32, copy=False)
        shrinking = alpha.shape[0] > self.low_hw[0]
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return cv2.resize(
            alpha.astype(np.float32, copy=False), self.low_hw[::-1], interpolation=interp
        )

    def coefficients(self, alpha_low: np.ndarray) -> np.ndarray:
        """(h, w, 4) float32 (a_r, a_g, a_b, b) on the low-resolution grid: the guided filter's
        window-averaged linear model minus its plain smoothing, so that ``a·I + b`` at a pixel
        is the image-edge detail there (:meth:`detail`).

        ``alpha_low``: float32 in [0, 1], any size (resampled to the filter's grid).
        """
        p = np.ascontiguousarray(self.to_low(alpha_low))  # (h, w)
        # window means of (p, r·p, g·p, b·p), then the slope and offset per window, then their
        # own window average (the filter's second box pass)
        sums = _box(kernels.alpha_moments(self.low, p), self.r)  # (h, w, 4)
        return _box(kernels.edge_coefficients(sums, self.mean_i, self.inv_cov), self.r)

    def detail(self, alpha_low: np.ndarray) -> np.ndarray:
        """The image-edge detail of one alpha over the whole frame: the guided filter's output
        minus the same windowed smoothing done without the image. Zero wherever the picture is
        flat within the window, so adding it cannot bleed into flat background, and free of
        the box-filter shrinkage that eats thin structures; where the window straddles an
        image edge it is a step along that edge.

        ``alpha_low``: float32 in [0, 1], any size. Returns (H, W) float32, about [-1, 1].
        """
        coef = cv2.resize(
            self.coefficients(alpha_low), (self.width, self.height), interpolation=cv2.INTER_LINEAR
        )
        img = np.multiply(self.guide, self.scale, dtype=np.float32)
        return np.einsum("hwc,hwc->hw", coef[..., :3], img) + coef[..., 3]

    def refine(
        self,
        alpha: np.ndarray,
        alpha_low: np.ndarray | None = None,
        strength: float = 1.0,
        *,
        overwrite: bool = False,
        threads: int = 1,
    ) -> np.ndarray:
        """``alpha + strength·4·alpha·(1 - alpha)·detail``, clipped to [0, 1].

        The weight 4·alpha·(1 - alpha) (1 at alpha 0.5, 0 where alpha is saturated) confines
        the correction to where the mask is uncertain, the band a 256² mask leaves around its
        edge, so confident interior and background are kept as they are; it is also why only
        that band is evaluated at full resolution (a few % of a 1080p frame).
        ``alpha``: (H, W) float32 in [0, 1], source resolution. ``alpha_low``: the same alpha
        at lower resolution if the caller has it (cheaper and sharper than resampling
        ``alpha``). ``strength`` >= 0: 1 moves an uncertain edge part of the way to the image
        edge, 2 most of the way (0 returns ``alpha``). ``overwrite``: ``alpha`` is the
        caller's to give up (float32), so the band is corrected in place instead of in a copy
        (8 MB a 1080p frame); the result may then be ``alpha`` itself. ``threads``: the
        full-resolution pass in that many bands of rows (:mod:`vosfx.matte.kernels`; the same
        result). Returns (H, W) float32 in [0, 1].
        """
        if alpha.shape != (self.height, self.width):
            raise VosfxError(
                f"alpha: expected {(self.height, self.width)} like the guide, found {alpha.shape}"
            )
        alpha = np.ascontiguousarray(alpha, dtype=np.float32)
        scale = 4.0 * float(strength)
        # |detail| stays below ~1, so where the weight is under 0.01 (alpha outside
        # [0.0025, 0.9975]) the correction would be under 0.01: those pixels keep their alpha
        # (the compiled loop evaluates the detail only where the weight passes).
        threshold = _MIN_WEIGHT * max(1.0, float(strength))
        if scale * 0.25 <= threshold:  # the weight peaks at scale / 4 (alpha 0.5)
            return alpha if overwrite else alpha.copy()
        coef = self.coefficients(alpha if alpha_low is None else alpha_low)
        out = alpha if overwrite else np.empty_like(alpha)
        return kernels.apply_edge_detail(
            alpha, self.guide, coef, self.scale, scale, threshold, out, threads
        )


def guided_refine(
    alpha: np.ndarray, guide_rgb: np.ndarray, radius_px: int, eps: float, strength: float = 1.0
) -> np.ndarray:
    """Snap an alpha's uncertain edge to the image edges of ``guide_rgb`` (fast colour guided
    filter, applied as edge detail; see :meth:`GuidePrep.refine`).

    ``alpha``: (H, W) float32 in [0, 1], for example bilinearly upsampled SAM 2 probabilities.
    ``guide_rgb``: (H, W, 3) uint8 | uint16 | float32 in [0, 1] RGB, source resolution.
    ``radius_px``: window radius in source pixels; it should cover the input's edge error
    (a 256² SAM 2 mask is off by up to one cell, W / 256 px). ``eps``: in [0, 1]² guide units;
    1e-3 follows edges with a contrast above about 0.03. ``strength``: see
    :meth:`GuidePrep.refine`. Returns (H, W) float32 in [0, 1].
    """
    return GuidePrep(guide_rgb, radius_px, eps).refine(alpha, strength=strength)

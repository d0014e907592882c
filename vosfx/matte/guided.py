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

_SCALE = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535, np.dtype(np.float32): 1.0}


def _check_guide(guide_rgb: np.ndarray) -> None:
    if guide_rgb.ndim != 3 or guide_rgb.shape[2] != 3:
        raise VosfxError(f"guide image: expected (H, W, 3) RGB, found shape {guide_rgb.shape}")
    if guide_rgb.dtype not in _SCALE:
        raise VosfxError(f"guide image: expected uint8, uint16 or float32, found {guide_rgb.dtype}")


def subsample_for(radius_px: int) -> int:
    """The subsampling factor for a radius: the low-resolution radius stays >= 2 px, which the
    fast guided filter paper shows is where its error stays negligible (s = r / 4 .. r / 2)."""
    return max(1, min(8, radius_px // 2))


_MIN_WEIGHT = 0.01
# Above this share of the frame the band is evaluated densely (GuidePrep._refine_dense): the
# gathered path costs ~70 ns a band pixel, the dense one ~9 ns a frame pixel (1080p, one core),
# so 1/8 is about where they cross. Sharp SAM 2 logits give a band of ~2 % of a 1080p frame,
# soft ones up to all of it (139 ms a frame before this, docs/benchmarks/render.md).
_DENSE_FRACTION = 0.125
_CHANNEL_SUM = np.ones((1, 3), np.float32)  # cv2.transform: (H, W, 3) -> (H, W) channel sum


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
        s = subsample_for(radius_px)
        self.low_hw = (max(1, round(self.height / s)), max(1, round(self.width / s)))
        self.r = max(1, round(radius_px / s))
        # (h, w, 3) in the guide's dtype; kept: the temporal filter reuses it when its grid is
        # the same size (temporal.small_luma)
        self.low_image = cv2.resize(guide_rgb, self.low_hw[::-1], interpolation=cv2.INTER_AREA)
        low = np.multiply(self.low_image, self.scale, dtype=np.float32)  # (h, w, 3) in [0, 1]
        # Planar (one contiguous (h, w) array per channel): numpy is several times faster on
        # contiguous planes than on strided channel views.
        self.low = cv2.split(low)  # 3 x (h, w)
        r = self.r
        self.mean_i = [_box(c, r) for c in self.low]
        (ir, ig, ib), (mr, mg, mb) = self.low, self.mean_i
        # Covariance of the guide in each window (+ eps on the diagonal), then its inverse by
        # the adjugate: a closed form over whole arrays instead of 3x3 solves per pixel.
        rr = _box(ir * ir, r) - mr * mr + eps
        rg = _box(ir * ig, r) - mr * mg
        rb = _box(ir * ib, r) - mr * mb
        gg = _box(ig * ig, r) - mg * mg + eps
        gb = _box(ig * ib, r) - mg * mb
        bb = _box(ib * ib, r) - mb * mb + eps
        inv = [
            gg * bb - gb * gb,
            gb * rb - rg * bb,
            rg * gb - gg * rb,
            rr * bb - rb * rb,
            rg * rb - rr * gb,
            rr * gg - rg * rg,
        ]
        inv_det = 1.0 / (rr * inv[0] + rg * inv[1] + rb * inv[2])
        self.inv_cov = [x * inv_det for x in inv]  # 6 x (h, w): xx, xy, xz, yy, yz, zz

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held (what a frame queued with it costs: at 854x480 with
        balanced refinement the grid is the frame's own size, 12 float planes: ~21 MiB)."""
        arrays = [self.guide, self.low_image, *self.low, *self.mean_i, *self.inv_cov]
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
        p = self.to_low(alpha_low)  # (h, w)
        r = self.r
        mean_p = _box(p, r)
        cr, cg, cb = (_box(c * p, r) - m * mean_p for c, m in zip(self.low, self.mean_i))
        xx, xy, xz, yy, yz, zz = self.inv_cov
        a_r = xx * cr + xy * cg + xz * cb
        a_g = xy * cr + yy * cg + yz * cb
        a_b = xz * cr + yz * cg + zz * cb
        mr, mg, mb = self.mean_i
        # The filter's offset is mean_p - a·mean_I; leaving out mean_p removes its plain
        # (image-blind) smoothing and keeps the edge part.
        b = -(a_r * mr + a_g * mg + a_b * mb)
        return cv2.merge([_box(x, r) for x in (a_r, a_g, a_b, b)])  # (h, w, 4)

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

    def _detail_at(self, coef: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(N,) float32 detail at the flat pixel indices ``idx``: the coefficients are sampled
        bilinearly with half-pixel centres (exactly what ``cv2.resize`` would give there)."""
        ys, xs = np.divmod(idx, self.width)
        sy, sx = self.low_hw[0] / self.height, self.low_hw[1] / self.width
        n = len(idx)
        cols = 4096  # cv2.remap wants maps below 32767 on each side
        rows = -(-n // cols)
        mx = np.zeros(rows * cols, np.float32)
        my = np.zeros(rows * cols, np.float32)
        mx[:n] = (xs + 0.5) * sx - 0.5
        my[:n] = (ys + 0.5) * sy - 0.5
        c = cv2.remap(
            coef,
            mx.reshape(rows, cols),
            my.reshape(rows, cols),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).reshape(-1, 4)[:n]  # (N, 4)
        # np.take, not fancy indexing: 5x faster for these 3-byte rows (0.19 vs 1.0 ms for
        # the 38k pixels of a 1080p band)
        rgb = np.take(self.guide.reshape(-1, 3), idx, axis=0).astype(np.float32) * self.scale
        return np.einsum("nc,nc->n", c[:, :3], rgb) + c[:, 3]

    def refine(
        self,
        alpha: np.ndarray,
        alpha_low: np.ndarray | None = None,
        strength: float = 1.0,
        *,
        overwrite: bool = False,
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
        (8 MB a 1080p frame); the result may then be ``alpha`` itself. Returns (H, W) float32
        in [0, 1].
        """
        if alpha.shape != (self.height, self.width):
            raise VosfxError(
                f"alpha: expected {(self.height, self.width)} like the guide, found {alpha.shape}"
            )
        alpha = alpha.astype(np.float32, copy=False)
        scale = 4.0 * float(strength)
        # |detail| stays below ~1, so where the weight is under 0.01 (alpha outside
        # [0.0025, 0.9975]) the correction would be under 0.01: skip those pixels.
        threshold = _MIN_WEIGHT * max(1.0, float(strength))
        # The band w > threshold is an interval of alpha: found in one pass over the frame
        # (cv2.inRange, widened by 1e-6 so it holds every band pixel; the exact rule is applied
        # to the gathered pixels), instead of a weight plane, a comparison and a mask.
        q = threshold / scale if scale > 0 else 1.0  # the band: alpha·(1 - alpha) > q
        if q >= 0.25:
            return alpha if overwrite else alpha.copy()
        root = 0.5 * (1.0 - 4.0 * q) ** 0.5
        near = cv2.inRange(alpha, 0.5 - root - 1e-6, 0.5 + root + 1e-6)  # (H, W) uint8
        n_band = cv2.countNonZero(near)
        if n_band == 0:
            return alpha if overwrite else alpha.copy()
        coef = self.coefficients(alpha if alpha_low is None else alpha_low)
        if n_band > _DENSE_FRACTION * alpha.size:
            w = cv2.multiply(alpha, 1.0 - alpha, scale=scale)
            # the band rule of the gathered path, in place: w where w > threshold, else 0
            cv2.threshold(w, threshold, 0.0, cv2.THRESH_TOZERO, dst=w)
            return self._refine_dense(alpha, w, coef)
        out = alpha if overwrite else alpha.copy()
        flat = out.reshape(-1)
        # as bool (0/255 bytes: nonzero reads only zero / not zero): numpy's bool path is 6x
        # faster than its uint8 one (0.9 vs 5.5 ms on a 1080p mask)
        idx = np.flatnonzero(near.view(np.bool_))
        a = flat[idx]
        w_band = cv2.multiply(a, 1.0 - a, scale=scale).reshape(-1)  # (N,), as the dense path
        keep = w_band > threshold
        idx, a, w_band = idx[keep], a[keep], w_band[keep]
        flat[idx] = np.clip(a + w_band * self._detail_at(coef, idx), 0.0, 1.0)
        return out

    def _refine_dense(self, alpha: np.ndarray, w: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """:meth:`refine` evaluated over the whole frame, for a wide band (soft logits), in a
        few whole-frame OpenCV passes: the three ``a`` planes upsampled as one (H, W, 3)
        image, multiplied by the guide's own uint8/uint16 pixels (converted block by block,
        no float copy of the guide), summed over the channels by one ``cv2.transform``, plus
        the upsampled ``b``. About half the CPU of plane-by-plane accumulation (11 vs 21 ms a
        1080p frame, one core); the same values as the band path up to float rounding
        (tests/test_guided.py)."""
        size = (self.width, self.height)
        # a·(I·scale) = (a·scale)·I: the scale goes on the small grid
        a_low = np.multiply(coef[..., :3], self.scale)  # (h, w, 3) float32, contiguous
        a_i = cv2.resize(a_low, size, interpolation=cv2.INTER_LINEAR)  # (H, W, 3)
        cv2.multiply(a_i, self.guide, dst=a_i, dtype=cv2.CV_32F)
        detail = cv2.transform(a_i, _CHANNEL_SUM)  # (H, W): a_r·R + a_g·G + a_b·B
        del a_i
        b_up = cv2.resize(np.ascontiguousarray(coef[..., 3]), size, interpolation=cv2.INTER_LINEAR)
        cv2.add(detail, b_up, dst=detail)
        out = cv2.add(alpha, cv2.multiply(w, detail, dst=detail), dst=detail)
        return np.clip(out, 0.0, 1.0, out=out)


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

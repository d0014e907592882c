"""Reduce chatter: smooth alpha over time where the image does not move.

SAM 2 re-predicts each frame from 256² logits, so an edge that stands still in the picture
still shifts by a pixel or two from frame to frame. A recursive blend with the previous output,
``out_t = lerp(alpha_t, out_{t-1}, strength · static)``, removes that, and ``static`` (1 where
the picture did not change, 0 where it did) keeps it from dragging a ghost behind motion: where
an edge moves, the pixels it crosses change, ``static`` is 0 there and the new alpha is taken as
is. Motion is judged on a small luma copy (area-averaged by about 8x, which also averages
sensor noise away), so it costs about a millisecond a frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from vosfx.errors import VosfxError
from vosfx.matte import kernels

# Luma change (8-bit levels, after 8x area averaging) below which a pixel counts as static and
# above which as moving; in between the weight ramps linearly. An edge of contrast 100 moving
# one pixel changes its 8x8 block by ~12 levels, sensor noise of sigma 3 by ~0.4.
MOTION_LO = 2.0
MOTION_HI = 8.0
_SMALL_LONG_SIDE = 240
# Moving pixels spread by this many small-grid cells (8 source px each) to cover an edge's
# soft fringe and the block quantisation of the small grid.
_MOTION_SPREAD = 1


def small_hw(height: int, width: int) -> tuple[int, int]:
    """(h, w) of :func:`small_luma`'s grid for an (height, width) frame."""
    f = max(1, round(max(height, width) / _SMALL_LONG_SIDE))
    return max(1, round(height / f)), max(1, round(width / f))


def small_luma(rgb: np.ndarray, small: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 | uint16 RGB -> (h, w) float32 luma in 8-bit levels [0, 255], area
    downscaled so that the long side is about 240 px (no upscaling). ``small``: ``rgb``
    already area-downscaled by the caller (the guided filter's grid), to (h, w)
    (:func:`small_hw`: 1080p with 64² logits), which is then used as is, or to a whole
    multiple of it (1080p with SAM 2's 256² logits: twice), which is then area-downscaled
    the rest of the way (a 130k-pixel resize instead of a 2-megapixel one; the block means of
    block means, but of the rounded ones: within a level of the direct resize)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise VosfxError(f"frame: expected (H, W, 3) RGB, found shape {rgb.shape}")
    h, w = small_hw(*rgb.shape[:2])
    grid = None
    if small is not None and small.dtype == rgb.dtype and small.ndim == 3:
        k = small.shape[0] // h  # whole blocks of whole blocks only
        if small.shape[:2] == (h, w):
            grid = small
        elif (
            k > 1
            and small.shape[:2] == (k * h, k * w)
            and rgb.shape[0] % (k * h) == 0
            and rgb.shape[1] % (k * w) == 0
        ):
            grid = cv2.resize(small, (w, h), interpolation=cv2.INTER_AREA)
    if grid is None:
        grid = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    luma = cv2.cvtColor(grid, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if rgb.dtype == np.uint16:
        luma *= np.float32(255 / 65535)
    return luma


def static_weight(
    luma: np.ndarray, prev_luma: np.ndarray | None, out_hw: tuple[int, int], scale: float = 1.0
) -> np.ndarray:
    """(H, W) float32 in [0, ``scale``]: ``scale`` where the picture is still, 0 where it moved
    (:func:`still_grid` upsampled to ``out_hw``).

    ``luma``, ``prev_luma``: (h, w) float32 from :func:`small_luma` for this and the previous
    frame (None: no previous frame, everything counts as moving). ``out_hw``: (H, W).
    """
    small = still_grid(luma, prev_luma, scale)
    return cv2.resize(small, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)


def still_grid(luma: np.ndarray, prev_luma: np.ndarray | None, scale: float = 1.0) -> np.ndarray:
    """(h, w) float32 in [0, ``scale``] on the small luma grid: ``scale`` where the picture is
    still, 0 where it moved (moving cells spread by one cell). ``luma``, ``prev_luma``: as in
    :func:`static_weight`. The filter upsamples it inside its blend (:func:`kernels.blend_toward`),
    so no full-resolution weight plane is made."""
    if prev_luma is None or prev_luma.shape != luma.shape:
        return np.zeros(luma.shape, np.float32)
    diff = cv2.absdiff(luma, prev_luma)
    moving = np.clip((diff - MOTION_LO) * np.float32(1.0 / (MOTION_HI - MOTION_LO)), 0.0, 1.0)
    k = np.ones((2 * _MOTION_SPREAD + 1,) * 2, np.uint8)
    moving = cv2.dilate(moving, k)
    return np.ascontiguousarray((1.0 - moving) * np.float32(scale), dtype=np.float32)


def temporal_blend(
    alpha: np.ndarray, prev_out: np.ndarray | None, still: np.ndarray, strength: float
) -> np.ndarray:
    """One step of the recursive filter: ``alpha + strength · still · (prev_out - alpha)``.

    ``alpha``: (H, W) float32 in [0, 1], this frame's alpha. ``prev_out``: the previous output
    of this function for the same object (None: first frame, returns ``alpha``). ``still``:
    (H, W) float32 in [0, 1] from :func:`static_weight`. ``strength`` in [0, 1): 0 is off;
    a still pixel converges to a constant input as ``strength ** n``.
    Returns (H, W) float32 in [0, 1].
    """
    if not 0.0 <= strength < 1.0:
        raise VosfxError(f"temporal strength: expected a value in [0, 1), found {strength}")
    if prev_out is None or strength == 0.0 or prev_out.shape != alpha.shape:
        return alpha.astype(np.float32, copy=True)
    alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    weight = np.ascontiguousarray(still * np.float32(strength), dtype=np.float32)
    return kernels.blend_toward(alpha, prev_out, weight, np.empty_like(alpha))


class TemporalSmoother:
    """The state of :func:`temporal_blend` across frames: the previous small luma and the
    previous output per object id. ``strength`` as in :func:`temporal_blend` (1.0 is capped
    at 0.95 so that a still matte can still follow a slow change). ``threads``: the blend in
    that many bands of rows (:mod:`vosfx.matte.kernels`; the same result)."""

    def __init__(self, strength: float, threads: int = 1) -> None:
        self.strength = min(float(strength), 0.95)
        self.threads = max(1, int(threads))
        self._luma: np.ndarray | None = None
        self._prev: dict[int, np.ndarray] = {}

    def reset(self) -> None:
        """Forget everything (a shot cut)."""
        self._luma = None
        self._prev.clear()

    def forget(self, obj_id: int) -> None:
        """Forget one object (it left the frame; when it comes back it starts fresh)."""
        self._prev.pop(obj_id, None)

    def still(self, rgb: np.ndarray, small: np.ndarray | None = None) -> np.ndarray | None:
        """Advance to a new frame: the blend weight for ``rgb`` ((H, W, 3) uint8 | uint16)
        against the previous frame (stillness × strength, in [0, strength]) on the small luma
        grid ((h, w) float32, :func:`still_grid`; :meth:`__call__` upsamples it), or None when
        smoothing is off. ``small``: as in :func:`small_luma`."""
        if self.strength <= 0.0:
            return None
        luma = small_luma(rgb, small)
        out = still_grid(luma, self._luma, self.strength)
        self._luma = luma
        return out

    def __call__(
        self,
        obj_id: int,
        alpha: np.ndarray,
        still: np.ndarray | None,
        *,
        overwrite: bool = False,
    ) -> np.ndarray:
        """Smooth one object's (H, W) float32 alpha with the weight from :meth:`still` (its
        small grid, or a full-resolution (H, W) weight); remembers the result for the next
        frame. The result may be ``alpha`` itself (first frame of an object): callers treat
        both as read-only. ``overwrite``: ``alpha`` is the caller's to give up (a float32
        plane nothing else holds), so the blend is written into it instead of a new plane
        (8 MB a 1080p frame, whose first touch costs ~1.5 ms of page faults)."""
        if still is None:
            return alpha
        prev = self._prev.get(obj_id)
        alpha = np.ascontiguousarray(alpha, dtype=np.float32)
        if prev is None or prev.shape != alpha.shape:
            out = alpha
        else:  # never into ``prev``: the result is handed on to the writers, so never reused
            into = alpha if overwrite else np.empty_like(alpha)
            out = kernels.blend_toward(alpha, prev, still, into, self.threads)
        self._prev[obj_id] = out
        return out

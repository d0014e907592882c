"""Video object segmentation metrics: DAVIS J and F, and the MOSEv2 variants.

All functions take binary masks as (H, W) arrays (any dtype; nonzero is foreground) for one
object on one frame, or per-frame score arrays for one object over a clip. They reproduce the
reference toolkits' numbers exactly (docs/eval.md cites the definitions):

- DAVIS 2017 (davisvideochallenge/davis2017-evaluation, ``davis2017/metrics.py`` and
  ``utils.db_statistics``): J = IoU with J = 1 when the union is empty; F = boundary F-measure
  on ``_seg2bmap`` boundaries matched by dilation with a disk of radius
  ``ceil(0.008 * image diagonal)``; per-object mean, recall (fraction of frames > 0.5) and decay
  (mean of the first quarter minus mean of the last quarter, 4 overlapping bins).
- MOSEv2 (henghuiding/MOSE-api, ``MOSEv2/sam2_rcms/tools/metricsv2.py`` and ``score.py``):
  J = (I + 1) / (U + 1); the adaptive boundary F-dot uses the radius
  ``min(0.008 * D, ceil(0.1 * sqrt(A)))`` with A the ground-truth area; disappearance and
  reappearance scores average J and F-dot over the frames after each transition.

Speed: one 480p pair takes well under 10 ms for J and F because the work is done on the
bounding box of the two masks (exact: boundaries and their dilations cannot reach outside it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DAVIS_BOUND_TH = 0.008  # boundary tolerance as a fraction of the image diagonal
MOSEV2_ALPHA = 0.1  # adaptive tolerance: fraction of sqrt(object area)


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        from vosfx.errors import InputError

        raise InputError(f"expected a (H, W) mask, found an array of shape {mask.shape}")
    return mask if mask.dtype == bool else mask != 0


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_bool(pred), _as_bool(gt)
    if pred.shape != gt.shape:
        from vosfx.errors import InputError

        raise InputError(
            f"prediction and ground truth must have the same size; found prediction "
            f"{pred.shape[1]}x{pred.shape[0]} and ground truth {gt.shape[1]}x{gt.shape[0]}"
        )
    return pred, gt


# ---------------------------------------------------------------------------------------------
# J: region similarity


def j_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """DAVIS region similarity: |pred ∩ gt| / |pred ∪ gt|, and 1.0 when both are empty.

    ``pred``, ``gt``: (H, W) masks (nonzero = object). Returns a float in [0, 1].
    """
    pred, gt = _check_pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred & gt)) / int(union)


def j_score_mosev2(pred: np.ndarray, gt: np.ndarray) -> float:
    """MOSEv2 region similarity: (|pred ∩ gt| + 1) / (|pred ∪ gt| + 1), 1.0 when both are empty.

    The +1 smoothing means an object that is absent in the ground truth but predicted on n
    pixels scores 1 / (n + 1), not 0. ``pred``, ``gt``: (H, W) masks. Returns a float in (0, 1].
    """
    pred, gt = _check_pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    return (int(np.count_nonzero(pred & gt)) + 1) / (int(union) + 1)


# ---------------------------------------------------------------------------------------------
# F: boundary F-measure


@lru_cache(maxsize=64)
def disk_kernel(radius: float) -> np.ndarray:
    """The structuring element ``skimage.morphology.disk(radius)`` builds, as (2k+1, 2k+1) uint8.

    The grid is ``arange(-radius, radius + 1)`` on both axes and a cell is set when
    x² + y² <= radius². For an integer radius that is the usual symmetric disk; MOSEv2 also
    calls it with a fractional radius (0.008 × diagonal, not rounded), where the grid is offset
    and the disk slightly lopsided; we reproduce that too, for identical numbers.
    """
    grid = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    kernel = (xx**2 + yy**2 <= radius**2).astype(np.uint8)
    kernel.setflags(write=False)
    return kernel


def _boundary(seg: np.ndarray) -> np.ndarray:
    """DAVIS ``_seg2bmap`` at full size: a pixel is on the boundary when it differs from its
    east, south or south-east neighbour. On the last row only the east neighbour counts, on
    the last column only the south one, and the bottom-right pixel never is; that is exactly
    comparing against an edge-replicated copy, which is how it is computed here.

    ``seg``: (H, W) bool. Returns (H, W) bool.
    """
    padded = np.pad(seg, ((0, 1), (0, 1)), mode="edge")
    east, south, south_east = padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]
    return (seg != east) | (seg != south) | (seg != south_east)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """(H, W) bool boundary map of a (H, W) mask, as the DAVIS toolkit's ``_seg2bmap`` (the
    boundary sits on the object's side towards the top-left, half a pixel off the edge)."""
    return _boundary(_as_bool(seg))


def _bbox_window(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, slice] | None:
    """Rows/cols covering every boundary pixel of both masks and the neighbours each needs,
    or None when both masks are empty.

    A boundary pixel p has p or its E/S/SE neighbour in the mask, so boundaries lie in
    [min - 1, max] of the union's bounding box; one more row/col below and right holds the
    neighbours (zeros, or the image edge, where edge replication gives the same answer).
    """
    union = pred | gt
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(union.any(axis=0))
    h, w = union.shape
    return (
        slice(max(rows[0] - 1, 0), min(rows[-1] + 2, h)),
        slice(max(cols[0] - 1, 0), min(cols[-1] + 2, w)),
    )


def _f_from_boundaries(fg_b: np.ndarray, gt_b: np.ndarray, radius: float) -> float:
    """Precision/recall of boundary pixels matched within the disk, and F; the empty-boundary
    conventions are DAVIS's: both empty → 1, exactly one empty → 0."""
    import cv2

    n_fg = int(np.count_nonzero(fg_b))
    n_gt = int(np.count_nonzero(gt_b))
    if n_fg == 0 or n_gt == 0:
        # (P, R) = (1, 1) if both are empty, (1, 0) or (0, 1) otherwise: F = 1 or 0.
        return 1.0 if n_fg == n_gt else 0.0
    kernel = disk_kernel(float(radius))
    # cv2.dilate pads with the minimum, so cropping the window loses no match.
    fg_dil = cv2.dilate(fg_b.view(np.uint8), kernel).view(bool)
    gt_dil = cv2.dilate(gt_b.view(np.uint8), kernel).view(bool)
    precision = int(np.count_nonzero(fg_b & gt_dil)) / n_fg
    recall = int(np.count_nonzero(gt_b & fg_dil)) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def boundary_f(pred: np.ndarray, gt: np.ndarray, radius_px: float) -> float:
    """Boundary F-measure with a given dilation radius in pixels (``disk_kernel(radius_px)``).

    ``pred``, ``gt``: (H, W) masks. Returns a float in [0, 1].
    """
    pred, gt = _check_pair(pred, gt)
    window = _bbox_window(pred, gt)
    if window is None:
        return 1.0  # no boundary in either: DAVIS's P = R = 1
    fg_b = _boundary(np.ascontiguousarray(pred[window]))
    gt_b = _boundary(np.ascontiguousarray(gt[window]))
    return _f_from_boundaries(fg_b, gt_b, radius_px)


def davis_radius(height: int, width: int, bound_th: float = DAVIS_BOUND_TH) -> float:
    """Dilation radius in pixels: ``bound_th`` itself when >= 1, else ceil(bound_th × diagonal)
    (8 px at 854×480, where 0.008 × 979.6 = 7.84)."""
    if bound_th >= 1:
        return float(bound_th)
    return float(math.ceil(bound_th * math.hypot(height, width)))


def f_score(pred: np.ndarray, gt: np.ndarray, bound_th: float = DAVIS_BOUND_TH) -> float:
    """DAVIS boundary F-measure: boundaries matched within ``davis_radius`` of each other.

    ``pred``, ``gt``: (H, W) masks. ``bound_th``: tolerance as a fraction of the diagonal
    (< 1) or in pixels (>= 1). Returns a float in [0, 1]; 1.0 when both masks are empty.
    """
    pred, gt = _check_pair(pred, gt)
    height, width = gt.shape
    return boundary_f(pred, gt, davis_radius(height, width, bound_th))


def f_adaptive(
    pred: np.ndarray, gt: np.ndarray, alpha: float = MOSEV2_ALPHA
) -> tuple[float, float]:
    """MOSEv2 boundary scores ``(F, F_dot)`` for one frame, as ``metricsv2.f_measure_adaptive``
    with ``mode="area"`` computes them.

    Let D be the image diagonal and A the ground-truth area. The adaptive radius is
    w = min(0.008·D, ceil(alpha·√A)) (0.008·D when the ground truth is empty). When
    w < 0.008·D, F uses radius ceil(0.008·D) (as DAVIS) and F_dot uses w; otherwise both use
    the unrounded radius 0.008·D (the reference does not round there, so for large objects its
    F differs from DAVIS's F by a fraction of a pixel of tolerance).

    ``pred``, ``gt``: (H, W) masks. Returns two floats in [0, 1].
    """
    pred, gt = _check_pair(pred, gt)
    full = DAVIS_BOUND_TH * math.hypot(*gt.shape)
    area = int(np.count_nonzero(gt))
    adaptive: float = math.ceil(alpha * math.sqrt(area)) if area else math.ceil(full)
    adaptive = min(full, adaptive)
    window = _bbox_window(pred, gt)
    if window is None:
        return 1.0, 1.0
    fg_b = _boundary(np.ascontiguousarray(pred[window]))
    gt_b = _boundary(np.ascontiguousarray(gt[window]))
    if adaptive < full:
        return (
            _f_from_boundaries(fg_b, gt_b, float(math.ceil(full))),
            _f_from_boundaries(fg_b, gt_b, float(adaptive)),
        )
    f = _f_from_boundaries(fg_b, gt_b, full)
    return f, f


# ---------------------------------------------------------------------------------------------
# Per-object statistics over a clip


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """DAVIS ``db_statistics``: (mean, recall, decay) of one object's per-frame scores.

    ``values``: (T,) float scores in [0, 1] (NaN ignored). Recall is the fraction of frames
    scoring > 0.5. Decay splits the frames into 4 bins at round(linspace(1, T, 5)) - 1, each
    bin including its right edge (so neighbouring bins share a frame), and is mean(first bin)
    - mean(last bin): positive when the score drops over time. Returns NaNs for T = 0.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    valid = ~np.isnan(values)
    mean = float(values[valid].mean()) if valid.any() else math.nan
    recall = float((values[valid] > 0.5).mean()) if valid.any() else math.nan
    # The reference casts edges to uint8 (wraps past 256 frames); int is what it means.
    edges = (np.round(np.linspace(1, values.size, 5) + 1e-10) - 1).astype(int)
    first = values[edges[0] : edges[1] + 1]
    last = values[edges[3] : edges[4] + 1]
    with np.errstate(invalid="ignore"):
        decay = (
            float(np.nanmean(first) - np.nanmean(last))
            if ((~np.isnan(first)).any() and (~np.isnan(last)).any())
            else math.nan
        )
    return mean, recall, decay


@dataclass(frozen=True)
class TransitionScores:
    """MOSEv2 disappearance/reappearance means for one object; None where it has none."""

    disappear_j: float | None
    disappear_f: float | None
    reappear_j: float | None
    reappear_f: float | None


def transitions(empty_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame positions where an object disappears and where it reappears (MOSEv2 ``score.py``).

    ``empty_gt``: (T,) bool, ground truth empty on each evaluated frame. A disappearance starts
    at t when the object is present at t-1 and absent at t (and at 0 when absent at 0); a
    reappearance at t when absent at t-1 and present at t. Returns two int arrays, ascending.
    """
    empty = np.asarray(empty_gt, dtype=bool)
    disappear = np.flatnonzero(~empty[:-1] & empty[1:]) + 1
    if empty.size and empty[0]:
        disappear = np.concatenate([[0], disappear])
    reappear = np.flatnonzero(empty[:-1] & ~empty[1:]) + 1
    return disappear.astype(int), reappear.astype(int)


def transition_scores(j: np.ndarray, f: np.ndarray, empty_gt: np.ndarray) -> TransitionScores:
    """MOSEv2 J&F_d and J&F_r inputs for one object.

    ``j``, ``f``: (T,) per-frame J and F_dot; ``empty_gt``: (T,) bool. A disappearance segment
    runs from a disappearance to the next reappearance (or the end); segments that start at
    frame 0 are skipped (nothing disappeared). A reappearance segment runs from a reappearance
    to the next disappearance (or the end). Each segment is averaged over its frames, then the
    segments are averaged with equal weight.
    """
    j, f = np.asarray(j, np.float64), np.asarray(f, np.float64)
    disappear, reappear = transitions(empty_gt)
    n = len(j)
    dis = [
        (j[s:e].mean(), f[s:e].mean())
        for i, s in enumerate(disappear)
        for e in [reappear[i] if i < len(reappear) else n]
        if s > 0
    ]
    # reappear[i] is followed by disappear[i + 1]: disappear[0] always precedes reappear[0]
    # (it is 0 when the clip starts without the object).
    rea = [
        (j[s:e].mean(), f[s:e].mean())
        for i, s in enumerate(reappear)
        for e in [disappear[i + 1] if i + 1 < len(disappear) else n]
    ]

    def _mean(pairs: list, k: int) -> float | None:
        return float(np.mean([p[k] for p in pairs])) if pairs else None

    return TransitionScores(_mean(dis, 0), _mean(dis, 1), _mean(rea, 0), _mean(rea, 1))

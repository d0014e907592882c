"""vosfx.eval.metrics: hand-computed cases, a literal full-frame re-statement of the toolkits'
algorithms to hold the cropped fast path to, and real DAVIS ground truth under perturbations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from conftest import shared_data

from vosfx.errors import InputError
from vosfx.eval import metrics as m

H, W = 480, 854  # DAVIS 480p: diagonal 979.6, DAVIS radius ceil(7.84) = 8


def _stripe(cols: int, h: int = 64, w: int = 96) -> np.ndarray:
    """Left ``cols`` columns set: its boundary is one vertical line at column cols - 1."""
    mask = np.zeros((h, w), bool)
    mask[:, :cols] = True
    return mask


def _square(top: int, left: int, size: int, h: int = H, w: int = W) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[top : top + size, left : left + size] = True
    return mask


# --- a literal, full-frame, loop-level statement of the reference definitions -----------------


def _ref_bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS _seg2bmap as its text reads: compare with E, S, SE (zero outside), then overwrite
    the last row with seg ^ E, the last column with seg ^ S, and clear the corner."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _ref_dilate(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.dilate semantics by shifting: out[y, x] = OR over set kernel cells (i, j) of
    img[y + i - a, x + j - a], a the kernel centre, nothing outside the image."""
    a = kernel.shape[0] // 2
    h, w = img.shape
    out = np.zeros_like(img)
    padded = np.zeros((h + 2 * a, w + 2 * a), bool)
    padded[a : a + h, a : a + w] = img
    for i, j in zip(*np.nonzero(kernel)):
        out |= padded[i : i + h, j : j + w]
    return out


def _ref_f(pred: np.ndarray, gt: np.ndarray, radius: float) -> float:
    fb, gb = _ref_bmap(pred), _ref_bmap(gt)
    n_fg, n_gt = fb.sum(), gb.sum()
    if n_fg == 0 or n_gt == 0:
        return 1.0 if n_fg == n_gt else 0.0
    grid = np.arange(-radius, radius + 1)
    kernel = np.add.outer(grid**2, grid**2) <= radius**2
    p = (fb & _ref_dilate(gb, kernel)).sum() / n_fg
    r = (gb & _ref_dilate(fb, kernel)).sum() / n_gt
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


# --- J ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        (_stripe(40), _stripe(40), 1.0),  # identical
        (_stripe(30), _stripe(40), 30 / 40),  # nested: 30 of 40 columns
        (~_stripe(40), _stripe(40), 0.0),  # disjoint
        (np.zeros((64, 96), bool), np.zeros((64, 96), bool), 1.0),  # DAVIS: both empty → 1
        (np.zeros((64, 96), bool), _stripe(40), 0.0),  # missed object
        (_stripe(40), np.zeros((64, 96), bool), 0.0),  # false positive on an absent object
    ],
)
def test_j_score_hand_cases(pred, gt, expected):
    assert m.j_score(pred, gt) == pytest.approx(expected)


def test_j_mosev2_smooths_with_plus_one():
    empty = np.zeros((64, 96), bool)
    assert m.j_score_mosev2(empty, empty) == 1.0
    # absent object predicted on 64 × 3 pixels: (0 + 1) / (192 + 1), not 0
    assert m.j_score_mosev2(_stripe(3), empty) == pytest.approx(1 / 193)
    assert m.j_score_mosev2(_stripe(30), _stripe(40)) == pytest.approx(
        (30 * 64 + 1) / (40 * 64 + 1)
    )


def test_mismatched_shapes_and_ranks_are_input_errors():
    with pytest.raises(InputError, match="same size"):
        m.j_score(np.zeros((4, 5), bool), np.zeros((5, 4), bool))
    with pytest.raises(InputError, match=r"\(H, W\) mask"):
        m.f_score(np.zeros((2, 4, 5), bool), np.zeros((2, 4, 5), bool))


# --- F ------------------------------------------------------------------------------------------


def test_disk_kernel_matches_skimage_definition():
    # skimage.morphology.disk(1) is the 3×3 cross; disk(2) is 5×5 without its 4 corners' trios.
    assert m.disk_kernel(1.0).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert m.disk_kernel(2.0).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]
    k8 = m.disk_kernel(8.0)
    assert k8.shape == (17, 17) and (k8 == k8.T).all() and (k8 == k8[::-1]).all()
    # a fractional radius keeps skimage's offset grid: 17 cells from -7.84 to 8.16, lopsided
    kf = m.disk_kernel(0.008 * math.hypot(H, W))
    assert kf.shape == (17, 17) and not (kf == kf[::-1, ::-1]).all()


def test_seg2bmap_of_a_square_is_its_outline_shifted_up_left():
    b = m.seg2bmap(_square(10, 20, 5, 64, 64))
    ys, xs = np.nonzero(b)
    # outline of the 6×6 box from (9, 19) to (14, 24): 4 × 5 pixels
    assert b.sum() == 20
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (9, 14, 19, 24)


@pytest.mark.parametrize(
    ("shift", "radius", "expected"),
    [(0, 1, 1.0), (1, 1, 1.0), (2, 1, 0.0), (3, 3, 1.0), (4, 3, 0.0)],
)
def test_f_of_a_shifted_edge_flips_at_the_tolerance(shift, radius, expected):
    # One straight boundary moved by `shift` px: every pixel matches iff shift <= radius.
    assert m.f_score(_stripe(40 + shift), _stripe(40), bound_th=radius) == expected


def test_f_default_tolerance_is_eight_px_at_480p():
    gt = np.zeros((H, W), bool)
    gt[:, 100:400] = True  # two vertical edges, away from the image border

    def shifted(k):
        return np.roll(gt, k, axis=1)

    assert m.davis_radius(H, W) == 8.0
    assert m.f_score(shifted(8), gt) == 1.0
    assert m.f_score(shifted(9), gt) == 0.0


def test_f_empty_conventions():
    empty = np.zeros((64, 96), bool)
    assert m.f_score(empty, empty) == 1.0
    assert m.f_score(empty, _stripe(40)) == 0.0
    assert m.f_score(_stripe(40), empty) == 0.0
    assert m.f_score(~_stripe(40), _stripe(40)) == 1.0  # complement shares the boundary line
    far = _square(0, 0, 4, 64, 96)
    assert m.f_score(far, _square(50, 80, 4, 64, 96)) == 0.0  # disjoint and far apart


def test_adaptive_f_on_a_small_object_hand_computed():
    # 10×10 square: A = 100, w = min(7.84, ceil(0.1 × 10)) = 1 (a cross). Its outline is the
    # 11×11 ring (99, 99)-(109, 109), 40 px. Shifted down 2 px, the matches within 1 px are:
    # the side columns at rows 102-110 (2 × 9) and the top row's 4 pixels next to or on the
    # other ring's side columns (cols 99, 100, 108, 109): 22 of 40 both ways, P = R = 0.55.
    gt = _square(100, 100, 10)
    pred = np.roll(gt, 2, axis=0)
    f, f_dot = m.f_adaptive(pred, gt)
    assert f == 1.0  # DAVIS tolerance 8 px covers a 2 px shift
    assert f_dot == pytest.approx(22 / 40)
    assert m.f_score(pred, gt) == f


def test_adaptive_f_on_a_large_object_uses_unrounded_radius_for_both():
    gt = _square(100, 100, 200)  # 0.1 × 200 = 20 px > 7.84: both F use radius 7.84
    pred = np.roll(gt, 8, axis=1)
    f, f_dot = m.f_adaptive(pred, gt)
    assert f == f_dot == pytest.approx(_ref_f(pred, gt, 0.008 * math.hypot(H, W)))
    assert f < 1.0 == m.f_score(pred, gt)  # 7.84 px of tolerance misses a shift DAVIS's 8 takes


def test_cropped_fast_path_equals_full_frame_reference():
    rng = np.random.default_rng(0)
    for _ in range(6):
        gt = np.zeros((120, 160), bool)
        pred = np.zeros((120, 160), bool)
        for mask in (gt, pred):
            for _ in range(3):
                y, x = rng.integers(0, 110, size=2)
                mask[y : y + rng.integers(3, 40), x : x + rng.integers(3, 60)] = True
        for radius in (1.0, 2.0, 3.0, 2.5, 7.84):
            assert m.boundary_f(pred, gt, radius) == pytest.approx(_ref_f(pred, gt, radius))
    # masks touching the image's right and bottom edges (the special rows of _seg2bmap)
    gt = np.zeros((50, 70), bool)
    gt[20:, 30:] = True
    pred = np.roll(gt, -2, axis=1)
    assert m.boundary_f(pred, gt, 1.0) == pytest.approx(_ref_f(pred, gt, 1.0))
    assert (m.seg2bmap(gt) == _ref_bmap(gt)).all()


# --- per-object statistics ----------------------------------------------------------------------


def test_statistics_mean_recall_decay_hand_computed():
    values = 1.0 - 0.1 * np.arange(10)  # 1.0, 0.9, ..., 0.1
    mean, recall, decay = m.statistics(values)
    assert mean == pytest.approx(0.55)
    assert recall == pytest.approx(0.5)  # 1.0 .. 0.6 are > 0.5; 0.5 is not
    # bins at round(linspace(1, 10, 5)) - 1 = [0, 2, 5, 7, 9]: first v[0:3], last v[7:10]
    assert decay == pytest.approx(0.9 - 0.2)
    assert m.statistics(np.ones(7)) == (1.0, 1.0, 0.0)
    assert all(math.isnan(v) for v in m.statistics(np.array([])))


def test_transitions_and_disappearance_reappearance_scores():
    empty = np.array([0, 0, 1, 1, 0, 0, 1, 0], bool)
    dis, rea = m.transitions(empty)
    assert dis.tolist() == [2, 6] and rea.tolist() == [4, 7]
    j = np.array([0.9, 0.8, 1.0, 0.0, 0.5, 0.7, 1.0, 0.3])
    f = j / 2
    s = m.transition_scores(j, f, empty)
    # disappearances: frames 2-3 (mean 0.5) and 6 (1.0); reappearances: 4-5 (0.6) and 7 (0.3)
    assert s.disappear_j == pytest.approx((0.5 + 1.0) / 2)
    assert s.disappear_f == pytest.approx((0.25 + 0.5) / 2)
    assert s.reappear_j == pytest.approx((0.6 + 0.3) / 2)
    # starting absent is no disappearance, but its end is a reappearance
    s = m.transition_scores(j[:4], f[:4], np.array([1, 1, 0, 0], bool))
    assert s.disappear_j is None and s.reappear_j == pytest.approx(0.5)
    none = m.transition_scores(j, f, np.zeros(8, bool))
    assert none == m.TransitionScores(None, None, None, None)


# --- real ground truth --------------------------------------------------------------------------


def _davis_gt(seq: str, frame: str = "00020") -> np.ndarray:
    from vosfx.eval.datasets import read_label_png

    return read_label_png(shared_data("davis", "Annotations", seq, f"{frame}.png")) == 1


@pytest.mark.parametrize("seq", ["blackswan", "car-shadow"])
def test_real_gt_against_itself_and_perturbations(seq):
    import cv2

    gt = _davis_gt(seq)
    assert m.j_score(gt, gt) == 1.0 and m.f_score(gt, gt) == 1.0
    js, fs = [], []
    for k in (1, 3, 6, 12, 20):
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        eroded = cv2.erode(gt.view(np.uint8), kernel).view(bool)
        js.append(m.j_score(eroded, gt))
        fs.append(m.f_score(eroded, gt))
        assert m.f_score(eroded, gt) == pytest.approx(_ref_f(eroded, gt, 8.0))
    assert all(a > b for a, b in itertools.pairwise(js)), js  # J falls with every erosion
    # boundaries moved <= 6 px stay within 8 px (less the thin parts erosion removes)
    assert fs[0] > 0.99 and fs[1] > 0.97 and fs[2] > 0.9
    # 12 and 20 px are past the tolerance: few or no boundary pixels match any more
    assert fs[-1] <= fs[-2] < 0.3
    area = gt.sum()
    shifts = [m.j_score(np.roll(gt, k, axis=1), gt) for k in (2, 5, 10)]
    assert shifts[0] > shifts[1] > shifts[2] and shifts[0] < 1.0 - 1.0 / area
    assert m.f_score(np.roll(gt, 8, axis=1), gt) == 1.0  # every edge pixel moved exactly 8 px
    assert m.f_score(np.roll(gt, 16, axis=1), gt) < 0.9

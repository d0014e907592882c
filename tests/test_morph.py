"""Matte clean-up (vosfx.matte.morph): holes, specks, shift edge, choke, feather."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vosfx.errors import VosfxError
from vosfx.matte.morph import (
    choke,
    clip_levels,
    feather,
    fill_holes,
    remove_specks,
    shift_edge,
)


def _disc(radius: float, size: int = 200, soft_px: float = 1.5) -> np.ndarray:
    """(size, size) float32 alpha of a centred disc with a linear soft edge."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) - (size - 1) / 2
    d = np.sqrt(xx**2 + yy**2)
    return np.clip((radius - d) / soft_px + 0.5, 0, 1).astype(np.float32)


def _radius(alpha: np.ndarray) -> float:
    return float(np.sqrt(np.count_nonzero(alpha >= 0.5) / np.pi))


@pytest.mark.parametrize("k", [-6.0, -2.0, -0.5, 1.0, 2.5, 3.0, 7.0])
def test_shift_edge_moves_the_boundary_by_k_px(k):
    alpha = _disc(40.0)
    assert _radius(alpha) == pytest.approx(40.0, abs=0.3)
    assert _radius(shift_edge(alpha, k)) == pytest.approx(40.0 + k, abs=0.5)


@pytest.mark.parametrize("k", [-4, 3])
def test_shift_edge_on_a_straight_edge_is_exact(k):
    alpha = np.zeros((40, 100), np.float32)
    alpha[:, 50:] = 1.0
    out = shift_edge(alpha, k)
    assert int(np.argmax(out[20] >= 0.5)) == 50 - k


def test_shift_edge_zero_is_identity_and_does_not_alias():
    alpha = _disc(30.0)
    out = shift_edge(alpha, 0)
    np.testing.assert_array_equal(out, alpha)
    out[0, 0] = 5
    assert alpha[0, 0] != 5


def test_feather_is_monotone():
    step = np.zeros((32, 200), np.float32)
    step[:, 100:] = 1.0
    widths = []
    for px in (1.0, 3.0, 8.0, 20.0):
        out = feather(step, px)
        row = out[16]
        assert np.all(np.diff(row) >= -1e-6)  # a monotone edge stays monotone
        assert out.min() >= 0 and out.max() <= 1
        assert row[100 - int(px) - 1] < 0.03 and row[100 + int(px)] > 0.97  # ramp ~ ±px
        widths.append(np.count_nonzero((row > 0.02) & (row < 0.98)))
    assert widths == sorted(widths) and widths[0] < widths[-1]  # more feather, wider ramp


def test_clip_levels_crush_below_black_fill_above_white_and_stretch_between():
    ramp = np.tile(np.linspace(0, 1, 101, dtype=np.float32), (3, 1))
    np.testing.assert_array_equal(clip_levels(ramp, 0.0, 1.0), ramp)
    out = clip_levels(ramp, 0.2, 0.7)
    row, x = out[0], ramp[0]
    assert (row[x <= 0.2] == 0.0).all() and (row[x >= 0.7] == 1.0).all()
    between = (x > 0.2) & (x < 0.7)
    np.testing.assert_allclose(row[between], (x[between] - 0.2) / 0.5, atol=1e-6)
    assert (np.diff(row) >= 0).all()  # still monotone
    hard = (ramp >= 0.5).astype(np.float32)
    np.testing.assert_array_equal(clip_levels(hard, 0.2, 0.7), hard)  # 0/1 stay 0/1
    for black, white in ((0.5, 0.5), (0.7, 0.2), (-0.1, 0.5), (0.1, 1.5)):
        with pytest.raises(VosfxError, match="clip levels"):
            clip_levels(ramp, black, white)
    with pytest.raises(VosfxError, match=r"\(H, W\) plane"):
        clip_levels(np.zeros((2, 8, 8), np.float32), 0.1, 0.9)


def test_feather_keeps_solid_regions_solid():
    alpha = np.ones((50, 50), np.float32)
    np.testing.assert_allclose(feather(alpha, 5.0), alpha, atol=1e-6)


def test_choke_contracts_the_ramp_around_a_fixed_edge():
    ramp = np.tile(np.linspace(0, 1, 101, dtype=np.float32), (4, 1))
    np.testing.assert_array_equal(choke(ramp, 0.0), ramp)
    half = choke(ramp, 0.5)

    def soft(a):  # width of the soft ramp, px
        return np.count_nonzero((a[0] > 0) & (a[0] < 1))

    assert soft(half) == pytest.approx(soft(ramp) / 2, abs=2)
    hard = choke(ramp, 1.0)
    assert set(np.unique(hard)) == {0.0, 1.0}
    for out in (half, hard):
        assert int(np.argmax(out[0] >= 0.5)) == int(np.argmax(ramp[0] >= 0.5))
    with pytest.raises(VosfxError, match="choke"):
        choke(ramp, 1.5)


def _square_with_holes() -> np.ndarray:
    alpha = np.zeros((120, 200), np.float32)
    alpha[10:110, 10:150] = 1.0
    alpha[30:33, 30:33] = 0.0  # a 9 px² hole
    alpha[50:60, 50:60] = 0.0  # a 100 px² hole
    alpha[60:80, 140:150] = 0.0  # a notch open to the outside: not a hole
    return cv2.GaussianBlur(alpha, (0, 0), 0.7)


def test_fill_holes_by_area():
    alpha = _square_with_holes()
    out = fill_holes(alpha, 50)
    assert out[30:33, 30:33].min() == 1.0  # small hole filled, with its rim
    assert out[52:58, 52:58].max() < 0.5  # big hole kept
    assert out[62:78, 142:148].max() < 0.5  # open notch kept
    np.testing.assert_array_equal(out[:, 160:], alpha[:, 160:])
    assert fill_holes(alpha, 100)[52:58, 52:58].min() == 1.0
    np.testing.assert_array_equal(fill_holes(alpha, 0), alpha)


def test_background_touching_the_frame_edge_is_never_a_hole():
    alpha = np.ones((60, 60), np.float32)
    alpha[0:5, 20:25] = 0.0  # 25 px² of background on the top edge
    np.testing.assert_array_equal(fill_holes(alpha, 1000), alpha)


def test_remove_specks_by_area():
    alpha = np.zeros((100, 200), np.float32)
    alpha[20:80, 20:100] = 1.0  # the object
    alpha[10:12, 150:152] = 1.0  # a 4 px² speck
    alpha[50:65, 150:165] = 1.0  # a 225 px² island
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.7)
    out = remove_specks(alpha, 50)
    assert out[5:17, 145:157].max() < 0.01  # speck and its soft rim gone
    assert out[52:63, 152:163].min() > 0.5  # island kept
    np.testing.assert_array_equal(out[:, :110], alpha[:, :110])  # object untouched
    assert remove_specks(alpha, 300)[52:63, 152:163].max() == 0.0
    np.testing.assert_array_equal(remove_specks(alpha, 0), alpha)


@pytest.mark.parametrize("fn", [fill_holes, remove_specks, shift_edge, feather, choke])
def test_planes_only(fn):
    with pytest.raises(VosfxError, match=r"\(H, W\) plane"):
        fn(np.zeros((2, 8, 8), np.float32), 1)

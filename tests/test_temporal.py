"""Chatter reduction (vosfx.matte.temporal): converges when still, does not lag behind motion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vosfx.errors import VosfxError
from vosfx.matte.temporal import TemporalSmoother, small_luma, static_weight, temporal_blend

H, W = 96, 256


def _scene(edge_x: int) -> tuple[np.ndarray, np.ndarray]:
    """A frame with a bright object right of ``edge_x`` and its exact alpha."""
    img = np.full((H, W, 3), 30, np.uint8)
    img[:, edge_x:] = 210
    alpha = np.zeros((H, W), np.float32)
    alpha[:, edge_x:] = 1.0
    return img, alpha


def test_static_clip_converges():
    img, alpha = _scene(128)
    rng = np.random.default_rng(0)
    sm = TemporalSmoother(0.6)
    outs, ins = [], []
    for _ in range(40):  # same picture, chattering alpha
        noisy = np.clip(alpha + rng.normal(0, 0.2, alpha.shape).astype(np.float32), 0, 1)
        ins.append(noisy)
        outs.append(sm(1, noisy, sm.still(img)))
    jitter_in = np.mean([np.abs(a - b).mean() for a, b in zip(ins[1:], ins[:-1])])
    jitter_out = np.mean([np.abs(a - b).mean() for a, b in zip(outs[11:], outs[10:-1])])
    assert jitter_out < 0.6 * jitter_in
    # A constant input after the chatter: the output converges to it geometrically.
    for n in range(1, 30):
        out = sm(1, alpha, sm.still(img))
        assert np.abs(out - alpha).max() <= 0.6**n + 1e-5
    assert np.abs(out - alpha).max() < 1e-5


@pytest.mark.parametrize("speed_px", [1, 3, 8])
def test_moving_edge_lags_at_most_one_frame(speed_px):
    sm = TemporalSmoother(0.9)
    for t in range(12):
        x = 60 + speed_px * t
        img, alpha = _scene(x)
        out = sm(1, alpha, sm.still(img))
        edge = np.argmax(out >= 0.5, axis=1)
        assert np.all(np.abs(edge - x) <= speed_px), (t, edge.min(), edge.max(), x)
        # Away from the edge's path the matte stays exact (no ghost).
        np.testing.assert_allclose(out[:, x + 2 * speed_px + 16 :], 1.0, atol=1e-6)


def test_strength_zero_is_off():
    img, alpha = _scene(100)
    sm = TemporalSmoother(0.0)
    assert sm.still(img) is None
    assert sm(1, alpha, None) is alpha
    np.testing.assert_array_equal(temporal_blend(alpha, 1 - alpha, np.ones_like(alpha), 0.0), alpha)


def test_reset_and_forget_start_fresh():
    img, alpha = _scene(100)
    sm = TemporalSmoother(0.8)
    sm(1, alpha, sm.still(img))
    sm(2, alpha, sm.still(img))
    flipped = 1.0 - alpha
    sm.forget(1)
    np.testing.assert_array_equal(sm(1, flipped, sm.still(img)), flipped)  # forgotten
    assert np.abs(sm(2, flipped, sm.still(img)) - flipped).max() > 0.5  # still smoothed
    sm.reset()
    np.testing.assert_array_equal(sm(2, flipped, sm.still(img)), flipped)  # first frame again


def test_static_weight():
    img, _ = _scene(100)
    moved, _ = _scene(140)
    a, b = small_luma(img), small_luma(moved)
    assert a.dtype == np.float32 and max(a.shape) <= 256
    np.testing.assert_array_equal(static_weight(a, None, (H, W)), np.zeros((H, W)))
    np.testing.assert_array_equal(static_weight(a, a, (H, W)), np.ones((H, W)))
    w = static_weight(b, a, (H, W))
    assert w[:, 105:135].max() == 0.0 and w[:, :60].min() == 1.0
    np.testing.assert_allclose(small_luma(img.astype(np.uint16) * 257), a, atol=0.5)


def test_bad_strength_is_refused():
    a = np.zeros((4, 4), np.float32)
    with pytest.raises(VosfxError, match="temporal strength"):
        temporal_blend(a, a, a, 1.0)


def test_the_small_weight_is_upsampled_inside_the_blend():
    # TemporalSmoother.still gives the small grid; the blend upsamples it as cv2.resize does
    # (bilinear, half-pixel centres), for non-integer factors too.
    from vosfx.matte import kernels

    rng = np.random.default_rng(5)
    for big, small in (((96, 256), (12, 32)), ((50, 111), (7, 13))):
        alpha, prev = rng.random((2, *big), dtype=np.float32)
        weight = rng.random(small, dtype=np.float32)
        got = kernels.blend_toward(alpha, prev, weight, np.empty_like(alpha))
        up = cv2.resize(weight, big[::-1], interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(got, alpha + up * (prev - alpha), atol=1e-6, rtol=0)
    # in bands of rows (kernels.bands): the same bits
    big = (2 * kernels.MIN_BAND_ROWS + 7, 64)
    alpha, prev = rng.random((2, *big), dtype=np.float32)
    weight = rng.random((17, 8), dtype=np.float32)
    one = kernels.blend_toward(alpha, prev, weight, np.empty_like(alpha))
    np.testing.assert_array_equal(kernels.blend_toward(alpha, prev, weight, alpha.copy(), 2), one)


def test_small_luma_from_the_guides_grid_is_within_a_level_of_the_direct_one():
    # the guided filter's area-downscaled frame at twice the small grid is reused
    rng = np.random.default_rng(6)
    img = cv2.GaussianBlur(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8), (0, 0), 3)
    direct = small_luma(img)
    grid = cv2.resize(img, (480, 270), interpolation=cv2.INTER_AREA)
    via = small_luma(img, grid)
    assert via.shape == direct.shape == (135, 240)
    assert np.abs(via - direct).max() <= 1.0
    # a grid that is not a whole multiple is not used
    odd = cv2.resize(img, (500, 281), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(small_luma(img, odd), direct)


def test_blends_from_several_threads_at_once_share_the_pool():
    # the studio, an OFX worker and a render may refine at the same time: their bands queue
    # on one pool and each caller gets its own frame's result
    import threading

    from vosfx.matte import kernels

    rng = np.random.default_rng(8)
    big = (3 * kernels.MIN_BAND_ROWS, 96)
    jobs = [(rng.random((2, *big), dtype=np.float32), rng.random((12, 9), dtype=np.float32))]
    jobs += [(rng.random((2, *big), dtype=np.float32), jobs[0][1]) for _ in range(5)]
    want = [kernels.blend_toward(a, p, w, np.empty_like(a)) for (a, p), w in jobs]
    got: list = [None] * len(jobs)

    def run(i: int) -> None:
        (a, p), w = jobs[i]
        for _ in range(20):
            got[i] = kernels.blend_toward(a, p, w, np.empty_like(a), 3)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()  # no band left waiting
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_overwrite_blends_into_the_given_plane_with_the_same_result():
    # overwrite=True (the Refiner's own plane) writes the blend into alpha instead of a new
    # plane: the same values frame after frame, and the remembered previous frame is never
    # the plane handed in next
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(4)]
    frames[2] = frames[1]  # a still pair: the weight is not zero
    alphas = rng.random((4, H, W), dtype=np.float32)
    fresh, inplace = TemporalSmoother(0.5), TemporalSmoother(0.5)
    blended = []
    for img, alpha in zip(frames, alphas):
        want = fresh(1, alpha.copy(), fresh.still(img)).copy()
        given = alpha.copy()
        got = inplace(1, given, inplace.still(img), overwrite=True)
        np.testing.assert_array_equal(got, want)
        assert got is given  # no new plane, on the first frame and on blended ones
        blended.append(not np.array_equal(want, alpha))
    assert blended[2]  # the still frame was blended toward the previous one

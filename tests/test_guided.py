"""Image-guided edge refinement (vosfx.matte.guided): edges snap, flat regions stay flat."""

from __future__ import annotations

import itertools
import os
import signal
import time

import cv2
import numpy as np
import pytest

from vosfx.errors import VosfxError
from vosfx.matte.guided import GuidePrep, guided_refine, subsample_for
from vosfx.matte.refine import logits_to_prob


def _edge_scene(edge_x: int, h: int = 128, w: int = 512):
    """A frame with a sharp vertical edge at ``edge_x`` and SAM-like logits for it: the true
    mask area-downsampled to a 64² grid (8 px cells), blurred and biased so that the bilinear
    edge lands a few pixels off the image edge."""
    img = np.full((h, w, 3), 40, np.uint8)
    img[:, edge_x:] = (200, 180, 160)
    gt = np.zeros((h, w), np.float32)
    gt[:, edge_x:] = 1
    m = np.clip(cv2.resize(gt, (64, 64), interpolation=cv2.INTER_AREA), 1e-3, 1 - 1e-3)
    logits = cv2.GaussianBlur(np.log(m / (1 - m)).astype(np.float32), (0, 0), 1.0) - 2.0
    return img, logits


def _edge_pos(alpha: np.ndarray) -> float:
    """Mean column of the first alpha >= 0.5 per row."""
    return float(np.mean(np.argmax(alpha >= 0.5, axis=1)))


@pytest.mark.parametrize("edge_x", [203, 205, 207])
def test_edges_snap_to_a_sharp_image_edge(edge_x):
    img, logits = _edge_scene(edge_x)
    p = logits_to_prob(logits, img.shape[:2])
    bilinear_err = abs(_edge_pos(p) - edge_x)
    assert bilinear_err >= 2  # the scene really puts the bilinear edge off
    err = {
        s: abs(_edge_pos(guided_refine(p, img, 8, 1e-3, strength=s)) - edge_x) for s in (1.0, 2.0)
    }
    assert err[1.0] <= bilinear_err - 1  # closer by at least a pixel
    assert err[2.0] <= min(err[1.0], bilinear_err / 2)  # and at least halfway with strength 2


def test_a_flat_picture_adds_nothing():
    rng = np.random.default_rng(1)
    img = np.full((96, 160, 3), (90, 120, 30), np.uint8)
    p = cv2.GaussianBlur((rng.random((96, 160)) > 0.5).astype(np.float32), (0, 0), 3)
    out = guided_refine(p, img, radius_px=8, eps=1e-3, strength=2.0)
    np.testing.assert_allclose(out, p, atol=1e-5)


def test_no_bleed_into_flat_background():
    # An object on the left, a strong image edge far to the right, flat background between.
    img = np.full((120, 400, 3), 30, np.uint8)
    img[30:90, 40:120] = 220
    img[:, 300:] = 250
    mask = np.zeros((120, 400), np.float32)
    mask[30:90, 40:120] = 1
    p = cv2.GaussianBlur(mask, (0, 0), 2.5)
    out = guided_refine(p, img, radius_px=8, eps=1e-3, strength=2.0)
    # Flat background between the object and the far edge keeps exactly the input alpha.
    np.testing.assert_allclose(out[:, 140:280], p[:, 140:280], atol=1e-5)
    # And nothing appears along the far image edge where the mask is 0.
    assert out[:, 290:].max() < 1e-3


def test_uint16_guide_matches_uint8():
    img, logits = _edge_scene(205)
    p = logits_to_prob(logits, img.shape[:2])
    a8 = guided_refine(p, img, 8, 1e-3)
    a16 = guided_refine(p, img.astype(np.uint16) * 257, 8, 1e-3)
    np.testing.assert_allclose(a8, a16, atol=1e-3)
    assert a8.dtype == np.float32 and a8.shape == img.shape[:2]
    assert 0.0 <= a8.min() and a8.max() <= 1.0


def test_prep_is_shared_across_objects():
    img, logits = _edge_scene(205)
    prep = GuidePrep(img, 8, 1e-3)
    p = logits_to_prob(logits, img.shape[:2])
    np.testing.assert_allclose(prep.refine(p), guided_refine(p, img, 8, 1e-3), atol=1e-6)
    assert prep.refine(1.0 - p).mean() < 0.5 < prep.refine(p).mean()


def test_subsampling_keeps_a_low_radius_of_two():
    assert subsample_for(1) == 1
    assert subsample_for(8) == 4
    assert subsample_for(128) == 8


@pytest.mark.parametrize(
    "radius, hw, want",
    [
        (15, (2160, 3840), 8),  # UHD with SAM 2's 256² logits: 7 does not divide, 8 does
        (8, (1080, 1920), 4),  # divides already
        (10, (1440, 2560), 5),
        (16, (2160, 4096), 8),
        (15, (1601, 3841), 7),  # nothing near divides: the radius's own factor
        (9, (1080, 1998), 4),  # 1998 = 2 x 27 x 37: 5 does not divide it either
        (5, (721, 1280), 2),  # 3 does not divide 721; 1 would, but at 4x the grid cells
        (17, (2160, 4095), 8),  # 9 would divide, but the grid stays at most 8x smaller
        (3, (1081, 1921), 1),  # 1 divides everything
    ],
)
def test_subsampling_prefers_a_factor_that_divides_the_frame(radius, hw, want):
    got = subsample_for(radius, *hw)
    assert got == want
    assert subsample_for(radius) == radius // 2 or subsample_for(radius) == 8
    prep = GuidePrep(np.zeros((*hw, 3), np.uint8), radius, 1e-2)
    assert prep.r >= 2 or radius < 4  # the low-resolution radius the rule keeps
    if hw[0] % got == 0 and hw[1] % got == 0:  # the grid covers whole blocks of the frame
        assert prep.low_hw == (hw[0] // got, hw[1] // got)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.int32)],
)
def test_bad_guides_are_refused(bad):
    with pytest.raises(VosfxError, match="guide image"):
        guided_refine(np.zeros((8, 8), np.float32), bad, 2, 1e-3)


def test_alpha_size_must_match_the_guide():
    with pytest.raises(VosfxError, match="like the guide"):
        GuidePrep(np.zeros((8, 8, 3), np.uint8), 2, 1e-3).refine(np.zeros((4, 4), np.float32))


def test_band_evaluation_matches_the_whole_frame_formula():
    img, logits = _edge_scene(205, h=96, w=300)
    img = img.copy()
    img[:, :, 1] = np.arange(300, dtype=np.uint8)[None, :] // 2  # some texture as well
    prep = GuidePrep(img, 8, 1e-3)
    p = logits_to_prob(logits, img.shape[:2])
    w = 4 * p * (1 - p)
    dense = np.clip(p + w * prep.detail(p), 0, 1)
    band = w > 0.01
    sparse = prep.refine(p)
    np.testing.assert_allclose(sparse[band], dense[band], atol=1e-4)
    np.testing.assert_array_equal(sparse[~band], p[~band])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_sharp_and_soft_logits_give_the_whole_frame_formula(dtype):
    # Soft logits put the whole frame in the band, sharp ones a few %: either way the compiled
    # loop gives the whole-frame formula (detail(): OpenCV's resize and an einsum) inside the
    # band, the alpha untouched outside it.
    img, logits = _edge_scene(205, h=96, w=300)
    one = {np.uint8: 1, np.uint16: 257, np.float32: 1 / 255}[dtype]
    img = (img.astype(np.float64) * one).astype(dtype)
    img[:, :, 1] = (np.arange(300)[None, :] // 2 * one).astype(dtype)
    for scale, strength in ((1.0, 1.0), (0.05, 1.0), (1.0, 2.0), (0.05, 2.0)):
        p = logits_to_prob(logits * np.float32(scale), img.shape[:2])
        prep = GuidePrep(img, 8, 1e-3)
        w = 4 * strength * p * (1 - p)
        band = w > 0.01 * strength
        assert band.mean() > (0.9 if scale < 1 else 0.0)  # soft: (nearly) the whole frame
        formula = np.clip(p + w * prep.detail(p), 0, 1)
        out = prep.refine(p, strength=strength)
        np.testing.assert_allclose(out[band], formula[band], atol=2e-6, rtol=0)
        np.testing.assert_array_equal(out[~band], p[~band])
        # overwrite=True: the same values, written into the caller's array
        mine = p.copy()
        again = prep.refine(mine, strength=strength, overwrite=True)
        assert again is mine
        np.testing.assert_array_equal(again, out)
    # without overwrite the caller's alpha is left as it was
    before = p.copy()
    prep.refine(p, strength=2.0)
    np.testing.assert_array_equal(p, before)


@pytest.mark.parametrize("shape, low", [((50, 111), (7, 13)), ((64, 64), (8, 8)), ((9, 5), (9, 5))])
def test_the_coefficients_are_upsampled_as_opencv_resizes(shape, low):
    # The compiled loop samples the low-resolution coefficients itself: with alpha 0.5
    # everywhere (weight 1) and a black guide, its output is 0.5 + the upsampled offset b,
    # which must be cv2.resize's bilinear (half-pixel centres, clamped at the border), for
    # non-integer factors and for none at all.
    from vosfx.matte import kernels

    rng = np.random.default_rng(3)
    coef = (rng.random((*low, 4)) * 0.4 - 0.2).astype(np.float32)
    alpha = np.full(shape, 0.5, np.float32)
    out = kernels.apply_edge_detail(
        alpha, np.zeros((*shape, 3), np.uint8), coef, 1 / 255, 4.0, 0.01, np.empty_like(alpha)
    )
    want = 0.5 + cv2.resize(coef[..., 3], shape[::-1], interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out, want, atol=1e-6, rtol=0)


def test_inverse_covariance_is_the_matrix_inverse():
    from vosfx.matte import kernels

    rng = np.random.default_rng(4)
    low = rng.random((6, 7, 3)).astype(np.float32)
    moments = kernels.guide_moments(low)
    np.testing.assert_allclose(moments[..., 4], low[..., 0] * low[..., 1], rtol=1e-6)
    sums = cv2.boxFilter(moments, -1, (3, 3), borderType=cv2.BORDER_REFLECT)
    inv = kernels.inverse_covariance(sums, 1e-3)
    for y, x in ((0, 0), (3, 4), (5, 6)):
        m = sums[y, x, :3].astype(np.float64)
        pairs = sums[y, x, 3:].astype(np.float64)
        cov = (
            np.array(
                [
                    [pairs[0], pairs[1], pairs[2]],
                    [pairs[1], pairs[3], pairs[4]],
                    [pairs[2], pairs[4], pairs[5]],
                ]
            )
            - np.outer(m, m)
            + 1e-3 * np.eye(3)
        )
        want = np.linalg.inv(cov)
        got = inv[y, x]
        full = np.array(
            [[got[0], got[1], got[2]], [got[1], got[3], got[4]], [got[2], got[4], got[5]]]
        )
        np.testing.assert_allclose(full, want, rtol=2e-3, atol=1e-2)


def test_loops_compile_without_a_writable_cache(monkeypatch):
    # numba refuses cache=True where it finds no writable cache directory (a read-only install
    # and home); the refiner (where the C build cannot be made) then compiles in memory
    # instead of failing.
    import numba

    from vosfx.matte import c_loops, kernels

    monkeypatch.setattr(c_loops, "_BUILT", [None, "no C build here"])
    monkeypatch.setattr(kernels, "_NUMBA", {})

    real = numba.njit

    def njit(*args, **options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function '_guide_moments': no locator available")
        return real(*args, **options)

    monkeypatch.setattr(numba, "njit", njit)
    monkeypatch.setattr(kernels, "_LOOPS", {})
    low = np.random.default_rng(0).random((4, 5, 3), dtype=np.float32)
    np.testing.assert_allclose(kernels.guide_moments(low)[..., 3], low[..., 0] ** 2, rtol=1e-6)
    assert set(kernels._LOOPS) == set(kernels._NUMBA) == {"guide_moments"}  # no disk cache


def test_the_edge_loop_in_row_bands_is_the_whole_frame_loop():
    # bands of rows on the pool (one on the caller's thread) give the same bits as one pass,
    # including the bands' first and last rows, where the coefficients' rows change
    from vosfx.matte import kernels

    rng = np.random.default_rng(6)
    shape = (3 * kernels.MIN_BAND_ROWS + 41, 203)
    alpha = rng.random(shape, dtype=np.float32)
    guide = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    coef = (rng.random((37, 25, 4)) * 0.4 - 0.2).astype(np.float32)
    args = (alpha, guide, coef, 1 / 255, 4.0, 0.01)
    one = kernels.apply_edge_detail(*args, np.empty_like(alpha))
    for threads in (2, 3, 64):
        banded = kernels.apply_edge_detail(*args, np.empty_like(alpha), threads)
        np.testing.assert_array_equal(banded, one)
    assert len(kernels.bands(shape[0], 64)) == 3  # at least MIN_BAND_ROWS rows each


def test_bands_cover_the_rows_once():
    from vosfx.matte import kernels

    for height, threads in ((1080, 2), (2160, 8), (100, 4), (1, 1), (1081, 3), (5000, 99)):
        parts = kernels.bands(height, threads)
        assert parts[0][0] == 0 and parts[-1][1] == height
        assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
        assert 1 <= len(parts) <= min(threads, kernels.MAX_THREADS)
        assert len(parts) == 1 or min(b - a for a, b in parts) >= kernels.MIN_BAND_ROWS


def test_an_error_in_a_band_reaches_the_caller():
    from vosfx.matte import kernels

    def loop(rows, start, stop):
        if start > 0:
            raise RuntimeError(f"band {start}")
        rows.append((start, stop))

    done: list = []
    with pytest.raises(RuntimeError, match="band"):
        kernels._in_bands(loop, 1000, 4, done)
    assert done == [(0, 250)]  # the caller's band ran; the pool's errors were raised after it


def test_default_threads_follow_the_affinity_and_omp(monkeypatch):
    from vosfx.matte import kernels

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = kernels.default_threads()
    assert 1 <= n <= kernels.MAX_THREADS
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a batch worker's share of the cores
    assert kernels.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert kernels.default_threads() == n


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_gets_a_pool_of_its_own():
    # the parent's pool threads do not exist in a fork: bands there must still run
    from vosfx.matte import kernels

    # the parent's pool, with 7 threads (slow bands: none is free for the next band)
    kernels._in_bands(lambda rows, a, b: time.sleep(0.05), 8 * kernels.MIN_BAND_ROWS, 8, [])
    assert kernels._POOL
    time.sleep(0.5)  # all idle now: a fork counts them as free, and none of them exists there
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if all four bands ran
        signal.alarm(60)  # a band waiting on a thread that does not exist: killed, not hung
        rows: list = []
        kernels._in_bands(lambda rows, a, b: rows.append(a), 1000, 4, rows)
        os._exit(0 if sorted(rows) == [0, 250, 500, 750] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

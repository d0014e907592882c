"""Image-guided edge refinement (vosfx.matte.guided): edges snap, flat regions stay flat."""

from __future__ import annotations

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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_dense_and_band_paths_agree(dtype, monkeypatch):
    # Soft logits put the whole frame in the band, which is evaluated densely (bounded cost);
    # it must give what the gathered band path gives, up to float rounding.
    from vosfx.matte import guided

    img, logits = _edge_scene(205, h=96, w=300)
    img = img.astype(dtype) * (257 if dtype == np.uint16 else 1)
    img[:, :, 1] = np.arange(300)[None, :] // 2 * (257 if dtype == np.uint16 else 1)
    for scale in (1.0, 0.05):  # sharp (narrow band, gathered) and soft (whole frame, dense)
        p = logits_to_prob(logits * np.float32(scale), img.shape[:2])
        prep = GuidePrep(img, 8, 1e-3)
        monkeypatch.setattr(guided, "_DENSE_FRACTION", 2.0)  # never dense
        band = prep.refine(p, strength=2.0)
        monkeypatch.setattr(guided, "_DENSE_FRACTION", 0.0)  # always dense
        dense = prep.refine(p, strength=2.0)
        monkeypatch.undo()
        np.testing.assert_allclose(dense, band, atol=2e-6, rtol=0)
        outside = 4 * p * (1 - p) * 2.0 <= 0.02
        np.testing.assert_array_equal(dense[outside], p[outside])
        # overwrite=True: the same values, written into the caller's array on the band path
        mine = p.copy()
        monkeypatch.setattr(guided, "_DENSE_FRACTION", 2.0)
        again = prep.refine(mine, strength=2.0, overwrite=True)
        monkeypatch.undo()
        np.testing.assert_array_equal(again, band)
        assert again is mine

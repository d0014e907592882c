"""Compositing (vosfx.matte.compose): backgrounds and the preview overlay."""

from __future__ import annotations

import numpy as np
import pytest

from vosfx.errors import VosfxError
from vosfx.matte.compose import (
    PREVIEW_COLOURS,
    fit_background,
    object_colour,
    overlay_preview,
    replace_background,
)
from vosfx.presets import list_presets, load_preset

H, W = 24, 32
FULL = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}


def _image(dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.random((H, W, 3))
    return (x * FULL[dtype]).round().astype(dtype) if dtype != np.float32 else x.astype(dtype)


def _alpha() -> np.ndarray:
    a = np.zeros((H, W), np.float32)
    a[:, 8:] = np.linspace(0, 1, W - 8, dtype=np.float32)
    return a


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_replace_background_with_a_colour(dtype):
    img, a = _image(dtype), _alpha()
    colour = (0.0, FULL[dtype], 0.0)
    out = replace_background(img, a, colour)
    assert out.dtype == dtype and out.shape == img.shape
    np.testing.assert_array_equal(out[:, :8], np.broadcast_to(np.asarray(colour, dtype), (H, 8, 3)))
    np.testing.assert_array_equal(out[:, -1], img[:, -1])
    mid = out[:, 8 + (W - 8) // 2].astype(np.float64)
    am = a[0, 8 + (W - 8) // 2]
    expected = img[:, 8 + (W - 8) // 2] * am + np.asarray(colour) * (1 - am)
    assert np.abs(mid - expected).max() <= (0.5 if dtype != np.float32 else 1e-5)


def test_replace_background_with_an_image_of_another_depth():
    img, a = _image(np.uint8), _alpha()
    bg16 = np.full((H, W, 3), 65535, np.uint16)
    out = replace_background(img, a, bg16)
    assert out.dtype == np.uint8
    assert np.all(out[:, :8] == 255)  # 16-bit white is 8-bit white
    with pytest.raises(VosfxError, match="fit_background"):
        replace_background(img, a, np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(VosfxError, match="colour"):
        replace_background(img, a, (300, 0, 0))


def test_fit_background_covers_without_distortion():
    bg = np.zeros((100, 100, 3), np.uint8)
    bg[:, 50:] = 255  # left half black, right half white
    out = fit_background(bg, (40, 80))
    assert out.shape == (40, 80, 3) and out.dtype == np.uint8
    assert np.all(out[:, :35] == 0) and np.all(out[:, 45:] == 255)
    assert fit_background(bg, (100, 100)) is bg


def test_overlay_preview_tints_and_outlines_each_object():
    img = np.full((60, 80, 3), 100, np.uint8)
    alphas = np.zeros((2, 60, 80), np.float32)
    alphas[0, 10:30, 10:30] = 1.0
    alphas[1, 30:50, 40:70] = 1.0
    out = overlay_preview(img, alphas, (1, 4), opacity=0.5)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[55:, :], img[55:, :])  # untouched outside
    for obj_id, (y, x), (ey, ex) in [(1, (20, 20), (10, 20)), (4, (40, 55), (30, 55))]:
        c = np.asarray(object_colour(obj_id))
        np.testing.assert_allclose(out[y, x], np.rint((img[y, x] + c) / 2), atol=1)  # tint
        np.testing.assert_array_equal(out[ey, ex], c)  # outline at full strength
    assert object_colour(1) != object_colour(4)
    only_outline = overlay_preview(img, alphas, (1, 4), opacity=0.0)
    np.testing.assert_array_equal(only_outline[20, 20], img[20, 20])
    np.testing.assert_array_equal(only_outline[10, 20], object_colour(1))


def test_object_colours_are_stable_and_distinct():
    assert object_colour(3) == object_colour(3) == PREVIEW_COLOURS[2]
    assert len({object_colour(i) for i in range(1, len(PREVIEW_COLOURS) + 1)}) == len(
        PREVIEW_COLOURS
    )
    assert object_colour(1 + len(PREVIEW_COLOURS)) == object_colour(1)


def test_overlay_preview_refuses_bad_input():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(VosfxError, match="uint8"):
        overlay_preview(img.astype(np.uint16), np.zeros((1, 10, 10), np.float32), (1,))
    with pytest.raises(VosfxError, match="alphas"):
        overlay_preview(img, np.zeros((2, 10, 10), np.float32), (1,))
    with pytest.raises(VosfxError, match="opacity"):
        overlay_preview(img, np.zeros((1, 10, 10), np.float32), (1,), opacity=2.0)


def test_every_preset_format_has_an_alpha_convention(config_home):
    from vosfx.io.writers import FORMATS

    formats = {load_preset(p.name).get("output", {}).get("format") for p in list_presets()}
    formats.discard(None)
    assert formats <= set(FORMATS), formats - set(FORMATS)
    assert {FORMATS[f].alpha for f in FORMATS} <= {"straight", "premultiplied", "none"}


def test_alpha_must_match_the_image():
    with pytest.raises(VosfxError, match="alpha"):
        replace_background(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.float32), (0, 0, 0))

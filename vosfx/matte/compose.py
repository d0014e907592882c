"""Compositing with a finished alpha: premultiplication, RGBA cut-outs, background replacement
and the preview overlay. Pure array functions.

Images are (H, W, 3) RGB arrays of dtype uint8 (0-255), uint16 (0-65535, for >8-bit sources)
or float32 (0-1); every function returns the dtype it was given. ``alpha`` is (H, W) float32 in
[0, 1] at the image's resolution. Blending is done on the encoded (gamma) values, as editors do
by default; it is exact where alpha is 0 or 1 and a close approximation in the soft edge.

Straight or premultiplied: the formats table (``vosfx.io.writers.FORMATS``, field ``alpha``)
says which convention each output format stores unless the user asks otherwise (``[output]
alpha_mode``).
"""

from __future__ import annotations

import cv2
import numpy as np

from vosfx.errors import VosfxError

# Tint colours for the preview, one per object id (id 1 takes the first): saturated hues that
# stay distinct from each other and readable over skin, sky and foliage.
PREVIEW_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64),
    (64, 160, 255),
    (80, 220, 80),
    (255, 200, 0),
    (200, 80, 255),
    (0, 220, 220),
    (255, 120, 200),
    (255, 140, 40),
    (150, 255, 120),
    (120, 120, 255),
)

_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}


def _check(rgb: np.ndarray, alpha: np.ndarray) -> float:
    """Validate an image and its alpha; returns the dtype's full-scale value."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise VosfxError(f"image: expected (H, W, 3) RGB, found shape {rgb.shape}")
    if rgb.dtype not in _MAX:
        raise VosfxError(f"image: expected uint8, uint16 or float32, found {rgb.dtype}")
    if alpha.shape != rgb.shape[:2]:
        raise VosfxError(
            f"alpha: expected shape {rgb.shape[:2]} like the image, found {alpha.shape}"
        )
    return _MAX[rgb.dtype]


def _to_dtype(x: np.ndarray, dtype: np.dtype, full: float) -> np.ndarray:
    """float32 in [0, full] -> dtype, rounded and clipped (``x`` is overwritten)."""
    if dtype == np.float32:
        return np.clip(x, 0.0, full).astype(np.float32, copy=False)
    np.rint(x, out=x)
    return np.clip(x, 0, full, out=x).astype(dtype)


def fit_background(bg: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Scale an (h, w, 3) background image to cover (H, W) = ``out_hw`` and crop the centre
    (no distortion, no borders). Keeps the dtype."""
    if bg.ndim != 3 or bg.shape[2] != 3:
        raise VosfxError(f"background: expected (H, W, 3) RGB, found shape {bg.shape}")
    h, w = bg.shape[:2]
    H, W = out_hw
    if (h, w) == (H, W):
        return bg
    scale = max(H / h, W / w)
    sw, sh = max(W, round(w * scale)), max(H, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(bg, (sw, sh), interpolation=interp)
    y0, x0 = (sh - H) // 2, (sw - W) // 2
    return np.ascontiguousarray(resized[y0 : y0 + H, x0 : x0 + W])


def replace_background(
    rgb: np.ndarray, alpha: np.ndarray, bg: tuple[float, float, float] | np.ndarray
) -> np.ndarray:
    """``rgb · alpha + bg · (1 - alpha)``, same shape (H, W, 3) and dtype as ``rgb``.

    ``bg``: a colour, 3 numbers on the image's own scale (0-255 for uint8, 0-65535 for uint16,
    0-1 for float32); or an image, (H, W, 3) of any supported dtype (rescaled to the image's
    range; use :func:`fit_background` first for another size). For a background video, pass
    its frame for each frame.
    """
    full = _check(rgb, alpha)
    # the alpha as three equal channels: numpy's loops over a broadcast last axis of 3 are
    # slow, and float32 products are the same whichever way they are formed (85.6 -> 23.9
    # CPU ms at 1080p over a colour, bit-identical; docs/benchmarks/write.md)
    a = cv2.merge([np.ascontiguousarray(alpha, np.float32)] * 3)
    if isinstance(bg, np.ndarray):
        if bg.shape != rgb.shape:
            raise VosfxError(
                f"background: expected an image of shape {rgb.shape}, found "
                f"{bg.shape} (fit_background resizes one)"
            )
        if bg.dtype not in _MAX:
            raise VosfxError(f"background: expected uint8, uint16 or float32, found {bg.dtype}")
        back = bg.astype(np.float32) * np.float32(full / _MAX[bg.dtype])
    else:
        colour = np.asarray(bg, np.float32).reshape(-1)
        if colour.shape != (3,) or not np.all((colour >= 0) & (colour <= full)):
            raise VosfxError(f"background colour: expected 3 values in [0, {full:g}], found {bg}")
        back = colour
    # fg·a + bg·(1 - a) rather than bg + (fg - bg)·a: exact where alpha is 0 or 1. In place,
    # the same operations in the same order as that expression.
    out = rgb.astype(np.float32)
    out *= a
    rest = np.subtract(np.float32(1.0), a, out=a)
    if back.ndim == 1:  # a colour: OpenCV multiplies each channel by its own scalar
        rest = cv2.multiply(rest, tuple(float(c) for c in back) + (0.0,), dst=rest)
    else:
        rest *= back
    out += rest
    return _to_dtype(out, rgb.dtype, full)


def object_colour(obj_id: int) -> tuple[int, int, int]:
    """The preview's RGB tint for an object id: the same id always gets the same colour."""
    return PREVIEW_COLOURS[(int(obj_id) - 1) % len(PREVIEW_COLOURS)]


def overlay_preview(
    rgb: np.ndarray,
    alphas: np.ndarray,
    obj_ids: tuple[int, ...],
    opacity: float = 0.5,
    outline_px: int = 2,
) -> np.ndarray:
    """The preview overlay: each object tinted with its colour (:func:`object_colour`) at
    ``opacity`` × alpha, and outlined (``outline_px`` wide, full strength) along its alpha
    0.5 edge.

    ``rgb``: (H, W, 3) uint8. ``alphas``: (O, H, W) float32 in [0, 1], one per ``obj_ids``.
    ``opacity`` in [0, 1]. Returns (H, W, 3) uint8.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise VosfxError(f"preview: expected (H, W, 3) uint8 RGB, found {rgb.dtype} {rgb.shape}")
    if alphas.ndim != 3 or alphas.shape[1:] != rgb.shape[:2] or len(alphas) != len(obj_ids):
        raise VosfxError(
            f"preview: expected alphas ({len(obj_ids)}, {rgb.shape[0]}, "
            f"{rgb.shape[1]}), found {alphas.shape}"
        )
    if not 0.0 <= opacity <= 1.0:
        raise VosfxError(f"preview opacity: expected a value in [0, 1], found {opacity}")
    # out += (colour - out) * w, channel by channel and in place: the same arithmetic as on
    # the (H, W, 3) frame, without numpy's slow loops over a last axis of 3 or a temporary per
    # operation (131 -> 39 CPU ms for two objects at 1080p; docs/benchmarks/write.md)
    planes = [rgb[..., c].astype(np.float32) for c in range(3)]
    step = np.empty_like(planes[0])
    for alpha, obj_id in zip(alphas, obj_ids):
        colour = np.asarray(object_colour(obj_id), np.float32)
        w = np.multiply(alpha, np.float32(opacity), dtype=np.float32)
        if outline_px > 0:
            np.copyto(w, np.float32(1.0), where=outline(alpha >= 0.5, outline_px))
        for c, plane in enumerate(planes):
            np.subtract(colour[c], plane, out=step)
            step *= w
            plane += step
    codes = []
    for plane in planes:
        np.rint(plane, out=plane)
        np.clip(plane, 0, 255, out=plane)
        codes.append(plane.astype(np.uint8))
    return cv2.merge(codes)


def outline(inside: np.ndarray, outline_px: int = 2) -> np.ndarray:
    """The preview's outline of a mask: its inner band ``outline_px`` wide (``inside`` minus
    its erosion by a disc). ``inside``: (H, W) bool. Returns (H, W) bool."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * outline_px + 1,) * 2)
    m = np.ascontiguousarray(inside, bool).view(np.uint8)
    return m.astype(bool) & ~cv2.erode(m, k, borderType=cv2.BORDER_REPLICATE).astype(bool)

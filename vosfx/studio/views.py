"""What the page's viewer shows for a frame: the source, the overlay, the matte, the cut-out
(RGBA, the page puts a checkerboard under it) or overlay and matte side by side, with the
studio's current finishing applied (the render's Refiner, one frame at a time).

Chatter reduction is temporal: the preview warms the Refiner on up to ``WARM_FRAMES`` frames
before the one shown (those with results), so the frame shown is what a render gives when the
frames before it were tracked.

A prompt's answer carries :func:`mask_layers`: each object's mask on that frame as the engine
gave it (no guided refine, no finishing), as small PNG layers that the page draws over the
frame at once; the finished view above follows when the clicks pause.
"""

from __future__ import annotations

import io

import numpy as np

from vosfx.errors import ConfigError

VIEWS = ("source", "overlay", "matte", "cutout", "side")
WARM_FRAMES = 8
PREVIEW_OPACITY = 0.5  # overlay_preview's default tint
LAYER_MAX_SIDE = 1280  # a click's mask layers: at most this many pixels on the long side


def render_view(studio, index: int, view: str, solo: int | None = None) -> tuple[bytes, str]:
    """(image bytes, media type) of ``view`` on source frame ``index``; ``solo``: that object
    alone (its plane as the finishing gives it beside the others: what its own output holds
    when each object is written to one)."""
    from vosfx.matte.compose import overlay_preview

    if view not in VIEWS:
        raise ConfigError(f"view {view!r}: expected one of {', '.join(VIEWS)}")
    frame = studio.view_frames.get(index)
    rgb = _rgb8(frame.image)
    if view == "source":
        return _encode(rgb, "jpeg"), "image/jpeg"
    alpha, ids = matte_planes(studio, index, frame)  # (O, H, W) float32 in [0, 1]
    if solo is not None:
        keep = [i for i, obj in enumerate(ids) if obj == solo]
        alpha, ids = alpha[keep], tuple(ids[i] for i in keep)
    if view == "overlay":
        return _encode(overlay_preview(rgb, alpha, ids), "jpeg"), "image/jpeg"
    merged = alpha.max(axis=0) if len(ids) else np.zeros(rgb.shape[:2], np.float32)
    a8 = np.clip(np.rint(merged * 255.0), 0, 255).astype(np.uint8)
    if view == "matte":
        return _encode(a8, "png"), "image/png"
    if view == "cutout":
        return _encode(np.dstack([rgb, a8]), "png"), "image/png"
    side = np.concatenate(
        [overlay_preview(rgb, alpha, ids), np.repeat(a8[..., None], 3, 2)], axis=1
    )
    return _encode(side, "jpeg"), "image/jpeg"


def matte_planes(studio, index: int, frame=None) -> tuple[np.ndarray, tuple[int, ...]]:
    """(alpha (O, H, W) float32 in [0, 1], obj_ids) of the frame with the current finishing."""
    from vosfx.matte.refine import Refiner

    frame = frame if frame is not None else studio.view_frames.get(index)
    ids = tuple(sorted(studio.session.obj_ids))
    h, w = frame.image.shape[:2]
    if not ids:
        return np.zeros((0, h, w), np.float32), ids
    refiner = Refiner(studio.config.refine, ids)
    session = studio.session
    if studio.config.refine.temporal_strength > 0:
        for t in range(max(studio.start, index - WARM_FRAMES), index):
            if session.has_result(t):  # a frame without one: the next is not smoothed
                refiner.follow(t, session.shot_id(t))
                refiner(session.result(t), studio.view_frames.get(t))
    refiner.follow(index, session.shot_id(index))  # as the render: not across a cut
    matte = refiner(session.result(index), frame)
    return matte.alpha, ids


def mask_layers(studio, result) -> list[bytes | None]:
    """Per object of ``result`` (a :class:`~vosfx.types.MaskResult` of the clip's frame): its
    mask as the engine gave it, the logits resampled to the clip's size as the render does
    (:func:`~vosfx.matte.refine.logits_to_prob` with the finishing's threshold and softness,
    alpha >= 0.5; no guided refine, no finishing), drawn as :func:`overlay_preview` draws an
    object: a palette PNG whose index 0 is transparent, 1 the object's colour at the
    preview's opacity (inside), 2 its colour at full strength (the outline). None for an
    object scored absent. Drawn in object order over the frame, the layers give the overlay
    of the unrefined masks. A clip larger than ``LAYER_MAX_SIDE`` on its long side gets
    layers of the clip's shape at that size (the logits resampled to that grid; the page
    scales them to the clip): a 4K layer costs ~10x a 1280-wide one, and the finished view
    replaces it once the clicks pause."""
    from PIL import Image

    from vosfx.matte.compose import object_colour, outline

    h, w = studio.info.height, studio.info.width
    scale = min(1.0, LAYER_MAX_SIDE / max(h, w))
    hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    out: list[bytes | None] = []
    for i, obj_id in enumerate(result.obj_ids):
        inside = _engine_mask(studio, result, i, hw)
        if inside is None:
            out.append(None)
            continue
        index = inside.view(np.uint8).copy()
        index[outline(inside)] = 2
        img = Image.fromarray(index, "P")
        img.putpalette([0, 0, 0, *object_colour(obj_id) * 2])
        buf = io.BytesIO()
        opacity = round(PREVIEW_OPACITY * 255)
        img.save(buf, "PNG", compress_level=1, transparency=bytes([0, opacity, 255]))
        out.append(buf.getvalue())
    return out


def object_mask(studio, index: int, obj_id: int) -> bytes:
    """A PNG of 0/255 at the clip's size: ``obj_id``'s mask on frame ``index`` as the engine
    gave it (the logits resampled as the render does, alpha >= 0.5; no finishing), what the
    page's Paint starts from; empty where the object has no result there or is absent."""
    hw = (studio.info.height, studio.info.width)
    mask = np.zeros(hw, np.uint8)
    res = studio.session.result(index)
    if obj_id in res.obj_ids:
        inside = _engine_mask(studio, res, res.obj_ids.index(obj_id), hw)
        if inside is not None:
            mask[inside] = 255
    return _encode(mask, "png")


def _engine_mask(studio, result, i: int, hw: tuple[int, int]) -> np.ndarray | None:
    """Object ``i`` of ``result`` as the engine gave it, at ``hw``: its logits resampled as
    the render does (:func:`~vosfx.matte.refine.logits_to_prob` with the finishing's threshold
    and softness), alpha >= 0.5; None for an object scored absent."""
    from vosfx.matte.refine import logits_to_prob

    if float(result.object_score_logits[i]) <= 0.0:
        return None
    cfg = studio.config.refine
    return logits_to_prob(result.logits[i], hw, cfg.threshold, cfg.softness) >= 0.5


def _rgb8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (image >> 8).astype(np.uint8)  # 16-bit sources: the top byte for display


def _encode(image: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(image).save(buf, "JPEG", quality=90)
    else:
        Image.fromarray(image).save(buf, "PNG", compress_level=1)
    return buf.getvalue()

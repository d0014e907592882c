"""Prompts from files and text: mask images, clicked points and boxes, checked against the video.

Mask images (read with Pillow, the only reader that gives palette PNGs as indices):

- palette PNG (DAVIS style): every nonzero palette index is an object, ``obj_id`` = the index;
- binary or grayscale PNG/JPG, 8 or 16-bit: one object (``obj_id`` 1), foreground where the
  value is >= ``threshold`` (8-bit units; scaled by 257 for 16-bit images); an image whose
  values are only 0 and 1 (a boolean mask saved as integers) is foreground where it is 1;
- RGBA / LA: the alpha channel is the mask, thresholded; an alpha that is opaque everywhere
  carries no mask, so the colour channels are used instead;
- RGB: foreground where any channel is >= ``threshold`` (a pure red mask counts).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vosfx.errors import PromptError
from vosfx.types import Prompt, prior_ok


def load_mask_prompt(
    path: str | Path,
    *,
    frame_index: int = 0,
    video_size: tuple[int, int] | None = None,
    fit: bool = False,
    threshold: int = 128,
    objects: list[int] | tuple[int, ...] | None = None,
) -> list[Prompt]:
    """One mask ``Prompt`` per object in the image, in ascending ``obj_id`` order.

    ``video_size``: (W, H) the mask must match; with ``fit`` a mask of another size is scaled
    to it (nearest neighbour, so palette indices survive). ``objects``: the obj ids to keep.
    Each prompt's ``mask`` is (H, W) bool at video resolution.
    """
    labels = read_label_map(path, threshold=threshold)
    h, w = labels.shape
    if video_size is not None and (w, h) != tuple(video_size):
        vw, vh = video_size
        if not fit:
            raise PromptError(
                f"expected the mask {path} to be {vw}x{vh} (the video's size), found {w}x{h}; "
                "pass --fit to scale it to the video (nearest neighbour)"
            )
        labels = resize_nearest(labels, vw, vh)
    present = [int(i) for i in np.unique(labels) if i != 0]
    if not present:
        raise PromptError(
            f"expected foreground pixels in the mask {path}, found none "
            f"(threshold {threshold} for grayscale/alpha masks)"
        )
    if objects is not None:
        wanted = {int(o) for o in objects}
        unknown = sorted(wanted - set(present))
        if unknown:
            raise PromptError(
                f"expected object ids among {present} (those in {path}), found {unknown}"
            )
        present = [i for i in present if i in wanted]
    return [Prompt(frame_index=frame_index, obj_id=i, mask=labels == i) for i in present]


def read_label_map(path: str | Path, *, threshold: int = 128) -> np.ndarray:
    """(H, W) int32 label map of a mask image: 0 background, k > 0 object k (see module doc)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise PromptError(f"expected a mask image at {path}, found no file")
    if not 0 < threshold <= 255:
        raise PromptError(f"expected a threshold in 1..255, found {threshold}")
    try:
        with Image.open(path) as img:
            img.load()
            return image_labels(img, threshold=threshold, name=str(path))
    except (UnidentifiedImageError, OSError) as e:
        raise PromptError(f"expected a mask image (PNG, JPG), {path} cannot be read: {e}") from e


def image_labels(img, *, threshold: int = 128, name: str = "the mask") -> np.ndarray:
    """(H, W) int32 label map of a loaded PIL image, read as :func:`read_label_map` reads a
    file (the studio's dropped masks come as bytes). ``name`` names it in errors."""
    mode = img.mode
    if mode == "P":
        return np.asarray(img, dtype=np.int32)  # palette indices, not colours
    if mode == "PA":
        return np.asarray(img.getchannel(0), dtype=np.int32)
    return _binary_labels(np.asarray(img), mode, threshold, name)


def _binary_labels(data: np.ndarray, mode: str, threshold: int, path: str) -> np.ndarray:
    if mode == "1":
        return data.astype(np.int32)
    if mode in ("RGBA", "LA"):
        alpha = data[..., -1]
        # An opaque alpha holds no mask: the mask is in the colour channels.
        data = alpha if alpha.min() < 255 else data[..., :-1]
    if data.dtype == np.uint8:
        level = threshold
    elif mode.startswith("I"):  # I;16 (16-bit PNG) or I (32-bit ints holding 16-bit values)
        level = threshold * 257
    else:
        raise PromptError(
            f"expected an 8 or 16-bit mask image, found mode {mode} ({data.dtype}) in {path}"
        )
    if data.ndim == 3:
        data = data.max(axis=2)
    if data.max(initial=0) == 1:  # 0/1: a boolean mask written as integers, not a dark image
        return (data == 1).astype(np.int32)
    return (data >= level).astype(np.int32)


def resize_nearest(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W) -> (height, width) nearest neighbour with pixel-centre sampling; values (palette
    indices) are copied, never blended."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


_UNSIGNED = r"(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBER = rf"[+-]?{_UNSIGNED}"
_POINT = re.compile(rf"([+-]?)({_UNSIGNED}),({_NUMBER})")


def parse_points(
    text: str, labels: str | None = None, *, video_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Points from ``"x,y;x,y"`` (labels from ``labels="1,0"``, default all positive) or
    signed tokens ``"+120,80;-40,60"`` (``+`` positive, ``-`` negative, no sign positive).

    Returns ``points``: (N, 2) float32 pixel x, y and ``labels``: (N,) int32, 1 or 0. Points
    outside ``video_size`` (W, H) raise PromptError.
    """
    # "120, 80" is one point: drop the spaces around commas, then split on ';' or spaces.
    tokens = [t for t in re.split(r"[;\s]+", re.sub(r"\s*,\s*", ",", text.strip())) if t]
    if not tokens:
        raise PromptError(f"expected points like '120,80;-40,60', found {text!r}")
    points, signs = [], []
    for token in tokens:
        m = _POINT.fullmatch(token)
        if m is None:
            raise PromptError(f"expected a point 'x,y' or '+x,y' / '-x,y', found {token!r}")
        signs.append(m.group(1))
        points.append((float(m.group(2)), float(m.group(3))))
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    if labels is not None:
        if any(signs):
            raise PromptError(f"expected either signed points or labels, found both: {text!r}")
        lab = _parse_labels(labels, len(points))
    else:
        lab = np.asarray([0 if s == "-" else 1 for s in signs], np.int32)
    if video_size is not None:
        check_inside(pts, video_size, "point")
    return pts, lab


def _parse_labels(text: str, n: int) -> np.ndarray:
    parts = [p.strip() for p in re.split(r"[,;\s]+", text.strip()) if p.strip()]
    if len(parts) != n or any(p not in ("0", "1") for p in parts):
        raise PromptError(f"expected {n} labels of 0 or 1 (one per point), found {text!r}")
    return np.asarray([int(p) for p in parts], np.int32)


def parse_box(text: str, *, video_size: tuple[int, int] | None = None) -> np.ndarray:
    """Box from ``"x0,y0,x1,y1"`` in pixels: (4,) float32 with x0 < x1 and y0 < y1, inside
    ``video_size`` (W, H) when given."""
    parts = [p.strip() for p in text.strip().split(",")]
    if len(parts) != 4 or not all(re.fullmatch(_NUMBER, p) for p in parts):
        raise PromptError(f"expected a box 'x0,y0,x1,y1', found {text!r}")
    box = np.asarray([float(p) for p in parts], np.float32)
    if not (box[0] < box[2] and box[1] < box[3]):
        raise PromptError(f"expected a box with x0 < x1 and y0 < y1, found {text!r}")
    if video_size is not None:
        check_inside(box.reshape(2, 2), video_size, "box corner")
    return box


_FRAME_PREFIX = re.compile(r"^\s*(\d+)\s*:(.*)$", re.DOTALL)
_OBJ_SUFFIX = re.compile(r"^(.*?)\s*@\s*(\d+)\s*$", re.DOTALL)


def split_prompt_option(text: str) -> tuple[int | None, str, int | None]:
    r"""``"[FRAME:]BODY[@OBJ]"`` -> (frame or None, body, object id or None): the CLI's prompt
    options (``--point 120:640,360@2``, ``--mask 40:hand.png``). A Windows drive (``C:\``)
    is not a frame."""
    frame = obj = None
    m = _FRAME_PREFIX.match(text)
    if m is not None:
        frame, text = int(m.group(1)), m.group(2)
    m = _OBJ_SUFFIX.match(text)
    if m is not None:
        text, obj = m.group(1), int(m.group(2))
    return frame, text.strip(), obj


def check_inside(xy: np.ndarray, video_size: tuple[int, int], what: str) -> None:
    """xy: (N, 2) pixel x, y; inside means 0 <= x <= W and 0 <= y <= H (edges included,
    as clicks and boxes are continuous coordinates)."""
    w, h = video_size
    for x, y in xy.tolist():
        if not (0 <= x <= w and 0 <= y <= h):
            raise PromptError(
                f"expected every {what} inside the {w}x{h} frame, found ({x:g}, {y:g})"
            )


def validate_prompt_frame(prompt: Prompt, num_frames: int) -> None:
    """PromptError unless the prompt's frame exists in a clip of ``num_frames`` frames."""
    if not 0 <= prompt.frame_index < num_frames:
        raise PromptError(
            f"expected a prompt frame in 0..{num_frames - 1} (the clip has {num_frames} "
            f"frames), found frame {prompt.frame_index} for object {prompt.obj_id}"
        )


def load_prior(path: str, said: str = "") -> np.ndarray:
    """A prompt's prior: (s, s) float32 low-res mask logits from a ``.npy`` file, read without
    pickles (a job's file runs no code). PromptError naming the file when it is missing or is
    not such an array."""
    try:
        logits = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PromptError(f"{said}prior {path}: no such file") from None
    except (OSError, ValueError) as err:
        raise PromptError(
            f"{said}prior {path}: expected a .npy array of mask logits ({err})"
        ) from None
    if not prior_ok(logits):
        raise PromptError(
            f"{said}prior {path}: expected (s, s) finite float mask logits, found "
            f"{logits.dtype} {logits.shape}"
        )
    return logits.astype(np.float32)

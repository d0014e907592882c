"""Image sequences as a frame source: a folder of PNG/JPG/TIFF/EXR or a printf pattern.

Files are sorted naturally (``f2`` before ``f10``); frame ``i`` is the ``i``-th file, with
``time_base = 1/fps`` and ``pts = i``. 8-bit images give uint8 RGB frames, 16-bit PNG/TIFF give
uint16 RGB, float EXR (scene-linear) is sRGB-encoded and clipped into uint16.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from fractions import Fraction
from pathlib import Path

import numpy as np

from vosfx.errors import InputError
from vosfx.types import Frame, VideoInfo

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")
DEFAULT_FPS = Fraction(24)
_PRINTF = re.compile(r"%(0?\d*)d")


def list_files(path_or_pattern: str | Path) -> list[Path] | None:
    """The sequence's files in frame order, or None when the path is not a sequence (a video).

    Raises InputError for a folder or pattern that matches no image file.
    """
    text = str(path_or_pattern)
    path = Path(text)
    if _PRINTF.search(path.name):
        return _match_pattern(path)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
        if not files:
            raise InputError(
                f"expected image files ({', '.join(IMAGE_EXTS)}) in folder {path}, found none"
            )
        return sorted(files, key=natural_key)
    if path.suffix.lower() in IMAGE_EXTS and path.is_file():
        return [path]
    return None


def is_pattern(path: str | Path) -> bool:
    """Whether ``path`` names a printf pattern (``frames/%05d.png``) rather than a file."""
    return bool(_PRINTF.search(Path(path).name))


def _match_pattern(path: Path) -> list[Path]:
    match = _PRINTF.search(path.name)
    assert match is not None  # list_files calls this only for a printf pattern
    width = match.group(1)
    if not width:
        digits = r"\d+"
    elif width.startswith("0"):  # %05d: exactly 5 digits, zero padded
        digits = rf"\d{{{int(width)}}}"
    else:  # %5d: space padded
        digits = r"\s*\d+"
    regex = re.compile(
        re.escape(path.name[: match.start()])
        + f"({digits})"
        + re.escape(path.name[match.end() :])
        + "$"
    )
    folder = path.parent
    numbered = (
        [(int(m.group(1)), p) for p in folder.iterdir() if (m := regex.match(p.name))]
        if folder.is_dir()
        else []
    )
    if not numbered:
        raise InputError(f"expected files matching {path}, found none in {folder}")
    return [p for _, p in sorted(numbered, key=lambda item: item[0])]


def natural_key(path: Path) -> list:
    """Sort key that orders the digit runs in a name by value: f2 < f10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def probe_files(path: str | Path, files: list[Path], fps) -> VideoInfo:
    """VideoInfo from the first image; the others are checked as they are read."""
    fps = DEFAULT_FPS if fps is None else Fraction(fps).limit_denominator(1_000_000)
    if fps <= 0:
        raise InputError(f"expected an image-sequence fps > 0, found {fps}")
    first = read_image(files[0])
    depth = 8 if first.dtype == np.uint8 else 16
    return VideoInfo(
        path=str(path),
        width=int(first.shape[1]),
        height=int(first.shape[0]),
        num_frames=len(files),
        fps=fps,
        time_base=1 / fps,
        pix_fmt="rgb24" if depth == 8 else "rgb48le",
        bit_depth=depth,
        codec=files[0].suffix.lower().lstrip("."),
        frame_count_exact=True,
    )


def read_frames(
    files: list[Path], info: VideoInfo, start: int, end: int | None
) -> Generator[Frame, None, None]:
    """Frames ``start``..``end`` (exclusive); every image must match the first one's size."""
    stop = len(files) if end is None else min(end, len(files))
    for index in range(start, stop):
        image = read_image(files[index])
        if image.shape[:2] != (info.height, info.width):
            raise InputError(
                f"expected every image of the sequence to be {info.width}x{info.height}, "
                f"found {image.shape[1]}x{image.shape[0]} in {files[index]} (frame {index})"
            )
        if (image.dtype == np.uint8) != (info.bit_depth == 8):
            # Mixed depths would change the frame dtype mid-clip; put them on the first's scale.
            image = (
                image.astype(np.uint16) * 257
                if info.bit_depth == 16
                else (image >> 8).astype(np.uint8)
            )
        yield Frame(index=index, image=image, pts=index, time_base=info.time_base, duration=1)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 or uint16 RGB from a PNG/JPG/TIFF/EXR file; alpha is dropped."""
    if path.suffix.lower() == ".exr":
        linear = _read_exr(path)
        if linear is not None:
            return _linear_to_srgb16(linear)
    # cv2 reads EXR only when this is set before its first EXR read (OpenCV >= 4.5.2).
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    import cv2

    try:
        data = np.fromfile(path, np.uint8)  # fromfile + imdecode: non-ASCII paths work too
    except OSError as e:
        raise InputError(f"expected a readable image at {path}: {e}") from e
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        if path.suffix.lower() == ".exr":
            raise InputError(
                f"cannot read {path}: EXR needs the OpenEXR package (pip install OpenEXR) or an "
                f"OpenCV built with OpenEXR, and this one ({cv2.__version__}) is not; or convert "
                "the sequence to 16-bit PNG or TIFF"
            )
        raise InputError(f"expected an image file, {path} cannot be decoded as one")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    image = cv2.cvtColor(image, code)
    if image.dtype in (np.float32, np.float64):
        image = _linear_to_srgb16(image)
    elif image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"expected 8-bit, 16-bit or float images, found {image.dtype} in {path}")
    return image


def _read_exr(path: Path) -> np.ndarray | None:
    """(H, W, 3) float32 scene-linear RGB of an EXR's first part through the OpenEXR package,
    or None when that package is not installed (then cv2 gets a try)."""
    try:
        import OpenEXR
    except ImportError:
        return None
    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            channels = {name: ch.pixels for name, ch in exr.channels().items()}
    except Exception as e:
        raise InputError(f"expected a readable EXR image, {path} fails: {e}") from e
    if all(c in channels for c in "RGB"):
        planes = [channels[c] for c in "RGB"]
    elif "Y" in channels:  # luminance-only EXR
        planes = [channels["Y"]] * 3
    else:
        raise InputError(f"expected R, G, B (or Y) channels in {path}, found {sorted(channels)}")
    return np.stack(planes, axis=2).astype(np.float32)


def _linear_to_srgb16(linear: np.ndarray) -> np.ndarray:
    """(H, W, 3) float scene-linear -> uint16 sRGB-encoded, clipped to [0, 1]: the model was
    trained on display-referred images."""
    x = np.clip(linear.astype(np.float32), 0.0, 1.0)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.round(srgb * 65535.0).astype(np.uint16)

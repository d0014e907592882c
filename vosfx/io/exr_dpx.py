"""EXR and DPX images, read for an image-sequence source (:mod:`vosfx.io.sequence`).

EXR is scene-linear float (the OpenEXR package where it is installed, else FFmpeg's decoder
through PyAV); the caller encodes it to sRGB for the model. DPX (film scans, Resolve and Nuke
plates: 8, 10, 12 or 16-bit RGB) goes through FFmpeg's decoder to 16-bit RGB, its code values
as stored: a log-encoded (Cineon) scan reaches the model as its flat log picture, not
converted to display light (the matte lines up with it all the same).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vosfx.errors import InputError


def read_exr(path: Path) -> np.ndarray | None:
    """(H, W, 3) float32 scene-linear RGB of an EXR's first part through the OpenEXR package,
    or None when that package is not installed (then FFmpeg's decoder reads it)."""
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


# FFmpeg's EXR decoder gives planar G, B, R(, A) or one grey plane, half or float
_EXR_PLANES = {"gbrp": (2, 0, 1), "gbrap": (2, 0, 1), "gray": (0, 0, 0)}


def read_exr_ffmpeg(path: Path) -> np.ndarray:
    """(H, W, 3) float32 scene-linear RGB of an EXR through FFmpeg's decoder (PyAV): its
    values as stored, no transfer applied (equal to the OpenEXR package's but for DWA's lossy
    blocks, within 3e-3). Alpha is dropped, a luminance-only image gives grey."""
    import av

    if _exr_compression(path) in ("DWAA", "DWAB"):
        raise InputError(
            f"cannot read {path}: DWA-compressed EXR needs the OpenEXR package (pip install "
            "'vosfx[exr]'): FFmpeg's decoder, which reads every other EXR, gets some of them "
            "wrong"
        )
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.FFmpegError, StopIteration, OSError) as e:
        raise InputError(f"expected a readable EXR image, {path} fails: {e}") from e
    name = frame.format.name
    kind, _, depth = name.rpartition("f")
    order = _EXR_PLANES.get(kind)
    if order is None or depth not in ("16le", "32le"):
        raise InputError(f"expected an RGB or Y EXR image, {path} decodes as {name}")
    dtype = np.float16 if depth == "16le" else np.float32
    planes = [
        np.frombuffer(memoryview(p), dtype).reshape(frame.height, -1)[:, : frame.width]
        for p in frame.planes
    ]
    return np.stack([planes[i] for i in order], axis=2).astype(np.float32)


_EXR_COMPRESSIONS = ("NONE", "RLE", "ZIPS", "ZIP", "PIZ", "PXR24", "B44", "B44A", "DWAA", "DWAB")


def _exr_compression(path: Path) -> str | None:
    """The ``compression`` attribute of an EXR's (first) header, or None where the file has
    no readable header (the decoder then says what is wrong)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if head[:4] != b"\x76\x2f\x31\x01":
        return None
    at = 8
    while at < len(head) and head[at] != 0:  # name\0 type\0 size value, up to an empty name
        name_end = head.find(b"\0", at)
        type_end = head.find(b"\0", name_end + 1)
        if name_end < 0 or type_end < 0 or type_end + 5 > len(head):
            return None
        size = int.from_bytes(head[type_end + 1 : type_end + 5], "little", signed=True)
        value = type_end + 5
        if head[at:name_end] == b"compression" and size == 1 and value < len(head):
            code = head[value]
            return _EXR_COMPRESSIONS[code] if code < len(_EXR_COMPRESSIONS) else None
        if size < 0:
            return None
        at = value + size
    return None


def read_dpx(path: Path) -> np.ndarray:
    """(H, W, 3) uint16 RGB of a DPX image through FFmpeg's decoder (PyAV), its code values
    scaled to 16 bits (10-bit 1023 -> 65535); alpha is dropped, a luminance-only image gives
    grey."""
    import av

    try:
        with av.open(str(path), format="image2") as container:
            frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb48le")
    except (av.FFmpegError, StopIteration, OSError, ValueError) as e:
        raise InputError(f"expected a readable DPX image, {path} fails: {e}") from e

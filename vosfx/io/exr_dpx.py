"""EXR and DPX images, read for an image-sequence source (:mod:`vosfx.io.sequence`).

EXR is scene-linear float (the OpenEXR package where it is installed, else FFmpeg's decoder
through PyAV); the caller encodes it to sRGB for the model. DPX (film scans, Resolve and Nuke
plates: 8, 10, 12 or 16-bit RGB) goes through FFmpeg's decoder to 16-bit RGB, its code values
as stored, but where its header says the values are a log scan (Cineon) or linear light:
those are converted to linear light, and then to sRGB for the model as EXR is, so that the
model sees a picture, not a flat log image.
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


# DPX's transfer characteristic (image element 1's byte at 801): printing density (Cineon) and
# logarithmic are log scans, 2 is linear light; the others are video code values
DPX_LOG, DPX_LINEAR = (1, 3), (2,)
# the Cineon conversion every compositor applies by default (Kodak's: black at code 95, white
# at 685 of 1023, 0.002 density per code value, a film gamma of 0.6)
CINEON_BLACK, CINEON_WHITE, CINEON_STEP, CINEON_GAMMA = 95, 685, 0.002, 0.6


def read_dpx(path: Path) -> np.ndarray:
    """A DPX image through FFmpeg's decoder (PyAV): (H, W, 3) uint16 RGB, its code values
    scaled to 16 bits (10-bit 1023 -> 65535), or float32 scene-linear RGB where its header
    says the values are a log scan (printing density, logarithmic: the Cineon conversion) or
    linear light; the caller encodes those to sRGB for the model, as EXR's. Alpha is dropped,
    a luminance-only image gives grey."""
    import av

    try:
        with open(path, "rb") as f:
            head = f.read(804)
        with av.open(str(path)) as container:  # FFmpeg's dpx_pipe: a "%" in a name is no pattern
            frame = next(container.decode(video=0))
        codes = frame.to_ndarray(format="rgb48le")
    except (av.FFmpegError, StopIteration, OSError, ValueError) as e:
        raise InputError(f"expected a readable DPX image, {path} fails: {e}") from e
    transfer = head[801] if len(head) == 804 and head[:4] in (b"SDPX", b"XPDS") else None
    if transfer in DPX_LOG:
        bits = head[803] if head[803] in (8, 10, 12, 16) else 16
        return cineon_to_linear(codes, bits)
    if transfer in DPX_LINEAR:
        return codes.astype(np.float32) / 65535
    return codes


def cineon_to_linear(codes: np.ndarray, bits: int = 10) -> np.ndarray:
    """Code values of a Cineon log scan stored at ``bits``, scaled to 16 bits as the decoder
    gives them (their top bits repeated below), -> float32 linear light (code 95 of 1023 is
    0, 685 is 1, above it over-range)."""
    black = 10.0 ** ((CINEON_BLACK - CINEON_WHITE) * CINEON_STEP / CINEON_GAMMA)
    stored = (codes >> (16 - bits)).astype(np.float32)  # the file's own codes, exactly
    ten_bit = stored * (1023 / (2**bits - 1))
    light = 10.0 ** ((ten_bit - CINEON_WHITE) * (CINEON_STEP / CINEON_GAMMA))
    return ((light - black) / (1 - black)).astype(np.float32)

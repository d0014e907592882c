"""Synthetic media for tests: small clips, image sequences and masks, made on the fly.

Pure functions; any test module may import them (``from tests.media import make_clip`` or
``from media import make_clip`` with tests/ on sys.path). The moving square has a known mask on
every frame, so trackers and writers can be checked against ground truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

BACKGROUND = (40, 90, 160)  # RGB, 8-bit
FOREGROUND = (235, 200, 30)


def square_box(i: int, width: int, height: int, side: int | None = None) -> tuple[int, ...]:
    """(x0, y0, x1, y1), x1/y1 exclusive, of the square on frame ``i``: it moves right and down
    by 1/64 of the frame per frame, bouncing, so it stays fully inside."""
    side = side or max(2, min(width, height) // 4)
    span_x, span_y = max(1, width - side), max(1, height - side)
    step_x, step_y = max(1, width // 64), max(1, height // 64)
    x0 = _bounce(i * step_x, span_x)
    y0 = _bounce(i * step_y, span_y)
    return x0, y0, x0 + side, y0 + side


def _bounce(t: int, span: int) -> int:
    t %= 2 * span
    return t if t <= span else 2 * span - t


def moving_square_frame(
    i: int, width: int, height: int, *, side: int | None = None, depth: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``i`` of the moving-square clip.

    Returns ``image``: (H, W, 3) RGB, uint8 for depth 8, else uint16 holding ``depth``-bit
    values (a 10-bit frame has values in [0, 1023]); a horizontal gradient background so codecs
    see texture. ``mask``: (H, W) bool, True on the square.
    """
    scale = (1 << depth) - 1
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float64)[None, :, None]
    bg = np.asarray(BACKGROUND, np.float64)[None, None, :] / 255.0
    image = (0.6 * bg + 0.4 * ramp) * np.ones((height, 1, 1))
    x0, y0, x1, y1 = square_box(i, width, height, side)
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    image[mask] = np.asarray(FOREGROUND, np.float64) / 255.0
    out = np.round(image * scale)
    return out.astype(np.uint8 if depth == 8 else np.uint16), mask


def moving_square(n: int, width: int, height: int, **kwargs) -> Iterator[np.ndarray]:
    """The images of ``n`` moving-square frames (see ``moving_square_frame``)."""
    for i in range(n):
        yield moving_square_frame(i, width, height, **kwargs)[0]


def make_clip(
    path: str | Path,
    n: int = 24,
    width: int = 64,
    height: int = 48,
    *,
    fps: int | Fraction = 24,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    vfr: bool = False,
    rotation: int = 0,
    frames: Iterable[np.ndarray] | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    faststart: bool = False,
    audio: bool = False,
    options: dict[str, str] | None = None,
    bt709: bool = False,
) -> Path:
    """Write a clip with PyAV and return its path.

    ``frames``: (H, W, 3) arrays, uint8 RGB or uint16 holding 10-bit values written as
    ``gbrp10le`` (exact with ffv1); default the moving square at the depth ``pix_fmt`` implies.
    ``vfr``: irregular pts (in ``time_base``, default 1/1000; use .mkv) unless ``pts`` given.
    ``rotation``: clockwise display rotation in degrees, stored as the display matrix.
    ``faststart``: mp4 moov atom first, so a truncated copy still opens.
    With no frames and no audio the muxer writes no file at all; mp4 drops an empty video
    stream, mkv keeps it. ``bt709``: RGB frames converted with the BT.709 matrix (video
    range) and the stream tagged so, like camera footage (default: FFmpeg's untagged BT.601).
    """
    import av

    path = Path(path)
    depth = 10 if "10" in pix_fmt else 8
    if frames is None:
        frames = moving_square(n, width, height, depth=depth)
    if vfr and pts is None:
        rng = np.random.default_rng(0)
        pts = np.cumsum(np.concatenate([[0], rng.integers(20, 90, n - 1)])).tolist()
    if pts is not None and time_base is None:
        time_base = Fraction(1, 1000)
    container_options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as out:
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(-rotation)  # PyAV's angle is counterclockwise
        if bt709:
            cc = stream.codec_context
            cc.colorspace = cc.color_primaries = cc.color_trc = 1  # AVCOL_*_BT709
            cc.color_range = 1  # video range
        astream = _add_audio(out) if audio else None
        for i, image in enumerate(frames):
            fmt = "rgb24" if image.dtype == np.uint8 else "gbrp10le"
            frame = av.VideoFrame.from_ndarray(image, format=fmt)
            if bt709:
                frame = frame.reformat(format=pix_fmt, dst_colorspace="itu709", dst_color_range=1)
                frame.colorspace, frame.color_range = 1, 1
            if pts is not None:
                frame.pts, frame.time_base = int(pts[i]), time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if astream is not None:
            _write_silence(astream, out, seconds=n / float(fps))
    return path


def _add_audio(out):
    stream = out.add_stream("aac", rate=48000)
    stream.layout = "mono"
    return stream


def _write_silence(stream, out, seconds: float) -> None:
    import av

    samples = np.zeros((1, max(1024, int(seconds * 48000))), np.float32)
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate = 48000
    out.mux(stream.encode(frame))
    out.mux(stream.encode())


def make_sequence(
    folder: str | Path,
    n: int = 8,
    width: int = 64,
    height: int = 48,
    *,
    ext: str = "png",
    depth: int = 8,
    name: str = "{:05d}",
    first: int = 0,
) -> Path:
    """Write ``n`` moving-square images ``folder/<name>.<ext>`` (16-bit for depth 16; 16-bit
    needs png or tif) and return the folder. Names come from ``name.format(first + i)``."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, _ = moving_square_frame(i, width, height, depth=depth)
        file = folder / f"{name.format(first + i)}.{ext}"
        if not cv2.imwrite(str(file), np.ascontiguousarray(image[:, :, ::-1])):
            raise OSError(f"cv2 could not write {file}")
    return folder


def truncate(path: str | Path, keep: float, dest: str | Path | None = None) -> Path:
    """Copy of ``path`` whose media data stops part way: for an mp4/mov with its ``moov``
    index first (``faststart``), everything up to the ``mdat`` payload plus the first ``keep``
    fraction of it; for other files, the first ``keep`` fraction of the bytes. Written to
    ``dest`` or ``<stem>_cut<suffix>``; the index still promises every frame."""
    path = Path(path)
    dest = Path(dest) if dest else path.with_name(f"{path.stem}_cut{path.suffix}")
    data = path.read_bytes()
    start = _mdat_payload_offset(data)
    if start is None:
        cut = int(len(data) * keep)
    else:
        cut = start + int((len(data) - start) * keep)
    dest.write_bytes(data[:cut])
    return dest


def _mdat_payload_offset(data: bytes) -> int | None:
    """Offset of the first byte inside the top-level ``mdat`` box, None if there is none or the
    index comes after it (then cutting the data would cut the index too)."""
    offset, seen_moov = 0, False
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        header = 8
        if size == 1:  # 64-bit largesize follows the type
            size, header = int.from_bytes(data[offset + 8 : offset + 16], "big"), 16
        if kind == b"moov":
            seen_moov = True
        if kind == b"mdat":
            return offset + header if seen_moov else None
        if size < header:
            return None
        offset += size
    return None


def make_ycbcr_clip(
    path: str | Path,
    planes: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    pix_fmt: str = "yuv420p",
    colorspace: int = 1,
    color_range: int = 1,
    primaries: int = 2,
    transfer: int = 2,
    rotation: int = 0,
    fps: int = 24,
) -> Path:
    """A lossless FFV1 Matroska clip of the given Y'CbCr planes (Y, Cb, Cr codes of
    ``pix_fmt``), tagged ``colorspace`` (1 BT.709, 5 BT.601, 2 unspecified) and
    ``color_range`` (1 video, 2 full), ``primaries`` and ``transfer`` (AVColorPrimaries and
    AVColorTransferCharacteristic numbers, 2 unspecified): decoding gives these planes back
    exactly."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = None
        for planes_of_frame in planes:
            y = planes_of_frame[0]
            if stream is None:
                stream = out.add_stream("ffv1", rate=fps)
                stream.width, stream.height, stream.pix_fmt = y.shape[1], y.shape[0], pix_fmt
                cc = stream.codec_context
                cc.colorspace, cc.color_range = colorspace, color_range
                cc.color_primaries, cc.color_trc = primaries, transfer
                if rotation:
                    stream.set_display_rotation(-rotation)
            frame = av.VideoFrame(y.shape[1], y.shape[0], pix_fmt)
            for plane, src in zip(frame.planes, planes_of_frame):
                buf = np.frombuffer(plane, dtype=src.dtype)
                rows = buf[: plane.height * (plane.line_size // src.itemsize)]
                rows.reshape(plane.height, -1)[:, : plane.width] = src
            frame.colorspace, frame.color_range = colorspace, color_range
            frame.color_primaries, frame.color_trc = primaries, transfer
            out.mux(stream.encode(frame))
        assert stream is not None, "expected at least one frame"
        out.mux(stream.encode())
    return path


def ycbcr_planes(
    i: int, width: int, height: int, sx: int = 2, sy: int = 2, bits: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y'CbCr planes of frame ``i`` with detail in every plane and colours outside the RGB
    cube (saturated chroma on mid luma), which an RGB round trip would clip."""
    dtype = np.uint8 if bits == 8 else np.uint16
    k = 1 << (bits - 8)
    yy, xx = np.mgrid[:height, :width]
    y = (16 + (xx * 3 + yy * 2 + i * 5) % 220) * k
    ch, cw = -(-height // sy), -(-width // sx)
    cy, cx = np.mgrid[:ch, :cw]
    cb = (16 + (cx * 7 + i * 3) % 225) * k
    cr = (240 - (cy * 5 + cx + i) % 225) * k
    return y.astype(dtype), cb.astype(dtype), cr.astype(dtype)

"""Video files through PyAV: probe (rotation, VFR, depth, counts) and exact-index decoding.

Used by ``vosfx.io.source``, which adds the prefetch thread; import PyAV only inside functions
so importing this module stays light.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vosfx.cpus import thread_share
from vosfx.errors import InputError
from vosfx.types import YCBCR_MATRICES, Colour, Frame, SourceYCbCr, VideoInfo

if TYPE_CHECKING:
    import av

# Packets demuxed by probe() to judge a variable frame rate; 64 is ~2.7 s at 24 fps, enough to
# see the irregular pts of phone footage and cheap (no decoding) even for 4K streams. Packets
# come in decode order, so B-frame reordering leaves holes among the largest pts read: read
# _VFR_REORDER_SLACK more and judge only the smallest _VFR_PROBE_PACKETS.
_VFR_PROBE_PACKETS = 64
_VFR_REORDER_SLACK = 32
# Seek instead of decoding from frame 0 only past this many frames: a seek costs one keyframe
# decode, and below a couple of GOPs decoding through is as fast and needs no pts arithmetic.
_SEEK_MIN_FRAMES = 48


def open_container(path: Path):
    import av

    if not path.exists():
        raise InputError(f"expected a video file or image folder, found nothing at {path}")
    if path.is_dir():
        raise InputError(f"expected image files (png, jpg, tif, exr) in folder {path}, found none")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise InputError(f"expected a video file, but {path} cannot be opened as one: {e}") from e


def probe_video(path: Path) -> VideoInfo:
    with open_container(path) as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise InputError(f"expected a video stream in {path}, found streams: {kinds}")
        stream = container.streams.video[0]
        pts, first, trimmed = _scan_packets(container, stream, path)
        if first is None:
            raise InputError(f"expected at least one frame in {path}, found none that decodes")
        _check_convertible(first, path)
        rotation = (-round(first.rotation / 90) * 90) % 360  # FFmpeg's angle is counterclockwise
        fps = stream.average_rate or stream.guessed_rate
        time_base = stream.time_base or Fraction(1, 1)
        num_frames, exact = _frame_count(container, stream, fps)
        declared = None
        if not exact or trimmed:
            # an edit list (an MP4/MOV cut without re-encoding) hides its first packets: the
            # container's count includes them, the decoder drops them
            estimate, counted = num_frames, _count_packets(path)
            num_frames = counted or num_frames
            if not exact and counted and estimate - counted > max(1, estimate // 100):
                declared = estimate  # its duration says more frames than it holds
        if exact and num_frames == 0:
            raise InputError(f"expected at least one frame in {path}, the container says 0")
        width, height = (
            (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        )
        return VideoInfo(
            path=str(path),
            width=width,
            height=height,
            num_frames=num_frames,
            fps=Fraction(fps) if fps else None,
            time_base=Fraction(time_base),
            rotation=rotation,
            pix_fmt=first.format.name,  # the source's; frames are rgb24 or rgb48le
            bit_depth=_bit_depth(first.format),
            codec=stream.codec_context.name,
            is_vfr=_looks_vfr(pts),
            has_audio=bool(container.streams.audio),
            frame_count_exact=exact,
            declared_frames=declared,
            timecode=_timecode(container, stream),
            colour=source_colour(first),
            pixel_aspect=_pixel_aspect(stream, rotation),
            start_pts=int(stream.start_time)
            if stream.start_time is not None
            else (min(pts) if pts else 0),
        )


def _pixel_aspect(stream, rotation: int) -> Fraction:
    """The stream's sample aspect ratio (1 when unset), inverted by a quarter turn."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if not sar or sar <= 0:
        return Fraction(1)
    return 1 / Fraction(sar) if rotation in (90, 270) else Fraction(sar)


def _timecode(container, stream) -> str:
    """The source's start timecode: the video stream's, a tmcd data track's (QuickTime) or
    the container's (MXF, Matroska tags); "" when none."""
    for meta in (
        [stream.metadata]
        + [s.metadata for s in container.streams if s.type == "data"]
        + [container.metadata]
    ):
        tc = meta.get("timecode") or meta.get("TIMECODE")
        if tc:
            return str(tc)
    return ""


def _scan_packets(container, stream, path: Path):
    """Demux the first packets: their pts (for VFR), the first decoded frame, and whether
    any is marked discard (decoded only as a reference, never shown: what an edit list makes
    of the frames before a cut's in point)."""
    import av

    pts: list[int] = []
    first = None
    trimmed = False
    try:
        for packet in container.demux(stream):
            trimmed = trimmed or packet.is_discard
            if packet.pts is not None and not packet.is_discard:
                pts.append(int(packet.pts))
            if first is None:
                frames = stream.decode(packet)  # packet.size == 0 flushes at end of stream
                first = frames[0] if frames else None
            if len(pts) >= _VFR_PROBE_PACKETS + _VFR_REORDER_SLACK and first is not None:
                return sorted(pts)[:_VFR_PROBE_PACKETS], first, trimmed
    except av.error.FFmpegError as e:
        raise InputError(
            f"expected a readable video, {path} fails in its first packets: {e}"
        ) from e
    return pts, first, trimmed


def _frame_count(container, stream, fps) -> tuple[int, bool]:
    if stream.frames and stream.frames > 0:
        return int(stream.frames), True
    if fps:
        if stream.duration is not None and stream.time_base is not None:
            return max(1, round(stream.duration * stream.time_base * fps)), False
        if container.duration is not None:
            return max(1, round(Fraction(container.duration, 1_000_000) * fps)), False
    return 0, False


def _count_packets(path: Path) -> int:
    """The video packets of a container that keeps no frame count (Matroska, WebM, MPEG-TS),
    counted by demuxing (no decoding; cached per file version, as a render probes its input
    more than once). A duration x rate estimate undercounts whenever the rate tag is lower
    than the frames' real rate, and the render then stopped early; one packet a frame (or an
    extra invisible one) makes this an upper bound, which decoding to the stream's end
    tolerates. Still not exact: a truncated file is not told from a short clip. Packets an
    edit list marks discard (before a cut's in point) are decoded but never shown: not
    counted."""
    stat = path.stat()
    return _count_packets_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _count_packets_of(path: str, _size: int, _mtime_ns: int) -> int:
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            return sum(
                1 for packet in container.demux(stream) if packet.size and not packet.is_discard
            )
    except av.error.FFmpegError:
        return 0  # unreadable further on: decoding will say where


def _looks_vfr(pts: list[int]) -> bool:
    """True when the pts steps of the first packets differ by more than 10 % (and a tick):
    1 ms mkv time bases round a 24 fps step to 41/42 ticks, which is still constant rate."""
    if len(pts) < 3:
        return False
    steps: np.ndarray = np.diff(np.sort(np.asarray(pts, np.int64)))  # (N-1,) int64 ticks
    steps = steps[steps > 0]
    if steps.size < 2:
        return False
    median = float(np.median(steps))
    return bool(np.max(np.abs(steps - median)) > max(1.0, 0.1 * median))


def _bit_depth(fmt) -> int:
    return max((c.bits for c in fmt.components), default=8)


def rgb_layout(bit_depth: int) -> str:
    """The RGB layout frames are converted to: rgb24 (uint8) up to 8 bits, rgb48le (uint16,
    full 16-bit scale) above."""
    return "rgb48le" if bit_depth > 8 else "rgb24"


def _check_convertible(frame, path: Path) -> None:
    """InputError unless the frame's pixel format converts to RGB (hardware frames do not)."""
    import av

    fmt = rgb_layout(_bit_depth(frame.format))
    try:
        frame.to_ndarray(format=fmt)
    except (ValueError, NotImplementedError, av.error.FFmpegError) as e:
        raise InputError(
            f"expected a pixel format convertible to {fmt}, found {frame.format.name} "
            f"in {path}: {e}"
        ) from e


def _to_image(frame, fmt: str, rotation: int, matrix: int) -> np.ndarray:
    """(H, W, 3) uint8 (rgb24) or uint16 (rgb48le, full 16-bit scale), display-rotated;
    ``matrix``: :func:`ycbcr_matrix` of the frame."""
    kwargs = {}
    if frame.color_range:  # unspecified means limited range to swscale; keep full range as is
        kwargs["src_color_range"] = frame.color_range
    if matrix != frame.colorspace:  # an untagged frame
        kwargs["src_colorspace"] = matrix
    image = frame.to_ndarray(format=fmt, **kwargs)
    if rotation:
        # np.rot90 turns counterclockwise; the info's rotation is clockwise.
        image = np.ascontiguousarray(np.rot90(image, k=(360 - rotation) // 90))
    return image


# Pixel formats whose planes are kept as the frame's Y'CbCr (SourceYCbCr): 8 and 10 bits,
# 4:2:0 / 4:2:2 / 4:4:4 planar, the formats of nearly all camera and editing codecs.
_YCBCR_PLANES = {
    f"yuv{c}p{d}": (np.uint8 if d == "" else np.uint16, 8 if d == "" else 10)
    for c in ("420", "422", "444")
    for d in ("", "10le")
}
_AVCOL_SPC_BT709 = 1  # AVColorSpace
_AVCOL_SPC_UNSPECIFIED = 2
_AVCOL_SPC_SMPTE170M = 6  # BT.601 (NTSC's tag)
_AVCOL_RANGE_JPEG = 2  # full range (0 unspecified and 1 limited are video range to swscale)


def ycbcr_matrix(frame) -> int:
    """The AVColorSpace to decode the frame's Y'CbCr with: its own tag, or for an untagged
    frame what editors and players assume (Resolve, Premiere, mpv): BT.709 for HD (1280
    wide or more, or taller than 576), BT.601 below (what swscale takes for every untagged
    frame; an HD clip's colours then shifted against the source as an editor shows it)."""
    if frame.colorspace != _AVCOL_SPC_UNSPECIFIED or frame.format.is_rgb:
        return int(frame.colorspace)
    hd = frame.width >= 1280 or frame.height > 576
    return _AVCOL_SPC_BT709 if hd else _AVCOL_SPC_SMPTE170M


def source_colour(frame) -> Colour:
    """The :class:`Colour` a video's outputs take from its first frame: the matrix its RGB is
    decoded with (BT.709 for RGB video and for matrices vosfx does not convert with, which
    its outputs then are converted to), the primaries and transfer as tagged; an untagged HD
    frame is BT.709 throughout, as the editors take it."""
    if frame.format.is_rgb:
        return Colour()
    matrix = ycbcr_matrix(frame)
    primaries, transfer = int(frame.color_primaries), int(frame.color_trc)
    if matrix == _AVCOL_SPC_BT709 and frame.colorspace == _AVCOL_SPC_UNSPECIFIED:
        primaries = primaries if primaries != _AVCOL_SPC_UNSPECIFIED else 1
        transfer = transfer if transfer != _AVCOL_SPC_UNSPECIFIED else 1
    return Colour(matrix if matrix in YCBCR_MATRICES else 1, primaries, transfer)


def source_ycbcr(frame, rotation: int, matrix: int) -> SourceYCbCr | None:
    """The frame's own planes when they are video-range Y'CbCr in one of the matrices vosfx
    converts with (:data:`~vosfx.types.YCBCR_MATRICES`) that the RGB image was made from
    unrotated; None otherwise (the writers then convert the RGB image). ``matrix``:
    :func:`ycbcr_matrix` of the frame."""
    layout = _YCBCR_PLANES.get(frame.format.name)
    if (
        layout is None
        or rotation
        or matrix not in YCBCR_MATRICES
        or frame.color_range == _AVCOL_RANGE_JPEG
    ):
        return None
    dtype, bits = layout
    # Views, not copies: each holds the decoded frame, whose buffers FFmpeg counts references
    # to, so the decoder's pool hands them out again only once the last view is gone (a
    # copy was a new 3 MB a 1080p frame, its pages faulted in fresh). Read-only: the decoder
    # may still read them as reference pictures.
    y, cb, cr = plane_views(frame, dtype)
    for view in (y, cb, cr):
        view.flags.writeable = False
    return SourceYCbCr(y, cb, cr, bits, matrix)


def plane_views(vf: av.VideoFrame, dtype: type[np.generic]) -> list[np.ndarray]:
    """Writable (height, width) views of each plane of ``vf`` (row padding left out), so
    OpenCV can write the codes straight into the frame the encoder reads."""
    views = []
    for plane in vf.planes:
        # numpy's stub takes only bytes-like objects before Python 3.12; a plane is a buffer
        buf = np.frombuffer(plane, dtype=dtype)  # type: ignore[call-overload]
        rows = buf[: plane.height * (plane.line_size // buf.itemsize)].reshape(plane.height, -1)
        views.append(rows[:, : plane.width])
    return views


def decode_video(
    path: Path, info: VideoInfo, start: int, end: int | None, *, ycbcr: bool = False
) -> Generator[Frame, None, None]:
    """Frames ``start``..``end`` of a video, presentation order, exact pts. ``ycbcr``: keep
    each frame's own planes as ``derived["ycbcr"]`` where :func:`source_ycbcr` allows."""
    import av

    index = -1
    for index, frame in _indexed_frames(path, info, start):
        if end is not None and index >= end:
            break
        if index >= start:
            matrix = ycbcr_matrix(frame)
            try:
                image = _to_image(frame, rgb_layout(info.bit_depth), info.rotation, matrix)
            except (ValueError, av.error.FFmpegError) as e:  # e.g. a mid-stream format change
                raise InputError(
                    f"expected frame {index} of {path} to convert to RGB like the first "
                    f"({info.pix_fmt}), found {frame.format.name} {frame.width}x{frame.height}: {e}"
                ) from e
            if image.shape[:2] != (info.height, info.width):
                raise InputError(
                    f"expected every frame of {path} to be {info.width}x{info.height}, found "
                    f"{image.shape[1]}x{image.shape[0]} at frame {index} (a mid-stream size "
                    "change is not supported)"
                )
            planes = source_ycbcr(frame, info.rotation, matrix) if ycbcr else None
            yield Frame(
                index=index,
                image=image,
                pts=frame.pts,
                time_base=info.time_base,
                duration=frame.duration,
                derived={} if planes is None else {"ycbcr": planes},
            )
    else:
        index += 1  # ran to the end of the stream: index is now the number of frames
        expected = info.num_frames if end is None else min(end, info.num_frames)
        if info.frame_count_exact and index < expected:
            raise InputError(
                f"expected {expected} frames in {path} (the container's count), decoding "
                f"stopped at frame {index}: the file is truncated or corrupt"
            )
        if index <= start:
            raise InputError(f"expected frames from {start} on in {path}, decoded {index}")


def _indexed_frames(path: Path, info: VideoInfo, start: int):
    """(index, av.VideoFrame) pairs from a frame at or before ``start`` to the end.

    Seeks only in constant-rate clips with an exact count, where a frame's index is
    (pts - start_pts) * time_base * fps, an exact integer; if the seek lands anywhere it
    cannot place exactly, decoding starts over from frame 0 (correct first, fast second).
    """
    if start >= _SEEK_MIN_FRAMES and not info.is_vfr and info.fps and info.frame_count_exact:
        with open_container(path) as container:
            stream = container.streams.video[0]
            _threaded(stream)
            target = info.start_pts + round(Fraction(start) / info.fps / info.time_base)
            container.seek(target, stream=stream, backward=True, any_frame=False)
            decoded = container.decode(stream)
            first = _next_frame(decoded, path, f"after seeking to frame {start}")
            index = None if first is None else _index_from_pts(first.pts, info)
            if index is not None and index <= start:
                yield index, first
                yield from _numbered(decoded, path, index + 1)
                return
    with open_container(path) as container:
        stream = container.streams.video[0]
        _threaded(stream)
        yield from _numbered(container.decode(stream), path, 0)


def _threaded(stream) -> None:
    """Decode with frame/slice threads: as many as the cores, or a batch worker's share."""
    stream.thread_type = "AUTO"
    stream.thread_count = thread_share()


def _numbered(decoded, path: Path, index: int):
    """(index, frame) pairs counting up from ``index``."""
    while (frame := _next_frame(decoded, path, f"at frame {index}")) is not None:
        yield index, frame
        index += 1


def _next_frame(decoded, path: Path, where: str):
    """The next frame, None at the end; a decoder error says where it happened."""
    import av

    try:
        return next(decoded, None)
    except av.error.FFmpegError as e:
        raise InputError(f"expected a decodable video, decoding {path} failed {where}: {e}") from e


def _index_from_pts(pts: int | None, info: VideoInfo) -> int | None:
    if pts is None or not info.fps:
        return None
    exact = (pts - info.start_pts) * info.time_base * info.fps
    index = round(exact)
    return index if abs(exact - index) < Fraction(1, 100) else None

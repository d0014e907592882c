"""Video writers (PyAV): alpha video, luma mattes and the preview overlay, with audio carried
over from the source.

Pixel data goes to the encoder as planes this module fills itself (video range, in the
source's Y'CbCr matrix and tagged with its primaries and transfer: ``VideoInfo.colour``,
BT.709 unless the source says BT.601 or BT.2020; luma mattes BT.709), not through swscale:
FFmpeg 8's swscale, converting rgba64 to yuva444p10le, now and then writes a run of alpha =
0.5 into the output when the width is not a multiple of 16 (seen at 854x480 and 66x38;
nondeterministic), and the alpha is the product. Doing the matrix here
also keeps the matte's values exact (alpha 1.0 -> code 1023, not a rounding of a rounding).
(Its yuv420p -> yuv444p10le does the like: rows of 512 in the luma at 854x480, seen while
testing the source-plane path below.) Straight-alpha Y'CbCr video of a video-range source
takes the source's own Y'CbCr planes (``Frame.derived["ycbcr"]``) instead of converting its
RGB back: the same codes the editor would read from the source.

Timing: every frame is encoded with the source frame's own pts and time base, so a VFR source
stays VFR and the output lines up frame for frame in an editor; the stream's rate is the
source's average rate. The output starts at 0 with the first frame rendered (``--start``
moves the timecode, not the timestamps), like its timecode track. Audio: see
``AudioCarrier`` (mov, mkv, webm and mp4 outputs): the rendered range only, aligned.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vosfx.cpus import thread_share
from vosfx.errors import OutputError
from vosfx.formats import ALPHA_VIDEO, COMPOSITE, MATTE_VIDEO, PREVIEW
from vosfx.io.video import plane_views
from vosfx.io.writers.base import Writer, frame_rgb01, premultiply
from vosfx.io.writers.framepool import FramePool
from vosfx.types import YCBCR_MATRICES, Colour, Frame, Matte, SourceYCbCr

if TYPE_CHECKING:
    import av
    from av.container import OutputContainer

    from vosfx.io.writers.audio import AudioCarrier
    from vosfx.io.writers.backdrop import Backdrop


@functools.cache
def ycbcr_matrix_of(matrix: int) -> np.ndarray:
    """(3, 3) float32 RGB -> Y'CbCr for an AVColorSpace of :data:`~vosfx.types.YCBCR_MATRICES`:
    rows Y' in [0, 1], Cb and Cr in [-0.5, 0.5]."""
    kr, kb = YCBCR_MATRICES[matrix]
    kg = 1.0 - kr - kb
    return np.array(
        [
            [kr, kg, kb],
            [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
            [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))],
        ],
        np.float32,
    )


_AVCOL_BT709 = 1  # AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic
_AVCOL_RANGE_MPEG = 1


@functools.cache
def _ycbcr_affine(bits: int, matrix: int = _AVCOL_BT709) -> np.ndarray:
    """(3, 4) float32: the matrix with the video-range scale and offsets folded in, so one
    ``cv2.transform`` gives the codes."""
    scale = np.array([[219.0], [224.0], [224.0]]) * (1 << (bits - 8))
    offset = np.array([[16.0], [128.0], [128.0]]) * (1 << (bits - 8))
    return np.hstack([ycbcr_matrix_of(matrix) * scale, offset]).astype(np.float32)


def rgb_to_ycbcr(rgb01: np.ndarray, bits: int, matrix: int = _AVCOL_BT709) -> list[np.ndarray]:
    """(H, W, 3) float32 RGB in [0, 1] -> [Y, Cb, Cr], each (H, W) float32 video-range codes
    for ``bits`` (8: Y 16..235, C 16..240; 10: Y 64..940, C 64..960), in the Y'CbCr
    ``matrix`` (an AVColorSpace; default BT.709).

    One ``cv2.transform`` (matrix and offsets folded) and a split: 3.7x less CPU than the
    former ``np.tensordot`` and scaling (15.5 vs 57.9 ms a 1080p frame, side by side), with
    the same codes after rounding except where a value sits within ~1e-4 of a half code
    (0.0015 % of 10-bit codes move by one; tests/test_writers.py).
    """
    rgb01 = np.ascontiguousarray(rgb01, dtype=np.float32)
    return list(cv2.split(cv2.transform(rgb01, _ycbcr_affine(bits, matrix))))  # 3 x (H, W)


@functools.cache
def _ycbcr_affine_int(bits: int, full: int, matrix: int = _AVCOL_BT709) -> np.ndarray:
    """(3, 4) float64: :func:`_ycbcr_affine` for integer RGB in [0, ``full``]."""
    m = _ycbcr_affine(bits, matrix).astype(np.float64)
    m[:, :3] /= full
    return m


def ycbcr_codes(
    image: np.ndarray, bits: int, matrix: int = _AVCOL_BT709, pool: FramePool | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 | uint16 RGB -> (H, W, 3) uint16 rounded video-range Y'CbCr codes for
    ``bits`` (> 8) in ``matrix`` (an AVColorSpace), the channels Y', Cb, Cr.

    One ``cv2.transform`` on the integer image: with a 16-bit input OpenCV rounds and
    saturates into 16-bit codes itself, so there is no float frame, no rounding pass and no
    clip (RGB in range cannot leave the video range). 8.7-9.4 against 27 CPU ms for the
    float path and its rounding (one 1080p frame, one thread; docs/benchmarks/render.md).
    Codes are within one of the exact BT.709 formula; at near-ties they land on the other
    side a little more often than the float path's (0.1 against 0.002 % of codes on random
    8-bit RGB; tests/test_writers.py). With ``pool``, the widened image and the codes are
    the pool's scratch arrays (valid until the next call), not new ones.
    """
    if image.dtype not in (np.uint8, np.uint16):
        raise OutputError(f"internal: expected a uint8 or uint16 frame, found {image.dtype}")
    full, src = 65535, image
    if image.dtype == np.uint8:  # widened to 16 bits: OpenCV's output takes the input's depth
        full = 255
        if pool is None:
            src = image.astype(np.uint16)
        else:
            src = pool.scratch("rgb16", image.shape, np.uint16)
            np.copyto(src, image)
    affine = _ycbcr_affine_int(bits, full, matrix)
    if pool is None:
        return cv2.transform(src, affine)  # (H, W, 3) uint16
    codes = pool.scratch("codes", image.shape, np.uint16)
    made = cv2.transform(src, affine, dst=codes)
    if not np.shares_memory(made, codes):  # a layout OpenCV would not write into
        codes[...] = made
    return codes


def _new_frame(pix_fmt: str, w: int, h: int, pool: FramePool | None) -> av.VideoFrame:
    """A frame to fill completely: the writer's recycled one where its pool has the size and
    format, else a new one."""
    import av

    if pool is not None and (pool.pix_fmt, pool.width, pool.height) == (pix_fmt, w, h):
        return pool.take()
    return av.VideoFrame(w, h, pix_fmt)


def _yuva_frame(
    pix_fmt: str, h: int, w: int, pool: FramePool | None = None
) -> tuple[av.VideoFrame, list[np.ndarray]]:
    """A 4:4:4 Y'CbCr + alpha frame of ``pix_fmt`` (16-bit samples; new, or recycled from
    ``pool``) and writable (h, w) views of its four planes, to be filled in place."""
    vf = _new_frame(pix_fmt, w, h, pool)
    views = plane_views(vf, np.uint16)
    for v in views:
        if not v.flags.writeable or v.shape != (h, w):
            raise OutputError(f"internal: plane {v.shape} does not fit {pix_fmt} ({h}, {w})")
    return vf, views


def yuva444_frame(
    image: np.ndarray,
    alpha: np.ndarray,
    pix_fmt: str,
    bits: int,
    matrix: int = _AVCOL_BT709,
    pool: FramePool | None = None,
) -> av.VideoFrame:
    """A 4:4:4 Y'CbCr + alpha ``av.VideoFrame`` (``bits`` > 8, e.g. yuva444p10le) of an
    integer RGB frame and a straight alpha: :func:`ycbcr_codes` scattered into the frame's
    planes by ``cv2.mixChannels`` and the alpha scaled to full-range codes
    (:func:`alpha_codes`), written in place.

    ``image``: (H, W, 3) uint8 | uint16 RGB. ``alpha``: (H, W) float32 in [0, 1]. ``pool``:
    the writer's :class:`FramePool` to take the frame from.
    """
    h, w = alpha.shape
    vf, (y, cb, cr, a) = _yuva_frame(pix_fmt, h, w, pool)
    cv2.mixChannels([ycbcr_codes(image, bits, matrix, pool)], [y, cb, cr], [0, 0, 1, 1, 2, 2])
    alpha_codes(alpha, (1 << bits) - 1, a)
    return vf


def yuva444_from_source(
    src: SourceYCbCr, alpha: np.ndarray, pix_fmt: str, bits: int, pool: FramePool | None = None
) -> av.VideoFrame:
    """:func:`yuva444_frame` from the source's own Y'CbCr codes instead of its RGB: luma
    shifted to ``bits`` (the source's codes exactly), chroma shifted, then upsampled to 4:4:4
    by bilinear interpolation between samples centred on their blocks (what swscale does on
    the RGB path; swscale itself is not used, see the module's note), alpha as there. No RGB
    rounding or clipping: colours the source holds outside the RGB cube stay as they are.
    About half the CPU of the RGB path (docs/benchmarks/render.md).

    ``src``: 8- or 10-bit planes (``src.bits <= bits``), luma the size of ``alpha``.
    """
    h, w = alpha.shape
    vf, (y, cb, cr, a) = _yuva_frame(pix_fmt, h, w, pool)
    shift = bits - src.bits
    np.left_shift(src.y, shift, out=y, dtype=np.uint16)
    for dst, plane in ((cb, src.cb), (cr, src.cr)):
        if plane.shape == (h, w):
            np.left_shift(plane, shift, out=dst, dtype=np.uint16)
            continue
        codes = np.left_shift(plane, shift, dtype=np.uint16)
        ch, cw = plane.shape
        sx, sy = src.subsampling
        if (cw * sx, ch * sy) != (w, h):  # odd sizes: the last sample covers half a block
            dst[...] = cv2.resize(codes, (cw * sx, ch * sy), interpolation=cv2.INTER_LINEAR)[:h, :w]
            continue
        made = cv2.resize(codes, (w, h), dst=dst, interpolation=cv2.INTER_LINEAR)
        if not np.shares_memory(made, dst):  # a padded plane OpenCV would not write into
            dst[...] = made
    alpha_codes(alpha, (1 << bits) - 1, a)
    return vf


def alpha_codes(alpha: np.ndarray, top: int, out: np.ndarray) -> None:
    """``alpha`` ((H, W) float32 in [0, 1]) as full-range integer codes 0..``top`` written
    into ``out`` (uint16, a frame's plane view): the float32 product rounded half to even
    and clipped, exactly as :func:`planar_frame` rounds float planes. numpy, not
    ``cv2.multiply``: OpenCV 5.0 forms that product in double and 5.1 in float32 (one code
    apart on ~0.001 % of pixels), so outputs would depend on the installed OpenCV; the same
    ~1.1 ms a 1080p plane either way."""
    codes = np.multiply(alpha, np.float32(top), dtype=np.float32)
    np.clip(np.rint(codes, out=codes), 0, top, out=out, casting="unsafe")


def luma_codes(alpha: np.ndarray, bits: int) -> np.ndarray:
    """(H, W) float32 in [0, 1] -> (H, W) float32 video-range luma codes for ``bits``."""
    return (16.0 + 219.0 * alpha) * np.float32(1 << (bits - 8))


def subsample(plane: np.ndarray, sx: int, sy: int) -> np.ndarray:
    """Mean over sx-by-sy blocks of a float plane; odd sizes repeat the last row/column
    (FFmpeg's ceil). OpenCV's area resize at a whole factor is that block mean: 0.8 against
    27.5 CPU ms a 1080p plane for numpy's reshaped mean (AMD Zen 3), the same values to
    float32 rounding (tests/test_writers.py)."""
    h, w = plane.shape
    ph, pw = -h % sy, -w % sx
    if ph or pw:
        plane = np.pad(plane, ((0, ph), (0, pw)), mode="edge")
    size = (plane.shape[1] // sx, plane.shape[0] // sy)
    return cv2.resize(plane, size, interpolation=cv2.INTER_AREA)


def pad_even(plane: np.ndarray) -> np.ndarray:
    """Repeat the last row/column to make both sides even (4:2:0 H.264 needs even sizes)."""
    h, w = plane.shape[:2]
    pads = ((0, h % 2), (0, w % 2)) + ((0, 0),) * (plane.ndim - 2)
    return np.pad(plane, pads, mode="edge") if h % 2 or w % 2 else plane


def planar_frame(
    pix_fmt: str,
    planes: list[np.ndarray],
    width: int,
    height: int,
    sample_bits: int = 8,
    pool: FramePool | None = None,
) -> av.VideoFrame:
    """An ``av.VideoFrame`` of ``pix_fmt`` (new, or recycled from ``pool``) filled from
    ``planes`` (float codes are rounded and clipped to the plane's integer type: uint8, or
    uint16 for ``sample_bits`` > 8)."""
    vf = _new_frame(pix_fmt, width, height, pool)
    deep = sample_bits > 8
    dtype, hi = (np.uint16, (1 << sample_bits) - 1) if deep else (np.uint8, 255)
    for dst, src in zip(plane_views(vf, dtype), planes):
        if src.shape != dst.shape:
            raise OutputError(f"internal: plane {src.shape} does not fit {pix_fmt} {dst.shape}")
        if src.dtype.kind == "f":  # rounded, then clipped straight into the plane (2 passes)
            np.clip(np.rint(src), 0, hi, out=dst, casting="unsafe")
        else:
            dst[...] = src
    return vf


class VideoWriter(Writer):
    """One video stream (plus the source's audio) in the spec's container."""

    # set by _open; None until then, so abort() is safe at any point
    _container: OutputContainer | None = None
    _audio: AudioCarrier | None = None
    _frames: FramePool | None = None  # the pictures it fills, recycled (framepool.py)

    def _open(self) -> None:
        import av

        spec = self.spec
        self._subsampled = spec.pad_to_even
        self._width = self.info.width + (self.info.width % 2 if self._subsampled else 0)
        self._height = self.info.height + (self.info.height % 2 if self._subsampled else 0)
        # Create the file here: PyAV opens it only at the first packet, and a folder that
        # refuses files must fail now, before any decoding.
        with open(self.tmp_path, "xb"):
            pass
        container = self._container = av.open(str(self.tmp_path), "w", format=spec.container)
        rate = self.info.fps if self.info.fps else Fraction(25)
        stream = container.add_stream(spec.codec, rate=rate)
        assert isinstance(stream, av.VideoStream)  # the formats table names video codecs only
        stream.width, stream.height, stream.pix_fmt = self._width, self._height, spec.pix_fmt
        stream.options = dict(spec.options)
        # encoder threads (slice/frame): prores_ks 5.4 -> 6.8 fps at 1080p on 2 cores; as many
        # as the cores (0), or a batch worker's share of them
        stream.thread_type = "AUTO"
        stream.thread_count = thread_share()
        stream.time_base = self.info.time_base
        if self.info.timecode:  # the first written frame's timecode (mov: a tmcd track)
            stream.metadata["timecode"] = self.info.timecode
        stream.codec_context.time_base = self.info.time_base
        if self.info.pixel_aspect != 1:  # anamorphic: shown as wide as the source
            # mov's pasp atom and H.264's VUI; mkv and webm take it from the AVStream (and
            # FFV1 from each frame), which PyAV 18 cannot set: those stay square
            stream.codec_context.sample_aspect_ratio = self.info.pixel_aspect
        # Pictures take the source's colour description (matrix, primaries, transfer), so an
        # editor reads them as it reads the source; a luma matte is data, tagged BT.709.
        colour = self.info.colour if spec.kind != MATTE_VIDEO else Colour()
        self._matrix = colour.matrix if colour.matrix in YCBCR_MATRICES else _AVCOL_BT709
        self._colour = colour
        if spec.is_ycbcr:
            cc = stream.codec_context
            cc.colorspace = self._matrix
            cc.color_primaries, cc.color_trc = colour.primaries, colour.transfer
            cc.color_range = _AVCOL_RANGE_MPEG
        self._stream = stream
        self._frames = FramePool(spec.pix_fmt, self._width, self._height)
        self._last_pts: int | None = None
        self._pts0: int | None = None  # source pts of the first frame written
        self._backdrop: Backdrop | None = None
        if spec.kind == COMPOSITE:
            from vosfx.io.writers.backdrop import Backdrop

            self._backdrop = Backdrop(self.config.background)
        if self.audio_from and spec.audio:
            from vosfx.io.writers.audio import AudioCarrier

            self._audio = AudioCarrier.open(container, self.audio_from, spec.audio)

    def _pts(self, frame: Frame) -> int:
        """The frame's pts in the stream time base, counted from the first frame written (the
        output starts at 0 whatever ``--start`` is, so its timecode track and its audio line
        up with it); synthesised from the index (at the average rate) for sources without
        timing; bumped by one tick if not increasing, because encoders refuse equal pts
        (seen in broken VFR files)."""
        tb = self.info.time_base
        if frame.pts is None:
            rate = self.info.fps if self.info.fps else Fraction(25)
            pts = round(Fraction(frame.index) / rate / tb)
        elif frame.time_base != tb:
            pts = round(Fraction(frame.pts) * frame.time_base / tb)
        else:
            pts = int(frame.pts)
        if self._pts0 is None:
            self._pts0 = pts
            if self._audio is not None:
                self._audio.start(Fraction(pts) * tb)
        pts -= self._pts0
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def _source_time(self, pts: int) -> Fraction:
        """Source-clock seconds of output ``pts``."""
        return Fraction(pts + (self._pts0 or 0)) * self.info.time_base

    def _picture(self, frame: Frame, alpha: np.ndarray, matte: Matte) -> av.VideoFrame:
        """The av.VideoFrame to encode for this spec."""
        import av

        spec, w, h, pool = self.spec, self._width, self._height, self._frames
        if spec.kind == ALPHA_VIDEO:
            straight = self.config.alpha_mode != "premultiplied"
            src = self._source_planes(frame, alpha) if straight else None
            if straight and spec.chroma == "444" and spec.sample_bits > 8:  # ProRes 4444
                if src is not None and src.bits <= spec.sample_bits:
                    return yuva444_from_source(src, alpha, spec.pix_fmt, spec.sample_bits, pool)
                return yuva444_frame(
                    frame.image, alpha, spec.pix_fmt, spec.sample_bits, self._matrix, pool
                )
            if (  # VP9 with alpha from 8-bit 4:2:0: the source's planes as they are
                src is not None
                and spec.chroma == "420"
                and (src.bits, src.subsampling) == (spec.sample_bits, (2, 2))
            ):
                a = alpha * np.float32((1 << src.bits) - 1)
                return planar_frame(spec.pix_fmt, [src.y, src.cb, src.cr, a], w, h, src.bits, pool)
            rgb = frame_rgb01(frame)
            if self.config.alpha_mode == "premultiplied":
                premultiply(rgb, alpha)
            if spec.chroma == "rgb":  # packed ARGB
                argb = np.concatenate([alpha[..., None], rgb], axis=2)
                return av.VideoFrame.from_ndarray(
                    np.rint(argb * 255.0).astype(np.uint8), format="argb"
                )
            bits = spec.sample_bits
            y, cb, cr = rgb_to_ycbcr(rgb, bits, self._matrix)
            if spec.chroma == "420":
                cb, cr = subsample(cb, 2, 2), subsample(cr, 2, 2)
            a = alpha * np.float32((1 << bits) - 1)  # alpha is full range, not video range
            return planar_frame(spec.pix_fmt, [y, cb, cr, a], w, h, bits, pool)
        if spec.kind == MATTE_VIDEO:
            if spec.chroma == "gray":  # FFV1 16-bit: scaled and rounded into the plane
                vf = _new_frame("gray16le", w, h, pool)
                (plane,) = plane_views(vf, np.uint16)
                alpha_codes(alpha, 65535, plane)
                return vf
            bits = spec.sample_bits
            y = luma_codes(pad_even(alpha) if self._subsampled else alpha, bits)
            sx, sy = (2, 1) if spec.chroma == "422" else (2, 2)
            chroma = np.full(
                ((h + sy - 1) // sy, (w + sx - 1) // sx), 128 << (bits - 8), np.float32
            )
            return planar_frame(spec.pix_fmt, [y, chroma, chroma], w, h, bits, pool)
        if spec.kind == COMPOSITE:
            from vosfx.matte.compose import replace_background

            assert self._backdrop is not None  # opened with the composite spec
            rgb = replace_background(frame_rgb01(frame), alpha, self._backdrop.frame((h, w)))
            y, cb, cr = rgb_to_ycbcr(rgb, spec.sample_bits, self._matrix)
            return planar_frame(
                spec.pix_fmt,
                [y, subsample(cb, 2, 1), subsample(cr, 2, 1)],
                w,
                h,
                spec.sample_bits,
                pool,
            )
        if spec.kind == PREVIEW:
            from vosfx.matte.compose import overlay_preview

            tinted = overlay_preview(
                frame.rgb8, matte.alpha, matte.obj_ids, self.config.overlay_opacity
            )
            rgb = pad_even(tinted.astype(np.float32) * np.float32(1 / 255))
            y, cb, cr = rgb_to_ycbcr(rgb, spec.sample_bits, self._matrix)
            return planar_frame(
                spec.pix_fmt,
                [y, subsample(cb, 2, 2), subsample(cr, 2, 2)],
                w,
                h,
                spec.sample_bits,
                pool,
            )
        raise OutputError(f"internal: {spec.id} is not a video kind ({spec.kind})")

    @property
    def takes_source_ycbcr(self) -> bool:
        """Whether frames should carry the source's Y'CbCr planes (``derived["ycbcr"]``):
        straight-alpha Y'CbCr video, whose picture is then the source's codes."""
        spec = self.spec
        return (
            spec.kind == ALPHA_VIDEO
            and spec.chroma in ("444", "420")
            and self.config.alpha_mode != "premultiplied"
        )

    def _source_planes(self, frame: Frame, alpha: np.ndarray) -> SourceYCbCr | None:
        """The frame's own Y'CbCr planes if it carries them at this picture's size."""
        src = frame.derived.get("ycbcr")
        if src is None or src.y.shape != alpha.shape or alpha.shape != (self._height, self._width):
            return None
        # the same matrix as the output's (5 and 6 are one matrix), or converted from RGB
        return src if YCBCR_MATRICES[src.matrix] == YCBCR_MATRICES[self._matrix] else None

    def _write(self, frame: Frame, alpha: np.ndarray, matte: Matte) -> None:
        vf = self._picture(frame, alpha, matte)
        if self.spec.is_ycbcr:  # ProRes writes the frame's tags into each frame's header
            vf.colorspace = self._matrix
            vf.color_primaries, vf.color_trc = self._colour.primaries, self._colour.transfer
            vf.color_range = _AVCOL_RANGE_MPEG
        vf.pts = self._pts(frame)
        vf.time_base = self.info.time_base
        assert self._container is not None  # open
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        if self._frames is not None:
            self._frames.give_back(vf)
        if self._audio is not None:
            self._audio.mux_until(self._source_time(vf.pts))

    def _finish(self) -> None:
        if self._backdrop is not None:
            self._backdrop.close()
        assert self._container is not None  # open
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        if self._frames is not None:
            self._frames.clear()
        if self._audio is not None:
            # the audio ends with the last frame: its pts plus one frame at the average rate
            rate = self.info.fps if self.info.fps else Fraction(25)
            last = self._last_pts if self._last_pts is not None else 0
            self._audio.finish(self._source_time(last) + 1 / Fraction(rate))
        self._container.close()

    def _abort(self) -> None:
        import av

        backdrop: Backdrop | None = getattr(self, "_backdrop", None)
        if backdrop is not None:
            backdrop.close()
        if self._audio is not None:
            self._audio.close()
        if self._frames is not None:
            self._frames.clear()
        if self._container is not None:
            try:
                self._container.close()
            except (OSError, ValueError, av.error.FFmpegError):
                pass  # the file is deleted next; a failed trailer on it does not matter

"""Video writers (PyAV): alpha video, luma mattes and the preview overlay, with audio carried
over from the source.

Pictures are filled plane by plane (``pictures.py``: video range, the source's matrix, not
swscale). Straight-alpha Y'CbCr video of a video-range source takes the source's own Y'CbCr
planes (``Frame.derived["ycbcr"]``) instead of converting its RGB back: the same codes the
editor would read from the source.

Timing: every frame is encoded with the source frame's own pts and time base, so a VFR source
stays VFR and the output lines up frame for frame in an editor; the stream's rate is the
source's average rate. The output starts at 0 with the first frame rendered (``--start``
moves the timecode, not the timestamps), like its timecode track. Audio: see
``AudioCarrier`` (mov, mkv, webm and mp4 outputs): the rendered range only, aligned.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from vosfx.cpus import thread_share
from vosfx.errors import OutputError
from vosfx.formats import ALPHA_VIDEO, COMPOSITE, MATTE_VIDEO, PREVIEW
from vosfx.io.video import plane_views
from vosfx.io.writers.base import Writer, frame_rgb01, premultiply
from vosfx.io.writers.framepool import FramePool
from vosfx.io.writers.pictures import (
    AVCOL_BT709,
    AVCOL_RANGE_MPEG,
    alpha_codes,
    argb_frame,
    luma_frame,
    new_frame,
    pad_even,
    planar_frame,
    rgb_to_ycbcr,
    subsample,
    yuva444_frame,
    yuva444_from_source,
)
from vosfx.types import YCBCR_MATRICES, Colour, Frame, Matte, SourceYCbCr

if TYPE_CHECKING:
    import av
    from av.container import OutputContainer

    from vosfx.io.writers.audio import AudioCarrier
    from vosfx.io.writers.backdrop import Backdrop


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
        self._matrix = colour.matrix if colour.matrix in YCBCR_MATRICES else AVCOL_BT709
        self._colour = colour
        if spec.is_ycbcr:
            cc = stream.codec_context
            cc.colorspace = self._matrix
            cc.color_primaries, cc.color_trc = colour.primaries, colour.transfer
            cc.color_range = AVCOL_RANGE_MPEG
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
            if straight and spec.chroma == "rgb":  # packed ARGB, integer codes in place
                return argb_frame(frame.image, alpha, pool)
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
                vf = new_frame("gray16le", w, h, pool)
                (plane,) = plane_views(vf, np.uint16)
                alpha_codes(alpha, 65535, plane)
                return vf
            return luma_frame(alpha, spec.pix_fmt, spec.sample_bits, w, h, pool)
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
            vf.color_range = AVCOL_RANGE_MPEG
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

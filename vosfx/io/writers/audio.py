"""Carry a source's audio into a video output: the rendered range only, aligned to its first
frame, interleaved with the video as it is written.

Which outputs get audio: the video containers — mov (prores4444, qtrle, prores422hq-matte),
mkv (ffv1-matte), webm (webm-alpha) and mp4 (h264-matte, preview) — encoded to the first
codec of their ``FormatSpec.audio`` list: PCM for mov and mkv (lossless, sample-exact), Opus
for webm, AAC for mp4. Image sequences never carry audio.

Timing: the video writer starts its output at 0 with the first rendered frame (source time
``t0``) and ends after the last one (``t1``). The audio is decoded (the decoder drops the
source codec's priming samples, so frame pts are true times), cut at the sample nearest
``t0`` and ``t1`` on the source's sample grid, and re-timed to start at output sample 0; gaps
in the source become silence, so the stream is continuous. The output encoder's own priming
(AAC's 1024 samples, Opus's pre-skip) is written to the container's edit list / codec delay
by FFmpeg, so a decoder drops it again: decoded sample k of the output is source sample
``round(t0 * rate) + k``. Packets are never copied: a copy cannot be cut inside a packet, and
it was how a partial render used to carry the whole source's audio.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from vosfx.errors import InputError

# Sample rates libopus accepts; anything else is resampled to 48 kHz.
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


class AudioCarrier:
    """Decodes the first audio stream of ``src`` and muxes ``[t0, t1)`` of it into ``out``.

    Call :meth:`start` with the first frame's time before :meth:`mux_until`, and
    :meth:`finish` with the end of the last frame. Times are seconds on the source's clock
    (Fractions, exact).
    """

    def __init__(self, out, src, in_stream, codecs: tuple[str, ...]) -> None:
        import av

        self._out = out
        self._src = src
        self._in_stream = in_stream
        target = codecs[0]
        self.rate = int(in_stream.rate or in_stream.codec_context.sample_rate or 48000)
        out_rate = self.rate
        if target == "libopus" and out_rate not in _OPUS_RATES:
            out_rate = 48000
        layout = in_stream.layout.name if in_stream.layout else "stereo"
        self._stream = out.add_stream(target, rate=out_rate)
        self._stream.layout = layout
        cc = self._stream.codec_context
        fmt = cc.format.name if cc.format is not None else None
        if fmt is None:
            fmt = self._stream.codec.audio_formats[0].name
        self._resampler = av.AudioResampler(format=fmt, layout=layout, rate=out_rate)
        self._fifo = av.AudioFifo()
        self._out_rate = out_rate
        self._out_samples = 0  # samples sent to the encoder so far (its pts)
        self._frames = src.decode(in_stream)
        self._pending = None  # a decoded frame that starts after the last requested time
        self._finished = False
        self._s0: int | None = None  # source sample index of output sample 0
        self._next = 0  # next source sample index owed to the output
        self._layout = layout

    @classmethod
    def open(cls, out, src_path: str, codecs: tuple[str, ...]) -> AudioCarrier | None:
        """An AudioCarrier, or None when ``src_path`` has no audio stream."""
        import av

        try:
            src = av.open(str(src_path))
        except (OSError, av.error.FFmpegError) as err:
            raise InputError(f"cannot read audio from {src_path}: {err}") from None
        if not src.streams.audio:
            src.close()
            return None
        return cls(out, src, src.streams.audio[0], codecs)

    def start(self, t0: Fraction) -> None:
        """The output starts at source time ``t0`` (the first rendered frame)."""
        self._s0 = round(t0 * self.rate)
        self._next = self._s0

    def _samples(self, t: Fraction | float) -> int:
        return round(Fraction(t) * self.rate) if t != float("inf") else 2**62

    def _emit(self, planes: np.ndarray, fmt: str) -> None:
        """Send source samples (channels, n) in the decoder's format on to the encoder."""
        import av

        if planes.shape[-1] == 0:
            return
        if fmt.endswith("p"):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planes), format=fmt, layout=self._layout
            )
        else:  # packed: (1, n * channels)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planes.T.reshape(1, -1)), format=fmt, layout=self._layout
            )
        frame.sample_rate = self.rate
        frame.pts = None
        for converted in self._resampler.resample(frame):
            converted.pts = None
            self._fifo.write(converted)
        self._drain(final=False)

    def _drain(self, final: bool) -> None:
        size = self._stream.codec_context.frame_size or 1024
        while self._fifo.samples >= size or (final and self._fifo.samples):
            chunk = self._fifo.read(min(size, self._fifo.samples))
            assert chunk is not None  # the fifo holds at least that many samples
            chunk.pts = self._out_samples
            chunk.time_base = Fraction(1, self._out_rate)
            self._out_samples += chunk.samples
            for packet in self._stream.encode(chunk):
                self._out.mux(packet)

    def _take(self, frame, until: int) -> None:
        """The part of decoded ``frame`` in [self._next, until) on the source sample grid,
        silence first where the source has a gap."""
        fmt = frame.format.name
        data = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
        channels = len(frame.layout.channels)
        planes = data if fmt.endswith("p") else data.reshape(-1, channels).T
        first = round(Fraction(frame.pts) * frame.time_base * self.rate)
        if first > self._next:  # a gap in the source: silence keeps the stream continuous
            gap = min(first, until) - self._next
            self._emit(np.zeros((planes.shape[0], gap), planes.dtype), fmt)
            self._next += gap
        lo = max(self._next - first, 0)
        hi = min(until - first, planes.shape[1])
        if hi > lo:
            self._emit(planes[:, lo:hi], fmt)
            self._next = first + hi

    def mux_until(self, time_s: Fraction | float) -> None:
        """Mux the audio up to source time ``time_s`` (about one video frame at a time)."""
        if self._finished or self._s0 is None:
            return
        until = self._samples(time_s)
        while self._next < until:
            frame = self._pending
            self._pending = None
            if frame is None:
                try:
                    frame = next(self._frames, None)
                except Exception as err:  # noqa: BLE001 - PyAV raises several decode errors
                    raise InputError(
                        f"cannot decode the audio of {self._src.name}: {err}"
                    ) from None
            if frame is None:
                self._finished = True
                return
            if frame.pts is None:
                continue
            first = round(Fraction(frame.pts) * frame.time_base * self.rate)
            if first + frame.samples <= self._next:
                continue  # before the range (or already sent)
            self._take(frame, until)
            if first + frame.samples > until:
                self._pending = frame  # its tail belongs to a later call
                return

    def finish(self, t1: Fraction | float) -> None:
        """Mux up to source time ``t1`` (the end of the last frame), silence-padded if the
        source's audio ends earlier; flush the encoder and close the source."""
        if self._s0 is None:
            self.close()
            return
        self.mux_until(t1)
        end = self._samples(t1)
        if self._next < end:  # the audio ends before the video: pad to the video's end
            fmt = self._in_stream.codec_context.format.name
            channels = len(self._in_stream.layout.channels) if self._in_stream.layout else 2
            dtype = np.zeros(0, _NP_DTYPES.get(fmt.rstrip("p"), np.float32)).dtype
            self._emit(np.zeros((channels, end - self._next), dtype), fmt)
            self._next = end
        for converted in self._resampler.resample(None):
            converted.pts = None
            self._fifo.write(converted)
        self._drain(final=True)
        for packet in self._stream.encode(None):
            self._out.mux(packet)
        self.close()

    def close(self) -> None:
        self._src.close()


_NP_DTYPES = {
    "s16": np.int16,
    "s32": np.int32,
    "flt": np.float32,
    "dbl": np.float64,
    "u8": np.uint8,
    "s64": np.int64,
}

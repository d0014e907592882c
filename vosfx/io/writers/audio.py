"""Carry a source's audio into a video output, interleaved with the video as it is written.

Which outputs get audio: the video containers — mov (prores4444, qtrle, prores422hq-matte),
mkv (ffv1-matte), webm (webm-alpha) and mp4 (h264-matte, preview) — each through the codec
list in its ``FormatSpec.audio``. Packets are copied unchanged when the source codec is in
that list (no generation loss, timestamps untouched); otherwise the audio is re-encoded to
the list's first codec (PCM for mov/mkv, Opus for webm, AAC for mp4). Image sequences never
carry audio.
"""

from __future__ import annotations

from vosfx.errors import InputError

# Codec names a decoder reports for what an encoder name in FormatSpec.audio writes.
_DECODER_NAME = {"libopus": "opus"}
# Sample rates libopus accepts; anything else is resampled to 48 kHz.
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


class AudioCarrier:
    """Reads the first audio stream of ``src`` and muxes it into ``out`` up to a time.

    Timestamps stay the source's, so audio and video (which also keeps the source's pts)
    stay in sync, start offset included.
    """

    def __init__(self, out, src, in_stream, codecs: tuple[str, ...]) -> None:
        self._out = out
        self._src = src
        self._in_stream = in_stream
        name = in_stream.codec_context.name
        copyable = {_DECODER_NAME.get(c, c) for c in codecs}
        self.copy = name in copyable
        if self.copy:
            self._stream = out.add_stream_from_template(in_stream)
        else:
            target = codecs[0]
            rate = in_stream.rate or 48000
            if target == "libopus" and rate not in _OPUS_RATES:
                rate = 48000
            self._stream = out.add_stream(target, rate=rate)
            self._stream.layout = in_stream.layout.name if in_stream.layout else "stereo"
        self._packets = src.demux(in_stream)
        self._pending = None  # a packet read past the last requested time
        self._finished = False

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

    def _emit(self, packet) -> None:
        if self.copy:
            packet.stream = self._stream
            self._out.mux(packet)
            return
        for frame in packet.decode():
            for out_packet in self._stream.encode(frame):
                self._out.mux(out_packet)

    def mux_until(self, time_s: float) -> None:
        """Mux every audio packet that starts at or before ``time_s`` (seconds, source
        clock), so the file stays interleaved (about one video frame of audio at a time)."""
        if self._finished:
            return
        while True:
            packet = self._pending if self._pending is not None else next(self._packets, None)
            self._pending = None
            if packet is None:
                self._finished = True
                return
            if packet.pts is None or packet.size == 0:
                continue  # demuxer flush packets carry no data
            if float(packet.pts * packet.time_base) > time_s:
                self._pending = packet
                return
            self._emit(packet)

    def finish(self) -> None:
        """Mux the rest of the audio, flush the encoder and close the source."""
        self.mux_until(float("inf"))
        if not self.copy:
            for out_packet in self._stream.encode(None):
                self._out.mux(out_packet)
        self.close()

    def close(self) -> None:
        self._src.close()

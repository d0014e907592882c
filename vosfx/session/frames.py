"""Random access to a clip's frames for an interactive session (the studio, the OpenFX worker).

:class:`SourceFrames` keeps one sequential decoder open and a byte-bounded LRU of decoded
frames: the next frame is a continued decode, a recent one a cache hit, anything else a seek
(``open_source`` seeks to the keyframe before it). Going backwards it decodes a chunk ending at
the frame asked for, so a reverse walk costs one seek per chunk, not per frame. ``decoded``
counts frames the decoder produced, for the decode-cost measurements in docs/session.md.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from vosfx.errors import InputError
from vosfx.types import Frame, VideoInfo

if TYPE_CHECKING:
    from typing_extensions import Self

    from vosfx.io.source import FrameSource

CACHE_BYTES = 768 << 20  # ~128 decoded 1080p frames
BACK_CHUNK = 16  # frames decoded at once when walking backwards


class SourceFrames:
    """A :class:`~vosfx.session.FrameProvider` over a video file or image sequence."""

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float | Fraction | None = None,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        from vosfx.io.source import probe

        self.path, self.fps = str(path), fps
        self.info: VideoInfo = probe(path, fps=fps)
        self._cache: OrderedDict[int, Frame] = OrderedDict()
        self._bytes = 0
        self._budget = cache_bytes
        self._src: FrameSource | None = None
        self._it: Iterator[Frame] | None = None
        self._next: int | None = None
        self.decoded = 0
        self.seeks = 0

    def get(self, index: int) -> Frame:
        if not 0 <= index < self.info.num_frames:
            raise InputError(
                f"{self.path}: frame {index} is outside the clip (0..{self.info.num_frames - 1})"
            )
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        if self._next is None or not (self._next <= index < self._next + BACK_CHUNK):
            # behind the decoder, or far ahead: seek (backwards: a chunk ending at index)
            backwards = self._next is not None and index < self._next
            self._open(max(0, index - BACK_CHUNK + 1) if backwards else index)
        while True:
            frame = self._decode_next()
            if frame.index == index:
                return frame

    def _open(self, start: int) -> None:
        from vosfx.io.source import open_source

        self._close_decoder()
        self._src = open_source(self.path, start=start, fps=self.fps, prefetch=0)
        self._it = iter(self._src)
        self._next = start
        self.seeks += 1

    def _decode_next(self) -> Frame:
        assert self._it is not None
        frame = next(self._it, None)
        if frame is None:
            raise InputError(f"{self.path}: the clip ended before frame {self._next}")
        self.decoded += 1
        self._next = frame.index + 1
        self._keep(frame)
        return frame

    def _keep(self, frame: Frame) -> None:
        size = frame.image.nbytes
        if size > self._budget:
            return
        self._cache[frame.index] = frame
        self._bytes += size
        while self._bytes > self._budget:
            _i, old = self._cache.popitem(last=False)
            self._bytes -= old.image.nbytes

    def _close_decoder(self) -> None:
        if self._src is not None:
            self._src.close()
        self._src = self._it = None

    def close(self) -> None:
        self._close_decoder()
        self._cache.clear()
        self._bytes = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ListFrames:
    """A provider over frames already in memory (tests, short clips, a host's frames)."""

    def __init__(self, info: VideoInfo, frames: list[Frame]) -> None:
        self.info = info
        self._frames = {f.index: f for f in frames}
        self.gets: list[int] = []

    def get(self, index: int) -> Frame:
        self.gets.append(index)
        try:
            return self._frames[index]
        except KeyError:
            raise InputError(f"frame {index} is not available") from None

    def close(self) -> None:
        pass

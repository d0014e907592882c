"""A video writer's frames, recycled once the encoder has let go of them.

Each 1080p ProRes 4444 frame is a 16.6 MB buffer (four 16-bit planes). Allocated anew for every
frame, its pages are fresh: the kernel faults and zeroes all of them before the writer fills it
(~10 of the picture step's ~15 CPU ms a frame on the AMD Zen 3 kind; docs/benchmarks/render.md).
The pool hands a writer the frames it has already encoded instead, and keeps the working
arrays a picture is made through (:meth:`FramePool.scratch`).

An encoder may still hold a frame after ``encode`` returns: prores_ks runs frame threads, each
keeping a reference to its input until it has encoded it. FFmpeg counts those references, and
:meth:`FramePool.take` calls ``av_frame_make_writable`` (PyAV's ``VideoFrame.make_writable``)
on the frame it recycles: a frame only the pool holds is returned as it is, and one the encoder
still reads gets a new buffer (FFmpeg copies the old one; the encoder keeps reading its own). So
recycling is safe whatever the encoder does; it is fast once the pool holds more frames than the
encoder keeps in flight, and the pool grows by one frame each time it finds it did not.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import av

# Frames a pool starts by keeping: two frame threads (2 cores) never held more than two of them
# in flight in a 1080p prores_ks render (benchmarks/render_chain.py); more threads grow it.
START_DEPTH = 3
MAX_DEPTH = 32  # a bound on one writer's frames (532 MB of 1080p ProRes 4444), far above the
# frames an encoder with FFmpeg's automatic thread count (at most 16) keeps in flight


class FramePool:
    """Frames of one pixel format and size for one writer (one thread: not shared)."""

    def __init__(self, pix_fmt: str, width: int, height: int, depth: int = START_DEPTH) -> None:
        self.pix_fmt, self.width, self.height = pix_fmt, width, height
        self.depth = depth  # frames kept; grown when the encoder still held the oldest one
        self.made = 0  # frames allocated new
        self.copied = 0  # recycled frames that were still in the encoder's hands
        self._free: deque[av.VideoFrame] = deque()
        self._scratch: dict[str, np.ndarray] = {}

    def take(self) -> av.VideoFrame:
        """A frame to fill completely (its old contents are stale): the oldest one given back,
        once the pool holds ``depth`` of them, else a new one."""
        import av

        if len(self._free) < self.depth:
            self.made += 1
            return av.VideoFrame(self.width, self.height, self.pix_fmt)
        frame = self._free.popleft()
        data = frame.planes[0].buffer_ptr
        frame.make_writable()
        if frame.planes[0].buffer_ptr != data:  # FFmpeg made a copy: the encoder held it
            self.copied += 1
            self.depth = min(self.depth + 1, MAX_DEPTH)
        return frame

    def give_back(self, frame: av.VideoFrame) -> None:
        """Keep ``frame`` (after it has been sent to the encoder) for a later :meth:`take`;
        frames of another format or size are left to be freed."""
        if (frame.format.name, frame.width, frame.height) == (
            self.pix_fmt,
            self.width,
            self.height,
        ):
            self._free.append(frame)

    def scratch(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> np.ndarray:
        """A working array the writer fills and reads within one picture (an intermediate no
        frame keeps), the same one each time it asks for ``name`` at this shape and type."""
        arr = self._scratch.get(name)
        if arr is None or arr.shape != shape or arr.dtype != dtype:
            arr = self._scratch[name] = np.empty(shape, dtype)
        return arr

    def clear(self) -> None:
        self._free.clear()
        self._scratch.clear()

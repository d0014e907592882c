"""Streaming frame sources: a video file (PyAV) or an image sequence, decoded one frame at a time.

``open_source`` returns a ``FrameSource``: a context manager and iterator of ``Frame`` whose
``info`` (a ``VideoInfo``) is known right after opening. Decoding runs on a background thread
that feeds a bounded queue (``prefetch`` frames, and ``prefetch_bytes`` beyond the first), so
memory does not grow with the clip's length and decoding overlaps the model's work. Frames come
in presentation order with their exact pts.

Why the care with counts: a truncated or corrupt file must not look like a short clip, so a
decode error names the frame index where it happened, and a clip that ends before the
container's exact frame count raises instead of returning fewer frames.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable, Generator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from vosfx.errors import InputError, VosfxError
from vosfx.io import sequence, video
from vosfx.types import Frame, VideoInfo

if TYPE_CHECKING:
    from typing_extensions import Self

# How long the decode thread waits on a full queue before checking whether it should stop.
_PUT_POLL_S = 0.05
# The bytes of frames decoded ahead, beyond the first. A prepared frame carries the model's
# input and the refiner's guide: ~25 MiB at 854x480 (the guide's grid is the frame's size
# there), so 8 frames ahead held ~170 MiB more than 1 in `vosfx matte` at 1024 for no speed
# (docs/benchmarks/io.md). 64 MiB keeps 2-3 frames of SD or 1080p ahead.
PREFETCH_BYTES = 64 << 20


def probe(path: str | Path, *, fps: float | Fraction | None = None) -> VideoInfo:
    """What a video or image sequence holds, without decoding the clip.

    A video's display rotation lives in side data that PyAV 18 exposes only on decoded frames,
    so probe decodes the first frame (one frame, not the clip). ``fps`` is the rate of an image
    sequence (default 24); it is ignored for videos, which carry their own.
    """
    found = sequence.scan(path)
    if found is not None:
        return sequence.probe_files(path, found[0], fps, found[1])
    return video.probe_video(Path(path))


def open_source(
    path_or_pattern: str | Path,
    *,
    start: int = 0,
    end: int | None = None,
    prefetch: int = 8,
    prefetch_bytes: int = PREFETCH_BYTES,
    fps: float | Fraction | None = None,
    prepare: Callable[[Frame], Frame] | None = None,
    ycbcr: bool = False,
) -> FrameSource:
    """Open a video file, a folder of images or a printf pattern (``frames/%05d.png``).

    ``start``/``end``: frame range, ``end`` exclusive; frame indices stay those of the whole
    clip (the first frame yielded has ``index == start``). ``prefetch``: frames decoded ahead
    on a background thread (and, for an image sequence, up to
    :func:`~vosfx.io.sequence.default_readers` images read at once); 0 decodes on the
    caller's thread, one image at a time. ``prefetch_bytes``: the most
    bytes (:attr:`Frame.nbytes`, prepared) those frames may hold beyond the first one, which
    is always let through. ``fps``: image sequences only
    (default 24). ``prepare``: applied to each frame right after decoding, on the decode
    thread (the engine's preprocessing, so that it overlaps the model's work instead of
    adding to it). ``ycbcr``: videos keep each frame's own Y'CbCr planes beside its RGB
    (``Frame.derived["ycbcr"]``, :func:`vosfx.io.video.source_ycbcr`) for the writers that
    take them. Raises InputError for a missing, unreadable or empty input or a bad range.
    """
    if start < 0 or (end is not None and end <= start):
        raise InputError(f"expected a frame range 0 <= start < end, found start={start}, end={end}")
    if prefetch < 0:
        raise InputError(f"expected prefetch >= 0 frames, found {prefetch}")
    if prefetch_bytes < 0:
        raise InputError(f"expected prefetch_bytes >= 0, found {prefetch_bytes}")
    found = sequence.scan(path_or_pattern)
    if found is not None:
        files = found[0]
        info = sequence.probe_files(path_or_pattern, files, fps, found[1])
        _check_range(info, start)
        # images read ahead only where frames are decoded ahead: a source read on the
        # caller's thread is the studio's random access, where each seek would wait for them
        readers = sequence.default_readers() if prefetch > 0 else 1
        frames = sequence.read_frames(files, info, start, end, readers)
    else:
        info = video.probe_video(Path(path_or_pattern))
        _check_range(info, start)
        frames = video.decode_video(Path(path_or_pattern), info, start, end, ycbcr=ycbcr)
    if prepare is not None:
        frames = _prepared(frames, prepare)
    return FrameSource(
        info, frames, start=start, end=end, prefetch=prefetch, prefetch_bytes=prefetch_bytes
    )


def _prepared(
    frames: Generator[Frame, None, None], prepare: Callable[[Frame], Frame]
) -> Generator[Frame, None, None]:
    """``prepare(frame)`` for each frame, on whichever thread decodes; closing it closes the
    decoder (the container is released on the thread that used it)."""
    try:
        for frame in frames:
            yield prepare(frame)
    finally:
        frames.close()


def _check_range(info: VideoInfo, start: int) -> None:
    if info.frame_count_exact and start >= info.num_frames:
        raise InputError(
            f"expected start < {info.num_frames} (the frame count of {info.path}), found {start}"
        )


class _End:
    """Queue sentinel: the producer finished (``error`` set if it failed)."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


class _FrameQueue:
    """The decode thread's queue: at most ``frames`` items and, beyond the first one queued,
    ``max_bytes`` (:attr:`Frame.nbytes`; the end sentinel counts 0). ``put`` and ``get`` take
    a timeout as ``queue.Queue``'s do and raise ``queue.Full`` / ``queue.Empty``."""

    def __init__(self, frames: int, max_bytes: int) -> None:
        self._frames, self._max_bytes = frames, max_bytes
        self._items: deque[tuple[Frame | _End, int]] = deque()
        self._bytes = 0
        self._cond = threading.Condition()

    def put(self, item: Frame | _End, timeout: float) -> None:
        size = item.nbytes if isinstance(item, Frame) else 0
        with self._cond:
            if not self._cond.wait_for(lambda: self._room(size), timeout):
                raise queue.Full
            self._items.append((item, size))
            self._bytes += size
            self._cond.notify_all()

    def _room(self, size: int) -> bool:
        if not self._items:
            return True
        return len(self._items) < self._frames and self._bytes + size <= self._max_bytes

    def get(self, timeout: float | None = None) -> Frame | _End:
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise queue.Empty
            item, size = self._items.popleft()
            self._bytes -= size
            self._cond.notify_all()
            return item

    def get_nowait(self) -> Frame | _End:
        return self.get(timeout=0)


class FrameSource:
    """Iterator of ``Frame`` over one clip; a context manager whose close joins the decode
    thread. ``info`` describes the whole clip; ``start``/``end`` the range being read."""

    def __init__(
        self,
        info: VideoInfo,
        frames: Generator[Frame, None, None],
        *,
        start: int,
        end: int | None,
        prefetch: int,
        prefetch_bytes: int = PREFETCH_BYTES,
    ):
        self.info = info
        self.start = start
        self.end = end
        self._frames = frames
        self._done = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if prefetch > 0:
            self._queue = _FrameQueue(prefetch, prefetch_bytes)
            self._thread = threading.Thread(
                target=_pump,
                args=(frames, self._queue, self._stop),
                name=f"vosfx-decode:{Path(info.path).name}",
                daemon=True,
            )
            self._thread.start()
            # A source dropped without close() must not leave its thread blocked on the queue.
            self._finalizer = weakref.finalize(self, self._stop.set)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Frame:
        if self._done:
            raise StopIteration
        if self._thread is None:
            try:
                return next(self._frames)
            except StopIteration:
                self._done = True
                raise
            except VosfxError:
                self._done = True
                raise
            except Exception as e:  # same contract as the threaded path: InputError
                self._done = True
                raise _decode_failure(e) from e
        item = self._queue.get()
        if isinstance(item, _End):
            self._done = True
            self._join()
            if item.error is not None:
                raise item.error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop decoding and release the file. Safe to call twice."""
        self._done = True
        if self._thread is None:
            self._frames.close()
            return
        self._stop.set()
        self._join()

    def _join(self) -> None:
        # Drain so a producer blocked in put() sees the stop flag at its next poll.
        while self._thread is not None and self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=_PUT_POLL_S)
        self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        """Frames this source will yield, per the container (an estimate where the container
        has no exact count)."""
        stop = self.info.num_frames if self.end is None else min(self.end, self.info.num_frames)
        return max(0, stop - self.start)


def _pump(frames: Generator[Frame, None, None], q: _FrameQueue, stop: threading.Event) -> None:
    """Decode thread: move frames into ``q`` until done, stopped or failed. The end sentinel
    is always queued (unless stopped), so the consumer never waits on a dead thread."""
    end = _End(InputError("the decode thread stopped unexpectedly"))
    try:
        for frame in frames:
            if not _put(q, frame, stop):
                return
        end = _End()
    except VosfxError as e:
        end = _End(e)
    except Exception as e:  # noqa: BLE001 - any decoder failure must reach the consumer
        end = _End(_decode_failure(e))
    finally:
        frames.close()  # closes the container on this thread
        _put(q, end, stop)


def _decode_failure(e: Exception) -> InputError:
    """An unexpected decoder or reader exception, as the InputError the consumer gets."""
    error = InputError(f"expected a decodable input, decoding failed: {e!r}")
    error.__cause__ = e
    return error


def _put(q: _FrameQueue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=_PUT_POLL_S)
            return True
        except queue.Full:
            continue
    return False

"""A background thread for output encoding, so writing frame t overlaps tracking frame t+1.

Encoding a 1080p ProRes 4444 frame takes ~170 ms on two CPU cores; next to SAM 2 on a GPU
(tens of frames a second) it would otherwise be the bottleneck. FFmpeg's encoders and
OpenCV/numpy release the GIL for their heavy work, so one extra thread is a real overlap.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Literal


class BackgroundCalls:
    """Calls ``fn(*args)`` for each :meth:`put` on one thread, in order, with at most
    ``depth`` calls waiting (back-pressure bounds memory: each waiting call holds a frame and
    its matte). An exception raised by ``fn`` re-raises in the caller at the next
    :meth:`put` or at :meth:`close`; later calls are then dropped. Use as a context manager:
    a clean exit waits for every call; an exceptional exit stops without waiting for the rest.
    """

    def __init__(self, fn: Callable[..., None], depth: int = 4, name: str = "vosfx-writer"):
        self._fn = fn
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self.busy_s = 0.0  # time spent inside fn, on the background thread
        self.wait_s = 0.0  # time the caller blocked on a full queue
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            args = self._q.get()
            if args is None:
                return
            if self._error is not None or self._stop.is_set():
                continue  # drain after a failure or an abort
            t0 = time.perf_counter()
            try:
                self._fn(*args)
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                self._error = err
            self.busy_s += time.perf_counter() - t0

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            self._stop.set()
            raise err

    def put(self, *args) -> None:
        self._raise()
        t0 = time.perf_counter()
        self._q.put(args)
        self.wait_s += time.perf_counter() - t0

    def close(self) -> None:
        """Wait for every queued call; re-raise the first error."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Stop without running what is still queued (the caller is failing anyway)."""
        self._stop.set()
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()

    def __enter__(self) -> BackgroundCalls:  # noqa: PYI034
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

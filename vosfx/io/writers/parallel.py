"""The writers of a multi-output job encode side by side: one background thread per writer.

With a single writer thread, a job writing ProRes 4444 and an FFV1 matte pays for both
encoders one after the other on every frame (~170 + ~12 ms at 1080p on 2 cores). PyAV's
encoders, OpenCV and most of numpy release the GIL, so one thread per writer lets them
overlap: the frame time becomes the slowest writer's, not the sum (docs/benchmarks/render.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from vosfx.io.writers.background import BackgroundCalls


class ParallelCalls:
    """Each :meth:`put` hands its arguments to every function in ``fns``, each function on its
    own :class:`BackgroundCalls` thread (in order for that function, ``depth`` calls waiting at
    most per thread, so memory stays bounded: a waiting call holds one frame and its matte,
    shared by every thread, not copied).

    Errors keep the BackgroundCalls contract: the first exception raised by any function
    re-raises in the caller at the next :meth:`put` or at :meth:`close`, and every thread then
    stops without running what it still has queued. A context manager: a clean exit waits for
    every call on every thread; an exceptional exit stops them all without waiting.
    """

    def __init__(
        self, fns: Sequence[Callable[..., None]], depth: int = 4, name: str = "vosfx-writer"
    ) -> None:
        self._calls: list[BackgroundCalls] = []
        try:
            for i, fn in enumerate(fns):
                self._calls.append(
                    BackgroundCalls(fn, depth, name if len(fns) == 1 else f"{name}-{i}")
                )
        except BaseException:
            self.abort()
            raise

    @property
    def busy_s(self) -> float:
        """Seconds spent inside the functions, summed over the threads (work, not wall)."""
        return sum(c.busy_s for c in self._calls)

    @property
    def busiest_s(self) -> float:
        """Seconds spent inside the functions by the busiest thread (the writers' wall time
        when they overlap perfectly)."""
        return max((c.busy_s for c in self._calls), default=0.0)

    @property
    def wait_s(self) -> float:
        """Seconds the caller blocked on full queues."""
        return sum(c.wait_s for c in self._calls)

    def put(self, *args: object) -> None:
        try:
            for calls in self._calls:
                calls.put(*args)
        except BaseException:
            self.abort()  # one writer failed: the others stop now, not after their queues
            raise

    def close(self) -> None:
        """Wait for every queued call on every thread; re-raise the first error (the other
        threads are then stopped without running the rest of their queues)."""
        for i, calls in enumerate(self._calls):
            try:
                calls.close()
            except BaseException:
                for other in self._calls[i + 1 :]:
                    other.abort()
                raise

    def abort(self) -> None:
        """Stop every thread without running what is still queued."""
        # Every thread is told first, then joined: aborting them one by one would let the
        # later ones run their whole queues while the first is being joined. (_stop is the
        # flag BackgroundCalls.abort sets; background.py is being edited elsewhere right now,
        # so no public stop() there yet.)
        for calls in self._calls:
            calls._stop.set()
        for calls in self._calls:
            calls.abort()

    def __enter__(self) -> ParallelCalls:  # noqa: PYI034
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> Literal[False]:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

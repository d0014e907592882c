"""The studio's feature warm-up: the image encoder runs on the frame the user stays on before
the first click there, so that click costs the prompt encoder and mask decoder only.

The page shows a frame by asking for its view (``/api/view/N``); :meth:`Warmer.viewed` notes
it. Once the page has stayed on one frame for ``delay_s`` (scrubbing or playing never warms
the frames it passes), a background thread encodes that frame's features into the session's
feature cache (:meth:`vosfx.session.ClipSession.warm`). It stands aside while a track or a
render runs (they use the engine), and a click meanwhile does not wait for it unless it is on
that same frame, where it takes the features being made. The cost: frames looked at and
never clicked are encoded too (one image encoder call each, on a core the user is not
using while looking); ``vosfx studio --no-warm`` turns it off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

WARM_DELAY_S = 0.4  # how long the page stays on a frame before its features are made


class Warmer:
    """One background thread warming the last frame viewed.

    ``session``: the clip session whose feature cache is filled. ``frame_of(index)``: the
    decoded frame (the studio's viewer decoder, under its lock). ``busy()``: true while a
    track or render runs (nothing is warmed then). ``emit``: receives ``{"event": "warmed",
    "frame": index, "ms": ...}`` after each warm-up (the page ignores it; tests and
    benchmarks read it)."""

    def __init__(
        self,
        session: Any,
        frame_of: Callable[[int], Any],
        busy: Callable[[], Any],
        *,
        delay_s: float = WARM_DELAY_S,
        emit: Callable[[dict], None] = lambda _ev: None,
    ) -> None:
        self.session, self.frame_of, self.busy = session, frame_of, busy
        self.delay_s, self.emit = delay_s, emit
        self._cond = threading.Condition()
        self._want: int | None = None
        self._since = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="vosfx-studio-warm", daemon=True)
        self._thread.start()

    def viewed(self, index: int) -> None:
        """The page now shows frame ``index``."""
        with self._cond:
            if index != self._want:
                self._want, self._since = index, time.monotonic()
                self._cond.notify()

    def _next(self) -> int | None:
        """The frame the page has stayed on for ``delay_s`` (None: closed)."""
        with self._cond:
            while not self._closed:
                if self._want is None:
                    self._cond.wait()
                    continue
                left = self._since + self.delay_s - time.monotonic()
                if left > 0:
                    self._cond.wait(left)  # a newer frame restarts the wait
                    continue
                index, self._want = self._want, None
                return index
            return None

    def _run(self) -> None:
        while (index := self._next()) is not None:
            if self.busy() or self.session.has_features(index):
                continue
            t0 = time.perf_counter()
            try:
                warmed = self.session.warm(self.frame_of(index))
            except Exception:  # a click on that frame will say what is wrong
                log.warning("warming the features of frame %d failed", index, exc_info=True)
                continue
            if warmed:
                self.emit(
                    {
                        "event": "warmed",
                        "frame": index,
                        "ms": round(1e3 * (time.perf_counter() - t0), 1),
                    }
                )

    def close(self) -> None:
        """Stop; waits for an encode in progress (the engine closes after this)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

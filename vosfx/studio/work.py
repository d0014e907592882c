"""The studio's one background job (a track or a render) on its own thread.

A click, Stop, a closed page or Ctrl-C cancels it first (:meth:`Worker.stop` sets its cancel
flag and waits); its end, a cancel or an error is reported as an event (``stopped``,
``error``) through the studio's ``emit``: any error, not only vosfx's own (torch running out
of memory, a bug), or the page would wait for the work for ever. While it runs the process's
thread switch interval is a render's (:mod:`vosfx.pipeline.switching`): the page's requests
are served by other threads, which a tracking thread running Python (a GPU's) would otherwise
hold up by its 5 ms time slices.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from vosfx.errors import Cancelled, VosfxError
from vosfx.pipeline.switching import short_switch_interval

Emit = Callable[[dict], None]
log = logging.getLogger(__name__)


@dataclass
class Work:
    """The one background job (track or render): its thread and its cancel flag."""

    kind: str
    thread: threading.Thread
    cancel: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Runs one :class:`Work` at a time. ``emit``: where its events go."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.work: Work | None = None
        # stop-then-start is one step: two requests at once (Track pressed twice, two tabs)
        # must not both pass their stop() and start two works, one of them unseen
        self._starting = threading.Lock()

    def start(self, kind: str, body: Callable[[threading.Event], None]) -> None:
        """Cancel the running work (waiting for it), then run ``body(cancel)`` on a new
        thread."""
        with self._starting:
            self.stop()
            self._start(kind, body)

    def _start(self, kind: str, body: Callable[[threading.Event], None]) -> None:
        cancel = threading.Event()

        def run() -> None:
            try:
                with short_switch_interval():
                    body(cancel)
            except Cancelled:
                self.emit({"event": "stopped", "kind": kind})
            except VosfxError as err:
                self.emit({"event": "error", "kind": err.kind, "message": str(err)})
            except Exception as err:
                # a runtime error (torch out of memory) or a bug: the page says so too
                log.exception("the studio's %s failed", kind)
                self.emit({"event": "error", "kind": "error", "message": unexpected(kind, err)})
            finally:
                if self.work is work:  # (a newer work is not this one's to clear)
                    self.work = None

        thread = threading.Thread(target=run, name=f"vosfx-studio-{kind}", daemon=True)
        work = self.work = Work(kind, thread, cancel)
        thread.start()

    def stop(self) -> None:
        """Cancel the running track or render and wait for it."""
        work = self.work
        if work is None:
            return
        work.cancel.set()
        if work.thread is not threading.current_thread():
            work.thread.join()

    @property
    def busy(self) -> str | None:
        work = self.work
        return None if work is None else work.kind


def unexpected(what: str, err: BaseException) -> str:
    """The message for an error that is not a VosfxError (its traceback goes to the log)."""
    return (
        f"{what} failed: {type(err).__name__}: {err} (the terminal running vosfx has the details)"
    )

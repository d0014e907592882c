"""Ending a run when the system asks: SIGTERM (a host plugin cancelling, ``kill``) and SIGHUP
(the terminal closed) answered as Ctrl-C is, so the work is cancelled and what it was writing
removed, instead of the process dying with half-written files and folders left behind."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

# what a terminate or a hang-up sends; SIGHUP does not exist on Windows
TERMINATING = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def on_terminate(handler: Callable[[int, object], None]) -> Iterator[None]:
    """``handler(signum, frame)`` answers SIGTERM and SIGHUP inside the block, the handlers
    before it afterwards. Off the main thread (tests, an embedding application) no signal
    can be answered: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in TERMINATING}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)

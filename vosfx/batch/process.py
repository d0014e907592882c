"""The local batch worker process (:class:`vosfx.batch.local.LocalExecutor` spawns it): its
loop over the coordinator's tasks, and the file its stdout and stderr go to."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from vosfx.batch.worker import EngineCache, run_one, worker_name
from vosfx.errors import VosfxError

# Progress messages a worker sends per second at most (a 2000-frame clip at 30 fps would
# otherwise send 30 pickled events a second through the pipe for nothing).
_PROGRESS_HZ = 2.0
# How often an orphaned worker notices its coordinator is gone.
_PARENT_POLL_S = 0.5
# A worker's output kept for its job's reason when it dies: its last lines, at most this much.
_TAIL_BYTES = 8192
_TAIL_LINES = 10


class WorkerOutput:
    """A worker's stdout and stderr: a temporary file it writes them to (and deletes at once,
    so a killed batch leaves nothing behind), copied to the coordinator's stderr as they
    arrive; the last lines are kept for the reason when the worker dies."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="vosfx-worker-", suffix=".log")
        self.fh = os.fdopen(fd, "rb")
        self.tail = b""

    def pump(self) -> None:
        data = self.fh.read()  # what the worker wrote since the last call
        if data:
            self.tail = (self.tail + data)[-_TAIL_BYTES:]
            sys.stderr.write(data.decode("utf-8", "replace"))
            sys.stderr.flush()

    def last_lines(self) -> list[str]:
        self.pump()
        lines = self.tail.decode("utf-8", "replace").splitlines()
        return [ln.rstrip() for ln in lines if ln.strip()][-_TAIL_LINES:]

    def close(self) -> None:
        self.pump()
        self.fh.close()
        Path(self.path).unlink(missing_ok=True)  # a worker that died before deleting it


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _watch_parent(parent_pid: int, cancel: threading.Event) -> None:
    """Cancel the running job when the coordinator is gone (its pipe end is then closed too,
    so an idle worker exits on its own): a batch killed with SIGKILL must not leave workers
    finishing jobs nobody records."""
    while not cancel.is_set():
        if os.getppid() != parent_pid:
            cancel.set()
            return
        time.sleep(_PARENT_POLL_S)


def worker_main(
    conn, factory: Any, env: dict[str, str], parent_pid: int, output_path: str | None = None
) -> None:
    """A worker process: receive Tasks until None, send events back. Before any: ``("ready",)``,
    or ``("startup-failed", error)`` and return when the engine factory cannot be had; around
    each model load ``("loading",)`` and ``("loaded",)``, so a crash inside one is told apart."""
    if output_path is not None:
        _redirect_output(output_path)
    os.environ.update(env)  # before anything imports torch: device and thread counts
    signal.signal(signal.SIGTERM, _raise_interrupt)
    cancel = threading.Event()
    threading.Thread(target=_watch_parent, args=(parent_pid, cancel), daemon=True).start()
    try:
        engines = EngineCache(factory)
    except Exception as err:  # noqa: BLE001 - any start-up error goes back to the coordinator
        message = str(err) if isinstance(err, VosfxError) else f"{type(err).__name__}: {err}"
        conn.send(("startup-failed", message))
        return
    load = engines.factory

    def announced_load(model_config):
        conn.send(("loading",))
        engine = load(model_config)
        conn.send(("loaded",))
        return engine

    engines.factory = announced_load
    conn.send(("ready",))
    try:
        while not cancel.is_set():
            task = conn.recv()
            if task is None:
                break
            conn.send(("started", task.job_id, worker_name()))
            last = [0.0]

            def progress(ev, task=task, last=last):
                now = time.monotonic()
                if ev.event == "frame" and now - last[0] >= 1.0 / _PROGRESS_HZ:
                    last[0] = now
                    try:
                        conn.send(("progress", task.job_id, ev.frames_done, ev.total_frames))
                    except (BrokenPipeError, EOFError, ConnectionResetError):
                        # the coordinator is gone (killed): a cancel, not the job's failure
                        # (it was logged as an unexpected BrokenPipeError with a traceback)
                        cancel.set()

            outcome = run_one(task, engines, progress, cancel)
            conn.send(("finished", replace(outcome, worker=f"local:{os.getpid()}")))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass  # coordinator gone or batch cancelled: the writers already removed temp files
    finally:
        engines.close()


def _redirect_output(path: str) -> None:
    """Send this process's stdout and stderr (Python's and native libraries') to ``path``:
    the coordinator shows them, keeps the last lines for a crash's reason, and a worker's
    print never lands in the coordinator's JSON progress on stdout."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        os.unlink(path)  # the coordinator reads it through its own handle
    except OSError:
        pass  # Windows keeps an open file's name; the coordinator deletes it when closing

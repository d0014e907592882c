"""Atomic file writes: the one helper every JSON, index and state file goes through; and a
lock file for work two processes must not do at once (a download, a bundle's graphs).

A reader (a host plugin polling a sidecar, a resumed batch reading its state) must never see a
half-written file: the text is written to a temporary name in the same folder (same file
system, so the rename is atomic), flushed and fsynced, then renamed over the target. On any
failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_MARK = ".vosfx-tmp-"  # every temporary name holds it (batch cleanup looks for it)
# which machine made a temporary name (or a worker's scratch folder): only this one's can be
# told to be a dead process's
HOST_ID = hashlib.blake2b(socket.gethostname().encode(), digest_size=2).hexdigest()


def temp_name(path: Path) -> Path:
    """``.<name>.vosfx-tmp-<host>-<pid>-<random>`` beside ``path``: hidden, unique, same
    folder; the machine and process that made it are in the name (:func:`stale_temps`)."""
    return path.with_name(f".{path.name}{TEMP_MARK}{HOST_ID}-{os.getpid()}-{secrets.token_hex(4)}")


def stale_temps(path: Path) -> list[Path]:
    """The temporary names beside ``path`` that a process of this machine made for it and
    left when it died (a second Ctrl-C, a kill -9, a power cut): nobody will finish them.
    POSIX only (elsewhere the process cannot be asked after without touching it); a name of
    another machine (a shared folder) or of a process still alive is never listed."""
    if os.name != "posix":
        return []
    head = f".{path.name}{TEMP_MARK}{HOST_ID}-"
    found = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        pid, _, rest = entry.name.removeprefix(head).partition("-")
        if not entry.name.startswith(head) or not pid.isdigit() or not rest:
            continue
        if int(pid) != os.getpid() and not pid_alive(int(pid)):
            found.append(entry)
    return found


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (POSIX: signal 0, which touches
    nothing; another user's process counts as alive). Not for Windows, where ``os.kill``
    terminates."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process, alive
        return True
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp in the same folder, fsync, rename).
    Raises OSError as the file system reports it; the target is untouched on failure."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text through :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(
    path: str | os.PathLike,
    data: Any,
    *,
    default=None,
    indent: int | None = 2,
    sort_keys: bool = False,
) -> Path:
    """``data`` as JSON (NaN refused) plus a newline, through :func:`atomic_write_bytes`.
    Raises TypeError/ValueError for data that is not JSON before touching the disk."""
    text = json.dumps(data, indent=indent, default=default, allow_nan=False, sort_keys=sort_keys)
    return atomic_write_text(path, text + "\n")


@contextmanager
def exclusive_lock(
    path: str | os.PathLike,
    on_wait: Callable[[], None] | None = None,
    *,
    blocking: bool = True,
    reentrant: bool = False,
) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing and never deleted:
    deleting a lock file lets a third process lock a new one while a second still holds the
    old). Another process (or thread) holding it: ``on_wait()`` once, then wait for it; with
    ``blocking=False`` raise BlockingIOError instead of waiting. ``reentrant``: a thread that
    already holds it (taken reentrant too) holds it again at once (the first-use export takes a
    bundle's lock, then the export it calls takes it too); otherwise it is refused or waits
    like anyone else (a batch started again from inside a running one's callback)."""
    key = os.path.realpath(path)
    held: set[str] = _HELD.__dict__.setdefault("paths", set())
    if reentrant and key in held:
        yield
        return
    with open(path, "a+b") as fh:
        if not _try_lock(fh.fileno()):
            if not blocking:
                raise BlockingIOError(f"{path} is locked by another process")
            if on_wait is not None:
                on_wait()
            while not _try_lock(fh.fileno(), wait=True):
                time.sleep(0.5)
        if reentrant:
            held.add(key)
        try:
            yield
        finally:
            if reentrant:
                held.discard(key)
            _unlock(fh.fileno())


_HELD = threading.local()  # the lock files each thread holds (exclusive_lock)


if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int, wait: bool = False) -> bool:
        try:  # LK_LOCK retries for ~10 s and then raises; the caller loops
            msvcrt.locking(fd, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int, wait: bool = False) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

"""The worker's scratch folder: ``$TMPDIR/vosfx-ofx-worker-<host>-<pid>``, where its sessions
keep their temporary files (the session stores' ``vosfx-session-*`` folders of logits, a few
hundred MiB on a long clip).

A worker that ends cleanly removes its folder; one killed (``kill -9``, the effect's timeout, a
host that crashed) cannot, so every worker first removes the folders of workers that are gone:
named for this machine, owned by this user, a real folder (not a link), and no process with
that pid alive. A live process of that pid (the pid reused, or a worker of another effect
instance) keeps its folder; another user's folder is never touched.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from vosfx.files import HOST_ID, pid_alive

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("vosfx.ofx")
PREFIX = "vosfx-ofx-worker-"


def remove_dead(root: Path) -> list[Path]:
    """Remove, under ``root``, the scratch folders of this user's workers on this machine
    whose process has ended; returns them."""
    pattern = re.compile(rf"{re.escape(PREFIX)}{re.escape(HOST_ID)}-(\d+)")
    removed: list[Path] = []
    if os.name != "posix":  # no way to ask after a pid without touching it (os.kill ends it)
        return removed
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if found is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        pid = int(found.group(1))
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or pid == os.getpid():
            continue
        if pid_alive(pid):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        log.info("removed the scratch folder of worker %d, which has ended: %s", pid, entry.path)
        removed.append(Path(entry.path))
    return removed


class WorkerScratch:
    """This worker's scratch folder, made the process's temporary folder (``tempfile``) while
    open; the folders of dead workers are removed first."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root or tempfile.gettempdir())
        self.path: Path | None = None
        self._previous: str | None = None

    def __enter__(self) -> Self:
        remove_dead(self.root)
        path = self.root / f"{PREFIX}{HOST_ID}-{os.getpid()}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:  # a dead worker's with this pid (not ours: not removed)
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(mode=0o700)
        except OSError as err:  # a read-only TMPDIR: the sessions use the default
            log.warning("no scratch folder in %s (%s); using the default", self.root, err)
            return self
        self.path = path
        self._previous, tempfile.tempdir = tempfile.tempdir, str(path)
        return self

    def __exit__(self, *exc) -> None:
        if self.path is not None:
            tempfile.tempdir = self._previous
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None

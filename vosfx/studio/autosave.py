"""The studio's prompts kept on disk as they are made: a closed page, Ctrl-C, a closed
terminal or a crash never loses them.

Each studio has a folder under vosfx's cache (:func:`new_workdir`, ``<home>/studio/<id>/``,
locked while its studio runs). After every change to the prompts, the objects' prompts or the
finishing, the studio writes its session there as a job file (``job.json``,
:meth:`~vosfx.studio.state.Studio.changed`) beside the dropped masks and corrections' priors
it names (``job_masks/``, where the studio makes them): the file ``vosfx matte --job`` and
``vosfx studio --job`` read.

A studio that ends with changes not saved (Save job, Done) moves that job to
``recovered/<clip>-<time>-<id>/`` beside the studio folders (:func:`keep`); one that could not end
(killed, a crash, the machine switched off) leaves its folder behind, which the next studio
to start finds unlocked and recovers the same way (:func:`sweep`). A studio opened on a clip
offers the newest job recovered for it (:func:`recovered_for`): the page's Restore puts its
prompts and finishing back, Discard removes it. The :data:`KEEP` newest are kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
import uuid
from pathlib import Path

from vosfx.files import exclusive_lock

log = logging.getLogger(__name__)

JOB = "job.json"
MASKS = "job_masks"  # save_job's folder for a job file named JOB
RECOVERED = "recovered"
LOCK = ".lock"
KEEP = 20  # recovered jobs kept, newest first
FRESH_S = 60.0  # a studio folder's lock younger than this is never swept

_HELD: dict[Path, contextlib.ExitStack] = {}  # the studio folders this process holds


def root() -> Path:
    """Where the studio folders and the recovered jobs live (``<home>/studio``)."""
    from vosfx.models.cache import home

    return home() / "studio"


def clip_name(clip: str) -> str:
    """``clip`` as a studio names it, and its jobs (saved, kept: read from other folders): a
    file or folder by its absolute path, a pattern in its folder's (``shots/%05d.exr`` ->
    ``/work/shots/%05d.exr``)."""
    if "%" in clip:
        return str(Path(clip).parent.resolve() / Path(clip).name)
    return str(Path(clip).resolve())


def new_workdir() -> Path:
    """A studio folder under :func:`root`, locked until :func:`release`. The folders of
    studios that ended without cleaning up are recovered first (:func:`sweep`)."""
    base = root()
    base.mkdir(parents=True, exist_ok=True)
    sweep(base)
    path = base / uuid.uuid4().hex[:12]
    path.mkdir()
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(exclusive_lock(path / LOCK, blocking=False))
    except OSError:  # a file system without locks (some network shares): never swept either
        log.debug("no lock for %s", path, exc_info=True)
    (path / MASKS).mkdir()
    _HELD[path] = stack
    return path


def release(workdir: Path) -> None:
    """Let go of ``workdir``'s lock (a folder :func:`new_workdir` made; others: nothing)."""
    stack = _HELD.pop(Path(workdir), None)
    if stack is not None:
        stack.close()


def sweep(base: Path) -> list[Path]:
    """Recover the job of each studio folder under ``base`` whose studio is gone (its lock
    free: killed, crashed) and remove the folder; the jobs kept. Folders without a lock
    (another version's) or with a lock made in the last :data:`FRESH_S` (a studio starting,
    between making its lock file and taking it) are left alone."""
    kept = []
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        if folder.name == RECOVERED or not folder.is_dir():
            continue
        lock = folder / LOCK
        try:
            if time.time() - lock.stat().st_mtime < FRESH_S:
                continue
        except OSError:  # no lock
            continue
        try:
            with exclusive_lock(lock, blocking=False):
                job = keep(folder)
        except OSError:  # its studio runs (or this file system has no locks)
            continue
        if job is not None:
            kept.append(job)
        shutil.rmtree(folder, ignore_errors=True)
    return kept


def keep(workdir: Path) -> Path | None:
    """Move ``workdir``'s job and its masks to a folder of their own under ``recovered/``
    beside it; returns the job file kept (None: it had none)."""
    job = workdir / JOB
    if not job.is_file():
        return None
    clip = clip_of(job) or "clip"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(clip).stem)[:40] or "clip"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(job.stat().st_mtime))
    target = workdir.parent / RECOVERED / f"{stem}-{stamp}-{uuid.uuid4().hex[:6]}"
    target.mkdir(parents=True)
    if (workdir / MASKS).is_dir():
        (workdir / MASKS).rename(target / MASKS)
        _drop_unnamed(target / MASKS, job)
    job.rename(target / JOB)
    _prune(workdir.parent / RECOVERED)
    return target / JOB


def recovered_for(clip: str, base: Path) -> list[Path]:
    """The jobs recovered under ``base`` (a studio folders' root) for ``clip`` (as the
    studio names it), newest first."""
    found = []
    for job in (base / RECOVERED).glob(f"*/{JOB}"):
        if clip_of(job) == clip:
            found.append((job.stat().st_mtime, job))
    return [job for _, job in sorted(found, reverse=True)]


def is_recovered(path: Path, base: Path) -> bool:
    """Whether ``path`` is a job recovered under ``base``."""
    path = Path(path).resolve()
    return path.name == JOB and path.parent.parent == (base / RECOVERED).resolve()


def discard(job: Path) -> None:
    """Remove a recovered job and its masks."""
    shutil.rmtree(Path(job).parent, ignore_errors=True)


def summary(job: Path) -> dict:
    """What the page says of a recovered job: its path, when it was last changed, how many
    prompts on how many objects."""
    data = json.loads(job.read_text(encoding="utf-8"))
    prompts = data.get("prompts") or []
    return {
        "path": str(job),
        "saved_at": time.strftime("%Y-%m-%d %H:%M", time.localtime(job.stat().st_mtime)),
        "prompts": len(prompts),
        "objects": len({p.get("obj_id") for p in prompts}),
    }


def clip_of(job: Path) -> str | None:
    """The clip a job file names, as a studio names it (a relative input against the job's
    folder, as ``vosfx matte --job`` reads it); None for a file that is not a job."""
    try:
        data = json.loads(job.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    clip = data.get("input") if isinstance(data, dict) else None
    if not isinstance(clip, str) or not clip:
        return None
    return clip_name(str(Path(job).parent / Path(clip).expanduser()))


def _drop_unnamed(masks: Path, job: Path) -> None:
    """Remove the files of ``masks`` that ``job`` does not name (prompts undone or replaced,
    kept by the studio for redo)."""
    try:
        prompts = json.loads(job.read_text(encoding="utf-8")).get("prompts") or []
    except (OSError, ValueError, AttributeError):
        return
    named = {Path(p[key]).name for p in prompts for key in ("mask", "prior") if p.get(key)}
    for path in masks.iterdir():
        if path.name not in named:
            path.unlink(missing_ok=True)


def _prune(folder: Path) -> None:
    """Keep the :data:`KEEP` newest recovered jobs."""
    jobs = sorted((p.stat().st_mtime, p.parent) for p in folder.glob(f"*/{JOB}") if p.is_file())
    for _, old in jobs[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)

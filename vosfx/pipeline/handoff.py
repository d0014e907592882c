"""Tracked results handed from the studio to a later render of the same job.

An editor plugin's *Pick in vosfx studio* ends with the studio's Done: the studio writes the
job and exits, and the plugin renders it with ``vosfx matte --job`` in a process of its own,
which would track every frame the user has just watched Track compute. So when the studio
writes a job whose every frame it has tracked (Done, Save job), it also writes its results
under the model cache (``<VOSFX_HOME>/tracked/<key>/``), and :func:`vosfx.pipeline.run` takes
them instead of tracking when it finds results for its key.

The key (:func:`tracked_key`) is everything the results depend on: the clip (its resolved
path, size and modification time, every file's for an image sequence, frame size, count and
rate), the frame range, the prompts'
content (:func:`vosfx.session.prompts.content_digest`: clicks, boxes, masks, priors,
corrections), the ``[model]`` and ``[memory]`` settings and vosfx's version. Anything else
(outputs, formats, finishing) may differ: a plugin puts its own outputs in the job. Results
whose key does not match are never read; files that cannot be read are logged and left, and
the render tracks as it would have. Arrays are read with ``allow_pickle=False``, and only
from folders and files of this user's own that no other user can write (the cache may be
shared: another user could otherwise put masks of their choosing under a key they can
compute from the clip and the prompts). The folders are kept within :data:`BUDGET_BYTES` together (the newest always), the oldest going first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vosfx.types import ObjectResult, Prompt, VideoInfo

if TYPE_CHECKING:
    from vosfx.config import JobConfig
    from vosfx.session import ClipSession

log = logging.getLogger(__name__)

# what the hand-off folders may take on disk together (each ~256 KiB an object a frame at
# 1024: 4 GiB holds ~16,000 object-frames); the newest is kept whatever its size
BUDGET_BYTES = 4 << 30


def folder() -> Path:
    from vosfx.models.cache import home

    return home() / "tracked"


def tracked_key(
    input_path: str,
    info: VideoInfo,
    start: int,
    end: int,
    prompts: list[Prompt],
    config: JobConfig,
) -> str:
    """What tracked results of these prompts over [start, end) of this clip depend on, as a
    hex digest (the hand-off folder's name)."""
    from vosfx._version import __version__
    from vosfx.session.prompts import content_digest

    path = Path(input_path).expanduser().resolve()
    clip = [str(path), _stamp(path), info.width, info.height, info.num_frames, str(info.fps)]
    sections = config.to_dict()
    what = {
        "vosfx": __version__,
        "clip": clip,
        "range": [start, end],
        "prompts": sorted(content_digest(p).hex() for p in prompts),
        "model": sections["model"],
        "memory": sections["memory"],
    }
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def _stamp(path: Path) -> str:
    """The input's state: a file's size and modification time; for an image sequence (a
    folder, or a pattern such as ``shot.%04d.exr``) every file's in its folder, since a frame
    rewritten in place leaves the folder's own time as it was."""
    if path.is_file():
        st = path.stat()
        return f"{st.st_size} {st.st_mtime_ns}"
    where = path if path.is_dir() else path.parent
    h = hashlib.blake2b(digest_size=16)
    try:
        with os.scandir(where) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_file():
                    st = entry.stat()
                    h.update(f"{entry.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    except OSError:
        return "unreadable"
    return h.hexdigest()


def save(session: ClipSession, key: str) -> Path | None:
    """Write ``session``'s results (every frame of its range tracked: else nothing is
    written, and None) under ``key``; returns the folder. A failure to write is logged, not
    raised: the hand-off only saves time."""
    if session.stale() or session.pending_frames():
        return None
    target = folder() / key
    if target.is_dir():
        os.utime(target)  # kept as the newest
        return target
    start, end, low = session.start, session.end, session.engine.low_res
    try:
        folder().mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder()))
        try:
            quality: dict[str, dict[str, float]] = {}
            for obj in session.obj_ids:
                logits = np.lib.format.open_memmap(
                    tmp / f"logits_{obj}.npy", "w+", np.float32, (end - start, low, low)
                )
                table = np.zeros((4, end - start), np.float32)  # has, prompted, score, iou
                for t in range(start, end):
                    res = session.store.get(obj, t)
                    if res is None:
                        continue
                    logits[t - start] = res.logits
                    prompted = session.store.is_prompted(obj, t)
                    table[:, t - start] = (1, prompted, res.object_score_logit, res.iou)
                    if res.info.get("quality") is not None:
                        quality.setdefault(str(obj), {})[str(t)] = float(res.info["quality"])
                logits.flush()
                del logits
                np.save(tmp / f"table_{obj}.npy", table, allow_pickle=False)
            meta = {
                "key": key,
                "obj_ids": list(session.obj_ids),
                "start": start,
                "end": end,
                "low": low,
                "quality": quality,
                "report": session.report(),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, default=str))
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as err:
        log.warning("tracked results not handed over (%s): the render will track again", err)
        return None
    try:
        _prune()
    except OSError as err:  # another process pruning or writing beside it
        log.warning("old tracked results not removed from %s (%s)", folder(), err)
    return target


def _prune() -> None:
    """The oldest folders go while all of them take more than :data:`BUDGET_BYTES`."""
    found = sorted(
        (p for p in folder().iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    total = 0
    for i, p in enumerate(found):
        total += sum(f.stat().st_size for f in p.iterdir())
        if i and total > BUDGET_BYTES:
            shutil.rmtree(p, ignore_errors=True)


def _check_private(where: Path, obj_ids: tuple[int, ...]) -> None:
    """Raises ValueError where the hand-off folders or the files to read are not this
    user's own, or other users can write them."""
    from vosfx.native import not_private

    files = [where / "meta.json"]
    for obj in obj_ids:
        files += [where / f"logits_{obj}.npy", where / f"table_{obj}.npy"]
    for path in (folder(), where, *files):
        why = not_private(path)
        if why is not None:
            raise ValueError(why)


@dataclass
class Handed:
    """Results read back for a key: per object its logits (memory-mapped) and table."""

    obj_ids: list[int]
    start: int
    logits: dict[int, np.ndarray]
    tables: dict[int, np.ndarray]
    quality: dict[str, dict[str, float]]
    report: dict[str, Any]

    def results(self):
        """(ObjectResult, whether it is its prompt's output) for every stored result."""
        for obj in self.obj_ids:
            table = self.tables[obj]
            for i in np.flatnonzero(table[0]):
                t = self.start + int(i)
                q = self.quality.get(str(obj), {}).get(str(t))
                info = {} if q is None else {"quality": q}
                res = ObjectResult(
                    obj,
                    t,
                    np.array(self.logits[obj][i], np.float32),
                    float(table[2, i]),
                    float(table[3, i]),
                    info,
                )
                yield res, bool(table[1, i])


def load(key: str, obj_ids: tuple[int, ...], start: int, end: int, low: int) -> Handed | None:
    """The results handed over under ``key`` for these objects, frames and logit size, or
    None (none there, or not readable: logged)."""
    where = folder() / key
    if not (where / "meta.json").is_file():
        return None
    try:
        _check_private(where, obj_ids)
        meta = json.loads((where / "meta.json").read_text())
        if (meta["key"], meta["obj_ids"], meta["start"], meta["end"], meta["low"]) != (
            key,
            list(obj_ids),
            start,
            end,
            low,
        ):
            raise ValueError("meta.json does not describe this job's results")
        logits, tables = {}, {}
        for obj in obj_ids:
            logits[obj] = np.load(where / f"logits_{obj}.npy", mmap_mode="r", allow_pickle=False)
            tables[obj] = np.load(where / f"table_{obj}.npy", allow_pickle=False)
            if logits[obj].shape != (end - start, low, low) or tables[obj].shape != (
                4,
                end - start,
            ):
                raise ValueError(f"object {obj}'s arrays have the wrong shape")
        return Handed(list(obj_ids), start, logits, tables, meta["quality"], meta["report"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("tracked results in %s not used (%s): tracking again", where, err)
        return None


__all__ = ["BUDGET_BYTES", "Handed", "folder", "load", "save", "tracked_key"]

"""What makes a batch resumable: job hashes, the state file, skip/redo decisions, cleanup.

**The job hash** (sha256, hex) covers everything that changes a job's outputs:

- the input: byte size, mtime (ns) and content — the whole file when it is at most
  ``FULL_HASH_BYTES`` (16 MiB), else its first and last MiB. Reading two MiB keeps hashing a
  500-clip batch of 2 GB ProRes files to seconds, and size + mtime + both ends catches every
  re-export or truncation we know of; a same-size in-place edit of the middle of a big file that
  also restores its mtime would be missed. Image sequences hash each frame file's name, size
  and mtime (content hashing thousands of frames would cost as much as matting them).
- each mask prompt's full content, and a composite's background file (as the input);
- the job as the pipeline sees it (:meth:`vosfx.job.Job.to_dict`: paths, prompts, frame range
  and the *effective* config after presets and overrides), minus ``overwrite``;
- the model: its id and the sha256 the cache holds its file to (the registry's published one,
  or a trusted import's own: a fine-tune imported under the id), or the checkpoint file's
  fingerprint when ``[model] checkpoint`` names one;
- vosfx's major version (a new major may change outputs).

**Skip rule.** A job is skipped only when every output and sidecar it wrote exists, the state
file records this hash for it, and each sidecar carries the same hash (written there by the
worker after the pipeline finishes). Anything less is redone from scratch.

**Overwrite rule.** A redo may replace existing outputs only when this batch made them: the
state file listed them as absent when the job was dispatched, or their sidecar carries this
job's id. A file the batch did not make fails the job (OutputError) unless the row says
``overwrite = true``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vosfx._version import __version__
from vosfx.errors import BatchError
from vosfx.files import TEMP_MARK, atomic_write_json
from vosfx.job import Job

FULL_HASH_BYTES = 16 * 2**20
EDGE_BYTES = 2**20
STATE_VERSION = 1


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """{size, mtime_ns, sha256} of a file; ``sha256`` covers the whole file up to 16 MiB,
    else ``head+tail:`` the first and last MiB."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if st.st_size <= FULL_HASH_BYTES:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
            kind = ""
        else:
            h.update(fh.read(EDGE_BYTES))
            fh.seek(st.st_size - EDGE_BYTES)
            h.update(fh.read(EDGE_BYTES))
            kind = "head+tail:"
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": kind + h.hexdigest()}


def input_fingerprint(path: str) -> Any:
    """A video file's fingerprint, or for an image sequence (folder or ``%05d`` pattern) the
    name, size and mtime of every frame file: the files the sequence is read from, not the
    rest of their folder (outputs written beside a pattern's frames re-rendered the job on
    every run). A missing input fingerprints as ``missing`` (its job will fail with the
    source's own message)."""
    from vosfx.errors import InputError
    from vosfx.io.sequence import is_pattern, scan

    p = Path(path)
    if is_pattern(p) or p.is_dir():
        try:
            found = scan(p)
        except InputError:
            return "missing"
        files = [] if found is None else found[0]
        return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return file_fingerprint(p) if p.is_file() else "missing"


def model_identity(job: Job) -> dict[str, Any]:
    """The model's id and what pins its weights: the sha256 the cache holds the file to (a
    trusted import's own, else the published one), or the checkpoint file's fingerprint."""
    model = job.config.model
    ident: dict[str, Any] = {"id": model.name}
    if model.checkpoint:
        ckpt = Path(model.checkpoint)
        ident["checkpoint"] = file_fingerprint(ckpt) if ckpt.is_file() else "missing"
    else:
        from vosfx.errors import ModelError
        from vosfx.models.cache import expected_sha256

        try:  # a fine-tune imported under this id (trusted) has its own hash
            ident["sha256"] = expected_sha256(model.name)
        except ModelError:
            ident["sha256"] = None  # unknown id: the job fails with the registry's message
    return ident


def _sha256_or_none(path: str | None) -> str | None:
    """A prompt file's fingerprint hash, None when the prompt has none or it is missing."""
    return file_fingerprint(path)["sha256"] if path and Path(path).is_file() else None


def job_hash(job: Job) -> str:
    """sha256 (hex) over everything that changes ``job``'s outputs (see the module doc)."""
    described = job.to_dict()
    described.pop("overwrite", None)
    prompts = [_sha256_or_none(p.mask) for p in job.prompts]
    background = Path(job.config.output.background).expanduser()
    payload = {
        "job": described,
        "input": input_fingerprint(job.input),
        "masks": prompts,
        # a composite's plate: the config holds only its path
        "background": file_fingerprint(background) if background.is_file() else None,
        "model": model_identity(job),
        "vosfx_major": __version__.split(".")[0],
    }
    if any(p.prior for p in job.prompts):  # corrections' priors (absent: the hash as before)
        payload["priors"] = [_sha256_or_none(p.prior) for p in job.prompts]
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class BatchState:
    """``<state dir>/state.json``: per job id, its hash, status and the paths it wrote.
    Saved atomically after every change, so a killed batch loses at most the job in flight."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / "state.json"
        self.logs = self.dir / "logs"
        self.jobs: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise BatchError(
                    f"batch state {self.path} is unreadable ({err}); move it "
                    "away to start the batch afresh"
                ) from None
            if data.get("version") != STATE_VERSION:
                raise BatchError(
                    f"batch state {self.path}: version {data.get('version')!r}, "
                    f"expected {STATE_VERSION}"
                )
            self.jobs = data.get("jobs", {})

    def open(self) -> BatchState:
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise BatchError(f"batch state folder {self.dir} cannot be created ({err})") from None
        return self

    def log_path(self, job_id: str) -> Path:
        return self.logs / f"{job_id}.log"

    def update(self, job_id: str, **fields: Any) -> None:
        entry = self.jobs.setdefault(job_id, {})
        entry.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.save()

    def save(self) -> None:
        """Raises BatchError when the file cannot be written (a full disk): a batch that
        cannot record what it did must stop, or a rerun would not know."""
        try:
            atomic_write_json(
                self.path, {"version": STATE_VERSION, "jobs": self.jobs}, indent=1, sort_keys=True
            )
        except OSError as err:
            raise BatchError(
                f"batch state {self.path} cannot be saved ({err.strerror or err}); the batch "
                "stopped: free space or fix the folder, then run it again to resume"
            ) from None


@dataclass(frozen=True)
class Decision:
    """``run`` False: skip (``reason`` says why it is done). ``overwrite``: the redo may
    replace existing outputs because this batch made them."""

    run: bool
    reason: str
    overwrite: bool = False


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def decide(job_id: str, job: Job, digest: str, state: BatchState) -> Decision:
    """Skip, or redo (and may the redo overwrite?), per the module doc's rules."""
    from vosfx.batch.manifest import planned_paths

    entry = state.jobs.get(job_id, {})
    recorded = entry.get("outputs", []) + entry.get("sidecars", [])
    paths = recorded or [p for p in planned_paths(job) if "{obj}" not in p]
    sidecars = [Path(p) for p in paths if p.endswith(".json")]
    stamps = [(_read_sidecar(p) or {}).get("batch", {}) for p in sidecars if p.exists()]
    if (
        entry.get("status") == "ok"
        and entry.get("hash") == digest
        and paths
        and all(Path(p).exists() for p in paths)
        and all(s.get("job_hash") == digest for s in stamps)
    ):
        return Decision(False, "outputs and sidecars exist and match the job hash")
    ours = set(entry.get("outputs", [])) | set(entry.get("sidecars", []))
    fresh = set(entry.get("fresh", []))
    existing = existing_finals(job)
    stamped = {
        concrete[: -len(".json")]
        for concrete, _planned in existing
        if concrete.endswith(".json")
        and (_read_sidecar(Path(concrete)) or {}).get("batch", {}).get("job_id") == job_id
    }
    ours |= stamped | {p + ".json" for p in stamped}
    may_overwrite = all(c in ours or planned in fresh for c, planned in existing)
    if not entry:
        reason = "new job"
    elif entry.get("hash") != digest:
        reason = "input, prompts or config changed"
    elif entry.get("status") != "ok":
        reason = f"last attempt {entry.get('status', 'unfinished')}"
    else:
        reason = "outputs missing or incomplete"
    return Decision(True, reason, overwrite=job.overwrite or (bool(existing) and may_overwrite))


def existing_finals(job: Job) -> list[tuple[str, str]]:
    """(path, the planned path it is) for every final output and sidecar of ``job`` that
    exists now: a per-object output's files for each object id found (its planned path a
    template with ``{obj}``, :func:`~vosfx.batch.manifest.planned_paths`)."""

    from vosfx.batch.manifest import planned_paths

    found = []
    for planned in planned_paths(job):
        if "{obj}" not in planned:
            if os.path.lexists(planned):
                found.append((planned, planned))
            continue
        head, _, tail = planned.partition("{obj}")
        pattern = glob.escape(head) + "[0-9]*" + glob.escape(tail).replace("{obj}", "[0-9]*")
        ids = re.compile(re.escape(head) + r"\d+" + re.escape(tail).replace(r"\{obj\}", r"\d+"))
        found += [(c, planned) for c in sorted(glob.glob(pattern)) if ids.fullmatch(c)]
    return found


def absent_paths(job: Job) -> list[str]:
    """Planned final paths that do not exist now (recorded at dispatch as ``fresh``: if they
    exist later, this batch made them)."""
    from vosfx.batch.manifest import planned_paths

    return [p for p in planned_paths(job) if not Path(p).exists()]


def _final_name_patterns(job: Job) -> list[tuple[Path, str]]:
    """(folder, name pattern with ``*`` for an object id) of every final output and sidecar."""
    from vosfx.pipeline import plan_outputs

    found = []
    for path, _fmt, obj in plan_outputs(job):
        p = Path(path)
        name = p.name.replace("{obj}", "*")
        if obj is not None and "{obj}" not in path:  # the pipeline's <stem>_obj<id><suffix>
            name = f"{p.stem}_obj*{p.suffix}"
        found += [(p.parent, name), (p.parent, name + ".json")]
    return found


def remove_partial(job: Job) -> list[str]:
    """Delete temporary files a killed render left beside the job's outputs (the writers'
    ``.<name>.vosfx-tmp-<host>-<pid>-<hex>`` names). Returns what was removed."""
    from vosfx.io.writers.base import remove_path

    removed = []
    for folder, name in _final_name_patterns(job):
        parts = [re.escape(part) for part in f".{name}{TEMP_MARK}".split("*")]
        pattern = re.compile(".+".join(parts) + "[0-9a-f-]+")
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if pattern.fullmatch(entry.name):
                remove_path(entry)
                removed.append(str(entry))
    return removed


def make_output_folders(job: Job) -> list[Path]:
    """Make the missing folders the job's outputs go into: a batch's output template may name
    a folder per clip (``mattes/{stem}/{stem}.mov``) or one nobody has made yet. Returns the
    folders made, outermost first. They stay when the job fails (another job may be about to
    write into the same folder). OutputError naming the folder where one cannot be made (a
    file in its place, no permission). A per-object template's ``{obj}`` folders are made by
    the pipeline once the prompts say which objects there are (``make_folders``)."""
    from vosfx.batch.manifest import planned_paths
    from vosfx.io.writers.base import make_parent_folders

    made: list[Path] = []
    for path in planned_paths(job):
        if "{obj}" not in str(Path(path).parent):
            made += make_parent_folders(path)
    return made


def stamp_sidecars(sidecars: list[str] | tuple[str, ...], job_id: str, digest: str) -> None:
    """Add ``"batch": {"job_id", "job_hash"}`` to each sidecar (atomically), so a later run
    can tell the outputs are this job's, even without the state file."""
    for path in sidecars:
        p = Path(path)
        data = _read_sidecar(p)
        if data is None:
            continue
        data["batch"] = {"job_id": job_id, "job_hash": digest}
        atomic_write_json(p, data, indent=1, sort_keys=True)

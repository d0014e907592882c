"""Batch manifests: many jobs described once, validated completely before any work starts.

A manifest is a TOML, CSV or JSON-lines file (by extension: ``.toml``, ``.csv``, ``.jsonl`` /
``.ndjson``), or a folder of clips with a naming rule for their masks. Every form becomes the
same rows; a row is a job dict (:func:`vosfx.job.job_from_dict`) with a few batch additions:

- ``id``: names the job in the summary, the state file and ``logs/<id>.log`` (default: the
  input's stem, made unique);
- ``mask`` (+ ``mask_frame``): shorthand for ``prompts = [{frame = mask_frame, mask = ...}]``;
- ``preset``: a synonym of ``presets``;
- ``output``: a path template with ``{stem}``, ``{name}``, ``{ext}``, ``{parent}``, ``{id}``,
  ``{index}``, ``{preset}`` and ``{obj}`` (kept for the pipeline, which writes one output per
  object when ``[output] objects = "each"``).

Relative paths resolve against the manifest's folder. Every problem (unknown key, missing file,
duplicate or clobbering output, bad template, unknown preset) is collected, and one
:class:`~vosfx.errors.BatchError` lists them all, so an overnight batch never dies at job 57
on a typo. The file forms are read by :mod:`vosfx.batch.rows`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vosfx.batch.rows import (
    DEFAULT_MASK_RULE,
    expand_template,
    folder_rows,
    input_stem,
    read_rows,
)
from vosfx.errors import BatchError, VosfxError
from vosfx.job import Job, job_from_dict

_ROW_KEYS = {
    "id",
    "input",
    "output",
    "presets",
    "preset",
    "overrides",
    "prompts",
    "mask",
    "mask_frame",
    "start",
    "end",
    "overwrite",
    "fit",
    "objects",
    "fps",
    "names",
}
# One error list line per problem; past this many the rest are counted, not listed (a wrong
# template over 500 clips would otherwise print 500 near-identical lines).
_MAX_LISTED_ERRORS = 40


@dataclass(frozen=True)
class BatchJob:
    """One job of a batch. ``id`` is unique in the batch and safe as a file name; ``where``
    says where the row came from (``clips.csv line 4``), for messages."""

    id: str
    job: Job
    index: int
    where: str


@dataclass(frozen=True)
class Manifest:
    """A validated batch: jobs in manifest order. ``path``: the manifest file or folder."""

    path: Path
    jobs: tuple[BatchJob, ...]

    def default_state_dir(self) -> Path:
        """``<folder>/.vosfx-batch/<manifest name>``: beside the manifest, so a rerun of the
        same manifest finds its state without being told."""
        folder = self.path if self.path.is_dir() else self.path.parent
        return folder / ".vosfx-batch" / self.path.name


def load_manifest(
    path: str | Path,
    *,
    defaults: dict[str, Any] | None = None,
    mask_rule: str = DEFAULT_MASK_RULE,
    allow_missing: bool = False,
) -> Manifest:
    """Read and validate a manifest file or a folder of clips.

    ``defaults``: row keys used where a row has none (the CLI's ``--output``/``--preset``);
    a TOML manifest's ``[defaults]`` table sits between these and the rows. ``mask_rule``:
    for a folder, the mask file of each clip (a template over ``{stem}``, ``{name}``,
    ``{ext}``). ``allow_missing``: a missing input fails its own job instead of the manifest.
    Raises BatchError listing every problem found.
    """
    # absolute (links kept): the jobs' paths, hashes and state then do not depend on the
    # folder the batch is run from, nor on Ray workers' working folders
    path = Path(os.path.abspath(Path(path).expanduser()))
    if path.is_dir():
        rows = folder_rows(path, mask_rule)
        base = path
    elif path.is_file():
        rows = read_rows(path)
        base = path.parent
    else:
        raise BatchError(
            f"manifest {path} does not exist (expected a .toml, .csv or .jsonl "
            "file, or a folder of clips)"
        )
    file_defaults: dict[str, Any] = {}
    if rows and rows[0][0] == "defaults":
        file_defaults = rows.pop(0)[1]
    merged = with_defaults(defaults or {}, file_defaults)
    return build_manifest(path, base, rows, merged, allow_missing=allow_missing)


# keys that say one thing together: a row giving any of a family replaces the defaults' family
_KEY_FAMILIES = ({"preset", "presets"}, {"mask", "prompts"})


def with_defaults(defaults: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """``row`` over ``defaults``: a row key replaces the defaults' key and its family (a
    row's ``preset`` replaces the defaults' ``presets``; a row's ``mask`` their ``prompts``,
    and the other way round), and ``overrides`` merge setting by setting (a row's
    ``{refine = {feather_px = 2}}`` keeps the defaults' ``{model = {image_size = 512}}``)."""
    from vosfx.config import merge_dicts

    merged = dict(defaults)
    for family in _KEY_FAMILIES:
        if family & row.keys():
            for key in family:
                merged.pop(key, None)
    for key, value in row.items():
        base = merged.get(key)
        if key == "overrides" and isinstance(base, dict) and isinstance(value, dict):
            merged[key] = merge_dicts(base, value)
        else:
            merged[key] = value
    return merged


def build_manifest(
    path: Path,
    base: Path,
    rows: list[tuple[str, dict[str, Any]]],
    defaults: dict[str, Any],
    *,
    allow_missing: bool = False,
) -> Manifest:
    """Rows ``(where, row dict)`` -> a validated Manifest (see :func:`load_manifest`)."""
    errors: list[str] = []
    if not rows:
        raise BatchError(f"manifest {path}: no jobs found")
    for key in sorted(set(defaults) - _ROW_KEYS):  # said once, not again for every row
        errors.append(f"defaults: unknown key {key!r}; known: {', '.join(sorted(_ROW_KEYS))}")
    defaults = {k: v for k, v in defaults.items() if k in _ROW_KEYS}
    ids = _assign_ids(rows, errors)
    jobs = []
    for index, ((where, row), job_id) in enumerate(zip(rows, ids)):
        job = _row_job(
            with_defaults(defaults, row), where, base, job_id, index, errors, allow_missing
        )
        if job is not None:
            jobs.append(BatchJob(job_id, job, index, where))
    _check_outputs(jobs, errors, path if path.is_file() else None)
    if errors:
        shown = errors[:_MAX_LISTED_ERRORS]
        more = len(errors) - len(shown)
        raise BatchError(
            f"manifest {path}: {len(errors)} problem(s); nothing was run:\n  "
            + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more else "")
        )
    return Manifest(path, tuple(jobs))


# --- ids, templates, jobs ---------------------------------------------------------------------


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "job"


def _assign_ids(rows: list[tuple[str, dict[str, Any]]], errors: list[str]) -> list[str]:
    """Explicit ids must be unique; automatic ones (the input's stem) get ``-2``, ``-3``."""
    ids: list[str] = []
    explicit: dict[str, str] = {}  # id -> where it was given
    for where, row in rows:
        if "id" in row:
            rid = str(row["id"])
            if _safe_id(rid) != rid:
                errors.append(f"{where}: id {rid!r} must use only letters, digits, '.', '_', '-'")
            if rid in explicit:
                errors.append(f"{where}: id {rid!r} is also used at {explicit[rid]}")
            explicit[rid] = where
    for where, row in rows:
        if "id" in row:
            ids.append(str(row["id"]))
            continue
        stem = _safe_id(input_stem(str(row.get("input", "job"))))
        candidate, n = stem, 1
        while candidate in explicit or candidate in ids:
            n += 1
            candidate = f"{stem}-{n}"
        ids.append(candidate)
    return ids


def _row_job(
    row: dict[str, Any],
    where: str,
    base: Path,
    job_id: str,
    index: int,
    errors: list[str],
    allow_missing: bool,
) -> Job | None:
    unknown = set(row) - _ROW_KEYS
    if unknown:  # said, and the row's other problems found too (not hidden behind it)
        errors.append(
            f"{where}: unknown key(s) {sorted(unknown)}; known: " + ", ".join(sorted(_ROW_KEYS))
        )
        row = {k: v for k, v in row.items() if k in _ROW_KEYS}
    for a, b in ("preset", "presets"), ("mask", "prompts"):
        if a in row and b in row:
            errors.append(f"{where}: give {a!r} or {b!r}, not both")
            return None
    data = {k: v for k, v in row.items() if k not in ("id", "preset", "mask", "mask_frame")}
    if "preset" in row and "presets" not in row:
        data["presets"] = row["preset"]
    if "mask" in row and "prompts" not in row:
        data["prompts"] = [{"frame": row.get("mask_frame", 0), "mask": row["mask"]}]
    presets = data.get("presets", [])
    presets = (presets,) if isinstance(presets, str) else tuple(presets)
    if not isinstance(data.get("input"), str):
        errors.append(f"{where}: 'input' must be a path string, found {data.get('input')!r}")
        return None
    if not isinstance(data.get("output"), str):
        errors.append(f"{where}: no 'output' (give one per row, in [defaults] or --output)")
        return None
    try:
        # the input as the job reads it (relative to the manifest's folder), so that
        # {parent} is its folder's name for a relative input too
        data["output"] = expand_template(
            data["output"],
            input_path=str(base / data["input"]),
            job_id=job_id,
            index=index,
            presets=presets,
        )
        job = job_from_dict(data, base=base)
    except VosfxError as err:
        errors.append(f"{where}: {err}")
        _missing_files(data, base, where, errors, allow_missing)  # not hidden behind it
        return None
    if unknown:
        return None
    if "{obj}" in job.output and job.config.output.objects != "each":
        errors.append(
            f'{where}: output {job.output!r} uses {{obj}}, which needs [output] objects = "each"'
        )
    if not allow_missing and not _input_exists(job.input):
        errors.append(f"{where}: input {job.input} does not exist")
    for p in job.prompts:
        if p.mask is not None and not Path(p.mask).is_file():
            errors.append(f"{where}: mask {p.mask} does not exist")
        if p.prior is not None and not Path(p.prior).is_file():
            errors.append(f"{where}: prior {p.prior} does not exist")
    model = job.config.model
    if model.checkpoint and not Path(model.checkpoint).expanduser().is_file():
        errors.append(f"{where}: [model] checkpoint {model.checkpoint} does not exist")
    elif not model.checkpoint:
        from vosfx.models import registry

        try:
            registry.get(model.name)
        except VosfxError as err:
            errors.append(f"{where}: [model] name: {err}")
    return job


def _missing_files(
    data: dict[str, Any], base: Path, where: str, errors: list[str], allow_missing: bool
) -> None:
    """The input and mask files a row names that do not exist, read from the row as written
    (its job could not be built: another problem was found first)."""

    def beside(text: Any) -> Path | None:
        return base / Path(text).expanduser() if isinstance(text, str) and text else None

    src = beside(data.get("input"))
    if src is not None and not allow_missing and not _input_exists(str(src)):
        errors.append(f"{where}: input {src} does not exist")
    prompts = data.get("prompts")
    for prompt in prompts if isinstance(prompts, list) else []:
        mask = beside(prompt.get("mask")) if isinstance(prompt, dict) else None
        if mask is not None and not mask.is_file():
            errors.append(f"{where}: mask {mask} does not exist")


def _input_exists(path: str) -> bool:
    if "%" in path:  # printf pattern: its folder must exist; the frames are the source's job
        return Path(path).parent.is_dir()
    return Path(path).exists()


def planned_paths(job: Job, planned: list[tuple[str, str, int | None]] | None = None) -> list[str]:
    """Every final path the job writes (outputs and sidecars). A per-object output (``[output]
    objects = "each"``) is a template with ``{obj}`` where the object id goes: the path's own
    ``{obj}``, else the pipeline's ``<stem>_obj{obj}<suffix>``. ``planned``: the job's
    :func:`~vosfx.pipeline.plan_outputs`, where the caller has it."""
    from vosfx.pipeline import plan_outputs
    from vosfx.pipeline.output import object_path

    paths = []
    for path, _fmt, obj in plan_outputs(job) if planned is None else planned:
        if obj is not None and _OBJ not in path:
            path = object_path(path, _OBJ)
        paths.append(path)
        if job.config.output.sidecar:
            paths.append(path + ".json")
    return paths


_OBJ = "{obj}"


def _check_outputs(jobs: list[BatchJob], errors: list[str], manifest: Path | None) -> None:
    """No two jobs write the same path; no job writes over any file a job reads (its input,
    masks, priors, background), nor over the ``manifest`` file itself (a studio-saved job
    ``shot.json`` rendering a sequence folder ``shot``, whose sidecar is ``shot.json``). A per-object template (``{obj}``)
    stands for every object id: checked against the other paths and inputs it can name, and
    against the other templates."""
    owner: dict[str, str] = {}
    inputs = {}
    if manifest is not None:
        inputs[str(manifest.resolve())] = "the manifest itself"
    for bj in jobs:
        for path, _what in bj.job.files_read():  # input, masks, priors, background
            inputs[str(Path(path).expanduser().resolve())] = bj.where
    templates: list[tuple[str, str, str]] = []  # (resolved, as planned, row)
    from vosfx.pipeline import check_output_name, plan_outputs
    from vosfx.pipeline.checks import check_not_read

    for bj in jobs:
        try:
            planned = plan_outputs(bj.job)
        except VosfxError as err:
            errors.append(f"{bj.where}: {err}")
            continue
        for path, fmt, obj in planned:  # what the render would refuse, found before any job
            try:
                check_output_name(path, fmt)
                if obj is None:  # among an image sequence's frames, onto its own masks
                    check_not_read(Path(path), bj.job)
            except VosfxError as err:
                errors.append(f"{bj.where}: {err}")
        paths = planned_paths(bj.job, planned)
        for path in paths:
            key = str(Path(path).resolve())
            if key in owner and owner[key] != bj.where:
                errors.append(f"{bj.where}: output {path} is also written by {owner[key]}")
            owner.setdefault(key, bj.where)
            if key in inputs:
                what = inputs[key]
                label = "sidecar" if path.endswith(".json") else "output"  # <output>.json
                target = what if what == "the manifest itself" else f"the input of {what}"
                errors.append(f"{bj.where}: {label} {path} would overwrite {target}")
            if _OBJ in key:
                templates.append((key, path, bj.where))
    _check_object_templates(templates, owner, inputs, errors)


def _check_object_templates(
    templates: list[tuple[str, str, str]],
    owner: dict[str, str],
    inputs: dict[str, str],
    errors: list[str],
) -> None:
    paths = sorted(k for k in owner if _OBJ not in k)
    named = sorted(inputs)
    seen: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for key, path, where in templates:
        pattern = _object_regex(key)
        prefix = key.split(_OBJ)[0]
        for other in _starting_with(paths, prefix):
            match = pattern.fullmatch(other)
            if match and owner[other] != where:
                errors.append(
                    f"{where}: output {path} names one file per object; object "
                    f"{match['obj']}'s is {other}, also written by {owner[other]}"
                )
        for other in _starting_with(named, prefix):
            if pattern.fullmatch(other):
                errors.append(
                    f"{where}: output {path} (one file per object) would overwrite the input "
                    f"of {inputs[other]}"
                )
        if key.count(_OBJ) != 1:
            continue  # several {obj} in one path: checked against plain paths only
        # only templates whose prefix and suffix differ from this one's by digits can overlap
        head, tail = key.split(_OBJ)
        group = seen.setdefault((head.rstrip(_DIGITS), tail.lstrip(_DIGITS)), [])
        for key2, path2, where2 in group:
            if where2 != where and key2 != key and _templates_overlap(key, key2):
                errors.append(
                    f"{where}: output {path} and {path2} of {where2} name one file per "
                    "object, and some object ids give both the same name"
                )
        group.append((key, path, where))


_DIGITS = "0123456789"


def _object_regex(template: str) -> re.Pattern[str]:
    """``template`` with each ``{obj}`` as the same object id (an integer >= 1)."""
    first, *rest = (re.escape(part) for part in template.split(_OBJ))
    return re.compile(first + "(?P<obj>[1-9][0-9]*)" + "(?P=obj)".join(rest))


def _starting_with(names: list[str], prefix: str) -> list[str]:
    """The entries of sorted ``names`` that start with ``prefix``."""
    from bisect import bisect_left

    found = []
    for name in names[bisect_left(names, prefix) :]:
        if not name.startswith(prefix):
            break
        found.append(name)
    return found


def _templates_overlap(a: str, b: str) -> bool:
    """Whether two paths with one ``{obj}`` each name the same file for some object ids (>= 1,
    so no leading zero): ``t{obj}`` and ``t1{obj}`` do (``t12``). One prefix must extend the
    other by digits not starting with 0 (they begin the shorter one's id), and one suffix the
    other by digits (they end the shorter one's id); any such pair has a common name."""
    (pa, sa), (pb, sb) = a.split(_OBJ), b.split(_OBJ)
    short, long = sorted((pa, pb), key=len)
    extra = long[len(short) :]
    if not long.startswith(short) or (extra and not (_all_digits(extra) and extra[0] != "0")):
        return False
    short, long = sorted((sa, sb), key=len)
    extra = long[: len(long) - len(short)]
    return long.endswith(short) and (not extra or _all_digits(extra))


def _all_digits(text: str) -> bool:
    return all(c in _DIGITS for c in text)


def with_overwrite(bjob: BatchJob, overwrite: bool) -> BatchJob:
    return replace(bjob, job=replace(bjob.job, overwrite=overwrite))

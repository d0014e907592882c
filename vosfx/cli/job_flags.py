"""`vosfx matte --job`: the job-level flags the user gives beside a job file replace the
file's own; flags for what the file holds (prompts, presets) are refused; a job file its own
render would write over is refused."""

from __future__ import annotations

from pathlib import Path

import click

from vosfx.cli.flags import check_range

# with --job: flags that hold a job's prompts or presets (refused: the job file has them)
_JOB_HOLDS = {
    "masks": "--mask",
    "points": "--point",
    "neg_points": "--neg-point",
    "boxes": "--box",
    "obj_id": "--obj",
    "mask_frame": "--mask-frame",
    "edit_tracked": "--edit-tracked",
    "presets": "--preset",
}


def _given(name: str) -> bool:
    """Whether the user set option ``name`` (not its default)."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def with_job_flags(job, output, opts):
    """``job`` (from --job) with the job-level flags the user gave replacing its own: -o,
    --overwrite, --start, --end, --fit, --objects, --fps (the settings' flags arrive as
    config overrides). Flags for the prompts or presets, which the job file holds, are a
    usage error rather than silently unused."""
    from dataclasses import replace

    held = [flag for name, flag in _JOB_HOLDS.items() if _given(name)]
    if held:
        raise click.UsageError(
            f"--job holds the prompts and presets: {', '.join(held)} cannot be given with it "
            "(change them in the studio, or give INPUT and MASK instead of --job)"
        )
    changes: dict = {}
    if output:
        changes["output"] = output
    for name in ("overwrite", "fit"):
        if opts[name]:
            changes[name] = True
    for name in ("start", "end", "fps"):
        if _given(name):
            changes[name] = opts[name]
    if opts["objects"]:
        changes["objects"] = object_ids(opts["objects"])
    job = replace(job, **changes)
    check_range(job.start, job.end, from_job=True, end_typed="end" in changes)
    return job


def object_ids(text: str) -> tuple[int, ...]:
    """--objects' value ``1,2`` as ids; a usage error naming the flag otherwise."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected ids like 1,2, found {text!r}", param_hint="--objects"
        ) from None


def check_job_file_kept(job, job_file: Path) -> None:
    """OutputError (before anything is read) when the render would write over the job file
    it came from: a sequence folder ``shot`` has its sidecar at ``shot.json``."""
    from vosfx.errors import OutputError
    from vosfx.pipeline import job_file_clash

    ids = tuple(sorted({p.obj_id for p in job.prompts if p.obj_id is not None})) or (1,)
    clash = job_file_clash(job, job_file, ids)
    if clash is not None:
        raise OutputError(
            f"--job {job_file}: the render would write {clash} over the job file; save the "
            "job under another name, or give it another output"
        )

"""What the one loop checks before it reads anything: that every output can be written, is
named as its format writes, and replaces none of the files the job reads (the input and an
image sequence's frames, masks, priors, a composite's background) nor the job file it came
from. :func:`vosfx.pipeline.run`, batch validation and the studio call these."""

from __future__ import annotations

from pathlib import Path

from vosfx.config import parse_colour
from vosfx.errors import OutputError
from vosfx.job import Job
from vosfx.pipeline.output import object_path, plan_outputs


def check_outputs(
    job: Job, outputs: list[tuple[str, str, int | None]], obj_ids: list[int] | None = None
) -> None:
    """Check the merged outputs (``obj_ids`` None) or the per-object ones (each object's own
    path, :func:`object_path`) can be written, and that none replaces the input."""
    from vosfx.io.writers import FORMATS, check_output_path

    background = job.config.output.background
    composite = any(fmt == "composite" for _path, fmt, _obj in outputs)
    if obj_ids is None and composite and background and parse_colour(background) is None:
        from vosfx.io.writers.backdrop import check_background

        check_background(background)
    for path, fmt, obj in outputs:
        if obj_ids is None:
            targets = [] if obj is not None else [path]
        else:
            targets = [] if obj is None else [object_path(path, o) for o in obj_ids]
        for target in targets:
            check_not_read(Path(target), job)
            check_output_path(Path(target), job.overwrite, sequence=FORMATS[fmt].is_sequence)
            check_output_name(target, fmt)
            if job.config.output.sidecar:
                check_sidecar_path(Path(target), job.overwrite)


def check_sidecar_path(
    output: Path,
    overwrite: bool,
    allow: str = "pass --overwrite to replace it, or --no-sidecar to write none",
) -> None:
    """OutputError when ``output``'s sidecar (``<output>.json``, written at the end) could not
    be: a folder stands there, or a file and ``overwrite`` is false (``allow``: what to do
    about it, in the caller's words). Checked before decoding, as the output is, so a long
    render never ends on it and a file of that name is never replaced unasked."""
    from vosfx.io.writers.sidecar import sidecar_path

    side = sidecar_path(output)
    if side.is_dir() and not side.is_symlink():
        raise OutputError(
            f"sidecar {side} (the record written beside output {output.name}) is a folder; "
            "move or rename it"
        )
    if (side.exists() or side.is_symlink()) and not overwrite:
        raise OutputError(
            f"sidecar {side} (the record written beside output {output.name}) already "
            f"exists; {allow}"
        )


def job_file_clash(job: Job, job_file: Path, obj_ids: tuple[int, ...] = ()) -> str | None:
    """What the render of ``job`` would write over ``job_file`` (where that job is saved),
    in words ("output X", "the sidecar of output X"), or None. A sequence folder ``shot``
    has its sidecar at ``shot.json``: a job saved as ``shot.json`` would be replaced by it.
    ``obj_ids``: the objects whose own outputs a per-object output writes."""
    from vosfx.io.writers.sidecar import sidecar_path

    key = job_file.resolve()
    for path, _fmt, obj in plan_outputs(job):
        for target in [path] if obj is None else [object_path(path, o) for o in obj_ids]:
            if Path(target).resolve() == key:
                return f"output {target}"
            if job.config.output.sidecar and sidecar_path(target).resolve() == key:
                return f"the sidecar of output {target}"
    return None


def check_output_name(path: str, fmt: str) -> None:
    """OutputError when the output ``path`` is named as another kind of file than the format
    ``fmt`` writes (:func:`vosfx.formats.name_mismatch`)."""
    from vosfx.formats import FORMATS, name_mismatch

    wrong = name_mismatch(Path(path).name, FORMATS[fmt])
    if wrong is not None:
        raise OutputError(f"output {path}: {wrong}")


def check_not_read(output: Path, job: Job) -> None:
    """OutputError when ``output`` is a file the job reads (:meth:`Job.files_read`: the input,
    a mask, a prior, the background; for an image sequence the folder of its frames) or a
    folder holding one, or lies among an image sequence's frames (inside an image folder
    input; a pattern input's frame file): the render would replace its own source, or add
    to it, even with --overwrite."""
    from vosfx.io.sequence import is_pattern

    out = output.resolve()
    for path, what in job.files_read():
        src = Path(path).expanduser()
        src = (src.parent if is_pattern(src) else src).resolve()  # a sequence: its folder
        if src == out or src.is_relative_to(out):
            raise OutputError(f"output {output} would replace {what}; give another output path")
    src = Path(job.input).expanduser()
    if src.is_dir() and out.is_relative_to(src.resolve()):
        raise OutputError(
            f"output {output} is inside the input's image folder {job.input}, where it would "
            "replace or add frames; give a path outside it"
        )
    if is_pattern(src) and out.parent == src.parent.resolve():
        from vosfx.io.sequence import scan

        found = scan(src)
        if found is not None and out in {f.resolve() for f in found[0]}:
            raise OutputError(
                f"output {output} is a frame of the input {job.input}; give another output path"
            )

"""A studio session as a job: the config a render runs with (an output preset and formats
over the studio's), the job file that ``vosfx matte --job`` and ``vosfx batch`` reproduce
exactly, and the output presets the Render panel offers."""

from __future__ import annotations

import shutil
from pathlib import Path

from vosfx.config import JobConfig
from vosfx.errors import ConfigError, OutputError
from vosfx.job import Job


def job_config(
    config: JobConfig,
    *,
    preset: str | None = None,
    formats: tuple[str, ...] | None = None,
    output: dict | None = None,
) -> JobConfig:
    """``config`` with an output preset's ``[output]`` section applied first (``preset``, one
    of :func:`output_presets`), then ``output`` (the Render panel's ``[output]`` options:
    ``objects``, ``alpha_mode``), then ``formats`` (the main one, then extras)."""
    if preset:
        sections = output_presets()
        if preset not in sections:
            raise ConfigError(
                f"preset {preset!r} is not an output preset; these are: {sorted(sections)}"
            )
        config = config.replace({"output": sections[preset]})
    if output:
        config = config.replace({"output": output})
    if formats:
        unknown = [f for f in formats if f not in format_ids()]
        if unknown:
            raise ConfigError(f"unknown format(s) {unknown}; known: {format_ids()}")
        config = config.replace(
            {"output": {"format": formats[0], "extra_formats": list(formats[1:])}}
        )
    return config


def save_job(job: Job, path: Path) -> Path:
    """Write ``job`` as JSON that ``vosfx matte --job`` and ``vosfx batch`` reproduce
    exactly: the full effective config as overrides (so a user config file read later
    cannot change it), mask prompts and corrections' priors copied beside the job file."""
    from vosfx.files import atomic_write_text

    path = Path(path)
    check_job_path(job, path)
    masks = path.parent / f"{path.stem}_masks"
    prompts = []
    for spec in job.prompts:
        d = spec.to_dict()
        for key in ("mask", "prior"):  # a correction's prior (.npy) travels as masks do
            source = getattr(spec, key)
            if source is not None:
                masks.mkdir(exist_ok=True)
                target = masks / Path(source).name
                if Path(source).resolve() != target.resolve():
                    shutil.copyfile(source, target)
                d[key] = f"{masks.name}/{target.name}"
        prompts.append(d)
    # no "version" key (1 is the default) and one line: the same file is a `vosfx batch`
    # manifest of one job (JSON lines) and a `vosfx matte --job` job file
    data = {
        "input": job.input,
        "output": job.output,
        "presets": list(job.presets),
        "overrides": job.config.to_dict(),
        "prompts": prompts,
        "start": job.start,
        "end": job.end,
        "overwrite": job.overwrite,
        "fit": False,
        "objects": None,
        "fps": job.fps,
    }
    if job.names:  # what the studio named its objects, given back when it is reopened
        data["names"] = {str(k): v for k, v in sorted(job.names.items())}
    import json

    atomic_write_text(path, json.dumps(data) + "\n")
    return path


def default_job_path(clip: str) -> Path:
    """Where Save job proposes to save a session of ``clip`` (``<stem>_vosfx_job.json``
    beside it)."""
    from vosfx.job import beside_input

    return Path(beside_input(clip, "_vosfx_job.json"))


def saved_job_for(clip: str) -> Path | None:
    """The job at :func:`default_job_path` when there is one and it is of ``clip`` (as a
    studio names it): yesterday's work, offered to the next studio on the clip."""
    from vosfx.studio.autosave import clip_of

    path = default_job_path(clip)
    return path if path.is_file() and clip_of(path) == clip else None


def check_job_path(job: Job, path: Path) -> None:
    """OutputError unless ``path`` is somewhere ``job`` can be saved: a ``.json`` name, not a
    folder, in a folder that exists, not the clip. Checked before the page asks whether to
    replace an existing file (it asked, then refused)."""
    if path.suffix.lower() != ".json":
        raise OutputError(f"a job file must end in .json, found {path.name}")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a job file name ending in .json")
    if not path.parent.is_dir():
        raise OutputError(f"folder {path.parent} does not exist (for {path})")
    if "%" not in job.input and path.resolve() == Path(job.input).resolve():
        raise OutputError(f"{path} is the clip itself; give the job file another name")


def output_presets() -> dict[str, dict]:
    """Presets (built-in and the user's) that set only output options: name -> their
    ``[output]`` section. Quality tiers change the model, which a studio has loaded once, so
    they are chosen when the studio starts (``--preset``), not in the Render panel."""
    from vosfx.presets import list_presets, load_preset

    out = {}
    for info in list_presets():
        sections = load_preset(info.name)
        if set(sections) == {"output"}:
            out[info.name] = dict(sections["output"])
    return out


def default_outputs(clip: str) -> dict[str, str]:
    """Format id -> the output ``vosfx matte`` writes ``clip`` to in that format without
    ``-o`` (:func:`vosfx.job.default_output`): what the page proposes, following the
    format chosen until the user types a path of their own."""
    from vosfx.job import default_output

    return {fid: default_output(clip, fid) for fid in format_ids()}


def format_ids() -> list[str]:
    from vosfx.formats import FORMATS

    return list(FORMATS)


def format_exts() -> dict[str, str]:
    """Format id -> its movie's file extension (``.mov``), or "" for an image sequence (a
    folder): what the page names an output by (the formats table's, not a copy of it)."""
    from vosfx.formats import FORMATS

    return {fid: "" if spec.is_sequence else f".{spec.ext}" for fid, spec in FORMATS.items()}

"""`vosfx matte`: one clip, one prompt, every frame's matte.

The options and the job they make are here; the prompt options are read by
:mod:`vosfx.cli.prompt_options`, and :mod:`vosfx.cli.cancel` runs the job so that Ctrl-C and
SIGTERM cancel it cleanly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vosfx.cli.flags import FPS, MODEL_FLAG_KEYS, check_fps, check_range, model_options
from vosfx.config import option_choices
from vosfx.formats import FORMATS
from vosfx.policies import MEMORY_POLICIES

FORMAT_IDS = list(FORMATS)


# CLI option name -> config key, per section (the flags that set config options)
_FLAG_KEYS = {
    "model": MODEL_FLAG_KEYS,
    "memory": {"memory": "policy", "track_backward": "track_backward", "reprompt": "reprompt"},
    "refine": {
        "alpha": "alpha",
        "edge": "edge",
        "fill_holes_px2": "fill_holes_px2",
        "remove_specks_px2": "remove_specks_px2",
        "shift_edge_px": "shift_edge_px",
        "feather_px": "feather_px",
        "choke": "choke",
        "clip_black": "clip_black",
        "clip_white": "clip_white",
        "reduce_chatter": "temporal_strength",
    },
    "output": {
        "format": "format",
        "extra_format": "extra_formats",
        "alpha_mode": "alpha_mode",
        "each_object": "objects",
        "background": "background",
        "exr_compression": "exr_compression",
        "exr_rgb": "exr_rgb",
    },
}


def _overrides(opts: dict) -> dict:
    """CLI flags -> config overrides (only the flags the user set)."""
    out: dict = {}
    for section, keys in _FLAG_KEYS.items():
        for opt, key in keys.items():
            value = opts.get(opt)
            if value is None or value == ():
                continue
            if opt == "each_object":
                value = "each" if value else "merged"
            out.setdefault(section, {})[key] = value
    if opts.get("no_sidecar"):
        out.setdefault("output", {})["sidecar"] = False
    if opts.get("no_audio"):
        out.setdefault("output", {})["audio"] = False
    return out


@click.command()
@click.argument("input_path", metavar="INPUT", required=False)
@click.argument("mask", required=False)
@click.option(
    "-o",
    "--output",
    help="Output path (default: INPUT's folder, <stem>_vosfx.mov for the default ProRes "
    "4444, else <stem>_vosfx_<format>[.<ext>]).",
)
@click.option(
    "-p",
    "--preset",
    "presets",
    multiple=True,
    help="Preset name; repeat to combine (later wins). Default: prores4444.",
)
@click.option(
    "-f",
    "--format",
    type=click.Choice(FORMAT_IDS),
    metavar="FORMAT",
    help=f"Output format: {', '.join(FORMAT_IDS)} (README: formats table). Default: prores4444.",
)
@click.option(
    "--extra-format",
    multiple=True,
    type=click.Choice(FORMAT_IDS),
    metavar="FORMAT",
    help="Also write this format in the same pass (repeatable).",
)
@click.option("--objects", help="Comma-separated object ids to keep (palette masks).")
@click.option(
    "--mask-frame",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Frame the MASK belongs to (and the default frame of every prompt).",
)
@click.option(
    "--mask",
    "masks",
    multiple=True,
    metavar="[FRAME:]PATH[@OBJ]",
    help="Another mask image, on FRAME (repeatable): prompts on any frame; @OBJ "
    "makes the whole mask that object.",
)
@click.option(
    "--point",
    "points",
    multiple=True,
    metavar="[FRAME:]X,Y[@OBJ]",
    help="Include click in pixels (repeatable), on FRAME for object OBJ (default "
    "--obj); with masks, clicks make one more object.",
)
@click.option(
    "--neg-point",
    "neg_points",
    multiple=True,
    metavar="[FRAME:]X,Y[@OBJ]",
    help="Exclude click, as --point.",
)
@click.option(
    "--box",
    "boxes",
    multiple=True,
    metavar="[FRAME:]X0,Y0,X1,Y1[@OBJ]",
    help="Box in pixels (one per frame and object; repeatable).",
)
@click.option(
    "--obj",
    "obj_id",
    type=click.IntRange(1, 2**31 - 1),
    help="Object id of clicks and boxes without @OBJ.",
)
@click.option(
    "--edit-tracked",
    is_flag=True,
    help="Clicks and boxes on a frame after an object's first prompted frame edit the mask "
    "tracked there (SAM 2's correction: the frames before it tracked forwards from the "
    "previous prompt) instead of starting from nothing.",
)
@click.option(
    "--start",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="First frame (0-based).",
)
@click.option(
    "--end", type=click.IntRange(min=1), help="Stop before this frame (past the clip: its end)."
)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--fit", is_flag=True, help="Scale a mask of another size to the video.")
@click.option(
    "--fps",
    type=FPS,
    help="Frame rate of an image-sequence input (default 24).",
)
@model_options
@click.option(
    "--memory", type=click.Choice(list(MEMORY_POLICIES)), help="Memory policy (docs/memory.md)."
)
@click.option(
    "--reprompt/--no-reprompt",
    default=None,
    help="Re-prompt from the last reliable mask when a frame's quality or area "
    "drops sharply (docs/memory.md).",
)
@click.option(
    "--backward/--forward-only",
    "track_backward",
    default=None,
    help="Matte frames before the first prompt by tracking backwards (default on).",
)
@click.option(
    "--alpha",
    type=click.Choice(option_choices("refine", "alpha")),
    help="soft: the model's confidence as alpha; hard: 0 or 1.",
)
@click.option(
    "--edge",
    type=click.Choice(option_choices("refine", "edge")),
    help="Upsampling of the low-res mask: guided follows image edges.",
)
@click.option("--fill-holes-px2", type=int, help="Fill holes up to this area (pixels²).")
@click.option("--remove-specks-px2", type=int, help="Drop islands up to this area (pixels²).")
@click.option("--shift-edge-px", type=float, help="Grow (+) or shrink (-) the matte.")
@click.option("--feather-px", type=float, help="Soften the edge by this radius (pixels).")
@click.option("--choke", type=float, help="Contract the soft edge: 0 off, 1 hard.")
@click.option("--clip-black", type=float, help="Alpha at or below this becomes 0 (0..1).")
@click.option("--clip-white", type=float, help="Alpha at or above this becomes 1 (0..1).")
@click.option("--reduce-chatter", type=float, help="Temporal smoothing strength 0..1.")
@click.option(
    "--alpha-mode",
    type=click.Choice(option_choices("output", "alpha_mode")),
    help="Colour of alpha outputs: straight (default) or premultiplied.",
)
@click.option("--each-object/--merged", default=None, help="One output per object.")
@click.option("--background", help="For -f composite: #rrggbb, an image or a video file.")
@click.option(
    "--exr-compression",
    type=click.Choice(option_choices("output", "exr_compression")),
    help="For -f exr-layers: ZIP (default) and PIZ lossless, DWAA smaller.",
)
@click.option(
    "--exr-rgb",
    is_flag=True,
    default=None,
    help="For -f exr-layers: also store the source's linear RGB (and A).",
)
@click.option("--no-sidecar", is_flag=True, help="Do not write the JSON sidecar.")
@click.option("--no-audio", is_flag=True, help="Do not carry the source's audio.")
@click.option("--offline", is_flag=True, help="Never download models (same as VOSFX_OFFLINE=1).")
@click.option(
    "--job",
    "job_file",
    type=click.Path(dir_okay=False),
    help="Read the whole job from a JSON file (plugin protocol).",
)
@click.option("--json-progress", is_flag=True, help="JSON lines on stdout, one per event.")
@click.option("--report", is_flag=True, help="Print shots, presence and memory events after.")
def matte(input_path, mask, output, presets, job_file, json_progress, report, offline, **opts):
    """Matte INPUT (video file, image folder or %05d pattern) from MASK (an image for
    --mask-frame) or --point/--box clicks."""
    from vosfx.cli.cancel import run_interruptible
    from vosfx.cli.progress import LogProgress, TerminalProgress, emit_json
    from vosfx.cli.progress import json_progress as json_cb
    from vosfx.errors import StartPastEndError

    # a failure (VosfxError, a usage error, Ctrl-C) is the error event of the CLI's group
    # (vosfx.cli.LazyGroup.invoke, plugins/README.md)
    job = _build_job(input_path, mask, output, presets, job_file, offline, opts)
    label = Path(job.input).name
    on_progress = (
        json_cb
        if json_progress
        else (TerminalProgress(label) if sys.stderr.isatty() else LogProgress(label))
    )
    try:
        result = run_interruptible(job, on_progress)
    except StartPastEndError as err:  # known once the clip is probed: the typed flag's fault
        source = click.get_current_context().get_parameter_source("start")
        if source != click.core.ParameterSource.COMMANDLINE:
            raise
        raise click.BadParameter(str(err).removeprefix("start "), param_hint="--start") from None
    if json_progress:
        emit_json(dict(result.to_dict(), event="result"))
    else:
        for path in result.outputs:
            click.echo(path)
    if report:
        click.echo(format_report(result), err=json_progress)


def _build_job(input_path, mask, output, presets, job_file, offline, opts):
    import os

    from vosfx.cli.flags import check_flag_values
    from vosfx.cli.job_flags import check_job_file_kept, object_ids, with_job_flags
    from vosfx.cli.prompt_options import prompt_specs
    from vosfx.job import Job, default_output, load_job_file
    from vosfx.presets import resolve_config

    if offline:
        os.environ["VOSFX_OFFLINE"] = "1"
    overrides = _overrides(opts)
    check_flag_values(overrides, _FLAG_KEYS)
    _check_background_file(overrides.get("output", {}).get("background"))
    if job_file:
        if input_path or mask:
            raise click.UsageError("--job replaces INPUT and MASK: give one or the other")
        _check_range_and_rate(opts)
        job = with_job_flags(load_job_file(job_file, cli_overrides=overrides), output, opts)
        check_job_file_kept(job, Path(job_file))
        return job
    if not input_path:
        raise click.UsageError("missing INPUT: a video file, an image folder or a %05d pattern")
    _check_range_and_rate(opts)
    prompts = prompt_specs(mask, opts)
    if not prompts:
        raise click.UsageError("no prompt: give a MASK image, --point x,y or --box x0,y0,x1,y1")
    config = resolve_config(presets, overrides)
    objects = object_ids(opts["objects"]) if opts["objects"] else None
    return Job(
        input=input_path,
        prompts=tuple(prompts),
        output=output or default_output(input_path, config.output.format),
        config=config,
        presets=tuple(presets),
        start=opts["start"],
        end=opts["end"],
        overwrite=opts["overwrite"],
        fit=opts["fit"],
        objects=objects,
        fps=opts["fps"],
    )


def _check_background_file(background: str | None) -> None:
    """--background naming a file that is not there: a usage error naming the flag, before
    the model loads (a colour is checked with the other flag values)."""
    from vosfx.config import parse_colour
    from vosfx.errors import ConfigError
    from vosfx.io.writers.backdrop import check_background

    if background and parse_colour(background) is None:
        try:
            check_background(background)
        except ConfigError as err:
            reason = str(err).removeprefix("[output] background: ")
            raise click.BadParameter(reason, param_hint="--background") from None


def _check_range_and_rate(opts: dict) -> None:
    """What the options' types cannot say alone: --end after --start, a finite --fps."""
    check_range(opts["start"], opts["end"])
    check_fps(opts["fps"])


def format_report(result) -> str:
    """The --report text: speed, shot cuts, per-object presence and memory events."""
    from vosfx.pipeline.presence import format_report as _format

    mem = result.memory or {}

    def per_obj(key):
        return {
            int(o): {int(f): v for f, v in (info.get(key) or {}).items()}
            for o, info in mem.items()
            if isinstance(info, dict)
        }

    head = f"{result.frames} frames in {result.elapsed_s:.1f} s ({result.fps:.2f} fps)"
    body = _format(
        result.presence, cuts=result.shots, promoted=per_obj("promoted"), events=per_obj("events")
    )
    return head + "\n" + body

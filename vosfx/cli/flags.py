"""Config options set by command-line flags, validated one by one so that an error names the
flag as the user typed it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable)

# the flags that choose the model and how it runs: option name -> [model] key
MODEL_FLAG_KEYS = {
    "model": "name",
    "backend": "backend",
    "device": "device",
    "precision": "precision",
    "low_memory": "low_memory",
    "image_size": "image_size",
    "threads": "threads",
    "checkpoint": "checkpoint",
}


# --fps of an image-sequence input (`vosfx matte`, `vosfx studio`); nan passes a FloatRange,
# so check_fps refuses it
FPS = click.FloatRange(0, 1000, min_open=True)


def check_fps(fps: float | None) -> None:
    """--fps nan (which :data:`FPS` lets through): a usage error naming the flag."""
    import math

    if fps is not None and not math.isfinite(fps):
        raise click.BadParameter(
            f"expected a frame rate > 0 and <= 1000, found {fps}", param_hint="--fps"
        )


def check_range(
    start: int, end: int | None, *, from_job: bool = False, end_typed: bool = True
) -> None:
    """--end after --start, a usage error naming the flag typed. ``from_job``: one end of the
    range is a job file's (``end_typed``: the --end is the one typed), said as the job's
    range would be."""
    if end is None or end > start:
        return
    if from_job:
        raise click.BadParameter(
            f"expected --end after --start; the job's range would be {start}..{end}",
            param_hint="--end" if end_typed else "--start",
        )
    raise click.BadParameter(
        f"expected a frame after --start ({start}), found {end}", param_hint="--end"
    )


def model_options(fn: F) -> F:
    """The ``[model]`` flags of :data:`MODEL_FLAG_KEYS`, one definition for every command that
    runs the model on a clip (`vosfx matte`, `vosfx studio`)."""
    from vosfx.config import option_choices

    options = (
        click.option("--model", help="Model id (vosfx models list)."),
        click.option(
            "--backend",
            type=click.Choice(option_choices("model", "backend")),
            help="Runtime: onnx (ONNX Runtime, no torch needed), torch, or auto (onnx).",
        ),
        click.option(
            "--device",
            type=click.Choice(option_choices("model", "device")),
            help="Where the model runs (auto: the best available).",
        ),
        click.option(
            "--image-size",
            type=int,
            help="Model input size, a multiple of 16 (drafts only; default 1024).",
        ),
        click.option(
            "--precision",
            type=click.Choice(option_choices("model", "precision")),
            help="ONNX: fp16 for GPUs; bf16 for CPUs with AMX or AVX512_BF16 (OpenVINO, "
            "vosfx[openvino]); int8 for other CPUs (8-bit image encoder and attention scores; "
            "faster, approximate); auto (the fast preset's): bf16 where this CPU and install "
            "run it, else fp32.",
        ),
        click.option(
            "--threads", type=int, help="CPU threads for the model and for refinement's loops."
        ),
        click.option(
            "--low-memory",
            is_flag=True,
            default=None,
            help="Lowest peak memory, slower: ONNX Runtime without its memory arena, large "
            "buffers returned to the system as soon as they are freed, one frame decoded ahead "
            "(~25 % less memory for ~1.3x the time at 1024: docs/onnx.md).",
        ),
        click.option("--checkpoint", help="Use this checkpoint file instead of the cache."),
    )
    for option in reversed(options):  # --help lists them in this order
        fn = option(fn)
    return fn


def model_overrides(opts: dict, *, absolute_checkpoint: bool = False) -> dict:
    """The ``[model]`` overrides of the :func:`model_options` flags the user set, each value
    checked (a usage error naming the flag). ``absolute_checkpoint``: the overrides go into
    jobs read later from another folder (a saved job, a manifest's rows, whose relative paths
    resolve against their own folder), so ``--checkpoint`` is made absolute against the
    working directory it was typed in."""
    values = {key: opts[opt] for opt, key in MODEL_FLAG_KEYS.items() if opts.get(opt) is not None}
    overrides = {"model": values} if values else {}
    check_flag_values(overrides, {"model": MODEL_FLAG_KEYS})
    if absolute_checkpoint and values.get("checkpoint"):
        values["checkpoint"] = str(Path(values["checkpoint"]).expanduser().resolve())
    return overrides


def check_flag_values(overrides: dict, flags: dict[str, dict[str, str]]) -> None:
    """Validate each CLI-set option on its own, so that a bad value is a usage error (exit 2)
    that names the flag the user typed (``--reduce-chatter``), not the config key it sets
    (``[refine] temporal_strength``), then each section's flags together (options that must
    agree: ``--clip-black`` below ``--clip-white``). ``flags``: option name -> config key,
    per section."""
    from vosfx.config import build_config
    from vosfx.errors import ConfigError

    for section, values in overrides.items():
        names = {key: opt for opt, key in flags.get(section, {}).items()}
        for key, value in values.items():
            try:
                build_config({section: {key: value}})
            except ConfigError as err:
                raise _bad_flag(err, section, {key: value}, names, key) from None
        try:
            build_config({section: values})
        except ConfigError as err:
            raise _bad_flag(err, section, values, names, next(iter(values))) from None


def _bad_flag(err, section: str, values: dict, names: dict, typed: str) -> click.BadParameter:
    """The error as a usage error on the flag it is about (else on ``typed``'s), every other
    key the user set by a flag named by that flag."""

    def flag_of(key: str) -> str:
        return "--" + names.get(key, key).replace("_", "-")

    head, _, reason = str(err).partition(": ")
    about = head.removeprefix(f"[{section}] ")
    if about not in values:  # about a key no flag set: keep its name, say which flag clashed
        reason, about = str(err), typed
    for key in values:
        reason = re.sub(rf"\b{re.escape(key)}\b", flag_of(key), reason)
    return click.BadParameter(reason, param_hint=flag_of(about))

"""`vosfx doctor`: what this machine runs vosfx with, and what is missing for what.

One line per check: the CPU and the instructions the tiers use, the runtimes (ONNX Runtime and
its providers, OpenVINO, torch), what ``--precision auto`` takes here and why, the default
path's and the bf16 tier's attention kernels, the encoders each output format needs, OpenEXR,
a C compiler (the OpenFX effect, the kernels) and the model cache. Each check asks the module
that decides the matter (no second copy of its rules) and none can stop the others: one that
fails says so in its line. ``--json`` prints the same as a JSON list for a host or a bug
report. Exit code 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
from collections.abc import Callable

import click

from vosfx.config import ModelConfig, option_choices

OK, MISSING, INFO = "ok", "missing", "info"
Check = tuple[str, str, str]  # (what, state, detail)


def _version_of(dist: str) -> str | None:
    """The installed version of distribution ``dist`` without importing it, or None."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _python() -> Check:
    from vosfx import __version__

    return (
        "vosfx",
        INFO,
        f"{__version__}, Python {platform.python_version()} on {platform.platform()}",
    )


def _cpu() -> Check:
    from vosfx.engine.cpu_features import cpu_flags
    from vosfx.engine.int8_attention import cpu_count

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            name = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), name
            )
    except OSError:
        pass
    flags = cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    have = (
        "instructions unknown (no /proc/cpuinfo)"
        if flags is None
        else ", ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)
    )
    return ("cpu", INFO, f"{name}; {cpu_count()} cores usable; {have}")


def _onnxruntime() -> Check:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    return ("onnxruntime", OK, f"{ort.__version__}; providers: {', '.join(providers)}")


def _gpu() -> Check:
    import onnxruntime as ort

    from vosfx.engine.ort_runtime import auto_providers, gpu_install_hint

    gpus = auto_providers(ort.get_available_providers())[:-1]  # all but the CPU's
    if gpus:
        return ("gpu", OK, f"ONNX Runtime can run on {', '.join(gpus)} (--device auto takes it)")
    return (
        "gpu",
        INFO,
        f"no GPU provider in this ONNX Runtime: the CPU runs the model. {gpu_install_hint()}",
    )


def _openvino() -> Check:
    from vosfx.engine.auto_precision import OPENVINO_HINT

    version = _version_of("openvino")
    if version is None:
        return ("openvino", MISSING, f"not installed: --precision bf16 needs it ({OPENVINO_HINT})")
    import openvino as ov

    from vosfx.engine.openvino_runtime import cpu_capabilities

    caps = cpu_capabilities(ov.Core())
    bf16 = "BF16" in caps
    return (
        "openvino",
        OK if bf16 else INFO,
        f"{version}; CPU capabilities {', '.join(caps)}"
        + ("" if bf16 else ": no bfloat16 arithmetic, so --precision bf16 is refused here"),
    )


def _auto() -> Check:
    from vosfx.engine.auto_precision import choose

    precision, why = choose("onnx", "auto")
    return ("--precision auto", INFO, f"{precision} ({why})")


def _kernel() -> Check:
    from vosfx.engine import openvino_runtime as ovr
    from vosfx.engine.cpu_features import cpu_flags

    flags = cpu_flags() or frozenset()
    if ovr.cpu_has_amx():
        return ("int8 attention kernel", INFO, f"not used on this CPU (AMX): {_amx_kernel()}")
    if not {"avx512_vnni", "avx512_bf16"} <= flags:
        return (
            "int8 attention kernel",
            INFO,
            (
                "not used on this CPU (the bf16 tier takes it on CPUs with AVX512_VNNI and "
                "AVX512_BF16 and no AMX)"
            ),
        )
    from vosfx.engine.int8_attention import library, why_unavailable

    why = why_unavailable()  # builds it into the cache where it can, as a first run would
    if why is None:
        return ("int8 attention kernel", OK, f"built: {getattr(library(), '_name', '')}")
    return (
        "int8 attention kernel",
        MISSING,
        f"{why}: the bf16 tier runs its graph form, ~17 % slower",
    )


def _amx_kernel() -> str:
    """What the bf16 tier's attentions run in on a CPU with AMX (vosfx.engine.amx_attention),
    measured as a first run would."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "the bf16 tier needs OpenVINO, which is not installed"
    from vosfx.engine import amx_attention
    from vosfx.engine.int8_attention import cpu_count

    why = amx_attention.why_unavailable(cpu_count())
    if why is not None:
        return f"the bf16 tier's attentions run in OpenVINO's query blocks ({why})"
    return (
        "the bf16 tier's attentions run in the AMX bf16 attention kernel "
        f"({amx_attention.gain(cpu_count()):.2f}x OpenVINO's query blocks)"
    )


def _int16_kernel() -> Check:
    from vosfx.engine import int16_attention

    name = "int16 attention kernel"
    why = int16_attention.why_unavailable()  # builds it and times it, as a first run would
    if why is None:
        form = int16_attention.form()
        detail = (
            f"{int16_attention.FORMS[form][1]} form, {int16_attention.gain(form):.2f}x "
            "float32's multiply-adds: the image encoder's and memory attention's "
            "attentions run in it (fp32 on the CPU)"
        )
        if form == "amx":
            from vosfx.engine import amx_linear

            detail += f", its attentions {int16_attention.attention_gain():.2f}x the AVX-512 form's"

            unused = amx_linear.why_unused()
            if unused is None:
                measured = amx_linear.gain()
                detail += (
                    f"; their linear layers' products too ({measured.ratio:.2f}x numpy's "
                    f"float32 products, {measured.block} rows a thread at a time; the onnx "
                    "package cuts the graphs for them once)"
                )
            else:
                detail += f"; their linear layers' products not: {unused}"
        return (name, OK, detail)
    runs = int16_attention.why_unavailable(worth_it=False) is None
    return (
        name,
        INFO if runs else MISSING,
        f"not used: {why}; the attentions run in ONNX Runtime's float32 kernels"
        + ("" if runs else ", ~20 % slower a frame at 1024 on AMD Zen 5"),
    )


def _refine_loops() -> Check:
    from vosfx.matte import kernels

    build, detail = kernels.implementation()  # builds them into the cache, as a render would
    if build == "C":
        return ("refinement loops", OK, f"C, built: {detail}")
    return (
        "refinement loops",
        INFO,
        f"numba ({detail}): the same results; each process that refines holds ~120 MiB more",
    )


def _torch() -> Check:
    version = _version_of("torch")
    if version is None:
        return (
            "torch",
            INFO,
            (
                "not installed: needed only for --backend torch, other image sizes and `vosfx "
                'models export` (pip install "vosfx[torch]")'
            ),
        )
    return ("torch", OK, version)


def _encoders() -> Check:
    import av

    from vosfx.formats import FORMATS, available_formats

    here = set(available_formats())
    lacking = [f"{fid} ({spec.codec})" for fid, spec in FORMATS.items() if fid not in here]
    if lacking:
        return ("encoders", MISSING, f"PyAV {av.__version__}'s FFmpeg lacks: {', '.join(lacking)}")
    return ("encoders", OK, f"PyAV {av.__version__}: every output format's encoder")


def _openexr() -> Check:
    if importlib.util.find_spec("OpenEXR") is None:
        return (
            "OpenEXR",
            MISSING,
            (
                "not installed: the exr-layers format and DWA-compressed EXR input need it "
                "(exr16 and exr32 outputs and other EXR input do not: FFmpeg writes and reads "
                'them); pip install "vosfx[exr]"'
            ),
        )
    return ("OpenEXR", OK, _version_of("OpenEXR") or "installed")


def _compiler() -> Check:
    from vosfx.ofx.build import BuildError, find_compiler

    windows = platform.system() == "Windows"  # there it builds the OpenFX effect alone
    try:
        path = " ".join(find_compiler())
    except BuildError:
        if windows:
            need = "none found (gcc, clang, $CC): `vosfx plugins install ofx` needs one; "
            return ("C compiler", MISSING, need + 'pip install "vosfx[ofx]" brings Zig\'s')
        return (
            "C compiler",
            MISSING,
            (
                "none found ($CC, cc, gcc, clang): `vosfx plugins install ofx` and the bf16 "
                "tier's kernel need one, and the refinement's loops run on numba without one"
            ),
        )
    if windows:
        return ("C compiler", OK, f"{path} (builds the OpenFX effect)")
    return (
        "C compiler",
        OK,
        f"{path} (builds the OpenFX effect, the refinement's loops and the bf16 tier's kernel)",
    )


def _cache() -> Check:
    from vosfx.models import cache, registry

    folder = cache.home()
    cached = [spec.id for spec in registry.all_models() if cache.is_cached(spec.id)]
    probe = folder if folder.exists() else next((p for p in folder.parents if p.exists()), folder)
    writable = os.access(probe, os.W_OK | os.X_OK)
    free = shutil.disk_usage(probe).free / 2**30 if probe.exists() else float("nan")
    return (
        "model cache",
        OK if writable else MISSING,
        (
            f"{folder} ({'writable' if writable else 'not writable: set VOSFX_HOME'}, "
            f"{free:.1f} GiB free); cached: {', '.join(cached) or 'none'}"
        ),
    )


CHECKS: tuple[Callable[[], Check], ...] = (
    _python,
    _cpu,
    _onnxruntime,
    _gpu,
    _openvino,
    _auto,
    _int16_kernel,
    _kernel,
    _refine_loops,
    _torch,
    _encoders,
    _openexr,
    _compiler,
    _cache,
)


def run_checks() -> list[Check]:
    """Every check's line; a check that raises says so in its own line."""
    lines = []
    for check in CHECKS:
        try:
            lines.append(check())
        except Exception as err:  # noqa: BLE001 - one broken probe must not hide the others
            what = check.__name__.lstrip("_")
            lines.append((what, MISSING, f"the check failed: {type(err).__name__}: {err}"))
    return lines


@click.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {check, state, detail}.")
@click.option(
    "--time",
    "timed",
    is_flag=True,
    help="Also time each precision this machine could run (fp32, bf16, int8; fp16 on a GPU) "
    "on a short made-up clip through the whole pipeline: tens of seconds a tier at 1024. "
    "Needs the model in the cache or --checkpoint; downloads nothing.",
)
@click.option("--model", default=None, help="For --time: the model id (default sam2.1-tiny).")
@click.option("--checkpoint", default=None, help="For --time: a checkpoint file instead.")
@click.option(
    "--device",
    type=click.Choice(option_choices("model", "device")),
    default=None,
    help="For --time: where the model runs (default auto).",
)
@click.option("--image-size", type=int, default=None, help="For --time: the model's input size.")
@click.option(
    "--frames",
    type=click.IntRange(3, 100),
    default=6,
    show_default=True,
    help="For --time: frames of the clip (the first is prompted; the rest are timed).",
)
def doctor(
    as_json: bool,
    timed: bool,
    model: str | None,
    checkpoint: str | None,
    device: str | None,
    image_size: int | None,
    frames: int,
) -> None:
    """What this machine runs vosfx with (CPU, runtimes, what --precision auto takes here,
    encoders, model cache) and what is missing for what; with --time, how fast each
    precision runs here."""
    # each flag's option name -> the [model] key it sets
    given = {
        k: v
        for k, v in (
            ("model", model),
            ("checkpoint", checkpoint),
            ("device", device),
            ("image_size", image_size),
        )
        if v is not None
    }
    if given and not timed:
        flag = "--" + next(iter(given)).replace("_", "-")
        raise click.UsageError(f"{flag} is for --time: add --time, or leave it out")
    config = _model_config(given) if timed else None  # bad values refused before any check
    lines = run_checks()
    width = max(len(w) for w, _s, _d in lines)

    def say(line: Check) -> None:
        what, state, detail = line
        click.echo(f"{what:<{width}}  {state:<7}  {detail}")

    if not as_json:
        for line in lines:
            say(line)
    if config is not None:
        from vosfx.cli.doctor_time import run_timing

        lines += run_timing(config, frames, (lambda _line: None) if as_json else say)
    if as_json:
        click.echo(
            json.dumps([{"check": w, "state": s, "detail": d} for w, s, d in lines], indent=1)
        )


def _model_config(given: dict) -> ModelConfig:
    """The [model] section --time runs: the defaults and the flags ``given`` (option name ->
    value), each checked by the config's own rules (a bad value is a usage error naming its
    flag as typed: :func:`vosfx.cli.flags.model_overrides`)."""
    from vosfx.cli.flags import model_overrides
    from vosfx.presets import resolve_config

    return resolve_config((), model_overrides(given), use_user_config=False).model

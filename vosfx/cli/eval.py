"""`vosfx eval` (score prediction folders) and `vosfx bench` (track a dataset, then score it).

Thin: each command calls :func:`vosfx.eval.report.evaluate_dirs` or
:func:`vosfx.pipeline.bench.run_bench` and prints a table; ``--out DIR`` also writes the table as
Markdown, CSV and JSON there.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import tempfile
from pathlib import Path

import click

from vosfx.config import MemoryConfig, ModelConfig, build_config, option_choices
from vosfx.errors import OutputError
from vosfx.policies import MEMORY_POLICIES

FORMATS = ("md", "csv", "json")


def _write_tables(out: Path, stem: str, tables: dict[str, str]) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        for ext, text in tables.items():
            (out / f"{stem}.{ext}").write_text(text, encoding="utf-8")
    except OSError as err:
        raise OutputError(f"{out}: cannot write the {stem} tables ({err.strerror})") from err


def _split(values: tuple[str, ...]) -> list[str] | None:
    """The names of ``-s a,b -s c`` in order, each once (``-s a,a`` scores ``a`` once)."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names)) or None


@click.command("eval")
@click.option(
    "--pred",
    "pred",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="predictions: <seq>/<frame>.png label maps",
)
@click.option(
    "--gt",
    "gt",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="ground truth: a DAVIS root or an Annotations folder",
)
@click.option(
    "--metrics",
    "protocol",
    type=click.Choice(["davis", "mosev2"]),
    default="davis",
    show_default=True,
    help="davis: J, F, J&F; mosev2: also Ḟ, J&Ḟ, J&Ḟ_d, J&Ḟ_r",
)
@click.option("--sequences", "-s", multiple=True, help="only these sequences (comma-separated)")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="md",
    show_default=True,
    help="what to print",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="also write eval.md, eval.csv and eval.json here",
)
def eval_cmd(pred, gt, protocol, sequences, fmt, out) -> None:
    """Score predicted masks against ground truth, per sequence and object."""
    from vosfx.eval.report import evaluate_dirs

    report = evaluate_dirs(pred, gt, protocol, _split(sequences))
    tables = {"md": report.to_markdown(), "csv": report.to_csv(), "json": report.to_json()}
    if out:
        _write_tables(Path(out), "eval", tables)
    click.echo(tables[fmt], nl=fmt == "json")


def _machine() -> dict:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or "",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def open_engine(model: ModelConfig):
    """The engine for ``model`` (a seam: tests replace it with a fake)."""
    from vosfx.engine import load_engine, log_warnings

    engine = load_engine(model)
    log_warnings(engine)
    return engine


def _model_config(
    name: str, backend: str, device: str, image_size: int, checkpoint: str, policy: str
) -> ModelConfig:
    """The validated model settings one bench run uses (``auto`` resolved for ``policy``)."""
    model = {"backend": backend, "device": device, "image_size": image_size}
    cfg = build_config({"model": model, "memory": {"policy": policy}}).model
    return dataclasses.replace(cfg, name=name, checkpoint=checkpoint)


def _memory_config(policy: str) -> MemoryConfig:
    return build_config({"memory": {"policy": policy}}).memory


def _check_flags(policies: list[str], image_size: int) -> None:
    """Each flag's values on their own, before any model loads: a bad one is a usage error
    (exit 2) naming the flag, as `vosfx matte` reports it."""
    from vosfx.cli.flags import check_flag_values

    flags = {"memory": {"memory": "policy"}, "model": {"image_size": "image_size"}}
    for policy in policies:
        check_flag_values({"memory": {"policy": policy}}, flags)
    check_flag_values({"model": {"image_size": image_size}}, flags)


@click.command("bench")
@click.argument("dataset", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    default=("sam2.1-tiny",),
    show_default=True,
    help="model id; repeat to compare",
)
@click.option(
    "--memory",
    "policies",
    multiple=True,
    default=("rcms+shots",),
    show_default=True,
    help=f"memory policy ({', '.join(MEMORY_POLICIES)}); comma-separate or repeat "
    "to compare them in one table",
)
@click.option(
    "--backend",
    "backends",
    type=click.Choice(option_choices("model", "backend")),
    multiple=True,
    default=("auto",),
    show_default=True,
    help="auto, torch or onnx; repeat to compare",
)
@click.option(
    "--device",
    type=click.Choice(option_choices("model", "device")),
    default="auto",
    show_default=True,
)
@click.option("--image-size", type=int, default=0, help="0: the model's own (1024)")
@click.option("--checkpoint", default="", help="checkpoint file overriding the model cache")
@click.option("--sequences", "-s", multiple=True, help="only these sequences (comma-separated)")
@click.option(
    "--metrics",
    "protocol",
    type=click.Choice(["davis", "mosev2"]),
    default="davis",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="predictions and tables go here (default: a temporary folder, removed)",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True)
def bench(
    dataset,
    models,
    policies,
    backends,
    device,
    image_size,
    checkpoint,
    sequences,
    protocol,
    out,
    fmt,
) -> None:
    """Track every sequence of a DAVIS-layout DATASET from its first-frame masks, score it,
    and report accuracy, frames/s and peak memory for each model × memory × backend."""
    from vosfx.eval.report import rows_to_csv, rows_to_markdown
    from vosfx.pipeline.bench import BenchReport, run_bench

    names = _split(sequences)
    policies = _split(policies) or ["rcms+shots"]
    if checkpoint and len(set(models)) > 1:  # every row would run the one file
        raise click.BadParameter(
            f"one checkpoint file replaces every --model's weights, so {', '.join(models)} "
            "would all run it: give one --model with it, or compare models without it",
            param_hint="--checkpoint",
        )
    _check_flags(policies, image_size)  # fail before loading any model
    memory_cfgs = {p: _memory_config(p) for p in policies}
    reports: list[BenchReport] = []
    with tempfile.TemporaryDirectory(prefix="vosfx-bench-") as tmp:
        root = Path(out) if out else Path(tmp)
        for model_name, backend in itertools.product(models, backends):
            # one engine per model config the policies resolve to (SAM2Long: torch)
            runs: dict[ModelConfig, list[str]] = {}
            for policy in policies:
                cfg = _model_config(model_name, backend, device, image_size, checkpoint, policy)
                runs.setdefault(cfg, []).append(policy)
            by_policy: dict[str, BenchReport] = {}
            for cfg, cfg_policies in runs.items():
                engine = open_engine(cfg)
                try:
                    for policy in cfg_policies:
                        # a checkpoint file is the model: its name, not --model's
                        shown = Path(checkpoint).name if checkpoint else model_name
                        label = f"{shown}/{policy}/{cfg.backend}"
                        click.echo(f"vosfx bench: {label}", err=True)
                        by_policy[policy] = run_bench(
                            dataset,
                            engine,
                            memory_cfg=memory_cfgs[policy],
                            out_dir=root / label.replace("/", "_").replace("+", "-"),
                            sequences=names,
                            protocol=protocol,
                            label=label,
                        )
                finally:
                    engine.close()
            reports.extend(by_policy[policy] for policy in policies)  # the order asked for
        rows = [r.summary_row() for r in reports]
        columns = ("config", *reports[0].evaluation.columns, "frames", "fps", "peak_rss_mib")
        payload = {"machine": _machine(), "runs": [r.to_dict() for r in reports]}
        tables = {
            "md": rows_to_markdown(rows, columns),
            "csv": rows_to_csv(rows, columns),
            "json": json.dumps(payload, indent=2, ensure_ascii=False),
        }
        if out:
            _write_tables(root, "bench", tables)
    click.echo(tables[fmt], nl=fmt == "json")

"""`vosfx batch`: matte every job of a manifest (or every clip of a folder), resumably."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from vosfx.cli.flags import model_options
from vosfx.cli.progress import _fmt_eta, emit_json


class _BatchProgressLine:
    """One status line on stderr (redrawn at most 4x/s) and one line per finished job."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0

    def __call__(self, ev) -> None:
        if ev.event == "plan" and ev.message:
            self.stream.write(f"batch: {ev.jobs_total} job(s): {ev.message}\n")
        elif ev.event == "job" and ev.result is not None:
            r = ev.result
            tail = f" ({r.reason.splitlines()[0]})" if r.status == "failed" and r.reason else ""
            self._clear()
            self.stream.write(
                f"[{ev.jobs_done}/{ev.jobs_total}] {r.job_id}: {r.status}, "
                f"{r.frames} frames, {r.elapsed_s:.1f} s{tail}\n"
            )
        elif ev.event == "progress" and ev.message:
            self._clear()
            self.stream.write(f"batch: {ev.message}\n")
        elif ev.event == "progress" and self.tty and time.monotonic() - self._last > 0.25:
            self._last = time.monotonic()
            self.stream.write(
                f"\r\x1b[2Kjobs {ev.jobs_done}/{ev.jobs_total} ({ev.jobs_failed} failed), "
                f"running {len(ev.running)}, {ev.frames_done} frames, {ev.fps:.2f} fps, "
                f"ETA {_fmt_eta(ev.eta_s)}"
            )
        self.stream.flush()

    def _clear(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")


def _json_progress(ev) -> None:
    data = {
        "event": f"batch_{ev.event}",
        "jobs_done": ev.jobs_done,
        "jobs_total": ev.jobs_total,
        "jobs_failed": ev.jobs_failed,
        "frames_done": ev.frames_done,
        "fps": round(ev.fps, 3),
    }
    if ev.eta_s is not None:
        data["eta_s"] = round(ev.eta_s, 1)
    if ev.result is not None:
        data["result"] = ev.result.to_dict()
    if ev.message:
        data["message"] = ev.message
    if ev.event != "progress" or ev.message or ev.result is not None:
        emit_json(data)


@click.command()
@click.argument("manifest", type=click.Path(exists=True))
@click.option(
    "-o",
    "--output",
    help="Output path template for rows without one, relative to the current folder "
    "({stem} {name} {ext} {parent} {id} {index} {preset} {obj}).",
)
@click.option(
    "-p",
    "--preset",
    "presets",
    multiple=True,
    help="Preset for rows without one; repeat to combine.",
)
@click.option(
    "--mask-rule",
    default="{stem}.mask.png",
    show_default=True,
    help="For a FOLDER: each clip's mask file ({stem} {name} {ext}).",
)
@click.option(
    "-j",
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes (default: one per GPU, else 1; with --ray: actors).",
)
@click.option("--gpus", help="GPU ids for the workers, e.g. 0,1 (default: all visible).")
@click.option(
    "--retry",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Extra attempts for transient failures (dead worker, runtime error).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Batch state and logs (default: <manifest folder>/.vosfx-batch/<name>).",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="auto|local|ADDRESS",
    help="Run on Ray: 'auto' (the cluster this node belongs to), 'local' (start "
    "one on 127.0.0.1), or a cluster address.",
)
@click.option(
    "--allow-missing",
    is_flag=True,
    help="A missing input fails its own job instead of stopping the batch.",
)
@click.option("--offline", is_flag=True, help="Never download models (same as VOSFX_OFFLINE=1).")
@click.option("--json-progress", is_flag=True, help="JSON lines on stdout, one per event.")
@model_options
@click.option("--engine-factory", hidden=True, help="module:callable returning an Engine (tests).")
@click.option(
    "--executor",
    "executor_kind",
    hidden=True,
    type=click.Choice(["local", "inline", "ray"]),
    help="Executor (tests, debugging).",
)
def batch(
    manifest,
    output,
    presets,
    mask_rule,
    workers,
    gpus,
    retry,
    state_dir,
    ray_address,
    allow_missing,
    offline,
    json_progress,
    engine_factory,
    executor_kind,
    **model_flags,
):
    """Matte every job of MANIFEST (.toml, .csv, .jsonl) or every clip of a FOLDER.

    Jobs already done (outputs and sidecars exist and match the job's hash) are skipped, so
    rerunning after an interruption picks up where it stopped. Ends with a summary table;
    exits with code 10 when any job failed. The model flags are `vosfx matte`'s, for every
    job (over its presets; a row's or [defaults]' own [model] overrides win over them).
    """
    import os

    from vosfx.batch import format_summary, run_batch
    from vosfx.cli.flags import model_overrides
    from vosfx.errors import BatchError
    from vosfx.signals import on_terminate

    if offline:
        os.environ["VOSFX_OFFLINE"] = "1"
    defaults = {}
    if output:  # typed in the shell: relative to where it was typed, as --checkpoint is
        defaults["output"] = str(Path.cwd() / Path(output).expanduser())
    if presets:
        defaults["presets"] = list(presets)
    overrides = model_overrides(model_flags, absolute_checkpoint=True)  # rows: other folders
    if overrides:
        defaults["overrides"] = overrides
    kind = executor_kind or ("ray" if ray_address else "local")
    executor = kind
    if kind == "ray":
        from vosfx.batch.cluster import RayExecutor

        executor = RayExecutor(
            ray_address or "local",
            workers=workers,
            engine_factory=engine_factory,
            max_task_retries=retry,
        )
    elif kind == "local" and gpus is not None:
        from vosfx.batch.local import LocalExecutor

        executor = LocalExecutor(
            workers, engine_factory=engine_factory, gpus=[g for g in gpus.split(",") if g.strip()]
        )

    def _term(_signum, _frame):  # SIGTERM, SIGHUP: a cancel, as Ctrl-C (exit 130)
        raise KeyboardInterrupt

    with on_terminate(_term):
        report = run_batch(
            manifest,
            executor=executor,
            workers=workers,
            engine_factory=engine_factory,
            retry=retry,
            state_dir=state_dir,
            on_progress=_json_progress if json_progress else _BatchProgressLine(),
            defaults=defaults,
            mask_rule=mask_rule,
            allow_missing=allow_missing,
        )
    if json_progress:
        emit_json(dict(report.to_dict(), event="batch_result"))
    else:
        click.echo(format_summary(report))
    try:
        report.raise_for_failures()
    except BatchError as err:  # said by the batch_result event already (no error event)
        err.said_as_result = True
        raise

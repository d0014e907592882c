"""What a batch worker does with one job, the same in a local process and in a Ray actor.

A worker keeps its engine loaded across jobs (:class:`EngineCache`; a job asking for another
model closes the old one first, so a worker never holds two), runs
:func:`vosfx.pipeline.run` with it, writes a per-job log, stamps the sidecars with the job
hash, and turns every failure into a :class:`JobOutcome` with a reason, so one bad clip never
takes the batch down.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vosfx.errors import BatchError, ConfigError, VosfxError
from vosfx.job import Job
from vosfx.types import ProgressEvent

# Failures that will fail the same way again: retrying them only delays the summary.
PERMANENT_KINDS = {
    "config",
    "input",
    "prompt",
    "output",
    "model",
    "download",
    "backend",
    "cancelled",
}
# Progress lines in a job's log: one per this fraction of the clip (plus start and end).
_LOG_EVERY = 0.1

EngineFactory = Callable[[Any], Any]  # ModelConfig -> Engine


@dataclass(frozen=True)
class Task:
    """One job handed to a worker. ``attempt`` counts from 1; ``log_path`` None: the log is
    returned in the outcome (Ray workers may not see the driver's state folder)."""

    job_id: str
    job: Job
    job_hash: str
    attempt: int = 1
    log_path: str | None = None


@dataclass(frozen=True)
class JobOutcome:
    """``status``: ok or failed. ``kind``: the VosfxError kind, ``worker-died`` or
    ``exception``. ``transient``: a retry may succeed."""

    job_id: str
    status: str
    frames: int = 0
    elapsed_s: float = 0.0
    outputs: tuple[str, ...] = ()
    sidecars: tuple[str, ...] = ()
    kind: str = ""
    reason: str = ""
    transient: bool = False
    attempt: int = 1
    worker: str = ""
    log_text: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # what the run said the user must know (its log has them)


@dataclass
class CannotStart:
    """Why an executor's workers cannot start: every job fails with kind ``worker-start``, the
    first with the cause, the others pointing at that job. ``who``: the workers, as said."""

    cause: str
    who: str = "workers"
    first: str = ""  # the job that says the cause

    def reason(self, job_id: str) -> str:
        if not self.first:
            self.first = job_id
            return f"{self.who} cannot start: {self.cause}"
        return f"not run: {self.who} cannot start (see job {self.first})"


def resolve_factory(spec: str | EngineFactory | None) -> EngineFactory:
    """``None``: :func:`vosfx.engine.load_engine`; ``"module:callable"``: that callable (how
    spawned processes and Ray actors get a test double); a callable: itself."""
    if spec is None:
        from vosfx.engine import load_engine

        return load_engine
    if callable(spec):
        return spec
    module, sep, attr = spec.partition(":")
    if not sep:
        raise ConfigError(f"engine factory: expected 'module:callable', found {spec!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"engine factory {spec!r} cannot be imported ({err})") from None


class EngineCache:
    """The worker's one loaded engine, keyed by the job's ModelConfig."""

    def __init__(self, factory: str | EngineFactory | None = None) -> None:
        self.factory = resolve_factory(factory)
        self.key = None
        self.engine = None
        self.loads = 0  # how many times a model was loaded (the benchmark reports it)

    def get(self, model_config) -> Any:
        if self.engine is not None and self.key == model_config:
            return self.engine
        self.close()
        self.engine = self.factory(model_config)
        self.key = model_config
        self.loads += 1
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            engine, self.engine, self.key = self.engine, None, None
            engine.close()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _JobLog:
    """Per-job log: a file (appended across attempts) or a buffer; library log records of
    the job's duration go there too."""

    def __init__(self, path: str | None, header: tuple[str, ...] = ()) -> None:
        """Open the log and write ``header``; raises OSError (nothing left open) when the
        file cannot be opened or written."""
        # held open for the job's duration (log records arrive from anywhere) and closed
        # in close(): run_one's single exit path
        self.stream = open(path, "a", encoding="utf-8") if path else io.StringIO()  # noqa: SIM115
        try:
            for text in header:
                self.line(text)
        except OSError:
            self.stream.close()
            raise
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logging.getLogger().addHandler(self.handler)
        self.next_mark = 0.0

    def line(self, text: str) -> None:
        self.stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        self.stream.flush()

    def progress(self, ev: ProgressEvent) -> None:
        if ev.event == "warning":
            self.line(f"warning: {ev.message}")
        frac = ev.frames_done / ev.total_frames if ev.total_frames else 0.0
        if ev.event == "frame" and frac >= self.next_mark:
            self.next_mark = frac + _LOG_EVERY
            self.line(f"frame {ev.frames_done}/{ev.total_frames} {ev.fps:.2f} fps")

    def close(self) -> str:
        logging.getLogger().removeHandler(self.handler)
        text = self.stream.getvalue() if isinstance(self.stream, io.StringIO) else ""
        self.stream.close()
        return text


# The pipeline's errors name the CLI's flags; a batch job's are keys of its manifest row.
_MANIFEST_WORDS = (
    ("pass --overwrite to replace it", "set overwrite = true in the job's row to replace it"),
    ("--no-sidecar to write none", "overrides = {output = {sidecar = false}} to write none"),
)


def in_manifest_words(message: str) -> str:
    """``message`` with the CLI's remedies ("pass --overwrite ...") said as the manifest
    row's keys, which is what a batch user can change."""
    for cli_words, row_words in _MANIFEST_WORDS:
        message = message.replace(cli_words, row_words)
    return message


def run_one(
    task: Task,
    engines: EngineCache,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    cancel=None,
) -> JobOutcome:
    """Run one job; never raises for the job's own failures (they become the outcome)."""
    from vosfx import pipeline
    from vosfx.batch.state import make_output_folders, remove_partial, stamp_sidecars

    base = JobOutcome(task.job_id, "failed", attempt=task.attempt, worker=worker_name())
    t0 = time.perf_counter()
    try:
        log = _JobLog(
            task.log_path,
            (
                f"job {task.job_id} attempt {task.attempt} on {base.worker}",
                f"input {task.job.input} -> {task.job.output} (hash {task.job_hash[:12]})",
            ),
        )
    except OSError as err:  # the job's own failure, not the worker's: it must not die of it
        return replace(
            base,
            kind="output",
            reason=f"job log {task.log_path} cannot be written ({err.strerror or err}); free "
            "space or fix the state folder, then run the batch again to redo this job",
        )

    def progress(ev: ProgressEvent) -> None:
        log.progress(ev)
        if on_progress is not None:
            on_progress(ev)

    try:
        for leftover in remove_partial(task.job):
            log.line(f"removed a partial file from an interrupted run: {leftover}")
        for folder in make_output_folders(task.job):
            log.line(f"made the output folder {folder}")
        engine = engines.get(task.job.config.model)
        report = pipeline.run(
            task.job,
            engine=engine,
            on_progress=progress,
            cancel=cancel,
            make_folders=lambda folder: log.line(f"made the output folder {folder}"),
        )
        stamp_sidecars(report.sidecars, task.job_id, task.job_hash)
    except VosfxError as err:
        reason = in_manifest_words(str(err))
        outcome = replace(
            base, kind=err.kind, reason=reason, transient=err.kind not in PERMANENT_KINDS
        )
        log.line(f"FAILED ({err.kind}): {reason}")
    except Exception as err:  # noqa: BLE001 - isolate any bug or runtime error to this job
        outcome = replace(
            base, kind="exception", reason=f"{type(err).__name__}: {err}", transient=True
        )
        log.line(f"FAILED with an unexpected error:\n{traceback.format_exc()}")
        # the engine may be left broken (a CUDA error poisons its context): load afresh
        _close_quietly(engines, log)
    else:
        outcome = replace(
            base,
            status="ok",
            frames=report.frames,
            outputs=report.outputs,
            sidecars=report.sidecars,
            timings_s=dict(report.timings_s),
            warnings=tuple(report.warnings),
        )
        log.line(
            f"done: {report.frames} frames in {report.elapsed_s:.2f} s "
            f"({report.fps:.2f} fps); outputs: {', '.join(report.outputs)}"
        )
    outcome = replace(outcome, elapsed_s=time.perf_counter() - t0)
    return replace(outcome, log_text=log.close())


def _close_quietly(engines: EngineCache, log: _JobLog) -> None:
    try:
        engines.close()
    except Exception as err:  # noqa: BLE001 - a broken engine may fail to close; drop it
        engines.engine = engines.key = None
        log.line(f"closing the engine after the failure also failed: {err!r}")


def append_log(path: Path, text: str) -> None:
    """Add a worker's returned log text to ``path`` (Ray: the driver keeps the logs).
    Raises BatchError when it cannot be written (a full disk), as the state file does."""
    if text:
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as err:
            raise BatchError(
                f"batch log {path} cannot be written ({err.strerror or err}); the batch "
                "stopped: free space or fix the folder, then run it again to resume"
            ) from None

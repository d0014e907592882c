"""Batch matte rendering: many clips, every worker busy, resumable, one bad clip fails alone.

:func:`run_batch` is the coordinator. It validates the whole manifest first
(:mod:`vosfx.batch.manifest`), hashes each job and decides what is already done
(:mod:`vosfx.batch.state`), then feeds the rest to an executor — worker processes on this
machine (:mod:`vosfx.batch.local`) or actors on a Ray cluster (:mod:`vosfx.batch.cluster`) —
recording every start and finish in ``<state dir>/state.json`` so a killed batch picks up where
it stopped. Workers run :func:`vosfx.pipeline.run` with an engine they keep loaded
(:mod:`vosfx.batch.worker`). Failed jobs are retried ``retry`` times when the failure may be
transient (a dead worker, a runtime error), never when it is the clip's own fault (corrupt
input, bad prompt). The result is a :class:`BatchReport`; the CLI prints its summary table and
exits with BatchError's code (10) when any job failed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vosfx.batch.manifest import BatchJob, Manifest, load_manifest, with_overwrite
from vosfx.batch.worker import JobOutcome, Task, append_log
from vosfx.errors import BatchError

log = logging.getLogger(__name__)

# How often the coordinator wakes to report progress when no worker has sent anything.
_TICK_S = 0.5


@dataclass(frozen=True)
class JobResult:
    """One row of the summary. ``status``: ok, skipped or failed."""

    job_id: str
    status: str
    frames: int = 0
    elapsed_s: float = 0.0
    reason: str = ""
    attempts: int = 0
    outputs: tuple[str, ...] = ()
    worker: str = ""
    # what an ok job's run said the user must know (a gap in a plate, a GPU asked for and
    # absent): in its log, its sidecar, and the summary's reason column
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "status": self.status,
            "frames": self.frames,
            "seconds": round(self.elapsed_s, 3),
            "reason": self.reason,
            "attempts": self.attempts,
            "outputs": list(self.outputs),
            "worker": self.worker,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class BatchReport:
    results: tuple[JobResult, ...]
    elapsed_s: float
    executor: str
    workers: int
    state_dir: str

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> tuple[JobResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.results if r.status == "ok")

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": [r.to_dict() for r in self.results],
            "ok": self.count("ok"),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "frames": self.frames,
            "elapsed_s": round(self.elapsed_s, 3),
            "fps": round(self.fps, 3),
            "executor": self.executor,
            "workers": self.workers,
            "state_dir": self.state_dir,
        }

    def raise_for_failures(self) -> None:
        if self.failed:
            names = ", ".join(r.job_id for r in self.failed[:10])
            more = "" if len(self.failed) <= 10 else f" and {len(self.failed) - 10} more"
            raise BatchError(
                f"{len(self.failed)} of {len(self.results)} job(s) failed: "
                f"{names}{more} (see the summary and {self.state_dir}/logs)"
            )


@dataclass(frozen=True)
class BatchProgress:
    """Batch-wide progress. ``event``: plan, start, progress, job (``result`` set) or done.
    ``fps``: frames matted per second over all workers since the batch started."""

    event: str
    jobs_done: int
    jobs_total: int
    jobs_failed: int = 0
    frames_done: int = 0
    fps: float = 0.0
    eta_s: float | None = None
    running: dict[str, tuple[int, int]] = field(default_factory=dict)
    result: JobResult | None = None
    message: str = ""


def format_summary(report: BatchReport) -> str:
    """The table printed at the end: job, status, frames, seconds, reason."""
    rows = [("job", "status", "frames", "seconds", "reason")]
    for r in report.results:
        reason = r.reason.splitlines()[0] if r.reason else ""
        if not reason and r.warnings:  # an ok job's warnings: the first (its log has all)
            n = len(r.warnings)
            reason = f"{n} warnings, the first: " if n > 1 else "warning: "
            reason += r.warnings[0]
        if r.attempts > 1:
            reason = f"[{r.attempts} attempts] {reason}".strip()
        # long enough for a worker's start-up error with its module name; the log has it all
        rows.append((r.job_id, r.status, str(r.frames), f"{r.elapsed_s:.1f}", reason[:160]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 6)
    lines.append(
        f"{report.count('ok')} ok, {report.count('skipped')} skipped, "
        f"{report.count('failed')} failed; {report.frames} frames in {report.elapsed_s:.1f} s "
        f"({report.fps:.2f} fps, {report.workers} {report.executor} worker(s))"
    )
    return "\n".join(lines)


def make_executor(
    kind: str = "local",
    *,
    workers: int | None = None,
    engine_factory: Any = None,
    gpus: list[str] | None = None,
    ray_address: str | None = None,
    retry: int = 0,
):
    """``inline`` | ``local`` | ``ray`` -> an executor (see :mod:`vosfx.batch.local`)."""
    if kind == "inline":
        from vosfx.batch.local import InlineExecutor

        return InlineExecutor(engine_factory)
    if kind == "local":
        from vosfx.batch.local import LocalExecutor

        return LocalExecutor(workers, engine_factory=engine_factory, gpus=gpus)
    if kind == "ray":
        from vosfx.batch.cluster import RayExecutor

        return RayExecutor(
            ray_address or "local",
            workers=workers,
            engine_factory=engine_factory,
            max_task_retries=retry,
        )
    raise BatchError(f"executor: expected inline, local or ray, found {kind!r}")


def run_batch(
    manifest: Manifest | str | Path,
    *,
    executor: Any = "local",
    workers: int | None = None,
    engine_factory: Any = None,
    retry: int = 0,
    state_dir: str | Path | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
    **manifest_options: Any,
) -> BatchReport:
    """Run every job of ``manifest`` that is not already done; return the report (failed jobs
    do not raise: see :meth:`BatchReport.raise_for_failures`).

    ``executor``: ``"local"`` (worker processes; ``workers`` CPU workers or one per GPU),
    ``"inline"`` (this process), ``"ray"``, or an executor object. ``engine_factory``:
    ``ModelConfig -> Engine``, as a callable or ``"module:callable"`` (default
    :func:`vosfx.engine.load_engine`). ``retry``: extra attempts for transient failures.
    ``state_dir``: default ``<manifest folder>/.vosfx-batch/<manifest name>``.
    ``manifest_options``: passed to :func:`load_manifest` (defaults, mask_rule, ...).
    """
    from vosfx.batch.state import BatchState

    if retry < 0:
        raise BatchError(f"retry: expected 0 or more, found {retry}")
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest, **manifest_options)
    folder = Path(state_dir or manifest.default_state_dir())
    with _only_run(folder):
        state = BatchState(folder).open()
        if isinstance(executor, str):
            executor = make_executor(
                executor, workers=workers, engine_factory=engine_factory, retry=retry
            )
        run = _Coordinator(manifest, state, executor, retry, on_progress)
        return run.run()


@contextmanager
def _only_run(state_dir: Path) -> Iterator[None]:
    """Hold ``<state dir>/lock`` for the whole run. A second run on the same state (the same
    manifest launched twice) would render every job again beside the first, delete the
    first's temporary files as leftovers and overwrite its state: it is refused instead."""
    from vosfx.files import exclusive_lock

    with ExitStack() as held:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive_lock(state_dir / "lock", blocking=False))
        except BlockingIOError:
            raise BatchError(
                f"another vosfx batch is running with the state in {state_dir} (the same "
                "manifest, or the same --state-dir); wait for it to finish, or stop it and "
                "run again to resume"
            ) from None
        except OSError as err:
            raise BatchError(
                f"batch state folder {state_dir} cannot be used ({err}); give a folder you "
                "can write with --state-dir (state_dir= in Python)"
            ) from None
        yield


class _Coordinator:
    def __init__(self, manifest: Manifest, state, executor, retry: int, on_progress) -> None:
        self.manifest, self.state, self.executor = manifest, state, executor
        self.retry, self.on_progress = retry, on_progress
        self.results: dict[str, JobResult] = {}
        self.pending: deque[Task] = deque()
        self.bjobs: dict[str, BatchJob] = {bj.id: bj for bj in manifest.jobs}
        self.running: dict[str, tuple[int, int]] = {}
        self.tasks: dict[str, Task] = {}
        self.attempt_s: dict[str, float] = {}  # seconds spent on each job, every attempt
        self.frames_done = 0
        self.t0 = time.perf_counter()

    def run(self) -> BatchReport:
        self._plan()
        self.executor.start()
        try:
            self._emit("start")
            while self.pending or self.running:
                self._dispatch()
                for event in self.executor.wait(_TICK_S):
                    self._handle(event)
                self._emit("progress")
        except BaseException:  # a cancel (Ctrl-C, SIGTERM) or a batch error mid-run
            self.executor.close()
            self._remove_partials()
            raise
        else:
            self.executor.close()
        report = BatchReport(
            tuple(self.results[bj.id] for bj in self.manifest.jobs),
            time.perf_counter() - self.t0,
            getattr(self.executor, "name", "custom"),
            getattr(self.executor, "workers", 1),
            str(self.state.dir),
        )
        self._emit("done")
        return report

    def _remove_partials(self) -> None:
        """What the jobs running when the batch stopped had half-written, once their workers
        are closed: a Ray actor killed (``ray.kill``) cannot clean up as a local worker does
        (its temporary files stayed until the next run). A file already gone is no error."""
        from vosfx.batch.state import remove_partial

        for job_id in list(self.running):
            task = self.tasks.get(job_id)
            if task is None:
                continue
            try:
                for path in remove_partial(task.job):
                    log.info("removed the partial file %s of %s", path, job_id)
            except OSError as err:
                log.warning("partial files of %s not all removed: %s", job_id, err)

    def _plan(self) -> None:
        from vosfx.batch.state import decide, job_hash

        for bj in self.manifest.jobs:
            try:
                digest = job_hash(bj.job)
                decision = decide(bj.id, bj.job, digest, self.state)
            except OSError as err:
                self._finish(bj.id, JobResult(bj.id, "failed", reason=f"cannot read: {err}"))
                continue
            if not decision.run:
                entry = self.state.jobs.get(bj.id, {})
                self.results[bj.id] = JobResult(
                    bj.id,
                    "skipped",
                    frames=entry.get("frames", 0),
                    reason=decision.reason,
                    outputs=tuple(entry.get("outputs", ())),
                )
                continue
            job = with_overwrite(bj, decision.overwrite).job
            self.pending.append(Task(bj.id, job, digest, 1, str(self.state.log_path(bj.id))))
        self._emit("plan", message=f"{len(self.pending)} to run, {len(self.results)} already done")

    def _dispatch(self) -> None:
        from vosfx.batch.state import absent_paths

        while self.pending and self.executor.free_slots() > 0:
            task = self.pending.popleft()
            entry = self.state.jobs.get(task.job_id, {})
            # paths absent now and written later are this batch's: a redo may replace them
            fresh = sorted(set(entry.get("fresh", [])) | set(absent_paths(task.job)))
            self.state.update(
                task.job_id,
                status="running",
                hash=task.job_hash,
                attempt=task.attempt,
                fresh=fresh,
                input=task.job.input,
            )
            self.running[task.job_id] = (0, 0)
            self.tasks[task.job_id] = task
            self.executor.submit(task)

    def _handle(self, event: tuple) -> None:
        kind = event[0]
        if kind == "progress":
            _, job_id, done, total = event
            if job_id in self.running:
                self.running[job_id] = (done, total)
        elif kind == "finished":
            self._finished(event[1])

    def _finished(self, outcome: JobOutcome) -> None:
        task_log = self.state.log_path(outcome.job_id)
        append_log(task_log, outcome.log_text)
        self.running.pop(outcome.job_id, None)
        # a job's seconds are all its attempts' (a retry's result said its last one alone)
        spent = self.attempt_s.get(outcome.job_id, 0.0) + outcome.elapsed_s
        self.attempt_s[outcome.job_id] = spent
        if outcome.status != "ok" and outcome.transient and outcome.attempt <= self.retry:
            task = self.tasks[outcome.job_id]
            append_log(task_log, f"retrying after: {outcome.reason}\n")
            self.pending.append(
                replace(task, job=self._retry_job(task), attempt=outcome.attempt + 1)
            )
            self._emit("progress", message=f"{task.job_id}: retrying ({outcome.reason})")
            return
        result = JobResult(
            outcome.job_id,
            outcome.status,
            outcome.frames,
            spent,
            outcome.reason,
            outcome.attempt,
            outcome.outputs,
            outcome.worker,
            outcome.warnings,
        )
        self.state.update(
            outcome.job_id,
            status=outcome.status,
            frames=outcome.frames,
            outputs=list(outcome.outputs),
            sidecars=list(outcome.sidecars),
            reason=outcome.reason,
            kind=outcome.kind,
            elapsed_s=round(spent, 3),
        )
        self._finish(outcome.job_id, result)

    def _retry_job(self, task: Task):
        """A dead attempt may have committed some outputs: the retry may replace exactly the
        paths that were absent when the job was first dispatched."""
        from vosfx.batch.state import existing_finals

        fresh = set(self.state.jobs.get(task.job_id, {}).get("fresh", []))
        existing = existing_finals(task.job)  # a per-object output's files too
        if existing and all(planned in fresh for _path, planned in existing):
            return replace(task.job, overwrite=True)
        return task.job

    def _finish(self, job_id: str, result: JobResult) -> None:
        self.results[job_id] = result
        self.frames_done += result.frames
        self._emit("job", result=result)

    def _emit(self, event: str, *, result: JobResult | None = None, message: str = "") -> None:
        if self.on_progress is None:
            return
        elapsed = time.perf_counter() - self.t0
        live = sum(d for d, _ in self.running.values())
        frames = self.frames_done + live
        fps = frames / elapsed if elapsed > 0 else 0.0
        done = [r for r in self.results.values() if r.status != "skipped"]
        mean = (sum(r.frames for r in done) / len(done)) if done else None
        known = [t for _, t in self.running.values() if t]
        mean = mean or (sum(known) / len(known) if known else None)
        eta = None
        if fps > 0 and mean is not None:
            left = sum(max(t - d, 0) if t else mean for d, t in self.running.values())
            eta = (left + len(self.pending) * mean) / fps
        self.on_progress(
            BatchProgress(
                event,
                len(self.results),
                len(self.manifest.jobs),
                sum(1 for r in self.results.values() if r.status == "failed"),
                frames,
                fps,
                eta,
                dict(self.running),
                result,
                message,
            )
        )

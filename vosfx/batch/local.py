"""Executors that run batch jobs on this machine.

:class:`LocalExecutor`: one spawned process per GPU (``CUDA_VISIBLE_DEVICES`` set per worker)
or ``workers`` processes on CPU; each loads its engine once and keeps it across jobs. Each
worker talks to the coordinator over its own pipe, so a worker killed at any moment cannot
leave a shared queue's lock held; a dead worker's job is reported as ``worker-died`` (the
coordinator retries it) and a fresh worker takes the slot. A worker's stdout and stderr go
to a file the coordinator copies to its own stderr, so a dead worker's last lines (a
traceback, a native crash's message) are in its job's reason. A worker that cannot start
(an engine factory that does not import) fails the batch's jobs once, with its error, and a
model that kills its worker while loading fails the jobs that need it: neither is retried.

:class:`InlineExecutor`: the jobs in the calling process, one at a time (debugging, tests,
and the reference the other executors are compared with).

Every executor has the same small interface the coordinator (:mod:`vosfx.batch`) drives:
``start()``, ``free_slots()``, ``submit(task)``, ``wait(timeout_s) -> [event]``, ``close()``.
Events are tuples: ``("started", job_id, worker)``, ``("progress", job_id, frames_done,
total_frames)``, ``("finished", JobOutcome)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vosfx.batch.process import WorkerOutput, worker_main
from vosfx.batch.worker import CannotStart, EngineCache, JobOutcome, Task, run_one, worker_name
from vosfx.cpus import usable_cores
from vosfx.errors import BatchError

if TYPE_CHECKING:
    from multiprocessing.context import SpawnContext

_JOIN_S = 5.0


def detect_gpus() -> list[str]:
    """GPU ids for one worker each: ``CUDA_VISIBLE_DEVICES`` when set, else what
    ``nvidia-smi -L`` lists, else none. Imports no CUDA library."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [d.strip() for d in env.split(",") if d.strip()]
        return [] if ids in ([], ["-1"]) else ids
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def worker_envs(
    workers: int | None, gpus: list[str] | None = None, threads: int | None = None
) -> list[dict[str, str]]:
    """Environment per worker: one per GPU (its ``CUDA_VISIBLE_DEVICES``), else ``workers``
    CPU workers that split the cores between them (``threads`` each when given): their share
    as ``OMP_NUM_THREADS``, which torch and OpenBLAS read and vosfx hands to ONNX Runtime,
    OpenVINO, FFmpeg's codecs and the refinement loops (:mod:`vosfx.cpus`), and as
    ``OPENCV_FOR_THREADS_NUM`` for OpenCV, so two workers on a 2-core machine do not each
    start 2 threads in every pool. One CPU worker alone keeps each pool's own default."""
    gpus = detect_gpus() if gpus is None else gpus
    if gpus and workers is None:
        return [{"CUDA_VISIBLE_DEVICES": g} for g in gpus]
    n = workers if workers is not None else 1
    if n < 1:
        raise BatchError(f"expected at least 1 worker, found {n}")
    if gpus:  # more workers than GPUs: share them round-robin
        return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} for i in range(n)]
    if n == 1 and not threads:
        return [{"CUDA_VISIBLE_DEVICES": ""}]
    per = threads or max(1, usable_cores() // n)
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")
    return [{name: str(per) for name in names} | {"CUDA_VISIBLE_DEVICES": ""} for _ in range(n)]


def _check_picklable(factory: Any) -> None:
    """BatchError unless ``factory`` can reach a worker process (spawned, so it is pickled):
    a lambda or a function defined inside another cannot, and the raw PicklingError came
    from deep in multiprocessing."""
    import pickle

    if factory is None or isinstance(factory, str):
        return
    try:
        pickle.dumps(factory)
    except (pickle.PicklingError, AttributeError, TypeError) as err:  # a local object: either
        raise BatchError(
            f"engine_factory {factory!r} cannot be sent to a worker process ({err}); give a "
            'function defined at the top of a module, or its "module:function" name, or '
            'run with executor="inline"'
        ) from None


class InlineExecutor:
    """Runs each job in this process when :meth:`wait` is called."""

    name = "inline"

    def __init__(self, engine_factory: Any = None) -> None:
        self.engines = EngineCache(engine_factory)
        self.pending: deque[Task] = deque()
        self.workers = 1

    def start(self) -> None:
        pass

    def free_slots(self) -> int:
        return 0 if self.pending else 1

    def submit(self, task: Task) -> None:
        self.pending.append(task)

    def wait(self, timeout_s: float) -> list[tuple]:
        if not self.pending:
            return []
        task = self.pending.popleft()
        events: list[tuple] = [("started", task.job_id, worker_name())]
        outcome = run_one(task, self.engines)
        return events + [("finished", outcome)]

    def close(self) -> None:
        self.engines.close()


@dataclass
class _Worker:
    wid: int
    proc: Any
    conn: Any
    output: WorkerOutput
    task: Task | None = None
    ready: bool = False  # started: its engine factory imported
    loading: bool = False  # inside the engine factory (loading a model)
    startup_error: str = ""  # what it sent back when it could not start


class LocalExecutor:
    """A pool of spawned worker processes (see the module doc)."""

    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        *,
        engine_factory: Any = None,
        gpus: list[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.envs = worker_envs(workers, gpus, threads)
        self.workers = len(self.envs)
        _check_picklable(engine_factory)
        self.factory = engine_factory
        self.pool: dict[int, _Worker] = {}
        self.ctx: SpawnContext | None = None  # set by start()
        # jobs that cannot run, failed at submit: why, and the job whose reason says it all
        self.cannot_start: CannotStart | None = None
        self.bad_models: dict[Any, str] = {}  # ModelConfig -> the job whose worker it killed
        self.loaded_models: set[Any] = set()
        self.refused: list[tuple] = []

    def start(self) -> None:
        import multiprocessing

        # spawn, never fork: a forked child of a process that touched torch or CUDA can hang
        self.ctx = multiprocessing.get_context("spawn")
        for wid in range(self.workers):
            self._spawn(wid)

    def _spawn(self, wid: int) -> None:
        assert self.ctx is not None  # started
        output = WorkerOutput()
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(
            target=worker_main,
            name=f"vosfx-batch-{wid}",
            daemon=True,
            args=(child, self.factory, self.envs[wid], os.getpid(), output.path),
        )
        proc.start()
        child.close()
        self.pool[wid] = _Worker(wid, proc, parent, output)

    def worker_pids(self) -> dict[int, int]:
        return {wid: w.proc.pid for wid, w in self.pool.items()}

    def free_slots(self) -> int:
        if self.cannot_start is not None:
            return self.workers  # every job is refused at once (see submit)
        return sum(1 for w in self.pool.values() if w.task is None)

    def submit(self, task: Task) -> None:
        refused = self._refusal(task)
        if refused is not None:
            self.refused.append(("finished", refused))
            return
        worker = next(w for w in self.pool.values() if w.task is None)
        worker.task = task
        worker.conn.send(task)

    def _refusal(self, task: Task) -> JobOutcome | None:
        """The outcome of a job no worker can run, else None."""
        if self.cannot_start is not None:
            return _failed(task, "worker-start", self.cannot_start.reason(task.job_id))
        bad = self.bad_models.get(task.job.config.model)
        if bad is not None:
            model = task.job.config.model.name
            return _failed(
                task, "model", f"not run: model {model} kills its worker (see job {bad})"
            )
        return None

    def wait(self, timeout_s: float) -> list[tuple]:
        from multiprocessing.connection import wait

        if self.refused:
            refused, self.refused = self.refused, []
            return refused
        handles = {}
        for w in self.pool.values():
            handles[w.conn] = w
            handles[w.proc.sentinel] = w
        events: list[tuple] = []
        for ready in wait(list(handles), timeout_s) if handles else []:
            w = handles[ready]
            if ready is w.conn:
                events += self._receive(w)
        for w in list(self.pool.values()):
            w.output.pump()
            if not w.proc.is_alive() and self.pool.get(w.wid) is w:
                events += self._receive(w)  # what it sent before dying
                events += self._replace_dead(w)
        return events

    def _receive(self, w: _Worker) -> list[tuple]:
        events = []
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "ready":
                    w.ready = True
                elif msg[0] == "startup-failed":
                    w.startup_error = msg[1]
                elif msg[0] == "loading":
                    w.loading = True
                elif msg[0] == "loaded":
                    w.loading = False
                    if w.task is not None:
                        self.loaded_models.add(w.task.job.config.model)
                else:
                    if msg[0] == "finished":
                        w.task, w.loading = None, False
                    events.append(msg)
        except (EOFError, OSError):
            pass  # the process is gone; the sentinel check handles it
        return events

    def _replace_dead(self, w: _Worker) -> list[tuple]:
        w.proc.join(0.1)
        code = w.proc.exitcode
        w.conn.close()
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        lines = w.output.last_lines()
        w.output.close()
        said = f": {lines[-1]}" if lines else ""
        output = "".join(f"\n  {ln}" for ln in lines)
        del self.pool[w.wid]
        task, outcome = w.task, None
        if not w.ready:  # it never started: no worker will (the same code and environment)
            cause = w.startup_error or (
                f"worker process {w.proc.pid} exited ({how}) while starting{said}"
                + ("" if lines else " (its error, if any, is on stderr above)")
            )
            if self.cannot_start is None:  # the first worker's error; the others' are alike
                self.cannot_start = CannotStart(cause if w.startup_error else cause + output)
            if task is not None:
                outcome = self._refusal(task)
            return [] if outcome is None else [("finished", outcome)]
        if task is not None and w.loading:
            model = task.job.config.model
            cause = (
                f"worker process {w.proc.pid} died while loading the model {model.name} "
                f"({how}){said}"
            )
            if model not in self.loaded_models and not self._loading_elsewhere(model):
                self.bad_models[model] = task.job_id
            outcome = _failed(task, "model", cause + output, w.proc.pid)
        elif task is not None:
            reason = f"worker process {w.proc.pid} died mid-job ({how}){said}{output}"
            outcome = replace(_failed(task, "worker-died", reason, w.proc.pid), transient=True)
        self._spawn(w.wid)
        return [] if outcome is None else [("finished", outcome)]

    def _loading_elsewhere(self, model: Any) -> bool:
        return any(
            w.loading and w.task is not None and w.task.job.config.model == model
            for w in self.pool.values()
        )

    def close(self) -> None:
        for w in self.pool.values():
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + _JOIN_S
        for w in self.pool.values():
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():  # mid-job (Ctrl-C): SIGTERM cancels it, writers clean up
                w.proc.terminate()
                w.proc.join(_JOIN_S)
            w.conn.close()
            w.output.close()
        self.pool.clear()


def _failed(task: Task, kind: str, reason: str, pid: int | None = None) -> JobOutcome:
    """A job the executor ends itself (its worker died, or none can run it); the reason also
    goes to the job's log."""
    return JobOutcome(
        task.job_id,
        "failed",
        kind=kind,
        reason=reason,
        attempt=task.attempt,
        worker=f"local:{pid}" if pid else "local",
        log_text=reason + "\n",
    )

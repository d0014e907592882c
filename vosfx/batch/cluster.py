"""Run batch jobs on a Ray cluster: one actor per GPU holding the model, one task per job.

Needs ``pip install "vosfx[ray]"`` (Ray core) on every node, with the same vosfx version and
model cache or checkpoint paths that every node can read. Inputs, masks and outputs must be
paths every node sees (shared storage: NFS, a cluster file system, a mounted bucket); the
manifest names them. The driver (the machine running ``vosfx batch --ray``) keeps the batch
state and the per-job logs; actors send each job's log back with its result.

Start-up: an actor that cannot start (its constructor raised on a node: an engine factory or
a package that node cannot import) is dropped with a warning naming the error; where none
starts, every job fails at once with kind ``worker-start`` and that error, as with local
workers, instead of an exception out of the batch.

Worker death: actors are created with ``max_restarts=-1`` (a dead actor is restarted and
loads the model again) and calls with ``max_task_retries=retry`` (the job in flight is rerun
on the restarted actor). A job whose actor died more often than that fails with reason
``worker-died``. Other failures are retried by the coordinator like local ones.

Address: ``local`` starts a private single-node Ray on 127.0.0.1 (no dashboard; nothing binds
beyond loopback), ``auto`` joins the cluster this node belongs to (``ray start`` was run here),
anything else is passed to ``ray.init(address=...)`` (``ray://head:10001`` or ``head:6379``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from vosfx.batch.worker import (
    CannotStart,
    EngineCache,
    JobOutcome,
    Task,
    run_one,
    worker_name,
)
from vosfx.cpus import usable_cores
from vosfx.errors import BackendError, BatchError

log = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BackendError('--ray needs Ray: pip install "vosfx[ray]"') from None
    return ray


# how long the driver waits to open a TCP connection to a named head before saying none answers
# (Ray's own wait for a head that is not there is about two minutes)
CONNECT_CHECK_S = 5.0


def head_endpoint(address: str) -> tuple[str, int] | None:
    """The host and port a ``--ray`` address names (``head:6379``, ``ray://head:10001``,
    ``[::1]:6379``), or None where it names none (``auto``, a bare host: Ray's to resolve)."""
    rest = address.removeprefix("ray://")
    if "://" in rest:
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_CHECK_S) -> None:
    """Fail at once, naming the address, where nothing accepts a connection at the head's host
    and port (refused, unresolvable or silent for ``timeout`` seconds)."""
    import socket

    endpoint = head_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as err:
        why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise BackendError(
            f"--ray {address}: nothing answers at {endpoint[0]} port {endpoint[1]} ({why}); "
            "start the cluster there (`ray start --head` on the head machine), check the "
            "address, or give --ray local"
        ) from None


def init_local_ray(num_cpus: int | None = None, **kwargs: Any) -> None:
    """Start a single-node Ray bound to 127.0.0.1 only, without the dashboard.

    Why the patch: Ray swaps a loopback ``_node_ip_address`` for the machine's routable
    address (``ray._private.services.resolve_ip_for_localhost``) and its gRPC servers then
    listen on every interface; keeping 127.0.0.1 makes all of them bind to loopback. The
    private function is restored right after start-up, and skipped if a Ray version lacks it.
    """
    ray = _import_ray()
    from ray._private import services

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a batch
    original = getattr(services, "resolve_ip_for_localhost", None)
    if original is not None:
        services.resolve_ip_for_localhost = lambda host: host
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            **kwargs,
        )
    finally:
        if original is not None:
            services.resolve_ip_for_localhost = original


def actor_cpus(actors: int, node_cpus: list[int], *, gpus: int) -> int:
    """CPUs each actor holds: the largest share that still places every actor, whole, on the
    nodes as they are (``node_cpus``: each node's CPUs). Ray sets an actor's
    ``OMP_NUM_THREADS`` to its CPUs, which every runtime's pool then takes as its share
    (:mod:`vosfx.cpus`). Beside GPUs each actor holds one (the GPU does the model's work).

    An actor must fit on one node, so the share is not the cluster's CPUs over the actors:
    two 12-CPU nodes place three 8-CPU actors only two at a time, and 6 CPUs each places all
    three (a share that leaves an actor unplaced would leave its jobs waiting for ever).
    """
    nodes = [n for n in node_cpus if n > 0]
    if gpus or not nodes:
        return 1
    share = max(nodes)
    while share > 1 and sum(n // share for n in nodes) < actors:
        share -= 1
    return share


def _creation_error(err: Exception) -> str:
    """The error an actor's constructor raised, in one line (Ray's message carries the
    remote traceback; its last line is ``Type: message``)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(err).__name__
    # vosfx's own errors say it all in their message; others keep their type's name
    return last.partition(": ")[2] or last if last.startswith("vosfx.errors.") else last


def _node_cpus(ray: Any) -> list[int]:
    """Each live node's CPUs (the whole cluster as one node where Ray cannot list them)."""
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return [int(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
    except Exception:  # noqa: BLE001 - an older Ray Client: fall back to the total
        return [int(ray.cluster_resources().get("CPU", 1))]


class _RayWorker:
    """The actor: an engine cache living as long as the actor (and rebuilt on restart)."""

    def __init__(self, factory: Any) -> None:
        import ray

        self.engines = EngineCache(factory)
        self.restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.jobs = 0

    def pid(self) -> int:
        return os.getpid()

    def run(self, task: Task) -> JobOutcome:
        # the first call on a restarted actor is the one Ray resubmitted after the death
        retried = self.restarted and self.jobs == 0
        self.jobs += 1
        if retried:
            task = replace(task, attempt=task.attempt + 1)
        outcome = run_one(task, self.engines)
        note = "worker died mid-job; Ray restarted it and reran the job\n" if retried else ""
        return replace(outcome, worker=f"ray:{worker_name()}", log_text=note + outcome.log_text)


class RayExecutor:
    """Executor on Ray actors (the interface is :mod:`vosfx.batch.local`'s)."""

    name = "ray"

    def __init__(
        self,
        address: str = "local",
        *,
        workers: int | None = None,
        engine_factory: Any = None,
        max_task_retries: int = 0,
        num_cpus: int | None = None,
        runtime_env: dict | None = None,
    ) -> None:
        self.address, self.requested = address, workers
        self.factory, self.retries = engine_factory, max_task_retries
        self.num_cpus, self.runtime_env = num_cpus, runtime_env
        self.workers = 0
        self.actors: list = []
        self.idle: list = []
        self.inflight: dict = {}
        self.pids: list[int] = []
        self._owns_ray = False
        self.cannot_start: CannotStart | None = None  # no actor could start
        self.refused: list[tuple] = []

    def start(self) -> None:
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address == "local":
                init_local_ray(self.num_cpus or usable_cores(), runtime_env=self.runtime_env)
            else:
                check_reachable(self.address)
                try:
                    ray.init(
                        address=self.address, runtime_env=self.runtime_env, log_to_driver=False
                    )
                except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
                    said = " ".join(str(err).split())[:400]
                    raise BackendError(
                        f"--ray {self.address}: no Ray cluster could be joined ({said}); start "
                        "one (`ray start --head` on the head machine) or give --ray local"
                    ) from None
            self._owns_ray = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        n = self.requested or gpus or int(resources.get("CPU", 1))
        if n < 1:
            raise BatchError(f"expected at least 1 Ray worker, found {n}")
        actor_cls = ray.remote(_RayWorker).options(
            num_gpus=1 if gpus else 0,
            num_cpus=actor_cpus(n, _node_cpus(ray), gpus=gpus),
            max_restarts=-1,
            max_task_retries=self.retries,
        )
        actors = [actor_cls.remote(self.factory) for _ in range(n)]
        # also waits until every actor is up, so a worker that cannot start is found here
        started, causes = [], []
        for actor in actors:
            try:
                started.append((actor, ray.get(actor.pid.remote())))
            except ray.exceptions.RayActorError as err:
                causes.append(_creation_error(err))
                ray.kill(actor, no_restart=True)
        if causes:
            log.warning("%d of %d Ray workers could not start: %s", len(causes), n, causes[0])
        self.actors = [a for a, _pid in started]
        self.pids = [pid for _a, pid in started]
        self.idle = list(self.actors)
        self.workers = len(self.actors) or n  # none started: every job is refused (submit)
        if not self.actors:
            self.cannot_start = CannotStart(causes[0], "Ray workers")

    def free_slots(self) -> int:
        if self.cannot_start is not None:
            return self.workers  # every job is refused at once (see submit)
        return len(self.idle)

    def submit(self, task: Task) -> None:
        if self.cannot_start is not None:
            reason = self.cannot_start.reason(task.job_id)
            outcome = JobOutcome(
                task.job_id,
                "failed",
                kind="worker-start",
                reason=reason,
                attempt=task.attempt,
                worker="ray",
                log_text=reason + "\n",
            )
            self.refused.append(("finished", outcome))
            return
        actor = self.idle.pop()
        # the log comes back with the result: the driver's state folder may be local to it
        ref = actor.run.remote(replace(task, log_path=None))
        self.inflight[ref] = (actor, task)

    def running(self) -> dict[str, int]:
        """job id -> the pid its actor had at start-up (a restarted actor has a new one)."""
        return {
            task.job_id: self.pids[self.actors.index(actor)]
            for actor, task in self.inflight.values()
        }

    def wait(self, timeout_s: float) -> list[tuple]:
        ray = _import_ray()
        if self.refused:
            events, self.refused = self.refused, []
            return events
        if not self.inflight:
            return []
        ready, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=timeout_s)
        events = []
        for ref in ready:
            actor, task = self.inflight.pop(ref)
            self.idle.append(actor)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                outcome = JobOutcome(
                    task.job_id,
                    "failed",
                    kind="worker-died",
                    reason=f"Ray worker died {self.retries + 1} time(s) "
                    f"on this job: {str(err).splitlines()[0]}",
                    attempt=task.attempt + self.retries,
                )
            except ray.exceptions.RayError as err:
                outcome = JobOutcome(
                    task.job_id,
                    "failed",
                    kind="exception",
                    transient=True,
                    reason=str(err).splitlines()[0],
                    attempt=task.attempt,
                )
            events.append(("finished", outcome))
        return events

    def close(self) -> None:
        ray = _import_ray()
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self.idle, self.inflight = [], [], {}
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

"""The Ray executor (vosfx.batch.cluster) on a private 2-CPU Ray bound to 127.0.0.1.

One Ray session for the whole module (starting one costs seconds)."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray executor needs `pip install vosfx[ray]`")

from test_batch import FACTORY, TESTS, decoded, make_batch, mtimes

from vosfx.batch import format_summary, run_batch
from vosfx.batch.cluster import RayExecutor, init_local_ray


@pytest.fixture(scope="module")
def local_ray():
    # workers inherit the environment of the cluster's start: the fakes must be importable
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS, old) if p)
    init_local_ray(2)
    try:
        yield
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _listening(pids: set[int]) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of sockets in LISTEN state owned
    by ``pids``."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addrs = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                addrs.append(cols[1].split(":")[0])
    return addrs


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc")
def test_local_ray_listens_on_loopback_only(local_ray):
    addrs = _listening(_descendants(os.getpid()) | {os.getpid()})
    assert addrs, "found no Ray listening sockets to check"
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    assert set(addrs) <= loopback, addrs


def test_ray_matches_local_and_resumes(tmp_path, config_home, local_ray):
    inline_dir, ray_dir = tmp_path / "inline", tmp_path / "ray"
    from batch_fakes import fake_engine

    ref = run_batch(
        make_batch(inline_dir, corrupt=("c",)), executor="inline", engine_factory=fake_engine
    )
    manifest = make_batch(ray_dir, corrupt=("c",))
    report = run_batch(manifest, executor=RayExecutor(engine_factory=FACTORY))
    assert report.executor == "ray" and report.workers == 2
    assert [(r.job_id, r.status, r.frames) for r in report.results] == [
        (r.job_id, r.status, r.frames) for r in ref.results
    ]
    assert "c.mp4" in report.failed[0].reason
    for name in "ab":
        np.testing.assert_array_equal(
            decoded(inline_dir / "out" / f"{name}.mkv"), decoded(ray_dir / "out" / f"{name}.mkv")
        )
    logs = ray_dir / ".vosfx-batch" / "batch.toml" / "logs"
    assert "done: 6 frames" in (logs / "a.log").read_text()  # sent back by the actor
    before = mtimes(ray_dir / "out")
    again = run_batch(manifest, executor=RayExecutor(engine_factory=FACTORY))
    assert [r.status for r in again.results] == ["skipped", "skipped", "failed"]
    assert mtimes(ray_dir / "out") == before


def test_killed_ray_worker_job_is_retried(tmp_path, config_home, local_ray):
    manifest = make_batch(tmp_path, names=("a", "b"), n=8)
    ex = RayExecutor(engine_factory="batch_fakes:slow_fake_engine", max_task_retries=1)
    box = {}
    runner = threading.Thread(target=lambda: box.update(report=run_batch(manifest, executor=ex)))
    runner.start()
    out = tmp_path / "out"
    deadline = time.monotonic() + 60
    victim = None
    while time.monotonic() < deadline and victim is None:
        running = ex.running()
        if running and any(".vosfx-tmp-" in p.name for p in out.iterdir()):
            victim = next(iter(running.values()))
        time.sleep(0.05)
    assert victim is not None, "no Ray worker started rendering in time"
    os.kill(victim, 9)
    runner.join(120)
    assert not runner.is_alive()
    report = box["report"]
    assert [r.status for r in report.results] == ["ok", "ok"]
    assert max(r.attempts for r in report.results) == 2
    assert all(str(victim) not in r.worker for r in report.results)
    logs = tmp_path / ".vosfx-batch" / "batch.toml" / "logs"
    assert any("Ray restarted it" in (logs / f"{n}.log").read_text() for n in "ab")
    assert not [p for p in out.iterdir() if ".vosfx-tmp-" in p.name]


def test_ray_workers_that_cannot_start_fail_the_jobs_once_with_their_error(
    tmp_path, config_home, local_ray
):
    """An actor whose constructor raises (an engine factory its node cannot import): the
    batch raised Ray's ActorDiedError with the remote traceback. Now, as with local workers,
    the first job says why, the others point at it, none is retried, and the executor's Ray
    session is left usable."""
    import json

    manifest = make_batch(tmp_path, names=("a", "b", "c"), n=3)
    report = run_batch(
        manifest, executor=RayExecutor(engine_factory="no_such_module_xyz:factory"), retry=2
    )
    assert [(r.status, r.attempts) for r in report.results] == [("failed", 1)] * 3
    summary = format_summary(report)
    assert summary.count("No module named 'no_such_module_xyz'") == 1, summary
    first = next(r for r in report.results if "no_such_module_xyz" in r.reason)
    assert first.reason.startswith("Ray workers cannot start: "), first.reason
    assert "Traceback" not in first.reason and "\n" not in first.reason
    for r in report.results:
        if r is not first:
            assert f"(see job {first.job_id})" in r.reason, r.reason
    state = json.loads((tmp_path / ".vosfx-batch/batch.toml/state.json").read_text())
    assert state["jobs"][first.job_id]["kind"] == "worker-start"
    again = run_batch(manifest, executor=RayExecutor(engine_factory=FACTORY))
    assert [r.status for r in again.results] == ["ok"] * 3


def test_a_ray_worker_that_cannot_start_is_dropped_with_a_warning(
    tmp_path, config_home, local_ray, caplog
):
    """One of two actors cannot start (its node lacks a package): the batch runs on the other
    and says which error the dropped one had."""
    import logging

    mark = Path(tempfile.gettempdir()) / f"vosfx-flaky-factory-{os.getuid()}"
    mark.unlink(missing_ok=True)
    manifest = make_batch(tmp_path, names=("a", "b"), n=3)
    ex = RayExecutor(engine_factory="ray_flaky_factory:factory")
    with caplog.at_level(logging.WARNING, logger="vosfx.batch.cluster"):
        report = run_batch(manifest, executor=ex)
    mark.unlink(missing_ok=True)
    assert [r.status for r in report.results] == ["ok", "ok"]
    assert report.workers == 1
    said = [r.getMessage() for r in caplog.records if "could not start" in r.getMessage()]
    want = (
        "1 of 2 Ray workers could not start: engine factory 'ray_flaky_factory:factory' "
        "cannot be imported (No module named 'a_package_this_node_lacks' (a stand-in))"
    )
    assert said == [want], said


def test_a_ray_cluster_that_cannot_be_joined_is_a_backend_error(tmp_path, config_home, monkeypatch):
    """`--ray auto` with no cluster (or one that refuses the connection): exit 9 naming the
    flag and what to do, not an internal error (exit 1) with Ray's traceback."""
    import json

    from click.testing import CliRunner

    from vosfx.cli import cli

    make_batch(tmp_path, names=("a",))

    def refuse(**_kw):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    res = CliRunner().invoke(
        cli, ["batch", str(tmp_path / "batch.toml"), "--ray", "auto", "--json-progress"]
    )
    assert res.exit_code == 9, res.output
    (event,) = [json.loads(x) for x in res.stdout.splitlines() if '"error"' in x]
    assert event["kind"] == "backend" and event["message"].startswith("--ray auto: no Ray")
    assert "give --ray local" in event["message"]


def test_a_head_address_nobody_answers_fails_at_once(tmp_path, config_home, monkeypatch):
    """`--ray 127.0.0.1:PORT` with nothing listening there: exit 9 within seconds naming the
    address and port, before Ray's own two-minute wait for a head that is not there."""
    import json
    import socket

    from click.testing import CliRunner

    from vosfx.cli import cli

    make_batch(tmp_path, names=("a",))
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def not_reached(**_kw):
        raise AssertionError("ray.init must not be called: the check comes first")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", not_reached)
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        start = time.monotonic()
        res = CliRunner().invoke(
            cli, ["batch", str(tmp_path / "batch.toml"), "--ray", address, "--json-progress"]
        )
        assert time.monotonic() - start < 10
        assert res.exit_code == 9, res.output
        (event,) = [json.loads(x) for x in res.stdout.splitlines() if '"error"' in x]
        assert event["message"].startswith(
            f"--ray {address}: nothing answers at 127.0.0.1 port {port} ("
        ), event["message"]


def test_the_head_check_reads_the_address_forms_ray_takes():
    from vosfx.batch.cluster import head_endpoint

    assert head_endpoint("head:6379") == ("head", 6379)
    assert head_endpoint("ray://head.example:10001") == ("head.example", 10001)
    assert head_endpoint("[::1]:6379") == ("::1", 6379)
    assert head_endpoint("auto") is None
    assert head_endpoint("head") is None  # Ray's default port: left to Ray
    assert head_endpoint("anyscale://x") is None


def test_a_silent_head_times_out_in_the_check(monkeypatch):
    """A host that swallows the connection (a firewall's drop) is said after the check's
    timeout, as 'timed out'."""
    import socket

    from vosfx.batch import cluster
    from vosfx.errors import BackendError

    def silent(endpoint, timeout):
        assert endpoint == ("10.255.255.1", 6379) and timeout == 0.2
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    with pytest.raises(BackendError, match=r"port 6379 \(timed out\)"):
        cluster.check_reachable("10.255.255.1:6379", timeout=0.2)

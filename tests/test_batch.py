"""The batch coordinator, local executors and `vosfx batch` (vosfx.batch, vosfx.batch.local,
vosfx.batch.worker, vosfx.cli.batch)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from batch_fakes import DELAY_ENV, clip_with_mask, fake_engine
from click.testing import CliRunner

from vosfx.batch import format_summary, run_batch
from vosfx.batch.local import LocalExecutor, worker_envs
from vosfx.cli import cli
from vosfx.errors import BatchError

TESTS = str(Path(__file__).resolve().parent)
FACTORY = "batch_fakes:fake_engine"


@pytest.fixture
def tests_on_path(monkeypatch):
    """Spawned workers import the fake engine by name: they need tests/ on their path."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH", "")) if p)
    )


def make_batch(folder: Path, names=("a", "b", "c"), n: int = 6, corrupt=()) -> Path:
    """Clips + masks + a TOML manifest writing ffv1 mattes to folder/out. Names in
    ``corrupt`` get a file of garbage bytes instead of a clip."""
    for name in names:
        clip_with_mask(folder, name, n=n)
        if name in corrupt:
            (folder / f"{name}.mp4").write_bytes(b"\x00garbage, not a video" * 50)
    (folder / "out").mkdir(exist_ok=True)
    rows = "".join(f'[[jobs]]\ninput = "{n_}.mp4"\nmask = "{n_}.mask.png"\n' for n_ in names)
    manifest = folder / "batch.toml"
    manifest.write_text('[defaults]\noutput = "out/{stem}.mkv"\npresets = ["matte-ffv1"]\n' + rows)
    return manifest


def test_an_ok_jobs_warnings_are_in_the_summary_and_its_result(tmp_path, config_home):
    """What a run said the user must know (here how the model runs) is each job's: in its
    log, its result (the JSON summary's ``warnings``) and the table's reason column."""
    from batch_fakes import SlowFakeEngine

    said = "--device cuda: ONNX Runtime has no CUDAExecutionProvider in this install"

    def warned_engine(model_config):
        engine = SlowFakeEngine(model_id=f"fake:{model_config.name}")
        engine.runtime_warnings.append(said)
        return engine

    manifest = make_batch(tmp_path, names=("a", "b"))
    report = run_batch(manifest, executor="inline", engine_factory=warned_engine)
    assert [r.status for r in report.results] == ["ok", "ok"]
    assert all(r.warnings == (said,) for r in report.results)
    assert report.results[0].to_dict()["warnings"] == [said]
    rows = format_summary(report).splitlines()
    assert [row.split("  ")[0] for row in rows[2:4]] == ["a", "b"]
    assert all(row.endswith(f"warning: {said}") for row in rows[2:4]), rows
    logs = tmp_path / ".vosfx-batch" / "batch.toml" / "logs"
    assert f"warning: {said}" in (logs / "b.log").read_text()  # the reused engine's too


def decoded(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray() for f in c.decode(video=0)])


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_a_jobs_missing_output_folders_are_made(tmp_path, config_home):
    """A template naming folders nobody made (one per clip here) renders into them; a folder
    that cannot be made fails that job alone, naming it."""
    for name in ("a", "b"):
        clip_with_mask(tmp_path, name, n=3)
    (tmp_path / "blocked").write_text("a file where a folder would go")
    manifest = tmp_path / "batch.toml"
    manifest.write_text(
        '[defaults]\npresets = ["matte-ffv1"]\n'
        '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\noutput = "mattes/a/a.mkv"\n'
        '[[jobs]]\ninput = "b.mp4"\nmask = "b.mask.png"\noutput = "blocked/b/b.mkv"\n'
    )
    report = run_batch(manifest, executor="inline", engine_factory=fake_engine, retry=2)
    ok, failed = report.results
    assert ok.status == "ok", ok.reason
    assert (tmp_path / "mattes" / "a" / "a.mkv").is_file()
    assert (tmp_path / "mattes" / "a" / "a.mkv.json").is_file()
    assert failed.status == "failed" and failed.attempts == 1  # not retried: it would fail again
    # the file in the way named (it said "output folder blocked/b cannot be made (for ...):
    # Not a directory")
    said = f"output folder {tmp_path / 'blocked'} is a file, not a folder (for "
    assert failed.reason.startswith(said), failed.reason
    log = "\n".join(p.read_text() for p in (tmp_path / ".vosfx-batch").rglob("*.log"))
    assert f"made the output folder {tmp_path / 'mattes'}" in log
    assert f"made the output folder {tmp_path / 'mattes' / 'a'}" in log


def test_a_per_object_templates_folders_are_made_once_the_objects_are_known(tmp_path, config_home):
    """``{obj}`` in a folder of the template (one folder per object): the object ids come
    from the prompts, so the pipeline makes those folders, and the job's log says so."""
    clip_with_mask(tmp_path, "a", n=3)
    manifest = tmp_path / "batch.toml"
    manifest.write_text(
        '[defaults]\npresets = ["matte-ffv1"]\n'
        '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\noutput = "out/obj{obj}/a.mkv"\n'
        'overrides = {output = {objects = "each"}}\n'
    )
    report = run_batch(manifest, executor="inline", engine_factory=fake_engine)
    (job,) = report.results
    assert job.status == "ok", job.reason
    assert job.outputs == (str(tmp_path / "out" / "obj1" / "a.mkv"),)
    assert decoded(job.outputs[0]).shape[0] == 3
    log = "\n".join(p.read_text() for p in (tmp_path / ".vosfx-batch").rglob("*.log"))
    assert f"made the output folder {tmp_path / 'out'}" in log
    assert f"made the output folder {tmp_path / 'out' / 'obj1'}" in log
    assert not (tmp_path / "out" / "obj{obj}").exists()


@pytest.mark.parametrize("output", ["out/obj{obj}/a.mkv", "out/a.mkv"])
def test_a_per_object_output_deleted_is_redone_and_the_job_recovers(tmp_path, config_home, output):
    """One object's file of a per-object output removed: the rerun redoes the job, replacing
    the other objects' files the batch made (it refused them as "already exists", and as the
    failure recorded no outputs, every later run failed the same way)."""
    import numpy as np
    from PIL import Image

    clip_with_mask(tmp_path, "a", n=3)
    labels = np.zeros((48, 64), np.uint8)
    labels[4:14, 4:20], labels[30:44, 36:60] = 1, 2
    img = Image.fromarray(labels, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    img.save(tmp_path / "a.mask.png")
    manifest = tmp_path / "batch.toml"
    manifest.write_text(
        '[defaults]\npresets = ["matte-ffv1"]\n'
        f'[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\noutput = "{output}"\n'
        'overrides = {output = {objects = "each"}}\n'
    )
    (tmp_path / "out").mkdir()
    (job,) = run_batch(manifest, executor="inline", engine_factory=fake_engine).results
    assert job.status == "ok" and len(job.outputs) == 2, job.reason
    Path(job.outputs[1]).unlink()
    (again,) = run_batch(manifest, executor="inline", engine_factory=fake_engine).results
    assert again.status == "ok", again.reason
    assert sorted(again.outputs) == sorted(job.outputs) and Path(job.outputs[1]).is_file()
    (third,) = run_batch(manifest, executor="inline", engine_factory=fake_engine).results
    assert third.status == "skipped"


def test_a_relative_manifest_path_gives_the_same_jobs_from_any_folder(
    tmp_path, config_home, monkeypatch
):
    """The jobs' paths (and so their hashes and the state) were relative to the folder the
    batch ran from when the manifest was typed relative: run again from elsewhere, every job
    failed "already exists" (or re-rendered, in folder mode)."""
    manifest = make_batch(tmp_path / "proj", names=("a", "b"))
    monkeypatch.chdir(tmp_path / "proj")
    first = run_batch("batch.toml", executor="inline", engine_factory=fake_engine)
    assert [r.status for r in first.results] == ["ok", "ok"]
    monkeypatch.chdir(tmp_path)
    for typed in ("proj/batch.toml", str(manifest)):
        report = run_batch(typed, executor="inline", engine_factory=fake_engine)
        assert [r.status for r in report.results] == ["skipped", "skipped"], typed
    assert first.results[0].outputs == (str(tmp_path / "proj" / "out" / "a.mkv"),)


def test_corrupt_clip_fails_alone_then_resume_skips_done_jobs(tmp_path, config_home):
    manifest = make_batch(tmp_path, corrupt=("b",))
    events = []
    report = run_batch(
        manifest, executor="inline", engine_factory=fake_engine, on_progress=events.append
    )
    status = {r.job_id: r.status for r in report.results}
    assert status == {"a": "ok", "b": "failed", "c": "ok"}
    failed = report.failed[0]
    assert "b.mp4" in failed.reason and failed.attempts == 1
    assert report.frames == 12
    with pytest.raises(BatchError, match="1 of 3 job"):
        report.raise_for_failures()
    table = format_summary(report)
    assert "b  " in table and "failed" in table and "2 ok, 0 skipped, 1 failed" in table
    logs = tmp_path / ".vosfx-batch" / "batch.toml" / "logs"
    assert "FAILED (input)" in (logs / "b.log").read_text()
    assert "done: 6 frames" in (logs / "a.log").read_text()
    assert [e.event for e in events][:2] == ["plan", "start"] and events[-1].event == "done"
    assert [e.jobs_done for e in events if e.event == "job"] == [1, 2, 3]
    side = json.loads((tmp_path / "out" / "a.mkv.json").read_text())
    assert side["batch"]["job_id"] == "a" and len(side["batch"]["job_hash"]) == 64

    before = mtimes(tmp_path / "out")
    clip_with_mask(tmp_path, "b", n=6)  # the clip is fixed
    again = run_batch(manifest, executor="inline", engine_factory=fake_engine)
    assert {r.job_id: r.status for r in again.results} == {
        "a": "skipped",
        "b": "ok",
        "c": "skipped",
    }
    after = mtimes(tmp_path / "out")
    assert {k: after[k] for k in before} == before  # nothing finished was rewritten
    assert "b.mkv" in after


def test_numbered_plate_job_keeps_its_numbers_and_logs_its_gap(tmp_path, config_home):
    """A batch job on a plate shot.1001.png ... missing shot.1003.png: the matte images carry
    the plate's numbers (the one loop's writers) and the job's log says the gap."""
    from media import make_sequence

    clip_with_mask(tmp_path, "a", n=1)  # its mask fits the plate (64x48)
    plate = make_sequence(tmp_path / "plate", n=4, name="shot.{:04d}", first=1001)
    (plate / "shot.1003.png").unlink()
    manifest = tmp_path / "batch.toml"
    manifest.write_text(
        '[[jobs]]\ninput = "plate/shot.%04d.png"\nmask = "a.mask.png"\n'
        'output = "out_matte"\npresets = ["png16"]\n'
    )
    report = run_batch(manifest, executor="inline", engine_factory=fake_engine)
    assert [r.status for r in report.results] == ["ok"], report.results
    names = sorted(p.name for p in (tmp_path / "out_matte").iterdir())
    assert names == ["out_matte.1001.png", "out_matte.1002.png", "out_matte.1004.png"]
    (log,) = (tmp_path / ".vosfx-batch" / "batch.toml" / "logs").iterdir()
    assert "warning: shot.%04d.png: 1 frame number missing" in log.read_text()


def test_changed_config_reruns_only_that_job(tmp_path, config_home):
    manifest = make_batch(tmp_path, names=("a", "b"))
    run_batch(manifest, executor="inline", engine_factory=fake_engine)
    text = manifest.read_text().replace('mask = "b.mask.png"\n', 'mask = "b.mask.png"\nend = 3\n')
    manifest.write_text(text)
    report = run_batch(manifest, executor="inline", engine_factory=fake_engine)
    assert [(r.job_id, r.status, r.frames) for r in report.results] == [
        ("a", "skipped", 6),
        ("b", "ok", 3),
    ]
    assert len(decoded(tmp_path / "out" / "b.mkv")) == 3


def test_existing_output_not_made_by_the_batch_is_kept(tmp_path, config_home):
    manifest = make_batch(tmp_path, names=("a",))
    (tmp_path / "out" / "a.mkv").write_bytes(b"precious")
    report = run_batch(manifest, executor="inline", engine_factory=fake_engine, retry=2)
    reason = report.results[0].reason
    assert report.results[0].status == "failed" and "already exists" in reason
    # the remedy in the manifest's words: vosfx batch has no --overwrite flag
    assert "overwrite = true" in reason and "--overwrite" not in reason, reason
    assert (tmp_path / "out" / "a.mkv").read_bytes() == b"precious"
    # a new batch where the sidecar's name is taken instead: the same words
    (tmp_path / "second").mkdir()
    other = make_batch(tmp_path / "second", names=("a",))
    (tmp_path / "second" / "out" / "a.mkv.json").write_text("notes")
    reason = run_batch(other, executor="inline", engine_factory=fake_engine).results[0].reason
    assert "a.mkv.json" in reason and "overwrite = true" in reason, reason
    assert "sidecar = false" in reason and "--no-sidecar" not in reason, reason
    assert (tmp_path / "second" / "out" / "a.mkv.json").read_text() == "notes"


class _Flaky:
    """Engine factory whose first ``fails`` engines crash on start (a transient error)."""

    def __init__(self, fails: int) -> None:
        self.fails = fails

    def __call__(self, model_config):
        engine = fake_engine(model_config)
        if self.fails > 0:
            self.fails -= 1

            def boom(*args, **kwargs):
                time.sleep(0.3)  # an attempt's time, which the job's seconds must count
                raise RuntimeError("CUDA error: an illegal memory access (simulated)")

            engine.start = boom
        return engine


@pytest.mark.parametrize("retry, status, attempts", [(0, "failed", 1), (1, "ok", 2)])
def test_retry_transient_failures(tmp_path, config_home, retry, status, attempts):
    manifest = make_batch(tmp_path, names=("a",))
    from vosfx.batch.local import InlineExecutor

    ex = InlineExecutor(_Flaky(1))  # a worker drops its engine after an unexpected error
    report = run_batch(manifest, executor=ex, retry=retry)
    r = report.results[0]
    assert (r.status, r.attempts) == (status, attempts)
    assert r.elapsed_s >= 0.3  # every attempt's seconds (a retry said its last one alone)
    if status == "failed":
        assert "RuntimeError: CUDA error" in r.reason


def test_worker_envs_split_devices_and_threads():
    envs = worker_envs(None, gpus=["0", "1"])
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1"]
    envs = worker_envs(2, gpus=[])
    assert len(envs) == 2 and envs[0]["CUDA_VISIBLE_DEVICES"] == ""
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    # torch and OpenBLAS read the first three; vosfx.cpus hands OMP_NUM_THREADS to ONNX
    # Runtime, OpenVINO, FFmpeg and the refinement bands; OpenCV reads its own
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert envs[1][name] == share
    assert envs[1]["OPENCV_FOR_THREADS_NUM"] == share
    assert worker_envs(3, gpus=[], threads=5)[2]["OMP_NUM_THREADS"] == "5"
    # one CPU worker keeps every pool's own default (ONNX Runtime counts physical cores)
    assert worker_envs(None, gpus=[]) == [{"CUDA_VISIBLE_DEVICES": ""}]
    assert worker_envs(1, gpus=[], threads=3)[0]["OMP_NUM_THREADS"] == "3"
    with pytest.raises(BatchError):
        worker_envs(0, gpus=[])


def test_local_workers_match_inline_and_survive_a_killed_worker(
    tmp_path, config_home, tests_on_path, monkeypatch
):
    inline_dir, local_dir = tmp_path / "inline", tmp_path / "local"
    run_batch(make_batch(inline_dir), executor="inline", engine_factory=fake_engine)
    monkeypatch.setenv(DELAY_ENV, "0.15")  # ~1 s a job: time to kill a worker mid-job
    ex = LocalExecutor(2, engine_factory=FACTORY, gpus=[])
    box = {}
    runner = threading.Thread(
        target=lambda: box.update(report=run_batch(make_batch(local_dir), executor=ex, retry=1))
    )
    runner.start()
    victim = _wait_for_running_worker(ex, local_dir / "out")
    os.kill(victim, signal.SIGKILL)
    runner.join(120)
    assert not runner.is_alive()
    report = box["report"]
    assert [r.status for r in report.results] == ["ok", "ok", "ok"]
    assert max(r.attempts for r in report.results) == 2
    assert any(
        "died mid-job" in (local_dir / ".vosfx-batch/batch.toml/logs" / f"{n}.log").read_text()
        for n in "abc"
    )
    assert len({r.worker for r in report.results}) >= 2
    for name in "abc":
        a, b = (
            decoded(inline_dir / "out" / f"{name}.mkv"),
            decoded(local_dir / "out" / f"{name}.mkv"),
        )
        np.testing.assert_array_equal(a, b)
    assert not [p for p in (local_dir / "out").iterdir() if ".vosfx-tmp-" in p.name]


def _wait_for_running_worker(ex: LocalExecutor, out: Path, timeout_s: float = 60) -> int:
    """The pid of a worker that is rendering (a temp output exists and a task is assigned)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = [w.proc.pid for w in list(ex.pool.values()) if w.task is not None]
        if busy and out.is_dir() and any(".vosfx-tmp-" in p.name for p in out.iterdir()):
            return busy[0]
        time.sleep(0.05)
    raise AssertionError("no worker started rendering in time")


def test_cli_summary_and_exit_code(tmp_path, config_home):
    manifest = make_batch(tmp_path, names=("a", "b"), corrupt=("b",))
    res = CliRunner().invoke(
        cli, ["batch", str(manifest), "--executor", "inline", "--engine-factory", FACTORY]
    )
    assert res.exit_code == BatchError.exit_code == 10, res.output
    assert "1 ok, 0 skipped, 1 failed" in res.output
    res = CliRunner().invoke(
        cli,
        [
            "batch",
            str(manifest),
            "--executor",
            "inline",
            "--engine-factory",
            FACTORY,
            "--json-progress",
        ],
    )
    lines = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    final = lines[-1]
    assert final["event"] == "batch_result" and final["skipped"] == 1 and final["failed"] == 1


def test_cli_json_progress_says_a_failure_before_the_batch_as_an_error_event(tmp_path, config_home):
    """A batch that cannot start (its manifest missing or invalid, an unknown option) ends
    with an error event, as `vosfx matte` does; a batch that ran ends with its batch_result
    (above). An invalid manifest printed nothing on stdout (taken for a batch that ran)."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[[jobs]]\ninput = "nope.mp4"\nmask = "m.png"\noutput = "o.mov"\n')
    res = CliRunner().invoke(cli, ["batch", str(bad), "--json-progress"])
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["error"] and res.exit_code == 10, res.output
    assert events[0]["kind"] == "batch" and "nope.mp4 does not exist" in events[0]["message"]
    for extra in ((), ("--no-such-flag",)):
        res = CliRunner().invoke(
            cli, ["batch", str(tmp_path / "missing.toml"), "--json-progress", *extra]
        )
        events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
        assert len(events) == 1 and events[0]["event"] == "error", res.output
        assert events[0]["exit_code"] == res.exit_code != 0


def test_cli_folder_mode(tmp_path, config_home, monkeypatch):
    """-o is relative to where it was typed (as every path in the shell), not to the folder;
    an output written into the folder is no clip to matte when the batch runs again."""
    shots = tmp_path / "shots"
    for name in ("x", "y"):
        clip_with_mask(shots, name, n=3)
    monkeypatch.chdir(tmp_path)
    args = ["batch", "shots", "-p", "matte-ffv1", "--executor", "inline"]
    args += ["--engine-factory", FACTORY]
    res = CliRunner().invoke(cli, [*args, "-o", "mattes/{stem}.mkv"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "mattes").iterdir()) == [
        "x.mkv",
        "x.mkv.json",
        "y.mkv",
        "y.mkv.json",
    ]
    for _ in range(2):  # into the folder itself, then again: the first run's outputs are left
        res = CliRunner().invoke(cli, [*args, "-o", "shots/{stem}_matte.mkv"])
        assert res.exit_code == 0, res.output
    assert (shots / "x_matte.mkv").is_file() and (shots / "y_matte.mkv.json").is_file()
    assert not (shots / "x_matte_matte.mkv").exists()
    assert "2 job(s): 0 to run, 2 already done" in res.output, res.output


def test_cli_model_flags_set_every_jobs_model_but_a_rows_own(tmp_path, config_home, monkeypatch):
    """`vosfx matte`'s model flags on a batch: every job's [model] (a relative --checkpoint
    made absolute against the folder it was typed in, not the manifest's), except a key a
    row's own overrides set."""
    for name in ("a", "b"):
        clip_with_mask(tmp_path, name, n=3)
    (tmp_path / "out").mkdir()
    manifest = tmp_path / "batch.toml"
    manifest.write_text(
        '[defaults]\noutput = "out/{stem}.mkv"\npresets = ["matte-ffv1"]\n'
        '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\n'
        '[[jobs]]\ninput = "b.mp4"\nmask = "b.mask.png"\noverrides = {model = {image_size = 256}}\n'
    )
    typed_in = tmp_path / "elsewhere"
    typed_in.mkdir()
    (typed_in / "mine.pt").write_bytes(b"the fake engine never reads it")
    monkeypatch.chdir(typed_in)
    args = ["batch", str(manifest), "--executor", "inline", "--engine-factory", FACTORY]
    res = CliRunner().invoke(cli, [*args, "--checkpoint", "mine.pt", "--image-size", "512"])
    assert res.exit_code == 0, res.output
    models = {
        n: json.loads((tmp_path / "out" / f"{n}.mkv.json").read_text())["job"]["config"]["model"]
        for n in "ab"
    }
    assert {m["checkpoint"] for m in models.values()} == {str(typed_in / "mine.pt")}
    assert (models["a"]["image_size"], models["b"]["image_size"]) == (512, 256)
    res = CliRunner().invoke(cli, [*args, "--image-size", "100"])
    assert res.exit_code == 2 and "--image-size" in res.output, res.output


def test_killed_batch_resumes_without_redoing_or_leaving_partials(tmp_path, config_home):
    manifest = make_batch(tmp_path, n=10)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),
        **{DELAY_ENV: "0.1"},
    )
    cmd = [
        sys.executable,
        "-m",
        "vosfx",
        "batch",
        str(manifest),
        "--workers",
        "1",
        "--engine-factory",
        FACTORY,
    ]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    out = tmp_path / "out"
    state_file = tmp_path / ".vosfx-batch" / "batch.toml" / "state.json"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # job a finished and job b rendering
            if (out / "a.mkv.json").exists() and any(
                ".b.mkv.vosfx-tmp-" in p.name for p in out.iterdir()
            ):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the batch never got to job b")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and its worker, like a power cut
        proc.wait(30)
    assert not (out / "b.mkv").exists() and not (out / "c.mkv").exists()
    state = json.loads(state_file.read_text())["jobs"]
    assert state["a"]["status"] == "ok" and state["b"]["status"] == "running"
    a_mtime = (out / "a.mkv").stat().st_mtime_ns
    env.pop(DELAY_ENV)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "a.mkv").stat().st_mtime_ns == a_mtime
    rows = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()[2:5]}
    assert rows == {"a": "skipped", "b": "ok", "c": "ok"}
    assert sorted(p.name for p in out.iterdir()) == [
        "a.mkv",
        "a.mkv.json",
        "b.mkv",
        "b.mkv.json",
        "c.mkv",
        "c.mkv.json",
    ]
    assert "removed a partial file" in (state_file.parent / "logs" / "b.log").read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_cancel_a_batch_as_ctrl_c_does(tmp_path, config_home, sig):
    """Sent to the batch alone (a scheduler stopping it, the terminal closed): exit 130, a
    cancelled event, no half-written output; the process died of the signal before."""
    manifest = make_batch(tmp_path, n=10)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),
        **{DELAY_ENV: "0.1"},
    )
    cmd = [sys.executable, "-m", "vosfx", "batch", str(manifest), "--workers", "1"]
    cmd += ["--engine-factory", FACTORY, "--json-progress"]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    out = tmp_path / "out"
    try:
        deadline = time.monotonic() + 90
        while not any(".vosfx-tmp-" in p.name for p in out.iterdir()):
            assert time.monotonic() < deadline, "the batch never started a job"
            time.sleep(0.05)
        proc.send_signal(getattr(signal, sig))
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stdout
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "cancelled", events[-1]
    deadline = time.monotonic() + 15  # the worker's own clean-up, after the coordinator's
    while [p.name for p in out.iterdir() if ".vosfx-tmp-" in p.name]:
        assert time.monotonic() < deadline, sorted(p.name for p in out.iterdir())
        time.sleep(0.1)
    assert not [p.name for p in out.iterdir() if not p.name.startswith("a.mkv")], "partial"


def test_a_worker_orphaned_by_a_killed_batch_logs_a_cancel_not_a_traceback(
    tmp_path, config_home, monkeypatch
):
    """The coordinator killed (kill -9): the worker's next progress message finds the pipe
    closed, often before its parent watch (every 0.5 s) does. That is a cancel: the job's
    log said "FAILED with an unexpected error" with a BrokenPipeError traceback."""
    from vosfx.batch.manifest import load_manifest
    from vosfx.batch.process import worker_main
    from vosfx.batch.worker import Task

    monkeypatch.setenv(DELAY_ENV, "0.05")
    (bj,) = load_manifest(make_batch(tmp_path, names=("a",), n=40)).jobs
    log = tmp_path / "a.log"

    class ClosedAfterStart:  # the coordinator's end of the pipe, gone once the job started
        def __init__(self):
            self.tasks = [Task("a", bj.job, "hash", 1, str(log)), None]

        def recv(self):
            return self.tasks.pop(0)

        def send(self, message):
            if message[0] not in ("ready", "loading", "loaded", "started"):
                raise BrokenPipeError(32, "Broken pipe")

    before = signal.getsignal(signal.SIGTERM)  # worker_main sets its own
    try:
        worker_main(ClosedAfterStart(), fake_engine, {}, os.getppid())
    finally:
        signal.signal(signal.SIGTERM, before)
    text = log.read_text()
    assert "BrokenPipeError" not in text and "unexpected error" not in text, text
    assert "cancel" in text.lower(), text
    assert not (tmp_path / "out" / "a.mkv").exists()
    assert not [p.name for p in (tmp_path / "out").iterdir() if ".vosfx-tmp-" in p.name]


def test_a_second_run_on_the_same_state_is_refused_while_the_first_runs(tmp_path, config_home):
    """Two runs of one manifest at once (a double-clicked launcher, an overlapping cron job)
    would render every job twice, delete each other's temporary files and overwrite each
    other's state: the second is refused before it touches anything."""
    manifest = make_batch(tmp_path, names=("a",), n=3)
    second: list[BaseException | None] = []

    def start_another(ev):
        if ev.event == "start":
            try:
                run_batch(manifest, executor="inline", engine_factory=fake_engine)
            except BatchError as err:
                second.append(err)
            else:
                second.append(None)

    report = run_batch(
        manifest, executor="inline", engine_factory=fake_engine, on_progress=start_another
    )
    assert [r.status for r in report.results] == ["ok"]
    assert second and second[0] is not None, "the second run was not refused"
    message = str(second[0])
    assert "another vosfx batch" in message and ".vosfx-batch" in message
    # once the first has finished, a rerun is fine (and skips the finished job)
    again = run_batch(manifest, executor="inline", engine_factory=fake_engine)
    assert [r.status for r in again.results] == ["skipped"]


def test_a_state_file_that_cannot_be_saved_stops_the_batch_with_one_message(
    tmp_path, config_home, monkeypatch
):
    """A full disk (or a state folder gone read-only) while the batch records a finished job:
    one message naming the state file and the reason, exit code 10, no traceback."""
    import errno

    from vosfx.batch import state as batch_state

    manifest = make_batch(tmp_path, names=("a", "b"), n=3)
    real = batch_state.atomic_write_json
    calls = []

    def full_disk(path, *args, **kwargs):
        if Path(path).name == "state.json":
            calls.append(path)
        if len(calls) >= 2:  # the first job's "running" is saved, its result is not
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(batch_state, "atomic_write_json", full_disk)
    res = CliRunner().invoke(
        cli, ["batch", str(manifest), "--executor", "inline", "--engine-factory", FACTORY]
    )
    assert res.exit_code == 10, (res.output, res.exception)
    assert "Traceback" not in res.output and not isinstance(res.exception, OSError)
    assert "state.json" in res.stderr and "No space left on device" in res.stderr


def test_a_log_that_cannot_be_written_is_a_batch_error(tmp_path):
    from vosfx.batch.worker import append_log

    (tmp_path / "a.log").mkdir()  # stands in for a full disk or a read-only folder
    with pytest.raises(BatchError, match=r"batch log .*a\.log cannot be written"):
        append_log(tmp_path / "a.log", "done\n")


def test_a_job_log_that_cannot_be_opened_fails_that_job_naming_the_file(tmp_path, config_home):
    """The worker opens the job's log before the job starts: a log it cannot write (here a
    folder in its place; a read-only or full state folder) fails that job once, as an output
    error naming the file. It used to escape run_one: a local worker died with it (the job
    reported as worker-died and retried), an inline batch stopped with a traceback."""
    manifest = make_batch(tmp_path, names=("a", "b"), n=3)
    (tmp_path / ".vosfx-batch/batch.toml/logs/a.log").mkdir(parents=True)
    report = run_batch(manifest, executor="inline", engine_factory=fake_engine, retry=2)
    a, b = report.results
    assert (a.status, a.attempts, b.status) == ("failed", 1, "ok")
    assert "logs/a.log cannot be written" in a.reason and "Is a directory" in a.reason, a.reason
    assert not (tmp_path / "out/a.mkv").exists()


def _local(manifest, factory, workers=1, retry=2):
    return run_batch(
        manifest, executor=LocalExecutor(workers, engine_factory=factory, gpus=[]), retry=retry
    )


def test_a_worker_that_cannot_start_fails_the_batch_once_with_its_error(
    tmp_path, config_home, tests_on_path
):
    """A bad engine factory (an import error in the worker): every job used to say only
    "worker process N died mid-job (exit 1)", each after --retry attempts, the cause left on
    the workers' stderr. The cause is in the first job's reason and once in the summary, and
    no job is retried."""
    manifest = make_batch(tmp_path, names=("a", "b", "c"), n=3)
    report = _local(manifest, "no_such_module_xyz:factory", workers=2)
    assert [(r.status, r.attempts) for r in report.results] == [("failed", 1)] * 3
    summary = format_summary(report)
    assert summary.count("No module named 'no_such_module_xyz'") == 1, summary
    first = next(r for r in report.results if "no_such_module_xyz" in r.reason)
    assert first.reason.startswith("workers cannot start: engine factory"), first.reason
    for r in report.results:
        if r is not first:
            assert f"(see job {first.job_id})" in r.reason, r.reason
    state = json.loads((tmp_path / ".vosfx-batch/batch.toml/state.json").read_text())
    assert state["jobs"][first.job_id]["kind"] == "worker-start"


def test_a_model_that_kills_its_worker_while_loading_is_reported_with_its_output(
    tmp_path, config_home, tests_on_path
):
    manifest = make_batch(tmp_path, names=("a", "b"), n=3)
    report = _local(manifest, "batch_fakes:crash_loading_engine")
    a, b = report.results
    assert (a.status, a.attempts, b.status, b.attempts) == ("failed", 1, "failed", 1)
    assert "died while loading the model sam2.1-tiny (exit 3)" in a.reason, a.reason
    assert "the checkpoint's weights are corrupt" in a.reason.splitlines()[0], a.reason
    assert "(see job a)" in b.reason, b.reason
    log = (tmp_path / ".vosfx-batch/batch.toml/logs/a.log").read_text()
    assert "the checkpoint's weights are corrupt" in log


def test_a_worker_that_dies_mid_job_says_what_it_printed(tmp_path, config_home, tests_on_path):
    manifest = make_batch(tmp_path, names=("a",), n=3)
    (a,) = _local(manifest, "batch_fakes:dying_engine", retry=1).results
    assert (a.status, a.attempts) == ("failed", 2)  # a dead worker is still worth a retry
    first = a.reason.splitlines()[0]
    assert "died mid-job (exit 4): fatal: out of device memory in step" in first, a.reason


@pytest.mark.parametrize(
    "args, flag", [(["--workers", "0"], "--workers"), (["--retry", "-1"], "--retry")]
)
def test_cli_bad_worker_and_retry_counts_name_their_flag(tmp_path, config_home, args, flag):
    clip_with_mask(tmp_path, "x", n=3)
    res = CliRunner().invoke(
        cli, ["batch", str(tmp_path), "-o", str(tmp_path / "{stem}.mkv"), *args]
    )
    assert res.exit_code == 2 and flag in res.output.splitlines()[-1], res.output
    assert not (tmp_path / ".vosfx-batch").exists()


def test_a_cancelled_batch_removes_what_its_killed_workers_left(tmp_path, config_home):
    """An executor whose workers die without cleaning up (a Ray actor is killed with
    ``ray.kill``): when the batch is cancelled mid-job, the coordinator removes the running
    jobs' temporary files itself once the executor is closed; they stayed until a rerun."""

    class KilledMidJob:
        name, workers = "killed", 1

        def __init__(self):
            self.task = None

        def start(self):
            pass

        def free_slots(self):
            return 0 if self.task else 1

        def submit(self, task):
            self.task = task
            out = Path(task.job.output)
            (out.parent / f".{out.name}.vosfx-tmp-0000-999999-deadbeef").write_bytes(b"half")

        def wait(self, timeout_s):
            raise KeyboardInterrupt  # Ctrl-C while the job renders

        def close(self):
            pass

    manifest = make_batch(tmp_path, names=("a",))
    with pytest.raises(KeyboardInterrupt):
        run_batch(manifest, executor=KilledMidJob())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_a_factory_that_cannot_reach_a_worker_process_is_said_so(tmp_path, config_home):
    """A lambda as engine_factory (Python API, local worker processes): a BatchError saying
    what to give instead, before any worker starts, not a raw PicklingError."""
    from vosfx.errors import BatchError

    manifest = make_batch(tmp_path, names=("a",))
    with pytest.raises(BatchError, match=r"cannot be sent to a worker process .*module:function"):
        run_batch(manifest, workers=1, engine_factory=lambda cfg: fake_engine(cfg))
    report = run_batch(manifest, executor="inline", engine_factory=lambda cfg: fake_engine(cfg))
    assert [r.status for r in report.results] == ["ok"]


_ROW = '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\noutput = "o.mkv"\npresets = "matte-ffv1"\n'


def _inline(*args):
    return CliRunner().invoke(
        cli, ["batch", *map(str, args), "--executor", "inline", "--engine-factory", FACTORY]
    )


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("l.csv", b"input,mask\na\xff.mp4,a.mask.png\n", "l.csv: cannot be read ('utf-8' codec"),
        ("d.toml", "defaults = 3\n" + _ROW, "[defaults] must be a table, found 3"),
        ("e.toml", '[defaults]\npresets = ["matte-ffv1"]\n', "e.toml: no jobs found"),
        ("c.csv", "input,mask\na.mp4,a.mask.png,extra\n", "c.csv line 2: more cells than header"),
        ("o.csv", "input,mask,output,overrides\na.mp4,a.mask.png,o.mov,[1]\n", "found [1]"),
        ("i.toml", "[[jobs]]\ninput = 3\n", "jobs[0]: 'input' must be a path string, found 3"),
        (
            "x.toml",
            _ROW.replace("s]]\n", 's]]\nid = "x"\n') * 2,
            "'x' is also used at x.toml jobs[0]",
        ),
        (
            "p.jsonl",
            (
                '{"input": "a.mp4", "output": "o.mkv", "preset": "matte-ffv1", "prompts": '
                '[{"points": [[9, 9]], "prior": "nope.png"}]}\n'
            ),
            "nope.png does not exist",
        ),
    ],
)
def test_cli_a_manifest_that_cannot_be_used_exits_10_before_any_job(
    tmp_path, config_home, name, text, said
):
    clip_with_mask(tmp_path, "a", n=3)
    manifest = tmp_path / name
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode())
    res = _inline(manifest)
    assert res.exit_code == 10, (res.output, res.exception)
    assert res.output.startswith("vosfx: error: ") and said in res.output, res.output
    assert not (tmp_path / ".vosfx-batch").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mask.png", "a.mp4", name]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--mask-rule", "{shot}.png"], "mask rule '{shot}.png': unknown field(s) ['shot']"),
        (["--mask-rule", "{stem}.matte.png"], "no clips to matte"),
    ],
)
def test_cli_a_folder_with_nothing_to_matte_exits_10(tmp_path, config_home, args, said):
    clip_with_mask(tmp_path / "shots", "a", n=3)
    (tmp_path / "shots" / "a.mp4").rename(tmp_path / "shots" / "a.txt")  # no clip left
    if "{shot}" in args[1]:
        (tmp_path / "shots" / "a.txt").rename(tmp_path / "shots" / "a.mp4")
    res = _inline(tmp_path / "shots", "-o", tmp_path / "{stem}.mkv", "-p", "matte-ffv1", *args)
    assert res.exit_code == 10 and said in res.output, res.output


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_cli_a_rows_range_and_mask_frame_reach_its_job(tmp_path, config_home, kind):
    """The CSV cells mask_frame/start/end (numbers, not strings) and a JSONL with blank
    lines: the job mattes frames 2..4 from a mask on frame 2."""
    import av

    clip_with_mask(tmp_path, "a", n=6)
    manifest = tmp_path / f"m.{kind}"
    if kind == "csv":
        manifest.write_text(
            "input,mask,output,presets,mask_frame,start,end,fit\n"
            "a.mp4,a.mask.png,out_{stem}.mkv,matte-ffv1,2,2,5,false\n"
        )
    else:
        row = {"input": "a.mp4", "output": "out_{stem}.mkv", "preset": "matte-ffv1", "start": 2}
        row |= {"end": 5, "prompts": [{"frame": 2, "mask": "a.mask.png"}]}
        manifest.write_text("\n" + json.dumps(row) + "\n\n")
    res = _inline(manifest)
    assert res.exit_code == 0, res.output
    with av.open(str(tmp_path / "out_a.mkv")) as movie:
        assert sum(1 for _ in movie.decode(video=0)) == 3
    assert json.loads((tmp_path / "out_a.mkv.json").read_text())["job"]["start"] == 2


def test_cli_a_state_dir_that_cannot_be_made_exits_10_naming_it(tmp_path, config_home):
    manifest = make_batch(tmp_path, names=("a",), n=3)
    (tmp_path / "taken").write_text("a file")
    res = _inline(manifest, "--state-dir", tmp_path / "taken" / "state")
    assert res.exit_code == 10, res.output
    assert f"batch state folder {tmp_path / 'taken' / 'state'} cannot be used" in res.output
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_gpus_sets_each_local_workers_device(tmp_path, config_home, tests_on_path):
    manifest = make_batch(tmp_path, names=("a",), n=3)
    res = CliRunner().invoke(
        cli,
        ["batch", str(manifest), "--gpus", "0", "--executor", "local", "--engine-factory", FACTORY],
    )
    assert res.exit_code == 0, res.output
    assert "1 ok, 0 skipped, 0 failed" in res.output and "1 local worker(s)" in res.output
    assert (tmp_path / "out" / "a.mkv").is_file()


def test_cli_json_progress_says_the_eta_once_a_job_is_done(tmp_path, config_home):
    manifest = make_batch(tmp_path, names=("a", "b"), n=3)
    res = _inline(manifest, "--json-progress")
    assert res.exit_code == 0, res.output
    jobs = [e for e in map(json.loads, res.stdout.splitlines()) if e["event"] == "batch_job"]
    assert [e["jobs_done"] for e in jobs] == [1, 2]
    assert jobs[0]["eta_s"] >= 0 and jobs[1]["eta_s"] == 0.0  # the first: one job's frames


def test_the_terminal_line_is_redrawn_and_a_retry_said_on_its_own_line():
    import io

    from vosfx.batch.coordinator import BatchProgress
    from vosfx.cli.batch import _BatchProgressLine

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    line = _BatchProgressLine(out)
    line(BatchProgress("progress", 1, 3, 0, 40, 2.0, 30.0, {"b": (5, 20)}))
    line(BatchProgress("progress", 1, 3, 0, 41, 2.0, 29.0))  # within 0.25 s: not redrawn
    line(BatchProgress("progress", 1, 3, message="b: worker died; retrying (attempt 2 of 2)"))
    assert out.getvalue().split("\r\x1b[2K")[1:] == [
        "jobs 1/3 (0 failed), running 1, 40 frames, 2.00 fps, ETA 00:30",
        "batch: b: worker died; retrying (attempt 2 of 2)\n",
    ]

"""The switch interval a render runs with (vosfx/pipeline/switching.py): lowered while any
render or studio work runs, what it was afterwards, and benchmarks/host_bound.py, which
measures why, and benchmarks/switch_cpu.py, what it costs where the model runs on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEngine
from media import make_clip, moving_square_frame
from PIL import Image

from vosfx.job import Job, PromptSpec
from vosfx.pipeline import run
from vosfx.pipeline.switching import SWITCH_INTERVAL_S, short_switch_interval
from vosfx.presets import resolve_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def interval():
    """The test's own starting interval (CPython's default), put back afterwards."""
    found = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(found)


def test_lowered_inside_and_put_back(interval):
    with short_switch_interval():
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
    assert sys.getswitchinterval() == pytest.approx(interval)


def test_put_back_after_an_error(interval):
    with pytest.raises(RuntimeError), short_switch_interval():
        raise RuntimeError("a render failed")
    assert sys.getswitchinterval() == pytest.approx(interval)


def test_a_shorter_interval_is_left_as_it_is(interval):
    sys.setswitchinterval(SWITCH_INTERVAL_S / 2)
    with short_switch_interval():
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S / 2)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S / 2)


def test_overlapping_renders_share_one_count(interval):
    """Two renders in threads, the first ending while the second runs: the interval stays
    short until the second ends, then is the one found before the first began."""
    entered, leave = threading.Event(), threading.Event()

    def second():
        with short_switch_interval():
            entered.set()
            leave.wait(10)

    with short_switch_interval():
        worker = threading.Thread(target=second)
        worker.start()
        assert entered.wait(10)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)  # the second runs
    leave.set()
    worker.join(10)
    assert sys.getswitchinterval() == pytest.approx(interval)


def test_a_render_runs_with_it(tmp_path, config_home, interval):
    """vosfx.pipeline.run (every caller's loop): the tracking thread sees the short interval
    on every frame, and the process has its own back afterwards."""
    path = make_clip(tmp_path / "clip.mp4", n=6, width=96, height=64)
    _, mask = moving_square_frame(0, 96, 64)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    during: list[float] = []

    def logit_fn(frame_index, obj_id, base):
        during.append(sys.getswitchinterval())
        return base

    job = Job(
        input=str(path),
        prompts=(PromptSpec(frame=0, mask=str(tmp_path / "mask.png")),),
        output=str(tmp_path / "out"),
        config=resolve_config(("png16",), {}),
    )
    report = run(job, engine=FakeEngine(logit_fn=logit_fn))
    assert report.frames == 6 and len(during) == 5  # frame 0 is the prompt
    assert during == [pytest.approx(SWITCH_INTERVAL_S)] * 5
    assert sys.getswitchinterval() == pytest.approx(interval)


def test_the_studios_work_runs_with_it(interval):
    """The studio's Track and Render run on its Worker's thread (vosfx/studio/work.py),
    whose page requests other threads serve: the short interval while the work runs."""
    from vosfx.studio.work import Worker

    events: list[dict] = []
    seen: list[float] = []
    finish = threading.Event()

    def body(cancel: threading.Event) -> None:
        seen.append(sys.getswitchinterval())
        finish.wait(10)

    worker = Worker(events.append)
    worker.start("track", body)
    work = worker.work
    assert work is not None
    finish.set()
    work.thread.join(10)
    assert seen == [pytest.approx(SWITCH_INTERVAL_S)] and events == []
    assert sys.getswitchinterval() == pytest.approx(interval)


def test_the_benchmark_prints_its_table(tmp_path):
    """benchmarks/host_bound.py (docs/benchmarks/render.md's numbers) runs, here briefly:
    one round of 8 frames, before and after the same revision, its table printed."""
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/host_bound.py",
            "--frames",
            "8",
            "--rounds",
            "1",
            "--before",
            "HEAD",
            "--python-ms",
            "5",
            "--job",
            "ffv1-matte",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [ln for ln in done.stdout.splitlines() if ln.startswith(("| before", "| after"))]
    assert len(rows) == 2, done.stdout
    fps = [float(r.split("|")[3]) for r in rows]
    assert all(f > 0 for f in fps), rows


@pytest.mark.slow
def test_the_cpu_benchmark_pairs_its_frames(tmp_path):
    """benchmarks/switch_cpu.py (the CPU path's cost of the short interval, measured frame by
    frame in one render: docs/benchmarks/render.md) runs, here on the torch backend at 256 px
    over the bundled example clip: both intervals' frames timed, and paired."""
    import json

    pytest.importorskip("sam2")
    sys.path.insert(0, str(ROOT / "tests"))
    from ckpt import make_checkpoint

    ckpt, _ = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/switch_cpu.py",
            "--checkpoint",
            str(ckpt),
            "--backend",
            "torch",
            "--size",
            "256",
            "--frames",
            "8",
            "--input",
            str(ROOT / "examples" / "ball.mp4"),
            "--box",
            "100,60,220,180",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "VOSFX_HOME": str(tmp_path / "home")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[0])
    assert result["frames"] == 5 and result["pairs"] == 2, (
        result
    )  # 7 timed (each to the next's start), 2 left out
    assert result["short_ms"] > 0 and result["default_ms"] > 0
    assert 0 < result["paired_short_over_default"] < 10

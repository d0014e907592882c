"""benchmarks/gpu.py, the one command a lent GPU runs (issue 17 item 6), checked here on the CPU
at a tiny size so that a 15-minute device lease is not spent finding a broken script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


SMALL = ("--device", "cpu", "--size", "256", "--width", "320", "--height", "180")


def gpu_script(*args: str, timeout: int, script: str = "gpu.py") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_gpu_benchmark_runs_end_to_end_on_cpu(tmp_path):
    pytest.importorskip("sam2")
    done = gpu_script(
        *SMALL, "--models", "tiny", "--frames", "3", "--out", str(tmp_path), timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    (row,) = result["rows"]
    render = row["vosfx torch"]
    assert isinstance(render, dict), render  # a failure is recorded as text
    assert render["frames"] == 3 and render["render_fps"] > 0 and render["track_fps"] > 0
    assert render["bare_track_fps"] > 0  # the tracking alone, as the official is measured
    assert render["runtime"]["backend"] == "torch"
    assert render["switch_interval_ms"] == [0.25]  # in force while its renders ran
    # the same render at CPython's own switch interval, for the comparison (first model)
    before = row["vosfx torch, 5 ms switch"]
    assert isinstance(before, dict) and before["switch_interval_ms"] == [5.0], before
    assert before["render_fps"] > 0 and before["runtime"]["backend"] == "torch"
    assert "vosfx torch render at a 0.25 ms / 5 ms switch interval: " in done.stdout
    assert isinstance(row["official"], dict) and row["official"]["track_fps"] > 0
    # no CUDA provider in a CPU onnxruntime: said so, not skipped silently
    assert row["vosfx onnx cuda fp16"].startswith("not run: onnxruntime has")
    assert "| tiny |" in done.stdout


def test_gpu_benchmark_refuses_an_unknown_model(tmp_path):
    done = gpu_script("--models", "huge", "--out", str(tmp_path), timeout=120)
    assert done.returncode != 0 and "--models: unknown ['huge']" in done.stderr


@pytest.mark.slow
def test_gpu_profile_runs_on_cpu(tmp_path):
    """benchmarks/gpu_profile.py, the per-frame breakdown a lent GPU ran (docs/benchmarks/gpu.md),
    checked here on the CPU so that it cannot arrive broken."""
    pytest.importorskip("sam2")
    done = gpu_script(
        *SMALL,
        "--onnx",
        "cpu",
        "--frames",
        "2",
        "--out",
        str(tmp_path),
        timeout=600,
        script="gpu_profile.py",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / "profile.txt").read_text()
    for title in ("vosfx torch", "vosfx onnx cpu fp16", "official propagate_in_video"):
        assert f"## {title}: 2 frames" in text
    assert "ms per frame" in text and "tottime" in text

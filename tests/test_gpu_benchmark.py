"""benchmarks/gpu.py, the one command a lent GPU runs (issue 17 item 6), checked here on the CPU
at a tiny size so that a 15-minute device lease is not spent finding a broken script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def gpu_script(*args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_gpu_benchmark_runs_end_to_end_on_cpu(tmp_path):
    pytest.importorskip("sam2")
    done = gpu_script(
        "--device",
        "cpu",
        "--models",
        "tiny",
        "--frames",
        "3",
        "--size",
        "256",
        "--width",
        "320",
        "--height",
        "180",
        "--out",
        str(tmp_path),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    (row,) = result["rows"]
    render = row["vosfx torch"]
    assert isinstance(render, dict), render  # a failure is recorded as text
    assert render["frames"] == 3 and render["render_fps"] > 0 and render["track_fps"] > 0
    assert render["runtime"]["backend"] == "torch"
    assert isinstance(row["official"], dict) and row["official"]["track_fps"] > 0
    # no CUDA provider in a CPU onnxruntime: said so, not skipped silently
    assert row["vosfx onnx cuda fp16"].startswith("not run: onnxruntime has")
    assert "| tiny |" in done.stdout


def test_gpu_benchmark_refuses_an_unknown_model(tmp_path):
    done = gpu_script("--models", "huge", "--out", str(tmp_path), timeout=120)
    assert done.returncode != 0 and "--models: unknown ['huge']" in done.stderr

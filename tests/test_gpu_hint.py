"""The hint when a GPU provider is missing names the fix for the vosfx[gpu] package clash
(onnxruntime and onnxruntime-gpu both installed: the CPU module can win;
docs/benchmarks/install.md)."""

from __future__ import annotations

import pytest

from vosfx.engine.ort_runtime import gpu_install_hint


@pytest.mark.parametrize(
    ("dists", "fragment"),
    [
        (
            {"onnxruntime", "onnxruntime-gpu"},
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu",
        ),
        ({"onnxruntime"}, "install onnxruntime-gpu matching your CUDA version"),
        ({"onnxruntime-gpu"}, "install onnxruntime-gpu matching your CUDA version"),
    ],
)
def test_hint_names_the_fix(dists, fragment):
    assert fragment in gpu_install_hint(lambda d: d in dists)


def test_default_reads_the_installed_distributions():
    assert "onnxruntime-gpu" in gpu_install_hint()

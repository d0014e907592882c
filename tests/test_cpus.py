"""A process's share of the cores (vosfx.cpus): what a batch worker's OMP_NUM_THREADS gives
each pool, and the Ray actors' CPUs that become it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vosfx import cpus
from vosfx.batch.cluster import actor_cpus


@pytest.mark.parametrize(
    "value, share", [("3", 3), (" 2 ", 2), ("0", 0), ("-1", 0), ("two", 0), ("", 0), (None, 0)]
)
def test_thread_share_reads_omp_num_threads(monkeypatch, value, share):
    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert cpus.thread_share() == share


def test_usable_cores_follow_the_affinity_and_the_share(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert cpus.usable_cores() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpus.usable_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores + 5))  # a share above the cores: the cores
    assert cpus.usable_cores() == cores


def test_opencv_takes_the_workers_share():
    """OpenCV does not read OMP_NUM_THREADS; a worker's environment names its own variable."""
    from vosfx.batch.local import worker_envs

    env = os.environ | worker_envs(2, gpus=[], threads=1)[0]
    code = "import cv2; print(cv2.getNumThreads())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == "1", out.stderr


def test_ray_actors_split_a_private_ray_and_hold_one_cpu_elsewhere():
    assert actor_cpus(2, 16, private=True, gpus=0) == 8
    assert actor_cpus(3, 16, private=True, gpus=0) == 5
    assert actor_cpus(16, 16, private=True, gpus=0) == 1
    assert actor_cpus(4, 2, private=True, gpus=0) == 1  # more actors than cores
    assert actor_cpus(2, 64, private=False, gpus=0) == 1  # a cluster: nodes may differ
    assert actor_cpus(2, 16, private=True, gpus=2) == 1

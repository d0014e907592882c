"""A process's share of the cores (vosfx.cpus): what a batch worker's OMP_NUM_THREADS gives
each pool, and the Ray actors' CPUs that become it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vosfx import cpus
from vosfx.batch.cluster import _node_cpus, actor_cpus


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


def test_ray_actors_take_the_largest_share_that_places_them_all():
    assert actor_cpus(2, [16], gpus=0) == 8  # a private Ray: the cores split
    assert actor_cpus(3, [16], gpus=0) == 5
    assert actor_cpus(16, [16], gpus=0) == 1
    assert actor_cpus(4, [2], gpus=0) == 1  # more actors than cores
    assert actor_cpus(2, [32, 32], gpus=0) == 32  # one actor per node
    assert actor_cpus(4, [32, 32], gpus=0) == 16
    assert actor_cpus(3, [12, 12], gpus=0) == 6  # 8 each would place only two
    assert actor_cpus(2, [32, 8], gpus=0) == 16  # both fit on the large node
    assert actor_cpus(5, [32, 8], gpus=0) == 8
    assert actor_cpus(2, [0, 16], gpus=0) == 8  # a head node started with --num-cpus 0
    assert actor_cpus(2, [16], gpus=2) == 1  # beside GPUs


def test_ray_node_cpus_read_from_the_live_nodes():
    class FakeRay:
        @staticmethod
        def nodes():
            return [
                {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0}},
                {"Alive": False, "Resources": {"CPU": 64.0}},
                {"Alive": True, "Resources": {"memory": 1.0}},
            ]

    assert _node_cpus(FakeRay) == [16, 0]

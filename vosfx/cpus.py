"""How many threads this process's pools may start.

A batch worker on a CPU gets its share of the machine as ``OMP_NUM_THREADS``
(vosfx/batch/local.py, and Ray sets it for its actors). torch and OpenBLAS read it
themselves; ONNX Runtime's and OpenVINO's pools, FFmpeg's codec threads and the refinement
loops' bands do not, so vosfx hands the share to each of them where it makes them (left at
their own default when no share is set: ONNX Runtime, for one, counts physical cores).
"""

from __future__ import annotations

import os

SHARE_VARIABLE = "OMP_NUM_THREADS"


def thread_share() -> int:
    """This process's share of the cores as ``OMP_NUM_THREADS`` says it, or 0 where that is
    unset or not a positive whole number (each pool then takes its own default)."""
    value = os.environ.get(SHARE_VARIABLE, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 0


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at most its share."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cores = os.cpu_count() or 1
    share = thread_share()
    return max(1, min(cores, share) if share else cores)

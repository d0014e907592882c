"""Batch rendering: a manifest of jobs run by local worker processes or a Ray cluster.

:mod:`~vosfx.batch.coordinator` runs a batch; :mod:`~vosfx.batch.manifest` reads and validates
manifests; :mod:`~vosfx.batch.state` is the resume state; :mod:`~vosfx.batch.worker` runs one
job (``vosfx.pipeline.run``) with an engine kept loaded; :mod:`~vosfx.batch.local` and
:mod:`~vosfx.batch.cluster` are the two executors.
"""

from vosfx.batch.coordinator import (
    BatchProgress,
    BatchReport,
    JobResult,
    format_summary,
    make_executor,
    run_batch,
)

__all__ = [
    "BatchProgress",
    "BatchReport",
    "JobResult",
    "format_summary",
    "make_executor",
    "run_batch",
]

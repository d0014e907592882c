"""vosfx: production-quality video mattes from one mask or click, with SAM 2.

Importing vosfx is cheap: torch, onnxruntime and av load only when a job runs.
"""

from __future__ import annotations

from vosfx._version import __version__

__all__ = [
    "Job",
    "JobConfig",
    "JobReport",
    "VosfxError",
    "__version__",
    "load_preset",
    "resolve_config",
    "run",
    "run_batch",
]


def __getattr__(name: str):  # lazy public API (PEP 562), keeps `import vosfx` light
    if name in ("run", "JobReport"):
        from vosfx import pipeline

        return getattr(pipeline, name)
    if name == "Job":
        from vosfx.job import Job

        return Job
    if name == "JobConfig":
        from vosfx.config import JobConfig

        return JobConfig
    if name == "run_batch":
        from vosfx.batch import run_batch

        return run_batch
    if name in ("load_preset", "resolve_config"):
        from vosfx import presets

        return getattr(presets, name)
    if name == "VosfxError":
        from vosfx.errors import VosfxError

        return VosfxError
    raise AttributeError(f"module 'vosfx' has no attribute {name!r}")

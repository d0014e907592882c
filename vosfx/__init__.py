"""vosfx: production-quality video mattes from one mask or click, with SAM 2.

Importing vosfx is cheap: torch, onnxruntime and av load only when a job runs.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "run", "Job", "JobReport", "JobConfig", "load_preset", "VosfxError"]


def __getattr__(name: str):  # lazy public API (PEP 562), keeps `import vosfx` light
    if name in ("run", "Job", "JobReport"):
        from vosfx import pipeline

        return getattr(pipeline, name)
    if name == "JobConfig":
        from vosfx.config import JobConfig

        return JobConfig
    if name == "load_preset":
        from vosfx.presets import load_preset

        return load_preset
    if name == "VosfxError":
        from vosfx.errors import VosfxError

        return VosfxError
    raise AttributeError(f"module 'vosfx' has no attribute {name!r}")

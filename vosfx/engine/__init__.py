"""The tracking engine seam.

An :class:`Engine` holds a loaded model (kept across clips, so a batch worker loads it once);
``engine.start(info, memory)`` opens a :class:`Session` for one clip. The pipeline only ever
talks to these two protocols; the SAM 2 tracker implements them, and so does the deterministic
test double in ``tests/`` (never shipped).

This module imports nothing heavy: backends are imported by :func:`load_engine`.
"""

from __future__ import annotations

from typing import Protocol

from vosfx.config import MemoryConfig, ModelConfig
from vosfx.types import Frame, MaskResult, Prompt, VideoInfo


class Session(Protocol):
    """Tracking state for one clip. Frames arrive in order, once each."""

    def add_prompt(self, prompt: Prompt) -> None:
        """Register a prompt; it applies when its frame is stepped (a correction on a later
        frame replaces the prediction there and conditions what follows)."""
        ...

    def step(self, frame: Frame, *, shot_id: int = 0) -> MaskResult: ...

    def report(self) -> dict:
        """Per-object memory events for the sidecar (promoted frames, quality, ...)."""
        ...

    def close(self) -> None: ...


class Engine(Protocol):
    model_id: str
    model_sha256: str | None

    def start(self, info: VideoInfo, memory: MemoryConfig) -> Session: ...

    def close(self) -> None: ...


def load_engine(model: ModelConfig, *, progress=None) -> Engine:
    """Load the model named by ``model`` on the backend it asks for (``auto``: ONNX Runtime,
    the bundle exported on first use when torch is installed). A registry model missing from
    the cache is downloaded first, calling ``progress(done_bytes, total_bytes | None)``.
    Raises BackendError / ModelError / DownloadError with a clear message."""
    from vosfx.engine.loader import build_engine

    return build_engine(model, progress=progress)

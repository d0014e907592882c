"""The tracking engine seam.

An :class:`Engine` holds a loaded model (kept across clips, so a batch worker loads it once);
``engine.start(info, memory)`` opens a :class:`Session` for one clip. The pipeline only ever
talks to these two protocols; the SAM 2 tracker implements them, and so does the deterministic
test double in ``tests/`` (never shipped).

This module imports nothing heavy: backends are imported by :func:`load_engine`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from vosfx.config import MemoryConfig, ModelConfig
from vosfx.types import Frame, ObjectResult, Prompt, VideoInfo

if TYPE_CHECKING:
    from vosfx.engine.backend import Interrupt


class Session(Protocol):
    """An engine's tracking state for one clip: *anchors* (prompted frames, computed in image
    mode) and *passes* (one object propagated from one anchor, forwards or backwards). The
    clip session (:class:`vosfx.session.ClipSession`) decides which passes run where; this
    seam only executes them (``engine/tracker.py`` is SAM 2's, ``tests/fakes.py`` the test
    double's)."""

    low_res: int  # side of the low-res logits (image_size // 4)

    def encode(self, frame: Frame, interrupt: Interrupt | None = None) -> Any:
        """The frame's image features (opaque; pass them back to skip the encoder). Touches no
        session state: safe to call from another thread while the session prompts or steps
        (:meth:`vosfx.session.ClipSession.warm`). ``interrupt``: set from another thread to
        stop the call where the runtime can (:class:`~vosfx.engine.backend.Interrupt`:
        it raises :class:`~vosfx.errors.Cancelled`)."""
        ...

    def model_input(self, frame: Frame) -> Frame:
        """The frame as the model sees it (S x S), for stashing between passes and for
        :attr:`Frame.model_input` (made on the decode thread: a pure function of the frame,
        safe to call from another thread)."""
        ...

    def prompt(
        self,
        frame: Frame,
        prompt: Prompt,
        *,
        shot_id: int = 0,
        previous: np.ndarray | None = None,
        features: Any = None,
        attended: Any = None,
    ) -> ObjectResult:
        """The object's output on ``frame`` for ``prompt`` (its anchor there); ``attended``
        (from :meth:`attend`): a correction, decoded with a pass's memory."""
        ...

    def set_shot(self, obj_id: int, frame_index: int, shot_id: int) -> None: ...

    def remove_anchor(self, obj_id: int, frame_index: int) -> None: ...

    def remove_object(self, obj_id: int) -> None: ...

    def start_pass(
        self, obj_id: int, anchor: int, direction: int, *, neighbour: int | None = None
    ) -> int: ...

    def step(
        self, frame: Frame, pass_ids: Sequence[int], *, shot_id: int = 0, features: Any = None
    ) -> list[ObjectResult]: ...

    def end_pass(self, pass_id: int) -> list[ObjectResult] | None:
        """Close a pass; the frames it revised now that it is complete (SAM2Long), if any."""
        ...

    def attend(
        self,
        pass_id: int,
        frame: Frame,
        *,
        shot_id: int = 0,
        features: Any = None,
        track: bool = True,
    ) -> Any:
        """The memory the pass attends on ``frame``, its next frame (opaque, for
        :meth:`prompt`'s ``attended``; ``.tracked``: with ``track``, the (s, s) logits the
        pass tracks onto the frame); the pass does not move."""
        ...

    def report(self) -> dict:
        """Per-object memory events for the sidecar (promoted frames, peak bank size)."""
        ...

    def close(self) -> None: ...


class Engine(Protocol):
    model_id: str
    model_sha256: str | None

    def start(self, info: VideoInfo, memory: MemoryConfig) -> Session: ...

    def runtime(self) -> dict:
        """What runs the model (backend, precision, per-stage runtime), for the sidecar."""
        ...

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the user must know of how the model runs (an execution provider missing, a
        tier in a slower form): a run says them as "warning" events and in its sidecar."""
        ...

    def close(self) -> None: ...


def load_engine(model: ModelConfig, *, progress=None, cancel=None) -> Engine:
    """Load the model named by ``model`` on the backend it asks for (``auto``: ONNX Runtime,
    the bundle exported on first use when torch is installed). A registry model missing from
    the cache is downloaded first, calling ``progress(done_bytes, total_bytes | None)``.
    ``cancel`` (a ``threading.Event``), once set, stops a first-use download (its part kept
    for the next run) or export (nothing kept) with :class:`~vosfx.errors.Cancelled`.
    Raises BackendError / ModelError / DownloadError with a clear message."""
    from vosfx.engine.loader import build_engine

    return build_engine(model, progress=progress, cancel=cancel)


def log_warnings(engine: Engine) -> None:
    """Says ``engine``'s :attr:`~Engine.warnings` on vosfx's log (``vosfx: ...`` on stderr
    from the command line): for callers that hold an engine outside a run (the studio's clicks,
    ``vosfx eval`` and ``bench``, the OpenFX worker); a run says them itself, as "warning"
    events."""
    for text in engine.warnings:
        logging.getLogger(__name__).warning(text)

"""Deterministic test doubles for the engine seam (tests only; never shipped).

:class:`FakeEngine` implements the Engine/Session protocols of ``vosfx.engine`` without a
model: each object's prompt mask is area-resized to 64×64 and turned into logits, and every
later frame gets ``logit_fn(frame_index, obj_id, base)`` (default: the prompt's logits again,
so the prediction simply repeats the prompt).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vosfx.config import MemoryConfig
from vosfx.types import Frame, MaskResult, Prompt, VideoInfo

LOWRES = 64  # the fake's logit resolution (SAM 2 uses image_size // 4)
LOGIT_SCALE = 10.0  # logits = (2 × coverage - 1) × 10: ±10 away from the edge

LogitFn = Callable[[int, int, np.ndarray], np.ndarray]


def prompt_logits(mask: np.ndarray) -> np.ndarray:
    """(64, 64) float32 logits from a (H, W) bool mask: area-average coverage c in [0, 1]
    mapped to (2c - 1) × 10, so the 0 level set sits on the mask's edge."""
    import cv2

    cover = cv2.resize(mask.astype(np.float32), (LOWRES, LOWRES), interpolation=cv2.INTER_AREA)
    return ((2.0 * cover - 1.0) * LOGIT_SCALE).astype(np.float32)


def shift_logits(dx_per_frame: int) -> LogitFn:
    """A ``logit_fn`` that moves each object ``dx_per_frame`` low-res columns right per frame
    index (a drifting tracker, for tests that need imperfect predictions)."""

    def fn(frame_index: int, obj_id: int, base: np.ndarray) -> np.ndarray:
        k = min(dx_per_frame * frame_index, LOWRES)
        shifted = np.full_like(base, -LOGIT_SCALE)
        shifted[:, k:] = base[:, : LOWRES - k]
        return shifted

    return fn


class FakeSession:
    def __init__(self, info: VideoInfo, memory: MemoryConfig, logit_fn: LogitFn | None) -> None:
        self.info, self.memory, self.logit_fn = info, memory, logit_fn
        self.pending: dict[int, list[Prompt]] = {}
        self.base: dict[int, np.ndarray] = {}  # obj_id -> (64, 64) logits from its prompt
        self.steps: list[int] = []
        self.closed = False

    def add_prompt(self, prompt: Prompt) -> None:
        if prompt.mask is None:
            raise ValueError("FakeSession understands mask prompts only")
        self.pending.setdefault(prompt.frame_index, []).append(prompt)

    def step(self, frame: Frame, *, shot_id: int = 0) -> MaskResult:
        for p in self.pending.pop(frame.index, []):
            self.base[p.obj_id] = prompt_logits(p.mask)
        self.steps.append(frame.index)
        ids = tuple(sorted(self.base))
        logits = [
            self.base[o] if self.logit_fn is None else self.logit_fn(frame.index, o, self.base[o])
            for o in ids
        ]
        stack = np.stack(logits).astype(np.float32) if ids else np.zeros((0, LOWRES, LOWRES),
                                                                         np.float32)
        present = np.array([float((lg > 0).any()) * 2 - 1 for lg in stack], np.float32)
        return MaskResult(frame.index, ids, stack, present * LOGIT_SCALE,
                          np.ones(len(ids), np.float32))

    def report(self) -> dict:
        return {"fake": True, "frames": len(self.steps)}

    def close(self) -> None:
        self.closed = True


class FakeEngine:
    """Engine protocol double. ``sessions`` keeps every session it started, for assertions."""

    model_sha256 = None

    def __init__(self, logit_fn: LogitFn | None = None, model_id: str = "fake") -> None:
        self.logit_fn = logit_fn
        self.model_id = model_id
        self.sessions: list[FakeSession] = []
        self.closed = False

    def start(self, info: VideoInfo, memory: MemoryConfig) -> FakeSession:
        session = FakeSession(info, memory, self.logit_fn)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        self.closed = True

"""Deterministic test doubles for the engine seam (tests only; never shipped).

:class:`FakeEngine` implements the Engine/Session protocols of ``vosfx.engine`` without a
model: each object's prompt mask is area-resized to 64×64 and turned into logits (clicks and
boxes become discs and rectangles; with a prior, include discs add to it and exclude discs cut
it), and every tracked frame gets ``logit_fn(frame_index,
obj_id, base)`` of its pass's prompted frame (default: those logits again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vosfx.config import MemoryConfig
from vosfx.types import Frame, ObjectResult, Prompt, VideoInfo

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


_YY, _XX = np.mgrid[0:LOWRES, 0:LOWRES].astype(np.float32) + 0.5


def _disc(x: float, y: float, width: int, height: int) -> np.ndarray:
    """(64, 64) bool: the disc of radius 8 cells around clip pixel (x, y)."""
    return (_XX - x / width * LOWRES) ** 2 + (_YY - y / height * LOWRES) ** 2 <= 64.0


def _clicks(prompt: Prompt):
    points = np.asarray(prompt.points if prompt.points is not None else np.zeros((0, 2)))
    labels = np.asarray(prompt.labels if prompt.labels is not None else [])
    return zip(points.reshape(-1, 2), labels)


def exclude_discs(prompt: Prompt, width: int, height: int) -> np.ndarray:
    """(64, 64) bool: the discs :func:`point_logits` cuts around the exclude points."""
    out = np.zeros((LOWRES, LOWRES), bool)
    for (x, y), label in _clicks(prompt):
        if label == 0:
            out |= _disc(x, y, width, height)
    return out


def point_logits(prompt: Prompt, width: int, height: int) -> np.ndarray:
    """(64, 64) logits for a click or box prompt: +10 inside a box, or in a disc of radius 8
    cells around each include point, minus discs around exclude points; -10 elsewhere."""
    yy, xx = _YY, _XX
    inside = np.zeros((LOWRES, LOWRES), bool)
    if prompt.box is not None:
        (x0, y0), (x1, y1) = np.asarray(prompt.box, np.float32).reshape(2, 2) * [
            LOWRES / width,
            LOWRES / height,
        ]
        inside |= (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
    for (x, y), label in _clicks(prompt):
        disc = _disc(x, y, width, height)
        inside = inside | disc if label == 1 else inside & ~disc
    return np.where(inside, LOGIT_SCALE, -LOGIT_SCALE).astype(np.float32)


@dataclass(frozen=True)
class FakeAttended:
    """:meth:`FakeSession.attend`'s memory: where it was attended and the mask tracked."""

    where: tuple[int, int, int]  # (obj, frame, pass direction)
    tracked: np.ndarray | None


class FakeSession:
    """The engine Session protocol (anchors and passes) without a model: a prompt's logits
    come from its mask (or its clicks/box), and every tracked frame repeats its pass's anchor
    logits through ``logit_fn(frame_index, obj_id, base)``."""

    low_res = LOWRES

    def __init__(
        self,
        info: VideoInfo,
        memory: MemoryConfig,
        logit_fn: LogitFn | None,
        prompts_too: bool = False,
    ) -> None:
        self.info, self.memory, self.logit_fn = info, memory, logit_fn
        self.prompts_too = prompts_too  # logit_fn makes prompted frames' logits as well
        self.anchors: dict[int, dict[int, np.ndarray]] = {}
        self.passes: dict[int, tuple[int, int, int, int | None]] = {}
        self.position: dict[int, int] = {}
        self.steps: list[int] = []  # frame indices stepped (one entry per step call)
        self.stepped: list[tuple[int, int, int]] = []  # (obj, frame, direction) per result
        self.prompted: list[tuple[int, int]] = []  # (obj, frame) per prompt computed
        self.encoded: list[int] = []
        self.corrections: list[tuple[int, int, int]] = []  # (obj, frame, pass direction)
        self.attended: list[tuple[int, int, int]] = []  # attend() calls, as corrections
        self.snapshots_taken = 0
        self.resumed: list[int] = []  # the frame of each snapshot resumed from
        self.closed = False
        self._next = 0

    def encode(self, frame: Frame, interrupt=None):
        self.encoded.append(frame.index)
        return {"t": frame.index}

    def model_input(self, frame: Frame) -> Frame:
        return frame

    def prompt(
        self,
        frame: Frame,
        prompt: Prompt,
        *,
        shot_id: int = 0,
        previous=None,
        features=None,
        attended=None,
    ) -> ObjectResult:
        if attended is not None:  # a correction: attend()'s record of its pass
            obj, t, direction = attended.where
            assert (obj, t) == (prompt.obj_id, frame.index)
            self.corrections.append((prompt.obj_id, frame.index, direction))
        if prompt.mask is not None:
            base = prompt_logits(prompt.mask)
        else:
            base = point_logits(prompt, self.info.width, self.info.height)
            dense = prompt.prior
            if dense is None and attended is not None:  # a correction: the mask tracked there
                dense = previous
            if dense is not None:  # the clicks edit the prior: includes add, excludes cut
                prior = prompt_logits(np.asarray(dense) > 0)
                excluded = exclude_discs(prompt, self.info.width, self.info.height)
                base = np.where(excluded, -LOGIT_SCALE, np.maximum(prior, base))
        if self.prompts_too and self.logit_fn is not None:
            base = self.logit_fn(frame.index, prompt.obj_id, base)
        self.anchors.setdefault(prompt.obj_id, {})[frame.index] = base
        self.prompted.append((prompt.obj_id, frame.index))
        return ObjectResult(prompt.obj_id, frame.index, base, _present(base), 1.0, {"quality": 1.0})

    def set_shot(self, obj_id: int, frame_index: int, shot_id: int) -> None:
        pass

    def remove_anchor(self, obj_id: int, frame_index: int) -> None:
        self.anchors.get(obj_id, {}).pop(frame_index, None)

    def remove_object(self, obj_id: int) -> None:
        self.anchors.pop(obj_id, None)

    def start_pass(self, obj_id: int, anchor: int, direction: int, *, neighbour=None) -> int:
        pid = self._next
        self._next += 1
        self.passes[pid] = (obj_id, anchor, direction, neighbour)
        self.position[pid] = anchor
        return pid

    def step(self, frame: Frame, pass_ids, *, shot_id: int = 0, features=None):
        self.steps.append(frame.index)
        out = []
        for pid in pass_ids:
            obj, anchor, direction, _nb = self.passes[pid]
            if frame.index != self.position[pid] + direction:
                raise AssertionError(f"pass {pid} stepped {frame.index} after {self.position[pid]}")
            self.position[pid] = frame.index
            logits = self._tracked(obj, anchor, frame.index)
            self.stepped.append((obj, frame.index, direction))
            out.append(
                ObjectResult(
                    obj,
                    frame.index,
                    logits.astype(np.float32),
                    _present(logits),
                    1.0,
                    {"quality": 1.0},
                )
            )
        return out

    def _tracked(self, obj: int, anchor: int, t: int) -> np.ndarray:
        """The logits a pass of ``obj`` from ``anchor`` tracks onto frame ``t``."""
        base = self.anchors[obj][anchor]
        return base if self.logit_fn is None else self.logit_fn(t, obj, base)

    def end_pass(self, pass_id: int) -> None:
        self.passes.pop(pass_id, None)

    def attend(self, pass_id: int, frame: Frame, *, shot_id: int = 0, features=None, track=True):
        """A correction's pass at the frame before: its mask on the frame, as a step would
        give it (the pass does not move)."""
        obj, anchor, direction, _nb = self.passes[pass_id]
        assert frame.index == self.position[pass_id] + direction
        self.attended.append((obj, frame.index, direction))
        tracked = self._tracked(obj, anchor, frame.index).astype(np.float32) if track else None
        return FakeAttended((obj, frame.index, direction), tracked)

    # snapshots (vosfx.session.checkpoints): a pass's place, and one array of
    # ``snapshot_bytes`` per snapshot for the byte budget
    snapshot_bytes = 1024

    def snapshot(self, pass_id: int):
        self.snapshots_taken += 1
        return (
            self.passes[pass_id],
            self.position[pass_id],
            np.zeros(self.snapshot_bytes, np.uint8),
        )

    def resume(self, snap) -> int:
        pid = self._next
        self._next += 1
        self.passes[pid], self.position[pid] = snap[0], snap[1]
        self.resumed.append(snap[1])
        return pid

    def snapshot_arrays(self, snap) -> list:
        return [snap[2]]

    def report(self) -> dict:
        return {"fake": True, "frames": len(self.steps)}

    def close(self) -> None:
        self.closed = True


def _present(logits: np.ndarray) -> float:
    return LOGIT_SCALE if (logits > 0).any() else -LOGIT_SCALE


class FakeEngine:
    """Engine protocol double. ``sessions`` keeps every session it started, for assertions."""

    model_sha256 = None

    def __init__(
        self, logit_fn: LogitFn | None = None, model_id: str = "fake", prompts_too: bool = False
    ) -> None:
        self.logit_fn = logit_fn
        self.prompts_too = prompts_too
        self.model_id = model_id
        self.sessions: list[FakeSession] = []
        self.closed = False
        self.runtime_warnings: list[str] = []  # what its warnings say (a test sets them)

    def runtime(self) -> dict:
        return {}  # no model runs

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.runtime_warnings)

    def start(self, info: VideoInfo, memory: MemoryConfig) -> FakeSession:
        session = FakeSession(info, memory, self.logit_fn, self.prompts_too)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        self.closed = True

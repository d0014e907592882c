"""Test doubles for the OFX worker (tests only): the FakeEngine of tests/fakes.py with point
prompts turned into masks, so clicks on the host's viewer give deterministic mattes.

A point prompt becomes the union of discs of ``RADIUS_PX`` around its include points minus
discs around its exclude points, at video resolution; everything else is FakeEngine's. The
worker loads it with ``--engine ofx_fakes:make_engine``; `vosfx matte` gets the same engine
through tests/ofx/vosfx_points_fake.py, so both sides see the same tracker.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fakes.py

from fakes import FakeEngine, shift_logits

from vosfx.types import Prompt

RADIUS_PX = 12.0


def points_mask(prompt: Prompt, height: int, width: int) -> np.ndarray:
    """(H, W) bool: discs around include points minus discs around exclude points."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    inside = np.zeros((height, width), bool)
    for (x, y), label in zip(prompt.points, prompt.labels):
        disc = (xx - x) ** 2 + (yy - y) ** 2 <= RADIUS_PX**2
        inside = inside | disc if label else inside & ~disc
    return inside


def as_mask_prompt(prompt: Prompt, height: int, width: int) -> Prompt:
    if prompt.mask is not None or prompt.points is None:
        return prompt
    return Prompt(
        frame_index=prompt.frame_index,
        obj_id=prompt.obj_id,
        mask=points_mask(prompt, height, width),
    )


class PointsSession:
    def __init__(self, inner, info) -> None:
        self.inner, self.info = inner, info

    def add_prompt(self, prompt: Prompt):
        return self.inner.add_prompt(as_mask_prompt(prompt, self.info.height, self.info.width))

    def __getattr__(self, name):
        return getattr(self.inner, name)


class PointsEngine:
    def __init__(self, inner: FakeEngine) -> None:
        self.inner = inner
        self.model_id, self.model_sha256 = inner.model_id, inner.model_sha256

    def start(self, info, memory):
        return PointsSession(self.inner.start(info, memory), info)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _delay_fn(base_fn):
    delay_s = float(os.environ.get("VOSFX_FAKE_DELAY_S", "0") or 0)
    if delay_s <= 0:
        return base_fn

    def fn(frame_index, obj_id, base):
        time.sleep(delay_s)
        return base_fn(frame_index, obj_id, base)

    return fn


def make_engine(model=None, progress=None) -> PointsEngine:
    """The worker's ``--engine`` factory: a drifting FakeEngine (1 low-res column a frame) that
    understands points. ``VOSFX_FAKE_DELAY_S`` slows every step (cancel tests)."""
    if os.environ.get("VOSFX_FAKE_CRASH"):
        os._exit(int(os.environ["VOSFX_FAKE_CRASH"]))  # a worker that dies on model load
    return PointsEngine(FakeEngine(logit_fn=_delay_fn(shift_logits(1))))

"""The engine the OFX tests give the worker and `vosfx matte` alike (tests only): the FakeEngine
of tests/fakes.py (clicks become discs of logits), drifting one low-res column a frame so
every frame's matte differs. The worker loads it with ``--engine ofx_fakes:make_engine``;
tests/ofx/vosfx_drift_fake.py is `vosfx` with the same engine.

``VOSFX_FAKE_DELAY_S`` slows every step (cancel tests); ``VOSFX_FAKE_CRASH=N`` makes the
worker exit with status N when it loads the engine (a worker that dies on start);
``VOSFX_FAKE_WARNING`` is a warning of the engine (how the model runs);
``VOSFX_FAKE_PREPARE_FAIL`` makes the idle preparation of a frame for a point raise.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fakes.py

from fakes import FakeEngine, shift_logits


def _slowed(fn):
    delay_s = float(os.environ.get("VOSFX_FAKE_DELAY_S", "0") or 0)
    if delay_s <= 0:
        return fn

    def slow(frame_index, obj_id, base):
        time.sleep(delay_s)
        return fn(frame_index, obj_id, base)

    return slow


def _prepare_fails(*_args, **_kwargs):
    raise RuntimeError("the preparation broke (VOSFX_FAKE_PREPARE_FAIL)")


def make_engine(model=None, progress=None) -> FakeEngine:
    if os.environ.get("VOSFX_FAKE_PREPARE_FAIL"):
        from vosfx.session import corrections

        corrections.prepare = _prepare_fails
    if os.environ.get("VOSFX_FAKE_CRASH"):
        os._exit(int(os.environ["VOSFX_FAKE_CRASH"]))
    if model is not None:  # the effect's Model as the real loader reads it (no download)
        from vosfx.engine.bundle import checkpoint_identity

        checkpoint_identity(model.name)
    engine = FakeEngine(logit_fn=_slowed(shift_logits(1)))
    if os.environ.get("VOSFX_FAKE_WARNING"):
        engine.runtime_warnings.append(os.environ["VOSFX_FAKE_WARNING"])
    return engine


def make_real_engine(model=None, progress=None):
    """SAM 2.1 tiny on the torch backend from ``$VOSFX_TEST_CKPT`` (a seeded random-weight
    checkpoint, tests/ckpt.py) at ``$VOSFX_TEST_IMAGE_SIZE``: the real tracker, small and fast."""
    from vosfx.config import ModelConfig
    from vosfx.engine import load_engine

    return load_engine(
        ModelConfig(
            backend="torch",
            device="cpu",
            threads=1,
            image_size=int(os.environ["VOSFX_TEST_IMAGE_SIZE"]),
            checkpoint=os.environ["VOSFX_TEST_CKPT"],
        )
    )

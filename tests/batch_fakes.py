"""Engine factories for batch tests: importable by name (``batch_fakes:fake_engine``) from
spawned worker processes and Ray actors, which get tests/ on their PYTHONPATH."""

from __future__ import annotations

import os
import time

from fakes import FakeEngine

# Seconds each frame takes, so a test can kill a worker mid-job. Read per step so a test can
# set it in the environment the workers inherit.
DELAY_ENV = "VOSFX_TEST_FRAME_DELAY_S"


class _SlowSession:
    """A FakeSession whose every step takes ``delay_s`` (everything else passes through)."""

    def __init__(self, session, delay_s: float) -> None:
        self.session, self.delay_s = session, delay_s

    def __getattr__(self, name):
        return getattr(self.session, name)

    def step(self, frame, pass_ids, **kw):
        time.sleep(self.delay_s)
        return self.session.step(frame, pass_ids, **kw)


class SlowFakeEngine(FakeEngine):
    def __init__(self, delay_s: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delay_s = delay_s

    def start(self, info, memory):
        session = super().start(info, memory)
        delay = self.delay_s
        if delay is None:
            delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        return _SlowSession(session, delay) if delay > 0 else session


def fake_engine(model_config) -> FakeEngine:
    """ModelConfig -> a FakeEngine (slowed by $VOSFX_TEST_FRAME_DELAY_S when set)."""
    return SlowFakeEngine(model_id=f"fake:{model_config.name}")


def slow_fake_engine(model_config) -> FakeEngine:
    """A FakeEngine taking 0.15 s a frame (for killing a Ray worker mid-job: Ray workers do
    not see environment changes made after the cluster started)."""
    return SlowFakeEngine(0.15, model_id=f"fake:{model_config.name}")


def crash_loading_engine(model_config) -> FakeEngine:
    """A model whose loading kills the process (as a native crash or the OOM killer would),
    leaving only what it printed on stderr."""
    import sys

    print("fatal: the checkpoint's weights are corrupt (from the native loader)", file=sys.stderr)
    sys.stderr.flush()
    os._exit(3)


class _DyingSession(_SlowSession):
    def step(self, frame, pass_ids, **kw):
        import sys

        print("fatal: out of device memory in step", file=sys.stderr)
        sys.stderr.flush()
        os._exit(4)


class _DyingEngine(FakeEngine):
    def start(self, info, memory):
        return _DyingSession(super().start(info, memory), 0.0)


def dying_engine(model_config) -> FakeEngine:
    """Loads fine; the worker process dies in the first frame of every job."""
    return _DyingEngine(model_id=f"fake:{model_config.name}")


def clip_with_mask(folder, name: str, n: int = 8, width: int = 64, height: int = 48):
    """``folder/<name>.mp4`` (the moving square) and ``folder/<name>.mask.png`` (its frame-0
    mask). Returns (clip path, mask path)."""
    from pathlib import Path

    import cv2
    import numpy as np
    from media import make_clip, square_box

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip = make_clip(folder / f"{name}.mp4", n=n, width=width, height=height)
    x0, y0, x1, y1 = square_box(0, width, height)
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 255
    mask_path = folder / f"{name}.mask.png"
    cv2.imwrite(str(mask_path), mask)
    return clip, mask_path

"""The `vosfx` command with the test double FakeEngine instead of SAM 2 (tests only).

Host plugins under test run ``[sys.executable, "tests/bin/vosfx_fake.py", ...]`` where a user's
host runs ``vosfx``: the real CLI, job parsing, pipeline, writers and JSON-lines protocol, with
an engine that needs no weights. ``VOSFX_FAKE_DELAY_S`` (float, default 0) sleeps that long per
frame and object, so a test can cancel a render half-way. ``VOSFX_FAKE_MATTE=column``: frame
k's matte is low-res column k (a bar 1/64 of the width wide at x = k/64 of it), prompted frames
included, whatever their prompt, so a host test can see which source frame a matte belongs to.
``VOSFX_FAKE_WARNING``: a warning of the engine (how the model runs), said by the run.
``VOSFX_FAKE_DOWNLOAD_S``: loading the engine reports a 100 MiB model download over that
many seconds through the ``progress`` callback its caller gives, as a first run's does.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fakes.py

from fakes import LOGIT_SCALE, LOWRES, FakeEngine

import vosfx.cli
import vosfx.engine


def _slow(delay_s: float):
    def fn(frame_index, obj_id, base):
        time.sleep(delay_s)
        return base

    return fn


def _column(frame_index, obj_id, base):
    logits = np.full((LOWRES, LOWRES), -LOGIT_SCALE, np.float32)
    logits[:, min(frame_index, LOWRES - 1)] = LOGIT_SCALE
    return logits


def main() -> None:
    delay_s = float(os.environ.get("VOSFX_FAKE_DELAY_S", "0") or 0)
    logit_fn = _slow(delay_s) if delay_s > 0 else None
    column = os.environ.get("VOSFX_FAKE_MATTE") == "column"
    if column:
        logit_fn = _column
    warning = os.environ.get("VOSFX_FAKE_WARNING")

    download_s = float(os.environ.get("VOSFX_FAKE_DOWNLOAD_S", "0") or 0)

    def load_engine(model, **kw):
        progress = kw.get("progress")
        if download_s > 0 and progress is not None:
            total = 100 << 20
            for i in range(1, 21):
                time.sleep(download_s / 20)
                progress(total * i // 20, total)
        engine = FakeEngine(logit_fn=logit_fn, prompts_too=column)
        if warning:
            engine.runtime_warnings.append(warning)
        return engine

    vosfx.engine.load_engine = load_engine
    vosfx.cli.main()


if __name__ == "__main__":
    main()

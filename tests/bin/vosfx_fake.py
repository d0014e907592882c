"""The `vosfx` command with the test double FakeEngine instead of SAM 2 (tests only).

Host plugins under test run ``[sys.executable, "tests/bin/vosfx_fake.py", ...]`` where a user's
host runs ``vosfx``: the real CLI, job parsing, pipeline, writers and JSON-lines protocol, with
an engine that needs no weights. ``VOSFX_FAKE_DELAY_S`` (float, default 0) sleeps that long per
frame and object, so a test can cancel a render half-way.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fakes.py

from fakes import FakeEngine

import vosfx.cli
import vosfx.engine


def _slow(delay_s: float):
    def fn(frame_index, obj_id, base):
        time.sleep(delay_s)
        return base

    return fn


def main() -> None:
    delay_s = float(os.environ.get("VOSFX_FAKE_DELAY_S", "0") or 0)
    logit_fn = _slow(delay_s) if delay_s > 0 else None
    vosfx.engine.load_engine = lambda model, **kw: FakeEngine(logit_fn=logit_fn)
    vosfx.cli.main()


if __name__ == "__main__":
    main()

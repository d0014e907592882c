"""The `vosfx` command with the FakeEngine of ofx_fakes.py (tests only), so the
OFX tests compare the effect's alpha with what `vosfx matte` writes for the same clicks."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ofx_fakes

import vosfx.cli
import vosfx.engine

if __name__ == "__main__":
    vosfx.engine.load_engine = lambda model, **kw: ofx_fakes.make_engine(model)
    vosfx.cli.main()

"""Shared fixtures. Real media comes from ../shared/data; tests that need it skip with a
reason when it is absent (a user's checkout has none)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared test media), which is absent")
    return path


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    """An empty user config dir and model cache, so tests never read the user's own."""
    monkeypatch.setenv("VOSFX_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("VOSFX_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(autouse=True)
def _fail_on_logged_error(caplog):
    """A test that logs an error fails, even if it otherwise passes (PySceneDetect's habit)."""
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    if errors:
        pytest.fail(f"logged errors: {[r.getMessage() for r in errors]}")

"""Fixtures the OpenFX tests share: the POSIX bundle with its test host, and the clip the host
serves (ofx_harness.py)."""

from __future__ import annotations

import pytest
from ofx_harness import build, make_clip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The POSIX effect and its test host (on Linux: the reference the Windows build equals)."""
    return build(tmp_path_factory.mktemp("ofx-build"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("ofx-clip"))

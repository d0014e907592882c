"""The package runs on every Python that pyproject.toml declares: a static check (vermin) that
no module needs a newer Python than ``requires-python``'s minimum, and the tools agree on it.
The suite itself is run on each declared minor version (docs/benchmarks/install.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> str:
    return (REPO / "pyproject.toml").read_text(encoding="utf-8")


def minimum() -> tuple[int, int]:
    found = re.search(r'^requires-python = ">=(\d+)\.(\d+)"', _pyproject(), flags=re.MULTILINE)
    assert found, "requires-python must be a plain '>=X.Y'"
    return int(found[1]), int(found[2])


def test_tools_target_the_declared_minimum():
    major, minor = minimum()
    text = _pyproject()
    assert f'target-version = "py{major}{minor}"' in text  # ruff
    assert re.search(
        rf'^classifiers = \[(?s:.*?)"Programming Language :: Python :: '
        rf'{major}\.{minor}"',
        text,
        flags=re.MULTILINE,
    )


def test_no_module_needs_a_newer_python_than_declared():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (it comes with the dev extra)")
    major, minor = minimum()
    out = subprocess.run(
        [
            vermin,
            f"-t={major}.{minor}-",
            "--violations",
            "--no-tips",
            "--eval-annotations",
            "--backport",
            "typing_extensions",
            "vosfx",
            "plugins",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr

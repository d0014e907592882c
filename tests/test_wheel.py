"""The wheel carries the built-in presets and the host plugins (read with importlib.resources
from an installed vosfx, where there is no checkout beside it)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_presets_and_plugins(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("vosfx-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = {p.name for p in (REPO / "presets").glob("*.toml")}
    assert {f"vosfx/_builtin_presets/{n}" for n in presets} <= names
    plugin_files = {
        str(p.relative_to(REPO / "plugins"))
        for p in (REPO / "plugins").rglob("*")
        if p.suffix in (".py", ".md") and "__pycache__" not in p.parts
    }
    assert {f"vosfx/_plugins/{n}" for n in plugin_files} <= names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    # the graph templates that let a torch-less install matte (vosfx.engine.template)
    templates = {
        str(p.relative_to(REPO))
        for p in (REPO / "vosfx/engine/templates").rglob("*")
        if p.is_file() and ".partial" not in str(p)
    }
    assert templates and templates <= names
    assert "vosfx/engine/templates/sam2.1_hiera_t-1024/template.json" in names
    # vosfx studio: its page and its server, and the session it drives
    assert {
        "vosfx/studio/static/index.html",
        "vosfx/studio/static/studio.js",
        "vosfx/studio/static/studio.css",
        "vosfx/studio/server.py",
        "vosfx/session/clip.py",
    } <= names

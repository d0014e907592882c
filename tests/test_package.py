"""The package surface: light import, instant --version, lazy public API."""

import subprocess
import sys
import time

import vosfx


def test_import_is_light():
    code = (
        "import sys, vosfx, vosfx.cli; "
        "heavy = [m for m in ('torch', 'onnxruntime', 'av', 'cv2', 'numpy', 'sam2') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_is_instant():
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "vosfx", "--version"], capture_output=True, text=True, check=True
    )
    elapsed = time.perf_counter() - t0
    assert out.stdout.strip() == f"vosfx {vosfx.__version__}"
    assert elapsed < 3.0  # interpreter start + click; no torch/av import (those take seconds)


def test_public_api_resolves_lazily():
    for name in vosfx.__all__:
        assert getattr(vosfx, name) is not None


def test_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "vosfx", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("matte", "presets", "models", "eval", "bench", "batch", "plugins"):
        assert cmd in out


def test_an_unknown_command_is_a_usage_error():
    from click.testing import CliRunner

    from vosfx.cli import cli

    res = CliRunner().invoke(cli, ["mate", "clip.mp4"])
    assert res.exit_code == 2 and "No such command 'mate'" in res.output, res.output

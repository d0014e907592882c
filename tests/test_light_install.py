"""`pip install vosfx` without the torch extra mattes end to end: a subprocess in which torch,
sam2 and onnx cannot be imported fills the shipped graph template from a checkpoint and mattes a
clip through the CLI; its matte equals the one from a bundle exported with torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

NO_TORCH_CLI = textwrap.dedent("""
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "sam2", "torchvision", "onnx"):
                raise ImportError(f"test: {name} is not installed here")
            return None

    sys.meta_path.insert(0, _NoTorch())
    from vosfx.cli import main

    try:
        main(sys.argv[1:])
    finally:
        heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "sam2", "onnx"})
        print("HEAVY", heavy, file=sys.stderr)
""")


def _vosfx(tmp_path: Path, args: list[str], *, no_torch: bool) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        VOSFX_OFFLINE="1",
        VOSFX_HOME=str(tmp_path / "cache"),
        VOSFX_CONFIG_DIR=str(tmp_path / "config"),
    )
    cmd = [sys.executable, "-c", NO_TORCH_CLI] if no_torch else [sys.executable, "-m", "vosfx"]
    return subprocess.run(
        cmd + [str(a) for a in args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )


@pytest.mark.slow
def test_matte_without_torch_or_onnx_equals_the_torch_export(tmp_path):
    pytest.importorskip("torch")  # only to write the seeded checkpoint and the reference
    from ckpt import make_checkpoint
    from media import make_clip

    ckpt, _ = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")  # found as sam2.1-tiny's file
    make_clip(tmp_path / "clip.mp4", n=2, width=64, height=48, faststart=True)
    matte = [
        "matte",
        tmp_path / "clip.mp4",
        "--point",
        "30,20",
        "--checkpoint",
        ckpt,
        "-f",
        "png16-matte",
        "--backend",
        "onnx",
        "--threads",
        "2",
        "-o",
    ]
    light = _vosfx(tmp_path, [*matte, tmp_path / "light"], no_torch=True)
    assert light.returncode == 0, light.stderr[-3000:]
    assert "HEAVY []" in light.stderr
    assert "filling the shipped ONNX graphs" in light.stderr
    entries = list((tmp_path / "cache" / "onnx").iterdir())
    bundles = [p for p in entries if p.is_dir()]  # beside each: its lock file (exclusive_lock)
    assert [p.name for p in entries if not p.is_dir()] == [f"{bundles[0].name}.lock"]
    assert len(bundles) == 1 and "template" in (bundles[0] / "manifest.json").read_text()
    # memory attention in query blocks and cut for the int16 kernel came ready-made with the
    # template (no onnx package)
    man = json.loads((bundles[0] / "manifest.json").read_text())
    parts = {f"memory_attention.{i}": f"memory_attention.part{i}.onnx" for i in range(9)}
    parts.update({f"image_encoder.{i}": f"image_encoder.part{i}.onnx" for i in range(4)})
    assert man["variants"] == {
        "cpu": {"memory_attention": "memory_attention.cpu.onnx"},
        "parts": parts,
    }
    assert (bundles[0] / "memory_attention.cpu.onnx").is_file()
    assert all((bundles[0] / file).is_file() for file in parts.values())

    # the same clip with a bundle exported by torch (the template's bundle moved aside)
    bundles[0].rename(tmp_path / "template_bundle")
    export = _vosfx(tmp_path, ["models", "export", ckpt, "-q"], no_torch=False)
    assert export.returncode == 0, export.stderr[-3000:]
    full = _vosfx(tmp_path, [*matte, tmp_path / "full"], no_torch=False)
    assert full.returncode == 0, full.stderr[-3000:]
    light_pngs = sorted((tmp_path / "light").glob("*.png"))
    full_pngs = sorted((tmp_path / "full").glob("*.png"))
    assert len(light_pngs) == len(full_pngs) == 2
    for a, b in zip(light_pngs, full_pngs):
        diff = np.abs(np.asarray(Image.open(a), np.int32) - np.asarray(Image.open(b), np.int32))
        assert diff.max() <= 2, (a.name, diff.max())  # 16-bit codes: float rounding only

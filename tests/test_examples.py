"""The README's first command and the bundled API example, end to end on the real engine.

No pretrained weights exist here, so the official download cannot happen (tests/test_cache.py
proves the download against a local server). Instead a seeded random-weight checkpoint with the
official layout is imported into a temporary cache as sam2.1-tiny, exactly as a user imports a
file they got elsewhere, and everything after that is the real path: ONNX bundle exported on
first use, ONNX Runtime tracking, refinement, ProRes 4444 writer, sidecar. The one deviation:
a user config sets image_size 128 so the clip's frames run in seconds (the 1024 path is covered by the
parity tests). This proves the plumbing, not segmentation quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ckpt import make_checkpoint
from click.testing import CliRunner

from vosfx.cli import cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
N_FRAMES = 8  # examples/make_example.py's N


@pytest.fixture
def imported_tiny(tmp_path, config_home):
    ckpt, sha = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    r = CliRunner().invoke(
        cli, ["models", "import", str(ckpt), "--as", "sam2.1-tiny", "--trust-unverified"]
    )
    assert r.exit_code == 0, r.output
    cfg = config_home / "config"
    cfg.mkdir()
    (cfg / "config.toml").write_text("[model]\nimage_size = 128\n")
    return sha


def _decode(path: Path, fmt: str = "yuva444p16le"):
    """[(time in seconds as a Fraction, (C, H, W) planes)] of every frame."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(f.pts * f.time_base, f.to_ndarray(format=fmt)) for f in c.decode(s)]


@pytest.mark.slow
def test_readme_first_command(tmp_path, imported_tiny, monkeypatch):
    cmd = "vosfx matte examples/ball.mp4 examples/ball_mask.png -o ball_matte.mov"
    assert cmd in README  # the test runs what the README says
    monkeypatch.chdir(REPO)
    out = tmp_path / "ball_matte.mov"
    args = cmd.split()[1:-1] + [str(out)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    frames = _decode(out)
    assert len(frames) == N_FRAMES
    source = _decode(REPO / "examples" / "ball.mp4", "yuv420p")
    assert [t for t, _ in frames] == [t for t, _ in source]  # same timestamps, frame for frame
    alpha = np.stack([a[..., 3] for _, a in frames]).astype(np.float64) / 65535
    assert alpha.shape == (N_FRAMES, 240, 320) and 0.0 <= alpha.min() and alpha.max() <= 1.0
    # frame 0 is the prompted frame: SAM 2 returns the prompt mask itself there, so even with
    # random weights its matte must be the ball (later frames depend on the random weights)
    from PIL import Image

    mask = np.asarray(Image.open(REPO / "examples" / "ball_mask.png")) > 127
    inter = np.logical_and(alpha[0] > 0.5, mask).sum()
    assert inter / np.logical_or(alpha[0] > 0.5, mask).sum() > 0.95
    side = json.loads(out.with_name(out.name + ".json").read_text())
    model = side["model"]
    assert (model["id"], model["sha256"]) == ("sam2.1-tiny", imported_tiny)
    # what ran it: the default runtime, every per-frame stage on ONNX Runtime's CPU provider
    runtime = model["runtime"]
    assert (runtime["backend"], runtime["precision"], runtime["device"]) == ("onnx", "fp32", "cpu")
    assert runtime["memory_arena"] == "shared" and runtime["onnxruntime"]
    for stage in ("decoder", "memory_encoder"):
        assert runtime["stages"][stage] == "onnxruntime CPUExecutionProvider", runtime
    # memory attention and the image encoder from the parts variant with the int16 kernel,
    # or the cpu variant and the whole graph, made with the bundle exported on first use
    from tests.onnx_bundle import default_stages

    for stage, said in default_stages().items():
        assert runtime["stages"][stage] == said
    assert side["frames"] == N_FRAMES and side["job"]["config"]["model"]["image_size"] == 128
    entries = list((Path(os.environ["VOSFX_HOME"]) / "onnx").iterdir())
    bundles = [p for p in entries if p.is_dir()]  # beside each: its lock file (exclusive_lock)
    assert [p.name for p in entries if not p.is_dir()] == [f"{bundles[0].name}.lock"]
    assert len(bundles) == 1 and imported_tiny[:8] in bundles[0].name  # exported on first use


@pytest.mark.slow
def test_api_example_runs(tmp_path, imported_tiny):
    out = tmp_path / "api.mov"
    env = dict(os.environ)
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "api_example.py"),
            str(REPO / "examples" / "ball.mp4"),
            str(REPO / "examples" / "ball_mask.png"),
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert f"{N_FRAMES} frames" in r.stdout and out.exists()
    assert len(_decode(out)) == N_FRAMES


def test_example_media_is_what_the_generator_makes(tmp_path):
    """examples/ball.mp4 and ball_mask.png are committed; the mask must be frame 0's ball."""
    from PIL import Image

    sys.path.insert(0, str(REPO / "examples"))
    try:
        import make_example
    finally:
        sys.path.pop(0)
    mask = np.asarray(Image.open(REPO / "examples" / "ball_mask.png")) > 127
    assert np.array_equal(mask, make_example.ball_mask(0))
    assert make_example.N == N_FRAMES == len(_decode(REPO / "examples" / "ball.mp4", "yuv420p"))

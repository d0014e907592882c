"""Memory policies end to end: the real engine (random weights) through `vosfx matte` on a clip
with a hard cut, made by splicing two real DAVIS sequences. Random weights say nothing about
accuracy; what is checked is the plumbing: the cut is found, the shot-aware policy reacts to it
at that frame, the sidecar and --report carry shots, presence, events and quality, and the
bank stays bounded."""

from __future__ import annotations

import json
import shutil

import pytest
from ckpt import make_checkpoint
from click.testing import CliRunner
from conftest import shared_data

from vosfx.cli import cli

N = 20  # frames from each sequence (shots are at least 15 frames); the cut is at frame N


@pytest.fixture
def spliced(tmp_path):
    davis = shared_data("davis")
    folder = tmp_path / "clip"
    folder.mkdir()
    for k, seq in enumerate(("blackswan", "car-shadow")):
        for i in range(N):
            shutil.copy(
                davis / "JPEGImages" / seq / f"{i:05d}.jpg", folder / f"{k * N + i:05d}.jpg"
            )
    return folder, davis / "Annotations" / "blackswan" / "00000.png"


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["rcms+shots", "sam2"])
def test_policy_on_a_spliced_clip(tmp_path, config_home, spliced, policy):
    clip, mask = spliced
    ckpt, _ = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    out = tmp_path / "out"
    r = CliRunner().invoke(
        cli,
        [
            "matte",
            str(clip),
            str(mask),
            "-o",
            str(out),
            "-f",
            "png16-matte",
            "--fps",
            "24",
            "--checkpoint",
            str(ckpt),
            "--backend",
            "torch",
            "--image-size",
            "128",
            "--memory",
            policy,
            "--report",
        ],
    )
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "out.json").read_text())
    assert len(list(out.iterdir())) == 2 * N
    mem = side["memory"]["1"]
    assert mem["policy"] == policy
    assert len(side["quality"]["1"]) == 2 * N and all(0 <= q <= 1 for q in side["quality"]["1"])
    # bounded: prompt + the recent window (num_maskmem - 1 = 6) + pointers of 15 frames
    assert mem["peak_bank_entries"] <= 1 + 16
    if policy == "rcms+shots":
        assert side["shots"]["cuts"] == [N]
        assert mem["events"].get(str(N), "").startswith("cut")
        assert f"cuts at frames {N}" in r.output
    else:
        assert side["shots"]["cuts"] == [] and mem["events"] == {}
    assert "obj 1:" in r.output


@pytest.mark.slow
def test_real_engine_on_a_range_that_starts_late(tmp_path, config_home, spliced):
    """--start/--end with the real tracker: the first frame stepped is the range's first."""
    clip, mask = spliced
    ckpt, _ = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    out = tmp_path / "out"
    r = CliRunner().invoke(
        cli,
        [
            "matte",
            str(clip),
            str(mask),
            "-o",
            str(out),
            "-f",
            "png16-matte",
            "--fps",
            "24",
            "--checkpoint",
            str(ckpt),
            "--backend",
            "torch",
            "--image-size",
            "128",
            "--start",
            "5",
            "--end",
            "12",
            "--mask-frame",
            "5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [f"out.{i:05d}.png" for i in range(5, 12)]
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["presence"]["1"][0][0] == 5 and side["frames"] == 7

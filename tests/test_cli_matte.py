"""`vosfx matte` in-process (click's CliRunner) with the test double as the engine: every bad
input gives one clear message, its documented exit code, and no half-written output."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from fakes import FakeEngine, FakeSession
from media import make_clip, moving_square_frame, truncate
from PIL import Image

import vosfx.engine
from vosfx.cli import cli


@pytest.fixture
def env(tmp_path, config_home, monkeypatch):
    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: FakeEngine())
    make_clip(tmp_path / "clip.mp4", n=10, width=96, height=64, faststart=True)
    _, mask = moving_square_frame(0, 96, 64)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    return tmp_path


def matte(*args):
    return CliRunner().invoke(cli, ["matte", *map(str, args)])


def leftovers(folder, prefix="out"):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((prefix, f".{prefix}")))


def test_matte_writes_default_prores_and_sidecar(env):
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov")
    assert r.exit_code == 0, r.output
    assert leftovers(env) == ["out.mov", "out.mov.json"]
    assert r.output.strip().endswith("out.mov")


def test_default_output_name_beside_input(env):
    r = matte(env / "clip.mp4", env / "mask.png", "--preset", "png16")
    assert r.exit_code == 0, r.output
    assert (env / "clip_vosfx_png16").is_dir()


def test_json_progress_is_one_event_per_frame_then_result(env):
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "--json-progress")
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.output.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == ["start"] + ["frame"] * 10 + ["done", "result"]
    assert [e["frame"] for e in events if e["event"] == "frame"] == list(range(10))
    result = events[-1]
    assert result["outputs"] == [str(env / "out.mov")]
    assert result["presence"] == {"1": [[0, 9, True]]}


def test_report_prints_presence(env):
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "--report")
    assert r.exit_code == 0, r.output
    assert "obj 1: present throughout" in r.output and "shots: 1" in r.output


def _zero_frame_video(path):
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
    return path


@pytest.mark.parametrize(
    "case, code, fragment",
    [
        ("missing", 4, "found nothing at"),
        ("not_video", 4, ""),
        ("truncated", 4, ""),
        ("zero_frames", 4, ""),
        ("mask_size", 5, "--fit"),
        ("empty_mask", 5, "empty"),
        ("mask_past_end", 5, "outside"),
        ("missing_folder", 6, ""),
        ("exists", 6, "exists"),
        ("bad_preset_key", 3, "unknown key [refine] feathr"),
        ("unknown_preset", 3, "unknown preset"),
    ],
)
def test_bad_input(env, case, code, fragment):
    clip, mask, out = env / "clip.mp4", env / "mask.png", env / "out.mov"
    extra = []
    if case == "missing":
        clip = env / "nope.mp4"
    elif case == "not_video":
        clip = env / "notes.mp4"
        clip.write_text("this is not a video\n" * 50)
    elif case == "truncated":
        clip = truncate(make_clip(env / "long.mp4", n=60, width=96, height=64, faststart=True), 0.5)
    elif case == "zero_frames":
        clip = _zero_frame_video(env / "empty.mp4")
    elif case == "mask_size":
        Image.new("L", (50, 40), 255).save(env / "small.png")
        mask = env / "small.png"
    elif case == "empty_mask":
        Image.new("L", (96, 64), 0).save(env / "blank.png")
        mask = env / "blank.png"
    elif case == "mask_past_end":
        extra = ["--mask-frame", "50"]
    elif case == "missing_folder":
        out = env / "no" / "such" / "out.mov"
    elif case == "exists":
        out.write_bytes(b"keep me")
    elif case == "bad_preset_key":
        (env / "config" / "presets").mkdir(parents=True)
        (env / "config" / "presets" / "mine.toml").write_text("[refine]\nfeathr_px = 2\n")
        extra = ["--preset", "mine"]
    elif case == "unknown_preset":
        extra = ["--preset", "nope"]
    r = matte(clip, mask, "-o", out, *extra)
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vosfx: error: "), r.output
    assert fragment in lines[0]
    if case == "exists":
        assert out.read_bytes() == b"keep me"
    else:
        assert leftovers(env) == [], leftovers(env)


def test_fit_scales_a_smaller_mask(env):
    Image.new("L", (48, 32), 0).save(env / "small.png")
    img = np.zeros((32, 48), np.uint8)
    img[:8, :12] = 255
    Image.fromarray(img).save(env / "small.png")
    r = matte(env / "clip.mp4", env / "small.png", "-o", env / "out.mov", "--fit")
    assert r.exit_code == 0, r.output


def test_disk_full_while_writing_leaves_nothing(env, monkeypatch):
    from vosfx.io.writers.video import VideoWriter

    calls = {"n": 0}
    real = VideoWriter._write

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(VideoWriter, "_write", flaky)
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov")
    assert r.exit_code == 6 and "disk full" in r.output.lower(), r.output
    assert leftovers(env) == []


def test_ctrl_c_mid_render_exits_130_and_leaves_nothing(env, monkeypatch):
    real = FakeSession.step

    def interrupted(self, frame, **kw):
        if frame.index == 4:
            raise KeyboardInterrupt
        return real(self, frame, **kw)

    monkeypatch.setattr(FakeSession, "step", interrupted)
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "--extra-format", "png16")
    assert r.exit_code == 130, r.output
    assert "cancelled" in r.output
    assert leftovers(env) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions; "
                    "the writers' tests cover read-only folders another way")
def test_read_only_folder(env):
    ro = env / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    r = matte(env / "clip.mp4", env / "mask.png", "-o", ro / "out.mov")
    assert r.exit_code == 6, r.output


def test_json_progress_error_event(env):
    r = matte(env / "clip.mp4", env / "missing.png", "-o", env / "out.mov", "--json-progress")
    assert r.exit_code == 5, r.output
    first = json.loads(r.output.splitlines()[0])
    assert first["event"] == "error" and first["kind"] == "prompt" and first["exit_code"] == 5


def test_no_prompt_is_a_usage_error(env):
    r = matte(env / "clip.mp4", "-o", env / "out.mov")
    assert r.exit_code == 3 and "no prompt" in r.output


def test_composite_over_a_colour_from_the_command_line(env):
    import av

    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "-f", "composite",
              "--background", "#00ff00")
    assert r.exit_code == 0, r.output
    with av.open(str(env / "out.mov")) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    import cv2

    _, mask = moving_square_frame(0, 96, 64)
    near = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    background = first[~near].astype(int)  # 4 px away from the soft edge and chroma bleed
    assert np.abs(background - (0, 255, 0)).max() < 12
    assert np.abs(first[mask].astype(int).mean(0) - (0, 255, 0)).max() > 100  # object kept


@pytest.mark.parametrize("start, expected", [(0, "01:00:00:00"), (3, "01:00:00:03")])
def test_outputs_carry_the_source_timecode(env, start, expected):
    import av

    src = env / "tc.mov"
    with av.open(str(src), "w") as out:
        s = out.add_stream("prores_ks", rate=24)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv422p10le"
        s.metadata["timecode"] = "01:00:00:00"
        for i in range(8):
            img, _ = moving_square_frame(i, 96, 64)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode())
    r = matte(src, env / "mask.png", "-o", env / "out.mov", "--start", start,
              "--mask-frame", start)
    assert r.exit_code == 0, r.output
    with av.open(str(env / "out.mov")) as c:
        assert c.streams.video[0].metadata.get("timecode") == expected
    side = json.loads((env / "out.mov.json").read_text())
    assert side["source"]["first_frame_timecode"] == expected

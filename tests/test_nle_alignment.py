"""Outputs line up with their source in an editor: real-world sources made by FFmpeg's own
command-line tool (an edit-list cut, HDR, anamorphic), rendered by ``vosfx matte`` and
read back by ffprobe / ffmpeg (an independent demuxer and decoder, as an editor's)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from fakes import FakeEngine

import vosfx.engine
from vosfx.cli import cli

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(
    not (FFMPEG and FFPROBE),
    reason="needs FFmpeg's command-line tools (apt-get install ffmpeg; .ci/run installs them)",
)


def _ffmpeg(*args: str) -> bytes:
    return subprocess.run(
        [FFMPEG, "-v", "error", "-y", *args], check=True, capture_output=True
    ).stdout


def _stream(path, entries: str, select: str = "v:0") -> dict:
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-select_streams", select, "-count_frames"]
        + ["-show_entries", f"stream={entries}", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)["streams"][0]


def _gray(path, width: int, height: int) -> np.ndarray:
    """(N, H, W) int luma of every frame as ffmpeg shows it."""
    raw = _ffmpeg("-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-")
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width).astype(int)


@pytest.fixture
def fake_engine(monkeypatch, tmp_path):
    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: FakeEngine())
    monkeypatch.setenv("VOSFX_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VOSFX_CONFIG_DIR", str(tmp_path / "config"))


def _matte(src, out, *args: str) -> None:
    r = CliRunner().invoke(
        cli, ["matte", str(src), "--point", "10,10", "-o", str(out), "--no-sidecar", *args]
    )
    assert r.exit_code == 0, (r.output, r.exception)


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    """An MP4 cut at 1.3 s without re-encoding (``ffmpeg -ss 1.3 -c copy``), what trimming
    on a phone or in a quick editor makes: the packets from the keyframe before the in point
    stay in the file (B-frames, negative timestamps) and an edit list hides them. 4 s at 25
    fps, a keyframe every 12 frames: 76 packets, 67 frames shown."""
    folder = tmp_path_factory.mktemp("cut")
    whole, cut = folder / "whole.mp4", folder / "cut.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=4",
        "-f", "lavfi", "-i", "sine=f=440:d=4",
        "-c:v", "libx264", "-bf", "3", "-g", "12", "-c:a", "aac", str(whole),
    )  # fmt: skip
    _ffmpeg("-ss", "1.3", "-i", str(whole), "-c", "copy", str(cut))
    return cut


@pytest.mark.parametrize("start", [0, 50])
def test_an_edit_list_cut_renders_the_frames_an_editor_shows(cut, fake_engine, tmp_path, start):
    shown = _gray(cut, 64, 48)
    assert len(shown) == 67 and int(_stream(cut, "nb_frames")["nb_frames"]) == 76
    out = tmp_path / "out.mov"
    _matte(cut, out, "--mask-frame", str(start), "--start", str(start))
    assert int(_stream(out, "nb_read_frames")["nb_read_frames"]) == 67 - start
    # the output's first picture is the source's frame `start` as ffmpeg shows it
    first = _gray(out, 64, 48)[0]
    errors = np.abs(shown - first[None]).mean(axis=(1, 2))
    assert int(np.argmin(errors)) == start and errors[start] < 2.0


@pytest.mark.parametrize(
    ("trc", "fmt", "ext"),
    [
        ("smpte2084", "prores4444", "mov"),
        ("arib-std-b67", "prores4444", "mov"),
        ("smpte2084", "webm-alpha", "webm"),
        ("arib-std-b67", "preview", "mp4"),
    ],
)
def test_hdr_outputs_keep_the_sources_primaries_and_transfer(fake_engine, tmp_path, trc, fmt, ext):
    # ffprobe reports what a decoder reads, ProRes's frame headers included: a header that
    # says "unspecified" makes an FFmpeg-based editor take a PQ/HLG matte for SDR BT.709
    src = tmp_path / "hdr.mov"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=0.2",
        "-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-color_primaries", "bt2020",
        "-color_trc", trc, "-colorspace", "bt2020nc", "-x265-params", "log-level=none",
        str(src),
    )  # fmt: skip
    out = tmp_path / f"out.{ext}"
    _matte(src, out, "-f", fmt)
    tags = "color_space,color_primaries,color_transfer,color_range"
    assert _stream(out, tags) == _stream(src, tags) | {"color_range": "tv"}


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [("prores4444", "mov"), ("prores422hq-matte", "mov"), ("qtrle", "mov"),
     ("h264-matte", "mp4"), ("preview", "mp4")],
)  # fmt: skip
@pytest.mark.parametrize(("rotate", "want"), [(None, "4:3"), ("90", "3:4")])
def test_anamorphic_outputs_are_shown_as_wide_as_the_source(
    fake_engine, tmp_path, fmt, ext, rotate, want
):
    # 96x54 stored with pixels 4/3 wide (HDV's 1440x1080 in small), shown 128x54: an output
    # tagged square is shown 96 wide, its matte squeezed against the picture under it
    src = tmp_path / "sar.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=96x54:rate=25:duration=0.12",
        "-vf", "setsar=4/3", "-c:v", "libx264", str(src),
    )  # fmt: skip
    if rotate:  # a quarter turn: the pixels are then 3/4 wide as shown
        turned = tmp_path / "turned.mp4"
        _ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v", f"rotate={rotate}", str(turned))
        src = turned
    out = tmp_path / f"out.{ext}"
    _matte(src, out, "-f", fmt)
    assert _stream(out, "sample_aspect_ratio")["sample_aspect_ratio"] == want


@pytest.mark.parametrize("fmt", ["exr16", "exr32", "exr-layers"])
def test_anamorphic_exr_mattes_carry_the_pixel_aspect(fake_engine, tmp_path, fmt):
    # EXR's header has a pixelAspectRatio (a pixel's width over its height), which Nuke and
    # FFmpeg read: the matte of a 4/3-wide-pixel source says 4/3, a square source's 1.
    # (PNG sequences say nothing: FFmpeg reads pHYs's two numbers the other way round from
    # the PNG specification, so a pHYs would be shown wrong in one of them; README, Output
    # formats.)
    pytest.importorskip("OpenEXR")
    import OpenEXR

    for sar, want in (("4/3", 4 / 3), ("1/1", 1.0)):
        src = tmp_path / f"sar{sar.replace('/', '-')}.mp4"
        _ffmpeg(
            "-f", "lavfi", "-i", "testsrc2=size=96x54:rate=25:duration=0.12",
            "-vf", f"setsar={sar}", "-c:v", "libx264", str(src),
        )  # fmt: skip
        out = tmp_path / f"{src.stem}_{fmt}"
        _matte(src, out, "-f", fmt)
        first = min(out.glob("*.exr"))
        with OpenEXR.File(str(first)) as f:
            assert f.header()["pixelAspectRatio"] == pytest.approx(want, rel=1e-6)
        if fmt != "exr-layers":  # FFmpeg's EXR decoder takes only Y or RGB(A) channels
            shown = _stream(first, "sample_aspect_ratio").get("sample_aspect_ratio", "1:1")
            assert shown == ("4:3" if sar == "4/3" else "1:1"), shown

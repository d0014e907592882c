"""Partial renders line up: audio trimmed to the rendered range and aligned to its first frame
(sample-exact for PCM, codec priming handled), video and timecode track starting together at
0 for every --start. Sources are made and outputs decoded by FFmpeg's own tools (an
independent decoder); the source has a tone burst starting exactly at 1.2 s."""

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

RATE, FPS, BURST_S = 48000, 25, 1.2
BURST = int(BURST_S * RATE)  # source sample where the burst starts: 57600


def _ffmpeg(*args: str) -> bytes:
    return subprocess.run(
        [FFMPEG, "-v", "error", "-y", *args], check=True, capture_output=True
    ).stdout


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """2 s, 25 fps, timecode 01:00:00:00; mono 48 kHz silence with a 1 kHz burst (cosine, so
    its first sample is at full level) over [1.2 s, 1.3 s): PCM in mov, and AAC in mp4 (AAC
    adds 1024 priming samples that a decoder must drop)."""
    folder = tmp_path_factory.mktemp("sync")
    pcm = folder / "src_pcm.mov"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=64x48:rate={FPS}:duration=2",
        "-f",
        "lavfi",
        "-i",
        f"aevalsrc='if(gte(t,{BURST_S})*lt(t,1.3),0.5*cos(2*PI*1000*(t-{BURST_S})),0)'"
        f":s={RATE}:d=2:c=mono",
        "-c:v",
        "mpeg4",
        "-q:v",
        "2",
        "-c:a",
        "pcm_s16le",
        "-timecode",
        "01:00:00:00",
        "-shortest",
        str(pcm),
    )
    aac = folder / "src_aac.mp4"
    _ffmpeg(
        "-i",
        str(pcm),
        "-c:v",
        "copy",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-timecode",
        "01:00:00:00",
        str(aac),
    )
    return {"pcm": pcm, "aac": aac}


@pytest.fixture
def fake_engine(monkeypatch, tmp_path):
    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: FakeEngine())
    monkeypatch.setenv("VOSFX_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VOSFX_CONFIG_DIR", str(tmp_path / "config"))


def _matte(src, fmt: str, start: int, end: int, out) -> None:
    r = CliRunner().invoke(
        cli,
        [
            "matte",
            str(src),
            "--point",
            "10,10",
            "--mask-frame",
            str(start),
            "-f",
            fmt,
            "--start",
            str(start),
            "--end",
            str(end),
            "-o",
            str(out),
            "--no-sidecar",
        ],
    )
    assert r.exit_code == 0, (r.output, r.exception)


def _streams(path) -> list[dict]:
    out = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_tag_string,start_time:stream_tags=timecode",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)["streams"]


def _audio(path) -> np.ndarray:
    return np.frombuffer(
        _ffmpeg("-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1", "-ar", str(RATE), "-"),
        np.int16,
    )


def _onset(samples: np.ndarray) -> int:
    loud = np.flatnonzero(np.abs(samples) > 3000)  # the burst is at 16384; silence is 0
    assert loud.size, "no burst in the output"
    return int(loud[0])


# (source, format, output codec): PCM outputs are checked to the sample; AAC and Opus outputs
# add their own priming, which their containers signal, so the onset must still be exact
CASES = [
    ("pcm", "prores4444", "mov"),
    ("aac", "prores4444", "mov"),
    ("pcm", "h264-matte", "mp4"),
    ("pcm", "webm-alpha", "webm"),
]


@pytest.mark.parametrize(("src", "fmt", "ext"), CASES)
@pytest.mark.parametrize(("start", "end"), [(0, 50), (20, 40), (7, 33)])
def test_audio_is_the_rendered_range_aligned_to_the_first_frame(
    sources, fake_engine, tmp_path, src, fmt, ext, start, end
):
    out = tmp_path / f"out.{ext}"
    _matte(sources[src], fmt, start, end, out)
    audio = _audio(out)
    assert _onset(audio) - (BURST - start * RATE // FPS) == 0  # samples
    want = (end - start) * RATE // FPS
    if ext == "mp4":  # AAC pads its last frame (1024 samples) and mp4 keeps the padding
        assert want <= len(audio) < want + 1024
    else:
        assert len(audio) == want


@pytest.mark.parametrize("start", [0, 7, 20, 49])
def test_timecode_track_starts_with_the_video_for_every_start(
    sources, fake_engine, tmp_path, start
):
    out = tmp_path / "out.mov"
    _matte(sources["pcm"], "prores4444", start, 50, out)
    streams = {s["codec_type"]: s for s in _streams(out)}
    assert float(streams["video"]["start_time"]) == 0.0
    assert float(streams["audio"]["start_time"]) == 0.0
    assert streams["data"]["codec_tag_string"] == "tmcd"
    assert float(streams["data"]["start_time"]) == 0.0
    tc = f"01:00:00:{start:02d}" if start < FPS else f"01:00:01:{start - FPS:02d}"
    assert streams["video"]["tags"]["timecode"] == streams["data"]["tags"]["timecode"] == tc
    # the output's first picture is source frame `start` (0 frames of offset); compared by
    # luma, which ProRes holds as the source's codes (its chroma is upsampled to 4:4:4
    # between samples, where FFmpeg's own conversion of the 4:2:0 source repeats them: on
    # this 64x48 test pattern's colour edges the two differ by ~7 levels of RGB)
    first = np.frombuffer(
        _ffmpeg("-i", str(out), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"),
        np.uint8,
    ).astype(int)
    src = (
        np.frombuffer(
            _ffmpeg("-i", str(sources["pcm"]), "-f", "rawvideo", "-pix_fmt", "gray", "-"), np.uint8
        )
        .reshape(50, -1)
        .astype(int)
    )
    errors = np.abs(src - first[None]).mean(axis=1)
    assert int(np.argmin(errors)) == start and errors[start] < 2.0

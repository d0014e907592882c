"""`vosfx matte` in-process (click's CliRunner) with the test double as the engine: every bad
input gives one clear message, its documented exit code, and no half-written output."""

from __future__ import annotations

import json
import os

import click
import numpy as np
import pytest
from click.testing import CliRunner
from fakes import FakeEngine, FakeSession
from media import make_clip, make_sequence, moving_square_frame, truncate
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
    # another .mov format does not take the default ProRes 4444's name
    r = matte(env / "clip.mp4", env / "mask.png", "-f", "qtrle")
    assert r.exit_code == 0, r.output
    assert (env / "clip_vosfx_qtrle.mov").is_file() and not (env / "clip_vosfx.mov").exists()
    r = matte(env / "clip.mp4", env / "mask.png")
    assert r.exit_code == 0, r.output
    assert (env / "clip_vosfx.mov").is_file()


@pytest.mark.parametrize(
    "src, want",
    [
        ("pngs/shot.%04d.png", "pngs/shot_vosfx_exr32"),  # not "shot._vosfx_exr32"
        ("pngs/shot_%04d.exr", "pngs/shot_vosfx_exr32"),
        ("frames/%05d.png", "frames_vosfx_exr32"),
        ("frames", "frames_vosfx_exr32"),
        ("clip.mp4", "clip_vosfx_exr32"),
    ],
)
def test_default_output_name_of_each_kind_of_input(src, want):
    from vosfx.job import default_output

    assert default_output(src, "exr32") == want


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
        ("empty_folder", 4, "found none"),
        ("missing_folder", 6, ""),
        ("file_as_folder", 6, "is a file, not a folder"),
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
    elif case == "empty_folder":
        clip = env / "frames"
        clip.mkdir()
    elif case == "missing_folder":
        out = env / "no" / "such" / "out.mov"
    elif case == "file_as_folder":  # it said "does not exist; create it first"
        (env / "taken").write_text("a file")
        out = env / "taken" / "out.mov"
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
    # progress lines ("vosfx: long_cut.mp4: matting 60 frames") aside, one message
    lines = [
        line
        for line in r.output.splitlines()
        if line.strip() and not line.startswith(f"vosfx: {clip.name}: ")
    ]
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

    def interrupted(self, frame, pass_ids, **kw):
        if frame.index == 4:
            raise KeyboardInterrupt
        return real(self, frame, pass_ids, **kw)

    monkeypatch.setattr(FakeSession, "step", interrupted)
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "--extra-format", "png16")
    assert r.exit_code == 130, r.output
    assert "cancelled" in r.output
    assert leftovers(env) == []


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root ignores folder permissions; "
    "the writers' tests cover read-only folders another way",
)
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


def test_json_progress_error_event_for_a_usage_error(env):
    """plugins/README.md: a failed run prints an error event, a bad flag value included."""
    r = matte(env / "clip.mp4", env / "mask.png", "--json-progress", "--feather-px", "-2")
    assert r.exit_code == 2, r.output
    first = json.loads(r.output.splitlines()[0])
    assert first == {
        "event": "error",
        "kind": "usage",
        "message": "Invalid value for --feather-px: expected >= 0.0, found -2.0",
        "exit_code": 2,
    }


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--no-such-flag",), "No such option '--no-such-flag'"),  # a newer plugin's flag
        (("--start", "abc"), "'abc' is not a valid integer"),  # click's own type check
    ],
    ids=["unknown_option", "wrong_type"],
)
def test_json_progress_error_event_for_what_click_refuses_while_parsing(env, args, says):
    """Refused before vosfx's code runs, and still an error event for the host (a plugin newer
    than the installed vosfx passing a flag it lacks): one event, then click's usage text."""
    r = matte(env / "clip.mp4", env / "mask.png", "--json-progress", *args)
    assert r.exit_code == 2, r.output
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(events) == 1, r.stdout
    assert events[0]["event"] == "error" and events[0]["kind"] == "usage"
    assert events[0]["exit_code"] == 2 and says in events[0]["message"], events[0]
    # without --json-progress: no event, click's usage error only
    plain = matte(env / "clip.mp4", env / "mask.png", *args)
    assert plain.exit_code == 2 and not plain.stdout.startswith("{")
    # a file named --json-progress after "--" asks for nothing
    after = matte(env / "clip.mp4", *args, "--", "--json-progress")
    assert after.exit_code == 2 and not after.stdout.startswith("{")


def test_json_progress_error_event_for_a_bug(env, monkeypatch):
    """An unexpected exception (a bug) still tells the host why before the traceback: kind
    internal, exit 1."""
    import vosfx.cli.cancel

    def boom(*_a, **_k):
        raise RuntimeError("a stand-in bug")

    monkeypatch.setattr(vosfx.cli.cancel, "run_interruptible", boom)
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "--json-progress")
    assert r.exit_code == 1 and isinstance(r.exception, RuntimeError)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert events == [
        {
            "event": "error",
            "kind": "internal",
            "message": "RuntimeError: a stand-in bug",
            "exit_code": 1,
        }
    ]


def test_the_sidecar_keeps_the_jobs_paths_absolute(env, monkeypatch):
    """An output typed relative was kept as typed beside an absolute input: the sidecar did
    not say which directory it meant. Now input, output and mask are absolute."""
    monkeypatch.chdir(env)
    r = matte("clip.mp4", "mask.png", "-o", "out.mov")
    assert r.exit_code == 0, r.output
    job = json.loads((env / "out.mov.json").read_text())["job"]
    assert job["input"] == str(env / "clip.mp4") and job["output"] == str(env / "out.mov")
    assert [p["mask"] for p in job["prompts"]] == [str(env / "mask.png")]


def test_clip_black_and_white_reach_the_render_and_must_agree(env):
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "--clip-black", "0.1")
    assert r.exit_code == 0, r.output
    refine = json.loads((env / "out.mov.json").read_text())["job"]["config"]["refine"]
    assert (refine["clip_black"], refine["clip_white"]) == (0.1, 1.0)
    # each alone in range, together not: a usage error naming both flags as typed
    r = matte(env / "clip.mp4", env / "mask.png", "--clip-black", "0.6", "--clip-white", "0.5")
    assert r.exit_code == 2, r.output
    assert "Invalid value for --clip-black: expected below --clip-white (0.5), found 0.6" in (
        r.output
    )


def test_no_prompt_is_a_usage_error(env):
    r = matte(env / "clip.mp4", "-o", env / "out.mov")
    assert r.exit_code == 2 and "no prompt" in r.output


def test_no_input_and_bad_option_values_are_usage_errors(env):
    r = matte()
    assert r.exit_code == 2 and "missing INPUT" in r.output
    r = matte(env / "clip.mp4", env / "mask.png", "--objects", "a,b")
    assert r.exit_code == 2 and "--objects" in r.output
    r = matte(env / "clip.mp4", env / "mask.png", "-f", "gif")
    assert r.exit_code == 2 and "prores4444" in r.output


@pytest.mark.parametrize(
    "flag, value, fragment",
    [
        ("--reduce-chatter", "2", "expected <= 1.0, found 2.0"),
        ("--feather-px", "-1", "expected >= 0.0"),
        ("--feather-px", "nan", "expected a number (finite)"),
        ("--threads", "-1", "expected >= 0"),
        ("--image-size", "500", "a multiple of 16"),
        ("--fill-holes-px2", "-4", "expected >= 0"),
    ],
)
def test_out_of_range_flag_is_a_usage_error_naming_the_flag(env, flag, value, fragment):
    """README: a bad option value exits 2; the message names the flag as typed, not the config
    key it sets (--reduce-chatter, not [refine] temporal_strength), and nothing is written."""
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", flag, value)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for {flag}: " in r.output and fragment in r.output, r.output
    assert "[refine]" not in r.output and "[model]" not in r.output
    assert leftovers(env) == []
    job = env / "job.json"
    job.write_text(
        json.dumps(
            {
                "input": str(env / "clip.mp4"),
                "output": str(env / "out.mov"),
                "prompts": [{"frame": 0, "mask": str(env / "mask.png")}],
            }
        )
    )
    r = matte("--job", job, flag, value)  # a job file with the same flag: the same error
    assert r.exit_code == 2 and f"Invalid value for {flag}: " in r.output, r.output


def test_help_lists_format_ids_and_every_option_has_help():
    from vosfx.cli.matte import matte as command
    from vosfx.formats import FORMATS

    r = CliRunner().invoke(cli, ["matte", "--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert all(fmt in text for fmt in FORMATS)
    bare = [p.opts[-1] for p in command.params if isinstance(p, click.Option) and not p.help]
    assert bare == []


def test_progress_lines_on_stderr_when_it_is_not_a_terminal(env):
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if line.startswith("vosfx: clip.mp4:")]
    assert lines[0] == "vosfx: clip.mp4: matting 10 frames"
    assert lines[-1].startswith("vosfx: clip.mp4: done, 10 frames")
    assert "\r" not in r.stderr and "\x1b" not in r.stderr  # no terminal redraws in a log


def test_log_progress_writes_one_frame_line_every_few_seconds():
    import io

    from vosfx.cli.progress import LogProgress
    from vosfx.types import ProgressEvent

    clock = iter([0.0, 1.0, 2.0, 5.5, 6.0, 11.0, 12.0])
    out = io.StringIO()
    log = LogProgress("c.mp4", stream=out, every_s=5.0)
    from vosfx.cli import progress

    real = progress.time.monotonic
    progress.time.monotonic = clock.__next__
    try:
        log(ProgressEvent("start", total_frames=6))
        for i in range(1, 6):
            log(ProgressEvent("frame", frames_done=i, total_frames=6, fps=0.5, eta_s=2 * (6 - i)))
        log(ProgressEvent("done", frames_done=6, total_frames=6, fps=0.5))
    finally:
        progress.time.monotonic = real
    assert out.getvalue().splitlines() == [
        "vosfx: c.mp4: matting 6 frames",
        "vosfx: c.mp4: 3/6 frames, 0.50 fps, ETA 00:06",
        "vosfx: c.mp4: 5/6 frames, 0.50 fps, ETA 00:02",
        "vosfx: c.mp4: done, 6 frames, 0.50 fps",
    ]


def test_prompts_on_any_frame_for_any_object(env):
    """--mask FRAME:PATH, --point FRAME:X,Y@OBJ, --box: every object matted on every frame
    of the range, each tracked both ways from its own prompts."""
    r = matte(
        env / "clip.mp4",
        "--mask",
        f"6:{env / 'mask.png'}",
        "--point",
        "3:10,10@2",
        "--neg-point",
        "3:40,30@2",
        "--box",
        "8:50,20,80,50",
        "--obj",
        "3",
        "-o",
        env / "out.mov",
        "--json-progress",
    )
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.output.splitlines()]
    assert [e["frame"] for e in events if e["event"] == "frame"] == list(range(10))
    assert any(e["event"] == "track" for e in events)  # frames before the last prompt first
    result = events[-1]
    assert set(result["presence"]) == {"1", "2", "3"}
    for obj in ("1", "2", "3"):
        assert result["presence"][obj] == [[0, 9, True]], result["presence"]
    job = json.loads((env / "out.mov.json").read_text())["job"]
    assert sorted((p["frame"], p.get("obj_id")) for p in job["prompts"]) == [
        (3, 2),
        (6, None),
        (8, 3),
    ]


@pytest.mark.parametrize(
    "args, flag, fragment",
    [
        (["--point", "3:ten,10"], "--point", "expected a point"),
        # the value as typed, not with the sign the option adds inside
        (["--point", "-1:10,10"], "--point", "found '-1:10,10'"),
        (["--neg-point", "7:1,x"], "--neg-point", "found '7:1,x'"),
        (["--box", "2:1,2,3"], "--box", "expected a box"),
        (["--box", "2:1,1,5,5", "--box", "2:2,2,6,6"], "--box", "two boxes for frame 2"),
        (["--point", "12:10,10"], None, "outside the frames being matted"),
    ],
)
def test_bad_prompt_options_name_the_flag(env, args, flag, fragment):
    r = matte(env / "clip.mp4", *args, "-o", env / "out.mov")
    assert r.exit_code in (2, 5), r.output
    assert fragment in r.output and (flag is None or flag in r.output), r.output
    assert leftovers(env) == []


@pytest.mark.parametrize("pattern", ["", "%05d.png"])
def test_image_sequence_input_to_a_video_with_audio_on(env, pattern):
    """A folder of frames (or its printf pattern) into ProRes 4444, whose preset carries the
    source's audio: an image sequence has none, so the movie has no audio stream."""
    import av

    frames = env / "frames"
    frames.mkdir()
    for i in range(4):
        rgb, _ = moving_square_frame(i, 96, 64)
        Image.fromarray(rgb).save(frames / f"{i:05d}.png")
    out = env / "out.mov"
    r = matte(f"{frames}/{pattern}" if pattern else frames, env / "mask.png", "-o", out)
    assert r.exit_code == 0, r.output
    with av.open(str(out)) as movie:
        assert movie.streams.video[0].frames == 4
        assert not movie.streams.audio


def _plate(env):
    """plate/shot.1001.png ... shot.1006.png at 96x64 with shot.1004.png missing: positions
    0, 1, 2, 3, 4 are numbers 1001, 1002, 1003, 1005, 1006."""
    folder = make_sequence(env / "plate", n=6, width=96, height=64, name="shot.{:04d}", first=1001)
    (folder / "shot.1004.png").unlink()
    return folder / "shot.%04d.png"


def _timecode(path) -> str:
    import shutil
    import subprocess

    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("needs FFmpeg's ffprobe")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream_tags=timecode", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout)["streams"][0]["tags"]["timecode"]


def test_a_mask_saved_inside_the_plate_folder_is_one_clear_error(env):
    """`vosfx matte plate/ plate/mask.png`: the mask would have been read as the plate's
    first frame. Exit 4, one line naming the folder and the pattern to give, nothing written."""
    folder = _plate(env).parent
    (folder / "mask.png").write_bytes((env / "mask.png").read_bytes())
    r = matte(folder, folder / "mask.png", "-o", env / "out.mov")
    assert r.exit_code == 4, r.output
    lines = r.stderr.strip().splitlines()
    said = (
        f"vosfx: error: expected one image sequence in folder {folder}, found "
        f"shot.####.png (5 files); mask.png: give the one to matte as a pattern "
        f"({folder / 'shot.%04d.png'}), or move the other files out"
    )
    assert lines == [said], r.stderr
    assert not leftovers(env)
    r = matte(folder / "shot.%04d.png", folder / "mask.png", "-o", env / "out.mov")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "start, numbers, timecode, warned",
    [
        (0, [1001, 1002, 1003, 1005, 1006], "00:00:41:17", True),  # 1001 frames at 24 fps
        (3, [1005, 1006], "00:00:41:21", False),  # the gap is before the frames rendered
    ],
)
def test_numbered_plate_mattes_line_up_with_its_numbers(env, start, numbers, timecode, warned):
    """A plate numbered from 1001 with a file missing: the PNG matte carries the plate's own
    numbers at its padding, the ProRes one starts at the plate's timecode (Resolve's for an
    image sequence: its number at its rate), the gap is said once on stderr and kept in the
    sidecar, which maps every rendered frame to its number."""
    out = env / "out_matte"
    args = ["-f", "png16-matte", "--extra-format", "prores4444", "--fps", "24"]
    r = matte(_plate(env), env / "mask.png", "-o", out, *args, "--start", start,
              "--mask-frame", start)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [f"out_matte.{n}.png" for n in numbers]
    assert _timecode(env / "out_matte.prores4444.mov") == timecode
    sidecar = json.loads((env / "out_matte.json").read_text())
    assert sidecar["frame_numbers"] == {
        "pattern": "shot.%04d.png",
        "first": numbers[0],
        "last": numbers[-1],
        "missing": [[1004, 1004]] if warned else [],
        "numbers": numbers,
    }
    assert sidecar["source"]["first_frame_timecode"] == timecode
    warnings = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == (1 if warned else 0), r.stderr
    assert sidecar["warnings"] == [w.split("warning: ", 1)[1] for w in warnings]
    if warned:
        text = warnings[0]
        assert "shot.%04d.png: 1 frame number missing between 1001 and 1006 (1004)" in text
        assert "out_matte.prores4444.mov" in text and "one frame per file present" in text


@pytest.mark.parametrize(
    "args, said",
    [
        (["--background", "#102030"], "background (--background #102030) is for the composite"),
        (["--exr-rgb"], "exr_rgb (--exr-rgb) is for the exr-layers format"),
        (["--exr-compression", "piz"], "exr_compression (--exr-compression) is for the exr-layers"),
        (["--fps", "30"], "the frame rate 30 (--fps) is for image-sequence inputs; clip.mp4 is a"),
        (["--threads", "1000"], "threads 1000 (--threads) is more than the"),
    ],
)
def test_a_setting_the_render_does_not_use_or_that_slows_it_is_a_warning(env, args, said):
    """A flag typed for a format the render does not write (or --fps on a video) is said
    once, on stderr and in the sidecar, not dropped in silence; the render is as without."""
    import av

    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", *args)
    assert r.exit_code == 0, r.output
    sidecar = json.loads((env / "out.mov.json").read_text())
    assert len(sidecar["warnings"]) == 1 and said in sidecar["warnings"][0], sidecar["warnings"]
    assert [ln for ln in r.stderr.splitlines() if "warning" in ln] == [
        f"vosfx: warning: {sidecar['warnings'][0]}"
    ]
    with av.open(str(env / "clip.mp4")) as src, av.open(str(env / "out.mov")) as out:
        assert out.streams.video[0].average_rate == src.streams.video[0].average_rate
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "c.mov", "-f", "composite", *args)
    assert r.exit_code == 0, r.output
    warned = json.loads((env / "c.mov.json").read_text())["warnings"]
    assert (warned == []) == args[0].startswith("--background"), warned


def test_a_truncated_matroska_clip_renders_what_it_holds_and_says_so(env):
    """No frame count in the container: the frames there are matted (exit 0), and the
    warning says the file holds fewer than its duration implies."""
    rng = np.random.default_rng(1)
    frames = (rng.integers(0, 256, (64, 96, 3), np.uint8) for _ in range(40))
    whole = make_clip(env / "long.mkv", n=40, width=96, height=64, frames=frames)
    r = matte(truncate(whole, 0.5), env / "mask.png", "-o", env / "out.mov")
    assert r.exit_code == 0, r.output
    sidecar = json.loads((env / "out.mov.json").read_text())
    (said,) = sidecar["warnings"]
    assert f"long_cut.mkv: its duration implies 40 frames but it holds {sidecar['frames']}" in said
    assert "may be truncated" in said and sidecar["frames"] < 30


def test_a_model_name_beside_a_checkpoint_is_said_unused_or_refused_unknown(env, monkeypatch):
    """With --checkpoint the file is the model: a --model (or a preset's) beside it is said
    not used; an unknown one is still a typo (exit 7, before anything is read)."""
    (env / "mine.pt").write_bytes(b"the fake engine never reads it")
    args = [env / "clip.mp4", env / "mask.png", "--checkpoint", env / "mine.pt"]
    r = matte(*args, "--model", "sam2.1-large", "-o", env / "out.mov")
    assert r.exit_code == 0, r.output
    (said,) = json.loads((env / "out.mov.json").read_text())["warnings"]
    assert said.startswith("[model] name sam2.1-large (--model, or a preset's) is not used")
    from vosfx.engine.loader import build_engine

    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: build_engine(model))
    r = matte(*args, "--model", "sam2.1-lrge", "-o", env / "out2.mov")
    assert r.exit_code == 7 and "unknown model 'sam2.1-lrge'" in r.output, r.output
    assert leftovers(env, "out2") == []


def test_numbered_plate_gap_is_a_json_warning_event_and_in_the_result(env):
    out = env / "out.mov"
    r = matte(_plate(env), env / "mask.png", "-o", out, "--json-progress")
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.output.splitlines()]
    assert [e["event"] for e in events[:3]] == ["start", "warning", "frame"]
    assert "(1004)" in events[1]["message"] and "out.mov" in events[1]["message"]
    assert events[-1]["event"] == "result" and events[-1]["warnings"] == [events[1]["message"]]


@pytest.mark.parametrize("json_progress", [False, True])
def test_how_the_model_runs_is_said_once_and_kept_in_the_sidecar(env, monkeypatch, json_progress):
    """The engine's warnings (a GPU asked for and absent, a tier in its slower form) are said
    like the input's: once on stderr (a "warning" event under --json-progress) and in the
    result and the sidecar, after the input's own."""
    said = "--device cuda: ONNX Runtime has no CUDAExecutionProvider in this install"
    engine = FakeEngine()
    engine.runtime_warnings.append(said)
    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: engine)
    out = env / "out.mov"
    flags = ["--json-progress"] if json_progress else []
    r = matte(_plate(env), env / "mask.png", "-o", out, *flags)
    assert r.exit_code == 0, r.output
    sidecar = json.loads((env / "out.mov.json").read_text())
    assert len(sidecar["warnings"]) == 2 and "(1004)" in sidecar["warnings"][0]
    assert sidecar["warnings"][1] == said
    if json_progress:
        events = [json.loads(line) for line in r.output.splitlines()]
        warned = [e["message"] for e in events if e["event"] == "warning"]
        assert warned == sidecar["warnings"] and events[-1]["warnings"] == warned
    else:
        assert r.stderr.count(said) == 1, r.stderr


def test_numbered_plate_frames_are_positions_and_the_error_says_so(env):
    """--start and prompt frames count the plate's files from 0; one typed as a plate number
    is refused with the mapping spelled out."""
    r = matte(_plate(env), env / "mask.png", "-o", env / "out.mov", "--start", "1002")
    assert r.exit_code == 2 and "--start: 1002 is past" in r.output, r.output
    assert "frame 0 is shot.1001.png, frame 4 is shot.1006.png" in r.output, r.output
    r = matte(_plate(env), env / "mask.png", "-o", env / "out.mov", "--mask-frame", "1003")
    assert r.exit_code != 0 and "frame 0 is shot.1001.png" in r.output, r.output


def test_overwrite_replaces_an_earlier_render_of_a_numbered_plate(env):
    out = env / "out_seq"
    for _ in range(2):
        r = matte(_plate(env), env / "mask.png", "-o", out, "-f", "png16", "--overwrite")
        assert r.exit_code == 0, r.output
    assert len(list(out.iterdir())) == 5


@pytest.mark.parametrize("fmt", ["prores4444", "png16"])
def test_overwrite_never_deletes_a_folder_of_other_files(env, fmt):
    """`-o some/folder --overwrite`: a movie is a file, and a sequence folder is replaced
    whole, so a folder holding anything but an earlier render of it is refused, not deleted."""
    folder = env / "out_shots"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    r = matte(env / "clip.mp4", env / "mask.png", "-o", folder, "-f", fmt, "--overwrite")
    assert r.exit_code == 6, r.output
    assert "is a folder" in r.output, r.output
    assert (folder / "notes.txt").read_text() == "keep me"
    assert leftovers(env) == ["out_shots"]


def test_overwrite_replaces_an_earlier_sequence_render(env):
    out = env / "out_seq"
    for _ in range(2):
        r = matte(env / "clip.mp4", env / "mask.png", "-o", out, "-f", "png16", "--overwrite")
        assert r.exit_code == 0, r.output
    assert len(list(out.iterdir())) == 10


@pytest.mark.parametrize("sequence", [False, True])
def test_output_onto_the_input_is_refused(env, sequence):
    """-o naming the input itself (or the folder holding it), even with --overwrite, would
    replace the source with its matte."""
    if sequence:
        src = env / "frames"
        src.mkdir()
        for i in range(3):
            rgb, _ = moving_square_frame(i, 96, 64)
            Image.fromarray(rgb).save(src / f"frames.{i:05d}.png")
        args = [src, env / "mask.png", "-o", src, "-f", "png16"]
    else:
        src = env / "clip.mp4"
        args = [src, env / "mask.png", "-o", src]
    before = sorted(p.name for p in src.iterdir()) if sequence else src.read_bytes()
    r = matte(*args, "--overwrite")
    assert r.exit_code == 6 and "input" in r.output, r.output
    assert (sorted(p.name for p in src.iterdir()) if sequence else src.read_bytes()) == before


@pytest.mark.parametrize("pattern", [False, True])
def test_output_among_the_input_frames_is_refused(env, pattern):
    """An output inside an image folder input (a frame's name, or a new name that would add
    to the frames) or named as a pattern input's frame: refused even with --overwrite."""
    src = env / "frames"
    src.mkdir()
    for i in range(3):
        rgb, _ = moving_square_frame(i, 96, 64)
        Image.fromarray(rgb).save(src / f"frames.{i:05d}.png")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    clip = src / "frames.%05d.png" if pattern else src
    targets = [src / "frames.00001.png"] if pattern else [src / "frames.00001.png", src / "m"]
    for target in targets:
        r = matte(clip, env / "mask.png", "-o", target, "-f", "png16", "--overwrite")
        assert r.exit_code == 6, r.output
        said = "is a frame of the input" if pattern else "is inside the input's image folder"
        assert said in r.output.splitlines()[-1], r.output
        assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    if pattern:  # beside the frames, not one of them: fine
        r = matte(clip, env / "mask.png", "-o", src / "m", "-f", "png16")
        assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "extra, out, said",
    [
        ([], "mask.png", "the mask of MASK"),
        (["--mask", "3:m2.png@2"], "m2.png", "the mask of --mask 3:m2.png@2"),
        (["-f", "composite", "--background", "bg.png"], "bg.png", "the background bg.png"),
    ],
)
def test_output_onto_a_mask_or_background_is_refused(env, monkeypatch, extra, out, said):
    """Every file the render reads is kept from its outputs, not only the input: an output
    named as a mask or the composite's background replaced it with --overwrite."""
    monkeypatch.chdir(env)
    Image.open("mask.png").save("m2.png")
    Image.new("RGB", (96, 64), (0, 90, 0)).save("bg.png")
    before = {name: (env / name).read_bytes() for name in ("mask.png", "m2.png", "bg.png")}
    fmt = [] if "-f" in extra else ["-f", "png8"]
    r = matte("clip.mp4", "mask.png", *extra, *fmt, "-o", out, "--overwrite")
    assert r.exit_code == 6, r.output
    assert f"output {out} would replace {said}" in r.output.splitlines()[-1], r.output
    assert {name: (env / name).read_bytes() for name in before} == before


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--start", "-3"], "--start"),
        (["--end", "0"], "--end"),
        (["--end", "-2"], "--end"),
        (["--start", "5", "--end", "3"], "--end"),
        (["--start", "4", "--end", "4"], "--end"),
        (["--mask-frame", "-1"], "--mask-frame"),
        (["--fps", "0"], "--fps"),
        (["--fps", "inf"], "--fps"),
        (["--fps", "nan"], "--fps"),
    ],
)
def test_bad_range_and_rate_name_their_flag(env, args, flag):
    """A frame range or rate that can never work is a usage error naming the flag typed, not
    a complaint about another flag, an input error or a traceback."""
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", *args)
    assert r.exit_code == 2, r.output
    assert flag in r.output.splitlines()[-1], r.output
    assert leftovers(env) == []


def test_end_past_the_clip_renders_to_its_last_frame(env):
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "--end", "20")
    assert r.exit_code == 0, r.output
    sidecar = json.loads((env / "out.mov.json").read_text())
    assert sidecar["frames"] == 10


def test_two_masks_for_one_object_on_one_frame_are_refused_naming_both(env):
    """Which one would win could not be told (two boxes there are refused the same way);
    a mask's own error names the option it came from."""
    r = matte(
        env / "clip.mp4", env / "mask.png", "--mask", f"0:{env / 'mask.png'}", "-o", env / "o.mov"
    )
    assert r.exit_code == 5, r.output
    last = r.output.strip().splitlines()[-1]
    assert f"--mask 0:{env / 'mask.png'}: a second mask for object 1 on frame 0" in last, last
    assert "(the first: MASK " in last and leftovers(env, "o") == []
    r = matte(
        env / "clip.mp4", env / "mask.png", "--mask", f"0:{env / 'mask.png'}@2", "-o", env / "o.mov"
    )
    assert r.exit_code == 0, r.output  # another object: fine
    r = matte(env / "clip.mp4", "--mask", f"3:{env / 'nope.png'}", "-o", env / "p.mov")
    assert r.exit_code == 5 and f"--mask 3:{env / 'nope.png'}: expected a mask image" in r.output


def test_a_render_removes_what_a_dead_render_of_the_same_output_left(env):
    """A render killed twice (or with kill -9) leaves its temporary file; the next render of
    that output removes it, when the name says a process of this machine made it and that
    process is gone. Another machine's (a shared folder) and a live process's are left."""
    import subprocess
    import sys

    from vosfx.files import HOST_ID

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    mark = ".out.mov.vosfx-tmp-"
    left = env / f"{mark}{HOST_ID}-{dead}-0badf00d"
    alive = env / f"{mark}{HOST_ID}-{os.getppid()}-0badf00d"
    other = env / f"{mark}{'0000' if HOST_ID != '0000' else '0001'}-{dead}-0badf00d"
    other_output = env / f".other.mov.vosfx-tmp-{HOST_ID}-{dead}-0badf00d"
    for path in (left, alive, other, other_output):
        path.write_bytes(b"half a movie")
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov")
    assert r.exit_code == 0, r.output
    assert not left.exists() and alive.exists() and other.exists() and other_output.exists()


def test_objects_may_name_an_object_the_mask_does_not_hold(env):
    """--objects over every prompt: object 2 clicked beside a mask of object 1 is kept (it
    was refused as "expected object ids among [1] (those in mask.png)"); an object without
    any prompt is named."""
    args = [env / "clip.mp4", env / "mask.png", "--point", "40,30@2", "-o"]
    r = matte(*args, env / "out.mov", "--objects", "1,2", "--each-object")
    assert r.exit_code == 0, r.output
    assert (env / "out_obj1.mov").is_file() and (env / "out_obj2.mov").is_file()
    r = matte(*args, env / "o3.mov", "--objects", "3")
    assert r.exit_code == 5, r.output
    assert "objects [3] (--objects) have no prompt; the prompts are for objects [1, 2]" in r.output


def test_start_past_the_clip_is_a_usage_error_naming_it(env):
    """Known only once the clip is probed: --start typed past the last frame is a bad option
    value (exit 2, naming --start), a job file's start an invalid job (exit 3)."""
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "--start", "10")
    assert r.exit_code == 2, r.output
    last = r.output.strip().splitlines()[-1]
    assert "Invalid value for --start: 10 is past the clip's last frame (9)" in last, r.output
    job = {"input": "clip.mp4", "output": "out.mov", "start": 12, "prompts": [{"mask": "mask.png"}]}
    (env / "job.json").write_text(json.dumps(job))
    r = matte("--job", env / "job.json")
    assert r.exit_code == 3, r.output
    assert "start 12 is past the clip's last frame (9)" in r.output, r.output
    assert leftovers(env) == []


def test_a_clip_without_a_frame_count_is_matted_to_its_last_frame(env):
    """Matroska keeps no frame count: a rate tag lower than the frames' real rate (24 written,
    50 frames/s of pts) made the estimate 15 of 30 frames, and the render stopped there with
    exit 0. The matte must hold every frame of the source."""
    import av

    clip = make_clip(env / "dense.mkv", n=30, width=96, height=64, pts=[i * 20 for i in range(30)])
    r = matte(clip, env / "mask.png", "-o", env / "out.mov")
    assert r.exit_code == 0, r.output
    with av.open(str(env / "out.mov")) as movie:
        assert sum(1 for _ in movie.decode(video=0)) == 30


def test_each_object_checks_its_own_paths_not_the_merged_one(env, monkeypatch):
    """--each-object writes out_obj<id>.mov: an earlier merged out.mov must not block it, and
    an existing out_obj1.mov is refused before the model is loaded."""
    out = env / "out.mov"
    assert matte(env / "clip.mp4", env / "mask.png", "-o", out).exit_code == 0
    merged = out.read_bytes()
    r = matte(env / "clip.mp4", env / "mask.png", "-o", out, "--each-object")
    assert r.exit_code == 0, r.output
    assert (env / "out_obj1.mov").is_file() and out.read_bytes() == merged

    loads = []
    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: loads.append(1))
    r = matte(env / "clip.mp4", env / "mask.png", "-o", out, "--each-object")
    assert r.exit_code == 6 and "out_obj1.mov already exists" in r.output, r.output
    assert loads == []


@pytest.mark.parametrize(
    "args, said",
    [
        (["MASK", "--start", "3"], "MASK "),
        (["MASK", "--mask-frame", "2", "--end", "2"], "MASK "),
        (["--point", "500,10", "--point", "5,5"], "--point 500,10, --point 5,5: "),
        (["--box", "4:0,0,200,20@2"], "--box 4:0,0,200,20@2: "),
        (["--mask", "12:MASK@3"], "--mask 12:"),
    ],
)
def test_a_prompt_that_does_not_fit_the_clip_is_named_as_typed(env, args, said):
    mask = str(env / "mask.png")
    args = [mask if a == "MASK" else a.replace("MASK", mask) for a in args]
    r = matte(env / "clip.mp4", *args, "-o", env / "out.mov")
    assert r.exit_code == 5, r.output
    assert said in r.output, r.output
    assert leftovers(env) == []


@pytest.mark.parametrize(
    "name,fmt,said",
    [
        # a QuickTime movie under an .mp4 name (players and NLEs go by the name)
        (
            "out.mp4",
            "prores4444",
            (
                "prores4444 writes a .mov movie, not .mp4: name it .mov, "
                "or choose a format that writes .mp4 (h264-matte, preview)"
            ),
        ),
        # a Matroska file called .mov: QuickTime-only hosts refuse it
        ("out.mov", "ffv1-matte", "ffv1-matte writes a .mkv movie, not .mov: name it .mkv"),
        ("out.png", "prores4444", "prores4444 writes a .mov movie, not .png: name it .mov"),
        ("out.mov", "png16", "png16 writes a folder of .png images, not a .mov movie"),
        (
            "out.webm",
            "h264-matte",
            (
                "h264-matte writes a .mp4 movie, not .webm: name it .mp4, "
                "or choose a format that writes .webm (webm-alpha)"
            ),
        ),
    ],
)
def test_an_output_named_as_another_kind_of_file_is_refused(env, name, fmt, said):
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / name, "-f", fmt)
    assert r.exit_code == 6, r.output
    assert f"output {env / name}: {said}" in r.output, r.output
    assert leftovers(env) == []


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("out.MOV", "prores4444"),
        ("out.qt", "qtrle"),
        ("out.m4v", "preview"),
        ("shot_v1.2", "prores4444"),
        ("out", "ffv1-matte"),
        ("out.exr", "exr32"),
    ],
)
def test_an_output_named_for_its_format_or_without_a_media_suffix_is_written(env, name, fmt):
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / name, "-f", fmt)
    assert r.exit_code == 0, r.output
    assert (env / name).exists()


def test_an_existing_sidecar_is_refused_before_the_render_unless_overwrite(env, monkeypatch):
    """The sidecar <out>.json replaced a file of that name at the end of the render without
    --overwrite (a user's notes, another render's record). Now refused up front like the
    output (exit 6, nothing written, the model never loaded), replaced with --overwrite, left
    alone with --no-sidecar; a folder of that name is refused even with --overwrite (it was
    a failure after the whole render)."""
    notes = env / "out.mov.json"
    notes.write_text("my notes")
    loads = []
    real_load = vosfx.engine.load_engine
    monkeypatch.setattr(
        vosfx.engine, "load_engine", lambda *a, **kw: loads.append(1) or real_load(*a, **kw)
    )
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov")
    assert r.exit_code == 6, r.output
    assert "sidecar" in r.output and "out.mov.json" in r.output, r.output
    assert "already exists" in r.output and "--overwrite" in r.output and loads == []
    assert notes.read_text() == "my notes" and leftovers(env) == ["out.mov.json"]

    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "--no-sidecar")
    assert r.exit_code == 0, r.output
    assert notes.read_text() == "my notes"
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "out.mov", "--overwrite")
    assert r.exit_code == 0, r.output
    assert json.loads(notes.read_text())["output"].endswith("out.mov")

    (env / "other.mov.json").mkdir()
    r = matte(env / "clip.mp4", env / "mask.png", "-o", env / "other.mov", "--overwrite")
    assert r.exit_code == 6 and "other.mov.json" in r.output and "is a folder" in r.output
    assert not (env / "other.mov").exists()


def test_a_job_file_the_render_would_write_over_is_refused(env):
    """`vosfx matte --job seq.json` for a job rendering the PNG sequence folder `seq`: its
    sidecar is seq.json, the job file itself (replaced at the end before; with the sidecar
    check, refused as an existing sidecar even with --overwrite would replace it). Refused
    before anything is read, naming --job; the job file kept."""
    from vosfx.job import Job, PromptSpec
    from vosfx.presets import resolve_config
    from vosfx.studio.jobfile import save_job

    job = Job(
        input=str(env / "clip.mp4"),
        output=str(env / "seq"),
        config=resolve_config(["png16"], {}),
        prompts=(PromptSpec(mask=str(env / "mask.png")),),
        presets=("png16",),
    )
    path = save_job(job, env / "seq.json")
    kept = path.read_bytes()
    for extra in ([], ["--overwrite"]):
        r = matte("--job", path, *extra)
        assert r.exit_code == 6, r.output
        assert "--job" in r.output and "sidecar of output" in r.output, r.output
        assert path.read_bytes() == kept and not (env / "seq").exists()
    save_job(job, env / "seq_job.json")  # another name: it renders, its sidecar replacing
    r = matte("--job", env / "seq_job.json", "--overwrite")  # the first job file on ask
    assert r.exit_code == 0, r.output
    assert (env / "seq").is_dir() and (env / "seq.json").read_bytes() != kept


def test_job_level_flags_apply_to_a_job_file_and_prompt_flags_are_refused(env):
    """With --job, -o / --overwrite / --start / --end were silently unused (the job file's own
    values rendered, or "already exists" despite --overwrite), and --point / --preset too.
    Now the job-level flags replace the job's, and the flags for what the job file holds
    (prompts, presets) are a usage error (exit 2) naming them."""
    import av

    from vosfx.job import Job, PromptSpec
    from vosfx.presets import resolve_config
    from vosfx.studio.jobfile import save_job

    job = Job(
        input=str(env / "clip.mp4"),
        output=str(env / "out.mov"),
        config=resolve_config([], {}),
        prompts=(PromptSpec(mask=str(env / "mask.png")),),
    )
    path = save_job(job, env / "job.json")
    r = matte("--job", path, "-o", env / "other.mov", "--end", 6)
    assert r.exit_code == 0, r.output
    assert not (env / "out.mov").exists()
    with av.open(str(env / "other.mov")) as movie:
        assert sum(1 for _ in movie.decode(video=0)) == 6
    r = matte("--job", path, "-o", env / "late.mov", "--start", 2)  # the job's prompt: frame 0
    assert r.exit_code == 5 and "outside the frames being matted (2..9" in r.output, r.output
    r = matte("--job", path, "-o", env / "other.mov")
    assert r.exit_code == 6 and "already exists" in r.output, r.output
    r = matte("--job", path, "-o", env / "other.mov", "--overwrite")
    assert r.exit_code == 0, r.output
    with av.open(str(env / "other.mov")) as movie:
        assert sum(1 for _ in movie.decode(video=0)) == 10

    for extra in (["--point", "5,5"], ["-p", "fast"], ["--mask-frame", "0"], ["--edit-tracked"]):
        r = matte("--job", path, *extra)
        assert r.exit_code == 2 and extra[0] in r.output and "--job" in r.output, r.output
    r = matte("--job", path, "--end", 1, "--start", 3)
    assert r.exit_code == 2 and "--end" in r.output, r.output


def _job_file(env, **fields) -> str:
    """A job file for the clip and its mask, ``fields`` replacing or adding to its keys."""
    data = {
        "input": str(env / "clip.mp4"),
        "prompts": [{"mask": str(env / "mask.png")}],
        "output": str(env / "out.mov"),
    }
    path = env / "job.json"
    path.write_text(json.dumps({**data, **fields}))
    return str(path)


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"prompts": [3]}, "job.prompts[0]: expected an object, found 3"),
        ({"prompts": [{"frame": 2}]}, "job.prompts[0]: a prompt needs a mask, points or a box"),
        ({"start": 5, "end": 5}, "job.end: expected a frame after job.start (5), found 5"),
        ({"start": 30}, "start 30 is past the clip's last frame (9)"),
    ],
)
def test_a_bad_job_file_is_a_config_error_naming_its_field(env, fields, said):
    r = matte("--job", _job_file(env, **fields))
    assert r.exit_code == 3, r.output
    assert r.output.strip().splitlines()[-1] == f"vosfx: error: {said}", r.output
    assert leftovers(env) == []


def test_a_job_file_missing_or_beside_input_is_refused(env):
    r = matte("--job", env / "nope.json")
    assert r.exit_code == 3 and f"job file {env / 'nope.json'} does not exist" in r.output
    r = matte("--job", _job_file(env), env / "clip.mp4")
    assert r.exit_code == 2 and "--job replaces INPUT and MASK" in r.output, r.output
    assert leftovers(env) == []


@pytest.mark.parametrize(
    ("args", "flag", "range_"),
    [(["--start", "7"], "--start", "range would be 7..5"), (["--end", "3"], "--end", "4..3")],
)
def test_one_range_flag_beside_a_job_names_the_flag_typed(env, args, flag, range_):
    """The job holds the other end of the range: the error names the flag that was typed."""
    r = matte("--job", _job_file(env, start=4, end=5), *args)
    assert r.exit_code == 2, r.output
    said = r.output.strip().splitlines()[-1]
    assert said.startswith(f"Error: Invalid value for {flag}:") and range_ in said, r.output
    assert leftovers(env) == []


def test_objects_beside_a_job_keep_only_those(env):
    job = _job_file(
        env, prompts=[{"mask": str(env / "mask.png")}, {"points": [[40, 30]], "obj_id": 2}]
    )
    r = matte("--job", job, "--objects", "2", "--each-object")
    assert r.exit_code == 0, r.output
    assert leftovers(env) == ["out_obj2.mov", "out_obj2.mov.json"]


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("nobg.png", "expected #rrggbb, an image or a video file, found nothing at"),
        ("#12345", "expected #rrggbb (six hex digits), an image or a video file, found '#12345'"),
    ],
)
def test_a_background_that_is_not_there_names_the_flag(env, value, said):
    value = str(env / value) if not value.startswith("#") else value
    args = ["-f", "composite", "-o", env / "out.mov", "--background", value]
    r = matte(env / "clip.mp4", env / "mask.png", *args)
    assert r.exit_code == 2, r.output
    assert "Invalid value for --background: " + said in r.output, r.output
    assert leftovers(env) == []


def test_no_audio_leaves_the_sources_audio_out(env):
    import av

    make_clip(env / "talk.mp4", n=10, width=96, height=64, audio=True)
    for extra, streams in (([], ["video", "audio"]), (["--no-audio"], ["video"])):
        out = env / f"out{len(extra)}.mov"
        r = matte(env / "talk.mp4", env / "mask.png", "-o", out, *extra)
        assert r.exit_code == 0, r.output
        with av.open(str(out)) as movie:
            assert [s.type for s in movie.streams if s.type != "data"] == streams


def test_terminal_progress_redraws_one_line_and_ends_it():
    """What a user at a terminal sees: a bar redrawn in place (at most 10x/s), a warning on a
    line of its own above it, the download in MiB, and a last line that stays."""
    import io

    from vosfx.cli import progress
    from vosfx.cli.progress import TerminalProgress
    from vosfx.types import ProgressEvent

    out = io.StringIO()
    bar = TerminalProgress("c.mp4", stream=out)
    clock = iter([100.0, 100.5, 101.0, 101.05, 102.0, 103.0, 104.0])
    real = progress.time.monotonic
    progress.time.monotonic = clock.__next__
    try:
        bar(ProgressEvent("download", frames_done=2**20, total_frames=4 * 2**20, message="model"))
        bar(ProgressEvent("backward", frames_done=1, total_frames=4, message="backwards"))
        bar(ProgressEvent("frame", frames_done=1, total_frames=4, fps=2.0, eta_s=1.5))
        bar(ProgressEvent("frame", frames_done=2, total_frames=4, fps=2.0, eta_s=1.0))  # too soon
        bar(ProgressEvent("warning", message="a gap in the plate"))
        bar(ProgressEvent("frame", frames_done=4, total_frames=4, fps=2.0, eta_s=None))
        bar(ProgressEvent("done", frames_done=4, total_frames=4, fps=2.0))
    finally:
        progress.time.monotonic = real
    assert out.getvalue().split("\r\x1b[2K")[1:] == [
        "model: 1.0/4.0 MiB",
        "c.mp4: backwards: 1/4 frames",
        "c.mp4 [#######.......................] 1/4 frames  2.00 fps  ETA 00:01",
        "vosfx: warning: a gap in the plate\n",
        "c.mp4 [##############################] 4/4 frames  2.00 fps  ETA --:--",
        "c.mp4: 4 frames, 2.00 fps\n",
    ]


def test_log_progress_says_downloads_and_backward_tracking():
    import io

    from vosfx.cli.progress import LogProgress
    from vosfx.types import ProgressEvent

    out = io.StringIO()
    log = LogProgress("c.mp4", stream=out, every_s=0.0)
    log(ProgressEvent("download", frames_done=3 * 2**20, total_frames=0, message="sam2.1-tiny"))
    log(ProgressEvent("backward", frames_done=2, total_frames=5, message="tracking backwards"))
    assert out.getvalue().splitlines() == [
        "vosfx: sam2.1-tiny: 3.0 MiB",
        "vosfx: c.mp4: tracking backwards: 2/5 frames",
    ]

"""The plugin protocol end to end: a host's client (plugins/common/vosfx_client.py) runs
`vosfx matte --job job.json --json-progress` in a subprocess (with the FakeEngine launcher in
tests/bin) and reads its events; `vosfx plugins install|path` puts the plugins in place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from media import make_clip, moving_square_frame
from PIL import Image

from vosfx.cli import cli

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins" / "common"))
import vosfx_client

FAKE_VOSFX = [sys.executable, str(REPO / "tests" / "bin" / "vosfx_fake.py")]
W, H = 96, 64


@pytest.fixture
def clip_dir(tmp_path, config_home):
    make_clip(tmp_path / "clip.mp4", n=12, width=W, height=H)
    _, mask = moving_square_frame(2, W, H)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "tiny.png")
    return tmp_path


def _env(**extra):
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _job(folder, mask="mask.png", **kw):
    job = vosfx_client.build_job(
        folder / "clip.mp4",
        folder / "out",
        [{"frame": 2, "mask": str(folder / mask)}],
        presets=("png16",),
        **kw,
    )
    return vosfx_client.write_job(job, folder / "job.json")


def test_events_then_result_for_the_requested_range(clip_dir):
    seen = []
    res = vosfx_client.run(
        FAKE_VOSFX, _job(clip_dir, start=2, end=7), on_event=seen.append, env=_env()
    )
    assert res.exit_code == 0, res.stderr
    kinds = [e["event"] for e in seen]
    assert kinds == ["start"] + ["frame"] * 5 + ["done", "result"]
    assert [e["frame"] for e in seen if e["event"] == "frame"] == [2, 3, 4, 5, 6]
    assert [e["frames_done"] for e in seen if e["event"] == "frame"] == [1, 2, 3, 4, 5]
    assert {e["total_frames"] for e in seen[:-1]} == {5}
    assert res.ok and res.result["frames"] == 5
    assert res.result["outputs"] == [str(clip_dir / "out")]
    assert res.result["presence"] == {"1": [[2, 6, True]]}
    assert vosfx_client.presence_ranges(res.result) == [(2, 6)]
    # frame alignment: the sequence is numbered by source frame index
    names = sorted(p.name for p in (clip_dir / "out").iterdir())
    assert names == [f"out.{i:05d}.png" for i in range(2, 7)]
    sidecar = json.loads((clip_dir / "out.json").read_text())
    assert sidecar["job"]["start"] == 2 and sidecar["job"]["end"] == 7


def test_warnings_of_the_run_reach_the_host(clip_dir):
    """How the model ran (here a GPU asked for and absent) comes as a "warning" event and in
    the result; the client hands it to the plugins as ``warnings`` (none without)."""
    said = "--device cuda: ONNX Runtime has no CUDAExecutionProvider in this install"
    res = vosfx_client.run(FAKE_VOSFX, _job(clip_dir), env=_env(VOSFX_FAKE_WARNING=said))
    assert res.ok, res.stderr
    assert res.warnings == [said] and res.result["warnings"] == [said]
    assert [e["event"] for e in res.events][:2] == ["start", "warning"]
    assert vosfx_client.run(FAKE_VOSFX, _job(clip_dir), env=_env()).warnings == []


def test_bad_mask_gives_error_event_and_exit_code(clip_dir):
    res = vosfx_client.run(FAKE_VOSFX, _job(clip_dir, mask="tiny.png"), env=_env())
    assert res.exit_code == 5 and not res.ok
    assert res.error["kind"] == "prompt" and res.error["exit_code"] == 5
    assert "10x10" in res.error["message"] or "10" in res.error["message"]
    assert "prompt error" in res.message()
    assert not (clip_dir / "out").exists()


def _until_a_frame(proc) -> None:
    """Wait (60 s at most) until ``proc`` has said its first frame event."""
    deadline = time.monotonic() + 60
    while not any(e["event"] == "frame" for e in proc.events):
        assert proc.running and time.monotonic() < deadline, proc.wait().stderr
        proc.poll()
        time.sleep(0.05)


def test_cancel_mid_render_exits_130_and_leaves_no_output(clip_dir):
    proc = vosfx_client.VosfxProcess(
        FAKE_VOSFX, _job(clip_dir), env=_env(VOSFX_FAKE_DELAY_S="0.25")
    ).start()
    _until_a_frame(proc)
    proc.cancel()
    res = proc.wait()
    assert res.exit_code == 130 and res.cancelled
    assert res.error is not None and res.error["kind"] == "cancelled"
    assert not any(e["event"] == "result" for e in res.events)
    # (cache: the test's VOSFX_HOME, where the refinement's C loops were built)
    left = sorted(p.name for p in clip_dir.iterdir() if p.name != "cache")
    assert left == ["clip.mp4", "job.json", "mask.png", "tiny.png"]


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell wrapper")
def test_cancel_reaches_vosfx_behind_a_wrapper(clip_dir):
    """The recorded command is a wrapper that does not exec vosfx (``conda run``, a shell
    script): Cancel signals vosfx's process group, so vosfx itself stops cleanly (its
    cancelled event, no output) and the host does not wait for the render to finish."""
    wrapper = clip_dir / "wrap.sh"
    args = " ".join(f"'{a}'" for a in FAKE_VOSFX)
    wrapper.write_text(f'#!/bin/sh\n{args} "$@"\necho wrapper-done >&2\n')
    wrapper.chmod(0o755)
    proc = vosfx_client.VosfxProcess(
        [str(wrapper)], _job(clip_dir), env=_env(VOSFX_FAKE_DELAY_S="0.5")
    ).start()
    _until_a_frame(proc)
    began = time.monotonic()
    proc.cancel()
    res = proc.wait()
    assert time.monotonic() - began < 4.0  # 11 frames left at 0.5 s each otherwise
    assert res.error is not None and res.error["kind"] == "cancelled", res.stderr
    left = sorted(p.name for p in clip_dir.iterdir() if p.name != "cache")
    assert left == ["clip.mp4", "job.json", "mask.png", "tiny.png", "wrap.sh"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")
def test_terminate_then_kill_never_blocks_the_host(tmp_path):
    """A host's UI thread: terminate() returns at once; a vosfx that ignores SIGTERM is ended
    by kill(), its group with it, and wait() then returns."""
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    proc = vosfx_client.VosfxProcess([sys.executable, "-c", script], tmp_path / "job.json")
    proc.start()
    time.sleep(0.5)  # its handler in place
    began = time.monotonic()
    proc.terminate()
    assert time.monotonic() - began < 0.5
    time.sleep(0.3)
    assert proc.running  # SIGTERM ignored
    proc.kill()
    res = proc.wait(timeout_s=10)
    assert res.exit_code == -9 and "killed by SIGKILL" in res.message()


@pytest.mark.parametrize(
    "code, events, fragment",
    [
        (0, [], "ended without a result"),
        (-9, [], "killed by SIGKILL (out of memory?)"),
        (137, [], "killed by SIGKILL"),  # a shell wrapper's 128 + 9
        (-15, [], "killed by SIGTERM"),
        (4, [], "exited with 4 (input)"),
        (3, [{"event": "error", "kind": "config", "message": "bad"}], "config error: bad"),
    ],
)
def test_render_result_message_says_how_vosfx_ended(code, events, fragment):
    assert fragment in vosfx_client.RenderResult(code, events, "").message()


@pytest.mark.parametrize(
    "event, expected",
    [
        ({"frames_done": 5, "total_frames": 10, "eta_s": 3.0}, (5, 10, 3.0)),
        ({"frames_done": 12, "total_frames": 10, "eta_s": -2.5}, (10, 10, 0.0)),
        ({"frames_done": -1, "total_frames": 0}, (0, 0, None)),
    ],
)
def test_progress_is_clamped(event, expected):
    assert vosfx_client.progress_of(event) == expected


def _fake_studio(tmp_path, done):
    """A `vosfx` whose `studio` writes the picked job and exits 0 (Done), or exits 130."""
    script = tmp_path / "studio.py"
    script.write_text(
        "import json, sys\n"
        "out = sys.argv[sys.argv.index('--done-job') + 1]\n"
        + (
            "json.dump({'version': 1, 'input': 'a.mp4', 'start': 0, 'end': 3,"
            " 'prompts': [{'frame': 0, 'mask': 'picked_masks/m.png'}]}, open(out, 'w'))\n"
            if done
            else "sys.exit(130)\n"
        )
    )
    return [sys.executable, str(script)]


@pytest.mark.parametrize("done", [True, False])
def test_studio_pick_folder_is_removed_when_consumed_or_closed(tmp_path, done):
    pick = vosfx_client.StudioPick(_fake_studio(tmp_path, done), "a.mp4", 0, 3, 1).start()
    pick.wait(timeout_s=30)
    picked = pick.picked()
    if done:
        assert picked["prompts"][0]["mask"] == os.path.join(pick.folder, "picked_masks/m.png")
        assert os.path.isdir(pick.folder)  # the render reads the masks from it
        pick.discard()  # the render ended
    else:
        assert picked is None and pick.message() == "vosfx studio was closed without Done"
    assert not os.path.exists(pick.folder)


def test_command_must_be_an_argument_list(tmp_path):
    with pytest.raises(TypeError):
        vosfx_client.VosfxProcess("vosfx matte", tmp_path / "job.json")


@pytest.mark.parametrize("start", ["matte", "studio"])
def test_missing_vosfx_is_one_clear_error(tmp_path, start):
    """A recorded command that is gone (the environment was removed or moved): one error that
    names the command and says how to point the plugin at vosfx, not a FileNotFoundError."""
    command = [str(tmp_path / "gone" / "vosfx")]
    if start == "matte":
        proc = vosfx_client.VosfxProcess(command, tmp_path / "job.json")
    else:
        proc = vosfx_client.StudioPick(command, tmp_path / "clip.mp4", 0, 5, 2)
    with pytest.raises(vosfx_client.VosfxNotFound) as err:
        proc.start()
    text = str(err.value)
    assert command[0] in text and "VOSFX_EXECUTABLE" in text and "plugins install" in text
    assert not proc.running


def test_studio_pick_passes_an_image_sequence_rate_the_studio_reads(tmp_path):
    """A host's image sequence plays at the host's rate: the pick's command carries it as
    ``--fps``, which the real ``vosfx studio`` parses (nothing is started here)."""
    from vosfx.cli.studio import studio

    pick = vosfx_client.StudioPick(
        ["vosfx"], tmp_path / "shot.%04d.png", 0, 5, 2, folder=str(tmp_path), fps=23.976
    )
    assert pick.args[0] == "vosfx" and pick.args[1] == "studio"
    ctx = studio.make_context("studio", pick.args[2:])
    assert ctx.params["fps"] == pytest.approx(23.976)
    assert ctx.params["done_job"] == pick.job_path
    plain = vosfx_client.StudioPick(["vosfx"], tmp_path / "clip.mp4", 0, 5, 2, folder=str(tmp_path))
    assert "--fps" not in plain.args


def test_picked_job_files_are_made_absolute(tmp_path):
    """The studio writes a pick's mask images and corrections' priors beside the job, named
    relative to it; the host's job (written elsewhere) gets them absolute."""
    import subprocess

    pick = vosfx_client.StudioPick(["vosfx"], tmp_path / "clip.mp4", 0, 5, 2, folder=str(tmp_path))
    prompts = [
        {"frame": 1, "mask": "picked_masks/m.png"},
        {"frame": 3, "points": [[4, 5]], "labels": [0], "prior": "picked_masks/p.npy"},
        {"frame": 4, "points": [[4, 5]], "labels": [1], "prior": str(tmp_path / "abs.npy")},
    ]
    Path(pick.job_path).write_text(json.dumps({"input": "clip.mp4", "prompts": prompts}))
    pick.proc = subprocess.Popen([sys.executable, "-c", ""])
    pick.proc.wait()
    got = pick.picked()["prompts"]
    assert got[0]["mask"] == str(tmp_path / "picked_masks" / "m.png")
    assert got[1]["prior"] == str(tmp_path / "picked_masks" / "p.npy")
    assert got[2]["prior"] == str(tmp_path / "abs.npy")


def test_build_job_is_a_valid_version_1_job(tmp_path):
    from vosfx.job import job_from_dict

    job = vosfx_client.build_job(
        "clip.mov",
        "out.mov",
        [{"frame": 3, "points": [[10, 20]], "labels": [1]}],
        start=3,
        end=9,
        extra_formats=("png16-matte",),
    )
    parsed = job_from_dict(json.loads(json.dumps(job)), base=tmp_path)
    assert (parsed.start, parsed.end) == (3, 9)
    assert parsed.prompts[0].points == ((10.0, 20.0),)
    assert parsed.config.output.extra_formats == ("png16-matte",)
    with pytest.raises(ValueError):
        vosfx_client.build_job("a", "b", [])


def test_load_command_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("VOSFX_EXECUTABLE", raising=False)
    assert vosfx_client.load_command(str(tmp_path)) == ["vosfx"]
    (tmp_path / vosfx_client.CONFIG_NAME).write_text(
        json.dumps({"command": ["/py", "-m", "vosfx"]})
    )
    assert vosfx_client.load_command(str(tmp_path)) == ["/py", "-m", "vosfx"]
    monkeypatch.setenv("VOSFX_EXECUTABLE", "/opt/vosfx/bin/vosfx")
    assert vosfx_client.load_command(str(tmp_path)) == ["/opt/vosfx/bin/vosfx"]


# --- vosfx plugins install | path -----------------------------------------------------------


def _plugins(*args):
    return CliRunner().invoke(cli, ["plugins", *map(str, args)])


@pytest.mark.parametrize(
    "platform, host, fragment",
    [
        ("linux", "resolve", ".local/share/DaVinciResolve/Fusion/Scripts"),
        (
            "darwin",
            "resolve",
            ("Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts"),
        ),
        ("win32", "resolve", "Blackmagic Design/DaVinci Resolve/Support/Fusion/Scripts"),
        ("linux", "blender", ".config/blender/5.0/scripts/addons"),
        ("darwin", "blender", "Library/Application Support/Blender/5.0/scripts/addons"),
        ("win32", "blender", "Blender Foundation/Blender/5.0/scripts/addons"),
    ],
)
def test_default_destinations(platform, host, fragment, tmp_path):
    from vosfx.cli.plugins import default_dest

    env = {"APPDATA": str(tmp_path / "AppData" / "Roaming")}
    dest = default_dest(host, platform=platform, home=tmp_path, env=env)
    assert dest.as_posix().endswith(fragment)
    assert dest.as_posix().startswith(tmp_path.as_posix())


def test_path_prints_the_destination(tmp_path):
    r = _plugins("path", "blender", "--blender-version", "4.2")
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith(os.path.join("4.2", "scripts", "addons"))


CLIENT_FILES = sorted(p.name for p in (REPO / "plugins" / "common").glob("vosfx_client*.py"))


def _import_installed_client(path, setup):
    """The installed client imported in a fresh interpreter that sees only ``path`` (and the
    standard library): its public names, its file and the command recorded beside it."""
    script = (
        f"import json, os, sys; sys.path.insert(0, {str(path)!r}); {setup}; "
        "print(json.dumps([sorted(c.__all__), c.__file__, "
        "c.load_command(os.path.dirname(c.__file__))]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "VOSFX_EXECUTABLE"}
    out = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_install_resolve_copies_entry_scripts_and_support(tmp_path):
    r = _plugins("install", "resolve", "--dest", tmp_path)
    assert r.exit_code == 0, r.output
    for page in ("Edit", "Color"):
        entry = tmp_path / page / "vosfx Matte.py"
        assert entry.is_file()
        compile(entry.read_text(), str(entry), "exec")
    support = tmp_path / "vosfx_support"
    assert len(CLIENT_FILES) > 1 and (support / "vosfx_resolve").is_dir()
    assert sorted(p.name for p in support.glob("vosfx_client*.py")) == CLIENT_FILES
    config = json.loads((support / vosfx_client.CONFIG_NAME).read_text())
    assert config["command"][0] == sys.executable
    (support / "vosfx_client_gone.py").write_text("")  # a module an older client had
    again = _plugins("install", "resolve", "--dest", tmp_path)
    assert again.exit_code == 0, again.output  # reinstall replaces in place
    assert sorted(p.name for p in support.glob("vosfx_client*.py")) == CLIENT_FILES


def test_installed_resolve_client_imports_flat(tmp_path):
    """Resolve's layout: the client's modules side by side on sys.path, no package."""
    assert _plugins("install", "resolve", "--dest", tmp_path).exit_code == 0
    support = tmp_path / "vosfx_support"
    names, where, command = _import_installed_client(support, "import vosfx_client as c")
    assert names == sorted(vosfx_client.__all__)
    assert Path(where).parent == support and command == [sys.executable, "-m", "vosfx"]


def test_install_blender_copies_the_addon(tmp_path):
    r = _plugins("install", "blender", "--dest", tmp_path)
    assert r.exit_code == 0, r.output
    addon = tmp_path / "vosfx_sequencer"
    assert (addon / "__init__.py").is_file()
    assert sorted(p.name for p in addon.glob("vosfx_client*.py")) == CLIENT_FILES
    assert "bl_info" in (addon / "__init__.py").read_text()
    # the add-on's name as Blender's Add-ons list shows it (bl_info's), as README says
    assert (
        "Add-ons > 'vosfx Matte'" in r.output
        and '"name": "vosfx Matte"' in (addon / "__init__.py").read_text()
    )


def test_installed_blender_client_imports_inside_the_addon(tmp_path):
    """Blender's layout: the client is a submodule of the add-on's package (its modules
    imported relative to it); the package stands in without running its bpy imports."""
    assert _plugins("install", "blender", "--dest", tmp_path).exit_code == 0
    addon = tmp_path / "vosfx_sequencer"
    setup = (
        "import types; pkg = types.ModuleType('vosfx_sequencer'); "
        f"pkg.__path__ = [{str(addon)!r}]; sys.modules['vosfx_sequencer'] = pkg; "
        "from vosfx_sequencer import vosfx_client as c"
    )
    names, where, command = _import_installed_client(tmp_path / "elsewhere", setup)
    assert names == sorted(vosfx_client.__all__)
    assert Path(where).parent == addon and command == [sys.executable, "-m", "vosfx"]


def test_install_unknown_host_is_a_usage_error(tmp_path):
    r = _plugins("install", "premiere", "--dest", tmp_path)
    assert r.exit_code == 2


@pytest.mark.parametrize("command", ['"/opt/my env/bin/vosfx', "   "])
def test_install_bad_command_is_a_usage_error(tmp_path, command):
    """An unclosed quote or a blank --command: a usage error naming the option, nothing
    installed (not a traceback, not a plugin that can never start vosfx)."""
    r = _plugins("install", "resolve", "--dest", tmp_path, "--command", command)
    assert r.exit_code == 2, r.output
    assert "--command" in r.output and "Traceback" not in r.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "typed, words",
    [
        (r'"C:\Program Files\vosfx\vosfx.exe" --x', [r"C:\Program Files\vosfx\vosfx.exe", "--x"]),
        (r"C:\env\python.exe -m vosfx", [r"C:\env\python.exe", "-m", "vosfx"]),
        (r'a\\"b c"', ["a\\b c"]),  # 2n backslashes before a quote: n, and the quote groups
        (r"a\"b", ['a"b']),  # an odd count: a literal quote
        (r'"" x', ["", "x"]),  # an empty word, quoted
        ("  spaced\targs  ", ["spaced", "args"]),
    ],
)
def test_a_windows_command_line_is_split_as_windows_programs_read_it(typed, words):
    """`plugins install --command` on Windows: shlex's non-POSIX mode kept the quotes of
    `"C:\\Program Files\\...exe"`, so the recorded program could not be started."""
    from vosfx.cli.plugins import split_windows

    assert split_windows(typed) == words


def test_an_unclosed_quote_in_a_windows_command_line_is_refused():
    from vosfx.cli.plugins import split_windows

    with pytest.raises(ValueError, match="No closing quotation"):
        split_windows(r'"C:\Program Files\vosfx.exe')

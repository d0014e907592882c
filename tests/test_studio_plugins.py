""" "Pick in vosfx studio" from the editor plugins: the Resolve script (stand-in host) opens
the studio on the clip's range at the playhead, the user clicks and presses Done in the page,
the host receives the job and renders it as it always did. The "browser" here is a script
(``BROWSER``) that records the page's address; the user's clicks are the page's API calls."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from media import make_clip, square_box
from resolve_standin import Resolve

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins" / "resolve"), str(REPO / "plugins" / "common")]
import vosfx_client
from vosfx_resolve import api, app

FAKE_VOSFX = [sys.executable, str(REPO / "tests" / "bin" / "vosfx_fake.py")]
W, H, N, FPS = 96, 64, 20, 24
HOUR = 3600 * FPS


@pytest.fixture
def browser_log(tmp_path, monkeypatch):
    """``BROWSER`` = a script that appends the URL it is asked to open to a file."""
    log = tmp_path / "opened.txt"
    script = tmp_path / "browser.py"
    script.write_text(f"import sys\nopen({str(log)!r}, 'a').write(sys.argv[1] + '\\n')\n")
    monkeypatch.setenv("BROWSER", f"{sys.executable} {script} %s")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    return log


def _page_url(log: Path, timeout_s: float = 60, skip: int = 0) -> str:
    """The page the studio asked the browser to open (``skip``: after that many others)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        opened = log.read_text().split() if log.exists() else []
        if len(opened) > skip:
            return opened[skip]
        time.sleep(0.05)
    raise TimeoutError("the studio did not open a page")


def _api(url: str, path: str, body=None):
    parts = urlsplit(url)
    token = parts.query.split("=", 1)[1]
    req = urllib.request.Request(
        f"{parts.scheme}://{parts.netloc}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-Vosfx-Token": token, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())


def _ready(url: str) -> dict:
    """The page's state once the studio has loaded its model."""
    for _ in range(600):
        st = _api(url, "/api/state")
        if st.get("ready"):
            return st
        time.sleep(0.05)
    raise TimeoutError("the studio did not load")


def _user_picks(url: str, frame: int) -> dict:
    """In the page: wait for the model, see the playhead frame, click the object, Done."""
    st = _ready(url)
    assert st["frame"] == frame and st["done_mode"]
    x0, y0, x1, y1 = square_box(frame, W, H)
    _api(url, "/api/click", {"obj_id": 1, "frame": frame, "x": (x0 + x1) / 2, "y": (y0 + y1) / 2})
    _api(url, "/api/refine", {"refine": {"feather_px": 1.5}})
    _api(url, "/api/done", {"output": "/tmp/ignored_by_the_host.mov"})
    return st


def test_client_pick_returns_the_job(tmp_path, browser_log, config_home):
    clip = make_clip(tmp_path / "shot.mp4", n=N, width=W, height=H)
    pick = vosfx_client.StudioPick(FAKE_VOSFX, clip, 5, 13, 8).start()
    try:
        st = _user_picks(_page_url(browser_log), 8)
        assert (st["start"], st["end"]) == (5, 13)
        assert pick.wait(60) == 0
    finally:
        pick.cancel()
    job = pick.picked()
    assert job["start"] == 5 and job["end"] == 13
    assert [p["frame"] for p in job["prompts"]] == [8]
    host = vosfx_client.job_from_pick(job, str(tmp_path / "out.mov"))
    assert host["presets"] == ["prores4444"] and "output" not in host["overrides"]
    assert host["overrides"]["refine"]["feather_px"] == 1.5


def test_a_pick_tracked_in_the_studio_is_not_tracked_again_by_the_hosts_render(
    tmp_path, browser_log, config_home, monkeypatch
):
    """The user tracks in the studio before Done: the host's render of the picked job (its
    own output and presets, another process) takes the results the studio handed over and
    tracks nothing (no "track" events: frames 5-7 are tracked backwards before writing
    otherwise); with another model cache it tracks, and writes the same."""
    clip = make_clip(tmp_path / "shot.mp4", n=N, width=W, height=H)
    pick = vosfx_client.StudioPick(FAKE_VOSFX, clip, 5, 13, 8).start()
    try:
        url = _page_url(browser_log)
        _ready(url)
        x0, y0, x1, y1 = square_box(8, W, H)
        _api(url, "/api/click", {"obj_id": 1, "frame": 8, "x": (x0 + x1) / 2, "y": (y0 + y1) / 2})
        _api(url, "/api/track", {})
        deadline = time.monotonic() + 60
        while _api(url, "/api/timeline")["stale"] and time.monotonic() < deadline:
            time.sleep(0.05)
        _api(url, "/api/done", {"output": "/tmp/ignored_by_the_host.mov"})
        assert pick.wait(60) == 0
    finally:
        pick.cancel()
    outputs = []
    for home in (os.environ["VOSFX_HOME"], str(tmp_path / "other_cache")):
        monkeypatch.setenv("VOSFX_HOME", home)
        out = tmp_path / f"out{len(outputs)}"
        job = vosfx_client.job_from_pick(pick.picked(), str(out), presets=("png16",))
        job_path = tmp_path / f"host{len(outputs)}.json"
        vosfx_client.write_job(job, job_path)
        events = []
        result = vosfx_client.run(FAKE_VOSFX, job_path, on_event=events.append)
        assert result.ok, result.message()
        outputs.append((sorted(e.get("event") for e in events), sorted(out.glob("*.png"))))
    (taken, taken_files), (tracked, tracked_files) = outputs
    assert "track" not in taken and "track" in tracked
    assert [f.read_bytes() for f in taken_files] == [f.read_bytes() for f in tracked_files]


def test_client_pick_closed_without_done(tmp_path, browser_log, config_home):
    clip = make_clip(tmp_path / "shot.mp4", n=N, width=W, height=H)
    pick = vosfx_client.StudioPick(FAKE_VOSFX, clip, 0, N, 3).start()
    url = _page_url(browser_log)
    _ready(url)  # the model loaded: the studio's folder is made
    studio_dirs = Path(os.environ["VOSFX_HOME"]) / "studio"
    assert list(studio_dirs.glob("*"))
    pick.cancel()  # SIGTERM: as Ctrl-C, it cleans up and exits 130 (it was killed, 143)
    assert pick.proc.returncode == 130
    assert not list(studio_dirs.glob("*"))
    assert pick.picked() is None and pick.message()


def test_client_pick_closed_after_a_click_keeps_it_for_the_next_pick(
    tmp_path, browser_log, config_home
):
    """A pick cancelled after the user clicked: the message says the prompts are kept, and
    the next pick of the clip offers them (Restore) in its page."""
    clip = make_clip(tmp_path / "shot.mp4", n=N, width=W, height=H)
    pick = vosfx_client.StudioPick(FAKE_VOSFX, clip, 0, N, 3).start()
    url = _page_url(browser_log)
    _ready(url)
    x0, y0, x1, y1 = square_box(3, W, H)
    _api(url, "/api/click", {"obj_id": 1, "frame": 3, "x": (x0 + x1) / 2, "y": (y0 + y1) / 2})
    pick.cancel()
    pick.wait(10)
    assert pick.picked() is None
    assert "its prompts are kept" in pick.message(), (pick.message(), pick.stderr)
    again = vosfx_client.StudioPick(FAKE_VOSFX, clip, 0, N, 3).start()
    try:
        url = _page_url(browser_log, skip=1)
        st = _ready(url)
        assert st["recovered"] is not None and st["recovered"]["prompts"] == 1, st
    finally:
        again.cancel()


def test_resolve_dialog_pick_in_studio_renders_the_picked_job(tmp_path, browser_log, config_home):
    from resolve_standin.ui import Bmd, Fusion
    from vosfx_resolve.ui import Dialog

    clip = make_clip(tmp_path / "shot.mp4", n=N, width=W, height=H)
    resolve = Resolve(fps=FPS, frames_of=lambda p: N)
    resolve.add_clip(str(clip), N, record_start=HOUR + 10, duration=8, left_offset=5)
    resolve.timeline.playhead = HOUR + 13  # source frame 8
    statuses = []

    def user(win, disp):
        win.GetItems()["Attach"].Checked = False
        win.On.Studio.Clicked({})
        _user_picks(_page_url(browser_log), 8)
        timer = disp.ui.timers[0]
        deadline = time.monotonic() + 90
        while timer.active and time.monotonic() < deadline:
            disp.On.vosfxPoll.Timeout({})
            statuses.append(win.GetItems()["Status"].Text)
            time.sleep(0.05)
        win.On.vosfxWin.Close({})

    fusion = Fusion(user)
    Dialog(resolve, fusion, Bmd(fusion), FAKE_VOSFX).run()
    assert statuses[-1] == "alpha clip on video track 2, framed as the clip", statuses
    out = tmp_path / "shot_vosfx_5-12.mov"
    assert out.is_file()
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["job"]["config"]["refine"]["feather_px"] == 1.5  # the page's finishing
    assert [p["frame"] for p in sidecar["job"]["prompts"]] == [8]  # the page's click
    assert (sidecar["job"]["start"], sidecar["job"]["end"]) == (5, 13)


def test_resolve_plan_from_a_pick_keeps_the_hosts_outputs(tmp_path):
    clip = make_clip(tmp_path / "shot.mp4", n=N, width=W, height=H)
    resolve = Resolve(fps=FPS, frames_of=lambda p: N)
    resolve.add_clip(str(clip), N, record_start=HOUR + 10, duration=8, left_offset=5)
    resolve.timeline.playhead = HOUR + 13
    ctx = api.current_clip(resolve)
    picked = {
        "input": str(clip),
        "start": 5,
        "end": 13,
        "prompts": [{"frame": 8, "obj_id": 1, "points": [[40, 30]], "labels": [1]}],
        "overrides": {"refine": {"choke": 0.5}, "output": {"format": "png16"}},
    }
    plan = app.plan_job(ctx, app.Options(attach=False, picked=picked))
    assert plan.job["prompts"] == picked["prompts"]
    assert plan.job["presets"] == ["prores4444"]
    assert plan.job["overrides"] == {"refine": {"choke": 0.5}}
    with pytest.raises(api.ResolveError, match="range"):
        app.plan_job(ctx, app.Options(attach=True, picked=picked))
    assert (plan.start, plan.end) == (5, 13)


BLENDER_SCRIPT = r"""
scene = bpy.context.scene
use_scene(scene)
ed = scene.sequence_editor_create()
strip = strips(ed).new_movie("clip", args["clip"], channel=1, frame_start=1)
strip.frame_offset_start = args["trim_in"]
strip.frame_final_duration = args["used"]
ed.active_strip = strip
scene.frame_current = int(strip.frame_final_start) + args["playhead"]
ret = bpy.ops.sequencer.vosfx_studio(output_dir=args["out"])
assert ret == {"FINISHED"}, ret
mod = strip.modifiers["vosfx matte"]
print("RESULT " + json.dumps({"files": [e.filename for e in mod.input_mask_strip.elements],
                              "directory": mod.input_mask_strip.directory}))
"""


def test_blender_pick_in_studio_masks_the_strip(tmp_path, browser_log, config_home):
    """Blender (bpy, no window: the operator blocks until Done): Strip > Pick in vosfx studio
    opens the page on the strip's used frames at the playhead; Done renders the matte and
    masks the strip with it."""
    import subprocess
    import threading

    from click.testing import CliRunner
    from test_blender_addon import BPY_VERSIONS, PRELUDE, bpy_python

    from vosfx.cli import cli

    py = bpy_python(BPY_VERSIONS[0])  # the add-on's code under test is the same on 4.2
    clip = make_clip(tmp_path / "shot.mp4", n=N, width=W, height=H)
    addons = tmp_path / "addons"
    r = CliRunner().invoke(
        cli,
        ["plugins", "install", "blender", "--dest", str(addons), "--command", " ".join(FAKE_VOSFX)],
    )
    assert r.exit_code == 0, r.output
    args = {
        "addons": str(addons),
        "clip": str(clip),
        "out": str(tmp_path),
        "trim_in": 4,
        "used": 10,
        "playhead": 3,
    }
    (tmp_path / "run.py").write_text(PRELUDE + BLENDER_SCRIPT)
    seen = {}
    user = threading.Thread(
        target=lambda: seen.update(st=_user_picks(_page_url(browser_log, 300), 7)), daemon=True
    )
    user.start()
    done = subprocess.run(
        [str(py), str(tmp_path / "run.py"), "--", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    user.join(10)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    assert (seen["st"]["start"], seen["st"]["end"]) == (4, 14)
    out = json.loads(lines[0][len("RESULT ") :])
    assert out["files"] == [f"shot_vosfx_4-13.{i:05d}.png" for i in range(4, 14)]
    sidecar = json.loads((tmp_path / "shot_vosfx_4-13.json").read_text())
    assert sidecar["job"]["prompts"][0]["frame"] == 7
    assert sidecar["job"]["config"]["refine"]["feather_px"] == 1.5

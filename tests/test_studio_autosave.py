"""The studio never loses the user's prompts: every change is kept on disk as a job, a studio
that ends unsaved (closed page, Ctrl-C, a crash) leaves that job in ``recovered/``, and the next
studio on the clip offers it back (vosfx/studio/autosave.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.media import make_clip, square_box
from tests.studio_helpers import Running, post, start_cli, wait_ready
from vosfx.files import exclusive_lock
from vosfx.job import load_job_file
from vosfx.studio import autosave

W, H, N = 96, 64, 24


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "clip.mp4", n=N, width=W, height=H)


def _click(run, t, label=1, obj=1):
    x0, y0, x1, y1 = square_box(t, W, H)
    body = {"obj_id": obj, "frame": t, "x": (x0 + x1) / 2, "y": (y0 + y1) / 2, "label": label}
    status, data = run.request("/api/click", body)
    assert status == 200, data
    return data


def _mask_png(t) -> bytes:
    x0, y0, x1, y1 = square_box(t, W, H)
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 255
    buf = io.BytesIO()
    Image.fromarray(mask, "L").save(buf, "PNG")
    return buf.getvalue()


def test_every_change_is_kept_on_disk_as_a_job(clip, tmp_path, config_home):
    """After each click, dropped mask, finishing change or undo, the studio's folder holds
    the session as a job `vosfx matte --job` reads, its mask files beside it; with no prompt
    left, no job."""
    run = Running(clip, tmp_path / "studio" / "a")
    try:
        kept = tmp_path / "studio" / "a" / "job.json"
        assert not kept.exists()
        _click(run, 3)
        job = load_job_file(kept)
        assert [(p.frame, p.obj_id, p.labels) for p in job.prompts] == [(3, 1, (1,))]
        status, _ = run.request("/api/mask?obj_id=1&frame=9", method="POST", data=_mask_png(9))
        assert status == 200
        status, _ = run.request("/api/refine", {"refine": {"feather_px": 3.0}})
        assert status == 200
        job = load_job_file(kept)
        assert [p.frame for p in job.prompts] == [3, 9]
        assert job.prompts[1].mask is not None and os.path.isfile(job.prompts[1].mask)
        assert os.path.dirname(job.prompts[1].mask) == str(kept.parent / "job_masks")
        assert job.config.refine.feather_px == 3.0
        for _ in range(2):
            run.request("/api/history", {"op": "undo"})
        assert not kept.exists()  # no prompt: nothing to keep
    finally:
        run.close()
    assert not (tmp_path / "studio" / "recovered").exists()  # nothing was unsaved at the end


def test_an_unsaved_session_is_kept_at_the_end_and_restored_by_the_next_studio(
    clip, tmp_path, config_home
):
    """Closed with prompts not saved: the job (its masks too) is kept under recovered/; the
    next studio on the clip offers it while it has no prompt, and Restore puts the prompts
    and the finishing back (then it is that studio's, kept again if not saved: one copy)."""
    run = Running(clip, tmp_path / "studio" / "a")
    _click(run, 2)
    _click(run, 2, label=0)
    status, _ = run.request("/api/mask?obj_id=2&frame=6", method="POST", data=_mask_png(6))
    assert status == 400  # no object 2 yet
    run.request("/api/objects", {"op": "add"})
    status, _ = run.request("/api/mask?obj_id=2&frame=7", method="POST", data=_mask_png(7))
    assert status == 200
    run.request("/api/history", {"op": "undo"})  # frame 7's mask undone: its file not kept
    run.request("/api/mask?obj_id=2&frame=6", method="POST", data=_mask_png(6))
    run.request("/api/refine", {"refine": {"choke": 0.25}})
    edits = dict(run.studio.edits)
    run.close()
    assert not (tmp_path / "studio" / "a").exists()
    (kept,) = (tmp_path / "studio" / "recovered").glob("*/job.json")
    assert run.studio.recovered_job == kept
    assert kept.parent.name.startswith("clip-")
    assert len(list((kept.parent / "job_masks").glob("mask_*.png"))) == 1

    run = Running(clip, tmp_path / "studio" / "b")
    try:
        status, state = run.request("/api/state")
        offer = state["recovered"]
        assert offer["path"] == str(kept) and offer["prompts"] == 2 and offer["objects"] == 2
        status, state = run.request("/api/recover", {"op": "restore", "path": str(kept)})
        assert status == 200, state
        assert state["recovered"] is None and len(state["prompts"]) == 2
        assert state["refine"]["choke"] == 0.25
        assert {k: (v.points, v.labels) for k, v in run.studio.edits.items()} == {
            k: (v.points, v.labels) for k, v in edits.items()
        }
        mask = run.studio.edits[(2, 6)].mask
        assert mask is not None and mask.startswith(str(tmp_path / "studio" / "b"))
        assert state["can_undo"]  # the restore is undone prompt by prompt
        for _ in range(2):
            run.request("/api/history", {"op": "undo"})
        assert not run.studio.edits
        for _ in range(2):
            run.request("/api/history", {"op": "redo"})
        assert set(run.studio.edits) == set(edits)
        assert not kept.parent.exists()  # restored: this studio's now
        assert (tmp_path / "studio" / "b" / "job.json").is_file()
    finally:
        run.close()
    assert len(list((tmp_path / "studio" / "recovered").glob("*/job.json"))) == 1


def test_a_saved_session_is_not_kept_until_it_changes_again(clip, tmp_path, config_home):
    run = Running(clip, tmp_path / "studio" / "a")
    _click(run, 4)
    body = {"output": str(tmp_path / "o.mov"), "path": str(tmp_path / "saved.json")}
    status, data = run.request("/api/save", body)
    assert status == 200, data
    run.close()
    assert not list((tmp_path / "studio").glob("recovered/*"))

    run = Running(clip, tmp_path / "studio" / "b")
    _click(run, 4)
    run.request("/api/save", dict(body, replace=True))
    _click(run, 5)  # after the save
    run.close()
    (kept,) = (tmp_path / "studio" / "recovered").glob("*/job.json")
    assert [p["frame"] for p in json.loads(kept.read_text())["prompts"]] == [4, 5]


def test_restore_and_discard_refusals(clip, tmp_path, config_home):
    """Restore only into a studio without prompts, only a job kept for this clip, only
    prompts inside this studio's frames (checked before any is set); Discard removes it."""
    run = Running(clip, tmp_path / "studio" / "a")
    _click(run, 20)
    run.close()
    (kept,) = (tmp_path / "studio" / "recovered").glob("*/job.json")

    run = Running(clip, tmp_path / "studio" / "b", end=10)
    try:
        status, data = run.request("/api/recover", {"op": "restore", "path": str(kept)})
        assert status == 400 and "frame 20" in data["error"], data
        assert not run.studio.edits and kept.exists()
        other = tmp_path / "other.json"
        other.write_text(kept.read_text())
        status, data = run.request("/api/recover", {"op": "restore", "path": str(other)})
        assert status == 400 and data["error"].startswith("path: "), data
        _click(run, 1)
        status, data = run.request("/api/state")
        assert data["recovered"] is None  # offered only while there is no prompt
        status, data = run.request("/api/recover", {"op": "restore", "path": str(kept)})
        assert status == 400 and "without prompts" in data["error"], data
        status, data = run.request("/api/recover", {"op": "discard", "path": str(kept)})
        assert status == 200, data
        assert not kept.parent.exists()
    finally:
        run.close()


def test_only_the_newest_kept_sessions_stay(tmp_path):
    base = tmp_path / "studio"
    for i in range(autosave.KEEP + 3):
        work = base / f"w{i}"
        work.mkdir(parents=True)
        (work / "job.json").write_text(json.dumps({"input": "/clip.mp4", "prompts": []}))
        os.utime(work / "job.json", (1_000_000 + i, 1_000_000 + i))
        autosave.keep(work)
    kept = autosave.recovered_for("/clip.mp4", base)
    assert len(kept) == autosave.KEEP
    assert os.path.getmtime(kept[-1]) == 1_000_003  # the three oldest went


def test_a_studio_that_could_not_end_is_recovered_by_the_next(tmp_path, monkeypatch):
    """A folder whose studio is gone (its lock free) is recovered and removed when the next
    studio starts; one whose studio runs (locked), or without a lock, is left alone."""
    monkeypatch.setenv("VOSFX_HOME", str(tmp_path / "home"))
    base = autosave.root()
    for name in ("dead", "alive", "starting", "unlocked"):
        (base / name / "job_masks").mkdir(parents=True)
        job = {"input": f"/{name}.mp4", "prompts": [{"frame": 0, "mask": "job_masks/m.png"}]}
        (base / name / "job.json").write_text(json.dumps(job))
        (base / name / "job_masks" / "m.png").write_bytes(b"png")
    old = time.time() - 2 * autosave.FRESH_S
    for name in ("dead", "alive", "starting"):
        (base / name / ".lock").touch()
        if name != "starting":  # a lock just made, not yet taken: its studio is starting
            os.utime(base / name / ".lock", (old, old))
    with exclusive_lock(base / "alive" / ".lock"):
        work = autosave.new_workdir()
    try:
        assert sorted(p.name for p in base.iterdir()) == sorted(
            ["alive", "starting", "unlocked", "recovered", work.name]
        )
        (kept,) = autosave.recovered_for("/dead.mp4", base)
        assert (kept.parent / "job_masks" / "m.png").read_bytes() == b"png"
        # the new folder is locked while its studio runs: another sweep leaves it
        (work / "job.json").write_text(json.dumps({"input": "/new.mp4"}))
        autosave.sweep(base)
        assert work.is_dir() and not autosave.recovered_for("/new.mp4", base)
    finally:
        autosave.release(work)
    os.utime(work / ".lock", (old, old))
    autosave.sweep(base)
    assert not work.exists() and autosave.recovered_for("/new.mp4", base)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_killed_studio_process_is_kept_and_named_by_the_next(clip, tmp_path):
    """`vosfx studio` killed outright (no cleanup runs) after a click: the next `vosfx studio`
    on the clip recovers it, says where on stderr, and its page offers it; closed by its page
    without saving, it says where the prompts are kept."""
    env = dict(os.environ, VOSFX_HOME=str(tmp_path / "home"))
    proc, url = start_cli([str(clip)], env)
    try:
        wait_ready(url)
        x0, y0, x1, y1 = square_box(3, W, H)
        post(url, "/api/click", {"obj_id": 1, "frame": 3, "x": (x0 + x1) / 2, "y": (y0 + y1) / 2})
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    (lock,) = (tmp_path / "home" / "studio").glob("*/.lock")
    old = time.time() - 2 * autosave.FRESH_S  # the user comes back a while later
    os.utime(lock, (old, old))
    proc, url = start_cli([str(clip)], env)
    try:
        offer = wait_ready(url)["recovered"]
        assert offer is not None and offer["prompts"] == 1, offer
        post(url, "/api/recover", {"op": "restore", "path": offer["path"]})
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    err = proc.stderr.read()
    assert code == 130, err
    assert f"a session of this clip that ended unsaved is kept in {offer['path']}" in err, err
    (kept,) = (tmp_path / "home" / "studio" / "recovered").glob("*/job.json")
    assert kept != offer["path"] and f"they are kept in {kept}" in err, err
    assert [p.name for p in (tmp_path / "home" / "studio").iterdir()] == ["recovered"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_kept_session_reopened_with_job_is_that_studios_own(clip, tmp_path):
    """`vosfx studio --job <kept job>`: its prompts are back, Save job proposes a name beside
    the clip (not the cache), and it counts as unsaved: stopped again, it is kept again, once."""
    env = dict(os.environ, VOSFX_HOME=str(tmp_path / "home"))
    work = tmp_path / "home" / "studio" / "gone"
    (work / "job_masks").mkdir(parents=True)
    x0, y0, x1, y1 = square_box(5, W, H)
    prompt = {"frame": 5, "obj_id": 1, "points": [[(x0 + x1) / 2, (y0 + y1) / 2]], "labels": [1]}
    job = {"input": str(clip), "output": str(tmp_path / "o.mov"), "prompts": [prompt]}
    (work / "job.json").write_text(json.dumps(job))
    kept = autosave.keep(work)
    proc, url = start_cli(["--job", str(kept)], env)
    try:
        state = wait_ready(url)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    err = proc.stderr.read()
    assert code == 130, err
    assert [p["frame"] for p in state["prompts"]] == [5]
    assert state["job_path"] == str(tmp_path / "clip_vosfx_job.json")
    (again,) = (tmp_path / "home" / "studio" / "recovered").glob("*/job.json")
    assert again != kept and not kept.exists()
    assert f"they are kept in {again}" in err, err


def test_object_names_are_saved_with_the_job_and_given_back(clip, tmp_path, config_home):
    """A renamed object's name goes into the saved job (and the kept session) and comes back
    when either is reopened; default names are not written."""
    run = Running(clip, tmp_path / "studio" / "a")
    _click(run, 2)
    run.request("/api/objects", {"op": "add"})
    _click(run, 2, obj=2)
    run.request("/api/objects", {"op": "rename", "obj_id": 1, "name": "  the dog "})
    assert load_job_file(tmp_path / "studio" / "a" / "job.json").names == {1: "the dog"}
    saved = tmp_path / "named.json"
    body = {"output": str(tmp_path / "o.mov"), "path": str(saved)}
    assert run.request("/api/save", body)[0] == 200
    run.request("/api/objects", {"op": "rename", "obj_id": 2, "name": "ball"})  # unsaved now
    run.close()
    assert json.loads(saved.read_text())["names"] == {"1": "the dog"}
    (kept,) = (tmp_path / "studio" / "recovered").glob("*/job.json")
    assert load_job_file(kept).names == {1: "the dog", 2: "ball"}

    run = Running(clip, tmp_path / "studio" / "b")
    try:
        _, state = run.request("/api/recover", {"op": "restore", "path": str(kept)})
        assert [o["name"] for o in state["objects"]] == ["the dog", "ball"]
    finally:
        run.close()
    from vosfx.studio.state import Studio

    job = load_job_file(saved)
    st = Studio(job.input, engine=run.engine, config=job.config, workdir=tmp_path / "w")
    try:
        st.restore(job)
        assert {o.obj_id: o.name for o in st.objects.values()} == {1: "the dog", 2: "object 2"}
    finally:
        st.close()


def test_a_file_system_without_locks_still_opens_studios(tmp_path, monkeypatch):
    """Where locking fails (some network shares: ENOLCK), a studio still gets its folder, and
    a sweep leaves every folder alone (it cannot tell a live studio from a gone one)."""
    import errno

    import vosfx.studio.autosave as mod

    monkeypatch.setenv("VOSFX_HOME", str(tmp_path / "home"))

    @contextlib.contextmanager
    def no_locks(path, *a, **kw):  # as flock on such a share: the file made, not locked
        open(path, "a").close()
        raise OSError(errno.ENOLCK, "No locks available")
        yield

    monkeypatch.setattr(mod, "exclusive_lock", no_locks)
    work = autosave.new_workdir()
    (work / "job.json").write_text(json.dumps({"input": "/c.mp4", "prompts": []}))
    old = time.time() - 2 * autosave.FRESH_S
    os.utime(work / ".lock", (old, old))
    assert autosave.sweep(autosave.root()) == [] and work.is_dir()
    autosave.release(work)


def test_a_pattern_typed_relative_is_kept_absolute(tmp_path, monkeypatch, config_home):
    """`vosfx studio shots/%04d.png`: the job kept (read from the cache's folder) and a job
    saved elsewhere name the plate by its absolute folder; before, a kept job's relative
    pattern was read against the cache."""
    from tests.fakes import FakeEngine
    from vosfx.presets import resolve_config
    from vosfx.studio.state import Studio

    (tmp_path / "shots").mkdir()
    for n in range(1, 7):
        Image.fromarray(np.full((H, W, 3), 40 * n, np.uint8)).save(tmp_path / f"shots/{n:04d}.png")
    monkeypatch.chdir(tmp_path)
    st = Studio(
        "shots/%04d.png", engine=FakeEngine(), config=resolve_config((), {}), workdir=tmp_path / "w"
    )
    try:
        st.add_object()
        st.click(1, 2, 10, 10, 1)
        job = load_job_file(tmp_path / "w" / "job.json")
        assert job.input == str(tmp_path / "shots" / "%04d.png")
    finally:
        st.close()


def test_the_job_saved_beside_the_clip_is_offered_and_opened(clip, tmp_path, config_home):
    """The next day's `vosfx studio clip.mp4` finds yesterday's job where Save job put it
    (beside the clip): the page offers it, Open puts its prompts, finishing and output back,
    Save job then writes it in place, and nothing is unsaved; a job of another clip there is
    not offered."""
    run = Running(clip, tmp_path / "studio" / "a")
    _click(run, 3)
    run.request("/api/refine", {"refine": {"feather_px": 1.5}})
    _, state = run.request("/api/state")
    saved = state["job_path"]
    assert saved == str(tmp_path / "clip_vosfx_job.json") and state["saved_job"] is None
    out = str(tmp_path / "mine.mov")
    assert run.request("/api/save", {"output": out, "path": saved})[0] == 200
    run.close()
    assert not (tmp_path / "studio" / "recovered").exists()

    run = Running(clip, tmp_path / "studio" / "b")
    try:
        _, state = run.request("/api/state")
        offer = state["saved_job"]
        assert offer["path"] == saved and offer["prompts"] == 1 and state["recovered"] is None
        status, state = run.request("/api/recover", {"op": "open", "path": saved})
        assert status == 200, state
        assert [p["frame"] for p in state["prompts"]] == [3]
        assert state["refine"]["feather_px"] == 1.5
        assert state["job_path"] == saved and state["output"] == out
        assert state["saved_job"] is None and not run.studio.unsaved
        status, data = run.request("/api/recover", {"op": "open", "path": saved})
        assert status == 400 and data["error"].startswith("path: "), data  # no longer offered
    finally:
        run.close()
    assert not (tmp_path / "studio" / "recovered").exists()

    other = make_clip(tmp_path / "other.mp4", n=N, width=W, height=H)
    data = json.loads(Path(saved).read_text())
    data["input"] = str(other)
    Path(saved).write_text(json.dumps(data))
    run = Running(clip, tmp_path / "studio" / "c")
    try:
        assert run.request("/api/state")[1]["saved_job"] is None
    finally:
        run.close()

"""vosfx studio's server and state over HTTP (no browser): token, Host and Origin checks,
paths, bad input, undo/redo, objects, dropped masks, reopening a saved job, Done for editor
plugins, and closing the page or Ctrl-C leaving no partial output."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.fakes import FakeEngine
from tests.media import make_clip, square_box
from tests.studio_helpers import Running, page_state, popen_cli, post, start_cli, wait_ready
from vosfx.cli import cli
from vosfx.job import load_job_file

W, H, N = 96, 64, 24


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "clip.mp4", n=N, width=W, height=H)


@pytest.fixture
def run(clip, tmp_path, config_home):
    r = Running(clip, tmp_path / "work")
    yield r
    r.close()


def _centre(t):
    x0, y0, x1, y1 = square_box(t, W, H)
    return (x0 + x1) / 2, (y0 + y1) / 2


def _click(run, t, label=1, obj=1, xy=None):
    x, y = xy or _centre(t)
    return run.request("/api/click", {"obj_id": obj, "frame": t, "x": x, "y": y, "label": label})


@pytest.mark.parametrize(
    "path", ["/", "/api/state", "/api/timeline", "/api/view/0", "/api/events", "/static/studio.js"]
)
@pytest.mark.parametrize("token", [None, "wrong"])
def test_every_request_needs_the_token(run, path, token):
    status, _ = run.request(path, token=token)
    assert status == 403


def test_post_without_token_changes_nothing(run):
    status, _ = run.request("/api/click", {"obj_id": 1, "frame": 0, "x": 5, "y": 5}, token=None)
    assert status == 403 and run.studio.edits == {}


@pytest.mark.parametrize(
    "headers", [{"Host": "evil.example:80"}, {"Origin": "http://evil.example"}, {"Origin": "null"}]
)
def test_foreign_host_or_origin_is_refused(run, headers):
    status, _ = run.request("/api/state", headers=headers)
    assert status == 403


def test_a_tunnel_to_another_port_is_told_why(run):
    """A page reached through an SSH tunnel to another local port (Host 127.0.0.1:9000 for a
    studio on another port) is refused, saying which port to use on both ends; a foreign
    name gets the bare refusal."""
    port = run.ctl.port
    for host in (f"127.0.0.1:{port + 1}", f"localhost:{port + 1}"):
        status, body = run.request("/", headers={"Host": host})
        assert status == 403 and f"listens on port {port}" in body.decode(), body
        assert f"ssh -L {port}:127.0.0.1:{port}" in body.decode()
    status, body = run.request("/", headers={"Host": "evil.example:80"})
    assert status == 403 and body == b"forbidden"


def test_token_in_query_and_same_origin_are_accepted(run):
    status, data = run.request(
        f"/api/state?token={run.ctl.token}", token=None, headers={"Origin": run.base}
    )
    assert status == 200 and data["ready"]


def test_listens_on_loopback_only(run):
    from vosfx.studio.server import bind

    sock = bind(0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    with socket.socket() as s:
        s.settimeout(1)
        # the port is bound to 127.0.0.1, not 0.0.0.0: another local address is refused
        addrs = [a for a in _local_addresses() if a != "127.0.0.1"]
        for addr in addrs:
            assert s.connect_ex((addr, run.ctl.port)) != 0


def _local_addresses():
    try:
        return {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        return set()


@pytest.mark.parametrize(
    "path",
    [
        "/static/../state.py",
        "/static/%2e%2e%2fstate.py",
        "/static/index.html.bak",
        "/static/..%2F..%2Fetc%2Fpasswd",
    ],
)
def test_only_the_page_files_are_served(run, path):
    status, body = run.request(path)
    assert status == 404
    assert b"import" not in (body if isinstance(body, bytes) else b"")


@pytest.mark.parametrize(
    "body, message",
    [
        ({"output": "relative/out.mov"}, "output: expected an absolute path"),
        ({"output": "/tmp/../etc/out.mov"}, "output: a path may not contain '..'"),
        ({"output": "/nonexistent-folder-xyz/out.mov"}, "does not exist"),
    ],
)
def test_render_paths_are_validated(run, body, message):
    _click(run, 0)
    status, data = run.request("/api/render", body)
    assert status == 400 and message in data["error"]


def test_render_refuses_to_replace_the_clip(run, clip):
    _click(run, 0)
    status, data = run.request(
        "/api/render", {"output": str(clip), "overwrite": True, "formats": ["prores4444"]}
    )
    assert status == 400 and "clip itself" in data["error"]


def test_render_refuses_an_existing_sidecar_in_the_pages_words(run, tmp_path):
    """A file named like the render's sidecar (<output>.json) is not replaced unless
    "replace existing" is ticked; the message names the page's control, not a CLI flag."""
    _click(run, 0)
    notes = tmp_path / "o.mov.json"
    notes.write_text("notes")
    status, data = run.request(
        "/api/render", {"output": str(tmp_path / "o.mov"), "formats": ["prores4444"]}
    )
    assert status == 400 and "o.mov.json" in data["error"], data
    assert 'tick "replace existing"' in data["error"] and "--" not in data["error"]
    assert notes.read_text() == "notes" and not (tmp_path / "o.mov").exists()


def test_save_job_refuses_the_path_its_render_would_write_over(run, tmp_path):
    """A job saved as seq.json that renders the PNG sequence folder seq: its sidecar is
    seq.json, the job file itself (rendered later, the sidecar replaced the job). Refused,
    naming the field; another name saves."""
    _click(run, 0)
    body = {"output": str(tmp_path / "seq"), "formats": ["png16"]}
    status, data = run.request("/api/save", dict(body, path=str(tmp_path / "seq.json")))
    assert status == 400 and data["error"].startswith("path: "), data
    assert "sidecar of output" in data["error"] and not (tmp_path / "seq.json").exists()
    status, data = run.request("/api/save", dict(body, path=str(tmp_path / "seq_job.json")))
    assert status == 200 and Path(data["path"]).is_file(), data


def test_save_job_path_errors_name_the_field(run, tmp_path):
    """The Save job panel has two paths (output, job): the error says which one is wrong."""
    _click(run, 0)
    out = str(tmp_path / "o.mov")
    status, data = run.request("/api/save", {"output": out, "path": "jobs/j.json"})
    assert status == 400 and data["error"].startswith("path: expected an absolute path")


def test_save_job_needs_a_json_name(run, tmp_path):
    _click(run, 0)
    status, data = run.request(
        "/api/save", {"output": str(tmp_path / "o.mov"), "path": str(tmp_path / "job.txt")}
    )
    assert status == 400 and ".json" in data["error"]


@pytest.mark.parametrize("name", ["frame.png", "clip_folder", "taken.json"])
def test_save_job_refuses_before_asking_to_replace(run, tmp_path, name):
    """An existing path Save job would refuse anyway (not .json, a folder) is refused at once:
    it answered "exists" first, so the page asked "Replace it?" for a save that then failed."""
    _click(run, 0)
    target = tmp_path / name
    if name.endswith(".png"):
        target.write_bytes(b"not a job")
    else:
        target.mkdir()
    body = {"output": str(tmp_path / "o_png16"), "path": str(target)}
    status, data = run.request("/api/save", body)
    assert status == 400 and "exists" not in data, data
    assert (".json" if name != "taken.json" else "is a folder") in data["error"], data
    assert run.request("/api/save", {**body, "replace": True})[0] == 400


def test_bad_prompt_values_are_400(run):
    for body in (
        {"obj_id": 1, "frame": 0, "x": "a", "y": 1},
        {"obj_id": 9, "frame": 0, "x": 1, "y": 1},
        {"obj_id": 1, "frame": N + 5, "x": 1, "y": 1},
        {"obj_id": 1, "frame": 0, "x": W + 50, "y": 1},
    ):
        status, data = run.request("/api/click", body)
        assert status == 400 and data["error"], body


def test_retract_takes_back_only_the_last_click_leaving_no_redo_step(run):
    """The first press of a double-click (the page sends every click at once) is taken back
    by ``retract``: the prompt as before it, no redo step of it, and the redo steps it had
    cleared back. Anything but that click as the last change is left alone."""
    (ax, ay), (bx, by), (cx, cy) = _centre(0), (_centre(0)[0] + 2, 30), (_centre(0)[0] - 2, 31)
    _click(run, 0, xy=(ax, ay))
    _click(run, 0, xy=(bx, by))
    run.request("/api/history", {"op": "undo"})  # B waits in redo
    _click(run, 0, xy=(cx, cy))
    retract = {"op": "retract", "obj_id": 1, "frame": 0, "label": 1}
    assert run.request("/api/history", {**retract, "x": ax, "y": ay})[1] == {"frame": None}
    assert run.studio.edits[(1, 0)].points == ((ax, ay), (cx, cy))  # not the last click
    assert run.request("/api/history", {**retract, "x": cx, "y": cy})[1] == {"frame": 0}
    assert run.studio.edits[(1, 0)].points == ((ax, ay),)
    assert run.studio.session.result(0).logits is not None
    run.request("/api/history", {"op": "redo"})  # the redo the click had cleared: B
    assert run.studio.edits[(1, 0)].points == ((ax, ay), (bx, by))
    run.request("/api/history", {"op": "undo"})
    run.request("/api/history", {"op": "undo"})
    assert run.studio.edits == {}
    assert run.request("/api/history", {"op": "undo"})[1] == {"frame": None}  # nothing left


def test_frame_numbers_must_be_whole(run, tmp_path):
    """A frame of 2.5 is refused, not taken as 2."""
    _click(run, 0)
    status, data = run.request("/api/render", {"output": str(tmp_path / "o"), "end": 2.5})
    assert status == 400 and "end: expected an integer, found 2.5" in data["error"], data
    assert run.request("/api/click", {"obj_id": 1, "frame": 1.5, "x": 3, "y": 3})[0] == 400


def test_click_answer_equals_the_session_result_and_undo_redo(run):
    status, res = _click(run, 3)
    assert status == 200 and res["objects"][0]["area"] > 0
    _click(run, 3, label=0, xy=(2, 2))
    assert run.studio.edits[(1, 3)].labels == (1, 0)
    assert run.request("/api/history", {"op": "undo"})[1]["frame"] == 3
    assert run.studio.edits[(1, 3)].labels == (1,)
    run.request("/api/history", {"op": "undo"})
    assert run.studio.edits == {} and run.studio.session.obj_ids == ()
    run.request("/api/history", {"op": "redo"})
    run.request("/api/history", {"op": "redo"})
    assert run.studio.edits[(1, 3)].labels == (1, 0)


def test_a_click_undone_after_tracking_leaves_nothing_to_track(run):
    """Track, then a click on the prompted frame and Undo: the frame's prompt is what the
    track used again, so nothing is stale (before, Undo made the whole clip stale: Track
    again re-tracked every frame)."""
    _click(run, 3)
    run.request("/api/track", {})
    run.wait_idle()
    assert run.request("/api/timeline")[1]["stale"] == 0
    _click(run, 3, label=0, xy=(2, 2))
    assert run.request("/api/timeline")[1]["stale"] > 0
    run.request("/api/history", {"op": "undo"})
    assert run.request("/api/timeline")[1]["stale"] == 0
    status, again = run.request("/api/track", {})
    assert status == 200 and again["total"] == 0


def test_a_change_that_changes_nothing_is_no_undo_step(run):
    """Clear on a frame without a prompt is not an undo step: before, Ctrl+Z then undid
    nothing (and jumped to that frame) and the earlier click needed a second Ctrl+Z."""
    _click(run, 3)
    assert run.request("/api/clear", {"obj_id": 1, "frame": 9})[0] == 200
    assert run.request("/api/history", {"op": "undo"})[1]["frame"] == 3
    assert run.studio.edits == {}
    assert not run.request("/api/state")[1]["can_undo"]


def test_click_answer_carries_the_engine_masks(run):
    """Each object's layer is the engine's mask at the clip's size (the render's resampling
    of the session's logits, alpha >= 0.5), drawn as the overlay preview draws it: index 1
    inside, 2 on the outline; an object without a result there has none. The answer also
    lists the prompts and the undo state."""
    import base64

    from vosfx.matte.compose import object_colour, outline
    from vosfx.matte.refine import logits_to_prob

    run.request("/api/objects", {"op": "add"})
    _click(run, 5, obj=2)
    status, res = _click(run, 3)
    assert status == 200 and [o["obj_id"] for o in res["objects"]] == [1, 2]
    assert res["objects"][1]["mask"] is None  # object 2: no result on frame 3
    layer = Image.open(io.BytesIO(base64.b64decode(res["objects"][0]["mask"])))
    assert layer.mode == "P" and layer.size == (W, H)
    assert layer.info["transparency"][:3] == bytes([0, 128, 255])
    assert layer.getpalette()[3:9] == [*object_colour(1), *object_colour(1)]
    cfg = run.studio.config.refine
    logits = run.studio.session.result(3).logits[0]
    want = logits_to_prob(logits, (H, W), cfg.threshold, cfg.softness) >= 0.5
    index = np.asarray(layer)
    assert want.any() and not want.all()
    np.testing.assert_array_equal(index > 0, want)
    np.testing.assert_array_equal(index == 2, outline(want))
    assert res["prompts"] == run.request("/api/state")[1]["prompts"]
    assert len(res["prompts"]) == 2 and res["can_undo"] and not res["can_redo"]


def test_mask_layers_of_a_large_clip_are_at_most_1280_wide():
    """A 3000x1500 clip's layer is 1280x640: the same logits resampled to that grid."""
    from types import SimpleNamespace

    from vosfx.config import RefineConfig
    from vosfx.matte.refine import logits_to_prob
    from vosfx.studio.views import LAYER_MAX_SIDE, mask_layers
    from vosfx.types import MaskResult

    assert LAYER_MAX_SIDE == 1280
    yy, xx = np.mgrid[0:64, 0:64]
    logits = np.where((xx - 20) ** 2 + (yy - 30) ** 2 < 150, 8.0, -8.0).astype(np.float32)
    res = MaskResult(0, (1,), logits[None], np.float32([3.0]), np.float32([1.0]), {})
    studio = SimpleNamespace(
        config=SimpleNamespace(refine=RefineConfig()),
        info=SimpleNamespace(width=3000, height=1500),
    )
    (layer,) = mask_layers(studio, res)
    index = np.asarray(Image.open(io.BytesIO(layer)))
    assert index.shape == (640, 1280)
    np.testing.assert_array_equal(index > 0, logits_to_prob(logits, (640, 1280)) >= 0.5)


def test_objects_add_rename_delete(run):
    _status, added = run.request("/api/objects", {"op": "add"})
    assert added["obj_id"] == 2
    run.request("/api/objects", {"op": "rename", "obj_id": 2, "name": "dog"})
    _click(run, 0, obj=2)
    st = run.request("/api/state")[1]
    assert [o["name"] for o in st["objects"]] == ["object 1", "dog"]
    run.request("/api/objects", {"op": "delete", "obj_id": 2})
    st = run.request("/api/state")[1]
    assert [o["obj_id"] for o in st["objects"]] == [1] and st["prompts"] == []


def test_dropped_mask_becomes_the_prompt(run):
    x0, y0, x1, y1 = square_box(5, W, H)
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, "PNG")
    status, res = run.request("/api/mask?obj_id=1&frame=5", data=buf.getvalue(), method="POST")
    assert status == 200 and res["objects"][0]["area"] > 0
    assert run.studio.edits[(1, 5)].mask is not None
    status, data = run.request("/api/mask?obj_id=1&frame=5", data=b"not an image", method="POST")
    assert status == 400 and "image" in data["error"]


@pytest.mark.parametrize(
    ("query", "data", "says"),
    [
        ("&name=notes%20v2.txt", b"hello", 'the dropped file "notes v2.txt" is not an image'),
        ("", b"hello", "the dropped file is not an image"),
        ("&name=cut.png", "cut", '"cut.png" is a damaged'),
    ],
)
def test_a_dropped_file_that_is_not_an_image_is_named(run, query, data, says):
    """Dropping a file that is not an image says which file and what is expected; it said
    "not an image PIL can read: cannot identify image file <_io.BytesIO object at 0x...>"."""
    if data == "cut":  # a PNG cut short (a copy still being written)
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W), np.uint8)).save(
            buf, "PNG"
        )
        data = buf.getvalue()[: len(buf.getvalue()) // 2]
    status, res = run.request(f"/api/mask?obj_id=1&frame=5{query}", data=data, method="POST")
    assert status == 400 and says in res["error"], res
    assert "mask image" in res["error"] and "BytesIO" not in res["error"], res
    assert "PIL" not in res["error"], res
    assert run.studio.edits == {}


def _mask_png(kind: str) -> bytes:
    """A mask of the square at (30..60, 20..40) on a 96x64 frame, as an editor may export it."""
    inside = np.zeros((H, W), bool)
    inside[20:40, 30:60] = True
    if kind == "davis":  # palette PNG, object 1 in DAVIS red (luma 38)
        img = Image.fromarray(inside.astype(np.uint8), "P")
        img.putpalette([0, 0, 0, 128, 0, 0])
    elif kind == "rgba-opaque":  # white on black, alpha opaque everywhere
        rgba = np.zeros((H, W, 4), np.uint8)
        rgba[..., 3] = 255
        rgba[inside, :3] = 255
        img = Image.fromarray(rgba, "RGBA")
    elif kind == "red":  # a pure red mask (luma 76)
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[inside, 0] = 255
        img = Image.fromarray(rgb, "RGB")
    else:  # 16-bit: faint noise of 1000/65535 (1.5 %) outside the square
        m16 = np.where(inside, 65535, 0).astype(np.uint16)
        m16[0:10, 0:10] = 1000
        img = Image.fromarray(m16)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["davis", "rgba-opaque", "red", "16bit"])
def test_dropped_mask_is_read_as_the_job_reads_a_mask(run, tmp_path, kind):
    """A dropped mask is the mask `vosfx matte --mask FILE --fit` takes from the same file
    (palette indices, an opaque alpha ignored, any channel, 16-bit levels): before, the studio
    read luma or alpha, so a DAVIS mask was "empty" and an opaque RGBA one the whole frame."""
    from vosfx.io.prompts import load_mask_prompt

    data = _mask_png(kind)
    (tmp_path / "m.png").write_bytes(data)
    (want,) = load_mask_prompt(tmp_path / "m.png", video_size=(W, H), fit=True)
    status, res = run.request("/api/mask?obj_id=1&frame=5", data=data, method="POST")
    assert status == 200, res
    got = np.asarray(Image.open(run.studio.edits[(1, 5)].mask)) > 0
    np.testing.assert_array_equal(got, want.mask)


def test_saved_job_reopens_with_the_same_prompts(run, tmp_path, clip, monkeypatch):
    _click(run, 2)
    _click(run, 2, label=0, xy=(3, 3))
    buf = io.BytesIO()
    m = np.zeros((H, W), np.uint8)
    m[10:30, 10:30] = 255
    Image.fromarray(m).save(buf, "PNG")
    run.request("/api/objects", {"op": "add"})
    run.request("/api/mask?obj_id=2&frame=7", data=buf.getvalue(), method="POST")
    run.request("/api/refine", {"refine": {"feather_px": 3, "alpha": "hard"}})
    job_path = tmp_path / "jobs" / "j.json"
    job_path.parent.mkdir()
    status, data = run.request(
        "/api/save",
        {"output": str(tmp_path / "out.mov"), "path": str(job_path), "start": 1, "end": 20},
    )
    assert status == 200, data
    job = load_job_file(job_path)
    assert job.config.refine.feather_px == 3 and job.config.refine.alpha == "hard"
    assert (job.start, job.end) == (1, 20)
    assert (job_path.parent / "j_masks").is_dir()
    # reopen in a second studio, as `vosfx studio --job` does
    from vosfx.studio.state import Studio

    st = Studio(
        job.input,
        engine=FakeEngine(),
        config=job.config,
        presets=job.presets,
        start=job.start,
        end=job.end,
        workdir=tmp_path / "w2",
    )
    (tmp_path / "w2").mkdir(exist_ok=True)
    try:
        st.restore(job)
        assert st.edits[(1, 2)].points == run.studio.edits[(1, 2)].points
        assert st.edits[(1, 2)].labels == (1, 0)
        np.testing.assert_array_equal(
            st.session.result(7).logits, run.studio.session.result(7).logits
        )
    finally:
        st.close()


def test_an_unexpected_failure_reaches_the_page(clip, tmp_path, config_home, monkeypatch, caplog):
    """A runtime error that is not vosfx's own (torch out of memory, a bug) in a track ends
    it with an error event, and in a request is a JSON answer naming it: before, the track's
    thread died silently (the page said "tracking..." for ever) and the request was a plain
    text 500 the page could not read."""

    def boom(frame_index, obj_id, base):
        if frame_index == 10:
            raise RuntimeError("CUDA out of memory")
        return base

    r = Running(clip, tmp_path / "work", engine=FakeEngine(logit_fn=boom))
    events: list[dict] = []
    r.studio.emit = events.append
    try:
        _click(r, 0)
        assert r.request("/api/track", {})[0] == 200
        r.wait_idle()
        assert events[-1]["event"] == "error" and "CUDA out of memory" in events[-1]["message"]

        def broken(*_a, **_k):
            raise RuntimeError("decoder state lost")

        monkeypatch.setattr(r.studio.session, "add_prompt", broken)
        status, data = _click(r, 3)
        assert status == 500 and "decoder state lost" in data["error"]
    finally:
        r.close()
    # both tracebacks are in the log, for the terminal (then not a failure of this test)
    assert [x.exc_info[1].args[0] for x in caplog.records if x.exc_info] == [
        "CUDA out of memory",
        "decoder state lost",
    ]
    caplog.clear()


def test_stop_stops_two_tracks_started_at_once(clip, tmp_path, config_home, monkeypatch):
    """Track pressed twice (or in two tabs) at once: Stop stops the work. Before, both
    requests could pass their stop() before either started, the first track ran unseen
    (the worker held only the second) and Stop waited for it to finish the whole clip."""
    import threading

    from vosfx.studio.work import Worker

    r = Running(clip, tmp_path / "work", engine=FakeEngine(logit_fn=_slow(0.05)))
    real_start, both = Worker.start, threading.Barrier(2)

    def start(self, kind, body):
        both.wait(10)  # each request is past its own stop() before either starts
        real_start(self, kind, body)

    monkeypatch.setattr(Worker, "start", start)
    try:
        _click(r, 0)
        tracks = [threading.Thread(target=r.studio.track) for _ in range(2)]
        for t in tracks:
            t.start()
        for t in tracks:
            t.join(30)
        time.sleep(0.2)
        r.studio.stop()
        assert r.studio.busy is None and r.studio.session.stale()  # stopped, not finished
    finally:
        r.close()


def test_track_after_stop_goes_on_from_where_it_stopped(clip, tmp_path, config_home):
    """Stop part-way, then Track again: the tail goes on from the last frame it tracked (its
    snapshot), not from the prompt; the page's total counts the frames left."""
    r = Running(clip, tmp_path / "work", engine=FakeEngine(logit_fn=_slow(0.05)))
    events: list[dict] = []
    r.studio.emit = events.append
    try:
        _click(r, 0)
        status, first = r.request("/api/track", {})
        assert status == 200 and first["total"] == r.studio.end - 1
        deadline = time.monotonic() + 30
        while sum(e["event"] == "frame" for e in events) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        r.studio.stop()
        tracked = sum(e["event"] == "frame" for e in events)
        assert 3 <= tracked < first["total"]
        del events[:]
        status, again = r.request("/api/track", {})
        r.wait_idle()
        assert again["total"] == first["total"] - tracked
        assert [e["frame"] for e in events if e["event"] == "frame"] == list(
            range(tracked + 1, r.studio.end)
        )
        assert events[-1]["event"] == "tracked" and events[-1]["frames"] == again["total"]
        assert not r.studio.session.stale()
    finally:
        r.close()


def test_the_timeline_reads_the_plan_only_while_no_work_runs(clip, tmp_path, config_home):
    """The timeline (asked every 250 ms during a track) reads the session's plan and the
    engine's report only while no track or render runs: read from the server's thread while
    the worker's sweep changes them, they could change size under it. Meanwhile it gives
    the last reading, and the reading after the track is current."""
    import threading

    r = Running(clip, tmp_path / "work", engine=FakeEngine(logit_fn=_slow(0.03)))
    calls: list[tuple[str, bool]] = []
    real = r.studio.session.stale

    def stale():
        calls.append((threading.current_thread().name, r.studio.busy is not None))
        return real()

    r.studio.session.stale = stale
    try:
        _click(r, 0)
        before = r.request("/api/timeline")[1]["stale"]
        assert before > 0
        r.request("/api/track", {})
        deadline = time.monotonic() + 30
        while not r.studio.session.store.has(1, 3) and time.monotonic() < deadline:
            time.sleep(0.01)
        del calls[:]
        during = r.request("/api/timeline")[1]
        assert during["stale"] == before and calls == []  # the last reading, nothing read
        r.wait_idle()
        assert r.request("/api/timeline")[1]["stale"] == 0
    finally:
        r.close()


def test_a_new_object_during_a_track_answers_at_once(clip, tmp_path, config_home):
    """+ Object while a track runs: the track holds the prompts' lock for its whole run, and
    adding an object waited for it (a 2,000-frame track: minutes of a page that hangs)."""
    r = Running(clip, tmp_path / "work", engine=FakeEngine(logit_fn=_slow(0.25)))
    try:
        _click(r, 0)
        r.request("/api/track", {})  # 23 frames at 0.25 s: ~6 s
        assert r.studio.busy == "track"
        t0 = time.monotonic()
        status, data = r.request("/api/objects", {"op": "add"})
        assert status == 200 and data["obj_id"] == 2
        assert time.monotonic() - t0 < 2.0 and r.studio.busy == "track"
        r.studio.stop()
    finally:
        r.close()


def test_done_writes_the_job_and_ends_the_studio(clip, tmp_path, config_home):
    done = tmp_path / "done.json"
    r = Running(clip, tmp_path / "work", done_job=done)
    try:
        _click(r, 4)
        status, data = r.request("/api/done", {"output": str(tmp_path / "o.mov")})
        assert status == 200 and data["path"] == str(done)
        r.thread.join(30)
        assert r.outcome == ["done"]
    finally:
        r.close()
    job = load_job_file(done)
    assert [(p.frame, p.obj_id) for p in job.prompts] == [(4, 1)]


def test_done_is_refused_without_done_job(run, tmp_path):
    _click(run, 0)
    status, data = run.request("/api/done", {"output": str(tmp_path / "o.mov")})
    assert status == 400 and "--done-job" in data["error"]


def test_closing_the_page_cancels_the_render(clip, tmp_path, config_home):
    slow = FakeEngine(logit_fn=_slow(0.05))
    r = Running(clip, tmp_path / "work", engine=slow)
    import urllib.request

    try:
        _click(r, 0)
        req = urllib.request.Request(f"{r.base}/api/events?token={r.ctl.token}")
        stream = urllib.request.urlopen(req, timeout=10)
        stream.readline()
        out = tmp_path / "render_out"
        status, _ = r.request("/api/render", {"output": str(out), "formats": ["png16"]})
        assert status == 200
        time.sleep(0.3)
        assert r.studio.busy == "render"
        stream.close()  # the page goes away
        r.wait_idle(20)
        assert not out.exists() and not list(tmp_path.glob(".render_out*"))
    finally:
        r.close()


def _slow(delay_s):
    def fn(frame_index, obj_id, base):
        time.sleep(delay_s)
        return base

    return fn


def test_model_missing_offline_says_which_file(clip, tmp_path, config_home, monkeypatch):
    monkeypatch.setenv("VOSFX_OFFLINE", "1")

    def load():
        from vosfx.engine import load_engine
        from vosfx.presets import resolve_config

        return load_engine(resolve_config((), {}).model)

    r = Running(clip, tmp_path / "work", load=load)
    try:
        status, st = r.request("/api/state")
        assert not st["ready"] and st["error"]["kind"] == "download"
        assert "sam2.1_hiera_tiny.pt" in st["error"]["message"]
        assert str(config_home / "cache") in st["error"]["message"]
        status, data = r.request("/api/click", {"obj_id": 1, "frame": 0, "x": 1, "y": 1})
        assert status == 400 and "offline" in data["error"]
    finally:
        r.close()


def test_cli_unreadable_clip(tmp_path, config_home):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    res = CliRunner().invoke(cli, ["studio", str(bad), "--no-browser"])
    assert res.exit_code == 4, res.output
    res = CliRunner().invoke(cli, ["studio", str(tmp_path / "missing.mp4"), "--no-browser"])
    assert res.exit_code == 4


def test_cli_port_in_use(clip, config_home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = CliRunner().invoke(cli, ["studio", str(clip), "--no-browser", "--port", str(port)])
    assert res.exit_code == 3
    assert f"port {port}" in res.output and "--port" in res.output


def test_a_port_is_free_again_as_soon_as_its_studio_ends(clip, tmp_path, config_home):
    """A fixed --port is taken again right after its studio ended: the connections the studio
    closed sit in TIME_WAIT for ~60 s, and binding without SO_REUSEADDR was refused as
    "Address already in use" for that long. A port a studio still listens on stays refused."""
    from vosfx.errors import ConfigError
    from vosfx.studio.server import bind

    run = Running(clip, tmp_path / "work")
    port = run.ctl.port
    assert run.request("/api/state")[0] == 200  # a connection, closed by the server's side
    with pytest.raises(ConfigError, match=f"port {port}"):
        bind(port).close()  # a live studio's port is never shared
    run.close()
    assert not run.thread.is_alive()
    bind(port).close()


@pytest.mark.skipif(sys.platform == "win32", reason="TIME_WAIT on POSIX")
def test_bind_takes_a_port_with_connections_in_time_wait():
    from vosfx.studio.server import bind

    sock = bind(0)
    port = sock.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = sock.accept()
    conn.close()  # the server closes first: its side of the connection goes to TIME_WAIT
    client.recv(1)
    client.close()
    sock.close()
    bind(port).close()


def _model_the_studio_loads(monkeypatch, args) -> tuple:
    """(exit code, output, the [model] config `vosfx studio ARGS` hands load_engine): the
    server is replaced by one that calls the studio's loader once and closes."""
    import vosfx.engine
    import vosfx.studio.server

    seen = []

    def load_engine(model, **kw):  # (progress: a first run's download, said by the page)
        seen.append(model)
        raise RuntimeError("loaded")  # no studio behind it: the config is what is checked

    def serve(ctl, sock, load, open_browser, on_ready):
        sock.close()
        with pytest.raises(RuntimeError, match="loaded"):
            load()
        return "closed"

    monkeypatch.setattr(vosfx.engine, "load_engine", load_engine)
    monkeypatch.setattr(vosfx.studio.server, "serve", serve)
    res = CliRunner().invoke(cli, ["studio", *args, "--no-browser"])
    return res.exit_code, res.output, (seen[0] if seen else None)


def test_cli_model_flags_choose_the_model(clip, tmp_path, config_home, monkeypatch):
    """`vosfx studio` takes `vosfx matte`'s model flags: a local checkpoint (made absolute, as
    a saved job must carry it), the device, precision, image size and threads."""
    monkeypatch.chdir(tmp_path)
    args = [str(clip), "--checkpoint", "mine.pt", "--device", "cpu", "--precision", "int8"]
    code, out, model = _model_the_studio_loads(
        monkeypatch, [*args, "--image-size", "512", "--threads", "1"]
    )
    assert code == 0, out
    assert model.checkpoint == str(tmp_path / "mine.pt")
    assert (model.device, model.precision, model.image_size, model.threads) == (
        "cpu",
        "int8",
        512,
        1,
    )


def test_cli_model_flags_replace_a_jobs_own(clip, tmp_path, config_home, monkeypatch):
    job = tmp_path / "j.json"
    job.write_text(
        json.dumps(
            {
                "input": str(clip),
                "output": str(tmp_path / "o.mov"),
                "overrides": {"model": {"image_size": 512, "precision": "int8"}},
                "prompts": [{"frame": 3, "obj_id": 1, "points": [[10, 10]], "labels": [1]}],
            }
        )
    )
    code, out, model = _model_the_studio_loads(
        monkeypatch, ["--job", str(job), "--image-size", "256"]
    )
    assert code == 0, out
    assert (model.image_size, model.precision) == (256, "int8")  # the flag's, the job's


@pytest.mark.parametrize(
    ("args", "hint"),
    [(["--image-size", "100"], "--image-size"), (["--threads", "-3"], "--threads")],
)
def test_cli_a_bad_model_flag_is_named_before_serving(clip, config_home, monkeypatch, args, hint):
    code, out, model = _model_the_studio_loads(monkeypatch, [str(clip), *args])
    assert code == 2 and hint in out and model is None, out


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_ctrl_c_sigterm_and_sighup_stop_the_render_and_leave_nothing(
    clip, tmp_path, config_home, sig
):
    """Ctrl-C, SIGTERM (an editor plugin cancelling its pick) and SIGHUP (the terminal
    closed) all cancel the render, remove its partial output and the studio's folder, and
    exit 130. SIGTERM and SIGHUP killed the process (143, 129) leaving both behind."""
    env = dict(os.environ, VOSFX_FAKE_DELAY_S="0.05", VOSFX_HOME=str(tmp_path / "home"))
    proc, url = start_cli([str(clip)], env)
    events = _open_events(url)  # a page is open: it must not delay or break the exit
    try:
        wait_ready(url)
        x, y = _centre(0)
        post(url, "/api/click", {"obj_id": 1, "frame": 0, "x": x, "y": y})
        out = tmp_path / "ctrlc_out"
        post(url, "/api/render", {"output": str(out), "formats": ["png16"]})
        time.sleep(0.5)
        assert list(tmp_path.glob(".ctrlc_out*")), "the render had not started writing"
        t0 = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        code = proc.wait(30)
        exit_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        events.close()
    err = proc.stderr.read()
    assert code == 130, err
    assert not out.exists() and not list(tmp_path.glob(".ctrlc_out*"))
    # its cache folder is gone; the unsaved click is kept, and said
    assert [p.name for p in (tmp_path / "home" / "studio").iterdir()] == ["recovered"]
    (kept,) = (tmp_path / "home" / "studio" / "recovered").glob("*/job.json")
    assert len(json.loads(kept.read_text())["prompts"]) == 1
    assert f"the prompts were not saved; they are kept in {kept}" in err, err
    assert "Traceback" not in err and "ASGI" not in err, err
    # not held up by the page's event stream: uvicorn says when its graceful timeout (2 s)
    # ran out; the time is only a loose bound (a loaded machine)
    assert "graceful shutdown exceeded" not in err and exit_s < 10, (exit_s, err)


def _open_events(url):
    """The page's event stream, held open (as an open page holds it) until ``close()``."""
    import urllib.request

    return urllib.request.urlopen(url.replace("/?", "/api/events?"), timeout=30)


def test_an_open_page_does_not_hold_up_the_exit(clip, tmp_path, config_home):
    """Done (or any stop) with the page's event stream open ends the stream at once: the
    studio ended only after uvicorn's 2 s graceful timeout, cancelling the stream with an
    "Exception in ASGI application" traceback. The page is told the studio ended."""
    run = Running(clip, tmp_path / "work", done_job=tmp_path / "picked.json")
    with _open_events(run.url) as stream:
        deadline = time.monotonic() + 10
        while not run.ctl.hub.queues:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        _click(run, 0)
        t0 = time.monotonic()
        status, _ = run.request("/api/done", {"output": str(tmp_path / "o.mov")})
        assert status == 200
        run.thread.join(10)
        exit_s = time.monotonic() - t0
        rest = stream.read().decode()  # the stream ended (EOF), not cut
    assert not run.thread.is_alive() and run.outcome == ["done"]
    assert exit_s < 1.9, exit_s  # before uvicorn's 2 s graceful timeout would cut the stream
    assert '"event": "ended"' in rest, rest


def _cli_exit(args, env, timeout_s=30):
    """(exit code, stderr) of `vosfx studio ARGS --no-browser` that should exit by itself."""
    proc = popen_cli(args, env)
    try:
        _out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        pytest.fail(f"the studio served instead of exiting: {err}")
    return proc.returncode, err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--start", "30"], "--start: 30 is past the clip's last frame (23; it has 24 frames)"),
        (["--start", "-1"], "--start: expected a frame >= 0, found -1"),
        (["--start", "10", "--end", "5"], "--end: expected a frame after --start (10), found 5"),
        (["--start", "5", "--end", "5"], "--end: expected a frame after --start (5), found 5"),
    ],
)
def test_cli_range_outside_the_clip_exits_before_serving(clip, tmp_path, config_home, args, said):
    """A range outside the clip is a usage error before anything is served: before, the
    studio served a page that could only show the error (with --no-browser, for ever) and
    left its cache folder behind."""
    env = dict(os.environ, VOSFX_HOME=str(tmp_path / "home"))
    code, err = _cli_exit([str(clip), *args], env, timeout_s=20)
    assert code == 2 and f"Invalid value for {said}" in err, err
    assert not list((tmp_path / "home" / "studio").glob("*"))


def test_cli_end_past_the_clip_means_its_last_frame(clip, tmp_path, config_home):
    """`--end` past the clip serves up to its last frame, as `vosfx matte --end` renders up to
    it (docs/studio.md said it exited 2, which only `--start` past the clip does)."""
    env = dict(os.environ, VOSFX_HOME=str(tmp_path / "home"))
    proc, url = start_cli([str(clip), "--start", "3", "--end", "400"], env)
    try:
        st = wait_ready(url)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert (st["start"], st["end"]) == (3, N)


def test_cli_reopening_a_job_whose_mask_is_gone_exits_before_serving(clip, tmp_path, config_home):
    """A saved job whose mask file was deleted fails as `vosfx matte --job` fails (exit 5,
    naming the file) before anything is served."""
    job = tmp_path / "j.json"
    gone = tmp_path / "j_masks" / "m.png"
    job.write_text(
        json.dumps(
            {
                "input": str(clip),
                "output": str(tmp_path / "o.mov"),
                "prompts": [{"frame": 3, "obj_id": 1, "mask": "j_masks/m.png"}],
            }
        )
    )
    env = dict(os.environ, VOSFX_HOME=str(tmp_path / "home"))
    code, err = _cli_exit(["--job", str(job)], env, timeout_s=20)
    assert code == 5 and str(gone) in err, err
    assert not list((tmp_path / "home" / "studio").glob("*"))


def test_cli_done_job_for_plugins(clip, tmp_path, config_home):
    """What an editor plugin runs: the studio on a range at the playhead; Done writes the
    job (prompts, range, finishing) and the process exits 0."""
    env = dict(os.environ, VOSFX_HOME=str(tmp_path / "home"))
    done = tmp_path / "picked.json"
    proc, url = start_cli(
        [str(clip), "--start", "4", "--end", "20", "--frame", "9", "--done-job", str(done)], env
    )
    try:
        wait_ready(url)
        x, y = _centre(9)
        post(url, "/api/click", {"obj_id": 1, "frame": 9, "x": x, "y": y})
        post(url, "/api/refine", {"refine": {"feather_px": 2}})
        post(url, "/api/done", {"output": str(tmp_path / "o.mov")})
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stderr.read()
    job = load_job_file(done)
    assert (job.start, job.end) == (4, 20)
    assert [p.frame for p in job.prompts] == [9]
    assert job.config.refine.feather_px == 2


def test_memory_events_are_the_reports():
    from vosfx.studio.timeline import memory_events

    report = {
        "1": {"policy": "rcms", "events": {"40": "gone: promoted 2"}, "promoted": {"40": [33, 30]}},
        "2": {"events": {}, "promoted": {}},
        "fake": True,
    }
    assert memory_events(report) == [
        {"frame": 40, "obj_id": 1, "event": "gone: promoted 2"},
        {"frame": 40, "obj_id": 1, "event": "promoted [33, 30]"},
    ]


def test_cli_reopens_a_saved_job(run, clip, tmp_path):
    """`vosfx studio --job` opens the job's clip and range with its prompts and finishing,
    and proposes the job's own output (it proposed `<clip>_vosfx.mov` whatever the job's
    format, which a png16 job's render then refused) and the job's own file for Save job."""
    _click(run, 6)
    run.request("/api/refine", {"refine": {"choke": 0.25}})
    job_path = tmp_path / "saved.json"
    status, _ = run.request(
        "/api/save",
        {"output": str(tmp_path / "o_png16"), "path": str(job_path), "start": 2, "end": 18},
    )
    assert status == 200
    env = dict(os.environ, VOSFX_HOME=str(tmp_path / "home"))
    proc, url = start_cli(["--job", str(job_path)], env)
    try:
        st = wait_ready(url)
    finally:
        proc.terminate()
        proc.wait(30)
    assert (st["start"], st["end"]) == (2, 18)
    assert [(p["frame"], p["obj_id"], p["points"]) for p in st["prompts"]] == [
        (6, 1, [list(_centre(6))])
    ]
    assert st["refine"]["choke"] == 0.25
    assert (st["format"], st["output"]) == ("png16", str(tmp_path / "o_png16"))
    assert st["job_path"] == str(job_path.resolve())  # Save job saves it again in place


def test_the_proposed_output_fits_the_format(run, clip):
    """The Render panel proposes what `vosfx matte` writes without -o in the studio's format
    (`-p png16`: a `clip_vosfx_png16` folder), and each format's default for the page to
    follow: it proposed `clip_vosfx.mov` for png16, which Render then refused."""
    from vosfx.job import default_output

    st = run.request("/api/state")[1]
    folder = Path(st["clip"]).parent
    assert st["format"] == "png16" and st["output"] == str(folder / "clip_vosfx_png16")
    assert st["default_outputs"]["prores4444"] == str(folder / "clip_vosfx.mov")
    assert st["job_path"] == str(folder / "clip_vosfx_job.json")  # a new job: beside the clip
    assert st["default_outputs"] == {f: default_output(st["clip"], f) for f in st["formats"]}


def test_render_preset_must_be_an_output_preset(run, tmp_path):
    _click(run, 0)
    status, data = run.request(
        "/api/save",
        {"output": str(tmp_path / "o"), "preset": "best", "path": str(tmp_path / "j.json")},
    )
    assert status == 400 and "not an output preset" in data["error"]
    status, _ = run.request(
        "/api/save",
        {"output": str(tmp_path / "o"), "preset": "exr", "path": str(tmp_path / "j.json")},
    )
    assert status == 200
    assert load_job_file(tmp_path / "j.json").config.output.format == "exr32"


@pytest.mark.parametrize("depth", [8, 16])
def test_image_sequence_input(tmp_path, config_home, depth):
    """A folder of PNGs (16-bit too) opens like a video: frames decoded on demand."""
    from tests.media import make_sequence

    seq = make_sequence(tmp_path / "seq", n=12, width=W, height=H, depth=depth)
    r = Running(seq, tmp_path / "work")
    try:
        status, res = _click(r, 7)
        assert status == 200 and res["objects"][0]["area"] > 0
        status, img = r.request("/api/view/7?view=cutout")
        assert status == 200
        rgba = np.asarray(Image.open(io.BytesIO(img)))
        assert rgba.shape == (H, W, 4) and rgba[..., 3].max() == 255
        r.request("/api/track", {})
        r.wait_idle()
        assert r.request("/api/timeline")[1]["objects"][0]["tracked"] == [[0, 11]]
    finally:
        r.close()


def test_render_of_a_numbered_plate_keeps_its_numbers_and_says_its_gap(tmp_path, config_home):
    """A plate shot.1001.png ... with shot.1004.png missing renders from the studio as from
    the command line: the images carry the plate's numbers and the gap comes with the result."""
    from tests.media import make_sequence

    seq = make_sequence(tmp_path / "seq", n=6, width=W, height=H, name="shot.{:04d}", first=1001)
    (seq / "shot.1004.png").unlink()
    r = Running(seq, tmp_path / "work")
    try:
        assert _click(r, 2)[0] == 200
        out = tmp_path / "matte"
        status, _ = r.request("/api/render", {"output": str(out), "formats": ["png16"]})
        assert status == 200
        r.wait_idle()
        names = sorted(p.name for p in out.iterdir())
        assert names == [f"matte.{n}.png" for n in (1001, 1002, 1003, 1005, 1006)]
        (warning,) = r.studio.last_render["warnings"]
        assert "missing between 1001 and 1006 (1004)" in warning
    finally:
        r.close()


def test_render_never_writes_among_an_image_sequence_clips_frames(tmp_path, config_home):
    """An image-folder clip: an output named as one of its frames (or any new name inside the
    folder) would replace or add frames, even with "replace existing"; refused before any
    work, the frames as they were."""
    from tests.media import make_sequence

    seq = make_sequence(tmp_path / "seq", n=4, width=W, height=H, name="{:05d}")
    before = {p.name: p.read_bytes() for p in seq.iterdir()}
    r = Running(seq, tmp_path / "work")
    try:
        assert _click(r, 0)[0] == 200
        for name in ("00002.png", "mattes"):
            body = {"output": str(seq / name), "formats": ["png16"], "overwrite": True}
            status, data = r.request("/api/render", body)
            assert status == 400 and "inside the input's image folder" in data["error"], data
        assert {p.name: p.read_bytes() for p in seq.iterdir()} == before
    finally:
        r.close()


def _wait_for(cond, timeout_s=20):
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def test_the_frame_the_page_stays_on_is_encoded_before_a_click(clip, tmp_path, config_home):
    r = Running(clip, tmp_path / "work", warm_delay_s=1.5)
    try:
        fake = r.engine.sessions[0]
        before = list(fake.encoded)
        t0 = time.monotonic()
        for t in (1, 2, 3, 4):  # scrubbing: frames passed by are not encoded
            assert r.request(f"/api/view/{t}?view=source")[0] == 200
        assert time.monotonic() - t0 < 1.5, "the views took longer than the warm-up delay"
        _wait_for(lambda: r.studio.session.has_features(4))
        assert fake.encoded == [*before, 4]
        status, res = _click(r, 4)
        assert status == 200 and res["objects"][0]["area"] > 0
        assert fake.encoded == [*before, 4]  # the click took the features made ahead
        assert r.studio.session.stats["warmed"] == 1
    finally:
        r.close()


def test_no_warm_up_while_tracking_or_when_turned_off(clip, tmp_path, config_home):
    r = Running(clip, tmp_path / "work", engine=FakeEngine(logit_fn=_slow(0.05)), warm_delay_s=0.1)
    try:
        _click(r, 0)
        assert r.request("/api/track", {})[0] == 200
        assert r.studio.busy == "track"
        r.request("/api/view/20?view=source")
        time.sleep(0.5)
        assert r.studio.session.stats["warmed"] == 0
        r.wait_idle(30)
    finally:
        r.close()
    off = Running(clip, tmp_path / "work2", warm_delay_s=None)
    try:
        assert off.studio.warmer is None
        off.request("/api/view/6?view=source")
        time.sleep(0.3)
        assert off.engine.sessions[0].encoded == [] and off.studio.session.stats["warmed"] == 0
    finally:
        off.close()


def test_undoing_a_click_and_tracking_again_restores_the_earlier_masks(run):
    """An undone click's passes had overwritten the frames around it: tracking again
    recomputes them from the prompts left (they used to keep the undone click's masks, and
    its own frame none). The test double's tracked frames repeat their pass's prompt."""
    store = run.studio.session.store
    _click(run, 0)
    assert run.request("/api/track", {})[0] == 200
    run.wait_idle(60)
    first = {t: store.get(1, t).logits.copy() for t in (6, 10, 12)}
    _click(run, 10, xy=(5, 5))  # another place: its masks differ from frame 0's
    assert run.request("/api/track", {})[0] == 200
    run.wait_idle(60)
    assert not np.array_equal(store.get(1, 12).logits, first[12])
    run.request("/api/history", {"op": "undo"})
    assert run.request("/api/track", {})[0] == 200
    run.wait_idle(60)
    for t, logits in first.items():
        np.testing.assert_array_equal(store.get(1, t).logits, logits)


def test_the_preview_does_not_smooth_across_a_shot_cut():
    # the render's refiner forgets the previous frame at a cut (pipeline/output.py); the
    # preview, which warms the temporal filter on the frames before the one shown, must too:
    # the first frame of a shot shows what a render gives, not a blend with the shot before
    from types import SimpleNamespace

    from vosfx.config import RefineConfig
    from vosfx.matte.refine import Refiner
    from vosfx.studio.views import matte_planes
    from vosfx.types import Frame, MaskResult

    img = np.full((48, 64, 3), 30, np.uint8)  # a picture the same on both sides of the cut
    frames = {t: Frame(t, img, t, 1) for t in range(6)}

    def result(t: int) -> MaskResult:
        logits = np.full((1, 16, 16), -8.0, np.float32)
        if t < 4:  # shot 0: the object on the left; shot 1 (from frame 4): on the right
            logits[0, 4:12, 1:7] = 8.0
        else:
            logits[0, 4:12, 9:15] = 8.0
        return MaskResult(t, (1,), logits, np.array([5.0], np.float32), np.ones(1, np.float32))

    session = SimpleNamespace(
        obj_ids=(1,),
        has_result=lambda t: True,
        result=result,
        shot_id=lambda t: int(t >= 4),
    )
    cfg = RefineConfig(temporal_strength=0.9)
    studio = SimpleNamespace(
        session=session,
        start=0,
        view_frames=SimpleNamespace(get=frames.__getitem__),
        config=SimpleNamespace(refine=cfg),
    )
    shown, _ids = matte_planes(studio, 4)
    render = Refiner(cfg, (1,))(result(4), frames[4]).alpha
    np.testing.assert_array_equal(shown, render)
    # inside a shot it still smooths: frame 4 of one shot (0-5) is a blend with frame 3
    session.shot_id = lambda t: 0
    assert np.abs(matte_planes(studio, 4)[0] - render).max() > 0.3


def _chunked_post(run, path: str, chunks: list[bytes]) -> tuple[int, dict]:
    """POST ``chunks`` without a Content-Length (chunked), as a stream is sent."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", run.ctl.port, timeout=30)
    try:
        headers = {"X-Vosfx-Token": run.ctl.token, "Transfer-Encoding": "chunked"}
        conn.request("POST", path, body=iter(chunks), headers=headers, encode_chunked=True)
        res = conn.getresponse()
        return res.status, json.loads(res.read())
    finally:
        conn.close()


def test_oversized_bodies_are_refused_before_they_are_read(run, monkeypatch):
    """A file dropped by mistake (a whole clip) or a runaway request: 413 with the limit in
    words, without holding the body in memory; nothing changes."""
    from vosfx.studio import routes

    monkeypatch.setattr(routes, "MASK_MAX_BYTES", 4096)
    monkeypatch.setattr(routes, "JSON_MAX_BYTES", 1024)
    status, data = run.request("/api/mask?obj_id=1&frame=5", data=b"\0" * 5000, method="POST")
    assert status == 413 and "at most 4 KiB" in data["error"] and "mask" in data["error"]
    status, data = _chunked_post(run, "/api/mask?obj_id=1&frame=5", [b"\0" * 1000] * 5)
    assert status == 413 and "at most 4 KiB" in data["error"]
    click = {"obj_id": 1, "frame": 0, "x": 5, "y": 5, "pad": "x" * 2000}
    status, data = run.request("/api/click", click)
    assert status == 413 and "at most 1 KiB" in data["error"]
    status, data = _chunked_post(run, "/api/click", [b'{"obj_id": 1, "pad": "', b"x" * 2000])
    assert status == 413
    assert run.studio.edits == {}
    status, _ = run.request("/api/click", {"obj_id": 1, "frame": 0, "x": 5, "y": 5})
    assert status == 200  # a body under the limit is read as before


def test_save_job_asks_before_replacing_a_job_file(run, tmp_path):
    """Save job over an existing file answers ``exists`` and leaves the file as it was; the
    page asks, then sends ``replace`` (it replaced the file silently, where Render asks)."""
    _click(run, 0)
    job_path = tmp_path / "j.json"
    job_path.write_text("a job the user wrote by hand\n")
    body = {"output": str(tmp_path / "o.mov"), "path": str(job_path)}
    status, data = run.request("/api/save", body)
    assert status == 200 and data == {"exists": str(job_path)}
    assert job_path.read_text() == "a job the user wrote by hand\n"
    status, data = run.request("/api/save", {**body, "replace": True})
    assert status == 200 and data == {"path": str(job_path)}
    assert load_job_file(job_path).output == str(tmp_path / "o.mov")


def test_opening_a_clip_loads_the_refinements_compiled_loops(clip, tmp_path, monkeypatch):
    """The masks drawn for a click go through logits_to_prob, whose compiled loops cost
    ~1.1 s to load in a fresh process (numba's import and cache; ~4 s to compile on a new
    machine): the studio starts loading them when it opens the clip, not at the first click."""
    from vosfx.config import build_config
    from vosfx.matte import kernels
    from vosfx.studio.state import Studio

    started = []
    monkeypatch.setattr(kernels, "warm_up", lambda: started.append(1))
    (tmp_path / "w").mkdir()
    st = Studio(str(clip), engine=FakeEngine(), config=build_config({}), workdir=tmp_path / "w")
    try:
        assert started == [1]
    finally:
        st.close()


def test_a_jobs_correction_opens_as_one_and_saves_as_one(clip, tmp_path, config_home):
    """A job whose prompt says ``"correction": true`` (rule d: `vosfx matte --edit-tracked`)
    opened in the studio stays a correction: computed by Track from the pass before it (not
    replayed while the studio opens), equal to the same job's render, and saved as one."""
    from vosfx.job import job_from_dict, load_job_file
    from vosfx.pipeline import resolve_prompts, track_arrays
    from vosfx.session.frames import SourceFrames
    from vosfx.studio.state import Studio

    mask = tmp_path / "m.png"
    Image.fromarray(np.pad(np.full((40, 60), 255, np.uint8), ((8, 16), (10, 26)))).save(mask)
    job = job_from_dict(
        {
            "input": str(clip),
            "output": str(tmp_path / "o"),
            "presets": ["png16"],
            "prompts": [
                {"frame": 0, "mask": str(mask)},
                {"frame": 9, "obj_id": 1, "points": [[40, 30]], "labels": [0], "correction": True},
            ],
        }
    )
    engine = FakeEngine()
    (tmp_path / "w").mkdir()
    st = Studio(job.input, engine=engine, config=job.config, workdir=tmp_path / "w")
    try:
        st.restore(job)
        assert st.edits[(1, 9)].correction
        fake = engine.sessions[0]
        assert fake.corrections == [] and fake.stepped == []  # nothing replayed on opening
        st.session.track()
        assert fake.corrections == [(1, 9, 1)]
        got = np.stack([st.session.result(t).logits[0] for t in range(N)])
        saved = st.save_job(st.job(str(tmp_path / "o2")), tmp_path / "again.json")
    finally:
        st.close()
    reloaded = load_job_file(saved)
    assert [p.correction for p in reloaded.prompts] == [False, True]

    with SourceFrames(str(clip)) as src:
        rgb = [src.get(t).rgb8 for t in range(N)]

    prompts = resolve_prompts(job.prompts, src.info, fit=False, objects=None, start=0, end=N)
    want = np.stack([r.logits[0] for _f, r in track_arrays(FakeEngine(), rgb, prompts)])
    np.testing.assert_array_equal(got, want)


def test_render_after_track_writes_what_was_tracked(run, tmp_path, monkeypatch):
    """Render after Track takes the studio session's results (no frame tracked again, no
    second session) and writes what `vosfx matte --job` of the saved job writes; Render
    before Track tracks in the studio's session (left tracked); a render of part of the
    clip makes a session of its own, as `vosfx matte --start/--end` does."""
    import vosfx.engine

    fake = run.engine
    assert run.request("/api/click", {"obj_id": 1, "frame": 5, "box": [8, 8, 88, 56]})[0] == 200
    out = tmp_path / "first"
    body = {"output": str(out), "formats": ["png16-matte"]}
    assert run.request("/api/render", body)[0] == 200  # before any Track
    run.wait_idle(60)
    (studio,) = fake.sessions
    assert run.studio.session.stale() == [] and len(list(out.glob("*.png"))) == N
    steps = len(studio.steps)
    assert steps == N - 1
    run.request("/api/track", {})
    run.wait_idle(60)
    assert len(studio.steps) == steps  # the render left it tracked
    again = tmp_path / "again"
    assert run.request("/api/render", {**body, "output": str(again)})[0] == 200
    run.wait_idle(60)
    assert len(fake.sessions) == 1 and len(studio.steps) == steps  # nothing tracked again
    job_path = tmp_path / "job.json"
    fresh = tmp_path / "fresh"
    saved = {**body, "output": str(fresh), "path": str(job_path)}
    assert run.request("/api/save", saved)[0] == 200
    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: FakeEngine())
    res = CliRunner().invoke(cli, ["matte", "--job", str(job_path)])
    assert res.exit_code == 0, res.output
    for a, b, c in zip(
        sorted(out.glob("*.png")), sorted(again.glob("*.png")), sorted(fresh.glob("*.png"))
    ):
        pixels = [np.asarray(Image.open(f)) for f in (a, b, c)]
        np.testing.assert_array_equal(pixels[0], pixels[2])
        np.testing.assert_array_equal(pixels[1], pixels[2])
    part = tmp_path / "part"
    body = {"output": str(part), "formats": ["png16-matte"], "start": 4, "end": 12}
    assert run.request("/api/render", body)[0] == 200
    run.wait_idle(60)
    assert len(fake.sessions) == 2 and len(list(part.glob("*.png"))) == 8


def test_done_hands_the_tracked_results_to_the_plugins_render(run, tmp_path, monkeypatch):
    """After Track, Done (or Save job) writes the session's results where a render of the job
    finds them (vosfx/pipeline/handoff.py): the editor plugin's `vosfx matte --job`, another
    process, tracks nothing and writes what a render that tracks writes. A job whose prompts
    differ, or a clip changed since, is tracked as before; unreadable results are left."""
    import vosfx.engine
    from vosfx.pipeline import handoff

    assert run.request("/api/click", {"obj_id": 1, "frame": 5, "box": [8, 8, 88, 56]})[0] == 200
    run.request("/api/track", {})
    run.wait_idle(60)
    job_path = tmp_path / "job.json"
    body = {"output": str(tmp_path / "a"), "path": str(job_path), "formats": ["png16-matte"]}
    assert run.request("/api/save", body)[0] == 200
    (handed,) = [p for p in handoff.folder().iterdir() if not p.name.startswith(".")]
    engines: list[FakeEngine] = []

    def fake_engine(model, **kw):
        engines.append(FakeEngine())
        return engines[-1]

    monkeypatch.setattr(vosfx.engine, "load_engine", fake_engine)

    def render(job, out, *extra):
        res = CliRunner().invoke(cli, ["matte", "--job", str(job), "-o", str(out), *extra])
        assert res.exit_code == 0, res.output
        return [np.asarray(Image.open(f)) for f in sorted(out.glob("*.png"))]

    taken = render(job_path, tmp_path / "taken")
    assert engines[-1].sessions[0].steps == [] and len(taken) == N  # nothing tracked
    # the same job tracked (its results' folder gone): the same pixels
    shutil.move(handed, tmp_path / "away")
    tracked = render(job_path, tmp_path / "tracked")
    assert len(engines[-1].sessions[0].steps) == N - 1
    for a, b in zip(taken, tracked):
        np.testing.assert_array_equal(a, b)
    shutil.move(tmp_path / "away", handed)
    # a changed prompt: another key, tracked
    changed = json.loads(job_path.read_text())
    changed["prompts"][0]["box"] = [10, 8, 88, 56]
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    render(tmp_path / "changed.json", tmp_path / "c")
    assert len(engines[-1].sessions[0].steps) == N - 1
    # unreadable results: logged, tracked
    (handed / "table_1.npy").write_bytes(b"not an array")
    render(job_path, tmp_path / "d")
    assert len(engines[-1].sessions[0].steps) == N - 1
    # a clip changed since: another key
    shutil.rmtree(handed)
    assert run.request("/api/save", {**body, "replace": True})[0] == 200
    os.utime(run.studio.clip, ns=(0, 0))
    render(job_path, tmp_path / "e")
    assert len(engines[-1].sessions[0].steps) == N - 1


def test_a_correction_edits_the_tracked_mask_and_the_job_renders_it(run, tmp_path, monkeypatch):
    """An exclude click on a frame tracking reached cuts a hole in the tracked mask (the
    frame's tracked logits are the prompt's prior) instead of leaving a mask of one exclude
    click; the saved job carries the prior and `vosfx matte --job` renders that frame as the
    page showed it. Undo, redo and a second click keep the same prior."""
    from click.testing import CliRunner

    import vosfx.engine
    from vosfx.cli import cli

    assert run.request("/api/click", {"obj_id": 1, "frame": 0, "box": [8, 8, 88, 56]})[0] == 200
    assert run.request("/api/track", {})[0] == 200
    run.wait_idle(60)
    tracked = run.studio.session.result(12).logits[0] > 0
    status, _ = _click(run, 12, label=0, xy=(48, 32))
    assert status == 200
    corrected = run.studio.session.result(12).logits[0] > 0
    edit = run.studio.edits[(1, 12)]
    assert edit.prior is not None and Path(edit.prior).is_file()
    assert corrected.sum() > 0.5 * tracked.sum()  # the tracked mask, less the disc
    assert (tracked & ~corrected).any() and not (corrected & ~tracked).any()
    _click(run, 12, label=0, xy=(20, 20))
    assert run.studio.edits[(1, 12)].prior == edit.prior
    run.request("/api/history", {"op": "undo"})
    run.request("/api/history", {"op": "undo"})
    assert (1, 12) not in run.studio.edits
    run.request("/api/history", {"op": "redo"})
    assert run.studio.edits[(1, 12)] == edit
    np.testing.assert_array_equal(run.studio.session.result(12).logits[0] > 0, corrected)

    job_path = tmp_path / "jobs" / "fix.json"
    job_path.parent.mkdir()
    out = tmp_path / "rendered"
    body = {"output": str(out), "path": str(job_path), "formats": ["png16-matte"]}
    status, data = run.request("/api/save", body)
    assert status == 200, data
    saved = json.loads(job_path.read_text())
    (prompt,) = [p for p in saved["prompts"] if p["frame"] == 12]
    assert prompt["prior"].startswith("fix_masks/") and prompt["prior"].endswith(".npy")
    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: FakeEngine())
    res = CliRunner().invoke(cli, ["matte", "--job", str(job_path)])
    assert res.exit_code == 0, res.output
    frames = sorted(out.glob("*.png"))
    assert len(frames) == N
    rendered = np.asarray(Image.open(frames[12])).astype(np.float32) / 65535.0
    page = np.asarray(Image.open(io.BytesIO(run.request("/api/view/12?view=matte")[1])))
    page = (page[..., 0] if page.ndim == 3 else page).astype(np.float32) / 255.0
    assert rendered.max() > 0.9 and np.abs(rendered - page).max() < 1 / 255 + 1e-3
    # reopened (`vosfx studio --job`): the correction comes back with its prior
    from vosfx.job import load_job_file
    from vosfx.studio.state import Studio

    job = load_job_file(job_path)
    (tmp_path / "w2").mkdir()
    st = Studio(job.input, engine=FakeEngine(), config=job.config, workdir=tmp_path / "w2")
    try:
        st.restore(job)
        # its prior copied among the studio's own files (the job it came from may go)
        prior = Path(st.edits[(1, 12)].prior)
        assert prior.parent == tmp_path / "w2" / "job_masks"
        assert prior.read_bytes() == (job_path.parent / prompt["prior"]).read_bytes()
        np.testing.assert_array_equal(st.session.result(12).logits[0] > 0, corrected)
    finally:
        st.close()


@pytest.fixture
def studio_cli(monkeypatch, config_home):
    """`vosfx studio ... --no-browser` in-process, for what it refuses before serving: a
    studio that serves fails the test instead of running until it is closed."""
    import vosfx.studio.server

    def serve(*_args, **_kwargs):
        raise AssertionError("the studio served")

    monkeypatch.setattr(vosfx.studio.server, "serve", serve)
    return lambda *args: CliRunner().invoke(cli, ["studio", *map(str, args), "--no-browser"])


def _refused(res, code: int, said: str) -> None:
    assert res.exit_code == code, res.output
    assert said in res.output.strip().splitlines()[-1], res.output


def test_cli_clip_and_job_or_neither_are_usage_errors(clip, tmp_path, studio_cli):
    job = tmp_path / "j.json"
    job.write_text(json.dumps({"input": str(clip), "output": "o.mov", "prompts": []}))
    _refused(studio_cli(clip, "--job", job), 2, "--job names the clip: give CLIP or --job")
    _refused(studio_cli(), 2, "missing CLIP: a video file, an image folder or a %05d pattern")
    _refused(studio_cli("--job", tmp_path / "nope.json"), 3, "nope.json does not exist")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--frame", str(N)], f"Invalid value for --frame: frame {N} is outside 0..{N - 1}"),
        (["--start", "5", "--frame", "4"], f"--frame: frame 4 is outside 5..{N - 1}"),
        (["--end", "6", "--frame", "6"], "--frame: frame 6 is outside 0..5"),
    ],
)
def test_cli_frame_outside_the_range_names_the_flag(clip, studio_cli, args, said):
    _refused(studio_cli(clip, *args), 2, said)


@pytest.mark.parametrize("fps", ["0", "-5", "nan", "inf", "1001"])
def test_cli_a_frame_rate_that_cannot_be_names_the_flag(tmp_path, studio_cli, fps):
    """As `vosfx matte --fps`: a usage error naming the flag. nan and inf were a traceback
    (exit 1), 0 and -5 an input error (exit 4) that did not name the flag."""
    from tests.media import make_sequence

    seq = make_sequence(tmp_path / "seq", n=3, width=W, height=H)
    res = studio_cli(seq, "--fps", fps)
    assert res.exit_code == 2, (res.output, res.exception)
    assert "Invalid value for '--fps'" in res.output or "Invalid value for --fps" in res.output


@pytest.mark.parametrize(
    ("job", "args", "code", "said"),
    [
        # the job's own start: a job file error, as `vosfx matte --job` says (exit 3)
        ({"start": 30}, [], 3, f"start 30 is past the clip's last frame ({N - 1}"),
        # one end of the range typed, the other the job's: the flag typed is named
        ({"start": 2, "end": 5}, ["--start", "7"], 2, "--start: expected --end after --start"),
        ({"start": 2, "end": 5}, ["--end", "1"], 2, "--end: expected --end after --start"),
    ],
)
def test_cli_a_reopened_jobs_range_names_only_the_flags_typed(
    clip, tmp_path, studio_cli, job, args, code, said
):
    """It said "Invalid value for --start" or "--end" for a flag that was never typed."""
    path = tmp_path / "j.json"
    prompts = [{"points": [[10, 10]]}]
    body = {"input": str(clip), "output": str(tmp_path / "o.mov"), "prompts": prompts, **job}
    path.write_text(json.dumps(body))
    res = studio_cli("--job", path, *args)
    _refused(res, code, said)
    if not args:
        assert "--start" not in res.output


@pytest.mark.parametrize(
    ("path", "body", "said"),
    [
        ("/api/objects", {"op": "split", "obj_id": 1}, "objects: op 'split': expected add,"),
        ("/api/objects", {"op": "rename", "obj_id": 1, "name": "  "}, "name cannot be empty"),
        ("/api/history", {"op": "again"}, "history: op 'again': expected undo, redo or retract"),
        ("/api/render", {"output": " "}, "output: expected a path"),
        ("/api/render", {"output": "/tmp/o.mov", "formats": "png16"}, "formats: expected a list"),
        ("/api/render", {"output": "/tmp/o.mov", "formats": ["gif"]}, "unknown format(s) ['gif']"),
        ("/api/render", {"output": "/tmp/o.mov", "preset": 3}, "preset: expected a name, found 3"),
        ("/api/render", {"output": "/tmp/o\x00.mov"}, "output: a path cannot contain NUL"),
        (
            "/api/render",
            {"output": "/tmp/o.mov", "start": 20, "end": 40},
            f"frames 20 to 39: expected frames inside 0 to {N - 1}",
        ),
        (
            "/api/render",
            {"output": "/tmp/o.mov", "start": 5, "end": 5},  # the page's "5 to 4"
            "frames 5 to 4: expected 'to' at or after 'from'",
        ),
        ("/api/save", {"output": "/tmp/o.mov"}, "path: expected where to save the job (.json)"),
        ("/api/refine", {"refine": 3}, "refine: expected an object of [refine] options, found 3"),
        ("/api/refine", {"refine": {"feather_px": "a"}}, "feather_px: expected a number"),
    ],
)
def test_bad_values_are_400_naming_the_field(run, path, body, said):
    _click(run, 0)
    status, data = run.request(path, body)
    assert status == 400 and said in data["error"], data
    assert not run.studio.busy and run.studio.last_render is None


def test_save_job_into_a_missing_folder_is_refused_naming_it(run, tmp_path):
    _click(run, 0)
    target = tmp_path / "gone" / "j.json"
    status, data = run.request(
        "/api/save", {"output": str(tmp_path / "o.mov"), "path": str(target)}
    )
    assert status == 400 and data == {
        "error": f"folder {target.parent} does not exist (for {target})",
        "kind": "output",
    }


@pytest.mark.parametrize(
    ("data", "said"),
    [(b"{not json", "expected a JSON body"), (b"[1, 2]", "expected a JSON object")],
)
def test_a_body_that_is_not_a_json_object_is_400(run, data, said):
    headers = {"Content-Type": "application/json"}
    status, res = run.request("/api/click", data=data, method="POST", headers=headers)
    assert (status, res) == (400, {"error": said}) and run.studio.edits == {}


def test_the_side_by_side_view_and_an_unknown_view(run):
    _click(run, 0)
    status, img = run.request("/api/view/0?view=side")
    assert status == 200
    side = np.asarray(Image.open(io.BytesIO(img)))
    assert side.shape == (H, 2 * W, 3)
    assert side[:, W:].max() > 200 and side[:, W:].min() < 50  # the matte, on the right
    status, data = run.request("/api/view/0?view=sideways")
    assert status == 400 and data["error"].startswith("view 'sideways': expected one of source,")


def test_a_dropped_mask_of_another_size_is_fitted_and_an_empty_one_refused(run):
    """As `vosfx matte --mask FILE --fit`: a half-size mask covers the same part of the frame."""
    half = np.zeros((H // 2, W // 2), np.uint8)
    half[5:15, 10:20] = 255
    buf = io.BytesIO()
    Image.fromarray(half).save(buf, "PNG")
    status, res = run.request("/api/mask?obj_id=1&frame=3", data=buf.getvalue(), method="POST")
    assert status == 200, res
    got = np.asarray(Image.open(run.studio.edits[(1, 3)].mask)) > 0
    assert got.shape == (H, W) and got.sum() == 20 * 20 and got[10:30, 20:40].all()
    buf = io.BytesIO()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(buf, "PNG")
    status, res = run.request("/api/mask?obj_id=1&frame=4", data=buf.getvalue(), method="POST")
    assert status == 400 and res["error"].startswith("the dropped mask is empty"), res
    assert (1, 4) not in run.studio.edits


def test_render_one_output_per_object_and_premultiplied(run, tmp_path):
    """The Render panel's "one output per object" and "alpha" options: `--each-object`'s
    outputs (out_obj1, out_obj2), colour multiplied by alpha, and a saved job keeps both;
    values it cannot take are refused naming the field."""
    _click(run, 0)
    run.request("/api/objects", {"op": "add"})
    _x0, y0, x1, y1 = square_box(0, W, H)
    _click(run, 0, obj=2, xy=(min(W - 2, x1 + 12), (y0 + y1) / 2))
    _, state = run.request("/api/state")
    assert state["each_object"] is False and state["alpha_mode"] == "straight"
    body = {"output": str(tmp_path / "out"), "formats": ["png16"], "end": 3}
    for extra, name in [
        ({}, "straight"),
        ({"each_object": True, "alpha_mode": "premultiplied"}, "pm"),
    ]:
        status, data = run.request("/api/render", dict(body, output=str(tmp_path / name), **extra))
        assert status == 200, data
        run.wait_idle(60)
    assert run.studio.last_render["outputs"] == [
        str(tmp_path / "pm_obj1"),
        str(tmp_path / "pm_obj2"),
    ]
    import cv2

    def rgba(path):  # 16-bit (PIL reads 16-bit RGBA as 8 bits)
        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., [2, 1, 0, 3]].astype(float)

    straight = rgba(tmp_path / "straight" / "straight.00000.png")
    pm = sum(rgba(tmp_path / f"pm_obj{i}" / f"pm_obj{i}.00000.png") for i in (1, 2))
    a = straight[..., 3:] / 65535.0
    assert a.max() > 0.99 and (a < 0.01).any()
    np.testing.assert_allclose(pm[..., :3], straight[..., :3] * a, atol=40.0)  # 16-bit codes
    status, data = run.request(
        "/api/save",
        dict(body, path=str(tmp_path / "j.json"), each_object=True, alpha_mode="premultiplied"),
    )
    assert status == 200, data
    saved = load_job_file(tmp_path / "j.json").config.output
    assert (saved.objects, saved.alpha_mode) == ("each", "premultiplied")
    for bad, field in [({"each_object": "yes"}, "each_object: "), ({"alpha_mode": "x"}, "alpha: ")]:
        status, data = run.request("/api/render", dict(body, **bad))
        assert status == 400 and data["error"].startswith(field), data


def test_a_view_of_the_selected_object_alone(run, tmp_path):
    """`obj=N` on a view: that object's plane alone (what its own output holds with one
    output per object); without it, every object; a bad one names the field."""
    import cv2

    _click(run, 0)
    run.request("/api/objects", {"op": "add"})
    _x0, y0, x1, y1 = square_box(0, W, H)
    other = (min(W - 2, x1 + 12), (y0 + y1) / 2)
    _click(run, 0, obj=2, xy=other)

    def matte(query=""):
        status, data = run.request(f"/api/view/0?view=matte{query}")
        assert status == 200
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).astype(int)

    both, one, two = matte(), matte("&obj=1"), matte("&obj=2")
    c1 = (int((y0 + y1) / 2), int((square_box(0, W, H)[0] + x1) / 2))
    c2 = (int(other[1]), int(other[0]))
    assert both[c1] > 200 and both[c2] > 200
    assert one[c1] > 200 and one[c2] < 50 and two[c2] > 200 and two[c1] < 50
    np.testing.assert_array_equal(both, np.maximum(one, two))
    assert matte("&obj=7").max() == 0  # no such object: nothing of anyone
    status, data = run.request("/api/view/0?view=matte&obj=x")
    assert status == 400 and data["error"].startswith("obj: "), data


def test_track_to_here_then_track_the_rest(run):
    """ "Track to here" (until = the frame shown): the frames up to it get results, none after
    it; Track then does the rest only; a frame outside the range is refused, naming the
    field."""
    _click(run, 0)
    status, data = run.request("/api/track", {"until": 10})
    assert status == 200 and data["total"] == 10, data
    run.wait_idle(60)
    session = run.studio.session
    assert all(session.has_result(t) for t in range(11)) and not session.has_result(11)
    status, data = run.request("/api/track", {})
    assert status == 200 and data["total"] == N - 11, data
    run.wait_idle(60)
    assert all(session.has_result(t) for t in range(N)) and not session.stale()
    for bad in (N, -1, "x"):
        status, data = run.request("/api/track", {"until": bad})
        assert status == 400 and data["error"].startswith("until: "), data


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_first_runs_model_download_is_shown_in_the_page_and_the_terminal(clip, tmp_path):
    """While the model downloads (a first run: 156 MB), the page's state carries its bytes
    (the page says "downloading <model>: 45.0 / 155.9 MiB" instead of "loading the model...")
    and the terminal a line every few seconds."""
    env = dict(os.environ, VOSFX_HOME=str(tmp_path / "home"), VOSFX_FAKE_DOWNLOAD_S="3")
    proc, url = start_cli([str(clip)], env)
    seen = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = page_state(url)
            if state.get("ready"):
                break
            if state.get("download"):
                seen.append(state["download"])
            time.sleep(0.05)
        assert page_state(url)["ready"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    err = proc.stderr.read()
    assert seen, "no download progress while the model loaded"
    assert seen[0]["message"].startswith("downloading ") and seen[0]["total"] == 100 << 20
    assert 0 < seen[0]["done"] <= seen[-1]["done"] <= 100 << 20
    assert "vosfx: downloading " in err and "MiB" in err, err


def test_clicks_after_a_dropped_or_painted_mask_edit_it(run, tmp_path):
    """On a frame whose prompt is a mask (dropped, or painted), a click edits that mask (its
    output is the clicks' prior, as SAM 2's predictor decodes clicks after a mask) instead of
    starting from nothing; undo gives the mask back. (The prior travels with the saved job as
    a correction's does: test_a_correction_edits_the_tracked_mask_and_the_job_renders_it.)"""
    x0, y0, x1, y1 = square_box(3, W, H)
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, "PNG")
    status, _ = run.request("/api/mask?obj_id=1&frame=3", method="POST", data=buf.getvalue())
    assert status == 200
    dropped = run.studio.session.result(3).logits[0] > 0
    _click(run, 3, label=0, xy=(x0 + 2, y0 + 2))
    edit = run.studio.edits[(1, 3)]
    assert edit.mask is None and edit.prior is not None and edit.labels == (0,)
    edited = run.studio.session.result(3).logits[0] > 0
    assert edited.sum() > 0.5 * dropped.sum()
    assert (dropped & ~edited).any() and not (edited & ~dropped).any()
    run.request("/api/history", {"op": "undo"})
    assert run.studio.edits[(1, 3)].mask is not None
    np.testing.assert_array_equal(run.studio.session.result(3).logits[0] > 0, dropped)

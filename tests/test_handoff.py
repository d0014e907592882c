"""Tracked results handed from the studio to a render of the same job
(vosfx/pipeline/handoff.py): written only for a session tracked through, read back only for
their key and shape, the folders kept within their byte budget."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.fakes import FakeEngine
from tests.test_session import N, _frames, _info, _mask
from vosfx.config import MemoryConfig
from vosfx.pipeline import handoff
from vosfx.session import ClipSession
from vosfx.session.frames import ListFrames
from vosfx.types import Prompt


def _tracked(prompts, track=True):
    engine = FakeEngine()
    info = _info()
    s = ClipSession(engine, info, MemoryConfig(policy="sam2"), frames=ListFrames(info, _frames()))
    for p in prompts:
        s.add_prompt(p)
    if track:
        s.track()
    return s


PROMPTS = [Prompt(3, 1, mask=_mask(4, 12)), Prompt(9, 2, mask=_mask(20, 30))]


def test_results_come_back_as_they_were(config_home):
    s = _tracked(PROMPTS)
    assert handoff.save(s, "k1") == handoff.folder() / "k1"
    back = handoff.load("k1", s.obj_ids, 0, N, s.engine.low_res)
    assert back is not None
    got = {(r.obj_id, r.frame_index): (r, prompted) for r, prompted in back.results()}
    assert len(got) == 2 * N
    for (obj, t), (r, prompted) in got.items():
        want = s.store.get(obj, t)
        np.testing.assert_array_equal(r.logits, want.logits)
        assert (r.object_score_logit, r.iou) == (want.object_score_logit, want.iou)
        assert prompted == s.store.is_prompted(obj, t)
    # a session of the same prompts takes them and has nothing to track
    fresh = ClipSession(FakeEngine(), _info(), MemoryConfig(policy="sam2"))
    fresh.set_prompts(PROMPTS)
    fresh.adopt(back.results(), back.report)
    assert fresh.stale() == [] and fresh.pending_frames() == [] and fresh.split_point() == 0
    for t in range(N):
        np.testing.assert_array_equal(fresh.result(t).logits, s.result(t).logits)
    fresh.close()
    s.close()


def test_nothing_is_written_for_a_session_not_tracked_through(config_home):
    s = _tracked(PROMPTS, track=False)
    assert handoff.save(s, "k") is None and not (handoff.folder() / "k").exists()
    s.close()


def test_results_are_read_only_for_their_key_objects_frames_and_size(config_home, caplog):
    s = _tracked(PROMPTS)
    handoff.save(s, "k")
    low = s.engine.low_res
    assert handoff.load("other", s.obj_ids, 0, N, low) is None  # nothing there, no warning
    assert handoff.load("k", (1,), 0, N, low) is None
    assert handoff.load("k", s.obj_ids, 0, N - 1, low) is None
    assert handoff.load("k", s.obj_ids, 0, N, low * 2) is None
    (handoff.folder() / "k" / "logits_2.npy").write_bytes(b"\x93NUMPY garbage")
    assert handoff.load("k", s.obj_ids, 0, N, low) is None
    assert sum("not used" in r.message for r in caplog.records) == 4
    s.close()


@pytest.mark.parametrize("where", ["tracked", "key", "meta.json", "logits_1.npy", "table_2.npy"])
def test_results_other_users_can_write_are_not_read(config_home, caplog, where):
    # the cache may be shared: masks another user put there are not taken for the user's own
    s = _tracked(PROMPTS)
    saved = handoff.save(s, "k")
    low = s.engine.low_res
    assert saved is not None and handoff.load("k", s.obj_ids, 0, N, low) is not None
    assert (handoff.folder().stat().st_mode & 0o777) == 0o700
    path = {"tracked": handoff.folder(), "key": saved}.get(where, saved / where)
    os.chmod(path, path.stat().st_mode | 0o002)
    assert handoff.load("k", s.obj_ids, 0, N, low) is None
    assert any(f"{path} is writable by other users" in r.message for r in caplog.records)
    os.chmod(path, path.stat().st_mode & ~0o022)
    assert handoff.load("k", s.obj_ids, 0, N, low) is not None
    s.close()


def test_the_oldest_folders_go_past_the_budget(config_home, monkeypatch):
    s = _tracked(PROMPTS)
    monkeypatch.setattr(handoff, "BUDGET_BYTES", 1)  # below one folder: the newest alone
    for i, key in enumerate(("a", "b", "c")):
        handoff.save(s, key)
        os.utime(handoff.folder() / key, (1000 + i, 1000 + i))
    kept = sorted(p.name for p in handoff.folder().iterdir())
    assert kept == ["c"]
    s.close()


@pytest.mark.parametrize("change", ["prompt", "range", "memory", "model", "clip"])
def test_the_key_is_what_the_results_depend_on(tmp_path, change):
    from vosfx.presets import resolve_config

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x" * 10)
    config = resolve_config((), {})
    base = (str(clip), _info(), 0, N, PROMPTS, config)
    key = handoff.tracked_key(*base)
    assert handoff.tracked_key(*base) == key
    args = list(base)
    if change == "prompt":
        args[4] = [PROMPTS[0], Prompt(9, 2, mask=_mask(21, 30))]
    elif change == "range":
        args[3] = N - 1
    elif change == "memory":
        args[5] = resolve_config((), {"memory": {"policy": "rcms"}})
    elif change == "model":
        args[5] = resolve_config((), {"model": {"image_size": 512}})
    else:
        clip.write_bytes(b"y" * 11)
    assert handoff.tracked_key(*args) != key


def test_a_sequence_frame_rewritten_in_place_changes_the_key(tmp_path):
    """An image sequence (a pattern, or a folder): a frame rewritten in place leaves the
    folder's time as it was, so every file's size and time are in the key."""
    from vosfx.presets import resolve_config

    for i in range(3):
        (tmp_path / f"shot.{1001 + i}.png").write_bytes(b"frame")
    config = resolve_config((), {})
    for spelled in (str(tmp_path / "shot.%04d.png"), str(tmp_path)):
        key = handoff.tracked_key(spelled, _info(), 0, N, PROMPTS, config)
        frame = tmp_path / "shot.1002.png"
        st = frame.stat()
        os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        assert handoff.tracked_key(spelled, _info(), 0, N, PROMPTS, config) != key

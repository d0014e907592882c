"""Job hashes, the state file, skip/redo decisions and cleanup (vosfx.batch.state)."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
from batch_fakes import clip_with_mask

from vosfx.batch import state as batch_state
from vosfx.batch.state import (
    BatchState,
    decide,
    file_fingerprint,
    job_hash,
    remove_partial,
    stamp_sidecars,
)
from vosfx.errors import BatchError
from vosfx.job import job_from_dict


@pytest.fixture
def job(tmp_path, config_home):
    clip_with_mask(tmp_path, "a", n=4)
    return job_from_dict(
        {
            "input": "a.mp4",
            "output": "a_out.mkv",
            "presets": ["matte-ffv1"],
            "prompts": [{"mask": "a.mask.png"}],
        },
        base=tmp_path,
    )


def test_hash_is_stable_and_sees_what_changes_outputs(job, tmp_path):
    h = job_hash(job)
    assert h == job_hash(job) and len(h) == 64
    assert job_hash(replace(job, overwrite=True)) == h  # overwrite does not change outputs
    assert job_hash(job.with_config(job.config.replace({"refine": {"feather_px": 3.0}}))) != h
    assert job_hash(replace(job, end=2)) != h
    mask = tmp_path / "a.mask.png"
    data = mask.read_bytes()
    mask.write_bytes(data + b"\0")
    assert job_hash(job) != h
    mask.write_bytes(data)
    st = os.stat(job.input)
    os.utime(job.input, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert job_hash(job) != h  # a re-exported clip (new mtime) is redone


def test_hash_sees_a_corrections_prior(job, tmp_path):
    """A job with a correction's prior is redone when the prior file changes; a job without
    one keeps the hash it had before priors existed (no re-render after an upgrade)."""
    import numpy as np

    from vosfx.job import PromptSpec

    h = job_hash(job)
    assert "prior" not in job.prompts[0].to_dict()  # the job part of the hash as before
    prior = tmp_path / "p.npy"
    np.save(prior, np.zeros((64, 64), np.float32))
    fixed = replace(
        job,
        prompts=(
            *job.prompts,
            PromptSpec(frame=2, points=((5, 5),), labels=(0,), prior=str(prior)),
        ),
    )
    h2 = job_hash(fixed)
    assert h2 != h
    np.save(prior, np.ones((64, 64), np.float32))
    assert job_hash(fixed) != h2


def test_big_files_hash_head_and_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_state, "FULL_HASH_BYTES", 64)
    monkeypatch.setattr(batch_state, "EDGE_BYTES", 16)
    f = tmp_path / "big.bin"
    f.write_bytes(bytes(range(100)))
    fp = file_fingerprint(f)
    assert fp["sha256"].startswith("head+tail:") and fp["size"] == 100
    f.write_bytes(bytes(range(99)) + b"\xff")  # last byte changed, same size and length
    assert file_fingerprint(f)["sha256"] != fp["sha256"]


def test_sequence_inputs_hash_their_files(tmp_path, config_home):
    from media import make_sequence

    seq = make_sequence(tmp_path / "seq", n=3)
    d = batch_state.input_fingerprint(str(seq))
    assert [name for name, _, _ in d] == ["00000.png", "00001.png", "00002.png"]
    assert batch_state.input_fingerprint(str(seq / "%05d.png")) == d
    assert batch_state.input_fingerprint(str(tmp_path / "nothing.mp4")) == "missing"
    # what else the folder holds is not the input: a job's own output and sidecar written
    # beside a pattern's frames re-rendered it on every run
    (seq / "seq_matte.mov").write_bytes(b"an output")
    (seq / "seq_matte.mov.json").write_text("{}")
    assert batch_state.input_fingerprint(str(seq / "%05d.png")) == d
    assert batch_state.input_fingerprint(str(seq)) == d
    (seq / "00001.png").write_bytes(b"rewritten")  # a frame is: the job is redone
    assert batch_state.input_fingerprint(str(seq / "%05d.png")) != d
    assert batch_state.input_fingerprint(str(tmp_path / "none" / "%05d.png")) == "missing"


def test_decide_skip_only_when_everything_matches(job, tmp_path):
    state = BatchState(tmp_path / "st").open()
    digest = job_hash(job)
    assert decide("a", job, digest, state).run
    out, side = tmp_path / "a_out.mkv", tmp_path / "a_out.mkv.json"
    out.write_bytes(b"x")
    side.write_text(json.dumps({"job": {}}))
    stamp_sidecars([str(side)], "a", digest)
    state.update("a", status="ok", hash=digest, outputs=[str(out)], sidecars=[str(side)])
    d = decide("a", job, digest, BatchState(tmp_path / "st"))  # reloaded from disk
    assert not d.run
    # a different hash: redo, and the outputs are ours, so the redo may replace them
    d = decide("a", job, "0" * 64, state)
    assert d.run and d.overwrite and "changed" in d.reason
    # a sidecar stamped by another hash: redo
    stamp_sidecars([str(side)], "a", "f" * 64)
    assert decide("a", job, digest, state).run
    stamp_sidecars([str(side)], "a", digest)
    side.unlink()  # half-done: output without sidecar
    d = decide("a", job, digest, state)
    assert d.run and d.overwrite


def test_outputs_the_batch_did_not_make_are_not_overwritten(job, tmp_path):
    state = BatchState(tmp_path / "st").open()
    (tmp_path / "a_out.mkv").write_bytes(b"someone else's")
    d = decide("a", job, job_hash(job), state)
    assert d.run and not d.overwrite
    state.update("a", status="running", fresh=batch_state.absent_paths(job))
    assert str(tmp_path / "a_out.mkv") not in state.jobs["a"]["fresh"]
    assert not decide("a", job, job_hash(job), state).overwrite
    assert decide("a", replace(job, overwrite=True), job_hash(job), state).overwrite


def test_remove_partial_only_touches_temp_names(job, tmp_path):
    leftovers = [
        tmp_path / ".a_out.mkv.vosfx-tmp-0a1b2c3d",
        tmp_path / ".a_out.mkv.json.vosfx-tmp-deadbeef",
    ]
    keep = [tmp_path / "a_out.mkv", tmp_path / ".a_out.mkv.bak", tmp_path / ".b.vosfx-tmp-00"]
    for p in leftovers + keep:
        p.write_bytes(b"")
    (tmp_path / ".a_out.mkv.vosfx-tmp-aa").mkdir()  # an image-sequence writer's temp folder
    (tmp_path / ".a_out.mkv.vosfx-tmp-aa" / "0.png").write_bytes(b"")
    removed = remove_partial(job)
    assert len(removed) == 3
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in keep)


def test_remove_partial_per_object_outputs(job, tmp_path):
    each = job.with_config(job.config.replace({"output": {"objects": "each"}}))
    p = tmp_path / ".a_out_obj3.mkv.vosfx-tmp-01"
    p.write_bytes(b"")
    assert remove_partial(each) == [str(p)]


def test_state_file_errors(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(BatchError, match="unreadable"):
        BatchState(tmp_path)
    (tmp_path / "state.json").write_text('{"version": 99}')
    with pytest.raises(BatchError, match="version 99"):
        BatchState(tmp_path)


def test_hash_sees_a_trusted_checkpoint_imported_under_the_model_id(job, tmp_path):
    """A fine-tune imported over a registry id (``models import --as ID --trust-unverified``)
    changes the weights every job of that model uses: the jobs must be redone, not skipped."""
    from ckpt import retagged_checkpoint

    from vosfx.models import cache

    h = job_hash(job)
    ckpt, _ = retagged_checkpoint(tmp_path / "finetune.pt", "fine-tune")
    cache.import_checkpoint(ckpt, job.config.model.name, trust_unverified=True)
    tuned = job_hash(job)
    assert tuned != h
    ckpt, _ = retagged_checkpoint(tmp_path / "finetune2.pt", "another fine-tune")
    cache.import_checkpoint(ckpt, job.config.model.name, trust_unverified=True)
    assert job_hash(job) not in (h, tuned)


def test_hash_sees_a_new_background_plate(job, tmp_path):
    """A composite's background file re-exported under the same name changes the outputs."""
    plate = tmp_path / "plate.png"
    plate.write_bytes(b"plate v1")
    comp = job.with_config(job.config.replace({"output": {"background": str(plate)}}))
    h = job_hash(comp)
    plate.write_bytes(b"plate v2")
    assert job_hash(comp) != h

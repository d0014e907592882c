"""The checkpoint cache against a real HTTP server on 127.0.0.1 serving a generated file."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from fileserver import FileServer

from vosfx.errors import DownloadError, ModelError
from vosfx.models import cache, download, registry
from vosfx.models.registry import ModelSpec

PAYLOAD = random.Random(0).randbytes(3 * 2**20 + 12345)  # not a multiple of the chunk size
SHA = hashlib.sha256(PAYLOAD).hexdigest()
NAME = "vosfx_test.pt"


SIZE = len(PAYLOAD)


def _spec(model_id="test-model", sha=SHA, size=SIZE, name=NAME) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        url=f"https://publisher.invalid/ckpt/{name}",
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        sha256=sha,
        size_bytes=size,
    )


@pytest.fixture
def model(config_home, monkeypatch):
    """A registered test model, an empty cache, no waiting between retries."""
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.delenv("VOSFX_OFFLINE", raising=False)
    spec = registry.register(_spec())
    yield spec
    registry.reset()


@pytest.fixture
def server(monkeypatch):
    with FileServer(files={NAME: PAYLOAD}) as srv:
        monkeypatch.setenv("VOSFX_MODEL_BASE_URL", srv.url)
        yield srv


def test_home_honours_vosfx_home_else_platformdirs(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.setenv("VOSFX_HOME", str(tmp_path / "h"))
    assert cache.home() == tmp_path / "h"
    assert cache.checkpoint_path("sam2.1-tiny") == tmp_path / "h/checkpoints/sam2.1_hiera_tiny.pt"
    monkeypatch.delenv("VOSFX_HOME")
    assert str(cache.home()) == platformdirs.user_cache_dir("vosfx")


def test_download_verifies_records_and_is_reused(model, server):
    seen = []
    path = cache.ensure_checkpoint(model.id, progress=lambda d, t: seen.append((d, t)))
    assert path == cache.checkpoint_path(model.id)
    assert path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert not path.with_name(NAME + ".part").exists()
    entry = json.loads((path.parent / "index.json").read_text())["models"][model.id]
    assert entry["sha256"] == SHA and entry["source"] == "download"
    assert len(server.requests) == 1 and server.requests[0].range is None
    assert cache.ensure_checkpoint(model.id) == path  # cached: no second request
    assert len(server.requests) == 1


def test_resume_after_dropped_connection(model, server):
    server.drop_first[NAME] = 1_000_000
    path = cache.ensure_checkpoint(model.id)
    assert [r.range for r in server.requests] == [None, "bytes=1000000-"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA


def test_resume_of_a_part_left_by_an_earlier_run(model, server):
    part = cache.checkpoint_path(model.id).with_name(NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:777])
    path = cache.ensure_checkpoint(model.id)
    assert [r.range for r in server.requests] == ["bytes=777-"]
    assert path.read_bytes() == PAYLOAD


def test_server_that_ignores_range_sends_it_all_again(model, server):
    server.ignore_range = True
    server.drop_first[NAME] = 5000
    assert cache.ensure_checkpoint(model.id).read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_gives_up_after_retries_and_keeps_the_part(model, server, monkeypatch):
    monkeypatch.setattr(download, "RETRIES", 1)
    server.files["always_drops.pt"] = PAYLOAD
    registry.register(_spec("drops", name="always_drops.pt"))

    class Dropping(dict):  # every request for the file is cut short
        def pop(self, key, default=None):
            return 1000 if key == "always_drops.pt" else super().pop(key, default)

    server.drop_first = Dropping()
    with pytest.raises(DownloadError, match="after 2 attempts") as err:
        cache.ensure_checkpoint("drops")
    assert "resumes" in str(err.value)
    assert len(server.requests) == 2
    assert cache.checkpoint_path("drops").with_name("always_drops.pt.part").stat().st_size == 2000


def test_wrong_hash_is_refused_with_both_hashes_and_no_file_left(model, server):
    registry.register(_spec(sha="0" * 64), replace=True)
    with pytest.raises(ModelError) as err:
        cache.ensure_checkpoint(model.id)
    assert "0" * 64 in str(err.value) and SHA in str(err.value)
    # nothing but the download lock (an empty file, kept: see vosfx/models/download.py)
    assert [p.name for p in cache.checkpoint_dir().glob(NAME + "*")] == [NAME + ".lock"]


@pytest.mark.parametrize("how", ["env", "arg"])
def test_offline_never_connects_and_names_the_path(model, server, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("VOSFX_OFFLINE", "1")
    with pytest.raises(DownloadError) as err:
        cache.ensure_checkpoint(model.id, offline=True if how == "arg" else None)
    assert str(cache.checkpoint_path(model.id)) in str(err.value)
    assert model.url_for(server.url) in str(err.value)
    assert server.requests == []


def test_offline_still_serves_a_cached_file(model, server, monkeypatch):
    path = cache.ensure_checkpoint(model.id)
    monkeypatch.setenv("VOSFX_OFFLINE", "1")
    assert cache.ensure_checkpoint(model.id) == path


def test_missing_on_server_is_a_clear_download_error(model, server):
    del server.files[NAME]
    with pytest.raises(DownloadError, match="HTTP 404"):
        cache.ensure_checkpoint(model.id)
    assert len(server.requests) == 1  # a 404 is not retried


def test_unknown_model_lists_ids(config_home):
    with pytest.raises(ModelError, match="sam2.1-tiny"):
        cache.ensure_checkpoint("nope")


def test_unhashed_model_needs_trust(model, server):
    registry.register(_spec(sha=None, size=None), replace=True)
    with pytest.raises(ModelError, match="trust-unverified"):
        cache.ensure_checkpoint(model.id)
    assert server.requests == []
    path = cache.ensure_checkpoint(model.id, trust_unverified=True)
    assert path.read_bytes() == PAYLOAD
    assert cache.ensure_checkpoint(model.id) == path  # trusted from now on, by its own hash
    assert [r.status for r in cache.verify([model.id])] == ["trusted"]


def test_corrupted_cached_file_is_refused_and_verify_reports_it(model, server):
    path = cache.ensure_checkpoint(model.id)
    path.write_bytes(PAYLOAD[:-1] + b"\0")
    with pytest.raises(ModelError) as err:
        cache.ensure_checkpoint(model.id)
    assert SHA in str(err.value)
    (res,) = cache.verify([model.id])
    assert (res.status, res.expected_sha256) == ("mismatch", SHA)
    assert res.found_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    cache.pull(model.id, force=True)
    assert path.read_bytes() == PAYLOAD
    assert [r.status for r in cache.verify([model.id])] == ["ok"]


def test_verify_all_reports_missing_models(model):
    results = {r.model_id: r.status for r in cache.verify()}
    assert set(results) == set(registry.model_ids())
    assert set(results.values()) == {"missing"}


def test_import_identifies_by_hash(model, tmp_path):
    src = tmp_path / "downloaded-elsewhere.bin"
    src.write_bytes(PAYLOAD)
    model_id, dest = cache.import_checkpoint(src)
    assert (model_id, dest) == (model.id, cache.checkpoint_path(model.id))
    assert cache.ensure_checkpoint(model.id, offline=True).read_bytes() == PAYLOAD


def test_import_of_other_bytes_needs_trust_and_is_then_held_to_its_hash(model, tmp_path):
    from ckpt import retagged_checkpoint

    src, other = retagged_checkpoint(tmp_path / "finetune.pt", "fine-tune")  # tiny's tensors
    with pytest.raises(ModelError, match="matches no known checkpoint"):
        cache.import_checkpoint(src)
    with pytest.raises(ModelError) as err:
        cache.import_checkpoint(src, model.id)
    assert SHA in str(err.value) and other in str(err.value)
    assert not cache.is_cached(model.id)
    _, dest = cache.import_checkpoint(src, model.id, trust_unverified=True)
    assert cache.ensure_checkpoint(model.id, offline=True) == dest
    dest.write_bytes(b"tampered")
    with pytest.raises(ModelError, match=other) as err:
        cache.ensure_checkpoint(model.id, offline=True)
    # the user's own file is what they want back, not the published one
    assert f"import your file again (`vosfx models import FILE --as {model.id}" in str(err.value)


def test_an_unverified_import_must_have_the_named_models_tensors(model, tmp_path):
    """--trust-unverified lets other bytes in, not another architecture or no checkpoint at
    all: refused at import, not at the first render with a list of mismatched tensors."""
    from ckpt import retagged_checkpoint

    large = registry.register(
        ModelSpec(
            id="test-large",
            url="https://e.invalid/l.pt",
            config="configs/sam2.1/sam2.1_hiera_l.yaml",
        )
    )
    tiny, _ = retagged_checkpoint(tmp_path / "tiny_ft.pt", "ft")
    with pytest.raises(
        ModelError,
        match=r"has the tensors of sam2.1-tiny, not of test-large; import it --as sam2.1-tiny",
    ):
        cache.import_checkpoint(tiny, large.id, trust_unverified=True)
    junk = tmp_path / "notes.pt"
    junk.write_bytes(b"fine-tuned weights")
    with pytest.raises(ModelError, match=r"notes.pt is not a SAM 2 checkpoint vosfx can read"):
        cache.import_checkpoint(junk, model.id, trust_unverified=True)
    assert not cache.is_cached(large.id) and not cache.is_cached(model.id)


def test_import_missing_file(model, tmp_path):
    with pytest.raises(ModelError, match="found nothing"):
        cache.import_checkpoint(tmp_path / "nope.pt")


def test_an_import_that_runs_out_of_disk_leaves_nothing_and_says_why(model, tmp_path, monkeypatch):
    """Disk full halfway through copying 900 MB into the cache: a ModelError naming the cache
    path and the reason, no half copy left behind, and a good cached file kept as it was."""
    import errno
    import shutil

    src = tmp_path / "elsewhere.pt"
    src.write_bytes(PAYLOAD)
    _, dest = cache.import_checkpoint(src)  # a good copy is cached already

    def full(a, b, *args, **kwargs):
        with open(b, "wb") as fh:
            fh.write(PAYLOAD[:1000])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(ModelError, match="No space left on device") as err:
        cache.import_checkpoint(src)
    assert str(dest) in str(err.value)
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted(
        [NAME, "index.json", "index.json.lock"]
    )
    assert dest.read_bytes() == PAYLOAD


def test_two_processes_recording_at_once_keep_both_entries(model, tmp_path, monkeypatch):
    """A fine-tune imported (trusted) while another process records its own model: each reads
    index.json, adds its entry and writes it back. Without a lock the second write drops the
    first's entry, and the fine-tune is then refused as failing the published hash."""
    import threading

    other = registry.register(_spec("test-model-b", name="b.pt"))
    from ckpt import retagged_checkpoint

    tune, _ = retagged_checkpoint(tmp_path / "finetune.pt", "fine-tune")
    plain = tmp_path / "b.pt"
    plain.write_bytes(PAYLOAD)
    real_read = cache._read_index
    racer: list[threading.Thread] = []

    def read_then_let_the_other_run():
        models = real_read()
        if not racer:  # the first import has read the index: the other records meanwhile
            racer.append(threading.Thread(target=cache.import_checkpoint, args=(plain, other.id)))
            racer[0].start()
            racer[0].join(1.0)  # it finishes here unless a lock makes it wait for us
        return models

    monkeypatch.setattr(cache, "_read_index", read_then_let_the_other_run)
    cache.import_checkpoint(tune, model.id, trust_unverified=True)
    racer[0].join(10)
    monkeypatch.setattr(cache, "_read_index", real_read)
    assert set(real_read()) == {model.id, other.id}
    assert cache.ensure_checkpoint(model.id, offline=True).read_bytes() == tune.read_bytes()


def _read_only(*_a, **_k):
    import errno

    raise OSError(errno.EROFS, "Read-only file system")


def test_a_read_only_shared_cache_serves_its_files(model, server, monkeypatch, caplog):
    """docs/models.md: a shared, pre-filled folder for air-gapped machines. Copied there
    without its index (or with new mtimes), a file is hashed; the index cannot be written,
    and the file is used all the same."""
    path = cache.pull("test-model")
    (cache.checkpoint_dir() / "index.json").unlink()
    monkeypatch.setattr(cache, "exclusive_lock", _read_only)
    assert cache.ensure_checkpoint("test-model", offline=True) == path
    assert [r.status for r in cache.verify(["test-model"])] == ["ok"]
    assert "cannot update" in caplog.text and "Read-only file system" in caplog.text


def test_a_download_into_a_cache_it_cannot_write_says_so(model, server, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("VOSFX_HOME", str(blocker / "cache"))  # mkdir fails, even as root
    with pytest.raises(
        DownloadError,
        match="cannot download test-model into the model cache .*"
        "set VOSFX_HOME to a folder you can write",
    ):
        cache.ensure_checkpoint("test-model")
    assert server.requests == []

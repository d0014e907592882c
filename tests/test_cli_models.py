"""`vosfx models ...` in-process with click's CliRunner, against a real 127.0.0.1 server."""

from __future__ import annotations

import hashlib
import random
import sys
import types

import pytest
from click.testing import CliRunner
from fileserver import FileServer

from vosfx.cli import cli, main
from vosfx.errors import BackendError, DownloadError, ModelError
from vosfx.models import cache, download, registry
from vosfx.models.registry import ModelSpec

PAYLOAD = random.Random(1).randbytes(200_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
NAME = "cli_test.pt"


@pytest.fixture
def model(config_home, monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.delenv("VOSFX_OFFLINE", raising=False)
    spec = registry.register(
        ModelSpec(
            id="cli-test",
            url=f"https://publisher.invalid/{NAME}",
            config="configs/sam2.1/sam2.1_hiera_t.yaml",
            sha256=SHA,
            size_bytes=len(PAYLOAD),
        )
    )
    yield spec
    registry.reset()


@pytest.fixture
def server(monkeypatch):
    with FileServer(files={NAME: PAYLOAD}) as srv:
        monkeypatch.setenv("VOSFX_MODEL_BASE_URL", srv.url)
        yield srv


def invoke(*args):
    return CliRunner().invoke(cli, ["models", *args])


def exit_code_of(capsys, *args) -> tuple[int, str]:
    """Run through ``vosfx.cli.main`` (the real entry point) to see the exit code."""
    with pytest.raises(SystemExit) as exc:
        main(["models", *args])
    return exc.value.code, capsys.readouterr().err


def test_list_shows_every_model_and_what_is_cached(model, server):
    res = invoke("list")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for spec in registry.all_models():
        assert any(line.startswith(spec.id + " ") for line in lines), spec.id
    tiny = next(line for line in lines if line.startswith("sam2.1-tiny "))
    assert "148.8 MiB" in tiny and "7402e0d864fa" in tiny and " no " in tiny
    assert "(unpublished)" in next(line for line in lines if line.startswith("sam2-large "))
    assert invoke("pull", "cli-test", "-q").exit_code == 0
    row = next(line for line in invoke("list").output.splitlines() if line.startswith("cli-test"))
    assert " yes " in row and SHA[:12] in row


def test_pull_downloads_with_a_progress_bar_and_prints_the_path(model, server):
    res = invoke("pull", "cli-test")
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(cache.checkpoint_path("cli-test"))
    assert res.output.startswith("cli-test")  # the bar's label (no bar drawn off a tty)
    assert cache.checkpoint_path("cli-test").read_bytes() == PAYLOAD


def test_pull_offline_names_the_path_and_exits_8(model, server, capsys):
    code, err = exit_code_of(capsys, "pull", "cli-test", "--offline")
    assert code == DownloadError.exit_code == 8
    assert str(cache.checkpoint_path("cli-test")) in err
    assert server.requests == []


def test_pull_unknown_model_exits_7_listing_ids(config_home, capsys):
    code, err = exit_code_of(capsys, "pull", "no-such-model")
    assert code == ModelError.exit_code
    assert "sam2.1-tiny" in err


def test_path_prints_the_cache_location(config_home):
    res = invoke("path", "sam2.1-small")
    assert res.exit_code == 0
    assert res.output.strip() == str(config_home / "cache/checkpoints/sam2.1_hiera_small.pt")


def test_verify_ok_then_mismatch_exits_7(model, server, capsys):
    assert "no checkpoints cached" in invoke("verify").output
    invoke("pull", "cli-test", "-q")
    res = invoke("verify")
    assert res.exit_code == 0 and "ok" in res.output and "cli-test" in res.output
    cache.checkpoint_path("cli-test").write_bytes(b"corrupt")
    code, _ = exit_code_of(capsys, "verify")
    assert code == 7
    res = invoke("verify")
    assert "mismatch" in res.output and SHA in res.output


def test_import_by_hash_and_as_name_with_trust(model, tmp_path, capsys):
    good = tmp_path / "x.pt"
    good.write_bytes(PAYLOAD)
    res = invoke("import", str(good))
    assert res.exit_code == 0 and res.output.startswith("cli-test: ")
    from ckpt import retagged_checkpoint

    other, _ = retagged_checkpoint(tmp_path / "ft.pt", "custom fine-tune")
    code, err = exit_code_of(capsys, "import", str(other), "--as", "cli-test")
    assert code == 7 and SHA in err and "--trust-unverified" in err
    res = invoke("import", str(other), "--as", "cli-test", "--trust-unverified")
    assert res.exit_code == 0
    assert "trusted" in invoke("verify", "cli-test").output


def test_import_names_the_model_from_its_tensors(config_home, tmp_path, capsys):
    pytest.importorskip("torch")
    from ckpt import make_checkpoint

    ft, digest = make_checkpoint(tmp_path / "my_finetune.pt")  # tiny layout, not the published
    code, err = exit_code_of(capsys, "import", str(ft))
    assert code == 7 and len(err.strip().splitlines()) == 1
    assert "tensors of sam2.1-tiny" in err and "pass --trust-unverified" in err
    res = invoke("import", str(ft), "--trust-unverified")
    assert res.exit_code == 0 and res.output.startswith("sam2.1-tiny: "), res.output
    row = next(
        line for line in invoke("list").output.splitlines() if line.startswith("sam2.1-tiny ")
    )
    assert digest[:12] in row and "own, not the published" in row and " yes " in row
    junk = tmp_path / "notes.pt"
    junk.write_bytes(b"not a checkpoint")
    code, err = exit_code_of(capsys, "import", str(junk))
    assert code == 7 and "pass --as NAME --trust-unverified" in err


def test_export_without_the_exporter_is_a_backend_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vosfx.engine.export", None)  # import fails
    code, err = exit_code_of(capsys, "export", "sam2.1-tiny")
    assert code == BackendError.exit_code
    assert "vosfx.engine.export" in err


def test_export_calls_the_exporter(monkeypatch, tmp_path):
    calls = []

    def export_bundle(model_id, *, out_dir=None, variants=(), image_size=None, progress=None):
        calls.append((model_id, out_dir, variants, image_size))
        progress("exporting image encoder")
        return tmp_path / "bundle"

    fake = types.ModuleType("vosfx.engine.export")
    fake.export_bundle = export_bundle
    monkeypatch.setitem(sys.modules, "vosfx.engine.export", fake)
    res = invoke(
        "export",
        "sam2.1-tiny",
        "--out",
        str(tmp_path / "o"),
        "--variant",
        "fp16",
        "--image-size",
        "512",
    )
    assert res.exit_code == 0, res.output
    assert calls == [("sam2.1-tiny", tmp_path / "o", ("fp16",), 512)]
    assert res.output.strip().endswith(str(tmp_path / "bundle"))
    assert "exporting image encoder" in res.output


@pytest.mark.parametrize("size, ok", [("500", False), ("32", False), ("0", True)])
def test_export_image_size_checked_before_anything_runs(monkeypatch, tmp_path, size, ok):
    """--image-size 500 used to start a 156 MB download, then fail with exit 7 naming
    `image_size`; now it is a usage error naming --image-size. 0 is the model's own size, as
    in `vosfx matte`."""
    calls = []

    def export_bundle(model_id, *, out_dir=None, variants=(), image_size=None, progress=None):
        calls.append(image_size)
        return tmp_path / "bundle"

    fake = types.ModuleType("vosfx.engine.export")
    fake.export_bundle = export_bundle
    monkeypatch.setitem(sys.modules, "vosfx.engine.export", fake)
    res = invoke("export", "sam2.1-tiny", "--image-size", size)
    if not ok:
        assert res.exit_code == 2 and "Invalid value for --image-size" in res.output, res.output
        assert "multiple of 16" in res.output and calls == []
    else:
        assert res.exit_code == 0 and calls == [None], res.output


def test_progress_bar_counts_bytes_and_shows_a_rate():
    from vosfx.cli.models import _Bar

    bar = _Bar("m")
    for done in (10, 2**20, 3 * 2**20):
        bar(done, 3 * 2**20)
    assert (bar.bar.pos, bar.bar.length) == (3 * 2**20, 3 * 2**20)
    assert bar.bar.current_item.startswith("3.0 MiB at ") and "MiB/s" in bar.bar.current_item
    bar.close()
    assert bar.bar is None


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{not json", "is unreadable (Expecting property name"),
        ("[1]", "expected {'models': {...}}, found [1]"),
    ],
)
def test_a_damaged_cache_index_exits_7_naming_it(config_home, capsys, text, said):
    index = config_home / "cache" / "checkpoints" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text(text)
    for command in ("list", "verify"):
        code, err = exit_code_of(capsys, command)
        assert code == 7 and f"cache index {index}" in err and said in err, err

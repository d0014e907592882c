"""A bundle's variants made on first use (``vosfx.engine.variants.add_variants``): a variant is
listed in the manifest only once its files are written, the manifest is replaced whole, and a
full disk, a failure or Ctrl-C while one is made leaves the bundle as usable as before.

The makers are stand-ins that write files into the bundle's folder as the real ones do (the
real ones are run by tests/test_precision.py and tests/test_onnx_backend.py); what is tested
here is the folder and manifest around them, in milliseconds, without torch or onnx.
"""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import pytest

from vosfx.engine import export, variants
from vosfx.engine.bundle import BUNDLE_FORMAT, MANIFEST
from vosfx.errors import OutputError

FULL = OSError(errno.ENOSPC, "No space left on device")


def _bundle(folder: Path, **extra) -> Path:
    """A bundle folder whose one graph is a placeholder file (the makers here never read it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "image_encoder.onnx").write_bytes(b"graph")
    man = {
        "format": BUNDLE_FORMAT,
        "graphs": {"image_encoder": {"file": "image_encoder.onnx"}},
        **extra,
    }
    (folder / MANIFEST).write_text(json.dumps(man, indent=2), encoding="utf-8")
    return folder


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _maker(fail: BaseException | None = None, *, content: bytes = b"fp16 graph"):
    """A maker that writes ``image_encoder.fp16.onnx`` (half of it where it ``fail``s)."""

    def make(folder: Path, man: dict) -> dict[str, str]:
        target = folder / "image_encoder.fp16.onnx"
        if fail is not None:
            target.write_bytes(content[: len(content) // 2])
            (folder / "scratch.tmp").mkdir()  # a maker's own scratch folder, say
            raise fail
        target.write_bytes(content)
        return {"image_encoder": target.name}

    return make


@pytest.mark.parametrize("failure", [FULL, KeyboardInterrupt(), RuntimeError("a bug")])
def test_a_variant_that_fails_leaves_the_bundle_as_it_was(tmp_path, monkeypatch, failure):
    folder = _bundle(tmp_path / "b")
    before = _listing(folder)
    monkeypatch.setitem(variants._MAKERS, "fp16", _maker(failure))
    expected = OutputError if isinstance(failure, OSError) else type(failure)
    with pytest.raises(expected) as err:
        variants.add_variants(folder, ("fp16",), lambda _msg: None)
    if expected is OutputError:
        said = str(err.value)
        assert "fp16 variant" in said and str(folder) in said and "No space left" in said
        assert "kept as it was" in said
    assert _listing(folder) == before  # the half file and the scratch folder are gone


def test_a_variant_made_again_is_off_the_manifest_until_its_files_are_written(
    tmp_path, monkeypatch
):
    """A variant of an older recipe is rewritten in place; while that happens (and after it
    fails half way) the manifest does not list it, so no run loads half a graph, and its next
    use makes it again."""
    monkeypatch.setitem(variants.RECIPES, "fp16", 2)
    folder = _bundle(
        tmp_path / "b", variants={"fp16": {"image_encoder": "image_encoder.fp16.onnx"}}
    )
    (folder / "image_encoder.fp16.onnx").write_bytes(b"the older recipe's graph")
    assert variants.variants_to_make(folder, ("fp16",)) == ["fp16"]  # no recipe: 1, outdated
    monkeypatch.setitem(variants._MAKERS, "fp16", _maker(FULL, content=b"x" * 100))
    with pytest.raises(OutputError):
        variants.add_variants(folder, ("fp16",), lambda _msg: None)
    man = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    assert "fp16" not in man["variants"] and "fp16" not in man.get("recipes", {})
    assert man["graphs"] == {"image_encoder": {"file": "image_encoder.onnx"}}
    assert variants.variants_to_make(folder, ("fp16",)) == ["fp16"]

    monkeypatch.setitem(variants._MAKERS, "fp16", _maker())
    variants.add_variants(folder, ("fp16",), lambda _msg: None)
    man = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    assert man["variants"]["fp16"] == {"image_encoder": "image_encoder.fp16.onnx"}
    assert man["recipes"]["fp16"] == 2
    assert (folder / "image_encoder.fp16.onnx").read_bytes() == b"fp16 graph"
    assert variants.variants_to_make(folder, ("fp16",)) == []


def test_a_manifest_that_cannot_be_written_is_left_whole(tmp_path, monkeypatch):
    """The manifest is written beside itself and renamed over: a full disk while it is
    written (here: when its bytes are flushed) leaves the one before, whole, and no temp."""
    from vosfx import files

    folder = _bundle(tmp_path / "b")
    manifest = (folder / MANIFEST).read_bytes()
    monkeypatch.setitem(variants._MAKERS, "fp16", _maker())

    def fsync(_fd):
        raise FULL

    monkeypatch.setattr(files.os, "fsync", fsync)
    with pytest.raises(OutputError, match=r"fp16 variant .*No space left on device"):
        variants.add_variants(folder, ("fp16",), lambda _msg: None)
    assert (folder / MANIFEST).read_bytes() == manifest
    assert sorted(p.name for p in folder.iterdir()) == [
        "image_encoder.fp16.onnx",  # written, unlisted: made again on its next use
        "image_encoder.onnx",
        MANIFEST,
    ]


def test_models_export_adds_a_variant_to_an_existing_bundle_under_its_lock(
    tmp_path, monkeypatch, config_home
):
    """`vosfx models export --variant fp16` for a bundle that exists made the variant without
    the bundle's lock, beside a first-use run that could be making it too (two writers of one
    file, and of the manifest). It now holds the lock; with nothing to make it takes none (a
    read-only cache's bundle)."""
    from vosfx.files import exclusive_lock

    ckpt = tmp_path / "stand_in.pt"
    ckpt.write_bytes(b"not a real checkpoint")
    out = _bundle(tmp_path / "bundle")
    monkeypatch.setattr(export, "automatic", lambda: ())
    monkeypatch.setattr(export, "find_bundle", lambda *a: out)
    tried: list[str] = []

    def make(folder: Path, man: dict) -> dict[str, str]:
        def try_lock():
            try:
                with exclusive_lock(out.with_name("bundle.lock"), blocking=False):
                    tried.append("taken")
            except BlockingIOError:
                tried.append("refused")

        probe = threading.Thread(target=try_lock)  # another process's try, as far as flock goes
        probe.start()
        probe.join(5)
        return _maker()(folder, man)

    monkeypatch.setitem(variants._MAKERS, "fp16", make)
    assert export.export_bundle(str(ckpt), out_dir=out, variants=("fp16",)) == out
    assert tried == ["refused"]
    assert json.loads((out / MANIFEST).read_text())["variants"]["fp16"]

    out.with_name("bundle.lock").unlink()
    listing = _listing(out)
    assert export.export_bundle(str(ckpt), out_dir=out, variants=("fp16",)) == out
    assert not out.with_name("bundle.lock").exists() and _listing(out) == listing

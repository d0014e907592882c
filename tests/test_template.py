"""Shipped graph templates: filled from a checkpoint without torch they give the graphs the
exporter writes, and the exporter regenerates the shipped files byte for byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from vosfx.engine.template import TEMPLATES, available, build_bundle, find_template
from vosfx.errors import ModelError

ort = pytest.importorskip("onnxruntime")
TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"


def _feeds(session, size: int, rng) -> dict:
    g = size // 16
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else (1 if d == "batch" else 3) for d in inp.shape]
        if inp.name == "num_obj_ptr_tokens":
            feeds[inp.name] = np.array(8, np.int64)
        elif inp.name in ("memory", "memory_pos"):
            feeds[inp.name] = rng.standard_normal((2 * g * g + 8, 1, 64)).astype(np.float32)
        elif inp.name == "key_scale":
            feeds[inp.name] = rng.uniform(0.5, 1.5, (1, 2 * g * g + 8)).astype(np.float32)
        elif inp.name == "point_coords":
            feeds[inp.name] = rng.uniform(0, size, (1, 2, 2)).astype(np.float32)
        elif inp.name == "point_labels":
            feeds[inp.name] = np.array([[1, 0]], np.int32)
        elif "bool" in inp.type:
            feeds[inp.name] = np.ones(shape, bool)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _outputs(bundle: Path, name: str, feeds: dict, variant: str | None = None) -> list[np.ndarray]:
    man = json.loads((bundle / "manifest.json").read_text())
    file = man["variants"][variant][name] if variant else man["graphs"][name]["file"]
    sess = ort.InferenceSession(str(bundle / file), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_the_default_models_templates_ship():
    assert "sam2.1_hiera_t-1024" in available()
    assert find_template(TINY, 1024) == TEMPLATES / "sam2.1_hiera_t-1024"
    assert find_template(TINY, 512) is None
    assert find_template(TINY, 1024, mem_mask_scale=7.5, mem_mask_bias=-4.0) is None


@pytest.mark.slow
def test_filled_template_equals_an_export_of_another_checkpoint(tmp_path):
    """The template is exported from distinct seeded weights; filled with a checkpoint of other
    weights (seed 7) every graph output equals a plain export of that checkpoint (so no
    weight-derived constant is baked into the template). At 256 px to keep it quick."""
    pytest.importorskip("torch")
    from ckpt import make_checkpoint

    from vosfx.engine.export import export_bundle
    from vosfx.engine.export_template import export_template

    template = export_template(TINY, 256, tmp_path / "templates")
    ckpt, sha = make_checkpoint(tmp_path / "seed7" / "sam2.1_hiera_tiny.pt", seed=7)
    filled = build_bundle(template, ckpt, sha256=sha, model_id="t", out_dir=tmp_path / "filled")
    ref = export_bundle(str(ckpt), out_dir=tmp_path / "ref", image_size=256)
    rng = np.random.default_rng(0)
    graphs = json.loads((ref / "manifest.json").read_text())["graphs"]
    for name, graph in graphs.items():
        sess = ort.InferenceSession(str(ref / graph["file"]), providers=["CPUExecutionProvider"])
        feeds = _feeds(sess, 256, rng)
        want, got = sess.run(None, feeds), _outputs(filled, name, feeds)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5, err_msg=name)
    # the ready-made cpu variant (memory attention in query blocks) equals the exported one
    variants = json.loads((ref / "manifest.json").read_text())["variants"]
    assert variants["cpu"] == json.loads((filled / "manifest.json").read_text())["variants"]["cpu"]
    for name, file in variants["cpu"].items():
        sess = ort.InferenceSession(str(ref / file), providers=["CPUExecutionProvider"])
        feeds = _feeds(sess, 256, rng)
        want, got = sess.run(None, feeds), _outputs(filled, name, feeds, "cpu")
        np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=1e-5, err_msg=name)
    assert np.array_equal(
        np.load(filled / "constants.npz")["maskmem_tpos_enc"],
        np.load(ref / "constants.npz")["maskmem_tpos_enc"],
    )


@pytest.mark.slow
def test_exporter_regenerates_the_shipped_tiny_template(tmp_path):
    """Byte-identical graphs, weights table and constants (torch as pinned in CI)."""
    pytest.importorskip("torch")
    from vosfx.engine.export_template import export_template

    fresh = export_template(TINY, 1024, tmp_path)
    shipped = TEMPLATES / "sam2.1_hiera_t-1024"
    assert sorted(os.listdir(fresh)) == sorted(os.listdir(shipped))
    for name in os.listdir(shipped):
        if name == "template.json":  # vosfx version may move; everything else must match
            a, b = (json.loads((d / name).read_text()) for d in (fresh, shipped))
            a.pop("vosfx_version"), b.pop("vosfx_version")
            assert a == b
        elif name == "constants.npz":
            with np.load(fresh / name) as a, np.load(shipped / name) as b:
                assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
        else:
            assert (fresh / name).read_bytes() == (shipped / name).read_bytes(), name


def test_wrong_checkpoint_is_refused_before_any_graph_is_written(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"model": {"w": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match=r"missing keys \(471\)"):
        build_bundle(
            TEMPLATES / "sam2.1_hiera_t-1024",
            tmp_path / "other.pt",
            sha256=None,
            model_id="x",
            out_dir=tmp_path / "b",
        )
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()
    with pytest.raises(ModelError, match="sha256 mismatch"):
        build_bundle(
            TEMPLATES / "sam2.1_hiera_t-1024",
            tmp_path / "other.pt",
            sha256="0" * 64,
            model_id="x",
            out_dir=tmp_path / "b",
        )


def test_two_processes_making_one_bundle_take_turns(config_home, tmp_path, monkeypatch, caplog):
    """Batch workers starting together on a fresh machine: the bundle is made by one at a
    time (a lock file beside it); the others wait, say so, and then find it made."""
    import threading
    import time

    from vosfx.config import ModelConfig
    from vosfx.engine import export, template

    ckpt = tmp_path / "some.pt"
    ckpt.write_bytes(b"weights")
    made: list[Path] = []
    inside = {"now": 0, "most": 0}
    entered = threading.Event()

    def make(model, progress):
        inside["now"] += 1
        inside["most"] = max(inside["most"], inside["now"])
        entered.set()
        time.sleep(0.3)
        inside["now"] -= 1
        made.append(tmp_path / f"bundle{len(made)}")
        return made[-1]

    monkeypatch.setattr(template, "bundle_from_template", make)  # a slow fill, counted
    model = ModelConfig(checkpoint=str(ckpt), image_size=1024)
    got: list[Path] = []
    first = threading.Thread(target=lambda: got.append(export.ensure_bundle_for_config(model)))
    first.start()
    assert entered.wait(10)
    with caplog.at_level("WARNING"):
        got.append(export.ensure_bundle_for_config(model))
    first.join(10)
    assert inside["most"] == 1 and len(got) == 2
    assert "another vosfx process is making the ONNX bundle for some.pt" in caplog.text

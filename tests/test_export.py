"""Export: the real-valued RoPE equals SAM 2's complex one, every exported graph equals its
torch stage (max abs error <= 1e-4, fp32) on the same inputs, dynamic memory length and point
count work, and the manifest, the cache lookup and the CLI agree."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("onnx")

from tests.onnx_bundle import SIZE, exported
from vosfx.engine import export
from vosfx.engine.export_rope import RealRoPEAttention

TOL = 1e-4


@pytest.fixture(scope="module")
def bundle():
    return exported()


@pytest.fixture(scope="module")
def backends(bundle):
    from vosfx.engine.loader import torch_backend_for
    from vosfx.engine.onnx_backend import OnnxBackend
    from vosfx.models.checkpoint import load_sam2

    ckpt, _, folder = bundle
    net = load_sam2(str(ckpt), image_size=SIZE)
    return torch_backend_for(net, "cpu"), OnnxBackend(folder, device="cpu", threads=2)


# --- RoPE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_mem, n_ptr_tokens", [(1, 0), (2, 4), (3, 16)])
def test_real_rope_equals_complex_rope(n_mem, n_ptr_tokens):
    from sam2.modeling.sam.transformer import RoPEAttention

    torch.manual_seed(n_mem)
    feat = 8  # 8 x 8 query grid
    cross = RoPEAttention(
        embedding_dim=256,
        num_heads=1,
        downsample_rate=1,
        kv_in_dim=64,
        rope_k_repeat=True,
        feat_sizes=(feat, feat),
    ).eval()
    selfa = RoPEAttention(
        embedding_dim=256, num_heads=1, downsample_rate=1, feat_sizes=(feat, feat)
    ).eval()
    q = torch.randn(1, feat * feat, 256)
    k = torch.randn(1, n_mem * feat * feat + n_ptr_tokens, 64)
    real_c, real_s = RealRoPEAttention(cross), RealRoPEAttention(selfa)
    real_c.n_exclude = torch.tensor(n_ptr_tokens)
    with torch.no_grad():
        want_c = cross(q, k.clone(), k.clone(), num_k_exclude_rope=n_ptr_tokens)
        want_s = selfa(q, q.clone(), q.clone())
        got_c, got_s = real_c(q, k, k), real_s(q, q, q)
    assert float(want_c.abs().max()) > 1e-2  # a non-trivial output
    assert float((got_c - want_c).abs().max()) <= 1e-6
    assert float((got_s - want_s).abs().max()) <= 1e-6
    # pointer tokens must not be rotated: rotating them too changes the result
    if n_ptr_tokens:
        real_c.n_exclude = torch.tensor(0)
        with torch.no_grad():
            assert float((real_c(q, k, k) - want_c).abs().max()) > 1e-4


def test_memory_attention_wrapper_equals_stage(backends):
    from vosfx.engine.export_stages import MemoryAttentionExport

    tb, _ = backends
    torch.manual_seed(3)
    g = SIZE // 16
    feat, pos = torch.randn(1, 256, g, g), torch.randn(1, 256, g, g)
    mem, mpos = torch.randn(2 * g * g + 12, 1, 64), torch.randn(2 * g * g + 12, 1, 64)
    wrapper = MemoryAttentionExport(tb.model).eval()
    ones = torch.ones(1, mem.shape[0])
    scale = torch.rand(1, mem.shape[0]) + 0.5  # SAM2Long's per-token key scales
    with torch.no_grad():
        want = tb.attention(feat, pos, mem, mpos, 12)
        got = wrapper(feat, pos, mem, mpos, torch.tensor(12), ones)
        want_s = tb.attention(feat, pos, mem, mpos, 12, scale)
        got_s = wrapper(feat, pos, mem, mpos, torch.tensor(12), scale)
    assert float((got - want).abs().max()) <= 1e-5
    assert float((got_s - want_s).abs().max()) <= 1e-5
    assert float((want_s - want).abs().max()) > 1e-3  # the scales do change the output


# --- per-stage parity ---------------------------------------------------------------------------


def _check(ob, name, feeds, want):
    got = ob._run(name, {k: v.numpy() for k, v in feeds.items()})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = w.float().numpy()
        assert g.shape == w.shape
        assert float(np.abs(g - w).max()) <= TOL, name
    return got


def _features(tb, seed=0):
    torch.manual_seed(seed)
    img = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        return img, tb.encoder(img)


def test_image_encoder_and_no_memory(backends):
    tb, ob = backends
    img, want = _features(tb)
    _check(ob, "image_encoder", {"image": img}, want)
    with torch.no_grad():
        _check(ob, "no_memory", {"vision_feat": want[2]}, [tb.no_memory(want[2])])


@pytest.mark.parametrize("n_mem, n_ptr, scaled", [(1, 0, False), (3, 2, True), (7, 16, False)])
def test_memory_attention_dynamic_length(backends, n_mem, n_ptr, scaled):
    tb, ob = backends
    _, (_, _, feat, pos) = _features(tb)
    g = SIZE // 16
    m = n_mem * g * g + 4 * n_ptr
    mem, mpos = torch.randn(m, 1, 64), torch.randn(m, 1, 64)
    # SAM2Long's key scales (one per memory token), or ones (every other policy)
    scale = torch.rand(1, m) + 0.5 if scaled else torch.ones(1, m)
    with torch.no_grad():
        want = tb.attention(feat, pos, mem, mpos, 4 * n_ptr, scale if scaled else None)
    _check(
        ob,
        "memory_attention",
        {
            "vision_feat": feat,
            "vision_pos": pos,
            "memory": mem,
            "memory_pos": mpos,
            "num_obj_ptr_tokens": torch.tensor(4 * n_ptr),
            "key_scale": scale,
        },
        [want],
    )


@pytest.mark.parametrize("labels", [[1], [1, 0, 1], [2, 3, 1]])
def test_decoder_all_outputs(backends, labels):
    tb, ob = backends
    _, (s0, s1, feat, _) = _features(tb)
    pts = torch.rand(1, len(labels), 2) * SIZE
    lab = torch.tensor([labels], dtype=torch.int32)
    with torch.no_grad():
        want = tb.decoder(feat, s0, s1, pts, lab)
    got = _check(
        ob,
        "decoder",
        {
            "pix_feat": feat,
            "feat_s0": s0,
            "feat_s1": s1,
            "point_coords": pts,
            "point_labels": lab,
            "min_object_score": torch.zeros(1, 1),  # SAM 2's gate
        },
        want,
    )
    # multimask outputs are computed, not frozen: three different masks
    assert got[0].shape == (1, 3, SIZE // 4, SIZE // 4)
    assert float(np.abs(got[0][0, 0] - got[0][0, 1]).max()) > 1e-3


@pytest.mark.parametrize("gate", [-100.0, 100.0, -1.0])
def test_decoder_object_gate_is_an_input(backends, gate):
    """The object-score gate is a graph input: the graph equals the torch stage given the same
    gate; far below the score nothing is blanked, far above every mask is NO_OBJ_SCORE."""
    from vosfx.engine.stages import NO_OBJ_SCORE

    tb, ob = backends
    _, (s0, s1, feat, _) = _features(tb, seed=1)
    pts = torch.rand(1, 2, 2) * SIZE
    lab = torch.tensor([[1, 0]], dtype=torch.int32)
    g = torch.tensor([[gate]])
    with torch.no_grad():
        want = tb.decoder(feat, s0, s1, pts, lab, None, g)
    feeds = {"pix_feat": feat, "feat_s0": s0, "feat_s1": s1, "point_coords": pts}
    got = _check(ob, "decoder", {**feeds, "point_labels": lab, "min_object_score": g}, want)
    score = float(got[4][0, 0])
    assert -100 < score < 100, score
    blanked = bool(np.all(got[0] == NO_OBJ_SCORE)) and bool(np.all(got[2] == NO_OBJ_SCORE))
    assert blanked == (score <= gate), (score, gate)


def _export_decoder(module, example, inputs, spec, path) -> None:
    """``module`` traced as the bundle's decoder graph (``spec``'s outputs and point axis)."""
    from vosfx.engine.export import OPSET

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic, as the exporter
        torch.onnx.export(
            module.eval(),
            example,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=spec.outputs,
            dynamic_axes=spec.dynamic,
        )


def test_score_between_samurai_gate_and_zero(bundle, backends, tmp_path):
    """A frame scored -0.5 with SAMURAI's gate -1: the bundle's decoder keeps its masks, as the
    torch stage does; a bundle whose decoder graph has no min_object_score input (gated at 0)
    raises BackendError saying how to get a new bundle, and only on such a frame."""
    import shutil

    from vosfx.engine.backend import TrackRequest
    from vosfx.engine.export_stages import stage_specs
    from vosfx.engine.onnx_backend import OnnxBackend
    from vosfx.engine.stages import NO_OBJ_SCORE, NoMemoryStage
    from vosfx.errors import BackendError
    from vosfx.models.checkpoint import load_sam2

    ckpt, _, folder = bundle
    _, ob = backends
    rgb = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    feats = ob.encode_image(rgb)
    net = load_sam2(str(ckpt), image_size=SIZE).float().eval()
    (spec,) = [s for s in stage_specs(net) if s.name == "decoder"]
    stage = spec.module.stage
    with torch.no_grad():
        pix = NoMemoryStage(net)(torch.from_numpy(feats.vision_feat))
        args = (pix, torch.from_numpy(feats.feat_s0), torch.from_numpy(feats.feat_s1))
        args += (torch.zeros(1, 1, 2), -torch.ones(1, 1, dtype=torch.int32))  # no points
        head = net.sam_mask_decoder.pred_obj_score_head
        last = head.layers[-1] if hasattr(head, "layers") else head
        last.bias -= float(stage(*args)[4]) + 0.5  # this frame now scores -0.5
        want = stage(*args, None, torch.tensor([[-1.0]]))
    assert abs(float(want[4]) + 0.5) < 1e-4
    new, old = tmp_path / "new", tmp_path / "old"
    for dst in (new, old):
        shutil.copytree(folder, dst)
    _export_decoder(spec.module, spec.example, spec.inputs, spec, new / "decoder.onnx")
    _export_decoder(stage, spec.example[:5], spec.inputs[:5], spec, old / "decoder.onnx")

    fresh = OnnxBackend(new, device="cpu", threads=2)
    out = fresh.track(TrackRequest(feats, min_object_score=-1.0))
    assert abs(out.object_score_logit + 0.5) < 1e-3
    assert not np.all(out.multi_logits == NO_OBJ_SCORE)
    assert float(np.abs(out.multi_logits - want[0][0].numpy()).max()) <= TOL
    assert float(np.abs(out.single_ptr - want[6].numpy()).max()) <= TOL
    assert np.all(fresh.track(TrackRequest(feats)).multi_logits == NO_OBJ_SCORE)  # gate 0

    stale = OnnxBackend(old, device="cpu", threads=2)
    with pytest.raises(BackendError, match=r"without the min_object_score input.*models export"):
        stale.track(TrackRequest(feats, min_object_score=-1.0))
    for gate in (0.0, -0.2):  # the score is at or below the gate: the graph's 0 agrees
        out = stale.track(TrackRequest(feats, min_object_score=gate))
        assert np.all(out.multi_logits == NO_OBJ_SCORE)


def test_mask_as_output_and_memory_encoder(backends):
    tb, ob = backends
    _, (s0, s1, feat, _) = _features(tb)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    mask = torch.from_numpy(((yy - 100) ** 2 + (xx - 140) ** 2 < 60**2).astype(np.float32))
    mask = mask[None, None]
    with torch.no_grad():
        want = tb.mask_output(feat, s0, s1, mask)
    _check(
        ob,
        "mask_as_output",
        {"vision_feat": feat, "feat_s0": s0, "feat_s1": s1, "mask": mask},
        want,
    )
    low = torch.randn(1, 1, SIZE // 4, SIZE // 4) * 5
    for binarize, score in [(True, 2.0), (False, -3.0)]:
        args = (feat, low, torch.tensor([[score]]), torch.tensor([binarize]).reshape(1, 1, 1, 1))
        with torch.no_grad():
            want = tb.memory_encoder(*args)
        _check(
            ob,
            "memory_encoder",
            dict(zip(["vision_feat", "low_res", "object_score_logit", "binarize"], args)),
            want,
        )


def test_sam2long_key_scales_through_both_backends(backends):
    """The same TrackRequests (memories and pointers with SAM2Long's key scales, two of them
    as one batch) on the torch and the ONNX backend give the same outputs; the scales change
    them (so the ONNX backend really feeds its graph's key_scale input)."""
    from vosfx.engine.backend import MemoryItem, PointerItem, TrackRequest

    tb, ob = backends
    assert tb.supports_key_scale and ob.supports_key_scale
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[40:150, 60:200] = True
    outs = {}
    for name, be in (("torch", tb), ("onnx", ob)):
        feats = be.encode_image(rgb)
        low, score, ptr = be.mask_as_output(feats, mask)
        mems = [be.encode_memory(feats, low * k, score, k == 1) for k in (1, -1, 2)]

        def request(scales, feats=feats, mems=mems, ptr=ptr):
            return TrackRequest(
                feats,
                [MemoryItem(m, t, s) for m, t, s in zip(mems, (0, 5, 6), scales[:3], strict=True)],
                [PointerItem(ptr, 1, scales[3]), PointerItem(ptr, 2, scales[4])],
                2,
            )

        # SAM2Long's own scales are 0.95-1.05, which move random weights' logits by ~1e-4
        # only (the tolerance): stronger ones, so that a backend ignoring them would fail
        plain, scaled = request([1.0] * 5), request([0.3, 2.5, 1.0, 0.5, 1.8])
        outs[name] = [be.track(plain), *be.track_many([scaled, plain])]
    for a, b in zip(outs["torch"], outs["onnx"], strict=True):
        assert float(np.abs(a.multi_logits - b.multi_logits).max()) <= TOL
        assert float(np.abs(np.asarray(a.single_ptr) - b.single_ptr).max()) <= TOL
    for got in outs.values():  # the scaled request differs; the batched plain one does not
        assert float(np.abs(got[1].multi_logits - got[0].multi_logits).max()) > 10 * TOL
        assert float(np.abs(got[2].multi_logits - got[0].multi_logits).max()) <= TOL


def test_decoder_with_a_dense_mask_prompt(backends):
    """A further click on a frame: the points plus the frame's previous low-res logits as the
    decoder's dense input (the decoder_mask graph) give the torch backend's outputs, two such
    requests as one batch included; the mask changes them."""
    from vosfx.engine.backend import TrackRequest

    tb, ob = backends
    assert ob.supports_mask_input
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    s = SIZE // 4
    yy, xx = np.mgrid[:s, :s]
    prev = np.where((yy - 30) ** 2 + (xx - 25) ** 2 < 15**2, 12.0, -9.0).astype(np.float32)
    coords = np.array([[90.0, 120.0], [30.0, 40.0]], np.float32)
    labels = np.array([1, 0], np.int32)
    outs = {}
    for name, be in (("torch", tb), ("onnx", ob)):
        feats = be.encode_image(rgb)

        def request(mask, feats=feats):
            return TrackRequest(feats, point_coords=coords, point_labels=labels, mask_logits=mask)

        outs[name] = [be.track(request(prev)), *be.track_many([request(-prev), request(prev)])]
        outs[name].append(be.track(request(None)))
    for a, b in zip(outs["torch"], outs["onnx"], strict=True):
        for x, y in [(a.multi_logits, b.multi_logits), (a.single_logits, b.single_logits)]:
            assert float(np.abs(x - y).max()) <= TOL
        assert float(np.abs(np.asarray(a.single_ptr) - b.single_ptr).max()) <= TOL
    got = outs["onnx"]
    assert float(np.abs(got[2].multi_logits - got[0].multi_logits).max()) <= TOL
    assert float(np.abs(got[1].multi_logits - got[0].multi_logits).max()) > 10 * TOL
    assert float(np.abs(got[3].multi_logits - got[0].multi_logits).max()) > 10 * TOL


def test_pointer_pos(backends):
    tb, ob = backends
    t = torch.tensor([1 / 16, -0.5, 1.0])
    with torch.no_grad():
        _check(ob, "pointer_pos", {"t_norm": t}, [tb.pointer_pos(t)])


# --- manifest, cache, CLI -----------------------------------------------------------------------


def test_manifest(bundle, backends):
    import vosfx

    ckpt, sha, folder = bundle
    man = json.loads((folder / "manifest.json").read_text())
    assert man["model_id"] == ckpt.name and man["checkpoint_sha256"] == sha
    assert man["image_size"] == SIZE and man["opset"] >= 17
    assert man["vosfx_version"] == vosfx.__version__ and man["exported_at"]
    _, ob = backends
    for name, g in man["graphs"].items():
        assert hashlib.sha256((folder / g["file"]).read_bytes()).hexdigest() == g["sha256"]
        sess = ob._sess.get(name)
        if sess is None:  # opened when first used (onnx_backend.ON_FIRST_USE)
            import onnxruntime as ort

            sess = ort.InferenceSession(str(folder / g["file"]), providers=["CPUExecutionProvider"])
        assert [o.name for o in sess.get_outputs()] == [o["name"] for o in g["outputs"]]
        assert {i.name for i in sess.get_inputs()} == {i["name"] for i in g["inputs"]}
    dims = {i["name"]: i["shape"] for i in man["graphs"]["memory_attention"]["inputs"]}
    assert dims["memory"][0] == "num_tokens"  # the memory length stays dynamic
    assert dims["memory"][1] == "batch"  # several objects of a frame in one call
    assert dims["key_scale"] == ["batch", "num_tokens"]  # SAM2Long's key scales


def test_each_stage_keeps_its_weights_once_on_disk(bundle, backends):
    """Every graph's weights sit in ``<stage>.bin`` beside it, and the variants that keep them
    as they are (the cpu one, the parts cut at the attentions) read that file: no initializer
    or constant of theirs past the inline limit is held in the graph file itself."""
    import onnx

    _, _, folder = bundle
    man = json.loads((folder / "manifest.json").read_text())
    shared = [g["file"] for g in man["graphs"].values()]
    for variant in ("cpu", "parts"):
        shared += list(man["variants"][variant].values())
    assert len(shared) > 12
    for file in shared:
        model = onnx.load(str(folder / file), load_external_data=False)
        tensors = list(model.graph.initializer) + [
            a.t
            for n in model.graph.node
            for a in n.attribute
            if a.type == onnx.AttributeProto.TENSOR
        ]
        inline = [
            t.name for t in tensors if t.raw_data and len(t.raw_data) >= export.WEIGHTS_INLINE_BELOW
        ]
        assert not inline, (file, inline[:3])
        places = {
            e.value
            for t in tensors
            if t.data_location == onnx.TensorProto.EXTERNAL
            for e in t.external_data
            if e.key == "location"
        }
        stage = file.split(".")[0]
        assert places <= {f"{stage}.bin"}, (file, places)
    weights = sum(p.stat().st_size for p in folder.glob("*.bin"))
    graphs = sum((folder / f).stat().st_size for f in shared)
    assert graphs < weights / 20, (graphs, weights)


def test_find_bundle_by_hash_and_size(bundle, tmp_path):
    _, sha, folder = bundle
    name = "x"
    assert export.find_bundle(name, sha, SIZE, folder) == folder
    assert export.find_bundle(name, "0" * 64, SIZE, folder) is None  # checkpoint changed
    assert export.find_bundle(name, sha, 1024, folder) is None
    assert export.find_bundle(name, sha, SIZE, tmp_path) is None
    assert export.bundle_dir("m", sha, 512).name == f"m-{sha[:8]}-512"


def test_export_reuses_bundle_and_rebuilds_on_new_checkpoint(
    bundle, tmp_path, monkeypatch, config_home
):
    ckpt, _, folder = bundle

    class Rebuilt(Exception):
        pass

    def fail(*_a, **_k):
        raise Rebuilt

    monkeypatch.setattr(export, "_export_graphs", fail)
    # up to date: returned as is, nothing exported
    assert export.export_bundle(str(ckpt), out_dir=folder, image_size=SIZE) == folder
    # another checkpoint (other hash) into the cache: a new bundle is exported
    from tests.ckpt import make_checkpoint

    other, other_sha = make_checkpoint(tmp_path / "other.pt", seed=1)
    assert export.bundle_for_config(_Cfg(str(other))) is None
    with pytest.raises(Rebuilt):
        export.export_bundle(str(other), image_size=SIZE)
    assert not export.bundle_dir("other.pt", other_sha, SIZE).exists()


class _Cfg:
    def __init__(self, checkpoint: str) -> None:
        self.checkpoint, self.name, self.image_size, self.precision = checkpoint, "", SIZE, "fp32"


def test_cli_models_export(bundle):
    from click.testing import CliRunner

    from vosfx.cli import cli

    ckpt, _, folder = bundle
    res = CliRunner().invoke(
        cli, ["models", "export", str(ckpt), "--out", str(folder), "--image-size", str(SIZE), "-q"]
    )
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(folder)


def test_bad_variant_is_refused(bundle):
    from vosfx.errors import ModelError

    ckpt, _, folder = bundle
    with pytest.raises(ModelError, match="fp16, int8"):
        export.export_bundle(str(ckpt), out_dir=folder, image_size=SIZE, variants=("int4",))


def test_share_constants_keeps_one_copy_of_equal_tensors_and_the_same_outputs():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from vosfx.engine.export_constants import share_constants

    rng = np.random.default_rng(0)
    table = rng.standard_normal((64, 8)).astype(np.float32)
    other = rng.standard_normal((64, 8)).astype(np.float32)

    def const(name, arr):  # the TorchScript exporter's unfolded buffers are Constant nodes
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr))

    nodes = [
        const("c0", table),
        const("c1", table),  # the same buffer, used by another module
        const("small", np.full(8, 2.0, np.float32)),  # small: stays a node
        helper.make_node("Mul", ["x", "c0"], ["a"]),
        helper.make_node("Mul", ["a", "c1"], ["b"]),
        helper.make_node("Add", ["b", "i0"], ["c"]),
        helper.make_node("Add", ["c", "i1"], ["d"]),
        helper.make_node("Sub", ["d", "i2"], ["e"]),
        helper.make_node("Mul", ["e", "small"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(other, "i0"),
        numpy_helper.from_array(other, "i1"),  # equal to i0
        numpy_helper.from_array(table, "i2"),  # equal to the Constants
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = {"x": rng.standard_normal((64, 8)).astype(np.float32)}

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, x
        )[0]

    before = run(model)
    # the 2 big Constants become initializers, then i1 (= i0), c0 and c1 (= i2) are dropped
    assert share_constants(model) == 5
    onnx.checker.check_model(model)
    assert sorted(i.name for i in model.graph.initializer) == ["i0", "i2"]
    assert [n.op_type for n in model.graph.node].count("Constant") == 1
    np.testing.assert_array_equal(run(model), before)
    assert share_constants(model) == 0  # nothing left to share


def test_shipped_templates_hold_each_tensor_once():
    from vosfx.engine.template import TEMPLATES

    for folder in sorted(p for p in TEMPLATES.iterdir() if p.is_dir()):
        meta = json.loads((folder / "template.json").read_text())
        for name, g in meta["graphs"].items():
            offsets = [row[3] for row in g["initializers"]]
            assert len(offsets) == len(set(offsets)), (folder.name, name)


# --- export's folder: what it replaces, what a failure leaves ---------------------------------


@pytest.fixture
def no_torch_export(tmp_path, monkeypatch, config_home):
    """export_bundle over a stand-in checkpoint file, with loading stubbed: the folder logic
    runs in milliseconds. Returns the checkpoint path."""
    ckpt = tmp_path / "stand_in.pt"
    ckpt.write_bytes(b"not a real checkpoint")
    monkeypatch.setattr(export, "_load", lambda *_a: object())
    return ckpt


def test_export_refuses_an_out_folder_holding_other_files(no_torch_export, tmp_path, monkeypatch):
    def fail(*_a, **_k):
        raise AssertionError("exported although the folder holds the user's files")

    monkeypatch.setattr(export, "_export_graphs", fail)
    desk = tmp_path / "desk"
    desk.mkdir()
    (desk / "notes.txt").write_text("precious")
    from vosfx.errors import OutputError

    with pytest.raises(OutputError, match=r"--out .*desk.*notes\.txt"):
        export.export_bundle(str(no_torch_export), out_dir=desk, image_size=SIZE)
    assert (desk / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt])
def test_a_failed_export_leaves_no_partial_bundle(no_torch_export, tmp_path, monkeypatch, failure):
    def half_written(net, folder, say):
        (folder / "image_encoder.onnx").write_bytes(b"\0" * 1000)
        raise failure

    monkeypatch.setattr(export, "_export_graphs", half_written)
    out = tmp_path / "bundle"
    from vosfx.errors import OutputError

    expected = OutputError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as err:
        export.export_bundle(str(no_torch_export), out_dir=out, image_size=SIZE)
    if expected is OutputError:
        assert "No space left on device" in str(err.value) and str(out) in str(err.value)
    assert not out.with_name("bundle.partial").exists() and not out.exists()


def test_a_bundle_the_cache_cannot_hold_is_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("VOSFX_HOME", str(blocker / "cache"))  # not writable, even as root
    model = _Cfg("")
    model.name = "sam2.1-tiny"
    from vosfx.errors import OutputError

    with pytest.raises(OutputError, match=r"model cache .*set VOSFX_HOME.*--image-size 256"):
        export.ensure_bundle_for_config(model)


def test_cancel_stops_a_first_use_export_between_stages(no_torch_export, monkeypatch):
    import threading

    from vosfx.config import ModelConfig
    from vosfx.engine import load_engine, template
    from vosfx.errors import Cancelled

    def stages(net, folder, say):
        say("exporting image_encoder")
        raise AssertionError("the export went on after Ctrl-C")

    monkeypatch.setattr(template, "bundle_from_template", lambda *_a: None)
    monkeypatch.setattr(export, "_export_graphs", stages)
    cancel = threading.Event()
    cancel.set()
    model = ModelConfig(checkpoint=str(no_torch_export), backend="onnx", image_size=SIZE)
    with pytest.raises(Cancelled, match="first-use ONNX export; nothing was kept"):
        load_engine(model, cancel=cancel)
    from vosfx.engine.bundle import bundle_root

    assert not list(bundle_root().glob("*.partial"))


def test_two_exports_of_one_bundle_take_turns(no_torch_export, tmp_path, monkeypatch):
    """`vosfx models export` beside a first-use export (or two of one model and size) shared
    one .partial folder: the second's rmtree deleted the first's graphs mid-export. The export
    now holds the bundle's lock; the one that waited finds the bundle made."""
    import threading

    from vosfx.files import exclusive_lock

    out = tmp_path / "bundle"
    lock = out.with_name("bundle.lock")
    inside, release, exports, tried = threading.Event(), threading.Event(), [], []

    def graphs(net, folder, say):
        exports.append(folder)

        # the lock is held while the graphs are written: another thread cannot take it
        def try_lock():
            try:
                with exclusive_lock(lock, blocking=False):
                    tried.append("taken")
            except BlockingIOError:
                tried.append("refused")

        probe = threading.Thread(target=try_lock)
        probe.start()
        probe.join(5)
        inside.set()
        assert release.wait(10)
        return {}

    monkeypatch.setattr(export, "_export_graphs", graphs)
    monkeypatch.setattr(export, "_write_constants", lambda net, folder: None)
    monkeypatch.setattr(export, "_manifest", lambda *a: {"format": export.BUNDLE_FORMAT})
    monkeypatch.setattr(
        export, "find_bundle", lambda *a: out if (out / "manifest.json").exists() else None
    )
    first = threading.Thread(
        target=export.export_bundle, args=(str(no_torch_export),), kwargs={"out_dir": out}
    )
    first.start()
    assert inside.wait(10)
    second: list = []
    waiter = threading.Thread(
        target=lambda: second.append(export.export_bundle(str(no_torch_export), out_dir=out))
    )
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # waiting for the first, not writing beside it
    release.set()
    first.join(10)
    waiter.join(10)
    assert tried == ["refused"]
    assert second == [out] and len(exports) == 1  # the second found the first's bundle

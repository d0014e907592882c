"""The bundle's ``cpu`` variant: memory attention's attentions as query blocks, one object at a
time (vosfx/engine/ort_attention.py). The rewrite equals ONNX Runtime's fused attention on any
block split and object count, leaves what it cannot rewrite alone, and the backend runs the
variant on the CPU provider (the parity of that graph with the torch stage is in
tests/test_export.py, which runs the backend's default)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from vosfx.engine.ort_attention import block_rows, max_keys, query_blocks


@pytest.mark.parametrize(
    "queries,keys,score_bytes,rows",
    [
        (4096, 28736, 64 << 20, 512),  # 1024 px, 7 memories + 16 pointers: 59 MB a block
        (1024, 7232, 64 << 20, 1024),  # 512 px: one block
        (4096, 4096, 64 << 20, 4096),  # a self-attention at 1024: one block
        (100, 50, 1 << 10, 16),  # never under 16 rows
        (100, 50, 1 << 14, 64),
    ],
)
def test_block_rows(queries, keys, score_bytes, rows):
    assert block_rows(queries, keys, score_bytes) == rows
    assert rows == min(queries, rows) and (rows == 16 or rows * keys * 4 <= score_bytes)


def test_max_keys_counts_every_memory_and_pointer_token():
    attrs = {"hidden_dim": 256, "mem_dim": 64, "num_maskmem": 7, "max_obj_ptrs": 16}
    assert max_keys({"attrs": attrs}, 4096) == 7 * 4096 + 4 * 16


def _mha_model(queries: int, channels: int, v_channels: int, heads: int = 1, scale=None):
    from onnx import TensorProto, helper

    attrs = {"num_heads": heads} | ({"scale": scale} if scale is not None else {})
    node = helper.make_node(
        "MultiHeadAttention", ["q", "k", "v"], ["o"], "mha", domain="com.microsoft", **attrs
    )
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("q", f32, ["batch", queries, channels]),
            helper.make_tensor_value_info("k", f32, ["batch", "keys", channels]),
            helper.make_tensor_value_info("v", f32, ["batch", "keys", v_channels]),
        ],
        [helper.make_tensor_value_info("o", f32, None)],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("objects", [1, 3])
@pytest.mark.parametrize("keys", [5, 77])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_query_blocks_equal_the_fused_attention(objects, keys, scale):
    """100 queries in blocks of at most 16 rows (7 blocks of 15 or 14: uneven), per object."""
    rng = np.random.default_rng(objects * 100 + keys)
    feeds = {
        "q": rng.standard_normal((objects, 100, 32), np.float32),
        "k": rng.standard_normal((objects, keys, 32), np.float32),
        "v": rng.standard_normal((objects, keys, 8), np.float32),
    }
    fused = _mha_model(100, 32, 8, scale=scale)
    want = _run(fused, feeds)
    blocked = _mha_model(100, 32, 8, scale=scale)
    assert query_blocks(blocked, most_keys=keys, score_bytes=16 * keys * 4) == 1
    ops = [n.op_type for n in blocked.graph.node]
    assert ops == ["Scan"]
    body = blocked.graph.node[0].attribute[0].g
    sizes = next(i for i in body.initializer if i.name.endswith("sizes"))
    assert onnx.numpy_helper.to_array(sizes).tolist() == [15, 15, 14, 14, 14, 14, 14]
    got = _run(blocked, feeds)
    assert got.shape == want.shape == (objects, 100, 8)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)


def _vnni() -> bool:
    """Whether this CPU's uint8 x int8 products are exact (the int8 tier's int8 weights)."""
    from vosfx.engine.cpu_features import int8_weights

    return int8_weights() == "s8"


@pytest.mark.parametrize("offset", [0.0, 40.0])
@pytest.mark.parametrize("opset", [17, 18])
def test_int8_scores_stay_within_int8_rounding_of_the_attention(offset, opset):
    """The int8 tier's scores (``int8_scores``): 100 queries in 7 blocks against 300 keys,
    the keys with and without a common offset (their mean taken out, it costs no range), in
    the exporter's opset and in one where ReduceMean takes its axes as an input. Random
    queries and keys of unit variance make a peaked attention, int8's hardest case: the
    output stays within 2 % (relative L2) of float32's (1.1-1.4 % measured; bfloat16 operands
    0.29 % without the offset, 6.9 % with it); the keys quantised at their raw range would be
    4x further off with the offset (9.4 %)."""
    rng = np.random.default_rng(int(offset) + opset)
    feeds = {
        "q": rng.standard_normal((2, 100, 32), np.float32),
        "k": (rng.standard_normal((2, 300, 32)) + offset).astype(np.float32),
        "v": rng.standard_normal((2, 300, 8), np.float32),
    }
    want = _run(_mha_model(100, 32, 8), feeds)
    model = _mha_model(100, 32, 8)
    model.opset_import[0].version = opset
    assert query_blocks(model, most_keys=300, score_bytes=16 * 300 * 4, int8_scores=True) == 1
    body = model.graph.node[0].attribute[0].g
    ops = [n.op_type for n in body.node]
    assert ops.count("MatMulInteger") == ops.count("DynamicQuantizeLinear") == 7
    assert ops.count("QuantizeLinear") == 1 and "MatMul" in ops  # the keys once; the values
    got = _run(model, feeds)
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    print(f"int8 scores, keys offset by {offset}: relative L2 {err:.5f}")
    if not _vnni():
        return  # built and run; this CPU's uint8 x int8 products saturate (the tier's u8 case)
    assert err < 0.02, err
    if offset:  # the keys quantised at their raw range, their mean left in
        assert _raw_keys_error(feeds, want) > 4 * err


def _raw_keys_error(feeds, want, centred: bool = False) -> float:
    """The relative L2 error of int8 scores with the keys quantised at their raw range (numpy:
    what the mean's removal avoids), or (``centred``) less their mean but with no balancing
    of the channels: the keys at one scale, the queries at theirs."""
    q, k, v = (feeds[n].astype(np.float64) for n in ("q", "k", "v"))
    q = q / np.sqrt(q.shape[-1])
    if centred:
        k = k - k.mean(1, keepdims=True)
    qs = np.abs(q).max(axis=(1, 2), keepdims=True) / 127
    ks = np.abs(k).max(axis=(1, 2), keepdims=True) / 127
    s = np.einsum("bqc,bkc->bqk", np.round(q / qs), np.round(k / ks)) * qs * ks
    p = np.exp(s - s.max(-1, keepdims=True))
    got = (p / p.sum(-1, keepdims=True)) @ v
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("opset", [17, 18])
def test_int8_scores_balance_channels_scaled_against_each_other(opset):
    """Channels of the queries multiplied by a factor and the keys' same channels divided by
    it leave the attention as it was: by powers of two the balancing takes the factors back
    out exactly (the same output); by 30 the error stays near the isotropic operands'; int8
    at one scale per side without the balancing (numpy) is far off."""
    rng = np.random.default_rng(opset)
    feeds = {
        "q": rng.standard_normal((2, 100, 32), np.float32),
        "k": rng.standard_normal((2, 300, 32), np.float32),
        "v": rng.standard_normal((2, 300, 8), np.float32),
    }
    model = _mha_model(100, 32, 8)
    model.opset_import[0].version = opset
    assert query_blocks(model, most_keys=300, score_bytes=16 * 300 * 4, int8_scores=True) == 1
    want = _run(_mha_model(100, 32, 8), feeds)
    iso = _run(model, feeds)

    def error(got) -> float:
        return float(np.linalg.norm(got - want) / np.linalg.norm(want))

    s = np.ones(32, np.float32)
    s[3], s[11] = 32.0, 1 / 16
    powers = _run(model, {**feeds, "q": feeds["q"] * s, "k": feeds["k"] / s})
    np.testing.assert_allclose(powers, iso, rtol=0, atol=1e-6)
    s[3], s[11] = 30.0, 1 / 30
    scaled = {**feeds, "q": feeds["q"] * s, "k": feeds["k"] / s}
    got = _run(model, scaled)
    if not _vnni():
        return  # built and run; this CPU's uint8 x int8 products saturate (the tier's u8 case)
    # measured: 0.012-0.014 isotropic, 0.012-0.014 scaled, 0.33-0.38 without the balancing
    assert error(got) < 1.5 * error(iso) and _raw_keys_error(
        scaled, want, centred=True
    ) > 3 * error(iso), (
        error(iso),
        error(got),
        _raw_keys_error(scaled, want, centred=True),
    )


def test_int8_scores_of_zero_queries_or_equal_keys_are_a_uniform_attention():
    """Queries of zeros (DynamicQuantizeLinear's empty range) or keys all equal (no range
    after the mean): zero scores, the values' mean, no NaN."""
    model = _mha_model(20, 16, 4)
    query_blocks(model, most_keys=30, int8_scores=True)
    rng = np.random.default_rng(3)
    v = rng.standard_normal((1, 30, 4), np.float32)
    for q, k in [
        (np.zeros((1, 20, 16), np.float32), rng.standard_normal((1, 30, 16), np.float32)),
        (rng.standard_normal((1, 20, 16), np.float32), np.full((1, 30, 16), 2.5, np.float32)),
    ]:
        got = _run(model, {"q": q, "k": k, "v": v})
        np.testing.assert_allclose(
            got, np.broadcast_to(v.mean(1, keepdims=True), got.shape), atol=1e-5
        )


def test_what_the_rewrite_cannot_take_is_left_alone():
    two_heads = _mha_model(100, 32, 32, heads=2)
    assert query_blocks(two_heads, most_keys=50) == 0
    assert [n.op_type for n in two_heads.graph.node] == ["MultiHeadAttention"]
    dynamic = _mha_model(100, 32, 8)
    dynamic.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "queries"
    assert query_blocks(dynamic, most_keys=50) == 0


@pytest.fixture(scope="module")
def bundle():
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.onnx_bundle import exported

    return exported()


SIZE = 256  # tests.onnx_bundle's


def _feeds(folder, objects: int, memories: int, pointers: int) -> dict:
    man = json.loads((folder / "manifest.json").read_text())
    g = int(man["image_size"]) // 16
    tokens = memories * g * g + 4 * pointers
    rng = np.random.default_rng(objects)
    f32 = np.float32
    return {
        "vision_feat": rng.standard_normal((1, 256, g, g), f32),
        "vision_pos": rng.standard_normal((1, 256, g, g), f32),
        "memory": rng.standard_normal((tokens, objects, 64), f32),
        "memory_pos": rng.standard_normal((tokens, objects, 64), f32),
        "num_obj_ptr_tokens": np.array(4 * pointers, np.int64),
        "key_scale": rng.uniform(0.5, 1.5, (objects, tokens)).astype(f32),
    }


def test_the_cpu_provider_runs_the_query_blocks_and_fused_is_kept_on_request(bundle):
    from vosfx.engine.onnx_backend import OnnxBackend

    _, _, folder = bundle
    man = json.loads((folder / "manifest.json").read_text())
    assert man["variants"]["cpu"] == {"memory_attention": "memory_attention.cpu.onnx"}
    blocks = OnnxBackend(folder, device="cpu", threads=2, attention="split")
    fused = OnnxBackend(folder, device="cpu", threads=2, attention="fused")
    said = blocks.runtime()["stages"]["memory_attention"]
    assert said == "onnxruntime CPUExecutionProvider, attention in query blocks"
    assert fused.runtime()["stages"]["memory_attention"] == "onnxruntime CPUExecutionProvider"
    ops = {n.op_type for n in onnx.load(str(folder / "memory_attention.cpu.onnx")).graph.node}
    assert "Scan" in ops and "MultiHeadAttention" not in ops
    for objects, memories, pointers in [(1, 1, 0), (3, 7, 16)]:
        feeds = _feeds(folder, objects, memories, pointers)
        want = fused._run("memory_attention", feeds)[0]
        got = blocks._run("memory_attention", feeds)[0]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_an_older_bundle_gets_the_variant_once_and_split_without_it_is_refused(bundle, tmp_path):
    from vosfx.engine.export import export_bundle
    from vosfx.engine.onnx_backend import OnnxBackend
    from vosfx.errors import BackendError

    ckpt, _, folder = bundle
    old = _older(folder, tmp_path / "old")
    # a bundle of an older vosfx still runs (fused), but cannot be asked for query blocks
    assert (
        "query blocks" not in OnnxBackend(old, device="cpu").runtime()["stages"]["memory_attention"]
    )
    with pytest.raises(BackendError, match=r"attention split: expected the bundle .* cpu variant"):
        OnnxBackend(old, device="cpu", attention="split")
    # reusing it adds the variant, without exporting again
    export_bundle(str(ckpt), out_dir=old, image_size=SIZE)
    again = json.loads((old / "manifest.json").read_text())
    assert again["variants"]["cpu"] == {"memory_attention": "memory_attention.cpu.onnx"}
    assert (old / "memory_attention.cpu.onnx").is_file()


def _older(folder, dest):
    """A copy of the bundle ``folder`` as an older vosfx left it: no cpu or parts variant."""
    old = shutil.copytree(folder, dest)
    man = json.loads((old / "manifest.json").read_text())
    del man["variants"]["cpu"]
    for file in man["variants"].pop("parts").values():
        (old / file).unlink()
    (old / "manifest.json").write_text(json.dumps(man))
    (old / "memory_attention.cpu.onnx").unlink()
    return old


@pytest.mark.parametrize("writable", [True, False])
def test_first_use_adds_the_variant_to_an_older_cached_bundle_where_it_can(
    bundle, config_home, monkeypatch, writable
):
    """The loader's path (ensure_bundle_for_config): a cached bundle of an older vosfx gets
    the variant once; a cache it cannot write is used as it is (no error, the fused op)."""
    from vosfx.config import ModelConfig
    from vosfx.engine import export
    from vosfx.engine.bundle import bundle_dir

    ckpt, sha, folder = bundle
    cached = _older(folder, bundle_dir(ckpt.name, sha, SIZE))
    monkeypatch.setattr(export, "_writable", lambda _folder: writable)
    got = export.ensure_bundle_for_config(ModelConfig(checkpoint=str(ckpt), image_size=SIZE))
    assert got == cached
    variants = json.loads((cached / "manifest.json").read_text())["variants"]
    assert ("cpu" in variants) == ("parts" in variants) == writable
    assert (cached / "memory_attention.cpu.onnx").is_file() == writable
    assert (cached / "memory_attention.part8.onnx").is_file() == writable


def test_int8_scores_of_the_real_memory_attention_stay_near_float32(bundle):
    """The int8 tier's memory attention (the architecture's graph at 256, query blocks with
    int8 scores, as the int8 variant writes it) against the float32 query blocks, one object
    with one memory and three objects with the full bank: within 0.5 % (relative L2)."""
    from vosfx.engine.ort_attention import INT8_FILES, write_variant

    _, _, folder = bundle
    man = json.loads((folder / "manifest.json").read_text())
    files = write_variant(folder, man["graphs"]["memory_attention"]["file"], man, int8_scores=True)
    assert files == INT8_FILES
    path = folder / files["memory_attention"]
    int8 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ops = {
        n.op_type
        for s in onnx.load(str(path)).graph.node
        for a in s.attribute
        if a.g.node
        for n in a.g.node
    }
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    blocks = ort.InferenceSession(
        str(folder / "memory_attention.cpu.onnx"), providers=["CPUExecutionProvider"]
    )
    names = {i.name for i in int8.get_inputs()}
    for objects, memories, pointers in [(1, 1, 0), (3, 7, 16)]:
        feeds = {k: v for k, v in _feeds(folder, objects, memories, pointers).items() if k in names}
        want, got = blocks.run(None, feeds)[0], int8.run(None, feeds)[0]
        err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        print(f"{objects} objects, {memories} memories: int8 scores relative L2 {err:.5f}")
        if _vnni():
            assert err < 0.005, err

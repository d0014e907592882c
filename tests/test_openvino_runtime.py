"""OpenVINO sessions (the bf16 tier): the C heap's free pages handed back after every call (its
resident memory stays flat in clip length; the trim itself: tests/test_heap.py), float16
weights compiled where asked (issue 17 item 3), and attention split into query blocks where
asked, computing the same (item 2; which CPUs get it: tests/test_precision.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vosfx.engine import openvino_runtime as ovr


def _graph(path):
    """y = x @ w with a dynamic row count: a new shape on every call of the test."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(8, dtype=np.float32) * 2, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_every_openvino_call_releases_the_free_heap(tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    calls = []
    monkeypatch.setattr(ovr, "release_free_heap", lambda: calls.append(1))
    sess = ovr.OvSession(
        ovr.core("fp32"), _graph(tmp_path / "g.onnx"), ["x"], precision="f32", threads=1
    )
    for n in (1, 5, 5, 3):
        x = np.arange(n * 8, dtype=np.float32).reshape(n, 8)
        (y,) = sess.run(None, {"x": x})
        np.testing.assert_allclose(y, 2 * x)
    assert len(calls) == 4


def _constant_types(model) -> set[str]:
    return {
        op.get_output_element_type(0).get_type_name()
        for op in model.get_ops()
        if op.get_type_name() == "Constant"
    }


def test_float16_weights_are_compressed_and_compute_the_same(tmp_path, monkeypatch):
    """A session asked for float16 weights compiles them so (100 MiB less for the bf16 tier's
    image encoder at 1024); the others keep them float32."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    path = _graph(tmp_path / "g.onnx")
    model = ov.Core().read_model(str(path))
    assert _constant_types(model) == {"f32"}
    ovr.compress_weights(model)
    assert "f16" in _constant_types(model)
    # the weights decompress to float32 where they are used: the graph computes the same
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    np.testing.assert_array_equal(compiled([x])[compiled.outputs[0]], 2 * x)

    compressed = []
    real = ovr.compress_weights
    monkeypatch.setattr(ovr, "compress_weights", lambda m: (compressed.append(m), real(m)))
    ovr.OvSession(ov.Core(), path, ["x"], precision="f32", threads=1)
    ovr.OvSession(ov.Core(), path, ["x"], precision="bf16", threads=1)
    assert compressed == []
    sess = ovr.OvSession(ov.Core(), path, ["x"], precision="f32", threads=1, float16_weights=True)
    assert len(compressed) == 1 and sess.float16_weights
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], 2 * x)


def _attention_graph(path, queries: int):
    """ONNX Runtime's fused one-head attention (what vosfx's exporter writes), a dynamic key
    count; OpenVINO reads it as one ``ScaledDotProductAttention``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def arg(name, *shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

    node = helper.make_node(
        "MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=1
    )
    graph = helper.make_graph(
        [node],
        "g",
        [arg("q", 1, queries, 8), arg("k", 1, "n", 8), arg("v", 1, "n", 4)],
        [arg("y", 1, queries, 4)],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return path


def _attention(q, k, v):
    s = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("queries,blocks", [(12, 4), (13, 4), (3, 8)])
def test_split_attention_computes_the_same_attention(tmp_path, queries, blocks):
    """The blocks (near-equal where ``queries`` does not divide, no more than the queries)
    give the attention the fused op gives, whatever the key count of the call."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    path = _attention_graph(tmp_path / "a.onnx", queries)
    model = ov.Core().read_model(str(path))
    before = [op.get_type_name() for op in model.get_ops()]
    assert before.count("ScaledDotProductAttention") == 1
    assert ovr.split_attention(model, blocks) == 1
    kinds = [op.get_type_name() for op in model.get_ops()]
    assert "ScaledDotProductAttention" not in kinds
    assert kinds.count("Softmax") == min(blocks, queries)
    # the keys transposed once for every block
    assert kinds.count("Transpose") == before.count("Transpose") + 1

    sess = ovr.OvSession(
        ov.Core(), path, ["q", "k", "v"], precision="f32", threads=1, attention_blocks=blocks
    )
    assert sess.attention_blocks == blocks and sess._config["SNIPPETS_MODE"] == "DISABLE"
    rng = np.random.default_rng(0)
    for keys in (5, 17):
        q = rng.standard_normal((1, queries, 8)).astype(np.float32)
        k = rng.standard_normal((1, keys, 8)).astype(np.float32)
        v = rng.standard_normal((1, keys, 4)).astype(np.float32)
        (y,) = sess.run(None, {"q": q, "k": k, "v": v})
        np.testing.assert_allclose(y, _attention(q, k, v), rtol=1e-5, atol=1e-6)


def test_attention_is_left_whole_unless_asked(tmp_path):
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    path = _attention_graph(tmp_path / "a.onnx", 12)
    sess = ovr.OvSession(ov.Core(), path, ["q", "k", "v"], precision="f32", threads=1)
    assert sess.attention_blocks == 0 and "SNIPPETS_MODE" not in sess._config
    # left as they are: a dynamic query count, a mask that is not zeros, a causal attention
    model = ov.Core().read_model(str(path))
    model.reshape({"q": ov.PartialShape([1, -1, 8])})
    assert ovr.split_attention(model, 4) == 0
    import openvino.opset13 as ops

    q, k, v = (ops.parameter([1, 1, n, 8], np.float32) for n in (12, -1, -1))
    for mask, causal in ((np.ones((1, 1, 12, 1), np.float32), False), (None, True)):
        extra = [] if mask is None else [ops.constant(mask)]
        out = ops.scaled_dot_product_attention(q, k, v, *extra, causal=causal)
        assert ovr.split_attention(ov.Model([out], [q, k, v]), 4) == 0
    zero = ops.scaled_dot_product_attention(q, k, v, ops.constant(np.zeros((), np.float32)))
    assert ovr.split_attention(ov.Model([zero], [q, k, v]), 4) == 1


@pytest.mark.parametrize(
    "text,amx",
    [
        ("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n", True),
        ("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n", False),
        ("processor\t: 0\n", False),
        (None, False),  # nothing to read (macOS, Windows)
    ],
)
def test_cpu_has_amx_reads_the_flags(tmp_path, text, amx):
    info = tmp_path / "cpuinfo"
    if text is not None:
        info.write_text(text)
    assert ovr.cpu_has_amx(info) is amx


def test_released_buffers_go_back_after_every_call(tmp_path):
    """``release_buffers``: the compiled graph's intermediate buffers are handed back after
    each call (the bf16 tier's two heavy stages where their weights stay float32) and the
    next call computes the same; without it they stay."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    path = _graph(tmp_path / "g.onnx")
    for asked in (True, False):
        sess = ovr.OvSession(
            ov.Core(), path, ["x"], precision="f32", threads=1, release_buffers=asked
        )
        compiled, request, outputs = sess._compiled[None]
        recording = _Recording(compiled)
        sess._compiled[None] = (recording, request, outputs)
        for n in (2, 2, 3):
            x = np.arange(n * 8, dtype=np.float32).reshape(n, 8)
            np.testing.assert_array_equal(sess.run(None, {"x": x})[0], 2 * x)
        assert sess.release_buffers is asked and recording.released == (3 if asked else 0)


class _Recording:
    """A compiled model whose ``release_memory`` calls are counted."""

    def __init__(self, compiled):
        self.compiled, self.released = compiled, 0

    def release_memory(self):
        self.released += 1
        self.compiled.release_memory()


def _qkv_graph(path, rows: int = 5):
    """Hiera's qkv projection in small: ``Gemm`` (as the exporter folds MatMul + Add), its
    output reshaped to (rows, 3, 2, 2) and split into three along the axis of 3."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((6, 12)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(12).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([rows, 3, 2, 2], np.int64), "shape"),
        numpy_helper.from_array(np.array([1, 1, 1], np.int64), "sizes"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["p"]),
        helper.make_node("Reshape", ["p", "shape"], ["r"]),
        helper.make_node("Split", ["r", "sizes"], ["q", "k", "v"], axis=1),
    ]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [rows, 1, 2, 2]) for n in "qkv"]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 6])], outs, inits
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_split_products_computes_each_part_as_its_own_product(tmp_path):
    """A product split into parts afterwards becomes one product per part, on that part's
    columns of the weights and bias (no split left for OpenVINO's reference kernel), and
    computes the same; a session asked for it does so."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    path = _qkv_graph(tmp_path / "qkv.onnx")
    model = ov.Core().read_model(str(path))
    kinds = [op.get_type_name() for op in model.get_ordered_ops()]
    assert kinds.count("MatMul") == 1 and "VariadicSplit" in kinds
    assert ovr.split_products(model) == 1
    live = [op.get_type_name() for op in model.get_ordered_ops()]
    assert live.count("MatMul") == 3
    assert "VariadicSplit" not in live and "Split" not in live

    x = np.random.default_rng(2).standard_normal((5, 6)).astype(np.float32)
    whole = ovr.OvSession(ov.Core(), path, ["x"], precision="f32", threads=1)
    parts = ovr.OvSession(
        ov.Core(), path, ["x"], precision="f32", threads=1, separate_products=True
    )
    assert parts.separate_products and not whole.separate_products
    expected = whole.run(None, {"x": x})
    for got, want in zip(parts.run(None, {"x": x}), expected, strict=True):
        assert got.shape == want.shape == (5, 1, 2, 2)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_split_products_leaves_other_splits(tmp_path):
    """A split whose input is no product with constant weights stays as it is."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array([5, 3, 2], np.int64), "shape"),
        numpy_helper.from_array(np.array([1, 1, 1], np.int64), "sizes"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "y"], ["p"]),
        helper.make_node("Reshape", ["p", "shape"], ["r"]),
        helper.make_node("Split", ["r", "sizes"], ["a", "b", "c"], axis=1),
    ]
    arg = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [arg("x", TensorProto.FLOAT, [5, 4]), arg("y", TensorProto.FLOAT, [4, 6])],
        [arg(n, TensorProto.FLOAT, [5, 1, 2]) for n in "abc"],
        inits,
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = ov.Core().read_model(str(path))
    assert ovr.split_products(model) == 0


def _record(sess) -> list:
    """Every compilation of ``sess`` from now on, and the one it holds, as :class:`_Recording`s
    (their ``release_memory`` calls counted); the list grows with each compilation."""
    made: list = []
    real = sess._compile_model

    def recorded(model):
        compiled, request, outputs = real(model)
        made.append(_Recording(compiled))
        return made[-1], request, outputs

    sess._compile_model = recorded
    for key, (compiled, request, outputs) in sess._compiled.items():
        made.append(_Recording(compiled))
        sess._compiled[key] = (made[-1], request, outputs)
    return made


@pytest.mark.parametrize("hold", [True, False])
def test_steady_shapes_compile_once_the_shapes_repeat(tmp_path, hold):
    """``steady_shapes``: the second call with the same input shapes compiles the graph with
    them fixed and the calls run it while they last, the dynamic form dropped (one form held);
    new shapes drop it for the dynamic form again. The steady form keeps its buffers between
    calls (``hold_steady_buffers``) where the dynamic one hands them back; under
    ``--low-memory`` both hand them back. Every call computes y = 2x."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    sess = ovr.OvSession(
        ov.Core(),
        _graph(tmp_path / "g.onnx"),
        ["x"],
        precision="f32",
        threads=1,
        release_buffers=True,
        steady_shapes=True,
        hold_steady_buffers=hold,
    )
    made = _record(sess)
    states, releases = [], []
    for n in (2, 3, 3, 3, 4, 3, 3):
        x = np.arange(n * 8, dtype=np.float32).reshape(n, 8)
        before = sum(r.released for r in made)
        (y,) = sess.run(None, {"x": x})
        np.testing.assert_array_equal(y, 2 * x)
        steady = sess._steady is not None
        assert len(sess._compiled) + steady == 1  # one form held
        assert sess.holds_steady == (steady and hold)
        states.append((steady, len(made) - 1))
        releases.append(sum(r.released for r in made) - before)
    # dynamic (compiled at start), dynamic, steady compiled, steady, dynamic compiled again,
    # dynamic, steady compiled again
    assert states == [
        (False, 0),
        (False, 0),
        (True, 1),
        (True, 1),
        (False, 2),
        (False, 2),
        (True, 3),
    ]
    kept = 0 if hold else 1
    assert releases == [1, 1, kept, kept, 1, 1, kept]


def test_calls_one_object_at_a_time_compile_no_steady_form_per_frame(tmp_path):
    """Two objects stepped one call each (the per-object calls) give runs of two calls with
    the same shapes while the memory grows: no steady form is compiled for each (nor the
    dynamic form again after it), only once the shapes outlast the runs before them."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    sess = ovr.OvSession(
        ov.Core(), _graph(tmp_path / "g.onnx"), ["x"], precision="f32", threads=1,
        steady_shapes=True,
    )  # fmt: skip
    made = _record(sess)
    states = []
    for n in (2, 2, 3, 3, 4, 4, 4, 4):  # frames of 2 objects; the memory full from the third
        x = np.arange(n * 8, dtype=np.float32).reshape(n, 8)
        (y,) = sess.run(None, {"x": x})
        np.testing.assert_array_equal(y, 2 * x)
        states.append((sess._steady is not None, len(made) - 1))
    # dynamic; steady (the first run: nothing came before it); dynamic compiled again, and
    # kept through the second frame and the third's two calls; steady at the run's third call
    assert states == [
        (False, 0),
        (True, 1),
        (False, 2),
        (False, 2),
        (False, 2),
        (False, 2),
        (True, 3),
        (True, 3),
    ]


def test_a_steady_form_keeps_the_encoders_buffers_too(tmp_path):
    """A session whose ``release_unless`` holds its steady form keeps its own buffers too
    (both are resident in its calls anyway); otherwise it hands them back."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    path = _graph(tmp_path / "g.onnx")
    attention, encoder = (
        ovr.OvSession(
            ov.Core(), path, ["x"], precision="f32", threads=1, release_buffers=True, **kw
        )
        for kw in ({"steady_shapes": True}, {})
    )
    encoder.release_unless = attention
    made = _record(encoder)
    x = np.ones((4, 8), np.float32)
    for rows, held in ((4, False), (4, True), (4, True), (5, False)):
        attention.run(None, {"x": np.ones((rows, 8), np.float32)})
        assert attention.holds_steady is held
        before = made[0].released
        np.testing.assert_array_equal(encoder.run(None, {"x": x})[0], 2 * x)
        assert made[0].released - before == (0 if held else 1)


def test_without_empties_the_stage_lists_for_the_block_only():
    """``without``: the benchmarks' earlier tiers are built with stage lists emptied, which
    come back afterwards, also when building fails."""
    steady, products = ovr.STEADY_SHAPES, ovr.SPLIT_PRODUCTS
    with ovr.without("STEADY_SHAPES"):
        assert ovr.STEADY_SHAPES == () and ovr.SPLIT_PRODUCTS == products
    assert ovr.STEADY_SHAPES == steady
    with pytest.raises(RuntimeError), ovr.without("STEADY_SHAPES", "SPLIT_PRODUCTS"):
        raise RuntimeError("a backend that fails to build")
    assert (ovr.STEADY_SHAPES, ovr.SPLIT_PRODUCTS) == (steady, products)
    kept = dict(ovr.FLOAT32_OPS)
    with ovr.without("FLOAT32_OPS"):  # a table empties to an empty table
        assert ovr.FLOAT32_OPS == {} and ovr.FLOAT32_OPS.get("image_encoder", ()) == ()
    assert ovr.FLOAT32_OPS == kept


def _pooled_attention_graph(path, heads: int, queries: int, keys: int = 16, depth: int = 24):
    """softmax(q k / sqrt(depth)) v with the queries arriving as (windows, queries, heads,
    depth) and transposed to (windows, heads, queries, depth), as Hiera's pooled queries."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    windows = 64
    nodes = [
        helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1, 3]),
        helper.make_node("Mul", ["qt", "scale"], ["qs"]),
        helper.make_node("MatMul", ["qs", "k"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),
    ]
    arg = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "attention",
        [
            arg("q", TensorProto.FLOAT, [windows, queries, heads, depth]),
            arg("k", TensorProto.FLOAT, [windows, heads, depth, keys]),
            arg("v", TensorProto.FLOAT, [windows, heads, keys, depth]),
        ],
        [arg("o", TensorProto.FLOAT, [windows, heads, queries, depth])],
        [numpy_helper.from_array(np.array(depth**-0.5, np.float32), "scale")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    rng = np.random.default_rng(3)
    feeds = {
        "q": 3 * rng.standard_normal((windows, queries, heads, depth)).astype(np.float32),
        "k": 3 * rng.standard_normal((windows, heads, depth, keys)).astype(np.float32),
        "v": rng.standard_normal((windows, heads, keys, depth)).astype(np.float32),
    }
    s = feeds["q"].transpose(0, 2, 1, 3) @ feeds["k"] * depth**-0.5
    p = np.exp(s - s.max(-1, keepdims=True))
    return path, feeds, (p / p.sum(-1, keepdims=True)) @ feeds["v"]


@pytest.mark.parametrize("heads,queries,guarded", [(4, 4, 1), (4, 8, 0), (2, 16, 0)])
def test_attention_transposes_over_equal_axes_are_kept_apart(tmp_path, heads, queries, guarded):
    """A Transpose before an attention that swaps two axes of one size (4 heads, 4 queries)
    is kept out of OpenVINO's attention kernel, which read such queries in the wrong order
    (82-90 % of the output's norm off, float32, OpenVINO 2026.4); others stay as they are.
    Every session compiles its graphs so, and computes the attention right."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    path, feeds, want = _pooled_attention_graph(tmp_path / "a.onnx", heads, queries)
    model = ov.Core().read_model(str(path))
    assert ovr.guard_attention_transposes(model) == guarded
    assert ovr.guard_attention_transposes(model) == 0  # once only
    sess = ovr.OvSession(ov.Core(), path, ["q", "k", "v"], precision="f32", threads=1)
    assert sess.guarded_transposes == guarded
    (got,) = sess.run(None, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_attention_transposes_with_dynamic_axes_wait_for_their_shapes(tmp_path):
    """With the axes dynamic the graph is left alone (OpenVINO computed it right so); once a
    session fixes the shapes (its steady form) the compiled form is guarded."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    onnx = pytest.importorskip("onnx")
    path, feeds, want = _pooled_attention_graph(tmp_path / "a.onnx", 4, 4)
    graph = onnx.load(str(path))
    graph.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "queries"
    graph.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "queries"
    onnx.save(graph, str(path))
    assert ovr.guard_attention_transposes(ov.Core().read_model(str(path))) == 0
    sess = ovr.OvSession(
        ov.Core(), path, ["q", "k", "v"], precision="f32", threads=1, steady_shapes=True
    )
    for _ in range(3):
        (got,) = sess.run(None, feeds)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert sess._steady is not None and sess.guarded_transposes == 1


def _conv_graph(path):
    """A 3x3 convolution of 8 channels to 8, then a product with constant weights."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "m"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("MatMul", ["c", "m"], ["y"]),
    ]
    arg = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [arg("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [arg("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _runtime_precisions(sess, kind: str) -> list[str]:
    compiled = next(iter(sess._compiled.values()))[0]
    return [
        op.get_rt_info()["runtimePrecision"].value
        for op in compiled.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].value == kind
    ]


def test_keep_float32_marks_the_chosen_operations_and_leaves_the_model(tmp_path):
    """The marked copy computes what the model computes, and the model is left unmarked."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    path = _conv_graph(tmp_path / "c.onnx")
    model = ov.Core().read_model(str(path))
    marked = ovr.keep_float32(model, ("Convolution",))
    for m, want in ((model, False), (marked, True)):
        convs = [op for op in m.get_ordered_ops() if op.get_type_name() == "Convolution"]
        assert len(convs) == 1
        assert ("DisablePrecisionConversion_0" in convs[0].get_rt_info()) == want
    x = np.random.default_rng(5).standard_normal((1, 8, 16, 16)).astype(np.float32)
    plain = ovr.OvSession(ov.Core(), path, ["x"], precision="f32", threads=1)
    kept = ovr.OvSession(
        ov.Core(), path, ["x"], precision="f32", threads=1, float32_ops=("Convolution",)
    )
    assert kept.float32_ops == ("Convolution",) and plain.float32_ops == ()
    np.testing.assert_array_equal(kept.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])


def test_keep_float32_runs_the_marked_operations_in_float32_under_bf16(tmp_path):
    """Compiled for bfloat16, the marked convolution runs in float32 and the others in
    bfloat16 (on a CPU with bfloat16 arithmetic; elsewhere OpenVINO runs all in float32)."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    caps = ovr.cpu_capabilities(ovr.core("fp32"))
    if "BF16" not in caps:
        pytest.skip(f"this CPU has no bfloat16 arithmetic (OpenVINO: {caps})")
    path = _conv_graph(tmp_path / "c.onnx")
    x = np.random.default_rng(5).standard_normal((1, 8, 16, 16)).astype(np.float32)
    plain = ovr.OvSession(ov.Core(), path, ["x"], precision="bf16", threads=1)
    kept = ovr.OvSession(
        ov.Core(), path, ["x"], precision="bf16", threads=1, float32_ops=("Convolution",)
    )
    assert _runtime_precisions(plain, "Convolution") == ["bf16"]
    assert _runtime_precisions(kept, "Convolution") == ["f32"]
    assert "bf16" in _runtime_precisions(kept, "FullyConnected") + _runtime_precisions(
        kept, "MatMul"
    )
    exact = ovr.OvSession(ov.Core(), path, ["x"], precision="f32", threads=1)
    (want,) = exact.run(None, {"x": x})
    errs = [float(np.abs(s.run(None, {"x": x})[0] - want).max()) for s in (plain, kept)]
    assert 0 < errs[1] < errs[0], errs


def test_keep_float32_without_a_temporary_folder_says_so(tmp_path, monkeypatch):
    """The marks go through a temporary folder: where it cannot be written the session gives
    the backend's error naming --precision bf16 and TMPDIR, not a traceback."""
    pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    import tempfile

    from vosfx.errors import BackendError

    path = _conv_graph(tmp_path / "c.onnx")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(BackendError, match=r"--precision bf16: could not write c\.onnx's graph"):
        ovr.OvSession(
            ovr.core("fp32"), path, ["x"], precision="f32", threads=1, float32_ops=("Convolution",)
        )


def _int8_case(rng, queries: int, keys: int, offset: float):
    """Queries and keys of one attention; the keys share ``offset`` in every feature."""
    q = 3 * rng.standard_normal((1, queries, 8)).astype(np.float32)
    k = (rng.standard_normal((1, keys, 8)) + offset).astype(np.float32)
    v = rng.standard_normal((1, keys, 4)).astype(np.float32)
    return {"q": q, "k": k, "v": v}


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize("offset", [0.0, 40.0])
def test_int8_scores_compute_the_attention_from_int8_queries_and_keys(tmp_path, offset, deferred):
    """Each block's scores run as an int8 product (the queries of the block and the keys
    quantised at their own scale on every call, whatever the key count) and the attention
    stays within int8's rounding of the exact one, also where the keys share a large offset
    (their mean taken out first); ``deferred``, the same with the blocks' normalisation after
    the values' product (no Softmax left: exponentials, their sums, one division each)."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    path = _attention_graph(tmp_path / "a.onnx", 12)
    sess = ovr.OvSession(
        ov.Core(),
        path,
        ["q", "k", "v"],
        precision="f32",
        threads=1,
        attention_blocks=3,
        int8_attention=True,
        deferred_normalisation=deferred,
    )
    assert sess.int8_products == 3
    compiled = next(iter(sess._compiled.values()))[0]
    kinds = [
        op.get_rt_info()["layerType"].value for op in compiled.get_runtime_model().get_ordered_ops()
    ]
    assert kinds.count("Softmax") == (0 if deferred else 3), kinds
    # the score products run on int8 operands (u8 or i8 by the plugin's choice)
    products = _runtime_precisions(sess, "MatMul")
    assert sorted(p for p in products if p in ("u8", "i8")) and len(products) == 6, products
    rng = np.random.default_rng(7)
    for keys in (5, 40, 300):
        feeds = _int8_case(rng, 12, keys, offset)
        want = _attention(feeds["q"], feeds["k"], feeds["v"])
        (got,) = sess.run(None, feeds)
        err = np.abs(got - want)
        # measured: max 0.011-0.029, mean 0.002-0.006 (bfloat16 queries and keys: max
        # 0.004-0.014 without the offset, 0.15-0.17 with it)
        assert 0 < err.max() < 0.05 and err.mean() < 0.01, (keys, err.max(), err.mean())
    # neither asked nor without blocks: no rewrite
    plain = ovr.OvSession(
        ov.Core(), path, ["q", "k", "v"], precision="f32", threads=1, attention_blocks=3
    )
    whole = ovr.OvSession(
        ov.Core(), path, ["q", "k", "v"], precision="f32", threads=1, int8_attention=True
    )
    assert plain.int8_products == 0 and whole.int8_products == 0


def _int8_scores_unbalanced(q, k, v, blocks: int) -> np.ndarray:
    """The int8 scores' attention in numpy as it was before the channels were balanced: the
    keys less their mean at one scale, each block of queries at its own."""
    q = q[0].astype(np.float64) / np.sqrt(q.shape[-1])
    keys = k[0].astype(np.float64) - k[0].mean(0)
    k_step = np.abs(keys).max() / 127
    outs = []
    for part in np.array_split(q, blocks):
        q_step = np.abs(part).max() / 127
        s = (np.rint(part / q_step) @ np.rint(keys / k_step).T) * q_step * k_step
        e = np.exp(s - s.max(-1, keepdims=True))
        outs.append((e / e.sum(-1, keepdims=True)) @ v[0])
    return np.concatenate(outs)[None]


def test_int8_scores_balance_channels_scaled_against_each_other(tmp_path):
    """Channels of the queries multiplied by a factor and the keys' same channels divided by
    it leave the attention as it was: by powers of two the int8 scores' balancing takes the
    factors back out exactly (the same output); by 30 its error stays near the isotropic
    operands'; quantised at one scale per side they would take the other channels' steps."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    sess = ovr.OvSession(
        ov.Core(),
        _attention_graph(tmp_path / "a.onnx", 12),
        ["q", "k", "v"],
        precision="f32",
        threads=1,
        attention_blocks=3,
        int8_attention=True,
    )
    assert sess.int8_products == 3
    # one power of two a channel for the three blocks: the keys quantised once, from the
    # queries of every block (what the blocks were split from)
    model = ov.Core().read_model(str(tmp_path / "a.onnx"))
    assert ovr.split_attention(model, 3) == 1 and ovr.int8_scores(model) == 3
    kinds = [op.get_type_name() for op in model.get_ordered_ops()]
    assert kinds.count("FakeQuantize") == 3 + 1 and kinds.count("Power") == 1, kinds
    rng = np.random.default_rng(13)
    feeds = _int8_case(rng, 12, 300, 0.0)
    want = _attention(feeds["q"], feeds["k"], feeds["v"])
    (iso,) = sess.run(None, feeds)
    base = np.abs(iso - want).max()
    s = np.ones(8, np.float32)
    s[2], s[5] = 32.0, 1 / 16
    (powers,) = sess.run(None, {**feeds, "q": feeds["q"] * s, "k": feeds["k"] / s})
    np.testing.assert_allclose(powers, iso, rtol=0, atol=1e-6)
    s[2], s[5] = 30.0, 1 / 30
    scaled = {**feeds, "q": feeds["q"] * s, "k": feeds["k"] / s}
    (got,) = sess.run(None, scaled)
    unbalanced = np.abs(_int8_scores_unbalanced(**scaled, blocks=3) - want).max()
    # measured: 0.060 isotropic, 0.041 scaled, 1.03 unbalanced
    assert np.abs(got - want).max() < 1.5 * base and unbalanced > 3 * base, (
        base,
        np.abs(got - want).max(),
        unbalanced,
    )


def test_int8_scores_take_the_keys_mean_out_and_survive_zero_operands():
    """The keys' common offset is taken out before quantising (the Softmax cancels it): the
    same graph without that step is far off; all-zero queries give the values' mean, not
    NaN."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    import openvino.opset13 as ops

    def graph(smooth: bool):
        q, k, v = (ops.parameter([1, -1, d], np.float32) for d in (8, 8, 4))
        scaled_q = ops.multiply(q, ops.constant(np.float32(8**-0.5)))
        scores = ops.matmul(scaled_q, k, False, True)
        out = ops.matmul(ops.softmax(scores, -1), v, False, False)
        model = ov.Model([out], [q, k, v])
        if not smooth:  # the keys' mean of a constant zero offset: the step does nothing
            return model
        assert ovr.int8_scores(model) == 1
        return model

    rng = np.random.default_rng(3)
    feeds = _int8_case(rng, 16, 64, 40.0)
    want = _attention(feeds["q"], feeds["k"], feeds["v"])
    core = ov.Core()
    smooth = core.compile_model(graph(True), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = smooth(list(feeds.values()))[smooth.outputs[0]]
    err = float(np.abs(got - want).max())
    # the same quantisation without the mean taken out (scratch of int8_scores' recipe)
    model = graph(False)
    (product,) = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"][:1]
    low, high = ops.constant(np.float32(-1)), ops.constant(np.float32(1))
    scales = []
    for i in (0, 1):
        x = product.input_value(i)
        rank = x.get_partial_shape().rank.get_length()
        s = ops.reduce_max(ops.abs(x), ops.constant(np.arange(rank, dtype=np.int64)), False)
        scales.append(s)
        product.input(i).replace_source_output(
            ops.fake_quantize(ops.divide(x, s), low, high, low, high, 255).output(0)
        )
    users = list(product.output(0).get_target_inputs())
    scaled = ops.multiply(product.output(0), ops.multiply(*scales)).output(0)
    for u in users:
        u.replace_source_output(scaled)
    raw = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    raw_err = float(np.abs(raw(list(feeds.values()))[raw.outputs[0]] - want).max())
    # measured: 0.043 against 0.254
    assert err < 0.06 and raw_err > 4 * err, (err, raw_err)
    feeds["q"][:] = 0
    got = smooth(list(feeds.values()))[smooth.outputs[0]]
    np.testing.assert_allclose(
        got[0], np.broadcast_to(feeds["v"][0].mean(0), got[0].shape), rtol=1e-5, atol=1e-5
    )


def test_deferred_normalisation_only_where_the_probabilities_weight_values():
    """``int8_scores(deferred=True)`` moves a block's normalisation past the values' product:
    the same attention as the Softmax form (the same int8 scores; only the division's place
    differs), all-zero queries still the values' mean; a Softmax whose probabilities are an
    output of their own keeps its Softmax (the scale multiplied in before it)."""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    import openvino.opset13 as ops

    def graph(probabilities_out: bool):
        q, k, v = (ops.parameter([1, -1, d], np.float32) for d in (8, 8, 4))
        scores = ops.matmul(ops.multiply(q, ops.constant(np.float32(8**-0.5))), k, False, True)
        probs = ops.softmax(scores, -1)
        outs = [ops.matmul(probs, v, False, False)] + ([probs] if probabilities_out else [])
        return ov.Model(outs, [q, k, v])

    def kinds(model):
        return [op.get_type_name() for op in model.get_ordered_ops()]

    core = ov.Core()
    rng = np.random.default_rng(11)
    feeds = _int8_case(rng, 16, 64, 0.0)
    want = _attention(feeds["q"], feeds["k"], feeds["v"])
    got = {}
    for deferred in (False, True):
        model = graph(False)
        assert ovr.int8_scores(model, deferred=deferred) == 1
        assert kinds(model).count("Softmax") == (0 if deferred else 1)
        assert kinds(model).count("ReduceSum") == (1 if deferred else 0)
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got[deferred] = compiled(list(feeds.values()))[compiled.outputs[0]]
        assert np.abs(got[deferred] - want).max() < 0.05
        zero = {**feeds, "q": np.zeros_like(feeds["q"])}
        mean = compiled(list(zero.values()))[compiled.outputs[0]]
        np.testing.assert_allclose(
            mean[0], np.broadcast_to(feeds["v"][0].mean(0), mean[0].shape), rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(got[True], got[False], rtol=1e-5, atol=1e-5)
    # the probabilities are an output too: the Softmax stays, its scores scaled before it
    model = graph(True)
    assert ovr.int8_scores(model, deferred=True) == 1
    assert kinds(model).count("Softmax") == 1 and "ReduceSum" not in kinds(model)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out, probs = (compiled(list(feeds.values()))[o] for o in compiled.outputs)
    np.testing.assert_allclose(out, got[False], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs.sum(-1), 1, rtol=1e-5)


def test_a_graph_openvino_cannot_compile_gives_the_backends_error(tmp_path, monkeypatch):
    """OpenVINO refusing a graph at compile time (at load, or a later batch or steady form)
    is the backend's error (exit 9) naming --precision bf16, the graph and OpenVINO's message
    on one line, not a traceback. (OpenVINO 2026.4 refuses the memory encoder's graph with its
    convolutions marked to stay float32: "object is not initialized".)"""
    ov = pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    from vosfx.errors import BackendError

    path = _graph(tmp_path / "g.onnx")
    core = ov.Core()

    def refuse(*_a, **_k):
        raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\nnot initialized\n")

    monkeypatch.setattr(core, "compile_model", refuse)
    with pytest.raises(BackendError) as info:
        ovr.OvSession(core, path, ["x"], precision="bf16", threads=1)
    said = str(info.value)
    assert said.startswith("--precision bf16: OpenVINO could not compile g.onnx for this CPU")
    assert "core.cpp:117: not initialized" in said and "\n" not in said
    assert said.endswith("use --precision fp32") and info.value.exit_code == 9

"""OpenVINO sessions (the bf16 tier): the C heap's free pages handed back after every call (its
resident memory stays flat in clip length; the trim itself: tests/test_heap.py) and float16
weights compiled where asked (issue 17 item 3)."""

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

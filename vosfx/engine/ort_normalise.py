"""SAM 2's input normalisation as a small ONNX graph, for the ONNX backend on a GPU.

:func:`~vosfx.engine.backend.preprocess` looks each uint8 value up in a (3, 256) table on the
CPU and hands the image encoder a float32 (1, 3, S, S) image. On a GPU provider that costs
the tracking thread the lookups (6-13 CPU ms a frame at 1024) and a 12 MiB upload from
pageable memory, on the thread that bounds a GPU render (docs/benchmarks/gpu.md). This graph
does the same lookup where the image encoder runs: the model-sized (S, S, 3) uint8 frame goes
up (3 MiB), a ``Gather`` in the same table makes the same float32 values, bit for bit, and
IOBinding passes them to the image encoder without a copy back.

The graph ships as ``templates/normalise.onnx`` (ONNX Runtime reads it without the
``onnx`` package); :func:`build` makes it (``GRAPH.write_bytes(build())`` writes it again;
tests/test_onnx_backend.py checks the shipped file is what :func:`build` makes).
"""

from __future__ import annotations

from vosfx.engine.template import TEMPLATES

GRAPH = TEMPLATES / "normalise.onnx"
INPUT, OUTPUT = "pixels", "image"  # (S, S, 3) uint8 -> (1, 3, S, S) float32
OPSET = 17


def build() -> bytes:
    """The serialised graph: ``Gather(table.flat, transpose(pixels) + [0, 256, 512])``,
    unsqueezed to a batch of one; the table is :func:`~vosfx.engine.backend.normalise_table`."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from vosfx.engine.backend import normalise_table

    table = numpy_helper.from_array(normalise_table().reshape(-1), "table")  # (768,)
    offsets = numpy_helper.from_array(np.array([0, 256, 512], np.int32).reshape(3, 1, 1), "offsets")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    nodes = [
        helper.make_node("Transpose", [INPUT], ["planes"], perm=[2, 0, 1]),
        helper.make_node("Cast", ["planes"], ["codes"], to=TensorProto.INT32),
        helper.make_node("Add", ["codes", "offsets"], ["rows"]),
        helper.make_node("Gather", ["table", "rows"], ["values"], axis=0),
        helper.make_node("Unsqueeze", ["values", "axes"], [OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "vosfx_normalise",
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["height", "width", 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 3, "height", "width"])],
        initializer=[table, offsets, axes],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vosfx"
    )
    model.ir_version = 8  # readable by every ONNX Runtime vosfx supports (1.17+)
    onnx.checker.check_model(model)
    return model.SerializeToString()

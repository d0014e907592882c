"""The rewrites of a graph that the bf16 tier makes before OpenVINO compiles it
(:class:`vosfx.engine.openvino_runtime.OvSession`): weights held as float16, a product split
into parts afterwards computed one product per part, and chosen operations kept in float32;
its attentions' rewrites are :mod:`vosfx.engine.openvino_attention`'s. Each takes an
``openvino.Model`` and changes it in place (``keep_float32`` returns a marked copy);
OpenVINO is imported only by them."""

from __future__ import annotations

from typing import Any

import numpy as np


def compress_weights(model: Any) -> None:
    """Store ``model``'s float32 constants as float16, decompressed where they are used
    (OpenVINO's own weight compression, that of ``save_model``); constants float16 cannot hold
    and the precision-sensitive ones (shapes, exponents) stay float32: the pass decides.

    The CPU plugin compiling float32 weights for bfloat16 arithmetic keeps more than their
    bfloat16 copy: at 1024 the image encoder adds 313 MiB compiled from float32 weights and 212
    from float16 ones (502 and 401 after a call), at the same speed and as close to the fp32
    path's features (max abs difference 0.204 vs 0.213 of |x| <= 3.1, mean 0.0232 vs 0.0231).
    The tier does it for the image encoder alone (:data:`FLOAT16_WEIGHTS`), where the memory
    is: the masks of the DAVIS clips against fp32 held IoU >= 0.99 with it (car-shadow 0.9911,
    chair 0.9903), but not with memory attention's weights compressed too (car-shadow 0.9888;
    49 MiB saved) nor the memory encoder's or the decoder's (chair 0.9885 / 0.9891; 6 and 14
    MiB). docs/benchmarks/onnx.md, ninth pass."""
    from openvino._offline_transformations import compress_model_transformation

    compress_model_transformation(model)


def constant_value(port: Any) -> np.ndarray | None:
    """The value of an OpenVINO output that is a constant, through conversions, or a product
    or sum of constants (the ONNX reader's Gemm gives its bias as ``beta * C``); None
    otherwise."""
    node = port.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        return np.asarray(node.get_data())
    if kind in ("Convert", "ConvertLike"):
        value = constant_value(node.input_value(0))
        return None if value is None else value.astype(node.get_output_element_type(0).to_dtype())
    if kind in ("Multiply", "Add"):
        a, b = constant_value(node.input_value(0)), constant_value(node.input_value(1))
        if a is None or b is None:
            return None
        return a * b if kind == "Multiply" else a + b
    return None


def split_products(model: Any) -> int:
    """Rewrite each matrix product with constant weights whose output, reshaped, is split into
    parts along one axis (Hiera's qkv projection: ``(N, 3C) -> (..., 3, heads, C/heads)``, then
    queries, keys and values) as one product per part, on that part's columns of the weights
    and bias; returns how many splits were rewritten. The same arithmetic per output element,
    without the split: OpenVINO's CPU plugin copies a split along an inner axis with its
    reference kernel (36 ms a frame of the image encoder at 1024 on AMD's Zen 4, 37 % of the
    graph's non-product time). Left as they are: dynamic shapes, weights that are not
    constant, a split whose parts are not whole columns of the product. Measured:
    docs/benchmarks/onnx.md, twenty-third pass."""
    import openvino.opset13 as ops

    done = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Split", "VariadicSplit"):
            continue
        reshape = op.input_value(0).get_node()
        split_axis = constant_value(op.input_value(1))
        parts = [o.get_partial_shape() for o in op.outputs()]
        shape = reshape.get_output_partial_shape(0)
        if (
            reshape.get_type_name() != "Reshape"
            or split_axis is None
            or shape.is_dynamic
            or any(p.is_dynamic for p in parts)
        ):
            continue
        dims = [d.get_length() for d in shape]
        axis = int(split_axis) % len(dims)
        inner = int(np.prod(dims[axis + 1 :]))
        # back from the reshape: elementwise constants (bias, Gemm's alpha) to the product
        steps, src = [], reshape.input_value(0)
        while src.get_node().get_type_name() in ("Add", "Multiply"):
            steps.append(
                (src.get_node().get_type_name(), constant_value(src.get_node().input_value(1)))
            )
            src = src.get_node().input_value(0)
        product = src.get_node()
        if product.get_type_name() != "MatMul":
            continue
        weights = constant_value(product.input_value(1))
        flags = product.get_attributes()
        if weights is None or weights.ndim != 2 or flags["transpose_a"]:
            continue
        columns = weights.shape[0] if flags["transpose_b"] else weights.shape[1]
        if int(np.prod(dims[axis:])) != columns or any(
            c is None or c.size not in (1, columns) for _, c in steps
        ):
            continue
        start = 0
        for out, part in zip(op.outputs(), parts, strict=True):
            length = part[axis].get_length() * inner
            cols = slice(start, start + length)
            start += length
            w = weights[cols] if flags["transpose_b"] else weights[:, cols]
            y = ops.matmul(
                product.input_value(0),
                ops.constant(np.ascontiguousarray(w)),
                False,
                flags["transpose_b"],
            )
            for kind, c in reversed(steps):
                assert c is not None
                if c.size > 1:
                    c = np.ascontiguousarray(c.reshape(-1)[cols].reshape(c.shape[:-1] + (-1,)))
                y = (ops.add if kind == "Add" else ops.multiply)(y, ops.constant(c))
            target = np.array([d.get_length() for d in part], np.int64)
            out.replace(ops.reshape(y, ops.constant(target), False).output(0))
        done += 1
    model.validate_nodes_and_infer_types()
    return done


def keep_float32(model: Any, kinds: tuple[str, ...]) -> Any:
    """``model`` with its operations of the types ``kinds`` (``Convolution``) marked to run in
    float32 whatever the inference precision asked for; returns the marked model (a new one:
    ``model`` is left as it is).

    OpenVINO's CPU plugin leaves a node marked ``precise`` (its "disable precision
    conversion" attribute) in the precision of its graph; Python can read that mark but not
    set it, so the graph goes through OpenVINO's own IR (written, the mark added to the chosen
    layers, read back with the weights in memory). Why: the image encoder's seven
    convolutions (Hiera's patch embedding, the neck, the decoder's high-resolution
    projections) in bfloat16 carried most of the error of the features the decoder upsamples
    with (0.61 / 0.74 % of their norm against 0.35 / 0.60 % in float32), and the tier's masks
    on car-shadow over 24 frames went from IoU 0.987 to 0.9914 against fp32 for ~1 % of the
    encoder's time (twenty-fourth pass, docs/benchmarks/onnx.md)."""
    import tempfile
    import xml.etree.ElementTree as ET
    from pathlib import Path

    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="vosfx-ov-") as tmp:
        xml_path = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
        tree = ET.parse(xml_path)
        for layer in tree.getroot().iter("layer"):
            if layer.get("type") not in kinds:
                continue
            info = layer.find("rt_info")
            if info is None:
                info = ET.Element("rt_info")
                layer.insert(0, info)
            ET.SubElement(info, "attribute", name="precise", version="0")
        text = ET.tostring(tree.getroot(), encoding="unicode")
        weights = np.fromfile(xml_path.with_suffix(".bin"), np.uint8)
    return ov.Core().read_model(text, ov.Tensor(weights))

"""Cutting a stage's graph into the parts of :mod:`vosfx.engine.ort_parts` (needs the ``onnx``
package, the exporter's): at its attentions (the ``parts`` variant) and, for the ``parts-linear``
variant, at its linear layers' products too.

Every node other than the steps cut out is ONNX Runtime's as in the whole graph (its fusions
find the same patterns inside a part), each part placed as late as its consumers allow, so
that a layer's key projections, which read the memories alone, are computed just before that
layer (not all at the start, held). Weights kept as external data (the shipped templates' and
an export's, ``<stage>.bin``) stay in the whole graph's weights file, which the parts read;
inline weights (a bundle exported before vosfx kept them apart) are written into the parts,
the graph's size again on disk. The linear products' weights are listed where the graph keeps
them (:func:`_weights_index`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vosfx.engine.ort_parts import (
    ATTENTION_KEY,
    LINEAR_KEY,
    LINEAR_PART_FILE,
    OUTPUTS_KEY,
    PART_FILE,
    PART_KEY,
    WEIGHTS_BIN,
    WEIGHTS_FILE,
    WEIGHTS_KEY,
)
from vosfx.errors import ModelError

# a constant read by several parts from this size on is handed on from the first (its name +
# HANDED_ON) instead of held by each; products' weights never are (ONNX Runtime prepacks
# those only as initializers)
HANDED_ON_BYTES = 1 << 20
HANDED_ON = "/handed_on"
PRODUCTS = ("MatMul", "Gemm", "Conv", "FusedMatMul")


def _attentions(graph: Any) -> list[Any]:
    """The graph's ``MultiHeadAttention`` nodes with exactly (query, key, value), in order;
    raises ModelError where another kind of attention is there (a mask, a bias, past keys)."""
    found = []
    for node in graph.node:
        if node.op_type != "MultiHeadAttention":
            continue
        if len(node.input) != 3 or not all(node.input) or len(node.output) != 1:
            raise ModelError(
                f"{node.name}: expected an attention of query, key and value alone, found "
                f"inputs {list(node.input)} and outputs {list(node.output)}"
            )
        found.append(node)
    return found


def _weights_read_directly(graph: Any) -> None:
    """Makes each MatMul and Add that reads a weight through Identity nodes (torch's export
    writes a weight shared by several layers, as layers of equal weights, once, and Identities
    of it) read it directly, and removes the Identities nothing reads then."""
    initializers = {t.name for t in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def source(name: str) -> str:
        seen = name
        while seen in alias:
            seen = alias[seen]
        return seen if seen in initializers else name

    for n in graph.node:
        if n.op_type in ("MatMul", "Add"):
            n.input[:] = [source(i) for i in n.input]
    read = {i for n in graph.node for i in [*n.input, *_subgraph_reads(n)]}
    read.update(o.name for o in graph.output)
    while True:
        unread = [n for n in graph.node if n.op_type == "Identity" and n.output[0] not in read]
        if not unread:
            return
        for n in unread:
            graph.node.remove(n)
        read = {i for n in graph.node for i in [*n.input, *_subgraph_reads(n)]}
        read.update(o.name for o in graph.output)


def _linear_products(graph: Any) -> list[list[Any]]:
    """The graph's linear layers' products: each MatMul whose second input is a 2-D float32
    weight (an initializer) and whose first is not, with the Add of a 1-D bias of its outputs'
    size that alone reads its output, where one does ([matmul] or [matmul, add])."""
    import onnx

    initializers = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found = []
    for n in graph.node:
        if n.op_type != "MatMul" or len(n.input) != 2 or n.input[0] in initializers:
            continue
        weight = initializers.get(n.input[1])
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            continue
        step = [n]
        readers = consumers.get(n.output[0], [])
        if len(readers) == 1 and readers[0].op_type == "Add" and n.output[0] not in outputs:
            add = readers[0]
            other = [i for i in add.input if i != n.output[0]]
            bias = initializers.get(other[0]) if len(other) == 1 else None
            if (
                bias is not None
                and list(bias.dims) == [weight.dims[1]]
                and bias.data_type == onnx.TensorProto.FLOAT
            ):
                step.append(add)
        found.append(step)
    return found


def _subgraph_reads(node: Any) -> list[str]:
    """The outer values a node's subgraphs (an If's branches, a Loop's body) read: names used
    there and made neither there nor as its inputs."""
    found: list[str] = []
    for attr in node.attribute:
        for graph in [attr.g] if attr.HasField("g") else list(attr.graphs):
            inner = {i.name for i in graph.input} | {t.name for t in graph.initializer}
            for n in graph.node:
                for i in [*n.input, *_subgraph_reads(n)]:
                    if i and i not in inner and i not in found:
                        found.append(i)
                inner.update(n.output)
    return found


def cut(model: Any, *, linear: bool = False, weights: dict[str, Any] | None = None) -> list[Any]:
    """``model`` (a stage's graph) as one part model more than its steps: its attentions and,
    with ``linear``, its linear layers' products (:func:`_linear_products`), in the graph's
    order. ``weights``: filled with the linear steps' weights and biases (TensorProtos) by
    their keys in the parts' metadata."""
    import onnx
    from onnx import helper

    graph = model.graph
    if linear:
        _weights_read_directly(graph)
    steps = [[a] for a in _attentions(graph)] + (_linear_products(graph) if linear else [])
    if not steps:
        raise ModelError(
            "expected attentions"
            + (" or linear products" if linear else "")
            + " to cut the graph at, found none"
        )
    order = {id(n): i for i, n in enumerate(graph.node)}
    steps.sort(key=lambda step: order[id(step[0])])
    where = {id(n): j for j, step in enumerate(steps) for n in step}
    producer: dict[str, Any] = {o: n for n in graph.node for o in n.output}
    implicit = {id(n): _subgraph_reads(n) for n in graph.node}

    def reads(n: Any) -> list[str]:  # its inputs and what its subgraphs read outside them
        return [i for i in [*n.input, *implicit.get(id(n), ())] if i]

    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in reads(n):
            consumers.setdefault(i, []).append(n)
    last = len(steps)
    outputs = {o.name for o in graph.output}
    # the earliest part each node can run in (after the steps it depends on) ...
    earliest: dict[int, int] = {}
    for n in graph.node:
        if id(n) in where:
            continue
        part = 0
        for i in reads(n):
            p = producer.get(i)
            if p is None:
                continue
            part = max(part, where[id(p)] + 1 if id(p) in where else earliest[id(p)])
        earliest[id(n)] = part
    # ... and the latest its consumers allow: each node in the latest
    placed: dict[int, int] = {}
    for n in reversed(graph.node):
        if id(n) in where:
            continue
        latest = last if any(o in outputs for o in n.output) else None
        for o in n.output:
            for c in consumers.get(o, []):
                bound = where[id(c)] if id(c) in where else placed[id(c)]
                latest = bound if latest is None else min(latest, bound)
        part = earliest[id(n)] if latest is None else latest
        if part < earliest[id(n)]:
            raise ModelError(f"{n.name}: its inputs come after its use (not a layered graph)")
        placed[id(n)] = part
    for j, step in enumerate(steps):  # a step's operands must be made by then
        for a in step:
            for i in a.input:
                p = producer.get(i)
                if p is None or where.get(id(p)) == j:  # a weight, or made inside the step
                    continue
                if (where[id(p)] + 1 if id(p) in where else placed[id(p)]) > j:
                    raise ModelError(f"{a.name}: its operands come after it (not a layered graph)")

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v for v in inferred.graph.value_info}
    initializers = {t.name: t for t in graph.initializer}

    declared = {v.name: v for v in (*graph.input, *graph.output)}

    def value_info(name: str) -> Any:
        """A part's input or output: as the whole graph declares it, else the inferred type
        and rank with no sizes (shape inference's sizes of values inside If branches can be
        wrong, and ONNX Runtime warns on loading a part that says so)."""
        if name in declared:
            return declared[name]
        known = types.get(name)
        if known is None or not known.type.tensor_type.elem_type:
            return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        tensor = known.type.tensor_type
        rank = len(tensor.shape.dim) if tensor.HasField("shape") else None
        return helper.make_tensor_value_info(
            name, tensor.elem_type, None if rank is None else [None] * rank
        )

    # large constants several parts read, which no product takes as its weights (the RoPE
    # tables, 4 MiB each at 1024): kept in the first part that reads them and handed on as its
    # output (an Identity), so that one copy is on disk and in memory, not one per part
    readers: dict[str, set[int]] = {}
    for n in graph.node:
        for i in n.input:
            if i in initializers and id(n) not in where:
                readers.setdefault(i, set()).add(placed[id(n)])
    products = {n.input[1] for n in graph.node if n.op_type in PRODUCTS and len(n.input) > 1}
    products.update(i for n in graph.node for i in implicit[id(n)])  # read in a subgraph: kept
    handed_on: dict[int, list[Any]] = {}
    for name, at in readers.items():
        if len(at) < 2 or name in products or _nbytes(initializers[name]) < HANDED_ON_BYTES:
            continue
        first, alias = min(at), name + HANDED_ON
        handed_on.setdefault(first, []).append(helper.make_node("Identity", [name], [alias]))
        for n in graph.node:
            if id(n) not in where and placed[id(n)] > first:
                n.input[:] = [alias if i == name else i for i in n.input]

    parts = []
    for k in range(last + 1):
        nodes = [n for n in graph.node if placed.get(id(n)) == k] + handed_on.get(k, [])
        made = {o for n in nodes for o in n.output}
        used: list[str] = []
        for n in nodes:
            for i in reads(n):
                if i not in made and i not in used:
                    used.append(i)
        inits = [initializers[i] for i in used if i in initializers]
        inputs = [value_info(i) for i in used if i not in initializers]
        later = set()
        for n in [*graph.node, *(i for at in handed_on.values() for i in at)]:
            if id(n) in where:
                if where[id(n)] >= k:
                    later.update(n.input)
            elif placed.get(id(n), -1) > k:
                later.update(reads(n))
        wanted = [o for n in nodes for o in n.output if o in later or o in outputs]
        if not wanted:  # nothing between two steps (projections of one input): a part ONNX
            # Runtime loads, its one output a constant nothing reads
            none = helper.make_tensor("none", onnx.TensorProto.FLOAT, [], [0.0])
            nodes = [
                *nodes,
                helper.make_node("Constant", [], [f"{graph.name}/none{k}"], value=none),
            ]
            wanted = [nodes[-1].output[0]]
        sub = helper.make_graph(
            nodes, f"{graph.name}_part{k}", inputs, [value_info(o) for o in wanted], inits
        )
        part = helper.make_model(sub, opset_imports=model.opset_import)
        part.ir_version = model.ir_version
        if k < last and steps[k][0].op_type == "MatMul":
            product, bias = steps[k][0], steps[k][1] if len(steps[k]) > 1 else None
            meta = {
                "input": product.input[0],
                "output": steps[k][-1].output[0],
                "weight": f"w{k}",
                "bias": None if bias is None else f"b{k}",
            }
            if weights is not None:
                weights[f"w{k}"] = initializers[product.input[1]]
                if bias is not None:
                    name = next(i for i in bias.input if i != product.output[0])
                    weights[f"b{k}"] = initializers[name]
            helper.set_model_props(part, {LINEAR_KEY: json.dumps(meta)})
        elif k < last:
            a = steps[k][0]
            attrs = {x.name: helper.get_attribute_value(x) for x in a.attribute}
            scale = attrs.get("scale")
            meta = {
                "query": a.input[0],
                "key": a.input[1],
                "value": a.input[2],
                "output": a.output[0],
                "heads": int(attrs.get("num_heads", 1)),
                "scale": None if scale is None else float(scale),
            }
            helper.set_model_props(part, {ATTENTION_KEY: json.dumps(meta)})
        else:
            names = [o.name for o in graph.output]
            helper.set_model_props(part, {OUTPUTS_KEY: json.dumps(names)})
        parts.append(part)
    return parts


def _nbytes(tensor: Any) -> int:
    """A TensorProto's size in bytes (inline or external)."""
    import onnx

    size = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return size * math.prod(tensor.dims)


def write_variant(folder: Path, sources: dict[str, str], *, linear: bool = False) -> dict[str, str]:
    """Cut each stage's graph ``folder / sources[stage]`` into ``folder`` (external weights stay
    in the graph's weights file, which the parts read; inline ones are written into the parts);
    returns the manifest's entry (``<stage>.<i>`` -> file). A graph without attentions is left
    whole. ``linear``: the :data:`LINEAR_VARIANT`, cut at the linear products too, where each
    product's weights are found listed in ``<stage>.linear.json`` (``<stage>.weights`` in the
    entry): in the graph's own weights file where it keeps them there (no second copy), else
    written to ``<stage>.linear.bin``."""
    import onnx

    files = {}
    pattern = LINEAR_PART_FILE if linear else PART_FILE
    for stage, source in sources.items():
        model = onnx.load(str(folder / source), load_external_data=False)
        if not _attentions(model.graph) and not (linear and _linear_products(model.graph)):
            continue
        weights: dict[str, Any] = {}
        for i, part in enumerate(cut(model, linear=linear, weights=weights)):
            file = pattern.format(stage, i)
            onnx.save(part, str(folder / file))
            files[PART_KEY.format(stage, i)] = file
        if linear:
            file = WEIGHTS_FILE.format(stage)
            index = _weights_index(folder, weights, WEIGHTS_BIN.format(stage))
            (folder / file).write_text(json.dumps(index), encoding="utf-8")
            files[WEIGHTS_KEY.format(stage)] = file
    return files


def _weights_index(folder: Path, weights: dict[str, Any], spare: str) -> dict[str, dict]:
    """Key -> where its float32 weights are (file, byte offset, shape): a TensorProto kept as
    external data in a file of ``folder`` where it is, else written to ``folder / spare``."""
    import onnx
    from onnx import numpy_helper

    index: dict[str, dict] = {}
    written = None
    try:
        for key, tensor in weights.items():
            shape = [int(d) for d in tensor.dims]
            said = {e.key: e.value for e in tensor.external_data}
            location = said.get("location", "")
            if (
                tensor.data_location == onnx.TensorProto.EXTERNAL
                and Path(location).name == location
                and (folder / location).is_file()
            ):
                index[key] = {
                    "file": location,
                    "offset": int(said.get("offset", 0)),
                    "shape": shape,
                }
                continue
            if written is None:
                written = open(folder / spare, "wb")  # noqa: SIM115 (closed below)
            array = numpy_helper.to_array(tensor).astype("<f4")
            index[key] = {"file": spare, "offset": written.tell(), "shape": shape}
            written.write(array.tobytes())
    finally:
        if written is not None:
            written.close()
    return index

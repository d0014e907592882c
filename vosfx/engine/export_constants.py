"""Equal constant tensors of an exported ONNX graph stored once.

The TorchScript exporter writes a buffer once per module that uses it: memory attention's
rotary tables, 4 MiB each at 1024, came out as 24 copies of two tables (self- and
cross-attention of four layers). ONNX Runtime keeps each initializer apart (a template's
shared bytes mapped 24 times), ~95 MiB of resident memory at 1024 that one table each does
without (docs/benchmarks/onnx.md, seventh pass). Needs the ``onnx`` package.
"""

from __future__ import annotations

import hashlib
from typing import Any

# Constant nodes with more elements than this become initializers that can be shared
BIG_CONSTANT = 256


def share_constants(model: Any) -> int:
    """Make equal constant tensors of ``model``'s main graph one initializer, in place; return
    how many Constant nodes became initializers plus how many initializers were dropped. Big
    ``Constant`` nodes become initializers first; names that are graph inputs or outputs are
    left alone."""
    from onnx import numpy_helper

    graph = model.graph
    nodes = []
    for node in graph.node:
        if (
            node.op_type == "Constant"
            and len(node.attribute) == 1
            and node.attribute[0].name == "value"
        ):
            arr = numpy_helper.to_array(node.attribute[0].t)
            if arr.size > BIG_CONSTANT:
                graph.initializer.append(numpy_helper.from_array(arr, node.output[0]))
                continue
        nodes.append(node)
    moved = len(graph.node) - len(nodes)
    if moved:
        del graph.node[:]
        graph.node.extend(nodes)
    fixed = {v.name for v in (*graph.input, *graph.output)}
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    kept = []
    for init in graph.initializer:
        raw = numpy_helper.to_array(init).tobytes()
        key = (init.data_type, tuple(init.dims), hashlib.sha256(raw).digest())
        if key in first and init.name not in fixed:
            rename[init.name] = first[key]
            continue
        first.setdefault(key, init.name)
        kept.append(init)
    if rename:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        _rename_inputs(graph, rename)
    return len(rename) + moved


def _rename_inputs(graph: Any, rename: dict[str, str]) -> None:
    """Point every node input (in subgraphs too: they see the outer names) at its new name."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                _rename_inputs(sub, rename)

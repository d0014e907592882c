"""Graphs cut at their attentions, so that a kernel of vosfx's runs them between ONNX
Runtime's parts: the bundle's ``parts`` variant and :class:`AttentionParts`, which runs it.

ONNX Runtime's CPU wheel runs no operator it does not ship (a custom operator library must be
built against its C API), so the default path's graphs are cut instead: part 0 runs the graph
up to the first attention's query, key and value, the kernel of
:mod:`vosfx.engine.int16_attention` computes that attention, part 1 runs from its output to the
second attention's operands, and so on. Memory attention has 8 attentions (9 parts), the
image encoder Hiera's global attentions (3 in the tiny model, 4 heads each; its windowed
attentions stay in the parts as ONNX Runtime's products). Every other node is ONNX Runtime's
as in the whole graph (its fusions find the same patterns inside a part), each part placed as
late as its consumers allow, so that a layer's key projections, which read the memories
alone, are computed just before that layer (not all at the start, held). Weights kept as
external data (the shipped templates' and an export's, ``<stage>.bin``) stay in the whole
graph's weights file, which the parts read; inline weights (a bundle exported before vosfx
kept them apart) are written into the parts, the graph's size again on disk. A process loads
the parts alone, not the whole graph.

Each part's inputs and outputs keep the whole graph's tensor names. A part's metadata says
which attention follows it (``vosfx.attention``: the query, key, value and output names, the
heads and the scale, JSON). Needs the ``onnx`` package to cut (the exporter's); the shipped
templates carry the variant ready-made (:mod:`vosfx.engine.export_template`).

The ``parts-linear`` variant (:data:`LINEAR_VARIANT`) cuts the two stages at their linear
layers' products too (each MatMul with a weight, with the Add of its bias), for the int16
kernel's AMX form to compute them between the parts (:mod:`vosfx.engine.amx_linear`); a
part's metadata then says which product follows it (``vosfx.linear``: input and output names,
the weight's and bias's keys in ``<stage>.linear.json``, which says where they are). Made on
first use where that form
runs, never shipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vosfx.engine.backend import Interrupt
from vosfx.errors import Cancelled, ModelError

VARIANT = "parts"
# the stages the variant cuts, where their graphs have attentions the kernel takes
STAGES = ("image_encoder", "memory_attention")
# the variant's manifest entry: part i of a stage under "<stage>.<i>"
PART_KEY = "{}.{}"
PART_FILE = "{}.part{}.onnx"
ATTENTION_KEY = "vosfx.attention"  # a part's metadata: the attention after it
# The variant cut at the linear layers' products too (MatMul with a weight, and the Add of its
# bias where one follows), for the AMX form's products between the parts
# (:mod:`vosfx.engine.amx_linear`): made on first use where that form runs, never shipped.
LINEAR_VARIANT = "parts-linear"
LINEAR_PART_FILE = "{}.linpart{}.onnx"
LINEAR_KEY = "vosfx.linear"  # a part's metadata: the linear product after it
# the variant's manifest entry of a stage's weights: a JSON index, w<i> and b<i> (the product
# after part i) -> the file, byte offset and shape of its float32s; the graph's own weights
# file where it keeps them, else WEIGHTS_BIN
WEIGHTS_KEY = "{}.weights"
WEIGHTS_FILE = "{}.linear.json"
WEIGHTS_BIN = "{}.linear.bin"
OUTPUTS_KEY = "vosfx.outputs"  # the last part's: the whole graph's outputs, in order
# a constant read by several parts from this size on is handed on from the first (its name +
# HANDED_ON) instead of held by each; products' weights never are (ONNX Runtime prepacks
# those only as initializers)
HANDED_ON_BYTES = 1 << 20
HANDED_ON = "/handed_on"
PRODUCTS = ("MatMul", "Gemm", "Conv", "FusedMatMul")


@dataclass(frozen=True)
class Attention:
    """One attention between two parts: its operands' and output's tensor names, its heads
    (the channels of each operand split evenly among them) and its scale."""

    query: str
    key: str
    value: str
    output: str
    heads: int
    scale: float | None  # None: 1 / sqrt(a head's channels), as the fused op's default

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.query, self.key, self.value)


@dataclass(frozen=True)
class Linear:
    """One linear product between two parts: ``output = input @ weight (+ bias)``, the
    weight and bias by their keys in the stage's weights file (bias None: none)."""

    input: str
    output: str
    weight: str
    bias: str | None

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.input,)


# --- cutting (needs onnx) ---------------------------------------------------------------------


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


def linear_weights(folder: Path, entry: dict[str, str], stage: str) -> dict[str, np.ndarray]:
    """The :data:`LINEAR_VARIANT`'s weights of ``stage`` (``entry``: the variant's manifest
    entry) by their keys in the parts' metadata, float32 as the index lists them; raises
    ModelError where the index names a file outside the bundle or a file ends too soon."""
    listed = entry.get(WEIGHTS_KEY.format(stage))
    if listed is None:
        raise ModelError(f"the {LINEAR_VARIANT} variant lists no weights of {stage}")
    index = json.loads((folder / listed).read_text(encoding="utf-8"))
    found = {}
    for key, at in index.items():
        name, shape = at["file"], [int(d) for d in at["shape"]]
        if Path(name).name != name:
            raise ModelError(f"{listed}: {key} in {name!r}, not a file of the bundle")
        count = math.prod(shape)
        array = np.fromfile(folder / name, dtype="<f4", count=count, offset=int(at["offset"]))
        if array.size != count:
            raise ModelError(f"{listed}: {name} ends before {key}'s {count} weights")
        found[key] = array.reshape(shape)
    return found


def part_files(files: dict[str, str], stage: str) -> list[str]:
    """The variant's part files of ``stage`` in order (from the manifest's entry); [] where it
    has none."""
    found: list[str] = []
    while PART_KEY.format(stage, len(found)) in files:
        found.append(files[PART_KEY.format(stage, len(found))])
    return found


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Name:
    name: str


class AttentionParts:
    """A stage's graph as ONNX Runtime ``sessions`` (the variant's parts, in order) with
    ``attend(q, k, v, scale, out)`` (2-D float32 arrays, ``out`` C-contiguous) computing each
    head of the attention between each two, and ``linear(x, step)`` the linear product of a
    :class:`Linear` step (the :data:`LINEAR_VARIANT`'s parts; None where there are none);
    quacks as the one session it stands for (``run``, ``get_inputs``, ``get_outputs``,
    ``get_providers``). ``stage`` names it in messages; ``run_options``: ONNX Runtime's
    ``RunOptions`` class (an interrupt stops a part too)."""

    def __init__(
        self,
        stage: str,
        sessions: list[Any],
        attend: Any,
        run_options: Any = None,
        linear: Any = None,
    ) -> None:
        self.stage, self.sessions, self._attend = stage, sessions, attend
        self._linear = linear
        self._run_options = run_options
        self.steps: list[Attention | Linear] = []
        for sess in sessions[:-1]:
            said = sess.get_modelmeta().custom_metadata_map
            if ATTENTION_KEY in said:
                self.steps.append(Attention(**json.loads(said[ATTENTION_KEY])))
            elif LINEAR_KEY in said and linear is not None:
                self.steps.append(Linear(**json.loads(said[LINEAR_KEY])))
            else:
                raise ModelError(f"a part of {stage} without its attention ({ATTENTION_KEY})")
        self._ins = [[i.name for i in s.get_inputs()] for s in sessions]
        self._outs = [[o.name for o in s.get_outputs()] for s in sessions]
        made = {o for outs in self._outs for o in outs} | {a.output for a in self.steps}
        self._inputs: list[str] = []
        for ins in self._ins:
            self._inputs.extend(i for i in ins if i not in made and i not in self._inputs)
        listed = sessions[-1].get_modelmeta().custom_metadata_map.get(OUTPUTS_KEY)
        if listed is None:
            raise ModelError(f"the last part of {stage} without its outputs ({OUTPUTS_KEY})")
        self._outputs = [_Name(name) for name in json.loads(listed)]
        # the tensors nothing reads after each step: dropped then (their memory freed)
        last_read: dict[str, int] = {}
        for k, ins in enumerate(self._ins):
            for i in ins:
                last_read[i] = k
        for k, step in enumerate(self.steps):
            for i in step.reads:
                last_read[i] = max(last_read.get(i, -1), k)
        for o in self._outputs:  # kept to the end, whichever part made them
            last_read[o.name] = len(sessions)
        self._drop: list[list[str]] = [[] for _ in sessions]
        for name, k in last_read.items():
            if k < len(sessions):
                self._drop[k].append(name)

    @property
    def attentions(self) -> list[Attention]:
        return [step for step in self.steps if isinstance(step, Attention)]

    def get_inputs(self) -> list[_Name]:
        return [_Name(i) for i in self._inputs]

    def get_outputs(self) -> list[_Name]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return self.sessions[0].get_providers()

    def run(
        self,
        names: Any,
        feeds: dict[str, Any],
        options: Any = None,
        interrupt: Interrupt | None = None,
    ) -> list[np.ndarray]:
        """The whole graph's outputs (``names`` ignored: all, in order). ``interrupt``: stops
        the part running (ONNX Runtime's terminate flag) or before the next, raising
        Cancelled."""
        env = dict(feeds)
        if interrupt is not None and self._run_options is not None:
            options = self._run_options()
            interrupt.bind(lambda: setattr(options, "terminate", True))
        for k, sess in enumerate(self.sessions):
            if interrupt is not None and interrupt.is_set:
                raise Cancelled(f"{self.stage} interrupted")
            try:
                got = sess.run(None, {i: env[i] for i in self._ins[k]}, options)
            except Exception as err:
                if interrupt is not None and interrupt.is_set:
                    raise Cancelled(f"{self.stage} interrupted") from err
                raise
            env.update(zip(self._outs[k], got, strict=True))
            if k < len(self.steps):
                step = self.steps[k]
                if isinstance(step, Linear):
                    env[step.output] = self._linear(env[step.input], step)
                else:
                    q, key, v = (env[i] for i in step.reads)
                    env[step.output] = self._attention(step, q, key, v)
            for name in self._drop[k]:
                env.pop(name, None)
        return [env[o.name] for o in self._outputs]

    def _attention(self, a: Attention, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(B, Nq, H*D) queries, (B, Nk, H*D) keys, (B, Nk, H*Dv) values -> (B, Nq, H*Dv), each
        head on its own channels; a batch of 1 on one side is shared by every batch row of the
        others (as the fused op broadcasts)."""
        batch, heads = max(q.shape[0], k.shape[0], v.shape[0]), a.heads
        depth, channels = q.shape[-1] // heads, v.shape[-1] // heads
        scale = a.scale if a.scale is not None else 1.0 / math.sqrt(depth)
        out = np.empty((batch, q.shape[1], v.shape[-1]), np.float32)
        head_out = np.empty((q.shape[1], channels), np.float32) if heads > 1 else None
        for b in range(batch):
            qb, kb, vb = q[min(b, len(q) - 1)], k[min(b, len(k) - 1)], v[min(b, len(v) - 1)]
            if head_out is None:
                self._attend(qb, kb, vb, scale, out[b])
                continue
            for h in range(heads):
                d, c = slice(h * depth, (h + 1) * depth), slice(h * channels, (h + 1) * channels)
                self._attend(qb[:, d], kb[:, d], vb[:, c], scale, head_out)
                out[b, :, c] = head_out
        return out

"""Memory attention's attentions as query blocks, one object at a time: the bundle's ``cpu``
variant, the graph ONNX Runtime's CPU provider runs (:mod:`vosfx.engine.variants`).

The exported memory attention computes each of its 8 attentions (4 layers x self and cross)
with ONNX Runtime's fused ``com.microsoft.MultiHeadAttention``. On CPUs its flash-style kernel
tiles keys and queries by the L2 cache (~100 x 100 tiles with 512 KiB of L2, for 256-channel
queries and 64-channel values) and rescales its running output after every key tile. The same
attention as plain ``MatMul -> Softmax -> MatMul`` over blocks of a few hundred queries runs
two large products through MLAS's GEMM at its full rate instead. Measured on an AMD EPYC Zen 3
(AVX2), 2 threads: the stage at 1024 px 3,066-3,341 -> 2,683-2,940 ms (-11 to -14 %), at 512
267 -> 235 ms; docs/benchmarks/onnx.md, eighteenth pass.

The rewrite, for each one-head ``MultiHeadAttention`` node with exactly (query, key, value):

- a ``Scan`` over the object axis: one object's attention at a time, so the score blocks of
  B objects are never held together (the fused kernel holds none; 4 objects at once would add
  ~230 MiB at 1024);
- inside, the keys transposed once, the queries scaled by the node's scale (default
  ``1/sqrt(channels)``, as the fused op), split into near-equal blocks of at most
  ``rows`` queries, each ``softmax(q_block k^T) v``, and the blocks concatenated again.

``rows`` keeps a block's scores (rows x keys, float32) within :data:`SCORE_BYTES` at the most
keys the graph can be fed (7 memories and 16 object pointers: 28,736 keys at 1024, so 512
rows). The outputs equal the fused op's up to float32 summation order (1.4e-6 of |x| <= 4.6 at
1024). Needs the ``onnx`` package (the exporter's); the shipped templates carry the variant
ready-made (:mod:`vosfx.engine.export_template`).

With ``int8_scores`` (the ``int8`` tier's graph on CPUs whose uint8 x int8 products do not
saturate, :data:`INT8_FILES`), each block's scores come from int8 operands: the queries of
the block quantised per call by ``DynamicQuantizeLinear`` (uint8, their own range), the keys
once per attention, their mean over the tokens taken out (the softmax cancels a shift of a
query's scores, and a common offset would take the int8 range from their differences) and
quantised symmetrically to int8 at their own largest magnitude; ``MatMulInteger``'s int32
scores are cast and multiplied back by the two scales before the softmax. The weighted sum of
the values stays float32. On AMD's Zen 4 (AVX512_VNNI) memory attention at 1024 ran
1,554-1,569 against 2,400-2,427 ms a call, its output within 0.021 % (relative L2) of
float32's (docs/benchmarks/onnx.md, twenty-sixth pass); the bf16 tier does the same in
OpenVINO (:func:`vosfx.engine.openvino_attention.int8_scores`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vosfx.errors import ModelError

# the most bytes of attention scores one query block holds (its softmax output as many again)
SCORE_BYTES = 64 << 20
# the graph file of the variant, beside the bundle's own memory_attention.onnx
FILES = {"memory_attention": "memory_attention.cpu.onnx"}
# the same with int8 scores, which the int8 variant carries on CPUs with int8 weights
# (vosfx.engine.variants); the int8 tier runs it for the stages named in INT8_SCORES
INT8_FILES = {"memory_attention": "memory_attention.int8.onnx"}
# the stages whose scores the int8 tier computes from int8 queries and keys, where its
# bundle variant has them and the attention runs in query blocks on the CPU provider: memory
# attention at 1024 1.55x faster on AMD's Zen 4 (twenty-sixth pass)
INT8_SCORES = ("memory_attention",)


def block_rows(queries: int, keys: int, score_bytes: int = SCORE_BYTES) -> int:
    """The most queries a block takes: the largest power of two whose float32 scores against
    ``keys`` keys fit ``score_bytes``, at least 16, at most ``queries``.

    >>> block_rows(4096, 28736), block_rows(1024, 7232), block_rows(4096, 4096)
    (512, 1024, 4096)
    """
    rows = 16
    while rows * 2 * keys * 4 <= score_bytes:
        rows *= 2
    return min(rows, queries)


def max_keys(manifest: dict, queries: int) -> int:
    """The most keys memory attention's cross-attention is fed: every memory frame's
    ``queries`` tokens and each object pointer split into ``hidden_dim / mem_dim`` tokens."""
    a = manifest["attrs"]
    split = int(a["hidden_dim"]) // int(a["mem_dim"])
    return int(a["num_maskmem"]) * queries + split * int(a["max_obj_ptrs"])


def query_blocks(
    model: Any, *, most_keys: int, score_bytes: int = SCORE_BYTES, int8_scores: bool = False
) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``, in place) as the module docstring says;
    returns how many attentions were rewritten. An attention whose query count or channels
    are not static, with more than one head, or with a mask, bias or cache input is left as
    it is. ``most_keys``: the key count a cross-attention's block size is chosen for (a
    self-attention's own static key count is used where the graph has one). ``int8_scores``:
    the scores from int8 queries and keys (the module docstring)."""
    import onnx

    shapes = _static_shapes(onnx.shape_inference.infer_shapes(model).graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    nodes, done = [], 0
    for node in model.graph.node:
        q_shape = _one_head_attention(node, shapes)
        if q_shape is None:
            nodes.append(node)
            continue
        k_shape = shapes.get(node.input[1]) or []
        keys = k_shape[1] if len(k_shape) == 3 and isinstance(k_shape[1], int) else most_keys
        rows = block_rows(q_shape[1], keys, score_bytes)
        nodes.append(_scan(node, q_shape[1], q_shape[2], rows, opset if int8_scores else 0))
        done += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return done


def _one_head_attention(node: Any, shapes: dict[str, list]) -> list | None:
    """The (B, Nq, C) query shape of a one-head ``MultiHeadAttention`` of just (query, key,
    value) with static Nq and C, else None."""
    if node.op_type != "MultiHeadAttention" or node.domain != "com.microsoft":
        return None
    heads = next((a.i for a in node.attribute if a.name == "num_heads"), None)
    if heads != 1 or len(node.input) != 3 or not all(node.input):
        return None
    if any(a.name not in ("num_heads", "scale") for a in node.attribute):
        return None
    q_shape = shapes.get(node.input[0]) or []
    static = len(q_shape) == 3 and all(isinstance(d, int) for d in q_shape[1:])
    return q_shape if static else None


def _scan(node: Any, n_q: int, channels: int, rows: int, int8_opset: int = 0) -> Any:
    """The ``Scan`` over objects that replaces the attention ``node``: per object (Nq, C)
    queries, (Nk, C) keys, (Nk, Cv) values -> (Nq, Cv), in blocks of at most ``rows``
    queries (``int8_opset``: their scores from int8 operands, in the graph's opset; 0: not)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    scale = next((a.f for a in node.attribute if a.name == "scale"), 0.0) or channels**-0.5
    blocks = -(-n_q // rows)
    sizes = [n_q // blocks + (i < n_q % blocks) for i in range(blocks)]
    p = f"{node.name or node.output[0]}/blocks/"
    inits = [numpy_helper.from_array(np.array(scale, np.float32), p + "scale")]
    body = [
        helper.make_node("Transpose", [p + "k"], [p + "kT"], perm=[1, 0]),  # (C, Nk)
        helper.make_node("Mul", [p + "q", p + "scale"], [p + "q_scaled"]),
    ]
    queries = p + "q_scaled"
    if int8_opset:  # the keys int8, the channels of both balanced
        body += _int8_keys(p, inits, int8_opset, channels)
        queries = p + "q_balanced"
    parts = [queries]
    if blocks > 1:
        parts = [f"{p}q{i}" for i in range(blocks)]
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), p + "sizes"))
        body.append(helper.make_node("Split", [queries, p + "sizes"], parts, axis=0))
    outs = [f"{p}out{i}" for i in range(blocks)] if blocks > 1 else [p + "out"]
    for i, (part, out) in enumerate(zip(parts, outs, strict=True)):
        if int8_opset:
            body += _int8_scores(part, p, f"{p}scores{i}")
        else:
            body.append(helper.make_node("MatMul", [part, p + "kT"], [f"{p}scores{i}"]))
        body += [  # scores (rows, Nk)
            helper.make_node("Softmax", [f"{p}scores{i}"], [f"{p}probs{i}"], axis=-1),
            helper.make_node("MatMul", [f"{p}probs{i}", p + "v"], [out]),  # (rows, Cv)
        ]
    if blocks > 1:
        body.append(helper.make_node("Concat", outs, [p + "out"], axis=0))
    f32 = TensorProto.FLOAT
    body_graph = helper.make_graph(
        body,
        p + "body",
        [helper.make_tensor_value_info(p + n, f32, None) for n in ("q", "k", "v")],
        [helper.make_tensor_value_info(p + "out", f32, None)],
        inits,
    )
    return helper.make_node(
        "Scan", list(node.input), list(node.output), p + "scan", body=body_graph, num_scan_inputs=3
    )


def _int8_keys(p: str, inits: list, opset: int, channels: int) -> list:
    """Nodes making ``p + "kT_q"`` (int8, (C, Nk)) and its scale ``p + "kT_scale"`` from the
    transposed keys, and the balanced queries ``p + "q_balanced"`` from ``p + "q_scaled"``:
    the keys' mean over the tokens taken out; each channel of the queries multiplied by a
    power of two and the keys' same channel divided by it (the scores unchanged: the power
    nearest the square root of the keys' largest magnitude over the queries' in that
    channel, each at least 1e-30, within 2^-10 and 2^10, as the bf16 tier's int8 scores do,
    :func:`vosfx.engine.openvino_attention.int8_scores`); the keys then quantised symmetrically
    at their largest magnitude (a scale of at least 1e-30: keys all equal give zero scores,
    as their differences are), each channel's division by its power folded into the
    quantisation's per-channel scales (one pass over the keys fewer). ``opset``: the graph's
    (the reductions' axes an input from 18); ``channels``: the keys'."""
    import numpy as np
    from onnx import helper, numpy_helper

    inits += [
        numpy_helper.from_array(np.array(1 / 127, np.float32), p + "1/127"),
        numpy_helper.from_array(np.array(1e-30, np.float32), p + "tiny"),
        numpy_helper.from_array(np.array(0, np.int8), p + "int8_zero"),
        numpy_helper.from_array(np.array(0.5 / np.log(2), np.float32), p + "half/ln2"),
        numpy_helper.from_array(np.array(0.5, np.float32), p + "half"),
        numpy_helper.from_array(np.array(-10.0, np.float32), p + "least"),
        numpy_helper.from_array(np.array(10.0, np.float32), p + "most"),
        numpy_helper.from_array(np.array(2.0, np.float32), p + "two"),
        numpy_helper.from_array(np.zeros(channels, np.int8), p + "int8_zeros"),
    ]

    def reduce(kind: str, x: str, axis: int, out: str, **kw: Any) -> Any:
        if opset >= 18:
            name = f"{p}axis{axis}"
            if not any(i.name == name for i in inits):
                inits.append(numpy_helper.from_array(np.array([axis], np.int64), name))
            return helper.make_node(kind, [x, name], [out], **kw)
        return helper.make_node(kind, [x], [out], axes=[axis], **kw)

    return [
        reduce("ReduceMean", p + "kT", 1, p + "kT_mean"),
        helper.make_node("Sub", [p + "kT", p + "kT_mean"], [p + "kT_unbalanced"]),
        # each channel's power of two, from the keys' and the queries' largest magnitudes
        helper.make_node("Abs", [p + "kT_unbalanced"], [p + "kT_unbalanced_abs"]),
        reduce("ReduceMax", p + "kT_unbalanced_abs", 1, p + "kT_top0", keepdims=0),
        helper.make_node("Max", [p + "kT_top0", p + "tiny"], [p + "kT_top"]),
        helper.make_node("Abs", [p + "q_scaled"], [p + "q_abs"]),
        reduce("ReduceMax", p + "q_abs", 0, p + "q_top0", keepdims=0),
        helper.make_node("Max", [p + "q_top0", p + "tiny"], [p + "q_top"]),
        helper.make_node("Div", [p + "kT_top", p + "q_top"], [p + "ratio"]),
        helper.make_node("Log", [p + "ratio"], [p + "ln_ratio"]),
        helper.make_node("Mul", [p + "ln_ratio", p + "half/ln2"], [p + "half_log2"]),
        helper.make_node("Add", [p + "half_log2", p + "half"], [p + "exponent0"]),
        helper.make_node("Floor", [p + "exponent0"], [p + "exponent1"]),
        helper.make_node("Clip", [p + "exponent1", p + "least", p + "most"], [p + "exponent"]),
        helper.make_node("Pow", [p + "two", p + "exponent"], [p + "power"]),  # (C,)
        helper.make_node("Mul", [p + "q_scaled", p + "power"], [p + "q_balanced"]),
        # the balanced keys' largest magnitude, from each channel's
        helper.make_node("Div", [p + "kT_top0", p + "power"], [p + "kT_tops"]),
        helper.make_node("ReduceMax", [p + "kT_tops"], [p + "kT_max"], keepdims=0),
        helper.make_node("Mul", [p + "kT_max", p + "1/127"], [p + "kT_step"]),
        helper.make_node("Max", [p + "kT_step", p + "tiny"], [p + "kT_scale"]),
        # each channel over its power times the keys' step: the balanced keys in int8
        helper.make_node("Mul", [p + "power", p + "kT_scale"], [p + "kT_scales"]),
        helper.make_node(
            "QuantizeLinear",
            [p + "kT_unbalanced", p + "kT_scales", p + "int8_zeros"],
            [p + "kT_q"],
            axis=0,
        ),
    ]


def _int8_scores(part: str, p: str, scores: str) -> list:
    """Nodes making the float32 ``scores`` of the query block ``part`` against the int8 keys
    of :func:`_int8_keys`: the block quantised to uint8 by its own range, multiplied in
    int32, cast and scaled back."""
    from onnx import TensorProto, helper

    q, q_scale, q_zero = part + "_q", part + "_scale", part + "_zero"
    return [
        helper.make_node("DynamicQuantizeLinear", [part], [q, q_scale, q_zero]),
        helper.make_node(
            "MatMulInteger", [q, p + "kT_q", q_zero, p + "int8_zero"], [scores + "_i32"]
        ),
        helper.make_node("Cast", [scores + "_i32"], [scores + "_f32"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [q_scale, p + "kT_scale"], [scores + "_scale"]),
        helper.make_node("Mul", [scores + "_f32", scores + "_scale"], [scores]),
    ]


def _static_shapes(graph: Any) -> dict[str, list]:
    """name -> dims (int where static, else the symbol) of every typed value of ``graph``."""
    out = {}
    for vi in [*graph.value_info, *graph.input, *graph.output]:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
    return out


def write_variant(
    folder: Path, source: str, manifest: dict, *, int8_scores: bool = False
) -> dict[str, str]:
    """Read memory attention's graph ``folder / source`` (its weights stay where they are:
    inline, or external data beside it, which the variant's graph shares), rewrite it and
    write :data:`FILES` into ``folder`` (``int8_scores``: :data:`INT8_FILES`, the scores from
    int8 operands); returns them (the manifest's ``cpu`` entry, or part of ``int8``'s).
    ``manifest``: the bundle's or template's, for its ``attrs``."""
    import onnx

    name, files = "memory_attention", INT8_FILES if int8_scores else FILES
    model = onnx.load(str(folder / source), load_external_data=False)
    most_keys = max_keys(manifest, _query_count(model))
    query_blocks(model, most_keys=most_keys, int8_scores=int8_scores)
    onnx.save(model, str(folder / files[name]))
    return dict(files)


def _query_count(model: Any) -> int:
    """Memory attention's query tokens: the (1, C, g, g) ``vision_feat`` input's g * g."""
    for inp in model.graph.input:
        if inp.name == "vision_feat":
            dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            return int(dims[2] * dims[3])
    raise ModelError("expected a memory-attention graph with a vision_feat input, found none")

"""The bf16 tier's rewrites of a graph's attentions before OpenVINO compiles it
(:class:`vosfx.engine.openvino_runtime.OvSession`): attention split into query blocks, or
replaced by vosfx's int8 attention kernel, its scores computed from int8 queries and keys,
and Transposes beside an attention kept out of OpenVINO's attention kernel. Each takes an
``openvino.Model`` and changes it in place; OpenVINO is imported only by them."""

from __future__ import annotations

from typing import Any

import numpy as np

from vosfx.engine.openvino_graphs import constant_value


def _zeros(port: Any) -> bool:
    """Whether an OpenVINO output is a constant of zeros (through conversions)."""
    value = constant_value(port)
    return value is not None and not np.any(value)


def split_attention(model: Any, blocks: int) -> int:
    """Rewrite each ``ScaledDotProductAttention`` of ``model`` as ``blocks`` blocks of queries,
    each ``softmax(q k^T) v`` through MatMul, Softmax and MatMul, the keys transposed once for
    all blocks (near-equal blocks where the query count does not divide); returns how many were
    rewritten. Left as they are: a causal attention, one with a mask that is not zeros, one
    whose query count or depth is dynamic (vosfx's graphs have none of these: the ONNX reader
    gives each attention a zero mask). The same arithmetic as OpenVINO's own decomposition of
    the op (the scale, given or ``depth ** -0.5``, on the queries), a block at a time.

    Why: OpenVINO's CPU plugin compiles an attention into one "snippets" kernel (its
    MatMul-Softmax-MatMul tokenisation), which on the Xeon with AMX ran memory attention's
    cross-attention (4,096 queries x 28,736 keys at 1024) at 590-640 ms a layer with
    AVX512_BF16 instructions, where its MatMuls alone run on AMX: 3.41 s against 1.31 s for the
    stage (:class:`OvSession` with ``attention_blocks``, which also turns the tokenisation
    off). On AMD's Zen 4 (AVX512_BF16, no AMX) the kernel is slow too: 1,772-3,020 ms for the
    stage against 1,282-1,605 in blocks (twenty-second pass). Decomposed whole, the plugin
    holds each attention's score matrix (4,096 x 28,736: +885 MiB for the stage); a block at
    a time, one block's; one SDPA op per block instead would transpose the keys once per
    block (+35 ms a block). Measured: docs/benchmarks/onnx.md, tenth and twenty-second
    passes."""
    import openvino.opset13 as ops

    done = 0
    for op, q, k, v, scale in _plain_attentions(model):
        queries = q.get_partial_shape()[-2]
        if queries.is_dynamic:
            continue
        n = queries.get_length()
        sizes = [n // blocks + (i < n % blocks) for i in range(min(blocks, n))]
        axes = list(range(k.get_partial_shape().rank.get_length()))
        axes[-2:] = axes[-1], axes[-2]
        keys_t = ops.transpose(k, ops.constant(np.array(axes, np.int64)))
        parts = ops.variadic_split(
            ops.multiply(q, ops.convert_like(scale, q)),
            ops.constant(np.int64(-2)),
            ops.constant(np.array(sizes)),
        ).outputs()
        outs = [
            ops.matmul(ops.softmax(ops.matmul(part, keys_t, False, False), -1), v, False, False)
            for part in parts
        ]
        op.output(0).replace(ops.concat(outs, -2).output(0))
        done += 1
    model.validate_nodes_and_infer_types()
    return done


def _plain_attentions(model: Any) -> list[tuple[Any, Any, Any, Any, Any]]:
    """(op, q, k, v, scale) of each ``ScaledDotProductAttention`` of ``model`` that is not
    causal, has no mask or a zero one, static ranks and a static depth: the scale given, or
    ``depth ** -0.5``."""
    import openvino.opset13 as ops

    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "ScaledDotProductAttention":
            continue
        ins = [i.get_source_output() for i in op.inputs()]
        q, k, v = ins[:3]
        if any(x.get_partial_shape().rank.is_dynamic for x in (q, k, v)):
            continue
        depth = q.get_partial_shape()[-1]
        if (
            op.get_attributes().get("causal")
            or not (len(ins) < 4 or _zeros(ins[3]))
            or depth.is_dynamic
        ):
            continue
        if len(ins) > 4:
            scale = ins[4]
        else:
            scale = ops.constant(np.float32(depth.get_length() ** -0.5)).output(0)
        found.append((op, q, k, v, scale))
    return found


def fused_int8_attention(
    model: Any, blocks: int, threads: int, *, smallest_queries: int = 0
) -> int:
    """Replace each ``ScaledDotProductAttention`` of ``model`` by one
    :func:`~vosfx.engine.int8_attention.op_class` node: the C kernel of
    :mod:`vosfx.engine.int8_attention`, the arithmetic of :func:`split_attention` into
    ``blocks`` blocks with :func:`int8_scores`' deferred form, without a score matrix in
    memory; returns how many were replaced (:func:`fused_attention`). ``threads``: the
    kernel's threads (the graph's own wait while it runs). Memory attention at 1024 ran
    1.11-1.13x faster with its 8 attentions in it (916 ms with its 4 cross attentions alone
    in it, 901 with all 8; twenty-eighth pass)."""
    from vosfx.engine import int8_attention

    op_type = int8_attention.op_class()
    return fused_attention(
        model, lambda inputs: op_type(inputs, blocks, threads), smallest_queries=smallest_queries
    )


def fused_attention(model: Any, node: Any, *, smallest_queries: int = 0) -> int:
    """Replace each ``ScaledDotProductAttention`` of ``model`` that :func:`kernel_attentions`
    takes by ``node([q, k, v, scale])`` (a kernel's operation,
    :func:`~vosfx.engine.int8_attention.kernel_op`); returns how many were replaced. Left as
    they are (for :func:`split_attention`): a causal attention, one with a mask that is not
    zeros, one whose channels the kernels do not take (queries and keys a multiple of 4 up to
    512, values a multiple of 16) or are dynamic, one with fewer than ``smallest_queries``
    queries or a dynamic count of them."""
    done = 0
    for op, q, k, v, scale in kernel_attentions(model, smallest_queries):
        op.output(0).replace(node([q, k, v, scale]).output(0))
        done += 1
    model.validate_nodes_and_infer_types()
    return done


def kernel_attentions(model: Any, smallest_queries: int = 0) -> list[tuple[Any, ...]]:
    """The attentions of ``model`` that :func:`fused_attention` gives a kernel (see there), as
    (node, q, k, v, scale); nothing of the kernel itself is needed to tell."""
    from vosfx.engine import int8_attention

    taken = []
    for op, q, k, v, scale in _plain_attentions(model):
        queries, depth = q.get_partial_shape()[-2], q.get_partial_shape()[-1]
        channels = v.get_partial_shape()[-1]
        if (
            q.get_partial_shape().rank.get_length() != 4
            or (
                smallest_queries and (queries.is_dynamic or queries.get_length() < smallest_queries)
            )
            or channels.is_dynamic
            or not int8_attention.takes(depth.get_length(), channels.get_length())
        ):
            continue
        taken.append((op, q, k, v, scale))
    return taken


def int8_scores(model: Any, *, deferred: bool = False) -> int:
    """Compute each attention's scores (a MatMul of two computed operands feeding only a
    Softmax: :func:`split_attention`'s blocks) from int8 queries and keys; returns how many
    products were rewritten. Each operand is divided by its own largest magnitude (the
    queries of a block, the keys of all blocks: one scale each, taken on every call) and
    quantised symmetrically to 255 levels over [-1, 1] (a FakeQuantize with constant ranges,
    which OpenVINO's CPU plugin runs as an int8 product); the scores are multiplied back by
    the two scales before the Softmax. The keys lose their mean over the tokens first: every
    score of a query moves by the same amount, which the Softmax cancels, and the keys'
    common offset no longer takes the int8 range from their differences (the smoothing of
    SageAttention, Zhang et al. 2025). Then each channel of the queries (all the blocks
    alike) is multiplied by a power of two and the keys' same channel divided by it, which
    leaves the scores as they were: the power nearest the square root of the keys' largest
    magnitude over the queries' in that channel (each at least 1e-30; within 2^-10 and 2^10),
    so that a channel far larger on one side (trained models' outlier channels) shares its
    range with the other side instead of taking every other channel's int8 steps (the
    smoothing of SmoothQuant, Xiao et al. 2023, by exact powers of two; forty-second pass).
    The weighted sum of the values stays in the graph's precision.

    ``deferred``: where the Softmax's probabilities only weight the values (a MatMul, as in
    :func:`split_attention`'s blocks), its normalisation is deferred past that product: the
    scale goes into the exponentials' own pass, ``exp(scale * (s - max s))``, the values are
    weighted by them and the (rows, channels) result divided by their sum. One pass over the
    (rows, keys) scores fewer than multiplying them back before a Softmax (whose exponentials
    and normalisation take their own passes): memory attention at 1024 1.03-1.06x faster on
    AMD's Zen 4, its error the same (twenty-seventh pass, docs/benchmarks/onnx.md). Without
    int8 scores there is no multiply to fold (the same deferral measured 0.97x).

    Why: on AMD's Zen 4 (AVX512_VNNI and AVX512_BF16, no AMX) int8 products run at twice the
    bfloat16 rate; memory attention at 1024 with 7 memories ran 1,008-1,071 ms against 1,281-
    1,342 in bfloat16, its output as far from float32 as bfloat16's (mean 0.00166 against
    0.00165; twenty-fifth pass, docs/benchmarks/onnx.md). With AMX the same products with
    ranges set per call ran the stage 0.90x (thirteenth pass)."""
    import openvino.opset13 as ops

    targets = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or not _is_attention_product(op):
            continue
        users = [t.get_node().get_type_name() for t in op.output(0).get_target_inputs()]
        if users == ["Softmax"] and op.get_output_partial_shape(0).rank.is_static:
            targets.append(op)
    low, high = ops.constant(np.float32(-1.0)), ops.constant(np.float32(1.0))
    tiny = ops.constant(np.float32(1e-30))
    last = ops.constant(np.array([-1], np.int64))
    made: dict[tuple, Any] = {}

    def name(port: Any) -> tuple[str, int]:
        return port.get_node().get_friendly_name(), port.get_index()

    def int8(x: Any, rank: int, top: Any = None) -> tuple[Any, Any]:
        """(``x`` quantised at its largest magnitude, that scale); ``top``: that magnitude
        where known"""
        every = ops.constant(np.arange(rank, dtype=np.int64))
        if top is None:
            top = ops.reduce_max(ops.abs(x), every, False)
        scale = ops.maximum(top, tiny).output(0)
        unit = ops.divide(x, scale)
        return ops.fake_quantize(unit, low, high, low, high, 255).output(0), scale

    def quantised(op: Any) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
        """((int8 queries, their scale), (int8 keys, their scale)) of ``op``: the keys'
        made once per source tensor and the queries they are balanced against (all the
        blocks of one attention), the queries' once per block."""
        q_src, k_src = op.input_value(0), op.input_value(1)
        rank = k_src.get_partial_shape().rank.get_length()
        whole = q_src  # the queries of every block: what split_attention split
        if q_src.get_node().get_type_name() in ("Split", "VariadicSplit"):
            axis = constant_value(q_src.get_node().input_value(1))
            if axis is not None and axis.size == 1 and int(axis.flat[0]) % rank == rank - 2:
                whole = q_src.get_node().input_value(0)
        k_key = ("keys", *name(k_src), *name(whole))
        if k_key not in made:
            # tokens on the keys' last axis, or the one before it if transposed; the
            # channels on the other
            transposed = op.get_attributes()["transpose_b"]
            tokens = ops.constant(np.array([rank - (2 if transposed else 1)], np.int64))
            keys = ops.subtract(k_src, ops.reduce_mean(k_src, tokens, True)).output(0)
            k_tops = ops.reduce_max(ops.abs(keys), tokens, False)
            k_top = ops.maximum(k_tops, tiny)
            rows = ops.constant(np.array([rank - 2], np.int64))
            q_top = ops.maximum(ops.reduce_max(ops.abs(whole), rows, False), tiny)
            half_log2 = ops.multiply(
                ops.log(ops.divide(k_top, q_top)), ops.constant(np.float32(0.5 / np.log(2)))
            )
            exponent = ops.clamp(
                ops.floor(ops.add(half_log2, ops.constant(np.float32(0.5)))), -10.0, 10.0
            )
            power = ops.power(ops.constant(np.float32(2.0)), exponent).output(0)
            axis = ops.constant(np.array([-2 if transposed else -1], np.int64))
            keys = ops.divide(keys, ops.unsqueeze(power, axis)).output(0)
            # the balanced keys' largest magnitude, from each channel's
            top = ops.reduce_max(
                ops.divide(k_tops, power), ops.constant(np.arange(rank - 1, dtype=np.int64)), False
            )
            made[k_key] = power, int8(keys, rank, top)
        power, k_int8 = made[k_key]
        q_key = ("queries", *name(q_src), *name(whole))
        if q_key not in made:
            balanced = ops.multiply(q_src, ops.unsqueeze(power, ops.constant(np.int64(-2))))
            made[q_key] = int8(balanced.output(0), q_src.get_partial_shape().rank.get_length())
        return made[q_key], k_int8

    for op in targets:
        (q, q_scale), (k, k_scale) = quantised(op)
        (user,) = op.output(0).get_target_inputs()
        op.input(0).replace_source_output(q)
        op.input(1).replace_source_output(k)
        scale = ops.multiply(q_scale, k_scale).output(0)
        weighted = _weighted_sum(user.get_node()) if deferred else None
        if weighted is None:
            user.replace_source_output(ops.multiply(op.output(0), scale).output(0))
        else:  # the normalisation deferred past the weighted sum (docstring)
            top = ops.reduce_max(op.output(0), last, True)
            exps = ops.exp(ops.multiply(ops.subtract(op.output(0), top), scale))
            values = weighted.input_value(1)
            summed = ops.matmul(exps, values, False, weighted.get_attributes()["transpose_b"])
            weighted.output(0).replace(
                ops.divide(summed, ops.reduce_sum(exps, last, True)).output(0)
            )
    model.validate_nodes_and_infer_types()
    return len(targets)


def _weighted_sum(softmax: Any) -> Any | None:
    """The MatMul weighting values by the last-axis ``softmax``'s probabilities (its only
    user, the probabilities its first operand, not transposed), else None."""
    axis = softmax.get_attributes()["axis"]
    rank = softmax.get_output_partial_shape(0).rank.get_length()
    users = list(softmax.output(0).get_target_inputs())
    if axis not in (-1, rank - 1) or len(users) != 1 or users[0].get_index() != 0:
        return None
    node = users[0].get_node()
    if node.get_type_name() != "MatMul" or node.get_attributes()["transpose_a"]:
        return None
    return node


def _is_attention_product(node: Any) -> bool:
    """Whether ``node`` is an attention: a ScaledDotProductAttention, or a MatMul of two
    computed operands (an attention's scores or its weighted sum), not a product with
    constant weights."""
    if node.get_type_name() == "ScaledDotProductAttention":
        return True
    return node.get_type_name() == "MatMul" and all(
        constant_value(node.input_value(i)) is None for i in range(2)
    )


def _next_to_attention(transpose: Any) -> bool:
    """Whether a Transpose feeds an attention product (directly or through one elementwise
    Multiply, the scale) or reads one's output."""
    if _is_attention_product(transpose.input_value(0).get_node()):
        return True
    for target in transpose.output(0).get_target_inputs():
        node = target.get_node()
        if node.get_type_name() == "Multiply" and len(node.output(0).get_target_inputs()) == 1:
            node = next(iter(node.output(0).get_target_inputs())).get_node()
        if _is_attention_product(node):
            return True
    return False


def guard_attention_transposes(model: Any) -> int:
    """Rewrite each Transpose next to an attention product whose permutation moves two axes
    of the same size (Hiera's pooled queries at the first block of its third stage:
    ``(windows, 4 queries, 4 heads, depth) -> (windows, 4 heads, 4 queries, depth)``) as the
    same Transpose of a view with one more axis of size 1 (an Unsqueeze before it, a Squeeze
    after); returns how many were rewritten. The same values in the same order.

    Why: OpenVINO's CPU plugin folds such a Transpose into its attention kernel (the
    MatMul-Softmax-MatMul "snippets" tokenisation) and then reads the input in the wrong
    order where the moved axes have the same size: wrong results, not rounding (a 4-head
    attention over 4 queries off by 82 % of its norm in float32 on OpenVINO 2026.4; in the
    image encoder's bfloat16 graph its embedding 2.5 % off float32 against 1.0 % with the
    Transpose kept apart). Through the added axis the plugin cannot fold it, and runs it alone
    at no measurable cost (twenty-fourth pass, docs/benchmarks/onnx.md). Only static shapes:
    with the axes dynamic the plugin computed the same attention right, and a graph whose
    shapes are fixed later (:class:`~vosfx.engine.openvino_runtime.OvSession`'s batch and
    steady forms) is guarded again as it is compiled (a guarded Transpose is left alone)."""
    import openvino.opset13 as ops

    done = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Transpose":
            continue
        perm = constant_value(op.input_value(1))
        shape = op.get_input_partial_shape(0)
        if perm is None or shape.is_dynamic or not _next_to_attention(op):
            continue
        if op.input_value(0).get_node().get_type_name() == "Unsqueeze":
            continue  # guarded already
        moved = [shape[i].get_length() for i, p in enumerate(perm.tolist()) if p != i]
        if len(moved) == len(set(moved)):
            continue
        rank = len(perm)
        last = ops.constant(np.int64(rank))
        turned = ops.transpose(
            ops.unsqueeze(op.input_value(0), last),
            ops.constant(np.array([*perm.tolist(), rank], np.int64)),
        )
        op.output(0).replace(ops.squeeze(turned, last).output(0))
        done += 1
    model.validate_nodes_and_infer_types()
    return done

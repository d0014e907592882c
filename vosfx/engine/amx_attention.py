"""The bf16 tier's attentions on CPUs with AMX: the int16 kernel's AMX form in bfloat16 alone.

On Intel's Xeons with AMX the tier ran memory attention's attentions as OpenVINO's query
blocks (MatMul, Softmax, MatMul on AMX, each block's scores written and read back: ~1.1 s of
a 2.59 s frame at 1024 in the tenth and eleventh passes' profiles, the scores' products 602 ms,
their Softmax 353, the values' product 157) and Hiera's global attentions in OpenVINO's own
kernel. Here each attention runs in one node (:func:`op_class`, put in the graph by
:func:`~vosfx.engine.openvino_attention.fused_attention`, as the int8 kernel is on CPUs
without AMX): the int16 kernel's AMX form with bfloat16 products alone (its ``amx-bf16``
form, ``kernels/int16_attention.c``: hi.hi on the tiles, no score matrix in memory, a chunk's
scores and exponentials in the cache, the values' product on the tiles too). Its rounding is
bfloat16's (~2^-9 of each product, float32 sums), the queries and keys balanced and centred as
in the kernel's fp32 forms: 5.4e-4 from the exact attention on isotropic operands, where the
int8 kernel (the tier's on AMD Zen 4) gives 3.1e-3 (docs/benchmarks/onnx.md, forty-sixth pass).

It has never run on an AMX CPU here (none lent since it was written): its tests emulate the
tile instructions. So before the tier takes it, :func:`why_unavailable` asks (1) the CPU and
Linux for AMX's tiles, (2) the AMX form's check in a process of its own
(:func:`~vosfx.engine.int16_attention.checked`: the same tiles, layouts and instructions, the
lo parts too) and (3) a timing, once a process (:func:`gain`): one attention of memory
attention's shapes in the kernel and in the query-block form the tier would run instead,
compiled by OpenVINO as the tier compiles it, alternating. The kernel is taken at
:data:`WORTH` times that form's speed; where any of the three says no, the blocks run as
before and the sidecar says why (nothing is lost against the tier before this module).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from vosfx.engine import int16_attention
from vosfx.engine.int8_attention import kernel_op, with_every_cpu
from vosfx.native import Unavailable

FORM = "amx-bf16"
# the speed over OpenVINO's query blocks (gain) from which the tier takes the kernel
WORTH = 1.2


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float,
    *,
    threads: int,
    out: np.ndarray | None = None,
    emulated: bool = False,
) -> np.ndarray:
    """``softmax(q k^T * scale) v`` in the kernel's ``amx-bf16`` form, on every CPU of the
    process (:func:`~vosfx.engine.int16_attention.attention`: shapes, errors)."""
    call = functools.partial(
        int16_attention.attention, threads=threads, out=out, name=FORM, emulated=emulated
    )
    return with_every_cpu(call, q, k, v, scale)


@functools.cache
def op_class() -> type:
    """The OpenVINO operation that runs :func:`attention`
    (:func:`~vosfx.engine.int8_attention.kernel_op`): ``op_class()(inputs, threads)``."""

    def run(q: Any, k: Any, v: Any, scale: float, out: Any, threads: int) -> None:
        attention(q, k, v, scale, threads=threads, out=out)

    return kernel_op("AmxBf16Attention", run)


def fuse(model: Any, threads: int, *, smallest_queries: int = 0) -> int:
    """Each attention of ``model`` the kernel takes as one :func:`op_class` node
    (:func:`~vosfx.engine.openvino_attention.fused_attention`); returns how many."""
    from vosfx.engine.openvino_attention import fused_attention

    op_type = op_class()
    return fused_attention(
        model, lambda inputs: op_type(inputs, threads), smallest_queries=smallest_queries
    )


def blocks_form(threads: int) -> Any:
    """One attention as the tier runs it where the kernel does not: MatMul, Softmax and MatMul
    compiled by OpenVINO's CPU plugin in bfloat16, its snippets kernel off
    (:func:`~vosfx.engine.openvino_attention.split_attention`'s blocks), of the int16
    kernel's timed shape (:data:`~vosfx.engine.int16_attention.ATTENTION_SHAPE`: one of memory
    attention's 8 query blocks at 1024); inputs q, k, v as (1, 1, rows, channels) float32,
    the scale 1/16."""
    import openvino as ov
    import openvino.opset13 as ops

    rows, keys, depth, channels = int16_attention.ATTENTION_SHAPE
    q = ops.parameter([1, 1, rows, depth], np.float32, name="q")
    k = ops.parameter([1, 1, keys, depth], np.float32, name="k")
    v = ops.parameter([1, 1, keys, channels], np.float32, name="v")
    scores = ops.multiply(ops.matmul(q, k, False, True), np.float32(1 / 16))
    model = ov.Model([ops.matmul(ops.softmax(scores, -1), v, False, False)], [q, k, v])
    config = {
        "INFERENCE_PRECISION_HINT": "bf16",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": threads,
        "SNIPPETS_MODE": "DISABLE",
    }
    return ov.Core().compile_model(model, "CPU", config)


@functools.cache
def gain(threads: int, *, emulated: bool = False) -> float:
    """The kernel's speed over the tier's query-block form (:func:`blocks_form`) on one
    attention (:func:`~vosfx.engine.int16_attention.timed_operands`) on ``threads`` threads:
    their best times' ratio (:func:`~vosfx.engine.int16_attention.alternating_best`),
    measured once a process. Raises what either raises (:class:`Unavailable`, MemoryError,
    OpenVINO's RuntimeError)."""
    q, k, v = int16_attention.timed_operands()
    compiled = blocks_form(threads)
    feeds = [q[None, None], k[None, None], v[None, None]]
    blocks, kernel = int16_attention.alternating_best(
        [
            functools.partial(compiled, feeds),
            functools.partial(attention, q, k, v, 1 / 16, threads=threads, emulated=emulated),
        ]
    )
    return blocks / kernel


def why_unavailable(threads: int) -> str | None:
    """None where the tier takes the kernel here on ``threads`` threads (the module
    docstring's three conditions), else why not."""
    try:
        if not int16_attention.supported(FORM):
            return "this CPU lacks AMX-BF16, or Linux did not grant its tiles"
    except Unavailable as err:
        return str(err)
    failed = int16_attention.checked("amx")
    if failed is not None:
        return failed
    try:
        measured = gain(threads)
    except (Unavailable, MemoryError, RuntimeError) as err:
        return f"its attentions could not be measured: {err}"
    if measured < WORTH:
        return (
            f"its attentions ran {measured:.2f}x OpenVINO's query blocks here, under the "
            f"{WORTH}x the tier takes them from"
        )
    return None

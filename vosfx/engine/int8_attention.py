"""Attentions in one C kernel: int8 scores, no score matrix in memory.

The bf16 tier on CPUs with AVX512_VNNI and AVX512_BF16 and no AMX (AMD's Zen 4) computes
memory attention's scores from int8 queries and keys (:func:`~vosfx.engine.openvino_attention.
int8_scores`). As OpenVINO graph nodes each block of queries still wrote its float32 scores
(470 M a frame at 1024) and read them again for the exponentials, their sums and the values'
product. ``kernels/int8_attention.c`` does the same scores a chunk of keys at a time with
them in the cache (flash attention's running maximum; docstring of that file), and the values'
product in int8 as well (uint8 exponentials against the chunk's maximum, int8 values per
channel: twice bfloat16's rate, ~1 % more error than the int8 scores' own), and
:func:`~vosfx.engine.openvino_attention.fused_int8_attention` puts it in the graph as one node
per attention (:func:`op_class`): memory attention's 8 and Hiera's 3 global attentions in the
image encoder. Since the forty-second pass each channel is balanced between the queries and
the keys by a power of two before they are quantised, as ``int8_scores`` does (an outlier
channel on one side no longer takes the other channels' int8 steps). Measured:
docs/benchmarks/onnx.md, twenty-eighth, thirty-first and forty-second passes.

The kernel is compiled with the system's C compiler on first use, into ``<cache>/kernels/``
(``$VOSFX_HOME`` or the user cache directory), and loaded with ctypes (:mod:`vosfx.native`). Where there is no compiler, the
compile fails or the CPU lacks the instructions, :func:`library` says why and the tier keeps
its graph form (the same arithmetic, slower; the run warns once): nothing fails for it.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from vosfx import native
from vosfx.native import Unavailable

SOURCE = Path(__file__).parent / "kernels" / "int8_attention.c"
# the channels the kernel takes: queries and keys a multiple of 4 up to 512, values a multiple
# of 16
MAX_DEPTH = 512
DEPTH_MULTIPLE, CHANNELS_MULTIPLE = 4, 16


def cache_dir() -> Path:
    """Where the attention kernels are built: ``<cache>/kernels``."""
    from vosfx.models.cache import home

    return home() / "kernels"


def declared(lib: Any) -> Any:
    """``lib`` (a build of the kernel's source, this one's or another version's) with its
    functions' argument and return types declared for ctypes."""
    pointer, integer = ctypes.c_void_p, ctypes.c_int
    lib.vosfx_int8_attention.argtypes = (
        [pointer] * 4 + [integer] * 4 + [ctypes.c_float] + [integer] * 2
    )
    lib.vosfx_int8_attention.restype = integer
    lib.vosfx_int8_attention_supported.restype = integer
    return lib


@functools.cache
def library() -> Any:
    """The compiled kernel (ctypes), compiled on first use; raises :class:`Unavailable`."""
    lib = declared(native.build(SOURCE, cache_dir()))
    if not lib.vosfx_int8_attention_supported():
        raise Unavailable("this CPU lacks AVX512_VNNI or AVX512_BF16")
    return lib


def why_unavailable() -> str | None:
    """None where the kernel runs here, else why not."""
    try:
        library()
    except Unavailable as err:
        return str(err)
    return None


def takes(depth: int, channels: int, depth_multiple: int = DEPTH_MULTIPLE) -> bool:
    """Whether the kernel takes an attention of these queries'/keys' and values' channels
    (``depth_multiple``: the int16 kernel's is 2)."""
    return (
        0 < depth <= MAX_DEPTH
        and depth % depth_multiple == 0
        and channels > 0
        and channels % CHANNELS_MULTIPLE == 0
    )


def operands(
    kind: str, q: Any, k: Any, v: Any, out: Any, depth_multiple: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An attention kernel's q, k, v as C-contiguous float32 and ``out`` (made where None),
    checked: 2-D, the keys' and values' rows equal, :func:`takes` with the kernel's
    ``depth_multiple``; raises ValueError naming the ``kind`` and what it takes."""
    q, k, v = (np.ascontiguousarray(a, dtype=np.float32) for a in (q, k, v))
    if q.ndim != 2 or v.ndim != 2:
        raise ValueError(
            f"{kind} attention takes 2-D q, k, v; found {q.shape}, {k.shape}, {v.shape}"
        )
    rows, depth = q.shape
    keys, channels = v.shape
    if (
        k.shape != (keys, depth)
        or not takes(depth, channels, depth_multiple)
        or rows == 0
        or keys == 0
    ):
        raise ValueError(
            f"{kind} attention takes q (rows, {depth_multiple}n <= {MAX_DEPTH}), k (keys, the "
            f"same), v (keys, 16n); found {q.shape}, {k.shape}, {v.shape}"
        )
    if out is None:
        out = np.empty((rows, channels), np.float32)
    elif out.shape != (rows, channels) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out: expected C-contiguous float32 {(rows, channels)}")
    return q, k, v, out


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float,
    *,
    blocks: int,
    threads: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``softmax(q k^T * scale) v`` with int8 scores (module docstring).

    q: (rows, depth) float32; k: (keys, depth) float32, depth a multiple of 4 up to 512; v:
    (keys, channels) float32, channels a multiple of 16; ``blocks``: the query blocks
    quantised with a scale each (capped at ``rows``), as
    :func:`~vosfx.engine.openvino_attention.split_attention` cuts them; ``threads``: the kernel's
    threads. Returns (rows, channels) float32 (into ``out`` where given: C-contiguous, that
    shape). Raises ValueError for shapes it does not take, :class:`Unavailable` where the
    kernel cannot run here."""
    q, k, v, out = operands("int8", q, k, v, out, DEPTH_MULTIPLE)
    (rows, depth), (keys, channels) = q.shape, v.shape
    status = with_every_cpu(
        library().vosfx_int8_attention,
        q.ctypes.data,
        k.ctypes.data,
        v.ctypes.data,
        out.ctypes.data,
        rows,
        keys,
        depth,
        channels,
        float(scale),
        min(max(blocks, 1), rows),
        max(threads, 1),
    )
    if status == 2:
        raise MemoryError("int8 attention: out of memory")
    if status != 0:
        raise Unavailable(f"int8 attention refused its inputs (status {status})")
    return out


# the CPUs this process may run on, as seen at import (the module is imported where a graph
# is rewritten, before OpenVINO's threads run it)
_ALLOWED: frozenset[int] | None = (
    frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
)


def cpu_count() -> int:
    """The CPUs this process may run on (the kernel's threads where none are asked)."""
    return len(_ALLOWED) if _ALLOWED else os.cpu_count() or 1


def with_every_cpu(call: Any, *args: Any) -> Any:
    """``call(*args)`` with the calling thread allowed every CPU of :data:`_ALLOWED` meanwhile.

    Why: OpenVINO pins the thread that runs a graph to one CPU (its latency hint's pinning), and
    the kernel's threads, started from it, inherit that mask: on AMD's Zen 4 both then ran on
    one core (memory attention's cross attention 252-284 ms a call against 127-144). The
    thread's own mask is put back after."""
    if _ALLOWED is None:
        return call(*args)
    pinned = frozenset(os.sched_getaffinity(0))
    if pinned == _ALLOWED:
        return call(*args)
    os.sched_setaffinity(0, _ALLOWED)
    try:
        return call(*args)
    finally:
        os.sched_setaffinity(0, pinned)


@functools.cache
def op_class() -> type:
    """The OpenVINO operation that runs :func:`attention` (:func:`kernel_op`), made with the
    query blocks and the threads: ``op_class()(inputs, blocks, threads)``."""

    def run(q: Any, k: Any, v: Any, scale: float, out: Any, blocks: int, threads: int) -> None:
        attention(q, k, v, scale, blocks=blocks, threads=threads, out=out)

    return kernel_op("Int8Attention", run)


def kernel_op(type_name: str, run: Any) -> type:
    """An OpenVINO operation ``type_name`` (domain "vosfx") that runs an attention kernel:
    inputs q (batch, heads, rows, depth), k (batch, heads, keys, depth), v (batch, heads, keys,
    channels) and the scale (a scalar); output (batch, heads, rows, channels), each (batch,
    head) written by ``run(q, k, v, scale, out, *options)`` (2-D views), the options those the
    node was made with: ``op(inputs, *options)``. OpenVINO's CPU plugin runs it through its
    ``evaluate`` (numpy views of its tensors)."""
    import openvino as ov

    class KernelAttention(ov.Op):
        type_info = ov.DiscreteTypeInfo(type_name, "vosfx")

        def __init__(self, inputs: list | None = None, *options: Any):
            super().__init__(self, inputs)
            self.options = options
            if inputs:
                self.constructor_validate_and_infer_types()

        def get_type_info(self) -> Any:
            return KernelAttention.type_info

        def validate_and_infer_types(self) -> None:
            q, v = self.get_input_partial_shape(0), self.get_input_partial_shape(2)
            shape = ov.PartialShape([*list(q)[:-1], v[-1]])
            self.set_output_type(0, ov.Type.f32, shape)

        def clone_with_new_inputs(self, new_inputs: list) -> Any:
            return KernelAttention(new_inputs, *self.options)

        def visit_attributes(self, visitor: Any) -> bool:
            return True

        def has_evaluate(self) -> bool:
            return True

        def evaluate(self, outputs: Any, inputs: Any) -> bool:
            q, k, v = (t.data for t in inputs[:3])
            scale = float(np.asarray(inputs[3].data).reshape(-1)[0])
            outputs[0].shape = ov.Shape([*q.shape[:-1], v.shape[-1]])
            out = outputs[0].data
            for b in range(q.shape[0]):
                for h in range(q.shape[1]):
                    run(q[b, h], k[b, h], v[b, h], scale, out[b, h], *self.options)
            return True

    KernelAttention.__name__ = KernelAttention.__qualname__ = type_name
    return KernelAttention

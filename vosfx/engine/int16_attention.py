"""Memory attention's attentions in one C kernel with 16-bit integer scores: the default (fp32)
path on CPUs where that is faster.

Memory attention spends ~85 % of its arithmetic in its 8 attentions' score products (137.5 of
~160 G multiply-adds a frame at 1024 with a full memory bank). ``kernels/int16_attention.c``
computes them from int16 queries and keys with AVX512_VNNI's word dot products, 32
multiply-adds an instruction where a float32 FMA does 16: on AMD's Zen 4 and Zen 5 both issue
at the same rate, so the scores cost half. Each channel is balanced between the queries and
the keys by a power of two (an outlier channel on one side keeps the others their precision),
and each query and key (less the keys' mean) is scaled by its own factor to a Euclidean norm
just under 46,000, so the int32 sums are exact and the scores' only rounding is each
element's, ~2^-16 of its vector (docstring of that file); the exponentials and the values'
product stay float32. Against float32 attention the output differs by ~1e-5 (relative), a
hundredth of what the parity contract with the official predictor allows (docs/onnx.md).

The kernel is compiled with the system's C compiler on first use, into ``<cache>/kernels/``,
and loaded with ctypes (:mod:`vosfx.native`). :func:`gain` measures this core's word dot
products against its FMAs once per process (~3 ms): on CPUs where the two run at the same
multiply-add rate (Intel's cores issue 512-bit FMAs on two ports and the dot products on one)
the kernel would buy nothing, and ONNX Runtime's float32 attention runs instead. Where there is
no compiler, the compile fails or the CPU lacks the instructions, :func:`why_unavailable` says
why and nothing fails for it. ``VOSFX_INT16_ATTENTION=0`` turns it off (float32 attentions
everywhere, for a comparison or a doubt).
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from vosfx import native
from vosfx.engine.int8_attention import cache_dir, operands
from vosfx.errors import BackendError
from vosfx.native import Unavailable

SOURCE = Path(__file__).parent / "kernels" / "int16_attention.c"
# the channels the kernel takes: queries and keys a multiple of 2 up to 512, values a multiple
# of 16 (int8_attention.takes with this multiple)
DEPTH_MULTIPLE = 2
# the word dot products' multiply-add rate over float32 FMAs' from which the kernel runs: 2.0
# on Zen 4 and Zen 5 (where memory attention then runs ~1.4x faster), 1.0 where the products
# issue on half the FMAs' ports
WORTH = 1.5
# the environment variable that turns the kernel off where the default would take it (ONNX
# Runtime's float32 attentions then run, as on CPUs where it is not faster)
SWITCH = "VOSFX_INT16_ATTENTION"


@functools.cache
def library() -> Any:
    """The compiled kernel (ctypes), compiled on first use; raises :class:`Unavailable`."""
    lib = declared(native.build(SOURCE, cache_dir()))
    if not lib.vosfx_int16_attention_supported():
        raise Unavailable("this CPU lacks AVX512_VNNI")
    return lib


def declared(lib: Any) -> Any:
    """``lib`` (a build of the kernel's source, this one's or another version's) with its
    functions' argument and return types declared for ctypes."""
    pointer, integer = ctypes.c_void_p, ctypes.c_int
    lib.vosfx_int16_attention.argtypes = [pointer] * 4 + [integer] * 4 + [ctypes.c_float, integer]
    lib.vosfx_int16_attention.restype = integer
    lib.vosfx_int16_attention_supported.restype = integer
    lib.vosfx_int16_gain.restype = ctypes.c_double
    return lib


@functools.cache
def gain() -> float:
    """This core's word dot products' multiply-adds a second over its float32 FMAs' (the best
    of 5 short runs each, measured once); raises :class:`Unavailable`."""
    return float(library().vosfx_int16_gain())


def turned_off() -> str | None:
    """``VOSFX_INT16_ATTENTION`` as typed where it turns the kernel off (0, false, no, off),
    else None (unset, empty, 1, true, yes, on); another value raises BackendError."""
    typed = os.environ.get(SWITCH, "")
    value = typed.strip().lower()
    if value in ("0", "false", "no", "off"):
        return typed
    if value in ("", "1", "true", "yes", "on"):
        return None
    raise BackendError(f"{SWITCH}: expected 0 (off) or 1 (on, the default), found {typed!r}")


def why_unavailable(*, worth_it: bool = True) -> str | None:
    """None where the kernel runs here and (``worth_it``: for the default's choice) is
    faster than float32 products (:data:`WORTH`) and not turned off (:func:`turned_off`),
    else why not."""
    off = turned_off() if worth_it else None
    if off is not None:
        return f"turned off ({SWITCH}={off})"
    try:
        measured = gain()
    except Unavailable as err:
        return str(err)
    if worth_it and measured < WORTH:
        return (
            f"this CPU's 16-bit dot products are no faster than its float32 FMAs "
            f"({measured:.2f}x their multiply-adds a second)"
        )
    return None


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float,
    *,
    threads: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``softmax(q k^T * scale) v`` with int16 scores (module docstring).

    q: (rows, depth) float32; k: (keys, depth), depth a multiple of 2 up to 512; v: (keys,
    channels), channels a multiple of 16; ``threads``: the kernel's threads. Returns (rows,
    channels) float32 (into ``out`` where given: C-contiguous, that shape). Raises ValueError
    for shapes it does not take, :class:`Unavailable` where the kernel cannot run here."""
    q, k, v, out = operands("int16", q, k, v, out, DEPTH_MULTIPLE)
    (rows, depth), (keys, channels) = q.shape, v.shape
    status = library().vosfx_int16_attention(
        q.ctypes.data,
        k.ctypes.data,
        v.ctypes.data,
        out.ctypes.data,
        rows,
        keys,
        depth,
        channels,
        float(scale),
        max(threads, 1),
    )
    if status == 2:
        raise MemoryError("int16 attention: out of memory")
    if status != 0:
        raise Unavailable(f"int16 attention refused its inputs (status {status})")
    return out

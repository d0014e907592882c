"""Linear layers' products on AMX's tiles in bfloat16 triples: the default (fp32) path's image
encoder and memory attention on CPUs with AMX (Intel's Xeons since Sapphire Rapids).

Their products (``x w + b``, ONNX's MatMul with a weight) are ~half of the image encoder's
time at 1024 and most of the rest of memory attention's after its attentions. On a CPU with
AMX, ``kernels/int16_attention.c`` computes them as the int16 kernel's AMX form computes its
scores: each input row and each weight split into two bfloat16s, hi and lo (x = hi + lo to
~2^-17 of x), an output summed in float32 from hi.hi + hi.lo + lo.hi by the tiles' products
(TDPBF16PS, ~16 times an FMA's multiply-adds a cycle, three an output). No factor per row:
the rounding is each element's, ~1e-6 of |x| |w| from the exact product, float32's order.
Emulated in torch over every linear layer of both stages at 1024, the tracked logits stayed
within 3.8e-6 of float32's, where the parity contract allows 1e-3 (docs/benchmarks/onnx.md).

The weights are packed once (:func:`pack`, when the stage's parts load); each call splits its
input rows. Like the attentions' AMX form this never ran on an AMX CPU in this project's
machines: the tests emulate the tile instructions in C. So the default takes it only where
the int16 kernel took its AMX form (:func:`vosfx.engine.int16_attention.form`), whose check in
a process of its own covers these products too (:func:`vosfx.engine.int16_attention.
self_check`), and where its products, measured once a process on three of the stages' shapes
(:func:`gain`), ran :data:`WORTH` times numpy's float32 products; that measure also picks how
many rows a thread takes at a time, the one part of the tiling the kernel leaves open.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vosfx.engine import int16_attention, ort_parts
from vosfx.engine.int8_attention import cpu_count
from vosfx.errors import BackendError
from vosfx.native import Unavailable

__all__ = [
    "Gain",
    "Packed",
    "Unavailable",
    "gain",
    "linear",
    "pack",
    "steps",
    "switched_off",
    "variant_parts",
    "why_unused",
]

# the environment variable that keeps the linear products in ONNX Runtime's float32 kernels
# where the default would run them in the AMX form (the attentions' form is
# VOSFX_INT16_ATTENTION's)
SWITCH = "VOSFX_AMX_LINEAR"
# how many times numpy's float32 products (its BLAS) the AMX form's must run on :data:`PROBES` for
# the default to take them. ONNX Runtime's MatMul + Add took 0.84-0.87x numpy's time summed over
# them, 0.78-1.18x shape by shape (AMD Zen 4, 2026-12-07: benchmarks/linear_reference.py), so
# 1.5x numpy's is ~1.3x ONNX Runtime's: ~14 % off the image encoder (whose products are ~60 %
# of it), 3x what cutting it at each product costs (~4 %, docs/benchmarks/onnx.md)
WORTH = 1.5
# the products :func:`gain` times, (rows, depth, outputs) at 1024 with fewer rows: Hiera's first
# stage's MLP, memory attention's projections and its MLP (~1.6 G multiply-adds in all)
PROBES = ((8192, 96, 384), (4096, 256, 256), (2048, 256, 2048))


def switched_off() -> bool:
    """Whether ``VOSFX_AMX_LINEAR`` turns the AMX form's linear products off (0, false, no,
    off); another value than those and 1, true, yes, on or empty raises BackendError."""
    value = os.environ.get(SWITCH, "").strip().lower()
    if value in int16_attention.OFF:
        return True
    if value in int16_attention.ON:
        return False
    raise BackendError(
        f"{SWITCH}: expected 0 (off) or 1 (on, the default), found {os.environ[SWITCH]!r}"
    )


def why_unused() -> str | None:
    """None where the default (fp32 on the CPU) runs the linear layers' products in the AMX
    form: where the int16 kernel runs its attentions in its AMX form
    (:func:`vosfx.engine.int16_attention.form`: the CPU has it, its check passed, its products
    are worth it), the linear products measure :data:`WORTH` it (:func:`gain`) and
    ``VOSFX_AMX_LINEAR`` does not turn it off; else why not."""
    if switched_off():
        return f"turned off ({SWITCH}={os.environ[SWITCH]})"
    try:
        chosen = int16_attention.form()
    except Unavailable as err:
        return f"the int16 kernel does not run here: {err}"
    if chosen != "amx":
        return f"the int16 kernel runs in its {int16_attention.FORMS[chosen][1]} form, not AMX's"
    try:
        measured = gain()
    except (Unavailable, MemoryError) as err:  # the form runs here: a run out of memory
        return f"its products could not be measured: {err}"
    if measured.ratio < WORTH:
        return (
            f"its products ran {measured.ratio:.2f}x numpy's float32 products here, "
            f"under the {WORTH}x the default takes them from"
        )
    return None


@dataclass(frozen=True)
class Gain:
    """What :func:`gain` measured: numpy's float32 time over the AMX form's on
    :data:`PROBES`, the form at its fastest ``block`` (the rows a thread takes at a time)."""

    ratio: float
    block: int


@functools.cache
def gain(*, emulated: bool = False) -> Gain:
    """The AMX form's products against numpy's float32 ``x @ w + b`` on :data:`PROBES`, both
    on every CPU this process may use (numpy's BLAS takes them all: the ratio is the CPU's,
    whatever threads a backend is given), the best of 3 runs each after one to warm up, once
    a process (~0.3 s projected on AMX; ``emulated``: the build that emulates the tiles, for
    tests: ~2 s). Every block of :data:`vosfx.engine.int16_attention.LINEAR_BLOCKS` is timed;
    the fastest one's total makes the ratio. Raises :class:`Unavailable` where the form does
    not run."""
    rng = np.random.default_rng(0)
    threads = cpu_count()
    probes = []
    for rows, depth, outputs in PROBES:
        x = rng.standard_normal((rows, depth), np.float32)
        w = rng.standard_normal((depth, outputs), np.float32)
        b = rng.standard_normal(outputs, np.float32)
        probes.append((x, w, b, np.empty((rows, outputs), np.float32)))
    form_time = dict.fromkeys(int16_attention.LINEAR_BLOCKS, 0.0)
    for x, w, b, out in probes:
        packed = pack(w, b, emulated=emulated)
        for block in form_time:
            form_time[block] += _best(linear, x, packed, threads=threads, out=out, block=block)
    # numpy's after the form's: OpenBLAS's threads spin on the cores for a while after a product
    numpy_time = sum(_best(_numpy_product, *probe) for probe in probes)
    block = min(form_time, key=lambda b: form_time[b])
    return Gain(numpy_time / form_time[block], block)


def _numpy_product(x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.add(np.matmul(x, w, out=out), b, out=out)


def _best(run: Callable[..., object], *args: object, **kwargs: object) -> float:
    """The shortest of 3 timed calls of ``run(*args, **kwargs)``, after one untimed."""
    run(*args, **kwargs)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best


def variant_parts(bundle: Path, manifest: dict) -> tuple[dict[str, list[str]], str | None]:
    """The bundle's parts-linear part files by stage (:func:`vosfx.engine.ort_parts.
    part_files`) where the default runs the products in the AMX form here, and None; else {}
    and why not (:func:`why_unused`, or the bundle lacks the variant)."""
    variant = manifest.get("variants", {}).get(ort_parts.LINEAR_VARIANT, {})
    found = {stage: ort_parts.part_files(variant, stage) for stage in ort_parts.STAGES}
    found = {stage: parts for stage, parts in found.items() if parts}
    why = why_unused()
    if why is None and not found:
        why = (
            f"the bundle {bundle} lacks the {ort_parts.LINEAR_VARIANT} variant (made on first "
            "use where the onnx package is installed: pip install onnx)"
        )
    return ({}, why) if why is not None else (found, None)


def steps(
    bundle: Path, manifest: dict, stage: str, *, threads: int
) -> Callable[[np.ndarray, ort_parts.Linear], np.ndarray]:
    """:class:`vosfx.engine.ort_parts.AttentionParts`' linear steps of ``stage`` from the
    bundle's parts-linear variant: its weights packed once, each step's product in the AMX
    form on ``threads`` threads, as many rows at a time as ran fastest here (:func:`gain`)."""
    entry = manifest["variants"][ort_parts.LINEAR_VARIANT]
    block = gain().block  # measured once a process, by why_unused already
    arrays = ort_parts.linear_weights(bundle, entry, stage)
    packed = {  # the product after part i: weight w<i>, bias b<i> where it has one
        key: pack(w, arrays.get("b" + key[1:])) for key, w in arrays.items() if key.startswith("w")
    }

    def step(x: np.ndarray, linear_step: ort_parts.Linear) -> np.ndarray:
        return linear(x, packed[linear_step.weight], threads=threads, block=block)

    return step


class Packed:
    """A weight (depth, outputs) packed for :func:`linear`, with its bias (outputs,) or None."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, *, emulated: bool = False):
        if weight.ndim != 2 or weight.shape[0] < 1 or weight.shape[1] < 1:
            raise ValueError(
                f"a linear layer's weight must be (depth, outputs), found {weight.shape}"
            )
        self.depth, self.outputs = (int(n) for n in weight.shape)
        if bias is not None and bias.shape != (self.outputs,):
            raise ValueError(f"the bias must be ({self.outputs},), found {bias.shape}")
        self.emulated = emulated
        weight = np.ascontiguousarray(weight, np.float32)
        self.data = int16_attention.pack_linear(weight, emulated=emulated)
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32)


def pack(weight: np.ndarray, bias: np.ndarray | None = None, *, emulated: bool = False) -> Packed:
    """``weight`` (depth, outputs) float32 and its ``bias`` packed for :func:`linear`
    (``emulated``: for the build that emulates the tiles, tests)."""
    return Packed(weight, bias, emulated=emulated)


def linear(
    x: np.ndarray,
    packed: Packed,
    *,
    threads: int,
    out: np.ndarray | None = None,
    block: int = int16_attention.LINEAR_BLOCK,
) -> np.ndarray:
    """``x @ weight (+ bias)`` for x (..., depth) float32 in bfloat16 triples on AMX's tiles
    (module docstring), ``block`` rows a thread at a time (the same outputs whichever); returns
    (..., outputs) float32 (into ``out`` where given: C-contiguous, that shape). Raises
    ValueError for a depth that is not the weight's or a block not among
    :data:`vosfx.engine.int16_attention.LINEAR_BLOCKS`, :class:`Unavailable` where the CPU
    does not run the AMX form."""
    if x.shape[-1] != packed.depth:
        raise ValueError(f"the input has {x.shape[-1]} channels, the weight {packed.depth}")
    x = np.ascontiguousarray(x, np.float32)
    shape = (*x.shape[:-1], packed.outputs)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 {shape}")
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    if rows:
        int16_attention.linear_product(
            x.reshape(rows, packed.depth),
            packed.data,
            packed.depth,
            packed.outputs,
            packed.bias,
            out.reshape(rows, packed.outputs),
            threads=threads,
            block=block,
            emulated=packed.emulated,
        )
    return out

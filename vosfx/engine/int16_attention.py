"""Memory attention's attentions in one C kernel with 16-bit scores' products: the default
(fp32) path on CPUs where that is faster.

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

On CPUs with AMX (Intel's Xeons since Sapphire Rapids, whose word dot products run no faster
than their FMAs) the kernel has a second form of its scores (:data:`FORMS`): each balanced
query and key split into two bfloat16s, hi and lo (x = hi + lo to ~2^-17 of x), and a score
summed in float32 from hi.hi + hi.lo + lo.hi by AMX's tile products (TDPBF16PS), ~16 times
an FMA's multiply-adds a cycle each, three a score. Its rounding is each element's, not each
vector's: ~30x closer to the exact attention than the AVX-512 form's on isotropic operands
(8e-7 against 2.7e-5; docs/benchmarks/onnx.md, forty-third pass). Where the values' channels
are a multiple of 32 (memory attention's 64 and 256, Hiera's 96) its values' product runs on
the tiles too, in the same triples: each chunk's exponentials split as the queries are, the
values as the keys are (a channel whose values all lie on one side of 0 less its midrange,
added back at the end, as in both forms: the values' rounding ~1e-5 of their range, not of
their magnitude; forty-sixth pass). It has never run
on an AMX CPU in this project's machines: its tests run it with the tile instructions
emulated in C (``emulated=True``), and before the default takes it a process of its own
checks its output against float64 once per build (:func:`checked`), so that a fault or a
wrong sum leaves the float32 attentions in place rather than a crashed or wrong render.

The kernel is compiled with the system's C compiler on first use, into ``<cache>/kernels/``,
and loaded with ctypes (:mod:`vosfx.native`). :func:`gain` measures this core's score
products against its FMAs once per process (~3 ms a form): the default takes the first form
(:func:`form`) that runs here and is :data:`WORTH` it; on CPUs where the word products run at
the FMAs' multiply-add rate and there is no AMX (Intel's cores issue 512-bit FMAs on two
ports and the dot products on one) the kernel would buy nothing, and ONNX Runtime's float32
attention runs instead. Where there is no compiler, the compile fails or the CPU lacks the
instructions, :func:`why_unavailable` says why and nothing fails for it.
``VOSFX_INT16_ATTENTION=0`` turns it off (float32 attentions everywhere, for a comparison or
a doubt); ``=avx512`` or ``=amx`` runs that form wherever the CPU has it, faster or not.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vosfx import native
from vosfx.engine.int8_attention import cache_dir, cpu_count, operands
from vosfx.errors import BackendError
from vosfx.native import Unavailable

SOURCE = Path(__file__).parent / "kernels" / "int16_attention.c"
# the channels the kernel takes: queries and keys a multiple of 2 up to 512, values a multiple
# of 16 (int8_attention.takes with this multiple)
DEPTH_MULTIPLE = 2
# the kernel's forms of its scores' products, in the order the default tries them: name ->
# (the C side's number, the instructions it needs)
FORMS = {"amx": (2, "AMX-BF16"), "avx512": (1, "AVX512_VNNI")}
# the AMX form with bfloat16 products alone (hi.hi, ~2^-9 of each): the bf16 tier's attentions
# on CPUs with AMX (vosfx.engine.amx_attention), never the default path's
TIER_FORMS = {"amx-bf16": (3, "AMX-BF16")}
# the forms checked in a process of their own before the default takes them (checked())
CHECKED_FIRST = ("amx",)
# the score products' multiply-add rate over float32 FMAs' from which the default takes a
# form: 2.0 for the AVX-512 form on Zen 4 and Zen 5 (where memory attention then runs ~1.4x
# faster), 1.0 where the word products issue on half the FMAs' ports
WORTH = 1.5
# the AMX form's whole attention over the AVX-512 form's (attention_gain) from which the
# default takes it: where AMX is (Intel's Xeons) the word products run at the float32 FMAs'
# rate, so the AVX-512 form stands for a float32 attention; its tiles' raw rate (gain) says
# nothing of their loads, and the Xeon VMs here ran AMX products in OpenVINO and torch at only
# ~2-4x their FMAs, where three products a score may not pay
AMX_WORTH = 1.3
# the attention it is timed on: one of memory attention's query blocks at 1024 (512 queries)
# against 8,192 keys, 256 channels of queries and keys, 64 of values; the best of 5 calls
ATTENTION_SHAPE = (512, 8192, 256, 64)
# the input rows a thread of the AMX form's linear products takes at a time (a multiple of 32
# up to the kernel's LINEAR_ROWS; vosfx.engine.amx_linear measures which runs fastest here),
# and the block where none was measured
LINEAR_BLOCKS = (32, 64, 128, 256)
LINEAR_BLOCK = 128
# the environment variable that turns the kernel off where the default would take it (ONNX
# Runtime's float32 attentions then run, as on CPUs where it is not faster), or names a form
SWITCH = "VOSFX_INT16_ATTENTION"
# the values that turn it (and VOSFX_AMX_LINEAR) off, and on (or leave the default)
OFF = ("0", "false", "no", "off")
ON = ("", "1", "true", "yes", "on")
# the self-check's bound on the output's distance from float64 (relative to its norm): the
# AMX form's measured ~1e-5 (emulated), the AVX-512 form's ~3e-4 (its int16 rounding on those
# isotropic operands); a fault in a layout or a sum gives ~1
CHECK_BOUND = 5e-4


@functools.cache
def library(*, emulated: bool = False) -> Any:
    """The compiled kernel (ctypes), compiled on first use; raises :class:`Unavailable`.
    ``emulated``: a build whose AMX form runs the tile instructions as C loops (tests, on
    CPUs with AVX-512 and no AMX; ~1000x slower), kept beside the other."""
    if emulated:
        flags, name = ("-DVOSFX_EMULATE_AMX",), "int16_attention_emulated"
        lib = declared(native.build(SOURCE, cache_dir(), flags, name=name))
    else:
        lib = declared(native.build(SOURCE, cache_dir()))
    if not any(lib.vosfx_int16_attention_supported(code) for code, _ in FORMS.values()):
        raise Unavailable("this CPU lacks AVX512_VNNI")
    return lib


def declared(lib: Any) -> Any:
    """``lib`` (a build of the kernel's source, this one's or another version's) with its
    functions' argument and return types declared for ctypes."""
    integer = ctypes.c_int
    # q, k, v, out; rows, keys, depth, channels; scale; threads, form
    arguments = [ctypes.c_void_p] * 4 + [integer] * 4 + [ctypes.c_float] + [integer] * 2
    lib.vosfx_int16_attention.argtypes = arguments
    lib.vosfx_int16_attention.restype = integer
    lib.vosfx_int16_attention_supported.argtypes = [integer]
    lib.vosfx_int16_attention_supported.restype = integer
    lib.vosfx_int16_gain.argtypes = [integer]
    lib.vosfx_int16_gain.restype = ctypes.c_double
    if not hasattr(lib, "vosfx_amx_linear"):  # an older source's build (benchmarks)
        return lib
    # the AMX form's linear products (vosfx.engine.amx_linear)
    pointer = ctypes.c_void_p
    lib.vosfx_amx_linear_packed_size.argtypes = [integer, integer]
    lib.vosfx_amx_linear_packed_size.restype = ctypes.c_size_t
    lib.vosfx_amx_linear_pack.argtypes = [pointer, integer, integer, pointer]
    lib.vosfx_amx_linear_pack.restype = integer
    # x, rows, depth, w, outputs, bias, out, threads, block
    lib.vosfx_amx_linear.argtypes = [pointer, integer, integer, pointer, integer, pointer]
    lib.vosfx_amx_linear.argtypes += [pointer, integer, integer]
    lib.vosfx_amx_linear.restype = integer
    return lib


def _form(name: str) -> tuple[int, str]:
    """The form ``name``'s (C side's number, instructions it needs): :data:`FORMS`,
    :data:`TIER_FORMS`."""
    return FORMS[name] if name in FORMS else TIER_FORMS[name]


def supported(name: str, *, emulated: bool = False) -> bool:
    """Whether this CPU runs the form ``name`` (:data:`FORMS`, :data:`TIER_FORMS`); raises
    :class:`Unavailable` where the kernel cannot be built or the CPU runs no form."""
    return bool(library(emulated=emulated).vosfx_int16_attention_supported(_form(name)[0]))


@functools.cache
def gain(name: str = "avx512") -> float:
    """This core's score products' multiply-adds a second in the form ``name`` over its
    float32 FMAs' (the best of 5 short runs each, measured once; the AMX form's a third of its
    tiles', three products a score); raises :class:`Unavailable` (also where the CPU lacks
    the form)."""
    if not supported(name):
        raise Unavailable(f"this CPU lacks {FORMS[name][1]}")
    return float(library().vosfx_int16_gain(FORMS[name][0]))


def switch() -> str | None:
    """``VOSFX_INT16_ATTENTION``: "off" where it turns the kernel off (0, false, no, off), a
    form's name where it names one, else None (unset, empty, 1, true, yes, on); another value
    raises BackendError."""
    value = os.environ.get(SWITCH, "").strip().lower()
    if value in OFF:
        return "off"
    if value in FORMS:
        return value
    if value in ON:
        return None
    raise BackendError(
        f"{SWITCH}: expected 0 (off), 1 (on, the default) or a form ({', '.join(FORMS)}), "
        f"found {os.environ[SWITCH]!r}"
    )


def form(*, worth_it: bool = True) -> str:
    """The form the kernel runs in here (:data:`FORMS`): the one ``VOSFX_INT16_ATTENTION``
    names, else the first this CPU runs that (``worth_it``: for the default's choice) is
    :data:`WORTH` it and, for :data:`CHECKED_FIRST`, passed :func:`checked` (the AMX form
    also timed on a whole attention: :func:`attention_gain`, :data:`AMX_WORTH`). Raises
    :class:`Unavailable` saying why there is none (also where the variable turns the kernel
    off, for the default's choice)."""
    chosen = switch()
    if chosen == "off":
        if worth_it:
            raise Unavailable(f"turned off ({SWITCH}={os.environ[SWITCH]})")
        chosen = None
    if chosen is not None:
        if not supported(chosen):
            raise Unavailable(f"this CPU lacks {FORMS[chosen][1]} ({SWITCH}={os.environ[SWITCH]})")
        return chosen
    why = []
    for name in FORMS:
        if not supported(name):
            continue
        if not worth_it:
            return name
        failed = checked(name) if name in CHECKED_FIRST else None  # before it runs here
        if failed is not None:
            why.append(failed)
            continue
        measured = gain(name)
        if measured < WORTH:
            why.append(
                f"this CPU's {FORMS[name][1]} products are no faster than its float32 FMAs "
                f"({measured:.2f}x their multiply-adds a second)"
            )
            continue
        if name == "amx":  # and a whole attention of it (its loads too)
            try:
                whole = attention_gain()
            except (Unavailable, MemoryError) as err:
                why.append(f"its {FORMS[name][1]} form's attentions could not be timed: {err}")
                continue
            if whole < AMX_WORTH:
                why.append(
                    f"its {FORMS[name][1]} form's attentions ran {whole:.2f}x the AVX-512 "
                    f"form's here, under the {AMX_WORTH}x the default takes it from"
                )
                continue
        return name
    raise Unavailable("; ".join(why))


@functools.cache
def attention_gain() -> float:
    """The AMX form's speed over the AVX-512 form's on one attention of
    :data:`ATTENTION_SHAPE` (:func:`timed_operands`) on every CPU of the process: their best
    times' ratio (:func:`alternating_best`), measured once a process (~0.1 s on a Xeon).
    Raises :class:`Unavailable` where either cannot run."""
    q, k, v = timed_operands()
    amx, avx512 = alternating_best(
        [
            functools.partial(attention, q, k, v, 1 / 16, threads=cpu_count(), name=name)
            for name in ("amx", "avx512")
        ]
    )
    return avx512 / amx


def timed_operands() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The queries, keys and values of the attention the kernel's forms are timed on
    (:data:`ATTENTION_SHAPE`, standard normal, seeded)."""
    rows, keys, depth, channels = ATTENTION_SHAPE
    rng = np.random.default_rng(0)
    q = rng.standard_normal((rows, depth), dtype=np.float32)
    k = rng.standard_normal((keys, depth), dtype=np.float32)
    return q, k, rng.standard_normal((keys, channels), dtype=np.float32)


def alternating_best(calls: list[Any], runs: int = 5) -> list[float]:
    """Each of ``calls``' shortest time over ``runs`` rounds in which they take turns, after
    one untimed round (each warmed)."""
    best = [float("inf")] * len(calls)
    for run in range(runs + 1):
        for i, call in enumerate(calls):
            start = time.perf_counter()
            call()
            if run:
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def why_unavailable(*, worth_it: bool = True) -> str | None:
    """None where the kernel runs here in some form (:func:`form`), else why not."""
    try:
        form(worth_it=worth_it)
    except Unavailable as err:
        return str(err)
    return None


def self_check(name: str, *, emulated: bool = False) -> float:
    """The form ``name``'s output's largest distance from float64's (relative to the output's
    norm) over three attentions of the shapes memory attention and Hiera give it (channels not
    a multiple of the tiles', keys past a chunk, an offset the keys' mean takes, values all
    positive, which the kernel takes less their midrange and adds it back) and, for the
    AMX form, two linear products (:mod:`vosfx.engine.amx_linear`), once its speed check
    (:func:`gain`'s code) has run."""
    library(emulated=emulated).vosfx_int16_gain(FORMS[name][0])  # its timing's code too
    rng = np.random.default_rng(17)
    worst = 0.0
    for rows, keys, depth, channels in ((100, 300, 256, 64), (49, 1030, 96, 16), (13, 17, 34, 32)):
        q = rng.standard_normal((rows, depth)).astype(np.float32) * 2
        k = (rng.standard_normal((keys, depth)) + 0.7).astype(np.float32)
        v = (np.abs(rng.standard_normal((keys, channels))) + 0.5).astype(np.float32)
        got = attention(q, k, v, depth**-0.5, threads=2, name=name, emulated=emulated)
        s = (q.astype(np.float64) @ k.T.astype(np.float64)) * depth**-0.5
        e = np.exp(s - s.max(1, keepdims=True))
        want = (e @ v) / e.sum(1, keepdims=True)
        worst = max(worst, float(np.linalg.norm(got - want) / np.linalg.norm(want)))
    if name == "amx":  # its linear products too (vosfx.engine.amx_linear)
        for rows, depth, outputs, block in ((300, 96, 288, 256), (33, 100, 50, 32)):
            x = rng.standard_normal((rows, depth)).astype(np.float32)
            w = rng.standard_normal((depth, outputs)).astype(np.float32)
            b = rng.standard_normal(outputs).astype(np.float32)
            got = np.empty((rows, outputs), np.float32)
            data = pack_linear(w, emulated=emulated)
            linear_product(
                x, data, depth, outputs, b, got, threads=2, block=block, emulated=emulated
            )
            want = x.astype(np.float64) @ w.astype(np.float64) + b
            worst = max(worst, float(np.linalg.norm(got - want) / np.linalg.norm(want)))
    return worst


def pack_linear(weight: np.ndarray, *, emulated: bool = False) -> np.ndarray:
    """A linear layer's weight (depth, outputs) float32, C-contiguous, packed for
    :func:`linear_product` (uint16: bfloat16 hi and lo parts in the tiles' layout)."""
    lib = library(emulated=emulated)
    depth, outputs = weight.shape
    data = np.empty(lib.vosfx_amx_linear_packed_size(depth, outputs), np.uint16)
    lib.vosfx_amx_linear_pack(weight.ctypes.data, depth, outputs, data.ctypes.data)
    return data


def linear_product(
    x: np.ndarray,
    data: np.ndarray,
    depth: int,
    outputs: int,
    bias: np.ndarray | None,
    out: np.ndarray,
    *,
    threads: int,
    block: int = LINEAR_BLOCK,
    emulated: bool = False,
) -> None:
    """out (rows, outputs) = x (rows, depth) w + bias in the AMX form, w packed by
    :func:`pack_linear`, ``block`` rows at a time (:data:`LINEAR_BLOCKS`: the same outputs
    whichever); every array float32 C-contiguous (the caller's to check: the C side reads them
    as given). Raises :class:`Unavailable` where the CPU does not run the form."""
    if block not in LINEAR_BLOCKS:
        raise ValueError(f"block must be one of {LINEAR_BLOCKS}, found {block}")
    status = library(emulated=emulated).vosfx_amx_linear(
        x.ctypes.data,
        len(x),
        depth,
        data.ctypes.data,
        outputs,
        None if bias is None else bias.ctypes.data,
        out.ctypes.data,
        max(threads, 1),
        block,
    )
    if status == 2:
        raise MemoryError("AMX linear product: out of memory")
    if status != 0:
        raise Unavailable(f"this CPU lacks {FORMS['amx'][1]}")


@functools.cache
def checked(name: str) -> str | None:
    """None where the form ``name`` passed :func:`self_check` (within :data:`CHECK_BOUND`) in
    a process of its own, else why not (its output's distance, or how the process ended:
    a crash there leaves this one running). Run once per build of the kernel, the verdict
    kept beside it (``<build>.<name>-checked``); ~1 s."""
    built = Path(library()._name)
    verdict = built.with_name(f"{built.name}.{name}-checked")
    try:
        said = verdict.read_text(encoding="utf-8")
    except OSError:
        code = f"from vosfx.engine.int16_attention import self_check; print(self_check({name!r}))"
        try:
            done = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=60,  # ~1 s: starting Python, a build already there
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as err:
            return f"the {FORMS[name][1]} form's check could not run: {err}"
        if done.returncode != 0:
            tail = " ".join(done.stderr.split())[-200:]
            said = f"the {FORMS[name][1]} form's check ended with status {done.returncode}: {tail}"
        else:
            try:
                distance = float(done.stdout.split()[-1])
            except (IndexError, ValueError):
                distance = float("nan")
            said = (
                "ok"
                if distance < CHECK_BOUND
                else (
                    f"the {FORMS[name][1]} form's output was {distance:.1e} from float64's "
                    f"(bound {CHECK_BOUND:.0e})"
                )
            )
        try:
            verdict.write_text(said, encoding="utf-8")
        except OSError:
            pass
        for old in built.parent.glob(f"{SOURCE.stem}-*.so.{name}-checked"):
            if old != verdict:  # an older build's, removed with it
                with contextlib.suppress(OSError):
                    old.unlink()
    return None if said == "ok" else said


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float,
    *,
    threads: int,
    out: np.ndarray | None = None,
    name: str | None = None,
    emulated: bool = False,
) -> np.ndarray:
    """``softmax(q k^T * scale) v`` with 16-bit scores' products (module docstring).

    q: (rows, depth) float32; k: (keys, depth), depth a multiple of 2 up to 512; v: (keys,
    channels), channels a multiple of 16; ``threads``: the kernel's threads; ``name``: the
    form (:data:`FORMS`, :data:`TIER_FORMS`; None: ``form(worth_it=False)``); ``emulated``:
    the build whose AMX
    form emulates the tile instructions (tests). Returns (rows, channels) float32 (into
    ``out`` where given: C-contiguous, that shape). Raises ValueError for shapes it does not
    take, :class:`Unavailable` where the kernel or the form cannot run here."""
    name = form(worth_it=False) if name is None else name
    q, k, v, out = operands("int16", q, k, v, out, DEPTH_MULTIPLE)
    (rows, depth), (keys, channels) = q.shape, v.shape
    status = library(emulated=emulated).vosfx_int16_attention(
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
        _form(name)[0],
    )
    if status == 2:
        raise MemoryError("int16 attention: out of memory")
    if status == 1 and not supported(name, emulated=emulated):  # the C side checks the CPU
        raise Unavailable(f"this CPU lacks {_form(name)[1]}")
    if status != 0:
        raise Unavailable(f"int16 attention refused its inputs (status {status})")
    return out

"""The attention kernels' error and time, this checkout's against another commit's: the default
path's int16 kernel (``--kernel int16``) or the bf16 tier's int8 kernel (``--kernel int8``).

Each case is one attention (256 queries, 2,048 keys, 256 channels of queries and keys, 64 of
values, scale 1/16) on random operands: isotropic, then with one channel 100x the others on
one side (trained models' outlier channels), a 30x channel on each side, or channels of the
queries scaled against the keys' (two channels' queries x30 and /30, their keys the inverse:
the attention the isotropic case's), or the values 100x their spread away from 0 (an offset
a channel of trained models' values may carry; since the forty-sixth pass both kernels take
a channel less its midrange there). Prints the output's largest distance from the exact
attention (float64) for the kernel of this checkout (the int16 kernel in each form this CPU
runs, and with ``--emulated-amx`` its AMX form with the tile instructions emulated: errors
alone, its time is the emulation's), the kernel of ``--before REV`` (its source from git,
built the same way; the int16 kernel in its AVX-512 form) and float32 (numpy), then the best
of ``--runs`` times on memory attention's two shapes at 1024 (cross: 4,096 x 28,736 keys, 64
channels of values; self: 4,096 x 4,096, 256), the kernels alternating. Needs a CPU the kernel runs on
(``vosfx doctor``: "int16 attention kernel", "int8 attention kernel") and a C compiler.

    python benchmarks/attention_precision.py --before 23580d2~1
    python benchmarks/attention_precision.py --kernel int8 --before 2f96b7a
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vosfx import native
from vosfx.engine import int8_attention, int16_attention

# kernel: (its module, its source in the repository)
KERNELS = {
    "int16": (int16_attention, "vosfx/engine/kernels/int16_attention.c"),
    "int8": (int8_attention, "vosfx/engine/kernels/int8_attention.c"),
}
# the bf16 tier's query blocks in memory attention (openvino_runtime's attention blocks)
INT8_BLOCKS = 8
CASES = {  # name: ({channel: (queries times, keys times)}, the values' offset)
    "isotropic": ({}, 0.0),
    "one query channel 100x": ({3: (100, 1)}, 0.0),
    "one key channel 100x": ({3: (1, 100)}, 0.0),
    "a query channel 30x, another key channel 30x": ({3: (30, 1), 7: (1, 30)}, 0.0),
    "channels scaled against each other (x30, /30)": ({3: (30, 1 / 30), 7: (1 / 30, 30)}, 0.0),
    "values 100x their spread from 0": ({}, 100.0),
}
SHAPES = {"cross": (4096, 28736, 256, 64), "self": (4096, 4096, 256, 256)}


def function(kind: str, lib, form: int | None = None):
    """The kernel's C function of ``lib`` (its types declared) as ``fn(q_ptr, k_ptr, v_ptr,
    out_ptr, rows, keys, depth, channels, scale)``, 2 threads (the int8 kernel with the
    tier's query blocks; the int16 kernel in ``form``, the C side's number, where its source
    takes one)."""
    if kind == "int16":
        int16 = lib.vosfx_int16_attention
        return lambda *a: int16(*a, 2) if form is None else int16(*a, 2, form)
    int8 = lib.vosfx_int8_attention
    return lambda *a: int8(*a, min(INT8_BLOCKS, a[4]), 2)


def kernel_of(kind: str, rev: str, folder: Path):
    """The kernel's C function as commit ``rev`` has it, built into ``folder``."""
    source = folder / Path(KERNELS[kind][1]).name
    text = subprocess.check_output(["git", "show", f"{rev}:{KERNELS[kind][1]}"], cwd=ROOT)
    source.write_bytes(text)
    lib = KERNELS[kind][0].declared(native.build(source, folder))
    if kind != "int16":
        return function(kind, lib)
    if b"int form" not in text:  # a kernel before its forms: no form argument
        attend = lib.vosfx_int16_attention
        attend.argtypes = attend.argtypes[:-1]
        return function(kind, lib)
    return function(kind, lib, int16_attention.FORMS["avx512"][0])


def attend(fn, q, k, v, scale: float) -> np.ndarray:
    out = np.empty((q.shape[0], v.shape[1]), np.float32)
    status = fn(q.ctypes.data, k.ctypes.data, v.ctypes.data, out.ctypes.data, *q.shape[:1],
                k.shape[0], q.shape[1], v.shape[1], scale)  # fmt: skip
    if status:
        raise RuntimeError(f"the kernel returned {status}")
    return out


def softmax_attention(q, k, v, scale: float, dtype) -> np.ndarray:
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    s = (q @ k.T) * dtype(scale)
    e = np.exp(s - s.max(1, keepdims=True))
    return (e @ v) / e.sum(1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", choices=sorted(KERNELS), default="int16")
    ap.add_argument("--before", help="a commit whose kernel to compare (default: none)")
    ap.add_argument("--runs", type=int, default=5, help="timed calls per kernel and shape")
    ap.add_argument(
        "--emulated-amx",
        action="store_true",
        help="the int16 kernel's AMX form with its tile instructions emulated, errors alone",
    )
    args = ap.parse_args()
    module = KERNELS[args.kernel][0]
    forms: dict[str, int | None] = {"": None}  # this checkout's kernels: column suffix -> form
    if args.kernel == "int16":
        why = int16_attention.why_unavailable(worth_it=False)
        ours = [] if why else [f for f in int16_attention.FORMS if int16_attention.supported(f)]
        gains = {f: round(int16_attention.gain(f), 2) for f in ours}
        print(json.dumps({"score products over float32 FMAs, multiply-adds a second": gains}))
        forms = {f" ({f})": int16_attention.FORMS[f][0] for f in ours}
    else:
        why = int8_attention.why_unavailable()
    if why is not None:
        sys.exit(f"the {args.kernel} attention kernel cannot run here: {why}")
    with tempfile.TemporaryDirectory(prefix=f"vosfx-{args.kernel}-") as tmp:
        kernels = {
            f"this checkout{suffix}": function(args.kernel, module.library(), form)
            for suffix, form in forms.items()
        }
        if args.before:
            kernels[args.before] = kernel_of(args.kernel, args.before, Path(tmp))
        timed = list(kernels)
        if args.emulated_amx and args.kernel == "int16":
            emulating = int16_attention.library(emulated=True)
            amx = int16_attention.FORMS["amx"][0]
            kernels["this checkout (amx, emulated)"] = function("int16", emulating, amx)
        rng = np.random.default_rng(0)
        names = list(kernels)
        print(f"{args.kernel} kernel: the output's largest distance from the exact attention")
        print("| operands | " + " | ".join(names) + " | float32 |")
        print("|---|" + "---:|" * (len(names) + 1))
        for case, (times, offset) in CASES.items():
            q = rng.standard_normal((256, 256)).astype(np.float32)
            k = (rng.standard_normal((2048, 256)) + 0.5).astype(np.float32)
            v = (rng.standard_normal((2048, 64)) + offset).astype(np.float32)
            for channel, (q_times, k_times) in times.items():
                q[:, channel] *= q_times
                k[:, channel] *= k_times
            want = softmax_attention(q, k, v, 1 / 16, np.float64)
            errors = [np.abs(attend(fn, q, k, v, 1 / 16) - want).max() for fn in kernels.values()]
            errors.append(np.abs(softmax_attention(q, k, v, 1 / 16, np.float32) - want).max())
            print(f"| {case} | " + " | ".join(f"{e:.1e}" for e in errors) + " |", flush=True)
        names = timed  # an emulation's time says nothing
        print("\n| shape | " + " | ".join(f"{n} ms" for n in names) + " |")
        print("|---|" + "---:|" * len(names))
        for shape, (rows, keys, depth, channels) in SHAPES.items():
            q = rng.standard_normal((rows, depth), dtype=np.float32)
            k = rng.standard_normal((keys, depth), dtype=np.float32)
            v = rng.standard_normal((keys, channels), dtype=np.float32)
            best = dict.fromkeys(names, float("inf"))
            for _ in range(args.runs):
                for name in names:
                    fn = kernels[name]
                    t = time.perf_counter()
                    attend(fn, q, k, v, 1 / 16)
                    best[name] = min(best[name], time.perf_counter() - t)
            row = " | ".join(f"{1e3 * best[n]:.1f}" for n in names)
            print(f"| {shape}: {rows:,} x {keys:,} keys, {channels} channels | {row} |", flush=True)


if __name__ == "__main__":
    main()

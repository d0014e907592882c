"""The int16 attention kernel's error and time, this checkout's against another commit's.

Each case is one attention (256 queries, 2,048 keys, 256 channels of queries and keys, 64 of
values, scale 1/16) on random operands: isotropic, then with one channel 100x the others on
one side (trained models' outlier channels) or a 30x channel on each side. Prints the output's
largest distance from the exact attention (float64) for the kernel of this checkout, the
kernel of ``--before REV`` (its ``kernels/int16_attention.c`` from git, built the same way)
and float32 (numpy), then the best of 5 times on memory attention's two shapes at 1024
(cross: 4,096 x 28,736 keys, 64 channels of values; self: 4,096 x 4,096, 256), the two
kernels alternating. Needs a CPU the kernel runs on (``vosfx doctor``: "int16 attention
kernel") and a C compiler.

    python benchmarks/int16_precision.py --before 23580d2~1
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
from vosfx.engine import int16_attention

SOURCE = "vosfx/engine/kernels/int16_attention.c"
CASES = {  # name: (query channel 3 times, key channel times, the key channel)
    "isotropic": (1, 1, 3),
    "one query channel 100x": (100, 1, 3),
    "one key channel 100x": (1, 100, 3),
    "a query channel 30x, another key channel 30x": (30, 30, 7),
}
SHAPES = {"cross": (4096, 28736, 256, 64), "self": (4096, 4096, 256, 256)}


def kernel_of(rev: str, folder: Path):
    """The kernel's C function as commit ``rev`` has it, built into ``folder``."""
    source = folder / "int16_attention.c"
    source.write_bytes(subprocess.check_output(["git", "show", f"{rev}:{SOURCE}"], cwd=ROOT))
    return int16_attention.declared(native.build(source, folder)).vosfx_int16_attention


def attend(fn, q, k, v, scale: float) -> np.ndarray:
    out = np.empty((q.shape[0], v.shape[1]), np.float32)
    status = fn(q.ctypes.data, k.ctypes.data, v.ctypes.data, out.ctypes.data, *q.shape[:1],
                k.shape[0], q.shape[1], v.shape[1], scale, 2)  # fmt: skip
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
    ap.add_argument("--before", help="a commit whose kernel to compare (default: none)")
    ap.add_argument("--runs", type=int, default=5, help="timed calls per kernel and shape")
    args = ap.parse_args()
    why = int16_attention.why_unavailable(worth_it=False)
    if why is not None:
        sys.exit(f"the int16 attention kernel cannot run here: {why}")
    gain = round(int16_attention.gain(), 2)
    print(json.dumps({"word products over float32 FMAs, multiply-adds a second": gain}), flush=True)
    with tempfile.TemporaryDirectory(prefix="vosfx-int16-") as tmp:
        kernels = {"this checkout": int16_attention.library().vosfx_int16_attention}
        if args.before:
            kernels[args.before] = kernel_of(args.before, Path(tmp))
        rng = np.random.default_rng(0)
        names = list(kernels)
        print("| operands | " + " | ".join(names) + " | float32 |")
        print("|---|" + "---:|" * (len(names) + 1))
        for case, (q_times, k_times, k_channel) in CASES.items():
            q = rng.standard_normal((256, 256)).astype(np.float32)
            k = (rng.standard_normal((2048, 256)) + 0.5).astype(np.float32)
            v = rng.standard_normal((2048, 64)).astype(np.float32)
            q[:, 3] *= q_times
            k[:, k_channel] *= k_times
            want = softmax_attention(q, k, v, 1 / 16, np.float64)
            errors = [np.abs(attend(fn, q, k, v, 1 / 16) - want).max() for fn in kernels.values()]
            errors.append(np.abs(softmax_attention(q, k, v, 1 / 16, np.float32) - want).max())
            print(f"| {case} | " + " | ".join(f"{e:.1e}" for e in errors) + " |", flush=True)
        print("\n| shape | " + " | ".join(f"{n} ms" for n in names) + " |")
        print("|---|" + "---:|" * len(names))
        for shape, (rows, keys, depth, channels) in SHAPES.items():
            q = rng.standard_normal((rows, depth), dtype=np.float32)
            k = rng.standard_normal((keys, depth), dtype=np.float32)
            v = rng.standard_normal((keys, channels), dtype=np.float32)
            best = dict.fromkeys(names, float("inf"))
            for _ in range(args.runs):
                for name, fn in kernels.items():
                    t = time.perf_counter()
                    attend(fn, q, k, v, 1 / 16)
                    best[name] = min(best[name], time.perf_counter() - t)
            row = " | ".join(f"{1e3 * best[n]:.1f}" for n in names)
            print(f"| {shape}: {rows:,} x {keys:,} keys, {channels} channels | {row} |", flush=True)


if __name__ == "__main__":
    main()

"""numpy's float32 products against ONNX Runtime's MatMul + Add on the linear layers' shapes of
SAM 2.1 tiny at 1024: how far the reference of the AMX form's measure at first use
(vosfx/engine/amx_linear.py ``gain``: the form against numpy's products) stands from what the
default would otherwise run.

Each row: one shape (rows, depth, outputs), the best of 9 runs (``--runs``) each after one,
numpy's BLAS on its own threads, ONNX Runtime on ``--threads`` with the default's session
options (``linear_cut.product_session``: the weight and bias as initializers, as in the
bundle's graphs), half a second between the two libraries (OpenBLAS's threads spin on the
cores for a while after a product). Needs the onnx package.

    python benchmarks/linear_reference.py --threads 2
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

# this folder's onnx.py is not the onnx package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

# Hiera's stages (tokens at 1024: 256², 128², 64², 32²; qkv, MLP in and out), memory
# attention (4,096 queries; 28,736 memory tokens of 64 channels), and amx_linear.PROBES
SHAPES = (
    (65536, 96, 384),
    (65536, 384, 96),
    (16384, 192, 576),
    (4096, 384, 1536),
    (1024, 768, 3072),
    (4096, 256, 256),
    (4096, 256, 2048),
    (4096, 2048, 256),
    (28736, 64, 256),
    (8192, 96, 384),
    (2048, 256, 2048),
)


# seconds between the two libraries' runs: OpenBLAS's threads spin for a while after a product,
# taking the cores from the other library's first runs
SETTLE = 0.5


def _best(run, runs: int) -> float:
    run()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=9, help="timed runs a shape, the best kept")
    args = ap.parse_args()
    import onnx  # noqa: F401  (the package, imported before this folder and its onnx.py is on the path)
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from linear_cut import product_session

    from vosfx.engine.ort_runtime import session_options

    opts = session_options(ort, threads=args.threads)  # ONNX Runtime as the default runs it

    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, onnxruntime {ort.__version__}, {_cpu()}")
    print(f"{args.threads} threads for ONNX Runtime\n")
    print(
        "| rows x depth -> outputs | numpy G FLOP/s | ONNX Runtime G FLOP/s | ORT time / numpy's |"
    )
    print("|---|---:|---:|---:|")
    for rows, depth, outputs in SHAPES:
        x = rng.standard_normal((rows, depth), np.float32)
        w = rng.standard_normal((depth, outputs), np.float32)
        b = rng.standard_normal(outputs, np.float32)
        out = np.empty((rows, outputs), np.float32)
        session = product_session(ort, opts, w, b)
        time.sleep(SETTLE)
        numpy_s = _best(lambda: np.add(np.matmul(x, w, out=out), b, out=out), args.runs)  # noqa: B023
        time.sleep(SETTLE)
        ort_s = _best(lambda: session.run(None, {"x": x}), args.runs)  # noqa: B023
        flops = 2 * rows * depth * outputs / 1e9
        print(
            f"| {rows} x {depth} -> {outputs} | {flops / numpy_s:.1f} | {flops / ort_s:.1f} "
            f"| {ort_s / numpy_s:.2f} |",
            flush=True,
        )


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()

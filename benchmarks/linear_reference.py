"""numpy's float32 products against ONNX Runtime's MatMul + Add on the linear layers' shapes of
SAM 2.1 tiny at 1024: how far the reference of the AMX form's measure at first use
(vosfx/engine/amx_linear.py ``gain``: the form against numpy's products) stands from what the
default would otherwise run.

Each row: one shape (rows, depth, outputs), the best of 9 runs (``--runs``) each after one,
numpy's BLAS on its own threads, ONNX Runtime on ``--threads`` (the weight and bias as
initializers, as in the bundle's graphs), half a second between the two libraries (each
one's threads spin for a while after a product). Needs the onnx package.

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


# seconds between the two libraries' runs: OpenBLAS's threads spin for a while after a product
# (and ONNX Runtime's pool's do), taking the cores from the other library's first runs
SETTLE = 0.5


def _best(run, runs: int) -> float:
    run()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _session(w: np.ndarray, b: np.ndarray, threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    depth, outputs = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Add", ["y", "b"], ["z"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, depth])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, outputs])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=9, help="timed runs a shape, the best kept")
    args = ap.parse_args()
    import onnxruntime

    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, onnxruntime {onnxruntime.__version__}, {_cpu()}")
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
        session = _session(w, b, args.threads)
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

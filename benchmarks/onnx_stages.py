"""Per-stage profile of the ONNX Runtime backend: milliseconds, FLOPs and the rate reached
against this machine's measured fp32 matmul peak.

For each graph of a bundle (SAM 2.1 tiny, seeded random weights) the stage runs on realistic
inputs (memory attention with the steady-state memory: 7 mask memories + 16 pointers, the
decoder with one padding point) through the backend's own session options; ONNX Runtime's
profiler gives every node's time and input shapes, from which the FLOPs are counted
(MatMul/Gemm/Conv/attention; elementwise ops are not counted). The peak is the best of a large
fp32 matmul in numpy, torch and ONNX Runtime with the same thread count. ``--torch`` also times
the torch stage modules (vosfx.engine.stages) on the same inputs.

    python benchmarks/onnx_stages.py --size 1024 --bundle /tmp/vosfx-bench-onnx/bundle-1024
    python benchmarks/onnx_stages.py --size 512 --bundle ... --torch

Prints one JSON line per stage and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def matmul_peak(threads: int, n: int = 3072) -> dict:
    """GFLOP/s of an n x n x n fp32 matmul (best of 5) in numpy, torch and ONNX Runtime."""
    import numpy as np

    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2 * n**3
    out = {}

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return round(flops / min(times) / 1e9, 1)

    out["numpy"] = best(lambda: a @ b)
    try:
        import torch

        torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["torch"] = best(lambda: ta @ tb)
    except ImportError:
        pass
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "mm",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out["onnxruntime"] = best(lambda: sess.run(None, {"a": a, "b": b}))
    del onnx
    return out


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def node_flops(op: str, ins: list[list[int]], outs: list[list[int]], attrs: dict) -> int:
    """Multiply-adds x 2 of one profiled node (0 for ops not counted)."""
    if not ins:
        return 0
    if op in ("MatMul", "FusedMatMul", "MatMulInteger", "DynamicQuantizeMatMul") and outs:
        k = ins[0][-1] if len(ins[0]) > 1 else ins[0][0]
        return 2 * _prod(outs[0]) * k
    if op == "Gemm" and outs:
        a = ins[0]
        k = a[0] if attrs.get("transA") else a[-1]
        return 2 * _prod(outs[0]) * k
    if op in ("Conv", "FusedConv", "NchwcConv", "ConvTranspose") and len(ins) > 1 and outs:
        w = ins[1]
        if op == "ConvTranspose":  # (Cin, Cout/g, kh, kw): every input element x Cout/g x k
            return 2 * _prod(ins[0]) * _prod(w[1:])
        return 2 * _prod(outs[0]) * _prod(w[1:])  # out elems x Cin/g x kh x kw
    if op == "MultiHeadAttention" and len(ins) >= 3:
        q, k, v = ins[0], ins[1], ins[2]  # (B, S, Dqk), (B, L, Dqk), (B, L, Dv)
        return 2 * q[0] * q[1] * k[1] * (q[2] + v[2])
    return 0


# control-flow nodes: their time is their subgraphs' nodes' (memory attention's Scan over
# objects, vosfx/engine/ort_attention.py), counted there
CONTAINERS = ("Scan", "Loop", "If")


def profile_session(path: Path, feeds: dict, threads: int, runs: int, arena: bool = True):
    """(median ms, {op type: (ms, flops)}, total flops) of one graph."""
    import onnxruntime as ort

    from vosfx.engine.ort_runtime import session_options

    opts = session_options(ort, threads=threads, memory_arena=arena)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}}
    median_ms = _median_ms(lambda: sess.run(None, feeds), runs)
    # one profiled run for the per-node breakdown
    popts = session_options(ort, threads=threads, memory_arena=arena)
    popts.enable_profiling = True
    popts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "p")
    psess = ort.InferenceSession(str(path), popts, providers=["CPUExecutionProvider"])
    psess.run(None, feeds)
    psess.run(None, feeds)
    prof = json.loads(Path(psess.end_profiling()).read_text())
    # events of the last run only
    runs_ev = [e for e in prof if e.get("name") == "model_run"]
    t0 = runs_ev[-1]["ts"] if runs_ev else 0
    by_op: dict[str, list[float]] = {}
    total_flops = 0
    for e in prof:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if e["ts"] < t0:
            continue
        a = e.get("args", {})
        op = a.get("op_name", "?")
        if op in CONTAINERS:  # its subgraph's nodes have their own events
            continue
        ins = [next(iter(d.values())) for d in a.get("input_type_shape", []) if d]
        outs = [next(iter(d.values())) for d in a.get("output_type_shape", []) if d]
        f = node_flops(op, ins, outs, {})
        total_flops += f
        acc = by_op.setdefault(op, [0.0, 0, 0])
        acc[0] += e["dur"] / 1000
        acc[1] += f
        acc[2] += 1
    return median_ms, by_op, total_flops


def stage_inputs(size: int, n_mem: int = 7, n_ptr: int = 16) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    g, s = size // 16, size // 4
    tokens = n_mem * g * g + 4 * n_ptr
    f32 = np.float32
    return {
        "image": rng.standard_normal((1, 3, size, size)).astype(f32),
        "vision_feat": rng.standard_normal((1, 256, g, g)).astype(f32),
        "vision_pos": rng.standard_normal((1, 256, g, g)).astype(f32),
        "pix_feat": rng.standard_normal((1, 256, g, g)).astype(f32),
        "memory": rng.standard_normal((tokens, 1, 64)).astype(f32),
        "memory_pos": rng.standard_normal((tokens, 1, 64)).astype(f32),
        "num_obj_ptr_tokens": np.array(4 * n_ptr, np.int64),
        "key_scale": np.ones((1, tokens), f32),
        "feat_s0": rng.standard_normal((1, 32, s, s)).astype(f32),
        "feat_s1": rng.standard_normal((1, 64, size // 8, size // 8)).astype(f32),
        "point_coords": np.zeros((1, 1, 2), f32),
        "point_labels": -np.ones((1, 1), np.int32),
        "min_object_score": np.zeros((1, 1), f32),
        "mask": (rng.random((1, 1, size, size)) > 0.5).astype(f32),
        "low_res": rng.standard_normal((1, 1, s, s)).astype(f32),
        "object_score_logit": np.array([[1.0]], f32),
        "binarize": np.array([True]).reshape(1, 1, 1, 1),
        "t_norm": np.array([0.25], f32),
    }


STAGES = ("image_encoder", "memory_attention", "decoder", "memory_encoder")


def kernel_times(bundle: Path, feeds: dict, threads: int, runs: int) -> dict[str, float]:
    """Median ms of the stages the default runs with the int16 attention kernel (the backend's
    own sessions: the parts variant and the kernel between them), asked for by name."""
    from vosfx.engine.onnx_backend import OnnxBackend

    graphs = OnnxBackend(bundle, device="cpu", threads=threads, attention="kernel").graphs
    out = {}
    for stage in ("image_encoder", "memory_attention"):
        if "attentions in vosfx's int16 kernel" not in graphs.describe().get(stage, ""):
            continue
        out[stage] = _median_ms(lambda stage=stage: graphs.run(stage, feeds), runs)
    return out


def _median_ms(call, runs: int) -> float:
    """Median ms of ``runs`` calls of ``call`` after one to warm up."""
    call()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def torch_times(ckpt: str, size: int, feeds: dict, threads: int, runs: int) -> dict:
    import torch

    from vosfx.engine import stages as st
    from vosfx.engine.loader import torch_backend_for  # noqa: F401  (same model setup)
    from vosfx.models.checkpoint import load_sam2

    torch.set_num_threads(threads)
    net = load_sam2(ckpt, image_size=size).float().eval()
    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    dec = st.DecoderStage(net)
    calls = {
        "image_encoder": (st.ImageEncoderStage(net), (t["image"],)),
        "memory_attention": (
            st.MemoryAttentionStage(net),
            (t["vision_feat"], t["vision_pos"], t["memory"], t["memory_pos"], 64),
        ),
        "decoder": (
            dec,
            (t["pix_feat"], t["feat_s0"], t["feat_s1"], t["point_coords"], t["point_labels"]),
        ),
        "memory_encoder": (
            st.MemoryEncoderStage(net),
            (t["vision_feat"], t["low_res"], t["object_score_logit"], t["binarize"]),
        ),
    }
    out = {}
    with torch.inference_mode():
        for name, (mod, args) in calls.items():
            mod(*args)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                mod(*args)
                times.append(time.perf_counter() - t0)
            out[name] = statistics.median(times) * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--torch", default=None, help="checkpoint: also time the torch stages")
    ap.add_argument("--no-peak", action="store_true")
    ap.add_argument(
        "--kernel",
        action="store_true",
        help="also time the image encoder and memory attention as the default runs them where "
        "the int16 attention kernel runs (the bundle's parts variant with the kernel between "
        "them; the FLOPs counted are the whole graph's)",
    )
    ap.add_argument("--ops", type=int, default=5, help="op types listed per stage, by time")
    ap.add_argument(
        "--attention",
        choices=("split", "fused"),
        default="split",
        help="memory attention as the CPU provider runs it (split: the bundle's cpu variant, "
        "where it has one) or with the fused attention op",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    bundle = Path(args.bundle)
    man = json.loads((bundle / "manifest.json").read_text())
    print(json.dumps({"loadavg": os.getloadavg(), "cores": os.cpu_count()}), flush=True)
    peak = None
    if not args.no_peak:
        p = matmul_peak(args.threads)
        peak = max(p.values())
        print(json.dumps({"matmul_peak_gflops": p}), flush=True)
    feeds = stage_inputs(args.size)
    rows = []
    for name in args.stages.split(","):
        file = man["graphs"][name]["file"]
        if args.attention == "split":
            file = man.get("variants", {}).get("cpu", {}).get(name, file)
        ms, by_op, flops = profile_session(bundle / file, feeds, args.threads, args.runs)
        top = sorted(by_op.items(), key=lambda kv: -kv[1][0])[: args.ops]
        # the profiled run's node times: in ops whose FLOPs the floor counts, and in the rest
        # (elementwise, normalisation, layout: what a stage far above its floor spends on)
        counted = sum(v[0] for v in by_op.values() if v[1])
        rest = sum(v[0] for v in by_op.values() if not v[1])
        row = {
            "stage": name,
            "graph": file,
            "ms": round(ms, 1),
            "gflop": round(flops / 1e9, 2),
            "gflops": round(flops / 1e9 / (ms / 1000), 1),
            "floor_ms": round(flops / 1e9 / peak * 1000, 1) if peak else None,
            "nodes": sum(v[2] for v in by_op.values()),
            "profiled_ms_counted_ops": round(counted, 1),
            "profiled_ms_other_ops": round(rest, 1),
            "top_ops_ms_gflop_nodes": {
                k: [round(v[0], 1), round(v[1] / 1e9, 2), v[2]] for k, v in top
            },
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.kernel:
        kt = kernel_times(bundle, feeds, args.threads, args.runs)
        for r in rows:
            if r["stage"] in kt:
                r["int16_kernel_ms"] = round(kt[r["stage"]], 1)
        print(json.dumps({"int16_kernel_ms": kt}), flush=True)
    if args.torch:
        tt = torch_times(args.torch, args.size, feeds, args.threads, args.runs)
        for r in rows:
            r["torch_ms"] = round(tt.get(r["stage"], float("nan")), 1)
        print(json.dumps({"torch_ms": tt}), flush=True)
    print(f"\nsize {args.size}, {args.threads} threads, peak {peak} GFLOP/s")
    print(
        "| stage | ms | GFLOP | GFLOP/s | % of peak | floor ms | x floor | int16 kernel ms "
        "(x floor) | torch ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pct = f"{100 * r['gflops'] / peak:.0f}" if peak else "-"
        xf = f"{r['ms'] / r['floor_ms']:.2f}" if peak and r["floor_ms"] else "-"
        kernel = r.get("int16_kernel_ms")
        if kernel is not None and peak and r["floor_ms"]:
            kernel = f"{kernel} ({kernel / r['floor_ms']:.2f})"
        print(
            f"| {r['stage']} | {r['ms']} | {r['gflop']} | {r['gflops']} | {pct} | "
            f"{r['floor_ms']} | {xf} | {kernel or '-'} | {r.get('torch_ms', '-')} |"
        )


if __name__ == "__main__":
    main()

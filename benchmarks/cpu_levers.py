"""CPU levers measured for issue 17 and not taken (docs/benchmarks/onnx.md, fourth pass).

``overlap``: the image encoder of one frame beside memory attention of another, each on one
thread in two Python threads, against both one after the other on all threads (ONNX Runtime
fp32, the bundle's two heavy graphs on benchmarks/onnx_stages.py's steady-state inputs),
alternating call pairs. ``--openvino`` does the same with the bf16 tier's graphs.

``attention``: one cross-attention product of memory attention at 1024 (4096 queries x 28,736
keys, 256-channel queries and keys, 64- or 256-channel values) in bfloat16: OpenVINO's
``ScaledDotProductAttention`` op, OpenVINO's MatMul-Softmax-MatMul, and torch's
``scaled_dot_product_attention``; GFLOP/s of the best of 4 calls.

    python benchmarks/cpu_levers.py overlap --size 1024 --pairs 8
    python benchmarks/cpu_levers.py overlap --size 1024 --pairs 8 --openvino
    python benchmarks/cpu_levers.py attention --values 64
    python benchmarks/cpu_levers.py windowed --size 512 --checkpoint tiny.pt --calls 10

``bf16-torch``: the bf16 tier's memory attention on torch instead of OpenVINO (SAM 2's own
module in bfloat16, whose 256-channel values keep torch on its flash kernel): the stage alone
in alternating calls, then end to end interleaved with the official predictor
(benchmarks/onnx.py's ``interleaved``). ``OMP_WAIT_POLICY=PASSIVE`` for torch's threads not
to spin beside OpenVINO's.

    python benchmarks/cpu_levers.py bf16-torch --checkpoint tiny.pt --frames 12

``qk-int8``: the bf16 tier's memory attention (its query blocks, as compiled on CPUs with
AMX) with each cross-attention's query-key product in int8 (OpenVINO FakeQuantize on both
inputs, ranges calibrated on the call's own inputs: the fastest int8 could be), against the
tier, alternating calls; outputs' difference and OpenVINO's per-node profile of both.

    python benchmarks/cpu_levers.py qk-int8 --size 1024 --calls 5

``int8-products``: what int8 matrix products can give this CPU over float32 on ONNX Runtime
(item 2's ceiling): the stages' own shapes (Hiera's first- and third-stage MLPs, a query block
of memory attention's cross-attention) as one ``MatMul`` with float32 weights against the
dynamically quantised form the int8 tier runs (``DynamicQuantizeLinear`` of the activations,
``MatMulInteger`` with uint8 or int8 weights, the int32 result scaled back to float32),
alternating calls, G(FL)OP/s of the medians. Without VNNI ONNX Runtime's uint8 x int8 kernel
saturates in int16 (docs/benchmarks/onnx.md, fourteenth pass): timed, not usable there.

    python benchmarks/cpu_levers.py int8-products --calls 9

``torch-compile``: the two heavy stages on torch compiled by another backend (``zentorch``:
AMD's ZenDNN plugin, ``pip install zentorch`` matching the torch version; or ``inductor``),
against eager torch and the ONNX Runtime graphs vosfx runs (the bundle's ``cpu`` variant for
memory attention), on onnx_stages.py's steady-state inputs, alternating calls after each
compilation; each compiled stage's largest difference from eager.

    python benchmarks/cpu_levers.py torch-compile --backend zentorch --checkpoint tiny.pt

``memory-attention``: memory attention alone on the steady-state inputs, alternating calls:
ONNX Runtime fp32 with the bundle's ``cpu`` variant (query blocks, what the CPU provider runs)
and with the fused attention op; where the bundle has the int8 tier's variant with int8
weights, its query blocks with int8 scores (``ort-int8-scores``); with ``--openvino`` also
the bf16 tier's graph with OpenVINO's attention kernel and in ``--blocks`` query blocks (what
the tier runs on CPUs with AMX). Medians, best, and each output's difference from the ``cpu``
variant's.

    python benchmarks/cpu_levers.py memory-attention --size 1024 --calls 9 --openvino

``windowed``: the image encoder exported twice from one checkpoint (torch and sam2 needed):
as vosfx exports it (only Hiera's global-attention blocks as the fused ``MultiHeadAttention``)
and with every block's attention fused, both timed alternating on ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))  # not benchmarks/: its onnx.py would shadow the onnx package

HEAVY = ("image_encoder", "memory_attention")


def stage_inputs(size: int) -> dict:
    """benchmarks/onnx_stages.py's steady-state inputs (loaded by path, see sys.path above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("onnx_stages", REPO / "benchmarks/onnx_stages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.stage_inputs(size)


def _ort_call(
    bundle: Path,
    name: str,
    feeds: dict,
    threads: int,
    *,
    fused: bool = False,
    variant: str = "cpu",
):
    import onnxruntime as ort

    from vosfx.engine.ort_runtime import session_options

    man = json.loads((bundle / "manifest.json").read_text())
    # what the CPU provider runs: the bundle's `cpu` variant where it has one (query blocks),
    # unless `fused` (the graph with ONNX Runtime's fused attention op); `variant` int8: the
    # int8 tier's query blocks with int8 scores
    file = man["graphs"][name]["file"]
    if not fused:
        file = man.get("variants", {}).get(variant, {}).get(name, file)
    sess = ort.InferenceSession(
        str(bundle / file),
        session_options(ort, threads=threads),
        providers=["CPUExecutionProvider"],
    )
    mine = {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}}
    sess.run(None, mine)
    return lambda: sess.run(None, mine)


def _ov_call(bundle: Path, name: str, feeds: dict, threads: int, *, blocks: int = 0):
    """The bf16 tier's session of ``name`` (``blocks``: its attentions in that many query
    blocks, :func:`vosfx.engine.openvino_runtime.split_attention`; 0: OpenVINO's kernel)."""
    from vosfx.engine import openvino_runtime as ovr

    man = json.loads((bundle / "manifest.json").read_text())
    g = man["graphs"][name]
    inputs = [i["name"] for i in g["inputs"]]
    axes = {}
    if name in ovr.STATIC_BATCH:
        axes = {
            i["name"]: list(i["shape"]).index("batch")
            for i in g["inputs"]
            if "batch" in list(i["shape"])
        }
    file = man.get("variants", {}).get("bf16", {}).get(name, g["file"])
    sess = ovr.OvSession(
        ovr.core("bf16"),
        bundle / file,
        inputs,
        precision="bf16",
        threads=threads,
        batch_axes=axes,
        float16_weights=ovr.holds_float16(name, ovr.cpu_has_amx()),
        attention_blocks=blocks,
    )
    mine = {k: feeds[k] for k in inputs}
    sess.run(None, mine)
    return lambda: sess.run(None, mine)


def overlap(args) -> None:
    bundle = Path(args.bundle or f"/tmp/vosfx-bench-onnx/bundle-{args.size}")
    feeds = stage_inputs(args.size)
    make = _ov_call if args.openvino else _ort_call
    cores = os.cpu_count() or 2
    serial = [make(bundle, n, feeds, cores) for n in HEAVY]
    single = [make(bundle, n, feeds, 1) for n in HEAVY]
    for name, call in zip(HEAVY, single, strict=True):
        t0 = time.perf_counter()
        call()
        print(json.dumps({"one_thread_s": {name: round(time.perf_counter() - t0, 3)}}))

    def one_after_other() -> float:
        t0 = time.perf_counter()
        for call in serial:
            call()
        return time.perf_counter() - t0

    def side_by_side() -> float:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=call) for call in single]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    a, b = [], []
    for _ in range(args.pairs):
        a.append(one_after_other())
        b.append(side_by_side())
        print(json.dumps({"serial_s": round(a[-1], 3), "overlapped_s": round(b[-1], 3)}))
    print(
        json.dumps(
            {
                "runtime": "openvino bf16" if args.openvino else "onnxruntime fp32",
                "size": args.size,
                "cores": cores,
                "median_serial_s": round(statistics.median(a), 3),
                "median_overlapped_s": round(statistics.median(b), 3),
                "median_ratio_serial_over_overlapped": round(
                    statistics.median(x / y for x, y in zip(a, b, strict=True)), 3
                ),
                "load": os.getloadavg(),
            }
        )
    )


def attention(args) -> None:
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops
    import torch

    n_q, n_k, e, ev = 4096, 28736, 256, args.values
    rng = np.random.default_rng(0)
    q = (rng.standard_normal((1, 1, n_q, e)) * 0.1).astype(np.float32)
    k = (rng.standard_normal((1, 1, n_k, e)) * 0.1).astype(np.float32)
    v = rng.standard_normal((1, 1, n_k, ev)).astype(np.float32)
    flops = 2 * n_q * n_k * (e + ev)
    threads = os.cpu_count() or 2

    def best(call) -> tuple[float, list[float]]:
        call()
        times = []
        for _ in range(4):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        return flops / min(times) / 1e9, [round(1e3 * t) for t in times]

    core = ov.Core()
    config = {
        "INFERENCE_PRECISION_HINT": "bf16",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": threads,
    }
    for kind in ("sdpa", "matmul-softmax-matmul"):
        pq = ops.parameter([1, 1, n_q, e], np.float32)
        pk = ops.parameter([1, 1, -1, e], np.float32)
        pv = ops.parameter([1, 1, -1, ev], np.float32)
        if kind == "sdpa":
            out = ops.scaled_dot_product_attention(pq, pk, pv, causal=False)
        else:
            s = ops.multiply(ops.matmul(pq, pk, False, True), ops.constant(np.float32(e**-0.5)))
            out = ops.matmul(ops.softmax(s, -1), pv, False, False)
        compiled = core.compile_model(ov.Model([out], [pq, pk, pv]), "CPU", config)
        req = compiled.create_infer_request()
        rate, ms = best(lambda req=req: req.infer([q, k, v]))
        print(json.dumps({"openvino": kind, "values": ev, "ms": ms, "gflops": round(rate)}))
    torch.set_num_threads(threads)
    tq, tk, tv = (torch.from_numpy(x).bfloat16() for x in (q, k, v))
    with torch.inference_mode():
        rate, ms = best(lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv))
    print(json.dumps({"torch": "sdpa bf16", "values": ev, "ms": ms, "gflops": round(rate)}))


def windowed(args) -> None:
    import tempfile

    import numpy as np
    import onnxruntime as ort
    import torch.nn.functional as F

    import vosfx.engine.export_stages as es
    from vosfx.engine.export import _load, export_spec
    from vosfx.engine.ort_runtime import session_options

    net = _load(args.checkpoint, args.size)
    folder = Path(tempfile.mkdtemp(prefix="vosfx-windowed-"))

    def fused_everywhere(self, image):
        real = F.scaled_dot_product_attention

        def sdpa(q, k, v, *rest, **kw):
            b, h, n, _ = q.shape
            out = es.attention(es.tokens(q), es.tokens(k), es.tokens(v), int(h))
            return out.reshape(b, n, h, -1).transpose(1, 2)

        F.scaled_dot_product_attention = sdpa
        try:
            return self.stage(image)
        finally:
            F.scaled_dot_product_attention = real

    files = {}
    for tag in ("global blocks fused (vosfx)", "every block fused"):
        spec = next(s for s in es.stage_specs(net) if s.name == "image_encoder")
        if tag == "every block fused":
            spec.module.forward = fused_everywhere.__get__(spec.module)
        files[tag] = folder / f"image_encoder_{len(files)}.onnx"
        export_spec(spec, files[tag])
    image = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size))
    feed = {"image": image.astype(np.float32)}
    threads = os.cpu_count() or 2
    sessions = {
        tag: ort.InferenceSession(
            str(f), session_options(ort, threads=threads), providers=["CPUExecutionProvider"]
        )
        for tag, f in files.items()
    }
    outs = [s.run(None, feed) for s in sessions.values()]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(*outs, strict=True))
    times: dict[str, list[float]] = {tag: [] for tag in sessions}
    for _ in range(args.calls):
        for tag, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, feed)
            times[tag].append(time.perf_counter() - t0)
    a, b = times.values()
    print(
        json.dumps(
            {
                "size": args.size,
                "median_ms": {t: round(1e3 * statistics.median(v)) for t, v in times.items()},
                "median_ratio_vosfx_over_every_block": round(
                    statistics.median(x / y for x, y in zip(a, b, strict=True)), 3
                ),
                "max_abs_difference": diff,
                "load": os.getloadavg(),
            }
        )
    )


class TorchMemoryAttention:
    """The bf16 tier's memory-attention session replaced by SAM 2's own module in torch
    bfloat16 (``MemoryAttentionStage``: 256-channel values, torch's flash kernel), with the
    graph's inputs and outputs."""

    def __init__(self, checkpoint: str, size: int) -> None:
        import torch

        from vosfx.engine.stages import MemoryAttentionStage
        from vosfx.models.checkpoint import load_sam2

        net = load_sam2(checkpoint, image_size=size).float().eval()
        self.stage = MemoryAttentionStage(net).to(torch.bfloat16)

    def get_inputs(self) -> list:
        return []

    def run(self, _names, feeds: dict, interrupt=None) -> list:
        import torch

        def bf16(name):
            return torch.from_numpy(feeds[name]).to(torch.bfloat16)

        with torch.inference_mode():
            out = self.stage(
                bf16("vision_feat"),
                bf16("vision_pos"),
                bf16("memory"),
                bf16("memory_pos"),
                int(feeds["num_obj_ptr_tokens"]),
                bf16("key_scale"),
            )
        return [out.float().numpy()]


def bf16_torch(args) -> None:
    """The stage alone (alternating calls), then end to end interleaved with the official
    predictor: the bf16 tier against the same tier with memory attention on torch."""
    import importlib.util

    import torch

    torch.set_num_threads(os.cpu_count() or 2)
    bundle = Path(args.bundle or f"/tmp/vosfx-bench-onnx/bundle-{args.size}")
    feeds = stage_inputs(args.size)
    ov = _ov_call(bundle, "memory_attention", feeds, os.cpu_count() or 2)
    tm = TorchMemoryAttention(args.checkpoint, args.size)
    names = [
        i["name"]
        for i in json.loads((bundle / "manifest.json").read_text())["graphs"]["memory_attention"][
            "inputs"
        ]
    ]
    mine = {k: feeds[k] for k in names}
    tm.run(None, mine)
    times: dict[str, list[float]] = {"openvino bf16": [], "torch bf16": []}
    for _ in range(args.calls):
        for tag, call in (("openvino bf16", ov), ("torch bf16", lambda: tm.run(None, mine))):
            t0 = time.perf_counter()
            call()
            times[tag].append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "stage_s": {t: [round(x, 3) for x in v] for t, v in times.items()},
                "median_s": {t: round(statistics.median(v), 3) for t, v in times.items()},
            }
        ),
        flush=True,
    )
    spec = importlib.util.spec_from_file_location("bench_onnx", REPO / "benchmarks/onnx.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    make = bench._onnx_backend

    def backend(bundle_path, opts, threads):
        b = make(bundle_path, opts, threads)
        if opts.get("torch_memory_attention"):
            b._sess["memory_attention"] = TorchMemoryAttention(args.checkpoint, args.size)
        return b

    bench._onnx_backend = backend
    bench.RUNS["onnx-bf16-torch-ma"] = (
        "onnx",
        {"precision": "bf16", "opt": "all", "torch_memory_attention": True},
    )
    run_args = argparse.Namespace(
        size=args.size,
        frames=args.frames,
        threads=os.cpu_count() or 2,
        seq="blackswan",
        bundle=str(bundle),
        ckpt=args.checkpoint,
    )
    print(json.dumps(bench.interleaved(run_args, ["onnx-bf16", "onnx-bf16-torch-ma"])))


def _quantize_qk(model, feeds: dict, c) -> int:
    """FakeQuantize (255 levels, symmetric, the range of the tensor on ``feeds``) on both
    inputs of every MatMul feeding a Softmax whose keys are the memory (a dynamic count);
    returns how many MatMuls."""
    import numpy as np
    import openvino.opset13 as ops

    targets = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        users = [t.get_node().get_type_name() for t in op.output(0).get_target_inputs()]
        keys = op.input_value(1).get_partial_shape()
        if users == ["Softmax"] and keys.rank.is_static and keys[-1].is_dynamic:
            targets.append(op)
    ports = {}
    for op in targets:
        for i in (0, 1):
            src = op.input_value(i)
            ports[(src.get_node().get_friendly_name(), src.get_index())] = src
    probe = model.clone()
    probe_ports = []
    for op in probe.get_ordered_ops():
        for k in range(op.get_output_size()):
            if (op.get_friendly_name(), k) in ports:
                probe_ports.append(((op.get_friendly_name(), k), op.output(k)))
    probe.add_outputs([p for _k, p in probe_ports])
    compiled = c.compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled.create_infer_request().infer(feeds)
    extra = compiled.outputs[len(compiled.outputs) - len(probe_ports) :]
    amax = {k: float(np.abs(res[o]).max()) for (k, _p), o in zip(probe_ports, extra, strict=True)}
    fq = {}
    for key, src in ports.items():
        a = amax[key]
        lo, hi = ops.constant(np.float32(-a)), ops.constant(np.float32(a))
        fq[key] = ops.fake_quantize(src, lo, hi, lo, hi, 255).output(0)
    for op in targets:
        for i in (0, 1):
            src = op.input_value(i)
            op.input(i).replace_source_output(
                fq[(src.get_node().get_friendly_name(), src.get_index())]
            )
    model.validate_nodes_and_infer_types()
    return len(targets)


def qk_int8(args) -> None:
    import numpy as np
    import openvino as ov

    from vosfx.engine import openvino_runtime as ovr

    bundle = Path(args.bundle or f"/tmp/vosfx-bench-onnx/bundle-{args.size}")
    man = json.loads((bundle / "manifest.json").read_text())
    g = man["graphs"]["memory_attention"]
    file = man.get("variants", {}).get("bf16", {}).get("memory_attention", g["file"])
    feeds_all = stage_inputs(args.size)
    c = ov.Core()
    models = {}
    for name in ("tier", "qk-int8"):
        model = c.read_model(str(bundle / file))
        ovr.split_attention(model, ovr.ATTENTION_BLOCKS)
        feeds = {p.get_any_name(): feeds_all[p.get_any_name()] for p in model.inputs}
        if name == "qk-int8":
            print(json.dumps({"quantized_matmuls": _quantize_qk(model, feeds, c)}), flush=True)
        models[name] = model
    cfg = {
        "INFERENCE_PRECISION_HINT": "bf16",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "SNIPPETS_MODE": "DISABLE",
        "PERF_COUNT": True,
    }
    reqs = {n: c.compile_model(m, "CPU", cfg).create_infer_request() for n, m in models.items()}
    outs = {n: r.infer(feeds) for n, r in reqs.items()}
    a, b = (next(iter(o.values())) for o in outs.values())
    print(
        json.dumps(
            {
                "max_abs_diff": round(float(np.abs(a - b).max()), 4),
                "mean_abs_diff": round(float(np.abs(a - b).mean()), 5),
                "max_abs": round(float(np.abs(a).max()), 3),
            }
        ),
        flush=True,
    )
    times: dict[str, list[float]] = {n: [] for n in reqs}
    for _ in range(args.calls):
        for n, r in reqs.items():
            t0 = time.perf_counter()
            r.infer(feeds)
            times[n].append(1000 * (time.perf_counter() - t0))
    for n, r in reqs.items():
        by_kind: dict[str, float] = {}
        for p in r.profiling_info:
            kind = f"{p.node_type}/{p.exec_type}"
            by_kind[kind] = by_kind.get(kind, 0.0) + p.real_time.total_seconds() * 1000
        top = sorted(by_kind.items(), key=lambda kv: -kv[1])[:8]
        print(
            json.dumps(
                {
                    "graph": n,
                    "ms_median": round(statistics.median(times[n]), 1),
                    "ms": [round(t) for t in times[n]],
                    "profile_last_call_ms": {k: round(v, 1) for k, v in top},
                }
            ),
            flush=True,
        )


def torch_compile(args) -> None:
    import importlib

    import onnxruntime as ort
    import torch

    from vosfx.engine import stages as st
    from vosfx.engine.ort_runtime import session_options
    from vosfx.models.checkpoint import load_sam2

    if args.backend != "inductor":
        importlib.import_module(args.backend)  # registers the torch.compile backend
    torch.set_num_threads(args.threads)
    feeds = stage_inputs(args.size)
    net = load_sam2(args.checkpoint, image_size=args.size).float().eval()
    bundle = Path(args.bundle or f"/tmp/vosfx-bench-onnx/bundle-{args.size}")
    man = json.loads((bundle / "manifest.json").read_text())
    t = {k: torch.from_numpy(feeds[k]) for k in ("image", "vision_feat", "vision_pos")}
    mem = torch.from_numpy(feeds["memory"]), torch.from_numpy(feeds["memory_pos"])
    n_ptr = int(feeds["num_obj_ptr_tokens"])
    calls = {
        "image_encoder": (st.ImageEncoderStage(net).eval(), lambda m: m(t["image"])),
        "memory_attention": (
            st.MemoryAttentionStage(net).eval(),
            lambda m: m(t["vision_feat"], t["vision_pos"], *mem, n_ptr),
        ),
    }
    opts = session_options(ort, threads=args.threads)
    for name, (module, call) in calls.items():
        graph = man.get("variants", {}).get("cpu", {}).get(name, man["graphs"][name]["file"])
        sess = ort.InferenceSession(str(bundle / graph), opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        ort_feeds = {k: v for k, v in feeds.items() if k in names}
        t0 = time.perf_counter()
        compiled = torch.compile(module, backend=args.backend)
        with torch.inference_mode():
            want = call(module)
            got = call(compiled)  # compiles
            compile_s = time.perf_counter() - t0
            got = call(compiled)  # a second call may compile again (guards)
        outs = want if isinstance(want, tuple) else (want,)
        diffs = got if isinstance(got, tuple) else (got,)
        diff = max(float((a - b).abs().max()) for a, b in zip(outs, diffs, strict=True))
        runs = {  # used within this iteration only
            "eager": lambda: call(module),  # noqa: B023
            args.backend: lambda: call(compiled),  # noqa: B023
            "onnxruntime": lambda: sess.run(None, ort_feeds),  # noqa: B023
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        with torch.inference_mode():
            for _ in range(args.calls):
                for k, fn in runs.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(1000 * (time.perf_counter() - t0))
        print(
            json.dumps(
                {
                    "stage": name,
                    "compile_s": round(compile_s, 1),
                    "max_abs_diff_from_eager": diff,
                    "ms_median": {k: round(statistics.median(v)) for k, v in times.items()},
                    "ms": {k: [round(x) for x in v] for k, v in times.items()},
                }
            ),
            flush=True,
        )


# (name, M, K, N): activations (M, K) times weights (K, N)
PRODUCTS = (
    ("Hiera stage-1 MLP, 1024", 65536, 96, 384),
    ("Hiera stage-3 MLP, 1024", 4096, 384, 1536),
    ("memory attention query block x keys, 1024", 512, 256, 28736),
)


def _product_session(m: int, k: int, n: int, weights: str, threads: int):
    """(M, K) float32 activations times constant (K, N) weights: ``MatMul`` (fp32) or the
    dynamically quantised chain with uint8 (``u8``) or int8 (``s8``) weights."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from vosfx.engine.ort_runtime import session_options

    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if weights == "fp32":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        inits = [numpy_helper.from_array(w, "w")]
    else:
        scale = np.float32(np.abs(w).max() / 127)
        if weights == "u8":
            q, zero = np.clip(np.round(w / scale) + 128, 0, 255).astype(np.uint8), np.uint8(128)
        else:
            q, zero = np.clip(np.round(w / scale), -127, 127).astype(np.int8), np.int8(0)
        nodes = [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
            helper.make_node("MatMulInteger", ["xq", "wq", "xz", "wz"], ["acc"]),
            helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["xs", "ws"], ["s"]),
            helper.make_node("Mul", ["accf", "s"], ["y"]),
        ]
        inits = [
            numpy_helper.from_array(q, "wq"),
            numpy_helper.from_array(np.array(zero), "wz"),
            numpy_helper.from_array(np.array(scale, np.float32), "ws"),
        ]
    graph = helper.make_graph(nodes, "product", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = session_options(ort, threads=threads)
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
    )


def int8_products(args) -> None:
    import numpy as np

    from vosfx.engine.cpu_features import cpu_flags

    flags = cpu_flags() or frozenset()  # None off Linux
    vnni = sorted(f for f in flags if "vnni" in f or f == "amx_int8")
    print(json.dumps({"vnni": vnni or None}), flush=True)
    for name, m, k, n in PRODUCTS:
        x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
        sessions = {w: _product_session(m, k, n, w, args.threads) for w in ("fp32", "u8", "s8")}
        # the quantised chains' error against float32, relative to the product's largest value
        # (int8 weights saturate without VNNI: their error shows it)
        ys = {w: sess.run(None, {"x": x})[0] for w, sess in sessions.items()}
        top = float(np.abs(ys["fp32"]).max())
        error = {w: round(float(np.abs(y - ys["fp32"]).max()) / top, 4) for w, y in ys.items()}
        times: dict[str, list[float]] = {w: [] for w in sessions}
        for _ in range(args.calls):
            for w, sess in sessions.items():
                t0 = time.perf_counter()
                sess.run(None, {"x": x})
                times[w].append(time.perf_counter() - t0)
        ops = 2 * m * k * n
        med = {w: statistics.median(t) for w, t in times.items()}
        print(
            json.dumps(
                {
                    "product": name,
                    "shape": [m, k, n],
                    "ms": {w: round(1000 * t, 2) for w, t in med.items()},
                    "gops": {w: round(ops / t / 1e9, 1) for w, t in med.items()},
                    "x_fp32": {w: round(med["fp32"] / t, 2) for w, t in med.items()},
                    "max_error_of_max": error,
                }
            ),
            flush=True,
        )


def memory_attention(args) -> None:
    import numpy as np

    bundle = Path(args.bundle or f"/tmp/vosfx-bench-onnx/bundle-{args.size}")
    feeds = stage_inputs(args.size)
    name = "memory_attention"
    calls = {
        "ort-blocks": _ort_call(bundle, name, feeds, args.threads),
        "ort-fused": _ort_call(bundle, name, feeds, args.threads, fused=True),
    }
    int8 = json.loads((bundle / "manifest.json").read_text()).get("variants", {}).get("int8", {})
    if name in int8:  # the int8 tier's (a bundle made with --variant int8 on a VNNI CPU)
        calls["ort-int8-scores"] = _ort_call(bundle, name, feeds, args.threads, variant="int8")
    if args.openvino:
        calls["ov-bf16-kernel"] = _ov_call(bundle, name, feeds, args.threads)
        for n in args.blocks:
            calls[f"ov-bf16-{n}-blocks"] = _ov_call(bundle, name, feeds, args.threads, blocks=n)
    outs = {k: np.asarray(call()[0]) for k, call in calls.items()}
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(args.calls):
        for k, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[k].append(1000 * (time.perf_counter() - t0))
    for k, t in times.items():
        diff = np.abs(outs[k] - outs["ort-blocks"])
        print(
            json.dumps(
                {
                    "run": k,
                    "median_ms": round(statistics.median(t), 1),
                    "best_ms": round(min(t), 1),
                    "vs_ort_blocks_max": round(float(diff.max()), 5),
                    "vs_ort_blocks_mean": round(float(diff.mean()), 6),
                }
            ),
            flush=True,
        )
    print(json.dumps({"loadavg_end": os.getloadavg()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overlap")
    o.add_argument("--size", type=int, default=1024)
    o.add_argument("--bundle", help="format-3 bundle (default /tmp/vosfx-bench-onnx/bundle-SIZE)")
    o.add_argument("--pairs", type=int, default=8)
    o.add_argument("--openvino", action="store_true", help="the bf16 tier's graphs on OpenVINO")
    a = sub.add_parser("attention")
    a.add_argument("--values", type=int, default=64, help="value channels (vosfx 64, SAM 2 256)")
    w = sub.add_parser("windowed")
    w.add_argument("--size", type=int, default=512)
    w.add_argument("--checkpoint", required=True, help="a SAM 2 checkpoint (or a model id)")
    w.add_argument("--calls", type=int, default=10)
    t = sub.add_parser("bf16-torch")
    t.add_argument("--size", type=int, default=1024)
    t.add_argument("--bundle", help="format-3 bundle (default /tmp/vosfx-bench-onnx/bundle-SIZE)")
    t.add_argument("--checkpoint", required=True, help="the bundle's SAM 2 checkpoint")
    t.add_argument("--calls", type=int, default=5)
    t.add_argument("--frames", type=int, default=12)
    q = sub.add_parser("qk-int8")
    q.add_argument("--size", type=int, default=1024)
    q.add_argument("--bundle", help="format-3 bundle (default /tmp/vosfx-bench-onnx/bundle-SIZE)")
    q.add_argument("--calls", type=int, default=5)
    c = sub.add_parser("torch-compile")
    c.add_argument("--backend", default="zentorch", help="zentorch or inductor")
    c.add_argument("--checkpoint", required=True, help="the bundle's SAM 2 checkpoint")
    c.add_argument("--size", type=int, default=1024)
    c.add_argument("--bundle", help="format-3 bundle (default /tmp/vosfx-bench-onnx/bundle-SIZE)")
    c.add_argument("--calls", type=int, default=4)
    c.add_argument("--threads", type=int, default=2)
    m = sub.add_parser("memory-attention")
    m.add_argument("--size", type=int, default=1024)
    m.add_argument("--bundle", help="format-3 bundle (default /tmp/vosfx-bench-onnx/bundle-SIZE)")
    m.add_argument("--calls", type=int, default=9)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--openvino", action="store_true", help="also the bf16 tier's graph")
    m.add_argument(
        "--blocks",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[8],
        help="query-block counts for the bf16 graph (comma list)",
    )
    i = sub.add_parser("int8-products")
    i.add_argument("--calls", type=int, default=9)
    i.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(json.dumps({"loadavg": os.getloadavg(), "cores": os.cpu_count()}), flush=True)
    run = {
        "overlap": overlap,
        "attention": attention,
        "windowed": windowed,
        "bf16-torch": bf16_torch,
        "qk-int8": qk_int8,
        "int8-products": int8_products,
        "memory-attention": memory_attention,
        "torch-compile": torch_compile,
    }
    run[args.what](args)


if __name__ == "__main__":
    main()

"""The parts-linear variant (the image encoder and memory attention cut at their linear layers'
products too, for the int16 kernel's AMX form: vosfx/engine/amx_linear.py) against the
default's stages, side by side in one process.

Rows, each stage's median ms over interleaved runs:

- ``default``: the backend's sessions as it runs them here (the parts variant with the int16
  kernel's attentions where it runs, else the whole graphs);
- ``cut, float32 products``: the parts-linear variant with each product (and its bias) run by
  a session of ONNX Runtime's own MatMul and Add between the parts: the same arithmetic and
  kernels as the whole graph's, so its excess over ``default`` is what the cut costs (more
  session runs, the products' inputs and outputs handed between them, no MatMul + Add fusion);
  any CPU;
- ``cut, AMX products``: the backend's sessions where it runs the products in the AMX form
  (CPUs with AMX: Intel's Xeons since Sapphire Rapids); else said why not. ``default`` is
  then the backend with ``VOSFX_AMX_LINEAR=0``. The products' measure at first use
  (``amx_linear.gain``: against numpy's float32 products) is printed, and this column is
  measured even where the measure would keep the default from taking the products.

The bundle gets the parts-linear variant if it lacks it (needs the onnx package).

    python benchmarks/linear_cut.py --bundle /tmp/vosfx-bench-onnx/bundle-1024 --size 1024
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

STAGES = ("image_encoder", "memory_attention")


def _measure() -> str:
    """What the products' measure at first use says here (amx_linear.gain), where the int16
    kernel runs its AMX form; the measure then stood in for as passed, so that the AMX column
    is measured whatever it said."""
    from vosfx.engine import amx_linear, int16_attention

    try:
        if int16_attention.form() != "amx" or amx_linear.switched_off():
            return "not taken (no AMX form here, or VOSFX_AMX_LINEAR off)"
    except int16_attention.Unavailable as err:
        return f"not taken ({err})"
    got = amx_linear.gain()
    amx_linear.gain = lambda: amx_linear.Gain(float("inf"), got.block)
    return (
        f"{got.ratio:.2f}x numpy's float32 products, fastest with {got.block} rows a block "
        f"(the default takes them from {amx_linear.WORTH}x)"
    )


def product_session(ort, opts, w, bias):
    """An ONNX Runtime session (``opts``: its options) of ``y = x @ w (+ bias)`` alone: a
    MatMul with the weight as an initializer, as in the bundle's graphs, and the Add of the
    bias where there is one."""
    import onnx
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["x", "w"], ["y" if bias is None else "p"])]
    inits = [numpy_helper.from_array(w, "w")]
    if bias is not None:
        nodes.append(helper.make_node("Add", ["p", "b"], ["y"]))
        inits.append(numpy_helper.from_array(bias, "b"))
    graph = helper.make_graph(
        nodes,
        "product",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def float32_products(folder: Path, stage: str, threads: int):
    """The stage's parts-linear parts with ONNX Runtime MatMul (+ Add) sessions between them
    and the default's attentions (the int16 kernel's form where it runs, float64 never)."""
    import numpy as np
    import onnxruntime as ort

    from vosfx.engine import int16_attention, ort_parts
    from vosfx.engine.ort_runtime import session_options

    man = json.loads((folder / "manifest.json").read_text())
    entry = man["variants"][ort_parts.LINEAR_VARIANT]
    opts = session_options(ort, threads=threads)
    sessions = [
        ort.InferenceSession(str(folder / f), opts, providers=["CPUExecutionProvider"])
        for f in ort_parts.part_files(entry, stage)
    ]
    weights = ort_parts.linear_weights(folder, entry, stage)
    products = {
        key: product_session(ort, opts, w, weights.get("b" + key[1:]))
        for key, w in weights.items()
        if key.startswith("w")
    }
    try:
        form = int16_attention.form()
    except int16_attention.Unavailable:
        form = None

    def attend(q, k, v, scale, out):
        if form is not None:
            int16_attention.attention(q, k, v, scale, threads=threads, out=out, name=form)
            return
        s = (q @ k.T) * scale
        e = np.exp(s - s.max(1, keepdims=True))
        out[:] = (e @ v) / e.sum(1, keepdims=True)

    spent = [0.0]  # seconds in the products since the last reset

    def linear(x, step):
        t = time.perf_counter()
        y = products[step.weight].run(None, {"x": x})[0]
        spent[0] += time.perf_counter() - t
        return y

    runner = ort_parts.AttentionParts(stage, sessions, attend, ort.RunOptions, linear)
    steps = sum(isinstance(s, ort_parts.Linear) for s in runner.steps)
    return runner, steps, form, spent


def _cpu() -> str:
    """The CPU's model name, family and model (/proc/cpuinfo), else the platform's word."""
    import platform

    said: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            said.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    return f"{said.get('model name', '?')} (family {said.get('cpu family')}, model {said.get('model')})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--stages", default=",".join(STAGES))
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from onnx_stages import stage_inputs

    from vosfx.engine import amx_linear
    from vosfx.engine.onnx_backend import OnnxBackend
    from vosfx.engine.variants import add_variants

    folder = Path(args.bundle)
    t = time.perf_counter()
    add_variants(folder, ("parts-linear",), lambda msg: print(msg, flush=True))
    print(f"variant ready in {time.perf_counter() - t:.1f} s", flush=True)
    feeds = stage_inputs(args.size)
    measured = _measure()
    os.environ["VOSFX_AMX_LINEAR"] = "0"  # the default's parts: the attentions alone
    graphs = OnnxBackend(folder, device="cpu", threads=args.threads).graphs
    os.environ["VOSFX_AMX_LINEAR"] = "1"
    with_amx = OnnxBackend(folder, device="cpu", threads=args.threads).graphs
    amx = with_amx.amx_linear
    rows = {}
    for stage in args.stages.split(","):
        names = {i.name for i in graphs.sessions[stage].get_inputs()}
        stage_feeds = {k: v for k, v in feeds.items() if k in names}
        cut, steps, form, spent = float32_products(folder, stage, args.threads)
        calls = {
            "default": lambda s=stage, f=stage_feeds: graphs.run(s, f),
            "cut, float32 products": lambda c=cut, f=stage_feeds: c.run(None, f),
        }
        if amx:
            calls["cut, AMX products"] = lambda s=stage, f=stage_feeds: with_amx.run(s, f)
        for call in calls.values():  # warm
            call()
        times: dict[str, list[float]] = {name: [] for name in calls}
        in_products = []
        for _ in range(args.runs):  # interleaved
            for name, call in calls.items():
                spent[0] = 0.0
                t = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - t) * 1000)
                if name == "cut, float32 products":
                    in_products.append(spent[0] * 1000)
        rows[stage] = {name: statistics.median(v) for name, v in times.items()}
        rows[stage]["float32 products"] = statistics.median(in_products)
        rows[stage]["steps"] = steps
        rows[stage]["default_runs"] = graphs.describe()[stage]
        rows[stage]["attention_form"] = form
        print(json.dumps({stage: rows[stage]}), flush=True)
    print(f"\n{args.size} px, {args.threads} threads, {args.runs} runs interleaved, {_cpu()}")
    said = with_amx.linear_unavailable or amx_linear.why_unused()
    print(f"AMX products: {'run' if amx else said}")
    print(f"the products' measure: {measured}\n")
    print(
        "| stage | linear steps | default ms | cut, float32 products ms (of which products) "
        "| cut's cost | cut, AMX products ms | AMX over default |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for stage, r in rows.items():
        d, c, a = r["default"], r["cut, float32 products"], r.get("cut, AMX products")
        p = r["float32 products"]
        gain = "-" if a is None else f"{d / a:.2f}x"
        print(
            f"| {stage} | {r['steps']} | {d:.1f} | {c:.1f} ({p:.1f}) | {c / d - 1:+.1%} | "
            f"{'-' if a is None else f'{a:.1f}'} | {gain} |"
        )


if __name__ == "__main__":
    main()

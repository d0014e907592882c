"""The bf16 tier's weights held as float32 or float16 by OpenVINO: memory, speed, outputs.

``OvSession(float16_weights=True)`` compresses a graph's float32 constants to float16 before
compiling it for bfloat16 arithmetic (``openvino_runtime.compress_weights``; the tier does it
for ``FLOAT16_WEIGHTS``, the two heavy stages). For each stage of the tier this prints, with and without that compression: the resident memory the compiled graph adds (each
compile in its own subprocess: RSS after compiling and after one call, above the process's
RSS before reading the graph, OpenVINO's libraries already loaded), the median and best wall time of calls alternating between the
two compilations in one process, and each one's largest and mean output difference from the
fp32 path (ONNX Runtime on the bundle's float32 graph), on the steady-state inputs of
``onnx_stages.stage_inputs`` (7 mask memories, 16 pointers).

    python benchmarks/ov_weights.py --bundle /tmp/vosfx-bench-onnx/bundle-1024 --size 1024
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from graphs_ab import alternate, tier_session

STAGES = "image_encoder,memory_attention,memory_encoder,decoder"


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _feeds(stage_feeds: dict, inputs: dict) -> dict:
    # a format-2 graph's binarize is (1,), a format-3 one's (B, 1, 1, 1)
    return {
        n: stage_feeds[n].reshape(-1) if n == "binarize" and len(s) == 1 else stage_feeds[n]
        for n, s in inputs.items()
    }


def memory_worker(bundle: Path, stage: str, threads: int, compress: bool, size: int) -> dict:
    import gc

    from onnx_stages import stage_inputs

    from vosfx.engine.openvino_runtime import release_free_heap

    feeds = stage_inputs(size)
    import openvino as ov

    ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")  # its libraries loaded first
    gc.collect()
    base = _rss_mib()
    sess, inputs = tier_session(bundle, stage, threads, float16_weights=compress)
    gc.collect()
    release_free_heap()
    compiled = _rss_mib() - base
    sess.run(None, _feeds(feeds, inputs))
    return {"compiled_mib": round(compiled, 1), "after_call_mib": round(_rss_mib() - base, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True, help="a bundle with the bf16 variant")
    ap.add_argument("--size", type=int, required=True, help="the bundle's image size")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stages", default=STAGES)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)  # stage, compress 0|1
    args = ap.parse_args()
    if args.worker:
        stage, flag = args.worker
        out = memory_worker(args.bundle, stage, args.threads, flag == "1", args.size)
        print(json.dumps(out))
        return

    import numpy as np
    import onnxruntime as ort
    from onnx_stages import stage_inputs

    from vosfx.engine.ort_runtime import session_options

    feeds = stage_inputs(args.size)
    man = json.loads((args.bundle / "manifest.json").read_text())
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, threads "
        f"{args.threads}, size {args.size}, load {os.getloadavg()[0]:.1f}"
    )
    print(
        "| stage | weights | compiled MiB | after a call MiB | median ms | best ms "
        "| max abs vs fp32 | mean abs vs fp32 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for stage in args.stages.split(","):
        mem = {}
        for flag in ("0", "1"):
            cmd = [sys.executable, __file__, "--bundle", str(args.bundle), "--size"]
            cmd += [str(args.size), "--threads", str(args.threads), "--worker", stage, flag]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            mem[flag] = json.loads(done.stdout.strip().splitlines()[-1])
        graph = man["graphs"][stage]
        opts = session_options(ort, threads=args.threads)
        ref_sess = ort.InferenceSession(
            str(args.bundle / graph["file"]), opts, providers=["CPUExecutionProvider"]
        )
        runs = {}
        for flag in ("0", "1"):
            sess, inputs = tier_session(
                args.bundle, stage, args.threads, float16_weights=flag == "1"
            )
            f = _feeds(feeds, inputs)
            runs[flag] = lambda s=sess, f=f: s.run(None, f)
        ref = ref_sess.run(None, _feeds(feeds, {i.name: i.shape for i in ref_sess.get_inputs()}))
        outs, times = alternate(runs, args.rounds)
        for flag, label in (("0", "float32"), ("1", "float16")):
            diffs = [np.abs(o - r) for o, r in zip(outs[flag], ref, strict=True)]
            print(
                f"| {stage} | {label} | {mem[flag]['compiled_mib']:.0f} | "
                f"{mem[flag]['after_call_mib']:.0f} | {statistics.median(times[flag]):.1f} | "
                f"{min(times[flag]):.1f} | {max(float(d.max()) for d in diffs):.3g} | "
                f"{max(float(d.mean()) for d in diffs):.3g} |",
                flush=True,
            )
    print(f"# load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

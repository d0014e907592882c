"""Two bundles' graphs of the same stages, side by side: a graph change measured on its own.

Each stage's graph from bundle A and bundle B (the same checkpoint exported by two versions of
vosfx) runs on the same steady-state inputs (``onnx_stages.stage_inputs``: memory attention with
7 mask memories and 16 pointers, the decoder with one padding point) on ONNX Runtime fp32 (the
backend's session options) and on OpenVINO bf16 (the bf16 tier's ``OvSession``), the four runs
of a stage alternating call by call so that this shared machine's drift hits them alike. Prints
the largest output difference between A and B per runtime and the median and best wall time of
each. Inputs a graph does not declare are left out, so a format-2 bundle (no ``key_scale``, a
(1,) ``binarize``) runs against a format-3 one.

    # bundle A: the same checkpoint exported at an earlier commit
    git worktree add /tmp/old b3089e7
    (cd /tmp/old && python -c "from vosfx.engine.export import export_bundle; \\
        export_bundle('/tmp/vosfx-bench-onnx/sam2.1_tiny_random.pt', \\
        out_dir='/tmp/bundle-1024-old', image_size=1024, variants=('bf16',))")
    python benchmarks/graphs_ab.py /tmp/bundle-1024-old /tmp/vosfx-bench-onnx/bundle-1024 \\
        --size 1024 --rounds 9 --stages memory_attention,decoder,memory_encoder
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _feed(name: str, array, rank: int):
    """A format-2 graph's ``binarize`` is (1,), a format-3 one's (B, 1, 1, 1)."""
    return array.reshape(-1) if name == "binarize" and rank == 1 else array


def tier_session(bundle: Path, stage: str, threads: int, *, float16_weights: bool | None = None):
    """The bf16 tier's ``OvSession`` of ``stage`` in ``bundle`` (the folded graph of a heavy
    stage, the batch axis fixed where the tier fixes it; float16 weights where the tier holds
    them unless ``float16_weights`` says otherwise) and the graph's inputs {name: shape}."""
    import openvino as ov

    from vosfx.engine.openvino_runtime import FLOAT16_WEIGHTS, HEAVY, STATIC_BATCH, OvSession

    man = json.loads((bundle / "manifest.json").read_text())
    graph = man["graphs"][stage]
    inputs = {i["name"]: i["shape"] for i in graph["inputs"]}
    folded = man.get("variants", {}).get("bf16", {}).get(stage) if stage in HEAVY else None
    axes = {
        n: list(shape).index("batch")
        for n, shape in inputs.items()
        if stage in STATIC_BATCH and "batch" in list(shape)
    }
    sess = OvSession(
        ov.Core(),
        bundle / (folded or graph["file"]),
        list(inputs),
        precision="bf16",
        threads=threads,
        batch_axes=axes,
        float16_weights=stage in FLOAT16_WEIGHTS if float16_weights is None else float16_weights,
    )
    return sess, inputs


def alternate(runs: dict, rounds: int) -> tuple[dict, dict]:
    """Each run once (warm-up; its outputs kept), then ``rounds`` rounds calling every run in
    turn, so that this shared machine's drift hits them alike: {key: outputs}, {key: [ms]}."""
    outs = {k: fn() for k, fn in runs.items()}
    times: dict = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[k].append(1000 * (time.perf_counter() - t))
    return outs, times


def _runners(bundle: Path, stage: str, feeds: dict, threads: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    from vosfx.engine.ort_runtime import session_options

    man = json.loads((bundle / "manifest.json").read_text())
    graph = man["graphs"][stage]
    ovs, inputs = tier_session(bundle, stage, threads)
    f = {n: _feed(n, feeds[n], len(shape)) for n, shape in inputs.items()}
    opts = session_options(ort, threads=threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no CPU stolen
    sess = ort.InferenceSession(
        str(bundle / graph["file"]), opts, providers=["CPUExecutionProvider"]
    )
    return {
        "ort": lambda: sess.run(None, f),
        "ov-bf16": lambda: [np.asarray(x) for x in ovs.run(None, f)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="bundle A (before)")
    ap.add_argument("b", type=Path, help="bundle B (after)")
    ap.add_argument("--size", type=int, required=True, help="the bundles' image size")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stages", default="memory_attention,decoder,memory_encoder")
    args = ap.parse_args()
    import numpy as np
    from onnx_stages import stage_inputs

    feeds = stage_inputs(args.size)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, threads "
        f"{args.threads}, size {args.size}, load {os.getloadavg()[0]:.1f}"
    )
    print("| stage | runtime | A median ms | B median ms | B / A | A best | B best | max abs B-A |")
    print("|---|---|---|---|---|---|---|---|")
    for stage in args.stages.split(","):
        runs = {}
        for tag, bundle in (("A", args.a), ("B", args.b)):
            for rt, fn in _runners(bundle, stage, feeds, args.threads).items():
                runs[(rt, tag)] = fn
        outs, times = alternate(runs, args.rounds)
        for rt in ("ort", "ov-bf16"):
            diff = max(
                float(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32)).max())
                for x, y in zip(outs[(rt, "A")], outs[(rt, "B")], strict=True)
            )
            a, b = statistics.median(times[(rt, "A")]), statistics.median(times[(rt, "B")])
            print(
                f"| {stage} | {rt} | {a:.1f} | {b:.1f} | {b / a:.2f} | "
                f"{min(times[(rt, 'A')]):.1f} | {min(times[(rt, 'B')]):.1f} | {diff:.2g} |",
                flush=True,
            )
    print(f"# load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

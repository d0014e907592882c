"""The refiner's CPU cost a frame, two versions of vosfx alternating in fresh processes.

The balanced preset as shipped (guided edges, radius one logit cell, temporal 0.3), one
object, DAVIS blackswan upscaled to 1080p (``--size`` another), one OpenCV thread; the refiner
makes each frame's guide itself (in a render the decode thread makes it ahead). Four kinds of logits: SAM 2's
256² as simulated (sharp: a band of ~2 % of the frame), blurred by 8 cells (~18 %), a tenth
as steep (all of it), and the render chain's 64² test double. "before" is ``git archive
<rev>`` of an earlier commit, "after" this checkout (or ``--after REV``); each pair of runs
alternates, so the VM's drifting speed hits both alike. Prints each run and the medians.

    python benchmarks/refine_versions.py --before 1c3b022 --pairs 8
    python benchmarks/refine_versions.py --before 1e955e9 --pairs 4 --size 3840x2160
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from refine import frame_size
from render_chain import ROOT, tree_for

KINDS = ("sharp", "blur 8", "x0.1", "64² test double")


def child(frames: int, size: tuple[int, int]) -> None:
    """One run in this process (the vosfx on ``sys.path`` first): one JSON line."""
    import cv2
    import numpy as np
    import refine as bench

    import vosfx
    from vosfx.config import RefineConfig
    from vosfx.matte.refine import Refiner
    from vosfx.presets import load_preset
    from vosfx.types import Frame, MaskResult

    cv2.setNumThreads(1)
    cfg = RefineConfig(**dict(load_preset("balanced").get("refine", {})))
    seq, masks = bench.load_seq(bench.DEFAULT_DAVIS, "blackswan", 2)
    imgs = [cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in seq]
    make = {
        "sharp": lambda m: bench.sim_logits(m),
        "blur 8": lambda m: bench.sim_logits(m, blur=8),
        "x0.1": lambda m: bench.sim_logits(m) * np.float32(0.1),
        "64² test double": lambda m: (
            (2.0 * cv2.resize(m.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA) - 1.0)
            * 10.0
        ).astype(np.float32),
    }
    score, iou = np.array([10.0], np.float32), np.array([1.0], np.float32)
    out: dict[str, object] = {"vosfx": str(Path(vosfx.__file__).parent.parent)}
    for kind in KINDS:
        results = [
            MaskResult(i, (1,), make[kind](m)[None], score, iou) for i, m in enumerate(masks)
        ]
        refiner = Refiner(cfg, (1,))
        refiner(results[0], Frame(0, imgs[0], 0, 1))  # warm-up: allocations, compiled loops
        cpu = []
        for k in range(frames):
            i = k % 2  # two real frames alternate, so temporal smoothing has work
            c0 = time.process_time()
            refiner(results[i], Frame(k, imgs[i], k, 1))
            cpu.append(time.process_time() - c0)
        out[kind] = round(statistics.median(cpu) * 1000, 1)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision to compare")
    ap.add_argument("--after", default="checkout", help="git revision, or the checkout")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--frames", type=int, default=20, help="timed frames a kind and run")
    ap.add_argument("--size", type=frame_size, default="1920x1080", help="WIDTHxHEIGHT")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.frames, args.size)
        return
    size = "x".join(map(str, args.size))
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
        f"Python {platform.python_version()}; load {os.getloadavg()[0]:.1f}; "
        f"before = {args.before}, after = {args.after}; {size}"
    )
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": tree_for(args.before, Path(tmp))}
        trees["after"] = ROOT if args.after == "checkout" else tree_for(args.after, Path(tmp))
        for n in range(args.pairs):
            for version, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": str(tree)}
                line = subprocess.run(
                    [sys.executable, __file__, "--before", args.before, "--child"]
                    + ["--frames", str(args.frames), "--size", size],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                row = json.loads(line.splitlines()[-1])
                runs[version].append(row)
                shown = ", ".join(f"{k} {row[k]}" for k in KINDS)
                print(f"pair {n + 1} {version}: {shown} (load {os.getloadavg()[0]:.1f})")
    print("\n| logits | before: median (range) CPU ms | after: median (range) | before / after |")
    print("|---|---:|---:|---:|")
    for kind in KINDS:
        b = [r[kind] for r in runs["before"]]
        a = [r[kind] for r in runs["after"]]
        mb, ma = statistics.median(b), statistics.median(a)
        print(
            f"| {kind} | {mb:.1f} ({min(b)}-{max(b)}) | {ma:.1f} ({min(a)}-{max(a)}) | "
            f"{mb / ma:.2f}x |"
        )


if __name__ == "__main__":
    main()

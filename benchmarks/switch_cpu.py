"""What holding the thread switch interval at 0.25 ms during a render costs where the model runs
on the CPU, measured frame by frame in one render.

``vosfx.pipeline.run`` holds the interpreter's switch interval at 0.25 ms while it renders
(``vosfx/pipeline/switching.py``), for a GPU's host, whose tracking thread runs Python most of
a frame (``benchmarks/host_bound.py``). On the CPU the tracking thread waits in ONNX Runtime's
kernels, which let go of the GIL, and the decode, refine and writer threads then switch more
often beside its compute threads. Whole renders alternated in separate processes differ by
more than any such cost (the VM's speed drifts 10-25 % within an hour), so here one render
alternates the interval frame by frame, set as each frame's image encoding starts (0.25 ms
on even frames, CPython's 5 ms on odd ones), and compares each frame's tracking time with
the next one's: pairs under one phase of the machine.

    python benchmarks/switch_cpu.py --checkpoint CKPT --frames 42
    python benchmarks/switch_cpu.py --checkpoint CKPT --input clip.mp4 --box 400,150,900,600
    python benchmarks/switch_cpu.py --checkpoint CKPT --backend torch --size 256 --frames 7

Prints the median frame time of each interval and the median of the paired ratios (0.25 ms
over 5 ms); the first two frames (the prompt and the bank's start) are left out.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_INPUT = ROOT.parent / "shared" / "data" / "videos" / "01_dog.mp4"
SHORT, DEFAULT = 0.00025, 0.005


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a SAM 2.1 tiny checkpoint file")
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    ap.add_argument("--box", default="400,150,900,600", help="frame 0's box prompt")
    ap.add_argument("--frames", type=int, default=42)
    ap.add_argument("--size", type=int, default=1024, help="model image size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="auto", help="auto (ONNX Runtime), onnx or torch")
    args = ap.parse_args()

    from vosfx.engine import load_engine
    from vosfx.job import Job, PromptSpec
    from vosfx.pipeline import loop, run
    from vosfx.presets import resolve_config

    model = {
        "checkpoint": args.checkpoint,
        "image_size": args.size,
        "threads": args.threads,
        "backend": args.backend,
        "device": "cpu",
    }
    config = resolve_config(["balanced", "prores4444"], {"model": model})
    engine = load_engine(config.model)
    stamps: list[tuple[float, float]] = []  # (when a frame's encoding started, its interval)
    backend = engine.backend  # the trackers' image encoding goes through it
    encode = backend.encode_image

    def alternating(rgb8, *a, **k):
        interval = SHORT if len(stamps) % 2 == 0 else DEFAULT
        sys.setswitchinterval(interval)
        stamps.append((time.perf_counter(), interval))
        return encode(rgb8, *a, **k)

    backend.encode_image = alternating
    loop.short_switch_interval = lambda *a, **k: contextlib.nullcontext()  # set per frame here
    x0, y0, x1, y1 = (float(v) for v in args.box.split(","))
    with tempfile.TemporaryDirectory(prefix="vosfx-switch-") as tmp:
        job = Job(
            input=str(args.input),
            prompts=(PromptSpec(frame=0, box=(x0, y0, x1, y1)),),
            output=str(Path(tmp) / "out.mov"),
            config=config,
            end=args.frames,
        )
        try:
            run(job, engine=engine)
        finally:
            engine.close()
    # a frame's time: from its encoding's start to the next one's
    frames = [(b[0] - a[0], a[1]) for a, b in itertools.pairwise(stamps)][2:]
    short = [t for t, i in frames if i == SHORT]
    default = [t for t, i in frames if i == DEFAULT]
    pairs = [
        frames[k][0] / frames[k + 1][0]
        for k in range(len(frames) - 1)
        if frames[k][1] == SHORT and frames[k + 1][1] == DEFAULT
    ]
    if not pairs:
        raise SystemExit(f"--frames {args.frames}: too few frames to pair (at least 5)")
    result = {
        "frames": len(frames),
        "short_ms": round(1000 * statistics.median(short), 1),
        "default_ms": round(1000 * statistics.median(default), 1),
        "paired_short_over_default": round(statistics.median(pairs), 4),
        "pairs": len(pairs),
        "pair_range": [round(min(pairs), 3), round(max(pairs), 3)],
    }
    print(json.dumps(result), flush=True)
    print(
        f"{result['frames']} frames: {result['short_ms']} ms a frame at a 0.25 ms switch "
        f"interval, {result['default_ms']} at 5 ms; paired 0.25 / 5 ms: "
        f"{result['paired_short_over_default']}x (median of {result['pairs']})"
    )


if __name__ == "__main__":
    main()

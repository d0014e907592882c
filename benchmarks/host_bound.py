"""The render chain beside a tracking thread that runs Python: a GPU's host, on this CPU.

On a GPU the torch backend's tracking thread is bound by the host: Python launching kernels,
holding the GIL, most of each frame (docs/benchmarks/gpu.md). ``render_chain.py --engine-ms``
models a GPU's frame as time off the CPU (a sleep, which lets go of the GIL), which misses
that. Here the test double's frame is a fixed amount of pure-Python work on the tracking
thread (``--python-ms``: calibrated once, the same loop count for every run), and ``--pin``
gives the tracking thread core 0 and every other thread the other cores, as a many-core GPU
host would, so that what slows the chain is the GIL, not a shared core.

Printed per run: frames/s of the render (wall), the tracking thread's Python a frame in the
render against the same work alone, and how long the tracking thread waited for the refine
queue (the chain behind it) and for decoded frames. ``--holds-no-gil`` makes the same frame
from calls that release the GIL (numpy sorts): the chain's speed with no contention for it. Each run is
``vosfx.pipeline.run`` in a fresh subprocess; "before" and "after" alternate.

    python benchmarks/host_bound.py --before HEAD~1 --frames 192 --rounds 2
    python benchmarks/host_bound.py --before none --switch-ms 5,0.5,0.25,0.1 --after HEAD~1
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from render_chain import JOBS, H, W, child_result, trees, with_mask


def python_loop(count: int) -> None:
    for _ in range(count):
        pass


def calibrate(ms: float) -> int:
    """The loop count of ``ms`` of Python on this core (best of 5 timings of 1e6 turns)."""
    best = min(_timed(lambda: python_loop(1_000_000)) for _ in range(5))
    return max(1, int(ms / 1e3 / best * 1_000_000))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    from fakes import FakeEngine

    from vosfx.job import Job, PromptSpec
    from vosfx.pipeline import run
    from vosfx.presets import resolve_config

    cores = sorted(os.sched_getaffinity(0))
    pin = args.pin and len(cores) > 1
    count, no_gil = int(args.count), args.holds_no_gil
    block = np.random.default_rng(0).standard_normal(1 << 16)
    sorts = max(
        1, round(args.python_ms / 1e3 / min(_timed(lambda: np.sort(block)) for _ in range(9)))
    )

    def work() -> None:
        if no_gil:
            for _ in range(sorts):
                np.sort(block)
        else:
            python_loop(count)

    if pin:
        os.sched_setaffinity(0, {cores[0]})
    alone = [_timed(work) for _ in range(15)]
    if pin:  # every thread started from here on: the other cores
        os.sched_setaffinity(0, set(cores[1:]))
    in_render: list[float] = []

    def logit_fn(frame_index, obj_id, base):
        if pin and not in_render:
            os.sched_setaffinity(0, {cores[0]})  # this thread alone
        in_render.append(_timed(work))
        return base

    if args.switch_ms:
        sys.setswitchinterval(float(args.switch_ms) / 1e3)
    fmt, extra = JOBS[args.job]
    job = Job(
        input=args.clip,
        prompts=(PromptSpec(frame=0, mask=args.mask),),
        output=args.out,
        config=resolve_config(["balanced"], {"output": {"format": fmt, "extra_formats": extra}}),
        overwrite=True,
    )
    t0 = time.perf_counter()
    report = run(job, engine=FakeEngine(logit_fn=logit_fn))
    wall = time.perf_counter() - t0
    steady = in_render[len(in_render) // 10 :]
    print(
        json.dumps(
            {
                "frames": report.frames,
                "fps": report.frames / wall,
                "alone_ms": 1e3 * statistics.median(alone),
                "in_render_ms": 1e3 * statistics.median(steady),
                "refine_wait_ms": 1e3 * report.timings_s.get("refine_wait", 0) / report.frames,
                "decode_wait_ms": 1e3 * report.timings_s.get("decode_wait", 0) / report.frames,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=192)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before", default="HEAD", help="git revision to compare, or 'none'")
    ap.add_argument("--after", default="checkout", help="git revision, or 'checkout'")
    ap.add_argument("--job", default="prores4444", choices=sorted(JOBS))
    ap.add_argument("--python-ms", type=float, default=40.0, help="the tracking thread's frame")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="threads share cores")
    ap.add_argument("--holds-no-gil", action="store_true", help="the frame's work lets go of it")
    ap.add_argument(
        "--switch-ms",
        default="",
        help="comma-separated switch intervals (ms) set before each run; a render that lowers "
        "it further still does",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("clip", "mask", "out", "count"):
        ap.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    count = calibrate(args.python_ms)
    switches = [s for s in args.switch_ms.split(",") if s] or [""]
    with tempfile.TemporaryDirectory(prefix="vosfx-host-") as tmp_s:
        tmp = Path(tmp_s)
        origin = with_mask(tmp / "clip.mp4", args.frames, tmp / "mask.png")
        runs_of = trees(args.before, args.after, tmp)
        print(
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {args.frames} frames of "
            f"{origin} ({W}x{H}, H.264); {args.job}; the tracking thread's frame "
            f"{args.python_ms:g} ms of {'calls releasing the GIL' if args.holds_no_gil else 'Python'}"
            f" ({count} turns){', pinned to a core of its own' if args.pin else ''}",
            flush=True,
        )
        rows: dict[tuple[str, str], list[dict]] = {}
        for r in range(args.rounds):
            for switch in switches:
                for label, tree in runs_of.items():
                    cmd = [sys.executable, __file__, "--child", "--job", args.job]
                    cmd += ["--clip", str(tmp / "clip.mp4"), "--mask", str(tmp / "mask.png")]
                    cmd += ["--out", str(tmp / "out"), "--count", str(count)]
                    cmd += ["--python-ms", str(args.python_ms), "--switch-ms", switch]
                    cmd += [] if args.pin else ["--no-pin"]
                    cmd += ["--holds-no-gil"] if args.holds_no_gil else []
                    res = child_result(tree, cmd)
                    rows.setdefault((label, switch), []).append(res)
                    print(
                        f"round {r + 1} {label}{f' switch {switch} ms' if switch else ''}: "
                        f"{res['fps']:.2f} frames/s; tracking {res['in_render_ms']:.1f} ms a "
                        f"frame ({res['alone_ms']:.1f} alone), waited {res['refine_wait_ms']:.1f}"
                        f" ms a frame for the chain, {res['decode_wait_ms']:.1f} for decoding "
                        f"(load {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
        print(
            "\n| version | switch set (ms) | frames/s | tracking ms a frame (alone) "
            "| waited for the chain, ms a frame | for decoding |"
        )
        print("|---|---|---:|---:|---:|---:|")
        for (label, switch), rs in rows.items():
            med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
            print(
                f"| {label} | {switch or 'default'} | {med['fps']:.2f} | "
                f"{med['in_render_ms']:.1f} ({med['alone_ms']:.1f}) | {med['refine_wait_ms']:.1f} | "
                f"{med['decode_wait_ms']:.1f} |"
            )


if __name__ == "__main__":
    main()

"""The OpenFX effect's render latency, worker start and host memory, against `vosfx matte`.

    python benchmarks/ofx.py                                 # FakeEngine, synthetic clip
    python benchmarks/ofx.py --engine sam2 --seq blackswan --frames 20 --image-size 512
    python benchmarks/ofx.py --memory 100 400                # host RSS vs clip length

The bundle and the C test host (tests/ofx/ofx_host.c) are built here; the host loads the bundle
as a real host does and renders through it: frame 0 with no prompts (the worker's start: spawn,
Python, READY), then a click, then every frame in order (tracking: each render tracks one more
frame, fetching it from the host), then every frame again in reverse (cached) . `vosfx matte`
runs on the same frames with the same engine and click (wall time of the whole CLI, and the
pipeline's own time from its sidecar). Each in-order render tracks exactly one more frame: the
worker keeps the session's sweep open between renders (vosfx/ofx/tracking.py). ``--engine sam2`` is the real SAM 2.1 tiny architecture
with seeded random weights on the torch backend (speed does not depend on the values).
Host RSS is the test host's VmRSS (the effect lives in it; the worker is another process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ofx"))
sys.path.insert(0, str(ROOT / "tests"))

ENGINE_MODULE = """
import os, sys
sys.path.insert(0, {ofx_tests!r})
from vosfx.engine import load_engine as _load_engine  # before the CLI below replaces it


def make_engine(model=None, progress=None):
    if os.environ["VOSFX_BENCH_ENGINE"] == "fake":
        import ofx_fakes
        return ofx_fakes.make_engine(model)
    from vosfx.config import ModelConfig
    return _load_engine(ModelConfig(backend="torch", device="cpu",
                                    image_size=int(os.environ["VOSFX_BENCH_IMAGE_SIZE"]),
                                    checkpoint=os.environ["VOSFX_BENCH_CKPT"],
                                    threads=int(os.environ.get("VOSFX_BENCH_THREADS", "0"))))


if __name__ == "__main__":  # `vosfx` with this engine
    import vosfx.cli, vosfx.engine
    vosfx.engine.load_engine = lambda model, **kw: make_engine(model)
    vosfx.cli.main()
"""


def clip_frames(args, folder: Path):
    """Raw RGB frames (for the host) and PNGs (for vosfx matte); returns (w, h, n, click)."""
    import cv2
    import numpy as np

    raw, png = folder / "raw", folder / "png"
    raw.mkdir(parents=True), png.mkdir()
    if args.seq:
        from conftest import SHARED_DATA

        files = sorted((SHARED_DATA / "davis" / "JPEGImages" / args.seq).glob("*.jpg"))
        files = files[: args.frames]
        ann = cv2.imread(
            str(SHARED_DATA / "davis" / "Annotations" / args.seq / "00000.png"),
            cv2.IMREAD_GRAYSCALE,
        )
        ys, xs = np.nonzero(ann)
        click = (float(np.median(xs)), float(np.median(ys)))
        for i, f in enumerate(files):
            bgr = cv2.imread(str(f))
            cv2.imwrite(str(png / f"{i:05d}.png"), bgr)
            np.ascontiguousarray(bgr[:, :, ::-1]).tofile(raw / f"{i:05d}.rgb")
        h, w = bgr.shape[:2]
        return w, h, len(files), click
    from media import moving_square_frame

    w, h = (int(v) for v in args.size.split("x"))
    for i in range(args.frames):
        image, mask = moving_square_frame(i, w, h)
        image.tofile(raw / f"{i:05d}.rgb")
        if not args.no_cli:
            cv2.imwrite(str(png / f"{i:05d}.png"), image[:, :, ::-1])
        if i == 0:
            ys, xs = np.nonzero(mask)
            click = (float(xs.mean()), float(ys.mean()))
    return w, h, args.frames, click


def run_effect(built, work: Path, w: int, h: int, n: int, click, env) -> dict:
    from ofx_harness import run_host

    pen = f"{click[0]:.1f} {h - click[1]:.1f}"
    lines = [
        f"0 load {built.bundle}",
        "0 describe",
        "0 describe_context filter",
        f"0 frames {work / 'raw'} {w} {h} {n} 0 24",
        "0 depth float",
        "0 create",
        "0 rss",
        "0 render 0 -",
        "0 rss",
        "0 overlay",
        f"0 pen_down 0 {pen}",
    ]
    lines += [f"0 render {t} -" for t in range(n)] + ["0 rss"]
    lines += [f"0 render {t} -" for t in reversed(range(n))] + ["0 rss", "0 destroy", "0 unload"]
    t0 = time.perf_counter()
    run = run_host(built, lines, work, env=env, timeout=24 * 3600)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"host failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    renders = run.renders()
    rss = [int(x) for x in re.findall(r"^RSS (\d+) kB$", run.stdout, re.MULTILINE)]
    start, forward, cached = renders[0], renders[1 : n + 1], renders[n + 1 :]
    tracking = forward[1:]  # each tracks one more frame (the sweep stays open), then refines
    return {
        "worker_start_ms": start["ms"],
        "prompt_render_ms": forward[0]["ms"],  # engine load + the click's frame
        "tracking_ms": [r["ms"] for r in tracking],
        # without the test host's own image making (reading raw files, converting)
        "tracking_effect_ms": [r["ms"] - r["host_ms"] for r in tracking],
        "tracking_fetches": [r["fetches"] for r in tracking],
        "cached_ms": [r["ms"] for r in cached],
        "cached_effect_ms": [r["ms"] - r["host_ms"] for r in cached],
        "rss_kb": {
            "created": rss[0],
            "worker_started": rss[1],
            "tracked": rss[2],
            "scrubbed": rss[3],
        },
        "wall_s": wall,
    }


def run_cli(work: Path, module: Path, click, env) -> dict:
    out = work / "cli_out"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(module),
            "matte",
            str(work / "png"),
            "--point",
            f"{click[0]:.1f},{click[1]:.1f}",
            "-f",
            "png16-matte",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"vosfx matte failed:\n{proc.stderr[-2000:]}")
    side = json.loads(next(out.parent.glob("cli_out*.json")).read_text())
    return {
        "wall_s": wall,
        "frames": side["frames"],
        "elapsed_s": side["elapsed_s"],
        "timings_s": side["timings_s"],
    }


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def p95(xs):
    return sorted(xs)[int(0.95 * (len(xs) - 1))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=("fake", "sam2"), default="fake")
    ap.add_argument("--seq", help="a DAVIS sequence of ../shared/data (else a synthetic clip)")
    ap.add_argument("--size", default="854x480", help="synthetic clip size")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--image-size", type=int, default=1024, help="SAM 2 input size (sam2)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--memory", type=int, nargs="*", help="clip lengths for the RSS run only")
    ap.add_argument("--no-cli", action="store_true", help="skip the vosfx matte comparison")
    args = ap.parse_args()

    from ofx_harness import build

    with tempfile.TemporaryDirectory(prefix="vosfx-ofx-bench-") as tmp:
        tmp = Path(tmp)
        built = build(tmp / "build")
        module = tmp / "bench_engine.py"
        module.write_text(ENGINE_MODULE.format(ofx_tests=str(ROOT / "tests" / "ofx")))
        cfg = tmp / "worker.cfg"
        cfg.write_text(
            f"worker {sys.executable}\nworker -m\nworker vosfx.ofx.worker\n"
            f"worker --engine\nworker bench_engine:make_engine\n"
            f"env PYTHONPATH={tmp}\n"
        )
        env = {
            "VOSFX_OFX_CONFIG": str(cfg),
            "VOSFX_BENCH_ENGINE": args.engine,
            "VOSFX_BENCH_IMAGE_SIZE": str(args.image_size),
            "VOSFX_BENCH_THREADS": str(args.threads),
        }
        if args.engine == "sam2":
            from ckpt import make_checkpoint

            env["VOSFX_BENCH_CKPT"] = str(make_checkpoint(tmp / "sam2.1_hiera_tiny.pt")[0])
        print(
            f"# {platform.platform()}, {os.cpu_count()} CPUs, engine {args.engine}"
            + (f" (image size {args.image_size})" if args.engine == "sam2" else "")
        )
        lengths = args.memory or [args.frames]
        for n_frames in lengths:
            args.frames = n_frames
            work = tmp / f"clip{n_frames}"
            w, h, n, click = clip_frames(args, work)
            eff = run_effect(built, work, w, h, n, click, env)
            print(
                f"{w}x{h}, {n} frames: worker start {eff['worker_start_ms']:.0f} ms; render of "
                f"the clicked frame {eff['prompt_render_ms']:.0f} ms; renders in order (each "
                f"tracks one frame, source frames fetched {set(eff['tracking_fetches'])}) median "
                f"{med(eff['tracking_ms']):.1f} ms (effect {med(eff['tracking_effect_ms']):.1f}, "
                f"p95 {p95(eff['tracking_ms']):.1f}); cached median {med(eff['cached_ms']):.1f} "
                f"ms (effect {med(eff['cached_effect_ms']):.1f}, p95 {p95(eff['cached_ms']):.1f});"
                f" host RSS kB {eff['rss_kb']}"
            )
            if args.memory or args.no_cli:
                continue
            full_env = dict(os.environ, PYTHONPATH=str(tmp), **env)
            cli = run_cli(work, module, click, full_env)
            print(
                f"vosfx matte: {cli['frames']} frames in {cli['wall_s']:.2f} s wall "
                f"({1000 * cli['wall_s'] / cli['frames']:.1f} ms/frame incl. start), pipeline "
                f"{cli['elapsed_s']:.2f} s ({1000 * cli['elapsed_s'] / cli['frames']:.1f} "
                f"ms/frame); timings {cli['timings_s']}"
            )


if __name__ == "__main__":
    main()

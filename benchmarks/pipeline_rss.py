"""Peak RSS of a whole `vosfx matte` pass (decode -> engine -> refine -> write) for clips of
several lengths: it must be flat in clip length.

    python benchmarks/pipeline_rss.py                 # 1080p, 100/400/1000 frames, test double
    python benchmarks/pipeline_rss.py --engine sam2 --size 320x240 --image-size 64 \\
        --frames 250 1000 2000 --cuts-every 60        # real tracker, rcms+shots, many cuts

``--engine fake`` is the deterministic test double from tests/fakes.py (no model: measures
vosfx's own streaming); ``--engine sam2`` is the real SAM 2.1 tiny architecture with seeded
random weights (speed and memory do not depend on the values) on the torch backend. With
``--cuts-every N`` the clip switches between two differently coloured scenes every N frames,
so the shot detector finds a cut there and the shot-aware memory policy reacts to each.
Each length runs in a fresh subprocess; peak RSS is the kernel's VmHWM for that process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def child(args) -> None:
    from vosfx.job import Job, PromptSpec
    from vosfx.pipeline import run
    from vosfx.presets import resolve_config

    overrides = {
        "output": {"format": args.format},
        "memory": {"policy": args.memory, "rcms_threshold": args.rcms_threshold},
    }
    if args.engine == "sam2":
        from ckpt import make_checkpoint

        from vosfx.config import ModelConfig
        from vosfx.engine import load_engine

        ckpt, _ = make_checkpoint(Path(args.work) / "sam2.1_hiera_tiny.pt")
        engine = load_engine(
            ModelConfig(
                backend="torch",
                device="cpu",
                image_size=args.image_size,
                checkpoint=str(ckpt),
                threads=args.threads,
            )
        )
    else:
        from fakes import FakeEngine

        engine = FakeEngine()
    job = Job(
        input=args.clip,
        prompts=(PromptSpec(frame=0, mask=args.mask),),
        output=args.out,
        config=resolve_config(["balanced"], overrides),
        overwrite=True,
    )
    t0 = time.perf_counter()
    report = run(job, engine=engine)
    wall = time.perf_counter() - t0
    status = Path("/proc/self/status").read_text().splitlines()
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    mem = report.memory.get("1", {}) if isinstance(report.memory, dict) else {}
    print(
        json.dumps(
            {
                "frames": report.frames,
                "wall_s": wall,
                "peak_rss_mib": hwm / 1024,
                "timings_s": report.timings_s,
                "cuts": len(report.shots),
                "peak_bank_entries": mem.get("peak_bank_entries"),
                "promoted_events": len(mem.get("promoted", {})),
            }
        )
    )


def frames_for(n: int, w: int, h: int, cuts_every: int):
    from media import moving_square_frame

    for i in range(n):
        img, _ = moving_square_frame(i, w, h)
        if cuts_every and (i // cuts_every) % 2:  # the other scene: other colours
            img = (255 - img)[..., ::-1].copy()
        yield img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, nargs="+", default=[100, 400, 1000])
    ap.add_argument("--format", default="prores4444")
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--engine", choices=("fake", "sam2"), default="fake")
    ap.add_argument("--image-size", type=int, default=64, help="SAM 2 input size (--engine sam2)")
    ap.add_argument("--memory", default="rcms+shots")
    ap.add_argument("--cuts-every", type=int, default=0)
    ap.add_argument(
        "--rcms-threshold",
        type=float,
        default=0.6,
        help="θ; 0 promotes at every cut (random weights never reach 0.6), which "
        "exercises the conditioning-memory cap",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("clip", "mask", "out", "work"):
        ap.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import numpy as np
    from media import make_clip, moving_square_frame
    from PIL import Image

    w, h = (int(v) for v in args.size.split("x"))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"{w}x{h}, format {args.format}, preset balanced, memory {args.memory}, engine "
        f"{args.engine}"
        + (f" (image size {args.image_size})" if args.engine == "sam2" else "")
        + (f", a cut every {args.cuts_every} frames" if args.cuts_every else "")
        + f", rcms threshold {args.rcms_threshold}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, mask = moving_square_frame(0, w, h)
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / "mask.png")
        rows = []
        for n in args.frames:
            clip = tmp / f"clip{n}.mp4"
            make_clip(
                clip,
                n=n,
                width=w,
                height=h,
                frames=frames_for(n, w, h, args.cuts_every),
                options={"preset": "ultrafast", "crf": "23"},
            )
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--clip",
                str(clip),
                "--mask",
                str(tmp / "mask.png"),
                "--out",
                str(tmp / f"out{n}"),
                "--work",
                str(tmp),
                "--format",
                args.format,
                "--engine",
                args.engine,
                "--memory",
                args.memory,
                "--image-size",
                str(args.image_size),
                "--threads",
                str(args.threads),
                "--rcms-threshold",
                str(args.rcms_threshold),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            t = r["timings_s"]
            extra = (
                f", {r['cuts']} cuts, peak bank {r['peak_bank_entries']} entries, "
                f"{r['promoted_events']} promotion events"
                if args.engine == "sam2"
                else ""
            )
            print(
                f"{n:5d} frames: peak RSS {r['peak_rss_mib']:7.1f} MiB, "
                f"{r['frames'] / r['wall_s']:6.2f} fps end to end (track {t.get('track', 0):.1f} s, "
                f"refine {t.get('refine', 0):.1f} s, write {t.get('write', 0):.1f} s on its "
                f"thread){extra}",
                flush=True,
            )
            clip.unlink()
        first, last = rows[0]["peak_rss_mib"], rows[-1]["peak_rss_mib"]
        print(
            f"peak RSS change {args.frames[0]} -> {args.frames[-1]} frames: "
            f"{100 * (last - first) / first:+.1f}%"
        )


if __name__ == "__main__":
    main()

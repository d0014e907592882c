"""Peak RSS of a whole `vosfx matte` pass (decode -> engine -> refine -> write) at 1080p, for
clips of several lengths. The engine is the deterministic test double from tests/fakes.py (no
model), so what is measured is vosfx's own streaming: it must be flat in clip length.

    python benchmarks/pipeline_rss.py                 # 100, 400, 1000 frames, prores4444
    python benchmarks/pipeline_rss.py --frames 100 1000 --format ffv1-matte

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


def child(clip: str, mask: str, out: str, fmt: str) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from fakes import FakeEngine

    from vosfx.job import Job, PromptSpec
    from vosfx.pipeline import run
    from vosfx.presets import resolve_config

    job = Job(input=clip, prompts=(PromptSpec(frame=0, mask=mask),), output=out,
              config=resolve_config(["balanced"], {"output": {"format": fmt}}), overwrite=True)
    t0 = time.perf_counter()
    report = run(job, engine=FakeEngine())
    wall = time.perf_counter() - t0
    status = Path("/proc/self/status").read_text().splitlines()
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    print(json.dumps({"frames": report.frames, "wall_s": wall, "peak_rss_mib": hwm / 1024,
                      "timings_s": report.timings_s}))


def make_clip(path: Path, n: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from media import make_clip as mk

    mk(path, n=n, width=1920, height=1080, options={"preset": "ultrafast", "crf": "23"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, nargs="+", default=[100, 400, 1000])
    ap.add_argument("--format", default="prores4444")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    from media import moving_square_frame

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; format {args.format}; preset balanced; test-double engine")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, mask = moving_square_frame(0, 1920, 1080)
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / "mask.png")
        rows = []
        for n in args.frames:
            clip = tmp / f"clip{n}.mp4"
            make_clip(clip, n)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(clip), str(tmp / "mask.png"),
                 str(tmp / f"out{n}"), args.format],
                check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            rows.append(r)
            t = r["timings_s"]
            print(f"{n:5d} frames: peak RSS {r['peak_rss_mib']:7.1f} MiB, {r['frames'] / r['wall_s']:5.2f} "
                  f"fps end to end (decode wait {t.get('decode_wait', 0):.1f} s, refine "
                  f"{t.get('refine', 0):.1f} s, write {t.get('write', 0):.1f} s)", flush=True)
            (tmp / f"out{n}").unlink(missing_ok=True)
            clip.unlink()
        first, last = rows[0]["peak_rss_mib"], rows[-1]["peak_rss_mib"]
        print(f"peak RSS change {args.frames[0]} -> {args.frames[-1]} frames: "
              f"{100 * (last - first) / first:+.1f}%")


if __name__ == "__main__":
    main()

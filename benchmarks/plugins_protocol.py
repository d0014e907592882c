"""Plugin protocol latency: how long a host waits for vosfx's first event, for the result, and
for a clean exit after cancelling, with the FakeEngine launcher (tests/bin/vosfx_fake.py) so
the numbers are the protocol's and the process's own cost, not the model's.

    /work/venv/bin/python benchmarks/plugins_protocol.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "plugins" / "common")]

import numpy as np
import vosfx_client
from media import make_clip, moving_square_frame
from PIL import Image

FAKE = [sys.executable, str(REPO / "tests" / "bin" / "vosfx_fake.py")]


def one_run(folder: Path, delay_s: float, cancel: bool) -> dict:
    job = vosfx_client.build_job(
        folder / "clip.mp4",
        folder / "out",
        [{"frame": 0, "mask": str(folder / "mask.png")}],
        presets=("png16",),
        overwrite=True,
    )
    job_path = vosfx_client.write_job(job, folder / "job.json")
    env = dict(os.environ, VOSFX_FAKE_DELAY_S=str(delay_s))
    t0 = time.perf_counter()
    proc = vosfx_client.VosfxProcess(FAKE, job_path, env=env).start()
    first = None
    while proc.running:
        if proc.poll() and first is None:
            first = time.perf_counter() - t0
            if cancel:
                t1 = time.perf_counter()
                proc.cancel()
                res = proc.wait()
                return {
                    "first_event_s": first,
                    "cancel_s": time.perf_counter() - t1,
                    "exit": res.exit_code,
                }
        time.sleep(0.005)
    res = proc.wait()
    return {
        "first_event_s": first or time.perf_counter() - t0,
        "total_s": time.perf_counter() - t0,
        "exit": res.exit_code,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_clip(folder / "clip.mp4", n=24, width=320, height=240)
        _, mask = moving_square_frame(0, 320, 240)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "mask.png")
        runs = [one_run(folder, 0.0, False) for _ in range(args.runs)]
        cancels = [one_run(folder, 0.2, True) for _ in range(args.runs)]
    med = statistics.median
    print(f"24 frames 320x240 png16, fake engine, {args.runs} runs (median):")
    print(f"  process start -> first event: {med(r['first_event_s'] for r in runs):.2f} s")
    print(f"  process start -> exit 0:      {med(r['total_s'] for r in runs):.2f} s")
    print(
        f"  SIGTERM -> exit {cancels[0]['exit']}:          "
        f"{med(r['cancel_s'] for r in cancels):.2f} s"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""vosfx Tracker vs sam2's SAM2VideoPredictor: end-to-end frames/s and peak RSS.

Each measurement runs in its own subprocess (peak RSS = VmHWM from /proc/self/status). Both
read the same JPEG frames (DAVIS blackswan, looped to the clip length), track one object from
the first annotation mask with the same seeded random weights (sam2.1_hiera_t), and write every
frame's matte as an 8-bit PNG; the official predictor's time includes its ``init_state`` preload.

    python benchmarks/engine.py                      # the default matrix
    python benchmarks/engine.py --one vosfx 100 256  # one measurement (what the matrix runs)
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

REPO = Path(__file__).resolve().parents[1]
DAVIS = REPO.parent / "shared" / "data" / "davis"
SEQ = "blackswan"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def _vmhwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _clip(folder: Path, n: int) -> list[Path]:
    src = sorted((DAVIS / "JPEGImages" / SEQ).glob("*.jpg"))
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.jpg"
        os.symlink(src[i % len(src)], p)
        paths.append(p)
    return paths


def _one(impl: str, n: int, size: int, threads: int) -> dict:
    import cv2
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(threads)
    from vosfx.models.checkpoint import size_overrides

    mask = np.asarray(Image.open(DAVIS / "Annotations" / SEQ / "00000.png")) == 1
    with tempfile.TemporaryDirectory() as tmp:
        frames_dir, out_dir = Path(tmp) / "in", Path(tmp) / "out"
        frames_dir.mkdir()
        out_dir.mkdir()
        paths = _clip(frames_dir, n)
        torch.manual_seed(0)
        if impl == "sam2":
            from sam2.build_sam import build_sam2_video_predictor

            pred = build_sam2_video_predictor(
                CONFIG, None, device="cpu", hydra_overrides_extra=size_overrides(size)
            )
            rss0 = _vmhwm_mib()
            t0 = time.perf_counter()
            state = pred.init_state(str(frames_dir))
            pred.add_new_mask(state, 0, 1, mask)
            for t, _, masks in pred.propagate_in_video(state):
                cv2.imwrite(
                    str(out_dir / f"{t:05d}.png"),
                    (torch.sigmoid(masks[0, 0]).numpy() * 255).astype(np.uint8),
                )
        else:
            from vosfx.engine.loader import SamEngine, torch_backend_for
            from vosfx.models.checkpoint import build_model
            from vosfx.pipeline import track_arrays
            from vosfx.types import Prompt

            net = build_model(CONFIG, image_size=size)
            backend = torch_backend_for(net, "cpu")
            rss0 = _vmhwm_mib()
            t0 = time.perf_counter()
            h, w = mask.shape
            images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
            engine = SamEngine(backend, "bench", None, fill_hole_area=0)
            for frame, res in track_arrays(engine, images, [Prompt(0, 1, mask=mask)]):
                prob = 1 / (1 + np.exp(-res.video_logits(h, w)[0]))
                cv2.imwrite(str(out_dir / f"{frame.index:05d}.png"), (prob * 255).astype(np.uint8))
        elapsed = time.perf_counter() - t0
    return {
        "impl": impl,
        "frames": n,
        "image_size": size,
        "threads": threads,
        "fps": n / elapsed,
        "elapsed_s": elapsed,
        "peak_rss_mib": _vmhwm_mib(),
        "rss_after_model_mib": rss0,
    }


def _run(impl: str, n: int, size: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--one", impl, str(n), str(size), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=3, metavar=("IMPL", "FRAMES", "SIZE"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss-size", type=int, default=256, help="image size for the RSS runs")
    ap.add_argument("--rss-frames", default="100,400,1000")
    ap.add_argument("--speed-frames", type=int, default=20, help="frames for the 1024 run")
    args = ap.parse_args()
    if args.one:
        impl, n, size = args.one
        print(json.dumps(_one(impl, int(n), int(size), args.threads)))
        return
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"python {platform.python_version()}, load {os.getloadavg()}"
    )
    rows = []
    for impl in ("vosfx", "sam2"):
        rows.append(_run(impl, args.speed_frames, 1024, args.threads))
        print(json.dumps(rows[-1]), flush=True)
    for n in (int(x) for x in args.rss_frames.split(",")):
        for impl in ("vosfx", "sam2"):
            rows.append(_run(impl, n, args.rss_size, args.threads))
            print(json.dumps(rows[-1]), f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()

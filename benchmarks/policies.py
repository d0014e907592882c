"""Cost per frame of each memory policy against sam2, on the real tracker.

SAM 2.1 tiny architecture with seeded random weights (tests/ckpt.py), torch backend, CPU, one
thread. One tracker per policy, stepped round-robin over the same frames, so a busy shared
machine slows every policy alike and the ratios stay meaningful. The image is encoded once per
frame and shared (as the session does for all objects); each policy's time is its own
memory selection, memory attention, decoder, memory encoder and bookkeeping.

    .venv/bin/python benchmarks/policies.py [--image-size 256] [--frames 40] [--video 1920x1080]

Needs ../shared/data (DAVIS bmx-trees, its first annotation as the prompt), upscaled to
``--video`` so that policies working at video resolution (DAM4SAM's mask sizes) pay for it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "davis"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--video", default="1920x1080")
    ap.add_argument("--policies", default="sam2,rcms,samurai,dam4sam,sam2long")
    args = ap.parse_args()

    import cv2
    import torch
    from PIL import Image

    from tests.ckpt import TINY, build_state_dict
    from vosfx.config import MemoryConfig
    from vosfx.engine.loader import torch_backend_for
    from vosfx.engine.policies import make_policy
    from vosfx.engine.tracker import Tracker
    from vosfx.models.checkpoint import build_model
    from vosfx.types import Frame, Prompt, VideoInfo

    torch.set_num_threads(1)
    w, h = (int(v) for v in args.video.split("x"))
    frames = [
        cv2.resize(
            np.asarray(
                Image.open(DATA / "JPEGImages" / "bmx-trees" / f"{i:05d}.jpg").convert("RGB")
            ),
            (w, h),
            interpolation=cv2.INTER_LINEAR,
        )
        for i in range(args.frames)
    ]
    ann = np.asarray(Image.open(DATA / "Annotations" / "bmx-trees" / "00000.png")) == 1
    mask = cv2.resize(ann.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    net = build_model(TINY, image_size=args.image_size)
    net.load_state_dict(build_state_dict(TINY, 0), strict=True)
    backend = torch_backend_for(net, "cpu")
    info = VideoInfo(
        path="",
        width=w,
        height=h,
        num_frames=args.frames,
        fps=Fraction(25),
        time_base=Fraction(1, 25),
    )
    names = args.policies.split(",")
    trackers, passes = {}, {}
    feats0 = backend.encode_image(frames[0])
    for name in names:
        cfg = MemoryConfig(policy=name)
        trk = Tracker(backend, lambda cfg=cfg: make_policy(cfg), info, fill_hole_area=8)
        trk.prompt(
            Frame(0, frames[0], 0, Fraction(1, 25)), Prompt(0, 1, mask=mask), features=feats0
        )
        trackers[name], passes[name] = trk, trk.start_pass(1, 0, 1)
    times = {n: [] for n in names}
    for t in range(1, args.frames):
        feats = backend.encode_image(frames[t])
        for name in names:
            t0 = time.perf_counter()
            trackers[name].step(
                Frame(t, frames[t], t, Fraction(1, 25)), [passes[name]], features=feats
            )
            times[name].append(time.perf_counter() - t0)
    cpu = platform.processor() or platform.machine()
    print(
        f"# memory policies: cost per frame\n\n{platform.platform()}, {cpu}, "
        f"{os.cpu_count()} CPUs, load average {tuple(round(x, 2) for x in os.getloadavg())};"
        f" image size {args.image_size}, video {w}x{h}, {args.frames - 1} tracked frames, "
        "torch CPU, 1 thread\n"
    )
    print("| policy | median ms/frame (after the image encoder) | vs sam2 |")
    print("|---|---|---|")
    base = float(np.median(times[names[0]]))
    for name in names:
        med = float(np.median(times[name]))
        print(f"| {name} | {med * 1e3:.1f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()

"""Time J, F and the MOSEv2 adaptive F on a real 480p frame pair (DAVIS ground truth against
itself eroded by 3 px and shifted by 4 px), and a full-frame (uncropped) F for comparison.

    python benchmarks/eval_metrics.py [--repeat 200]

Prints the median and 90th percentile per call in milliseconds, with machine info and load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from vosfx.eval import metrics as m
from vosfx.eval.datasets import read_label_png

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis"


def _full_frame_f(pred: np.ndarray, gt: np.ndarray, radius: float = 8.0) -> float:
    """The same F without the bounding-box crop (what a direct port costs)."""
    fb, gb = m.seg2bmap(pred), m.seg2bmap(gt)
    k = m.disk_kernel(radius)
    fd = cv2.dilate(fb.view(np.uint8), k).view(bool)
    gd = cv2.dilate(gb.view(np.uint8), k).view(bool)
    p = np.count_nonzero(fb & gd) / max(np.count_nonzero(fb), 1)
    r = np.count_nonzero(gb & fd) / max(np.count_nonzero(gb), 1)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _time(fn, *args, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--seq", default="blackswan")
    args = ap.parse_args()
    gt = read_label_png(DATA / "Annotations" / args.seq / "00020.png") == 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    pred = np.roll(cv2.erode(gt.view(np.uint8), kernel).view(bool), 4, axis=1)
    print(
        f"machine: {platform.machine()} {platform.processor()} cpus={os.cpu_count()} "
        f"python {platform.python_version()} opencv {cv2.__version__} numpy {np.__version__}"
    )
    print(f"load average before: {os.getloadavg()}")
    print(
        f"pair: {args.seq}/00020 {gt.shape[1]}x{gt.shape[0]}, object {gt.sum()} px; "
        f"J={m.j_score(pred, gt):.4f} F={m.f_score(pred, gt):.4f}"
    )
    cases = [
        ("j_score", m.j_score),
        ("f_score", m.f_score),
        ("j_score + f_score", lambda p, g: (m.j_score(p, g), m.f_score(p, g))),
        ("f_adaptive (MOSEv2, F and Ḟ)", m.f_adaptive),
        ("f full frame (no crop)", _full_frame_f),
    ]
    for name, fn in cases:
        med, p90 = _time(fn, pred, gt, repeat=args.repeat)
        print(f"{name:32s} median {med:7.3f} ms   p90 {p90:7.3f} ms")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

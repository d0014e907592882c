"""Shot detection: precision, recall and cost per frame on the shared clips and on spliced cuts.

Compares vosfx.session.shots.ShotDetector with PySceneDetect's detectors fed the same frames
one by one (install ``scenedetect-headless`` to include them; ``PYTHONPATH=<dir>`` works too).
Run from the repository root:

    .venv/bin/python benchmarks/shots.py [--quick] [--cost-only]

Needs ../shared/data. Four sets of clips, each with the cuts it should give:

- ``test video``: pyscenedetect_testvideo.mp4 (320 px wide), cuts 201 and 382 (+-1 frame: both
  are gaps through black, the reference CSV places them inside the gap);
- ``no-cut clips``: the four videos and five DAVIS sequences, no cut;
- ``spliced``: every ordered pair of DAVIS sequences (427x240) joined at the three frames of the
  first where it moves fastest, and at its end: a hard cut exactly at the join;
- ``jumps``: four DAVIS takes with 20 frames left out at several points (a cut to a later moment
  of the same take, the hardest kind of hard cut).

Prints machine info and load, then the tables that docs/benchmarks/shots.md records.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vosfx.session.shots import ShotDetector

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOLERANCE = {"test video": 1}  # frames; hard cuts elsewhere must be exact


def video_frames(path: Path, width: int = 320):
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for f in c.decode(s):
            h = round(f.height * width / f.width / 2) * 2
            yield f.to_ndarray(format="rgb24", width=width, height=h)


def davis_frames(seq: str, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    import cv2

    out = []
    for p in sorted((DATA / "davis" / "JPEGImages" / seq).glob("*.jpg")):
        im = np.ascontiguousarray(cv2.imread(str(p))[:, :, ::-1])
        if size is not None:
            im = cv2.resize(im, size, interpolation=cv2.INTER_AREA)
        out.append(im)
    return out


def fastest_points(frames: list[np.ndarray], n: int = 3, first: int = 16) -> list[int]:
    """The ``n`` frames (from ``first`` on) after the 3 frames with the largest mean content
    score: where a cut follows the fastest motion of the clip."""
    det = ShotDetector()
    for i, im in enumerate(frames):
        det.push_array(i, im)
    score = [det.scores.get(i, 0.0) for i in range(len(frames))]
    ranked = sorted(range(first, len(frames)), key=lambda k: -float(np.mean(score[k - 3 : k])))
    return ranked[:n]


def clip_sets(quick: bool) -> dict[str, list[tuple[str, list[np.ndarray], list[int]]]]:
    seqs = sorted(p.name for p in (DATA / "davis" / "JPEGImages").iterdir())
    small = {s: davis_frames(s, (427, 240)) for s in seqs}
    sets: dict[str, list] = {"test video": [], "no-cut clips": [], "spliced": [], "jumps": []}
    test = DATA / "shots" / "pyscenedetect_testvideo.mp4"
    sets["test video"].append(("pyscenedetect_testvideo", list(video_frames(test)), [201, 382]))
    for p in sorted((DATA / "videos").glob("*.mp4")):
        sets["no-cut clips"].append((p.name, list(video_frames(p)), []))
    for s in seqs:
        sets["no-cut clips"].append((s, davis_frames(s), []))
    for a, b in itertools.permutations(seqs, 2):
        joins = ([] if quick else fastest_points(small[a])[:2]) + [len(small[a])]
        for k in joins:
            sets["spliced"].append((f"{a}[:{k}]+{b}", small[a][:k] + small[b], [k]))
    for s in ("bmx-trees", "libby", "blackswan", "car-shadow"):
        fr = small[s]
        for k in range(16, len(fr) - 20, 8 if quick else 4):
            sets["jumps"].append((f"{s}[:{k}]+[{k + 20}:]", fr[:k] + fr[k + 20 :], [k]))
    return sets


class VosfxRunner:
    name = "vosfx ShotDetector"

    def __init__(self):
        self.det = ShotDetector()

    def push(self, i, rgb):
        self.det.push_array(i, rgb)

    def cuts(self, n):
        return self.det.cuts


class SceneDetectRunner:
    """A PySceneDetect detector fed frames one by one (BGR, as it expects)."""

    def __init__(self, name, make, fps=29.97):
        self.name, self.det, self.fps, self.found = name, make(), fps, []

    def push(self, i, rgb):
        from scenedetect import FrameTimecode

        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        self.found += self.det.process_frame(FrameTimecode(i, fps=self.fps), bgr)

    def cuts(self, n):
        from scenedetect import FrameTimecode

        extra = self.det.post_process(FrameTimecode(n, fps=self.fps))
        return sorted(int(tc.frame_num) for tc in self.found + list(extra or []))


def runners():
    out = [VosfxRunner]
    try:
        from scenedetect.detectors import (
            AdaptiveDetector,
            ContentDetector,
            HashDetector,
            HistogramDetector,
            ThresholdDetector,
        )
    except ImportError:
        print("scenedetect not installed: PySceneDetect rows skipped")
        return out

    def row(name, make):
        return lambda: SceneDetectRunner(name, make)

    out += [
        row("PySceneDetect ContentDetector()", ContentDetector),
        row("PySceneDetect AdaptiveDetector()", AdaptiveDetector),
        row("PySceneDetect HistogramDetector()", HistogramDetector),
        row("PySceneDetect HashDetector()", HashDetector),
        row(
            "PySceneDetect ThresholdDetector(fade_bias=0.25)",
            lambda: ThresholdDetector(fade_bias=0.25),
        ),
    ]
    return out


def score(found: list[int], want: list[int], tol: int) -> tuple[int, int]:
    """(true positives, false positives): each wanted cut matches at most one found cut."""
    left, tp = list(found), 0
    for w in want:
        hit = next((f for f in left if abs(f - w) <= tol), None)
        if hit is not None:
            left.remove(hit)
            tp += 1
    return tp, len(left)


def accuracy(sets):
    print("\n## Precision and recall per set (P = true cuts / reported, R = found / real)\n")
    names = list(sets)
    print(
        "| detector | "
        + " | ".join(
            f"{n} ({sum(len(w) for *_, w in sets[n])} cuts, {len(sets[n])} clips)" for n in names
        )
        + " | ms/frame (these frames) |"
    )
    print("|---|" + "---|" * len(names) + "---|")
    misses = {}
    for make in runners():
        cells, frames, elapsed = [], 0, 0.0
        for n in names:
            tp = fp = real = 0
            for label, fr, want in sets[n]:
                r = make()
                t0 = time.perf_counter()
                for i, im in enumerate(fr):
                    r.push(i, im)
                cuts = r.cuts(len(fr))
                elapsed += time.perf_counter() - t0
                frames += len(fr)
                a, b = score(cuts, want, TOLERANCE.get(n, 0))
                tp, fp, real = tp + a, fp + b, real + len(want)
                if a < len(want) or b:
                    misses.setdefault(r.name, []).append(f"{label}: {cuts} want {want}")
            if not real:
                cells.append(f"{fp} false cuts")
                continue
            p = f"{tp / (tp + fp):.3f}" if tp + fp else "-"
            cells.append(f"P {p} R {tp / real:.3f}" + (f" ({fp} false)" if fp else ""))
        print(f"| {make().name} | " + " | ".join(cells) + f" | {elapsed / frames * 1e3:.2f} |")
    for name, rows in misses.items():
        print(f"\n{name}: {len(rows)} clips wrong; first 8:")
        for row in rows[:8]:
            print(f"  {row}")


def cost(n=80):
    import cv2

    calm = list(video_frames(DATA / "videos" / "01_dog.mp4", width=640))[:n]
    fast = davis_frames("bmx-trees")[:n]
    print(f"\n## Cost per frame ({n} frames upscaled to 1920x1080, OpenCV single thread)\n")
    print("01_dog is calm (content score under 15: the structure evidence is never computed);")
    print("bmx-trees moves fast on every frame (computed on almost every frame).\n")
    print("| detector | ms per 1080p frame, 01_dog | ms per 1080p frame, bmx-trees |")
    print("|---|---|---|")
    cv2.setNumThreads(1)
    feeds = [
        [cv2.resize(im, (1920, 1080), interpolation=cv2.INTER_LINEAR) for im in clip]
        for clip in (calm, fast)
    ]
    for make in runners():
        ms = []
        for feed in feeds:
            r = make()
            t0 = time.perf_counter()
            for i, im in enumerate(feed):
                r.push(i, im)
            ms.append((time.perf_counter() - t0) / len(feed) * 1e3)
        print(f"| {r.name} | {ms[0]:.2f} | {ms[1]:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer spliced and jump clips")
    ap.add_argument("--cost-only", action="store_true", help="only the cost table")
    args = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    print(
        f"# shots benchmark\n\n{platform.platform()}, {cpu}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, load average at start "
        f"{tuple(round(x, 2) for x in os.getloadavg())}"
    )
    if not args.cost_only:
        accuracy(clip_sets(args.quick))
    cost()
    print(f"\nload average at end {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Shot detection: accuracy on the shared clips and cost per 1080p frame.

Compares vosfx.pipeline.shots.ShotDetector with PySceneDetect's detectors fed the same frames one by one
(install ``scenedetect-headless`` to include them). Run from the repository root:

    /work/venv/bin/python benchmarks/shots.py

Needs ../shared/data. Prints machine info and load, then one table per measurement.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vosfx.pipeline.shots import ShotDetector

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXPECTED = {"pyscenedetect_testvideo.mp4": [201, 382]}  # every other clip: no cut


def video_frames(path: Path, width: int = 320):
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for f in c.decode(s):
            h = round(f.height * width / f.width / 2) * 2
            yield f.to_ndarray(format="rgb24", width=width, height=h)


def davis_frames(seq: str):
    import cv2

    for p in sorted((DATA / "davis" / "JPEGImages" / seq).glob("*.jpg")):
        yield np.ascontiguousarray(cv2.imread(str(p))[:, :, ::-1])


def clips():
    out = {p.name: p for p in sorted((DATA / "videos").glob("*.mp4"))}
    out["pyscenedetect_testvideo.mp4"] = DATA / "shots" / "pyscenedetect_testvideo.mp4"
    for seq in sorted(p.name for p in (DATA / "davis" / "JPEGImages").iterdir()):
        out[seq] = seq
    return out


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
        from scenedetect.detectors import AdaptiveDetector, ContentDetector, ThresholdDetector
    except ImportError:
        print("scenedetect not installed: PySceneDetect rows skipped")
        return out
    out += [
        lambda: SceneDetectRunner("PySceneDetect ContentDetector()", ContentDetector),
        lambda: SceneDetectRunner("PySceneDetect AdaptiveDetector()", AdaptiveDetector),
        lambda: SceneDetectRunner("PySceneDetect ThresholdDetector()", ThresholdDetector),
        lambda: SceneDetectRunner("PySceneDetect ThresholdDetector(fade_bias=0.25)",
                                  lambda: ThresholdDetector(fade_bias=0.25)),
    ]
    return out


def accuracy():
    frames = {}
    for name, src in clips().items():
        frames[name] = list(video_frames(src) if isinstance(src, Path) else davis_frames(src))
    print("\n## Accuracy (frames decoded at 320 px wide; DAVIS at 854x480 / 720x480)\n")
    print("| detector | test video cuts (want 201, 382 ±1) | false cuts on videos + davis |")
    print("|---|---|---|")
    for make in runners():
        found, false = None, []
        for name, fr in frames.items():
            r = make()
            for i, im in enumerate(fr):
                r.push(i, im)
            cuts = r.cuts(len(fr))
            if name in EXPECTED:
                found = cuts
            elif cuts:
                false.append(f"{name}: {cuts}")
        print(f"| {make().name} | {found} | {'; '.join(false) or 'none'} |")


def cost(n=120):
    import cv2

    src = list(video_frames(DATA / "videos" / "01_dog.mp4", width=640))[:n]
    big = [cv2.resize(im, (1920, 1080), interpolation=cv2.INTER_LINEAR) for im in src]
    print(f"\n## Cost per 1920x1080 frame ({n} frames of 01_dog upscaled, single thread)\n")
    print("| detector | input | ms/frame |")
    print("|---|---|---|")
    cv2.setNumThreads(1)
    for make in runners():
        for label, feed in (("1080p frame", big), ("320 px frame", src)):
            r = make()
            t0 = time.perf_counter()
            for i, im in enumerate(feed):
                r.push(i, im)
            ms = (time.perf_counter() - t0) / len(feed) * 1e3
            print(f"| {r.name} | {label} | {ms:.2f} |")


def main():
    cpu = platform.processor() or platform.machine()
    print(f"# shots benchmark\n\n{platform.platform()}, {cpu}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load average at start {tuple(round(x, 2) for x in os.getloadavg())}")
    accuracy()
    cost()
    print(f"\nload average at end {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

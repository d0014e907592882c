"""Decode throughput of vosfx.io.source (frames/s), with and without the prefetch thread.

Clips: a synthetic 1080p H.264 clip (300 frames, made here once into a temp folder) and the
real 720p ../shared/data/videos/01_dog.mp4 when present. For each: plain PyAV (decode +
to_ndarray, the floor), open_source(prefetch=0) and open_source(prefetch=8); then the same two
with a consumer that spends --work-ms per frame sleeping (a stand-in for a model step that
releases the GIL, as ONNX Runtime and torch do), which is where the prefetch thread pays.
Then 1080p PNG and JPEG sequences read with 1, 2, 3 images at once (``sequence.read_ahead``).

    /work/venv/bin/python benchmarks/decode.py [--frames 300] [--work-ms 20] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def make_1080p(path: Path, n: int) -> Path:
    from media import make_clip

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1080 // 8, 1920 // 8, 3), np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))  # blocky texture: realistic bitrate

    def frames():
        for i in range(n):
            yield np.roll(base, 4 * i, axis=1)  # panning, so P-frames carry motion

    return make_clip(
        path,
        n=n,
        width=1920,
        height=1080,
        fps=24,
        frames=frames(),
        options={"preset": "veryfast", "crf": "20"},
    )


def plain_pyav(path: Path, work_s: float) -> tuple[int, float]:
    import av

    t0 = time.perf_counter()
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            n += 1
            if work_s:
                time.sleep(work_s)
    return n, time.perf_counter() - t0


def vosfx_source(path: Path, prefetch: int, work_s: float) -> tuple[int, float]:
    from vosfx.io.source import open_source

    t0 = time.perf_counter()
    n = 0
    with open_source(path, prefetch=prefetch) as src:
        for _ in src:
            n += 1
            if work_s:
                time.sleep(work_s)
    return n, time.perf_counter() - t0


def make_sequence_1080p(folder: Path, n: int, ext: str) -> Path:
    """``n`` 1080p frames of the shared dog clip (scaled; synthetic without it) as images."""
    import cv2

    folder.mkdir()
    dog = REPO.parent / "shared" / "data" / "videos" / "01_dog.mp4"
    frames = []
    if dog.exists():
        import av

        with av.open(str(dog)) as c:
            for vf in c.decode(video=0):
                frames.append(cv2.resize(vf.to_ndarray(format="bgr24"), (1920, 1080)))
                if len(frames) == min(n, 48):
                    break
    else:
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (1080, 1920, 3), np.uint8)]
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:05d}.{ext}"), frames[i % len(frames)])
    return folder


def sequence_readers(folder: Path, readers: int, work_s: float) -> tuple[int, float]:
    from vosfx.io import sequence

    real = sequence.default_readers
    sequence.default_readers = lambda: readers
    try:
        return vosfx_source(folder, 8, work_s)
    finally:
        sequence.default_readers = real


def measure(name: str, fn, repeat: int) -> None:
    best = None
    for _ in range(repeat):
        n, dt = fn()
        best = dt if best is None else min(best, dt)
    print(f"  {name:<34} {n:4d} frames  {best:7.2f} s  {n / best:7.1f} frames/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--work-ms", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import av

    from vosfx.io.sequence import default_readers

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}"
        f", PyAV {av.__version__}, FFmpeg libavcodec {av.library_versions['libavcodec']}"
    )
    print(f"load average at start: {os.getloadavg()}")
    work_s = args.work_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        clips = [("1080p h264 synthetic", make_1080p(Path(tmp) / "1080p.mp4", args.frames))]
        print(f"made the 1080p clip in {time.perf_counter() - t0:.1f} s")
        dog = REPO.parent / "shared" / "data" / "videos" / "01_dog.mp4"
        if dog.exists():
            clips.append(("01_dog.mp4 720p h264", dog))
        for label, path in clips:
            print(f"{label}:")
            measure("plain PyAV decode+to_ndarray", lambda p=path: plain_pyav(p, 0), args.repeat)
            measure("open_source prefetch=0", lambda p=path: vosfx_source(p, 0, 0), args.repeat)
            measure("open_source prefetch=8", lambda p=path: vosfx_source(p, 8, 0), args.repeat)
            busy = f"+{args.work_ms:g} ms/frame consumer"
            measure(f"prefetch=0 {busy}", lambda p=path: vosfx_source(p, 0, work_s), 1)
            measure(f"prefetch=8 {busy}", lambda p=path: vosfx_source(p, 8, work_s), 1)
        # image sequences: images read at once (sequence.read_ahead), alone and beside a
        # consumer that sleeps (a model on a GPU); the default reads with cores - 1 readers
        for ext in ("png", "jpg"):
            folder = make_sequence_1080p(Path(tmp) / ext, min(args.frames, 96), ext)
            print(f"1080p {ext.upper()} sequence (default readers here: {default_readers()}):")
            for readers in range(1, max(3, default_readers()) + 1):
                for w in (0.0, work_s):
                    measure(
                        f"{readers} reader(s)" + (f" +{args.work_ms:g} ms/frame" if w else ""),
                        lambda f=folder, r=readers, w=w: sequence_readers(f, r, w),
                        args.repeat,
                    )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

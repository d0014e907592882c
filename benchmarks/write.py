"""Write throughput of the output formats at 1920x1080 on this machine.

Frames are prepared in memory first (16 real video frames scaled to 1080p, cycled, when
../shared/data is present, else synthetic textured frames; a soft-edged ellipse moving 8 px a
frame as the matte), so the numbers are the writer alone: plane conversion + encode + I/O.

    python benchmarks/write.py                      # the alpha formats, ffv1-matte, png16
    python benchmarks/write.py --frames 30 --formats prores4444,exr16
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from vosfx.config import OutputConfig
from vosfx.io.writers import FORMATS, open_writer
from vosfx.types import Frame, Matte, VideoInfo

DEFAULT_FORMATS = ("prores4444", "webm-alpha", "qtrle", "ffv1-matte", "png16")
W, H = 1920, 1080
TB = Fraction(1, 12800)
SHARED_VIDEO = Path(__file__).resolve().parents[1].parent / "shared/data/videos/01_dog.mp4"


def source_images(n: int) -> tuple[list[np.ndarray], str]:
    """``n`` distinct (H, W, 3) uint8 RGB images and where they came from."""
    import cv2

    if SHARED_VIDEO.exists():
        import av

        with av.open(str(SHARED_VIDEO)) as c:
            imgs = []
            for vf in c.decode(video=0):
                imgs.append(cv2.resize(vf.to_ndarray(format="rgb24"), (W, H)))
                if len(imgs) == n:
                    break
        return imgs, f"{SHARED_VIDEO.name} scaled to {W}x{H}"
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:H, :W]
    base = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.int16)
    imgs = [
        np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8) for _ in range(n)
    ]
    return imgs, "synthetic gradient + noise"


def matte_field(frames: int) -> np.ndarray:
    """(H, W + 8 * frames) float32: a soft-edged ellipse; frame i's matte is the slice at
    column 8 * i, so the matte moves 8 px a frame at no cost per frame."""
    y, x = np.mgrid[:H, : W + 8 * frames].astype(np.float32)
    d = np.hypot((x - 600 - 8 * frames) / 420, (y - 540) / 300)
    return np.clip((1.0 - d) * 20.0, 0.0, 1.0)


def bench(fmt: str, frames: int, images: list[np.ndarray], field: np.ndarray, folder: Path) -> dict:
    spec = FORMATS[fmt]
    out = folder / (f"bench_{fmt}" if spec.is_sequence else f"bench_{fmt}.{spec.ext}")
    info = VideoInfo("bench", W, H, frames, Fraction(25), TB)
    t0 = time.perf_counter()
    with open_writer(fmt, out, info, obj_ids=(1,), config=OutputConfig()) as writer:
        for i in range(frames):
            alpha = field[None, :, 8 * i : 8 * i + W]  # (1, H, W) view
            writer.write(Frame(i, images[i % len(images)], i * 512, TB), Matte(i, (1,), alpha))
    elapsed = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.iterdir()) if out.is_dir() else out.stat().st_size
    return {"format": fmt, "fps": frames / elapsed, "s": elapsed, "mb": size / 1e6}


def machine() -> str:
    import av
    import cv2

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, "
        f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), OpenCV {cv2.__version__}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--formats", default=",".join(DEFAULT_FORMATS), help="ids, or 'all'")
    args = ap.parse_args()
    formats = list(FORMATS) if args.formats == "all" else [f for f in args.formats.split(",") if f]
    images, origin = source_images(16)
    field = matte_field(args.frames)
    print(f"machine: {machine()}")
    print(f"frames: {args.frames} at {W}x{H} from {origin}")
    print(f"load average before: {os.getloadavg()}")
    print(f"{'format':<20}{'frames/s':>10}{'seconds':>10}{'MB':>10}{'load(1m)':>10}")
    folder = Path(tempfile.mkdtemp(prefix="vosfx-bench-"))
    try:
        for fmt in formats:
            r = bench(fmt, args.frames, images, field, folder)
            print(
                f"{r['format']:<20}{r['fps']:>10.2f}{r['s']:>10.2f}{r['mb']:>10.1f}"
                f"{os.getloadavg()[0]:>10.2f}",
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Render the bundled example: a short clip of a ball moving over a textured background, and
its first-frame mask. Deterministic; run it to regenerate examples/ball.mp4 and
examples/ball_mask.png (both are committed so the README's first command works as is).

    python examples/make_example.py
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
W, H, N, FPS = 320, 240, 8, 24  # 8 frames: the first run (1024 px, CPU) stays under a minute


def ball_mask(i: int) -> np.ndarray:
    """(H, W) bool: the ball on frame i (radius 34 px, moving right and down)."""
    cx, cy = 80 + 4.0 * i, 90 + 1.5 * i
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= 34**2


def frame(i: int) -> np.ndarray:
    """(H, W, 3) uint8: a checkerboard-and-gradient background with a shaded orange ball."""
    yy, xx = np.mgrid[0:H, 0:W]
    checker = (((xx // 20) + (yy // 20)) % 2) * 40 + 60
    bg = np.stack([checker + xx * 0.2, checker + yy * 0.3, checker + 50], -1)
    m = ball_mask(i)
    shade = 1.0 - 0.4 * ((xx - 80 - 4.0 * i) ** 2 + (yy - 90 - 1.5 * i) ** 2) / 34**2
    ball = np.stack([240 * shade, 140 * shade, 30 * shade], -1)
    return np.clip(np.where(m[..., None], ball, bg), 0, 255).astype(np.uint8)


def main() -> None:
    with av.open(str(HERE / "ball.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        stream.options = {"crf": "16", "g": "12"}
        for i in range(N):
            vf = av.VideoFrame.from_ndarray(frame(i), format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    Image.fromarray((ball_mask(0) * 255).astype(np.uint8)).save(HERE / "ball_mask.png")


if __name__ == "__main__":
    main()

"""Re-prompt refinement (``[memory] reprompt``, from the VOS-E-SAM seed).

When a tracked frame's reliability (the RCMS quality) or its mask area drops sharply against
the pass's recent frames, the tracker prompts the decoder on that frame again, with the memory
it already attended, using a box and an inside point taken from the last reliable mask; the
new mask is kept only if its quality is higher. Every attempt is an event in the sidecar.
"""

from __future__ import annotations

from collections import deque

import numpy as np

WINDOW_FRAMES = 8  # recent frames the drop is measured against
QUALITY_DROP = 0.5  # a frame below half the recent mean quality ...
AREA_DROP = 0.5  # ... or below half the recent mean area has dropped sharply


class Reprompter:
    """One pass's re-prompt state: recent (quality, area) and the last reliable mask."""

    def __init__(
        self,
        window_frames: int = WINDOW_FRAMES,
        quality_drop: float = QUALITY_DROP,
        area_drop: float = AREA_DROP,
    ) -> None:
        self.recent: deque[tuple[float, int]] = deque(maxlen=window_frames)
        self.quality_drop = quality_drop
        self.area_drop = area_drop
        self.reliable: np.ndarray | None = None  # (s, s) bool: the last reliable mask
        self.reliable_frame: int | None = None

    def dropped(self, quality: float, area: int) -> bool:
        """Whether this frame's quality or area fell sharply below the recent means (needs a
        reliable mask to prompt from and two recent frames to compare with)."""
        if self.reliable is None or len(self.recent) < 2:
            return False
        q = float(np.mean([r[0] for r in self.recent]))
        a = float(np.mean([r[1] for r in self.recent]))
        return quality < self.quality_drop * q or area < self.area_drop * a

    def record(self, frame_index: int, logits: np.ndarray, quality: float, reliable: bool) -> None:
        """The frame's final mask (``logits`` (s, s) low-res) joins the recent window; a
        reliable one with a non-empty mask becomes the mask later prompts come from."""
        mask = logits > 0
        self.recent.append((float(quality), int(mask.sum())))
        if reliable and mask.any():
            self.reliable, self.reliable_frame = mask, frame_index

    def prompt(self, image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A box around the last reliable mask and the point deepest inside it, in model
        pixels: ``coords`` (3, 2) float32 (box corners first, labels 2 and 3, as SAM 2 takes
        a box), ``labels`` (3,) int32."""
        import cv2

        m = self.reliable
        assert m is not None  # the tracker prompts only after dropped(), which needs one
        scale = image_size / m.shape[0]
        ys, xs = np.nonzero(m)
        dist = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        coords = np.array(
            [[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1], [x + 0.5, y + 0.5]], np.float32
        ) * np.float32(scale)
        return coords, np.array([2, 3, 1], np.int32)

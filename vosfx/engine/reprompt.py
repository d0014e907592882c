"""Re-prompt refinement (``[memory] reprompt``, from the VOS-E-SAM seed).

When a tracked frame's reliability (the RCMS quality) or its mask area drops sharply against
the pass's recent frames, the tracker prompts the decoder on that frame again, with the memory
it already attended, using a box and an inside point taken from the last reliable mask; the
new mask is kept only if its quality is higher. Every attempt is an event in the sidecar.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vosfx.engine.backend import Backend, TrackRequest

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


def reprompt_frame(
    backend: Backend,
    rp: Reprompter,
    t: int,
    req: TrackRequest,
    current: tuple,
    fill_hole_area: int,
    video_hw: tuple[int, int],
) -> tuple[tuple, dict[str, Any] | None]:
    """One tracked frame through re-prompt refinement: on a sharp drop (:meth:`Reprompter.
    dropped`), prompt the decoder on this frame (the request's memory) with a box and point
    from the last reliable mask; keep the new output if its quality is higher.

    ``current``: the frame's output as the tracker holds it, (low-res logits, IoU, all IoUs,
    pointer, object score, filled logits, quality). Returns (the frame's output, the sidecar
    record or None when nothing was tried)."""
    from vosfx.engine.decoding import choose_output, fill_holes
    from vosfx.engine.policies.rcms import frame_quality

    filled, quality = current[5], current[6]
    if not rp.dropped(quality, int((filled > 0).sum())):
        rp.record(t, filled, quality, reliable=True)
        return current, None
    coords, labels = rp.prompt(backend.image_size)
    out = backend.track(replace(req, point_coords=coords, point_labels=labels))
    low, iou, all_ious, ptr = choose_output(backend, out, False, len(labels), None, 0, video_hw)
    score = out.object_score_logit
    filled2 = fill_holes(low, fill_hole_area)
    q2 = frame_quality(score, all_ious, filled2)
    kept = q2 > quality
    record = {
        "from_frame": rp.reliable_frame,
        "quality_before": quality,
        "quality_after": q2,
        "kept": kept,
        "event": f"reprompt {'kept' if kept else 'rejected'} "
        f"(quality {quality:.3f} -> {q2:.3f}, mask of frame "
        f"{rp.reliable_frame})",
    }
    if kept:
        current = (low, iou, all_ious, ptr, score, filled2, q2)
    rp.record(t, current[5], current[6], reliable=kept)
    return current, record

"""Shot-cut detection on the frames already decoded (frames arrive one by one, no second decode).

Two kinds of boundary, measured on a small copy of each frame (about 160 px wide):

a. **Hard cut** between two frames with content: the mean absolute HSV difference from the
   previous frame (PySceneDetect's content score, 0-255) is at least ``threshold`` and at least
   ``adaptive_ratio`` times the mean score of the previous ``window_frames`` frames, so fast
   motion (DAVIS bmx-trees: scores around 30 on every frame) is not a cut but a jump is.
b. **Gap through black**: frames whose mean RGB level is below ``dark_level`` (PySceneDetect's
   ThresholdDetector default, 12 of 255) separate shots. A dark run between two runs of content
   is one boundary, placed inside the run with PySceneDetect's fade-bias rule
   (``start + (end - start) * (1 + fade_bias) / 2``); leading and trailing dark runs (a clip
   that opens or ends on black) are not cuts, and neither are the jumps into or out of black.

``push`` must answer for each frame as it arrives, so it switches shot ids at the earliest
frame where the boundary is known: the cut frame for a hard cut, the first frame with content
after a dark gap. ``cuts`` places each boundary where an editor expects it (inside the gap);
``shot_starts`` lists where ``push`` switched. The two differ only by dark frames, which hold
no object to track. See docs/benchmarks/shots.md for the measurements behind each default.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from vosfx.errors import ConfigError
from vosfx.types import Frame

DEFAULT_THRESHOLD = 15.0  # content score a hard cut needs at least (0-255 HSV units)
SMALL_WIDTH_PX = 160  # analysis width; cuts are global changes, detail only costs time


class ShotDetector:
    """Assigns a shot id to each frame in decode order.

    ``threshold``: minimum content score of a hard cut (0: the default, 15).
    ``min_shot_frames``: a boundary closer than this to the previous one is ignored.
    ``adaptive_ratio``: a hard cut's score must also be this many times the recent mean.
    ``window_frames``: how many previous scores make the recent mean.
    ``dark_level``: mean RGB level (0-255) under which a frame counts as black.
    ``fade_bias``: where in a dark gap the boundary goes (-1 start, 0 middle, +1 end).
    """

    def __init__(self, threshold: float = 0.0, min_shot_frames: int = 15, *,
                 adaptive_ratio: float = 3.0, window_frames: int = 8,
                 dark_level: float = 12.0, fade_bias: float = 0.25) -> None:
        if not 0.0 <= threshold <= 255.0:
            raise ConfigError(f"shot threshold: expected 0..255 (0: default), found {threshold!r}")
        if isinstance(min_shot_frames, bool) or not isinstance(min_shot_frames, int) \
                or min_shot_frames < 1:
            raise ConfigError(
                f"shot min_shot_frames: expected an integer >= 1, found {min_shot_frames!r}")
        if not -1.0 <= fade_bias <= 1.0:
            raise ConfigError(f"shot fade_bias: expected -1..1, found {fade_bias!r}")
        self.threshold = float(threshold) or DEFAULT_THRESHOLD
        self.min_shot_frames = min_shot_frames
        self.adaptive_ratio = float(adaptive_ratio)
        self.dark_level = float(dark_level)
        self.fade_bias = float(fade_bias)
        self.cuts: list[int] = []  # frame indices where a new shot starts (editor's placement)
        self.shot_starts: list[int] = []  # frames where push() switched to a new shot id
        self.scores: dict[int, float] = {}  # content score per frame with content on both sides
        self._recent: deque[float] = deque(maxlen=window_frames)
        self._shot = 0
        self._prev_hsv: np.ndarray | None = None  # previous frame, when it had content
        self._seen_content = False
        self._dark_start: int | None = None
        self._last_boundary = 0
        self._last_index: int | None = None

    @property
    def shot_id(self) -> int:
        """Shot id of the last pushed frame (0 before any)."""
        return self._shot

    def push(self, frame: Frame) -> int:
        """Analyse the next frame (indices must increase) and return its shot id."""
        if self._last_index is not None and frame.index <= self._last_index:
            raise ConfigError(f"ShotDetector.push: expected frame index > {self._last_index}, "
                              f"found {frame.index}")
        self._last_index = frame.index
        return self.push_array(frame.index, frame.rgb8)

    def push_array(self, index: int, rgb: np.ndarray) -> int:
        """``push`` for a bare (H, W, 3) uint8 RGB array (benchmarks, tests)."""
        import cv2

        small = _downscale(rgb)
        if float(small.mean()) < self.dark_level:
            if self._dark_start is None:
                self._dark_start = index
            self._prev_hsv = None  # never compare across black
            return self._shot
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.int16)  # (h, w, 3)
        if self._dark_start is not None:
            start, self._dark_start = self._dark_start, None
            if self._seen_content:
                cut = start + int((index - start) * (1.0 + self.fade_bias) / 2.0)
                self._boundary(cut, index)
        elif self._prev_hsv is not None:
            score = float(np.abs(hsv - self._prev_hsv).mean())
            self.scores[index] = score
            if not (self._is_hard_cut(score) and self._boundary(index, index)):
                self._recent.append(score)
        self._prev_hsv = hsv
        self._seen_content = True
        return self._shot

    def _is_hard_cut(self, score: float) -> bool:
        # two scores at least make a baseline; a shot's first frames cannot be cut anyway
        if score < self.threshold or len(self._recent) < 2:
            return False
        return score >= self.adaptive_ratio * max(float(np.mean(self._recent)), 1.0)

    def _boundary(self, cut: int, switch: int) -> bool:
        if cut - self._last_boundary < self.min_shot_frames:
            return False
        self._last_boundary = cut
        self.cuts.append(cut)
        self.shot_starts.append(switch)
        self._shot += 1
        self._recent.clear()  # the new shot's motion makes a new baseline
        return True


def _downscale(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, ~160, 3) uint8: integer-stride subsample, then area average.

    The stride step first keeps the cost of a 1080p frame near that of a 320 px one; area
    averaging then removes most of the aliasing the stride leaves.
    """
    import cv2

    w = rgb.shape[1]
    step = max(1, w // (2 * SMALL_WIDTH_PX))
    sub = rgb[::step, ::step]
    sw = min(SMALL_WIDTH_PX, sub.shape[1])
    sh = max(1, round(sub.shape[0] * sw / sub.shape[1]))
    return cv2.resize(np.ascontiguousarray(sub), (sw, sh), interpolation=cv2.INTER_AREA)

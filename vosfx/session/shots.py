"""Shot-cut detection on the frames already decoded (frames arrive one by one, no second decode).

Two kinds of boundary, measured on a small copy of each frame (about 160 px wide):

a. **Hard cut** between two frames with content. The content score (PySceneDetect's mean
   absolute HSV difference from the previous frame, 0-255) must be at least ``threshold``, and
   one of three pieces of evidence must say that the picture was replaced rather than moved:

   - *content*: the score is ``adaptive_ratio`` times the mean score of the previous
     ``window_frames`` frames (a jump out of a calm shot);
   - *colour*: the HSV histograms of the two frames differ by at least ``colour_cut`` (half
     the L1 distance of 16x4x4-bin histograms, 0-1). Motion moves pixels but keeps a shot's
     colours: fast DAVIS clips stay under 0.09, a fade under 0.27; joins of two DAVIS
     sequences are 0.50 or more;
   - *structure*: the motion-compensated difference (each 5x5 block of a 40 px wide copy
     matched within +-3 px, about +-8 % of the width, in the previous frame) is at least
     ``structure_min`` and ``structure_ratio`` times its recent mean. Fast motion is mostly
     explained by a shift (bmx-trees: at most 13, at most 1.7x its recent mean); a new
     picture of the same place is not (a jump of 20 frames inside a DAVIS take: 13-31,
     2.2-4.6x).

   The first rule alone missed cuts that follow fast motion: motion raises the recent mean
   (bmx-trees and libby score about 30 on every frame) so a cut scoring 50 is under 3x it.
b. **Gap through black**: frames whose mean RGB level is below ``dark_level`` (PySceneDetect's
   ThresholdDetector default, 12 of 255) separate shots. A dark run between two runs of content
   is one boundary, placed inside the run with PySceneDetect's fade-bias rule
   (``start + (end - start) * (1 + fade_bias) / 2``); leading and trailing dark runs (a clip
   that opens or ends on black) are not cuts, and neither are the jumps into or out of black.

``push`` must answer for each frame as it arrives, so it switches shot ids at the earliest
frame where the boundary is known: the cut frame for a hard cut, the first frame with content
after a dark gap. ``cuts`` places each boundary where an editor expects it (inside the gap);
``shot_starts`` lists where ``push`` switched; ``reasons`` says which evidence found each hard
cut. See docs/benchmarks/shots.md for the measurements behind each default.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from vosfx.errors import ConfigError
from vosfx.types import Frame

DEFAULT_THRESHOLD = 15.0  # content score a hard cut needs at least (0-255 HSV units)
SMALL_WIDTH_PX = 160  # analysis width; cuts are global changes, detail only costs time
COARSE_WIDTH_PX = 40  # motion-compensated comparison width (5x5 blocks: 8 across)
BLOCK_PX = 5
SHIFT_PX = 3  # search radius at the coarse width: +-12 px at 160, +-7.5 % of the width
HIST_BINS = (16, 4, 4)  # hue, saturation, value
STRUCTURE_FLOOR = 2.0  # a still shot's structure difference is noise; keep the ratio sane


@dataclass(frozen=True)
class _Look:
    """What the detector keeps of one frame with content."""

    hsv: np.ndarray  # (h, w, 3) int16, the ~160 px copy in OpenCV HSV (H 0-179)
    coarse: np.ndarray  # (h/4, 40, 3) float32 RGB, area-averaged
    hist: np.ndarray  # (256,) float32, HSV histogram summing to 1

    @classmethod
    def of(cls, small: np.ndarray) -> _Look:
        import cv2

        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        counts = cv2.calcHist([hsv], [0, 1, 2], None, list(HIST_BINS), [0, 180, 0, 256, 0, 256])
        hist = counts.ravel() / max(float(counts.sum()), 1.0)
        ch = max(BLOCK_PX, round(small.shape[0] * COARSE_WIDTH_PX / small.shape[1]))
        coarse = cv2.resize(small, (COARSE_WIDTH_PX, ch), interpolation=cv2.INTER_AREA)
        return cls(hsv.astype(np.int16), coarse.astype(np.float32), hist)

    def content(self, prev: _Look) -> float:
        """Mean absolute HSV difference, 0-255 (PySceneDetect's content score)."""
        return float(np.abs(self.hsv - prev.hsv).mean())

    def colour(self, prev: _Look) -> float:
        """Half the L1 distance between the histograms: 0 same colours, 1 disjoint."""
        return float(np.abs(self.hist - prev.hist).sum() / 2.0)

    def structure(self, prev: _Look) -> float:
        """Mean over 5x5 blocks of the best-shift absolute RGB difference (0-255)."""
        import cv2

        r, bs = SHIFT_PX, BLOCK_PX
        h, w = self.coarse.shape[:2]
        hb, wb = h // bs * bs, w // bs * bs
        pad = cv2.copyMakeBorder(prev.coarse, r, r, r, r, cv2.BORDER_REPLICATE)
        cur = self.coarse[:hb, :wb]
        best = None
        # 49 shifts of a (10, 40, 3) image: OpenCV per shift is ~4x faster than one
        # broadcast numpy array of all shifts at this size
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                diff = cv2.absdiff(cur, pad[dy : dy + hb, dx : dx + wb])
                blocks = cv2.resize(diff, (wb // bs, hb // bs), interpolation=cv2.INTER_AREA)
                blocks = blocks.sum(axis=2)  # (hb/5, wb/5): summed over RGB
                best = blocks if best is None else np.minimum(best, blocks)
        assert best is not None  # (2 * SHIFT_PX + 1)^2 >= 1 shifts
        return float(best.mean() / 3.0)


class ShotDetector:
    """Assigns a shot id to each frame in decode order.

    ``threshold``: minimum content score of a hard cut (0: the default, 15).
    ``min_shot_frames``: a boundary closer than this to the previous one is ignored.
    ``adaptive_ratio``: content evidence: the score is this many times the recent mean.
    ``window_frames``: how many previous frames make the recent means.
    ``colour_cut``: colour evidence: histogram distance (0-1) at least this.
    ``structure_ratio``, ``structure_min``: structure evidence (see the module docstring).
    ``dark_level``: mean RGB level (0-255) under which a frame counts as black.
    ``fade_bias``: where in a dark gap the boundary goes (-1 start, 0 middle, +1 end).
    """

    def __init__(
        self,
        threshold: float = 0.0,
        min_shot_frames: int = 15,
        *,
        adaptive_ratio: float = 3.0,
        window_frames: int = 8,
        colour_cut: float = 0.4,
        structure_ratio: float = 2.0,
        structure_min: float = 12.0,
        dark_level: float = 12.0,
        fade_bias: float = 0.25,
    ) -> None:
        if not 0.0 <= threshold <= 255.0:
            raise ConfigError(f"shot threshold: expected 0..255 (0: default), found {threshold!r}")
        if (
            isinstance(min_shot_frames, bool)
            or not isinstance(min_shot_frames, int)
            or min_shot_frames < 1
        ):
            raise ConfigError(
                f"shot min_shot_frames: expected an integer >= 1, found {min_shot_frames!r}"
            )
        if not -1.0 <= fade_bias <= 1.0:
            raise ConfigError(f"shot fade_bias: expected -1..1, found {fade_bias!r}")
        if not 0.0 < colour_cut <= 1.0:
            raise ConfigError(f"shot colour_cut: expected 0 < x <= 1, found {colour_cut!r}")
        self.threshold = float(threshold) or DEFAULT_THRESHOLD
        self.min_shot_frames = min_shot_frames
        self.adaptive_ratio = float(adaptive_ratio)
        self.colour_cut = float(colour_cut)
        self.structure_ratio = float(structure_ratio)
        self.structure_min = float(structure_min)
        self.dark_level = float(dark_level)
        self.fade_bias = float(fade_bias)
        self.cuts: list[int] = []  # frame indices where a new shot starts (editor's placement)
        self.shot_starts: list[int] = []  # frames where push() switched to a new shot id
        self.reasons: dict[int, str] = {}  # hard cut -> "content" | "colour" | "structure"
        self.scores: dict[int, float] = {}  # content score per frame with content on both sides
        # (frame, content score) of the last frames of this shot, the adaptive baseline
        self._recent: deque[tuple[int, float]] = deque(maxlen=window_frames)
        # (frame, look) of the last consecutive frames with content: the structure baseline
        self._looks: deque[tuple[int, _Look]] = deque(maxlen=window_frames + 2)
        self._structure: dict[int, float] = {}  # frame -> structure difference (cache)
        self._shot = 0
        self._prev: _Look | None = None  # previous frame, when it had content
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
            raise ConfigError(
                f"ShotDetector.push: expected frame index > {self._last_index}, found {frame.index}"
            )
        self._last_index = frame.index
        return self.push_array(frame.index, frame.rgb8)

    def push_array(self, index: int, rgb: np.ndarray) -> int:
        """``push`` for a bare (H, W, 3) uint8 RGB array (benchmarks, tests)."""
        small = _downscale(rgb)
        if float(small.mean()) < self.dark_level:
            if self._dark_start is None:
                self._dark_start = index
            self._prev = None  # never compare across black
            self._looks.clear()
            return self._shot
        look = _Look.of(small)
        if self._dark_start is not None:
            start, self._dark_start = self._dark_start, None
            if self._seen_content:
                cut = start + int((index - start) * (1.0 + self.fade_bias) / 2.0)
                self._boundary(cut, index)
        elif self._prev is not None:
            self._compare(index, look, self._prev)
        if not self._looks or self._looks[-1][0] != index:
            self._looks.append((index, look))
        self._prev = look
        self._seen_content = True
        return self._shot

    def _compare(self, index: int, look: _Look, prev: _Look) -> None:
        score = look.content(prev)
        self.scores[index] = score
        self._looks.append((index, look))
        reason = self._hard_cut_reason(index, score, look, prev)
        if reason and self._boundary(index, index):
            self.reasons[index] = reason
            self._looks.clear()
            self._looks.append((index, look))
            return  # the new shot starts its own baselines
        self._recent.append((index, score))

    def _hard_cut_reason(self, index: int, score: float, look: _Look, prev: _Look) -> str:
        # two scores at least make a baseline; a shot's first frames cannot be cut anyway
        if score < self.threshold or len(self._recent) < 2:
            return ""
        if score >= self.adaptive_ratio * max(float(np.mean([s for _, s in self._recent])), 1.0):
            return "content"
        if look.colour(prev) >= self.colour_cut:
            return "colour"
        structure = self._structure_at(index)
        if structure < self.structure_min:
            return ""
        recent = np.mean([self._structure_at(i) for i, _ in self._recent])
        if structure >= self.structure_ratio * max(float(recent), STRUCTURE_FLOOR):
            return "structure"
        return ""

    def _structure_at(self, index: int) -> float:
        """Structure difference of frame ``index`` from the frame before it, computed only
        when a decision needs it (most frames of a calm shot score under ``threshold`` and
        never do: 49 block matches cost more than everything else per frame)."""
        if index not in self._structure:
            order = [i for i, _ in self._looks]
            at = order.index(index)  # frames with content arrive consecutively (black resets)
            self._structure[index] = self._looks[at][1].structure(self._looks[at - 1][1])
            keep = {i for i, _ in self._recent} | {index}
            self._structure = {i: v for i, v in self._structure.items() if i in keep}
        return self._structure[index]

    def _boundary(self, cut: int, switch: int) -> bool:
        if cut - self._last_boundary < self.min_shot_frames:
            return False
        self._last_boundary = cut
        self.cuts.append(cut)
        self.shot_starts.append(switch)
        self._shot += 1
        self._recent.clear()  # the new shot's motion makes a new baseline
        self._structure.clear()
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

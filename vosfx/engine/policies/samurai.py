"""SAMURAI (Yang et al. 2024): motion-aware mask choice and score-gated recent memory.

Reference: yangchris11/samurai (commit 76ba195), ``sam2/sam2/modeling/sam2_base.py`` in
``samurai_mode`` with ``configs/samurai/*.yaml``. Implemented from the paper and that code's
behaviour (docs/memory.md lists each rule); parity fixtures in tests/fixtures/policies.

Three rules on top of SAM 2:

a. **Motion-aware choice** (:meth:`SamuraiPolicy.choose`): a constant-velocity Kalman filter
   follows the chosen mask's bounding box. Until it has been updated ``stable_frames`` times in
   a row the highest predicted IoU wins as in SAM 2; after that each candidate scores
   ``kf_weight x IoU(predicted box, candidate box) + (1 - kf_weight) x predicted IoU``.
b. **Gated recent memory** (:meth:`SamuraiPolicy.select`): instead of the six previous frames,
   the frame just before plus the most recent frames whose chosen mask's predicted IoU, object
   score and motion score pass their thresholds, ranked by recency for the temporal encoding.
c. **Object threshold**: a mask counts as present above object-score logit -1 (SAM 2: 0) in the
   decoder; the memory encoder keeps SAM 2's 0.
"""

from __future__ import annotations

import numpy as np

from vosfx.engine.policies.base import BankView, Decision, MemoryEntry, PolicyLog, Selection
from vosfx.engine.policies.candidates import Box, Candidates
from vosfx.engine.policies.sam2 import Sam2Policy


class BoxKalman:
    """Constant-velocity Kalman filter over a box (cx, cy, aspect w/h, height) and their
    velocities, with noise proportional to the box height (the tracking-by-detection setting
    SAMURAI uses: position std h/20, velocity std h/160, aspect std 1e-2 / 1e-5)."""

    POS, VEL = 1.0 / 20.0, 1.0 / 160.0

    def __init__(self) -> None:
        self.transition = np.eye(8)
        self.transition[:4, 4:] = np.eye(4)  # x += v, dt = 1 frame
        self.observe = np.eye(4, 8)
        self.mean: np.ndarray | None = None  # (8,) float64
        self.cov: np.ndarray | None = None  # (8, 8) float64

    def start(self, z: np.ndarray) -> None:
        h = z[3]
        std = [
            2 * self.POS * h,
            2 * self.POS * h,
            1e-2,
            2 * self.POS * h,
            10 * self.VEL * h,
            10 * self.VEL * h,
            1e-5,
            10 * self.VEL * h,
        ]
        self.mean = np.r_[z, np.zeros(4)]
        self.cov = np.diag(np.square(std))

    def predict(self) -> None:
        assert self.mean is not None and self.cov is not None  # start() came first
        h = self.mean[3]
        std = [
            self.POS * h,
            self.POS * h,
            1e-2,
            self.POS * h,
            self.VEL * h,
            self.VEL * h,
            1e-5,
            self.VEL * h,
        ]
        self.mean = self.transition @ self.mean
        self.cov = self.transition @ self.cov @ self.transition.T + np.diag(np.square(std))

    def correct(self, z: np.ndarray) -> None:
        assert self.mean is not None and self.cov is not None  # start() came first
        h = self.mean[3]
        noise = np.diag(np.square([self.POS * h, self.POS * h, 1e-1, self.POS * h]))
        s = self.observe @ self.cov @ self.observe.T + noise  # (4, 4) innovation covariance
        gain = np.linalg.solve(s, self.observe @ self.cov).T  # (8, 4); s and cov symmetric
        self.mean = self.mean + gain @ (z - self.observe @ self.mean)
        self.cov = self.cov - gain @ s @ gain.T

    def box(self) -> tuple[float, float, float, float]:
        """The predicted box as x0, y0, x1, y1 (float)."""
        assert self.mean is not None  # start() came first
        cx, cy, a, h = self.mean[:4]
        return cx - a * h / 2, cy - h / 2, cx + a * h / 2, cy + h / 2


def box_measurement(box: Box) -> np.ndarray:
    """(cx, cy, w / h, h); an empty box [0, 0, 0, 0] measures as (0, 0, 0, 1) (height 1)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    h = h or 1
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, w / h, h], np.float64)


def box_iou(pred: tuple[float, float, float, float], box: Box) -> float:
    """IoU of the filter's box and a candidate box, SAMURAI's way: corner differences
    (no +1), 0 for an empty candidate or a zero union."""
    if tuple(box) == (0, 0, 0, 0):
        return 0.0
    x0, y0, x1, y1 = pred
    u0, v0, u1, v1 = box
    inter = max(0.0, min(x1, u1) - max(x0, u0)) * max(0.0, min(y1, v1) - max(y0, v0))
    union = (x1 - x0) * (y1 - y0) + (u1 - u0) * (v1 - v0) - inter
    return inter / union if union != 0 else 0.0


class SamuraiPolicy(Sam2Policy):
    """SAMURAI's memory and mask choice for one object (module docstring: rules a-c).

    Defaults are ``configs/samurai/sam2.1_hiera_*.yaml``: ``stable_frames`` 15,
    ``stable_iou`` 0.3, ``kf_weight`` 0.25, memory gates IoU 0.5, object score 0, motion
    score 0; ``min_object_score`` -1.
    """

    name = "samurai"
    RECENT = 6  # num_maskmem - 1 in every SAM 2 config

    def __init__(
        self,
        *,
        stable_frames: int = 15,
        stable_iou: float = 0.3,
        kf_weight: float = 0.25,
        memory_iou: float = 0.5,
        memory_object: float = 0.0,
        memory_motion: float = 0.0,
        min_object_score: float = -1.0,
        max_cond_frames: int = -1,
    ) -> None:
        super().__init__(max_cond_frames)
        self.stable_frames = stable_frames
        self.stable_iou = stable_iou
        self.kf_weight = kf_weight
        self.memory_iou = memory_iou
        self.memory_object = memory_object
        self.memory_motion = memory_motion
        self.min_object_score = min_object_score  # read by the tracker: the decoder's gate
        self.log = PolicyLog()
        self._kf = BoxKalman()
        self._stable = 0
        self._motion: dict[int, float] = {}  # frame -> motion score of its chosen mask
        self._valid: list[int] = []  # recent frames that passed the memory gate, ascending
        self._first: int | None = None  # first prompted frame

    # --- rule a: the mask choice -------------------------------------------------------------
    def choose(self, frame_index: int, cands: Candidates) -> int:
        ious = np.asarray(cands.ious, np.float32)  # (3,)
        best = int(np.argmax(ious))
        if self._kf.mean is None or self._stable == 0:
            self._kf.start(box_measurement(cands.box(best)))
            self._stable += 1
            return best
        self._kf.predict()
        if self._stable < self.stable_frames:
            if ious[best] > np.float32(self.stable_iou):
                self._kf.correct(box_measurement(cands.box(best)))
                self._stable += 1
            else:
                self._stable = 0
            return best
        pred = self._kf.box()
        boxes = [cands.box(k) for k in range(len(ious))]
        motion = np.array([box_iou(pred, b) for b in boxes], np.float32)
        # float32 as the reference (a float32 tensor of the box IoUs, blended in float32)
        blended = np.float32(self.kf_weight) * motion + np.float32(1 - self.kf_weight) * ious
        k = int(np.argmax(blended))
        if ious[k] < np.float32(self.stable_iou):
            self._stable = 0
        else:
            self._kf.correct(box_measurement(boxes[k]))
        self._motion[frame_index] = float(motion[k])
        if k != best:
            self.log.events[frame_index] = f"motion chose mask {k} over {best}"
        return k

    # --- rule b: the memory --------------------------------------------------------------------
    def _passes(self, e: MemoryEntry) -> bool:
        motion = self._motion.get(e.frame_index)
        return (
            e.iou > self.memory_iou
            and e.object_score_logit > self.memory_object
            and (motion is None or motion > self.memory_motion)
        )

    def select(self, frame_index: int, shot_id: int, bank: BankView) -> Selection:
        base = super().select(frame_index, shot_id, bank)
        cond = [(f, p) for f, p in base.masks if p == 0]
        recent = [f for f in self._valid if f < frame_index - 1]
        recent = (recent + [frame_index - 1])[-self.RECENT :]
        entries = bank.entries
        # t_pos by rank (the most recent is RECENT); a conditioning frame leaves its slot empty
        n = len(recent)
        masks = [
            (f, self.RECENT - n + 1 + i)
            for i, f in enumerate(recent)
            if f in entries and not entries[f].is_cond
        ]
        return Selection(
            masks=tuple(cond + masks),
            pointers=base.pointers,
            pointer_t_diff_max=base.pointer_t_diff_max,
        )

    def observe(self, entry: MemoryEntry, bank: BankView) -> Decision:
        if self._first is None:
            # the pass's anchor (stored before the first step, without an observe)
            prompts = [f for f, e in bank.entries.items() if e.is_prompt]
            self._first = min(prompts, default=entry.frame_index)
        # the reference scans frames from t-1 down to its clip's frame 2: the prompt frame and
        # the one after it are never gated in (frames are pass-relative here, so counted from
        # the anchor)
        if not entry.is_prompt and entry.frame_index >= self._first + 2 and self._passes(entry):
            self._valid = (self._valid + [entry.frame_index])[-self.RECENT :]
        return super().observe(entry, bank)

    def retain(self, frame_index: int, bank: BankView) -> set[int]:
        keep = super().retain(frame_index, bank) | set(self._valid)
        self._motion = {f: s for f, s in self._motion.items() if f in keep or f > frame_index}
        return keep

"""DAM4SAM (Videnovic et al., CVPR 2025): distractor-aware memory for SAM 2.

Reference: jovanavidenovic/DAM4SAM (commit 9c95450), ``dam4sam_tracker.py`` and its ``sam2``
fork (``sam2_base.py``, ``sam2_utils.py``, ``sam21pp_hiera_*.yaml``). Implemented from the paper
and that code's behaviour; docs/memory.md lists each rule, tests/test_policy_dam4sam.py holds
it to fixtures recorded with the reference.

Memory has two parts, always 7 slots together:

- **DRM** (distractor-resolving memory, conditioning slots, temporal slot 0): the prompt plus
  tracked frames added when the chosen mask is confident and of the usual size but another
  candidate reaches well outside it (a distractor nearby). At most 4 are attended: the newest
  before t-1, the prompt, then the closest others (never t-1, which the RAM takes).
- **RAM** (recent appearance memory): 7 - |DRM| slots: the newest frame where the object is
  visible, then frames every 5th (multiples of 5) going back, skipping frames without a
  visible mask; temporal slots by rank.

Object pointers come from DRM frames and the 15 previous frames where the object is visible,
with unsigned distances normalised by the frames seen so far (at most 15).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from vosfx.engine.policies.base import BankView, Decision, MemoryEntry, PolicyLog, Selection
from vosfx.engine.policies.candidates import Candidates


def largest_component(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> bool: the largest 8-connected component (the first on a tie)."""
    import cv2

    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def raster_box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the bounding rectangles of two non-empty masks, the way the VOT toolkit's
    ``Mask.convert(RECTANGLE)`` + ``calculate_overlaps`` measure it: the rectangle spans
    (left, top) to (right - 1, bottom - 1) of the mask's inclusive bounds (its width is
    right - left), and the overlap counts rasterised pixels."""

    def bounds(m: np.ndarray) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(m)
        left, top, right, bottom = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        return left, top, right - 1, bottom - 1  # inclusive pixel bounds of the rectangle

    (l1, t1, r1, b1), (l2, t2, r2, b2) = bounds(a), bounds(b)
    if min(l1, l2) >= max(r1, r2) or min(t1, t2) >= max(b1, b2):
        return 1.0  # both degenerate: the toolkit calls two empty regions identical

    def area(l: int, t: int, r: int, b: int) -> int:
        return max(0, r - l + 1) * max(0, b - t + 1)

    inter = area(max(l1, l2), max(t1, t2), min(r1, r2), min(b1, b2))
    union = area(l1, t1, r1, b1) + area(l2, t2, r2, b2) - inter
    return inter / union if union else 0.0


class Dam4samPolicy:
    """DAM4SAM's memory for one object (module docstring). Defaults are the reference's:
    ``drm_slots`` 4 (``max_cond_frames_in_attn``), ``ram_stride`` 5
    (``memory_temporal_stride_for_eval``), and the wrapper's DRM rule: chosen IoU > 0.8, size
    within 0.8-1.2 of the median of the last 10 visible sizes, more than 5 frames since the
    last addition, some alternative's box IoU with the chosen mask's <= 0.7."""

    name = "dam4sam"
    SLOTS = 7  # num_maskmem
    SIZE_HISTORY, SIZE_MEDIAN = 300, 10

    def __init__(
        self,
        *,
        drm_slots: int = 4,
        ram_stride: int = 5,
        add_iou: float = 0.8,
        size_low: float = 0.8,
        size_high: float = 1.2,
        min_gap: int = 5,
        distractor_iou: float = 0.7,
    ) -> None:
        self.drm_slots = drm_slots
        self.ram_stride = ram_stride
        self.add_iou = add_iou
        self.size_low, self.size_high = size_low, size_high
        self.min_gap = min_gap
        self.distractor_iou = distractor_iou
        self.log = PolicyLog()
        self.drm_added: list[int] = []  # frames added to the DRM, in order
        self._visible: dict[int, bool] = {}  # frame -> chosen low-res mask has a positive pixel
        self._sizes: deque[int] = deque(maxlen=self.SIZE_HISTORY)  # video-res areas
        self._last_added = -1
        self._first: int | None = None
        self._pending: tuple[int, Candidates, int] | None = None

    # --- the mask: SAM 2's choice, remembered for the DRM rule -------------------------------
    def choose(self, frame_index: int, cands: Candidates) -> int:
        k = int(np.argmax(cands.ious))
        self._visible[frame_index] = bool((cands.logits[k] > 0).any())
        self._pending = (frame_index, cands, k)
        return k

    def _adds_to_drm(self, frame_index: int) -> bool:
        if self._pending is None or self._pending[0] != frame_index:
            return False
        _, cands, k = self._pending
        self._pending = None
        chosen = cands.video_mask(k)  # (H, W) bool; the alternatives only if they can matter
        n = int(chosen.sum())
        self._sizes.append(n)
        ratio = -1.0
        if len(self._sizes) > 1 and n >= 1:
            recent = [s for s in self._sizes if s >= 1][-self.SIZE_MEDIAN :]
            ratio = n / float(np.median(recent))
        if not (
            cands.ious[k] > np.float32(self.add_iou)
            and self.size_low <= ratio <= self.size_high
            and n >= 1
            and (frame_index - self._last_added > self.min_gap or self._last_added == -1)
        ):
            return False
        alts = [cands.video_mask(j) & ~chosen for j in range(len(cands.ious)) if j != k]
        alts = [largest_component(a) | chosen for a in alts if a.any()]
        if not alts:
            return False
        if min(raster_box_iou(chosen, a) for a in alts) > self.distractor_iou:
            return False
        self._last_added = frame_index
        return True

    # --- the memory ------------------------------------------------------------------------
    def _drm(self, t: int, cond: list[int]) -> list[int]:
        chosen: list[int] = []
        before = [c for c in cond if c < t - 1]
        if before:
            chosen.append(max(before))
        if self._first is not None and self._first not in chosen and self._first in cond:
            chosen.append(self._first)
        rest = sorted((c for c in cond if c not in chosen and c != t - 1), key=lambda c: abs(c - t))
        return chosen + rest[: max(self.drm_slots - len(chosen), 0)]

    def _usable(self, f: int, entries: dict[int, MemoryEntry], drm: list[int]) -> bool:
        return f in entries and self._visible.get(f, True) and f not in drm

    def _ram(
        self, t: int, entries: dict[int, MemoryEntry], drm: list[int]
    ) -> list[tuple[int, int | None]]:
        """(key, frame or None) per RAM slot, as the reference builds them (key: the frame
        index it stopped at, which orders the slots)."""
        noncond = {f for f, e in entries.items() if not e.is_cond}
        slots: list[tuple[int, int | None]] = []
        prev = t - 1
        for i in range(self.SLOTS - len(drm)):
            if i > 0 and prev < 0:
                slots.append((prev, None))
                continue
            step = 1 if i == 0 else self.ram_stride
            if i > 0:
                prev = ((prev - 1) // step) * step
            ok = (prev in noncond or (i == 0 and prev in entries)) and self._usable(
                prev, entries, drm
            )
            while not ok:
                prev -= step
                if prev <= 0:
                    break
                ok = prev in noncond and self._usable(prev, entries, drm)
            slots.append((prev, prev if ok else None))
        return slots

    def select(self, frame_index: int, shot_id: int, bank: BankView) -> Selection:
        t, entries = frame_index, bank.entries
        cond = [f for f, e in entries.items() if e.is_cond]
        if self._first is None:
            self._first = min((f for f, e in entries.items() if e.is_prompt), default=None)
        drm = self._drm(t, cond)
        ordered = sorted(
            [(0, f) for f in drm] + self._ram(t, entries, drm), key=lambda x: x[0]
        )  # stable: DRM in choice order, RAM by frame
        masks = [
            (f, 0 if key == 0 else pos) for pos, (key, f) in enumerate(ordered) if f is not None
        ]
        # pointers: DRM frames (distance |t - f|), then visible frames t-1 .. t-15; the
        # reference counts the clip as the frames seen so far (it grows by one per frame)
        seen = t - (self._first or 0) + 1
        max_ptrs = min(seen, bank.max_obj_ptrs)
        pointers = [(f, abs(t - f)) for f in drm if f <= t]
        for d in range(1, max_ptrs):
            f = t - d
            if f < 0:
                break
            if f in entries and f not in drm and self._visible.get(f, True):
                pointers.append((f, d))
        return Selection(
            masks=tuple(masks), pointers=tuple(pointers), pointer_t_diff_max=max_ptrs - 1
        )

    def observe(self, entry: MemoryEntry, bank: BankView) -> Decision:
        if entry.is_prompt:
            return Decision(store=True, as_cond=True)
        if self._adds_to_drm(entry.frame_index):
            self.drm_added.append(entry.frame_index)
            self.log.events[entry.frame_index] = "drm"
            return Decision(store=True, as_cond=True, binarize_memory=True, event="drm")
        return Decision(store=True)

    def retain(self, frame_index: int, bank: BankView) -> set[int]:
        """What a later frame can still select: the prompts, the newest DRM frames, the
        pointer window, and the visible frames the RAM walks can reach (the newest two, and
        the newest SLOTS on the stride grid); bounded whatever the clip's length."""
        t, entries = frame_index, bank.entries
        window = {f for f in entries if f > t - bank.max_obj_ptrs}
        prompts = {f for f, e in entries.items() if e.is_prompt}
        drm = sorted(f for f, e in entries.items() if e.is_cond and not e.is_prompt)
        visible = sorted(
            f for f, e in entries.items() if not e.is_cond and self._visible.get(f, True)
        )
        grid = [f for f in visible if f % self.ram_stride == 0]
        keep = (
            window
            | prompts
            | set(drm[-(self.drm_slots + 1) :])
            | set(visible[-2:])
            | set(grid[-self.SLOTS :])
        )
        self._visible = {f: v for f, v in self._visible.items() if f in keep or f > t}
        return keep

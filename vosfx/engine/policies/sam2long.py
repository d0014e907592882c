"""SAM2Long (Ding et al. 2024): several memory pathways per object, pruned by cumulative score.

Reference: Mark12Ding/SAM2Long (commit 7193b77), CC BY-NC 4.0: none of its code is here. The
rules were written from the paper and from what that code does (docs/memory.md lists each one);
parity fixtures in tests/fixtures/policies.

A pass keeps ``pathways`` (P) hypotheses of the object's track. On each frame after the first
tracked one, every hypothesis is tracked with its own memory (one request each, batched),
each request gives 3 candidate masks, and P of the 3P children survive (:meth:`Sam2LongPolicy.prune`):
the best by cumulative score (a sum of log predicted IoUs) when the decoder is certain about
the object's presence, otherwise the best children with distinct rounded IoUs. Each hypothesis
remembers its own lineage (:class:`Hypothesis`); the frame's final mask is read at the end of
the pass along the best surviving lineage, so the tracker keeps every hypothesis's logits on
disk until then (vosfx/engine/tracker.py).

This module is metadata only: keys are ``(frame, hypothesis)`` pairs, -1 for a conditioning
frame (the pass's bank), and the tracker maps them to tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vosfx.engine.policies.base import BankView, Decision, MemoryEntry, PolicyLog, Selection

COND = -1  # hypothesis index of a conditioning frame: the bank's own entry
COND_SCORE = 10.0  # the score conditioning memories are ranked with (the reference's constant)
Key = tuple[int, int]  # (frame, hypothesis)


@dataclass(frozen=True)
class Step:
    """One frame of a lineage: ``frame``, hypothesis index ``hyp`` on that frame, its object
    score logit and whether it may be attended later (predicted IoU above the gate and object
    present)."""

    frame: int
    hyp: int
    object_score: float
    eligible: bool


@dataclass(frozen=True)
class Hypothesis:
    """One surviving pathway after frame ``last.frame``: cumulative ``score``, its ``last``
    step and the newest eligible steps before it (at most the memory cap; oldest first)."""

    score: float
    last: Step
    eligible: tuple[Step, ...]

    def window(self, cap: int) -> list[Step]:
        """The frames this pathway attends next: its newest ``cap`` eligible steps up to and
        including ``last``, then ``last`` itself if it was not eligible."""
        steps = [*self.eligible, self.last] if self.last.eligible else list(self.eligible)
        steps = steps[-cap:]
        if not self.last.eligible:
            steps.append(self.last)
        return steps

    def child(self, step: Step, score: float, cap: int) -> Hypothesis:
        eligible = (*self.eligible, self.last) if self.last.eligible else self.eligible
        return Hypothesis(score, step, eligible[-cap:])


@dataclass(frozen=True)
class PathSelection:
    """What one pathway attends on frame t: ``masks`` (key, t_pos), ``pointers`` (key,
    t_diff), and the key scale of each mask memory and each pointer, in the same order."""

    masks: tuple[tuple[Key, int], ...]
    pointers: tuple[tuple[Key, int], ...]
    pointer_t_diff_max: int
    mask_scales: tuple[float, ...]
    pointer_scales: tuple[float, ...]


@dataclass(frozen=True)
class Child:
    """Candidate ``j`` of pathway ``pathway``'s output on frame t."""

    pathway: int
    j: int
    score: float  # cumulative
    signed_iou: float  # + when the object is present on that pathway, - otherwise


def linspace32(lo: float, hi: float, n: int) -> np.ndarray:
    """``torch.linspace(lo, hi, n)`` in float32, bit for bit as PyTorch's CPU kernel computes
    it: a float32 step, the first half ``lo + step * i`` and the second half ``hi - step *
    (n - 1 - i)``, each a fused multiply-add (computed in float64, where the float32 product
    is exact, and rounded once); tested against torch for n up to 300."""
    if n == 1:
        return np.array([lo], np.float32)
    f = np.float32
    step = np.float64((f(hi) - f(lo)) / f(n - 1))
    i = np.arange(n)
    up = (step * i + np.float64(f(lo))).astype(f)
    down = (np.float64(f(hi)) - step * (n - 1 - i)).astype(f)
    return np.where(i < n // 2, up, down).astype(np.float32)


def rank_scales(scores: list[float], lo: float = 0.95, hi: float = 1.05) -> tuple[float, ...]:
    """Key scales by rank: the lowest score gets ``lo``, the highest ``hi``, evenly spaced
    between (ties keep their order)."""
    order = np.argsort(np.asarray(scores, np.float32), kind="stable")
    scales = np.empty(len(scores), np.float32)
    scales[order] = linspace32(lo, hi, len(scores))
    return tuple(float(s) for s in scales)


class Sam2LongPolicy:
    """SAM2Long's memory for one object (module docstring). Defaults are the reference's:
    3 pathways, IoU gate 0.1, uncertainty threshold 2, key scales 0.95 .. 1.05.

    The tracker drives it through :meth:`paths` (one :class:`PathSelection` per pathway),
    :meth:`prune` (which children survive) and :meth:`commit` (the survivors' steps);
    ``select``/``observe``/``retain`` serve the conditioning frames of the pass's bank.
    """

    name = "sam2long"
    key_scaled = True  # needs a backend that scales memory keys (supports_key_scale)
    RECENT = 6  # num_maskmem - 1

    def __init__(
        self,
        *,
        pathways: int = 3,
        iou_gate: float = 0.1,
        uncertainty: float = 2.0,
        scale_low: float = 0.95,
        scale_high: float = 1.05,
    ) -> None:
        self.pathways = pathways
        self.iou_gate = iou_gate
        self.uncertainty = uncertainty
        self.scale_low, self.scale_high = scale_low, scale_high
        self.log = PolicyLog()
        self.hyps: list[Hypothesis] = []  # the survivors after the last frame, best first
        self.branch: dict[int, str] = {}  # frame -> "first" / "certain" / "uncertain" (recent)

    # --- the conditioning frames (the pass's bank) ------------------------------------------
    def select(self, frame_index: int, shot_id: int, bank: BankView) -> Selection:
        """The conditioning part alone (a pass's anchors): what the first tracked frame
        attends, as SAM 2."""
        cond = [f for f, e in bank.entries.items() if e.is_cond]
        return Selection(
            masks=tuple((f, 0) for f in cond),
            pointers=tuple((f, abs(frame_index - f)) for f in cond if f <= frame_index),
            pointer_t_diff_max=self._max_ptrs(bank) - 1,
        )

    def observe(self, entry: MemoryEntry, bank: BankView) -> Decision:
        return Decision(store=entry.is_prompt, as_cond=entry.is_prompt)

    def retain(self, frame_index: int, bank: BankView) -> set[int]:
        return {f for f, e in bank.entries.items() if e.is_cond}

    @staticmethod
    def _max_ptrs(bank: BankView) -> int:
        return min(bank.num_frames, bank.max_obj_ptrs) if bank.num_frames > 0 else bank.max_obj_ptrs

    # --- pathways ---------------------------------------------------------------------------
    def paths(self, frame_index: int, bank: BankView) -> list[PathSelection]:
        """One selection per pathway for frame ``frame_index`` (a single one on the first
        tracked frame, before any pathway exists)."""
        base = self.select(frame_index, 0, bank)
        cond_masks = [((f, COND), p) for f, p in base.masks]
        cond_ptrs = [((f, COND), d) for f, d in base.pointers]
        if not self.hyps:
            return [
                PathSelection(
                    tuple(cond_masks),
                    tuple(cond_ptrs),
                    base.pointer_t_diff_max,
                    (1.0,) * len(cond_masks),
                    (1.0,) * len(cond_ptrs),
                )
            ]
        cap = self._max_ptrs(bank) - 1
        out = []
        for h in self.hyps:
            window = h.window(cap)
            recent = window[-self.RECENT :]
            n = len(recent)
            masks = cond_masks + [
                ((s.frame, s.hyp), self.RECENT - n + 1 + i) for i, s in enumerate(recent)
            ]
            # pointers: the window newest first, distance = rank; its oldest entry is never
            # one (the reference stops one short)
            ptr_steps = window[::-1][: max(min(len(window) - 1, cap), 0)]
            pointers = cond_ptrs + [((s.frame, s.hyp), d + 1) for d, s in enumerate(ptr_steps)]
            frame_scores = [COND_SCORE] * len(cond_masks) + [s.object_score for s in recent]
            ptr_scores = [COND_SCORE] * len(cond_ptrs) + [s.object_score for s in ptr_steps]
            mask_scales: tuple[float, ...]
            if len(frame_scores) == 1:
                mask_scales = (1.0,)
                ptr_scales = (1.0,) * len(ptr_scores)
            else:
                mask_scales = rank_scales(frame_scores, self.scale_low, self.scale_high)
                ptr_scales = rank_scales(ptr_scores, self.scale_low, self.scale_high)
            out.append(
                PathSelection(
                    tuple(masks),
                    tuple(pointers),
                    base.pointer_t_diff_max,
                    mask_scales,
                    ptr_scales,
                )
            )
        return out

    def prune(
        self, frame_index: int, object_scores: list[float], ious: list[np.ndarray]
    ) -> list[Child]:
        """The survivors among the children of every pathway's output on this frame, best
        first: ``object_scores[p]`` and ``ious[p]`` (3,) float32 are pathway p's."""
        children = []
        for p, (score, cand) in enumerate(zip(object_scores, ious, strict=True)):
            parent = self.hyps[p].score
            for j, iou in enumerate(np.asarray(cand, np.float32)):
                value = float(iou)
                children.append(
                    Child(
                        p,
                        j,
                        parent + float(np.log(value + 1e-5)),
                        value if score > 0 else -value,
                    )
                )
        ranked = sorted(children, key=lambda c: c.score, reverse=True)  # stable on ties
        n = self.pathways
        if max(abs(s) for s in object_scores) > self.uncertainty:
            self.branch[frame_index] = "certain"
            return ranked[:n]
        self.branch[frame_index] = "uncertain"
        chosen: list[Child] = []
        seen: set[float] = set()
        for c in ranked:
            key = round(c.signed_iou, 2)
            if key not in seen:
                chosen.append(c)
                seen.add(key)
            if len(chosen) == n:
                break
        if len(chosen) < n:
            # most masks alike: each pathway without a survivor adds its best child
            have = {c.pathway for c in chosen}
            for p in range(len(object_scores)):
                if p not in have:
                    chosen.append(next(c for c in ranked if c.pathway == p))
                if len(chosen) == n:
                    break
        return chosen

    def commit(
        self,
        frame_index: int,
        survivors: list[tuple[int, float, float, float]],
        bank: BankView,
    ) -> None:
        """The frame's survivors, best first: (pathway, cumulative score, object score,
        predicted IoU) each; survivor k becomes hypothesis k of this frame. On the first
        tracked frame, one survivor stands for every pathway (cumulative score 0)."""
        cap = self._max_ptrs(bank) - 1
        if not self.hyps:
            (_p, _score, obj, iou) = survivors[0]
            step = Step(frame_index, 0, obj, self._eligible(obj, iou))
            self.hyps = [Hypothesis(0.0, step, ())] * self.pathways
            self.branch[frame_index] = "first"
        else:
            self.hyps = [
                self.hyps[p].child(Step(frame_index, k, obj, self._eligible(obj, iou)), score, cap)
                for k, (p, score, obj, iou) in enumerate(survivors)
            ]
        self.branch = {f: b for f, b in self.branch.items() if f > frame_index - 32}

    def _eligible(self, object_score: float, iou: float) -> bool:
        return float(np.float32(iou)) > self.iou_gate and object_score > 0

    def keys(self) -> set[Key]:
        """Every (frame, hypothesis) a pathway may still attend: the tracker keeps only
        these memories."""
        out: set[Key] = set()
        for h in self.hyps:
            out.update((s.frame, s.hyp) for s in (*h.eligible, h.last))
        return out

"""RCMS (reliable conditioning memory selection, MOSEv2) and the shot-aware memory policy.

See ``docs/memory.md`` for how the policies work and where each rule comes from in the
reference code (henghuiding/MOSE-api, ``MOSEv2/sam2_rcms``).
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping
from dataclasses import replace

import numpy as np

from vosfx.engine.policies.base import BankView, Decision, MemoryEntry, PolicyLog, Selection
from vosfx.engine.policies.sam2 import Sam2Policy
from vosfx.errors import ConfigError, VosfxError


def frame_quality(object_score_logit: float, ious: np.ndarray, logits: np.ndarray) -> float:
    """RCMS reliability of one frame's prediction for one object, in [0, 1].

    quality = sigmoid(object_score_logit) x max(ious) x mean(sigmoid(logits[logits > 0])),
    and 0 when no pixel has a positive logit.

    ``object_score_logit``: the decoder's object-score logit (> 0: object present).
    ``ious``: predicted IoU, a scalar or (M,) float (all candidate masks or only the chosen
    one: on tracking frames SAM 2 picks the candidate with the highest predicted IoU, so the
    max is the chosen mask's IoU either way).
    ``logits``: (h, w) or (1, h, w) float32 *low-resolution* mask logits (image_size // 4,
    256 x 256 at 1024), the decoder output before upsampling: the reference computes the mean
    on ``pred_masks`` as stored per frame, which is the low-res map
    (``SAM2VideoPredictor._run_single_frame_inference``).

    The reference divides by the positive-pixel count and so yields NaN when there is none;
    NaN never passes the ``> threshold`` test, and 0 never does either (threshold >= 0), so
    returning 0 keeps the promotion behaviour while staying a number for the sidecar.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        raise VosfxError(
            f"frame_quality: expected at least one predicted IoU, found shape {ious.shape}"
        )
    logits = np.asarray(logits)
    positive = logits > 0
    count = int(np.count_nonzero(positive))
    if count == 0:
        return 0.0
    # sigmoid in float64: logits reach +-1024 (SAM 2's NO_OBJ_SCORE) and float32 exp overflows
    pos = logits[positive].astype(np.float64)
    mask_conf = float(np.mean(1.0 / (1.0 + np.exp(-pos))))
    score = _sigmoid(float(object_score_logit))
    return float(score * float(ious.max()) * mask_conf)


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# --------------------------------------------------------------------------------------------
# The RCMS walk-back rule
# --------------------------------------------------------------------------------------------


def walk_back(
    frame_index: int,
    entries: Mapping[int, MemoryEntry],
    max_promote: int,
    threshold: float,
    exclude: Container[int] = (),
) -> tuple[int, ...]:
    """The RCMS promotion rule: frames to promote when the object disappears at ``frame_index``.

    Walks back from ``frame_index - 1`` through the stored *non-conditioning* frames and takes
    each one whose quality is strictly above ``threshold``, until ``max_promote`` are found.
    Frame ``frame_index`` itself is never a candidate, and neither is frame 0 (the reference
    loop runs ``k = 1 .. frame_idx - 1``). Returns the frames in the order found (nearest
    first). NaN quality never passes ``>``, as in the reference.
    """
    found: list[int] = []
    for f in sorted((f for f in entries if 1 <= f < frame_index), reverse=True):
        if len(found) >= max_promote:
            break
        e = entries[f]
        if not e.is_cond and f not in exclude and e.quality > threshold:
            found.append(f)
    return tuple(found)


# --------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------


class RcmsPolicy(Sam2Policy):
    """SAM 2's selection (:class:`~vosfx.engine.policies.Sam2Policy`) plus RCMS promotion, as
    in the MOSEv2 reference (``docs/memory.md``).

    One instance per object: it holds the once-per-object disappearance flag.

    ``max_promote``: N, frames promoted on the disappearance. ``threshold``: θ, the quality a
    frame must exceed (strict ``>``). ``max_cond_frames``: cap on conditioning frames; when a
    promotion would exceed it, frames promoted at earlier events leave first (lowest frame
    first within an event); prompts never leave and are never counted out. ``skip_absent``:
    frames whose object-score logit is <= 0 are not written to memory (DAM4SAM's rule).
    """

    name = "rcms"
    # Shot-aware subclasses promote on every cut, so reliable frames must be kept for ever.
    _promotes_after_disappearance = False

    def __init__(
        self,
        max_promote: int = 5,
        threshold: float = 0.6,
        max_cond_frames: int = 16,
        skip_absent: bool = False,
    ) -> None:
        if isinstance(max_promote, bool) or not isinstance(max_promote, int) or max_promote < 0:
            raise ConfigError(f"rcms max_promote: expected an integer >= 0, found {max_promote!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"rcms threshold: expected a number in [0, 1], found {threshold!r}")
        if (
            isinstance(max_cond_frames, bool)
            or not isinstance(max_cond_frames, int)
            or max_cond_frames < 1
        ):
            raise ConfigError(
                f"max_cond_frames: expected an integer >= 1, found {max_cond_frames!r}"
            )
        super().__init__(max_cond_frames=max_cond_frames)
        self.max_promote = max_promote
        self.threshold = float(threshold)
        self.skip_absent = bool(skip_absent)
        self.log = PolicyLog()
        self.demoted: dict[int, list[int]] = {}  # at frame -> frames that left cond memory
        self.disappeared_at: int | None = None  # the once-per-object flag (and where)
        self._event_of: dict[int, int] = {}  # promoted frame -> event number (cap order)
        self._events = 0
        self._gone: set[int] = set()  # demoted frames: never promoted again

    # -- MemoryPolicy -------------------------------------------------------------------------

    def observe(self, entry: MemoryEntry, bank: BankView) -> Decision:
        if entry.is_prompt:
            return Decision(store=True, as_cond=True)
        store = self._store(entry)
        if self.disappeared_at is not None or entry.object_score_logit > 0:
            return Decision(store=store)
        self.disappeared_at = entry.frame_index
        return self._promote(entry.frame_index, bank, store, "disappeared")

    def retain(self, frame_index: int, bank: BankView) -> set[int]:
        entries = bank.entries
        keep = {f for f, e in entries.items() if e.is_cond}
        keep |= self._recent_window(frame_index, bank)
        if self.disappeared_at is None or self._promotes_after_disappearance:
            keep |= set(
                walk_back(frame_index + 1, entries, self.max_promote, self.threshold, self._gone)
            )
        return keep

    # -- helpers ------------------------------------------------------------------------------

    def _store(self, entry: MemoryEntry) -> bool:
        return not (self.skip_absent and entry.object_score_logit <= 0)

    def _recent_window(self, frame_index: int, bank: BankView) -> set[int]:
        """Non-cond frames that frame_index + 1 may attend (mask memories or pointers)."""
        ptrs = min(bank.num_frames, bank.max_obj_ptrs) if bank.num_frames > 0 else bank.max_obj_ptrs
        depth = max(bank.num_maskmem - 1, ptrs - 1)
        return {
            f
            for f, e in bank.entries.items()
            if not e.is_cond and frame_index + 1 - depth <= f <= frame_index
        }

    def _plan(self, frame_index: int, bank: BankView) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(promote, demote) for an event at ``frame_index``; pure (no state change)."""
        entries = bank.entries
        found = walk_back(frame_index, entries, self.max_promote, self.threshold, self._gone)
        prompts = sum(1 for e in entries.values() if e.is_prompt)
        room = max(self.max_cond_frames - prompts, 0)
        promote = found[:room]  # nearest first: those are the ones kept when room is short
        held = [f for f, e in entries.items() if e.promoted and not e.is_prompt]
        excess = len(held) + len(promote) - room
        held.sort(key=lambda f: (self._event_of.get(f, -1), f))
        demote = tuple(held[: max(excess, 0)])
        return promote, demote

    def _promote(self, frame_index: int, bank: BankView, store: bool, event: str) -> Decision:
        promote, demote = self._plan(frame_index, bank)
        for f in promote:
            self._event_of[f] = self._events
        self._events += 1
        for f in demote:
            self._event_of.pop(f, None)
        self._gone.update(demote)
        self.log.events[frame_index] = event
        if promote:
            self.log.promoted[frame_index] = list(promote)
        if demote:
            self.demoted[frame_index] = list(demote)
        return Decision(store=store, promote=promote, demote=demote, event=event)


class ShotAwarePolicy(RcmsPolicy):
    """RCMS plus shot cuts: a cut is a disappearance event for every object.

    On the first frame of a new shot: the reliable pre-cut frames are promoted by the RCMS
    rule (and already attended, as conditioning, by that first frame), the previous shots'
    recent frames are no longer attended (neither mask memories nor pointers), and the
    conditioning memory is kept, so a re-appearance in a later shot is matched against it.
    A cut does not use up the once-per-object disappearance unless the object is also absent
    on the cut frame (one walk-back serves both, event ``"cut+disappeared"``).
    """

    name = "rcms+shots"
    _promotes_after_disappearance = True

    def __init__(
        self,
        max_promote: int = 5,
        threshold: float = 0.6,
        max_cond_frames: int = 16,
        skip_absent: bool = False,
    ) -> None:
        super().__init__(max_promote, threshold, max_cond_frames, skip_absent)
        self.shot_id: int | None = None  # shot of the last observed frame
        self.cuts: list[int] = []

    def select(self, frame_index: int, shot_id: int, bank: BankView) -> Selection:
        entries = dict(bank.entries)
        if self.shot_id is not None and shot_id != self.shot_id:
            # The promotion is decided in observe(), after this frame; attend the frames it
            # will promote already, so the cut frame is not tracked from the prompts alone.
            promote, demote = self._plan(frame_index, bank)
            for f in promote:
                entries[f] = replace(entries[f], promoted=True)
            for f in demote:
                entries[f] = replace(entries[f], promoted=False)
        # Recent frames of earlier shots are never attended (masks and pointers alike).
        entries = {f: e for f, e in entries.items() if e.is_cond or e.shot_id == shot_id}
        return super().select(frame_index, shot_id, _View(bank, entries))

    def observe(self, entry: MemoryEntry, bank: BankView) -> Decision:
        cut = self.shot_id is not None and entry.shot_id != self.shot_id
        self.shot_id = entry.shot_id
        if not cut:
            return super().observe(entry, bank)
        self.cuts.append(entry.frame_index)
        event = "cut"
        if not entry.is_prompt and entry.object_score_logit <= 0 and self.disappeared_at is None:
            self.disappeared_at = entry.frame_index
            event = "cut+disappeared"
        decision = self._promote(
            entry.frame_index, bank, self._store(entry) or entry.is_prompt, event
        )
        if entry.is_prompt:
            decision = replace(decision, as_cond=True)
        return decision

    def retain(self, frame_index: int, bank: BankView) -> set[int]:
        keep = super().retain(frame_index, bank)
        entries = bank.entries
        # Earlier shots' recent frames are never attended again; keep them only as candidates.
        window = {
            f for f in self._recent_window(frame_index, bank) if entries[f].shot_id != self.shot_id
        }
        candidates = set(
            walk_back(frame_index + 1, entries, self.max_promote, self.threshold, self._gone)
        )
        return keep - (window - candidates)


class _View:
    """A BankView with other entries: what a shot-aware frame may see."""

    def __init__(self, bank: BankView, entries: dict[int, MemoryEntry]) -> None:
        self.entries = entries
        self.num_maskmem = bank.num_maskmem
        self.max_obj_ptrs = bank.max_obj_ptrs
        self.num_frames = bank.num_frames

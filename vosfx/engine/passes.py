"""One propagation pass of the tracker: its state, and one frame of it in three steps.

A pass (:class:`Pass`) is one object propagated from one anchor in one direction, with its
own memory bank and memory policy. A frame of a plain pass (one hypothesis) is
:meth:`Pass.request` (the policy's memory selection as a decoder request), then
:meth:`Pass.observe` (the decoder's candidates chosen from, re-prompted if enabled, and the
policy's decision on keeping the frame), then :meth:`Pass.commit` (the memory stored, the
result built). :class:`~vosfx.engine.tracker.Tracker` runs the first two over the passes of
a frame as one batch each through the backend (memory attention + decoder, then the memory
encoder), which is why they are steps and not one call. A click on the frame a pass tracks
next is decoded with that pass's memory (:meth:`Pass.attend`: memory attention once, kept as
an :class:`Attended`, so each further click there runs the decoder alone).

Backward passes see frame indices mirrored (``N - 1 - t``, :meth:`Pass.local`), so their
policies run unchanged (docs/session.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vosfx.engine.backend import (
    Backend,
    ImageFeatures,
    MemoryItem,
    PointerItem,
    TrackOutput,
    TrackRequest,
)
from vosfx.engine.bank import MemoryBank
from vosfx.engine.decoding import choose_output, fill_holes
from vosfx.engine.policies.base import Decision, MemoryEntry, MemoryPolicy
from vosfx.engine.reprompt import Reprompter, reprompt_frame
from vosfx.errors import PromptError, VosfxError
from vosfx.types import ObjectResult


@dataclass(frozen=True)
class MaskRules:
    """How the tracker turns the decoder's candidates into a frame's mask: ``choose``
    (:func:`~vosfx.engine.decoding.choose_output`) and ``fill`` (SAM 2's small-hole filling,
    for output only). ``hw``: the source frame's (height, width)."""

    backend: Backend
    fill_hole_area: int
    hw: tuple[int, int]

    def choose(
        self,
        out: TrackOutput,
        is_init_cond: bool,
        num_pts: int,
        policy: MemoryPolicy | None = None,
        frame_index: int = 0,
    ) -> tuple:
        return choose_output(self.backend, out, is_init_cond, num_pts, policy, frame_index, self.hw)

    def fill(self, low: np.ndarray) -> np.ndarray:
        return fill_holes(low, self.fill_hole_area)


@dataclass
class Pending:
    """A plain pass's frame between the decoder and the memory encoder."""

    entry: MemoryEntry
    decision: Decision
    low: np.ndarray  # (s, s) float32: the chosen low-res logits (the memory's input)
    score: float
    iou: float
    ptr: Any
    filled: np.ndarray  # (s, s) float32: ``low`` with small holes filled (the output)
    reprompt: dict | None


@dataclass(frozen=True)
class Attended:
    """A pass's memory attended on the frame it tracks next (:meth:`Pass.attend`): what a
    correction's clicks there are decoded with, each click then costing the decoder alone.
    ``conditioned``: the frame's features after memory attention (backend-native, 4 MiB at
    1024); ``tracked``: (s, s) float32, the mask the pass tracks onto the frame, or None."""

    obj_id: int
    frame_index: int
    memories: list[MemoryItem]
    pointers: list[PointerItem]
    t_diff_max: int
    conditioned: Any
    tracked: np.ndarray | None

    def request(self, clicks: TrackRequest) -> TrackRequest:
        """A click request on the frame (:func:`~vosfx.engine.anchors.click_request`) with
        this memory, already attended."""
        return replace(
            clicks,
            memories=self.memories,
            pointers=self.pointers,
            t_diff_max=self.t_diff_max,
            conditioned=self.conditioned,
        )


@dataclass
class Pass:
    obj_id: int
    anchor: int
    direction: int  # +1 forward, -1 backward
    neighbour: int | None
    policy: MemoryPolicy
    bank: MemoryBank
    last: int  # the last frame stepped (the anchor before the first step)
    num_frames: int
    events: dict[int, str] = field(default_factory=dict)
    promoted: dict[int, list[int]] = field(default_factory=dict)
    reprompter: Reprompter | None = None  # re-prompt refinement state, when enabled
    paths: Any = None  # PathwayState for a policy with several hypotheses (SAM2Long)

    def copy(self) -> Pass:
        """An independent pass in the same state (:meth:`Tracker.snapshot`): its own bank
        tables sharing the arrays, its own copies of the policy's and the re-prompter's state
        (a few numbers, entries' metadata and one low-res mask). Not for a pass with several
        hypotheses (SAM2Long)."""
        if self.paths is not None:
            raise VosfxError("internal: a pass with several hypotheses is not copied")
        return replace(
            self,
            policy=copy.deepcopy(self.policy),
            bank=self.bank.copy(),
            events=dict(self.events),
            promoted={f: list(v) for f, v in self.promoted.items()},
            reprompter=copy.deepcopy(self.reprompter),
        )

    def local(self, frame_index: int) -> int:
        """Frame index as the pass's policy sees it: as is forward, mirrored backward."""
        return frame_index if self.direction > 0 else self.num_frames - 1 - frame_index

    def source(self, local: int) -> int:
        """The clip's frame index of the policy's frame ``local`` (:meth:`local` undone)."""
        return local if self.direction > 0 else self.num_frames - 1 - local

    def request(self, feats: ImageFeatures, t: int, shot_id: int) -> TrackRequest:
        """The pass's memory selection for frame ``t`` as a track request."""
        sel = self.policy.select(self.local(t), shot_id, self.bank)
        mems = [MemoryItem(self.bank.maskmem(f), p) for f, p in sel.masks]
        ptrs = [PointerItem(self.bank.obj_ptr(f), d) for f, d in sel.pointers]
        # policy hooks (docs/memory.md): the decoder's object gate and the candidate choice
        gate = float(getattr(self.policy, "min_object_score", 0.0))
        return TrackRequest(feats, mems, ptrs, sel.pointer_t_diff_max, min_object_score=gate)

    def attend(
        self, rules: MaskRules, feats: ImageFeatures, frame_index: int, shot_id: int, track: bool
    ) -> Attended:
        """The memory the pass attends on ``frame_index``, which must be its next frame, for
        a correction's clicks there (SAM 2's ``is_init_cond_frame=False``): memory attention
        run once, and with ``track`` the mask the pass tracks onto the frame (what
        :meth:`observe` makes of the decoder's output, on a copy: the pass does not move)."""
        if self.paths is not None:
            raise PromptError(
                f"[memory] policy {self.policy.name}: a correction on a tracked frame "
                f"(frame {frame_index}) is not supported yet; prompt the frame before "
                "tracking it, or use another policy"
            )
        if frame_index != self.last + self.direction:
            raise VosfxError(
                f"correction on frame {frame_index}: the pass of object {self.obj_id} "
                f"from frame {self.anchor} is at frame {self.last}"
            )
        req = self.request(feats, frame_index, shot_id)
        req = replace(req, conditioned=rules.backend.condition(req))
        tracked = None
        if track:  # observe moves the policy's state (SAMURAI's motion model): on a copy
            out = rules.backend.track(req)
            tracked = self.copy().observe(rules, frame_index, shot_id, req, out).filled
        assert req.memories is not None  # a pass always attends its anchor
        return Attended(
            self.obj_id,
            frame_index,
            req.memories,
            req.pointers,
            req.t_diff_max,
            req.conditioned,
            tracked,
        )

    def observe(
        self, rules: MaskRules, t: int, shot_id: int, req: TrackRequest, out: TrackOutput
    ) -> Pending:
        """The frame's choice from the decoder's candidates (re-prompted if enabled), and the
        policy's decision on storing it."""
        from vosfx.engine.policies.rcms import frame_quality

        r = self.local(t)
        low, iou, all_ious, ptr = rules.choose(out, False, 0, self.policy, r)
        score = out.object_score_logit
        filled = rules.fill(low)
        # computed for every policy: the sidecar reports it per frame (~0.5 ms at 256²)
        quality = frame_quality(score, all_ious, filled)
        reprompt = None
        if self.reprompter is not None:
            (low, iou, all_ious, ptr, score, filled, quality), reprompt = reprompt_frame(
                rules.backend,
                self.reprompter,
                t,
                req,
                (low, iou, all_ious, ptr, score, filled, quality),
                rules.fill_hole_area,
                rules.hw,
            )
        entry = MemoryEntry(
            frame_index=r,
            shot_id=shot_id,
            is_prompt=False,
            object_score_logit=float(score),
            iou=float(iou),
            quality=quality,
        )
        decision = self.policy.observe(entry, self.bank)
        return Pending(entry, decision, low, float(score), float(iou), ptr, filled, reprompt)

    def commit(self, t: int, p: Pending, maskmem: Any) -> ObjectResult:
        """Store the frame's memory (``maskmem`` None when the policy does not keep it) and
        build its result."""
        decision = p.decision
        self.bank.apply(p.entry, maskmem, p.ptr, decision)
        dropped = self.bank.prune(self.policy, p.entry.frame_index)
        promoted = [self.source(f) for f in decision.promote]
        if decision.event:
            self.events[t] = decision.event
        if p.reprompt is not None:
            self.events[t] = "; ".join(e for e in (self.events.get(t), p.reprompt["event"]) if e)
        if promoted:
            self.promoted[t] = promoted
        quality = p.entry.quality
        info = {
            "memory": {
                "entries": len(self.bank),
                "event": decision.event,
                "promoted": promoted,
                "dropped": [self.source(f) for f in dropped],
                "quality": quality,
            },
            "quality": quality,
            "direction": self.direction,
            "anchor": self.anchor,
        }
        if p.reprompt is not None:
            info["reprompt"] = p.reprompt
        return ObjectResult(self.obj_id, t, p.filled, p.score, p.iou, info)

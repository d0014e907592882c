"""The tracker's step for a policy with several hypotheses per object (SAM2Long).

Per frame: each pathway's memory is assembled from its own lineage (``policy.paths``), the
pathways are tracked in one batched call (``track_many``; pathways with the same selection
share one request: on the second tracked frame they all do), the policy keeps P children
(``policy.prune``) and the survivors' memories are encoded in one batched call
(``encode_memory_many``). The frame's result *for now* is the best survivor's; the final
masks are read when the pass ends, walking back from the best last hypothesis through each
survivor's parent (:meth:`PathwayState.finish`).

Memory stays bounded in clip length: the tensors kept are the memories the current
hypotheses can still attend (at most P x 16); every hypothesis's low-res logits go to a
temporary file until their frame is settled (every current hypothesis descends through one of
them: lineages meet a few frames back), then only a revised frame's row is kept (256 KiB at
image size 1024; hypothesis 0 is the result the session stores anyway); a few bytes per frame
of parents and scores stay in memory.

Batching: the P requests of a frame differ only in their memory tokens; the torch backend
runs those with the same number of memory tokens as one batch (each item's own arithmetic, no
padding), the others in batches of their own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vosfx.engine.backend import (
    Backend,
    ImageFeatures,
    MemoryItem,
    MemoryRequest,
    PointerItem,
    TrackRequest,
    encode_memory_many,
    track_many,
)
from vosfx.engine.bank import MemoryBank
from vosfx.engine.policies.sam2long import COND, Key, PathSelection, Sam2LongPolicy
from vosfx.errors import BackendError
from vosfx.types import ObjectResult


def check_backend(policy: Any, backend: Backend) -> None:
    """BackendError unless ``backend`` can scale memory keys when ``policy`` needs it."""
    if getattr(policy, "key_scaled", False) and not getattr(backend, "supports_key_scale", False):
        raise BackendError(
            f"--memory {policy.name}: this backend's memory attention has no key-scale input, "
            "which SAM2Long's attention modulation needs (an ONNX bundle exported before "
            "format 3: re-export it with `vosfx models export MODEL`, or use --backend torch)"
        )


class HypothesisLogits:
    """Low-res logits of hypotheses 1 .. P-1 of a pass's frames, on disk: rows of an unlinked
    temporary file written with ``os.pwrite``, reused once dropped. Hypothesis 0 (the best
    at the time) is the frame's result that ``step`` returns, so the session has it."""

    def __init__(self, side: int) -> None:
        self.side = side
        self._row = side * side * 4
        fd, path = tempfile.mkstemp(prefix="vosfx-paths-", suffix=".f32")
        os.unlink(path)  # gone with the descriptor
        self._fd: int | None = fd
        self._rows: dict[Key, int] = {}
        self._free: list[int] = []
        self.rows = 0  # the file's length in rows (its peak use)

    def put(self, frame: int, hyp: int, logits: np.ndarray) -> None:
        assert self._fd is not None and hyp >= 1
        if self._free:
            row = self._free.pop()
        else:
            row, self.rows = self.rows, self.rows + 1
        self._rows[(frame, hyp)] = row
        data = np.ascontiguousarray(logits, np.float32).tobytes()
        os.pwrite(self._fd, data, row * self._row)

    def get(self, frame: int, hyp: int) -> np.ndarray:
        assert self._fd is not None
        data = os.pread(self._fd, self._row, self._rows[(frame, hyp)] * self._row)
        return np.frombuffer(data, np.float32).reshape(self.side, self.side).copy()

    def drop(self, frame: int, hyp: int) -> None:
        row = self._rows.pop((frame, hyp), None)
        if row is not None:
            self._free.append(row)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class PathwayState:
    """One pass's hypotheses: the memories they may attend, and per frame (pass-local index)
    each hypothesis's parent, object score, IoU and quality; logits on disk."""

    policy: Sam2LongPolicy
    logits: HypothesisLogits
    num_frames: int
    memories: dict[Key, tuple[Any, Any]] = field(default_factory=dict)
    parent: np.ndarray = field(init=False)
    score: np.ndarray = field(init=False)
    iou: np.ndarray = field(init=False)
    quality: np.ndarray = field(init=False)
    first: int | None = None
    last: int | None = None
    settled: int | None = None  # frames up to here have their final hypothesis
    final: dict[int, int] = field(default_factory=dict)  # settled frame -> hypothesis, if not 0

    def __post_init__(self) -> None:
        shape = (self.num_frames, self.policy.pathways)
        self.parent = np.zeros(shape, np.int8)
        self.score = np.zeros(shape, np.float32)
        self.iou = np.zeros(shape, np.float32)
        self.quality = np.zeros(shape, np.float32)

    def close(self) -> None:
        self.logits.close()
        self.memories.clear()

    def settle(self) -> None:
        """Fix the frames every current hypothesis descends through: walking back from the
        last frame, the hypotheses with living descendants narrow to one (lineages meet a few
        frames back); from there on back, each frame's final hypothesis is known. Rows of the
        others are freed, so the file holds the unsettled window and the revised frames."""
        if self.last is None or self.first is None:
            return
        start = self.first if self.settled is None else self.settled + 1
        alive = set(range(self.policy.pathways))
        f = self.last
        while len(alive) > 1 and f > start:
            alive = {int(self.parent[f, k]) for k in alive}
            f -= 1
        if len(alive) > 1 or f < start:
            return
        (k,) = alive
        for g in range(f, start - 1, -1):
            for h in range(1, self.policy.pathways):
                if h != k:
                    self.logits.drop(g, h)
            if k != 0:
                self.final[g] = k
            k = int(self.parent[g, k])
        self.settled = f

    def final_path(self) -> dict[int, int]:
        """Pass-local frame -> the hypothesis on the best surviving lineage."""
        if self.last is None or self.first is None:
            return {}
        path = {g: 0 for g in range(self.first, (self.settled or self.first - 1) + 1)}
        path.update(self.final)
        k, lo = 0, self.first if self.settled is None else self.settled + 1
        for r in range(self.last, lo - 1, -1):
            path[r] = k
            k = int(self.parent[r, k])
        return path


def step(
    tracker: Any,
    ps: Any,
    state: PathwayState,
    feats: ImageFeatures,
    r: int,
    fill,
    quality_of,
) -> tuple[np.ndarray, float, float, float, dict]:
    """Track pass-local frame ``r`` on every pathway; returns the best survivor's (filled
    logits, object score, IoU, quality, info)."""
    b: Backend = tracker.backend
    pol = state.policy
    bank: MemoryBank = ps.bank
    sels = pol.paths(r, bank)

    def value(key: Key) -> tuple[Any, Any]:
        f, h = key
        if h == COND:
            return bank.maskmem(f), bank.obj_ptr(f)
        return state.memories[key]

    # pathways with the same selection share one request (on the second tracked frame they
    # all do); the distinct ones go through memory attention + decoder as one batch
    unique: dict[PathSelection, int] = {}
    requests: list[TrackRequest] = []
    for sel in sels:
        if sel in unique:
            continue
        unique[sel] = len(requests)
        mems = [
            MemoryItem(value(k)[0], p, s)
            for (k, p), s in zip(sel.masks, sel.mask_scales, strict=True)
        ]
        ptrs = [
            PointerItem(value(k)[1], d, s)
            for (k, d), s in zip(sel.pointers, sel.pointer_scales, strict=True)
        ]
        requests.append(TrackRequest(feats, mems, ptrs, sel.pointer_t_diff_max))
    tracked = track_many(b, requests)
    per_path = [tracked[unique[sel]] for sel in sels]
    first = state.first is None
    if first:
        out = per_path[0]
        j = int(np.argmax(out.multi_ious))
        survivors = [(0, j, 0.0)]
    else:
        kids = pol.prune(
            r, [o.object_score_logit for o in per_path], [o.multi_ious for o in per_path]
        )
        survivors = [(c.pathway, c.j, c.score) for c in kids]
    committed = []
    best: tuple = ()
    maskmems = encode_memory_many(
        b,
        [
            MemoryRequest(feats, per_path[p].multi_logits[j], per_path[p].object_score_logit, False)
            for p, j, _acc in survivors
        ],
    )
    for k, ((p, j, acc), maskmem) in enumerate(zip(survivors, maskmems, strict=True)):
        out = per_path[p]
        low = out.multi_logits[j]
        score = float(out.object_score_logit)
        iou = float(out.multi_ious[j])
        state.memories[(r, k)] = (maskmem, out.multi_ptrs[j : j + 1])
        filled = fill(low)
        quality = quality_of(score, out.multi_ious, filled)
        if k > 0:
            state.logits.put(r, k, filled)
        state.parent[r, k] = 0 if first else p
        state.score[r, k], state.iou[r, k], state.quality[r, k] = score, iou, quality
        committed.append((p, acc, score, iou))
        if k == 0:
            best = (filled, score, iou, quality)
    pol.commit(r, committed, bank)
    if first:
        state.first = r
    state.last = r
    state.settle()
    keep = pol.keys()
    for key in [k for k in state.memories if k not in keep]:
        del state.memories[key]
    info = {
        "branch": pol.branch.get(r, ""),
        "survivors": [[p, j] for p, j, _a in survivors],
        "scores": [round(a, 4) for _p, _j, a in survivors],
        "calls": len(requests),
    }
    return (*best, info)


def revised_results(ps: Any, source: Callable[[int], int]) -> list[ObjectResult]:
    """At the end of pass ``ps``: the frames whose best-final-lineage hypothesis is not the
    one :func:`step` returned (hypothesis 0), as results to store in their place; closes the
    pass's hypothesis file. ``source`` maps the pass's local frame index to the clip's."""
    st = ps.paths
    revised = []
    try:
        for r, k in sorted(st.final_path().items()):
            if k == 0:
                continue  # step() returned hypothesis 0, the best at the time
            info = {
                "quality": float(st.quality[r, k]),
                "direction": ps.direction,
                "anchor": ps.anchor,
                "memory": {"pathway": {"hypothesis": k, "revised": True}},
            }
            revised.append(
                ObjectResult(
                    ps.obj_id,
                    source(r),
                    st.logits.get(r, k),
                    float(st.score[r, k]),
                    float(st.iou[r, k]),
                    info,
                )
            )
    finally:
        st.close()
    return revised

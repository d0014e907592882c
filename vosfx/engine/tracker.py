"""Streaming SAM 2 tracker: one frame in, one :class:`~vosfx.types.MaskResult` out.

It reproduces ``sam2.SAM2VideoPredictor.propagate_in_video`` (sam2 1.1.0) frame by frame with
constant memory: the image is encoded once per frame, each object is tracked against the
memories its policy selects from its own bank, and the bank keeps only what can still be
attended. SAM 2's rules mirrored here (``SAM2Base``/``SAM2VideoPredictor``):

- A prompted frame is an *initial conditioning frame* for its object: no memory is attended
  (``no_mem_embed``), a mask prompt is used directly as the output
  (``use_mask_input_as_output_without_sam``), and the frame's memory is encoded from the
  upsampled low-res prediction, binarised (``propagate_in_video_preflight`` with
  ``binarize_mask_from_pts_for_mem_enc``). That is what the official predictor does with
  prompts added before the frame is propagated; a correction on a later frame is handled the
  same way and becomes a conditioning frame.
- Multimask output (pick the highest predicted IoU) when ``_use_multimask`` says so.
- Low-res logits get small holes filled (``fill_hole_area``) for output only, never for the
  memory of tracked frames.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from vosfx.engine.backend import Backend, MemoryItem, PointerItem
from vosfx.engine.bank import MemoryBank
from vosfx.engine.memory import MemoryEntry, MemoryPolicy
from vosfx.errors import PromptError
from vosfx.types import Frame, MaskResult, Prompt, VideoInfo

NO_OBJ_SCORE = -1024.0  # SAM 2's logit for "no object" (sam2_base.NO_OBJ_SCORE)


def fill_holes(logits: np.ndarray, max_area: int) -> np.ndarray:
    """SAM 2's ``fill_holes_in_mask_scores``: 8-connected regions of logits <= 0 with at most
    ``max_area`` pixels get logit 0.1. ``logits`` (h, w) float32 -> new array."""
    if max_area <= 0:
        return logits
    import cv2

    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        (logits <= 0).astype(np.uint8), connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] <= max_area)
    small = small[small > 0]  # label 0 is the positive region, not a component
    if len(small) == 0:
        return logits
    return np.where(np.isin(labels, small), np.float32(0.1), logits).astype(np.float32)


@dataclass
class _Object:
    obj_id: int
    policy: MemoryPolicy
    bank: MemoryBank
    prompts: dict[int, Prompt] = field(default_factory=dict)
    started: bool = False
    events: dict[int, str] = field(default_factory=dict)


class Tracker:
    """A :class:`~vosfx.engine.Session` for one clip.

    ``policy`` is copied for every object (policies keep per-object state); a callable
    returning a fresh policy works too. ``fill_hole_area``: SAM 2's post-processing (8 in its
    video predictor; the official code skips it without its CUDA extension, so use 0 to match a
    CPU run).
    """

    def __init__(self, backend: Backend, policy: MemoryPolicy, info: VideoInfo, *,
                 fill_hole_area: int = 8) -> None:
        self.backend = backend
        self.info = info
        self.fill_hole_area = fill_hole_area
        self._policy = policy
        self._objects: dict[int, _Object] = {}  # insertion order = slot order, as SAM 2
        self._next_frame: int | None = None  # set by the first step (a range may start late)
        self._low = backend.image_size // 4

    # --- prompts ------------------------------------------------------------------------
    def add_prompt(self, prompt: Prompt) -> None:
        if self._next_frame is not None and prompt.frame_index < self._next_frame:
            raise PromptError(f"prompt for object {prompt.obj_id} on frame "
                              f"{prompt.frame_index}: expected a frame not yet tracked "
                              f"(next is {self._next_frame})")
        self._check(prompt)
        obj = self._objects.get(prompt.obj_id)
        if obj is None:
            pol = self._policy() if callable(self._policy) and not hasattr(
                self._policy, "select") else copy.deepcopy(self._policy)
            obj = self._objects[prompt.obj_id] = _Object(
                prompt.obj_id, pol, MemoryBank(self.backend.num_maskmem,
                                               self.backend.max_obj_ptrs,
                                               self.info.num_frames))
        obj.prompts[prompt.frame_index] = prompt

    def _check(self, p: Prompt) -> None:
        h, w = self.info.height, self.info.width
        if p.mask is not None:
            if p.points is not None or p.box is not None:
                raise PromptError(f"object {p.obj_id} frame {p.frame_index}: expected a mask "
                                  "or points/box, found both")
            if p.mask.shape != (h, w):
                raise PromptError(f"object {p.obj_id} frame {p.frame_index}: expected a "
                                  f"{w}x{h} mask, found {p.mask.shape[::-1]}")
            return
        if p.points is None and p.box is None:
            raise PromptError(f"object {p.obj_id} frame {p.frame_index}: expected a mask, "
                              "points or a box, found none")
        if p.points is not None:
            pts = np.asarray(p.points)
            labels = None if p.labels is None else np.asarray(p.labels)
            if pts.ndim != 2 or pts.shape[1] != 2 or labels is None or labels.shape != (
                    len(pts),):
                raise PromptError(f"object {p.obj_id} frame {p.frame_index}: expected (N, 2) "
                                  f"points with (N,) labels, found {pts.shape} and "
                                  f"{None if labels is None else labels.shape}")
        if p.box is not None and np.asarray(p.box).shape != (4,):
            raise PromptError(f"object {p.obj_id} frame {p.frame_index}: expected a box "
                              f"x0, y0, x1, y1, found shape {np.asarray(p.box).shape}")

    # --- tracking -----------------------------------------------------------------------
    def step(self, frame: Frame, *, shot_id: int = 0) -> MaskResult:
        t = frame.index
        if self._next_frame is not None and t != self._next_frame:
            raise PromptError(f"expected frame {self._next_frame}, found frame {t} (frames "
                              "must arrive in order, once each)")
        self._next_frame = t + 1
        objs = list(self._objects.values())
        feats = self.backend.encode_image(frame.rgb8) if objs else None
        n = len(objs)
        logits = np.full((n, self._low, self._low), NO_OBJ_SCORE, np.float32)
        scores = np.full((n,), NO_OBJ_SCORE, np.float32)
        ious = np.zeros((n,), np.float32)
        info: dict = {"memory": {}}
        for i, obj in enumerate(objs):
            if t in obj.prompts:
                out = self._prompted(obj, feats, obj.prompts.pop(t))
            elif obj.started:
                out = self._tracked(obj, feats, t, shot_id)
            else:
                continue  # first prompt still ahead: "no object" until then
            low_out, low_mem, score, iou, all_ious, ptr, prompted = out
            logits[i], scores[i], ious[i] = low_out, score, iou
            info["memory"][obj.obj_id] = self._remember(
                obj, feats, t, shot_id, low_out, low_mem, score, iou, all_ious, ptr, prompted)
        return MaskResult(frame_index=t, obj_ids=tuple(o.obj_id for o in objs), logits=logits,
                          object_score_logits=scores, iou=ious, info=info)

    def _prompted(self, obj: _Object, feats, p: Prompt) -> tuple:
        b = self.backend
        obj.started = True
        if p.mask is not None:
            if not b.use_mask_input_as_output_without_sam:
                raise PromptError("this model needs use_mask_input_as_output_without_sam for "
                                  "mask prompts (every SAM 2.1 config sets it)")
            low, score, ptr = b.mask_as_output(feats, p.mask)
            low = self._fill(low)
            return low, low, score, 1.0, np.ones(1, np.float32), ptr, True
        coords, labels = self._points(p)
        out = b.track(feats, None, [], 0, coords, labels, None)
        low, iou, all_ious, ptr = self._choose(out, True, len(labels))
        score = out.object_score_logit
        low = self._fill(low)
        # the predictor encodes a prompted frame's memory from its stored (filled) prediction
        return low, low, score, iou, all_ious, ptr, True

    def _tracked(self, obj: _Object, feats, t: int, shot_id: int) -> tuple:
        sel = obj.policy.select(t, shot_id, obj.bank)
        mems = [MemoryItem(obj.bank.maskmem(f), p) for f, p in sel.masks]
        ptrs = [PointerItem(obj.bank.obj_ptr(f), d) for f, d in sel.pointers]
        out = self.backend.track(feats, mems, ptrs, sel.pointer_t_diff_max, None, None, None)
        low, iou, all_ious, ptr = self._choose(out, False, 0)
        return self._fill(low), low, out.object_score_logit, iou, all_ious, ptr, False

    def _choose(self, out, is_init_cond: bool, num_pts: int) -> tuple:
        """SAM 2's ``_use_multimask`` rule, then the best-IoU candidate."""
        b = self.backend
        multi = (b.multimask_output_in_sam
                 and (is_init_cond or b.multimask_output_for_tracking)
                 and b.multimask_min_pt_num <= num_pts <= b.multimask_max_pt_num)
        if multi:
            k = int(np.argmax(out.multi_ious))
            return (out.multi_logits[k], float(out.multi_ious[k]), out.multi_ious,
                    out.multi_ptrs[k:k + 1])
        return (out.single_logits, out.single_iou, np.array([out.single_iou], np.float32),
                out.single_ptr)

    def _points(self, p: Prompt) -> tuple[np.ndarray, np.ndarray]:
        """Points (and a box as two corner points labelled 2, 3, first) in model pixels,
        scaled as ``add_new_points_or_box``: x / W * S, y / H * S in float32."""
        pts = np.zeros((0, 2), np.float32) if p.points is None else np.asarray(p.points,
                                                                               np.float32)
        labels = np.zeros(0, np.int32) if p.labels is None else np.asarray(p.labels, np.int32)
        if p.box is not None:
            pts = np.concatenate([np.asarray(p.box, np.float32).reshape(2, 2), pts])
            labels = np.concatenate([np.array([2, 3], np.int32), labels])
        size = np.array([self.info.width, self.info.height], np.float32)
        return (pts / size) * np.float32(self.backend.image_size), labels

    def _fill(self, low: np.ndarray) -> np.ndarray:
        return fill_holes(low, self.fill_hole_area)

    def _remember(self, obj: _Object, feats, t: int, shot_id: int, low_out: np.ndarray,
                  low_mem: np.ndarray, score: float, iou: float, all_ious: np.ndarray, ptr,
                  prompted: bool) -> dict:
        """Metadata -> policy decision -> (maybe) memory encoder -> bank -> prune."""
        from vosfx.engine.rcms import frame_quality

        # computed for every policy: the sidecar reports it per frame (~0.5 ms at 256²)
        quality = frame_quality(score, all_ious, low_out)
        entry = MemoryEntry(frame_index=t, shot_id=shot_id, is_prompt=prompted,
                            object_score_logit=float(score), iou=float(iou), quality=quality)
        decision = obj.policy.observe(entry, obj.bank)
        maskmem = None
        if decision.store:
            binarize = prompted and self.backend.binarize_mask_from_pts_for_mem_enc
            maskmem = self.backend.encode_memory(feats, low_mem, score, binarize)
        obj.bank.apply(entry, maskmem, ptr, decision)
        dropped = obj.bank.prune(obj.policy, t)
        if decision.event:
            obj.events[t] = decision.event
        return {"entries": len(obj.bank), "event": decision.event,
                "promoted": list(decision.promote), "dropped": dropped,
                "quality": quality}

    # --- session ------------------------------------------------------------------------
    def report(self) -> dict:
        out = {}
        for obj in self._objects.values():
            log = getattr(obj.policy, "log", None)
            out[str(obj.obj_id)] = {
                "policy": obj.policy.name,
                "events": {str(k): v for k, v in obj.events.items()},
                "promoted": {str(k): v for k, v in (log.promoted.items() if log else ())},
                "peak_bank_entries": obj.bank.peak_entries,
                "bank_bytes": obj.bank.nbytes(self.backend.nbytes),
            }
        return out

    def close(self) -> None:
        self._objects.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

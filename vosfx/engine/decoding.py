"""How a prompt enters SAM 2's decoder and how its output becomes a frame's mask.

The rules :class:`~vosfx.engine.tracker.Tracker` and the re-prompt refinement share, each as
``sam2.SAM2VideoPredictor`` (sam2 1.1.0) applies it: prompts checked and scaled to model
pixels (``add_new_points_or_box``), the multimask choice (``_use_multimask``, then the best
predicted IoU or a policy's ``choose`` hook), and the small-hole filling of output logits
(``fill_holes_in_mask_scores``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vosfx.engine.backend import Backend, TrackOutput
from vosfx.engine.policies.base import MemoryPolicy
from vosfx.engine.policies.candidates import Candidates
from vosfx.errors import PromptError
from vosfx.types import Prompt, prior_ok

NO_OBJ_SCORE = -1024.0  # SAM 2's logit for "no object" (sam2_base.NO_OBJ_SCORE)
MASK_INPUT_CLAMP = 32.0  # SAM 2 clamps a previous output to +-32 before using it as a prompt


def fill_holes(logits: np.ndarray, max_area: int) -> np.ndarray:
    """SAM 2's ``fill_holes_in_mask_scores``: 8-connected regions of logits <= 0 with at most
    ``max_area`` pixels get logit 0.1. ``logits`` (h, w) float32 -> new array."""
    if max_area <= 0:
        return logits
    import cv2

    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        (logits <= 0).astype(np.uint8), connectivity=8
    )
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] <= max_area)
    small = small[small > 0]  # label 0 is the positive region, not a component
    if len(small) == 0:
        return logits
    return np.where(np.isin(labels, small), np.float32(0.1), logits).astype(np.float32)


# the job file's bound (job.prompts[i].obj_id)
_MAX_OBJ_ID = 2**31 - 1


def check_prompt(p: Prompt, width: int, height: int) -> None:
    """PromptError unless ``p`` is a (width x height) mask, or (N, 2) points with (N,) labels
    of 1 or 0 and/or an x0, y0, x1, y1 box with x0 < x1 and y0 < y1, every coordinate finite
    and inside the frame (0 <= x <= width, 0 <= y <= height: edges included, as clicks and
    boxes are continuous coordinates; the CLI's rule, ``vosfx.io.prompts.check_inside``).
    SAM 2 takes anything here: a NaN point made NaN logits, a point off the frame or a box
    with its corners swapped a mask of nothing in particular."""
    where = f"object {p.obj_id} frame {p.frame_index}"
    ok_id = isinstance(p.obj_id, (int, np.integer)) and not isinstance(p.obj_id, bool)
    if not ok_id or not 1 <= p.obj_id <= _MAX_OBJ_ID:
        raise PromptError(
            f"{where}: expected an object id, a whole number 1..{_MAX_OBJ_ID}, found {p.obj_id!r}"
        )
    if p.correction:
        if p.mask is not None:
            raise PromptError(f"{where}: a correction is points or a box, found a mask")
        if p.prior is not None:
            raise PromptError(
                f"{where}: a correction edits the mask tracked there; it takes no prior"
            )
    if p.prior is not None:
        if p.mask is not None:
            raise PromptError(f"{where}: expected a prior with points or a box, found a mask")
        if not prior_ok(p.prior):
            prior = np.asarray(p.prior)
            raise PromptError(
                f"{where}: expected the prior as (s, s) finite float mask logits, found "
                f"{prior.dtype} {prior.shape}"
            )
    if p.mask is not None:
        if p.points is not None or p.box is not None:
            raise PromptError(f"{where}: expected a mask or points/box, found both")
        if np.shape(p.mask) != (height, width):
            raise PromptError(
                f"{where}: expected a {width}x{height} mask, found {np.shape(p.mask)[::-1]}"
            )
        return
    if p.points is None and p.box is None:
        raise PromptError(f"{where}: expected a mask, points or a box, found none")
    if p.points is not None:
        pts = np.asarray(p.points)
        labels = None if p.labels is None else np.asarray(p.labels)
        if pts.ndim != 2 or pts.shape[1] != 2 or labels is None or labels.shape != (len(pts),):
            raise PromptError(
                f"{where}: expected (N, 2) points with (N,) labels, found {pts.shape} and "
                f"{None if labels is None else labels.shape}"
            )
        if len(pts) == 0 and p.box is None:
            raise PromptError(f"{where}: expected at least one point or a box, found none")
        if not np.isin(labels, (0, 1)).all():
            raise PromptError(
                f"{where}: expected labels of 1 (include) or 0 (exclude), found {labels.tolist()}"
            )
        _check_inside(pts, width, height, f"{where}: points")
    if p.box is not None:
        box = np.asarray(p.box)
        if box.shape != (4,):
            raise PromptError(f"{where}: expected a box x0, y0, x1, y1, found shape {box.shape}")
        _check_inside(box.reshape(2, 2), width, height, f"{where}: box")
        if not (box[0] < box[2] and box[1] < box[3]):
            raise PromptError(
                f"{where}: expected a box x0, y0, x1, y1 with x0 < x1 and y0 < y1, "
                f"found {box.tolist()}"
            )


def _check_inside(xy: np.ndarray, width: int, height: int, what: str) -> None:
    """xy: (N, 2) pixel x, y; PromptError unless each is finite and inside the frame."""
    xy = xy.astype(np.float64)
    ok = np.isfinite(xy).all(axis=1) & (xy >= 0).all(axis=1)
    ok &= (xy[:, 0] <= width) & (xy[:, 1] <= height)
    if not ok.all():
        x, y = xy[int(np.argmin(ok))].tolist()
        raise PromptError(
            f"{what}: expected x, y inside the {width}x{height} frame "
            f"(0..{width}, 0..{height}), found ({x:g}, {y:g})"
        )


def prompt_points(
    p: Prompt, width: int, height: int, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """A prompt's points (and a box as two corner points labelled 2, 3, first) in model
    pixels, scaled as ``add_new_points_or_box``: x / W * S, y / H * S in float32."""
    pts = np.zeros((0, 2), np.float32) if p.points is None else np.asarray(p.points, np.float32)
    labels = np.zeros(0, np.int32) if p.labels is None else np.asarray(p.labels, np.int32)
    if p.box is not None:
        pts = np.concatenate([np.asarray(p.box, np.float32).reshape(2, 2), pts])
        labels = np.concatenate([np.array([2, 3], np.int32), labels])
    size = np.array([width, height], np.float32)
    return (pts / size) * np.float32(image_size), labels


def choose_output(
    b: Backend,
    out: TrackOutput,
    is_init_cond: bool,
    num_pts: int,
    policy: MemoryPolicy | None,
    frame_index: int,
    video_hw: tuple[int, int],
) -> tuple[np.ndarray, float, np.ndarray, Any]:
    """(low-res logits, IoU, all candidates' IoUs, object pointer) of one decoder output:
    SAM 2's ``_use_multimask`` rule, then the best-IoU candidate, or the one the policy's
    ``choose(frame_index, Candidates)`` hook picks when it has one. ``video_hw``: the clip's
    (height, width), for the hook's candidates."""
    multi = (
        b.multimask_output_in_sam
        and (is_init_cond or b.multimask_output_for_tracking)
        and b.multimask_min_pt_num <= num_pts <= b.multimask_max_pt_num
    )
    if multi:
        choose = getattr(policy, "choose", None)
        if choose is None:
            k = int(np.argmax(out.multi_ious))
        else:
            k = int(
                choose(
                    frame_index,
                    Candidates(
                        out.multi_logits,
                        out.multi_ious,
                        out.object_score_logit,
                        b.image_size,
                        video_hw,
                    ),
                )
            )
        return (
            out.multi_logits[k],
            float(out.multi_ious[k]),
            out.multi_ious,
            out.multi_ptrs[k : k + 1],
        )
    return (
        out.single_logits,
        out.single_iou,
        np.array([out.single_iou], np.float32),
        out.single_ptr,
    )

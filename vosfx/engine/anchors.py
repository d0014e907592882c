"""One object's prompted frame (its anchor): the prompt decoded in image mode, the memory later.

:meth:`~vosfx.engine.tracker.Tracker.prompt` builds a point/box prompt's decoder request
(:func:`click_request`: the points in model pixels, the frame's previous output as the dense
mask input), adds the memory of a pass when the prompt corrects a frame that pass tracked
(:class:`~vosfx.engine.passes.Attended`), and decodes it into an :class:`Anchor`
(:func:`decode_prompt`); a mask prompt is its own output. The anchor's memory is encoded only
when a pass first attends it (:meth:`Anchor.memory`), so a click costs the decoder alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from vosfx.engine.backend import Backend, ImageFeatures, TrackRequest, warn_once
from vosfx.engine.decoding import MASK_INPUT_CLAMP, prompt_points
from vosfx.engine.passes import MaskRules
from vosfx.errors import PromptError
from vosfx.types import ObjectResult, Prompt


@dataclass
class Anchor:
    """One object's prompted frame: its output and its encoded memory (backend-native)."""

    obj_id: int
    frame_index: int
    shot_id: int
    low: np.ndarray  # (s, s) float32, holes filled: the frame's output
    score: float
    iou: float
    quality: float
    ptr: Any
    maskmem: Any  # None until a pass needs it (see decode_prompt)
    features: Any = None  # kept only while the memory is not encoded yet

    def memory(self, backend: Backend) -> Any:
        """The anchor's memory, encoded on first use from its stored (filled) prediction,
        binarised for mask prompts too, as SAM 2's ``propagate_in_video_preflight`` does
        (is_mask_from_pts=True for every prompted frame; the mask's antialiased edge otherwise
        moves the next frame's logits by ~5e-4 at image size 128)."""
        if self.maskmem is None:
            self.maskmem = backend.encode_memory(
                self.features, self.low, self.score, backend.binarize_mask_from_pts_for_mem_enc
            )
            self.features = None
        return self.maskmem

    def result(self) -> ObjectResult:
        """The prompted frame's output, as :meth:`~vosfx.engine.tracker.Tracker.prompt`
        returns it."""
        return ObjectResult(
            self.obj_id,
            self.frame_index,
            self.low,
            self.score,
            self.iou,
            {"prompt": True, "quality": self.quality},
        )


def fit_logits(logits: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32 low-res logits: ``logits`` as they are, or resampled bilinearly
    when they were made at another model size (a prompt's prior from a job run at another
    ``--image-size``)."""
    a = np.asarray(logits, np.float32)
    if a.shape == (size, size):
        return a
    import cv2

    return cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR)


def click_request(
    backend: Backend,
    prompt: Prompt,
    feats: ImageFeatures,
    previous: np.ndarray | None,
    width: int,
    height: int,
) -> TrackRequest:
    """The decoder request of a point/box prompt on a (``width`` x ``height``) clip: the points
    in model pixels, and the frame's previous output (``previous``: (s, s) float32 low-res
    logits) as the dense mask input, clamped to +-32, when the backend takes one. No memory:
    a correction on a tracked frame adds its pass's, already attended
    (:meth:`~vosfx.engine.passes.Attended.request`)."""
    coords, labels = prompt_points(prompt, width, height, backend.image_size)
    mask_in = None
    if previous is not None and not getattr(backend, "supports_mask_input", True):
        # a backend without a dense-mask decoder graph (an ONNX bundle exported before
        # format 3): the clicks alone decide, as SAM 2 does for a frame's first click
        warn_once(
            logging.getLogger(__name__),
            "this backend has no dense mask-prompt graph: a further click on "
            "a frame is decoded from all its clicks, without the frame's "
            "previous mask as input (the torch backend uses it, as SAM 2)",
        )
        previous = None
    if previous is not None:
        mask_in = np.clip(previous, -MASK_INPUT_CLAMP, MASK_INPUT_CLAMP).astype(np.float32)
    return TrackRequest(feats, point_coords=coords, point_labels=labels, mask_logits=mask_in)


def decode_prompt(
    rules: MaskRules,
    feats: ImageFeatures,
    prompt: Prompt,
    request: TrackRequest | None,
    *,
    shot_id: int,
    is_init_cond: bool,
) -> Anchor:
    """The anchor ``prompt`` makes on its frame, whose image features are ``feats``. A mask
    prompt is the output itself (``use_mask_input_as_output_without_sam``); a point/box
    prompt's ``request`` (None for a mask prompt) goes through the decoder, its candidates
    chosen by ``rules`` (multimask as for an initial conditioning frame when
    ``is_init_cond``). The output's small holes are filled; its memory is not encoded yet."""
    b = rules.backend
    if prompt.mask is not None:
        if not b.use_mask_input_as_output_without_sam:
            raise PromptError(
                "this model needs use_mask_input_as_output_without_sam for "
                "mask prompts (every SAM 2.1 config sets it)"
            )
        low, score, ptr = b.mask_as_output(feats, prompt.mask)
        low = rules.fill(low)
        iou, all_ious = 1.0, np.ones(1, np.float32)
    else:
        assert request is not None  # the tracker builds one for every point/box prompt
        out = b.track(request)
        n_points = 0 if request.point_labels is None else len(request.point_labels)
        low, iou, all_ious, ptr = rules.choose(out, is_init_cond, n_points)
        score = out.object_score_logit
        low = rules.fill(low)
    from vosfx.engine.policies.rcms import frame_quality

    quality = frame_quality(score, all_ious, low)
    # The anchor's memory is encoded when a pass first attends it, not here: a click in the
    # studio then costs the decoder only (the memory encoder was ~60 % of a click at 1024);
    # the frame's features are kept meanwhile (20 MiB at 1024 per prompted frame not yet
    # tracked).
    return Anchor(
        prompt.obj_id,
        prompt.frame_index,
        shot_id,
        low,
        float(score),
        float(iou),
        quality,
        ptr,
        None,
        feats,
    )

"""RCMS (reliable conditioning memory selection, MOSEv2) and the shot-aware memory policy.

See ``docs/memory.md`` for how the policies work and where each rule comes from in the
reference code (henghuiding/MOSE-api, ``MOSEv2/sam2_rcms``).
"""

from __future__ import annotations

import math

import numpy as np

from vosfx.errors import VosfxError


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
        raise VosfxError(f"frame_quality: expected at least one predicted IoU, found shape "
                         f"{ious.shape}")
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

"""A scripted SAM 2 mask decoder for policy parity tests (torch only; no vosfx import).

Seeded random weights give speckled masks that cover the whole frame, the same three predicted
IoUs on every frame and an object score near 0.2: every candidate has the same bounding box, so
no rule that looks at candidates (SAMURAI's Kalman filter, DAM4SAM's distractor test, SAM2Long's
pathways) ever has anything to choose. The policy tests therefore wrap the decoder's
``predict_masks`` with a per-frame *script*: each multimask candidate k gets a disc of +-20
logits added at a scripted place, its predicted IoU and the object score logit are replaced by
scripted values. The network's own logits (which depend on the attended memory) stay in the
sum, so the memory selection is still what the logits are compared on.

The same wrapper runs inside the official code when fixtures are recorded and inside vosfx in
the tests. ``predict_masks`` is not told the frame index, so the frame is recognised by a
signature of its high-resolution image features (``feat_s1.mean()``), which both sides compute
from the same weights and JPEG: :class:`FrameSignatures` maps it back to a frame index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DISC_LOGIT = 20.0  # far above the random network's own logits (|x| < 3 at 128 px)


@dataclass(frozen=True)
class Candidate:
    """One multimask candidate on one frame: a disc at (x, y) with radius r, all as
    fractions of the low-res mask side, and its scripted predicted IoU. r = 0: no disc."""

    x: float
    y: float
    r: float
    iou: float


@dataclass(frozen=True)
class FrameScript:
    """``iou_gain`` > 0: candidate k's predicted IoU is its scripted IoU plus ``iou_gain`` x
    (the network's own predicted IoU - ``RAW_IOU[k]``), so it depends (slightly) on the
    attended memory: SAM2Long's pathways then score their candidates differently."""

    candidates: tuple[Candidate, Candidate, Candidate]
    object_score: float
    iou_gain: float = 0.0


# the random network's own multimask IoUs (seed 0, image size 128): about these on every frame,
# moving by ~1e-4 with the memory attended
RAW_IOU = (0.5405, 0.4800, 0.5036)


def disc_logits(c: Candidate, side: int) -> torch.Tensor:
    """(side, side) float32: +DISC_LOGIT inside the disc, -DISC_LOGIT outside."""
    ys, xs = torch.meshgrid(
        torch.arange(side, dtype=torch.float32),
        torch.arange(side, dtype=torch.float32),
        indexing="ij",
    )
    inside = (xs + 0.5 - c.x * side) ** 2 + (ys + 0.5 - c.y * side) ** 2 <= (c.r * side) ** 2
    return torch.where(inside, DISC_LOGIT, -DISC_LOGIT)


def signature(feat_s1: torch.Tensor) -> float:
    """A number that identifies a frame: the mean of its stride-8 image features."""
    return float(feat_s1.detach().double().mean())


class FrameSignatures:
    """signature -> frame index, from a table recorded with the official code."""

    def __init__(self, table: dict[int, float]) -> None:
        self.table = {int(k): float(v) for k, v in table.items()}

    def frame(self, feat_s1: torch.Tensor) -> int:
        """The recorded frame whose signature ``feat_s1`` has."""
        sig = signature(feat_s1)
        ranked = sorted(self.table, key=lambda t: abs(self.table[t] - sig))
        best = ranked[0]
        gap = abs(self.table[best] - sig)
        # features agree to ~1e-7 between runtimes; frames differ by far more
        if gap > 1e-5 or (len(ranked) > 1 and abs(self.table[ranked[1]] - sig) < 10 * gap):
            raise AssertionError(
                f"frame signature {sig} matches no recorded frame (nearest "
                f"{best}: {self.table[best]})"
            )
        return best


def install(mask_decoder: torch.nn.Module, scripts: dict[int, FrameScript], frame_of) -> list:
    """Wrap ``mask_decoder.predict_masks`` so frame t's outputs follow ``scripts[t]`` (frames
    without a script are left alone). ``frame_of(feat_s1) -> t``. Returns the list the wrapper
    appends ``(t, signature)`` to on every call."""
    inner = mask_decoder.predict_masks
    calls: list[tuple[int, float]] = []

    def predict_masks(*args, **kwargs):
        masks, ious, tokens, score = inner(*args, **kwargs)
        feats = kwargs.get("high_res_features")
        t = frame_of(feats[1])
        calls.append((t, signature(feats[1])))
        script = scripts.get(t)
        if script is None:
            return masks, ious, tokens, score
        side = masks.shape[-1]
        masks, ious = masks.clone(), ious.clone()  # (B, 4, s, s), (B, 4)
        for k, c in enumerate(script.candidates):
            if c.r > 0:
                masks[:, k + 1] = masks[:, k + 1] + disc_logits(c, side).to(masks.dtype)
            if script.iou_gain:
                raw = ious[:, k + 1] - RAW_IOU[k]
                ious[:, k + 1] = (c.iou + script.iou_gain * raw).clamp(0.01, 0.99)
            else:
                ious[:, k + 1] = c.iou
        score = torch.full_like(score, script.object_score)
        return masks, ious, tokens, score

    mask_decoder.predict_masks = predict_masks
    return calls


def _path(t: int, r: float = 0.12) -> tuple[float, float, float]:
    return 0.25 + 0.012 * t, 0.5, r


def samurai_scripts(case: str) -> tuple[int, dict[int, FrameScript]]:
    """(number of frames, per-frame scripts) of the SAMURAI parity cases.

    ``kf``: an object disc moving right (candidates 0 and 1: tight and loose) and a distractor
    disc (candidate 2). Frame 6: every IoU 0.25 (Kalman filter reset); 12-14: best IoU 0.45
    (kept by the filter, below the memory gate 0.5); 24 and 28: the distractor has the highest
    IoU (SAM 2 would take it; the motion score should not); 26: the object jumps across the
    frame (motion score 0 closes the memory gate); 30: IoUs 0.2 (reset again).
    ``absent``: the object score drops to -0.5 on frame 4 (SAMURAI keeps masks above -1 but
    gates memory at 0) and to -3 on frames 5-6 (absent).
    """
    scripts: dict[int, FrameScript] = {}
    n = 32 if case == "kf" else 12
    for t in range(1, n):
        x, y, r = _path(t)
        ious = [0.80, 0.70, 0.60]
        score = 2.0
        if case == "kf":
            if t == 26:
                x, y = 0.75, 0.8
            if t in (6, 30):
                ious = [0.25, 0.22, 0.20] if t == 6 else [0.20, 0.18, 0.15]
            elif t in (12, 13, 14):
                ious = [0.45, 0.40, 0.35]
            elif t in (24, 28):
                ious = [0.80, 0.70, 0.84]
        elif case == "absent":
            score = {4: -0.5, 5: -3.0, 6: -3.0}.get(t, 2.0)
        else:
            raise ValueError(case)
        cands = (
            Candidate(x, y, r, ious[0]),
            Candidate(x, y, r + 0.04, ious[1]),
            Candidate(0.8, 0.2, 0.1, ious[2]),
        )
        scripts[t] = FrameScript(cands, score)
    return n, scripts


def dam4sam_scripts(case: str) -> tuple[int, dict[int, FrameScript]]:
    """(number of frames, per-frame scripts) of the DAM4SAM parity case ``drm``.

    The object disc (candidate 0, IoU 0.85) moves right; candidate 1 is a looser disc around
    it, candidate 2 a distractor: the alternatives differ from the chosen mask, so a frame
    qualifies for the distractor-resolving memory whenever its IoU and size allow and the last
    addition is more than 5 frames back. Frames 10-11: object absent (object score -3: recent
    memory and pointers skip them). Frame 16: IoU 0.75 (too low to add). Frames 19-25: all
    candidates coincide (no distractor: nothing to add). 34 frames: the memory fills past its
    4 slots and the recent memory's stride of 5 reaches back.
    """
    if case != "drm":
        raise ValueError(case)
    n = 34
    scripts: dict[int, FrameScript] = {}
    for t in range(1, n):
        x, y, r = _path(t)
        ious = [0.85, 0.70, 0.60]
        score = -3.0 if t in (10, 11) else 2.0
        if t == 16:
            ious = [0.75, 0.70, 0.60]
        if 19 <= t <= 25:
            cands = (
                Candidate(x, y, r, ious[0]),
                Candidate(x, y, r, ious[1]),
                Candidate(x, y, r, ious[2]),
            )
        else:
            cands = (
                Candidate(x, y, r, ious[0]),
                Candidate(x, y, r + 0.04, ious[1]),
                Candidate(0.8, 0.2, 0.1, ious[2]),
            )
        scripts[t] = FrameScript(cands, score)
    return n, scripts


def sam2long_scripts(case: str) -> tuple[int, dict[int, FrameScript]]:
    """(number of frames, per-frame scripts) of the SAM2Long parity case ``paths``.

    The object disc (candidate 0), a looser disc (1) and a distractor (2) as above; predicted
    IoUs follow the network's own by a gain of 100 (``iou_gain``), so each pathway scores its
    candidates differently and a lineage that was not the best can overtake later. Object
    scores differ on every frame (SAM2Long ranks memories by them: no ties). Frames 2-4, 7-8
    and 9: |object score| <= 2 (the uncertain branch: survivors with distinct rounded IoUs);
    frame 3: all three IoUs equal (fewer distinct values than pathways: each pathway without a
    survivor adds its best child); frame 9: absent but uncertain (-1.6: the IoU's sign flips);
    frame 10: absent and certain (-3.1); frame 5: IoUs below 0.1 (left out of every pathway's
    memory). 20 frames: the pathways' memory lists reach their cap of 15 frames.
    """
    if case != "paths":
        raise ValueError(case)
    n = 22
    scripts: dict[int, FrameScript] = {}
    for t in range(1, n):
        x, y, r = _path(t)
        ious = [0.80, 0.70, 0.60]
        gain = -1000.0 if t in (12, 17) else 300.0
        score = 3.0 + 0.01 * t
        if t in (2, 3, 4, 7, 8):
            score = 1.0 + 0.01 * t
        if t == 9:
            score = -1.6
        if t == 10:
            score = -3.1
        if t == 3:
            ious, gain = [0.8, 0.8, 0.8], 0.0
        if t == 5:
            ious, gain = [0.08, 0.07, 0.05], 0.0
        cands = (
            Candidate(x, y, r, ious[0]),
            Candidate(x, y, r + 0.04, ious[1]),
            Candidate(0.8, 0.2, 0.1, ious[2]),
        )
        scripts[t] = FrameScript(cands, score, gain)
    return n, scripts

"""From SAM 2's low-resolution logits to a finished, full-resolution alpha per object.

The chain, per object and frame (each step a pure array function; :class:`Refiner` strings
them together and keeps the only state, the temporal filter's):

1. logits -> soft alpha: ``sigmoid((logit - threshold) / softness)`` of the bilinearly
   resampled logits; with ``edge = "guided"`` its uncertain edge band is then snapped to the
   frame's edges by a fast colour guided filter (:mod:`vosfx.matte.guided`);
2. reduce chatter where the picture is still (``temporal_strength``, :mod:`.temporal`);
3. ``alpha = "hard"``: threshold at 0.5;
4. fill holes, remove specks (by area), shift edge, choke, clip black/white, feather
   (:mod:`.morph`);
5. ``non_overlap``: where objects meet, they never share more than full coverage.

Alphas are (H, W) float32 in [0, 1] at source resolution; "inside" is alpha >= 0.5.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from vosfx.config import RefineConfig
from vosfx.errors import VosfxError
from vosfx.matte import kernels
from vosfx.matte.guided import GuidePrep, guided_refine
from vosfx.matte.morph import (
    choke,
    clip_levels,
    feather,
    fill_holes,
    remove_specks,
    shift_edge,
)
from vosfx.matte.temporal import TemporalSmoother
from vosfx.types import Frame, MaskResult, Matte

__all__ = [
    "Refiner",
    "choke",
    "clip_levels",
    "feather",
    "fill_holes",
    "finish",
    "guided_refine",
    "logits_to_prob",
    "remove_specks",
    "resolve_overlap",
    "shift_edge",
]


# What a non-finite logit is read as: SAM 2's own extreme (its NO_OBJ_SCORE is -1024).
_LOGIT_LIMIT = 1024.0
# |z| clipped to this before exp: the sigmoid is exactly 0 or 1 in float32 from |z| = 16.7 on.
_Z_LIMIT = 32.0


def logits_to_prob(
    logits: np.ndarray, out_hw: tuple[int, int], threshold: float = 0.0, softness: float = 1.0
) -> np.ndarray:
    """Calibrated soft alpha: ``sigmoid((logit - threshold) / softness)`` of the logits
    resampled to ``out_hw`` (bilinear, half-pixel centres, as SAM 2 upsamples).

    ``logits``: (h, w) float32, any range (SAM 2 writes -1024 for an absent object). A
    non-finite logit (a half-precision overflow in the model) is read as SAM 2's own
    ``logits > 0`` reads it: +inf as +1024 (inside), -inf and NaN as -1024 (outside);
    resampled as is, one would turn the logit cells around it into NaN (a hole in every
    output, kept frame after frame by the temporal filter). A finite logit beyond +-1024 is
    read as +-1024 too.
    Returns (H, W) float32 in [0, 1]; its 0.5 line is the hard matte's edge.
    """
    if logits.ndim != 2:
        raise VosfxError(f"logits: expected a (h, w) plane, found shape {logits.shape}")
    if softness <= 0:
        raise VosfxError(f"softness: expected > 0, found {softness}")
    up: np.ndarray = logits.astype(np.float32, copy=False)  # (h, w), then (H, W) float32
    if not np.isfinite(up).all():  # one check of the small grid (~20 us for 256²)
        up = np.nan_to_num(up, nan=-_LOGIT_LIMIT, posinf=_LOGIT_LIMIT, neginf=-_LOGIT_LIMIT)
    # beyond SAM 2's own +-1024 a logit is read as that (as an infinite one is), so no
    # scale below overflows; a copy of the small grid, the input is left alone
    up = np.clip(up, -_LOGIT_LIMIT, _LOGIT_LIMIT, dtype=np.float32)
    # sigmoid(z) = 1 / (1 + exp(-z)) with z = (logit - threshold) / softness: -z is made in
    # one pass, clipped to +-_Z_LIMIT (beyond it the sigmoid is 0 or 1 in float32, and
    # OpenCV's exp is 10x slower where it overflows or underflows), OpenCV's SIMD exp, and
    # one pass for 1 / (1 + e). ~3.5 ms a 1080p plane on AMD Zen 3, where numpy's float32
    # tanh (the form used before) took ~9 ms alone (docs/benchmarks/render.md).
    # A power-of-two scale (softness 1, the default, gives -1) is exact in float32 and
    # commutes with the resize's weighted sums, so it is applied to the small logits first.
    scale = np.float32(-1.0 / softness)
    early = _power_of_two(abs(scale))
    if early:
        up *= scale
    if up.shape != tuple(out_hw):
        x = cv2.resize(up, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    else:  # already at the output size (rare, and small): a copy to work on
        x = np.array(up, np.float32, order="C", copy=True)
    if early:
        kernels.scale_and_clip(x, 1.0, -float(scale) * threshold, _Z_LIMIT)
    else:
        kernels.scale_and_clip(x, float(scale), -float(scale) * threshold, _Z_LIMIT)
    cv2.exp(x, dst=x)
    return kernels.sigmoid_from_exp(x)


def _power_of_two(x: np.float32) -> bool:
    mantissa, _ = np.frexp(x)
    return bool(mantissa == 0.5)


def resolve_overlap(alphas: np.ndarray) -> np.ndarray:
    """Objects never share more than full coverage: at each pixel the objects are taken in
    order of decreasing alpha and each keeps at most what the ones before it left
    (``min(alpha_i, 1 - sum of stronger)``). The strongest object, and so the merged (max)
    matte, is unchanged; where only one object is present nothing changes.

    ``alphas``: (O, H, W) float32 in [0, 1]. Returns (O, H, W) float32 in [0, 1] whose sum
    over objects is <= 1 everywhere.
    """
    if alphas.ndim != 3:
        raise VosfxError(f"alphas: expected (O, H, W), found shape {alphas.shape}")
    alphas = alphas.astype(np.float32, copy=False)
    if alphas.shape[0] <= 1:
        return alphas.copy()
    if alphas.shape[0] == 2:  # the common case, without a sort
        a, b = alphas
        a_first = a >= b
        out_a = np.where(a_first, a, np.minimum(a, 1.0 - b))
        out_b = np.where(a_first, np.minimum(b, 1.0 - a), b)
        return np.stack([out_a, out_b])
    order = np.argsort(-alphas, axis=0, kind="stable")
    ranked = np.take_along_axis(alphas, order, axis=0)
    before = np.cumsum(ranked, axis=0) - ranked
    ranked = np.clip(np.minimum(ranked, 1.0 - before), 0.0, 1.0)
    out = np.empty_like(alphas)
    np.put_along_axis(out, order, ranked, axis=0)
    return out


def finish(alpha: np.ndarray, cfg: RefineConfig) -> np.ndarray:
    """Steps 3-4 of the chain on one (H, W) float32 alpha in [0, 1]: hard threshold (if
    ``cfg.alpha == "hard"``), fill holes, remove specks, shift edge, choke, clip black/white,
    feather."""
    if cfg.alpha == "hard":
        alpha = (alpha >= 0.5).astype(np.float32)
    if cfg.fill_holes_px2 > 0:
        alpha = fill_holes(alpha, cfg.fill_holes_px2)
    if cfg.remove_specks_px2 > 0:
        alpha = remove_specks(alpha, cfg.remove_specks_px2)
    if cfg.shift_edge_px != 0:
        alpha = shift_edge(alpha, cfg.shift_edge_px)
    if cfg.choke > 0:
        alpha = choke(alpha, cfg.choke)
    if cfg.clip_black > 0 or cfg.clip_white < 1:
        alpha = clip_levels(alpha, cfg.clip_black, cfg.clip_white)
    if cfg.feather_px > 0:
        alpha = feather(alpha, cfg.feather_px)
    return alpha


class Refiner:
    """Turns each frame's :class:`~vosfx.types.MaskResult` into a :class:`~vosfx.types.Matte`.

    ``cfg``: the ``[refine]`` options. ``obj_ids``: the objects of the job, in the order the
    Matte lists them. ``logit_size``: the side of the engine's low-resolution logits, when
    known ahead (then :meth:`prepare` can make a frame's guide before its masks exist).
    ``threads``: the full-resolution loops (edge detail, temporal blend) in that many bands of
    rows, the same result (:mod:`vosfx.matte.kernels`); 0: :func:`kernels.default_threads`
    (the process's cores, at most 8).
    State: only the temporal filter's (previous output per object and a small luma copy of
    the previous frame); call :meth:`follow` before each frame (or :meth:`reset` on a shot
    cut).
    """

    def __init__(
        self,
        cfg: RefineConfig,
        obj_ids: tuple[int, ...],
        logit_size: int | None = None,
        threads: int = 0,
    ) -> None:
        self.cfg = cfg
        self.logit_size = logit_size
        self.threads = int(threads) if threads > 0 else kernels.default_threads()
        self.obj_ids = tuple(int(o) for o in obj_ids)
        if len(set(self.obj_ids)) != len(self.obj_ids):
            raise VosfxError(f"Refiner: expected distinct object ids, found {self.obj_ids}")
        self._temporal = TemporalSmoother(cfg.temporal_strength, self.threads)
        self._last: tuple[int, int] | None = None  # (frame index, shot id) of follow()
        if cfg.edge == "guided" or self._temporal.strength > 0:
            # the per-pixel loops load (or compile) while the job starts, not on its first frame
            kernels.warm_up()

    def reset(self) -> None:
        """Forget the previous frame (a shot cut): no smoothing across it."""
        self._temporal.reset()
        self._last = None

    def follow(self, frame_index: int, shot_id: int = 0) -> None:
        """Say which frame is refined next: the temporal filter carries over only to the next
        frame of the same shot; a cut, a step back, a gap (a seek) or the same frame again
        forgets the previous one (:meth:`reset`). The render, the studio's preview and the
        OFX worker all call it, so a frame is smoothed the same way in each."""
        here = (int(frame_index), int(shot_id))
        if self._last is not None and here != (self._last[0] + 1, self._last[1]):
            self.reset()
        self._last = here

    def _radius(self, width: int, logit_size: int) -> int:
        # radius 0: one cell of the mask logits at source resolution (8 px at 1080p from
        # SAM 2's 256² logits); measured best on DAVIS (docs/benchmarks/refine.md)
        return self.cfg.guided_radius_px or max(1, round(width / logit_size))

    def prepare(self, frame: Frame) -> Frame:
        """``frame`` with the part of refinement that depends on the image alone made ahead
        (``frame.derived["guide"]``: the guided filter's per-frame grid, ~4 ms a 1080p
        frame with 64² logits, ~12 with SAM 2's 256²), for a frame source to run on its
        decode thread, so the loop's thread does only the per-object part. Returns ``frame``
        itself when there is nothing to make (no guided edge, or the logits' size unknown).
        Touches no refiner state."""
        if self.cfg.edge != "guided" or not self.logit_size or "guide" in frame.derived:
            return frame
        prep = GuidePrep(
            frame.image, self._radius(frame.width, self.logit_size), self.cfg.guided_eps
        )
        return replace(frame, derived={**frame.derived, "guide": prep})

    def _guide(self, frame: Frame, logit_size: int) -> GuidePrep:
        """The frame's guide: the one :meth:`prepare` made if it fits these logits, else now."""
        radius, eps = self._radius(frame.width, logit_size), self.cfg.guided_eps
        made = frame.derived.get("guide")
        if isinstance(made, GuidePrep) and (made.radius_px, made.eps) == (radius, eps):
            return made
        return GuidePrep(frame.image, radius, eps)

    def _check(self, result: MaskResult, frame: Frame) -> None:
        lg = result.logits
        if lg.ndim != 3 or lg.shape[0] != len(result.obj_ids):
            raise VosfxError(
                f"mask result {result.frame_index}: expected logits (O, h, w) with O = "
                f"{len(result.obj_ids)} objects, found shape {lg.shape}"
            )
        if len(result.object_score_logits) != len(result.obj_ids):
            raise VosfxError(
                f"mask result {result.frame_index}: expected {len(result.obj_ids)} object "
                f"scores, found {len(result.object_score_logits)}"
            )
        unknown = set(result.obj_ids) - set(self.obj_ids)
        if unknown:
            raise VosfxError(
                f"mask result {result.frame_index}: objects {sorted(unknown)} are not among "
                f"the refiner's objects {list(self.obj_ids)}"
            )
        if frame.image.ndim != 3 or frame.image.shape[2] != 3:
            raise VosfxError(
                f"frame {frame.index}: expected (H, W, 3) RGB, found shape {frame.image.shape}"
            )

    def __call__(self, result: MaskResult, frame: Frame) -> Matte:
        """``result``: logits (O, h, w) for some or all of the objects; ``frame``: the decoded
        frame (uint8 or uint16 RGB). Returns the Matte with alpha (len(obj_ids), H, W) float32
        in [0, 1]; an object missing from ``result`` or scored absent (object score logit
        <= 0) gets alpha 0 and restarts its temporal filter."""
        self._check(result, frame)
        cfg = self.cfg
        hw = (frame.height, frame.width)
        slot = {o: i for i, o in enumerate(result.obj_ids)}
        present = [
            o
            for o in self.obj_ids
            if o in slot and float(result.object_score_logits[slot[o]]) > 0.0
        ]
        prep = None
        if cfg.edge == "guided" and present:
            prep = self._guide(frame, result.logits.shape[-1])
        # the guide's area-downscaled copy doubles as the temporal filter's when the sizes
        # agree (the same resize of the same image: ~3 ms a 1080p frame saved)
        still = self._temporal.still(frame.image, None if prep is None else prep.low_image)
        planes = []
        for obj_id in self.obj_ids:
            if obj_id not in present:
                self._temporal.forget(obj_id)
                planes.append(np.zeros(hw, np.float32))
                continue
            logits = result.logits[slot[obj_id]]
            alpha = logits_to_prob(logits, hw, cfg.threshold, cfg.softness)
            if prep is not None:
                low = logits_to_prob(logits, prep.low_hw, cfg.threshold, cfg.softness)
                alpha = prep.refine(
                    alpha, low, cfg.guided_strength, overwrite=True, threads=self.threads
                )
            # alpha is this call's own plane (made by logits_to_prob, refined in place)
            alpha = self._temporal(obj_id, alpha, still, overwrite=True)
            planes.append(finish(alpha, cfg))
        if len(planes) == 1:  # a view, not a copy (8 MB a 1080p frame); nothing writes it
            alpha = planes[0][None]
        else:
            alpha = np.stack(planes) if planes else np.zeros((0, *hw), np.float32)
        if cfg.non_overlap and len(planes) > 1:
            alpha = resolve_overlap(alpha)
        return Matte(frame_index=frame.index, obj_ids=self.obj_ids, alpha=alpha)

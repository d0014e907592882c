"""The SAM 2 tracker: prompted frames (anchors) and propagation passes, one object at a time.

It reproduces ``sam2.SAM2VideoPredictor`` (sam2 1.1.0) with constant memory. Two verbs:

- :meth:`Tracker.prompt` (image mode): one object's output on one frame from its prompt, with
  no memory attended, exactly as SAM 2 answers a prompt on a frame it has not tracked
  (``add_new_points_or_box`` / ``add_new_mask`` with ``is_init_cond_frame``): a mask prompt is
  the output itself (``use_mask_input_as_output_without_sam``); points and boxes go through the
  decoder, multimask when ``_use_multimask`` says so, and a previous output of that frame, if
  any, is the dense mask input (clamped to +-32, as ``prev_sam_mask_logits``). The frame's
  memory is encoded from that output, binarised (``binarize_mask_from_pts_for_mem_enc``; the
  predictor does it for mask prompts too). The result is the object's *anchor* on that frame:
  conditioning memory for every pass that attends it.
- A *pass* (:meth:`start_pass`, :meth:`step`, :meth:`end_pass`): one object propagated from
  one anchor in one direction, attending that anchor and, when given, one more anchor (the
  neighbouring prompted frame on the far side) as conditioning memory, plus the recent frames
  of the pass itself as its policy selects them. A forward pass is SAM 2's
  ``propagate_in_video``; a backward pass is ``propagate_in_video(reverse=True)``, run on frame
  indices mirrored as ``N - 1 - t`` so that "previous frames" are the later ones, pointers come
  from anchors at or after the frame, and the video's ends bound the pointer window just as
  SAM 2's reverse mode does (docs/session.md).

Low-res logits get small holes filled (``fill_hole_area``) for output only, never for the
memory of tracked frames. An anchor and how its prompt is decoded are in
:mod:`vosfx.engine.anchors`, a pass's state and the steps of one of its frames in
:mod:`vosfx.engine.passes`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from vosfx.engine.anchors import Anchor, click_request, decode_prompt, fit_logits
from vosfx.engine.backend import (
    Backend,
    ImageFeatures,
    Interrupt,
    MemoryRequest,
    encode_memory_many,
    model_sized,
    track_many,
)
from vosfx.engine.bank import MemoryBank
from vosfx.engine.decoding import check_prompt
from vosfx.engine.passes import Attended, MaskRules, Pass
from vosfx.engine.policies.base import Decision, MemoryEntry, MemoryPolicy
from vosfx.engine.reprompt import Reprompter
from vosfx.errors import PromptError, VosfxError
from vosfx.types import Frame, ObjectResult, Prompt, VideoInfo

if TYPE_CHECKING:
    from typing_extensions import Self


class Tracker:
    """An engine :class:`~vosfx.engine.Session` over one clip: anchors and passes.

    ``policy``: a callable returning a fresh :class:`MemoryPolicy` (one per pass), or a policy
    instance that is deep-copied. ``fill_hole_area``: SAM 2's post-processing (8 in its video
    predictor; the official code skips it without its CUDA extension, so use 0 to match a CPU
    run). ``reprompt``: re-prompt refinement on sharp quality or area drops
    (vosfx/engine/reprompt.py).
    """

    def __init__(
        self,
        backend: Backend,
        policy: MemoryPolicy | Callable[[], MemoryPolicy],
        info: VideoInfo,
        *,
        fill_hole_area: int = 8,
        reprompt: bool = False,
    ) -> None:
        self.backend = backend
        self.info = info
        self.fill_hole_area = fill_hole_area
        self.rules = MaskRules(backend, fill_hole_area, (info.height, info.width))
        self.reprompt = reprompt
        self._policy = policy
        self._anchors: dict[int, dict[int, Anchor]] = {}
        self._passes: dict[int, Pass] = {}
        self._next_pass = 0
        self._events: dict[int, dict[int, str]] = {}
        self._promoted: dict[int, dict[int, list[int]]] = {}
        self._peak: dict[int, int] = {}
        probe = self._new_policy()
        self.policy_name = probe.name
        if hasattr(probe, "prune"):
            from vosfx.engine.pathways import check_backend

            check_backend(probe, backend)

    def _new_policy(self) -> MemoryPolicy:
        if callable(self._policy) and not hasattr(self._policy, "select"):
            return self._policy()
        return cast(MemoryPolicy, copy.deepcopy(self._policy))  # an instance, not a factory

    # --- features -----------------------------------------------------------------------
    def encode(self, frame: Frame, interrupt: Interrupt | None = None) -> ImageFeatures:
        """The frame's image features (backend-native; cache them to prompt the same frame
        again without the image encoder). ``interrupt``: see :class:`Interrupt`."""
        # resized ahead on the decode thread if the source prepared it (then preprocess
        # finds it at size S and skips its resize: the same pixels, the same features)
        rgb8 = frame.model_input if frame.model_input is not None else frame.rgb8
        return self.backend.encode_image(rgb8, interrupt)

    def model_input(self, frame: Frame) -> Frame:
        """The frame at the model's input size (S x S uint8, resized exactly as
        :func:`~vosfx.engine.backend.preprocess` does), for stashing: encoding it gives the
        same features as encoding the frame. A pure function of the frame, safe to call on
        the decode thread (``ClipSession.prepare``)."""
        rgb8 = frame.model_input if frame.model_input is not None else frame.rgb8
        rgb8 = model_sized(rgb8, self.backend.image_size)
        return Frame(frame.index, rgb8, frame.pts, frame.time_base, frame.duration)

    # --- anchors (image mode) -------------------------------------------------------------
    def prompt(
        self,
        frame: Frame,
        prompt: Prompt,
        *,
        shot_id: int = 0,
        previous: np.ndarray | None = None,
        features: ImageFeatures | None = None,
        attended: Attended | None = None,
    ) -> ObjectResult:
        """The object's output on ``frame`` for ``prompt``, which becomes its anchor there
        (replacing any earlier one). ``previous``: (s, s) float32 low-res logits the frame had
        (an earlier prompt's output or a tracked output), the dense mask input of a point or
        box prompt, as SAM 2 passes ``prev_sam_mask_logits``; the prompt's own ``prior`` takes
        its place (resampled to the model's size if it was made at another). ``attended``: a
        correction on a frame a pass tracks (:meth:`attend`): the clicks are decoded with
        that pass's memory, already attended, as SAM 2 decodes a correction on a tracked
        frame (``is_init_cond_frame=False``)."""
        if prompt.frame_index != frame.index:
            raise PromptError(
                f"prompt for frame {prompt.frame_index} given with frame {frame.index}"
            )
        if attended is not None and (attended.obj_id, attended.frame_index) != (
            prompt.obj_id,
            frame.index,
        ):
            raise VosfxError(
                f"internal: memory attended for object {attended.obj_id} on frame "
                f"{attended.frame_index}, given with object {prompt.obj_id} on frame "
                f"{frame.index}"
            )
        check_prompt(prompt, self.info.width, self.info.height)
        feats = features if features is not None else self.encode(frame)
        request = None
        if prompt.mask is None:
            w, h = self.info.width, self.info.height
            if prompt.prior is not None:
                previous = fit_logits(prompt.prior, self.backend.image_size // 4)
            request = click_request(self.backend, prompt, feats, previous, w, h)
            if attended is not None:
                request = attended.request(request)
        anchor = decode_prompt(
            self.rules, feats, prompt, request, shot_id=shot_id, is_init_cond=attended is None
        )
        self._anchors.setdefault(prompt.obj_id, {})[frame.index] = anchor
        return anchor.result()

    def anchors(self, obj_id: int) -> list[int]:
        """The object's prompted frames, ascending."""
        return sorted(self._anchors.get(obj_id, {}))

    def set_shot(self, obj_id: int, frame_index: int, shot_id: int) -> None:
        """The shot id of a prompted frame, once the shot detector has reached it."""
        anchor = self._anchors.get(obj_id, {}).get(frame_index)
        if anchor is not None:
            anchor.shot_id = shot_id

    def remove_anchor(self, obj_id: int, frame_index: int) -> None:
        self._anchors.get(obj_id, {}).pop(frame_index, None)

    def remove_object(self, obj_id: int) -> None:
        self._anchors.pop(obj_id, None)
        for pid in [p for p, ps in self._passes.items() if ps.obj_id == obj_id]:
            if self._passes[pid].paths is not None:
                self._passes[pid].paths.close()
            del self._passes[pid]

    # --- passes -------------------------------------------------------------------------
    def start_pass(
        self, obj_id: int, anchor: int, direction: int, *, neighbour: int | None = None
    ) -> int:
        """Open a pass of ``obj_id`` from its anchor on frame ``anchor`` in ``direction``
        (+1 forward, -1 backward), attending that anchor and the anchor on ``neighbour`` (if
        given) as conditioning memory. Returns the pass id for :meth:`step`."""
        if direction not in (1, -1):
            raise VosfxError(f"pass direction: expected +1 or -1, found {direction}")
        known = self._anchors.get(obj_id, {})
        for f in (anchor, neighbour):
            if f is not None and f not in known:
                raise PromptError(f"object {obj_id} has no prompt on frame {f}")
        bank = MemoryBank(self.backend.num_maskmem, self.backend.max_obj_ptrs, self.info.num_frames)
        ps = Pass(
            obj_id,
            anchor,
            direction,
            neighbour,
            self._new_policy(),
            bank,
            anchor,
            self.info.num_frames,
            reprompter=Reprompter() if self.reprompt else None,
        )
        if hasattr(ps.policy, "prune"):
            from vosfx.engine.pathways import HypothesisLogits, PathwayState

            pol = cast(Any, ps.policy)
            ps.paths = PathwayState(pol, HypothesisLogits(self.low_res), self.info.num_frames)
            ps.reprompter = None  # re-prompting picks one mask; SAM2Long keeps several
        # conditioning memory in frame order, as the predictor stores prompts added in order
        for f in sorted(x for x in (anchor, neighbour) if x is not None):
            a = known[f]
            entry = MemoryEntry(
                frame_index=ps.local(f),
                shot_id=a.shot_id,
                is_prompt=True,
                object_score_logit=a.score,
                iou=a.iou,
                quality=a.quality,
            )
            bank.apply(entry, a.memory(self.backend), a.ptr, Decision(store=True, as_cond=True))
        pid = self._next_pass
        self._next_pass += 1
        self._passes[pid] = ps
        return pid

    def step(
        self,
        frame: Frame,
        pass_ids: Sequence[int],
        *,
        shot_id: int = 0,
        features: ImageFeatures | None = None,
    ) -> list[ObjectResult]:
        """Advance every pass in ``pass_ids`` to ``frame`` (the next frame in its direction);
        the image is encoded once for all of them. Returns one result per pass, in order."""
        if not pass_ids:
            return []
        feats = features if features is not None else self.encode(frame)
        passes = [self._passes[pid] for pid in pass_ids]
        for ps in passes:
            if frame.index != ps.last + ps.direction:
                raise VosfxError(
                    f"pass of object {ps.obj_id} from frame {ps.anchor}: "
                    f"expected frame {ps.last + ps.direction}, found {frame.index}"
                )
        for ps in passes:
            ps.last = frame.index
        t = frame.index
        out: list[ObjectResult | None] = [None] * len(passes)
        # the passes of single-hypothesis policies go through memory attention + decoder as
        # one batch, then the memory encoder as one batch (Backend.track_many /
        # encode_memory_many; a SAM2Long pass batches its own pathways in pathways.step)
        plain = [i for i, ps in enumerate(passes) if ps.paths is None]
        for i, ps in enumerate(passes):
            if ps.paths is not None:
                out[i] = self._advance_paths(ps, feats, t, shot_id)
        requests = [passes[i].request(feats, t, shot_id) for i in plain]
        tracked = track_many(self.backend, requests)
        pending = [
            passes[i].observe(self.rules, t, shot_id, req, o)
            for i, req, o in zip(plain, requests, tracked, strict=True)
        ]
        stored = [p for p in pending if p.decision.store]
        maskmems = encode_memory_many(
            self.backend,
            [MemoryRequest(feats, p.low, p.score, p.decision.binarize_memory) for p in stored],
        )
        by_pending = {id(p): m for p, m in zip(stored, maskmems, strict=True)}
        for i, p in zip(plain, pending, strict=True):
            out[i] = passes[i].commit(t, p, by_pending.get(id(p)))
        return cast(list[ObjectResult], out)

    def attend(
        self,
        pass_id: int,
        frame: Frame,
        *,
        shot_id: int = 0,
        features: ImageFeatures | None = None,
        track: bool = True,
    ) -> Attended:
        """The memory pass ``pass_id`` attends on ``frame`` (its next frame), for
        :meth:`prompt`'s ``attended``: memory attention runs here once, so each click of a
        correction on the frame costs the decoder alone; with ``track`` also the mask the pass
        tracks onto the frame (:attr:`Attended.tracked`). The pass does not move."""
        feats = features if features is not None else self.encode(frame)
        ps = self._passes[pass_id]
        return ps.attend(self.rules, feats, frame.index, shot_id, track)

    def snapshot(self, pass_id: int) -> Pass | None:
        """The pass's state as it stands after its last step, for :meth:`resume` (an opaque
        value: the bank's arrays are shared, its tables and the policy's state copied); None
        for a pass with several hypotheses (SAM2Long), whose corrections are refused."""
        ps = self._passes[pass_id]
        return None if ps.paths is not None else ps.copy()

    def resume(self, snapshot: Pass) -> int:
        """Open a pass that continues from ``snapshot`` (:meth:`snapshot`) exactly as the
        pass it was taken from continued; the snapshot stays usable for another resume.
        Returns the pass id for :meth:`step`."""
        pid = self._next_pass
        self._next_pass += 1
        self._passes[pid] = snapshot.copy()
        return pid

    def snapshot_arrays(self, snapshot: Pass) -> list[Any]:
        """The arrays a snapshot holds (its memories and pointers), for the caller's byte
        count: snapshots of one pass share most of them."""
        return snapshot.bank.arrays()

    def end_pass(self, pass_id: int) -> list[ObjectResult]:
        """Close a pass. Returns the frames whose result changed now that the pass is
        complete (SAM2Long reads its masks along the best final lineage), to store in place
        of what :meth:`step` returned; empty for every other policy."""
        ps = self._passes.pop(pass_id, None)
        if ps is None:
            return []
        self._events.setdefault(ps.obj_id, {}).update(ps.events)
        self._promoted.setdefault(ps.obj_id, {}).update(ps.promoted)
        self._peak[ps.obj_id] = max(self._peak.get(ps.obj_id, 0), ps.bank.peak_entries)
        if ps.paths is None:
            return []
        from vosfx.engine.pathways import revised_results

        revised = revised_results(ps, ps.source)
        if revised:
            ps.events[revised[0].frame_index] = (
                f"{len(revised)} frames revised along the best final pathway"
            )
            self._events.setdefault(ps.obj_id, {}).update(ps.events)
        return revised

    def _advance_paths(self, ps: Pass, feats: ImageFeatures, t: int, shot_id: int) -> ObjectResult:
        """A frame of a pass with several hypotheses (SAM2Long): vosfx/engine/pathways.py."""
        from vosfx.engine.pathways import step as path_step
        from vosfx.engine.policies.rcms import frame_quality

        filled, score, iou, quality, pinfo = path_step(
            self, ps, ps.paths, feats, ps.local(t), self.rules.fill, frame_quality
        )
        kept = len(ps.bank) + len(ps.paths.memories)
        ps.bank.peak_entries = max(ps.bank.peak_entries, kept)
        info = {
            "memory": {"entries": kept, "event": "", "pathway": pinfo, "quality": quality},
            "quality": quality,
            "direction": ps.direction,
            "anchor": ps.anchor,
        }
        return ObjectResult(ps.obj_id, t, filled, score, iou, info)

    # --- session ------------------------------------------------------------------------
    @property
    def low_res(self) -> int:
        return self.backend.image_size // 4

    def report(self) -> dict:
        for pid in list(self._passes):
            ps = self._passes[pid]
            self._peak[ps.obj_id] = max(self._peak.get(ps.obj_id, 0), ps.bank.peak_entries)
        out = {}
        for obj_id in sorted(set(self._anchors) | set(self._events) | set(self._peak)):
            out[str(obj_id)] = {
                "policy": self.policy_name,
                "prompted_frames": self.anchors(obj_id),
                "events": {str(k): v for k, v in sorted(self._events.get(obj_id, {}).items())},
                "promoted": {str(k): v for k, v in sorted(self._promoted.get(obj_id, {}).items())},
                "peak_bank_entries": self._peak.get(obj_id, 0),
            }
        return out

    def close(self) -> None:
        self._anchors.clear()
        for ps in self._passes.values():
            if ps.paths is not None:
                ps.paths.close()
        self._passes.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

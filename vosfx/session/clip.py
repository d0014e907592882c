"""The clip session: prompts on any frame for any object, tracked both ways, corrections that
stick, results kept per frame. The CLI's pipeline, the studio, ``vosfx bench`` and the OpenFX
worker all drive this one class.

The rule (docs/session.md), for every object separately, with prompted frames p1 < ... < pk in
the range [start, end):

a. a prompted frame's mask is its prompt's output (never recomputed by tracking);
b. frames before p1 are tracked backwards from p1; frames after pk forwards from pk;
c. a frame t between two prompted frames a < b is tracked from the nearer one: forwards from a
   when t - a <= b - t, else backwards from b; that pass attends both a and b as conditioning
   memory (SAM 2's closest conditioning frame on each side);
d. but where b is a correction (``Prompt.correction``: clicks that edit the mask tracked
   there), the frames between a and b are tracked forwards from a alone, and b's output is
   its clicks decoded with that pass's memory and its mask on b as the dense prompt: SAM 2's
   correction on a frame it has tracked, the same whatever order the prompts came in.

So a prompt changes only the frames between it and its neighbouring prompted frames (and,
through a correction after it, the frames the correction leads to).

How frames are visited: one *sweep* in frame order. When the sweep reaches a prompted frame it
computes that frame's prompts (so a pipeline decodes each frame once for tracking); the
segments that end there are then tracked from the frames stashed since the previous prompted
frame (forwards from the left anchor, backwards from the right one); after an object's last
prompted frame its forward pass steps with the sweep itself. An interactive caller (the
studio) computes a prompt at once instead (:meth:`ClipSession.add_prompt`), and a sweep then
redoes only what a change made stale.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from vosfx.config import MemoryConfig
from vosfx.engine.decoding import check_prompt
from vosfx.errors import ConfigError, InputError, PromptError
from vosfx.policies import MEMORY_POLICIES
from vosfx.session import corrections
from vosfx.session.checkpoints import CHECKPOINT_BYTES, PassCheckpoints
from vosfx.session.features import (
    FEATURE_CACHE_BYTES,
    SWEEP_FEATURE_FRAMES,
    FeatureCache,
    FeatureSpill,
)
from vosfx.session.plan import PassPlan
from vosfx.session.prompts import PromptBook, content_digest, prompt_digest
from vosfx.session.shotlog import ShotLog
from vosfx.session.store import FrameStash, ResultStore, Scratch
from vosfx.types import Frame, MaskResult, ObjectResult, Prompt, VideoInfo

if TYPE_CHECKING:
    from typing_extensions import Self

    from vosfx.session.sweep import Sweep

FrameCallback = Callable[[ObjectResult], None]


class FrameProvider(Protocol):
    """Random access to a clip's frames (the studio's seeking decoder, the OpenFX host)."""

    info: VideoInfo

    def get(self, index: int) -> Frame: ...

    def close(self) -> None: ...


class ClipSession:
    """Prompts, passes and results for one clip (a context manager).

    ``engine``: a loaded :class:`~vosfx.engine.Engine`. ``frames``: a :class:`FrameProvider`
    for random access (None for a pipeline that only sweeps its own frames in order).
    ``start``/``end``: the frame range matted. Results are kept per frame on disk
    (:class:`~vosfx.session.store.ResultStore`); image features of recent frames in an LRU of
    ``feature_cache_bytes`` (of :data:`~vosfx.session.features.SWEEP_FEATURE_FRAMES` frames
    when ``frames`` is None: a sweep reads a frame again only in the same visit or from the
    disk tier); snapshots of the passes tracked, for corrections, within
    ``checkpoint_bytes`` (:class:`~vosfx.session.checkpoints.PassCheckpoints`; none without
    ``frames``). The prompts and which passes they leave stale are kept in a
    :class:`~vosfx.session.prompts.PromptBook`, the frames' shot ids in a
    :class:`~vosfx.session.shotlog.ShotLog`.
    """

    def __init__(
        self,
        engine: Any,
        info: VideoInfo,
        memory: MemoryConfig,
        *,
        frames: FrameProvider | None = None,
        start: int = 0,
        end: int | None = None,
        feature_cache_bytes: int = FEATURE_CACHE_BYTES,
        checkpoint_bytes: int = CHECKPOINT_BYTES,
        detect_shots: bool = False,
    ) -> None:
        self.info = info
        self.start = start
        self.end = info.num_frames if end is None else min(end, info.num_frames)
        if not 0 <= start <= self.end:  # before anything is opened
            raise ConfigError(
                f"start {start}, end {end}: expected 0 <= start <= end, within the clip's "
                f"{info.num_frames} frames"
            )
        self.memory = memory
        self.frames = frames
        self.engine = engine.start(info, memory)
        self._scratch = Scratch()
        self.store = ResultStore(info.num_frames, self.engine.low_res, self._scratch.path)
        self._stash = FrameStash(self._scratch.path)
        self._book = PromptBook(self.start, self.end, backward=memory.track_backward)
        self.needs_shots = MEMORY_POLICIES[memory.policy].needs_shots
        # SAM2Long: a pass's frames are final only when it ends (Tracker.end_pass)
        self.deferred = MEMORY_POLICIES[memory.policy].deferred
        # the shots of the frames (``cuts``, ``shot_id``) are found when the policy needs them
        # or the caller asks (its refiner's temporal filter must not blend across a cut);
        # the engine gets them only for a policy that needs them
        self._shots = ShotLog(memory, self.start, frames, enabled=self.needs_shots or detect_shots)
        self.stats = {
            "encoded": 0,
            "feature_hits": 0,
            "stepped": 0,
            "warmed": 0,
            "spilled": 0,
            "spill_hits": 0,
            "replayed": 0,
            "resumed": 0,
        }
        # snapshots of the passes every few frames, so a correction replays a few frames
        # (session/checkpoints.py); a session without frame access takes no corrections
        keeps = frames is not None and hasattr(self.engine, "snapshot")
        self._checkpoints = PassCheckpoints(self.engine, checkpoint_bytes if keeps else 0)
        # per object, its latest correction's key and the memory its pass attends on the
        # frame, with its mask there (session/corrections.py): the same correction edited
        # again is decoded from it, the decoder alone
        self.correction_bases: dict[int, tuple[Any, Any]] = {}
        self._adopted_report: dict = {}  # the engine report of results adopted (adopt())
        # features a later segment reads again go to disk (session/features.py FeatureSpill)
        self._spill = FeatureSpill(self._scratch.path)
        self.features = FeatureCache(
            self.engine,
            feature_cache_bytes,
            self.stats,
            self._spill,
            max_frames=SWEEP_FEATURE_FRAMES if frames is None else None,
        )

    # --- prompts ------------------------------------------------------------------------
    @property
    def obj_ids(self) -> tuple[int, ...]:
        return self._book.obj_ids

    def prompts(self) -> list[Prompt]:
        return self._book.prompts()

    def prompted_frames(self, obj_id: int) -> list[int]:
        return self._book.prompted_frames(obj_id)

    def holds(self, info: VideoInfo, memory: MemoryConfig, prompts, start: int, end: int) -> bool:
        """Whether this session mattes a clip of ``info``'s size and length with ``memory``,
        its prompts exactly ``prompts`` over the frames [``start``, ``end``): a render of them
        may then take what it has tracked (:func:`vosfx.pipeline.run`'s ``session``)."""
        here = (self.info.width, self.info.height, self.info.num_frames, self.memory)
        there = (info.width, info.height, info.num_frames, memory)
        mine = sorted(content_digest(p) for p in self.prompts())
        theirs = sorted(content_digest(p) for p in prompts)
        return here == there and (self.start, self.end) == (start, end) and mine == theirs

    def adopt(self, results: Iterable[tuple[ObjectResult, bool]], report: dict) -> None:
        """Take results computed elsewhere for exactly this session's prompts (the studio's,
        handed to a render of the same job: :mod:`vosfx.pipeline.handoff`, whose key the
        caller has checked), each with whether it is its prompt's output: stored, every
        prompt counted as computed and every pass of the plan as done, so a sweep tracks
        nothing. ``report``: the engine's report of the session that computed them (what
        :meth:`report` gives, with this engine's own)."""
        for res, prompted in results:
            self.store.put(res, prompted=prompted)
        self._book.all_computed()
        self._adopted_report = dict(report)

    def set_prompts(self, prompts: Iterable[Prompt]) -> None:
        """Prompts computed when a sweep reaches their frames (a pipeline's: no frame is
        decoded out of order). Later prompts for the same object and frame replace earlier.
        Each is checked now (PromptError), not when the sweep reaches its frame."""
        prompts = list(prompts)
        for p in prompts:
            self._check(p)
        self._book.defer(prompts)

    def prepare_correction(self, obj_id: int, frame_index: int) -> bool:
        """Make now what a correction of ``obj_id`` on ``frame_index`` (``Prompt.correction``)
        would start from: memory attention of the pass forwards from the object's previous
        prompted frame, on this frame, and the mask it tracks there, so that the correction's
        clicks, when they come, cost the decoder alone (the OpenFX worker calls it while the
        host is idle on a frame). Brings the pass to the frame before from its nearest
        snapshot (reading the frames it replays). False, and nothing done, where a click
        there would not be a correction (no prompt of the object before the frame) or the
        object is prompted on that frame already."""
        if self.frames is None:
            raise PromptError("prepare_correction needs frame access (ClipSession(frames=...))")
        self._check_frame(frame_index)
        return corrections.prepare(self, obj_id, frame_index)

    def add_prompt(self, prompt: Prompt, *, refine: bool = True) -> MaskResult:
        """Set ``prompt`` (the object's whole prompt on that frame) and compute that frame's
        output at once; returns the frame's result for every object.

        ``refine``: a point or box prompt on a frame that already has an output uses it as
        SAM 2 does. On a frame that an up-to-date pass tracked (a correction), the clicks are
        decoded with that pass's memory attended and the tracked mask as the dense prompt
        (the pass is resumed from its snapshot nearest before the frame, or replayed from its
        prompted frame where it has none: exact either way, :mod:`vosfx.session.checkpoints`);
        on a frame with an earlier click's output, that output is the dense prompt (image
        mode). False: the clicks alone, in image mode."""
        if self.frames is None:
            raise PromptError("this session has no frame access; use set_prompts")
        self._check(prompt)
        t, obj = prompt.frame_index, prompt.obj_id
        if prompt.correction:  # rule d, whatever ``refine`` says
            corrections.compute(self, self.frames.get(t), prompt)
            self._book.put(prompt)
            return self.result(t)
        previous, tracked_by = None, None
        if refine and prompt.mask is None:
            old = self.store.get(obj, t)
            previous = None if old is None else old.logits
            if old is not None and not self.store.is_prompted(obj, t):
                tracked_by = self._book.covering(obj, t)
        if tracked_by is not None and self.deferred:
            # refused now, not after replaying the pass up to the frame (the engine refuses
            # too: Pass.attend), which SAM2Long's passes, without snapshots, would do from
            # their prompted frame: minutes on a CPU for a frame a few hundred frames on
            raise PromptError(
                f"[memory] policy {self.memory.policy}: a correction on a tracked frame "
                f"(frame {t}) is not supported yet; prompt the frame before tracking it, "
                "or use another policy"
            )
        frame = self.frames.get(t)
        if tracked_by is None:
            self._compute_prompt(frame, prompt, previous)
        else:
            corrections.correct(self, frame, prompt, tracked_by, previous)
        self._book.put(prompt)
        return self.result(t)

    def _check(self, prompt: Prompt) -> None:
        """PromptError unless ``prompt`` is in the range and well formed for this clip."""
        self._book.check(prompt)
        check_prompt(prompt, self.info.width, self.info.height)
        if prompt.correction and self.deferred:
            raise PromptError(
                f"[memory] policy {self.memory.policy}: a correction (frame "
                f"{prompt.frame_index}, object {prompt.obj_id}) is not supported yet; use "
                "another policy"
            )

    def remove_prompt(self, obj_id: int, frame_index: int) -> None:
        """Drop the object's prompt on ``frame_index``; the object disappears with its last."""
        self._book.remove(obj_id, frame_index)
        self.engine.remove_anchor(obj_id, frame_index)
        self.store.clear(obj_id, range(frame_index, frame_index + 1))
        self._book.bump(obj_id, frame_index)
        if not self._book.prompted_frames(obj_id):
            self.delete_object(obj_id)

    def delete_object(self, obj_id: int) -> None:
        self._book.drop(obj_id)
        self.correction_bases.pop(obj_id, None)
        self._checkpoints.keep_only(self._book.state_key(pl) for pl in self._book.plan())
        self.engine.remove_object(obj_id)
        self.store.drop(obj_id)

    def _compute_prompt(
        self,
        frame: Frame,
        prompt: Prompt,
        previous: np.ndarray | None,
        attended: Any = None,
    ) -> None:
        """The prompt's output (``previous``: the decoder's dense input; ``attended``: the
        memory a pass attends on the frame, which a correction is decoded with), stored."""
        res = self.engine.prompt(
            frame,
            prompt,
            shot_id=self.engine_shot(frame.index),
            previous=previous,
            features=self.features.get(frame),
            attended=attended,
        )
        self.store.put(res, prompted=True)
        # computed from the prompt alone, its output is known by its content (an edit undone
        # gets its version back, PromptBook.computed)
        alone = previous is None and attended is None
        digest = prompt_digest(prompt, self.engine_shot(frame.index)) if alone else None
        self._book.computed(prompt.obj_id, frame.index, digest)

    # --- plans --------------------------------------------------------------------------
    def plan(self) -> list[PassPlan]:
        """Every pass of the rule for the current prompts."""
        return self._book.plan()

    def stale(self) -> list[PassPlan]:
        """The passes whose results are missing or out of date."""
        return self._book.stale()

    def resume_point(self, pl: PassPlan) -> tuple[int, Any]:
        """Where a sweep starts stepping the stale pass ``pl``: ``(its first frame, None)``,
        or, for a forward pass attending its anchor alone that a sweep stopped part-way (a
        cancelled track, the OpenFX worker's sweep closed on a prompt change), ``(the frame
        after its snapshot nearest the last frame it computed, that snapshot)``, so it goes
        on from there instead of tracking every frame again from its prompt (the same state
        bit for bit, :mod:`vosfx.session.checkpoints`)."""
        if pl.is_tail:
            done = self._book.done_through(pl)
            found = self._checkpoints.latest(self._book.state_key(pl), 1, done + 1)
            if found is not None and found[0] >= pl.frames.start:
                return found[0] + 1, found[1]
        return pl.frames.start, None

    def first_to_step(self, stale: Iterable[PassPlan]) -> dict[PassPlan, int]:
        """Per stale pass, the first frame a sweep steps (:meth:`resume_point`)."""
        return {pl: self.resume_point(pl)[0] for pl in stale}

    def pending_frames(self) -> list[int]:
        """Frames with prompts a sweep still has to compute (set by :meth:`set_prompts`, or
        corrections to compute again), ascending; after :meth:`stale`."""
        return sorted(t for t, ps in self._book.pending.items() if ps)

    # --- tracking -----------------------------------------------------------------------
    def track(
        self,
        *,
        on_frame: FrameCallback | None = None,
        cancel: threading.Event | None = None,
        until: int | None = None,
    ) -> int:
        """Compute every stale pass, reading frames from the provider; returns the number of
        frames stepped. ``on_frame`` gets each result as it is stored. ``until``: only what
        frames up to that one need (:func:`~vosfx.session.sweep.span`; a later track goes on
        from there)."""
        from vosfx.session.sweep import span

        if self.frames is None:
            raise PromptError("this session has no frame access; sweep its frames instead")
        visit = span(self, until)
        if not visit:
            return 0
        frames = (self.frames.get(t) for t in visit)
        before = self.stats["stepped"]
        for _ in self.sweep(frames, on_frame=on_frame, cancel=cancel):
            pass
        return self.stats["stepped"] - before

    def sweep(
        self,
        frames: Iterable[Frame],
        *,
        on_frame: FrameCallback | None = None,
        cancel: threading.Event | None = None,
        keep: bool = True,
    ) -> Iterator[Frame]:
        """Visit ``frames`` in order (consecutive indices) with one sweep, yielding
        each frame when its work is done."""
        with self.open_sweep(on_frame=on_frame, cancel=cancel) as sw:
            for frame in frames:
                sw.visit(frame, keep=keep)
                yield frame

    def open_sweep(
        self, *, on_frame: FrameCallback | None = None, cancel: threading.Event | None = None
    ) -> Sweep:
        """A :class:`~vosfx.session.sweep.Sweep` over the work stale now (a context
        manager)."""
        from vosfx.session.sweep import Sweep

        return Sweep(self, on_frame, cancel)

    def split_point(self) -> int:
        """The first frame from which a sweep only streams forwards: every frame before it
        needs work done when the sweep reaches a later prompted frame (a segment or the lead
        in), so a pipeline tracks up to here first, then writes. With a deferred policy
        (SAM2Long) that is the range's end: no frame is final before its pass ends."""
        if self.deferred and self.stale():
            return self.end
        return max([pl.due + 1 for pl in self.stale() if not pl.is_tail], default=self.start)

    def _end_pass(self, pid: int, on_frame: FrameCallback | None, keep: bool) -> None:
        """End a pass and store the frames it revised (a deferred policy's final masks)."""
        for res in self.engine.end_pass(pid) or ():
            self._put(res, on_frame, keep)

    def _put(self, res: ObjectResult, on_frame: FrameCallback | None, keep: bool) -> None:
        if keep:
            self.store.put(res)
        if on_frame is not None:
            on_frame(res)

    # --- shots and features -------------------------------------------------------------
    @property
    def cuts(self) -> list[int]:
        """Frames inside the range where a new shot starts, as the sweeps so far found them."""
        return self._shots.cuts

    def shot_id(self, frame_index: int) -> int:
        """The frame's shot as found so far (0 without detection)."""
        return self._shots.shot_id(frame_index)

    def engine_shot(self, frame_index: int) -> int:
        """The shot id the engine gets: the frame's for a policy that needs shots, else 0
        (shots found for the caller's refiner alone never change the tracking)."""
        return self._shots.shot_id(frame_index) if self.needs_shots else 0

    def warm(self, frame: Frame) -> bool:
        """Encode ``frame``'s image features ahead of a prompt on it: the studio calls it from
        a background thread for the frame the user stays on, so the first click there costs
        the decoder, not the image encoder (:meth:`FeatureCache.warm`: safe beside prompts and
        sweeps on other threads; a prompt on that frame waits for it, an encode of another
        frame interrupts it). False when nothing was added."""
        return self.features.warm(frame)

    def has_features(self, frame_index: int) -> bool:
        return self.features.has(frame_index)

    def prepare(self, frame: Frame) -> Frame:
        """``frame`` with its model input attached (:attr:`Frame.model_input`: the engine's
        resize to its input size), for a frame source to run on its decode thread
        (``open_source(..., prepare=session.prepare)``), so that the resize overlaps the
        model's work instead of adding to it. Touches no session state."""
        if frame.model_input is not None:
            return frame
        return replace(frame, model_input=self.engine.model_input(frame).image)

    # --- results ------------------------------------------------------------------------
    def result(self, frame_index: int) -> MaskResult:
        """The frame's masks for every object (objects without a result there have score
        -1024 and empty logits). InputError for a frame outside the clip."""
        self._check_frame(frame_index)
        ids = self.obj_ids
        low = self.engine.low_res
        logits = np.full((len(ids), low, low), -1024.0, np.float32)
        scores = np.full(len(ids), -1024.0, np.float32)
        ious = np.zeros(len(ids), np.float32)
        info: dict = {"memory": {}, "quality": {}}
        for i, obj in enumerate(ids):
            r = self.store.get(obj, frame_index)
            if r is None:
                continue
            logits[i], scores[i], ious[i] = r.logits, r.object_score_logit, r.iou
            if r.info.get("memory"):
                info["memory"][obj] = dict(r.info["memory"])
            if r.info.get("quality") is not None:
                info["quality"][obj] = r.info["quality"]
        return MaskResult(frame_index, ids, logits, scores, ious, info)

    def has_result(self, frame_index: int) -> bool:
        self._check_frame(frame_index)
        return any(self.store.has(o, frame_index) for o in self.obj_ids)

    def _check_frame(self, frame_index: int) -> None:
        # the store's per-frame arrays would read -1 as the last frame, 10 as an IndexError
        if not 0 <= frame_index < self.info.num_frames:
            raise InputError(
                f"frame {frame_index} is outside the clip (0..{self.info.num_frames - 1})"
            )

    def report(self) -> dict:
        return {**self._adopted_report, **self.engine.report()}

    def close(self) -> None:
        self._checkpoints.clear()
        self.correction_bases.clear()
        self.engine.close()
        self.store.close()
        self._stash.close()
        self._spill.close()
        self.features.clear()
        self._scratch.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["ClipSession", "FrameProvider"]

"""One clip's studio: the engine session and its two decoders, finishing, what the page reads
(state, timeline) and the viewer's frames; the prompts as the user made them with undo/redo
(:mod:`.prompts`) and tracking, render and the job (:mod:`.tasks`) are its parts, mixed in.

Threads: the server calls in from its worker threads. ``_lock`` guards the session's prompts
(a click, undo, delete); tracking and render run on one worker thread (:mod:`.work`) that a
click, Stop, a closed page or Ctrl-C cancels first. Results are read while tracking runs: the
session's result store is written row by row and a read sees a frame before or after.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from vosfx.config import JobConfig, RefineConfig, build_config, merge_dicts
from vosfx.errors import ConfigError, PromptError, VosfxError
from vosfx.studio import autosave
from vosfx.studio.jobfile import (
    default_job_path,
    default_outputs,
    format_exts,
    format_ids,
    output_presets,
    save_job,
    saved_job_for,
)
from vosfx.studio.prompts import FramePrompt, PromptsMixin, StudioObject
from vosfx.studio.tasks import TasksMixin
from vosfx.studio.timeline import colour, timeline
from vosfx.studio.warm import WARM_DELAY_S, Warmer
from vosfx.studio.work import Emit, Worker
from vosfx.types import FrameNumbers

__all__ = ["FramePrompt", "Studio", "StudioObject", "new_workdir"]

log = logging.getLogger(__name__)
new_workdir = autosave.new_workdir


class Studio(PromptsMixin, TasksMixin):
    """A clip open in the studio (a context manager).

    ``clip``: any input ``vosfx matte`` accepts. ``engine``: the loaded engine (one per
    studio). ``config``: the effective JobConfig (presets already applied) and ``presets``
    their names, so a saved job names them. ``start``/``end``: the frames matted.
    ``workdir``: this studio's folder (:func:`new_workdir`: under vosfx's cache), where its
    session is kept as a job as it changes (:mod:`vosfx.studio.autosave`), with the dropped
    masks and corrections' priors; removed on close, the job kept beside it when not saved.
    ``cache_bytes``: the byte budget shared by decoded frames and image features.
    ``warm_delay_s``: the frame the page stays on this long gets its image features made
    before a click (:mod:`vosfx.studio.warm`); None turns that off. ``output``: the output the
    page proposes (a reopened job's own), else ``vosfx matte``'s default for the format.
    """

    def __init__(
        self,
        clip: str,
        *,
        engine: Any,
        config: JobConfig,
        presets: tuple[str, ...] = (),
        start: int = 0,
        end: int | None = None,
        fps: float | None = None,
        workdir: Path,
        cache_bytes: int = 768 << 20,
        emit: Emit | None = None,
        warm_delay_s: float | None = WARM_DELAY_S,
        output: str | None = None,
        job_path: str | None = None,
    ) -> None:
        from vosfx.session import ClipSession
        from vosfx.session.checkpoints import CHECKPOINT_BYTES
        from vosfx.session.frames import SourceFrames

        self.clip = autosave.clip_name(clip)
        self.engine, self.config, self.presets, self.fps = engine, config, presets, fps
        self.workdir, self.output, self.job_path = workdir, output, job_path
        self.masks_dir = workdir / autosave.MASKS  # the prompts' files, beside the kept job
        self.masks_dir.mkdir(parents=True, exist_ok=True)
        self._revision = self._saved_revision = 0  # changes made / as of the last save
        self._autosave_lock = threading.Lock()
        self.recovered_job: Path | None = None  # where close() kept an unsaved session
        self.emit: Emit = emit or (lambda _ev: None)
        # two decoders: the track worker walks its own, the viewer seeks in the other
        self.track_frames = SourceFrames(self.clip, fps=fps, cache_bytes=cache_bytes // 4)
        self.view_frames = SourceFrames(self.clip, fps=fps, cache_bytes=cache_bytes // 4)
        self.info = self.view_frames.info
        end = self.info.num_frames if end is None else min(end, self.info.num_frames)
        if not 0 <= start < end:
            self.track_frames.close()
            self.view_frames.close()
            raise ConfigError(
                f"--start {start} / --end {end}: expected a range inside the "
                f"clip's {self.info.num_frames} frames"
            )
        self.start, self.end = start, end
        self.session = ClipSession(
            engine,
            self.info,
            config.memory,
            frames=self.track_frames,
            start=start,
            end=end,
            feature_cache_bytes=cache_bytes // 2,
            # every click is computed from its prompt alone (refine=False, studio/prompts.py),
            # never as a correction from a pass's memory; the passes' snapshots are kept so
            # that a track stopped part-way, or a tail whose prompt after it was removed, goes
            # on from where it was (ClipSession.resume_point), not from its prompt
            checkpoint_bytes=CHECKPOINT_BYTES,
            # the refiner's temporal filter stops at cuts as the render's does, whatever
            # the policy (and the [refine] options change without a new session)
            detect_shots=True,
        )
        # the refinement's compiled loops (the masks drawn for a click use them too: ~0.8 s
        # to load, ~4 s to compile the first time on a machine) load while the page opens,
        # on their own thread, so the first click does not wait for them
        from vosfx.matte import kernels

        kernels.warm_up()
        self.objects: dict[int, StudioObject] = {}
        self.edits: dict[tuple[int, int], FramePrompt] = {}  # (obj, frame) -> prompt
        self._undo: list[tuple[int, int, FramePrompt | None, FramePrompt | None]] = []
        self._redo: list[tuple[int, int, FramePrompt | None, FramePrompt | None]] = []
        self._redo_cleared: list[tuple[int, int, FramePrompt | None, FramePrompt | None]] = []
        self._lock = threading.RLock()
        self._objects_lock = threading.Lock()  # self.objects' ids (PromptsMixin.add_object)
        self.worker = Worker(lambda ev: self.emit(ev))
        self.view_lock = threading.Lock()  # the viewer's decoder: one reader at a time
        self.warmer: Warmer | None = None
        if warm_delay_s is not None:
            self.warmer = Warmer(
                self.session,
                self._viewed_frame,
                lambda: self.worker.busy,
                delay_s=warm_delay_s,
                emit=lambda ev: self.emit(ev),
            )
        self.last_render: dict | None = None
        self._mask_seq = 0
        self._plan_read: tuple[dict, int] = ({}, 0)  # plan_state()'s last reading

    # --- finishing ------------------------------------------------------------------------
    def set_refine(self, values: dict[str, Any]) -> RefineConfig:
        """Change finishing options (``[refine]`` keys); validated like a preset."""
        config = build_config(merge_dicts(self.config.to_dict(), {"refine": dict(values)}))
        changed = config.refine != self.config.refine
        self.config = replace(self.config, refine=config.refine)
        if changed:
            self.changed()
        return self.config.refine

    # --- the session kept on disk (vosfx.studio.autosave) ----------------------------------
    def changed(self) -> None:
        """The prompts or the finishing changed: write the session as a job in the studio's
        folder (nothing there once it has no prompt). A failure to write is logged, never the
        user's action's failure."""
        with self._autosave_lock:
            self._revision += 1
            path = self.workdir / autosave.JOB
            try:
                if not self.edits:
                    path.unlink(missing_ok=True)
                    return
                output = self.output or default_outputs(self.clip)[self.config.output.format]
                save_job(self.job(output), path)
            except (OSError, VosfxError):
                log.warning("the studio's session could not be kept in %s", path, exc_info=True)

    def mark_saved(self) -> None:
        """The session was saved as a job (Save job, Done): nothing to keep at close."""
        self._saved_revision = self._revision

    @property
    def unsaved(self) -> bool:
        """Prompts changed since the session was opened or last saved."""
        return bool(self.edits) and self._revision != self._saved_revision

    def recovery_offer(self) -> dict | None:
        """The newest job kept for this clip by a studio that ended unsaved, as the page
        offers it (:func:`~vosfx.studio.autosave.summary`), while this one has no prompt."""
        if self.edits:
            return None
        try:
            found = autosave.recovered_for(self.clip, self.workdir.parent)
            return autosave.summary(found[0]) if found else None
        except (OSError, ValueError):
            return None

    def saved_offer(self) -> dict | None:
        """The job Save job proposes beside the clip, where one saved from this clip is
        there, while this studio has no prompt and was opened on no job: the page offers to
        open it (the next day's ``vosfx studio clip.mp4`` finds yesterday's work)."""
        if self.edits or self.job_path is not None:
            return None
        try:
            path = saved_job_for(self.clip)
            return autosave.summary(path) if path is not None else None
        except (OSError, ValueError):
            return None

    def recover(self, path: str, op: str = "restore") -> None:
        """``restore``: put the prompts, finishing and output settings of the kept job
        ``path`` (:meth:`recovery_offer`'s) into this studio, which has no prompt yet, and
        remove it (its files are this studio's now; unsaved until saved); ``discard``: only
        remove it; ``open``: the same from the job saved beside the clip
        (:meth:`saved_offer`'s), which stays, Save job writing it again in place."""
        from vosfx.job import load_job_file
        from vosfx.pipeline import resolve_prompts

        job_path = Path(path)
        if op == "open":
            offer = self.saved_offer()
            if offer is None or offer["path"] != str(job_path):
                raise ConfigError(f"path: {path} is not the job saved beside this clip")
        elif job_path not in autosave.recovered_for(self.clip, self.workdir.parent):
            raise ConfigError(f"path: {path} is not a session kept for this clip")
        if op == "discard":
            autosave.discard(job_path)
            return
        if self.edits:
            raise PromptError(
                "a job opens into a studio without prompts, and this one has some; open it "
                f"on its own: vosfx studio --job {path}"
            )
        job = load_job_file(job_path)
        # every prompt checked before any is set (a range the job had, not this studio)
        resolve_prompts(
            job.prompts, self.info, fit=job.fit, objects=job.objects, start=self.start, end=self.end
        )
        self.stop()
        with self._lock:
            self.restore(job)
            self.config = replace(self.config, refine=job.config.refine, output=job.config.output)
            # undoable, prompt by prompt, as if clicked here (a wrong session taken back)
            self._undo = [(obj, t, None, fp) for (obj, t), fp in sorted(self.edits.items())]
            self._redo = []
        if op == "open":
            self.job_path, self.output = str(job_path), job.output
        else:
            autosave.discard(job_path)
            self.changed()

    # --- what the page reads --------------------------------------------------------------
    def plan_state(self) -> tuple[dict, int]:
        """The engine's report and how many passes are stale. Both change while a track or
        a render runs (its sweep on the worker thread, which holds ``_lock``), so they are
        read only while none does; meanwhile the last reading is given (the timeline asks
        every 250 ms during a track: read then, the session's plan and the engine's tables
        could change size under it)."""
        if self._lock.acquire(blocking=False):
            try:
                self.read_plan()
            finally:
                self._lock.release()
        return self._plan_read

    def read_plan(self) -> None:
        """Take :meth:`plan_state`'s reading now (holding ``_lock``: before a track or render
        starts, so that what the timeline gives meanwhile is the work it has to do)."""
        self._plan_read = (self.session.report(), len(self.session.stale()))

    def timeline(self) -> dict:
        """What the page's timeline shows (:func:`vosfx.studio.timeline.timeline`)."""
        return timeline(self)

    def state(self) -> dict:
        """What the page loads: the clip, its frame range and rate, the objects and prompts,
        the finishing and output settings, the work running and the last render, and what
        the user must know of how the model runs (:attr:`vosfx.engine.Engine.warnings`)."""
        info = self.info
        defaults = default_outputs(self.clip)
        return {
            "clip": self.clip,
            "name": Path(self.clip).name,
            "width": info.width,
            "height": info.height,
            "num_frames": info.num_frames,
            "fps": float(info.fps) if info.fps else None,
            # how the page names a frame besides its position: the source's timecode of
            # frame 0 (moved by the position; "": counted from 00:00:00:00), and a numbered
            # sequence's file names
            "timecode": info.timecode,
            "files": file_runs(info.frame_numbers),
            "start": self.start,
            "end": self.end,
            "objects": [
                {"obj_id": o.obj_id, "name": o.name, "colour": colour(o.obj_id)}
                for o in self.objects.values()
            ],
            **self.prompt_state(),
            "refine": self.config.refine.__dict__,
            "format": self.config.output.format,
            # the Render panel's output: a reopened job's own, else `vosfx matte`'s default
            # for the format (which the page follows as the format changes)
            "output": self.output or defaults[self.config.output.format],
            "default_outputs": defaults,
            # the Render panel's [output] options
            "each_object": self.config.output.objects == "each",
            "alpha_mode": self.config.output.alpha_mode,
            # Save job's path: a reopened job's own file (saved again in place), else a new
            # name beside the clip
            "job_path": self.job_path or str(default_job_path(self.clip)),
            "formats": format_ids(),
            "format_ext": format_exts(),
            "output_presets": output_presets(),
            "presets": list(self.presets),
            # a session kept for this clip by a studio that ended unsaved (Restore, Discard)
            "recovered": self.recovery_offer(),
            # the job saved beside the clip (Open), while this studio has no prompt
            "saved_job": self.saved_offer(),
            "busy": self.busy,
            "last_render": self.last_render,
            "warnings": list(self.engine.warnings),
        }

    # --- the viewer ------------------------------------------------------------------------
    def viewed(self, index: int) -> None:
        """The page shows frame ``index`` now (its features are made if it stays there)."""
        if self.warmer is not None:
            self.warmer.viewed(index)

    def _viewed_frame(self, index: int):
        with self.view_lock:
            return self.view_frames.get(index)

    def close(self) -> None:
        self.stop()
        if self.warmer is not None:
            self.warmer.close()
        self.session.close()
        self.track_frames.close()
        self.view_frames.close()
        if self.unsaved:
            try:
                self.recovered_job = autosave.keep(self.workdir)
            except OSError:
                log.warning("the unsaved session was not kept", exc_info=True)
        autosave.release(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Studio:  # noqa: PYI034 (typing_extensions is not a dependency)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_runs(numbers: FrameNumbers | None) -> dict | None:
    """A numbered sequence's file names as the page spells them, compactly (a two-hour plate
    is one run, not 172,800 numbers): ``runs`` of ``[first position, its number, count]``
    with consecutive numbers, and the names around the number."""
    if numbers is None:
        return None
    runs: list[list[int]] = []
    for i, n in enumerate(numbers.numbers):
        if runs and n == runs[-1][1] + runs[-1][2] and i == runs[-1][0] + runs[-1][2]:
            runs[-1][2] += 1
        else:
            runs.append([i, n, 1])
    return {
        "runs": runs,
        "prefix": numbers.prefix,
        "suffix": numbers.suffix,
        "padding": numbers.padding,
    }

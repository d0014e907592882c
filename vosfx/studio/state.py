"""One clip's studio: the engine session and its two decoders, finishing, what the page reads
(state, timeline) and the viewer's frames; the prompts as the user made them with undo/redo
(:mod:`.prompts`) and tracking, render and the job (:mod:`.tasks`) are its parts, mixed in.

Threads: the server calls in from its worker threads. ``_lock`` guards the session's prompts
(a click, undo, delete); tracking and render run on one worker thread (:mod:`.work`) that a
click, Stop, a closed page or Ctrl-C cancels first. Results are read while tracking runs: the
session's result store is written row by row and a read sees a frame before or after.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from vosfx.config import JobConfig, RefineConfig, build_config, merge_dicts
from vosfx.errors import ConfigError
from vosfx.job import beside_input
from vosfx.studio.jobfile import default_outputs, format_exts, format_ids, output_presets
from vosfx.studio.prompts import FramePrompt, PromptsMixin, StudioObject
from vosfx.studio.tasks import TasksMixin
from vosfx.studio.timeline import colour, timeline
from vosfx.studio.warm import WARM_DELAY_S, Warmer
from vosfx.studio.work import Emit, Worker

__all__ = ["FramePrompt", "Studio", "StudioObject", "new_workdir"]


class Studio(PromptsMixin, TasksMixin):
    """A clip open in the studio (a context manager).

    ``clip``: any input ``vosfx matte`` accepts. ``engine``: the loaded engine (one per
    studio). ``config``: the effective JobConfig (presets already applied) and ``presets``
    their names, so a saved job names them. ``start``/``end``: the frames matted.
    ``workdir``: this studio's folder under vosfx's cache (dropped masks); removed on close.
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

        self.clip = str(Path(clip).resolve()) if "%" not in clip else clip
        self.engine, self.config, self.presets, self.fps = engine, config, presets, fps
        self.workdir, self.output, self.job_path = workdir, output, job_path
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
        self.config = replace(self.config, refine=config.refine)
        return self.config.refine

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
            # Save job's path: a reopened job's own file (saved again in place), else a new
            # name beside the clip
            "job_path": self.job_path or beside_input(self.clip, "_vosfx_job.json"),
            "formats": format_ids(),
            "format_ext": format_exts(),
            "output_presets": output_presets(),
            "presets": list(self.presets),
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
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Studio:  # noqa: PYI034 (typing_extensions is not a dependency)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_workdir() -> Path:
    """This studio's folder under vosfx's cache (``$VOSFX_HOME`` or the user cache dir)."""
    from vosfx.models.cache import home

    path = home() / "studio" / uuid.uuid4().hex[:12]
    path.mkdir(parents=True, exist_ok=True)
    return path

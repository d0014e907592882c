"""The studio's work on its one worker thread (:mod:`.work`): tracking the stale passes and
rendering the session as a job, and that job (what a render runs and a saved job holds).

A track holds the studio's lock (``_lock``, the prompts') for its whole run, and a click, a
delete or a new track or render cancels the running one first (:meth:`TasksMixin.stop`). A
render runs :func:`vosfx.pipeline.run` with the studio's loaded engine, the one loop.
Progress, the end and the written paths come as events through the studio's ``emit``.

:class:`TasksMixin` is that part of :class:`~vosfx.studio.state.Studio`; the studio makes the
state it reads (the engine, the session, the worker) in its constructor.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vosfx.config import JobConfig
from vosfx.errors import ConfigError, OutputError, PromptError
from vosfx.job import Job, PromptSpec
from vosfx.studio.jobfile import job_config, save_job
from vosfx.studio.prompts import FramePrompt, StudioObject
from vosfx.studio.work import Emit, Worker
from vosfx.types import ObjectResult

if TYPE_CHECKING:
    from vosfx.session import ClipSession

log = logging.getLogger(__name__)


class TasksMixin:
    """Track, render and the job of a :class:`~vosfx.studio.state.Studio`."""

    # made by Studio.__init__ (see there)
    clip: str
    engine: Any
    config: JobConfig
    presets: tuple[str, ...]
    fps: float | None
    start: int
    end: int
    session: ClipSession
    edits: dict[tuple[int, int], FramePrompt]
    objects: dict[int, StudioObject]
    emit: Emit
    worker: Worker
    last_render: dict | None
    _lock: threading.RLock

    if TYPE_CHECKING:

        def read_plan(self) -> None: ...  # Studio's: the timeline's reading of the plan

        def mark_saved(self) -> None: ...  # Studio's: nothing to keep for recovery

    # --- tracking -------------------------------------------------------------------------
    def track(self, until: int | None = None) -> int:
        """Start tracking every stale pass on the worker thread (``until``: what frames up to
        that one need, "Track to here"; Track goes on from there); returns the frames to
        do."""
        from vosfx.session.sweep import span

        if until is not None and not self.start <= until < self.end:
            raise ConfigError(
                f"until: frame {until} is outside the frames being matted "
                f"({self.start}..{self.end - 1})"
            )
        self.stop()
        with self._lock:
            firsts = self.session.first_to_step(self.session.stale())
            stop = span(self.session, until).stop
            total = sum(max(0, min(pl.frames.stop, stop) - first) for pl, first in firsts.items())
            self.read_plan()
        done = [0]

        def on_frame(res: ObjectResult) -> None:
            done[0] += 1
            self.emit(
                {
                    "event": "frame",
                    "frame": res.frame_index,
                    "obj_id": res.obj_id,
                    "present": res.object_score_logit > 0,
                    "done": done[0],
                    "total": total,
                }
            )

        def body(cancel: threading.Event) -> None:
            t0 = time.perf_counter()
            with self._lock:
                stepped = self.session.track(on_frame=on_frame, cancel=cancel, until=until)
            self.emit(
                {
                    "event": "tracked",
                    "frames": stepped,
                    "seconds": round(time.perf_counter() - t0, 3),
                }
            )

        self.worker.start("track", body)
        return total

    def stop(self) -> None:
        """Cancel the running track or render and wait for it."""
        self.worker.stop()

    @property
    def busy(self) -> str | None:
        """ "track", "render" or None."""
        return self.worker.busy

    # --- the job ----------------------------------------------------------------------------
    def specs(self) -> tuple[PromptSpec, ...]:
        """Every prompt as the job JSON spells it, by object and frame (a copy of the prompts
        taken at once: the session is kept on disk from the thread a finishing change comes
        on, while a click may change them)."""
        return tuple(fp.spec(frame, obj) for (obj, frame), fp in sorted(dict(self.edits).items()))

    def job(
        self,
        output: str,
        *,
        formats: tuple[str, ...] | None = None,
        start: int | None = None,
        end: int | None = None,
        overwrite: bool = False,
        preset: str | None = None,
        output_options: dict | None = None,
    ) -> Job:
        """The session as a :class:`Job`: what a render runs and what a saved job holds.
        ``preset``: an output preset (:func:`~vosfx.studio.jobfile.output_presets`) whose
        ``[output]`` section applies first; ``output_options`` (``[output]`` keys: one output
        per object, the alpha mode) and ``formats`` (first the main one, then extras) after
        it."""
        if not self.edits:
            raise PromptError("no prompt yet: click on the object first")
        config = job_config(self.config, preset=preset, formats=formats, output=output_options)
        start = self.start if start is None else start
        end = self.end if end is None else end
        # in the Render panel's words: "frames FROM to TO", both included
        if end <= start:
            raise ConfigError(f"frames {start} to {end - 1}: expected 'to' at or after 'from'")
        if not self.start <= start < end <= self.end:
            raise ConfigError(
                f"frames {start} to {end - 1}: expected frames inside {self.start} to "
                f"{self.end - 1}"
            )
        prompts = self.specs()
        prompted = {p.obj_id for p in prompts}
        names = {
            o.obj_id: o.name
            for o in list(self.objects.values())
            if o.obj_id in prompted and o.name != f"object {o.obj_id}"
        }
        return Job(
            input=self.clip,
            prompts=prompts,
            names=names,
            output=output,
            config=config,
            presets=self.presets,
            start=start,
            end=end,
            overwrite=overwrite,
            fps=self.fps,
        )

    def save_job(self, job: Job, path: Path) -> Path:
        """Write ``job`` as a job file (:func:`vosfx.studio.jobfile.save_job`), and hand the
        session's results over to its render (:meth:`hand_over`). Nothing is kept for
        recovery at close unless the prompts change after it."""
        saved = save_job(job, path)
        self.mark_saved()
        try:
            self.hand_over(job)
        except Exception:  # the hand-off only saves time; the job is written
            log.warning("tracked results not handed over with %s", saved, exc_info=True)
        return saved

    def hand_over(self, job: Job) -> bool:
        """Where the session holds ``job``'s prompts over its frames and has tracked them all,
        write its results where a render of the job finds them (:mod:`vosfx.pipeline.handoff`:
        an editor plugin renders the job Done hands it in a process of its own, which then
        tracks nothing). Not while a track or render runs (the session changes under it).
        Whether they were written."""
        from vosfx.io.source import probe
        from vosfx.pipeline import handoff, resolve_prompts

        if not self._lock.acquire(blocking=False):
            return False
        try:
            info = probe(job.input, fps=job.fps)
            end = min(job.end, info.num_frames) if job.end is not None else info.num_frames
            prompts = resolve_prompts(
                job.prompts, info, fit=job.fit, objects=job.objects, start=job.start, end=end
            )
            if not self.session.holds(info, job.config.memory, prompts, job.start, end):
                return False
            key = handoff.tracked_key(job.input, info, job.start, end, prompts, job.config)
            return handoff.save(self.session, key) is not None
        finally:
            self._lock.release()

    def render(self, job: Job) -> None:
        """Render ``job`` on the worker thread with the studio's engine and session
        (pipeline.run, the one loop: what Track computed is written, not tracked again);
        progress and the written paths come as events."""
        from vosfx.pipeline import check_outputs, check_sidecar_path, plan_outputs

        outputs = plan_outputs(job)
        for path, _fmt, _obj in outputs:
            if Path(path).resolve() == Path(self.clip).resolve():  # the page's own words
                raise OutputError(f"output {path} would replace the clip itself")
            if not job.overwrite and (Path(path).exists() or Path(path).is_symlink()):
                # the page's own control, not the CLI's --overwrite the writer's check names
                raise OutputError(f'output {path} already exists; tick "replace existing"')
            if job.config.output.sidecar:
                check_sidecar_path(
                    Path(path), job.overwrite, 'tick "replace existing" to replace it'
                )
        check_outputs(job, outputs)  # the render's own checks (the clip itself, folders)
        self.stop()

        def body(cancel: threading.Event) -> None:
            from vosfx.pipeline import run

            def progress(ev: Any) -> None:
                if ev.event != "warning":  # warnings come with the result, shown with it
                    self.emit({"event": "render", "done": ev.frames_done, "total": ev.total_frames})

            # the session's own results where it holds the job's prompts over the job's
            # frames (Render after Track writes what was tracked, tracking only what is
            # stale); a render of other frames makes a session of its own
            with self._lock:
                self.read_plan()
                report = run(
                    job,
                    on_progress=progress,
                    engine=self.engine,
                    cancel=cancel,
                    session=self.session,
                )
            self.last_render = {
                "outputs": list(report.outputs),
                "frames": report.frames,
                "warnings": list(report.warnings),
            }
            self.emit(dict(self.last_render, event="rendered"))

        self.worker.start("render", body)

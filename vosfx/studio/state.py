"""One clip's studio: the engine session, the prompts as the user made them, undo/redo,
finishing, tracking and render.

Every prompt is kept as the job JSON spells it (:class:`FramePrompt`, one per object and
frame) and turned into the engine's Prompt by the same function ``vosfx matte --job`` uses
(:func:`vosfx.pipeline.resolve_prompts`), and each click recomputes the object's whole prompt
on that frame from the clicks alone (``refine=False``): so the mask the page shows after a
click is what a render of the saved job computes for that frame, exactly.

Threads: the server calls in from its worker threads. ``_lock`` guards the session's prompts
(a click, undo, delete); tracking and render run on one worker thread (:mod:`.work`) that a
click, Stop, a closed page or Ctrl-C cancels first. Results are read while tracking runs: the
session's result store is written row by row and a read sees a frame before or after.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vosfx.config import JobConfig, RefineConfig, build_config, merge_dicts
from vosfx.errors import ConfigError, OutputError, PromptError
from vosfx.job import Job, PromptSpec
from vosfx.studio.jobfile import format_ids, job_config, output_presets, save_job
from vosfx.studio.timeline import colour, timeline
from vosfx.studio.warm import WARM_DELAY_S, Warmer
from vosfx.studio.work import Emit, Worker
from vosfx.types import MaskResult, ObjectResult


@dataclass(frozen=True)
class FramePrompt:
    """One object's whole prompt on one frame, as the user made it: clicks (``points`` in
    source pixels with ``labels`` 1 include / 0 exclude) and an optional ``box``, or a
    ``mask`` image file (a dropped mask replaces the clicks)."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    mask: str | None = None

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None and self.mask is None

    def spec(self, frame: int, obj_id: int) -> PromptSpec:
        return PromptSpec(
            frame=frame,
            obj_id=obj_id,
            mask=self.mask,
            points=self.points,
            labels=self.labels,
            box=self.box,
        )


@dataclass
class StudioObject:
    obj_id: int
    name: str


class Studio:
    """A clip open in the studio (a context manager).

    ``clip``: any input ``vosfx matte`` accepts. ``engine``: the loaded engine (one per
    studio). ``config``: the effective JobConfig (presets already applied) and ``presets``
    their names, so a saved job names them. ``start``/``end``: the frames matted.
    ``workdir``: this studio's folder under vosfx's cache (dropped masks); removed on close.
    ``cache_bytes``: the byte budget shared by decoded frames and image features.
    ``warm_delay_s``: the frame the page stays on this long gets its image features made
    before a click (:mod:`vosfx.studio.warm`); None turns that off.
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
    ) -> None:
        from vosfx.session import ClipSession
        from vosfx.session.frames import SourceFrames

        self.clip = str(Path(clip).resolve()) if "%" not in clip else clip
        self.engine, self.config, self.presets, self.fps = engine, config, presets, fps
        self.workdir = workdir
        self.emit: Emit = emit or (lambda _ev: None)
        # two decoders: the track worker walks its own, the viewer seeks in the other
        self.track_frames = SourceFrames(self.clip, fps=fps, cache_bytes=cache_bytes // 4)
        self.view_frames = SourceFrames(self.clip, fps=fps, cache_bytes=cache_bytes // 4)
        self.info = self.view_frames.info
        end = self.info.num_frames if end is None else min(end, self.info.num_frames)
        if not 0 <= start < end:
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
        )
        self.objects: dict[int, StudioObject] = {}
        self.edits: dict[tuple[int, int], FramePrompt] = {}  # (obj, frame) -> prompt
        self._undo: list[tuple[int, int, FramePrompt | None, FramePrompt | None]] = []
        self._redo: list[tuple[int, int, FramePrompt | None, FramePrompt | None]] = []
        self._lock = threading.RLock()
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

    # --- objects --------------------------------------------------------------------------
    def add_object(self, name: str | None = None) -> StudioObject:
        with self._lock:
            obj_id = max(self.objects, default=0) + 1
            obj = StudioObject(obj_id, name or f"object {obj_id}")
            self.objects[obj_id] = obj
            return obj

    def rename_object(self, obj_id: int, name: str) -> None:
        name = name.strip()[:80]
        if not name:
            raise PromptError("an object's name cannot be empty")
        self._object(obj_id).name = name

    def delete_object(self, obj_id: int) -> None:
        self._object(obj_id)
        self.stop()
        with self._lock:
            if obj_id in self.session.obj_ids:
                self.session.delete_object(obj_id)
            for key in [k for k in self.edits if k[0] == obj_id]:
                del self.edits[key]
            self._undo = [u for u in self._undo if u[0] != obj_id]
            self._redo = [u for u in self._redo if u[0] != obj_id]
            del self.objects[obj_id]

    def _object(self, obj_id: int) -> StudioObject:
        if obj_id not in self.objects:
            raise PromptError(f"there is no object {obj_id}; objects: {sorted(self.objects)}")
        return self.objects[obj_id]

    # --- prompts --------------------------------------------------------------------------
    def click(self, obj_id: int, frame: int, x: float, y: float, label: int) -> MaskResult:
        """Add an include (``label`` 1) or exclude (0) point for ``obj_id`` on ``frame``."""
        old = self.edits.get((obj_id, frame)) or FramePrompt()
        base = FramePrompt(box=old.box) if old.mask is not None else old
        new = replace(
            base, points=(*base.points, (float(x), float(y))), labels=(*base.labels, int(label))
        )
        return self.set_prompt(obj_id, frame, new)

    def box(self, obj_id: int, frame: int, box: tuple[float, float, float, float]) -> MaskResult:
        old = self.edits.get((obj_id, frame)) or FramePrompt()
        base = FramePrompt() if old.mask is not None else old
        x0, y0, x1, y1 = box
        new = replace(base, box=(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        return self.set_prompt(obj_id, frame, new)

    def drop_mask(self, obj_id: int, frame: int, data: bytes) -> MaskResult:
        """A mask image dropped on the viewer (any image PIL reads; alpha or luma, scaled to
        the clip's size): saved as a PNG in the workdir and made the object's prompt."""
        import io

        from PIL import Image, UnidentifiedImageError

        try:
            opened = Image.open(io.BytesIO(data))
            opened.load()
        except (UnidentifiedImageError, OSError) as err:
            raise PromptError(f"the dropped file is not an image PIL can read: {err}") from None
        img = opened.getchannel("A") if "A" in opened.getbands() else opened.convert("L")
        img = img.resize((self.info.width, self.info.height), Image.Resampling.NEAREST)
        mask = (np.asarray(img) >= 128).astype(np.uint8) * 255
        if not mask.any():
            raise PromptError("the dropped mask is empty (no pixel >= 128)")
        self._mask_seq += 1
        path = self.workdir / f"mask_obj{obj_id}_f{frame}_{self._mask_seq}.png"
        Image.fromarray(mask, "L").save(path)
        return self.set_prompt(obj_id, frame, FramePrompt(mask=str(path)))

    def set_prompt(
        self, obj_id: int, frame: int, new: FramePrompt | None, *, record: bool = True
    ) -> MaskResult:
        """Make ``new`` the object's whole prompt on ``frame`` (None or empty: remove it) and
        compute that frame at once. Cancels tracking first (the pass would be stale)."""
        self._object(obj_id)
        if not self.start <= frame < self.end:
            raise PromptError(
                f"frame {frame} is outside the frames being matted ({self.start}..{self.end - 1})"
            )
        self.stop()
        with self._lock:
            old = self.edits.get((obj_id, frame))
            if new is not None and new.empty:
                new = None
            if new is None:
                if old is not None:
                    self.session.remove_prompt(obj_id, frame)
                    del self.edits[(obj_id, frame)]
            else:
                prompt = self._resolve(obj_id, frame, new)
                self.session.add_prompt(prompt, refine=False)
                self.edits[(obj_id, frame)] = new
            if record:
                self._undo.append((obj_id, frame, old, new))
                self._redo.clear()
            return self.session.result(frame)

    def _resolve(self, obj_id: int, frame: int, fp: FramePrompt):
        from vosfx.pipeline import resolve_prompts

        (prompt,) = resolve_prompts(
            (fp.spec(frame, obj_id),),
            self.info,
            fit=False,
            objects=None,
            start=self.start,
            end=self.end,
        )
        return prompt

    def restore(self, job: Job) -> None:
        """Reopen a saved job's prompts (ids as ``vosfx matte`` gives them: a mask without an
        id holds its palette's objects, clicks without one go after the masks' ids)."""
        from PIL import Image

        from vosfx.pipeline import resolve_prompts

        mask_ids: set[int] = set()
        for spec in job.prompts:
            if spec.mask is not None:
                found = resolve_prompts(
                    (spec,),
                    self.info,
                    fit=job.fit,
                    objects=job.objects,
                    start=self.start,
                    end=self.end,
                )
                for p in found:
                    if p.mask is None:
                        continue
                    path = self.workdir / f"mask_obj{p.obj_id}_f{p.frame_index}.png"
                    Image.fromarray(p.mask.astype(np.uint8) * 255, "L").save(path)
                    self._restore_one(p.obj_id, p.frame_index, FramePrompt(mask=str(path)))
                    mask_ids.add(p.obj_id)
                continue
            obj = spec.obj_id if spec.obj_id is not None else max(mask_ids, default=0) + 1
            if job.objects is not None and obj not in job.objects:
                continue
            self._restore_one(obj, spec.frame, FramePrompt(spec.points, spec.labels, spec.box))

    def _restore_one(self, obj_id: int, frame: int, fp: FramePrompt) -> None:
        if obj_id not in self.objects:
            self.objects[obj_id] = StudioObject(obj_id, f"object {obj_id}")
        self.set_prompt(obj_id, frame, fp, record=False)

    def undo(self) -> int | None:
        """Undo the last prompt change; returns its frame (None: nothing to undo)."""
        if not self._undo:
            return None
        obj_id, frame, old, new = self._undo.pop()
        self.set_prompt(obj_id, frame, old, record=False)
        self._redo.append((obj_id, frame, old, new))
        return frame

    def redo(self) -> int | None:
        if not self._redo:
            return None
        obj_id, frame, old, new = self._redo.pop()
        self.set_prompt(obj_id, frame, new, record=False)
        self._undo.append((obj_id, frame, old, new))
        return frame

    # --- tracking -------------------------------------------------------------------------
    def track(self) -> int:
        """Start tracking every stale pass on the worker thread; returns the frames to do."""
        self.stop()
        with self._lock:
            total = sum(len(pl.frames) for pl in self.session.stale())
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
                stepped = self.session.track(on_frame=on_frame, cancel=cancel)
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

    # --- finishing ------------------------------------------------------------------------
    def set_refine(self, values: dict[str, Any]) -> RefineConfig:
        """Change finishing options (``[refine]`` keys); validated like a preset."""
        config = build_config(merge_dicts(self.config.to_dict(), {"refine": dict(values)}))
        self.config = replace(self.config, refine=config.refine)
        return self.config.refine

    # --- the job ----------------------------------------------------------------------------
    def specs(self) -> tuple[PromptSpec, ...]:
        return tuple(fp.spec(frame, obj) for (obj, frame), fp in sorted(self.edits.items()))

    def job(
        self,
        output: str,
        *,
        formats: tuple[str, ...] | None = None,
        start: int | None = None,
        end: int | None = None,
        overwrite: bool = False,
        preset: str | None = None,
    ) -> Job:
        """The session as a :class:`Job`: what a render runs and what a saved job holds.
        ``preset``: an output preset (:func:`~vosfx.studio.jobfile.output_presets`) whose
        ``[output]`` section applies first; ``formats`` (first the main one, then extras) after
        it."""
        if not self.edits:
            raise PromptError("no prompt yet: click on the object first")
        config = job_config(self.config, preset=preset, formats=formats)
        start = self.start if start is None else start
        end = self.end if end is None else end
        if not self.start <= start < end <= self.end:
            raise ConfigError(
                f"range {start}..{end - 1}: expected frames inside {self.start}..{self.end - 1}"
            )
        return Job(
            input=self.clip,
            prompts=self.specs(),
            output=output,
            config=config,
            presets=self.presets,
            start=start,
            end=end,
            overwrite=overwrite,
            fps=self.fps,
        )

    def save_job(self, job: Job, path: Path) -> Path:
        """Write ``job`` as a job file (:func:`vosfx.studio.jobfile.save_job`)."""
        return save_job(job, path)

    def render(self, job: Job) -> None:
        """Render ``job`` on the worker thread with the studio's engine (pipeline.run, the one
        loop); progress and the written paths come as events."""
        from vosfx.io.writers import check_output_path
        from vosfx.pipeline import plan_outputs

        for path, _fmt, _obj in plan_outputs(job):
            if Path(path).resolve() == Path(self.clip).resolve():
                raise OutputError(f"output {path} would replace the clip itself")
            check_output_path(Path(path), job.overwrite)
        self.stop()

        def body(cancel: threading.Event) -> None:
            from vosfx.pipeline import run

            def progress(ev: Any) -> None:
                self.emit({"event": "render", "done": ev.frames_done, "total": ev.total_frames})

            report = run(job, on_progress=progress, engine=self.engine, cancel=cancel)
            self.last_render = {"outputs": list(report.outputs), "frames": report.frames}
            self.emit(dict(self.last_render, event="rendered"))

        self.worker.start("render", body)

    # --- what the page reads --------------------------------------------------------------
    def timeline(self) -> dict:
        """What the page's timeline shows (:func:`vosfx.studio.timeline.timeline`)."""
        return timeline(self)

    def prompt_state(self) -> dict:
        """The prompts as the page lists them (a ``mask`` flag instead of the file) and
        whether undo and redo can run. (No lock: a track holds it for its whole run.)"""
        return {
            "prompts": [
                dict(fp.spec(f, o).to_dict(), mask=fp.mask is not None)
                for (o, f), fp in sorted(dict(self.edits).items())
            ],
            "can_undo": bool(self._undo),
            "can_redo": bool(self._redo),
        }

    def state(self) -> dict:
        info = self.info
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
            "formats": format_ids(),
            "output_presets": output_presets(),
            "presets": list(self.presets),
            "busy": self.busy,
            "last_render": self.last_render,
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

"""The one loop: source -> shots -> engine -> refine -> writers, with progress and a sidecar.

The CLI, batch runner, host plugins and Python API all call :func:`run`; none re-implements it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vosfx import __version__
from vosfx.errors import Cancelled, ConfigError, PromptError
from vosfx.job import Job, PromptSpec
from vosfx.types import Frame, MaskResult, Matte, ProgressEvent, Prompt, VideoInfo

ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class JobReport:
    job: Job
    outputs: tuple[str, ...]
    sidecars: tuple[str, ...]
    frames: int
    elapsed_s: float
    timings_s: dict[str, float]
    model_id: str
    model_sha256: str | None
    shots: tuple[int, ...] = ()  # frame indices where a new shot starts
    presence: dict[int, list[tuple[int, int, bool]]] = field(default_factory=dict)
    memory: dict = field(default_factory=dict)  # the session's report (promotions, quality)

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "outputs": list(self.outputs),
            "sidecars": list(self.sidecars),
            "frames": self.frames,
            "elapsed_s": round(self.elapsed_s, 3),
            "fps": round(self.fps, 3),
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            "model": {"id": self.model_id, "sha256": self.model_sha256},
            "shots": list(self.shots),
            "presence": {str(k): [list(iv) for iv in v] for k, v in self.presence.items()},
        }


def resolve_prompts(specs: tuple[PromptSpec, ...], info: VideoInfo, *, fit: bool,
                    objects: tuple[int, ...] | None, start: int, end: int) -> list[Prompt]:
    """PromptSpecs -> engine Prompts at video resolution, validated against the clip."""
    from vosfx.io.prompts import check_inside, load_mask_prompt

    prompts: list[Prompt] = []
    # click/box prompts without an obj_id: object 1, or one more object after the masks' ids
    mask_ids: set[int] = set()
    for spec in specs:
        if not start <= spec.frame < end:
            raise PromptError(
                f"prompt for frame {spec.frame} is outside the frames being matted "
                f"({start}..{end - 1}; the clip has {info.num_frames} frames)"
            )
        if spec.mask is not None:
            found = load_mask_prompt(
                spec.mask, frame_index=spec.frame, video_size=(info.width, info.height),
                fit=fit, threshold=spec.threshold,
                objects=None if spec.obj_id is not None else objects,
            )
            if spec.obj_id is not None:  # one object given explicitly: union of the mask
                union = np.any([p.mask for p in found], axis=0)
                found = [Prompt(frame_index=spec.frame, obj_id=spec.obj_id, mask=union)]
            prompts.extend(found)
            mask_ids.update(p.obj_id for p in found)
            continue
        pts = np.asarray(spec.points, np.float32).reshape(-1, 2) if spec.points else None
        box = np.asarray(spec.box, np.float32) if spec.box is not None else None
        size = (info.width, info.height)
        if pts is not None:
            check_inside(pts, size, "point")
        if box is not None:
            check_inside(box.reshape(2, 2), size, "box corner")
        prompts.append(Prompt(
            frame_index=spec.frame,
            obj_id=spec.obj_id if spec.obj_id is not None else max(mask_ids, default=0) + 1,
            points=pts,
            labels=np.asarray(spec.labels, np.int32) if spec.points else None, box=box,
        ))
    if objects is not None:
        prompts = [p for p in prompts if p.obj_id in objects]
        if not prompts:
            raise PromptError(f"none of the prompts is for the objects {list(objects)}")
    return prompts


def _full_matte(matte: Matte, obj_ids: tuple[int, ...]) -> Matte:
    """A matte with one plane per known object, in ``obj_ids`` order (zeros where the engine
    has no output yet, e.g. before an object's first prompt)."""
    if matte.obj_ids == obj_ids:
        return matte
    h, w = matte.alpha.shape[1:]
    alpha = np.zeros((len(obj_ids), h, w), np.float32)
    for i, oid in enumerate(matte.obj_ids):
        alpha[obj_ids.index(oid)] = matte.alpha[i]
    return Matte(matte.frame_index, obj_ids, alpha)


def run(job: Job, *, on_progress: ProgressCallback | None = None, engine=None,
        cancel: threading.Event | None = None) -> JobReport:
    """Matte one clip. ``engine``: a loaded :class:`vosfx.engine.Engine` to reuse (batch
    workers keep one across jobs); when None the job's model is loaded and closed here.
    ``cancel``: set it from another thread to stop cleanly (outputs are removed)."""
    from vosfx.io.source import open_source
    from vosfx.io.writers import check_output_path

    t_start = time.perf_counter()
    outputs = plan_outputs(job)
    for path, _fmt, _obj in outputs:
        check_output_path(Path(path), job.overwrite)
    with ExitStack() as stack:
        src = stack.enter_context(open_source(job.input, start=job.start, end=job.end, fps=job.fps))
        info = src.info
        end = min(job.end, info.num_frames) if job.end is not None else info.num_frames
        if job.start >= end:
            raise ConfigError(f"--start {job.start} is past the clip's last frame ({info.num_frames - 1})")
        prompts = resolve_prompts(job.prompts, info, fit=job.fit, objects=job.objects,
                                  start=job.start, end=end)
        if engine is None:
            from vosfx.engine import load_engine

            engine = load_engine(job.config.model, progress=_download_progress(job, on_progress))
            stack.callback(engine.close)
        backward = _track_backward(job, info, prompts, engine, on_progress, cancel)
        if backward is not None:
            stack.callback(backward.close)
        loop = _Loop(job, _output_info(info, job.start), prompts, engine, outputs, on_progress,
                     cancel, end - job.start, backward)
        stack.enter_context(loop)
        loop.run(src)
    return loop.finish(time.perf_counter() - t_start)


def _track_backward(job: Job, info: VideoInfo, prompts: list[Prompt], engine, on_progress,
                    cancel):
    """Results for the frames before the first prompted frame, tracked backwards from it
    (objects first prompted on that frame); None when the range starts at a prompt."""
    first = min(p.frame_index for p in prompts)
    if not job.config.memory.track_backward or first <= job.start:
        return None
    from vosfx.backward import track_backward

    return track_backward(
        job.input, job.fps, info, engine, job.config.memory,
        [p for p in prompts if p.frame_index == first], job.start,
        shots=job.config.memory.policy == "rcms+shots", on_progress=on_progress, cancel=cancel,
    )


def _output_info(info: VideoInfo, start: int) -> VideoInfo:
    """The source's info with the timecode of the first frame rendered (source timecode +
    ``start`` frames), so outputs conform to the source in an editor."""
    if not info.timecode or not start or not info.fps:
        return info
    from dataclasses import replace

    from vosfx.io.timecode import offset

    return replace(info, timecode=offset(info.timecode, start, info.fps))


def _download_progress(job: Job, on_progress: ProgressCallback | None):
    """Checkpoint download progress as "download" events (bytes in frames_done/total)."""
    if on_progress is None:
        return None
    name = job.config.model.name

    def cb(done: int, total: int | None) -> None:
        on_progress(ProgressEvent("download", done, total or 0, message=f"downloading {name}"))

    return cb


def plan_outputs(job: Job) -> list[tuple[str, str, int | None]]:
    """(path, format id, obj id or None for merged) for every output of the job."""
    from vosfx.io.writers import FORMATS

    cfg = job.config.output
    formats = (cfg.format,) + tuple(f for f in cfg.extra_formats if f != cfg.format)
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"[output] format: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    main = Path(job.output)
    planned = []
    for fmt in formats:
        spec = FORMATS[fmt]
        base = main
        if fmt != cfg.format:  # extra outputs sit beside the main one: out.<fmt>[.ext]
            ext = "" if spec.is_sequence else f".{spec.ext}"
            base = main.with_name(f"{_stem(main)}.{fmt}{ext}")
        # objects = "each": one output per object; ids from palette masks are known only
        # once the prompts are read, so the loop expands the path ({obj} or _obj<id>)
        planned.append((str(base), fmt, -1 if cfg.objects == "each" else None))
    return planned


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(path.suffix)] if path.suffix else name


def _object_path(path: str, obj_id: int) -> str:
    if "{obj}" in path:
        return path.replace("{obj}", str(obj_id))
    p = Path(path)
    return str(p.with_name(f"{_stem(p)}_obj{obj_id}{p.suffix}"))


class _Loop:
    """The per-frame loop's state: session, shot detector, refiner, writers, records."""

    def __init__(self, job, info, prompts, engine, outputs, on_progress, cancel, total,
                 backward=None):
        self.job, self.info, self.engine, self.backward = job, info, engine, backward
        self.on_progress, self.cancel, self.total = on_progress, cancel, total
        self.prompts_at: dict[int, list[Prompt]] = defaultdict(list)
        for p in prompts:
            self.prompts_at[p.frame_index].append(p)
        self.obj_ids = tuple(sorted({p.obj_id for p in prompts}))
        self.outputs = outputs
        self.timings = defaultdict(float)
        self.scores: dict[int, list[float | None]] = {o: [] for o in self.obj_ids}
        self.quality: dict[int, list[float | None]] = {o: [] for o in self.obj_ids}
        self.frames = 0
        self.written: list[str] = []
        self.sidecars: list[str] = []
        self.session = None
        self.memory_report: dict = {}
        self.shots = None
        self._stack = ExitStack()

    def __enter__(self):
        from vosfx.io.writers import open_writer
        from vosfx.matte.refine import Refiner

        self.session = self.engine.start(self.info, self.job.config.memory)
        self._stack.callback(self.session.close)
        if self.job.config.memory.policy == "rcms+shots":
            from vosfx.shots import ShotDetector

            mem = self.job.config.memory
            self.shots = ShotDetector(threshold=mem.shot_threshold, min_shot_frames=mem.shot_min_frames)
        self.refiner = Refiner(self.job.config.refine, self.obj_ids)
        self.writers = []
        cfg = self.job.config.output
        for path, fmt, obj in self.outputs:
            targets = [(path, None)] if obj is None else [
                (_object_path(path, o), o) for o in self.obj_ids]
            for target, oid in targets:
                writer = open_writer(
                    fmt, Path(target), self.info, obj_ids=self.obj_ids, config=cfg,
                    audio_from=self.job.input if cfg.audio else None, overwrite=self.job.overwrite,
                )
                self.writers.append((self._stack.enter_context(writer), oid, target))
        from vosfx.io.background import BackgroundCalls

        # entered last, so it finishes (or stops) before the writers close or abort
        self.async_write = self._stack.enter_context(BackgroundCalls(self._write))
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)

    def run(self, src) -> None:
        t_wall = time.perf_counter()
        self._emit(ProgressEvent("start", 0, self.total))
        it = iter(src)
        shot_id = 0
        while True:
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled("cancelled; no output was written")
            t0 = time.perf_counter()
            frame = next(it, None)
            t1 = time.perf_counter()
            self.timings["decode_wait"] += t1 - t0
            if frame is None:
                break
            new_shot = False
            if self.shots is not None:
                sid = self.shots.push(frame)
                new_shot, shot_id = sid != shot_id, sid
            t2 = time.perf_counter()
            self.timings["shots"] += t2 - t1
            for p in self.prompts_at.get(frame.index, ()):
                self.session.add_prompt(p)
            result = self.session.step(frame, shot_id=shot_id)
            if self.backward is not None and self.backward.covers(frame.index):
                result = self.backward.get(frame.index)  # before the first prompt
            t3 = time.perf_counter()
            self.timings["track"] += t3 - t2
            if new_shot:
                self.refiner.reset()
            matte = _full_matte(self.refiner(result, frame), self.obj_ids)
            t4 = time.perf_counter()
            self.timings["refine"] += t4 - t3
            self.async_write.put(frame, matte)  # encoded on the writer thread
            self.timings["write_wait"] += time.perf_counter() - t4
            self._record(result)
            self.frames += 1
            elapsed = time.perf_counter() - t_wall
            fps = self.frames / elapsed if elapsed > 0 else 0.0
            self._emit(ProgressEvent(
                "frame", self.frames, self.total, frame.index, fps,
                (self.total - self.frames) / fps if fps > 0 else None,
                {o: s[-1] for o, s in self.scores.items() if s and s[-1] is not None},
            ))
        self.async_write.close()  # every frame encoded; a write error raises here
        self.timings["write"] = self.async_write.busy_s
        self.memory_report = self.session.report()  # before the session closes
        if self.frames == 0:
            from vosfx.errors import InputError

            raise InputError(f"{self.job.input}: no frames decoded in the requested range")

    def _write(self, frame: Frame, matte: Matte) -> None:
        for writer, oid, _target in self.writers:
            if oid is None:
                writer.write(frame, matte)
            else:
                writer.write(frame, matte, alpha=matte.alpha[self.obj_ids.index(oid)])

    def _record(self, result: MaskResult) -> None:
        got = dict(zip(result.obj_ids, result.object_score_logits.tolist()))
        memory = result.info.get("memory", {})
        for oid in self.obj_ids:
            self.scores[oid].append(got.get(oid))
            self.quality[oid].append((memory.get(oid) or {}).get("quality"))

    def _emit(self, event: ProgressEvent) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    def finish(self, elapsed_s: float) -> JobReport:
        from vosfx.io.writers import write_sidecar
        from vosfx.report import presence_intervals

        # frames before an object's first prompt have no score: absent
        presence = {
            oid: presence_intervals([-1.0 if v is None else v for v in self.scores[oid]],
                                    self.job.start)
            for oid in self.obj_ids
        }
        memory = self.memory_report
        shots = tuple(self.shots.cuts) if self.shots is not None else ()
        outputs = tuple(t for _w, _o, t in self.writers)
        sidecars = []
        if self.job.config.output.sidecar:
            data = {
                "vosfx_version": __version__,
                "job": self.job.to_dict(),
                "source": _info_dict(self.info),
                "model": {"id": self.engine.model_id, "sha256": self.engine.model_sha256},
                "frames": self.frames,
                "elapsed_s": round(elapsed_s, 3),
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
                "shots": {"cuts": list(shots)},
                "presence": {str(k): [list(iv) for iv in v] for k, v in presence.items()},
                "object_scores": {
                    str(k): [None if s is None else round(s, 4) for s in v]
                    for k, v in self.scores.items()
                },
                # RCMS reliability per frame (sigmoid(score) x max IoU x mask confidence)
                "quality": {
                    str(k): [None if q is None else round(q, 4) for q in v]
                    for k, v in self.quality.items() if any(q is not None for q in v)
                },
                "memory": memory,
            }
            for target in outputs:
                sidecars.append(str(write_sidecar(Path(target), dict(data, output=target))))
        report = JobReport(
            job=self.job, outputs=outputs, sidecars=tuple(sidecars), frames=self.frames,
            elapsed_s=elapsed_s, timings_s=dict(self.timings), model_id=self.engine.model_id,
            model_sha256=self.engine.model_sha256, shots=shots, presence=presence, memory=memory,
        )
        self._emit(ProgressEvent("done", self.frames, self.total, fps=report.fps))
        return report


def _info_dict(info: VideoInfo) -> dict:
    return {
        "path": info.path, "width": info.width, "height": info.height,
        "num_frames": info.num_frames, "fps": str(info.fps) if info.fps else None,
        "time_base": str(info.time_base), "rotation": info.rotation, "pix_fmt": info.pix_fmt,
        "bit_depth": info.bit_depth, "codec": info.codec, "vfr": info.is_vfr,
        "audio": info.has_audio,
        "first_frame_timecode": info.timecode or None,  # of the first frame rendered
    }

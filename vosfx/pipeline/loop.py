"""The one loop: source -> shots -> engine -> refine -> writers, with progress and a sidecar.

The CLI, batch runner, host plugins and Python API all call :func:`run`; none re-implements it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from vosfx._version import __version__
from vosfx.config import MemoryConfig
from vosfx.errors import Cancelled, ConfigError, PromptError
from vosfx.job import Job, PromptSpec
from vosfx.types import (
    Frame,
    MaskResult,
    Matte,
    ObjectResult,
    ProgressEvent,
    Prompt,
    VideoInfo,
)

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
    runtime: dict = field(default_factory=dict)  # what ran the model (backend, precision, ...)

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
            "model": {"id": self.model_id, "sha256": self.model_sha256, "runtime": self.runtime},
            "shots": list(self.shots),
            "presence": {str(k): [list(iv) for iv in v] for k, v in self.presence.items()},
        }


def resolve_prompts(
    specs: tuple[PromptSpec, ...],
    info: VideoInfo,
    *,
    fit: bool,
    objects: tuple[int, ...] | None,
    start: int,
    end: int,
) -> list[Prompt]:
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
                spec.mask,
                frame_index=spec.frame,
                video_size=(info.width, info.height),
                fit=fit,
                threshold=spec.threshold,
                objects=None if spec.obj_id is not None else objects,
            )
            if spec.obj_id is not None:  # one object given explicitly: union of the mask
                # mask prompts: every one carries a mask
                union = np.any([p.mask for p in found if p.mask is not None], axis=0)
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
        prompts.append(
            Prompt(
                frame_index=spec.frame,
                obj_id=spec.obj_id if spec.obj_id is not None else max(mask_ids, default=0) + 1,
                points=pts,
                labels=np.asarray(spec.labels, np.int32) if spec.points else None,
                box=box,
            )
        )
    if objects is not None:
        prompts = [p for p in prompts if p.obj_id in objects]
        if not prompts:
            raise PromptError(f"none of the prompts is for the objects {list(objects)}")
    return prompts


def run(
    job: Job,
    *,
    on_progress: ProgressCallback | None = None,
    engine=None,
    cancel: threading.Event | None = None,
) -> JobReport:
    """Matte one clip. ``engine``: a loaded :class:`vosfx.engine.Engine` to reuse (batch
    workers keep one across jobs); when None the job's model is loaded and closed here.
    ``cancel``: set it from another thread to stop cleanly (outputs are removed)."""
    from vosfx.io.source import open_source, probe
    from vosfx.io.writers import check_output_path
    from vosfx.session import ClipSession

    t_start = time.perf_counter()
    outputs = plan_outputs(job)
    for path, _fmt, _obj in outputs:
        check_output_path(Path(path), job.overwrite)
    with ExitStack() as stack:
        info = probe(job.input, fps=job.fps)
        end = min(job.end, info.num_frames) if job.end is not None else info.num_frames
        if job.start >= end:
            raise ConfigError(
                f"--start {job.start} is past the clip's last frame ({info.num_frames - 1})"
            )
        prompts = resolve_prompts(
            job.prompts, info, fit=job.fit, objects=job.objects, start=job.start, end=end
        )
        if engine is None:
            from vosfx.engine import load_engine

            engine = load_engine(job.config.model, progress=_download_progress(job, on_progress))
            stack.callback(engine.close)
        session = stack.enter_context(
            ClipSession(engine, info, job.config.memory, start=job.start, end=end)
        )
        session.set_prompts(prompts)

        def open_frames(lo: int, hi: int):
            # the engine's resize runs on the decode thread, beside the model's work
            return open_source(job.input, start=lo, end=hi, fps=job.fps, prepare=session.prepare)

        loop = _Loop(
            job,
            _output_info(info, job.start),
            session,
            engine,
            outputs,
            on_progress,
            cancel,
            end - job.start,
        )
        stack.enter_context(loop)
        loop.run(
            results_in_order(
                session, open_frames, on_progress=on_progress, cancel=cancel, timings=loop.timings
            )
        )
    return loop.finish(time.perf_counter() - t_start)


def results_in_order(
    session,
    open_frames,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    timings: dict[str, float] | None = None,
) -> Iterator[tuple[Frame, MaskResult]]:
    """Every frame of the session's range in order with its final :class:`MaskResult`: the
    one loop's tracking half, shared by :func:`run` and ``vosfx bench``.

    ``open_frames(lo, hi)`` opens a frame source for [lo, hi) (a context manager iterating
    Frames in order). Frames before the session's split point (the last prompted frame that
    ends a segment) are first swept and tracked ("track" events), results kept on disk, then
    decoded again in order; from the split point on, frames are tracked as they stream. So a
    frame is decoded at most twice, and only when a prompt comes after it.
    """
    timings = timings if timings is not None else {}
    for key in ("track", "decode_wait"):
        timings.setdefault(key, 0.0)
    start, end = session.start, session.end
    split = session.split_point()
    collected: list[ObjectResult] = []
    # one sweep for both halves: a forward pass begun before the split goes on after it
    with session.open_sweep(on_frame=collected.append, cancel=cancel) as sweep:
        if split > start:
            total = split - start
            with open_frames(start, split) as src:
                t_wall = time.perf_counter()
                for done, frame in enumerate(src, 1):
                    t0 = time.perf_counter()
                    sweep.visit(frame)
                    collected.clear()
                    timings["track"] += time.perf_counter() - t0
                    if on_progress is not None:
                        elapsed = time.perf_counter() - t_wall
                        on_progress(
                            ProgressEvent(
                                "track",
                                done,
                                total,
                                frame.index,
                                done / elapsed if elapsed else 0.0,
                                message=f"tracking frames {start}..{split - 1} in both directions "
                                "before writing",
                            )
                        )
        with open_frames(start, end) as src:
            it = iter(src)
            while True:
                t0 = time.perf_counter()
                frame = next(it, None)
                t1 = time.perf_counter()
                timings["decode_wait"] += t1 - t0
                if frame is None:
                    break
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled; no output was written")
                if frame.index < split:
                    result = session.result(frame.index)
                else:
                    collected.clear()
                    sweep.visit(frame, keep=False)
                    result = _assemble(session, frame.index, collected)
                timings["track"] += time.perf_counter() - t1
                yield frame, result


def _assemble(session, frame_index: int, streamed: list[ObjectResult]) -> MaskResult:
    """The frame's MaskResult from results streamed by a sweep (not stored) and what the
    store holds (prompted frames)."""
    stored = session.result(frame_index)
    if not streamed:
        return stored
    by_obj = {r.obj_id: r for r in streamed}
    logits = stored.logits.copy()
    scores = stored.object_score_logits.copy()
    ious = stored.iou.copy()
    info = {
        "memory": dict(stored.info.get("memory", {})),
        "quality": dict(stored.info.get("quality", {})),
    }
    for i, obj in enumerate(stored.obj_ids):
        r = by_obj.get(obj)
        if r is None:
            continue
        logits[i], scores[i], ious[i] = r.logits, r.object_score_logit, r.iou
        if r.info.get("memory"):
            info["memory"][obj] = r.info["memory"]
        if r.info.get("quality") is not None:
            info["quality"][obj] = r.info["quality"]
    return MaskResult(frame_index, stored.obj_ids, logits, scores, ious, info)


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
            raise ConfigError(
                f"[output] format: unknown format {fmt!r}; known: {', '.join(FORMATS)}"
            )
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
    """The per-frame loop's writing half: refiner, writers, records, sidecar."""

    def __init__(self, job, info, session, engine, outputs, on_progress, cancel, total):
        self.job, self.info, self.session, self.engine = job, info, session, engine
        # what runs the model, asked now: the engine may be closed when the sidecar is written
        self.runtime: dict = engine.runtime()
        self.on_progress, self.cancel, self.total = on_progress, cancel, total
        self.obj_ids = session.obj_ids
        self.outputs = outputs
        self.timings: dict[str, float] = defaultdict(float)
        self.scores: dict[int, list[float | None]] = {o: [] for o in self.obj_ids}
        self.quality: dict[int, list[float | None]] = {o: [] for o in self.obj_ids}
        self.frames = 0
        self.sidecars: list[str] = []
        self.memory_report: dict = {}
        self._stack = ExitStack()

    def __enter__(self):
        from vosfx.io.writers import open_writer
        from vosfx.io.writers.parallel import ParallelCalls
        from vosfx.matte.refine import Refiner

        self.refiner = Refiner(self.job.config.refine, self.obj_ids)
        self.writers = []
        cfg = self.job.config.output
        for path, fmt, obj in self.outputs:
            targets = (
                [(path, None)]
                if obj is None
                else [(_object_path(path, o), o) for o in self.obj_ids]
            )
            for target, oid in targets:
                writer = open_writer(
                    fmt,
                    Path(target),
                    self.info,
                    obj_ids=self.obj_ids,
                    config=cfg,
                    # image sequences (a folder, a pattern) carry no audio
                    audio_from=self.job.input if cfg.audio and self.info.has_audio else None,
                    overwrite=self.job.overwrite,
                )
                self.writers.append((self._stack.enter_context(writer), oid, target))
        # One thread per writer, so the outputs of a multi-output job encode side by side
        # (ProRes 4444 + FFV1 matte: the slower encoder's time a frame, not the sum). Entered
        # last, so every thread finishes (or stops) before the writers close or abort.
        self.async_write = self._stack.enter_context(
            ParallelCalls([functools.partial(self._write, w, oid) for w, oid, _t in self.writers])
        )
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)

    def run(self, results: Iterator[tuple[Frame, MaskResult]]) -> None:
        t_wall = time.perf_counter()
        self._emit(ProgressEvent("start", 0, self.total))
        shot_id = None
        for frame, result in results:
            t3 = time.perf_counter()
            sid = self.session.shot_id(frame.index)
            if shot_id is not None and sid != shot_id:
                self.refiner.reset()  # no temporal smoothing across a cut
            shot_id = sid
            matte = self.refiner(result, frame)
            t4 = time.perf_counter()
            self.timings["refine"] += t4 - t3
            self.async_write.put(frame, matte)  # encoded on the writer thread
            self.timings["write_wait"] += time.perf_counter() - t4
            self._record(result)
            self.frames += 1
            elapsed = time.perf_counter() - t_wall
            fps = self.frames / elapsed if elapsed > 0 else 0.0
            self._emit(
                ProgressEvent(
                    "frame",
                    self.frames,
                    self.total,
                    frame.index,
                    fps,
                    (self.total - self.frames) / fps if fps > 0 else None,
                    {o: s[-1] for o, s in self.scores.items() if s and s[-1] is not None},
                )
            )
        self.async_write.close()  # every frame encoded; a write error raises here
        self.timings["write"] = self.async_write.busy_s  # summed over the writer threads
        self.timings["write_busiest"] = self.async_write.busiest_s
        self.memory_report = self.session.report()
        if self.frames == 0:
            from vosfx.errors import InputError

            raise InputError(f"{self.job.input}: no frames decoded in the requested range")

    def _write(self, writer, oid: int | None, frame: Frame, matte: Matte) -> None:
        if oid is None:
            writer.write(frame, matte)
        else:
            writer.write(frame, matte, alpha=matte.alpha[self.obj_ids.index(oid)])

    def _record(self, result: MaskResult) -> None:
        quality = result.info.get("quality", {})
        for oid, score in zip(result.obj_ids, result.object_score_logits.tolist()):
            if oid in self.scores:
                present = score > -1024.0  # -1024: no result (before a forward-only prompt)
                self.scores[oid].append(score if present else None)
                self.quality[oid].append(quality.get(oid) if present else None)

    def _emit(self, event: ProgressEvent) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    def finish(self, elapsed_s: float) -> JobReport:
        from vosfx.io.writers import write_sidecar
        from vosfx.pipeline.presence import presence_intervals

        # frames without a result for an object have no score: absent
        presence = {
            oid: presence_intervals(
                [-1.0 if v is None else v for v in self.scores[oid]], self.job.start
            )
            for oid in self.obj_ids
        }
        memory = self.memory_report
        shots = tuple(self.session.cuts)
        outputs = tuple(t for _w, _o, t in self.writers)
        sidecars = []
        if self.job.config.output.sidecar:
            data = {
                "vosfx_version": __version__,
                "job": self.job.to_dict(),
                "source": _info_dict(self.info),
                "model": {
                    "id": self.engine.model_id,
                    "sha256": self.engine.model_sha256,
                    "runtime": self.runtime,
                },
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
                    for k, v in self.quality.items()
                    if any(q is not None for q in v)
                },
                "memory": memory,
            }
            for target in outputs:
                sidecars.append(str(write_sidecar(Path(target), dict(data, output=target))))
        report = JobReport(
            job=self.job,
            outputs=outputs,
            sidecars=tuple(sidecars),
            frames=self.frames,
            elapsed_s=elapsed_s,
            timings_s=dict(self.timings),
            model_id=self.engine.model_id,
            model_sha256=self.engine.model_sha256,
            runtime=self.runtime,
            shots=shots,
            presence=presence,
            memory=memory,
        )
        self._emit(ProgressEvent("done", self.frames, self.total, fps=report.fps))
        return report


def _info_dict(info: VideoInfo) -> dict:
    return {
        "path": info.path,
        "width": info.width,
        "height": info.height,
        "num_frames": info.num_frames,
        "fps": str(info.fps) if info.fps else None,
        "time_base": str(info.time_base),
        "rotation": info.rotation,
        "pix_fmt": info.pix_fmt,
        "bit_depth": info.bit_depth,
        "codec": info.codec,
        "vfr": info.is_vfr,
        "audio": info.has_audio,
        "first_frame_timecode": info.timecode or None,  # of the first frame rendered
    }


def track_arrays(
    engine, images: list[np.ndarray], prompts: list[Prompt], *, memory: MemoryConfig | None = None
) -> Iterator[tuple[Frame, MaskResult]]:
    """The one loop's tracking half over frames already in memory ((H, W, 3) uint8 RGB, frame
    ``i`` at index ``i``): (frame, MaskResult) in order. For the Python API, benchmarks and
    tests; ``engine`` is a loaded Engine (e.g. ``SamEngine(backend, ...)``)."""
    from contextlib import contextmanager

    from vosfx.session import ClipSession

    h, w = images[0].shape[:2]
    info = VideoInfo(
        path="", width=w, height=h, num_frames=len(images), fps=None, time_base=Fraction(1)
    )
    frames = [Frame(i, img, None, Fraction(1)) for i, img in enumerate(images)]

    @contextmanager
    def open_frames(lo: int, hi: int):
        yield iter(frames[lo:hi])

    with ClipSession(engine, info, memory or MemoryConfig(policy="sam2")) as session:
        session.set_prompts(prompts)
        yield from results_in_order(session, open_frames)

"""The one loop: source -> shots -> engine -> refine -> writers, with progress and a sidecar.

The CLI, batch runner, host plugins and Python API all call :func:`run`; none re-implements it.
Here: the prompts resolved against the clip, the tracking half (:func:`results_in_order`) and
the run; the writing half (outputs, writers, sidecar, report) is :mod:`vosfx.pipeline.output`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, closing
from fractions import Fraction
from pathlib import Path

import numpy as np

from vosfx.config import MemoryConfig
from vosfx.errors import Cancelled, ConfigError, PromptError, StartPastEndError
from vosfx.job import Job, PromptSpec
from vosfx.pipeline.checks import check_outputs
from vosfx.pipeline.output import (
    JobReport,
    Outputs,
    ProgressCallback,
    numbering_warnings,
    object_path,
    output_info,
    plan_outputs,
    setting_warnings,
    truncation_warnings,
)
from vosfx.pipeline.switching import short_switch_interval
from vosfx.types import (
    Frame,
    MaskResult,
    ObjectResult,
    ProgressEvent,
    Prompt,
    VideoInfo,
)

log = logging.getLogger(__name__)


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
    from vosfx.io.prompts import check_inside, load_mask_prompt, load_prior

    prompts: list[Prompt] = []
    # click/box prompts without an obj_id: object 1, or one more object after the masks' ids
    mask_ids: set[int] = set()
    masked: dict[tuple[int, int], int] = {}  # (frame, object) -> the mask prompt given there
    for i, spec in enumerate(specs):
        said = f"{spec.where}: " if spec.where else ""
        if not start <= spec.frame < end:
            raise PromptError(
                f"{said}prompt for frame {spec.frame} is outside the frames being matted "
                f"({start}..{end - 1}; the clip has {info.num_frames} frames)"
                + positions_hint(info)
            )
        if spec.mask is not None:
            try:
                found = load_mask_prompt(
                    spec.mask,
                    frame_index=spec.frame,
                    video_size=(info.width, info.height),
                    fit=fit,
                    threshold=spec.threshold,
                )
            except PromptError as err:
                raise PromptError(f"{said}{err}") from None
            if spec.obj_id is not None:  # one object given explicitly: union of the mask
                # mask prompts: every one carries a mask
                union = np.any([p.mask for p in found if p.mask is not None], axis=0)
                found = [Prompt(frame_index=spec.frame, obj_id=spec.obj_id, mask=union)]
            for p in found:
                j = masked.setdefault((spec.frame, p.obj_id), i)
                if j != i:
                    first = specs[j]
                    raise PromptError(
                        f"{said}a second mask for object {p.obj_id} on frame {spec.frame} "
                        f"(the first: {first.where or first.mask}); a frame takes one mask "
                        "per object"
                    )
            prompts.extend(found)
            mask_ids.update(p.obj_id for p in found)
            continue
        pts = np.asarray(spec.points, np.float32).reshape(-1, 2) if spec.points else None
        box = np.asarray(spec.box, np.float32) if spec.box is not None else None
        size = (info.width, info.height)
        try:
            if pts is not None:
                check_inside(pts, size, "point")
            if box is not None:
                check_inside(box.reshape(2, 2), size, "box corner")
        except PromptError as err:
            raise PromptError(f"{said}{err}") from None
        prompts.append(
            Prompt(
                frame_index=spec.frame,
                obj_id=spec.obj_id if spec.obj_id is not None else max(mask_ids, default=0) + 1,
                points=pts,
                labels=np.asarray(spec.labels, np.int32) if spec.points else None,
                box=box,
                prior=None if spec.prior is None else load_prior(spec.prior, said),
                correction=spec.correction,
            )
        )
    if objects is not None:  # (over every prompt: a mask need not hold a clicked object)
        given = sorted({p.obj_id for p in prompts})
        unknown = sorted(set(objects) - set(given))
        if unknown:
            raise PromptError(
                f"objects {unknown} (--objects) have no prompt; the prompts are for objects {given}"
            )
        prompts = [p for p in prompts if p.obj_id in objects]
    return prompts


def positions_hint(info: VideoInfo) -> str:
    """For a numbered image sequence, how frame numbers given as positions map onto its
    files: ``; frames count the files from 0 (frame 0 is shot.1001.exr, frame 99 is
    shot.1100.exr)``. Empty for other sources."""
    numbers = info.frame_numbers
    if numbers is None:
        return ""
    last = info.num_frames - 1
    return (
        f"; frames count the files from 0, not by their numbers (frame 0 is "
        f"{numbers.name(0)}, frame {last} is {numbers.name(last)})"
    )


def run(
    job: Job,
    *,
    on_progress: ProgressCallback | None = None,
    engine=None,
    cancel: threading.Event | None = None,
    make_folders: Callable[[Path], None] | None = None,
    session=None,
) -> JobReport:
    """Matte one clip. ``engine``: a loaded :class:`vosfx.engine.Engine` to reuse (batch
    workers keep one across jobs); when None the job's model is loaded and closed here.
    ``cancel``: set it from another thread to stop cleanly (outputs are removed).
    ``make_folders``: where given, the missing folders of the per-object outputs (a batch
    template's ``{obj}`` folder) are made, each passed to it; else they are refused, as every
    other missing output folder is. ``session``: a :class:`~vosfx.session.ClipSession` of
    ``engine`` that may hold this job's results already (the studio's, after Track): where it
    holds exactly the job's prompts over the job's frames with the job's memory settings, the
    render takes what it has tracked and tracks only what is stale, in it (so it is left
    tracked); else a session of the job's own is made, as without it. It is not closed."""
    from vosfx.io.source import PREFETCH_BYTES, open_source, probe
    from vosfx.session import ClipSession

    t_start = time.perf_counter()
    if job.start < 0:
        raise ConfigError(f"--start {job.start}: expected a frame >= 0")
    if job.end is not None and job.end <= job.start:
        raise ConfigError(f"--end {job.end}: expected a frame after --start ({job.start})")
    outputs = plan_outputs(job)

    check_outputs(job, outputs)  # before anything is read
    with ExitStack() as stack:
        # the other threads wait less for the GIL where tracking runs Python (a GPU's)
        stack.enter_context(short_switch_interval())
        info = probe(job.input, fps=job.fps)
        end = min(job.end, info.num_frames) if job.end is not None else info.num_frames
        if job.start >= end:
            raise StartPastEndError(
                f"start {job.start} is past the clip's last frame ({info.num_frames - 1})"
                + positions_hint(info)
            )
        prompts = resolve_prompts(
            job.prompts, info, fit=job.fit, objects=job.objects, start=job.start, end=end
        )
        # per-object outputs once the prompts say which objects there are, before the model
        obj_ids = sorted({p.obj_id for p in prompts})
        if make_folders is not None:
            _make_object_folders(outputs, obj_ids, make_folders)
        check_outputs(job, outputs, obj_ids)
        if engine is None:
            from vosfx.engine import load_engine

            engine = load_engine(
                job.config.model, progress=_download_progress(job, on_progress), cancel=cancel
            )
            stack.callback(engine.close)
        reuse = session is not None and session.holds(
            info, job.config.memory, prompts, job.start, end
        )
        if not reuse:
            session = stack.enter_context(
                ClipSession(
                    engine,
                    info,
                    job.config.memory,
                    start=job.start,
                    end=end,
                    detect_shots=job.config.refine.temporal_strength > 0,
                )
            )
            session.set_prompts(prompts)
            _take_handed(session, job, info, end, prompts)
        loop = Outputs(
            job,
            output_info(info, job.start),
            session,
            engine,
            outputs,
            on_progress,
            cancel,
            end - job.start,
            # the input's numbering, then how the model runs (a reused engine's too)
            warnings=[
                *setting_warnings(job, outputs),
                *truncation_warnings(info),
                *numbering_warnings(info, job.start, end, outputs),
                *engine.warnings,
            ],
        )
        stack.enter_context(loop)

        def for_output(frame: Frame) -> Frame:
            return loop.refiner.prepare(session.prepare(frame))

        def open_frames(lo: int, hi: int, final: bool):
            # the engine's resize, and for the frames handed on the refiner's per-frame
            # guide, run on the decode thread, beside the model's and the loop's work
            # (and for them the source's own Y'CbCr planes, when a writer takes them)
            prepare = for_output if final else session.prepare
            return open_source(
                job.input,
                start=lo,
                end=hi,
                fps=job.fps,
                prepare=prepare,
                ycbcr=final and loop.wants_source_ycbcr,
                # --low-memory: one prepared frame ahead, not 64 MiB of them
                prefetch_bytes=0 if job.config.model.low_memory else PREFETCH_BYTES,
            )

        # closed on the way out: on an error or a cancel the generator is left mid-frame, and
        # its frame source (the decode thread) must stop now, not when the traceback is freed
        results = stack.enter_context(
            closing(
                results_in_order(
                    session,
                    open_frames,
                    on_progress=on_progress,
                    cancel=cancel,
                    timings=loop.timings,
                    keep=reuse,
                )
            )
        )
        loop.run(results)
    return loop.finish(time.perf_counter() - t_start)


def _take_handed(session, job: Job, info: VideoInfo, end: int, prompts: list[Prompt]) -> None:
    """Where the studio handed over its results for exactly this job's tracking (Done or Save
    job after Track: :mod:`vosfx.pipeline.handoff`), the session takes them and tracks
    nothing."""
    from vosfx.pipeline import handoff

    key = handoff.tracked_key(job.input, info, job.start, end, prompts, job.config)
    handed = handoff.load(key, session.obj_ids, job.start, end, session.engine.low_res)
    if handed is not None:
        log.info("taking the results the studio tracked for this job (%s)", key)
        session.adopt(handed.results(), handed.report)


def _make_object_folders(
    outputs: list[tuple[str, str, int | None]],
    obj_ids: list[int],
    made: Callable[[Path], None],
) -> None:
    from vosfx.io.writers.base import make_parent_folders

    for path, _fmt, obj in outputs:
        if obj is None:  # one output for every object: its folder is the user's to make
            continue
        for o in obj_ids:
            for folder in make_parent_folders(object_path(path, o)):
                made(folder)


def results_in_order(
    session,
    open_frames,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    timings: dict[str, float] | None = None,
    keep: bool = False,
) -> Generator[tuple[Frame, MaskResult], None, None]:
    """Every frame of the session's range in order with its final :class:`MaskResult`: the
    one loop's tracking half, shared by :func:`run` and ``vosfx bench``.

    ``open_frames(lo, hi, final)`` opens a frame source for [lo, hi) (a context manager
    iterating Frames in order); ``final`` is True for the source whose frames are yielded
    to the caller, False for the tracking sweep before the split point. Frames before the
    session's split point (the last prompted frame that ends a segment) are first swept and
    tracked ("track" events), results kept on disk, then decoded again in order; from the
    split point on, frames are tracked as they stream. So a frame is decoded at most twice,
    and only when a prompt comes after it. ``keep``: the frames tracked as they stream are
    stored in the session too (a session that outlives the render, the studio's).
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
            with open_frames(start, split, False) as src:
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
        with open_frames(start, end, True) as src:
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
                    sweep.visit(frame, keep=keep)
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


def _download_progress(job: Job, on_progress: ProgressCallback | None):
    """Checkpoint download progress as "download" events (bytes in frames_done/total)."""
    if on_progress is None:
        return None
    name = job.config.model.name

    def cb(done: int, total: int | None) -> None:
        on_progress(ProgressEvent("download", done, total or 0, message=f"downloading {name}"))

    return cb


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
    def open_frames(lo: int, hi: int, _final: bool):
        yield iter(frames[lo:hi])

    with ClipSession(engine, info, memory or MemoryConfig(policy="sam2")) as session:
        session.set_prompts(prompts)
        yield from results_in_order(session, open_frames)

"""The one loop's writing half: the job's outputs, their writers, the sidecar and the report.

:func:`plan_outputs` names every output of a job; :class:`Outputs` refines each frame's masks
and hands the matte to the writers (one thread each, so a multi-output job encodes side by
side), keeps each frame's scores, and at the end writes the sidecars and returns the
:class:`JobReport`. :func:`vosfx.pipeline.loop.run` drives it.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from vosfx._version import __version__
from vosfx.errors import ConfigError
from vosfx.job import Job
from vosfx.types import Frame, MaskResult, Matte, ProgressEvent, VideoInfo

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
    # said once as "warning" events too: a numbered input's gaps, how the model runs
    # (Engine.warnings: an execution provider missing, a tier in a slower form)
    warnings: tuple[str, ...] = ()

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
            "warnings": list(self.warnings),
        }


def output_info(info: VideoInfo, start: int) -> VideoInfo:
    """The source's info with the timecode of the first frame rendered (source timecode +
    ``start`` frames; a numbered image sequence's: the number of the file at ``start``, gaps
    before it counted), so outputs conform to the source in an editor."""
    if not info.timecode or not start or not info.fps:
        return info
    from dataclasses import replace

    from vosfx.io.timecode import from_frames, offset

    if info.frame_numbers is not None:
        return replace(
            info, timecode=from_frames(info.frame_numbers.numbers[start], info.fps, drop=False)
        )
    return replace(info, timecode=offset(info.timecode, start, info.fps))


def truncation_warnings(info: VideoInfo) -> list[str]:
    """A video whose declared duration implies more frames than it holds: the matte covers
    the frames there, and the user hears that the file may be cut short."""
    if info.declared_frames is None:
        return []
    name, n = Path(info.path).name, info.num_frames
    said = (
        f"{name}: its duration implies {info.declared_frames} frames but it holds {n}: the "
        f"file may be truncated (an interrupted copy or download); the matte covers the {n} there"
    )
    return [said]


def numbering_warnings(
    info: VideoInfo, start: int, end: int, outputs: list[tuple[str, str, int | None]]
) -> list[str]:
    """What a user must hear about the source's frame numbers over the frames rendered
    [start, end): numbers missing from a numbered image sequence (a file not rendered yet or
    lost), and which outputs still line up with the plate after them."""
    from vosfx.formats import FORMATS
    from vosfx.types import format_ranges

    numbers = info.frame_numbers
    gaps = numbers.missing(start, end) if numbers is not None else []
    if numbers is None or not gaps:
        return []
    count = sum(b - a + 1 for a, b in gaps)
    text = (
        f"{numbers.pattern}: {count} frame number{'s' if count > 1 else ''} missing between "
        f"{numbers.numbers[start]} and {numbers.numbers[end - 1]} ({format_ranges(gaps)}); "
        "image-sequence outputs keep the source's numbers, so they still line up with it"
    )
    movies = [Path(p).name for p, fmt, _o in outputs if not FORMATS[fmt].is_sequence]
    if movies:
        text += (
            f"; movie outputs ({', '.join(movies)}) hold one frame per file present, so after "
            "each gap they run early against the source's numbering by the frames missing"
        )
    return [text]


def setting_warnings(job: Job, outputs: list[tuple[str, str, int | None]]) -> list[str]:
    """Settings the job gives that this render does not use, or that make it slower, each
    said once as a warning (a flag a user typed for one format and forgot for another is not
    silently dropped): a background without a composite output, EXR layer options without
    exr-layers, a model name beside a checkpoint file, a frame rate for a video (which keeps
    its own), more model threads than the machine has cores."""
    from vosfx.config import ModelConfig, OutputConfig
    from vosfx.cpus import usable_cores
    from vosfx.io.sequence import IMAGE_EXTS, is_pattern

    formats = {fmt for _path, fmt, _obj in outputs}
    cfg, default = job.config.output, OutputConfig()
    said = []
    if cfg.background and "composite" not in formats:
        said.append(
            f"[output] background (--background {cfg.background}) is for the composite "
            "format, which this render does not write: not used"
        )
    for key in ("exr_compression", "exr_rgb"):
        if getattr(cfg, key) != getattr(default, key) and "exr-layers" not in formats:
            flag = "--" + key.replace("_", "-")
            said.append(
                f"[output] {key} ({flag}) is for the exr-layers format, which this render "
                "does not write: not used"
            )
    model = job.config.model
    if model.checkpoint and model.name != ModelConfig().name:
        said.append(
            f"[model] name {model.name} (--model, or a preset's) is not used: the checkpoint "
            f"{Path(model.checkpoint).name} (--checkpoint) is the model, its architecture read "
            "from its tensors"
        )
    cores = usable_cores()
    if model.threads > cores:
        said.append(
            f"[model] threads {model.threads} (--threads) is more than the {cores} CPU cores "
            "this process may use: slower than 0 (the runtime's choice), not faster"
        )
    src = Path(job.input)
    video = src.is_file() and not is_pattern(src) and src.suffix.lower() not in IMAGE_EXTS
    if job.fps is not None and video:
        said.append(
            f"the frame rate {job.fps:g} (--fps) is for image-sequence inputs; {src.name} is a "
            "video and keeps its own"
        )
    return said


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


def object_path(path: str, obj_id: int | str) -> str:
    """The path of object ``obj_id``'s output of a per-object (``--each-object``) output
    (``obj_id="{obj}"``: the name pattern, as batch validation compares them)."""
    if "{obj}" in path:
        return path.replace("{obj}", str(obj_id))
    p = Path(path)
    return str(p.with_name(f"{_stem(p)}_obj{obj_id}{p.suffix}"))


class Outputs:
    """The per-frame loop's writing half (a context manager): the refiner, the writers (one
    thread each), each frame's scores, and at the end the sidecars and the :class:`JobReport`."""

    def __init__(
        self, job, info, session, engine, outputs, on_progress, cancel, total, warnings=()
    ):
        self.job, self.info, self.session, self.engine = job, info, session, engine
        self.warnings = tuple(warnings)
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
        from vosfx.io.writers.background import BackgroundCalls
        from vosfx.io.writers.parallel import ParallelCalls
        from vosfx.matte.refine import Refiner

        # the logits' size known ahead: each frame's guide is made on the decode thread
        self.refiner = Refiner(
            self.job.config.refine,
            self.obj_ids,
            logit_size=self.session.engine.low_res,
            threads=self.job.config.model.threads,  # the job's CPU threads (0: the cores)
        )
        self.writers = []
        cfg = self.job.config.output
        for path, fmt, obj in self.outputs:
            targets = (
                [(path, None)] if obj is None else [(object_path(path, o), o) for o in self.obj_ids]
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
        # frames carry the source's Y'CbCr planes only when a writer takes them
        self.wants_source_ycbcr = any(w.takes_source_ycbcr for w, _o, _t in self.writers)
        # One thread per writer, so the outputs of a multi-output job encode side by side
        # (ProRes 4444 + FFV1 matte: the slower encoder's time a frame, not the sum). Entered
        # last, so every thread finishes (or stops) before the writers close or abort.
        self.async_write = self._stack.enter_context(
            ParallelCalls([functools.partial(self._write, w, oid) for w, oid, _t in self.writers])
        )
        # Refinement on a thread of its own, so the tracking thread goes on to the next frame
        # while this one is refined: with a model that takes ~30 ms a frame (a GPU) the frame
        # costs the slower of the two, not their sum (docs/benchmarks/render.md). One thread:
        # the temporal filter's state runs in frame order. Entered after the writers, so it
        # finishes (or stops) first.
        self.async_refine = self._stack.enter_context(
            BackgroundCalls(self._refine, depth=2, name="vosfx-refine")
        )
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)

    def run(self, results: Iterator[tuple[Frame, MaskResult]]) -> None:
        t_wall = time.perf_counter()
        self._emit(ProgressEvent("start", 0, self.total))
        for text in self.warnings:  # said once, before the frames
            self._emit(ProgressEvent("warning", 0, self.total, message=text))
        for frame, result in results:
            t3 = time.perf_counter()
            # the shot id read here: the session's state belongs to this (the tracking) thread
            self.async_refine.put(frame, result, self.session.shot_id(frame.index))
            self.timings["refine_wait"] += time.perf_counter() - t3
            self._record(result)
            self._say_new_warnings()
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
        self.async_refine.close()  # every frame refined; a refine or write error raises here
        self.timings["refine"] = self.async_refine.busy_s - self.timings["write_wait"]
        self.async_write.close()  # every frame encoded; a write error raises here
        self.timings["write"] = self.async_write.busy_s  # summed over the writer threads
        self.timings["write_busiest"] = self.async_write.busiest_s
        self.memory_report = self.session.report()
        if self.frames == 0:
            from vosfx.errors import InputError

            raise InputError(f"{self.job.input}: no frames decoded in the requested range")

    def _say_new_warnings(self) -> None:
        """A warning the engine gave mid-run (a graph's session, opened on first use, fell
        back to the CPU): said as it comes, and kept for the sidecar and the report, whose
        record of what runs the model is asked again (it now says where that graph runs)."""
        new = [text for text in self.engine.warnings if text not in self.warnings]
        for text in new:
            self.warnings += (text,)
            self._emit(ProgressEvent("warning", self.frames, self.total, message=text))
        if new:
            self.runtime = self.engine.runtime()

    def _refine(self, frame: Frame, result: MaskResult, shot_id: int) -> None:
        """On the refine thread: the frame's Matte, handed to the writers' threads."""
        self.refiner.follow(frame.index, shot_id)  # no temporal smoothing across a cut
        matte = self.refiner(result, frame)
        t0 = time.perf_counter()
        self.async_write.put(frame, matte)  # encoded on the writer threads
        self.timings["write_wait"] += time.perf_counter() - t0

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
                "job": self.job.to_record(),  # its paths absolute
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
                "warnings": list(self.warnings),
            }
            numbering = _numbering_dict(self.info, self.job.start, self.job.start + self.frames)
            if numbering is not None:
                data["frame_numbers"] = numbering
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
            warnings=self.warnings,
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
        "pixel_aspect": str(info.pixel_aspect),
        "pix_fmt": info.pix_fmt,
        "bit_depth": info.bit_depth,
        "codec": info.codec,
        "vfr": info.is_vfr,
        "audio": info.has_audio,
        "first_frame_timecode": info.timecode or None,  # of the first frame rendered
        # FFmpeg's AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic numbers,
        # as the Y'CbCr outputs are tagged
        "colour": {
            "matrix": info.colour.matrix,
            "primaries": info.colour.primaries,
            "transfer": info.colour.transfer,
        },
    }


def _numbering_dict(info: VideoInfo, start: int, end: int) -> dict | None:
    """The sidecar's ``frame_numbers``: a numbered image sequence's own numbers over the
    frames rendered (``numbers[k]``: the number of rendered frame k, a movie output's frame k
    and the k-th entry of ``object_scores``; image outputs are named by it), the source's
    pattern and the numbers missing. None for a video or a sequence without numbers."""
    numbers = info.frame_numbers
    if numbers is None:
        return None
    rendered = numbers.numbers[start:end]
    return {
        "pattern": numbers.pattern,
        "first": rendered[0],
        "last": rendered[-1],
        "missing": [list(r) for r in numbers.missing(start, end)],
        "numbers": list(rendered),
    }

"""Track every sequence of a DAVIS-layout dataset from its first-frame masks, write the
predictions, score them, and measure speed and memory: ``vosfx bench`` is a loop over
:func:`run_bench`, one call per (model, memory policy, backend).

Speed is frames per second of tracking (the session's sweep, as ``vosfx matte`` runs it)
plus the logits' upsampling to frame size, not counting JPEG decoding or PNG writing. Memory is the process's
peak resident set (``VmHWM``), which never goes down: a later run in the same process reports
at least the earlier run's peak, so compare configurations in separate processes where it
matters (docs/eval.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from vosfx.config import MemoryConfig
from vosfx.errors import InputError
from vosfx.eval.datasets import FRAME_TIME_BASE, DavisDataset, Sequence, write_label_png
from vosfx.eval.report import EvalReport, evaluate_dirs
from vosfx.types import MaskResult, VideoInfo


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (``VmHWM``; ``ru_maxrss`` elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass  # not Linux: fall through to getrusage
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


@dataclass(frozen=True)
class SequenceRun:
    name: str
    frames: int  # frames stepped through the tracker
    objects: int
    track_s: float  # seconds inside session.step + upsampling
    peak_rss_mib: float

    @property
    def fps(self) -> float:
        return self.frames / self.track_s if self.track_s > 0 else 0.0


@dataclass(frozen=True)
class BenchReport:
    """One configuration's run: per-sequence speed and the accuracy report."""

    model_id: str
    memory_policy: str
    sequences: list[SequenceRun]
    evaluation: EvalReport
    label: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.sequences)

    @property
    def fps(self) -> float:
        total = sum(s.track_s for s in self.sequences)
        return self.frames / total if total > 0 else 0.0

    @property
    def peak_rss_mib(self) -> float:
        return max((s.peak_rss_mib for s in self.sequences), default=0.0)

    def summary_row(self) -> dict:
        """One comparison row: configuration, accuracy means, speed, memory."""
        return {
            "config": self.label or f"{self.model_id}/{self.memory_policy}",
            "model": self.model_id,
            "memory": self.memory_policy,
            **self.evaluation.summary,
            "frames": self.frames,
            "fps": round(self.fps, 3),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
        }

    def to_dict(self) -> dict:
        return {
            **self.summary_row(),
            "sequences": [
                {
                    "name": s.name,
                    "frames": s.frames,
                    "objects": s.objects,
                    "track_s": round(s.track_s, 4),
                    "fps": round(s.fps, 3),
                    "peak_rss_mib": round(s.peak_rss_mib, 1),
                }
                for s in self.sequences
            ],
            "evaluation": self.evaluation.to_dict(),
        }


def labels_from_result(result: MaskResult, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 label map: each pixel takes the object with the highest positive logit
    (objects never overlap in a DAVIS label map), 0 where no logit is > 0."""
    if not result.obj_ids:
        return np.zeros((height, width), np.uint8)
    logits = result.video_logits(height, width)  # (O, H, W) float32
    best = logits.argmax(axis=0)
    ids = np.asarray(result.obj_ids, np.int64)
    if ids.max(initial=0) > 254:
        raise InputError(f"object ids must fit a label PNG (1-254), found {int(ids.max())}")
    labels = ids[best].astype(np.uint8)
    labels[logits.max(axis=0) <= 0] = 0
    return labels


def track_sequence(seq: Sequence, engine, memory_cfg: MemoryConfig, out_dir: Path) -> SequenceRun:
    """Track one sequence from its annotated prompts through the one loop's tracking half
    (:func:`~vosfx.pipeline.loop.results_in_order`, as ``vosfx matte`` runs it); write
    ``out_dir/<frame>.png`` for every frame."""
    from contextlib import contextmanager

    from vosfx.pipeline.loop import results_in_order
    from vosfx.session import ClipSession

    prompts = seq.first_frame_prompts()
    if not prompts:
        raise InputError(f"sequence {seq.name!r}: expected at least one annotated object")
    first = seq.frame(0)
    info = VideoInfo(
        path=str(seq.frame_paths[0].parent),
        width=first.width,
        height=first.height,
        num_frames=len(seq),
        fps=Fraction(24),
        time_base=FRAME_TIME_BASE,
        codec="jpeg",
    )
    out_dir.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def open_frames(lo: int, hi: int, _final: bool):
        yield (first if i == 0 else seq.frame(i) for i in range(lo, hi))

    timings: dict[str, float] = {"track": 0.0}
    stepped = 0
    with ClipSession(engine, info, memory_cfg) as session:
        session.set_prompts(prompts)
        for frame, result in results_in_order(session, open_frames, timings=timings):
            t0 = time.perf_counter()
            labels = labels_from_result(result, frame.height, frame.width)
            timings["track"] += time.perf_counter() - t0
            stepped += 1
            write_label_png(out_dir / f"{seq.frame_paths[frame.index].stem}.png", labels)
    objects = len({p.obj_id for p in prompts})
    return SequenceRun(seq.name, stepped, objects, timings["track"], peak_rss_mib())


def run_bench(
    dataset_dir: str | Path,
    engine,
    *,
    memory_cfg: MemoryConfig,
    out_dir: str | Path,
    sequences: list[str] | None = None,
    protocol: str = "davis",
    label: str = "",
) -> BenchReport:
    """Track, write and score every sequence (or those named) of a DAVIS-layout dataset with
    one loaded ``engine`` (Engine protocol). Predictions go to ``out_dir/<seq>/<frame>.png``
    (DAVIS palette PNGs). The engine is not closed: the caller owns it."""
    dataset = DavisDataset(dataset_dir)
    names = list(sequences) if sequences else dataset.sequences
    out = Path(out_dir)
    runs = [track_sequence(dataset.sequence(n), engine, memory_cfg, out / n) for n in names]
    evaluation = evaluate_dirs(out, dataset.annotation_dir, protocol, names)
    return BenchReport(
        model_id=getattr(engine, "model_id", "?"),
        memory_policy=memory_cfg.policy,
        sequences=runs,
        evaluation=evaluation,
        label=label,
    )

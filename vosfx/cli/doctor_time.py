"""`vosfx doctor --time`: each precision this machine could run, timed on a short clip.

The rules of ``--precision auto`` (:mod:`vosfx.engine.auto_precision`) say which tier a CPU
should run; this measures them here, through the same pipeline as ``vosfx matte`` (decoding,
the model, refinement and an FFV1 matte written to a temporary folder): a made-up 1280x720
clip of a disc moving over noise, the disc's mask on its first frame. Each tier's engine is
loaded, the clip matted and the engine closed before the next. A frame's time is the median
interval between the frame events after the prompted frame (the memory bank filling, as at
the start of any clip). A tier this machine or install cannot run says why, in the words of
the loader that refuses it. Needs the model: a ``--checkpoint`` file or a model already in
the cache (nothing is downloaded).
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from vosfx.config import ModelConfig
from vosfx.engine.loader import backend_for
from vosfx.models import cache

Line = tuple[str, str, str]  # (what, state, detail), as doctor's checks
CLIP_SIZE = (1280, 720)


def tiers(model: ModelConfig) -> tuple[str, ...]:
    """The precisions worth timing: fp32 alone on the torch backend; fp32 and fp16 where
    ONNX Runtime has a GPU provider (and the device is not the CPU); else fp32 and the CPU
    tiers."""
    if backend_for(model) == "torch":
        return ("fp32",)
    import onnxruntime as ort

    from vosfx.engine.ort_runtime import auto_providers

    gpu = model.device != "cpu" and len(auto_providers(ort.get_available_providers())) > 1
    return ("fp32", "fp16") if gpu else ("fp32", "bf16", "int8")


def write_clip(folder: Path, frames: int) -> tuple[Path, Path]:
    """``folder/clip/`` (PNG frames: a disc moving over noise) and ``folder/mask.png`` (the
    disc on the first frame). Seeded: the same clip on every machine."""
    import cv2
    import numpy as np

    width, height = CLIP_SIZE
    rng = np.random.default_rng(0)
    ground = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (0, 0), 3)
    clip = folder / "clip"
    clip.mkdir()
    first = np.zeros((height, width), np.uint8)
    for i in range(frames):
        picture = ground.copy()
        disc = np.zeros((height, width), np.uint8)
        centre = (int(width * (0.3 + 0.4 * i / max(frames - 1, 1))), height // 2)
        cv2.circle(disc, centre, height // 6, 255, -1)
        picture[disc > 0] = (40, 160, 230)
        cv2.imwrite(str(clip / f"frame.{i:04d}.png"), picture)
        if i == 0:
            first = disc
    mask_path = folder / "mask.png"
    cv2.imwrite(str(mask_path), first)
    return clip, mask_path


def time_tier(
    model: ModelConfig, clip: Path, mask: Path, out: Path
) -> tuple[float, float, tuple[str, ...]]:
    """(seconds to load the engine, median seconds a frame, the run's warnings: a provider
    missing, a tier in a slower form) of one tier. Raises the loader's or the pipeline's
    VosfxError where the tier cannot run."""
    from vosfx import pipeline
    from vosfx.engine import load_engine
    from vosfx.job import Job, PromptSpec
    from vosfx.presets import resolve_config

    config = replace(resolve_config(["matte-ffv1"], use_user_config=False), model=model)
    job = Job(str(clip), (PromptSpec(frame=0, mask=str(mask)),), str(out), config=config)
    t0 = time.perf_counter()
    engine = load_engine(model)
    loaded = time.perf_counter() - t0
    stamps: list[float] = []

    def frame_done(ev) -> None:
        if ev.event == "frame":
            stamps.append(time.perf_counter())

    try:
        report = pipeline.run(job, engine=engine, on_progress=frame_done)
    finally:
        engine.close()
    intervals = [b - a for a, b in itertools.pairwise(stamps[1:])]
    return loaded, statistics.median(intervals), tuple(report.warnings)


def run_timing(model: ModelConfig, frames: int, say: Callable[[Line], None]) -> list[Line]:
    """Time each of :func:`tiers` (``say`` gets each line as it is known: a tier takes tens of
    seconds) and end with which is fastest here and what ``--precision auto`` takes."""
    from vosfx.engine.auto_precision import choose
    from vosfx.errors import VosfxError

    lines: list[Line] = []

    def line(what: str, state: str, detail: str) -> None:
        lines.append((what, state, detail))
        say(lines[-1])

    if frames < 3:
        raise ValueError("frames: at least 3 (the prompted frame, then two intervals)")
    if not model.checkpoint and not cache.is_cached(model.name):  # ModelError if unknown
        line(
            "time",
            "missing",
            f"model {model.name} is not in the cache: pass --checkpoint FILE, or run "
            f"`vosfx models pull {model.name}` first (doctor downloads nothing)",
        )
        return lines
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vosfx-doctor-") as tmp:
        clip, mask = write_clip(Path(tmp), frames)
        for tier in tiers(model):
            out = Path(tmp) / f"{tier}.mkv"
            try:
                loaded, per_frame, warned = time_tier(
                    replace(model, precision=tier), clip, mask, out
                )
            except VosfxError as err:
                line(f"time {tier}", "missing", str(err))
                continue
            seconds[tier] = per_frame
            versus = (
                f", {seconds['fp32'] / per_frame:.2f}x fp32"
                if tier != "fp32" and "fp32" in seconds
                else ""
            )
            size = model.image_size or 1024
            line(
                f"time {tier}",
                "ok",
                f"{per_frame:.2f} s a frame{versus} (median of frames 2-{frames} of a "
                f"{CLIP_SIZE[0]}x{CLIP_SIZE[1]} clip at {size} px, refined and written; "
                f"loading {loaded:.1f} s)" + "".join(f"; warning: {w}" for w in warned),
            )
    if seconds:
        best = min(seconds, key=seconds.__getitem__)
        auto, why = choose(backend_for(model), model.device)
        line(
            "time",
            "info",
            f"fastest here: {best}; --precision auto takes {auto} ({why})",
        )
    return lines

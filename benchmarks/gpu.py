"""Issue 17 item 6 in one command, for a machine with a GPU (the device tool lends one to some
sessions, for 15 minutes): frames/s of SAM 2.1 tiny, small, base-plus and large at 1080p with
decoding and writing included, against the official predictor on the same GPU.

For each model (the real architecture from sam2's config, seeded random weights: speed does
not depend on the values) it measures, in one process one after the other:

- ``official``: sam2's SAM2VideoPredictor on the same frames under bfloat16 autocast (as
  SAM 2's README runs it), first, before anything of vosfx's ran on the model: frames/s of the
  second ``propagate_in_video`` pass (model only; its frames are loaded by ``init_state``
  beforehand), the number the published anchors are (official SAM 2.1 on an A100, compiled:
  91/85/64/40 frames/s for tiny/small/base-plus/large);
- ``vosfx torch``: ``vosfx.pipeline.run`` on the torch backend (bfloat16 autocast on CUDA),
  a 1080p H.264 clip -> decode -> model -> refinement (balanced) -> ProRes 4444: frames/s of
  the second of two renders with the loaded engine (the first pays the warm-up, reported
  apart) and of its tracking thread; then "tracking alone", the official predictor's
  conditions: the same frames from memory, nothing decoded or written (``track_arrays``);
- ``vosfx onnx <device> fp16``: the same renders on ONNX Runtime's CUDA and TensorRT
  execution providers (fp16 bundle, IOBinding), where the installed onnxruntime has them and
  TensorRT's library loads; otherwise the row says why. On the first model also fp32 and
  fp16 with IOBinding off;
- on the first model also ``vosfx torch, 5 ms switch``: the torch render again with the
  interpreter's thread switch interval left at CPython's 5 ms, where ``vosfx.pipeline.run``
  holds it at 0.25 ms (``vosfx/pipeline/switching.py``): what that change does on a GPU
  host, whose tracking thread runs Python (measured on the CPU only, in a model of it:
  ``benchmarks/host_bound.py``).

    python benchmarks/gpu.py --out DIR                       # on the GPU machine
    python benchmarks/gpu.py --device cpu --models tiny --frames 3 --size 256 \\
        --width 320 --height 180 --out /tmp/g                # a smoke test anywhere

Prints a table and writes ``DIR/gpu.json`` (after each model). benchmarks/gpu_carry.sh
prepares what the lent machine lacks and prints the device calls; docs/benchmarks/gpu.md has
the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# run as a script, this file's folder leads sys.path and would shadow the `onnx` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

MODELS = {  # name -> (registry id, sam2 config, checkpoint file name as the registry has it)
    "tiny": ("sam2.1-tiny", "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "small": ("sam2.1-small", "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "base_plus": (
        "sam2.1-base-plus",
        "configs/sam2.1/sam2.1_hiera_b+.yaml",
        "sam2.1_hiera_base_plus.pt",
    ),
    "large": ("sam2.1-large", "configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
}
ANCHORS = {"tiny": 91, "small": 85, "base_plus": 64, "large": 40}  # official, A100, compiled
# an override of vosfx_render's, not the model's: the switch interval its renders run at
SWITCH = "switch_interval_s"


def make_clip_and_mask(work: Path, n: int, width: int, height: int):
    """An n-frame H.264 clip (a moving square over a gradient), its frames as JPEGs for the
    official predictor, and the first frame's mask."""
    import numpy as np
    from media import make_clip, moving_square_frame
    from PIL import Image

    frames, mask = [], None
    for i in range(n):
        rgb, m = moving_square_frame(i, width, height)
        frames.append(rgb)
        mask = m if mask is None else mask
    clip = make_clip(
        work / "clip.mp4",
        n=n,
        width=width,
        height=height,
        frames=iter(frames),
        options={"preset": "ultrafast", "crf": "18"},
        bt709=True,
    )
    jpegs = work / "jpegs"
    jpegs.mkdir()
    for i, rgb in enumerate(frames):
        Image.fromarray(rgb).save(jpegs / f"{i:05d}.jpg", quality=95)
    assert mask is not None
    Image.fromarray(mask.astype(np.uint8) * 255).save(work / "mask.png")
    return clip, jpegs, mask, frames


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def clip_job(work: Path, clip: Path, config, output: str):
    """The render of the benchmark clip, prompted by frame 0's mask, to ``work/output``."""
    from vosfx.job import Job, PromptSpec

    return Job(
        input=str(clip),
        prompts=(PromptSpec(frame=0, mask=str(work / "mask.png")),),
        output=str(work / output),
        config=config,
        overwrite=True,
    )


def bare_tracking(engine, frames: list, mask) -> float:
    """Frames/s of vosfx's tracking alone, as the official predictor is measured: the frames
    already in memory (1080p RGB, resized to the model on the tracking thread), nothing
    decoded, refined or written (``track_arrays``: the one loop's tracking half); frame 0,
    which holds the prompt, excluded."""
    from vosfx.pipeline import track_arrays
    from vosfx.types import Prompt

    times = []
    t = time.perf_counter()
    for _frame, _result in track_arrays(engine, frames, [Prompt(0, 1, mask=mask)]):
        now = time.perf_counter()
        times.append(now - t)
        t = now
    steady = times[1:] or times
    return round(len(steady) / sum(steady), 2)


def vosfx_render(
    args, work: Path, ckpt: Path, model_id: str, clip: Path, overrides: dict, bare=None
):
    """Renders through vosfx's one loop with one loaded engine, twice: the first render pays
    the warm-up (CUDA context, cuDNN's algorithm search, ONNX Runtime's first runs), the
    second is the steady speed. Frames/s of each render and of its tracking (JobReport
    timings); the model's load time apart. ``bare`` (frames, mask): also the tracking alone
    (:func:`bare_tracking`), after the renders, the official predictor's conditions.
    ``overrides[SWITCH]``: the renders hold the switch interval at that, not at
    :data:`vosfx.pipeline.switching.SWITCH_INTERVAL_S`."""
    import contextlib
    from unittest import mock

    from vosfx.config import build_config
    from vosfx.engine import load_engine
    from vosfx.pipeline import loop, run, switching
    from vosfx.presets import resolve_config

    overrides = dict(overrides)
    interval = overrides.pop(SWITCH, switching.SWITCH_INTERVAL_S)
    seen: list[float] = []  # the interval in force while each render ran

    @contextlib.contextmanager
    def held():
        with switching.short_switch_interval(interval):
            seen.append(sys.getswitchinterval())
            yield

    model = {"name": model_id, "checkpoint": str(ckpt), "image_size": args.size, **overrides}
    config = resolve_config(["balanced", "prores4444"], {"model": model})
    cuda = args.device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    engine = load_engine(build_config({"model": model}).model)
    load_s = time.perf_counter() - t0
    name = "-".join(str(v) for v in overrides.values())
    reports = []
    try:
        for attempt_no in range(2):
            job = clip_job(work, clip, config, f"out-{model_id}-{name}-{attempt_no}.mov")
            sync(args.device)
            with mock.patch.object(loop, "short_switch_interval", held):
                reports.append(run(job, engine=engine))
            sync(args.device)
        bare_fps = bare_tracking(engine, *bare) if bare is not None else None
        runtime = engine.runtime() if hasattr(engine, "runtime") else {}
    finally:
        engine.close()

    def rates(report) -> dict:
        track = report.timings_s.get("track", 0.0)
        return {
            "render_fps": round(report.fps, 2),
            "track_fps": round(report.frames / track, 2) if track > 0 else None,
        }

    first, warm = reports
    out = {
        "frames": warm.frames,
        "switch_interval_ms": sorted({round(v * 1000, 3) for v in seen}),
        "load_s": round(load_s, 2),
        **rates(warm),
        "bare_track_fps": bare_fps,
        "first_render": rates(first),
        "timings_s": {k: round(v, 3) for k, v in warm.timings_s.items()},
        "runtime": runtime,
    }
    if cuda and overrides.get("backend") == "torch":
        import torch

        out["torch_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def official(args, cfg: str, ckpt: Path, jpegs: Path, mask) -> dict:
    """sam2's SAM2VideoPredictor: frames/s of propagate_in_video (frame 0 excluded: it holds
    the prompt), under bfloat16 autocast on CUDA as SAM 2's README runs it."""
    import contextlib

    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from vosfx.models.checkpoint import size_overrides

    t0 = time.perf_counter()
    pred = build_sam2_video_predictor(
        cfg, str(ckpt), device=args.device, hydra_overrides_extra=size_overrides(args.size)
    )
    load_s = time.perf_counter() - t0
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if args.device.startswith("cuda")
        else contextlib.nullcontext()
    )
    passes: list[list[float]] = []
    with warnings.catch_warnings(), torch.inference_mode(), autocast:
        warnings.simplefilter("ignore")
        state = pred.init_state(str(jpegs))
        pred.add_new_mask(state, 0, 1, mask)
        for _ in range(2):  # the first pass pays the warm-up; the second is the steady speed
            times = []
            sync(args.device)
            t = time.perf_counter()
            for _ in pred.propagate_in_video(state):
                sync(args.device)
                now = time.perf_counter()
                times.append(now - t)
                t = now
            passes.append(times[1:] or times)  # frame 0 holds the prompt
    del pred, state
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    first, steady = passes
    return {
        "frames": len(steady) + 1,
        "load_s": round(load_s, 2),
        "track_fps": round(len(steady) / sum(steady), 2),
        "first_pass_fps": round(len(first) / sum(first), 2),
    }


def attempt(fn, *a) -> dict | str:
    """``fn(*a)``, or the error it raised as text: one failing measurement must not lose the
    others of a 15-minute lease."""
    import traceback

    try:
        return fn(*a)
    except Exception as err:  # noqa: BLE001 - reported, not handled
        tail = traceback.format_exc().strip().splitlines()[-6:]
        return f"failed: {type(err).__name__}: {err} | " + " / ".join(tail)


def onnx_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def onnx_runs(args, providers: list[str], first_model: bool) -> list[tuple[str, dict | str]]:
    """(row key, the model overrides of an ONNX render, or why it is not run). ONNX Runtime
    lists its GPU providers whether or not their libraries load: TensorRT's are looked for
    here, CUDA's show in the sessions' providers (``runtime``), which a failed load turns
    into CPUExecutionProvider."""
    import ctypes

    out: list[tuple[str, dict | str]] = []
    wanted = {
        "cuda": "CUDAExecutionProvider",
        "tensorrt": "TensorrtExecutionProvider",
        "cpu": "CPUExecutionProvider",
    }
    for device in filter(None, args.onnx.split(",")):
        provider = wanted[device]
        key = f"vosfx onnx {device} fp16"
        if provider not in providers:
            out.append((key, f"not run: onnxruntime has {providers or 'no providers'}"))
            continue
        if device == "tensorrt":
            try:
                ctypes.CDLL("libnvinfer.so.10")
            except OSError as err:
                out.append((key, f"not run: TensorRT's library is not on this machine ({err})"))
                continue
        base = {"backend": "onnx", "device": device}
        out.append((key, {**base, "precision": "fp16"}))
        if first_model:  # what fp16 and IOBinding each bring, on the first model only
            out.append((f"vosfx onnx {device} fp32", {**base, "precision": "fp32"}))
            if device != "cpu":
                out.append(
                    (
                        f"vosfx onnx {device} fp16 io_binding off",
                        {**base, "precision": "fp16", "io_binding": "off"},
                    )
                )
    return out


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| model | vosfx torch bf16: render f/s (decode, model, refine, ProRes) | tracking f/s "
            "| tracking alone f/s | vosfx onnx cuda fp16: render f/s | tracking f/s "
            "| tracking alone f/s | official bf16 tracking f/s "
            "| official, A100 compiled (published) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def get(row, key, field):
        value = row.get(key)
        if isinstance(value, dict):
            return value.get(field, "-")
        return "-" if not value else "not run" if value.startswith("not run") else "failed"

    for row in rows:
        t, o = "vosfx torch", "vosfx onnx cuda fp16"
        lines.append(
            f"| {row['model']} | {get(row, t, 'render_fps')} | {get(row, t, 'track_fps')} "
            f"| {get(row, t, 'bare_track_fps')} "
            f"| {get(row, o, 'render_fps')} | {get(row, o, 'track_fps')} "
            f"| {get(row, o, 'bare_track_fps')} "
            f"| {get(row, 'official', 'track_fps')} | {ANCHORS[row['model']]} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=", ".join(MODELS))
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--size", type=int, default=1024, help="model image size")
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--onnx",
        default="cuda,tensorrt",
        help="ONNX Runtime devices to render on (cuda, tensorrt, cpu); empty: none",
    )
    ap.add_argument("--skip", default="", help="comma list: official")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; known: {', '.join(MODELS)}")
    skip = set(filter(None, args.skip.split(",")))
    args.out.mkdir(parents=True, exist_ok=True)

    import torch
    from ckpt import make_checkpoint

    try:  # ONNX Runtime's CUDA libraries from the nvidia packages torch loads its own from
        import onnxruntime as ort

        ort_version = ort.__version__
        if torch.cuda.is_available() and hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception as err:  # noqa: BLE001 - the sessions' providers will say
                print(f"onnxruntime.preload_dlls: {err}", flush=True)
    except ImportError:
        ort_version = None
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "onnxruntime": ort_version,
        "onnxruntime_providers": onnx_providers(),
        "cpus": os.cpu_count(),
        "device": args.device,
        "clip": f"{args.frames} frames {args.width}x{args.height} H.264, model at {args.size}",
    }
    print(json.dumps(info), flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="vosfx-gpu-") as tmp:
        work = Path(tmp)
        clip, jpegs, mask, frames = make_clip_and_mask(work, args.frames, args.width, args.height)
        for name in names:
            model_id, cfg, file_name = MODELS[name]
            t0 = time.perf_counter()
            ckpt, _sha = make_checkpoint(work / file_name, cfg)
            row: dict = {"model": name, "checkpoint_s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            if "official" not in skip:  # first: nothing of vosfx's has run on this model yet
                row["official"] = attempt(official, args, cfg, ckpt, jpegs, mask)
                print(json.dumps({"model": name, "official": row["official"]}), flush=True)
            torch_run = {"backend": "torch", "device": args.device}
            runs: list[tuple[str, dict | str]] = [("vosfx torch", torch_run)]
            if name == names[0]:  # the switch interval's part, beside the render above
                runs.append(("vosfx torch, 5 ms switch", {**torch_run, SWITCH: 0.005}))
            runs += onnx_runs(args, onnx_providers(), first_model=name == names[0])
            for key, overrides in runs:
                if isinstance(overrides, str):
                    row[key] = overrides
                else:
                    row[key] = attempt(
                        vosfx_render, args, work, ckpt, model_id, clip, overrides, (frames, mask)
                    )
                print(json.dumps({"model": name, key: row[key]}), flush=True)
            ckpt.unlink()
            # written after each model: a run cut short by its time limit keeps what it measured
            (args.out / "gpu.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    print("\n" + table(rows))
    first = rows[0] if rows else {}
    now, before = first.get("vosfx torch"), first.get("vosfx torch, 5 ms switch")
    if isinstance(now, dict) and isinstance(before, dict):
        print(
            f"\n{first['model']}, vosfx torch render at a 0.25 ms / 5 ms switch interval: "
            f"{now['render_fps']} / {before['render_fps']} f/s, its tracking "
            f"{now['track_fps']} / {before['track_fps']} f/s"
        )


if __name__ == "__main__":
    main()

"""Where a frame's time goes on a GPU: one model, vosfx's torch and ONNX Runtime CUDA renders
and the official predictor, each warmed up once and then profiled: the GPU's kernel and copy
time against the wall time (torch.profiler, through CUPTI: ONNX Runtime's kernels too), and
the tracking thread's Python functions by own time (cProfile).

    python benchmarks/gpu_profile.py --out DIR [--model tiny --size 1024 --frames 24]

Writes DIR/profile.txt. Runs on the lent GPU machine after benchmarks/gpu_device.sh has made
its /tmp/site (docs/benchmarks/gpu.md); on a CPU with ``--device cpu`` as a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))


def _load_gpu():
    import importlib.util

    spec = importlib.util.spec_from_file_location("vosfx_gpu_bench", HERE / "gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def profiled(fn, device: str, out: list[str], title: str) -> None:
    """Runs ``fn`` under torch.profiler and cProfile; appends the summary to ``out``."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    prof = cProfile.Profile()
    with profile(activities=activities) as tp:
        t0 = time.perf_counter()
        prof.enable()
        frames = fn()
        prof.disable()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    events = tp.key_averages()
    # the kernels' and copies' own events (an operator's event counts its kernels again)
    gpu_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)
    out.append(f"\n## {title}: {frames} frames, {wall:.2f} s wall under the profilers")
    out.append(
        f"GPU time (kernels and copies) {gpu_us / 1e6:.3f} s = "
        f"{gpu_us / 1e3 / max(frames, 1):.1f} ms per frame; wall "
        f"{wall * 1e3 / max(frames, 1):.1f} ms per frame"
    )
    if device.startswith("cuda"):
        out.append(
            events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60)
        )
    stream = io.StringIO()
    pstats.Stats(prof, stream=stream).sort_stats("tottime").print_stats(25)
    out.append(stream.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--onnx", default="cuda", help="ONNX Runtime device; empty: none")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = _load_gpu()
    import torch
    from ckpt import make_checkpoint
    from sam2.build_sam import build_sam2_video_predictor

    from vosfx.config import build_config
    from vosfx.engine import load_engine
    from vosfx.models.checkpoint import size_overrides
    from vosfx.pipeline import run
    from vosfx.presets import resolve_config

    if args.onnx:
        with contextlib.suppress(Exception):
            import onnxruntime as ort

            ort.preload_dlls()
    model_id, cfg, file_name = gpu.MODELS[args.model]
    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    clip_text = f"{args.frames} frames {args.width}x{args.height}"
    report = [f"# {args.model} at {args.size}, {clip_text}, {where}"]
    with tempfile.TemporaryDirectory(prefix="vosfx-gpuprof-") as tmp:
        work = Path(tmp)
        clip, jpegs, mask, _frames = gpu.make_clip_and_mask(
            work, args.frames, args.width, args.height
        )
        ckpt, _ = make_checkpoint(work / file_name, cfg)
        renders = [("vosfx torch", {"backend": "torch", "device": args.device})]
        if args.onnx:
            renders.append(
                (
                    f"vosfx onnx {args.onnx} fp16",
                    {"backend": "onnx", "device": args.onnx, "precision": "fp16"},
                )
            )
        for title, overrides in renders:
            model = {
                "name": model_id,
                "checkpoint": str(ckpt),
                "image_size": args.size,
                **overrides,
            }
            config = resolve_config(["balanced", "prores4444"], {"model": model})
            engine = load_engine(build_config({"model": model}).model)
            try:

                def render(i=[0], title=title, config=config, engine=engine):  # noqa: B006
                    i[0] += 1
                    rep = run(gpu.clip_job(work, clip, config, f"out-{i[0]}.mov"), engine=engine)
                    report.append(f"{title}: timings {rep.timings_s}")
                    return rep.frames

                render()  # warm-up
                profiled(render, args.device, report, title)
            finally:
                engine.close()
            # written after each render: a run cut short by its time limit keeps it
            (args.out / "profile.txt").write_text("\n".join(report))

        pred = build_sam2_video_predictor(
            cfg, str(ckpt), device=args.device, hydra_overrides_extra=size_overrides(args.size)
        )
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if args.device.startswith("cuda")
            else contextlib.nullcontext()
        )
        with warnings.catch_warnings(), torch.inference_mode(), autocast:
            warnings.simplefilter("ignore")
            state = pred.init_state(str(jpegs))
            pred.add_new_mask(state, 0, 1, mask)

            def propagate():
                n = 0
                for _ in pred.propagate_in_video(state):
                    n += 1
                return n

            propagate()
            profiled(propagate, args.device, report, "official propagate_in_video")
    text = "\n".join(report)
    (args.out / "profile.txt").write_text(text)
    print(text[-6000:])


if __name__ == "__main__":
    main()

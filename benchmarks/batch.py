"""Batch throughput: 1 vs 2 local workers, model kept loaded vs reloaded per job, Ray vs local.

Runs the real SAM 2.1 tiny architecture (seeded random weights: no pretrained weights on the
project machines; speed does not depend on the weights) on CPU through the torch backend (or
``--backend onnx``, the default runtime, its bundle exported first), on a batch of short
synthetic clips (the moving square). Prints what it measured with machine info and load.

    python benchmarks/batch.py                    # defaults: 4 clips x 4 frames, image 256
    python benchmarks/batch.py --clips 8 --frames 12 --image-size 512 --no-ray
    python benchmarks/batch.py --backend onnx --image-size 512 --no-ray --skip-overhead
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# run as a script, this file's folder leads sys.path and its onnx.py would shadow the `onnx`
# package that exporting the onnx backend's bundle needs
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO / "tests"))  # synthetic media + random-weight checkpoint helpers


def _machine() -> str:
    return (
        f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def _load() -> str:
    return "load avg " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def make_manifest(
    folder: Path, clips: int, frames: int, ckpt: Path, image_size: int, backend: str = "torch"
) -> Path:
    from batch_fakes import clip_with_mask

    rows = []
    for i in range(clips):
        clip_with_mask(folder, f"clip{i:02d}", n=frames, width=320, height=240)
        rows.append(f'[[jobs]]\ninput = "clip{i:02d}.mp4"\nmask = "clip{i:02d}.mask.png"\n')
    (folder / "out").mkdir(exist_ok=True)
    manifest = folder / "batch.toml"
    manifest.write_text(
        '[defaults]\noutput = "out/{stem}.mkv"\npresets = ["matte-ffv1"]\n'
        f'overrides = {{model = {{checkpoint = "{ckpt}", backend = "{backend}", device = "cpu", '
        f'image_size = {image_size}}}, refine = {{edge = "bilinear"}}, '
        'memory = {policy = "sam2"}}\n' + "".join(rows)
    )
    return manifest


def timed_batch(manifest: Path, state: Path, **kwargs) -> tuple[float, object]:
    from vosfx.batch import run_batch

    for f in (manifest.parent / "out").iterdir():
        f.unlink()
    t0 = time.perf_counter()
    report = run_batch(manifest, state_dir=state, **kwargs)
    elapsed = time.perf_counter() - t0
    report.raise_for_failures()
    return elapsed, report


def per_job_overhead(manifest: Path) -> tuple[float, float, float]:
    """(model load s, job s with the model kept loaded, job s loading the model per job), in
    this process, median of the clips."""
    from vosfx import pipeline
    from vosfx.batch.manifest import load_manifest
    from vosfx.engine import load_engine

    jobs = [bj.job for bj in load_manifest(manifest).jobs]
    t0 = time.perf_counter()
    engine = load_engine(jobs[0].config.model)
    load_s = time.perf_counter() - t0
    kept, reloaded = [], []
    pipeline.run(replace(jobs[0], overwrite=True), engine=engine)  # warm-up: first-call costs
    for job in jobs:
        job = replace(job, overwrite=True)
        t0 = time.perf_counter()
        pipeline.run(job, engine=engine)
        kept.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pipeline.run(job)  # loads and closes the model itself
        reloaded.append(time.perf_counter() - t0)
    engine.close()
    kept.sort()
    reloaded.sort()
    return load_s, kept[len(kept) // 2], reloaded[len(reloaded) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    ap.add_argument(
        "--skip-overhead", action="store_true", help="skip the kept-vs-reloaded measurement"
    )
    ap.add_argument(
        "--workers", default="1,2", help='local worker counts to time, comma-separated (none: "")'
    )
    args = ap.parse_args()
    from ckpt import make_checkpoint

    print(f"machine: {_machine()}")
    print(
        f"batch: {args.clips} clips x {args.frames} frames, 320x240, SAM 2.1 tiny "
        f"(random weights), {args.backend} backend on CPU, image_size {args.image_size}, "
        "ffv1 matte output"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt, _ = make_checkpoint(tmp / "tiny.pt")
        manifest = make_manifest(tmp, args.clips, args.frames, ckpt, args.image_size, args.backend)
        frames = args.clips * args.frames
        if args.backend == "onnx":  # the bundle exported once, before anything is timed
            from vosfx.batch.manifest import load_manifest
            from vosfx.engine import load_engine

            load_engine(load_manifest(manifest).jobs[0].job.config.model).close()
        print(f"[{_load()}]")
        if not args.skip_overhead:
            load_s, kept_s, reloaded_s = per_job_overhead(manifest)
            print(
                f"per job (median): model kept loaded {kept_s:.2f} s, reloaded per job "
                f"{reloaded_s:.2f} s (model load alone {load_s:.2f} s) [{_load()}]"
            )
        for workers in (int(w) for w in args.workers.split(",") if w):
            elapsed, _ = timed_batch(
                manifest, tmp / f"state{workers}", executor="local", workers=workers
            )
            print(
                f"local, {workers} worker(s): {elapsed:.1f} s for {frames} frames = "
                f"{frames / elapsed:.2f} fps, {args.clips / elapsed * 60:.1f} clips/min "
                f"(incl. worker start-up and model load) [{_load()}]"
            )
        if not args.no_ray:
            from vosfx.batch.cluster import RayExecutor, init_local_ray

            t0 = time.perf_counter()
            init_local_ray(2)
            start_s = time.perf_counter() - t0
            elapsed, _ = timed_batch(manifest, tmp / "state_ray", executor=RayExecutor(workers=2))
            print(
                f"ray (local, 2 actors): {elapsed:.1f} s for {frames} frames = "
                f"{frames / elapsed:.2f} fps (+{start_s:.1f} s to start Ray itself) "
                f"[{_load()}]"
            )
            import ray

            ray.shutdown()


if __name__ == "__main__":
    main()

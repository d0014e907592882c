"""End-to-end speed of the ONNX Runtime backend vs the torch backend vs sam2's own
SAM2VideoPredictor, per-stage milliseconds and peak RSS, on a real DAVIS clip.

Every measurement runs in its own subprocess (clean peak RSS, no shared thread pools). Weights
are seeded random (no pretrained SAM 2 weights exist on the project's machines): speed and
memory do not depend on the values.

    python benchmarks/onnx.py                      # 1024 px, 12 frames of blackswan, 2 threads
    python benchmarks/onnx.py --size 256 --frames 8 --runs onnx,torch   # quick
    python benchmarks/onnx.py --interleave onnx,onnx-bf16,onnx-int8    # one process, a frame
                                                   # of each in turn: ratios on a loaded machine

Prints one JSON line per run and a table; ``--json PATH`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
# run as a script, this file's folder leads sys.path and this file would shadow the `onnx`
# package that the exporter imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
DATA = REPO.parent / "shared" / "data" / "davis"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# the first frame tracked with a full memory bank (num_maskmem 7: frame 0 and frames 1-6)
BANK_FULL = 7
# name -> (kind, options)
RUNS = {
    "official": ("official", {}),
    "torch": ("torch", {}),
    "onnx": ("onnx", {"precision": "fp32", "opt": "all"}),
    # the default as the thirty-ninth pass left it: memory attention's attentions in ONNX
    # Runtime's query blocks (float32), not in the int16 kernel between the parts variant's graphs
    "onnx-split": ("onnx", {"precision": "fp32", "opt": "all", "attention": "split"}),
    # on CPUs with AMX: the default with the linear layers' products in ONNX Runtime, not in
    # the int16 kernel's AMX form (VOSFX_AMX_LINEAR=0; elsewhere the same as onnx)
    "onnx-no-amx-linear": (
        "onnx",
        {"precision": "fp32", "opt": "all", "env": {"VOSFX_AMX_LINEAR": "0"}},
    ),
    "onnx-basic-opt": ("onnx", {"precision": "fp32", "opt": "basic"}),
    "onnx-int8": ("onnx", {"precision": "int8", "opt": "all"}),
    # the int8 tier as the twenty-fifth pass left it: memory attention's scores float32, not
    # from int8 queries and keys (vosfx.engine.ort_attention's INT8_SCORES emptied)
    "onnx-int8-25": ("onnx", {"precision": "int8", "opt": "all", "int8_scores": False}),
    # the bf16 tier: the four per-frame stages on OpenVINO in bfloat16 with AMX, the two heavy
    # ones without (openvino_runtime.tier_stages)
    "onnx-bf16": ("onnx", {"precision": "bf16", "opt": "all"}),
    # the two heavy stages on OpenVINO (the tier without AMX; with AMX, the tier before memory
    # encoder and decoder moved to OpenVINO too)
    "onnx-bf16-heavy": (
        "onnx",
        {"precision": "bf16", "opt": "all", "ov": ("image_encoder", "memory_attention")},
    ),
    # the bf16 tier with memory attention's attention in OpenVINO's fused kernel / split into
    # query blocks (the default: split)
    "onnx-bf16-fused": ("onnx", {"precision": "bf16", "opt": "all", "attention": "fused"}),
    "onnx-bf16-split": ("onnx", {"precision": "bf16", "opt": "all", "attention": "split"}),
    # the tier without AMX before the twenty-second pass: the four per-frame stages on
    # OpenVINO, memory attention's attention in OpenVINO's fused kernel
    "onnx-bf16-four-fused": (
        "onnx",
        {
            "precision": "bf16",
            "opt": "all",
            "ov": ("image_encoder", "memory_attention", "memory_encoder", "decoder"),
            "attention": "fused",
        },
    ),
    # the tier as the twenty-second pass left it: memory attention's shapes dynamic on every
    # call, Hiera's qkv products split afterwards (openvino_runtime's STEADY_SHAPES and
    # SPLIT_PRODUCTS emptied while the backend is built)
    "onnx-bf16-22": (
        "onnx",
        {"precision": "bf16", "opt": "all", "without": ("STEADY_SHAPES", "SPLIT_PRODUCTS")},
    ),
    # the tier as the twenty-third pass left it, but for the guard of the attentions'
    # Transposes (always on): the image encoder's convolutions in bfloat16 too
    # (openvino_runtime's FLOAT32_OPS emptied)
    "onnx-bf16-23": ("onnx", {"precision": "bf16", "opt": "all", "without": ("FLOAT32_OPS",)}),
    # the tier as the twenty-fourth pass left it: memory attention's scores in bfloat16, not
    # from int8 queries and keys (openvino_runtime's INT8_SCORES emptied)
    "onnx-bf16-24": (
        "onnx",
        {"precision": "bf16", "opt": "all", "without": ("INT8_SCORES", "FUSED_ATTENTION")},
    ),
    # the tier as the twenty-sixth pass left it: memory attention's int8 scores multiplied
    # back before a Softmax, not normalised after the values' product (DEFERRED_NORMALISATION)
    "onnx-bf16-26": (
        "onnx",
        {
            "precision": "bf16",
            "opt": "all",
            "without": ("DEFERRED_NORMALISATION", "FUSED_ATTENTION"),
        },
    ),
    # the tier as the twenty-seventh pass left it: memory attention's attentions in query
    # blocks with int8 scores in OpenVINO's graph, not in vosfx's int8 attention kernel
    # (openvino_runtime's FUSED_ATTENTION emptied)
    "onnx-bf16-27": ("onnx", {"precision": "bf16", "opt": "all", "without": ("FUSED_ATTENTION",)}),
    # the tier with no attention kernel: on CPUs with AMX, as before the forty-sixth pass's AMX
    # kernel (vosfx.engine.amx_attention): memory attention in query blocks, Hiera's global
    # attentions OpenVINO's (without AMX the same as onnx-bf16-27)
    "onnx-bf16-no-kernel": (
        "onnx",
        {"precision": "bf16", "opt": "all", "without": ("FUSED_ATTENTION",)},
    ),
    # memory attention's attentions in ONNX Runtime's fused kernel, not the bundle's cpu
    # variant (query blocks: the default on the CPU provider; vosfx/engine/ort_attention.py)
    "onnx-fused": ("onnx", {"precision": "fp32", "opt": "all", "attention": "fused"}),
    "onnx-1thread": ("onnx", {"precision": "fp32", "opt": "all", "threads": 1}),
    "onnx-noarena": ("onnx", {"precision": "fp32", "opt": "all", "arena": False}),
    # --low-memory: the arena off and large blocks mapped on their own (vosfx/engine/heap.py)
    "onnx-low-memory": (
        "onnx",
        {"precision": "fp32", "opt": "all", "arena": False, "map_large": True},
    ),
    # ONNX Runtime's default: one power-of-two arena per session, memory pattern on
    "onnx-session-arenas": ("onnx", {"precision": "fp32", "opt": "all", "shared": False}),
}


def _frames(seq: str, n: int):
    import numpy as np
    from PIL import Image

    rgb = [
        np.asarray(Image.open(DATA / "JPEGImages" / seq / f"{i:05d}.jpg").convert("RGB"))
        for i in range(n)
    ]
    mask = np.asarray(Image.open(DATA / "Annotations" / seq / "00000.png")) == 1
    return rgb, mask


def _timed(obj, names, acc):
    """Wrap obj's methods so their wall time accumulates into acc[name] (seconds)."""
    for name in names:
        fn = getattr(obj, name)

        def wrapper(*a, _fn=fn, _name=name, **k):
            t = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                acc[_name] = acc.get(_name, 0.0) + time.perf_counter() - t

        setattr(obj, name, wrapper)


def _track(backend, rgb, mask, acc):
    from vosfx.engine.loader import SamEngine
    from vosfx.pipeline import track_arrays
    from vosfx.types import Prompt

    _timed(backend, ["encode_image", "track", "mask_as_output", "encode_memory"], acc)
    times = []
    t0 = time.perf_counter()
    for _frame, _res in track_arrays(
        SamEngine(backend, "bench", None), rgb, [Prompt(0, 1, mask=mask)]
    ):
        times.append(time.perf_counter() - t0)  # frame t's time: its tracking, in order
        t0 = time.perf_counter()
    return times


def _onnx_backend(bundle: str, opts: dict, threads: int):
    """The ONNX backend of a RUNS entry's options."""
    from vosfx.engine.heap import map_large_blocks
    from vosfx.engine.onnx_backend import OnnxBackend

    if opts.get("map_large"):
        map_large_blocks()
    from vosfx.engine import openvino_runtime as ovr
    from vosfx.engine import ort_attention

    scored = ort_attention.INT8_SCORES if opts.get("int8_scores", True) else ()
    with (
        ovr.without(*opts.get("without", ())),
        mock.patch.object(ort_attention, "INT8_SCORES", scored),
        mock.patch.dict(os.environ, opts.get("env", {})),  # read as the graphs open
    ):
        return OnnxBackend(
            bundle,
            device="cpu",
            threads=threads,
            precision=opts["precision"],
            optimization=opts["opt"],
            memory_arena=opts.get("arena", True),
            shared_arena=opts.get("shared", True),
            bf16_stages=opts.get("ov"),
            attention=opts.get("attention"),
        )


def worker(args) -> dict:
    """One measurement in this process; returns the result row."""
    kind, opts = RUNS[args.worker]
    threads = opts.get("threads", args.threads)
    rgb, mask = _frames(args.seq, args.frames)
    acc: dict[str, float] = {}
    t_load = time.perf_counter()
    if kind == "official":
        times, load_s = _official(args, threads, mask)
    else:
        if kind == "torch":
            import torch

            from vosfx.engine.loader import torch_backend_for
            from vosfx.models.checkpoint import load_sam2

            torch.set_num_threads(threads)
            backend = torch_backend_for(load_sam2(args.ckpt, image_size=args.size), "cpu")
        else:
            backend = _onnx_backend(args.bundle, opts, threads)
        load_s = time.perf_counter() - t_load
        times = _track(backend, rgb, mask, acc)
    steady = times[1:]
    return {
        "run": args.worker,
        "size": args.size,
        "frames": len(times),
        "threads": threads,
        "load_s": round(load_s, 2),
        "total_s": round(sum(times), 2),
        "fps": round(len(times) / sum(times), 3),
        "fps_steady": round(len(steady) / sum(steady), 3) if steady else None,
        "stage_ms_per_frame": {k: round(1000 * v / len(times), 1) for k, v in acc.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _official(args, threads, mask):
    """sam2's SAM2VideoPredictor over a folder of the same JPEGs; frame times are the
    propagate loop's (init_state's preloading of every frame counted into the first)."""
    import tempfile
    import warnings

    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from vosfx.models.checkpoint import size_overrides

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pred = build_sam2_video_predictor(
        CONFIG, args.ckpt, device="cpu", hydra_overrides_extra=size_overrides(args.size)
    )
    load_s = time.perf_counter() - t0
    folder = Path(tempfile.mkdtemp(prefix="vosfx-bench-"))
    for i in range(args.frames):
        shutil.copy(DATA / "JPEGImages" / args.seq / f"{i:05d}.jpg", folder / f"{i:05d}.jpg")
    times = []
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        state = pred.init_state(str(folder))
        pred.add_new_mask(state, 0, 1, mask)
        for _ in pred.propagate_in_video(state):
            now = time.perf_counter()
            times.append(now - t)
            t = now
    shutil.rmtree(folder)
    return times, load_s


def interleaved(args, names: list[str]) -> dict:
    """The official predictor and vosfx runs in ONE process, stepped a frame each in turn, so
    a shared machine's load falls on all of them alike: per-frame seconds and the median of
    the per-frame ratios against the official predictor (frames 1.. ; frame 0 holds
    init_state). Each runner uses ``args.threads``; only one computes at a time."""
    import tempfile
    import warnings

    import numpy as np
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from vosfx.engine.loader import SamEngine
    from vosfx.models.checkpoint import size_overrides
    from vosfx.pipeline import track_arrays
    from vosfx.types import Prompt

    torch.set_num_threads(args.threads)
    rgb, mask = _frames(args.seq, args.frames)
    folder = Path(tempfile.mkdtemp(prefix="vosfx-bench-"))
    for i in range(args.frames):
        shutil.copy(DATA / "JPEGImages" / args.seq / f"{i:05d}.jpg", folder / f"{i:05d}.jpg")
    pred = build_sam2_video_predictor(
        CONFIG, args.ckpt, device="cpu", hydra_overrides_extra=size_overrides(args.size)
    )

    def official():
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            state = pred.init_state(str(folder))
            pred.add_new_mask(state, 0, 1, mask)
            yield from pred.propagate_in_video(state)

    steppers = {"official": official()}
    for name in names:
        opts = RUNS[name][1]
        engine = SamEngine(_onnx_backend(args.bundle, opts, args.threads), "bench", None)
        steppers[name] = iter(track_arrays(engine, rgb, [Prompt(0, 1, mask=mask)]))
    times: dict[str, list[float]] = {k: [] for k in steppers}
    loads = []
    for _ in range(args.frames):
        loads.append(os.getloadavg()[0])
        for name, it in steppers.items():
            t = time.perf_counter()
            next(it)
            times[name].append(time.perf_counter() - t)
    shutil.rmtree(folder)
    base = np.array(times["official"][1:])
    return {
        "interleaved": list(steppers),
        "size": args.size,
        "frames": args.frames,
        "threads": args.threads,
        "s_per_frame": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "median_s_steady": {k: round(float(np.median(v[1:])), 2) for k, v in times.items()},
        "x_official_median_of_ratios": {
            k: round(float(np.median(base / np.array(v[1:]))), 2) for k, v in times.items()
        },
        # the same from the frame whose memory bank is full on (SAM 2's 7 memories: the
        # conditioning frame and 6 tracked ones), a long clip's steady state
        "x_official_median_of_ratios_bank_full": {
            k: round(float(np.median(base[BANK_FULL - 1 :] / np.array(v[BANK_FULL:]))), 2)
            for k, v in times.items()
            if len(v) > BANK_FULL
        },
        "loadavg_1m": [round(x, 2) for x in loads],
    }


def _machine() -> dict:
    import onnxruntime
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--seq", default="blackswan")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default=",".join(RUNS))
    ap.add_argument("--work", default="/tmp/vosfx-bench-onnx")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--interleave",
        default=None,
        help="comma list of onnx runs stepped frame by frame against the official predictor "
        "in one process (e.g. onnx,onnx-bf16,onnx-int8); prints one JSON line",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--bundle", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    sys.path.insert(0, str(REPO))
    from tests.ckpt import make_checkpoint
    from vosfx.engine.export import export_bundle

    work = Path(args.work)
    ckpt, _ = make_checkpoint(work / "sam2.1_tiny_random.pt")
    t = time.perf_counter()
    bundle = export_bundle(
        str(ckpt),
        out_dir=work / f"bundle-{args.size}",
        image_size=args.size,
        variants=("int8", "bf16"),
    )
    # the variants the loader adds where this CPU runs them (the parts-linear variant where
    # the int16 kernel's AMX form runs the linear products: vosfx.engine.export._amx_linear)
    from vosfx.config import ModelConfig
    from vosfx.engine.export import _amx_linear
    from vosfx.engine.variants import add_variants, automatic

    add_variants(bundle, automatic(linear=_amx_linear(ModelConfig())), lambda _msg: None)
    export_s = time.perf_counter() - t
    print(json.dumps({"machine": _machine(), "export_s_or_reuse": round(export_s, 1)}), flush=True)
    if args.interleave:
        args.ckpt, args.bundle = str(ckpt), str(bundle)
        row = interleaved(args, args.interleave.split(","))
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": _machine(), "row": row}, indent=2))
        return
    rows = []
    for name in args.runs.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--size",
            str(args.size),
            "--frames",
            str(args.frames),
            "--seq",
            args.seq,
            "--threads",
            str(args.threads),
            "--ckpt",
            str(ckpt),
            "--bundle",
            str(bundle),
        ]
        load_before = os.getloadavg()[0]
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        if out.returncode != 0:
            print(json.dumps({"run": name, "error": out.stderr[-2000:]}), flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["loadavg_1m_before"] = round(load_before, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next((r["fps_steady"] for r in rows if r["run"] == "official"), None)
    print(
        f"\n{'run':<16}{'fps':>8}{'steady':>8}{'x official':>11}{'peak MiB':>10}  stages ms/frame"
    )
    for r in rows:
        ratio = f"{r['fps_steady'] / base:.2f}" if base else "-"
        print(
            f"{r['run']:<16}{r['fps']:>8}{r['fps_steady']:>8}{ratio:>11}"
            f"{r['peak_rss_mib']:>10}  {r['stage_ms_per_frame']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": _machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Several objects per frame: one batch through memory attention, decoder and memory encoder
(``Backend.track_many`` / ``encode_memory_many``) vs one call per object, on the torch backend
or the ONNX backend (fp32 on ONNX Runtime, or the bf16 tier on OpenVINO).

Two trackers over the same backend (SAM 2.1 tiny, seeded random weights) track the same N
objects (N mask prompts on frame 0: N rectangles of the first DAVIS blackswan frame) through
the same frames: ``loop`` sees a backend without the batched calls (the per-object fallback
of ``track_many``), ``batched`` the torch backend itself. Each frame is encoded once, then
both trackers step it from those features, in alternating order; the table gives the median
step time per frame (wall clock, and the process's CPU time: all torch threads) over the
frames after the memory bank is full (7 memories), the image encoder's median for context,
and the largest logit difference between the two (masks must be identical).

    python benchmarks/objects.py                       # 512, objects 1 2 4 8
    python benchmarks/objects.py --size 1024 --frames 10
    python benchmarks/objects.py --calls 3            # the backend calls alone, CPU time
    python benchmarks/objects.py --backend onnx       # the ONNX bundle (exported once into
    python benchmarks/objects.py --backend onnx-bf16  #   --work) fp32, or the bf16 tier
    python benchmarks/objects.py --backend onnx-fused # fp32, memory attention fused
    python benchmarks/objects.py --backend onnx-bf16 --size 1024 --separate 2
                                                      # each tracker in its own process
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAVIS = REPO.parent / "shared" / "data" / "davis"
SEQ = "blackswan"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
FULL_BANK = 7  # frames after which every object attends the same, full memory


class PerObject:
    """The wrapped backend without its batched calls: ``track_many`` and
    ``encode_memory_many`` fall back to one call per object."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        if name in ("track_many", "encode_memory_many"):
            raise AttributeError(name)
        return getattr(self._backend, name)


def _masks(h: int, w: int, n: int) -> list:
    """``n`` distinct rectangles (one per object) on a 4 x 2 grid of the frame."""
    import numpy as np

    out = []
    for i in range(n):
        m = np.zeros((h, w), bool)
        r, c = divmod(i, 4)
        y0, x0 = r * h // 2, c * w // 4
        m[y0 + h // 8 : y0 + 3 * h // 8, x0 + w // 16 : x0 + 3 * w // 16] = True
        out.append(m)
    return out


def _backend(kind: str, size: int, threads: int, work: Path) -> Any:
    """The backend under test: torch (SAM 2.1 tiny, seed 0), or the ONNX bundle of a seeded
    random checkpoint (exported into ``work`` once) on ONNX Runtime fp32 or the bf16 tier."""
    import torch

    torch.set_num_threads(threads)
    if kind == "torch":
        from vosfx.engine.loader import torch_backend_for
        from vosfx.models.checkpoint import build_model

        torch.manual_seed(0)
        return torch_backend_for(build_model(CONFIG, image_size=size), "cpu")
    import sys

    sys.path.insert(0, str(REPO))
    from tests.ckpt import make_checkpoint
    from vosfx.engine.export import export_bundle
    from vosfx.engine.onnx_backend import OnnxBackend

    ckpt, _ = make_checkpoint(work / "sam2.1_tiny_random.pt")
    bundle = export_bundle(
        str(ckpt), out_dir=work / f"bundle-{size}", image_size=size, variants=("int8", "bf16")
    )
    precision = "bf16" if kind == "onnx-bf16" else "fp32"
    # onnx-fused: memory attention with ONNX Runtime's fused attention, not the bundle's cpu
    # variant (a Scan over objects of query blocks: the CPU provider's default)
    attention = "fused" if kind == "onnx-fused" else None
    return OnnxBackend(
        bundle, device="cpu", threads=threads, precision=precision, attention=attention
    )


def _clip(frames: int) -> tuple[list, Any]:
    import numpy as np
    from PIL import Image

    from vosfx.types import VideoInfo

    paths = sorted((DAVIS / "JPEGImages" / SEQ).glob("*.jpg"))[:frames]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    h, w = images[0].shape[:2]
    info = VideoInfo(
        path="", width=w, height=h, num_frames=len(images), fps=Fraction(25),
        time_base=Fraction(1, 25),
    )  # fmt: skip
    return images, info


def track(backend: Any, images: list, info: Any, n: int, names: list[str]) -> dict:
    """``n`` objects tracked through ``images`` by the trackers ``names`` ("loop": the
    per-object calls, "batched": one batch per frame), stepping each frame from the same
    features in alternating order. Returns, per tracker, the step times (wall and CPU, frames
    after the bank is full) and every frame's logits (objects in order), and the encoder's
    times."""
    from vosfx.engine.policies import Sam2Policy
    from vosfx.engine.tracker import Tracker
    from vosfx.types import Frame, Prompt

    h, w = images[0].shape[:2]
    made = {"loop": PerObject(backend), "batched": backend}
    trackers = {name: Tracker(made[name], Sam2Policy(), info, fill_hole_area=0) for name in names}
    f0 = Frame(0, images[0], 0, Fraction(1, 25))
    feats0 = backend.encode_image(images[0])
    passes: dict[str, list[int]] = {}
    for name, trk in trackers.items():
        # object ids start at 1 (0 is refused as a prompt's object id)
        for k, m in enumerate(_masks(h, w, n), start=1):
            trk.prompt(f0, Prompt(0, k, mask=m), features=feats0)
        passes[name] = [trk.start_pass(k, 0, 1) for k in range(1, n + 1)]
    out: dict = {name: {"wall": [], "cpu": [], "logits": []} for name in names}
    enc = []
    for t in range(1, len(images)):
        frame = Frame(t, images[t], t, Fraction(1, 25))
        t0 = time.perf_counter()
        feats = backend.encode_image(images[t])
        enc.append(time.perf_counter() - t0)
        for name in names if t % 2 else names[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            res = trackers[name].step(frame, passes[name], features=feats)
            if t > FULL_BANK:
                out[name]["wall"].append(time.perf_counter() - t0)
                out[name]["cpu"].append(time.process_time() - c0)
            out[name]["logits"].append([r.logits for r in res])
    out["encoder"] = enc
    return out


def _compare(loop: list, batched: list) -> tuple[float, bool]:
    """The largest logit difference between two trackers' logits and whether every mask
    (logits > 0) is the same (where not, the pixels that differ and their largest |logit|
    are printed: a logit within the difference of 0 flips)."""
    import numpy as np

    diff, flipped, nearest = 0.0, 0, 0.0
    for a_frame, b_frame in zip(loop, batched, strict=True):
        for a, b in zip(a_frame, b_frame, strict=True):
            diff = max(diff, float(np.abs(a - b).max()))
            differ = (a > 0) != (b > 0)
            if differ.any():
                flipped += int(differ.sum())
                nearest = max(nearest, float(np.abs(a[differ]).max()))
    if flipped:
        print(f"# masks differ at {flipped} pixels, their logits within {nearest:.1e} of 0")
    return diff, flipped == 0


def _summary(n: int, loop: dict, batched: dict, enc: list, diff: float, same: bool) -> dict:
    loop_ms = 1000 * statistics.median(loop["wall"])
    batch_ms = 1000 * statistics.median(batched["wall"])
    return {
        "objects": n,
        "loop_ms": loop_ms,
        "batched_ms": batch_ms,
        "ratio": loop_ms / batch_ms,
        "loop_cpu_ms": 1000 * statistics.median(loop["cpu"]),
        "batched_cpu_ms": 1000 * statistics.median(batched["cpu"]),
        "encoder_ms": 1000 * statistics.median(enc),
        "frames": len(loop["wall"]),
        "max_logit_diff": diff,
        "masks_identical": same,
        "load": os.getloadavg()[0],
    }


def run(backend: Any, size: int, frames: int, objects: list[int]) -> list[dict]:
    """Both trackers in this process, over one backend."""
    images, info = _clip(frames)
    rows = []
    for n in objects:
        got = track(backend, images, info, n, ["loop", "batched"])
        diff, same = _compare(got["loop"]["logits"], got["batched"]["logits"])
        rows.append(_summary(n, got["loop"], got["batched"], got["encoder"], diff, same))
        print(_row(size, rows[-1]), flush=True)
    return rows


def child(backend: Any, frames: int, n: int, name: str, logits: Path) -> None:
    """One tracker alone in this process (``--only``): its times as a JSON line on stdout,
    its logits into ``logits`` (.npz)."""
    import numpy as np

    images, info = _clip(frames)
    got = track(backend, images, info, n, [name])
    flat = {
        f"f{t}_o{k}": a for t, objs in enumerate(got[name]["logits"]) for k, a in enumerate(objs)
    }
    np.savez(logits, **flat)
    print(
        json.dumps({"wall": got[name]["wall"], "cpu": got[name]["cpu"], "encoder": got["encoder"]})
    )


def separate(args: argparse.Namespace, objects: list[int]) -> None:
    """Each tracker in its own process (``--separate ROUNDS``): for each object count, ROUNDS
    rounds of the two, their order alternating; a row per round, with the two processes'
    logits compared. Where the two trackers share one backend in one process, the
    bf16 tier's compiled models for each batch size take turns (docs/benchmarks/objects.md)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        for n in objects:
            for r in range(args.separate):
                order = ["loop", "batched"] if r % 2 == 0 else ["batched", "loop"]
                got = {}
                for name in order:
                    npz = Path(tmp) / f"{n}-{r}-{name}.npz"
                    cmd = [
                        sys.executable, __file__, "--size", str(args.size), "--frames",
                        str(args.frames), "--objects", str(n), "--threads", str(args.threads),
                        "--backend", args.backend, "--work", args.work, "--only", name,
                        "--logits", str(npz),
                    ]  # fmt: skip
                    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        sys.exit(f"the {name} process failed:\n{done.stderr}")
                    got[name] = json.loads(done.stdout.strip().splitlines()[-1])
                with (
                    np.load(Path(tmp) / f"{n}-{r}-loop.npz") as a,
                    np.load(Path(tmp) / f"{n}-{r}-batched.npz") as b,
                ):
                    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a.files)
                    same = all(np.array_equal(a[k] > 0, b[k] > 0) for k in a.files)
                row = _summary(n, got["loop"], got["batched"], got["loop"]["encoder"], diff, same)
                print(_row(args.size, row) + f" round {r + 1}, {' then '.join(order)}", flush=True)


def calls(b: Any, size: int, objects: list[int], repeats: int) -> None:
    """The backend calls alone, no tracker: N requests with 7 memories and 2 pointers each
    (memories of random logits) on one frame, one call each vs one batched call, alternating;
    median CPU ms (the process's, all threads) of the N requests per stage."""
    import numpy as np

    from vosfx.engine.backend import MemoryItem, MemoryRequest, PointerItem, TrackRequest

    rng = np.random.default_rng(0)
    f = b.encode_image(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    ptr = b.mask_as_output(f, np.ones((size, size), bool))[2]
    print("| size | objects | track loop CPU ms | track_many CPU ms | encode_memory loop CPU ms "
          "| encode_memory_many CPU ms | repeats | load |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for n in objects:
        lows = [rng.standard_normal((size // 4, size // 4)).astype(np.float32) for _ in range(n)]
        mreqs = [MemoryRequest(f, low, 1.0, False) for low in lows]
        mems = [b.encode_memory(f, low, 1.0, False) for low in lows]
        reqs = [
            TrackRequest(
                f,
                [MemoryItem(mems[(i + k) % n], k) for k in range(7)],
                [PointerItem(ptr, 1), PointerItem(ptr, 2)],
                2,
            )
            for i in range(n)
        ]
        runs = {
            "track": lambda reqs=reqs: [b.track(r) for r in reqs],
            "track_many": lambda reqs=reqs: b.track_many(reqs),
            "mem": lambda mreqs=mreqs: [b.encode_memory(f, r.low_res, 1.0, False) for r in mreqs],
            "mem_many": lambda mreqs=mreqs: b.encode_memory_many(mreqs),
        }
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        for rep in range(repeats):
            order = ["track", "track_many", "mem", "mem_many"]
            if rep % 2:
                order = ["track_many", "track", "mem_many", "mem"]
            for k in order:
                c0 = time.process_time()
                runs[k]()
                cpu[k].append(1000 * (time.process_time() - c0))
        med = {k: statistics.median(v) for k, v in cpu.items()}
        print(
            f"| {size} | {n} | {med['track']:.0f} | {med['track_many']:.0f} | {med['mem']:.0f} "
            f"| {med['mem_many']:.0f} | {repeats} | {os.getloadavg()[0]:.1f} |",
            flush=True,
        )


def _row(size: int, r: dict) -> str:
    return (
        f"| {size} | {r['objects']} | {r['loop_ms']:.0f} | {r['batched_ms']:.0f} | "
        f"{r['ratio']:.2f}x | {r['loop_cpu_ms']:.0f} | {r['batched_cpu_ms']:.0f} | "
        f"{r['encoder_ms']:.0f} | {r['frames']} | "
        f"{r['max_logit_diff']:.1e} | {'yes' if r['masks_identical'] else 'NO'} | "
        f"{r['load']:.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="model image size")
    ap.add_argument("--frames", type=int, default=14, help="frames of the clip (>= 9)")
    ap.add_argument("--objects", default="1,2,4,8", help="object counts, comma-separated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--calls", type=int, metavar="REPEATS", help="time the backend calls alone, REPEATS times"
    )
    ap.add_argument(
        "--backend", choices=("torch", "onnx", "onnx-fused", "onnx-bf16"), default="torch"
    )
    ap.add_argument(
        "--work", default="/tmp/vosfx-bench-onnx", help="where the ONNX bundle is exported once"
    )
    ap.add_argument(
        "--separate",
        type=int,
        metavar="ROUNDS",
        help="each tracker in its own process, ROUNDS rounds alternating (the bf16 tier's "
        "numbers: in one process its compiled models take turns)",
    )
    ap.add_argument("--only", choices=("loop", "batched"), help=argparse.SUPPRESS)
    ap.add_argument("--logits", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    objects = [int(x) for x in args.objects.split(",")]
    if not args.calls and args.frames <= FULL_BANK + 1:
        ap.error(f"--frames: expected more than {FULL_BANK + 1}, found {args.frames}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    header = (
        "| size | objects | per-object loop ms/frame | batched ms/frame | loop/batched | "
        "loop CPU ms/frame | batched CPU ms/frame | image encoder ms | frames | "
        "max logit diff | masks identical | load |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    if args.separate:
        print(
            f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, backend "
            f"{args.backend}, threads {args.threads}, each tracker in its own process, load at "
            f"start {os.getloadavg()}"
        )
        print(header)
        separate(args, objects)
        return
    backend = _backend(args.backend, args.size, args.threads, work)
    if args.only:
        child(backend, args.frames, objects[0], args.only, args.logits)
        return
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, backend "
        f"{args.backend}, threads {args.threads}, load at start {os.getloadavg()}"
    )
    if args.calls:
        calls(backend, args.size, objects, args.calls)
        return
    print(header)
    run(backend, args.size, args.frames, objects)


if __name__ == "__main__":
    main()

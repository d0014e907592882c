"""The render chain at 1080p, before and after: decode -> engine -> refine -> writers.

The engine is the deterministic test double (tests/fakes.py: no model), so the numbers are
vosfx's own chain: PyAV decode on its thread, the balanced preset's refinement, and the
writers (ProRes 4444, the FFV1 matte, or both in one job). Each run is ``vosfx.pipeline.run``
in a fresh subprocess; "before" imports vosfx from ``git archive <rev>`` of an earlier
commit, "after" from this checkout, and the two alternate run by run so that load from other
users of the machine hits both alike. Medians over the rounds are reported.

Two numbers per run: frames/s of wall time (what a user sees on this machine now), and CPU
seconds per frame over all the process's threads (the work; ``2 / cpu`` is the frame rate
the chain could reach with both cores to itself, an upper bound since not all of it runs in
parallel).

    python benchmarks/render_chain.py                          # 24 frames, 3 rounds
    python benchmarks/render_chain.py --before c7e93b9 --frames 48 --rounds 5
    python benchmarks/render_chain.py --before none --soft     # after only; soft logits
    python benchmarks/render_chain.py --before 632581e --after 13de1b9   # two commits
    python benchmarks/render_chain.py --before none --frames 96 --by-thread   # CPU by thread
    python benchmarks/render_chain.py --before HEAD --engine-ms 30   # a GPU's 30 ms a frame
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEO = ROOT.parent / "shared/data/videos/01_dog.mp4"
W, H = 1920, 1080
JOBS = {  # name -> (format, extra formats)
    "prores4444": ("prores4444", []),
    "ffv1-matte": ("ffv1-matte", []),
    "prores422hq-matte": ("prores422hq-matte", []),
    "qtrle": ("qtrle", []),
    "prores4444 + ffv1-matte": ("prores4444", ["ffv1-matte"]),
    "png16": ("png16", []),  # an image sequence (not in the default --jobs)
}
DEFAULT_JOBS = "prores4444,ffv1-matte,prores4444 + ffv1-matte"


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from fakes import FakeEngine

    from vosfx.job import Job, PromptSpec
    from vosfx.pipeline import run
    from vosfx.presets import resolve_config

    if args.encoders:  # images a sequence writer encodes at once (this checkout's writers)
        from vosfx.io.writers import images

        images.default_encoders = lambda: int(args.encoders)
    fmt, extra = JOBS[args.job]
    soft, engine_s = args.soft, float(args.engine_ms or 0) / 1000

    def logit_fn(frame_index, obj_id, base):
        if engine_s:  # a model's frame that costs wall time but no CPU here (a GPU's)
            time.sleep(engine_s)
        # soft: logits a tenth as steep, the whole frame in the refiner's uncertain band
        return base * 0.1 if soft else base

    overrides = {"output": {"format": fmt, "extra_formats": extra}}
    job = Job(
        input=args.clip,
        prompts=(PromptSpec(frame=0, mask=args.mask),),
        output=args.out,
        config=resolve_config(["balanced"], overrides),
        overwrite=True,
    )
    sampler = ThreadCPU() if args.by_thread else None
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    c0, t0 = time.process_time(), time.perf_counter()
    report = run(job, engine=FakeEngine(logit_fn=logit_fn))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    status = Path("/proc/self/status")  # VmHWM: this process's peak (ru_maxrss outlives exec)
    hwm = [ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:")]
    out = {
        "frames": report.frames,
        "wall_s": wall,
        "cpu_s": cpu,
        "timings_s": report.timings_s,
        "page_faults": usage.ru_minflt - f0,  # minor: fresh pages the kernel had to map
        "peak_rss_mib": int(hwm[0].split()[1]) / 1024 if hwm else float("nan"),
    }
    if sampler is not None:
        out["threads_s"] = sampler.stop()
    print(json.dumps(out))


class ThreadCPU:
    """CPU seconds of every thread of this process over a run, by thread name (Python
    threads by their name, the main thread as "main", threads started by libraries (FFmpeg's
    encoder threads, OpenCV's pool) by their kernel name and id): sampled from
    /proc/self/task every 50 ms, so a thread that ends keeps its last reading."""

    def __init__(self) -> None:
        self._start = self._read()
        self._seen: dict[str, tuple[str, float]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def _read() -> dict[str, tuple[str, float]]:
        tick = os.sysconf("SC_CLK_TCK")
        names = {str(t.native_id): t.name for t in threading.enumerate()}
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            name = "main" if tid == str(os.getpid()) else names.get(tid, f"{comm}:{tid}")
            out[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)
        return out

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            for tid, (name, cpu) in self._read().items():
                known = self._seen.get(tid)
                self._seen[tid] = (known[0] if known else name, cpu)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join()
        by_name: dict[str, float] = {}
        for tid, (name, cpu) in self._seen.items():
            if name.startswith("Thread-") and "_sample" in name:
                continue
            used = cpu - self._start.get(tid, ("", 0.0))[1]
            if used > 0:
                by_name[name] = by_name.get(name, 0.0) + used
        return by_name


def parts(clip: Path, mask_path: Path, out_dir: Path, n: int) -> None:
    """CPU ms per 1080p frame of each stage of the chain, one at a time on this thread
    (process CPU time, so an encoder's own threads count; OpenCV on one thread), medians over
    the frames: the chain's CPU budget. This checkout only."""
    import cv2
    import numpy as np
    from fakes import prompt_logits
    from PIL import Image

    from vosfx.config import OutputConfig
    from vosfx.io.source import open_source
    from vosfx.io.writers import open_writer
    from vosfx.io.writers.framepool import FramePool
    from vosfx.io.writers.pictures import yuva444_frame, yuva444_from_source
    from vosfx.matte.refine import Refiner
    from vosfx.presets import resolve_config
    from vosfx.types import MaskResult, Matte

    cv2.setNumThreads(1)
    rows: list[tuple[str, float]] = []

    def timed(name: str, fn, items) -> list:
        out, ts = [], []
        for item in items:
            c0 = time.process_time()
            out.append(fn(item))
            ts.append(time.process_time() - c0)
        rows.append((name, 1e3 * statistics.median(ts)))
        return out

    with open_source(clip, prefetch=0, ycbcr=True) as src:
        it = iter(src)
        frames = timed(
            "decode (PyAV, H.264 1080p -> RGB + its Y'CbCr planes)", lambda _: next(it), range(n)
        )
    mask = np.asarray(Image.open(mask_path)) > 0
    logits = prompt_logits(mask)
    cfg = resolve_config(["balanced"], {}).refine
    score, iou = np.array([10.0], np.float32), np.array([1.0], np.float32)
    mattes: dict[str, list[Matte]] = {}
    for kind, scale in (("sharp", 1.0), ("soft (/10)", 0.1)):
        refiner = Refiner(cfg, (1,))
        lg = (logits * np.float32(scale))[None]
        mattes[kind] = timed(
            f"refine, balanced, {kind} logits",
            lambda f, lg=lg, r=refiner: r(MaskResult(f.index, (1,), lg, score, iou), f),
            frames,
        )
    pairs = list(zip(frames, mattes["sharp"]))
    timed(
        "ProRes 4444 picture from RGB (-> Y'CbCr + alpha planes)",
        lambda p: yuva444_frame(p[0].image, p[1].merged, "yuva444p10le", 10),
        pairs,
    )
    rgb_pool = FramePool("yuva444p10le", W, H)

    def rgb_recycled(p):
        vf = yuva444_frame(p[0].image, p[1].merged, "yuva444p10le", 10, pool=rgb_pool)
        rgb_pool.give_back(vf)

    timed("the same into a recycled frame and scratch (FramePool)", rgb_recycled, pairs)
    if all("ycbcr" in f.derived for f in frames):  # a BT.709 source (make_source's)
        timed(
            "ProRes 4444 picture from the source's Y'CbCr (+ alpha plane)",
            lambda p: yuva444_from_source(p[0].derived["ycbcr"], p[1].merged, "yuva444p10le", 10),
            pairs,
        )
        pool = FramePool("yuva444p10le", W, H)

        def recycled(p):
            vf = yuva444_from_source(p[0].derived["ycbcr"], p[1].merged, "yuva444p10le", 10, pool)
            pool.give_back(vf)

        timed("the same into a recycled frame (FramePool) ", recycled, pairs)
    for fmt in ("prores4444", "ffv1-matte"):
        ext = "mov" if fmt == "prores4444" else "mkv"
        with open_writer(
            fmt, out_dir / f"parts.{ext}", src.info, obj_ids=(1,), config=OutputConfig()
        ) as w:
            timed(f"{fmt} writer (picture + encoder + mux)", lambda p, w=w: w.write(*p), pairs)
    width = max(len(name) for name, _ in rows)
    print("| stage | CPU ms / frame |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name:{width}s} | {ms:6.1f} |")
    costs = dict(rows)
    for fmt in ("prores4444", "ffv1-matte"):
        total = sum(
            costs[k]
            for k in (
                "decode (PyAV, H.264 1080p -> RGB + its Y'CbCr planes)",
                "refine, balanced, sharp logits",
                f"{fmt} writer (picture + encoder + mux)",
            )
        )
        print(
            f"\n{fmt} chain: {total:.1f} CPU ms a frame (decode + refine + writer) -> at most "
            f"{2000 / total:.1f} frames/s on 2 cores, {1000 / total:.1f} on one"
        )


def make_source(path: Path, n: int) -> str:
    """An n-frame 1080p H.264 clip (or PNG sequence, for a ``.png`` pattern ``path``): the
    shared dog clip scaled up if present, else synthetic."""
    sys.path.insert(0, str(ROOT / "tests"))
    import cv2
    from media import make_clip, moving_square_frame

    if SHARED_VIDEO.exists():
        import av

        frames = []
        with av.open(str(SHARED_VIDEO)) as c:
            for vf in c.decode(video=0):
                frames.append(cv2.resize(vf.to_ndarray(format="rgb24"), (W, H)))
                if len(frames) == n:
                    break
        while len(frames) < n:
            frames.append(frames[len(frames) % max(1, len(frames))])
        origin = f"{SHARED_VIDEO.name} scaled to {W}x{H}"
    else:
        frames = [moving_square_frame(i, W, H)[0] for i in range(n)]
        origin = "synthetic moving square"
    if path.suffix == ".png":  # an image sequence: RGB frames, no Y'CbCr to take as is
        from PIL import Image

        path.parent.mkdir(exist_ok=True)
        for i, rgb in enumerate(frames):
            Image.fromarray(rgb).save(path.parent / f"{i:05d}.png", compress_level=1)
        return origin + ", as a PNG sequence"
    make_clip(
        path,
        n=n,
        width=W,
        height=H,
        frames=iter(frames),
        options={"preset": "ultrafast", "crf": "18"},
        bt709=True,  # tagged like camera footage (the writers may take its Y'CbCr as is)
    )
    return origin


def tree_for(rev: str, tmp: Path) -> Path:
    """vosfx as of ``rev``, unpacked from git (nothing in the checkout changes)."""
    dest = tmp / f"tree-{rev}"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "vosfx"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def with_mask(clip: Path, n: int, mask: Path) -> str:
    """:func:`make_source`, and the first frame's mask written to ``mask``."""
    import numpy as np
    from media import moving_square_frame
    from PIL import Image

    origin = make_source(clip, n)
    _, first = moving_square_frame(0, W, H)
    Image.fromarray(first.astype(np.uint8) * 255).save(mask)
    return origin


def trees(before: str, after: str, tmp: Path) -> dict[str, Path]:
    """vosfx's trees to run: "after" (this checkout or a revision), "before" unless 'none'."""
    found = {"after": ROOT if after == "checkout" else tree_for(after, tmp)}
    return found if before == "none" else {"before": tree_for(before, tmp), **found}


def child_result(tree: Path, cmd: list[str]) -> dict:
    """A benchmark's child ``cmd`` run with vosfx from ``tree``: its last line's JSON."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=tree)
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_run(
    tree: Path,
    job: str,
    clip: Path,
    mask: Path,
    out: Path,
    soft: bool,
    by_thread: bool = False,
    engine_ms: float = 0.0,
    encoders: int = 0,
) -> dict:
    cmd = (
        [
            sys.executable,
            __file__,
            "--child",
            "--job",
            job,
            "--clip",
            str(clip),
            "--mask",
            str(mask),
            "--out",
            str(out),
        ]
        + (["--soft"] if soft else [])
        + (["--by-thread"] if by_thread else [])
        + (["--engine-ms", str(engine_ms)] if engine_ms else [])
        + (["--encoders", str(encoders)] if encoders else [])
    )
    return child_result(tree, cmd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", default="c7e93b9", help="git revision to compare, or 'none'")
    ap.add_argument(
        "--after",
        default="checkout",
        help="git revision for 'after' (unpacked like 'before', so the checkout can change "
        "while it runs), or 'checkout' (default)",
    )
    ap.add_argument("--jobs", default=DEFAULT_JOBS, help="comma-separated: " + ", ".join(JOBS))
    ap.add_argument("--soft", action="store_true", help="soft logits (the fake's / 10)")
    ap.add_argument(
        "--png",
        action="store_true",
        help="the source as a 1080p PNG sequence (RGB frames) instead of H.264",
    )
    ap.add_argument(
        "--by-thread", action="store_true", help="also print each thread's CPU ms a frame"
    )
    ap.add_argument(
        "--parts", action="store_true", help="CPU ms a frame of each stage instead (checkout)"
    )
    ap.add_argument(
        "--engine-ms",
        type=float,
        default=0.0,
        help="the test double's frame takes this long without using the CPU (time.sleep, "
        "which releases the GIL as a GPU call does): a model on a GPU",
    )
    ap.add_argument(
        "--after-encoders",
        type=int,
        default=0,
        help="'after' encodes this many images of a sequence output at once (default: "
        "vosfx's own choice)",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("job", "clip", "mask", "out", "encoders"):
        ap.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    jobs = [j for j in args.jobs.split(",") if j]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        raise SystemExit(f"--jobs: unknown {unknown}; known: {', '.join(JOBS)}")
    with tempfile.TemporaryDirectory(prefix="vosfx-render-") as tmp_s:
        tmp = Path(tmp_s)
        # an image sequence's frames go to the writers as RGB (the picture is converted)
        clip = tmp / "frames" / "%05d.png" if args.png else tmp / "clip.mp4"
        origin = with_mask(clip, args.frames, tmp / "mask.png")
        if args.parts:
            print(
                f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} "
                f"logical cores; load {os.getloadavg()[0]:.1f}; {args.frames} frames of "
                f"{origin}\n"
            )
            parts(clip, tmp / "mask.png", tmp, args.frames)
            print(f"\nload after {os.getloadavg()[0]:.1f}")
            return
        runs_of = trees(args.before, args.after, tmp)
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} "
            f"logical cores, Python {platform.python_version()}; load before "
            f"{os.getloadavg()[0]:.1f}"
        )
        print(
            f"source: {args.frames} frames, {origin}{'' if args.png else ', H.264'}; preset "
            f"balanced; engine: test "
            f"double{' with soft logits (/10)' if args.soft else ''}"
            f"{f' taking {args.engine_ms:g} ms a frame off the CPU' if args.engine_ms else ''}"
            f"; before = "
            f"{args.before}, after = {'this checkout' if args.after == 'checkout' else args.after}"
            f"; {args.rounds} rounds\n",
            flush=True,
        )
        runs: dict[tuple[str, str], list[dict]] = {}
        for r in range(args.rounds):
            for job in jobs:
                for label, tree in runs_of.items():
                    res = one_run(
                        tree,
                        job,
                        clip,
                        tmp / "mask.png",
                        tmp / "out",
                        args.soft,
                        args.by_thread,
                        args.engine_ms,
                        args.after_encoders if label == "after" else 0,
                    )
                    runs.setdefault((job, label), []).append(res)
                    print(
                        f"round {r + 1} {job} {label}: {res['frames'] / res['wall_s']:.2f} "
                        f"frames/s, {1e3 * res['cpu_s'] / res['frames']:.0f} CPU ms/frame, "
                        f"{res['page_faults'] / res['frames']:.0f} page faults/frame, peak RSS "
                        f"{res['peak_rss_mib']:.0f} MiB (load {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
                    for name, used in sorted(
                        res.get("threads_s", {}).items(), key=lambda kv: -kv[1]
                    ):
                        if used * 1e3 / res["frames"] >= 0.5:
                            print(f"    {name:28s} {used * 1e3 / res['frames']:6.1f} CPU ms/frame")
        print(
            "\n| job | version | frames/s (wall) | CPU ms / frame | 2 / CPU (frames/s) "
            "| refine ms / frame | write ms / frame (all threads) | busiest writer ms |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for job in jobs:
            for label in runs_of:
                rs = runs[(job, label)]

                def med(f, rs=rs):
                    return statistics.median(f(x) for x in rs)

                fps = med(lambda x: x["frames"] / x["wall_s"])
                cpu = med(lambda x: x["cpu_s"] / x["frames"])
                ref = med(lambda x: x["timings_s"].get("refine", 0) / x["frames"])
                wr = med(lambda x: x["timings_s"].get("write", 0) / x["frames"])
                busiest = med(
                    lambda x: (
                        x["timings_s"].get("write_busiest", x["timings_s"].get("write", 0))
                        / x["frames"]
                    )
                )
                print(
                    f"| {job} | {label} | {fps:.2f} | {cpu * 1e3:.0f} | {2 / cpu:.1f} | "
                    f"{ref * 1e3:.0f} | {wr * 1e3:.0f} | {busiest * 1e3:.0f} |"
                )
        if len(runs_of) == 2:
            print()
            for job in jobs:
                b, a = runs[(job, "before")], runs[(job, "after")]
                fb = statistics.median(x["frames"] / x["wall_s"] for x in b)
                fa = statistics.median(x["frames"] / x["wall_s"] for x in a)
                cb = statistics.median(x["cpu_s"] / x["frames"] for x in b)
                ca = statistics.median(x["cpu_s"] / x["frames"] for x in a)
                print(
                    f"{job}: after / before {fa / fb:.2f}x frames/s (wall), "
                    f"{cb / ca:.2f}x less CPU per frame"
                )
        print(
            f"\nload after {os.getloadavg()[0]:.1f}; peak RSS of this parent "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        )


if __name__ == "__main__":
    main()

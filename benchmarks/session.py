"""The clip session's costs (issue 13): decoded frames per output frame, peak RSS of a long
session, add-prompt latency. Prints what it measured.

    python benchmarks/session.py decode            # CFR and VFR clips, prompts anywhere
    python benchmarks/session.py rss --frames 200 2000 --image-size 128
    python benchmarks/session.py latency --image-size 1024
    python benchmarks/session.py spill --bundle /tmp/vosfx-bench-onnx/bundle-512
    python benchmarks/session.py correct --bundle /tmp/vosfx-bench-onnx/bundle-512 --frames 40
    python benchmarks/session.py fix --bundle /tmp/vosfx-bench-onnx/bundle-512 --frames 40
    python benchmarks/session.py resume --bundle /tmp/vosfx-bench-onnx/bundle-512 --frames 40

``decode`` runs the one loop's tracking half (``vosfx.pipeline.results_in_order``, what
``vosfx matte`` runs) with the test double and counts every frame the decoder produced,
including frames decoded after a seek to reach the first one wanted. ``rss`` runs the real
SAM 2.1 tiny architecture (seeded random weights, torch backend) over synthetic frames with
two objects prompted on the first, middle and last frames, each length in a fresh process.
``latency`` times ``ClipSession.add_prompt``: the first click on a frame (image encoder +
decoder) and further clicks there (features cached: prompt encoder + decoder only).
``correct`` times a correction click on tracked frames at several distances from the prompt,
resumed from the pass's snapshots (session/checkpoints.py) and replayed from the prompt.
``fix`` times a correction of rule d (``Prompt.correction``) the way the OpenFX worker meets
one: the viewer played through, then a click on a later frame and that frame rendered again.
``resume`` times a tail stopped part-way and run again (the studio's Stop then Track; a point
undone in the OpenFX effect), going on from its snapshot and tracked again from its prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _vmhwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- decode ------------------------------------------------------------------------------------


def _vfr_copy(src: Path, dest: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``src`` at half size re-timed to irregular pts
    (tests/media.make_clip's VFR mode: H.264 in Matroska, 1/1000 time base)."""
    import av
    from media import make_clip

    with av.open(str(src)) as inp:
        s_in = inp.streams.video[0]
        w, h = s_in.width // 2, s_in.height // 2
        images = []
        for i, frame in enumerate(inp.decode(s_in)):
            if i == frames:
                break
            images.append(frame.reformat(w, h, "rgb24").to_ndarray())
    return make_clip(dest, len(images), w, h, vfr=True, frames=images, options={"g": "60"})


def decode(args) -> None:
    import fakes

    from vosfx.config import MemoryConfig
    from vosfx.io import video
    from vosfx.io.source import open_source, probe
    from vosfx.pipeline import results_in_order
    from vosfx.session import ClipSession
    from vosfx.types import Prompt

    count = {"n": 0}
    real_next = video._next_frame

    def counting(decoded, path, where):
        frame = real_next(decoded, path, where)
        count["n"] += frame is not None
        return frame

    video._next_frame = counting
    cfr = SHARED / "shots" / "pyscenedetect_testvideo.mp4"
    tmp = Path(tempfile.mkdtemp(prefix="vosfx-bench-session-"))
    vfr = _vfr_copy(cfr, tmp / "vfr.mkv", 400)
    rows = []
    for name, path in (("CFR H.264 720p", cfr), ("VFR H.264 360p", vfr)):
        info = probe(path)
        n = info.num_frames
        cases = {
            "prompt on frame 0": [0],
            "prompt mid-clip": [n // 2 + 31],
            "prompts at 10 %, 55 %, 99 %": [n // 10, n * 55 // 100, n - 2],
        }
        for case, frames in cases.items():
            mask = np.zeros((info.height, info.width), bool)
            mask[info.height // 4 : info.height // 2, info.width // 4 : info.width // 2] = True
            prompts = [Prompt(f, 1 + i % 2, mask=mask) for i, f in enumerate(frames)]

            @contextmanager
            def open_frames(lo, hi, _final, path=path):
                with open_source(path, start=lo, end=hi) as src:
                    yield src

            count["n"] = 0
            t0 = time.perf_counter()
            with ClipSession(fakes.FakeEngine(), info, MemoryConfig(policy="sam2")) as s:
                s.set_prompts(prompts)
                out = sum(1 for _ in results_in_order(s, open_frames))
            rows.append(
                {
                    "clip": name,
                    "case": case,
                    "output_frames": out,
                    "decoded": count["n"],
                    "per_output": round(count["n"] / out, 3),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print("\n| clip | prompts | output frames | decoded | decoded per output frame |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clip']} | {r['case']} | {r['output_frames']} | {r['decoded']} | "
            f"{r['per_output']:.3f} |"
        )


# --- rss ---------------------------------------------------------------------------------------


def _synthetic(n: int, h: int, w: int):
    """A square moving across a textured background, generated per frame (nothing stored)."""
    from vosfx.types import Frame

    rng = np.random.default_rng(0)
    base = rng.integers(0, 80, (h, w, 3), np.uint8)
    for t in range(n):
        img = base.copy()
        x = (t * 3) % (w - w // 4)
        img[h // 3 : h // 3 + h // 4, x : x + w // 4] = (230, 200, 60)
        yield Frame(t, img, t, Fraction(1, 25))


def rss_child(args) -> None:
    from vosfx.config import MemoryConfig
    from vosfx.pipeline import results_in_order
    from vosfx.session import ClipSession
    from vosfx.types import Prompt, VideoInfo

    n, h, w = args.child, 240, 320
    if args.engine == "fake":
        import fakes

        engine = fakes.FakeEngine()
    else:
        import torch

        from vosfx.engine.loader import SamEngine, torch_backend_for
        from vosfx.models.checkpoint import build_model

        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        net = build_model("configs/sam2.1/sam2.1_hiera_t.yaml", image_size=args.image_size)
        engine = SamEngine(torch_backend_for(net, "cpu"), "bench", None)
    info = VideoInfo("", w, h, n, Fraction(25), Fraction(1, 25))
    frames = {t: None for t in (0, n // 2, n - 1)}
    for f in _synthetic(n, h, w):
        if f.index in frames:
            frames[f.index] = f
    prompts = []
    for t in frames:
        x = (t * 3) % (w - w // 4)
        for obj, (y0, x0) in ((1, (h // 3, x)), (2, (0, 0))):
            m = np.zeros((h, w), bool)
            m[y0 : y0 + h // 4, x0 : x0 + w // 4] = True
            prompts.append(Prompt(t, obj, mask=m))

    @contextmanager
    def open_frames(lo, hi, _final):
        yield (f for f in _synthetic(hi, h, w) if f.index >= lo)

    t0 = time.perf_counter()
    cache = args.feature_cache_mib << 20
    with ClipSession(engine, info, MemoryConfig(policy="sam2"), feature_cache_bytes=cache) as s:
        s.set_prompts(prompts)
        done = sum(1 for _ in results_in_order(s, open_frames))
    print(
        json.dumps(
            {
                "frames": n,
                "output_frames": done,
                "engine": args.engine,
                "image_size": args.image_size,
                "seconds": round(time.perf_counter() - t0, 1),
                "peak_rss_mib": round(_vmhwm_mib(), 1),
            }
        )
    )


def rss(args) -> None:
    rows = []
    for n in args.frames:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "rss",
                "--child",
                str(n),
                "--image-size",
                str(args.image_size),
                "--threads",
                str(args.threads),
                "--engine",
                args.engine,
                "--feature-cache-mib",
                str(args.feature_cache_mib),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| engine | frames | prompts | image size | seconds | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['engine']} | {r['frames']} | 2 objects on frames 0, {r['frames'] // 2}, "
            f"{r['frames'] - 1} | {r['image_size']} | {r['seconds']} | {r['peak_rss_mib']} |"
        )


# --- latency -----------------------------------------------------------------------------------


def latency(args) -> None:
    import torch

    from vosfx.config import MemoryConfig
    from vosfx.engine.loader import SamEngine, torch_backend_for
    from vosfx.models.checkpoint import build_model
    from vosfx.session import ClipSession
    from vosfx.session.frames import ListFrames
    from vosfx.types import Prompt, VideoInfo

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w, n = 720, 1280, 8
    net = build_model("configs/sam2.1/sam2.1_hiera_t.yaml", image_size=args.image_size)
    engine = SamEngine(torch_backend_for(net, "cpu"), "bench", None)
    info = VideoInfo("", w, h, n, Fraction(25), Fraction(1, 25))
    frames = list(_synthetic(n, h, w))
    with ClipSession(
        engine, info, MemoryConfig(policy="sam2"), frames=ListFrames(info, frames)
    ) as s:
        first, again = [], []
        for t in range(1, n):
            pts = [[w * 0.3 + t, h * 0.45]]
            t0 = time.perf_counter()
            s.add_prompt(
                Prompt(t, 1, points=np.array(pts, np.float32), labels=np.array([1], np.int32))
            )
            first.append(time.perf_counter() - t0)
            for k in range(3):
                pts.append([w * 0.32 + 9 * k, h * 0.5])
                t0 = time.perf_counter()
                s.add_prompt(
                    Prompt(
                        t,
                        1,
                        points=np.array(pts, np.float32),
                        labels=np.array([1] * len(pts), np.int32),
                    )
                )
                again.append(time.perf_counter() - t0)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(
        json.dumps(
            {
                "image_size": args.image_size,
                "threads": args.threads,
                "first_click_on_a_frame_ms": round(1000 * med(first), 1),
                "further_clicks_ms_median": round(1000 * med(again), 1),
                "further_clicks_ms_max": round(1000 * max(again), 1),
                "samples": [len(first), len(again)],
            }
        )
    )


def spill(args) -> None:
    """Two objects whose gaps overlap but end at different frames (object 1 prompted on
    frames 0 and 20, object 2 on 0 and 12, 30 frames): the frames both step are encoded once
    with the disk tier for image features (FeatureSpill), twice without; the ONNX backend on
    a bundle, the default LRU, the studio's ``ClipSession.track``; alternating runs."""
    from PIL import Image

    from vosfx.config import MemoryConfig
    from vosfx.engine.loader import SamEngine
    from vosfx.engine.onnx_backend import OnnxBackend
    from vosfx.session import ClipSession
    from vosfx.session.frames import ListFrames
    from vosfx.types import Frame, Prompt, VideoInfo

    seq = SHARED / "davis" / "JPEGImages" / "blackswan"
    ann = SHARED / "davis" / "Annotations" / "blackswan"
    n = 30
    images = [np.asarray(Image.open(seq / f"{t:05d}.jpg").convert("RGB")) for t in range(n)]
    h, w = images[0].shape[:2]
    mask = np.asarray(Image.open(ann / "00000.png")) > 0
    info = VideoInfo("", w, h, n, Fraction(24), Fraction(1, 24))
    frames = [Frame(t, img, t, Fraction(1, 24)) for t, img in enumerate(images)]
    engine = SamEngine(OnnxBackend(args.bundle, device="cpu", threads=args.threads), "bench", None)
    for r in range(args.rounds):
        for on in (True, False):
            with ClipSession(
                engine, info, MemoryConfig(policy="sam2"), frames=ListFrames(info, frames)
            ) as s:
                if not on:
                    s._spill.budget = 0
                for obj, at in ((1, (0, 20)), (2, (0, 12))):
                    for t in at:
                        m = mask if obj == 1 else np.roll(mask, w // 4, axis=1)
                        s.add_prompt(Prompt(t, obj, mask=m), refine=False)
                before = dict(s.stats)
                t0 = time.perf_counter()
                s.track()
                print(
                    json.dumps(
                        {
                            "round": r + 1,
                            "disk_tier": on,
                            "track_s": round(time.perf_counter() - t0, 1),
                            "encoded": s.stats["encoded"] - before["encoded"],
                            "spilled": s.stats["spilled"],
                            "spill_hits": s.stats["spill_hits"],
                            "stepped": s.stats["stepped"] - before["stepped"],
                            "load": round(os.getloadavg()[0], 1),
                        }
                    ),
                    flush=True,
                )


def _sessions(args, images: list):
    """(snapshots on, ClipSession) over ``images`` (RGB frames) on one ONNX Runtime engine of
    ``args.bundle``: with the pass snapshots and without them (``checkpoint_bytes=0``: a pass
    replayed from its prompt), alternating, ``args.rounds`` times."""
    from vosfx.config import MemoryConfig
    from vosfx.engine.loader import SamEngine
    from vosfx.engine.onnx_backend import OnnxBackend
    from vosfx.session import ClipSession
    from vosfx.session.checkpoints import CHECKPOINT_BYTES
    from vosfx.session.frames import ListFrames
    from vosfx.types import Frame, VideoInfo

    h, w = images[0].shape[:2]
    info = VideoInfo("", w, h, len(images), Fraction(24), Fraction(1, 24))
    frames = [Frame(t, img, t, Fraction(1, 24)) for t, img in enumerate(images)]
    engine = SamEngine(OnnxBackend(args.bundle, device="cpu", threads=args.threads), "bench", None)
    for on in (True, False) * args.rounds:
        with ClipSession(
            engine,
            info,
            MemoryConfig(policy="sam2"),
            frames=ListFrames(info, frames),
            checkpoint_bytes=CHECKPOINT_BYTES if on else 0,
        ) as session:
            yield on, session


def correct(args) -> None:
    """Blackswan, a mask prompt on frame 0, the clip tracked (the studio's Track), then one
    negative click on each of a few tracked frames (each click in a fresh session, so each
    is a correction of a tracked frame): with the pass snapshots and without them
    (``checkpoint_bytes=0``: the pass replayed from its prompt), alternating; the ONNX
    backend on a bundle."""
    from PIL import Image

    from vosfx.types import Prompt

    seq = SHARED / "davis" / "JPEGImages" / "blackswan"
    ann = SHARED / "davis" / "Annotations" / "blackswan"
    n = args.frames[0]
    images = [np.asarray(Image.open(seq / f"{t:05d}.jpg").convert("RGB")) for t in range(n)]
    mask = np.asarray(Image.open(ann / "00000.png")) > 0
    ys, xs = np.nonzero(mask)
    clicks = [t for t in (n // 4, n // 2, n - 1) if t > 0]
    for on, s in _sessions(args, images):
        s.add_prompt(Prompt(0, 1, mask=mask))
        t0 = time.perf_counter()
        s.track()
        track_s = time.perf_counter() - t0
        cps = s._checkpoints
        row = {
            "snapshots": on,
            "track_s": round(track_s, 1),
            "snapshots_kept": len(cps),
            "snapshot_mib": round(cps.bytes / 2**20, 1),
            "spacing": cps.spacing,
        }
        for t in clicks:
            before = s.stats["replayed"]
            click = Prompt(
                t,
                1,
                points=np.array([[xs[len(xs) // 3], ys[len(ys) // 3]]], np.float32),
                labels=np.array([0], np.int32),
            )
            t0 = time.perf_counter()
            s.add_prompt(click)
            row[f"click_{t}_s"] = round(time.perf_counter() - t0, 2)
            row[f"click_{t}_replayed"] = s.stats["replayed"] - before
            s.remove_prompt(1, t)  # the next click corrects a tracked frame again
            s.track()
        row["load"] = round(os.getloadavg()[0], 1)
        print(json.dumps(row), flush=True)


def _blackswan_correction(n: int, at: int):
    """DAVIS blackswan's first ``n`` frames (RGB), the mask prompt on frame 0, and a negative
    click on frame ``at`` as a correction (``Prompt.correction``)."""
    from PIL import Image

    from vosfx.types import Prompt

    seq = SHARED / "davis" / "JPEGImages" / "blackswan"
    ann = SHARED / "davis" / "Annotations" / "blackswan"
    images = [np.asarray(Image.open(seq / f"{t:05d}.jpg").convert("RGB")) for t in range(n)]
    mask = Prompt(0, 1, mask=np.asarray(Image.open(ann / "00000.png")) > 0)
    ys, xs = np.nonzero(np.asarray(Image.open(ann / f"{at:05d}.png")) > 0)
    click = Prompt(
        at,
        1,
        points=np.array([[xs[len(xs) // 3], ys[len(ys) // 3]]], np.float32),
        labels=np.array([0], np.int32),
        correction=True,
    )
    return images, mask, click


def fix(args) -> None:
    """Rule d as the OpenFX worker runs it (its IncrementalTracker over a session with frame
    access): blackswan, a mask prompt on frame 0, the sweep taken to the last frame (the
    viewer played through; ``--played``: up to that frame), then a negative click on frame 3/4
    of the way (``--at``) as a
    correction (``Prompt.correction``), and the sweep brought to that frame again (what
    rendering it costs), then the same correction edited again (a second point); with the
    pass snapshots and without them, alternating. ``--prepared``: the frame prepared for the
    click before it (timed apart)."""

    from vosfx.ofx.tracking import IncrementalTracker
    from vosfx.types import Prompt

    n = args.frames[0]
    at = 3 * n // 4 if args.at is None else args.at
    images, mask, click = _blackswan_correction(n, at)
    for on, s in _sessions(args, images):
        tracker, applied = IncrementalTracker(s, lambda res: None), {}
        tracker.sync({(0, 1): ("mask", mask)}, applied)
        played = n - 1 if args.played is None else args.played
        t0 = time.perf_counter()
        tracker.track_to(played)
        track_s = time.perf_counter() - t0
        prepare_s = None
        if args.prepared:  # what the OpenFX worker does while the host idles on the frame
            t0 = time.perf_counter()
            s.prepare_correction(1, at)
            prepare_s = round(time.perf_counter() - t0, 2)
        tracker.sync({(0, 1): ("mask", mask), (at, 1): ("click", click)}, applied)
        t0 = time.perf_counter()
        tracker.track_to(at)
        fix_s = time.perf_counter() - t0
        replayed = s.stats["replayed"]
        # the same correction edited again (a second point): the memory its pass attends
        # there and its mask are kept (session/corrections.py), so the decoder alone runs
        moved = Prompt(
            at,
            1,
            points=np.concatenate([click.points, click.points + 4]),
            labels=np.array([0, 0], np.int32),
            correction=True,
        )
        tracker.sync({(0, 1): ("mask", mask), (at, 1): ("click2", moved)}, applied)
        t0 = time.perf_counter()
        tracker.track_to(at)
        row = {
            "snapshots": on,
            "track_s_per_frame": round(track_s / played, 2),
            "prepared_while_idle_s": prepare_s,
            f"correction_{at}_s": round(fix_s, 2),
            "replayed": replayed,
            "edited_again_s": round(time.perf_counter() - t0, 2),
            "load": round(os.getloadavg()[0], 1),
        }
        tracker.reset()
        print(json.dumps(row), flush=True)


def resume(args) -> None:
    """A tail stopped part-way goes on from its snapshot (``ClipSession.resume_point``).
    Blackswan, a mask prompt on frame 0. *Stop*: the studio's Track stopped after frame
    ``--at`` (a cancel), then Track again, timed. *Undo (studio)*: then the prompt on frame 0
    changed to a click and back (the studio's Undo), then Track, timed. *Undo*: the OpenFX worker's viewer played to
    the last frame, a point added on frame ``--at`` (a correction) and that frame rendered,
    then the point removed and the last frame rendered again, timed. With the pass snapshots
    and without them (``checkpoint_bytes=0``: the tail tracked again from its prompt, what
    both did before the thirty-sixth pass), alternating."""
    import threading

    from vosfx.errors import Cancelled
    from vosfx.ofx.tracking import IncrementalTracker
    from vosfx.types import Prompt

    n = args.frames[0]
    at = n // 2 if args.at is None else args.at
    images, mask, click = _blackswan_correction(n, at)
    for on, s in _sessions(args, images):
        # Stop, then Track again
        s.add_prompt(mask, refine=False)
        cancel = threading.Event()

        def stop_after(res, cancel=cancel):
            if res.frame_index == at:
                cancel.set()

        try:
            s.track(on_frame=stop_after, cancel=cancel)
        except Cancelled:
            pass
        t0 = time.perf_counter()
        stepped = s.track()
        row = {
            "snapshots": on,
            "stopped_after": at,
            "track_again_s": round(time.perf_counter() - t0, 2),
            "track_again_stepped": stepped,
        }
        # Undo in the studio: the prompted frame's prompt changed (clicks instead of the
        # mask), then changed back, then Track
        ys0, xs0 = np.nonzero(mask.mask)
        clicks = Prompt(
            0, 1, points=np.array([[xs0[0], ys0[0]]], np.float32), labels=np.array([1], np.int32)
        )
        s.add_prompt(clicks, refine=False)
        s.add_prompt(mask, refine=False)
        t0 = time.perf_counter()
        row["undo_track_stepped"] = s.track()
        row["undo_track_s"] = round(time.perf_counter() - t0, 2)
        s.remove_prompt(1, 0)
        # Undo a point in the OpenFX effect
        tracker, applied = IncrementalTracker(s, lambda res: None), {}
        tracker.sync({(0, 1): ("mask", mask)}, applied)
        tracker.track_to(n - 1)
        tracker.sync({(0, 1): ("mask", mask), (at, 1): ("click", click)}, applied)
        tracker.track_to(at)
        tracker.sync({(0, 1): ("mask", mask)}, applied)
        visits = tracker.frames_to(n - 1)
        before = s.stats["stepped"]
        t0 = time.perf_counter()
        tracker.track_to(n - 1)
        row["undo_render_last_s"] = round(time.perf_counter() - t0, 2)
        row["undo_stepped"] = s.stats["stepped"] - before
        row["undo_visited"] = f"{visits.start}..{visits.stop - 1}"
        row["load"] = round(os.getloadavg()[0], 1)
        tracker.reset()
        print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "what", choices=["decode", "rss", "latency", "spill", "correct", "fix", "resume"]
    )
    ap.add_argument("--bundle", help="spill, correct: an ONNX bundle (format 3)")
    ap.add_argument("--rounds", type=int, default=2, help="spill, correct: alternating rounds")
    ap.add_argument("--frames", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument(
        "--at",
        type=int,
        help="fix: the frame corrected (default 3/4 of the way; the last: "
        "where the viewer stopped); resume: where Track is stopped and the point undone "
        "(default: half way)",
    )
    ap.add_argument(
        "--played",
        type=int,
        help="fix: the last frame the viewer played (default: the clip's last; less: the "
        "tail is left part-way, as in a clip longer than what was played)",
    )
    ap.add_argument(
        "--prepared",
        action="store_true",
        help="fix: the frame prepared for the click first (ClipSession.prepare_correction, "
        "as the OpenFX worker does while the host idles), timed apart",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--engine",
        choices=["sam2", "fake"],
        default="sam2",
        help="rss: the real tracker, or the test double (the session alone)",
    )
    ap.add_argument(
        "--feature-cache-mib",
        type=int,
        default=256,
        help="rss: the session's image-feature cache budget (ClipSession's default: 256; "
        "this sweep-only session also keeps at most two frames, as a render does)",
    )
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    print(
        f"# {_cpu()}, {os.cpu_count()} cores, Python {platform.python_version()}", file=sys.stderr
    )
    if args.what == "decode":
        decode(args)
    elif args.what == "rss":
        rss_child(args) if args.child else rss(args)
    elif args.what == "spill":
        spill(args)
    elif args.what == "correct":
        correct(args)
    elif args.what == "fix":
        fix(args)
    elif args.what == "resume":
        resume(args)
    else:
        latency(args)


if __name__ == "__main__":
    main()

"""vosfx studio: click-to-mask latency, time to the first mask on a new frame, page load time,
track throughput against `vosfx matte` (pipeline.run) on the same clip, and server RSS while
scrubbing and tracking a 1,000-frame clip. Results: docs/benchmarks/studio.md.

    python benchmarks/studio.py latency              # 1024, page in chromium (a few minutes)
    python benchmarks/studio.py latency --precision bf16   # the same on the bf16 tier
    python benchmarks/studio.py breakdown            # a click's model stages and the view
    python benchmarks/studio.py threads --rounds 12  # a click's decoder graph, 1 vs 2 threads
    python benchmarks/studio.py throughput --size 256 --frames 32 --rounds 2
    python benchmarks/studio.py render --frames 24 --rounds 2   # Render after Track
    python benchmarks/studio.py rss --long 1000      # test-double engine, 1,000 frames

The engine is the real SAM 2.1 tiny architecture with seeded random weights (tests/ckpt.py;
speed does not depend on the values) on ONNX Runtime: at 1024 the bundle is filled from the
shipped graph template, at other sizes exported with torch. Latencies are measured in the page
(Debian's chromium through Playwright): from the mouse click to the click's masks drawn on the
canvas over the frame (the overlay the page draws from the masks the click returns), to the
finished view (guided refine and finishing, asked for once the clicks pause) drawn after it,
and on the server (the prompt's model time, and the masks' PNG layers). Each click waits for
the previous one's finished view, as a user looking at the result between clicks; clicks that
wait for the finished view instead (as the page did before it drew the returned masks) are
alternated with them, so the machine's load hits both alike. Throughput alternates the studio's track
and pipeline.run on the same engine, so a shared machine's load hits both alike. The RSS run
uses the test-double engine (tests/fakes.py): it measures what the studio itself keeps
(decoders, frame and feature caches, results, the page's requests); the engine's own memory
against clip length is benchmarks/engine.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def engine(size: int, threads: int, work: Path, precision: str = "fp32"):
    from tests.ckpt import make_checkpoint
    from vosfx.config import ModelConfig
    from vosfx.engine import load_engine

    ckpt, _sha = make_checkpoint(work / "sam2.1_hiera_tiny.pt")
    t0 = time.perf_counter()
    eng = load_engine(
        ModelConfig(
            backend="onnx",
            device="cpu",
            image_size=size,
            checkpoint=str(ckpt),
            threads=threads,
            precision=precision,
        )
    )
    return eng, time.perf_counter() - t0


def _screen(page, x, y):
    return page.evaluate(
        """([x, y]) => { const S = window.vosfx.state,
        r = document.getElementById('canvas').getBoundingClientRect();
        return [r.left + S.panX + x * S.zoom, r.top + S.panY + y * S.zoom]; }""",
        [x, y],
    )


def _click(page, x, y, exclude=False, quick=True) -> dict:
    page.evaluate(f"window.vosfx.quickOverlay = {'true' if quick else 'false'}")
    page.evaluate("window.vosfx.last = null")
    sx, sy = _screen(page, x, y)
    page.mouse.click(sx, sy, button="right" if exclude else "left")
    page.wait_for_function(
        "window.vosfx.last && window.vosfx.last.exactMs !== undefined", timeout=120_000
    )
    last = page.evaluate("window.vosfx.last")
    last.pop("objects", None)  # the mask layers (base64 PNG)
    return last


def _go(page, key: str, frame: int) -> None:
    """Press ``key`` in the page and wait until it shows ``frame``."""
    page.keyboard.press(key)
    page.wait_for_function(f"document.getElementById('canvas').dataset.frame === '{frame}'")


def _wait_warm(r, t: int, timeout_s: float = 120) -> float:
    """Seconds until frame ``t``'s features are in the session's cache (the warm-up)."""
    t0 = time.perf_counter()
    while not r.studio.session.has_features(t):
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"frame {t} was not warmed")
        time.sleep(0.02)
    return round(time.perf_counter() - t0, 2)


def out_median(clicks: list[dict]) -> float:
    return statistics.median(c["drawnMs"] for c in clicks)


def latency(args, work: Path) -> dict:
    """Page load, first mask on a new frame, click-to-mask (features kept)."""
    from playwright.sync_api import sync_playwright

    from tests.media import make_clip, square_box
    from tests.studio_helpers import Running

    w, h, n = args.width, args.height, args.frames
    clip = make_clip(work / "clip.mp4", n=n, width=w, height=h)
    eng, load_s = engine(args.size, args.threads, work, args.precision)
    r = Running(clip, work / "studio", engine=eng, presets=("matte-ffv1",))
    out: dict = {
        "engine_load_s": round(load_s, 2),
        "clip": f"{n} frames {w}x{h}",
        "precision": args.precision,
    }
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            loads = []
            for _ in range(3):
                t0 = time.perf_counter()
                page.goto(r.url)
                page.wait_for_selector("body[data-ready='1']")
                page.wait_for_function("window.vosfx.drawn > 0")
                loads.append((time.perf_counter() - t0) * 1000)
            out["page_load_ms"] = round(statistics.median(loads), 1)

            def centre(t):
                x0, y0, x1, y1 = square_box(t, w, h)
                return (x0 + x1) / 2, (y0 + y1) / 2

            x, y = centre(0)
            # the page has shown frame 0 since it loaded: its features are made ahead
            # (vosfx/studio/warm.py); the first click there waits for the decoder only
            warm_s = _wait_warm(r, 0)
            first = _click(page, x, y)
            out["first_mask_on_a_frame_shown_a_while_ms"] = {
                "page": round(first["drawnMs"], 1),
                "server": first["ms"],
                "finished_view": round(first["exactMs"], 1),
                "warm_up_s": warm_s,
            }
            print(json.dumps(out), file=sys.stderr, flush=True)
            clicks, finished = [], []
            for k in range(args.clicks):  # alternated: the quick overlay, the finished view
                dx = (k % 3 - 1) * 4
                for quick, into in ((True, clicks), (False, finished)):
                    into.append(_click(page, x + dx, y + (k % 2) * 3, k % 4 == 3, quick))
            out["click_to_finished_view_ms"] = {
                "page_median": round(statistics.median(c["drawnMs"] for c in finished), 1),
                "page_all": [round(c["drawnMs"], 1) for c in finished],
                "server_median": round(statistics.median(c["ms"] for c in finished), 1),
                "note": "the page waits for the finished view (guided refine + overlay + JPEG), "
                "as it did before the quick overlay; alternated with the clicks above",
            }
            out["ratio_quick_to_finished"] = round(out_median(clicks) / out_median(finished), 3)
            out["click_to_mask_ms"] = {
                "page_median": round(statistics.median(c["drawnMs"] for c in clicks), 1),
                "page_max": round(max(c["drawnMs"] for c in clicks), 1),
                "page_all": [round(c["drawnMs"], 1) for c in clicks],
                "server_median": round(statistics.median(c["ms"] for c in clicks), 1),
                "server_max": round(max(c["ms"] for c in clicks), 1),
                "layers_median": round(statistics.median(c["layers_ms"] for c in clicks), 1),
                # request and answer beyond the server's work; decoding and drawing the layers
                "transport_median": round(
                    statistics.median(c["clientMs"] - c["ms"] - c["layers_ms"] for c in clicks), 1
                ),
                "draw_median": round(
                    statistics.median(c["drawnMs"] - c["clientMs"] for c in clicks), 1
                ),
                "finished_view_median": round(statistics.median(c["exactMs"] for c in clicks), 1),
                "clicks": len(clicks),
                "load_average": os.getloadavg(),
            }
            print(json.dumps(out), file=sys.stderr, flush=True)
            # a new frame clicked as soon as it is drawn (before the warm-up delay): decode +
            # image encoder + prompt in the click
            _go(page, "End", n - 1)
            at_once = _click(page, *centre(n - 1))
            out["first_mask_new_frame_clicked_at_once_ms"] = {
                "page": round(at_once["drawnMs"], 1),
                "server": at_once["ms"],
            }
            # another new frame, clicked after the page stayed on it until its features were made
            t = n - 3
            page.keyboard.press("ArrowLeft")
            _go(page, "ArrowLeft", t)
            warm_s = _wait_warm(r, t)
            dwelt = _click(page, *centre(t))
            out["first_mask_on_a_frame_shown_a_while_ms"].update(
                page_2=round(dwelt["drawnMs"], 1), server_2=dwelt["ms"], warm_up_s_2=warm_s
            )
            # the worst case: a click on a new frame while another frame's warm-up runs (the
            # two image encoder calls share the cores)
            _go(page, "ArrowLeft", t - 1)
            time.sleep(0.6)  # past the warm-up delay: frame t - 1 is being encoded
            _go(page, "ArrowLeft", t - 2)
            during = _click(page, *centre(t - 2))
            out["first_mask_new_frame_during_another_warm_up_ms"] = {
                "page": round(during["drawnMs"], 1),
                "server": during["ms"],
            }
            out["warmed_frames"] = r.studio.session.stats["warmed"]
            browser.close()
    finally:
        r.close()
        eng.close()
    return out


def _tracked_studio(clip: Path, eng, preset: str, work: Path, w: int, h: int):
    """A Studio on ``clip`` with ``preset``, one click on frame 0's square, and its Track
    run: (studio, Track's seconds, frames stepped)."""
    from tests.media import square_box
    from vosfx.presets import resolve_config
    from vosfx.studio.state import Studio

    x0, y0, x1, y1 = square_box(0, w, h)
    config = resolve_config((preset,), {})
    st = Studio(str(clip), engine=eng, config=config, presets=(preset,), workdir=work / "st")
    st.add_object()
    st.click(1, 0, (x0 + x1) / 2, (y0 + y1) / 2, 1)
    t0 = time.perf_counter()
    stepped = st.session.track()
    return st, time.perf_counter() - t0, stepped


def throughput(args, work: Path) -> dict:
    """Frames/s of the studio's Track against pipeline.run (what `vosfx matte --job` runs)
    on the same clip, prompt and engine, alternated ``rounds`` times."""
    from tests.media import make_clip
    from vosfx.pipeline import run as pipeline_run

    w, h, n = args.width, args.height, args.frames
    clip = make_clip(work / "clip_t.mp4", n=n, width=w, height=h)
    eng, _ = engine(args.size, args.threads, work)
    (work / "st").mkdir(exist_ok=True)
    studio_fps, matte_fps = [], []
    try:
        for _k in range(args.rounds):
            st, track_s, stepped = _tracked_studio(clip, eng, "matte-ffv1", work, w, h)
            studio_fps.append(stepped / track_s)
            job = st.job(str(work / "matte.mkv"), overwrite=True)
            st.close()
            t0 = time.perf_counter()
            report = pipeline_run(job, engine=eng)
            matte_fps.append(report.frames / (time.perf_counter() - t0))
            print(
                json.dumps({"studio_fps": studio_fps, "matte_fps": matte_fps}),
                file=sys.stderr,
                flush=True,
            )
    finally:
        eng.close()
    s, m = statistics.median(studio_fps), statistics.median(matte_fps)
    return {
        "clip": f"{n} frames {w}x{h}",
        "size": args.size,
        "studio_track_fps": [round(v, 3) for v in studio_fps],
        "matte_fps": [round(v, 3) for v in matte_fps],
        "ratio_of_medians": round(s / m, 3),
        "note": "studio: track only (frames stepped after the prompt); matte: the whole "
        "pipeline.run (decode, track, refine, ffv1 writer, sidecar)",
    }


def render(args, work: Path) -> dict:
    """Render after Track: ``pipeline.run`` given the studio's session (what the studio's
    Render runs since the thirty-sixth pass: the tracked results written, nothing tracked
    again) against a session of the render's own (what it ran before: every frame tracked
    again), on the same clip, prompt, engine and outputs; the order alternates per round.
    Then Save job (the results handed over) and the job rendered with a session of its own,
    as an editor plugin renders what the studio's Done hands it."""
    from tests.media import make_clip
    from vosfx.pipeline import run as pipeline_run

    w, h, n = args.width, args.height, args.frames
    clip = make_clip(work / "clip_r.mp4", n=n, width=w, height=h)
    eng, _ = engine(args.size, args.threads, work)
    (work / "st").mkdir(exist_ok=True)
    rows = []
    try:
        for k in range(args.rounds):
            st, track_s, stepped = _tracked_studio(clip, eng, "prores4444", work, w, h)
            row = {"round": k, "track_s": round(track_s, 2), "tracked": stepped}
            job = st.job(str(work / "matte.mov"), overwrite=True)
            for reuse in (True, False) if k % 2 == 0 else (False, True):
                t0 = time.perf_counter()
                report = pipeline_run(job, engine=eng, session=st.session if reuse else None)
                name = "render_after_track_s" if reuse else "render_own_session_s"
                row[name] = round(time.perf_counter() - t0, 2)
                row["frames"] = report.frames
            # Done / Save job: the results handed over (vosfx/pipeline/handoff.py), then the
            # job rendered with a session of its own, as an editor plugin's process renders it
            t0 = time.perf_counter()
            st.save_job(job, work / "job.json")
            row["save_job_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            pipeline_run(job, engine=eng)
            row["render_handed_over_s"] = round(time.perf_counter() - t0, 2)
            shutil.rmtree(work / "home" / "tracked", ignore_errors=True)
            st.close()
            row["load"] = round(os.getloadavg()[0], 1)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        eng.close()
    return {
        "clip": f"{n} frames {w}x{h}",
        "size": args.size,
        "rounds": rows,
        "note": "render: pipeline.run to ProRes 4444 (decode, balanced refinement, writer, "
        "sidecar); after track: the studio session's results; own session: tracked again",
    }


def breakdown(args, work: Path) -> dict:
    """Where a click's time goes once the frame's features exist: the prompt encoder + mask
    decoder (``Backend.track``, its two graphs), the memory encoder (run only when a pass
    first attends the prompted frame, so 0 here), the masks the click returns (PNG layers at
    the clip's size) and the finished view the page asks for after (refine + overlay + JPEG),
    each timed alone ``clicks`` times on the studio's own objects."""
    from tests.media import make_clip, square_box
    from vosfx.presets import resolve_config
    from vosfx.studio.state import Studio
    from vosfx.studio.views import mask_layers, render_view

    w, h = args.width, args.height
    clip = make_clip(work / "clip_b.mp4", n=4, width=w, height=h)
    eng, _ = engine(args.size, args.threads, work)
    (work / "sb").mkdir(exist_ok=True)
    st = Studio(str(clip), engine=eng, config=resolve_config((), {}), workdir=work / "sb")
    acc: dict[str, float] = {}
    try:
        st.add_object()
        x0, y0, x1, y1 = square_box(0, w, h)
        st.click(1, 0, (x0 + x1) / 2, (y0 + y1) / 2, 1)  # features now kept
        backend = st.session.engine.backend
        _timed(backend, ("track", "encode_memory", "encode_image"), acc)
        if hasattr(backend, "_run"):  # ONNX Runtime: each graph a click runs
            _timed_graphs(backend, acc)
        clicks, views, cpu_clicks, cpu_views, layers = [], [], [], [], []
        for k in range(args.clicks):
            t0, c0 = time.perf_counter(), time.process_time()
            res = st.click(1, 0, (x0 + x1) / 2 + k % 3, (y0 + y1) / 2, 1)
            clicks.append(time.perf_counter() - t0)
            cpu_clicks.append(time.process_time() - c0)
            t0 = time.perf_counter()
            mask_layers(st, res)
            layers.append(time.perf_counter() - t0)
            t0, c0 = time.perf_counter(), time.process_time()
            render_view(st, 0, "overlay")
            views.append(time.perf_counter() - t0)
            cpu_views.append(time.process_time() - c0)
    finally:
        st.close()
        eng.close()
    per = {k: round(v / args.clicks * 1000, 1) for k, v in acc.items()}
    return {
        "size": args.size,
        "clip": f"{w}x{h}",
        "clicks": args.clicks,
        "click_ms_median": round(statistics.median(clicks) * 1000, 1),
        "per_click_ms": per,
        "mask_layers_ms_median": round(statistics.median(layers) * 1000, 1),
        "view_overlay_ms_median": round(statistics.median(views) * 1000, 1),
        "cpu_ms_median": {
            "click": round(statistics.median(cpu_clicks) * 1000, 1),
            "view": round(statistics.median(cpu_views) * 1000, 1),
        },
        "load_average": os.getloadavg(),
    }


def _timed(obj, names, acc):
    """Wrap obj's methods so their wall time accumulates into acc[name] (seconds)."""
    for name in names:
        fn = getattr(obj, name)

        def wrapper(*a, _fn=fn, _name=name, **k):
            t, c = time.perf_counter(), time.process_time()
            try:
                return _fn(*a, **k)
            finally:
                acc[_name] = acc.get(_name, 0.0) + time.perf_counter() - t
                cpu = _name + " cpu"
                acc[cpu] = acc.get(cpu, 0.0) + time.process_time() - c

        setattr(obj, name, wrapper)


def threads(args, work: Path) -> dict:
    """A click's decoder graph (the ONNX bundle's ``decoder``, image-mode inputs of one frame)
    in ONNX Runtime sessions with the backend's options and 2 intra-op threads (the
    default here: one per core), 2 threads without spin-waiting, and 1 thread, alternated
    ``rounds`` times: wall and process CPU time, medians."""
    import numpy as np
    import onnxruntime as ort

    from vosfx.engine.ort_runtime import session_options

    eng, _ = engine(args.size, args.threads, work)
    b = eng.backend
    rgb = (np.random.default_rng(0).random((args.height, args.width, 3)) * 255).astype(np.uint8)
    f = b.encode_image(rgb)
    (pix,) = b._run("no_memory", {"vision_feat": f.vision_feat})
    path = str(b.bundle / b.manifest["graphs"]["decoder"]["file"])

    def session(n: int, spin: bool):
        opts = session_options(ort, threads=n)
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    variants = {
        "2 threads": session(2, True),
        "2 threads, no spinning": session(2, False),
        "1 thread": session(1, True),
    }
    s = args.size
    feeds = {
        "pix_feat": pix,
        "feat_s0": f.feat_s0,
        "feat_s1": f.feat_s1,
        "point_coords": np.array([[[s / 2, s / 2]]], np.float32),
        "point_labels": np.array([[1]], np.int32),
        "min_object_score": np.zeros((1, 1), np.float32),  # SAM 2's own gate
    }
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for sess in variants.values():
        sess.run(None, feeds)
    for _ in range(args.rounds):
        for name, sess in variants.items():
            t, c = time.perf_counter(), time.process_time()
            sess.run(None, feeds)
            wall[name].append((time.perf_counter() - t) * 1000)
            cpu[name].append((time.process_time() - c) * 1000)
    eng.close()
    return {
        "size": s,
        "rounds": args.rounds,
        "wall_ms_median": {k: round(statistics.median(v), 1) for k, v in wall.items()},
        "cpu_ms_median": {k: round(statistics.median(v), 1) for k, v in cpu.items()},
        "load_average": os.getloadavg(),
    }


def _timed_graphs(backend, acc):
    """Wrap an OnnxBackend's graph runner so each graph's wall and CPU time accumulate into
    acc["graph NAME"]."""
    run = backend._run

    def wrapper(name, feeds):
        t, c = time.perf_counter(), time.process_time()
        try:
            return run(name, feeds)
        finally:
            key = f"graph {name}"
            acc[key] = acc.get(key, 0.0) + time.perf_counter() - t
            acc[key + " cpu"] = acc.get(key + " cpu", 0.0) + time.process_time() - c

    backend._run = wrapper


def memory(args, work: Path) -> dict:
    """Server RSS while scrubbing and tracking a long clip (in this process: the server
    runs here on a thread)."""
    from tests.fakes import FakeEngine
    from tests.media import make_clip, square_box
    from tests.studio_helpers import Running

    w, h, n = args.width, args.height, args.long
    clip = make_clip(work / "long.mp4", n=n, width=w, height=h)
    eng = FakeEngine()
    r = Running(clip, work / "studio_long", engine=eng, presets=("matte-ffv1",))
    samples: list[tuple[float, str, int, float]] = []
    stop = threading.Event()
    phase = {"name": "idle", "done": 0}

    def sampler():
        t0 = time.perf_counter()
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, phase["name"], phase["done"], rss_mib()))
            time.sleep(0.25)

    threading.Thread(target=sampler, daemon=True).start()
    try:
        phase["name"] = "scrub"
        frames = list(range(0, n, 3))
        random.Random(0).shuffle(frames)
        for i, t in enumerate(frames):
            r.request(f"/api/view/{t}?view=overlay")
            phase["done"] = i + 1
        x0, y0, x1, y1 = square_box(0, w, h)
        r.request("/api/click", {"obj_id": 1, "frame": 0, "x": (x0 + x1) / 2, "y": (y0 + y1) / 2})
        phase["name"] = "track"
        r.request("/api/track", {})
        while r.studio.busy:
            phase["done"] = int(r.studio.session.stats["stepped"])
            time.sleep(0.2)
        phase["name"] = "scrub tracked"
        for i, t in enumerate(frames[:200]):
            r.request(f"/api/view/{t}?view=matte")
            phase["done"] = i + 1
    finally:
        stop.set()
        r.close()
        eng.close()
    track = [s for s in samples if s[1] == "track"]

    def at(frac):
        target = frac * n
        pick = min(track, key=lambda s: abs(s[2] - target))
        return round(pick[3], 1)

    return {
        "clip": f"{n} frames {w}x{h}",
        "engine": "test double (tests/fakes.py)",
        "rss_mib_after_scrub": round(max(s[3] for s in samples if s[1] == "scrub"), 1),
        "rss_mib_tracked_10pct": at(0.1),
        "rss_mib_tracked_50pct": at(0.5),
        "rss_mib_tracked_100pct": at(1.0),
        "rss_mib_scrub_tracked": round(
            max((s[3] for s in samples if s[1] == "scrub tracked"), default=0), 1
        ),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def machine() -> dict:
    import onnxruntime

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "what", choices=("latency", "breakdown", "threads", "throughput", "render", "rss")
    )
    ap.add_argument("--size", type=int, default=1024, help="model image size")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--frames", type=int, default=24, help="clip length (latency, throughput)")
    ap.add_argument("--long", type=int, default=1000, help="clip length for the RSS run")
    ap.add_argument("--clicks", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--precision", default="fp32", help="latency: the engine's precision (fp32, bf16, int8)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vosfx-bench-studio-") as tmp:
        work = Path(tmp)
        os.environ["VOSFX_HOME"] = str(work / "home")
        os.environ["VOSFX_CONFIG_DIR"] = str(work / "config")
        fn = {
            "latency": latency,
            "breakdown": breakdown,
            "threads": threads,
            "throughput": throughput,
            "render": render,
            "rss": memory,
        }[args.what]
        result = {"machine": machine(), args.what: fn(args, work)}
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

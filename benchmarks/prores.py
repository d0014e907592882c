"""ProRes encoders side by side at 1920x1080: speed and round-trip error.

FFmpeg has two ProRes encoders: ``prores_ks`` (Kostya Shishkov; profiles, vendor tag, alpha
bits, quantiser control) and ``prores`` (``prores_aw``, Anatoliy Wasserman). Both take
yuva444p10le. The same prepared frames (planes filled by vosfx's own converter, as the
writer does) are encoded by each encoder in alternating rounds, so load from other users
hits both alike; the medians over rounds are reported. Each output is decoded back with
PyAV (FFmpeg's ``prores`` decoder) and compared code for code with what went in: alpha in
10-bit codes (the matte), Y'CbCr in 10-bit codes (the picture).

    python benchmarks/prores.py                  # 24 frames, 3 rounds
    python benchmarks/prores.py --frames 48 --rounds 5
    python benchmarks/prores.py --matte          # the prores422hq-matte luma matte instead

``--matte``: prores_ks at profile 3 (422 HQ, yuv422p10le), its rate control against a fixed
quantiser 1, on three kinds of matte: the moving soft ellipse of benchmarks/write.py, DAVIS
ground-truth masks scaled to 1080p and feathered as refinement leaves them (when
../shared/data is there), and a worst case no refined matte looks like: the ellipse under
grain (sigma 0.05). Errors are of the luma in 10-bit codes; chroma must decode to 512.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from write import H, W, machine, matte_field, source_images

from vosfx.io.writers.base import frame_rgb01
from vosfx.io.writers.pictures import luma_codes, planar_frame, rgb_to_ycbcr
from vosfx.types import Frame

# (name, codec, options). prores_ks as the formats table had it (rate control: it searches
# quantisers per slice to fill the 4444 profile's data rate), prores_ks with a fixed
# quantiser (FFmpeg's -q:v: "flags +qscale" and global_quality = q x FF_QP2LAMBDA (118), which
# skips that search), and prores_aw with profile 4444 (its own option set has only "vendor";
# the profile is the codec context's).
_KS = {"profile": "4", "alpha_bits": "16", "vendor": "apl0"}
ENCODERS = (
    ("prores_ks", "prores_ks", _KS),
    ("prores_ks q1", "prores_ks", {**_KS, "flags": "+qscale", "global_quality": "118"}),
    ("prores_ks q2", "prores_ks", {**_KS, "flags": "+qscale", "global_quality": "236"}),
    ("prores_aw", "prores", {"profile": "4", "vendor": "apl0"}),
)
_HQ = {"profile": "3", "vendor": "apl0"}
MATTE_ENCODERS = (
    ("prores_ks", "prores_ks", _HQ),
    ("prores_ks q1", "prores_ks", {**_HQ, "flags": "+qscale", "global_quality": "118"}),
)
TB = Fraction(1, 25)
DAVIS = Path(__file__).resolve().parents[1].parent / "shared/data/davis/Annotations"


def planes(frames: int) -> list[list[np.ndarray]]:
    """Per frame [Y, Cb, Cr, A] float32 10-bit codes, as VideoWriter fills them."""
    images, _ = source_images(16)
    field = matte_field(frames)
    out = []
    for i in range(frames):
        rgb = frame_rgb01(Frame(i, images[i % len(images)], i, TB))
        alpha = np.ascontiguousarray(field[:, 8 * i : 8 * i + W])
        y, cb, cr = rgb_to_ycbcr(rgb, 10)
        out.append([y, cb, cr, alpha * np.float32(1023)])
    return out


def matte_planes(kind: str, frames: int) -> list[list[np.ndarray]]:
    """Per frame [Y, Cb, Cr] float32 10-bit codes of a luma matte, as VideoWriter fills
    them for prores422hq-matte. ``kind``: "ellipse", "davis" or "grain"."""
    import cv2

    if kind == "davis":
        from PIL import Image

        paths = [
            p
            for seq in ("blackswan", "bmx-trees", "libby")
            for p in sorted((DAVIS / seq).glob("*.png"))[:8]
        ]
        alphas = []
        for i in range(frames):
            mask = np.asarray(Image.open(paths[i % len(paths)])) > 0
            big = cv2.resize(mask.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
            alphas.append(cv2.GaussianBlur(big, (0, 0), 2.0))  # a feathered edge
    else:
        field = matte_field(frames)
        alphas = [np.ascontiguousarray(field[:, 8 * i : 8 * i + W]) for i in range(frames)]
        if kind == "grain":
            rng = np.random.default_rng(0)
            alphas = [
                np.clip(a + rng.normal(0, 0.05, a.shape).astype(np.float32), 0, 1) for a in alphas
            ]
    chroma = np.full((H, W // 2), 512, np.float32)
    return [[luma_codes(a, 10), chroma, chroma] for a in alphas]


def encode(
    codec: str, options: dict, pics: list[list[np.ndarray]], path: Path, pix_fmt: str
) -> dict:
    import av

    frames = [planar_frame(pix_fmt, p, W, H, 10) for p in pics]
    t0, c0 = time.perf_counter(), time.process_time()
    with av.open(str(path), "w", format="mov") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = W, H, pix_fmt
        s.options = dict(options)
        s.thread_type, s.thread_count = "AUTO", 0  # as VideoWriter
        for i, vf in enumerate(frames):
            vf.pts = i
            vf.time_base = TB
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "fps": len(frames) / wall,
        "cpu_ms": cpu / len(frames) * 1e3,
        "mb": path.stat().st_size / 1e6,
    }


def round_trip(path: Path, pics: list[list[np.ndarray]]) -> dict:
    """|decoded - input| in 10-bit codes (floats), as an application sees the file: the
    decoder's own output (12-bit for ProRes 4444), colour codes scaled by the bit shift of
    video range, alpha normalised by its full scale (2^bits - 1), so an alpha of 1.0 that
    decodes to 4092 / 4095 counts as 0.75 of a 10-bit code off. Also the decoded value of a
    fully opaque input pixel (1.0 is exact)."""
    import av

    err_a, err_c, mean_a, mean_c, sq_c, opaque = 0.0, 0.0, [], [], [], 1.0
    with av.open(str(path)) as c:
        for vf, p in zip(c.decode(video=0), pics):
            bits = vf.format.components[0].bits
            got = [
                np.frombuffer(pl, np.uint16).reshape(pl.height, -1)[:, :W].astype(np.float64)
                for pl in vf.planes
            ]
            want = [np.clip(np.rint(x), 0, 1023) for x in p]
            alpha01 = got[3] / ((1 << bits) - 1)
            da = np.abs(alpha01 * 1023 - want[3])
            dc = np.abs(np.stack(got[:3]) / (1 << (bits - 10)) - np.stack(want[:3]))
            err_a, err_c = max(err_a, float(da.max())), max(err_c, float(dc.max()))
            mean_a.append(float(da.mean()))
            mean_c.append(float(dc.mean()))
            sq_c.append(float(np.mean(dc**2)))
            full = want[3] == 1023
            if full.any():
                opaque = min(opaque, float(alpha01[full].min()))
    psnr = 10 * np.log10(1023.0**2 / max(float(np.mean(sq_c)), 1e-12))
    return {
        "alpha_max": err_a,
        "alpha_mean": float(np.mean(mean_a)),
        "opaque": opaque,
        "ycc_max": err_c,
        "ycc_mean": float(np.mean(mean_c)),
        "ycc_psnr": psnr,
    }


def matte_round_trip(path: Path, pics: list[list[np.ndarray]]) -> dict:
    """|decoded luma - input luma| in 10-bit codes, and the farthest chroma from 512."""
    import av

    err, mean, chroma = 0.0, [], 0.0
    with av.open(str(path)) as c:
        for vf, p in zip(c.decode(video=0), pics):
            got = [
                np.frombuffer(pl, np.uint16)
                .reshape(pl.height, -1)[:, : pl.width]
                .astype(np.float64)
                for pl in vf.planes
            ]
            d = np.abs(got[0][:, :W] - np.clip(np.rint(p[0]), 0, 1023))
            err = max(err, float(d.max()))
            mean.append(float(d.mean()))
            chroma = max(chroma, float(np.abs(np.stack(got[1:]) - 512).max()))
    return {"luma_max": err, "luma_mean": float(np.mean(mean)), "chroma_max": chroma}


def main_matte(args) -> None:
    kinds = ["ellipse", "grain"] + (["davis"] if DAVIS.is_dir() else [])
    print(f"mattes: {', '.join(kinds)}" + ("" if DAVIS.is_dir() else f" ({DAVIS} not found)"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="vosfx-prores-") as tmp:
        for kind in kinds:
            pics = matte_planes(kind, args.frames)
            runs: dict[str, list[dict]] = {name: [] for name, _, _ in MATTE_ENCODERS}
            errors, packets = {}, {}
            for r in range(args.rounds):
                for name, codec, opts in MATTE_ENCODERS:
                    path = Path(tmp) / f"{kind}_{name.replace(' ', '_')}.mov"
                    runs[name].append(encode(codec, opts, pics, path, "yuv422p10le"))
                    if r == 0:
                        errors[name] = matte_round_trip(path, pics)
                        packets[name] = path.stat().st_size
            print(f"{kind}: done (load {os.getloadavg()[0]:.1f})", flush=True)
            for name, _, _ in MATTE_ENCODERS:
                med = {k: statistics.median(x[k] for x in runs[name]) for k in runs[name][0]}
                rows.append((kind, name, med, errors[name], packets[name]))
    print(
        f"\n{args.frames} frames a matte at {W}x{H}, yuv422p10le, {args.rounds} rounds (medians)\n"
    )
    print(
        "| matte | encoder | frames/s | CPU ms / frame | file bytes | luma max err (10-bit codes) "
        "| luma mean err | chroma farthest from 512 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, name, med, e, size in rows:
        print(
            f"| {kind} | {name} | {med['fps']:.2f} | {med['cpu_ms']:.1f} | {size} | "
            f"{e['luma_max']:.0f} | {e['luma_mean']:.5f} | {e['chroma_max']:.0f} |"
        )
    for kind in kinds:
        rc, q1 = [r for r in rows if r[0] == kind]
        print(
            f"{kind}: CPU a frame, rate control / q1 {rc[2]['cpu_ms'] / q1[2]['cpu_ms']:.2f}x; "
            f"file q1 / rate control {q1[4] / rc[4]:.3f}x"
        )
    print(f"load average after: {os.getloadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--matte", action="store_true", help="the 422 HQ luma matte instead")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()}")
    if args.matte:
        main_matte(args)
        return
    pics = planes(args.frames)
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in ENCODERS}
    errors = {}
    with tempfile.TemporaryDirectory(prefix="vosfx-prores-") as tmp:
        for r in range(args.rounds):
            for name, codec, opts in ENCODERS:
                path = Path(tmp) / f"{name.replace(' ', '_')}.mov"
                runs[name].append(encode(codec, opts, pics, path, "yuva444p10le"))
                print(
                    f"round {r + 1} {name}: {runs[name][-1]['fps']:.2f} frames/s "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                if r == 0:
                    errors[name] = round_trip(path, pics)
    print(f"\n{args.frames} frames at {W}x{H}, yuva444p10le, {args.rounds} rounds (medians)\n")
    print(
        "| encoder | frames/s | CPU ms / frame | MB / frame | alpha max err (codes /1023) "
        "| alpha mean err | opaque alpha decodes to | Y'CbCr max err (codes /1023) "
        "| Y'CbCr mean err | Y'CbCr PSNR dB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, _ in ENCODERS:
        med = {k: statistics.median(x[k] for x in runs[name]) for k in runs[name][0]}
        e = errors[name]
        print(
            f"| {name} | {med['fps']:.2f} | {med['cpu_ms']:.0f} | "
            f"{med['mb'] / args.frames:.2f} | {e['alpha_max']:.2f} | {e['alpha_mean']:.3f} | "
            f"{e['opaque']:.5f} | {e['ycc_max']:.2f} | {e['ycc_mean']:.3f} | "
            f"{e['ycc_psnr']:.1f} |"
        )
    base = statistics.median(x["cpu_ms"] for x in runs["prores_ks"])
    for name, _, _ in ENCODERS[1:]:
        cpu = statistics.median(x["cpu_ms"] for x in runs[name])
        print(f"CPU time per frame, prores_ks (rate control) / {name}: {base / cpu:.2f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

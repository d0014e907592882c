"""Masks of the reduced-precision tiers against the fp32 ONNX path on every DAVIS clip.

For each clip of ``../shared/data/davis`` the first ``--frames`` frames are tracked from the
frame-0 annotation with the fp32 ONNX backend and with each ``--tiers`` precision; the table
gives, per clip and tier, the binary-mask IoU against fp32 at video resolution (min and mean
over the tracked frames after the prompt), the max abs low-res logit difference, and the
seconds each backend spent. Weights are seeded random (no pretrained SAM 2 weights exist on
the project's machines), so this measures agreement with fp32, not segmentation quality.

    python benchmarks/precision.py                          # 1024 px, 8 frames, bf16 int8
    python benchmarks/precision.py --size 256 --frames 4    # quick

Prints one JSON line per clip and tier, then the table; ``--json PATH`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
DATA = REPO.parent / "shared" / "data" / "davis"


# tiers built with openvino_runtime's lists of stages emptied (see main)
WITHOUT = {
    "bf16-22": ("STEADY_SHAPES", "SPLIT_PRODUCTS"),
    "bf16-steady": ("SPLIT_PRODUCTS",),
    "bf16-products": ("STEADY_SHAPES",),
    "bf16-23": ("FLOAT32_OPS",),
    "bf16-24": ("INT8_SCORES", "FUSED_ATTENTION"),
    "bf16-26": ("DEFERRED_NORMALISATION", "FUSED_ATTENTION"),
    "bf16-27": ("FUSED_ATTENTION",),
}
# the int8 tier with vosfx.engine.ort_attention's INT8_SCORES emptied: memory attention's
# scores float32, as before the twenty-sixth pass
WITHOUT_INT8_SCORES = ("int8-25",)


def _clip(seq: str, n: int):
    import numpy as np
    from PIL import Image

    files = sorted((DATA / "JPEGImages" / seq).glob("*.jpg"))[:n]
    rgb = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    mask = np.asarray(Image.open(DATA / "Annotations" / seq / "00000.png")) == 1
    return rgb, mask


def _track(backend, rgb, mask):
    """[(H, W) video-res logits], [(s, s) low-res logits], seconds."""
    from vosfx.engine.loader import SamEngine
    from vosfx.pipeline import track_arrays
    from vosfx.types import Prompt

    h, w = rgb[0].shape[:2]
    vid, low = [], []
    t = time.perf_counter()
    for _frame, res in track_arrays(
        SamEngine(backend, "bench", None), rgb, [Prompt(0, 1, mask=mask)]
    ):
        low.append(res.logits[0].copy())
        vid.append(res.video_logits(h, w)[0])
    return vid, low, time.perf_counter() - t


def _iou(a, b) -> float:
    import numpy as np

    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--tiers", default="bf16,int8")
    ap.add_argument("--seqs", default="", help="comma list; default every clip")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/vosfx-bench-onnx")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import numpy as np

    from tests.ckpt import make_checkpoint
    from vosfx.engine.export import export_bundle
    from vosfx.engine.onnx_backend import OnnxBackend

    tiers = [t for t in args.tiers.split(",") if t]
    work = Path(args.work)
    ckpt, _ = make_checkpoint(work / "sam2.1_tiny_random.pt")
    # bf16-split / bf16-fused: the bf16 tier with memory attention's attention in query
    # blocks / in OpenVINO's own kernel (plain bf16: the CPU's default, split where it has AMX)
    variants = tuple({t.partition("-")[0] for t in tiers} & {"int8", "bf16"})
    bundle = export_bundle(
        str(ckpt), out_dir=work / f"bundle-{args.size}", image_size=args.size, variants=variants
    )
    seqs = (
        args.seqs.split(",")
        if args.seqs
        else sorted(p.name for p in (DATA / "JPEGImages").iterdir())
    )
    from vosfx.engine import openvino_runtime as ovr
    from vosfx.engine import ort_attention

    backends = {}
    for p in ["fp32", *tiers]:
        precision, _, attention = p.partition("-")
        # bf16-22: the tier as the twenty-second pass left it (memory attention's shapes
        # dynamic on every call, Hiera's qkv products split afterwards); bf16-steady /
        # bf16-products: the twenty-third pass's steady shapes / products one per part alone;
        # bf16-23: the image encoder's convolutions in bfloat16 too, as before the
        # twenty-fourth pass (whose guard of the attentions' Transposes every tier keeps);
        # bf16-24: memory attention's scores in bfloat16 too, as before the twenty-fifth pass
        # int8-25: memory attention's scores float32, as before the twenty-sixth pass;
        # bf16-26: its int8 scores multiplied back before a Softmax, as before the
        # twenty-seventh pass (not normalised after the values' product); bf16-27: its
        # attentions in query blocks in OpenVINO's graph, as before the twenty-eighth pass (not
        # in vosfx's int8 attention kernel)
        scored = () if p in WITHOUT_INT8_SCORES else ort_attention.INT8_SCORES
        with (
            ovr.without(*WITHOUT.get(p, ())),
            mock.patch.object(ort_attention, "INT8_SCORES", scored),
        ):
            backends[p] = OnnxBackend(
                bundle,
                device="cpu",
                threads=args.threads,
                precision=precision,
                attention=None if p in WITHOUT or p in WITHOUT_INT8_SCORES else attention or None,
            )
    print(json.dumps({"size": args.size, "frames": args.frames, "loadavg": os.getloadavg()}))
    rows = []
    for seq in seqs:
        rgb, mask = _clip(seq, args.frames)
        load = os.getloadavg()[0]
        ref_vid, ref_low, ref_s = _track(backends["fp32"], rgb, mask)
        for tier in tiers:
            vid, low, sec = _track(backends[tier], rgb, mask)
            ious = [_iou(v > 0, r > 0) for v, r in zip(vid[1:], ref_vid[1:])]
            row = {
                "seq": seq,
                "tier": tier,
                "frames": len(vid),
                "iou_min": round(min(ious), 4),
                "iou_mean": round(float(np.mean(ious)), 4),
                "max_abs_logit": round(
                    max(float(np.abs(a - b).max()) for a, b in zip(low, ref_low)), 3
                ),
                "fg_fraction_fp32": round(float(np.mean([(r > 0).mean() for r in ref_vid])), 3),
                "fp32_s": round(ref_s, 1),
                "tier_s": round(sec, 1),
                "loadavg_1m_before": round(load, 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        f"\n{'clip':<12}{'tier':<11}{'IoU min':>9}{'IoU mean':>10}{'max |dlogit|':>14}"
        f"{'fp32 s':>8}{'tier s':>8}{'load':>6}"
    )
    for r in rows:
        print(
            f"{r['seq']:<12}{r['tier']:<11}{r['iou_min']:>9}{r['iou_mean']:>10}"
            f"{r['max_abs_logit']:>14}{r['fp32_s']:>8}{r['tier_s']:>8}{r['loadavg_1m_before']:>6}"
        )
    worst = {t: min(r["iou_min"] for r in rows if r["tier"] == t) for t in tiers}
    print("worst IoU vs fp32 per tier:", worst)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "worst": worst}, indent=2))


if __name__ == "__main__":
    main()

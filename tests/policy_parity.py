"""Shared parts of the policy parity tests: run vosfx on a recorded case, compare per frame.

A case is ``tests/fixtures/policies/<name>.json`` + ``.npz`` (see docs/memory.md, "How the
policy fixtures were recorded"): the reference's low-res logits per frame, its video mask's
hash and area, and whatever the policy's own rules decided there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from tests.conftest import shared_data

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
TOL = 1e-3  # the contract on video-resolution logits
# measured: under 1e-5. Random weights give small logits, so a wrong memory can stay under
# 1e-3 (the prompt frame's memory encoded without binarising moved frame 1 by 4.5e-4)
TIGHT = 1e-4
# DAM4SAM's distractor-resolving frames re-encoded from their mask without binarising move the
# logits by only 4e-5: that detail is held to 1e-5 (measured with it right: 4e-6)
DETAIL = 1e-5


def load_case(name: str) -> tuple[dict, dict[int, np.ndarray]]:
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    with np.load(FIXTURES / f"{name}.npz") as npz:
        lows = {int(k[1:]): npz[k] for k in npz.files}
    return meta, lows


def weights_sha(sd) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].numpy().tobytes())
    return h.hexdigest()[:16]


def run_ours(meta: dict, weights: dict, make_policy, scripts: dict | None):
    """Track the case with vosfx's torch backend: ((H, W), {t: low-res logits},
    {t: ObjectResult}, the pass's policy)."""
    import torch
    from PIL import Image

    from tests import scripted_decoder as sd
    from vosfx.engine.loader import torch_backend_for
    from vosfx.engine.tracker import Tracker
    from vosfx.models.checkpoint import build_model
    from vosfx.types import Frame, Prompt, VideoInfo

    assert weights_sha(weights) == meta["weights_sha"], "not the weights the fixture was made with"
    seq, n = meta["seq"], meta["num_frames"]
    src = shared_data("davis", "JPEGImages", seq)
    frames = [np.asarray(Image.open(src / f"{i:05d}.jpg").convert("RGB")) for i in range(n)]
    mask = np.asarray(Image.open(shared_data("davis", "Annotations", seq, "00000.png"))) == 1
    net = build_model(meta["config"], image_size=meta["image_size"])
    net.load_state_dict(weights, strict=True)
    if scripts is not None:
        sd.install(net.sam_mask_decoder, scripts, sd.FrameSignatures(meta["signatures"]).frame)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backend = torch_backend_for(net, "cpu")
        h, w = frames[0].shape[:2]
        info = VideoInfo(path="", width=w, height=h, num_frames=n, fps=None, time_base=1)
        policies = []

        def make():
            policies.append(make_policy())
            return policies[-1]

        trk = Tracker(backend, make, info, fill_hole_area=0)
        lows = {0: trk.prompt(Frame(0, frames[0], None, 1), Prompt(0, 1, mask=mask)).logits}
        pid = trk.start_pass(1, 0, 1)
        results = {}
        for t in range(1, n):
            (res,) = trk.step(Frame(t, frames[t], None, 1), [pid])
            lows[t], results[t] = res.logits, res
        for res in trk.end_pass(pid):  # SAM2Long revises frames along its best pathway
            lows[res.frame_index], results[res.frame_index] = res.logits, res
    finally:
        torch.set_num_threads(threads)
    return (h, w), lows, results, policies[-1]  # [0] only told the tracker its name


def compare_frame(
    rec: dict, want_low: np.ndarray, got_low: np.ndarray, hw: tuple[int, int]
) -> float:
    """Check one frame's video mask against the reference (hash of the reconstruction, IoU
    >= 0.999) and return the largest video-resolution logit difference."""
    import torch

    def video(low):  # SAM 2's upsampling to the video's resolution
        x = torch.from_numpy(np.asarray(low, np.float32))[None, None]
        return torch.nn.functional.interpolate(x, hw, mode="bilinear", align_corners=False)[
            0, 0
        ].numpy()

    t = rec["t"]
    want, got = video(want_low), video(got_low)
    want_mask = want > 0
    # the recorded hash proves the reconstruction of the reference's video mask
    digest = hashlib.sha256(np.packbits(want_mask.reshape(-1)).tobytes()).hexdigest()[:16]
    assert digest == rec["mask_sha"] and int(want_mask.sum()) == rec["area"], f"frame {t}"
    got_mask = got > 0
    union = np.logical_or(got_mask, want_mask).sum()
    iou = 1.0 if union == 0 else np.logical_and(got_mask, want_mask).sum() / union
    assert iou >= 0.999, f"frame {t}: mask IoU {iou}"
    return float(np.abs(got - want).max())

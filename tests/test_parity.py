"""Parity: the streaming Tracker against sam2's own SAM2VideoPredictor (sam2 1.1.0).

Same seeded random weights, same JPEG frames (both decode them with PIL, so the encoder inputs
are identical), same prompts; the per-frame video-resolution logits must agree within 1e-3.

The official predictor is given each prompt before propagating its frame, as sam2 requires:
for a correction on frame k it propagates 0 .. k-1, gets the prompt on k, then propagates from
k. (Given all prompts up front, sam2 would let frames before k attend to frame k's future
memory, which no streaming tracker can do.) sam2's hole filling needs its CUDA extension and is
skipped on CPU with a warning, so the tracker runs with ``fill_hole_area=0`` here.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from tests.conftest import shared_data

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from PIL import Image

from vosfx.engine.loader import torch_backend_for
from vosfx.engine.policies import Sam2Policy
from vosfx.engine.tracker import Tracker
from vosfx.models.checkpoint import build_model, size_overrides
from vosfx.types import Frame, Prompt, VideoInfo

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
TOL = 1e-3


def _models(image_size: int, seed: int = 0):
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(seed)
    pred = build_sam2_video_predictor(CONFIG, None, device="cpu",
                                      hydra_overrides_extra=size_overrides(image_size))
    net = build_model(CONFIG, image_size=image_size)
    net.load_state_dict(pred.state_dict(), strict=True)
    return pred, torch_backend_for(net, "cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    src = shared_data("davis", "JPEGImages", "blackswan")
    ann = shared_data("davis", "Annotations", "blackswan", "00000.png")
    folder = tmp_path_factory.mktemp("blackswan")
    for i in range(12):
        shutil.copy(src / f"{i:05d}.jpg", folder / f"{i:05d}.jpg")
    frames = [np.asarray(Image.open(folder / f"{i:05d}.jpg").convert("RGB")) for i in range(12)]
    mask = np.asarray(Image.open(ann)) == 1
    return folder, frames, mask


@pytest.fixture(scope="module")
def models256():
    # one thread: on a loaded shared machine two threads per process thrash (6x slower here)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _models(256)
    torch.set_num_threads(threads)


def _official(pred, folder, prompts, num_frames):
    """{frame: {obj_id: (H, W) logits}} from propagate_in_video, each prompt added just
    before its frame is propagated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sam2's hole filling needs its CUDA extension
        state = pred.init_state(str(folder))
        out: dict[int, dict[int, np.ndarray]] = {}
        starts = sorted({p.frame_index for p in prompts})
        for i, start in enumerate(starts):
            for p in prompts:
                if p.frame_index != start:
                    continue
                if p.mask is not None:
                    pred.add_new_mask(state, start, p.obj_id, p.mask)
                else:
                    pred.add_new_points_or_box(state, start, p.obj_id, points=p.points,
                                               labels=p.labels, box=p.box)
            end = starts[i + 1] if i + 1 < len(starts) else num_frames
            for t, ids, masks in pred.propagate_in_video(state, start_frame_idx=start,
                                                         max_frame_num_to_track=end - start - 1):
                out[t] = {oid: masks[j, 0].numpy() for j, oid in enumerate(ids)}
    return out


def _ours(backend, frames, prompts, num_frames):
    h, w = frames[0].shape[:2]
    info = VideoInfo(path="", width=w, height=h, num_frames=num_frames, fps=None,
                     time_base=1)
    trk = Tracker(backend, Sam2Policy(), info, fill_hole_area=0)
    for p in prompts:
        trk.add_prompt(p)
    out = {}
    for t in range(num_frames):
        res = trk.step(Frame(index=t, image=frames[t], pts=None, time_base=1))
        vid = res.video_logits(h, w)
        out[t] = {oid: vid[j] for j, oid in enumerate(res.obj_ids)}
    return out, trk


# Random weights make the object pointers' share of the logits small: dropping one pointer
# moves the tracked frames by ~5e-4 only, under the 1e-3 contract. Tracked frames agree to
# ~2e-6, so they are also held to 1e-4, which such a mistake breaks (the selection details
# below that, e.g. the pointer t_diff normalisation, are table-tested in test_memory_sam2).
TRACKED_TOL = 1e-4


def _compare(ref, ours, prompted):
    worst, tracked, lo, hi = 0.0, 0.0, np.inf, -np.inf
    for t, per_obj in ref.items():
        for oid, want in per_obj.items():
            got = ours[t][oid]
            diff = float(np.abs(got - want).max())
            worst = max(worst, diff)
            if t not in prompted:
                tracked = max(tracked, diff)
                lo, hi = min(lo, float(want.min())), max(hi, float(want.max()))
    assert tracked <= TRACKED_TOL, f"tracked frames differ by {tracked} > {TRACKED_TOL}"
    # random weights give small logits: the tracked frames' values must still span far more
    # than the tolerance, or the test could not fail
    assert hi - lo > 50 * TOL, f"tracked frames' reference logits span only [{lo}, {hi}]"
    assert worst <= TOL, f"max abs diff {worst} > {TOL} (reference range [{lo}, {hi}])"
    print(f"tracked frames' reference logits in [{lo:.3f}, {hi:.3f}]")
    return worst


def _points_prompt(mask, frame_index=0, obj_id=1):
    ys, xs = np.nonzero(mask)
    k = len(xs) // 2
    return Prompt(frame_index, obj_id, points=np.array([[xs[k], ys[k]]], np.float32),
                  labels=np.array([1], np.int32))


def _run(models, clip, prompts, n=12):
    pred, backend = models
    folder, frames, _ = clip
    ref = _official(pred, folder, prompts, n)
    ours, _ = _ours(backend, frames, prompts, n)
    assert sorted(ref) == list(range(n))
    worst = _compare(ref, ours, {p.frame_index for p in prompts})
    print(f"max abs diff {worst:.2e}")
    return worst


def test_mask_prompt(models256, clip):
    _run(models256, clip, [Prompt(0, 1, mask=clip[2])])


def test_points_prompt(models256, clip):
    _run(models256, clip, [_points_prompt(clip[2])])


def test_two_objects(models256, clip):
    mask = clip[2]
    cols = np.nonzero(mask.any(0))[0]
    split = (cols.min() + cols.max()) // 2
    left, right = mask.copy(), mask.copy()
    left[:, split:] = False
    right[:, :split] = False
    _run(models256, clip, [Prompt(0, 1, mask=left), Prompt(0, 2, mask=right)])


@pytest.mark.slow
def test_box_and_points_objects(models256, clip):
    mask = clip[2]
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
    _run(models256, clip, [Prompt(0, 1, box=box), _points_prompt(mask, obj_id=2)])


def test_correction_on_later_frame(models256, clip):
    mask = clip[2]
    ys, xs = np.nonzero(mask)
    neg = Prompt(5, 1, points=np.array([[xs.max() + 20, ys.min()], [xs[0], ys[0]]], np.float32),
                 labels=np.array([0, 1], np.int32))
    _run(models256, clip, [Prompt(0, 1, mask=mask), neg, Prompt(8, 1, mask=mask)])


@pytest.mark.slow
def test_mask_prompt_at_1024(clip):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(_models(1024), clip, [Prompt(0, 1, mask=clip[2])], n=4)
    finally:
        torch.set_num_threads(threads)

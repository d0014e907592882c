"""DAM4SAM policy: unit rules, and parity with the reference through a recorded fixture.

The fixture (tests/fixtures/policies/dam4sam_drm.*) was recorded with jovanavidenovic/DAM4SAM's
own tracker wrapper and predictor (commit 9c95450, ``sam21pp_hiera_t.yaml``, CPU, image size
128, frames resized with SAM 2's loader as vosfx does) on 34 frames of bmx-trees with the
seeded random weights and the scripted decoder's ``drm`` case (docs/memory.md). Per frame:
the low-res logits, the video mask's hash and area, the candidate IoUs, whether the frame joined
the distractor-resolving memory, and the memories attended, in order.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.policy_parity import DETAIL, TIGHT, TOL, compare_frame, load_case, run_ours
from vosfx.engine.policies.candidates import Candidates
from vosfx.engine.policies.dam4sam import Dam4samPolicy, largest_component, raster_box_iou


def _disc(h, w, cx, cy, r):
    ys, xs = np.mgrid[:h, :w]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


def test_box_iou_uses_the_toolkit_rectangle():
    a = np.zeros((20, 20), bool)
    a[2:8, 2:8] = True  # bounds 2..7: the toolkit's rectangle covers 2..6
    b = np.zeros((20, 20), bool)
    b[2:8, 5:11] = True  # bounds x 5..10 -> 5..9
    assert raster_box_iou(a, a) == 1.0
    # x overlap 5..6 (2 px) x 5 rows = 10; areas 25 + 25
    assert raster_box_iou(a, b) == pytest.approx(10 / 40)


def test_largest_component_keeps_the_biggest_blob():
    m = np.zeros((20, 20), bool)
    m[1:3, 1:3] = True
    m[10:16, 10:16] = True
    out = largest_component(m)
    assert out.sum() == 36 and not out[1, 1]


def _cands(t, distractor, iou=0.85, h=96, w=128):
    side = 32
    low = np.full((3, side, side), -10, np.float32)
    obj = _disc(side, side, 8 + t * 0.2, 16, 4)
    low[0][obj] = 10
    low[1][_disc(side, side, 8 + t * 0.2, 16, 6 if distractor else 4)] = 10
    low[2][obj] = 10
    return Candidates(low, np.array([iou, 0.7, 0.6], np.float32), 2.0, 128, (h, w))


class _Bank:
    def __init__(self):
        from vosfx.engine.policies.base import MemoryEntry

        self.entries = {0: MemoryEntry(0, is_prompt=True)}
        self.num_maskmem, self.max_obj_ptrs, self.num_frames = 7, 16, 0


def test_drm_rule_needs_a_distractor_a_gap_and_confidence():
    from vosfx.engine.policies.base import MemoryEntry

    pol, bank = Dam4samPolicy(), _Bank()
    added = []
    for t in range(1, 20):
        pol.select(t, 0, bank)
        pol.choose(t, _cands(t, distractor=t >= 4, iou=0.75 if t == 12 else 0.85))
        d = pol.observe(MemoryEntry(t, iou=0.85, object_score_logit=2.0), bank)
        bank.entries[t] = MemoryEntry(t, promoted=d.as_cond)
        if d.as_cond:
            assert d.binarize_memory
            added.append(t)
    # from 4 on a looser candidate reaches outside the chosen mask; 6 frames apart; 12 is not
    # confident enough, so the one after 10 waits for 13
    assert added == [4, 10, 16]


class _Recording(Dam4samPolicy):
    def __init__(self):
        super().__init__()
        self.attended: dict[int, list] = {}

    def select(self, frame_index, shot_id, bank):
        sel = super().select(frame_index, shot_id, bank)
        kinds = {f: ("cond" if e.is_cond else "non_") for f, e in bank.entries.items()}
        self.attended[frame_index] = [[kinds[f], f] for f, _ in sel.masks]
        return sel


@pytest.fixture(scope="module")
def weights():
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.ckpt import TINY, build_state_dict

    return build_state_dict(TINY, 0)


def test_parity_with_official_dam4sam(weights):
    from tests import scripted_decoder as sd

    meta, ref = load_case("dam4sam_drm")
    n, scripts = sd.dam4sam_scripts(meta["script"])
    assert n == meta["num_frames"]
    hw, lows, results, pol = run_ours(meta, weights, _Recording, scripts)
    worst = float(np.abs(lows[0] - ref[0]).max())
    for rec in meta["frames"]:
        t = rec["t"]
        worst = max(worst, compare_frame(rec, ref[t], lows[t], hw))
        assert pol.attended[t] == rec["attended"], f"frame {t}"
        assert results[t].iou == pytest.approx(max(rec["ious"]), abs=TIGHT)
        assert results[t].object_score_logit == pytest.approx(rec["obj_score"], abs=TIGHT)
    assert pol.drm_added == meta["drm_adds"] == [2, 8, 14, 26, 32]
    assert worst <= min(TOL, TIGHT, DETAIL), f"video-resolution logits differ by {worst}"
    print(f"dam4sam: max |logit diff| {worst:.2e}, DRM frames {pol.drm_added}")

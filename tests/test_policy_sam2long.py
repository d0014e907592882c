"""SAM2Long policy: unit rules, and parity with the official code through a recorded fixture.

The fixture (tests/fixtures/policies/sam2long_paths.json + .npz) was recorded by running
Mark12Ding/SAM2Long's own predictor (commit 7193b77, ``configs/sam2.1/sam2.1_hiera_t.yaml``, 3
pathways, IoU gate 0.1, uncertainty 2, CPU, image size 128 with the reference's hard-coded 4096
memory tokens per frame patched to 64) with the seeded random weights of
``tests.ckpt.build_state_dict(TINY, 0)`` on 22 DAVIS frames of bmx-trees, a mask prompt on
frame 0 and the scripted decoder's ``sam2long_scripts("paths")``; docs/memory.md says how. Per
frame it holds the final low-res logits (read along the best pathway at the end), the video
mask's hash and area, which branch the pruning took, the survivors (pathway, candidate) and
their cumulative scores, and for every pathway's call the (frame, hypothesis) memories and
pointers it looked up and the object scores its key scaling ranked.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.policy_parity import DETAIL, TIGHT, TOL, compare_frame, load_case, run_ours
from vosfx.engine.policies.sam2long import (
    COND,
    Hypothesis,
    Sam2LongPolicy,
    Step,
    linspace32,
    rank_scales,
)


# --- rules without a model ----------------------------------------------------------------------
def test_linspace_and_rank_scales_match_torch():
    torch = pytest.importorskip("torch")
    for n in range(1, 300):
        want = torch.linspace(0.95, 1.05, n).numpy()
        assert np.array_equal(linspace32(0.95, 1.05, n), want), n
    scores = [10.0, 3.01, -1.6, 1.07]
    w = torch.tensor(scores)[None]
    ref = torch.zeros_like(w)
    ref.scatter_(1, torch.argsort(w, dim=1), torch.linspace(0.95, 1.05, 4)[None])
    assert rank_scales(scores) == tuple(float(x) for x in ref[0])


def test_window_keeps_the_newest_eligible_frames_and_the_previous_one():
    h = Hypothesis(0.0, Step(1, 0, 2.0, True), ())
    for f in range(2, 30):
        ok = f % 4 != 0  # every 4th frame is not eligible
        h = h.child(Step(f, 1, 2.0, ok), 0.0, 15)
    win = h.window(15)
    assert win[-1].frame == 29 and len(win) == 15
    assert all(s.eligible for s in win) and [s.frame for s in win] == sorted(s.frame for s in win)
    h = h.child(Step(30, 2, -1.0, False), 0.0, 15)  # the previous frame always comes last
    win = h.window(15)
    assert [s.frame for s in win][-2:] == [29, 30] and len(win) == 16


def test_uncertain_frames_keep_distinct_ious_and_fill_from_other_pathways():
    pol = Sam2LongPolicy()
    pol.hyps = [Hypothesis(s, Step(4, k, 1.0, True), ()) for k, s in enumerate((0.0, -0.1, -0.2))]
    ious = [np.array([0.8, 0.8, 0.8], np.float32)] * 3
    kids = pol.prune(5, [1.0, 1.0, 1.0], ious)  # every child rounds to 0.80
    assert [(c.pathway, c.j) for c in kids] == [(0, 0), (1, 0), (2, 0)]
    assert pol.branch[5] == "uncertain"
    kids = pol.prune(6, [3.0, 3.0, 3.0], ious)  # certain: the best three, pathway 0 first
    assert [(c.pathway, c.j) for c in kids] == [(0, 0), (0, 1), (0, 2)]
    assert pol.branch[6] == "certain"
    kids = pol.prune(7, [-1.0, 1.0, 1.0], [np.array([0.8, 0.7, 0.6], np.float32)] * 3)
    # absent on pathway 0: its IoUs count as -0.8 .. -0.6, so pathway 1's 0.8 is distinct
    assert [(c.pathway, c.j) for c in kids] == [(0, 0), (1, 0), (0, 1)]
    kids = pol.prune(8, [1.0, 1.0, 1.0], [np.array([0.8, 0.7, 0.6], np.float32)] * 3)
    assert [(c.pathway, c.j) for c in kids] == [(0, 0), (0, 1), (0, 2)]  # 0.8, 0.7, 0.6


# --- parity with the official code --------------------------------------------------------------
class _Recording(Sam2LongPolicy):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: dict[int, dict] = {}

    def paths(self, frame_index, bank):
        sels = super().paths(frame_index, bank)
        self.seen.setdefault(frame_index, {})["calls"] = [
            {
                "mem": [list(k) for k, _p in s.masks if k[1] != COND],
                "ptr": [list(k) for k, _d in s.pointers if k[1] != COND],
                "mem_scales": s.mask_scales,
                "ptr_scales": s.pointer_scales,
            }
            for s in sels
        ]
        return sels

    def prune(self, frame_index, object_scores, ious):
        kids = super().prune(frame_index, object_scores, ious)
        self.seen[frame_index]["ious"] = [list(map(float, i)) for i in ious]
        self.seen[frame_index]["kids"] = [[c.pathway, c.j] for c in kids]
        return kids

    def commit(self, frame_index, survivors, bank):
        self.seen[frame_index]["survivors"] = list(survivors)
        super().commit(frame_index, survivors, bank)
        self.seen[frame_index]["branch"] = self.branch[frame_index]


def _torch_scales(scores):
    """The reference's scales for a list of scores (tests the fixture's recorded scores)."""
    import torch

    if scores is None:
        return None
    w = torch.tensor(scores, dtype=torch.float32)[None]
    out = torch.zeros_like(w)
    out.scatter_(1, torch.argsort(w, dim=1), torch.linspace(0.95, 1.05, len(scores))[None])
    return tuple(float(x) for x in out[0])


@pytest.fixture(scope="module")
def weights():
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.ckpt import TINY, build_state_dict

    return build_state_dict(TINY, 0)


def test_parity_with_official_sam2long(weights):
    from tests import scripted_decoder as sd

    meta, ref = load_case("sam2long_paths")
    n, scripts = sd.sam2long_scripts(meta["script"])
    assert n == meta["num_frames"]
    hw, lows, results, pol = run_ours(meta, weights, _Recording, scripts)
    worst = 0.0
    revised = []
    branches = {}
    for rec in meta["frames"]:
        t = rec["t"]
        worst = max(worst, compare_frame(rec, ref[t], lows[t], hw))
        if t == 0:
            continue
        seen = pol.seen[t]
        branches[t] = seen["branch"]
        assert seen["branch"] == rec["branch"], f"frame {t}"
        if results[t].info.get("memory", {}).get("pathway", {}).get("revised"):
            revised.append(t)
        assert rec["final_hyp"] == meta["final_path"][str(t)]
        calls = rec["calls"]
        ours = seen["calls"]
        # the reference runs every pathway; vosfx runs the distinct selections once each
        assert len(ours) == len(calls), f"frame {t}"
        for c_ref, c in zip(calls, ours, strict=True):
            assert c["mem"] == c_ref["mem"] and c["ptr"] == c_ref["ptr"], f"frame {t}"
            if len(c_ref["frame_scores"]) > 1:
                assert c["mem_scales"] == _torch_scales(c_ref["frame_scores"]), f"frame {t}"
                assert c["ptr_scales"] == _torch_scales(c_ref["ptr_scores"]), f"frame {t}"
            else:
                assert set(c["mem_scales"]) == {1.0} and set(c["ptr_scales"]) == {1.0}
        for i_ref, i_ours in zip((c["ious"] for c in calls), seen.get("ious", []), strict=False):
            np.testing.assert_allclose(i_ours, i_ref, atol=TIGHT)
        surv = seen["survivors"]
        if t >= 2:
            assert seen["kids"] == rec["survivors"], f"frame {t}"
        # a sum of per-frame log scores over the clip: float32 rounding that differs by CPU
        # kind adds up (1.1e-4 of 5.62 on an AMD EPYC Zen 3, AVX2 kernels); a wrong rule
        # (a frame's score left out, another pathway's) moves it by 1e-2 or more
        np.testing.assert_allclose(
            [s[1] for s in surv], rec["acc"][: len(surv)], rtol=1e-4, atol=1e-4
        )
        np.testing.assert_allclose([s[3] for s in surv], rec["hyp_ious"][: len(surv)], atol=TIGHT)
    # held to 1e-5: without the key scaling the logits move by only 1.5e-5 with random
    # weights (measured: 3.8e-6 with it)
    assert worst <= min(TOL, DETAIL), f"video-resolution logits differ by {worst}"
    want_revised = sorted(int(f) for f, k in meta["final_path"].items() if k != 0)
    assert revised == want_revised
    print(f"sam2long: max |logit diff| {worst:.2e}, revised frames {revised}, branches {branches}")
    # the case exists to exercise these rules
    assert want_revised and {"certain", "uncertain"} <= set(branches.values())

"""RCMS and shot-aware memory policies, driven by synthetic score sequences (no model)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from vosfx.engine.policies import MemoryEntry, Sam2Policy
from vosfx.engine.policies.rcms import (
    RcmsPolicy,
    ShotAwarePolicy,
    frame_quality,
    walk_back,
)
from vosfx.errors import ConfigError, VosfxError

GOOD, BAD = 0.9, 0.3  # qualities above and below θ = 0.6


class FakeBank:
    """The bank's contract as memory.py describes it: a policy selects, observes, the bank
    applies the decision (promote / demote / store) and keeps only what ``retain`` returns."""

    def __init__(self, policy, num_frames=10_000, num_maskmem=7, max_obj_ptrs=16):
        self.policy = policy
        self.entries: dict[int, MemoryEntry] = {}
        self.num_frames = num_frames
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs
        self.peak = 0

    def step(self, frame, score=5.0, quality=GOOD, shot=0, prompt=False):
        sel = None if prompt else self.policy.select(frame, shot, self)
        entry = MemoryEntry(
            frame_index=frame,
            shot_id=shot,
            is_prompt=prompt,
            object_score_logit=score,
            iou=0.9,
            quality=quality,
        )
        d = self.policy.observe(entry, self)
        for f in d.demote:
            self.entries[f] = replace(self.entries[f], promoted=False)
        for f in d.promote:
            self.entries[f] = replace(self.entries[f], promoted=True)
        if d.store:
            self.entries[frame] = entry
        keep = self.policy.retain(frame, self)
        self.entries = {f: e for f, e in self.entries.items() if f in keep}
        self.peak = max(self.peak, len(self.entries))
        return sel, d


def run(policy, scores, qualities=None, shots=None, prompts=(0,), **bank_kw):
    bank = FakeBank(policy, **bank_kw)
    out = []
    for t, score in enumerate(scores):
        q = GOOD if qualities is None else qualities[t]
        shot = 0 if shots is None else shots[t]
        out.append(bank.step(t, score, q, shot, prompt=t in prompts))
    return bank, out


# ---------------------------------------------------------------------------------------------
# frame_quality
# ---------------------------------------------------------------------------------------------


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize(
    ("score", "ious", "logits", "expected"),
    [
        (0.0, [1.0], [[2.0, -1.0]], 0.5 * 1.0 * _sig(2.0)),
        (2.0, [0.2, 0.8, 0.5], [[1.0, 3.0], [-4.0, 0.0]], _sig(2) * 0.8 * (_sig(1) + _sig(3)) / 2),
        (3.0, 0.7, [[-1.0, -2.0]], 0.0),  # no positive pixel: 0 (the reference gives NaN)
        (-1024.0, [0.9], np.full((4, 4), -1024.0), 0.0),  # SAM 2's NO_OBJ_SCORE frame
        (40.0, [1.0], np.full((2, 2), 40.0), 1.0),
    ],
)
def test_frame_quality_table(score, ious, logits, expected):
    assert frame_quality(score, np.asarray(ious), np.asarray(logits, np.float32)) == pytest.approx(
        expected, rel=1e-6
    )


def test_frame_quality_matches_reference_formula_in_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred = rng.normal(0, 4, (1, 1, 64, 64)).astype(np.float32)  # (B, 1, h, w) pred_masks
        ious = rng.uniform(0, 1, (1, 3)).astype(np.float32)
        score = float(rng.normal(0, 3))
        p, i, s = torch.from_numpy(pred), torch.from_numpy(ious), torch.tensor([[score]])
        ref = (
            s.sigmoid().item()
            * i.max().item()
            * (p.sigmoid()[p > 0.0].sum() / (p > 0.0).sum()).item()
        )
        assert frame_quality(score, ious[0], pred[0, 0]) == pytest.approx(ref, rel=1e-5)


def test_frame_quality_rejects_empty_ious():
    with pytest.raises(VosfxError, match="at least one predicted IoU"):
        frame_quality(1.0, np.zeros(0), np.ones((2, 2)))


# ---------------------------------------------------------------------------------------------
# SAM 2 selection (the base RcmsPolicy builds on) and the walk-back rule
# ---------------------------------------------------------------------------------------------


class _View:
    def __init__(self, entries, num_frames):
        self.entries, self.num_frames, self.num_maskmem, self.max_obj_ptrs = (
            entries,
            num_frames,
            7,
            16,
        )


def sam2_select(frame, cond, recent, num_frames):
    """Sam2Policy's selection over plain sets of frame indices (cond in ascending order)."""
    entries = {
        f: MemoryEntry(frame_index=f, is_prompt=f in cond) for f in sorted(set(cond) | set(recent))
    }
    return Sam2Policy().select(frame, 0, _View(entries, num_frames))


def test_sam2_select_long_clip():
    sel = sam2_select(20, [0], set(range(1, 20)), num_frames=1000)
    assert sel.masks == ((0, 0), (14, 1), (15, 2), (16, 3), (17, 4), (18, 5), (19, 6))
    assert sel.pointers == ((0, 20),) + tuple((20 - d, d) for d in range(1, 16))
    assert sel.pointer_t_diff_max == 15


def test_sam2_select_short_clip_and_early_frame():
    # 5-frame clip: P = min(5, 16) = 5 pointers at most, t_diff_max 4; frame 2 has 2 past frames
    sel = sam2_select(2, [0], {1}, num_frames=5)
    assert sel.masks == ((0, 0), (1, 6))
    assert sel.pointers == ((0, 2), (1, 1))
    assert sel.pointer_t_diff_max == 4


def test_sam2_select_cond_not_repeated_and_future_cond_pointer_dropped():
    # frame 18 is conditioning (promoted): t_pos 0 only, never again as recent; a prompt on
    # frame 30 is attended as memory but its pointer is not (only past pointers in eval)
    sel = sam2_select(20, [0, 18, 30], set(range(1, 20)) - {18}, num_frames=100)
    assert sel.masks[:3] == ((0, 0), (18, 0), (30, 0))
    assert (18, 5) not in sel.masks and len(sel.masks) == 3 + 5
    assert (30, -10) not in sel.pointers and (18, 2) in sel.pointers
    assert sum(1 for f, _ in sel.pointers if f == 18) == 1


def test_sam2_select_gaps_are_skipped_not_refilled():
    # a frame missing from memory (skip-absent) leaves its slot empty, as in SAM 2
    sel = sam2_select(10, [0], set(range(1, 10)) - {8}, num_frames=100)
    assert [m for m in sel.masks if m[1]] == [(4, 1), (5, 2), (6, 3), (7, 4), (9, 6)]


def _entries(qualities, cond=()):
    return {
        f: MemoryEntry(frame_index=f, quality=q, promoted=f in cond) for f, q in qualities.items()
    }


@pytest.mark.parametrize(
    ("at", "qualities", "cond", "n", "expected"),
    [
        (10, {f: GOOD for f in range(10)}, (), 5, (9, 8, 7, 6, 5)),  # nearest first
        (10, {f: GOOD for f in range(10)}, (), 3, (9, 8, 7)),
        (10, {9: BAD, 8: GOOD, 7: 0.6, 6: 0.61, 5: GOOD}, (), 5, (8, 6, 5)),  # strict >
        (10, {9: GOOD, 8: GOOD, 7: GOOD}, (8,), 5, (9, 7)),  # cond frames are not candidates
        (10, {10: GOOD, 9: GOOD}, (), 5, (9,)),  # the disappearing frame itself is not
        (3, {0: GOOD, 1: GOOD, 2: GOOD}, (), 5, (2, 1)),  # frame 0 never (k < frame_idx)
        (10, {9: float("nan"), 8: GOOD}, (), 5, (8,)),  # NaN quality never passes
        (10, {f: GOOD for f in range(10)}, (), 0, ()),
    ],
)
def test_walk_back_table(at, qualities, cond, n, expected):
    assert walk_back(at, _entries(qualities, cond), n, 0.6) == expected


# ---------------------------------------------------------------------------------------------
# RcmsPolicy
# ---------------------------------------------------------------------------------------------


def test_rcms_promotes_on_first_disappearance_only():
    scores = [5.0] * 12 + [-3.0] * 4 + [5.0] * 10 + [-3.0] * 3
    qualities = [GOOD] * 8 + [BAD, GOOD, BAD, GOOD] + [0.0] * 4 + [GOOD] * 10 + [0.0] * 3
    policy = RcmsPolicy()
    bank, out = run(policy, scores, qualities)
    decisions = {t: d for t, (_, d) in enumerate(out)}
    assert decisions[12].promote == (11, 9, 7, 6, 5) and decisions[12].event == "disappeared"
    assert all(not d.promote for t, d in decisions.items() if t != 12)  # once per object
    assert decisions[26].event == "" and policy.disappeared_at == 12
    assert policy.log.promoted == {12: [11, 9, 7, 6, 5]}
    # promoted frames are attended as conditioning (t_pos 0) from the next frame on ...
    sel13, _ = out[13]
    assert {f for f, tp in sel13.masks if tp == 0} == {0, 11, 9, 7, 6, 5}
    # ... and never again as recent frames (they left the non-cond memory)
    assert (11, 5) not in sel13.masks and (12, 6) in sel13.masks
    # long after, they are still attended; the other old frames are gone from the bank
    sel28, _ = out[28]
    assert {f for f, tp in sel28.masks if tp == 0} == {0, 11, 9, 7, 6, 5}
    assert 8 not in bank.entries and 10 not in bank.entries


def test_rcms_disappearance_at_start_uses_the_flag_with_nothing_to_promote():
    policy = RcmsPolicy()
    _, out = run(policy, [5.0, -1.0, 5.0, 5.0, 5.0, -1.0])
    assert out[1][1].promote == () and out[1][1].event == "disappeared"
    assert out[5][1].promote == ()


def test_rcms_prompt_frames_are_stored_as_cond_and_never_trigger():
    policy = RcmsPolicy()
    _, out = run(policy, [-5.0, 5.0, 5.0], prompts=(0,))
    assert out[0][1].as_cond and out[0][1].store and policy.disappeared_at is None


def test_rcms_zero_logit_counts_as_disappearance():
    _, out = run(RcmsPolicy(), [5.0, 5.0, 5.0, 0.0])
    assert out[3][1].promote == (2, 1)


def test_skip_absent_keeps_empty_frames_out_of_memory():
    scores = [5.0] * 5 + [-2.0] * 3 + [5.0] * 2
    _bank, out = run(RcmsPolicy(skip_absent=True), scores)
    assert [out[t][1].store for t in range(5, 8)] == [False] * 3
    sel9 = out[9][0]
    # 1-4 were promoted by the disappearance at 5; 5-7 were never written
    assert sel9.masks == ((0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (8, 6))
    assert not any(f in (5, 6, 7) for f, _ in sel9.masks + sel9.pointers)
    _, out_plain = run(RcmsPolicy(), scores)
    assert out_plain[6][1].store


def test_cap_keeps_prompts_and_drops_oldest_promoted():
    # cap 4 with 1 prompt leaves room for 3 promoted frames
    policy = ShotAwarePolicy(max_cond_frames=4)
    shots = [0] * 10 + [1] * 10 + [2] * 5
    bank, out = run(policy, [5.0] * 25, shots=shots)
    assert out[10][1].promote == (9, 8, 7)  # nearest first; the rest do not fit
    assert out[20][1].promote == (19, 18, 17) and out[20][1].demote == (7, 8, 9)
    cond = sorted(f for f, e in bank.entries.items() if e.is_cond)
    assert cond == [0, 17, 18, 19]


def test_cap_never_promotes_past_prompts():
    policy = RcmsPolicy(max_cond_frames=2)
    _, out = run(policy, [5.0] * 6 + [-1.0], prompts=(0, 1))
    assert out[6][1].promote == () and out[6][1].demote == ()


@pytest.mark.parametrize(
    "kwargs",
    [{"max_promote": -1}, {"max_promote": 1.5}, {"threshold": 1.5}, {"max_cond_frames": 0}],
)
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError, match="expected"):
        RcmsPolicy(**kwargs)


def _reference_rcms(scores, qualities, n, threshold, num_frames):
    """The reference's behaviour with its unbounded dicts (every output kept for ever):
    frame 0 prompted, each other frame tracked, then stored in non-cond memory; on the first
    frame whose object score is <= 0, walk back k = 1 .. t-1 popping up to n frames of quality
    > threshold from non-cond into cond memory."""
    cond, non_cond, selections, promoted, done = {0: qualities[0]}, {}, [None], {}, False
    for t in range(1, len(scores)):
        selections.append(sam2_select(t, cond, non_cond, num_frames))
        non_cond[t] = qualities[t]
        if not done and scores[t] <= 0:
            done, found, k = True, [], 1
            while len(found) < n and k < t:
                if t - k in non_cond and non_cond[t - k] > threshold:
                    cond[t - k] = non_cond.pop(t - k)
                    found.append(t - k)
                k += 1
            promoted[t] = found
    return selections, promoted


@pytest.mark.parametrize("seed", range(6))
def test_bounded_rcms_attends_exactly_what_the_unbounded_reference_does(seed):
    rng = random.Random(seed)
    length = rng.choice([8, 40, 120])
    gone = rng.randrange(2, length)
    scores = [rng.uniform(0.1, 5) if t < gone else rng.uniform(-5, 5) for t in range(length)]
    scores[gone] = -1.0
    qualities = [rng.choice([0.2, 0.59, 0.6, 0.61, 0.95]) for _ in range(length)]
    n = rng.choice([1, 4, 5])
    ref_sel, ref_promoted = _reference_rcms(scores, qualities, n, 0.6, num_frames=length)
    policy = RcmsPolicy(max_promote=n, max_cond_frames=256)
    bank, out = run(policy, scores, qualities, num_frames=length)
    for t in range(1, length):
        got = out[t][0]
        assert sorted(got.masks) == sorted(ref_sel[t].masks), t
        assert sorted(got.pointers) == sorted(ref_sel[t].pointers), t
        assert got.pointer_t_diff_max == ref_sel[t].pointer_t_diff_max
    assert policy.log.promoted == {t: f for t, f in ref_promoted.items() if f}
    assert bank.peak <= 1 + n + 15 + 1


# ---------------------------------------------------------------------------------------------
# ShotAwarePolicy
# ---------------------------------------------------------------------------------------------


def test_cut_promotes_pre_cut_frames_and_drops_previous_shot_recent_frames():
    shots = [0] * 20 + [1] * 10
    qualities = [GOOD] * 15 + [BAD, GOOD, BAD, GOOD, GOOD] + [GOOD] * 10
    policy = ShotAwarePolicy()
    bank, out = run(policy, [5.0] * 30, qualities, shots=shots)
    sel20, d20 = out[20]
    assert d20.event == "cut" and d20.promote == (19, 18, 16, 14, 13)
    # the cut frame already attends the frames it promotes, and nothing else of shot 0
    assert sel20.masks == tuple((f, 0) for f in (0, 13, 14, 16, 18, 19))
    assert {f for f, _ in sel20.pointers} == {0, 13, 14, 16, 18, 19}
    assert all(td == 20 - f for f, td in sel20.pointers)
    sel25, _ = out[25]
    assert {f for f, tp in sel25.masks if tp} == {20, 21, 22, 23, 24}
    assert {f for f, _ in sel25.pointers} == {0, 13, 14, 16, 18, 19, 20, 21, 22, 23, 24}
    assert policy.cuts == [20] and policy.disappeared_at is None
    assert not any(
        e.shot_id == 0 and not e.is_cond for f, e in bank.entries.items() if f in (15, 17)
    )


def test_cut_does_not_use_up_the_disappearance():
    shots = [0] * 10 + [1] * 10
    scores = [5.0] * 14 + [-2.0] + [5.0] * 4 + [-2.0]
    policy = ShotAwarePolicy(max_promote=2)
    _, out = run(policy, scores, shots=shots)
    assert {t: d.event for t, (_, d) in enumerate(out) if d.event} == {10: "cut", 14: "disappeared"}
    assert out[10][1].promote == (9, 8) and out[14][1].promote == (13, 12)
    # plain RCMS ignores shot ids entirely
    _, plain = run(RcmsPolicy(max_promote=2), scores, shots=shots)
    assert {t: d.event for t, (_, d) in enumerate(plain) if d.event} == {14: "disappeared"}


def test_absent_on_cut_frame_is_one_event_that_uses_up_the_disappearance():
    shots = [0] * 10 + [1] * 10
    scores = [5.0] * 10 + [-2.0] + [5.0] * 5 + [-2.0] * 4
    policy = ShotAwarePolicy(max_promote=2)
    _, out = run(policy, scores, shots=shots)
    assert {t: d.event for t, (_, d) in enumerate(out) if d.event} == {10: "cut+disappeared"}
    assert out[10][1].promote == (9, 8) and policy.disappeared_at == 10


def test_reappearance_after_cut_attends_reliable_memories():
    # object visible in shot 0, absent through shot 1, back in shot 2: in shot 2 the model
    # attends the prompt and reliable shot-0 frames only, none of shot 1's empty frames
    shots = [0] * 10 + [1] * 10 + [2] * 5
    scores = [5.0] * 10 + [-4.0] * 10 + [5.0] * 5
    qualities = [GOOD] * 10 + [0.0] * 10 + [GOOD] * 5
    _, out = run(ShotAwarePolicy(), scores, qualities, shots=shots)
    assert out[10][1].promote == (9, 8, 7, 6, 5)
    # shot 1 had nothing reliable: the second cut reaches back to the kept shot-0 candidates
    assert out[20][1].promote == (4, 3, 2, 1)
    sel21, _ = out[21]
    assert sel21.masks == tuple((f, 0) for f in range(10)) + ((20, 6),)
    assert not any(10 <= f < 20 for f, _ in sel21.pointers)


def test_prompt_on_cut_frame_is_cond_and_promotes():
    shots = [0] * 10 + [1] * 5
    policy = ShotAwarePolicy(max_promote=2)
    _, out = run(policy, [5.0] * 15, shots=shots, prompts=(0, 10))
    assert out[10][1].as_cond and out[10][1].promote == (9, 8)


def test_bank_stays_flat_over_2000_frames_with_many_cuts():
    rng = random.Random(3)
    shots, shot = [], 0
    for t in range(2000):
        if t and rng.random() < 1 / 25:
            shot += 1
        shots.append(shot)
    scores = [rng.choice([5.0, 5.0, 5.0, -2.0]) for _ in range(2000)]
    qualities = [rng.uniform(0, 1) for _ in range(2000)]
    policy = ShotAwarePolicy(max_cond_frames=16)
    bank, _ = run(policy, scores, qualities, shots=shots, num_frames=2000)
    assert len(policy.cuts) > 50
    assert sum(e.is_cond for e in bank.entries.values()) <= 16
    # cond cap + walk-back candidates + pointer window of the current shot
    assert bank.peak <= 16 + 5 + 15 + 1


def test_real_memory_bank_agrees_with_the_fake():
    from vosfx.engine.bank import MemoryBank

    rng = random.Random(7)
    shots = [t // 30 for t in range(150)]
    scores = [rng.choice([5.0, 5.0, -1.0]) for _ in range(150)]
    qualities = [rng.uniform(0, 1) for _ in range(150)]
    _, fake_out = run(
        ShotAwarePolicy(max_cond_frames=6), scores, qualities, shots=shots, num_frames=150
    )
    policy, bank = ShotAwarePolicy(max_cond_frames=6), MemoryBank(7, 16, 150)
    for t in range(150):
        sel = None if t == 0 else policy.select(t, shots[t], bank)
        entry = MemoryEntry(
            frame_index=t,
            shot_id=shots[t],
            is_prompt=t == 0,
            object_score_logit=scores[t],
            iou=0.9,
            quality=qualities[t],
        )
        decision = policy.observe(entry, bank)
        bank.apply(entry, f"mem{t}", f"ptr{t}", decision)
        bank.prune(policy, t)
        assert sel == fake_out[t][0], t
        assert decision == fake_out[t][1], t

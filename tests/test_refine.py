"""The finishing chain (vosfx.matte.refine): logits -> alpha, overlap, Refiner, presets."""

from __future__ import annotations

import dataclasses
import warnings
from fractions import Fraction

import cv2
import numpy as np
import pytest
from conftest import shared_data
from scipy.special import expit

from vosfx.config import RefineConfig, build_config
from vosfx.errors import VosfxError
from vosfx.matte.refine import Refiner, logits_to_prob, resolve_overlap
from vosfx.presets import load_preset
from vosfx.types import Frame, MaskResult

H, W = 120, 200


def _logits_for(mask: np.ndarray, grid: int = 64, scale: float = 8.0) -> np.ndarray:
    """(grid, grid) float32 logits of a (H, W) bool mask, as a low-resolution model gives."""
    m = cv2.resize(mask.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
    return ((m - 0.5) * 2 * scale).astype(np.float32)


def _frame(index: int = 0, dtype=np.uint8) -> Frame:
    img = np.full((H, W, 3), 20, np.uint8)
    img[20:80, 30:90] = (230, 200, 180)
    img[40:100, 120:180] = (60, 200, 240)
    if dtype == np.uint16:
        img = img.astype(np.uint16) * 257
    return Frame(index=index, image=img, pts=index, time_base=Fraction(1, 25))


def _masks() -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((H, W), bool)
    a[20:80, 30:90] = True
    b = np.zeros((H, W), bool)
    b[40:100, 120:180] = True
    return a, b


def _result(index: int, masks, obj_ids=(1, 2), scores=None) -> MaskResult:
    logits = np.stack([_logits_for(m) for m in masks])
    scores = np.full(len(masks), 5.0, np.float32) if scores is None else np.float32(scores)
    return MaskResult(index, tuple(obj_ids), logits, scores, np.ones(len(masks), np.float32))


def test_logits_to_prob_is_the_calibrated_sigmoid():
    logits = np.array([[-1024.0, -2.0, 0.0, 2.0, 30.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SAM 2's -1024 must not overflow
        soft = logits_to_prob(logits, (1, 5))
    np.testing.assert_allclose(soft[0], expit(logits[0].astype(np.float64)), atol=1e-6)
    warm = logits_to_prob(logits, (1, 5), 2.0, 2.0)
    assert warm[0, 3] == pytest.approx(0.5) and warm[0, 2] == pytest.approx(1 / (1 + np.e))
    up = logits_to_prob(np.zeros((64, 64), np.float32), (H, W))
    assert up.shape == (H, W) and up.dtype == np.float32


@pytest.mark.parametrize(
    "threshold,softness",
    # softness 1, 0.25 and 2 scale by a power of two (applied to the small logits first)
    [(0.0, 1.0), (0.0, 0.3), (1.5, 1.0), (-2.0, 2.5), (-2.0, 0.25), (0.7, 2.0)],
)
@pytest.mark.parametrize("out_hw", [(64, 64), (270, 480)])
def test_logits_to_prob_is_the_sigmoid_of_the_resampled_logits(threshold, softness, out_hw):
    # the fast path (OpenCV's exp, one pass for the scale and clip, one for 1 / (1 + e)) gives
    # the sigmoid of the bilinearly resampled logits to float32 rounding: within 1e-6 of the
    # reciprocal (its last bits) and of float64 scipy.special.expit, exactly 0 and 1 where the
    # sigmoid is beyond float32, 0.5 at the threshold, and never a subnormal number
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((64, 64)) * 12).astype(np.float32)
    logits[0, :8] = [-1024.0, 0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 1e-7]
    logits[1, :4] = [1e30, -1e30, 3e38, -3e38]
    before = logits.copy()
    x = np.clip(logits, -1024, 1024)  # beyond SAM 2's own extreme a logit is read as it
    if (64, 64) != out_hw:
        x = cv2.resize(x, out_hw[::-1], interpolation=cv2.INTER_LINEAR)
    z = (x.astype(np.float64) - threshold) / softness
    want = expit(z)
    got = logits_to_prob(logits, out_hw, threshold, softness)
    assert got.dtype == np.float32 and got.shape == out_hw and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[z >= 17.0], 1.0)
    np.testing.assert_array_equal(got[z <= -17.0], 0.0)
    assert not np.any((got > 0) & (got < np.finfo(np.float32).tiny))  # no subnormals
    np.testing.assert_array_equal((got > 0.5)[np.abs(z) > 1e-6], (z > 0)[np.abs(z) > 1e-6])
    np.testing.assert_array_equal(logits, before)  # the input is left alone
    at = logits_to_prob(np.full((4, 4), threshold, np.float32), (8, 8), threshold, softness)
    np.testing.assert_array_equal(at, 0.5)


def test_logits_to_prob_is_monotonic_through_the_threshold():
    # every float32 logit in [-20, 20] at steps of 2^-10, then the 200,000 just around 0:
    # alpha never decreases as the logit grows (the hard matte's edge cannot move backwards)
    coarse = np.arange(-20.0, 20.0, 2.0**-10, dtype=np.float32)
    fine = np.linspace(-1e-3, 1e-3, 200_001, dtype=np.float32)
    for z in (coarse, fine):
        got = logits_to_prob(z[None], (1, z.size))[0]
        assert np.all(np.diff(got) >= 0)
        assert np.all(got[z < -1e-6] < 0.5) and np.all(got[z > 1e-6] > 0.5)


@pytest.mark.parametrize("edge", ["guided", "bilinear"])
def test_prepare_makes_the_frame_guide_ahead_with_the_same_result(edge):
    # Refiner.prepare (run by the pipeline on the decode thread) makes the guided filter's
    # per-frame part ahead; refining the prepared frame gives exactly the unprepared result,
    # frame after frame (the temporal filter too), and the prepared guide is the one used
    cfg = RefineConfig(edge=edge, temporal_strength=0.5)
    a, b = _masks()
    ahead, inline = Refiner(cfg, (1, 2), logit_size=64), Refiner(cfg, (1, 2))
    used = []
    for i in range(3):
        frame = _frame(i)
        ready = ahead.prepare(frame)
        assert ready.model_input is frame.model_input and ready.image is frame.image
        assert ("guide" in ready.derived) == (edge == "guided")
        assert "guide" not in frame.derived and inline.prepare(frame) is frame  # size unknown
        if edge == "guided":
            used.append(ready.derived["guide"])
            assert ahead._guide(ready, 64) is ready.derived["guide"]
        shifted = [np.roll(m, 3 * i, axis=1) for m in (a, b)]
        got = ahead(_result(i, shifted), ready).alpha
        np.testing.assert_array_equal(got, inline(_result(i, shifted), frame).alpha)
    assert len({id(g) for g in used}) == (3 if edge == "guided" else 0)


def test_a_guide_made_for_other_logits_is_not_used():
    # made for 64² logits (radius 3 px at this width), used with 32² ones (radius 6): the
    # refiner makes the right one instead, so the result is the unprepared one
    cfg = RefineConfig()
    mask = _masks()[0]
    ready = Refiner(cfg, (1,), logit_size=64).prepare(_frame())
    result = MaskResult(
        0, (1,), _logits_for(mask, grid=32)[None], np.float32([5.0]), np.float32([1.0])
    )
    refiner = Refiner(cfg, (1,), logit_size=64)
    assert refiner._guide(ready, 32) is not ready.derived["guide"]
    np.testing.assert_array_equal(
        refiner(result, ready).alpha, Refiner(cfg, (1,))(result, _frame()).alpha
    )


def test_logits_to_prob_rejects_bad_input():
    with pytest.raises(VosfxError, match=r"\(h, w\)"):
        logits_to_prob(np.zeros((1, 4, 4), np.float32), (8, 8))
    with pytest.raises(VosfxError, match="softness"):
        logits_to_prob(np.zeros((4, 4), np.float32), (8, 8), softness=0.0)


@pytest.mark.parametrize("n_obj", [2, 3, 5])
def test_resolve_overlap(n_obj):
    rng = np.random.default_rng(n_obj)
    alphas = rng.random((n_obj, 40, 50)).astype(np.float32)
    alphas[:, :10] = 0.0
    alphas[0, :10] = 0.8  # only object 0 there
    out = resolve_overlap(alphas)
    assert out.shape == alphas.shape and out.dtype == np.float32
    assert out.sum(axis=0).max() <= 1.0 + 1e-6  # never more than full coverage
    np.testing.assert_allclose(out.max(axis=0), alphas.max(axis=0))  # merged matte unchanged
    np.testing.assert_array_equal(out[:, :10], alphas[:, :10])  # lone object untouched
    assert np.all(out <= alphas + 1e-7) and out.min() >= 0.0  # only ever takes away


def test_resolve_overlap_two_objects_agrees_with_the_general_rule():
    rng = np.random.default_rng(7)
    two = rng.random((2, 30, 30)).astype(np.float32)
    # The same pair padded with an empty third object goes through the sorting path.
    three = np.concatenate([two, np.zeros((1, 30, 30), np.float32)])
    np.testing.assert_allclose(resolve_overlap(two), resolve_overlap(three)[:2], atol=1e-6)
    one = rng.random((1, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(resolve_overlap(one), one)


def test_refiner_end_to_end_two_objects():
    a, b = _masks()
    cfg = RefineConfig(temporal_strength=0.5, fill_holes_px2=16, remove_specks_px2=16)
    refiner = Refiner(cfg, (1, 2))
    for t in range(3):
        matte = refiner(_result(t, [a, b]), _frame(t))
        assert matte.frame_index == t and matte.obj_ids == (1, 2)
        assert matte.alpha.shape == (2, H, W) and matte.alpha.dtype == np.float32
        assert 0.0 <= matte.alpha.min() and matte.alpha.max() <= 1.0
        for plane, gt in zip(matte.alpha, (a, b)):
            iou = np.count_nonzero((plane >= 0.5) & gt) / np.count_nonzero((plane >= 0.5) | gt)
            assert iou > 0.95
        assert matte.merged.shape == (H, W)


def test_refiner_objects_absent_missing_and_order():
    a, b = _masks()
    refiner = Refiner(RefineConfig(), (2, 1, 3))
    matte = refiner(_result(0, [a, b], scores=[4.0, -1.0]), _frame())
    assert matte.obj_ids == (2, 1, 3)
    assert matte.alpha[0].max() == 0.0  # object 2 scored absent
    assert (matte.alpha[1] >= 0.5)[a].mean() > 0.95  # object 1 present
    assert matte.alpha[2].max() == 0.0  # object 3 not in this result
    with pytest.raises(VosfxError, match=r"objects \[7\]"):
        refiner(_result(1, [a], obj_ids=(7,)), _frame(1))
    with pytest.raises(VosfxError, match="distinct"):
        Refiner(RefineConfig(), (1, 1))


def test_refiner_hard_alpha_and_uint16_frames():
    a, b = _masks()
    refiner = Refiner(RefineConfig(alpha="hard"), (1, 2))
    m16 = refiner(_result(0, [a, b]), _frame(0, np.uint16))
    assert set(np.unique(m16.alpha)) <= {0.0, 1.0}
    m8 = Refiner(RefineConfig(alpha="hard"), (1, 2))(_result(0, [a, b]), _frame(0))
    assert np.count_nonzero(m8.alpha != m16.alpha) <= 0.001 * m8.alpha.size


@pytest.mark.parametrize("preset", ["fast", "balanced", "best"])
def test_presets_drive_the_refiner(preset):
    cfg = build_config({"refine": load_preset(preset).get("refine", {})}).refine
    a, b = _masks()
    matte = Refiner(cfg, (1, 2))(_result(0, [a, b]), _frame())
    assert matte.alpha.shape == (2, H, W)


def test_finishing_options_change_the_matte():
    a, _b = _masks()
    base = Refiner(RefineConfig(), (1,))(_result(0, [a], obj_ids=(1,)), _frame()).alpha[0]
    for change in [
        {"shift_edge_px": 3.0},
        {"feather_px": 4.0},
        {"choke": 0.8},
        {"clip_black": 0.3},
        {"clip_white": 0.6},
        {"edge": "bilinear"},
    ]:
        cfg = dataclasses.replace(RefineConfig(), **change)
        out = Refiner(cfg, (1,))(_result(0, [a], obj_ids=(1,)), _frame()).alpha[0]
        assert np.abs(out - base).max() > 0.05, change
    grown = Refiner(RefineConfig(shift_edge_px=3.0), (1,))(
        _result(0, [a], obj_ids=(1,)), _frame()
    ).alpha[0]
    assert np.count_nonzero(grown >= 0.5) > np.count_nonzero(base >= 0.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_give_a_finite_alpha_that_does_not_linger(bad):
    # a NaN or infinite logit (a half-precision overflow in the model) is read as SAM 2 reads
    # it (+inf inside, -inf and NaN outside, as ``logits > 0``): it must not become a NaN
    # patch (a hole in every output), spread by the guided filter and feather, and kept
    # frame after frame by the temporal filter where the picture is still
    a, _b = _masks()
    clean = _result(0, [a], obj_ids=(1,))
    cfg = RefineConfig(temporal_strength=0.5, feather_px=2.0)
    refiner, reference = Refiner(cfg, (1,)), Refiner(cfg, (1,))
    poisoned = clean.logits.copy()
    poisoned[0, 32, 32] = bad  # inside object 1 (rows 20-80, columns 30-90 of 120x200)
    poisoned[0, 2, 2] = bad  # in the background
    first = refiner(dataclasses.replace(clean, logits=poisoned), _frame(0)).alpha[0]
    assert np.isfinite(first).all()
    inside = 1.0 if bad > 0 else 0.0  # NaN > 0 is False: background, as SAM 2's hard mask
    expected = clean.logits.copy()
    expected[0, 32, 32] = 1024.0 if inside else -1024.0
    expected[0, 2, 2] = 1024.0 if inside else -1024.0
    want = reference(dataclasses.replace(clean, logits=expected), _frame(0)).alpha[0]
    np.testing.assert_array_equal(first, want)
    later = refiner(dataclasses.replace(clean, frame_index=1), _frame(1)).alpha[0]
    assert np.isfinite(later).all()
    np.testing.assert_array_equal(
        later, reference(dataclasses.replace(clean, frame_index=1), _frame(1)).alpha[0]
    )


def test_reset_drops_the_temporal_state():
    a, _b = _masks()
    refiner = Refiner(RefineConfig(temporal_strength=0.9), (1,))
    refiner(_result(0, [a], obj_ids=(1,)), _frame(0))
    moved = np.roll(a, 12, axis=1)
    fresh = Refiner(RefineConfig(temporal_strength=0.9), (1,))(
        _result(1, [moved], obj_ids=(1,)), _frame(1)
    )
    refiner.reset()
    after_reset = refiner(_result(1, [moved], obj_ids=(1,)), _frame(1))
    np.testing.assert_array_equal(after_reset.alpha, fresh.alpha)


@pytest.mark.shared_data
def test_refinement_on_davis_does_not_lose_to_bilinear():
    """SAM-like logits (the mask on SAM 2's 256² grid, blurred by 1.5 cells, as in
    benchmarks/refine.py): over all sequences, refined J and F are at least bilinear's."""
    from vosfx.eval.metrics import f_score, j_score

    root = shared_data("davis")
    scores = []
    for seq in sorted(p.name for p in (root / "JPEGImages").iterdir()):
        refiner = Refiner(RefineConfig(), (1,))
        for i in (0, 12, 24):
            name = f"{i:05d}"
            img = cv2.cvtColor(
                cv2.imread(str(root / "JPEGImages" / seq / f"{name}.jpg")), cv2.COLOR_BGR2RGB
            )
            gt = (
                cv2.imread(str(root / "Annotations" / seq / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
                > 0
            )
            m = np.clip(
                cv2.resize(gt.astype(np.float32), (256, 256), interpolation=cv2.INTER_AREA),
                1e-3,
                1 - 1e-3,
            )
            logits = cv2.GaussianBlur(np.log(m / (1 - m)).astype(np.float32), (0, 0), 1.5)
            bil = cv2.resize(logits, gt.shape[::-1]) > 0
            res = MaskResult(i, (1,), logits[None], np.float32([5.0]), np.float32([1.0]))
            ref = refiner(res, Frame(i, img, i, Fraction(1, 25))).alpha[0] >= 0.5
            scores.append((j_score(bil, gt), j_score(ref, gt), f_score(bil, gt), f_score(ref, gt)))
    jb, jr, fb, fr = np.mean(scores, axis=0)
    assert len(scores) >= 12
    assert jr >= jb and fr >= fb, (jb, jr, fb, fr)


def test_a_refiner_loads_the_compiled_loops_in_the_background():
    # the per-pixel loops load (or compile) on a thread started with the Refiner, once per
    # process, so the job's first frame does not wait for numba
    from vosfx.matte import kernels

    Refiner(RefineConfig(), (1,))
    thread = kernels.warm_up()
    assert thread is kernels.warm_up() and thread.name == "vosfx-kernels"
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert {"guide_moments", "inverse_covariance", "apply_edge_detail", "blend_toward"} <= set(
        kernels._LOOPS
    )


def test_refiner_threads_give_the_same_matte():
    # the edge loop and the temporal blend in row bands (kernels.bands) change nothing
    from vosfx.matte import kernels

    h, w = 3 * kernels.MIN_BAND_ROWS + 10, 300
    rng = np.random.default_rng(7)
    frames = []
    for i in range(3):
        img = (rng.random((h, w, 3)) * 40).astype(np.uint8)
        img[60 + 4 * i : 300, 50:240] += np.uint8(180)
        frames.append(Frame(index=i, image=img, pts=i, time_base=Fraction(1, 25)))
    mask = np.zeros((h, w), bool)
    mask[64:296, 54:236] = True
    logits = (
        (cv2.resize(mask.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA) - 0.5) * 8
    )[None].astype(np.float32)
    cfg = RefineConfig(edge="guided", temporal_strength=0.5)
    one, three = Refiner(cfg, (1,), threads=1), Refiner(cfg, (1,), threads=3)
    assert one.threads == 1 and three.threads == 3 and Refiner(cfg, (1,)).threads >= 1
    for f in frames:
        res = MaskResult(f.index, (1,), logits, np.float32([5.0]), np.float32([1.0]))
        a, b = one(res, f).alpha, three(res, f).alpha
        np.testing.assert_array_equal(a, b)
        assert 0.0 < float(a.mean()) < 1.0


def test_follow_forgets_the_previous_frame_at_a_cut_a_gap_or_a_step_back():
    # the render, the studio's preview and the OFX worker say which frame comes next with
    # the same call: the temporal filter carries over only to the next frame of the same shot
    a, _b = _masks()
    moved = np.roll(a, 12, axis=1)
    cfg = RefineConfig(temporal_strength=0.9)

    def second(index: int, shot: int) -> np.ndarray:
        refiner = Refiner(cfg, (1,))
        refiner.follow(4, 0)
        refiner(_result(4, [a], obj_ids=(1,)), _frame(4))
        refiner.follow(index, shot)
        return refiner(_result(index, [moved], obj_ids=(1,)), _frame(index)).alpha[0]

    def fresh(index: int) -> np.ndarray:
        return Refiner(cfg, (1,))(_result(index, [moved], obj_ids=(1,)), _frame(index)).alpha[0]

    assert np.abs(second(5, 0) - fresh(5)).max() > 0.3  # the next frame: smoothed
    for index, shot in [(5, 1), (3, 0), (7, 0), (4, 0)]:  # a cut, back, a gap, the same
        np.testing.assert_array_equal(second(index, shot), fresh(index))

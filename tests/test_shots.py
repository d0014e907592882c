"""Shot detection: synthetic frames, the real clip with known cuts, and real clips without cuts."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.conftest import shared_data
from vosfx.errors import ConfigError
from vosfx.session.shots import ShotDetector
from vosfx.types import Frame

VIDEOS = ("01_dog.mp4", "03_blocks.mp4", "12_hideandseek.mp4", "bedroom.mp4")
DAVIS = ("blackswan", "bmx-trees", "car-shadow", "chair", "libby")


def _video_frames(path, width=320):
    """Decode at reduced size (PyAV's scaler) to keep the test fast."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            height = round(frame.height * width / frame.width / 2) * 2
            yield frame.to_ndarray(format="rgb24", width=width, height=height)


def _davis_frames(seq):
    import cv2

    for p in sorted(shared_data("davis", "JPEGImages", seq).glob("*.jpg")):
        yield np.ascontiguousarray(cv2.imread(str(p))[:, :, ::-1])


def _detect(frames, **kw):
    det = ShotDetector(**kw)
    ids = [det.push(Frame(i, im, pts=i, time_base=Fraction(1, 30))) for i, im in enumerate(frames)]
    return det, ids


def _scene(rng, colour, n, h=72, w=128):
    """A moving textured square on a flat background: motion without a cut."""
    base = np.zeros((h, w, 3), np.uint8) + np.array(colour, np.uint8)
    tex = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    for i in range(n):
        im = base.copy()
        x = 10 + 3 * i % (w - 40)
        im[20:44, x : x + 24] = tex
        yield im


def test_synthetic_hard_cuts_and_ids():
    rng = np.random.default_rng(0)
    frames = [
        *_scene(rng, (200, 40, 40), 30),
        *_scene(rng, (30, 160, 220), 25),
        *_scene(rng, (90, 200, 60), 20),
    ]
    det, ids = _detect(frames)
    assert det.cuts == [30, 55] and det.shot_starts == [30, 55]
    assert ids == [0] * 30 + [1] * 25 + [2] * 20


def test_min_shot_frames_merges_short_shots():
    rng = np.random.default_rng(1)
    frames = [
        *_scene(rng, (200, 40, 40), 30),
        *_scene(rng, (30, 160, 220), 5),
        *_scene(rng, (90, 200, 60), 20),
    ]
    det, _ = _detect(frames, min_shot_frames=15)
    assert det.cuts == [30]  # 35 is only 5 frames after 30


def test_gap_through_black_is_one_cut_leading_and_trailing_black_none():
    rng = np.random.default_rng(2)
    black = [np.zeros((72, 128, 3), np.uint8)] * 20
    frames = [
        *black,
        *_scene(rng, (200, 40, 40), 30),
        *black,
        *_scene(rng, (30, 160, 220), 30),
        *black,
    ]
    det, ids = _detect(frames)
    # dark run 50..69, content again at 70: cut at 50 + 20 * 1.25 / 2 = 62, ids switch at 70
    assert det.cuts == [62] and det.shot_starts == [70]
    assert ids[69] == 0 and ids[70] == 1 and ids[-1] == 1


def test_threshold_zero_means_default_and_bad_values_raise():
    assert ShotDetector(0.0).threshold == ShotDetector().threshold > 0
    with pytest.raises(ConfigError, match="expected"):
        ShotDetector(-1.0)
    with pytest.raises(ConfigError, match="expected"):
        ShotDetector(min_shot_frames=0)
    det = ShotDetector()
    det.push(Frame(3, np.zeros((8, 8, 3), np.uint8), pts=None, time_base=Fraction(1)))
    with pytest.raises(ConfigError, match="expected frame index > 3"):
        det.push(Frame(3, np.zeros((8, 8, 3), np.uint8), pts=None, time_base=Fraction(1)))


def test_pyscenedetect_test_video_cuts():
    path = shared_data("shots", "pyscenedetect_testvideo.mp4")
    det, ids = _detect(_video_frames(path))
    assert len(ids) == 720
    assert len(det.cuts) == 2
    assert abs(det.cuts[0] - 201) <= 1 and abs(det.cuts[1] - 382) <= 1
    assert max(ids) == 2


@pytest.mark.parametrize("name", VIDEOS)
def test_no_cut_in_real_clips(name):
    det, ids = _detect(_video_frames(shared_data("videos", name)))
    assert len(ids) > 100 and det.cuts == [], det.cuts


@pytest.mark.parametrize("seq", DAVIS)
def test_no_cut_in_davis(seq):
    det, ids = _detect(_davis_frames(seq))
    assert len(ids) >= 40 and det.cuts == [], det.cuts


def test_spliced_davis_sequences_give_real_hard_cuts():
    import cv2

    # real footage joined end to end: every junction is a real hard cut
    frames, junctions = [], []
    for seq in ("blackswan", "car-shadow", "libby", "bmx-trees"):
        clip = [
            cv2.resize(im, (427, 240), interpolation=cv2.INTER_AREA) for im in _davis_frames(seq)
        ]
        if frames:
            junctions.append(len(frames))
        frames += clip
    det, _ = _detect(frames)
    assert det.cuts == junctions


def _davis_small(seq):
    import cv2

    return [cv2.resize(im, (427, 240), interpolation=cv2.INTER_AREA) for im in _davis_frames(seq)]


def _fastest_point(frames, first=16):
    """The frame after the 3 consecutive frames of largest content score: where a cut follows
    the clip's fastest motion (the old 3x-the-recent-mean rule missed 38 of 120 such joins)."""
    det, _ = _detect(frames)
    score = [det.scores.get(i, 0.0) for i in range(len(frames))]
    return max(range(first, len(frames)), key=lambda k: float(np.mean(score[k - 3 : k])))


@pytest.fixture(scope="module")
def davis_small():
    return {seq: _davis_small(seq) for seq in DAVIS}


@pytest.mark.parametrize("first", DAVIS)
def test_cut_right_after_fast_motion_is_found(davis_small, first):
    # each DAVIS sequence cut at its fastest moment into each of the others
    frames = davis_small[first]
    k = _fastest_point(frames)
    for other in DAVIS:
        if other == first:
            continue
        det, ids = _detect(frames[:k] + davis_small[other])
        assert det.cuts == [k], f"{first}[:{k}] + {other}: {det.cuts}"
        assert ids[k - 1] == 0 and ids[k] == 1
        assert det.reasons[k] in ("content", "colour", "structure")


@pytest.mark.parametrize(
    ("seq", "k"), [("bmx-trees", 28), ("bmx-trees", 56), ("libby", 20), ("blackswan", 24)]
)
def test_jump_cut_inside_a_fast_take_is_found(davis_small, seq, k):
    # 20 frames left out of one take: same place, same colours, a new picture; the colour
    # evidence cannot see it, the motion-compensated structure difference does
    frames = davis_small[seq]
    det, _ = _detect(frames[:k] + frames[k + 20 :])
    assert det.cuts == [k], det.cuts
    assert det.reasons[k] == "structure"


def test_jump_cut_needs_the_structure_evidence(davis_small):
    # the same join with the structure evidence switched off is missed: content (50 vs a
    # recent mean of 33) and colour (0.33) alone cannot tell it from bmx-trees' own motion
    frames = davis_small["bmx-trees"]
    det, _ = _detect(frames[:28] + frames[48:], structure_min=255.0)
    assert det.cuts == []


def test_colour_cut_validated():
    with pytest.raises(ConfigError, match="colour_cut"):
        ShotDetector(colour_cut=0.0)

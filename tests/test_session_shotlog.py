"""ShotLog (vosfx/session/shotlog.py): a session's shot ids, the detector fed every frame once,
in order from the range start, whatever frame a sweep asks for first."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.test_shots import _scene
from vosfx.config import MemoryConfig
from vosfx.errors import PromptError
from vosfx.session.shotlog import ShotLog
from vosfx.session.shots import ShotDetector
from vosfx.types import Frame

START = 10  # the session's range starts here: frame indices are the clip's


class _Provider:
    """The session's frame provider, counting what it is asked for."""

    def __init__(self, images):
        self.images, self.asked = images, []

    def get(self, index: int) -> Frame:
        self.asked.append(index)
        return _frame(self.images, index)

    def close(self) -> None:
        pass


def _frame(images, index: int) -> Frame:
    return Frame(index, images[index - START], pts=index, time_base=Fraction(1, 30))


@pytest.fixture(scope="module")
def images():
    """Two shots: a cut at frame START + 30."""
    rng = np.random.default_rng(0)
    return [*_scene(rng, (200, 40, 40), 30), *_scene(rng, (30, 160, 220), 25)]


def test_ids_and_cuts_are_the_detectors_whatever_frame_comes_first(images):
    det = ShotDetector()
    want = [det.push(_frame(images, START + i)) for i in range(len(images))]
    assert det.cuts == [START + 30] and want[29:31] == [0, 1]

    provider = _Provider(images)
    log = ShotLog(MemoryConfig(), START, provider, enabled=True)
    # a sweep that starts late (a prompt on frame START + 40): the frames before are fetched
    assert log.see(_frame(images, START + 40)) == want[40]
    assert provider.asked == list(range(START, START + 40))
    assert log.cuts == [START + 30] and log.next_index == START + 41
    # frames already seen are answered from the log, not seen twice
    assert log.see(_frame(images, START + 5)) == want[5] and len(provider.asked) == 40
    got = [log.see(_frame(images, START + i)) for i in range(len(images))]
    assert got == want and log.cuts == [START + 30]
    assert log.shot_id(START + 31) == 1 and log.shot_id(START + 100) == 0  # unseen: 0


def test_a_policy_without_shots_makes_no_detector(images):
    provider = _Provider(images)
    log = ShotLog(MemoryConfig(), START, provider, enabled=False)
    assert [log.see(_frame(images, START + i)) for i in (40, 0, 31)] == [0, 0, 0]
    assert provider.asked == [] and log.cuts == [] and log._detector is None


def test_a_session_without_a_provider_must_not_skip_frames(images):
    log = ShotLog(MemoryConfig(), START, None, enabled=True)
    assert log.see(_frame(images, START)) == 0
    with pytest.raises(PromptError, match=f"missed frames before {START + 2}"):
        log.see(_frame(images, START + 2))

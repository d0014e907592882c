from fractions import Fraction

import pytest

from vosfx.errors import InputError
from vosfx.io.timecode import from_frames, offset, to_frames


@pytest.mark.parametrize(
    "tc, fps, frames",
    [
        ("00:00:00:00", 24, 0),
        ("01:00:00:00", 24, 86400),
        ("00:00:01:05", 25, 30),
        ("00:01:00;02", Fraction(30000, 1001), 1800),  # 00:01:00;00 and ;01 do not exist
        ("00:10:00;00", Fraction(30000, 1001), 17982),  # every tenth minute keeps them
        ("01:00:00;00", Fraction(60000, 1001), 215784),
    ],
)
def test_known_values(tc, fps, frames):
    assert to_frames(tc, fps)[0] == frames
    assert from_frames(frames, fps, ";" in tc) == tc


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), Fraction(60000, 1001)])
def test_drop_frame_round_trips(fps):
    for n in range(0, 200_000, 37):
        tc = from_frames(n, fps, True)
        assert to_frames(tc, fps) == (n, True), tc


def test_offset_keeps_flavour_and_wraps():
    assert offset("01:00:00:00", 10, 24) == "01:00:00:10"
    assert offset("00:00:59;29", 1, Fraction(30000, 1001)) == "00:01:00;02"
    assert offset("23:59:59:23", 1, 24) == "00:00:00:00"


@pytest.mark.parametrize("bad", ["", "1:2:3", "aa:bb:cc:dd", "01:00:00"])
def test_bad_timecode(bad):
    with pytest.raises(InputError, match="timecode"):
        to_frames(bad, 24)

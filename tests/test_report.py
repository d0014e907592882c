"""Presence intervals and the --report text."""

from __future__ import annotations

import pytest

from vosfx.pipeline.presence import format_presence, format_report, presence_intervals


@pytest.mark.parametrize(
    ("logits", "first", "expected"),
    [
        ([], 0, []),
        ([1.0, 2.0, 0.5], 0, [(0, 2, True)]),
        ([1.0, -1.0, -2.0, 3.0], 10, [(10, 10, True), (11, 12, False), (13, 13, True)]),
        ([0.0, 0.1], 0, [(0, 0, False), (1, 1, True)]),  # 0 is absent, as in SAM 2
    ],
)
def test_presence_intervals(logits, first, expected):
    assert presence_intervals(logits, first) == expected


def test_format_presence_lines():
    logits = [1.0] * 340 + [-1.0] * 173 + [1.0] * 10 + [-1.0]
    line = format_presence(1, presence_intervals(logits))
    assert line == "obj 1: absent in frames 340\u2013512, frame 523"
    assert format_presence(2, [(0, 9, True)]) == "obj 2: present throughout"
    assert format_presence(3, [(0, 9, False)]) == "obj 3: absent throughout"


def test_format_report_lists_cuts_and_events():
    text = format_report(
        {1: [(0, 99, True)]},
        cuts=[40, 80],
        promoted={1: {40: [39, 38]}},
        events={1: {40: "cut", 60: "disappeared"}},
    )
    assert text.splitlines() == [
        "shots: 3 (cuts at frames 40, 80)",
        "obj 1: present throughout",
        "  frame 40: cut; promoted frames 39, 38",
        "  frame 60: disappeared; nothing promoted",
    ]

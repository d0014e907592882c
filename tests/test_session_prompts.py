"""PromptBook (vosfx/session/prompts.py): which passes of the rule a prompt leaves stale, the
prompts a sweep still has to compute, and the range check. Pure bookkeeping, no engine."""

from __future__ import annotations

import numpy as np
import pytest

from vosfx.errors import PromptError
from vosfx.session.prompts import PromptBook
from vosfx.types import Prompt


def _p(frame: int, obj: int = 1) -> Prompt:
    return Prompt(frame, obj, mask=np.ones((4, 4), bool))


def _book(prompted: dict[int, list[int]], *, start=0, end=40, backward=True) -> PromptBook:
    """A book whose prompts are ``prompted`` (obj -> frames), every pass already run."""
    book = PromptBook(start, end, backward=backward)
    for obj, frames in prompted.items():
        for t in frames:
            book.put(_p(t, obj))
            book.bump(obj, t)
    for pl in book.plan():
        book.ran(pl)
    assert book.stale() == []
    return book


def _spans(plans) -> set[tuple[int, int, int, int]]:
    """(obj, anchor, first frame, last frame) of each pass."""
    return {(pl.obj_id, pl.anchor, pl.frames.start, pl.frames[-1]) for pl in plans}


@pytest.mark.parametrize(
    "prompted, change, want_stale",
    [
        # a new prompt between two: only the passes of that gap (0 and 20 keep their far sides)
        (
            {1: [0, 20]},
            ("put", 1, 10),
            {(1, 0, 1, 5), (1, 10, 6, 9), (1, 10, 11, 15), (1, 20, 16, 19)},
        ),
        # a new prompt after the last: the last one's tail is cut, the new one tracks on
        ({1: [0, 20]}, ("put", 1, 30), {(1, 20, 21, 25), (1, 30, 26, 29), (1, 30, 31, 39)}),
        # a prompt changed on its frame: every pass that attends it, none that does not
        (
            {1: [0, 20, 30]},
            ("put", 1, 20),
            {(1, 0, 1, 10), (1, 20, 11, 19), (1, 20, 21, 25), (1, 30, 26, 29)},
        ),
        # a prompt removed: its neighbours' passes meet across the gap it leaves
        ({1: [0, 20, 30]}, ("remove", 1, 20), {(1, 0, 1, 15), (1, 30, 16, 29)}),
        # another object's prompt leaves this object's passes as they are
        ({1: [0, 20], 2: [5]}, ("put", 2, 12), {(2, 5, 6, 8), (2, 12, 9, 11), (2, 12, 13, 39)}),
    ],
)
def test_a_prompt_makes_stale_only_the_passes_that_attend_it(prompted, change, want_stale):
    book = _book(prompted)
    kind, obj, t = change
    if kind == "put":
        book.put(_p(t, obj))
    else:
        book.remove(obj, t)
    book.bump(obj, t)
    assert _spans(book.stale()) == want_stale


def test_forward_only_leaves_nothing_before_the_first_prompt():
    book = _book({1: [10, 20]}, backward=False)
    assert _spans(book.plan()) == {(1, 10, 11, 19), (1, 20, 21, 39)}
    book.put(_p(15))
    book.bump(1, 15)
    assert _spans(book.stale()) == {(1, 10, 11, 14), (1, 15, 16, 19)}


def test_covering_is_the_up_to_date_pass_of_a_frame():
    book = PromptBook(0, 40, backward=True)
    book.put(_p(0))
    book.bump(1, 0)
    assert book.covering(1, 7) is None  # not run yet
    (tail,) = book.plan()
    book.ran(tail)
    assert book.covering(1, 7) == tail
    assert book.covering(2, 7) is None  # another object
    book.put(_p(20))
    book.bump(1, 20)
    assert book.covering(1, 7) is None  # the pass that covered it is cut at the new prompt


def test_deferred_prompts_wait_for_their_frame_and_later_ones_replace_earlier():
    book = PromptBook(0, 40, backward=True)
    book.defer([_p(5, 1), _p(5, 2), _p(9, 1)])
    book.defer([_p(5, 1)])
    assert [q.obj_id for q in book.pending[5]] == [2, 1]
    assert [q.frame_index for q in book.pending[9]] == [9]
    assert book.obj_ids == (1, 2) and book.prompted_frames(1) == [5, 9]
    book.put(_p(9, 1))  # computed by the caller: no sweep computes it again
    assert book.pending[9] == []
    book.drop(2)
    assert book.obj_ids == (1,) and [q.obj_id for q in book.pending[5]] == [1]
    assert [(p.obj_id, p.frame_index) for p in book.prompts()] == [(1, 5), (1, 9)]


def test_dropping_an_object_forgets_its_passes():
    book = _book({1: [0], 2: [0]})
    book.drop(1)
    book.put(_p(0, 1))  # the same prompt again: its passes run again
    book.bump(1, 0)
    assert _spans(book.stale()) == {(1, 0, 1, 39)}


@pytest.mark.parametrize("frame", [-1, 40, 100])
def test_prompts_outside_the_range_are_refused_with_the_range(frame):
    book = PromptBook(0, 40, backward=True)
    with pytest.raises(
        PromptError, match=rf"frame {frame} is outside the frames being matted \(0..39\)"
    ):
        book.defer([_p(frame)])
    assert book.prompts() == []


def test_removing_a_prompt_that_is_not_there_says_which():
    book = _book({1: [0]})
    with pytest.raises(PromptError, match="object 1 has no prompt on frame 3"):
        book.remove(1, 3)

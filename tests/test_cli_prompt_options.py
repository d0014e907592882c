"""`vosfx matte`'s prompt options as PromptSpecs (vosfx/cli/prompt_options.py): frames and
objects from ``FRAME:`` and ``@OBJ``, clicks and a box on one frame for one object as one
prompt, masks first; bad values name the flag as typed."""

from __future__ import annotations

import click
import pytest

from vosfx.cli.prompt_options import prompt_specs


def _opts(**kw) -> dict:
    base = {
        "mask_frame": 0,
        "masks": (),
        "points": (),
        "neg_points": (),
        "boxes": (),
        "obj_id": None,
    }
    return {**base, **kw}


def _brief(specs) -> list[tuple]:
    return [(s.frame, s.obj_id, s.mask, s.points, s.labels, s.box) for s in specs]


@pytest.mark.parametrize(
    "mask, opts, want",
    [
        # MASK on --mask-frame, then --mask values with their frame and object
        (
            "a.png",
            _opts(mask_frame=4, masks=("9:b.png@2", "c.png")),
            [
                (4, None, "a.png", (), (), None),
                (9, 2, "b.png", (), (), None),
                (4, None, "c.png", (), (), None),
            ],
        ),
        # clicks and a box of one frame and object make one prompt; another frame another
        (
            None,
            _opts(
                points=("3:10,20", "3:30,40", "5:1,2@7"),
                neg_points=("3:50,60",),
                boxes=("3:0,0,8,8",),
            ),
            [
                (
                    3,
                    None,
                    None,
                    ((10.0, 20.0), (30.0, 40.0), (50.0, 60.0)),
                    (1, 1, 0),
                    (0.0, 0.0, 8.0, 8.0),
                ),
                (5, 7, None, ((1.0, 2.0),), (1,), None),
            ],
        ),
        # --obj is the default object of clicks and boxes; --mask-frame their default frame
        (
            None,
            _opts(mask_frame=2, obj_id=3, points=("4,5",), boxes=("6:1,1,9,9@1",)),
            [(2, 3, None, ((4.0, 5.0),), (1,), None), (6, 1, None, (), (), (1.0, 1.0, 9.0, 9.0))],
        ),
    ],
)
def test_values_become_one_prompt_per_frame_and_object(mask, opts, want):
    assert _brief(prompt_specs(mask, opts)) == want


@pytest.mark.parametrize(
    "opts, flag, message",
    [
        (_opts(masks=("3:",)), "--mask", "expected [FRAME:]PATH[@OBJ], found '3:'"),
        (_opts(points=("1:ten,10",)), "--point", "expected a point"),
        (_opts(neg_points=("1,2,3",)), "--neg-point", "expected a point"),
        (_opts(boxes=("2:1,2,3",)), "--box", "expected a box"),
        (_opts(boxes=("2:1,1,5,5", "2:2,2,6,6")), "--box", "two boxes for frame 2; a prompt"),
        (_opts(boxes=("2:1,1,5,5@4", "2:2,2,6,6@4")), "--box", "two boxes for frame 2, object 4"),
        # @0 was taken as no object id at all (object 1 or --obj, in silence)
        (
            _opts(points=("10,10@0",)),
            "--point",
            "object id in 1..2147483647 after @, found '10,10@0'",
        ),
        (_opts(masks=("2:m.png@0",)), "--mask", "object id in 1..2147483647 after @"),
        (_opts(boxes=("1,1,5,5@2147483648",)), "--box", "object id in 1..2147483647"),
    ],
)
def test_bad_values_name_the_flag(opts, flag, message):
    with pytest.raises(click.BadParameter) as err:
        prompt_specs(None, opts)
    assert err.value.param_hint == flag
    assert message in err.value.format_message()


def test_edit_tracked_makes_the_clicks_corrections_not_the_masks():
    specs = prompt_specs(
        "a.png", _opts(points=("10:5,6", "7,8"), boxes=("12:1,2,30,40@2",), edit_tracked=True)
    )
    assert [(s.frame, s.mask is not None, s.correction) for s in specs] == [
        (0, True, False),
        (10, False, True),
        (0, False, True),  # on its object's first prompted frame the session reads it as plain
        (12, False, True),
    ]
    assert not any(s.correction for s in prompt_specs("a.png", _opts(points=("10:5,6",))))

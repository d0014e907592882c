"""`vosfx matte`'s prompt options: MASK, --mask, --point, --neg-point and --box values as
PromptSpecs, each on its frame (``FRAME:``) for its object (``@OBJ``)."""

from __future__ import annotations

import click

from vosfx.errors import VosfxError

MAX_OBJ_ID = 2**31 - 1  # as a job file's obj_id


def _split(value: str, flag: str) -> tuple[int | None, str, int | None]:
    """``[FRAME:]BODY[@OBJ]`` split, with an object id outside 1..MAX_OBJ_ID a usage error
    naming the flag (``@0`` was taken as no id at all)."""
    from vosfx.io.prompts import split_prompt_option

    frame, body, obj = split_prompt_option(value)
    if obj is not None and not 1 <= obj <= MAX_OBJ_ID:
        raise click.BadParameter(
            f"expected an object id in 1..{MAX_OBJ_ID} after @, found {value!r}", param_hint=flag
        )
    return frame, body, obj


def prompt_specs(mask, opts) -> list:
    """PromptSpecs from MASK, --mask, --point, --neg-point and --box: each value may name its
    frame (``FRAME:``, default --mask-frame) and object (``@OBJ``, default --obj); clicks and
    boxes on one frame for one object make one prompt. Masks come first (their ids decide
    the default id of clicks)."""
    from vosfx.job import PromptSpec

    default_frame = opts["mask_frame"]
    specs = _mask_specs(mask, opts["masks"], default_frame)
    for (frame, obj), g in _click_groups(opts, default_frame).items():
        specs.append(
            PromptSpec(
                frame=frame,
                obj_id=obj,
                points=tuple(map(tuple, g["points"])),
                labels=tuple(g["labels"]),
                box=g["box"],
                correction=bool(opts.get("edit_tracked")),
                where=", ".join(g["typed"]),
            )
        )
    return specs


def _mask_specs(mask, values, default_frame: int) -> list:
    """MASK (on --mask-frame), then every --mask value."""
    from vosfx.job import PromptSpec

    specs = []
    if mask:
        where = f"MASK {mask}" + (f" (--mask-frame {default_frame})" if default_frame else "")
        specs.append(PromptSpec(frame=default_frame, mask=mask, where=where))
    for value in values:
        frame, path, obj = _split(value, "--mask")
        if not path:
            raise click.BadParameter(
                f"expected [FRAME:]PATH[@OBJ], found {value!r}", param_hint="--mask"
            )
        specs.append(
            PromptSpec(
                frame=default_frame if frame is None else frame,
                obj_id=obj,
                mask=path,
                where=f"--mask {value}",
            )
        )
    return specs


def _click_groups(opts, default_frame: int) -> dict[tuple[int, int | None], dict]:
    """--point, --neg-point and --box values grouped by (frame, object), in the order first
    seen: ``{"points": [[x, y], ...], "labels": [1 or 0, ...], "box": (x0, y0, x1, y1) or
    None, "typed": ["--point 12:410,220", ...]}`` in pixels."""
    from vosfx.io.prompts import parse_box, parse_points

    groups: dict[tuple[int, int | None], dict] = {}
    flags = [("--point", "+", v) for v in opts["points"]]
    flags += [("--neg-point", "-", v) for v in opts["neg_points"]]
    for flag, sign, value in flags:
        frame, xy, obj = _split(value, flag)
        key = (
            default_frame if frame is None else frame,
            obj if obj is not None else opts["obj_id"],
        )
        try:
            pts, labels = parse_points(sign + xy)
        except VosfxError:  # its message would echo the sign added here, not what was typed
            raise click.BadParameter(
                f"expected a point [FRAME:]X,Y[@OBJ] in pixels, found {value!r}", param_hint=flag
            ) from None
        g = groups.setdefault(key, {"points": [], "labels": [], "box": None, "typed": []})
        g["typed"].append(f"{flag} {value}")
        g["points"] += pts.tolist()
        g["labels"] += labels.tolist()
    for value in opts["boxes"]:
        frame, text, obj = _split(value, "--box")
        key = (
            default_frame if frame is None else frame,
            obj if obj is not None else opts["obj_id"],
        )
        try:
            box = tuple(parse_box(text).tolist())
        except VosfxError as err:
            raise click.BadParameter(str(err), param_hint="--box") from None
        g = groups.setdefault(key, {"points": [], "labels": [], "box": None, "typed": []})
        g["typed"].append(f"--box {value}")
        if g["box"] is not None:
            raise click.BadParameter(
                f"two boxes for frame {key[0]}"
                + (f", object {key[1]}" if key[1] else "")
                + "; a prompt takes one box",
                param_hint="--box",
            )
        g["box"] = box
    return groups

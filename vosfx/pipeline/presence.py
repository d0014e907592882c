"""Per-object presence intervals and the text ``vosfx matte --report`` prints.

Pure functions over plain numbers, so the sidecar writer and the CLI share them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def presence_intervals(
    object_score_logits: Sequence[float], first_frame: int = 0
) -> list[tuple[int, int, bool]]:
    """Runs of presence: ``[(start, end, present), ...]``, ``end`` inclusive, in frame order.

    ``object_score_logits``: one object's score logit per frame, frames ``first_frame``,
    ``first_frame + 1``, ...; present means logit > 0 (SAM 2's rule).
    """
    runs: list[tuple[int, int, bool]] = []
    for i, logit in enumerate(object_score_logits):
        frame, present = first_frame + i, float(logit) > 0
        if runs and runs[-1][2] == present:
            runs[-1] = (runs[-1][0], frame, present)
        else:
            runs.append((frame, frame, present))
    return runs


def _frames(start: int, end: int) -> str:
    return f"frame {start}" if start == end else f"frames {start}\u2013{end}"


def format_presence(obj_id: int, intervals: Sequence[tuple[int, int, bool]]) -> str:
    """One line: ``obj 1: absent in frames 340–512, 600–611`` (or ``present throughout``)."""
    absent = [_frames(s, e) for s, e, present in intervals if not present]
    if not intervals:
        return f"obj {obj_id}: no frames tracked"
    if not absent:
        return f"obj {obj_id}: present throughout"
    if len(absent) == 1 and len(intervals) == 1:
        return f"obj {obj_id}: absent throughout"
    return f"obj {obj_id}: absent in {', '.join(absent)}"


def format_report(
    presence: Mapping[int, Sequence[tuple[int, int, bool]]],
    *,
    cuts: Sequence[int] = (),
    promoted: Mapping[int, Mapping[int, Sequence[int]]] | None = None,
    events: Mapping[int, Mapping[int, str]] | None = None,
) -> str:
    """The ``--report`` text: shot boundaries, then per object presence and memory events.

    ``presence``: obj_id -> intervals from :func:`presence_intervals`. ``cuts``: frames where
    a shot starts. ``promoted``: obj_id -> {event frame -> promoted frames}. ``events``:
    obj_id -> {frame -> event name} (``PolicyLog`` fields).
    """
    lines = [
        f"shots: {len(cuts) + 1}"
        + (f" (cuts at frames {', '.join(map(str, cuts))})" if cuts else "")
    ]
    for obj_id in sorted(presence):
        lines.append(format_presence(obj_id, presence[obj_id]))
        obj_events = (events or {}).get(obj_id, {})
        obj_promoted = (promoted or {}).get(obj_id, {})
        for frame in sorted(set(obj_events) | set(obj_promoted)):
            name = obj_events.get(frame, "promoted")
            got = list(obj_promoted.get(frame, ()))
            what = f"promoted frames {', '.join(map(str, got))}" if got else "nothing promoted"
            lines.append(f"  frame {frame}: {name}; {what}")
    return "\n".join(lines)

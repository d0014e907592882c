"""What the page's timeline reads: per object its prompted and tracked frames and where it is
present; the shot cuts and memory events (the data of ``vosfx matte --report``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def timeline(studio) -> dict:
    """What the page's timeline shows for ``studio`` (a :class:`~vosfx.studio.state.Studio`):
    per object, prompted frames, tracked frames and presence runs; shot cuts; memory events
    (the data of ``vosfx matte --report``)."""
    from vosfx.pipeline.presence import presence_intervals

    objs = []
    for obj_id, obj in sorted(studio.objects.items()):
        tracked = studio.session.store.tracked(obj_id)[studio.start : studio.end]
        scores = studio.session.store.scores(obj_id)[studio.start : studio.end]
        runs = []
        for a, b, present in presence_intervals(scores.tolist(), studio.start):
            if tracked[a - studio.start]:
                runs.append([a, b, present])
        objs.append(
            {
                "obj_id": obj_id,
                "name": obj.name,
                "colour": colour(obj_id),
                "prompted": sorted(f for (o, f) in studio.edits if o == obj_id),
                "tracked": _runs(tracked, studio.start),
                "presence": runs,
            }
        )
    engine_report, stale = studio.plan_state()
    report = _plain(engine_report)
    return {
        "objects": objs,
        "cuts": list(studio.session.cuts),
        "memory": memory_events(report),
        "report": report,
        "stale": stale,
    }


def memory_events(report: dict) -> list[dict]:
    """The memory events of the engine's report (what ``vosfx matte --report`` prints: a
    policy's events and the frames it promoted), one entry per object and frame."""
    out = []
    for obj, d in report.items():
        if not isinstance(d, dict) or not str(obj).isdigit():
            continue
        for frame, event in (d.get("events") or {}).items():
            out.append({"frame": int(frame), "obj_id": int(obj), "event": event})
        for frame, promoted in (d.get("promoted") or {}).items():
            out.append({"frame": int(frame), "obj_id": int(obj), "event": f"promoted {promoted}"})
    return sorted(out, key=lambda e: (e["frame"], e["obj_id"]))


def colour(obj_id: int) -> str:
    """An object's preview colour as the page writes it (#rrggbb)."""
    from vosfx.matte.compose import object_colour

    r, g, b = object_colour(obj_id)
    return f"#{r:02x}{g:02x}{b:02x}"


def _runs(flags: np.ndarray, offset: int) -> list[list[int]]:
    """[[first, last], ...] of the True runs of ``flags`` (frame indices from ``offset``)."""
    runs: list[list[int]] = []
    for i in np.flatnonzero(flags):
        t = int(i) + offset
        if runs and runs[-1][1] == t - 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    return runs


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy scalars and arrays to Python, keys to strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value

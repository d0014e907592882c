"""The session's rule as passes (docs/session.md; the rule itself is written out in
:mod:`vosfx.session.clip`): for one object and its prompted frames, which frames are tracked
from which prompted frame, in which direction, attending which neighbour."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PassPlan:
    """One pass of the rule: ``obj_id`` tracked from its prompted frame ``anchor`` in
    ``direction`` (+1, -1) over ``frames`` (ascending source indices), attending ``anchor`` and
    ``neighbour`` (or only ``anchor``) as conditioning memory."""

    obj_id: int
    anchor: int
    direction: int
    neighbour: int | None
    frames: range

    @property
    def is_tail(self) -> bool:
        """Forwards attending its anchor alone (after the object's last prompted frame, or up
        to a correction): steps with the sweep itself."""
        return self.direction > 0 and self.neighbour is None

    @property
    def due(self) -> int:
        """The sweep position at which a segment runs: once the sweep has computed its
        right-hand prompted frame (so no frame is decoded out of order)."""
        if self.is_tail:
            return self.anchor + 1
        return self.neighbour if self.direction > 0 else self.anchor  # type: ignore[return-value]


def plan_object(
    obj_id: int,
    prompted: Iterable[int],
    start: int,
    end: int,
    *,
    backward: bool = True,
    corrections: Iterable[int] = (),
) -> list[PassPlan]:
    """The passes of the rule for one object whose prompted frames are ``prompted`` (those
    outside [start, end) are ignored). ``backward`` False (``--forward-only``): nothing before
    the first prompted frame, and each gap tracked forwards from its left prompted frame.
    ``corrections``: prompted frames whose clicks edit the mask tracked there (rule d): the
    gap before one is tracked forwards from its left prompted frame alone, the pass the
    correction then continues."""
    p = sorted(f for f in set(prompted) if start <= f < end)
    if not p:
        return []
    corrected = set(corrections)
    plans = []
    if p[0] > start and backward:
        plans.append(PassPlan(obj_id, p[0], -1, None, range(start, p[0])))
    for a, b in itertools.pairwise(p):
        if b in corrected:
            if b > a + 1:
                plans.append(PassPlan(obj_id, a, 1, None, range(a + 1, b)))
            continue
        # t - a <= b - t  <=>  t <= (a + b) / 2
        mid = (a + b) // 2 if backward else b - 1
        if mid >= a + 1:
            plans.append(PassPlan(obj_id, a, 1, b, range(a + 1, mid + 1)))
        if mid + 1 <= b - 1:
            plans.append(PassPlan(obj_id, b, -1, a, range(mid + 1, b)))
    if p[-1] < end - 1:
        plans.append(PassPlan(obj_id, p[-1], 1, None, range(p[-1] + 1, end)))
    return plans


__all__ = ["PassPlan", "plan_object"]

"""The effect's points as the worker's session prompts: the set the effect sends, parsed into
one points prompt per (frame, object) with its content signature, and each prompt without the
points dragged off the picture. Points on a frame after the object's first prompted frame are
a correction of the mask tracked there (docs/session.md, rule d), as `vosfx matte
--edit-tracked` reads them."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import numpy as np

from vosfx.errors import ConfigError
from vosfx.types import Prompt


def digest(data: bytes) -> str:
    """A short content signature (cache keys, prompt signatures)."""
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def parse_points(
    data: dict,
) -> tuple[dict[tuple[int, int], Prompt], dict[tuple[int, int], str]]:
    """``{"points": [[frame, obj, label, x, y], ...]}`` (pixels at full size, top-left origin,
    label 1 include / 0 exclude) -> ``{(frame, obj): Prompt}`` and ``{(frame, obj): sig}``."""
    grouped: dict[tuple[int, int], list[tuple[float, float, int]]] = {}
    rows = data.get("points", [])
    if not isinstance(rows, list):
        raise ConfigError(
            f"points: expected a list of [frame, obj, label, x, y], found {rows!r:.80}"
        )
    for row in rows:
        try:
            frame, obj, label, x, y = int(row[0]), int(row[1]), int(row[2]), row[3], row[4]
        except (TypeError, ValueError, IndexError, KeyError):  # KeyError: a row that is an object
            raise ConfigError(
                f"points: expected [frame, obj, label, x, y], found {row!r}"
            ) from None
        try:
            coords = (float(x), float(y))
        except (TypeError, ValueError):
            coords = (math.nan, math.nan)
        if not all(math.isfinite(v) for v in coords):
            raise ConfigError(f"points: expected finite x and y, found {row!r}")
        grouped.setdefault((frame, obj), []).append((*coords, 1 if label else 0))
    points, sigs = {}, {}
    for (frame, obj), pts in sorted(grouped.items()):
        xy = np.array([p[:2] for p in pts], np.float32).reshape(-1, 2)
        labels = np.array([p[2] for p in pts], np.int32)
        # clicks after the object's first prompted frame edit the mask tracked there (rule d)
        points[(frame, obj)] = Prompt(
            frame_index=frame, obj_id=obj, points=xy, labels=labels, correction=True
        )
        sigs[(frame, obj)] = digest(xy.tobytes() + labels.tobytes())
    return points, sigs


def on_picture(prompt: Prompt, width: int, height: int) -> Prompt | None:
    """``prompt`` without the points off the ``width`` x ``height`` picture (edges inside, as
    :func:`vosfx.io.prompts.check_inside` has them): a point dragged past the image's edge in
    the viewer stays in the effect's list but means nothing to the model, so it is left out
    rather than failing every render. None when none is left."""
    if prompt.points is None:
        return prompt
    xy = prompt.points
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] >= 0) & (xy[:, 1] <= height)
    if inside.all():
        return prompt
    if not inside.any():
        return None
    labels = None if prompt.labels is None else prompt.labels[inside]
    return replace(prompt, points=xy[inside], labels=labels)

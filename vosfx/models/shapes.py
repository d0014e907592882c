"""Checking a checkpoint's tensor names and shapes against a model's (shared by the torch
loader, models/checkpoint.py, and the torch-free reader, models/torchfile.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vosfx.errors import ModelError

Shapes = Mapping[str, tuple[int, ...]]

_LIST_MAX = 12


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LIST_MAX])
    more = len(names) - _LIST_MAX
    return shown + (f", ... and {more} more" if more > 0 else "")


def check_shapes(expected: Shapes, found: Shapes, *, source: str = "checkpoint") -> None:
    """Raise :class:`ModelError` unless ``found`` has exactly ``expected``'s names and shapes.

    The message lists missing keys (the model needs, the file lacks), unexpected keys (the file
    has, the model does not) and shape mismatches (``name: expected (a, b), found (c, d)``).
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(
        k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k])
    )
    if not (missing or unexpected or mismatched):
        return
    head = f"{source} does not fit the model ({len(expected)} expected, {len(found)} found)"
    parts = [head]
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        shown = [f"{k}: expected {tuple(expected[k])}, found {tuple(found[k])}" for k in mismatched]
        parts.append(f"shape mismatches ({len(mismatched)}): {_listing(shown)}")
    raise ModelError("; ".join(parts))

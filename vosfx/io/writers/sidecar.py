"""The JSON sidecar beside each output (``<output>.json``): what made the file."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vosfx.errors import OutputError
from vosfx.files import atomic_write_json
from vosfx.io.writers.base import output_error


def _json_default(value: Any) -> Any:
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"sidecar value of type {type(value).__name__} is not JSON serialisable")


def sidecar_path(output_path: str | os.PathLike) -> Path:
    """``<output>.json``: ``shot.mov`` -> ``shot.mov.json``; folder ``shot`` -> ``shot.json``."""
    out = Path(output_path)
    return out.with_name(out.name + ".json")


def write_sidecar(output_path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as JSON to ``<output>.json`` atomically (temp file, fsync, rename).
    Fractions become "num/den" strings, numpy values plain numbers. Returns the path."""
    path = sidecar_path(output_path)
    try:
        return atomic_write_json(path, data, default=_json_default)
    except (TypeError, ValueError) as err:
        raise OutputError(f"sidecar {path}: data is not valid JSON ({err})") from None
    except OSError as err:
        raise output_error(err, path) from err

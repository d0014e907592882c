"""Atomic file writes: the one helper every JSON, index and state file goes through.

A reader (a host plugin polling a sidecar, a resumed batch reading its state) must never see a
half-written file: the text is written to a temporary name in the same folder (same file
system, so the rename is atomic), flushed and fsynced, then renamed over the target. On any
failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

TEMP_MARK = ".vosfx-tmp-"  # every temporary name holds it (batch cleanup looks for it)


def temp_name(path: Path) -> Path:
    """``.<name>.vosfx-tmp-<random>`` beside ``path``: hidden, unique, same folder."""
    return path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(4)}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp in the same folder, fsync, rename).
    Raises OSError as the file system reports it; the target is untouched on failure."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text through :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(
    path: str | os.PathLike,
    data: Any,
    *,
    default=None,
    indent: int | None = 2,
    sort_keys: bool = False,
) -> Path:
    """``data`` as JSON (NaN refused) plus a newline, through :func:`atomic_write_bytes`.
    Raises TypeError/ValueError for data that is not JSON before touching the disk."""
    text = json.dumps(data, indent=indent, default=default, allow_nan=False, sort_keys=sort_keys)
    return atomic_write_text(path, text + "\n")

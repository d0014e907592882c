"""The C heap under the runtimes: handing freed pages back to the system (glibc only).

ONNX Runtime without its arena and OpenVINO's CPU plugin allocate their buffers with the C
library's ``malloc``. glibc serves blocks below its mmap threshold (128 KiB, raised up to 32
MiB by itself as large blocks are freed) from a heap whose freed pages it keeps, so a process
that frees a stage's buffers does not get smaller. Two ways back, both no-ops where the C
library is not glibc (macOS, Windows, musl):

- :func:`release_free_heap`: the heap's free pages back now (``malloc_trim``; the bf16 tier
  calls it after every OpenVINO call).
- :func:`map_large_blocks`: blocks from 1 MiB on mapped on their own and unmapped when freed
  (``mallopt(M_MMAP_THRESHOLD)``, fixed: glibc then stops raising it), so a graph's peak is what
  it holds at once, not that plus the heap's free pages (``--low-memory``).
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any

# glibc's malloc.h
M_MMAP_THRESHOLD = -3
# blocks from this size on are mapped on their own (--low-memory): every tensor of a stage at
# 512 px and up; numpy's small temporaries stay on the heap
LARGE_BLOCK_BYTES = 1 << 20


@functools.cache
def _glibc() -> Any:
    """The process's C library when it is glibc (it has ``malloc_trim`` and ``mallopt``), or
    None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim, libc.mallopt  # noqa: B018 (musl has neither)
    except (OSError, AttributeError):
        return None
    return libc


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the system (after every OpenVINO call).

    OpenVINO's CPU plugin allocates a graph's intermediate buffers per input shape and frees
    the previous shape's; glibc keeps the freed pages. Memory attention meets a new
    memory-token count on each of a clip's first ~16 frames, and the bf16 tier's resident
    memory grew from 983 to 1,794 MiB at 1024, 580 MiB of it free heap; later frames' numpy
    temporaries fragment the heap by ~5 MiB a frame more. Trimmed after every call it stays
    at ~1,280 MiB from the 11th frame (peak ~1,420), for ~1 ms a call and ~42 MB of pages
    faulted in again a frame: under 1 % of a 1.8 s frame (docs/benchmarks/onnx.md, eighth
    pass)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def map_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Map every block of ``threshold`` bytes or more on its own, returned to the system when
    freed, for the rest of the process; False where the C library is not glibc.

    With ONNX Runtime's arena off (``--low-memory``) the whole render at 1024 peaks at
    ~920 MiB against ~1,190 with the arena (the default), ~1,310 with the arena off alone; each
    large block's pages are zero-filled again on every allocation, so the render takes ~1.3x
    as long (docs/benchmarks/onnx.md, ninth pass)."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))


__all__ = ["LARGE_BLOCK_BYTES", "map_large_blocks", "release_free_heap"]

"""The C heap under the runtimes (vosfx/engine/heap.py): freed pages handed back to the system.
glibc only; elsewhere both calls do nothing."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from vosfx.engine import heap

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@linux_only
def test_release_free_heap_returns_freed_pages():
    """256 MiB of small heap blocks (below glibc's mmap threshold), written and freed but for
    the last one (which keeps the heap's top from shrinking by itself): the pages stay resident
    until release_free_heap."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block, count = 64 * 1024, 4096
    blocks = [libc.malloc(block) for _ in range(count)]
    for b in blocks:
        ctypes.memset(b, 1, block)
    for b in blocks[:-1]:
        libc.free(b)
    held = _rss_mib()
    heap.release_free_heap()
    released = _rss_mib()
    libc.free(blocks[-1])
    assert held - released > 128, (held, released)


# In a subprocess: the threshold is process-wide and stays fixed once set. 2 MiB blocks,
# written and freed but for the last one; first with the threshold at 32 MiB (where glibc's
# own adjustment takes it once such blocks have been freed): the freed blocks stay resident;
# then after map_large_blocks: they go back to the system as they are freed.
_FREED_BLOCKS = textwrap.dedent(
    """
    import ctypes, json
    from vosfx.engine import heap

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    def freed_mib():
        blocks = [libc.malloc(2 << 20) for _ in range(96)]
        for b in blocks:
            ctypes.memset(b, 1, 2 << 20)
        held = rss()
        for b in blocks[:-1]:
            libc.free(b)
        gone = held - rss()
        libc.free(blocks[-1])
        heap.release_free_heap()
        return gone

    libc.mallopt(heap.M_MMAP_THRESHOLD, 32 << 20)
    before = freed_mib()
    applied = heap.map_large_blocks()
    print(json.dumps({"before": before, "applied": applied, "after": freed_mib()}))
    """
)


@linux_only
def test_map_large_blocks_gives_freed_blocks_back_at_once():
    import json

    out = subprocess.run(
        [sys.executable, "-c", _FREED_BLOCKS], capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout)
    assert got["applied"] is True
    assert got["before"] < 16, got  # 190 MiB freed, kept by the heap
    assert got["after"] > 160, got  # 190 MiB freed, unmapped as freed


def test_without_glibc_both_do_nothing(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    heap.release_free_heap()
    assert heap.map_large_blocks() is False

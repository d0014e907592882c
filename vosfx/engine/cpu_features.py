"""What this CPU's instructions decide for the engine: which int8 weights the ``int8`` tier's
image encoder holds.

ONNX Runtime multiplies a dynamically quantised MatMul as uint8 activations x int8 weights.
On x86 CPUs without VNNI (AMD Zen 2/3, Intel before Cascade Lake) its kernels do that with
``vpmaddubsw``, which adds two uint8 x int8 products into a *saturating* int16: 255 x 127 x 2
overflows it, and the image encoder's features came out 10-33 % off (mean relative error;
the masks' IoU against fp32 0.90-0.99 on DAVIS, docs/benchmarks/onnx.md, fourteenth pass).
VNNI (``vpdpbusd``) and AMX accumulate in int32 and ARM's dot products have no such step, so
int8 weights are exact there and fastest. Elsewhere the weights are held as uint8: uint8 x
uint8 runs through 16-bit products that cannot overflow (features 0.7-1.9 % off, IoU >= 0.99,
no slower on an AVX2 CPU).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# /proc/cpuinfo flags of the x86 instructions that multiply uint8 x int8 into int32
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The ``flags`` of Linux's ``/proc/cpuinfo``; None where there is none to read."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    return None if line is None else frozenset(line.partition(":")[2].split())


def _numpy_has_vnni() -> bool:
    """AVX-512 VNNI as numpy's own CPU detection sees it (macOS, Windows): it does not list
    AVX-VNNI, so such CPUs get uint8 weights there (exact, a little slower)."""
    import importlib

    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # 2.x, 1.x
        try:
            features = importlib.import_module(name).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return bool(features.get("AVX512VNNI"))
    return False  # not known: uint8 weights, exact everywhere


@functools.cache
def int8_weights(machine: str | None = None, flags: frozenset[str] | None = None) -> str:
    """``s8`` where this CPU multiplies uint8 x int8 without saturating (x86 with VNNI or AMX,
    any non-x86 CPU), else ``u8``. ``machine``/``flags``: as ``platform.machine()`` and
    :func:`cpu_flags` give them (tests pass their own)."""
    machine = (machine or platform.machine()).lower()
    if machine not in X86:
        return "s8"
    if flags is None:
        flags = cpu_flags()
    vnni = bool(flags & VNNI_FLAGS) if flags is not None else _numpy_has_vnni()
    return "s8" if vnni else "u8"

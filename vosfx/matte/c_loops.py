"""The C build of the refiner's per-pixel loops (``kernels.c``): built with the system's C
compiler on first use into ``<cache>/kernels`` (:mod:`vosfx.native`), loaded with ctypes, and
each loop called as :mod:`vosfx.matte.kernels` calls numba's (the same arguments, its arrays
C-contiguous). ctypes releases the GIL for each call, so the row bands run in parallel."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = Path(__file__).with_name("kernels.c")
# no fused multiply-adds (numba makes none: the builds give the same bits), only the loops'
# entry points exported
C_FLAGS = ("-ffp-contract=off", "-fvisibility=hidden")
# the guide's element types the edge loop is built for (others are read as float32)
GUIDES: dict[np.dtype, str] = {
    np.dtype(np.uint8): "u8",
    np.dtype(np.uint16): "u16",
    np.dtype(np.float32): "f32",
}

_P, _N, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_SIGNATURES: dict[str, tuple[list[Any], Any]] = {
    "vosfx_guide_moments": ([_N, _P, _P], None),
    "vosfx_alpha_moments": ([_N, _P, _P, _P], None),
    "vosfx_inverse_covariance": ([_N, _P, _F, _P], None),
    "vosfx_edge_coefficients": ([_N, _P, _P, _P, _P], None),
    **{
        f"vosfx_apply_edge_detail_{t}": (
            [_P, _P, _P, _N, _N, _N, _N, _F, _F, _F, _P, _N, _N],
            ctypes.c_int,
        )
        for t in GUIDES.values()
    },
    "vosfx_scale_and_clip": ([_N, _P, _F, _F, _F], None),
    "vosfx_sigmoid_from_exp": ([_N, _P], None),
    "vosfx_blend_toward": ([_P, _P, _P, _N, _N, _N, _N, _P, _N, _N], ctypes.c_int),
}
_BUILT: list[Any] = []  # [the library or None, why not], once tried


def library() -> Any | None:
    """The library (ctypes), built into the cache the first time on a machine; None where it
    cannot be (why: :func:`why_not`). Tried once per process; the caller holds a lock."""
    if not _BUILT:
        from vosfx import native
        from vosfx.models.cache import home

        try:
            built = native.build(SOURCE, home() / "kernels", C_FLAGS)
            for symbol, (argtypes, restype) in _SIGNATURES.items():
                function = getattr(built, symbol)
                function.argtypes, function.restype = argtypes, restype
            _BUILT[:] = [built, None]
        except (native.Unavailable, AttributeError) as err:  # AttributeError: a symbol missing
            _BUILT[:] = [None, str(err)]
    return _BUILT[0]


def why_not() -> str | None:
    """Why the library could not be built or loaded (after :func:`library`)."""
    return _BUILT[1] if _BUILT else None


def loop(built: Any, name: str) -> Callable[..., Any]:
    """The library's ``name`` loop, called as numba's ``_name`` is."""
    if name == "apply_edge_detail":
        by_guide = {d: getattr(built, f"vosfx_apply_edge_detail_{t}") for d, t in GUIDES.items()}
        return functools.partial(_edge_detail, by_guide)
    if name == "blend_toward":
        return functools.partial(_blend_toward, built.vosfx_blend_toward)
    return functools.partial(_per_element, getattr(built, f"vosfx_{name}"))


def _edge_detail(
    by_guide: dict[np.dtype, Any],
    alpha: np.ndarray,
    guide: np.ndarray,
    coef: np.ndarray,
    gscale: float,
    wscale: float,
    threshold: float,
    out: np.ndarray,
    start: int,
    stop: int,
) -> None:
    done = by_guide[guide.dtype](
        alpha.ctypes.data,
        guide.ctypes.data,
        coef.ctypes.data,
        *alpha.shape,
        *coef.shape[:2],
        float(gscale),
        float(wscale),
        float(threshold),
        out.ctypes.data,
        start,
        stop,
    )
    if done != 0:
        raise MemoryError("the refinement's edge loop could not allocate its rows")


def _blend_toward(
    function: Any,
    alpha: np.ndarray,
    prev: np.ndarray,
    weight: np.ndarray,
    out: np.ndarray,
    start: int,
    stop: int,
) -> None:
    done = function(
        alpha.ctypes.data,
        prev.ctypes.data,
        weight.ctypes.data,
        *alpha.shape,
        *weight.shape,
        out.ctypes.data,
        start,
        stop,
    )
    if done != 0:
        raise MemoryError("the refinement's temporal blend could not allocate its rows")


def _per_element(function: Any, *args: Any) -> None:
    """A loop over pixels (or elements) one by one: their count (from the first array: its
    pixels where it is (h, w, c), else its elements), then the arrays by address and the
    numbers, in the numba loop's order."""
    first = args[0]
    count = first.size // first.shape[-1] if first.ndim == 3 else first.size
    function(count, *(a.ctypes.data if isinstance(a, np.ndarray) else float(a) for a in args))


__all__ = ["C_FLAGS", "GUIDES", "SOURCE", "library", "loop", "why_not"]

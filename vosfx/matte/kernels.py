"""The refiner's per-pixel loops, in C, or compiled with numba where C cannot be built.

The guided edge refinement (:mod:`vosfx.matte.guided`) was a chain of whole-frame OpenCV and
numpy passes: at 1080p with soft logits (the whole frame in the uncertain band) the upsampled
coefficients, their product with the frame and the sums were ~150 MB of memory traffic a frame,
35-50 ms on one core of the Intel Xeon kind, and the per-grid-cell algebra (the guide's
inverse covariance, the coefficients) some thirty numpy temporaries. Here each is one loop that
keeps its working set in registers and cache, so the cost no longer depends on how soft the
logits are (docs/benchmarks/render.md).

Each loop is written twice, with the same arithmetic in the same order (bit for bit the same
float32 results; tests/test_kernels.py holds them to it): in ``kernels.c``, built with the
system's C compiler on first use into ``<cache>/kernels`` and called through ctypes
(:mod:`vosfx.matte.c_loops`), and here in Python for numba. The C build is used wherever it
can be made (a C compiler on Linux, macOS or FreeBSD): loading numba's compiler takes a process
from ~10 to ~156 MiB resident (docs/benchmarks/render.md), the C library ~1 MiB. Elsewhere
(Windows, no compiler) numba compiles the Python loops once per machine into its cache. Either
is loaded on first use, so ``import vosfx`` stays light; :func:`implementation` says which. Every function takes and returns float32 arrays; the
guide may be uint8, uint16 or float32.

The two full-resolution loops (:func:`apply_edge_detail`, :func:`blend_toward`) take
``threads``: the frame is cut into bands of rows, one on the calling thread and the others on
a small shared pool, each band computed exactly as the whole frame would be (every output
pixel depends on its own inputs only), so the result is the same bit for bit. Python threads,
not numba's ``parallel=True``: the threading layer numba always has (workqueue) is not safe
to enter from several Python threads at once (the studio, the OFX worker and a render may each
refine), and both builds of these loops release the GIL (ctypes calls; numba's ``nogil``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from vosfx.cpus import usable_cores
from vosfx.matte import c_loops

_LOCK = threading.Lock()
_LOOPS: dict[str, Callable[..., Any]] = {}  # name -> the loop that runs (C or numba)
_NUMBA: dict[str, Callable[..., Any]] = {}  # name -> numba dispatcher, one per process
_WARM: list[threading.Thread] = []
# The row bands' pool: at most this many threads besides the caller's, made on first use.
MAX_THREADS = 8
_POOL: list[ThreadPoolExecutor] = []
# Bands are at least this many rows: below it a band's hand-off costs more than it saves
# (a 1080p band of 540 rows is ~1.5 ms of work; a pool hand-off is ~20-50 us).
MIN_BAND_ROWS = 128


def default_threads() -> int:
    """Threads for the refinement loops when none are asked for: the cores this process may
    run on, at most its share where a batch worker has one (:func:`vosfx.cpus.usable_cores`),
    and at most :data:`MAX_THREADS`."""
    return min(usable_cores(), MAX_THREADS)


def bands(height: int, threads: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) cutting ``height`` rows into at most ``threads`` near-equal
    bands of at least :data:`MIN_BAND_ROWS` rows (one band: the whole frame)."""
    n = max(1, min(int(threads), MAX_THREADS, height // MIN_BAND_ROWS))
    edges = [height * i // n for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n)]


if hasattr(os, "register_at_fork"):  # a forked child has none of the pool's threads
    os.register_at_fork(after_in_child=_POOL.clear)


def _pool() -> ThreadPoolExecutor:
    if _POOL:  # made already: no lock on the per-frame path
        return _POOL[0]
    with _LOCK:
        if not _POOL:
            _POOL.append(
                ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="vosfx-refine")
            )
        return _POOL[0]


def _in_bands(loop: Callable[..., Any], height: int, threads: int, *args: Any) -> None:
    """``loop(*args, start, stop)`` over the bands of :func:`bands`: the first on this
    thread, the others on the pool; returns when all are done (an error in any is raised;
    one in this thread's band first, not masked by the pool's)."""
    parts = bands(height, threads)
    futures: list[Future[Any]] = [_pool().submit(loop, *args, a, b) for a, b in parts[1:]]
    try:
        loop(*args, *parts[0])
    finally:
        wait(futures)  # no band outlives the call, whatever happened here
    for f in futures:
        f.result()


def _compiled(name: str) -> Callable[..., Any]:
    """The loop ``name`` as this process runs it: the C build's (:mod:`vosfx.matte.c_loops`)
    where the library is built or can be, else numba's (:func:`_numba_loop`). Made once per
    process."""
    loop = _LOOPS.get(name)
    if loop is None:
        with _LOCK:
            loop = _LOOPS.get(name)
            if loop is None:
                built = c_loops.library()
                loop = c_loops.loop(built, name) if built is not None else _numba_loop(name)
                _LOOPS[name] = loop
    return loop


def implementation() -> tuple[str, str]:
    """Which build of the loops runs in this process, built or loaded now where it is not yet:
    ``("C", the library's path)`` or ``("numba", why not C)``."""
    with _LOCK:
        built = c_loops.library()
    if built is not None:
        return "C", str(built._name)
    return "numba", str(c_loops.why_not())


def _numba_loop(name: str) -> Callable[..., Any]:
    """The numba dispatcher of this module's ``_name`` loop, made once per process (compiled or
    loaded from numba's cache on its first call, a second thread meanwhile waiting on numba's
    lock); cached on disk where numba finds a writable place, else compiled in memory."""
    loop = _NUMBA.get(name)
    if loop is None:
        import numba

        if not isinstance(globals()["_positions"], numba.core.dispatcher.Dispatcher):
            # the loops' shared helper, compiled before them (they call it)
            globals()["_positions"] = _jit(numba, _positions)
        loop = _NUMBA[name] = _jit(numba, globals()[f"_{name}"])
    return loop


def _jit(numba: Any, py: Callable[..., Any]) -> Callable[..., Any]:
    # error_model "numpy": a float division by zero gives inf/NaN as numpy's does instead of
    # a check per element that raises, so loops that divide are vectorized (the sigmoid's
    # 1 / (1 + e): 1.1 ms a 1080p frame instead of 5.4 on AMD Zen 3)
    options = {"nogil": True, "boundscheck": False, "error_model": "numpy"}
    try:
        return numba.njit(cache=True, **options)(py)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(cache=False, **options)(py)


def warm_up() -> threading.Thread:
    """Load every loop (the C build, or numba's for uint8 guides), or build them the first
    time on a machine, on a background thread, so that a job's first frame does not wait for
    it (the C build ~0.5 s to compile and ~1 ms to load; numba ~0.7 s where its loops are on
    disk, ~2 s where not). :class:`~vosfx.matte.refine.Refiner` starts it, once per process
    (later calls return the same thread); a loop called meanwhile waits for that loop only."""

    def run() -> None:
        f32 = np.zeros((2, 2), np.float32)
        low = np.zeros((2, 2, 3), np.float32)
        sums = guide_moments(low)
        inv = inverse_covariance(sums, 1e-3)
        edge_coefficients(alpha_moments(low, f32), low, inv)
        guide = np.zeros((2, 2, 3), np.uint8)
        coef = np.zeros((2, 2, 4), np.float32)
        apply_edge_detail(f32, guide, coef, 1.0, 4.0, 0.01, np.empty_like(f32))
        blend_toward(f32, f32, f32, np.empty_like(f32))
        sigmoid_from_exp(scale_and_clip(np.zeros(4, np.float32), 1.0, 0.0, 1.0))

    with _LOCK:
        if not _WARM:
            thread = threading.Thread(target=run, name="vosfx-kernels", daemon=True)
            thread.start()
            _WARM.append(thread)
        return _WARM[0]


def _f32(a: np.ndarray) -> np.ndarray:
    """``a`` as the loops take it: C-contiguous float32 (itself where it is already)."""
    return np.ascontiguousarray(a, dtype=np.float32)


def _writable(out: np.ndarray) -> bool:
    """Whether the loops can write into ``out`` as it is (else they write a new array that is
    then copied into it)."""
    return out.dtype == np.float32 and out.flags.c_contiguous and out.flags.writeable


def _expect(ok: bool, what: str, *arrays: np.ndarray) -> None:
    """ValueError naming what the loop takes and what it was given, unless ``ok``: the C
    build reads and writes by address, so a shape that does not fit is refused before."""
    if not ok:
        given = ", ".join(f"{a.dtype}{tuple(a.shape)}" for a in arrays)
        raise ValueError(f"{what}; given {given}")


def _positions(n_out, n_in):  # pragma: no cover - compiled by numba
    """Bilinear sampling positions, as cv2.resize's INTER_LINEAR: for each of ``n_out``
    outputs, the source samples (i0, i1) and the weight t of i1, where the source position is
    (X + 0.5)·n_in/n_out - 0.5, clamped to the border samples."""
    i0 = np.empty(n_out, np.int64)
    i1 = np.empty(n_out, np.int64)
    t = np.empty(n_out, np.float32)
    for k in range(n_out):
        f = (k + 0.5) * (n_in / n_out) - 0.5
        i = int(np.floor(f))
        frac = f - i
        if i < 0:
            i, frac = 0, 0.0
        if i >= n_in - 1:
            i, frac = n_in - 1, 0.0
        i0[k] = i
        i1[k] = min(i + 1, n_in - 1)
        t[k] = frac
    return i0, i1, t


def guide_moments(low: np.ndarray) -> np.ndarray:
    """(h, w, 9) float32 (r, g, b, rr, rg, rb, gg, gb, bb) per pixel of the (h, w, 3) float32
    guide ``low``: what the box filter averages into :func:`inverse_covariance`'s ``sums``."""
    low = _f32(low)
    _expect(low.ndim == 3 and low.shape[2] == 3, "guide_moments: low (h, w, 3)", low)
    out = np.empty((*low.shape[:2], 9), np.float32)
    _compiled("guide_moments")(low, out)
    return out


def _guide_moments(low, out):  # pragma: no cover - compiled by numba
    h, w, _ = low.shape
    for y in range(h):
        for x in range(w):
            r, g, b = low[y, x, 0], low[y, x, 1], low[y, x, 2]
            o = out[y, x]
            o[0], o[1], o[2] = r, g, b
            o[3], o[4], o[5] = r * r, r * g, r * b
            o[6], o[7], o[8] = g * g, g * b, b * b


def alpha_moments(low: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(h, w, 4) float32 (p, r·p, g·p, b·p) per pixel of the (h, w, 3) float32 guide ``low``
    and the (h, w) float32 alpha ``p``: what the box filter averages into
    :func:`edge_coefficients`' ``sums``."""
    low, p = _f32(low), _f32(p)
    _expect(low.ndim == 3 and low.shape == (*p.shape, 3), "alpha_moments: low (h, w, 3)", low, p)
    out = np.empty((*low.shape[:2], 4), np.float32)
    _compiled("alpha_moments")(low, p, out)
    return out


def _alpha_moments(low, p, out):  # pragma: no cover - compiled by numba
    h, w, _ = low.shape
    for y in range(h):
        for x in range(w):
            v = p[y, x]
            o = out[y, x]
            o[0] = v
            o[1], o[2], o[3] = low[y, x, 0] * v, low[y, x, 1] * v, low[y, x, 2] * v


def inverse_covariance(sums: np.ndarray, eps: float) -> np.ndarray:
    """(h, w, 6) float32 inverse of each window's colour covariance matrix plus ``eps`` on the
    diagonal, as (xx, xy, xz, yy, yz, zz) of the symmetric inverse.

    ``sums``: (h, w, 9) float32 window means of (r, g, b, rr, rg, rb, gg, gb, bb) of the
    guide (the box filter of the guide's channels and their products)."""
    sums = _f32(sums)
    _expect(sums.ndim == 3 and sums.shape[2] == 9, "inverse_covariance: sums (h, w, 9)", sums)
    out = np.empty((*sums.shape[:2], 6), np.float32)
    _compiled("inverse_covariance")(sums, np.float32(eps), out)
    return out


def _inverse_covariance(sums, eps, out):  # pragma: no cover - compiled by numba
    h, w, _ = sums.shape
    for y in range(h):
        for x in range(w):
            s = sums[y, x]
            mr, mg, mb = s[0], s[1], s[2]
            rr = s[3] - mr * mr + eps
            rg = s[4] - mr * mg
            rb = s[5] - mr * mb
            gg = s[6] - mg * mg + eps
            gb = s[7] - mg * mb
            bb = s[8] - mb * mb + eps
            # the adjugate over the determinant: the closed-form inverse of a 3x3 matrix
            i0 = gg * bb - gb * gb
            i1 = gb * rb - rg * bb
            i2 = rg * gb - gg * rb
            inv_det = np.float32(1.0) / (rr * i0 + rg * i1 + rb * i2)
            o = out[y, x]
            o[0] = i0 * inv_det
            o[1] = i1 * inv_det
            o[2] = i2 * inv_det
            o[3] = (rr * bb - rb * rb) * inv_det
            o[4] = (rg * rb - rr * gb) * inv_det
            o[5] = (rr * gg - rg * rg) * inv_det


def edge_coefficients(sums: np.ndarray, means: np.ndarray, inv_cov: np.ndarray) -> np.ndarray:
    """(h, w, 4) float32 (a_r, a_g, a_b, b) per window, before their own window average: the
    guided filter's least-squares slope ``a = Σ⁻¹ cov(I, p)`` and the offset ``b = -a·mean(I)``
    (its ``mean(p)`` term left out: the edge part only, :meth:`GuidePrep.coefficients`).

    ``sums``: (h, w, 4) window means of (p, r·p, g·p, b·p); ``means``: (h, w, 3) window means
    of the guide's (r, g, b); ``inv_cov``: (h, w, 6) from :func:`inverse_covariance`."""
    sums, means, inv_cov = _f32(sums), _f32(means), _f32(inv_cov)
    _expect(
        sums.ndim == 3
        and sums.shape[2] == 4
        and means.shape == (*sums.shape[:2], 3)
        and inv_cov.shape == (*sums.shape[:2], 6),
        "edge_coefficients: sums (h, w, 4), means (h, w, 3), inv_cov (h, w, 6)",
        sums,
        means,
        inv_cov,
    )
    out = np.empty((*sums.shape[:2], 4), np.float32)
    _compiled("edge_coefficients")(sums, means, inv_cov, out)
    return out


def _edge_coefficients(sums, means, inv_cov, out):  # pragma: no cover - compiled by numba
    h, w, _ = sums.shape
    for y in range(h):
        for x in range(w):
            s = sums[y, x]
            m = means[y, x]
            v = inv_cov[y, x]
            mp = s[0]
            cr = s[1] - m[0] * mp
            cg = s[2] - m[1] * mp
            cb = s[3] - m[2] * mp
            ar = v[0] * cr + v[1] * cg + v[2] * cb
            ag = v[1] * cr + v[3] * cg + v[4] * cb
            ab = v[2] * cr + v[4] * cg + v[5] * cb
            o = out[y, x]
            o[0] = ar
            o[1] = ag
            o[2] = ab
            o[3] = -(ar * m[0] + ag * m[1] + ab * m[2])


def apply_edge_detail(
    alpha: np.ndarray,
    guide: np.ndarray,
    coef: np.ndarray,
    guide_scale: float,
    weight_scale: float,
    threshold: float,
    out: np.ndarray,
    threads: int = 1,
) -> np.ndarray:
    """``out = clip(alpha + w·(a·I + b), 0, 1)`` where ``w = weight_scale·alpha·(1 - alpha)``
    exceeds ``threshold``, else ``alpha``; (a, b) are ``coef`` upsampled bilinearly with
    half-pixel centres (what ``cv2.resize`` gives) and ``I`` the guide times ``guide_scale``.

    ``alpha``: (H, W) float32; ``guide``: (H, W, 3) uint8 | uint16 | float32; ``coef``: (h, w,
    4) float32; ``out``: (H, W) float32, may be ``alpha`` itself. One pass over the frame,
    evaluating the detail only where the weight passes the threshold, in ``threads`` bands of
    rows (module doc). Returns ``out``."""
    if guide.dtype not in c_loops.GUIDES:
        guide = guide.astype(np.float32)
    alpha, guide, coef = _f32(alpha), np.ascontiguousarray(guide), _f32(coef)
    _expect(
        alpha.ndim == 2
        and guide.shape == (*alpha.shape, 3)
        and coef.ndim == 3
        and coef.shape[2] == 4
        and (coef.shape[0] > 0 and coef.shape[1] > 0 or alpha.size == 0)
        and out.shape == alpha.shape,
        "apply_edge_detail: alpha (H, W), guide (H, W, 3), coef (h, w, 4) not empty, out (H, W)",
        alpha,
        guide,
        coef,
        out,
    )
    into = out if _writable(out) else np.empty(alpha.shape, np.float32)
    _in_bands(
        _compiled("apply_edge_detail"),
        alpha.shape[0],
        threads,
        alpha,
        guide,
        coef,
        np.float32(guide_scale),
        np.float32(weight_scale),
        np.float32(threshold),
        into,
    )
    if into is not out:
        out[...] = into
    return out


def _apply_edge_detail(  # pragma: no cover - compiled by numba
    alpha, guide, coef, gscale, wscale, threshold, out, start, stop
):
    big_h, big_w = alpha.shape
    h, w, _ = coef.shape
    one, zero = np.float32(1.0), np.float32(0.0)
    x0, x1, tx = _positions(big_w, w)
    y0, y1, ty = _positions(big_h, h)
    row = np.empty((w, 4), np.float32)  # this output row's coefficients, vertically sampled
    for yy in range(start, stop):
        i, j, t_y = y0[yy], y1[yy], ty[yy]
        for x in range(w):
            for c in range(4):
                row[x, c] = coef[i, x, c] + t_y * (coef[j, x, c] - coef[i, x, c])
        a_row, g_row, o_row = alpha[yy], guide[yy], out[yy]
        for xx in range(big_w):
            a = a_row[xx]
            wt = wscale * a * (one - a)
            if wt > threshold:
                k0, k1, t = x0[xx], x1[xx], tx[xx]
                d = zero
                for c in range(3):
                    ac = row[k0, c] + t * (row[k1, c] - row[k0, c])
                    d += ac * (np.float32(g_row[xx, c]) * gscale)
                d += row[k0, 3] + t * (row[k1, 3] - row[k0, 3])
                o_row[xx] = min(max(a + wt * d, zero), one)
            else:
                o_row[xx] = a


def scale_and_clip(x: np.ndarray, scale: float, shift: float, limit: float) -> np.ndarray:
    """``x = clip(scale·x + shift, -limit, limit)`` in place, one pass (float32 arithmetic;
    ``scale`` 1 and ``shift`` 0 leave the values as they are before the clip). ``x``:
    C-contiguous float32, any shape. Returns ``x``."""
    _expect(_writable(x), "scale_and_clip: x writable C-contiguous float32", x)
    _compiled("scale_and_clip")(
        x.reshape(-1), np.float32(scale), np.float32(shift), np.float32(limit)
    )
    return x


def _scale_and_clip(x, scale, shift, limit):  # pragma: no cover - compiled by numba
    for i in range(x.size):
        x[i] = min(max(scale * x[i] + shift, -limit), limit)


def sigmoid_from_exp(e: np.ndarray) -> np.ndarray:
    """``e = 1 / (1 + e)`` in place, one pass, where ``e`` holds ``exp(-z)``: the sigmoid
    of ``z``; 0 exactly where ``e >= 2^24`` (the sigmoid is below 2^-24 there: nothing an
    output codes, and no subnormal numbers for the passes after it). ``e``: C-contiguous
    float32 >= 0, any shape. Returns ``e``."""
    _expect(_writable(e), "sigmoid_from_exp: e writable C-contiguous float32", e)
    _compiled("sigmoid_from_exp")(e.reshape(-1))
    return e


def _sigmoid_from_exp(e):  # pragma: no cover - compiled by numba
    one, zero, big = np.float32(1.0), np.float32(0.0), np.float32(2.0**24)
    for i in range(e.size):
        v = e[i]
        e[i] = one / (one + v) if v < big else zero


def blend_toward(
    alpha: np.ndarray, prev: np.ndarray, weight: np.ndarray, out: np.ndarray, threads: int = 1
) -> np.ndarray:
    """``out = alpha + w·(prev - alpha)``, ``w`` the small (h, w) float32 grid ``weight``
    upsampled bilinearly with half-pixel centres (what ``cv2.resize`` gives), in one pass:
    the temporal filter's step (:mod:`vosfx.matte.temporal`) without a full-resolution weight
    plane. ``alpha``, ``prev``, ``out``: (H, W) float32 (``out`` may be ``alpha``); in
    ``threads`` bands of rows (module doc). Returns ``out``."""
    alpha, prev, weight = _f32(alpha), _f32(prev), _f32(weight)
    _expect(
        alpha.ndim == 2
        and prev.shape == out.shape == alpha.shape
        and weight.ndim == 2
        and (weight.size > 0 or alpha.size == 0),
        "blend_toward: alpha, prev, out (H, W), weight (h, w) not empty",
        alpha,
        prev,
        weight,
        out,
    )
    into = out if _writable(out) else np.empty(alpha.shape, np.float32)
    _in_bands(_compiled("blend_toward"), alpha.shape[0], threads, alpha, prev, weight, into)
    if into is not out:
        out[...] = into
    return out


def _blend_toward(alpha, prev, weight, out, start, stop):  # pragma: no cover - compiled by numba
    big_h, big_w = alpha.shape
    h, w = weight.shape
    x0, x1, tx = _positions(big_w, w)
    y0, y1, ty = _positions(big_h, h)
    row = np.empty(w, np.float32)
    for yy in range(start, stop):
        i, j, t_y = y0[yy], y1[yy], ty[yy]
        for x in range(w):
            row[x] = weight[i, x] + t_y * (weight[j, x] - weight[i, x])
        a_row, p_row, o_row = alpha[yy], prev[yy], out[yy]
        for xx in range(big_w):
            k0 = x0[xx]
            wt = row[k0] + tx[xx] * (row[x1[xx]] - row[k0])
            a = a_row[xx]
            o_row[xx] = a + wt * (p_row[xx] - a)

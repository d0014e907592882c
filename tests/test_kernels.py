"""The refiner's per-pixel loops (vosfx/matte/kernels.py): the C build (kernels.c) gives the
numba build's float32 results bit for bit, on every loop, guide type and shape the refiner
meets (and the odd values: NaN, infinities, signed zeros); it is the one that runs where a C
compiler is, without loading numba; without one, numba runs and says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vosfx import native
from vosfx.matte import c_loops, kernels


@pytest.fixture(scope="module")
def c_build():
    library = c_loops.library()
    if library is None:
        pytest.skip(f"no C build of the loops here: {kernels.implementation()[1]}")
    return library


def _both(library, name):
    return c_loops.loop(library, name), kernels._numba_loop(name)


def _odd(rng: np.random.Generator, shape, scale=1.0) -> np.ndarray:
    """Random float32 values with some NaN, infinities, zeros of both signs and subnormals."""
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    flat = a.reshape(-1)
    picks = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
    odd = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-42, -1e-42], np.float32)
    flat[picks] = odd[np.arange(picks.size) % odd.size]
    return a


def _same(c_out: np.ndarray, numba_out: np.ndarray) -> None:
    # bit for bit, the sign of every zero included; NaN where NaN (a NaN's sign and payload
    # follow which operand the CPU's instruction saw first, which IEEE 754 leaves open)
    assert c_out.dtype == numba_out.dtype and c_out.shape == numba_out.shape
    nan = np.isnan(c_out)
    np.testing.assert_array_equal(nan, np.isnan(numba_out))
    np.testing.assert_array_equal(c_out.view(np.uint32)[~nan], numba_out.view(np.uint32)[~nan])


@pytest.mark.parametrize("shape", [(1, 1), (37, 25), (270, 480), (3, 701)])
def test_the_per_cell_loops_give_numba_s_bits(c_build, shape):
    rng = np.random.default_rng(sum(shape))
    low = np.abs(_odd(rng, (*shape, 3)))
    p = _odd(rng, shape)
    sums9 = _odd(rng, (*shape, 9))
    sums4 = _odd(rng, (*shape, 4))
    inv = _odd(rng, (*shape, 6))
    cases = [
        ("guide_moments", (low,), 9),
        ("alpha_moments", (low, p), 4),
        ("inverse_covariance", (sums9, np.float32(1e-3)), 6),
        ("edge_coefficients", (sums4, low, inv), 4),
    ]
    for name, args, channels in cases:
        c, nb = _both(c_build, name)
        got, want = (np.full((*shape, channels), 7.0, np.float32) for _ in range(2))
        c(*args, got)
        nb(*args, want)
        _same(got, want)


@pytest.mark.parametrize("guide_type", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(
    ("frame", "grid"),
    [((131, 203), (37, 25)), ((50, 60), (80, 90)), ((1, 1), (1, 1)), ((270, 480), (270, 480))],
)
def test_the_edge_loop_gives_numba_s_bits(c_build, guide_type, frame, grid):
    # upsampled grids (the refiner's case), downsampled ones, one pixel, the same size; over
    # the whole frame and over a band of rows in the middle
    rng = np.random.default_rng(frame[0] * 7 + grid[1])
    alpha = np.clip(_odd(rng, frame, 0.5) + 0.5, -0.1, 1.1).astype(np.float32)
    alpha.reshape(-1)[:3] = np.array([np.nan, 0.5, -0.0], np.float32)[: alpha.size]
    top = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[guide_type]
    guide = (rng.random((*frame, 3)) * top).astype(guide_type)
    coef = (rng.random((*grid, 4)) * 0.4 - 0.2).astype(np.float32)
    coef.reshape(-1)[:2] = (np.inf, np.nan)  # the grid's first cell (4 values)
    args = (alpha, guide, coef, np.float32(1 / top), np.float32(4.0), np.float32(0.01))
    c, nb = _both(c_build, "apply_edge_detail")
    for start, stop in ((0, frame[0]), (frame[0] // 3, frame[0] - frame[0] // 4)):
        got, want = (np.full(frame, 3.0, np.float32) for _ in range(2))
        c(*args, got, start, stop)
        nb(*args, want, start, stop)
        _same(got, want)
        assert (got[:start] == 3.0).all() and (got[stop:] == 3.0).all()  # its rows alone


@pytest.mark.parametrize(("frame", "grid"), [((131, 203), (37, 25)), ((40, 30), (64, 48))])
def test_the_temporal_blend_gives_numba_s_bits(c_build, frame, grid):
    rng = np.random.default_rng(frame[1])
    alpha, prev = _odd(rng, frame), _odd(rng, frame)
    weight = np.abs(_odd(rng, grid))
    c, nb = _both(c_build, "blend_toward")
    for start, stop in ((0, frame[0]), (5, frame[0] - 7)):
        got, want = (np.full(frame, 3.0, np.float32) for _ in range(2))
        c(alpha, prev, weight, got, start, stop)
        nb(alpha, prev, weight, want, start, stop)
        _same(got, want)


def test_the_logit_loops_give_numba_s_bits(c_build):
    rng = np.random.default_rng(3)
    x = _odd(rng, 4099, 40.0)
    for scale, shift, limit in ((1.0, 0.0, 80.0), (3.5, -1.75, 80.0), (-2.0, 0.5, 1.0)):
        c, nb = _both(c_build, "scale_and_clip")
        got, want = x.copy(), x.copy()
        c(got, np.float32(scale), np.float32(shift), np.float32(limit))
        nb(want, np.float32(scale), np.float32(shift), np.float32(limit))
        _same(got, want)
    e = np.abs(_odd(rng, 4099, 1e6))
    e[:4] = (2.0**24, np.nextafter(np.float32(2.0**24), np.float32(0)), 0.0, np.inf)
    c, nb = _both(c_build, "sigmoid_from_exp")
    got, want = e.copy(), e.copy()
    c(got)
    nb(want)
    _same(got, want)
    assert got[0] == 0.0 and got[1] > 0.0 and got[2] == 1.0 and got[3] == 0.0


def test_the_public_loops_take_any_layout_and_refuse_shapes_that_do_not_fit(c_build):
    rng = np.random.default_rng(9)
    alpha = rng.random((64, 96), dtype=np.float32)
    guide = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    coef = (rng.random((16, 24, 4)) * 0.4 - 0.2).astype(np.float32)
    args = (1 / 255, 4.0, 0.01)
    want = kernels.apply_edge_detail(alpha, guide, coef, *args, np.empty_like(alpha))
    # a transposed (Fortran-order) alpha and guide and a strided out: the same values
    out = np.zeros((64, 192), np.float32)[:, ::2]
    got = kernels.apply_edge_detail(
        np.asfortranarray(alpha), np.asfortranarray(guide), coef, *args, out
    )
    assert got is out
    np.testing.assert_array_equal(out, want)
    # an int32 guide is taken as float32, as numba would read it
    wide = kernels.apply_edge_detail(
        alpha, guide.astype(np.int32), coef, *args, np.empty_like(alpha)
    )
    np.testing.assert_array_equal(wide, want)
    with pytest.raises(
        ValueError, match=r"apply_edge_detail: .* given float32\(64, 96\), uint8\(64, 95, 3\)"
    ):
        kernels.apply_edge_detail(alpha, guide[:, :95], coef, *args, np.empty_like(alpha))
    with pytest.raises(ValueError, match="coef .h, w, 4. not empty"):  # nothing to sample
        kernels.apply_edge_detail(alpha, guide, coef[:0], *args, np.empty_like(alpha))
    with pytest.raises(ValueError, match="weight .h, w. not empty"):
        kernels.blend_toward(alpha, alpha, coef[:, :0, 0], np.empty_like(alpha))
    empty = np.zeros((0, 96), np.float32)  # no rows: nothing to do, nothing read
    assert kernels.blend_toward(empty, empty, coef[:0, :, 0], np.empty_like(empty)).shape == (0, 96)
    with pytest.raises(ValueError, match="blend_toward"):
        kernels.blend_toward(alpha, alpha[:10], coef[..., 0], np.empty_like(alpha))
    with pytest.raises(ValueError, match="scale_and_clip: x writable C-contiguous float32"):
        kernels.scale_and_clip(np.zeros(8), 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="sigmoid_from_exp"):
        kernels.sigmoid_from_exp(np.zeros((4, 4), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="inverse_covariance"):
        kernels.inverse_covariance(np.zeros((4, 4, 6), np.float32), 1e-3)


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from vosfx.matte import kernels
    kernels.warm_up().join()
    low = np.random.default_rng(0).random((4, 5, 3), dtype=np.float32)
    ok = bool(np.allclose(kernels.guide_moments(low)[..., 3], low[..., 0] ** 2))
    print(json.dumps({"implementation": kernels.implementation(), "numba": "numba" in
        sys.modules, "ok": ok}))
    """
)


def _child(env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_where_c_builds_the_loops_run_without_numba(tmp_path):
    if native.compiler() is None or not sys.platform.startswith(("linux", "darwin")):
        pytest.skip("no C compiler here")
    env = {**os.environ, "VOSFX_HOME": str(tmp_path)}
    got = _child(env)
    (built,) = (tmp_path / "kernels").glob("kernels-*.so")
    assert got == {"implementation": ["C", str(built)], "numba": False, "ok": True}
    stamp = built.stat().st_mtime_ns
    assert _child(env)["implementation"] == ["C", str(built)]  # loaded, not built again
    assert built.stat().st_mtime_ns == stamp


def test_without_a_compiler_numba_runs_and_says_why(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k != "CC"},
        "VOSFX_HOME": str(tmp_path),
        "PATH": str(tmp_path / "empty"),
    }
    got = _child(env)
    assert got == {
        "implementation": ["numba", "no C compiler found ($CC, cc, gcc, clang)"],
        "numba": True,
        "ok": True,
    }
    assert not (tmp_path / "kernels").exists()

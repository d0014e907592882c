"""The int8 attention kernel (vosfx/engine/int8_attention.py, kernels/int8_attention.c): the
arithmetic of the bf16 tier's int8 scores without a score matrix, its build on first use, and
its node in OpenVINO graphs."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vosfx import native
from vosfx.engine import int8_attention as ia


def _kernel_or_skip() -> None:
    why = ia.why_unavailable()
    if why is not None:
        pytest.skip(f"the int8 attention kernel cannot run here: {why}")


# the keys of a chunk (kernels/int8_attention.c's CHUNK): its exponentials are rounded to
# uint8 against their own maximum
CHUNK = 256


def _balance(queries, keys) -> np.ndarray:
    """Each channel's power of two: the nearest to the square root of the keys' largest
    magnitude over the queries' (each at least 1e-30), within 2^-10 and 2^10."""
    ratio = np.maximum(np.abs(keys).max(0), 1e-30) / np.maximum(np.abs(queries).max(0), 1e-30)
    return 2.0 ** np.clip(np.floor(0.5 * np.log2(ratio) + 0.5), -10, 10)


def _emulated(q, k, v, scale: float, blocks: int, balanced: bool = True) -> np.ndarray:
    """The kernel's arithmetic in numpy, float64 where it keeps float32: the keys less their
    mean; each channel of the scaled queries times its power of two (:func:`_balance`), the
    keys' divided by it; the keys int8 at one scale, each query block at its own; a chunk's
    exponentials against its maximum as uint8 (x 255) and the values int8 per channel for
    their product (:func:`_values8`), each chunk weighed by its maximum's exponential; the
    sum over the exponentials unrounded. ``balanced=False``: the arithmetic before the
    forty-second pass."""
    rows = len(q)
    blocks = min(blocks, rows)
    keys = k.astype(np.float64) - k.astype(np.float64).mean(0)
    queries = q.astype(np.float64) * scale
    power = _balance(queries, keys) if balanced else np.ones(q.shape[1])
    queries, keys = queries * power, keys / power
    key_step = max(np.abs(keys).max(), 1e-30) / 127
    k8 = np.rint(keys / key_step)
    n, extra = divmod(rows, blocks)
    q8, row_step = np.zeros(q.shape), np.zeros(rows)
    first = 0
    for b in range(blocks):
        count = n + (b < extra)
        part = queries[first : first + count]
        top = max(np.abs(part).max(), 1e-30)
        q8[first : first + count] = np.rint(part * 127 / top)
        row_step[first : first + count] = top / 127
        first += count
    s = (q8 @ k8.T) * row_step[:, None] * key_step
    top = s.max(1, keepdims=True)
    pad = (-len(k)) % CHUNK
    chunks = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf).reshape(rows, -1, CHUNK)
    high = chunks.max(2, keepdims=True)  # (rows, chunks, 1)
    p8 = np.rint(np.exp(chunks - high) * 255)
    v8, v_step, v_shift = _values8(v)
    v8 = np.pad(v8, ((0, pad), (0, 0))).reshape(-1, CHUNK, v.shape[1])
    sums = np.einsum("rck,ckd->rcd", p8, v8)  # each chunk's int32 sums
    weight = np.exp(high - top[:, :, None]) / 255
    return (weight * sums).sum(1) * v_step / np.exp(s - top).sum(1, keepdims=True) + v_shift


def _values8(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's int8 values (float32 where it computes in float32): each channel less its
    midrange over the keys, over its half range / 127; (the int8 values, the steps, the
    midranges)."""
    least, largest = v.min(0), v.max(0)
    half = np.float32(0.5)
    shift = half * least + half * largest
    step = np.maximum(half * largest - half * least, np.float32(1e-30)) / np.float32(127)
    return np.rint((v - shift) / step).astype(np.float64), step.astype(np.float64), shift


def _exact(q, k, v, scale: float) -> np.ndarray:
    s = (q.astype(np.float64) * scale) @ k.T.astype(np.float64)
    e = np.exp(s - s.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)) @ v.astype(np.float64)


def _case(
    rng,
    rows: int,
    keys: int,
    channels: int,
    offset: float = 0.0,
    spread: float = 1.0,
    depth: int = 256,
):
    q = (spread * rng.standard_normal((rows, depth))).astype(np.float32)
    k = (rng.standard_normal((keys, depth)) + offset).astype(np.float32)
    v = rng.standard_normal((keys, channels)).astype(np.float32)
    return q, k, v


@pytest.mark.parametrize(
    "rows,keys,depth,channels,blocks",
    [
        (1, 1, 256, 64, 8),  # one query, one key: the blocks capped at the rows
        (13, 3, 256, 64, 8),  # rows and keys off every tile and chunk
        (100, 300, 256, 128, 8),
        (48, 256, 256, 64, 1),  # exactly one group and one chunk
        (97, 1000, 256, 256, 3),  # several chunks; 256 channels (memory attention's self)
        (70, 600, 96, 96, 8),  # Hiera's global attention's heads (96: a tile of 64 and 32)
        (30, 200, 60, 48, 2),  # depth off 16 (its last 12 channels masked), 48 channels
        (20, 90, 4, 16, 1),  # the smallest depth and channels
        (25, 40, 512, 16, 5),  # the largest depth
    ],
)
def test_the_kernel_computes_its_arithmetic(rows, keys, depth, channels, blocks):
    """Against the same quantisation in numpy the kernel differs by rounding only (float32
    sums, the order of its running maximum), and against the exact attention by int8's."""
    _kernel_or_skip()
    rng = np.random.default_rng(rows * 7 + keys)
    q, k, v = _case(rng, rows, keys, channels, spread=3.0, depth=depth)
    scale = depth**-0.5
    got = ia.attention(q, k, v, scale, blocks=blocks, threads=2)
    assert got.shape == (rows, channels) and got.dtype == np.float32
    emulated, exact = _emulated(q, k, v, scale, blocks), _exact(q, k, v, scale)
    err = np.abs(got - emulated)
    # where float32 and float64 round an exponential x 255 to different sides of a half, one
    # key's weight moves by a uint8 step: |v| <= 5.1 / 255 = 0.02 at most (measured max 0.012,
    # in 1 of the cases; mean <= 2e-6)
    assert err.max() < 0.025 and err.mean() < 1e-4, (err.max(), err.mean())
    # int8 scores and values: measured max 0.028-0.10, mean 0.005-0.0095 from the exact attention
    off = np.abs(got - exact)
    assert off.max() < 0.15 and off.mean() < 0.02, (off.max(), off.mean())
    if keys > 1:  # (one key: its values are each their channel's largest, exact in int8)
        assert off.mean() > err.mean()  # the quantisation, not the kernel, is what differs


def test_the_running_maximum_rescales_what_was_summed():
    """Scores rising chunk after chunk (each chunk's maximum above the last, so every chunk
    rescales the rows' sums) and a peaked attention (one key far above the rest, in the last
    chunk) give the attention the emulation gives."""
    _kernel_or_skip()
    rng = np.random.default_rng(5)
    rows, keys = 60, 1200
    q = np.ones((rows, 256), np.float32) + 0.1 * rng.standard_normal((rows, 256)).astype(np.float32)
    k = (np.linspace(-1, 1, keys)[:, None] * np.ones(256)).astype(np.float32)
    k += 0.05 * rng.standard_normal(k.shape).astype(np.float32)
    v = rng.standard_normal((keys, 64)).astype(np.float32)
    for scale in (0.01, 0.1):  # flat, then peaked (scores spanning ~50 at 0.1)
        got = ia.attention(q, k, v, scale, blocks=4, threads=2)
        want = _emulated(q, k, v, scale, 4)
        np.testing.assert_allclose(got, want, atol=0.01)
    peak = v[-1]
    k[-1] = 4.0  # the last key: scores ~1,000 above the others
    got = ia.attention(q, k, v, 0.1, blocks=4, threads=2)
    np.testing.assert_allclose(got, np.broadcast_to(peak, got.shape), atol=0.02)


@pytest.mark.parametrize("factor", [8.0, 30.0, 100.0])
def test_channels_scaled_against_each_other_keep_their_precision(factor):
    """Channels of the queries multiplied by ``factor`` (or a third of it, or divided by it)
    and the keys' same channels divided by it leave the attention as it was; the kernel's
    balancing takes the factors back out (to a power of two), so its error stays the
    isotropic operands' (measured 0.072-0.103 max either way), where int8 at one scale per
    side would lose the other channels' steps to the outliers (emulated: 0.37 at 8x, 1.8-2.6
    at 30x and 100x)."""
    _kernel_or_skip()
    rng = np.random.default_rng(int(factor))
    q, k, v = _case(rng, 96, 1000, 64, spread=3.0, depth=128)
    scale = 128**-0.5
    s = np.ones(128, np.float32)
    s[5], s[9], s[17] = factor, 1 / factor, factor / 3
    iso = np.abs(ia.attention(q, k, v, scale, blocks=4, threads=2) - _exact(q, k, v, scale)).max()
    q2, k2 = q * s, k / s
    exact = _exact(q2, k2, v, scale)
    got = ia.attention(q2, k2, v, scale, blocks=4, threads=2)
    np.testing.assert_allclose(got, _emulated(q2, k2, v, scale, 4), atol=0.025)
    assert np.abs(got - exact).max() < 1.5 * iso
    unbalanced = np.abs(_emulated(q2, k2, v, scale, 4, balanced=False) - exact).max()
    assert unbalanced > 3 * iso  # what the test would see without the balancing


def test_values_far_from_zero_keep_the_steps_of_their_range():
    """Values 100x their spread away from 0 (an offset a channel may carry) lose each
    channel's midrange before int8, so the attention's error stays the centred values'
    (measured 0.087 either way; int8 steps of their magnitude, as before the forty-sixth
    pass: 2.6 against 0.091)."""
    _kernel_or_skip()
    rng = np.random.default_rng(4)
    q, k, v = _case(rng, 96, 2000, 64, spread=3.0)
    scale = 256**-0.5
    centred = np.abs(ia.attention(q, k, v, scale, blocks=4, threads=2) - _exact(q, k, v, scale))
    far = v + np.float32(100)
    got = ia.attention(q, k, far, scale, blocks=4, threads=2)
    assert np.abs(got - _exact(q, k, far, scale)).max() < 1.5 * centred.max()


def test_keys_offset_zero_queries_and_equal_keys():
    """Keys sharing a large offset in every channel lose it (their mean) before quantising;
    all-zero queries and keys all equal give the values' mean, not NaN."""
    _kernel_or_skip()
    rng = np.random.default_rng(9)
    q, k, v = _case(rng, 30, 500, 64, offset=40.0, spread=3.0)
    got = ia.attention(q, k, v, 256**-0.5, blocks=8, threads=2)
    # measured: max 0.12 (mean 0.009) off the exact attention, as without the offset
    assert np.abs(got - _exact(q, k, v, 256**-0.5)).max() < 0.2
    mean = v.astype(np.float64).mean(0)
    zero = ia.attention(np.zeros_like(q), k, v, 0.0625, blocks=8, threads=2)
    equal = ia.attention(q, np.ones_like(k), v, 0.0625, blocks=8, threads=2)
    for got in (zero, equal):
        assert np.isfinite(got).all()
        # the exponentials all 1 (uint8-exact: 255), the values rounded to int8 per channel
        v8, step, shift = _values8(v)
        rounded = (v8 * step).mean(0) + shift
        np.testing.assert_allclose(got, np.broadcast_to(rounded, got.shape), atol=1e-5)
        np.testing.assert_allclose(got, np.broadcast_to(mean, got.shape), atol=0.01)


def test_threads_change_nothing_but_the_time():
    """A row's result does not depend on how many threads share the rows (each group of rows
    is one thread's), whether the kernel starts 1, 2 or more threads than CPUs."""
    _kernel_or_skip()
    rng = np.random.default_rng(2)
    q, k, v = _case(rng, 200, 700, 64, spread=2.0)
    one = ia.attention(q, k, v, 0.0625, blocks=8, threads=1)
    for threads in (2, 5):
        np.testing.assert_array_equal(ia.attention(q, k, v, 0.0625, blocks=8, threads=threads), one)


def test_inputs_it_does_not_take_are_refused():
    _kernel_or_skip()
    rng = np.random.default_rng(0)
    q, k, v = _case(rng, 4, 5, 64)
    with pytest.raises(ValueError, match=r"found \(4, 6\)"):  # depth not a multiple of 4
        ia.attention(q[:, :6], k[:, :6], v, 0.1, blocks=1, threads=1)
    wide = np.zeros((4, 516), np.float32)
    with pytest.raises(ValueError, match=r"found \(4, 516\)"):  # depth over 512
        ia.attention(wide, np.zeros((5, 516), np.float32), v, 0.1, blocks=1, threads=1)
    with pytest.raises(ValueError, match="v \\(keys, 16n\\)"):
        ia.attention(q, k, v[:, :40], 0.1, blocks=1, threads=1)
    with pytest.raises(ValueError, match="v \\(keys, 16n\\)"):
        ia.attention(q, k[:4], v, 0.1, blocks=1, threads=1)
    with pytest.raises(ValueError, match="out: expected C-contiguous float32"):
        ia.attention(q, k, v, 0.1, blocks=1, threads=1, out=np.empty((4, 64), np.float64))
    with pytest.raises(ValueError, match="takes 2-D q, k, v"):
        ia.attention(q[None], k[None], v[None], 0.1, blocks=1, threads=1)
    assert ia.takes(256, 64) and ia.takes(96, 96) and ia.takes(4, 16) and ia.takes(512, 16)
    assert not ia.takes(98, 64) and not ia.takes(516, 64) and not ia.takes(256, 40)
    assert not ia.takes(0, 64) and not ia.takes(256, 0)


def test_without_a_compiler_or_with_a_broken_source_it_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("VOSFX_HOME", str(tmp_path))
    ia.library.cache_clear()
    try:
        monkeypatch.setenv("CC", "no-such-compiler")
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        assert ia.why_unavailable() == "no C compiler found ($CC, cc, gcc, clang)"
        monkeypatch.undo()
        monkeypatch.setenv("VOSFX_HOME", str(tmp_path))
        if native.compiler() is None:
            pytest.skip("no C compiler here")
        broken = tmp_path / "broken.c"
        broken.write_text("int vosfx_int8_attention(void) { return }\n")
        monkeypatch.setattr(ia, "SOURCE", broken)
        ia.library.cache_clear()
        why = ia.why_unavailable()
        assert why is not None and why.startswith(f"{native.compiler()} could not compile broken.c")
        assert not list((tmp_path / "kernels").glob("*.so"))  # nothing half-written left
    finally:
        ia.library.cache_clear()


def test_the_kernel_runs_with_every_cpu_of_a_pinned_thread():
    """OpenVINO pins the thread running a graph to one CPU; the kernel's threads inherit its
    mask, so the call widens it to the process's CPUs and puts the pin back after."""
    if not hasattr(os, "sched_setaffinity") or ia.cpu_count() < 2 or ia._ALLOWED is None:
        pytest.skip("needs Linux's CPU affinity and two CPUs")
    first = min(ia._ALLOWED)
    os.sched_setaffinity(0, {first})
    try:
        assert ia.with_every_cpu(os.sched_getaffinity, 0) == set(ia._ALLOWED)
        assert os.sched_getaffinity(0) == {first}
    finally:
        os.sched_setaffinity(0, ia._ALLOWED)


def _sdpa_model(depth: int, channels: int, causal: bool = False):
    import openvino as ov
    import openvino.opset13 as ops

    q = ops.parameter([1, 1, -1, depth], np.float32, name="q")
    k = ops.parameter([1, 1, -1, depth], np.float32, name="k")
    v = ops.parameter([1, 1, -1, channels], np.float32, name="v")
    out = ops.scaled_dot_product_attention(q, k, v, causal=causal)
    return ov.Model([ops.relu(out)], [q, k, v])


def test_fused_int8_attention_puts_the_kernel_in_the_graph():
    """Each attention the kernel takes becomes one node that OpenVINO's CPU plugin runs (its
    result that of the kernel called directly); a causal one and one of other channels stay."""
    pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    _kernel_or_skip()
    import openvino as ov

    from vosfx.engine.openvino_attention import fused_int8_attention

    model = _sdpa_model(256, 64)
    assert fused_int8_attention(model, 8, 2) == 1
    kinds = [op.get_type_name() for op in model.get_ordered_ops()]
    assert "Int8Attention" in kinds and "ScaledDotProductAttention" not in kinds
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    rng = np.random.default_rng(4)
    q, k, v = _case(rng, 50, 333, 64, spread=2.0)
    got = compiled([q[None, None], k[None, None], v[None, None]])[compiled.outputs[0]]
    want = np.maximum(ia.attention(q, k, v, 256**-0.5, blocks=8, threads=2), 0)
    np.testing.assert_array_equal(got[0, 0], want)
    # several objects and heads (Hiera's 4): each (object, head) its own attention
    batched = _sdpa_model(96, 96)
    batched.reshape({"q": [2, 3, 40, 96], "k": [2, 3, 70, 96], "v": [2, 3, 70, 96]})
    assert fused_int8_attention(batched, 4, 2) == 1
    compiled = ov.Core().compile_model(batched, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    q, k, v = (rng.standard_normal((2, 3, n, 96)).astype(np.float32) for n in (40, 70, 70))
    got = compiled([q, k, v])[compiled.outputs[0]]
    assert got.shape == (2, 3, 40, 96)
    for b in range(2):
        for h in range(3):
            want = ia.attention(q[b, h], k[b, h], v[b, h], 96**-0.5, blocks=4, threads=2)
            np.testing.assert_array_equal(got[b, h], np.maximum(want, 0))
    # fewer queries than asked, or a count of them not known: left alone
    few = _sdpa_model(256, 64)
    assert fused_int8_attention(few, 8, 2, smallest_queries=2) == 0  # dynamic
    few.reshape({"q": [1, 1, 100, 256]})
    assert fused_int8_attention(few, 8, 2, smallest_queries=101) == 0
    assert fused_int8_attention(few, 8, 2, smallest_queries=100) == 1
    # left alone: a causal attention, queries of 6 channels, values of 40
    for model in (_sdpa_model(256, 64, causal=True), _sdpa_model(6, 64), _sdpa_model(256, 40)):
        assert fused_int8_attention(model, 8, 2) == 0

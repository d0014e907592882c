"""The bf16 tier's attentions on CPUs with AMX (vosfx/engine/amx_attention.py): the int16
kernel's AMX form in bfloat16 alone, its node in OpenVINO graphs and the conditions under
which the tier takes it. The tile instructions are emulated (no AMX CPU here)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from vosfx.engine import amx_attention as aa
from vosfx.engine import int16_attention as ka


def _emulated_or_skip() -> None:
    why = ka.why_unavailable(worth_it=False)
    if why is None and not ka.supported("avx512"):
        why = "this CPU lacks AVX512_VNNI"
    if why is None:
        try:
            ka.library(emulated=True)
        except ka.Unavailable as err:
            why = str(err)
    if why is not None:
        pytest.skip(f"the int16 kernel's emulated AMX form cannot run here: {why}")


def _bf16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even), as float64."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return (rounded << np.uint32(16)).view(np.float32).astype(np.float64)


def _exact(q, k, v, scale: float) -> np.ndarray:
    s = (q.astype(np.float64) @ k.T.astype(np.float64)) * scale
    e = np.exp(s - s.max(1, keepdims=True))
    return (e @ v.astype(np.float64)) / e.sum(1, keepdims=True)


def _emulated(q, k, v, scale: float) -> np.ndarray:
    """The form's arithmetic in numpy (float64 where it sums in float32): the keys less their
    mean, each channel balanced by the kernel's power of two, queries and keys rounded to
    bfloat16; the exponentials and the values (those of a channel on one side of 0 less its
    midrange) rounded to bfloat16 for their product where their channels are a multiple of 32
    (else float32's)."""
    from test_int16_attention import _balanced, _shifts

    q64, k64 = _balanced(q, k)
    s = (_bf16(q64.astype(np.float32)) @ _bf16(k64.astype(np.float32)).T) * scale
    e = np.exp(s - s.max(1, keepdims=True))
    if v.shape[1] % 32:  # not on the tiles: float32 FMAs
        return (e @ v.astype(np.float64)) / e.sum(1, keepdims=True)
    shift = _shifts(v)
    return (_bf16(e) @ _bf16(v - shift)) / e.sum(1, keepdims=True) + shift


@pytest.mark.parametrize(
    "rows, keys, depth, channels",
    [
        (13, 17, 34, 32),  # nothing a multiple of a tile
        (100, 300, 256, 64),  # a cross attention's shape, small
        (70, 600, 96, 96),  # Hiera's global attentions' heads
        (49, 1030, 96, 16),  # values not a multiple of 32: their product the FMAs'
    ],
)
def test_the_form_computes_bfloat16_products(rows, keys, depth, channels):
    """Emulated: within 1e-3 of its arithmetic in numpy relative to the output's norm
    (measured 3e-6-4e-4: the exponentials there against each row's maximum, the kernel's
    against its running maximum, which bfloat16 rounds otherwise) and 1e-5-1e-2 from the exact
    attention (measured 2.2-3.0e-3: bfloat16's rounding, ~2^-9 of each product; the fp32
    path's triples are ~1e-5)."""
    _emulated_or_skip()
    rng = np.random.default_rng(rows + keys)
    q = rng.standard_normal((rows, depth)).astype(np.float32) * 2
    k = (rng.standard_normal((keys, depth)) + 0.7).astype(np.float32)
    v = (rng.standard_normal((keys, channels)) + 0.3).astype(np.float32)
    got = aa.attention(q, k, v, depth**-0.5, threads=2, emulated=True)
    exact = _exact(q, k, v, depth**-0.5)
    relative = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert np.linalg.norm(got - _emulated(q, k, v, depth**-0.5)) / np.linalg.norm(exact) < 1e-3
    assert 1e-5 < relative < 1e-2, relative  # bfloat16's, not the triples'


def test_it_is_closer_to_the_exact_attention_than_the_int8_kernel():
    """The tier's kernel on CPUs without AMX takes int8 scores and values; this form's
    bfloat16 products are the finer (measured 5.4e-4 against 3.1e-3, 1.3e-2 against 7.6e-2
    with the scores 3x wider)."""
    _emulated_or_skip()
    from vosfx.engine import int8_attention

    if int8_attention.why_unavailable() is not None:
        pytest.skip("the int8 attention kernel cannot run here")
    rng = np.random.default_rng(1)
    for spread in (1.0, 3.0):
        q = rng.standard_normal((256, 256)).astype(np.float32) * spread
        k = (rng.standard_normal((2048, 256)) + 0.5).astype(np.float32)
        v = rng.standard_normal((2048, 64)).astype(np.float32)
        want = _exact(q, k, v, 1 / 16)
        mine = np.abs(aa.attention(q, k, v, 1 / 16, threads=2, emulated=True) - want).max()
        int8 = int8_attention.attention(q, k, v, 1 / 16, blocks=8, threads=2)
        assert mine < np.abs(int8 - want).max() / 3, spread


def test_the_tier_takes_it_only_where_all_three_conditions_hold(monkeypatch):
    """AMX's tiles granted, the AMX form's check passed in a process of its own, and its
    attention measured at WORTH the query blocks' speed; each missing says why."""
    assert aa.WORTH == 1.2
    if not ka.supported("amx-bf16"):
        assert aa.why_unavailable(2) == "this CPU lacks AMX-BF16, or Linux did not grant its tiles"
    monkeypatch.setattr(ka, "supported", lambda name, emulated=False: True)
    monkeypatch.setattr(ka, "checked", lambda name: "the AMX-BF16 form's check ended with status 1")
    assert aa.why_unavailable(2) == "the AMX-BF16 form's check ended with status 1"
    monkeypatch.setattr(ka, "checked", lambda name: None)
    monkeypatch.setattr(aa, "gain", lambda threads: 0.93)
    assert aa.why_unavailable(2) == (
        "its attentions ran 0.93x OpenVINO's query blocks here, under the 1.2x the tier takes "
        "them from"
    )
    monkeypatch.setattr(aa, "gain", lambda threads: 1.7)
    assert aa.why_unavailable(2) is None

    def fails(threads):
        raise RuntimeError("Exception from src/inference: out of memory")

    monkeypatch.setattr(aa, "gain", fails)
    assert aa.why_unavailable(2) == (
        "its attentions could not be measured: Exception from src/inference: out of memory"
    )


def test_its_measure_times_both_forms():
    """gain: the kernel against OpenVINO's query-block form of one attention (emulated here:
    far slower than the tiles, so far under WORTH)."""
    pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    _emulated_or_skip()
    measured = aa.gain(2, emulated=True)
    assert 0 < measured < aa.WORTH


def test_its_node_runs_the_kernel_in_the_graph(monkeypatch):
    """fuse: each attention the kernel takes becomes one AmxBf16Attention node, which
    OpenVINO's CPU plugin runs: its result the kernel's called directly, each (object, head)
    its own attention."""
    pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    _emulated_or_skip()
    import openvino as ov
    import openvino.opset13 as ops

    monkeypatch.setattr(aa, "attention", functools.partial(aa.attention, emulated=True))
    q = ops.parameter([2, 3, 40, 96], np.float32, name="q")
    k = ops.parameter([2, 3, 70, 96], np.float32, name="k")
    v = ops.parameter([2, 3, 70, 96], np.float32, name="v")
    model = ov.Model([ops.relu(ops.scaled_dot_product_attention(q, k, v, causal=False))], [q, k, v])
    assert aa.fuse(model, 2) == 1
    kinds = [op.get_type_name() for op in model.get_ordered_ops()]
    assert "AmxBf16Attention" in kinds and "ScaledDotProductAttention" not in kinds
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    rng = np.random.default_rng(3)
    qs, ks, vs = (rng.standard_normal((2, 3, n, 96)).astype(np.float32) for n in (40, 70, 70))
    got = compiled([qs, ks, vs])[compiled.outputs[0]]
    assert got.shape == (2, 3, 40, 96)
    for b in range(2):
        for h in range(3):
            want = aa.attention(qs[b, h], ks[b, h], vs[b, h], 96**-0.5, threads=2)
            np.testing.assert_array_equal(got[b, h], np.maximum(want, 0))

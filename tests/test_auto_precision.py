"""``--precision auto`` (the ``fast`` preset's): the bf16 tier where the onnx backend runs on a
CPU with bfloat16 arithmetic and OpenVINO is installed, else fp32; the choice and its reason
said on vosfx's log, the sidecar's runtime giving what ran."""

from __future__ import annotations

import logging

import pytest

from vosfx.config import ModelConfig
from vosfx.engine.auto_precision import OPENVINO_HINT, choose
from vosfx.engine.loader import concrete_precision

CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
ZEN4 = frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})
ZEN3 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize(
    ("backend", "device", "providers", "openvino", "flags", "want", "why"),
    [
        # OpenVINO finds bfloat16 arithmetic: the tier, on an explicit or an automatic CPU
        ("onnx", "cpu", CPU, True, ZEN4, "bf16", "bfloat16 arithmetic, on OpenVINO"),
        ("onnx", "auto", CPU, True, ZEN4, "bf16", "bfloat16 arithmetic, on OpenVINO"),
        # a GPU provider that --device auto would take: fp32, whatever the CPU has
        ("onnx", "auto", CUDA, True, ZEN4, "fp32", "fp32 on CUDAExecutionProvider"),
        ("onnx", "cuda", CUDA, True, ZEN4, "fp32", "fp32 on --device cuda"),
        ("onnx", "tensorrt", CPU, True, ZEN4, "fp32", "fp32 on --device tensorrt"),
        # OpenVINO installed, no bfloat16 arithmetic
        ("onnx", "cpu", CPU, False, ZEN3, "fp32", "no bfloat16 arithmetic"),
        # the CPU has it, OpenVINO is missing: how to get the tier
        ("onnx", "cpu", CPU, None, ZEN4, "fp32", OPENVINO_HINT),
        ("onnx", "cpu", CPU, None, frozenset({"amx_bf16"}), "fp32", OPENVINO_HINT),
        # neither (or no /proc/cpuinfo to read: empty flags)
        ("onnx", "cpu", CPU, None, ZEN3, "fp32", "OpenVINO, which the bf16 tier runs on"),
        ("onnx", "cpu", CPU, None, frozenset(), "fp32", "OpenVINO, which the bf16 tier runs on"),
        # the torch backend computes in fp32 only
        ("torch", "cpu", CPU, True, ZEN4, "fp32", "torch backend computes in fp32"),
    ],
)
def test_auto_stands_for_the_tier_this_machine_runs(
    backend, device, providers, openvino, flags, want, why
):
    got, reason = choose(backend, device, providers=providers, bf16=lambda: openvino, flags=flags)
    assert got == want
    assert why in reason


def test_a_concrete_precision_is_left_as_it_is():
    model = ModelConfig(precision="int8")
    assert concrete_precision(model, "onnx") is model


def test_auto_is_said_with_why(caplog):
    with caplog.at_level(logging.INFO, logger="vosfx"):
        got = concrete_precision(ModelConfig(precision="auto", device="cpu"), "torch")
    assert got.precision == "fp32"
    assert got.device == "cpu"  # nothing else changed
    said = [r.getMessage() for r in caplog.records if "--precision auto" in r.getMessage()]
    assert said == ["--precision auto: fp32 (the torch backend computes in fp32)"]


def test_the_fast_preset_asks_for_auto(config_home):
    from vosfx.presets import resolve_config

    assert resolve_config(["fast"]).model.precision == "auto"
    assert resolve_config(["balanced"]).model.precision == "fp32"
    assert resolve_config(["best"]).model.precision == "fp32"


def _bf16_here() -> bool:
    """OpenVINO installed and finding bfloat16 arithmetic on this CPU (asked directly)."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


@pytest.mark.slow
def test_auto_loads_the_engine_of_the_tier_this_cpu_runs(config_home, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.onnx_bundle import SIZE, exported
    from vosfx.engine import export
    from vosfx.engine.loader import build_engine

    want = "bf16" if _bf16_here() else "fp32"
    ckpt, _, folder = exported(("bf16",) if want == "bf16" else ())
    asked = []

    def ensure(model, progress=None):
        asked.append(model.precision)  # the bundle is made for the concrete precision
        return folder

    monkeypatch.setattr(export, "ensure_bundle_for_config", ensure)
    model = ModelConfig(
        backend="onnx", device="cpu", precision="auto", checkpoint=str(ckpt), image_size=SIZE
    )
    engine = build_engine(model)
    try:
        runtime = engine.runtime()
        assert asked == [want]
        assert runtime["precision"] == want
        on_openvino = sorted(k for k, v in runtime["stages"].items() if v.startswith("openvino"))
        if want == "bf16":
            assert {"image_encoder", "memory_attention"} <= set(on_openvino), runtime["stages"]
        else:
            assert on_openvino == [], runtime["stages"]
    finally:
        engine.close()


@pytest.mark.slow
def test_auto_on_the_torch_backend_runs_fp32(config_home):
    # a concrete reduced precision is refused there (exit 9); auto is fp32
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.onnx_bundle import exported
    from vosfx.engine.loader import build_engine

    ckpt, _, _ = exported()
    engine = build_engine(
        ModelConfig(backend="torch", device="cpu", precision="auto", checkpoint=str(ckpt))
    )
    try:
        assert engine.runtime()["precision"] == "fp32"
    finally:
        engine.close()

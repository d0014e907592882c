"""``--precision auto`` (the ``fast`` preset's): the bf16 tier where this machine runs it, else
fp32.

The bf16 tier (:mod:`vosfx.engine.openvino_runtime`) is the one reduced precision chosen for
the user: on the CPUs it runs on, it made frames 2.4-3.2x faster than the official predictor
against fp32's 1.1-1.6x, with masks at IoU >= 0.99 against fp32 over the whole DAVIS clips
(docs/benchmarks/onnx.md), and bfloat16 is also what SAM 2's own predictor computes in on a
GPU (its autocast). The int8 tier is not chosen: its image encoder is quantised, which random
weights say little about for trained ones (activation outliers). On a GPU provider ``auto`` is
fp32: the fp16 variant was not measured faster there (docs/benchmarks/gpu.md).

bf16 needs bfloat16 arithmetic (AVX512_BF16 or AMX: Intel Sapphire Rapids and later, AMD Zen 4
and later), which OpenVINO reports, and OpenVINO installed. Where the CPU has it and OpenVINO
is missing, the reason given says how to get it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from vosfx.engine.cpu_features import cpu_flags

# /proc/cpuinfo flags of the bfloat16 products the bf16 tier runs on
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
OPENVINO_HINT = 'pip install "vosfx[openvino]"'


def openvino_bf16() -> bool | None:
    """Whether OpenVINO finds bfloat16 arithmetic on this CPU; None where OpenVINO is not
    installed."""
    if importlib.util.find_spec("openvino") is None:
        return None
    import openvino as ov

    from vosfx.engine.openvino_runtime import cpu_capabilities

    return "BF16" in cpu_capabilities(ov.Core())


def choose(
    backend: str,
    device: str,
    *,
    providers: list[str] | None = None,
    bf16: Callable[[], bool | None] = openvino_bf16,
    flags: frozenset[str] | None = None,
) -> tuple[str, str]:
    """The precision ``auto`` stands for on ``backend`` (``onnx`` / ``torch``) and ``device``,
    and why. ``providers``: ONNX Runtime's available execution providers (default: asked);
    ``bf16``: :func:`openvino_bf16`; ``flags``: :func:`~vosfx.engine.cpu_features.cpu_flags`
    (tests pass their own)."""
    if backend != "onnx":
        return "fp32", "the torch backend computes in fp32"
    if device not in ("auto", "cpu"):
        return "fp32", f"fp32 on --device {device}"
    if device == "auto":
        from vosfx.engine.ort_runtime import auto_providers

        if providers is None:
            import onnxruntime as ort

            providers = ort.get_available_providers()
        first = auto_providers(providers)[0]
        if first != "CPUExecutionProvider":
            return "fp32", f"fp32 on {first}"
    has = bf16()
    if has:
        return "bf16", "this CPU's bfloat16 arithmetic, on OpenVINO"
    if has is False:
        return "fp32", "this CPU has no bfloat16 arithmetic (AVX512_BF16 or AMX)"
    found = cpu_flags() if flags is None else flags
    if found and BF16_FLAGS & found:
        return "fp32", (
            "this CPU has bfloat16 arithmetic, but OpenVINO is not installed: "
            f"{OPENVINO_HINT} runs the bf16 tier, ~2.2x fp32's speed where measured"
        )
    return "fp32", "OpenVINO, which the bf16 tier runs on, is not installed"

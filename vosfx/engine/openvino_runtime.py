"""OpenVINO's CPU plugin as the runtime of a bundle's graphs: the reduced-precision tier.

``--precision bf16`` compiles the bundle's float32 ONNX graphs of the four per-frame stages
(:data:`STAGES`; for the two heavy ones the ``bf16`` variant: the same graphs constant-folded
by ONNX Runtime) with OpenVINO and asks its
CPU plugin for bfloat16 arithmetic (``INFERENCE_PRECISION_HINT``): on CPUs with AMX or
AVX512_BF16 the matrix products, the fused attention blocks (OpenVINO tokenises
MatMul-Softmax-MatMul into one kernel) and the convolutions run in bfloat16 with float32
accumulation; inputs and outputs stay float32, so the backend around it is unchanged. Where the
CPU has no bfloat16 arithmetic the tier refuses (OpenVINO would emulate it slower than
float32) and says so. Measured choice, not a default: docs/benchmarks/onnx.md.

:class:`OvSession` has the two methods of an ``onnxruntime.InferenceSession`` the backend uses
(``get_inputs`` and ``run``), so :class:`~vosfx.engine.onnx_backend.OnnxBackend` runs either.
OpenVINO is an optional extra (``pip install 'vosfx[openvino]'``); nothing imports it unless
the tier is chosen.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from vosfx.errors import BackendError

INSTALL_HINT = "pip install openvino (or 'vosfx[openvino]')"
# the stages whose bf16 variant is the graph constant-folded first (export.py's _bf16)
HEAVY = ("image_encoder", "memory_attention")
# the stages the tier runs on OpenVINO in bfloat16; the others (mask_as_output once per
# prompt, pointer_pos) stay float32 on ONNX Runtime
STAGES = ("image_encoder", "memory_attention", "memory_encoder", "decoder")


def core(precision: str) -> Any:
    """An ``openvino.Core``; BackendError naming ``--precision`` when OpenVINO is missing or
    the CPU has no arithmetic for ``precision``."""
    try:
        import openvino as ov
    except ImportError as err:
        raise BackendError(
            f"--precision {precision} runs on OpenVINO's CPU plugin, which is not installed: "
            f"{INSTALL_HINT}, or use --precision fp32 ({err})"
        ) from err
    c = ov.Core()
    caps = cpu_capabilities(c)
    if precision == "bf16" and "BF16" not in caps:
        raise BackendError(
            "--precision bf16: this CPU has no bfloat16 arithmetic (OpenVINO finds "
            f"{', '.join(caps) or 'none'}; bf16 needs AVX512_BF16 or AMX), so bf16 would be "
            "emulated and slower than fp32: use --precision int8 or fp32"
        )
    return c


def cpu_capabilities(c: Any) -> list[str]:
    """OpenVINO's CPU ``OPTIMIZATION_CAPABILITIES`` (``BF16``, ``INT8``, ``FP32``, ...)."""
    return [str(x) for x in c.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


class OvSession:
    """One graph compiled by OpenVINO for the CPU, with ``InferenceSession``'s interface.

    ``inputs``: the graph's input names in order (the bundle manifest's; OpenVINO may merge a
    graph input's name with the tensor it feeds, so names are matched from its name sets).
    ``precision``: ``bf16`` or ``f32`` (OpenVINO's inference precision hint).
    """

    def __init__(
        self, c: Any, path: Path, inputs: list[str], *, precision: str, threads: int
    ) -> None:
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = c.compile_model(c.read_model(str(path)), "CPU", config)
        self._request = self._compiled.create_infer_request()
        order = []
        for port in self._compiled.inputs:
            names = port.get_names()
            found = [n for n in inputs if n in names]
            if len(found) != 1:
                raise BackendError(
                    f"{path.name}: OpenVINO input {sorted(names)} matches none of the "
                    f"manifest's inputs {inputs}"
                )
            order.append(found[0])
        self._order = order
        self._outputs = list(self._compiled.outputs)

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=n) for n in self._order]

    def run(self, _output_names: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer([feeds[n] for n in self._order])
        # copies: the request reuses its output buffers on the next call
        return [np.array(result[o]) for o in self._outputs]

"""ONNX Runtime's side of the ONNX backend: the execution providers a ``--device`` asks for,
the hint when a GPU provider is missing, and the session options every stage runs with (one
shared CPU arena per process, no memory pattern: docs/benchmarks/onnx.md).

Nothing here imports onnxruntime at import time; the functions take the module.
"""

from __future__ import annotations

from pathlib import Path

# --device -> ONNX Runtime execution providers, in preference order (CPU always last)
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "coreml": ["CoreMLExecutionProvider", "CPUExecutionProvider"],
    "dml": ["DmlExecutionProvider", "CPUExecutionProvider"],
}
AUTO_ORDER = [
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
]


def auto_providers(available: list[str]) -> list[str]:
    """The providers ``--device auto`` runs on, of the ``available`` ones: :data:`AUTO_ORDER`'s,
    in its order (the CPU's last, and alone where nothing else is there)."""
    return [p for p in AUTO_ORDER if p in available] or ["CPUExecutionProvider"]


def gpu_install_hint(installed=None) -> str:
    """What to do when a GPU provider is missing. ``installed(dist) -> bool`` (default: the
    installed distributions). ``onnxruntime`` and ``onnxruntime-gpu`` both write the
    ``onnxruntime`` module; ``pip install "vosfx[gpu]"`` leaves both and the CPU one can win."""
    if installed is None:
        from importlib import metadata

        def installed(dist: str) -> bool:
            try:
                metadata.distribution(dist)
            except metadata.PackageNotFoundError:
                return False
            return True

    if installed("onnxruntime-gpu") and installed("onnxruntime"):
        return (
            "onnxruntime and onnxruntime-gpu are both installed and the CPU package shadows "
            "the GPU one: pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
            "onnxruntime-gpu"
        )
    return "For GPUs install onnxruntime-gpu matching your CUDA version."


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def with_options(providers: list[str], *, fp16: bool, engine_cache: Path) -> list:
    """``providers`` as ``InferenceSession`` takes them, with TensorRT's options: its engine
    and timing caches in ``engine_cache`` (building an engine takes minutes; without the cache
    every start built them again) and fp16 kernels when the bundle's fp16 variant runs."""
    out: list = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            cache = str(engine_cache)
            options = {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": cache,
                "trt_fp16_enable": "True" if fp16 else "False",
            }
            out.append((name, options))
        else:
            out.append(name)
    return out


_SHARED_ARENA: list[bool] = []  # registered once per process


def _shared_arena(ort) -> None:
    """One CPU arena for every session of the process (ONNX Runtime's environment allocator),
    grown by exactly what is requested: the stages run one after another, so the image
    encoder's activations and memory attention's reuse the same memory instead of each
    session keeping its own peak reserved (rounded up to a power of two)."""
    if _SHARED_ARENA:
        return
    info = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
    _SHARED_ARENA.append(True)


def session_options(
    ort,
    *,
    threads: int = 0,
    memory_arena: bool = True,
    basic: bool = False,
    shared_arena: bool = True,
):
    """The ``SessionOptions`` every stage runs with (benchmarks/onnx_stages.py uses the same).
    ``shared_arena=False``: each session its own arena (the ONNX Runtime default)."""
    opts = ort.SessionOptions()
    if memory_arena and shared_arena:
        _shared_arena(ort)
        opts.add_session_config_entry("session.use_env_allocators", "1")
        # no pre-planned block per run: buffers are taken from and returned to the shared
        # arena as the graph runs (peak RSS at 1024, 2 frames: 1358 -> 1026 MiB)
        opts.enable_mem_pattern = False
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if basic
        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = max(0, threads)
    opts.inter_op_num_threads = 1  # one stage at a time: parallelism is inside the ops
    # Idle pool threads sleep at once instead of spinning. Each stage is its own session with
    # its own pool, and a spinning pool kept a core busy for ~40 ms after each of its runs,
    # while the next stage ran on the same cores. On AMD Zen 3 with 2 cores this made the
    # memory encoder 73-87 ms instead of 30-34 at 512 px, and the decoder 37-40 instead of 14-15.
    # A 512 frame took 1.03-1.12 s instead of 0.79-0.86 (docs/benchmarks/onnx.md, seventeenth
    # pass). One pool shared by every session does as well, but ONNX Runtime then refuses any
    # session of the process that keeps its own pool, including sessions of a program that
    # uses vosfx as a library.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # shape-merge chatter from the exporter's graphs
    # the CPU arena keeps the largest intermediates reserved between frames (faster; peak RSS
    # in docs/benchmarks/onnx.md)
    opts.enable_cpu_mem_arena = memory_arena
    return opts

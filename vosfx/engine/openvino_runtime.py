"""OpenVINO's CPU plugin as the runtime of a bundle's graphs: the reduced-precision tier.

``--precision bf16`` compiles the bundle's float32 ONNX graphs of the per-frame stages
(:func:`tier_stages`: the four on CPUs with AMX, the two heavy ones elsewhere; for the heavy
ones the ``bf16`` variant: the same graphs constant-folded by ONNX Runtime) with OpenVINO and
asks its CPU plugin for bfloat16 arithmetic (``INFERENCE_PRECISION_HINT``): on CPUs with AMX
or AVX512_BF16 the matrix products, the attentions (memory attention's split into query
blocks, :func:`~vosfx.engine.openvino_attention.split_attention`, faster than OpenVINO's own
fused kernel on both kinds of CPU measured) and the convolutions run in bfloat16 with float32
accumulation, but for the image encoder's convolutions (:data:`FLOAT32_OPS`: float32, for
the masks' IoU) and, on CPUs without AMX, memory attention's scores (:data:`INT8_SCORES`:
int8 queries and keys, twice bfloat16's rate there; with the image encoder's global
attentions, run in the C kernel of :mod:`vosfx.engine.int8_attention` where it can be built,
:data:`FUSED_ATTENTION`); inputs and outputs stay float32, so the backend around it is
unchanged. Transposes beside an attention that OpenVINO's attention kernel would read in the
wrong order are kept out of it in every graph
(:func:`guard_attention_transposes`). Memory attention, whose memory tokens grow over a
clip's first frames, gets a graph compiled for its shapes once they stop changing
(:class:`OvSession`'s ``steady_shapes``). Where the CPU has no bfloat16 arithmetic the tier
refuses (OpenVINO would emulate it slower than float32) and says so. Measured choice, not a
default: docs/benchmarks/onnx.md.

:class:`OvSession` has the two methods of an ``onnxruntime.InferenceSession`` the backend uses
(``get_inputs`` and ``run``), so :class:`~vosfx.engine.onnx_backend.OnnxBackend` runs either.
OpenVINO is an optional extra (``pip install 'vosfx[openvino]'``); nothing imports it unless
the tier is chosen.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from vosfx.engine import int8_attention as int8_kernel
from vosfx.engine.backend import Interrupt
from vosfx.engine.heap import release_free_heap
from vosfx.engine.openvino_attention import (
    fused_int8_attention,
    guard_attention_transposes,
    int8_scores,
    kernel_attentions,
    split_attention,
)
from vosfx.engine.openvino_graphs import compress_weights, keep_float32, split_products
from vosfx.errors import BackendError, Cancelled

INSTALL_HINT = "pip install openvino (or 'vosfx[openvino]')"
# the stages whose bf16 variant is the graph constant-folded first (export.py's _bf16)
HEAVY = ("image_encoder", "memory_attention")
# the stages the tier runs on OpenVINO in bfloat16 on CPUs with AMX; the others
# (mask_as_output once per prompt, pointer_pos) stay float32 on ONNX Runtime. Without AMX the
# heavy stages only (tier_stages)
STAGES = ("image_encoder", "memory_attention", "memory_encoder", "decoder")
# the stages compiled once per batch size with their batch axis fixed (OvSession): the memory
# encoder runs 2x slower with it dynamic (127 vs 61 ms at 1024); the decoder keeps a dynamic
# point axis anyway and its batch axis dynamic costs nothing measurable (28-57 ms either way)
STATIC_BATCH = ("memory_attention", "memory_encoder")
# the stages whose weights the tier holds as float16 (compress_weights), on CPUs without AMX:
# with AMX the DAVIS masks fell under IoU 0.99 against fp32 with them (chair 0.9899,
# car-shadow 0.9901 on the Xeon; 0.9913 / 0.9909 without: docs/benchmarks/onnx.md, tenth pass)
FLOAT16_WEIGHTS = ("image_encoder",)
# the stages whose attention the tier splits into query blocks (split_attention), and how
# many blocks: OpenVINO's fused kernel ran memory attention 2.6x slower on the Xeon with AMX
# (its products not on AMX) and 1.4-1.6x slower on AMD's Zen 4 (docs/benchmarks/onnx.md,
# tenth and twenty-second passes)
SPLIT_ATTENTION = ("memory_attention",)
ATTENTION_BLOCKS = 8
# the stages whose products split into parts afterwards (Hiera's qkv projection, its output
# split into queries, keys and values) compiled as one product per part (split_products):
# OpenVINO's CPU plugin copies such a split with its reference kernel, 36 ms a frame of the
# image encoder at 1024 on AMD's Zen 4 (twenty-third pass; the graph exported at 512 already
# has three products there)
SPLIT_PRODUCTS = ("image_encoder",)
# the stages compiled once more with every input shape fixed once their shapes repeat
# (OvSession's steady_shapes): memory attention, whose memory-token count grows over a clip's
# first 16 frames and then stays. With the shapes dynamic its buffers, handed back after
# every call, were allocated again each time: 75-210 ms a call at 1024 on AMD's Zen 4, and
# 450 MiB of them against 78 MiB fixed (twenty-third pass)
STEADY_SHAPES = ("memory_attention",)
# the operation types each stage keeps in float32 in the tier (keep_float32): the image
# encoder's convolutions, whose bfloat16 carried most of the error of the high-resolution
# features the decoder upsamples with; the masks on car-shadow over 24 frames at 1024 went
# from IoU 0.987 to 0.9914 against fp32 for ~1 % of the encoder's time (twenty-fourth pass)
FLOAT32_OPS = {"image_encoder": ("Convolution",)}
# the stages whose attention scores the tier computes from int8 queries and keys
# (int8_scores), on CPUs without AMX, where memory attention runs in query blocks: on AMD's
# Zen 4 int8 products run at twice the bfloat16 rate, memory attention at 1024 1.26-1.30x
# faster, its output as far from float32 as before (twenty-fifth pass); with AMX the int8
# products measured slower in the stage (thirteenth pass)
INT8_SCORES = ("memory_attention",)
# the INT8_SCORES stages whose softmax normalisation is deferred past the values' product,
# the scores' scale folded into its exponentials (int8_scores' ``deferred``): memory
# attention at 1024 1.03-1.06x faster on AMD's Zen 4, a frame 1.04x (twenty-seventh pass)
DEFERRED_NORMALISATION = ("memory_attention",)
# the stages whose attentions run in one C kernel each (fused_kernel): without AMX
# int8_scores' arithmetic with the deferred normalisation, no score matrix in memory
# (vosfx.engine.int8_attention; where it cannot be compiled or the CPU lacks AVX512_VNNI or
# AVX512_BF16, the graph forms above): at 1024 memory attention 1.11-1.13x faster on AMD's
# Zen 4, the image encoder 1.05x (twenty-eighth pass, docs/benchmarks/onnx.md); with AMX the
# int16 kernel's AMX form in bfloat16 (vosfx.engine.amx_attention), where it is measured faster
FUSED_ATTENTION = ("image_encoder", "memory_attention")
# the fewest queries an attention has for the kernel to take it: at 1024 (4,096 queries) memory
# attention ran 1.11-1.13x faster with it and the image encoder 1.05x; at 512 (1,024 queries,
# their scores fitting the caches in the graph form too) 0.96x and 0.975x (twenty-eighth pass)
FUSED_ATTENTION_QUERIES = 2048
# the stages whose intermediate buffers go back after every call where the image encoder's
# weights stay float32 (CPUs with AMX), where memory attention runs in query blocks (their
# scores), or with --low-memory: the two largest, which together held ~240 MiB more than the
# official predictor's whole peak at 1024 (OvSession). Zen 4, blocks: a 16-frame render at
# 1024 peaked at 1,332 MiB with the release and 1,531-1,571 without (51.0 against 49.9 s)
RELEASE_BUFFERS = HEAVY


def tier_stages(amx: bool) -> tuple[str, ...]:
    """The stages ``--precision bf16`` runs on OpenVINO: :data:`STAGES` on CPUs with AMX,
    :data:`HEAVY` elsewhere. Without AMX the decoder's and memory encoder's bfloat16 cost
    the masks their margin for ~5 % of a frame: the worst DAVIS clip's IoU against fp32 was
    0.9903 with all four stages and 0.9931 with the heavy two (AMD Zen 4, the heavy stages'
    attention in blocks; docs/benchmarks/onnx.md, twenty-second pass). On the Xeon with AMX
    the four measured 0.9909-0.9913 and 9 % faster than the two (second and tenth passes)."""
    return STAGES if amx else HEAVY


def fused_kernel(amx: bool) -> str:
    """The kernel the tier's fused attentions run in (:data:`FUSED_KERNELS`): the int8 one, with
    AMX (whose int8 scores measured slower, thirteenth pass) vosfx.engine.amx_attention's."""
    return "amx-bf16" if amx else "int8"


# the fused attentions' kernels: name -> what the sidecar calls it
FUSED_KERNELS = {"int8": "int8 attention kernel", "amx-bf16": "AMX bf16 attention kernel"}


def takes_int8_scores(stage: str, amx: bool) -> bool:
    """Whether the tier computes ``stage``'s attention scores from int8 queries and keys: the
    :data:`INT8_SCORES` stages, not on CPUs with AMX (slower there)."""
    return stage in INT8_SCORES and not amx


def holds_float16(stage: str, amx: bool) -> bool:
    """Whether the tier holds ``stage``'s weights as float16: the :data:`FLOAT16_WEIGHTS`
    stages, not on CPUs with AMX (the masks' IoU fell under 0.99 there)."""
    return stage in FLOAT16_WEIGHTS and not amx


@contextlib.contextmanager
def without(*names: str) -> Iterator[None]:
    """This module's stage lists ``names`` (``STEADY_SHAPES``, ``SPLIT_PRODUCTS``, ...) empty
    while the block runs: a backend built in it runs the tier without those measures (the
    benchmarks' comparisons with the tier as an earlier pass left it)."""
    module = sys.modules[__name__]
    kept = {name: getattr(module, name) for name in names}
    for name in names:
        setattr(module, name, type(kept[name])())
    try:
        yield
    finally:
        for name, value in kept.items():
            setattr(module, name, value)


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


@functools.cache
def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has AMX for bfloat16 (the ``flags`` of Linux's ``/proc/cpuinfo``;
    False where there is none to read)."""
    from vosfx.engine.cpu_features import cpu_flags

    return "amx_bf16" in (cpu_flags(cpuinfo) or ())


def cpu_capabilities(c: Any) -> list[str]:
    """OpenVINO's CPU ``OPTIMIZATION_CAPABILITIES`` (``BF16``, ``INT8``, ``FP32``, ...)."""
    return [str(x) for x in c.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


class OvSession:
    """One graph compiled by OpenVINO for the CPU, with ``InferenceSession``'s interface.

    ``inputs``: the graph's input names in order (the bundle manifest's; OpenVINO may merge a
    graph input's name with the tensor it feeds, so names are matched from its name sets).
    ``precision``: ``bf16`` or ``f32`` (OpenVINO's inference precision hint).
    ``batch_axes``: {input name: axis} of the graph's dynamic ``batch`` axis (several objects
    in one call) to fix at compile time: the graph is compiled once per batch size met, the
    other dynamic axes (memory tokens) staying dynamic. OpenVINO runs the memory encoder 2x
    slower with that axis dynamic (its fused elementwise kernels need the shapes: 127 vs 61
    ms at 1024); :data:`STATIC_BATCH` says which graphs get it. Empty: compiled as is.
    ``float16_weights``: the weights held as float16 (:func:`compress_weights`; for
    ``bf16`` only, :data:`FLOAT16_WEIGHTS` says which graphs).
    ``attention_blocks``: 0, or the number of query blocks each attention is split into
    (:func:`split_attention`; the snippets tokenisation off for the graph).
    ``int8_attention``: the blocks' scores computed from int8 queries and keys
    (:func:`int8_scores`; with ``attention_blocks`` only: how many products, in
    :attr:`int8_products`). ``deferred_normalisation``: their Softmax's normalisation then
    deferred past the values' product (:func:`int8_scores`' ``deferred``;
    :data:`DEFERRED_NORMALISATION` says which graphs; whether done: the attribute).
    ``fused_attention``: 0, or the number of query blocks (each quantised at its own scale)
    with which each attention the kernel ``fused_kernel`` takes (of at least
    :data:`FUSED_ATTENTION_QUERIES` queries) runs in it: ``int8``, the kernel of
    :mod:`vosfx.engine.int8_attention` (:func:`fused_int8_attention`), or ``amx-bf16``, that
    of :mod:`vosfx.engine.amx_attention` (its blocks unused); one node each (how many:
    :attr:`fused_attentions`; where the kernel is unavailable, none, and
    :attr:`fused_unavailable` says why, where it would have taken one: it is built only
    then); the attentions left go to ``attention_blocks`` (how many:
    :attr:`split_attentions`).
    ``float32_ops``: operation types kept in float32 whatever ``precision`` (:func:`keep_float32`;
    :data:`FLOAT32_OPS` says which, per graph).
    ``release_buffers``: hand the compiled graph's intermediate buffers back after every call
    (``CompiledModel.release_memory``; they are allocated again by the next call), so that a
    stage's activations are resident only while it runs, not beside the other stages'.
    After each call the free C heap goes back to the system (:func:`release_free_heap`).
    Every form compiled first has the Transposes beside its attentions that OpenVINO would
    read wrongly kept out of its attention kernel (:func:`guard_attention_transposes`; how
    many in all the forms compiled: :attr:`guarded_transposes`).
    ``separate_products``: each product split into parts afterwards compiled as one product per
    part (:func:`split_products`; :data:`SPLIT_PRODUCTS` says which graphs).
    ``steady_shapes``: when a call's input shapes are those of the call before, and they have
    now come in more calls in a row than the shapes before them did, the graph is compiled once
    more with every input shape fixed to them (its ``steady`` form, used while they last) and
    the dynamic forms are dropped; shapes that differ again drop the steady form. One form is
    held at a time. The second condition is for calls one object at a time: k objects whose
    memory still grows give runs of k calls with the same shapes, frame after frame, and a
    steady form compiled for each run (and the dynamic form again after it) cost 2 objects
    at 1024 ~1.4-1.9 s a frame against ~1.0 s (docs/benchmarks/objects.md); one call a frame
    (a batch of every object) compiles it at the second call with the same shapes, as before.
    OpenVINO plans a fixed-shape graph's buffers once and shares them between its nodes:
    memory attention at 1024 held 78 MiB of buffers so, against 450 MiB with its memory
    tokens dynamic, and ran faster (twenty-third pass).
    ``hold_steady_buffers``: the steady form keeps its buffers between calls even where
    ``release_buffers`` (allocated again on every call, they cost memory attention 75-210 ms
    a call); False under ``--low-memory``.
    :attr:`release_unless`: another session whose steady form holds its buffers, where this
    one's release would lower no peak (their buffers are resident together in this one's
    calls anyway): this one's are then kept too (the image encoder's, 41 ms a call).
    """

    def __init__(
        self,
        c: Any,
        path: Path,
        inputs: list[str],
        *,
        precision: str,
        threads: int,
        batch_axes: dict[str, int] | None = None,
        float16_weights: bool = False,
        attention_blocks: int = 0,
        release_buffers: bool = False,
        separate_products: bool = False,
        steady_shapes: bool = False,
        hold_steady_buffers: bool = True,
        float32_ops: tuple[str, ...] = (),
        int8_attention: bool = False,
        deferred_normalisation: bool = False,
        fused_attention: int = 0,
        fused_kernel: str = "int8",
    ) -> None:
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self._core, self._config = c, config
        self._graph = path.name
        self.guarded_transposes = 0
        model = c.read_model(str(path))
        order = []
        for port in model.inputs:
            names = port.get_names()
            found = [n for n in inputs if n in names]
            if len(found) != 1:
                raise BackendError(
                    f"{path.name}: OpenVINO input {sorted(names)} matches none of the "
                    f"manifest's inputs {inputs}"
                )
            order.append(found[0])
        self.separate_products = separate_products
        if separate_products:  # on the float32 constants, before they are compressed
            split_products(model)
        self.float16_weights = float16_weights
        if float16_weights:
            compress_weights(model)
        self.float32_ops = float32_ops
        if float32_ops:
            try:
                model = keep_float32(model, float32_ops)
            except OSError as err:  # it goes through a temporary folder (OpenVINO's IR)
                raise BackendError(
                    f"--precision bf16: could not write {path.name}'s graph to the temporary "
                    f"folder (TMPDIR) to keep its {', '.join(float32_ops)} in float32: {err}"
                ) from err
        self.attention_blocks = attention_blocks
        self.release_buffers = release_buffers
        self.steady_shapes = steady_shapes
        self.hold_steady_buffers = hold_steady_buffers
        self.release_unless: OvSession | None = None
        self._last_shapes: tuple | None = None
        # calls in a row with _last_shapes, and with the shapes before them
        self._run, self._run_before = 0, 0
        # (input shapes, compiled entry): the steady form, while the shapes repeat
        self._steady: tuple[tuple, tuple[Any, Any, list[Any]]] | None = None
        self.fused_attentions, self.fused_unavailable = 0, None
        self.fused_kernel = fused_kernel
        # the kernel is built (or said to be unavailable) only where it would take an attention
        if fused_attention and kernel_attentions(model, FUSED_ATTENTION_QUERIES):
            kernel_threads = threads if threads > 0 else int8_kernel.cpu_count()
            if fused_kernel == "amx-bf16":
                from vosfx.engine import amx_attention

                self.fused_unavailable = amx_attention.why_unavailable(kernel_threads)
                if self.fused_unavailable is None:
                    self.fused_attentions = amx_attention.fuse(
                        model, kernel_threads, smallest_queries=FUSED_ATTENTION_QUERIES
                    )
            else:
                self.fused_unavailable = int8_kernel.why_unavailable()
                if self.fused_unavailable is None:
                    self.fused_attentions = fused_int8_attention(
                        model,
                        fused_attention,
                        kernel_threads,
                        smallest_queries=FUSED_ATTENTION_QUERIES,
                    )
        # the attentions left, in query blocks (how many: split_attentions)
        self.split_attentions = split_attention(model, attention_blocks) if attention_blocks else 0
        if attention_blocks:
            config["SNIPPETS_MODE"] = "DISABLE"
        self.int8_products = (
            int8_scores(model, deferred=deferred_normalisation)
            if attention_blocks and int8_attention
            else 0
        )
        self.deferred_normalisation = deferred_normalisation and self.int8_products > 0
        self._order = order
        self._batch_axes = {n: a for n, a in (batch_axes or {}).items() if n in order}
        # (input, axis) whose size is the batch of a call: any one of the batch axes
        self._batch_of = next(iter(self._batch_axes.items()), None)
        # the model is kept only where another batch size or shape may need compiling
        self._model = model if self._batch_axes or steady_shapes else None
        self._compiled: dict[int | None, tuple[Any, Any, list[Any]]] = {}
        self._compile(1 if self._batch_axes else None, model)
        # one infer request per compilation: calls from several threads (the studio's feature
        # warm-up beside a click) take turns, as ONNX Runtime's sessions allow concurrent runs
        self._lock = threading.Lock()

    @property
    def fused_label(self) -> str:
        """What the sidecar calls the fused attentions' kernel (:data:`FUSED_KERNELS`)."""
        return FUSED_KERNELS[self.fused_kernel]

    def _compile(self, batch: int | None, model: Any) -> tuple[Any, Any, list[Any]]:
        if batch is not None:
            import openvino as ov

            model = model.clone()
            shapes = {}
            for port, name in zip(model.inputs, self._order, strict=True):
                axis = self._batch_axes.get(name)
                if axis is not None:
                    dims = list(port.get_partial_shape())
                    dims[axis] = ov.Dimension(batch)
                    shapes[port] = ov.PartialShape(dims)
            model.reshape(shapes)
        entry = self._compiled[batch] = self._compile_model(model)
        return entry

    def _compile_model(self, model: Any) -> tuple[Any, Any, list[Any]]:
        # always, on the shapes compiled: OpenVINO computes some attentions wrongly without it
        self.guarded_transposes += guard_attention_transposes(model)
        try:
            compiled = self._core.compile_model(model, "CPU", self._config)
        except RuntimeError as err:  # the plugin refused this graph (its message, one line)
            said = " ".join(str(err).split())
            raise BackendError(
                f"--precision bf16: OpenVINO could not compile {self._graph} for this CPU "
                f"({said}); use --precision fp32"
            ) from err
        return compiled, compiled.create_infer_request(), list(compiled.outputs)

    @property
    def holds_steady(self) -> bool:
        """Whether the steady form is compiled and keeps its buffers between calls."""
        return self._steady is not None and self.hold_steady_buffers

    def _entry(self, batch: int | None, shapes: tuple) -> tuple[tuple[Any, Any, list[Any]], bool]:
        """The compiled form for a call (``steady_shapes``: the steady one where the shapes
        repeat), and whether it is the steady form."""
        if self.steady_shapes:
            if shapes == self._last_shapes:
                self._run += 1
            else:
                self._last_shapes, self._run_before, self._run = shapes, self._run, 1
            if self._steady is not None and self._steady[0] == shapes:
                return self._steady[1], True
            self._steady = None  # the shapes moved on (a new prompt, object, memory)
            if self._run >= 2 and self._run > self._run_before:
                import openvino as ov

                self._compiled.clear()
                assert self._model is not None  # kept for steady_shapes
                model = self._model.clone()
                model.reshape(
                    {p: ov.PartialShape(list(s)) for p, s in zip(model.inputs, shapes, strict=True)}
                )
                self._steady = (shapes, self._compile_model(model))
                return self._steady[1], True
        entry = self._compiled.get(batch)
        if entry is None:
            entry = self._compile(batch, self._model)
        return entry, False

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=n) for n in self._order]

    def run(
        self, _output_names: None, feeds: dict[str, np.ndarray], interrupt: Interrupt | None = None
    ) -> list[np.ndarray]:
        """The graph's outputs for ``feeds``. ``interrupt``: set from another thread, it
        cancels the inference in progress (``InferRequest.cancel``) and the call raises
        :class:`~vosfx.errors.Cancelled`."""
        batch = (
            None
            if self._batch_of is None
            else int(feeds[self._batch_of[0]].shape[self._batch_of[1]])
        )
        shapes = tuple(tuple(feeds[n].shape) for n in self._order)
        with self._lock:
            entry, steady = self._entry(batch, shapes)
            _compiled, request, outputs = entry
            if interrupt is None:
                result = request.infer([feeds[n] for n in self._order])
            else:
                result = self._infer_or_cancel(request, feeds, interrupt)
            # copies: the request reuses its output buffers on the next call
            out = [np.array(result[o]) for o in outputs]
            if (
                self.release_buffers
                and not (steady and self.hold_steady_buffers)
                and not (self.release_unless is not None and self.release_unless.holds_steady)
            ):
                _compiled.release_memory()
        release_free_heap()
        return out

    def _infer_or_cancel(self, request: Any, feeds: dict, interrupt: Interrupt) -> Any:
        """``request.infer`` that ``interrupt`` cancels; the request is shared by every caller,
        so the hook cancels only while this call runs (never a later caller's inference)."""
        live, guard = [True], threading.Lock()

        def cancel() -> None:
            with guard:
                if live[0]:
                    request.cancel()

        interrupt.bind(cancel)
        try:
            # started asynchronously so that a cancel can never land before the inference has
            # begun (a cancel of an idle request does nothing): checked again once it runs
            request.start_async([feeds[n] for n in self._order])
            if interrupt.is_set:
                cancel()
            request.wait()
            return request.results
        except RuntimeError as err:
            if interrupt.is_set:
                raise Cancelled("OpenVINO inference interrupted") from err
            raise
        finally:
            with guard:
                live[0] = False

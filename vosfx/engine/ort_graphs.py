"""A bundle's graphs as runtime sessions, for :class:`~vosfx.engine.onnx_backend.OnnxBackend`:
ONNX Runtime's (execution providers, session options, IOBinding) or, for the bf16 tier,
OpenVINO's, behind one :meth:`BundleGraphs.run`. Nothing here imports onnxruntime at import
time.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from vosfx.engine import ort_attention, ort_parts
from vosfx.engine.backend import Interrupt, warn_once
from vosfx.engine.ort_runtime import (
    GPU_PROVIDERS,
    PROVIDERS,
    auto_providers,
    gpu_install_hint,
    session_options,
    with_options,
)
from vosfx.engine.variants import variant_for
from vosfx.errors import BackendError, Cancelled

log = logging.getLogger(__name__)

# fp32 exact; fp16: the bundle's fp16 variant (GPUs); int8: the int8 variant (ONNX Runtime:
# the image encoder 8-bit, with VNNI memory attention's scores int8); bf16: the heavy
# per-frame stages (with AMX all four) on OpenVINO in bfloat16 (openvino_runtime.tier_stages)
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# the frame's normalisation on the device (vosfx.engine.ort_normalise): not a bundle graph
NORMALISE = "normalise"
# graphs whose session opens when first run, not with the backend: the dense-mask decoder
# (a further click on a frame in the studio or a session; a render never uses it), so a
# render does not hold a second copy of the decoder's weights (~29 MiB of peak RSS at 1024)
ON_FIRST_USE = ("decoder_mask",)


class BundleGraphs:
    """The sessions of one bundle's graphs (see :class:`~vosfx.engine.onnx_backend.OnnxBackend`
    for the arguments). ``sessions``: name -> session, ``inputs``: name -> the input names
    the graph declares (the exporter prunes unused ones)."""

    def __init__(
        self,
        bundle: Path,
        manifest: dict,
        *,
        device: str,
        threads: int,
        precision: str,
        optimization: str,
        memory_arena: bool,
        shared_arena: bool,
        bf16_stages: tuple[str, ...] | None,
        io_binding: bool | None,
        attention: str | None = None,
        device_normalise: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        self.bundle, self.manifest = bundle, manifest
        # what the user must know of how the graphs run (Backend.warnings): recorded, and
        # logged too only for a session opened once the backend is up (ON_FIRST_USE)
        self.warnings: list[str] = []
        # why the attentions do not run in the int16 kernel (None where they do, or where it
        # was not asked: another attention)
        self.kernel_unavailable: str | None = None
        # the kernel's form where they do (int16_attention.FORMS), else ""
        self.kernel_form = ""
        # whether the linear layers' products run in the kernel's AMX form too (the bundle's
        # parts-linear variant: vosfx.engine.amx_linear), and why not where the AMX form runs
        # the attentions and they do not
        self.amx_linear = False
        self.linear_unavailable: str | None = None
        self._linear_stages: set[str] = set()  # the stages whose products run in the form
        self._opened = False
        self.memory_arena = memory_arena
        self.shared_arena = shared_arena
        self._bf16_stages = bf16_stages
        if attention not in (None, "split", "fused", "kernel"):
            raise BackendError(f"attention: expected split, fused or kernel, found {attention!r}")
        self._attention = attention
        self.providers = self._providers(ort, device)
        self.device = "cpu" if self.providers[0] == "CPUExecutionProvider" else device
        if precision not in PRECISIONS:
            raise BackendError(
                f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}"
            )
        self.precision = precision
        if precision == "fp16" and self.providers[0] == "CPUExecutionProvider":
            self._say(
                "--precision fp16 is for GPUs: on the CPU its float16 graphs run slower than "
                "fp32 (1.2x fp32's time a frame at 1024 on AMD Zen 4) and less exact; "
                "--precision bf16 or int8 are the CPU's faster tiers (docs/onnx.md)"
            )
        # the manifest's variant it runs (int8: this CPU's int8 or uint8 weights)
        self.variant = variant_for(precision)
        if optimization not in ("all", "basic"):
            raise BackendError(f"optimization: expected all or basic, found {optimization!r}")
        self.optimization = optimization
        on_gpu = self.providers[0] in GPU_PROVIDERS
        self.io_binding = on_gpu if io_binding is None else bool(io_binding)
        if self.io_binding and precision == "bf16":
            raise BackendError("io_binding: the bf16 tier runs on OpenVINO, which has none")
        # stage -> its parts (the bundle's parts variant) where its attentions run in vosfx's
        # int16 kernel (vosfx.engine.int16_attention)
        self._parts = self._kernel_parts()
        # graph -> its query-block version (the bundle's cpu variant) where this runs it
        self._query_blocks = self._blocks()
        # the graphs run with their scores from int8 queries and keys (the int8 tier)
        self.int8_scores = self._int8_scores()
        self._io_device = "cuda" if on_gpu else "cpu"  # where kept outputs stay
        # the frame's normalisation as a graph beside the image encoder (a uint8 upload, the
        # lookup on the device: vosfx.engine.ort_normalise); on GPU providers with IOBinding
        # by default (on the CPU provider cv2's lookup is the faster: 3-12 vs ~22 ms at 1024)
        self.device_normalise = self.io_binding and (
            on_gpu if device_normalise is None else bool(device_normalise)
        )
        self.threads = threads
        self._open_lock = threading.Lock()  # ON_FIRST_USE sessions: opened once
        self._ort = ort
        self.sessions = self._sessions(ort, threads)
        if self.device_normalise:
            self.sessions[NORMALISE] = self._normalise_session(ort, threads)
        # the exporter prunes inputs a graph does not use (mask_as_output's pointer never
        # reads the high-res features): feed each graph only what it declares
        self.inputs = {
            name: {i.name for i in sess.get_inputs()} for name, sess in self.sessions.items()
        }
        for name in ON_FIRST_USE:
            if name in manifest["graphs"]:
                self.inputs[name] = {i["name"] for i in manifest["graphs"][name]["inputs"]}
        self._opened = True

    def _say(self, message: str) -> None:
        """Records ``message`` in :attr:`warnings` (once); logs it too once the backend is up,
        since whoever presents a run has said the warnings it had by then."""
        if message not in self.warnings:
            self.warnings.append(message)
            if self._opened:
                warn_once(log, message)

    def _providers(self, ort, device: str) -> list[str]:
        available = ort.get_available_providers()
        if device == "auto":
            return auto_providers(available)
        wanted = PROVIDERS.get(device)
        if wanted is None:
            raise BackendError(
                f"onnx backend device: expected one of auto, "
                f"{', '.join(PROVIDERS)}; found {device!r}"
            )
        if wanted[0] not in available:
            self._say(
                f"--device {device}: ONNX Runtime has no {wanted[0]} in this install (available: "
                f"{', '.join(available)}): running on CPU. {gpu_install_hint()}",
            )
        return [p for p in wanted if p in available] or ["CPUExecutionProvider"]

    def _sessions(self, ort, threads: int) -> dict[str, Any]:
        """One session per graph: ONNX Runtime's, or OpenVINO's for the bf16 tier, or
        a stage's parts with the int16 kernel between them."""
        if self.precision != "bf16":
            return {
                name: self._parts_session(ort, name, threads)
                if name in self._parts
                else self._session(ort, name, self._graph_file(name), threads)
                for name in self.manifest["graphs"]
                if name not in ON_FIRST_USE
            }
        from vosfx.engine import openvino_runtime as ovr

        if self.providers[0] != "CPUExecutionProvider":
            raise BackendError(
                f"--precision bf16 runs on CPUs (OpenVINO); found device {self.device!r}: "
                "use --precision fp16 on GPUs"
            )
        core = ovr.core("bf16")
        amx = ovr.cpu_has_amx()
        on_ov = ovr.tier_stages(amx) if self._bf16_stages is None else self._bf16_stages
        split = self._attention != "fused"  # query blocks unless asked (SPLIT_ATTENTION)
        sessions: dict[str, Any] = {}
        for name, g in self.manifest["graphs"].items():
            if name in ON_FIRST_USE:
                continue
            if name in on_ov:
                inputs = [i["name"] for i in g["inputs"]]
                batch_axes = {
                    i["name"]: list(i["shape"]).index("batch")
                    for i in g["inputs"]
                    if name in ovr.STATIC_BATCH and "batch" in list(i["shape"])
                }
                sessions[name] = ovr.OvSession(
                    core,
                    self._graph_file(name),
                    inputs,
                    precision="bf16",
                    threads=threads,
                    batch_axes=batch_axes,
                    float16_weights=ovr.holds_float16(name, amx),
                    float32_ops=ovr.FLOAT32_OPS.get(name, ()),
                    attention_blocks=ovr.ATTENTION_BLOCKS
                    if split and name in ovr.SPLIT_ATTENTION
                    else 0,
                    int8_attention=ovr.takes_int8_scores(name, amx),
                    deferred_normalisation=name in ovr.DEFERRED_NORMALISATION,
                    # an attention kernel, unless OpenVINO's own is asked (attention)
                    fused_attention=ovr.ATTENTION_BLOCKS * (split and name in ovr.FUSED_ATTENTION),
                    fused_kernel=ovr.fused_kernel(amx),
                    # the image encoder's float32 weights (AMX) or the blocks' scores beside
                    # the other stage's buffers lifted the render's peak (RELEASE_BUFFERS)
                    release_buffers=name in ovr.RELEASE_BUFFERS
                    and (amx or split or not self.memory_arena),
                    separate_products=name in ovr.SPLIT_PRODUCTS,
                    steady_shapes=name in ovr.STEADY_SHAPES,
                    # under --low-memory every call hands its buffers back
                    hold_steady_buffers=self.memory_arena,
                )
                why = sessions[name].fused_unavailable  # (the AMX kernel's: the sidecar's)
                if why and sessions[name].fused_kernel == "int8":  # the graph form runs
                    self._say(
                        f"--precision bf16: the int8 attention kernel cannot run here ({why}): "
                        "the attentions run as graph nodes, ~17 % slower a frame at 1024 on "
                        "AMD Zen 4; a C compiler (gcc or clang) builds the kernel at first use "
                        "(docs/onnx.md)"
                    )
            else:  # the light stages stay float32 on ONNX Runtime (closer to fp32, no slower)
                sessions[name] = self._session(ort, name, self._graph_file(name), threads)
        # once memory attention's steady form holds its buffers, the image encoder's release
        # would lower no peak: both are resident in the encoder's calls either way
        encoder, attention = sessions.get("image_encoder"), sessions.get("memory_attention")
        if isinstance(encoder, ovr.OvSession) and isinstance(attention, ovr.OvSession):
            encoder.release_unless = attention
        return sessions

    def _normalise_session(self, ort, threads: int):
        """The normalisation graph's session on the image encoder's provider (TensorRT's
        tiny engine would buy nothing over CUDA's Gather: CUDA and CPU only)."""
        from vosfx.engine import ort_normalise

        opts = session_options(
            ort, threads=threads, memory_arena=self.memory_arena, shared_arena=self.shared_arena
        )
        providers = [p for p in self.providers if p != "TensorrtExecutionProvider"]
        return ort.InferenceSession(
            str(ort_normalise.GRAPH), sess_options=opts, providers=providers
        )

    def _kernel_parts(self) -> dict[str, list[str]]:
        """Stage -> its part files where its attentions run in the int16 kernel: fp32 on ONNX
        Runtime's CPU provider, the bundle's ``parts`` variant there, ``attention`` None or
        ``kernel``, and the kernel built and (for None) faster here than float32 products
        (:func:`vosfx.engine.int16_attention.why_unavailable`); else {}.
        ``attention="kernel"`` where it cannot run raises."""
        attention = self._attention
        if attention not in (None, "kernel"):
            return {}
        variant = self.manifest.get("variants", {}).get(ort_parts.VARIANT, {})
        files = {stage: ort_parts.part_files(variant, stage) for stage in ort_parts.STAGES}
        files = {stage: parts for stage, parts in files.items() if parts}
        why = None
        if self.precision != "fp32":
            why = f"it runs with --precision fp32, not {self.precision}"
        elif self.providers[0] != "CPUExecutionProvider":
            why = f"it runs on the CPU, not {self.providers[0]}"
        elif self.io_binding:  # the outputs stay ONNX Runtime values (GPUs; tests on the CPU)
            why = "it hands numpy arrays between the parts, not IOBinding's values"
        elif not files:
            why = (
                f"the bundle {self.bundle} lacks the {ort_parts.VARIANT} variant (a bundle of "
                "an older vosfx: pip install onnx and run once, or export it again)"
            )
        else:
            from vosfx.engine import int16_attention

            try:  # asked for by name: wherever it runs, faster here or not (comparisons, tests)
                self.kernel_form = int16_attention.form(worth_it=attention is None)
            except int16_attention.Unavailable as err:
                why = str(err)
        if why is None:
            return self._linear_parts(files) if self.kernel_form == "amx" else files
        self.kernel_unavailable = why
        if attention == "kernel":
            raise BackendError(f"attention kernel: the int16 attention kernel cannot run: {why}")
        return {}

    def _linear_parts(self, files: dict[str, list[str]]) -> dict[str, list[str]]:
        """``files`` (the attentions' parts), or the bundle's parts-linear variant's where the
        linear products run in the AMX form too (:func:`vosfx.engine.amx_linear.
        variant_parts`); why not in :attr:`linear_unavailable`."""
        from vosfx.engine import amx_linear

        found, self.linear_unavailable = amx_linear.variant_parts(self.bundle, self.manifest)
        self._linear_stages = set(found)
        self.amx_linear = bool(found)
        return {**files, **found}

    def _parts_session(self, ort, stage: str, threads: int) -> ort_parts.AttentionParts:
        """A stage as its parts on ONNX Runtime and the int16 kernel between them (and the AMX
        form's linear products, where it runs them)."""
        from vosfx.engine import int16_attention
        from vosfx.engine.int8_attention import cpu_count

        kernel_threads = threads if threads > 0 else cpu_count()

        def attend(q, k, v, scale, out) -> None:
            int16_attention.attention(
                q, k, v, scale, threads=kernel_threads, out=out, name=self.kernel_form
            )

        linear = None
        if stage in self._linear_stages:
            from vosfx.engine import amx_linear

            linear = amx_linear.steps(self.bundle, self.manifest, stage, threads=kernel_threads)
        parts = [
            self._session(ort, stage, self.bundle / file, threads) for file in self._parts[stage]
        ]
        return ort_parts.AttentionParts(stage, parts, attend, ort.RunOptions, linear)

    def _blocks(self) -> dict[str, str]:
        """The graphs run from the bundle's ``cpu`` variant (memory attention's attentions as
        query blocks, :mod:`vosfx.engine.ort_attention`): with ONNX Runtime's CPU provider by
        default, on any provider when ``attention`` is ``split``; never for fp16 (the variant
        is float32) nor bf16 (memory attention runs on OpenVINO, which splits its own)."""
        attention, variants = self._attention, self.manifest.get("variants", {})
        if self.precision not in ("fp32", "int8") or attention == "fused":
            return {}
        if "memory_attention" in self._parts:  # its attentions in the int16 kernel
            return {}
        if attention is None and self.providers[0] != "CPUExecutionProvider":
            return {}
        files = variants.get("cpu")
        if files is None and attention == "split":
            raise BackendError(
                f"attention split: expected the bundle {self.bundle} to have the cpu variant, "
                f"found {sorted(variants) or 'none'} (a bundle of an older "
                f"vosfx: export it again, or pip install onnx and run once with the default)"
            )
        return dict(files or {})

    def _int8_scores(self) -> tuple[str, ...]:
        """The graphs the int8 tier runs with their scores from int8 queries and keys (the
        ``int8`` variant's query-block graphs, :data:`~vosfx.engine.ort_attention.INT8_FILES`):
        those of :data:`~vosfx.engine.ort_attention.INT8_SCORES` that the variant has (int8
        weights only) and that run in query blocks here."""
        if self.precision != "int8":
            return ()
        files = self.manifest.get("variants", {}).get(self.variant) or {}
        return tuple(
            name
            for name in ort_attention.INT8_SCORES
            if name in self._query_blocks and files.get(name) == ort_attention.INT8_FILES[name]
        )

    def _graph_file(self, name: str) -> Path:
        variants = self.manifest.get("variants", {})
        files: dict[str, str] = {}
        if self.precision != "fp32":
            files = variants.get(self.variant)
            if files is None:
                raise BackendError(
                    f"precision {self.precision!r}: expected the bundle {self.bundle} "
                    f"to have the {self.variant} variant, found {sorted(variants) or 'none'} "
                    f"(vosfx models export --variant {self.precision})"
                )
        int8_file = ort_attention.INT8_FILES.get(name)
        if int8_file is not None and files.get(name) == int8_file and name not in self.int8_scores:
            files = {}  # the int8 variant's int8 scores, not run here: the float32 graphs
        if name not in files and name in self._query_blocks:
            return self.bundle / self._query_blocks[name]
        return self.bundle / files.get(name, self.manifest["graphs"][name]["file"])

    def _session(self, ort, name: str, path: Path, threads: int):
        cpu = self.providers[0] == "CPUExecutionProvider"
        # ORT 1.31's extended CPU fusions crash (SIGSEGV) on the fp16 memory-attention graph;
        # basic optimisation runs it correctly
        basic = self.optimization == "basic" or (self.precision == "fp16" and cpu)
        opts = session_options(
            ort,
            threads=threads,
            memory_arena=self.memory_arena,
            basic=basic,
            shared_arena=self.shared_arena,
        )
        providers = with_options(
            self.providers, fp16=self.precision == "fp16", engine_cache=self._engine_cache()
        )
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        got = sess.get_providers()
        if self.providers[0] not in got:
            self._say(
                f"ONNX Runtime fell back from {self.providers[0]} to {got[0]} for "
                f"{name} (often a CUDA/cuDNN version mismatch): running on {got[0]}",
            )
        return sess

    def _engine_cache(self) -> Path:
        """Where TensorRT keeps the engines it builds for this bundle (one folder per model,
        checkpoint and image size, in the model cache)."""
        from vosfx.models.cache import home

        man = self.manifest
        sha, size = str(man["checkpoint_sha256"])[:12], int(man["image_size"])
        key = f"{man['model_id']}-{sha}-{size}"
        return home() / "tensorrt" / key

    def run(
        self,
        name: str,
        feeds: dict,
        interrupt: Interrupt | None = None,
        keep: tuple[str, ...] = (),
    ) -> list[Any]:
        """Run graph ``name`` on ``feeds`` (numpy arrays, or ONNX Runtime OrtValues that an
        earlier run kept); its outputs in order, as numpy arrays, except those named in
        ``keep``, which stay OrtValues where the provider made them (with :attr:`io_binding`;
        without it every output is numpy)."""
        names = self.inputs[name]
        sess = self.sessions.get(name)
        if sess is None:  # a graph of ON_FIRST_USE: its session opens now, once
            with self._open_lock:
                sess = self.sessions.get(name)
                if sess is None:
                    path = self._graph_file(name)
                    sess = self.sessions[name] = self._session(self._ort, name, path, self.threads)
        feeds = {k: v for k, v in feeds.items() if k in names}
        ort_session = isinstance(sess, self._ort.InferenceSession)
        if interrupt is not None and not ort_session:  # an OvSession: its own cancel
            return sess.run(None, feeds, interrupt=interrupt)
        options = None
        if interrupt is not None:
            options = self._ort.RunOptions()
            interrupt.bind(lambda: setattr(options, "terminate", True))
        try:
            if self.io_binding and ort_session:
                return self._run_bound(sess, feeds, keep, options)
            return sess.run(None, feeds, options)
        except Exception as err:
            if interrupt is not None and interrupt.is_set:
                raise Cancelled(f"{name} interrupted") from err
            raise

    def _run_bound(self, sess, feeds: dict, keep: tuple[str, ...], options) -> list[Any]:
        """One run through IOBinding: OrtValue inputs bound where they are, numpy inputs from
        host memory, the outputs in ``keep`` left on the provider's device, the rest copied
        to host memory (numpy)."""
        binding = sess.io_binding()
        held = []  # the numpy inputs must outlive the run
        for key, value in feeds.items():
            if isinstance(value, self._ort.OrtValue):
                binding.bind_ortvalue_input(key, value)
            else:
                held.append(np.ascontiguousarray(value))
                binding.bind_cpu_input(key, held[-1])
        outputs = [o.name for o in sess.get_outputs()]
        for out in outputs:
            binding.bind_output(out, self._io_device if out in keep else "cpu")
        sess.run_with_iobinding(binding, options)
        values = binding.get_outputs()
        return [v if out in keep else v.numpy() for out, v in zip(outputs, values, strict=True)]

    def describe(self) -> dict[str, str]:
        """Per graph, the library and execution provider that runs it (the sidecar's)."""
        stages = {}
        for name, sess in self.sessions.items():
            if type(sess).__name__ == "OvSession":
                kernel = sess.fused_label
                split = f", {kernel}" if sess.fused_attentions else ""
                if sess.split_attentions:
                    split += f", attention in {sess.attention_blocks} query blocks"
                if sess.int8_products:
                    split += ", int8 scores"
                if sess.fused_unavailable:  # asked for, but the kernel cannot run here
                    split += f" ({kernel} unavailable: {sess.fused_unavailable})"
                stages[name] = f"openvino CPU bf16{split}"
            else:
                stages[name] = f"onnxruntime {sess.get_providers()[0]}"
                if isinstance(sess, ort_parts.AttentionParts):
                    stages[name] += ", attentions in vosfx's int16 kernel"
                    if self.kernel_form == "amx":
                        stages[name] += " (AMX form: bfloat16 triples)"
                    if name in self._linear_stages:
                        stages[name] += ", linear products in its AMX form"
                if name in self._query_blocks:
                    stages[name] += ", attention in query blocks"
                if name in self.int8_scores:
                    stages[name] += ", int8 scores"
        if self.precision == "int8" and "image_encoder" in stages:
            weights = "uint8" if self.variant == "int8-u8" else "int8"
            stages["image_encoder"] += f", {weights} weights"
        for name in ON_FIRST_USE:
            if name in self.manifest["graphs"] and name not in stages:
                stages[name] = f"onnxruntime {self.providers[0]} (opened when first used)"
        return stages

"""A bundle's variants: the extra graphs a ``--precision`` other than fp32 runs, made from the
bundle's own fp32 graphs on first use (no torch): ``fp16`` (every graph, for GPUs), ``int8``
and ``int8-u8`` (a dynamically quantised image encoder with int8 or uint8 weights, by the CPU:
:func:`variant_for`; ``int8`` also memory attention with int8 scores), ``bf16`` (the heavy
stages constant-folded for OpenVINO). Two more are made with every bundle wherever they can be,
whatever the precision: ``cpu``, memory attention with its attentions as query blocks, which
ONNX Runtime's CPU provider runs faster (:mod:`vosfx.engine.ort_attention`), and ``parts``,
the image encoder and memory attention cut at their attentions for vosfx's int16 attention kernel
(:mod:`vosfx.engine.ort_parts`); the shipped templates carry both. The manifest's
``variants`` records each one's files."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from vosfx.engine.bundle import MANIFEST
from vosfx.errors import BackendError, OutputError
from vosfx.files import atomic_write_text

VARIANTS = ("fp16", "int8", "int8-u8", "bf16")
# made with every bundle where the onnx package is installed (:func:`automatic`)
AUTOMATIC = ("cpu", "parts")
# A variant's recipe, raised when what it makes changes; the manifest's ``recipes`` records
# the one each variant was made with (absent: 1). A variant of an older recipe is made again
# where the bundle can be written, else used as it is. fp16 2: attention in float16. int8 /
# int8-u8 2: Hiera's first two stages float32, and (int8 weights only) memory attention's
# scores from int8 queries and keys. int8 3: those queries' and keys' channels balanced
# (vosfx.engine.ort_attention).
RECIPES = {"fp16": 2, "int8": 3, "int8-u8": 2}

Progress = Callable[[str], None]


def variants_without_torch(
    folder: Path, variants: tuple[str, ...], precision: str, progress: Progress | None
) -> None:
    """Variants of an existing bundle: fp16 / int8 need the onnx package, not torch; bf16
    needs onnxruntime alone."""
    if set(variants) <= {"bf16"}:
        add_variants(folder, variants, progress or logging.getLogger(__name__).info)
        return
    try:
        import onnx  # noqa: F401
    except ImportError as err:
        raise BackendError(
            f"--precision {precision} needs the onnx package to make the {variants[0]} graphs "
            f"once: pip install onnx (or 'vosfx[torch]'), or use --precision fp32"
        ) from err
    add_variants(folder, variants, progress or logging.getLogger(__name__).info)


def automatic(*, linear: bool = False) -> tuple[str, ...]:
    """The variants of :data:`AUTOMATIC` this install can make (``cpu`` needs the onnx
    package, which the ``torch`` extra brings; a default install gets it from the template);
    ``linear``: and ``parts-linear`` (:data:`vosfx.engine.ort_parts.LINEAR_VARIANT`, the
    stages cut at their linear products too, for CPUs with AMX; never shipped)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("onnx") is not None
    except (ImportError, ValueError):  # an import hook that refuses it, a broken install
        found = False
    if not found:
        return ()
    return (*AUTOMATIC, "parts-linear") if linear else AUTOMATIC


def variant_for(precision: str) -> str:
    """The bundle variant that ``--precision precision`` runs on this machine: ``int8`` is
    ``int8`` (int8 weights) where the CPU multiplies uint8 x int8 without saturating, else
    ``int8-u8`` (uint8 weights; :mod:`vosfx.engine.cpu_features`). Either is made on first use;
    a cache shared by both kinds of CPU holds both."""
    if precision != "int8":
        return precision
    from vosfx.engine.cpu_features import int8_weights

    return "int8" if int8_weights() == "s8" else "int8-u8"


def outdated(man: dict, variant: str) -> bool:
    """Whether the bundle's ``variant`` was made by an older recipe (:data:`RECIPES`)."""
    return man.get("recipes", {}).get(variant, 1) < RECIPES.get(variant, 1)


def variants_to_make(folder: Path, variants: tuple[str, ...]) -> list[str]:
    """Those of ``variants`` the bundle ``folder`` lacks or has of an older recipe."""
    return _to_make(json.loads((folder / MANIFEST).read_text(encoding="utf-8")), variants)


def _to_make(man: dict, variants: tuple[str, ...]) -> list[str]:
    return [v for v in variants if v not in man.get("variants", {}) or outdated(man, v)]


def add_variants(folder: Path, variants: tuple[str, ...], say: Progress) -> None:
    """Makes the ``variants`` the bundle lacks or has of an older recipe (the caller holds
    the bundle's lock). The manifest lists a variant only once all its files are written,
    and is itself replaced whole: a variant being made again is taken off it first (its
    files are rewritten in place), and a full disk, a failure or Ctrl-C while a variant is
    made removes the files it had added, so the bundle stays as usable as before (that
    variant is made on its next use). A file that cannot be written raises OutputError."""
    man = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    for variant in _to_make(man, variants):
        say(f"making the {variant} variant")
        if man.get("variants", {}).pop(variant, None) is not None:
            man.get("recipes", {}).pop(variant, None)
            _write_manifest(folder, man, variant)
        before = set(folder.iterdir())
        try:
            files = _MAKERS[variant](folder, man)
        except BaseException as err:
            for path in set(folder.iterdir()) - before:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise _unwritable(folder, variant, err) from None
            raise
        man.setdefault("variants", {})[variant] = files
        if variant in RECIPES:
            man.setdefault("recipes", {})[variant] = RECIPES[variant]
        _write_manifest(folder, man, variant)


def _write_manifest(folder: Path, man: dict, variant: str) -> None:
    try:
        atomic_write_text(folder / MANIFEST, json.dumps(man, indent=2))
    except OSError as err:
        raise _unwritable(folder, variant, err) from None


def _unwritable(folder: Path, variant: str, err: OSError) -> OutputError:
    return OutputError(
        f"cannot write the {variant} variant of the ONNX bundle {folder}: "
        f"{err.strerror or err}; the bundle is kept as it was"
    )


def _fp16(folder: Path, man: dict) -> dict[str, str]:
    """Every graph with float16 weights and arithmetic, float32 inputs and outputs (for GPU
    providers; CPU kernels for float16 are few and slow)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # The fused attention is float16 too. Kept float32 (as until 2026-12-04), CUDA ran it with
    # its float32 kernel: 21 of the 33 ms of GPU time of a tiny frame at 1024 on an H200
    # (docs/benchmarks/gpu.md). On the CPU provider, where MultiHeadAttention has float32
    # kernels only, ONNX Runtime puts Casts around it when the session is made.
    files = {}
    for name, g in man["graphs"].items():
        model = onnx.load(str(folder / g["file"]))
        half = convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST)
        )
        drop_repeated_nodes(half.graph)
        files[name] = f"{name}.fp16.onnx"
        onnx.save(half, str(folder / files[name]))
    return files


def drop_repeated_nodes(graph) -> None:
    """Removes the second and later copies of a node repeated exactly (name, operator,
    inputs, outputs, attributes), and of value_info entries. onnxruntime-gpu 1.31's
    ``convert_float_to_float16`` (the newest GPU wheel as of 2026-12) adds one Cast back to
    float32 per blocked node that reads a float16 tensor, each of the same name and output,
    so a tensor read by two such nodes makes a graph ONNX Runtime refuses to load ("two nodes
    with same node name"; seen on an H200 when MultiHeadAttention was blocked,
    docs/benchmarks/gpu.md); 1.32 adds one."""
    _keep_first(graph.node, lambda node: node.SerializeToString(deterministic=True))
    _keep_first(graph.value_info, lambda info: info.name)


def _keep_first(field, key) -> None:
    """Leaves in the repeated protobuf ``field`` the first item of each ``key``, in order."""
    seen: set = set()
    keep = []
    for item in field:
        k = key(item)
        if k not in seen:
            seen.add(k)
            keep.append(item)
    if len(keep) != len(field):
        del field[:]
        field.extend(keep)


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """ONNX Runtime's quantiser advises its pre-processing step through the root logger on
    every call ("WARNING:root:Please consider to run pre-processing ..."), which a user making
    the int8 variant would read as a problem; that advice is dropped, every other record
    kept. The root logger gets a handler of its own meanwhile, so that the module-level
    ``logging.warning`` does not configure the root logger for the rest of the process."""

    def not_the_advice(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing")

    root, quiet = logging.getLogger(), logging.NullHandler()
    root.addFilter(not_the_advice)
    root.addHandler(quiet)
    try:
        yield
    finally:
        root.removeHandler(quiet)
        root.removeFilter(not_the_advice)


def _int8(folder: Path, man: dict, *, weights: str = "s8") -> dict[str, str]:
    """The image encoder with 8-bit MatMul weights, activations quantised per call (dynamic
    quantisation, for CPUs), but for Hiera's first two stages
    (:func:`high_resolution_products`); with int8 weights also memory attention in query
    blocks with its scores from int8 queries and keys (:mod:`vosfx.engine.ort_attention`);
    every other stage stays float32. ``weights``: ``s8`` (int8, for CPUs with VNNI/AMX or
    ARM) or ``u8`` (uint8, for x86 CPUs without VNNI, where uint8 x int8 saturates:
    :mod:`vosfx.engine.cpu_features`; their scores stay float32)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from vosfx.engine.ort_attention import write_variant

    src = folder / man["graphs"]["image_encoder"]["file"]
    out = "image_encoder.int8.onnx" if weights == "s8" else "image_encoder.int8-u8.onnx"
    kept = high_resolution_products(onnx.load(str(src), load_external_data=False))
    with _without_preprocessing_advice():
        quantize_dynamic(
            str(src),
            str(folder / out),
            weight_type=QuantType.QInt8 if weights == "s8" else QuantType.QUInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=kept,
        )
    files = {"image_encoder": out}
    attention = man["graphs"].get("memory_attention")
    if weights == "s8" and attention is not None:
        files.update(write_variant(folder, attention["file"], man, int8_scores=True))
    return files


def high_resolution_products(model) -> list[str]:
    """The names of the image encoder's products (MatMul, Gemm) in Hiera's first two stages:
    the blocks before the second change of width (the second block with its own ``proj``),
    whose outputs the neck turns into the high-resolution features the decoder upsamples the
    masks with. The int8 tier keeps them float32: with them quantised the features came out
    0.56 % / 1.37 % off float32 and car-shadow's masks over 24 frames at 1024 fell to IoU
    0.9858 against fp32; kept, 0.9907, for 240 of the stage's 1,130 ms on AMD's Zen 4
    (docs/benchmarks/onnx.md, twenty-sixth pass). None where the graph has fewer than two
    such blocks (one not named as vosfx exports Hiera): every product quantised, as before."""
    import re

    products = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    block = re.compile(r"/trunk/blocks\.(\d+)/")
    widen = sorted(
        {int(m.group(1)) for n in products if (m := re.search(r"/trunk/blocks\.(\d+)/proj/", n))}
    )
    if len(widen) < 2:
        return []
    return [n for n in products if (m := block.search(n)) and int(m.group(1)) < widen[1]]


def _bf16(folder: Path, man: dict) -> dict[str, str]:
    """The heavy stages (:data:`vosfx.engine.openvino_runtime.HEAVY`) constant-folded by ONNX
    Runtime's basic optimisation, standard ONNX ops only, for OpenVINO to compile in bfloat16.
    Folding first matters: OpenVINO's own folding of the image encoder's bicubic resize of
    its position embedding takes minutes at 1024 (2,415 -> 507 nodes; compile ~2 s after)."""
    import onnxruntime as ort

    from vosfx.engine.openvino_runtime import HEAVY

    files = {}
    for name in HEAVY:
        files[name] = f"{name}.folded.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(folder / files[name])
        opts.log_severity_level = 3
        ort.InferenceSession(
            str(folder / man["graphs"][name]["file"]), opts, providers=["CPUExecutionProvider"]
        )
    return files


def _cpu(folder: Path, man: dict) -> dict[str, str]:
    """Memory attention with its attentions as query blocks, one object at a time, for ONNX
    Runtime's CPU provider (:mod:`vosfx.engine.ort_attention`); the weights stay as the fp32
    graph has them."""
    from vosfx.engine.ort_attention import write_variant

    graph = man.get("graphs", {}).get("memory_attention")
    if graph is None:  # nothing to rewrite
        return {}
    return write_variant(folder, graph["file"], man)


def _parts(folder: Path, man: dict, *, linear: bool = False) -> dict[str, str]:
    """The image encoder and memory attention cut at their attentions, for the int16
    attention kernel between ONNX Runtime's parts (:mod:`vosfx.engine.ort_parts`); ``linear``
    (``parts-linear``): at their linear layers' products too, for the kernel's AMX form
    (:mod:`vosfx.engine.amx_linear`)."""
    from vosfx.engine.ort_cut import write_variant
    from vosfx.engine.ort_parts import STAGES

    graphs = man.get("graphs", {})
    sources = {s: graphs[s]["file"] for s in STAGES if s in graphs}
    return write_variant(folder, sources, linear=linear)


# variant -> what makes its files from the bundle's folder and manifest
_MAKERS: dict[str, Callable[[Path, dict], dict[str, str]]] = {
    "fp16": _fp16,
    "int8": _int8,
    "int8-u8": functools.partial(_int8, weights="u8"),
    "bf16": _bf16,
    "cpu": _cpu,
    "parts": _parts,
    "parts-linear": functools.partial(_parts, linear=True),
}

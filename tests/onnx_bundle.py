"""One exported ONNX test bundle per test process, shared by the ONNX test modules.

Exporting the eight graphs at image size 256 takes ~30 s on the project's 2-core machine, so
the bundle (from :func:`tests.ckpt.make_checkpoint`'s seeded random weights) is built once per
process into a temporary folder; variants are added on demand.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

SIZE = 256
_TMP: tempfile.TemporaryDirectory | None = None
_CKPT: tuple[Path, str] | None = None  # one checkpoint for every size
_DONE: dict[int, Path] = {}  # image size -> bundle folder


def exported(variants: tuple[str, ...] = (), size: int = SIZE) -> tuple[Path, str, Path]:
    """(checkpoint path, its sha256, bundle folder) for the tiny config at ``size`` (one
    checkpoint for every size)."""
    global _TMP, _CKPT
    from tests.ckpt import make_checkpoint
    from vosfx.engine.export import export_bundle

    if _TMP is None:
        _TMP = tempfile.TemporaryDirectory(prefix="vosfx-onnx-")
    root = Path(_TMP.name)
    if _CKPT is None:
        _CKPT = make_checkpoint(root / "sam2.1_tiny_random.pt")
    ckpt, sha = _CKPT
    if size not in _DONE:
        folder = root / ("bundle" if size == SIZE else f"bundle-{size}")
        _DONE[size] = export_bundle(str(ckpt), out_dir=folder, image_size=size)
    bundle = _DONE[size]
    if variants:
        export_bundle(str(ckpt), out_dir=bundle, image_size=size, variants=variants)
    return ckpt, sha, bundle


def default_stages() -> dict[str, str]:
    """What runs the image encoder and memory attention on the CPU provider by default here
    (the sidecar's words) for a bundle made through the loader (``ensure_bundle_for_config``):
    the int16 attention kernel between the parts variant's graphs where it runs and is faster
    than float32 products on this CPU (in its AMX form with the linear products too, between
    the parts-linear variant's), else the whole image encoder and memory attention's query
    blocks on ONNX Runtime."""
    from vosfx.engine import amx_linear, int16_attention

    if int16_attention.why_unavailable() is None:
        kernel = "onnxruntime CPUExecutionProvider, attentions in vosfx's int16 kernel"
        if int16_attention.form() == "amx":
            kernel += " (AMX form: bfloat16 triples)"
            if amx_linear.why_unused() is None:  # the loader makes the parts-linear variant
                kernel += ", linear products in its AMX form"
        return {"image_encoder": kernel, "memory_attention": kernel}
    return {
        "image_encoder": "onnxruntime CPUExecutionProvider",
        "memory_attention": "onnxruntime CPUExecutionProvider, attention in query blocks",
    }

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
_DONE: dict[str, tuple[Path, str, Path]] = {}


def exported(variants: tuple[str, ...] = (), size: int = SIZE) -> tuple[Path, str, Path]:
    """(checkpoint path, its sha256, bundle folder) for the tiny config at ``size`` (one
    checkpoint for every size)."""
    global _TMP
    from tests.ckpt import make_checkpoint
    from vosfx.engine.export import export_bundle

    if _TMP is None:
        _TMP = tempfile.TemporaryDirectory(prefix="vosfx-onnx-")
    root = Path(_TMP.name)
    key = "fp32" if size == SIZE else f"fp32-{size}"
    if key not in _DONE:
        ckpt = root / "sam2.1_tiny_random.pt"
        if ckpt.exists():
            sha = next(iter(_DONE.values()))[1]
        else:
            ckpt, sha = make_checkpoint(ckpt)
        folder = root / ("bundle" if size == SIZE else f"bundle-{size}")
        _DONE[key] = (ckpt, sha, export_bundle(str(ckpt), out_dir=folder, image_size=size))
    ckpt, sha, bundle = _DONE[key]
    if variants:
        export_bundle(str(ckpt), out_dir=bundle, image_size=size, variants=variants)
    return ckpt, sha, bundle

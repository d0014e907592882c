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


def exported(variants: tuple[str, ...] = ()) -> tuple[Path, str, Path]:
    """(checkpoint path, its sha256, bundle folder) for the tiny config at :data:`SIZE`."""
    global _TMP
    from tests.ckpt import make_checkpoint
    from vosfx.engine.export import export_bundle

    if _TMP is None:
        _TMP = tempfile.TemporaryDirectory(prefix="vosfx-onnx-")
    root = Path(_TMP.name)
    if "fp32" not in _DONE:
        ckpt, sha = make_checkpoint(root / "sam2.1_tiny_random.pt")
        bundle = export_bundle(str(ckpt), out_dir=root / "bundle", image_size=SIZE)
        _DONE["fp32"] = (ckpt, sha, bundle)
    ckpt, sha, bundle = _DONE["fp32"]
    if variants:
        export_bundle(str(ckpt), out_dir=bundle, image_size=SIZE, variants=variants)
    return ckpt, sha, bundle

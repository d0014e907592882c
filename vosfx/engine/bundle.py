"""The ONNX bundle on disk: a folder of graphs and the manifest that names them.

Both the exporter (which writes bundles) and the ONNX Runtime backend (which reads them) use
this module; neither imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path

from vosfx.errors import ModelError

MANIFEST = "manifest.json"
BUNDLE_FORMAT = 3  # 2: the decoder takes min_object_score; 3: per-object graphs take a batch


def read_manifest(bundle: str | Path) -> dict:
    """The bundle's manifest, checked for format and completeness. Raises ModelError."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"expected an ONNX bundle manifest at {path}, found: {err}") from err
    if data.get("format") != BUNDLE_FORMAT:
        raise ModelError(
            f"{path}: expected bundle format {BUNDLE_FORMAT}, found "
            f"{data.get('format')!r} (re-export with `vosfx models export`)"
        )
    missing = [
        g["file"] for g in data.get("graphs", {}).values() if not (bundle / g["file"]).is_file()
    ]
    if missing or not data.get("graphs"):
        raise ModelError(f"{bundle}: expected every graph of the manifest, missing {missing}")
    return data


def bundle_root() -> Path:
    from vosfx.models.cache import home

    return home() / "onnx"


def bundle_dir(model_id: str, sha256: str, image_size: int) -> Path:
    """``<cache>/onnx/<model_id>-<sha8>-<image_size>``."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in model_id)
    return bundle_root() / f"{safe}-{sha256[:8]}-{int(image_size)}"


def checkpoint_identity(source: str) -> tuple[str, str | None, Path | None]:
    """(model id, checkpoint sha256 or None, checkpoint path or None) for a registry id or a
    checkpoint path; a registry id uses its published hash (no hashing, no download)."""
    from vosfx.models import registry
    from vosfx.models.cache import checkpoint_path, expected_sha256, sha256_file

    if source in registry.model_ids():
        path = checkpoint_path(source)
        sha = expected_sha256(source)  # a trusted import's own hash, else the published one
        if sha is None and path.is_file():
            sha = sha256_file(path)
        return source, sha, path if path.is_file() else None
    path = Path(source).expanduser()
    if not path.is_file():
        raise registry.no_such_model(source)
    return path.name, sha256_file(path), path

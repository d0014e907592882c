"""The ONNX bundle on disk: a folder of graphs and the manifest that names them.

Both the exporter (which writes bundles) and the ONNX Runtime backend (which reads them) use
this module; neither imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path

from vosfx.errors import ModelError

MANIFEST = "manifest.json"
BUNDLE_FORMAT = 1


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

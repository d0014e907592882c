"""Make an ONNX Runtime bundle from a shipped graph template and a checkpoint, without torch.

The wheel carries, for each SAM 2 architecture and image size vosfx supports by default, the
graphs of :mod:`vosfx.engine.export` with their weights taken out (see
:mod:`vosfx.engine.export_template`, which writes them). :func:`build_bundle` reads the
checkpoint with :mod:`vosfx.models.torchfile` (sha256 first, then every tensor's name, shape and
dtype against the template's layout, no pickled code run), writes each graph's weights file at
the offsets the template records, and leaves a bundle that :mod:`vosfx.engine.onnx_backend`
loads like an exported one. Seconds instead of an export; no torch, no onnx package.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vosfx.errors import ModelError
from vosfx.models.cache import sha256_file

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_FORMAT = 1

Progress = Callable[[str], None]


def template_name(config: str, image_size: int) -> str:
    """``configs/sam2.1/sam2.1_hiera_t.yaml``, 1024 -> ``sam2.1_hiera_t-1024``."""
    stem = Path(config).name.removesuffix(".yaml")
    return f"{stem}-{int(image_size)}"


def find_template(
    config: str | None,
    image_size: int,
    *,
    mem_mask_scale: float = 20.0,
    mem_mask_bias: float = -10.0,
    root: Path | None = None,
) -> Path | None:
    """The shipped template for ``config`` at ``image_size`` with these memory-mask
    settings, or None."""
    if not config:
        return None
    folder = (root or TEMPLATES) / template_name(config, image_size)
    meta = _meta(folder)
    if meta is None or meta.get("config") != config:
        return None
    if (meta.get("mem_mask_scale"), meta.get("mem_mask_bias")) != (mem_mask_scale, mem_mask_bias):
        return None
    return folder


def available() -> list[str]:
    """Names of the shipped templates (``sam2.1_hiera_t-1024``, ...)."""
    if not TEMPLATES.is_dir():
        return []
    return sorted(p.name for p in TEMPLATES.iterdir() if (p / "template.json").is_file())


def _meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / "template.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if meta.get("format") == TEMPLATE_FORMAT else None


def layout(folder: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{checkpoint tensor name: (shape, dtype)} the template's model expects."""
    meta = _meta(folder)
    if meta is None:
        raise ModelError(f"{folder}: expected a graph template (template.json), found none")
    return {k: (tuple(v[0]), v[1]) for k, v in meta["layout"].items()}


def build_bundle(
    template: Path,
    checkpoint: str | Path,
    *,
    sha256: str | None,
    model_id: str,
    out_dir: Path,
    progress: Progress | None = None,
) -> Path:
    """Fill ``template`` with ``checkpoint``'s weights into the bundle folder ``out_dir``.

    ``sha256``: the file's expected hash (checked before it is parsed); None hashes the file
    and records what it is. Raises :class:`ModelError` on a hash, layout or dtype mismatch.
    """
    import numpy as np

    from vosfx.models.torchfile import CheckpointFile, check_layout, sha256_of

    say = progress or (lambda _msg: None)
    meta = _meta(template)
    if meta is None:
        raise ModelError(f"{template}: expected a graph template (template.json), found none")
    sha256 = sha256 or sha256_of(checkpoint)
    say(f"filling the {template.name} graphs with {Path(checkpoint).name}")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with CheckpointFile(checkpoint, sha256=sha256) as ckpt:
            check_layout(
                ckpt.tensors,
                layout(template),
                source=f"{checkpoint} (expected the layout of {meta['config']})",
            )
            with np.load(template / "constants.npz") as consts:
                graphs = {
                    name: _fill(template, tmp, name, g, ckpt, consts)
                    for name, g in meta["graphs"].items()
                }
            np.savez(tmp / "constants.npz", maskmem_tpos_enc=ckpt.array("maskmem_tpos_enc"))
        # ready-made variants (the cpu one): graphs that read the weights files just written
        for files in meta.get("variants", {}).values():
            for file in files.values():
                shutil.copyfile(template / file, tmp / file)
        manifest = _manifest(meta, model_id, sha256, graphs)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _fill(template: Path, folder: Path, name: str, graph: dict, ckpt: Any, consts: Any) -> dict:
    """Copy ``<name>.onnx`` and write its weights file from the checkpoint and constants."""
    import numpy as np

    shutil.copyfile(template / graph["file"], folder / graph["file"])
    written: set[int] = set()
    with open(folder / graph["data"], "wb") as fh:
        for init, source, key, offset, nbytes in graph["initializers"]:
            if offset in written:
                continue
            arr = ckpt.array(key) if source == "ckpt" else consts[key]
            raw = np.ascontiguousarray(arr).tobytes()
            if len(raw) != nbytes:
                raise ModelError(
                    f"{graph['file']}: initializer {init} expects {nbytes} bytes "
                    f"of {source} {key}, found {len(raw)}"
                )
            fh.seek(offset)
            fh.write(raw)
            written.add(offset)
    return {
        "file": graph["file"],
        "sha256": sha256_file(folder / graph["file"]),
        "inputs": graph["inputs"],
        "outputs": graph["outputs"],
    }


def _manifest(meta: dict, model_id: str, sha256: str, graphs: dict) -> dict:
    from vosfx._version import __version__
    from vosfx.engine.bundle import BUNDLE_FORMAT

    return {
        "format": BUNDLE_FORMAT,
        "model_id": model_id,
        "checkpoint_sha256": sha256,
        "image_size": meta["image_size"],
        "opset": meta["opset"],
        "vosfx_version": __version__,
        "torch_version": meta["torch_version"],
        "onnx_version": meta["onnx_version"],
        "exporter": f"template {template_name(meta['config'], meta['image_size'])} "
        f"({meta['exporter']}) filled without torch",
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "attrs": meta["attrs"],
        "constants": "constants.npz",
        "graphs": graphs,
        "variants": {name: dict(files) for name, files in meta.get("variants", {}).items()},
    }


def bundle_from_template(model: Any, progress: Progress | None = None) -> Path | None:
    """The bundle for a :class:`~vosfx.config.ModelConfig`, filled now from a shipped template,
    or None when no template fits (another image size, an unknown architecture, custom
    memory-mask scaling: those need torch to export). The checkpoint must be on disk (the
    loader fetches registry models first)."""
    import logging

    from vosfx.engine.bundle import bundle_dir, checkpoint_identity
    from vosfx.models import registry
    from vosfx.models.torchfile import identify

    source = model.checkpoint or model.name
    model_id, sha, path = checkpoint_identity(source)
    if path is None or sha is None:
        return None
    spec: registry.ModelSpec | None = (
        registry.get(source)
        if source in registry.model_ids()
        else registry.find_by_filename(path.name) or identify(path)
    )
    if spec is None:
        return None
    size = int(model.image_size) if model.image_size else 1024
    template = find_template(
        spec.config, size, mem_mask_scale=spec.mem_mask_scale, mem_mask_bias=spec.mem_mask_bias
    )
    if template is None:
        return None
    say = progress or logging.getLogger(__name__).info
    say(
        f"first use of {model_id} at {size} px: filling the shipped ONNX graphs with its "
        "weights (once; a few seconds)"
    )
    return build_bundle(
        template,
        path,
        sha256=sha,
        model_id=model_id,
        out_dir=bundle_dir(model_id, sha, size),
        progress=None,
    )

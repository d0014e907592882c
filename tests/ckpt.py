"""Seeded random-weight SAM 2 checkpoints for tests.

No pretrained SAM 2 weights exist on the project's machines; tests build the real architecture
from a ``sam2`` config with seeded random weights and save it the way the official files are
saved (``{"model": state_dict}``). That proves loading, export and parity, not segmentation
quality.

Building the model takes seconds, so each (config, seed) is built once per process and the
bytes are copied to every path asked for: the sha256 is then the same for every copy.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

_BUILT: dict[tuple[str, int], tuple[Path, str]] = {}
_TMP: tempfile.TemporaryDirectory | None = None

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"
SMALL = "configs/sam2.1/sam2.1_hiera_s.yaml"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_state_dict(config: str = TINY, seed: int = 0) -> dict:
    """The state dict of the real SAM 2 architecture for ``config`` with weights drawn after
    ``torch.manual_seed(seed)`` (the modules' own initialisers)."""
    import torch
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(config, ckpt_path=None, device="cpu", mode="eval")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _built(config: str, seed: int) -> tuple[Path, str]:
    global _TMP
    key = (config, seed)
    if key not in _BUILT:
        import torch

        if _TMP is None:
            _TMP = tempfile.TemporaryDirectory(prefix="vosfx-ckpt-")
        src = Path(_TMP.name) / f"{len(_BUILT)}.pt"
        torch.save({"model": build_state_dict(config, seed)}, src)
        _BUILT[key] = (src, sha256_file(src))
    return _BUILT[key]


def make_checkpoint(path: str | Path, config: str = TINY, seed: int = 0) -> tuple[Path, str]:
    """Write a seeded random-weight checkpoint for the ``sam2`` config ``config`` to ``path``
    (parent folders are made) and return ``(path, sha256 hex of the file)``.

    The file holds ``{"model": state_dict}`` with float32 tensors, loadable with
    ``torch.load(path, weights_only=True)``; the same (config, seed) gives the same bytes within
    a test session.
    """
    src, digest = _built(config, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, path)
    return path, digest


def retagged_checkpoint(path: str | Path, tag: str, config: str = TINY) -> tuple[Path, str]:
    """:func:`make_checkpoint` (seed 0) with ``tag`` as its zip comment: the same tensors
    (the architecture a fine-tune keeps), other bytes and so another sha256, without building
    another model. Returns ``(path, sha256 hex)``."""
    import zipfile

    path, _ = make_checkpoint(path, config)
    with zipfile.ZipFile(path, "a") as archive:
        archive.comment = tag.encode()
    return path, sha256_file(path)

"""Build a SAM 2 model from its ``sam2`` config and load a checkpoint into it, strictly.

The checkpoint is read with ``torch.load(..., weights_only=True)`` (no pickled code runs) and
its tensor names and shapes must equal the model's exactly: a file for another size, another
SAM version or a truncated save is refused with the missing, unexpected and mis-shaped keys
listed, instead of half-loading (``sam2``'s own loader logs and raises a bare RuntimeError).

torch and sam2 are imported inside the functions: importing this module stays light.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vosfx.errors import BackendError, ModelError
from vosfx.models import registry
from vosfx.models.shapes import check_shapes
from vosfx.models.torchfile import infer_config  # read without torch

NATIVE_IMAGE_SIZE = 1024
BACKBONE_STRIDE = 16
"""Memory attention runs on the stride-16 feature map: 64x64 at 1024, 16x16 at 256."""


def shapes_of(state_dict: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of a state dict of tensors."""
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def manifest_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` from a ``*.state_dict_manifest.json`` (``{"state_dict": {name:
    {"dtype", "shape"}}}``), the layout of an official checkpoint without its weights."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return {k: tuple(v["shape"]) for k, v in data["state_dict"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{path}: expected a state-dict manifest JSON, found error {err}") from err


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """The tensors of a checkpoint file: ``{"model": {name: tensor}}`` as the official files
    are saved, or a bare ``{name: tensor}``. Loaded on CPU, weights only."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"expected a checkpoint file at {path}, found nothing")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, RuntimeError)
        raise ModelError(
            f"{path} is not a loadable weights-only checkpoint: {type(err).__name__}: {err}"
        ) from err
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise ModelError(
            f"{path}: expected {{'model': state_dict}} of named tensors, found "
            f"{type(data).__name__}"
        )
    return dict(data)


def size_overrides(image_size: int | None) -> list[str]:
    """Hydra overrides that run the model at ``image_size`` (pixels, square, multiple of 16).

    Memory attention's RoPE tables are sized for the stride-16 feature map, so they follow.
    Nothing in the state dict depends on the size: the same weights load at any size.
    """
    if image_size is None or image_size == NATIVE_IMAGE_SIZE:
        return []
    if image_size < 64 or image_size % BACKBONE_STRIDE:
        raise ModelError(
            f"image_size: expected a multiple of {BACKBONE_STRIDE} >= 64, found {image_size}"
        )
    feat = image_size // BACKBONE_STRIDE
    return [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
    ]


def build_model(
    config: str,
    *,
    device: str = "cpu",
    image_size: int | None = None,
    overrides: Sequence[str] = (),
) -> Any:
    """The ``sam2`` model for ``config`` with its initial (random) weights, in eval mode."""
    _torch()
    from sam2.build_sam import build_sam2

    extra = [*size_overrides(image_size), *overrides]
    try:
        return build_sam2(
            config, ckpt_path=None, device=device, mode="eval", hydra_overrides_extra=extra
        )
    except Exception as err:  # hydra raises MissingConfigException, ConfigCompositionException
        raise ModelError(
            f"cannot build SAM 2 from config {config!r} with overrides {extra}: "
            f"{type(err).__name__}: {err}"
        ) from err


def _resolve(
    model: str | Path, config: str | None, offline: bool | None
) -> tuple[Path, str | None, list[str]]:
    """(checkpoint path, sam2 config or None, hydra overrides) for a model id or a path."""
    if isinstance(model, str) and model in registry.model_ids():
        from vosfx.models.cache import ensure_checkpoint

        spec = registry.get(model)
        path = ensure_checkpoint(model, offline=offline)
        return path, config or spec.config, spec.hydra_overrides()
    path = Path(model).expanduser()
    if not path.is_file():
        raise registry.no_such_model(str(model))
    found = registry.find_by_filename(path.name)
    if found is None:
        return path, config, []
    return path, config or found.config, found.hydra_overrides()


def load_sam2(
    model: str | Path,
    *,
    config: str | None = None,
    device: str = "cpu",
    image_size: int | None = None,
    offline: bool | None = None,
) -> Any:
    """A ``sam2`` ``SAM2Base`` in eval mode with ``model``'s weights.

    ``model`` is a registry id (fetched through the cache) or a checkpoint path. For a path,
    ``config`` defaults to the registry row whose file has that name, else to the stock config
    the tensors' layout points to (:func:`infer_config`). ``image_size`` (pixels, default 1024)
    builds a smaller model for tests and drafts: same weights, other RoPE tables.
    Raises :class:`ModelError` when the file's tensors do not match the architecture exactly.
    """
    path, config, overrides = _resolve(model, config, offline)
    state = read_state_dict(path)
    found = shapes_of(state)
    if config is None:
        config = infer_config(found)
        if config is None:
            raise ModelError(
                f"{path}: expected the tensors of a SAM 2 or 2.1 tiny, small, base-plus or "
                "large checkpoint, found a layout that matches none of them"
            )
    net = build_model(config, device="cpu", image_size=image_size, overrides=overrides)
    check_shapes(shapes_of(net.state_dict()), found, source=f"{path} (config {config})")
    net.load_state_dict(state, strict=True)
    return net.to(device)


def _torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise BackendError(
            "the torch backend needs torch and sam2: pip install 'vosfx[torch]'"
        ) from err
    return torch

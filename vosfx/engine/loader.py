"""Load an :class:`~vosfx.engine.Engine` for a :class:`~vosfx.config.ModelConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from vosfx.config import MemoryConfig, ModelConfig
from vosfx.errors import BackendError, ConfigError
from vosfx.types import VideoInfo

TORCH_HINT = 'the torch backend needs torch and sam2: pip install "vosfx[torch]"'


class SamEngine:
    """A loaded model on one backend; ``start`` opens a :class:`~vosfx.engine.tracker.Tracker`
    per clip (the model stays loaded across clips, for batch workers)."""

    def __init__(self, backend: Any, model_id: str, model_sha256: str | None,
                 fill_hole_area: int = 8) -> None:
        self.backend = backend
        self.model_id = model_id
        self.model_sha256 = model_sha256
        self.fill_hole_area = fill_hole_area

    def start(self, info: VideoInfo, memory: MemoryConfig):
        from vosfx.engine.memory import make_policy
        from vosfx.engine.tracker import Tracker

        return Tracker(self.backend, lambda: make_policy(memory), info,
                       fill_hole_area=self.fill_hole_area)

    def close(self) -> None:
        self.backend = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _require_torch() -> None:
    try:
        import sam2  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        raise BackendError(f"{TORCH_HINT} ({err})") from err


def _has_torch() -> bool:
    try:
        _require_torch()
    except BackendError:
        return False
    return True


def torch_backend_for(net: Any, device: str = "auto", threads: int = 0):
    """A :class:`~vosfx.engine.torch_backend.TorchBackend` over a loaded ``SAM2Base`` with the
    settings SAM 2's video predictor adds (``build_sam2_video_predictor`` post-processing:
    binarised prompt masks in the memory encoder)."""
    _require_torch()
    import torch

    from vosfx.engine.torch_backend import TorchBackend, pick_device

    if threads > 0:
        torch.set_num_threads(threads)
    net.binarize_mask_from_pts_for_mem_enc = True
    return TorchBackend(net, pick_device(device))


def _onnx_bundle_exists(model: ModelConfig) -> bool:
    try:
        from vosfx.engine import onnx_backend
    except ImportError:
        return False
    finder = getattr(onnx_backend, "bundle_exists", None)
    return bool(finder and finder(model))


def load_engine(model: ModelConfig) -> SamEngine:
    """Load ``model`` on the backend it names (``auto``: ONNX Runtime when an exported bundle
    exists, else torch). Raises BackendError (runtime missing) or ModelError (checkpoint)."""
    backend = model.backend
    if backend == "auto":
        # without torch, the onnx path explains how to get a bundle (vosfx.engine.export)
        backend = "onnx" if _onnx_bundle_exists(model) or not _has_torch() else "torch"
    if backend == "onnx":
        try:
            from vosfx.engine import onnx_backend
        except ImportError as err:
            raise BackendError(f"the onnx backend is unavailable: {err}") from err
        return onnx_backend.load_engine(model)
    if backend != "torch":
        raise ConfigError(f"[model] backend: expected auto, torch or onnx, found {backend!r}")
    if model.device not in ("auto", "cpu", "cuda", "mps"):
        raise BackendError(f"the torch backend runs on auto, cpu, cuda or mps; found device "
                           f"{model.device!r} (use backend = \"onnx\" for it)")
    _require_torch()
    from vosfx.models.checkpoint import load_sam2

    source = model.checkpoint or model.name
    net = load_sam2(source, image_size=model.image_size or None)
    sha = _sha256(source, model)
    return SamEngine(torch_backend_for(net, model.device, model.threads),
                     model_id=model.name if not model.checkpoint else Path(source).name,
                     model_sha256=sha)


def _sha256(source: str, model: ModelConfig) -> str | None:
    """The checkpoint's sha256 for the sidecar (the registry's, or hashed from the file)."""
    try:
        from vosfx.models import registry

        if not model.checkpoint:
            spec = registry.get(model.name)
            sha = getattr(spec, "sha256", None)
            if sha:
                return sha
        from vosfx.models.cache import checkpoint_path, sha256_file

        path = Path(model.checkpoint) if model.checkpoint else checkpoint_path(model.name)
        return sha256_file(path) if path.is_file() else None
    except (ImportError, OSError):
        return None

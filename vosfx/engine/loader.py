"""Load an :class:`~vosfx.engine.Engine` for a :class:`~vosfx.config.ModelConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vosfx.config import MemoryConfig, ModelConfig
from vosfx.cpus import thread_share
from vosfx.errors import BackendError, ConfigError
from vosfx.types import VideoInfo

if TYPE_CHECKING:
    from typing_extensions import Self

TORCH_HINT = 'the torch backend needs torch and sam2: pip install "vosfx[torch]"'


class SamEngine:
    """A loaded model on one backend; ``start`` opens a :class:`~vosfx.engine.tracker.Tracker`
    per clip (the model stays loaded across clips, for batch workers)."""

    def __init__(
        self, backend: Any, model_id: str, model_sha256: str | None, fill_hole_area: int = 8
    ) -> None:
        self.backend = backend
        self.model_id = model_id
        self.model_sha256 = model_sha256
        self.fill_hole_area = fill_hole_area

    def start(self, info: VideoInfo, memory: MemoryConfig):
        from vosfx.engine.policies import make_policy
        from vosfx.engine.tracker import Tracker

        return Tracker(
            self.backend,
            lambda: make_policy(memory),
            info,
            fill_hole_area=self.fill_hole_area,
            reprompt=memory.reprompt,
        )

    def runtime(self) -> dict[str, Any]:
        """What runs the model, as the backend describes it (for the sidecar)."""
        return self.backend.runtime()

    @property
    def warnings(self) -> tuple[str, ...]:
        """The backend's (:attr:`~vosfx.engine.backend.Backend.warnings`)."""
        return tuple(self.backend.warnings) if self.backend is not None else ()

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


def build_engine(model: ModelConfig, *, progress=None, cancel=None) -> SamEngine:
    """Load ``model`` on the backend it names (``auto``: ONNX Runtime, exporting the bundle on
    first use when torch is installed). ``cancel`` (a ``threading.Event``) stops a first-use
    download or export (see :func:`vosfx.engine.load_engine`). Raises BackendError (runtime
    missing) or ModelError (checkpoint)."""
    progress = _cancellable(
        progress, cancel, "cancelled during the model download; the next run resumes it"
    )
    if model.checkpoint:  # the file is the model; a typo in the name is still one
        from vosfx.models import registry

        registry.get(model.name)
    backend = backend_for(model)
    model = concrete_precision(model, backend)
    if backend == "onnx":
        from vosfx.engine.export import bundle_for_config

        if bundle_for_config(model) is None:  # exporting needs the checkpoint
            _fetch(model, progress)
        return _onnx_engine(model, cancel)
    if backend != "torch":
        raise ConfigError(f"[model] backend: expected auto, torch or onnx, found {backend!r}")
    if model.device not in ("auto", "cpu", "cuda", "mps"):
        raise BackendError(
            f"the torch backend runs on auto, cpu, cuda or mps; found device "
            f"{model.device!r} (use --backend onnx for it)"
        )
    if model.precision != "fp32":
        raise BackendError(
            f"--precision {model.precision} runs on the onnx backend (the torch backend "
            "computes in fp32): use --backend onnx, or --precision fp32"
        )
    _require_torch()
    _fetch(model, progress)
    from vosfx.models.checkpoint import load_sam2

    source = model.checkpoint or model.name
    net = load_sam2(source, image_size=model.image_size or None)
    sha = _sha256(source, model)
    return SamEngine(
        torch_backend_for(net, model.device, model.threads),
        model_id=model.name if not model.checkpoint else Path(source).name,
        model_sha256=sha,
    )


def backend_for(model: ModelConfig) -> str:
    """The backend ``model`` runs on. ``auto``: ONNX Runtime, the default runtime (faster
    here: docs/benchmarks/onnx.md; with torch installed a missing bundle is exported on first
    use, once per model and image size; without torch the onnx path explains how to get
    one). MPS has no ONNX Runtime provider vosfx uses, so Apple GPUs stay on torch."""
    if model.backend != "auto":
        return model.backend
    return "torch" if model.device == "mps" else "onnx"


def concrete_precision(model: ModelConfig, backend: str) -> ModelConfig:
    """``model`` with ``precision = "auto"`` replaced by the precision it stands for on
    ``backend`` (:func:`vosfx.engine.auto_precision.choose`), said on vosfx's log with why."""
    if model.precision != "auto":
        return model
    import dataclasses
    import logging

    from vosfx.engine.auto_precision import choose

    precision, why = choose(backend, model.device)
    logging.getLogger("vosfx.engine").info("--precision auto: %s (%s)", precision, why)
    return dataclasses.replace(model, precision=precision)


def _onnx_engine(model: ModelConfig, cancel=None) -> SamEngine:
    """An engine on ONNX Runtime; exports the bundle first when it is missing and torch is
    installed (else says how to get it)."""
    try:
        from vosfx.engine.onnx_backend import OnnxBackend
    except ImportError as err:
        raise BackendError(f"the onnx backend is unavailable: {err}") from err
    import logging

    from vosfx.engine.export import ensure_bundle_for_config

    # the export's messages go to the log as before; Ctrl-C is seen between its stages
    say = _cancellable(
        logging.getLogger("vosfx.engine.export").info,
        cancel,
        "cancelled during the first-use ONNX export; nothing was kept, the next run exports again",
    )
    bundle = ensure_bundle_for_config(model, progress=say)
    if model.low_memory:
        # the arena off alone leaves freed buffers on the C heap (a higher peak than the
        # arena's): large blocks are mapped and unmapped instead (vosfx/engine/heap.py)
        from vosfx.engine.heap import map_large_blocks

        map_large_blocks()
    backend = OnnxBackend(
        bundle,
        device=model.device,
        # ONNX Runtime's and OpenVINO's pools do not read a batch worker's OMP_NUM_THREADS
        threads=model.threads or thread_share(),
        precision=model.precision,
        memory_arena=not model.low_memory,
        io_binding={"auto": None, "on": True, "off": False}[model.io_binding],
    )
    man = backend.manifest
    return SamEngine(backend, model_id=man["model_id"], model_sha256=man["checkpoint_sha256"])


def _cancellable(progress, cancel, message: str):
    """``progress`` that raises Cancelled(``message``) once ``cancel`` is set: a download calls
    it per MiB and an export per stage, so Ctrl-C stops them instead of waiting minutes for a
    900 MB checkpoint or an export to finish."""
    if cancel is None:
        return progress

    def check(*args) -> None:
        if cancel.is_set():
            from vosfx.errors import Cancelled

            raise Cancelled(message)
        if progress is not None:
            progress(*args)

    return check


def _fetch(model: ModelConfig, progress) -> None:
    """First use of a registry model: download the official checkpoint (after the runtime is
    known to be there, so nobody downloads 156 MB to learn torch is missing)."""
    if not model.checkpoint and not Path(model.name).expanduser().is_file():
        # (a name that is a file, as the OpenFX effect's Model field may hold, is read as is)
        from vosfx.models.cache import ensure_checkpoint

        ensure_checkpoint(model.name, progress=progress)


def _sha256(source: str, model: ModelConfig) -> str | None:
    """The checkpoint's sha256 for the sidecar: what the cache holds the file to (a trusted
    import's own hash, else the published one), or the hash of a ``checkpoint`` file."""
    from vosfx.models.cache import expected_sha256, sha256_file

    if not model.checkpoint:
        return expected_sha256(model.name)
    return sha256_file(model.checkpoint)

"""Export SAM 2's stages to an ONNX bundle, and find bundles in the model cache.

A bundle is a folder ``<cache>/onnx/<model_id>-<sha8>-<image_size>/`` holding one graph per
stage of :mod:`vosfx.engine.stages` (see :mod:`vosfx.engine.export_stages`) with its weights
in ``<stage>.bin`` beside it (ONNX external data, as the shipped templates'), ``constants.npz``
(the temporal memory encodings the backend adds in numpy) and ``manifest.json``: model id,
checkpoint sha256, image size, opset, vosfx/torch/onnx versions, export date, the model's
tracking attributes, and every graph's file, sha256, input and output names, shapes and dtypes,
plus optional variants (:mod:`vosfx.engine.variants`: ``fp16`` for GPUs, ``int8`` /
``int8-u8`` for CPUs, ``bf16`` for OpenVINO). A bundle is found by its checkpoint's hash, so a
changed checkpoint gets a new one.

Finding and reading bundles needs no torch (the ONNX backend uses :func:`find_bundle`);
exporting needs torch, sam2 and onnx, imported inside :func:`export_bundle`.

The exporter is TorchScript's (``torch.onnx.export(dynamo=False)``): it needs nothing beyond
torch and onnx, and its graphs match the torch stages within 1e-5 (the dynamo exporter needs
``onnxscript``, an extra install, for no gain here).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vosfx.engine.bundle import (
    BUNDLE_FORMAT,
    MANIFEST,
    bundle_dir,
    checkpoint_identity,
    read_manifest,
)
from vosfx.engine.variants import (
    VARIANTS,
    Progress,
    add_variants,
    automatic,
    outdated,
    variant_for,
    variants_to_make,
    variants_without_torch,
)
from vosfx.errors import BackendError, ModelError, OutputError
from vosfx.files import exclusive_lock
from vosfx.models.cache import sha256_file

OPSET = 17
# tensors of fewer bytes stay in the graph file; larger ones go to its <stage>.bin
WEIGHTS_INLINE_BELOW = 1024
NATIVE_SIZE = 1024
EXPORT_HINT = (
    "exporting an ONNX bundle needs torch, sam2 and onnx: pip install "
    "'vosfx[torch]', then `{command}`"
)


def export_command(source: str, size: int = NATIVE_SIZE) -> str:
    """The ``vosfx models export`` command that makes the bundle for ``source`` (a model id,
    or a checkpoint file as the user gave it) at ``size``, ready to paste in a shell."""
    import shlex

    sized = f" --image-size {size}" if size != NATIVE_SIZE else ""
    return f"vosfx models export {shlex.quote(str(source))}{sized}"


# --- where bundles live (no torch) ------------------------------------------------------------


def find_bundle(
    model_id: str, sha256: str, image_size: int, out_dir: str | Path | None = None
) -> Path | None:
    """The complete bundle exported from the checkpoint with hash ``sha256`` at
    ``image_size``, or None (missing, incomplete, or from another checkpoint)."""
    folder = Path(out_dir) if out_dir else bundle_dir(model_id, sha256, image_size)
    if not (folder / MANIFEST).is_file():
        return None
    try:
        man = read_manifest(folder)
    except ModelError:
        return None
    if man.get("checkpoint_sha256") != sha256 or int(man.get("image_size", -1)) != image_size:
        return None
    return folder


def _size(image_size: int | None) -> int:
    return int(image_size) if image_size else NATIVE_SIZE


def bundle_for_config(model: Any) -> Path | None:
    """The bundle for a :class:`~vosfx.config.ModelConfig`, or None."""
    model_id, sha, _ = checkpoint_identity(model.checkpoint or model.name)
    if sha is None:
        return None
    return find_bundle(model_id, sha, _size(model.image_size))


def ensure_bundle_for_config(model: Any, progress: Progress | None = None) -> Path:
    """The bundle for a ModelConfig (with the variant ``model.precision`` needs). A missing
    one is filled from the graph template shipped for the model and image size (no torch,
    seconds: :mod:`vosfx.engine.template`), else exported when torch is installed; one
    process at a time (batch workers starting together on a fresh machine: the others wait
    on the bundle's lock file and then use it). Raises BackendError saying how to get one."""
    variants = (variant_for(model.precision),) if model.precision != "fp32" else ()
    # made where they can be (a bundle of an older vosfx gets them once); never required:
    # a read-only cache without them is used as it is
    extra = automatic(linear=_amx_linear(model))
    source = model.checkpoint or model.name
    model_id, sha, _ = checkpoint_identity(source)  # a checkpoint file is hashed once, here
    size = _size(model.image_size)
    where = bundle_dir(model_id, sha or "unknown", size)

    def found() -> Path | None:
        return find_bundle(model_id, sha, size) if sha is not None else None

    def missing(folder: Path, among: tuple[str, ...] = variants) -> list[str]:
        """The variants ``folder`` lacks, or has of an older recipe where it can be written
        (a read-only cache's are used as they are)."""
        if not among:
            return []
        man = read_manifest(folder)
        have = man.get("variants", {})
        return [v for v in among if v not in have or (outdated(man, v) and _writable(folder))]

    done = found()
    if done is not None and not missing(done) and (not missing(done, extra) or not _writable(done)):
        return done
    import logging

    log = logging.getLogger(__name__)
    lock = where.with_name(where.name + ".lock")
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as err:  # a read-only shared cache: said, not a traceback
        raise OutputError(
            f"cannot make the ONNX bundle for {model_id} at {size} px in the model cache "
            f"{where.parent}: {err.strerror or err}; set VOSFX_HOME to a folder you can write, "
            f"or have `{export_command(source, size)}` run by whoever can write there"
        ) from None
    with exclusive_lock(
        lock,
        reentrant=True,
        on_wait=lambda: log.warning(
            "another vosfx process is making the ONNX bundle for %s; waiting for it", model_id
        ),
    ):
        folder = found()  # made by the process this one waited for, perhaps
        if folder is None:
            from vosfx.engine.template import bundle_from_template

            try:
                folder = bundle_from_template(model, progress)
            except OSError as err:  # a full disk: the template's part is already removed
                raise _unwritable(where, err) from None
        if folder is not None:
            gaps = missing(folder) + (missing(folder, extra) if _writable(folder) else [])
            if gaps:
                variants_without_torch(folder, tuple(gaps), model.precision, progress)
            return folder
        try:
            import sam2  # noqa: F401
            import torch  # noqa: F401
        except ImportError as err:
            raise BackendError(
                f"no ONNX bundle for {model_id} at image size {size} (expected "
                f"{where}) and torch is not installed to export one ({err}). vosfx ships graphs "
                f"for the SAM 2.1 models at 1024 px only: drop --image-size, or "
                + EXPORT_HINT.format(command=export_command(source, size))
                + f", or copy a bundle exported elsewhere to "
                f"{where}"
            ) from err
        log.info(
            "no ONNX Runtime bundle for %s at %d px yet: exporting it once (about a minute "
            "at 1024 px on a laptop CPU)",
            source,
            size,
        )
        return export_bundle(
            source,
            variants=variants,
            image_size=model.image_size or None,
            progress=progress or log.info,
        )


def _amx_linear(model: Any) -> bool:
    """Whether ``model`` (a ModelConfig) runs its linear layers' products in the int16 kernel's
    AMX form here (fp32 on ONNX Runtime's CPU provider, a CPU where the form runs:
    :func:`vosfx.engine.amx_linear.why_unused`), for which its bundle needs the
    ``parts-linear`` variant. Other CPUs are told apart without building the kernel (x86
    only; ``amx_bf16`` among Linux's flags where it lists them)."""
    backend, device = getattr(model, "backend", "auto"), getattr(model, "device", "auto")
    if backend not in ("onnx", "auto") or model.precision != "fp32":
        return False
    if device not in ("cpu", "auto"):
        return False
    import platform

    from vosfx.engine import amx_linear
    from vosfx.engine.cpu_features import cpu_flags

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags()  # Linux says what the CPU has: no kernel built to ask where it lacks it
    if flags is not None and "amx_bf16" not in flags:
        return False

    try:
        return amx_linear.why_unused() is None
    except BackendError:  # VOSFX_AMX_LINEAR misspelt: said when the graphs open
        return False


# --- export (torch) -----------------------------------------------------------------------------


def export_bundle(
    model_id: str,
    *,
    out_dir: str | Path | None = None,
    variants: Iterable[str] = (),
    image_size: int | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> Path:
    """Export ``model_id`` (a registry id, fetched through the cache, or a checkpoint path) to
    a bundle and return its folder. An up-to-date bundle is reused (only missing variants are
    added) unless ``force``. ``variants``: any of :data:`VARIANTS`; ``int8`` is this CPU's
    int8 variant (:func:`variant_for`)."""
    variants = tuple(dict.fromkeys(variant_for(v) for v in variants))
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ModelError(f"export variants: expected any of {', '.join(VARIANTS)}, found {bad}")
    variants = (*automatic(), *variants)
    say = progress or (lambda _msg: None)
    size = _size(image_size)
    name, sha, path = checkpoint_identity(model_id)
    if path is None:  # a registry id not downloaded yet
        from vosfx.models.cache import ensure_checkpoint

        path = ensure_checkpoint(model_id)
        name, sha, path = checkpoint_identity(model_id)
    assert sha is not None  # a checkpoint on disk always has a hash (checkpoint_identity)
    folder = Path(out_dir) if out_dir else bundle_dir(name, sha, size)
    if not force and find_bundle(name, sha, size, folder) is not None:
        if not variants_to_make(folder, variants):
            return folder  # nothing to write: no lock (a read-only cache's bundle)
    elif out_dir:
        _check_replaceable(folder)
    # one export of a folder at a time: another (`models export` beside a first-use export,
    # two of the same model and size) would share its .partial folder and delete its graphs
    lock = folder.with_name(folder.name + ".lock")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as err:
        raise _unwritable(folder, err) from None
    with exclusive_lock(
        lock,
        reentrant=True,
        on_wait=lambda: say(f"another vosfx process is exporting {folder}; waiting for it"),
    ):
        if not force and find_bundle(name, sha, size, folder) is not None:
            add_variants(folder, variants, say)  # the process waited for made it
            return folder
        return _export_into(folder, model_id, name, sha, size, variants, say)


def _export_into(
    folder: Path,
    model_id: str,
    name: str,
    sha: str,
    size: int,
    variants: tuple[str, ...],
    say: Progress,
) -> Path:
    """Export into ``folder`` through ``<folder>.partial`` (the caller holds its lock)."""
    net = _load(model_id, size)
    tmp = folder.with_name(folder.name + ".partial")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        graphs = _export_graphs(net, tmp, say)
        _write_constants(net, tmp)
        manifest = _manifest(net, name, sha, size, graphs)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    except BaseException as err:
        # a full disk, Ctrl-C, a failed stage: no half bundle (hundreds of MB) stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise _unwritable(folder, err) from None
        raise
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    add_variants(folder, variants, say)
    say(f"exported {name} at {size} px to {folder}")
    return folder


def _writable(folder: Path) -> bool:
    """Whether variants can be added to the bundle ``folder`` (its lock file sits beside it)."""
    return os.access(folder, os.W_OK) and os.access(folder.parent, os.W_OK)


def _unwritable(folder: Path, err: OSError) -> OutputError:
    """A bundle that could not be written (a full disk, a read-only folder): nothing kept."""
    return OutputError(
        f"cannot write the ONNX bundle {folder}: {err.strerror or err}; nothing was kept"
    )


def _check_replaceable(folder: Path) -> None:
    """Refuse an ``out_dir`` that holds anything but a bundle: the export replaces the folder
    as a whole, and a user's ``--out ~/Desktop`` must not delete their files."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise OutputError(f"--out {folder}: expected a folder for the bundle, found a file")
    if (folder / MANIFEST).is_file():
        return  # a bundle (another checkpoint, format or size): replaced by the new one
    others = sorted(p.name for p in folder.iterdir())
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise OutputError(
            f"--out {folder}: expected a new or empty folder (or an ONNX bundle to replace), "
            f"found {len(others)} other file(s) ({shown}); the export would delete them, so "
            "choose another folder"
        )


def _load(source: str, size: int):
    try:
        import torch  # noqa: F401

        from vosfx.models.checkpoint import load_sam2
    except ImportError as err:
        raise BackendError(
            f"exporting an ONNX bundle needs torch, sam2 and onnx: pip install 'vosfx[torch]' "
            f"({err})"
        ) from err
    net = load_sam2(source, image_size=size).float().eval()
    # what build_sam2_video_predictor sets (and vosfx.engine.loader.torch_backend_for)
    net.binarize_mask_from_pts_for_mem_enc = True
    return net


def _export_graphs(net, folder: Path, say: Progress) -> dict[str, dict]:
    import onnx

    from vosfx.engine.export_stages import stage_specs

    graphs = {}
    for spec in stage_specs(net):
        say(f"exporting {spec.name}")
        file = folder / f"{spec.name}.onnx"
        model = export_spec(spec, file, weights_apart=True)
        onnx.checker.check_model(str(file))
        found = [o.name for o in model.graph.output]
        if found != spec.outputs:  # a pass dropped or renamed an output the tracker reads
            raise ModelError(f"{spec.name}: expected graph outputs {spec.outputs}, found {found}")
        graphs[spec.name] = {
            "file": file.name,
            "sha256": sha256_file(file),
            "inputs": _io(model.graph.input),
            "outputs": _io(model.graph.output),
        }
    return graphs


def export_spec(spec: Any, file: Path, *, fold: bool = True, weights_apart: bool = False) -> Any:
    """One stage (an ``export_stages.StageSpec``) to an ONNX file: the TorchScript exporter at
    :data:`OPSET` with the spec's names and dynamic axes, TracerWarnings muted, equal
    constants stored once (:func:`~vosfx.engine.export_constants.share_constants`); ``fold``:
    ONNX constant folding (the shipped templates are exported without, to keep their
    weights apart from the graph); ``weights_apart``: the weights written to ``<stage>.bin``
    beside the graph (ONNX external data, as the shipped templates': the variants that keep
    them as they are, the cpu one and the parts, then read that file, not a copy). Returns the
    graph (an ``onnx.ModelProto``; with ``weights_apart``, its weights as references)."""
    import onnx
    import torch

    from vosfx.engine.export_constants import share_constants

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic
        torch.onnx.export(
            spec.module.eval(),
            spec.example,
            str(file),
            dynamo=False,
            opset_version=OPSET,
            input_names=spec.inputs,
            output_names=spec.outputs,
            dynamic_axes=spec.dynamic,
            do_constant_folding=fold,
        )
    model = onnx.load(str(file))
    if weights_apart:
        share_constants(model)
        onnx.save(
            model,
            str(file),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=file.with_suffix(".bin").name,
            size_threshold=WEIGHTS_INLINE_BELOW,
        )
    elif share_constants(model):
        onnx.save(model, str(file))
    return model


def _io(values) -> list[dict]:
    import onnx

    out = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        out.append(
            {
                "name": v.name,
                "shape": shape,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            }
        )
    return out


def _write_constants(net, folder: Path) -> None:
    import numpy as np

    np.savez(
        folder / "constants.npz",
        maskmem_tpos_enc=net.maskmem_tpos_enc.detach().float().cpu().numpy(),
    )


def model_attrs(net) -> dict[str, Any]:
    """The SAM2Base settings a bundle (and a template) records for the engine: memory size,
    multimask rules, widths (bool or int, as JSON holds them)."""
    attrs = {
        k: getattr(net, k)
        for k in (
            "num_maskmem",
            "multimask_output_in_sam",
            "multimask_output_for_tracking",
            "multimask_min_pt_num",
            "multimask_max_pt_num",
            "use_mask_input_as_output_without_sam",
            "binarize_mask_from_pts_for_mem_enc",
            "hidden_dim",
            "mem_dim",
        )
    }
    attrs["max_obj_ptrs"] = net.max_obj_ptrs_in_encoder
    return {k: v if isinstance(v, (bool, str)) else int(v) for k, v in attrs.items()}


def _manifest(net, model_id: str, sha: str, size: int, graphs: dict) -> dict:
    import onnx
    import torch

    from vosfx._version import __version__

    return {
        "format": BUNDLE_FORMAT,
        "model_id": model_id,
        "checkpoint_sha256": sha,
        "image_size": size,
        "opset": OPSET,
        "vosfx_version": __version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "exporter": "torch.onnx.export(dynamo=False)",
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "attrs": model_attrs(net),
        "constants": "constants.npz",
        "graphs": graphs,
        "variants": {},
    }

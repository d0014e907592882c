"""The checkpoint cache: download on first use, resume, sha256 check, offline mode, import.

Layout (``home()`` is ``$VOSFX_HOME`` or ``platformdirs.user_cache_dir("vosfx")``)::

    <home>/checkpoints/sam2.1_hiera_tiny.pt        the publisher's file, under its own name
    <home>/checkpoints/sam2.1_hiera_tiny.pt.part   an interrupted download (resumed by Range)
    <home>/checkpoints/sam2.1_hiera_tiny.pt.lock   held while a process downloads that file
    <home>/checkpoints/index.json                  what was verified or imported, and its hash
    <home>/checkpoints/index.json.lock             held while a process updates index.json

A cached file is used only when its sha256 equals the registry's, or when the user imported it
on purpose with ``trust_unverified`` (a fine-tune): ``index.json`` records that hash and the
file must keep it. ``index.json`` also remembers size and mtime of each verified file so that a
run does not re-hash 150-900 MB every time; ``verify()`` re-hashes everything.

``VOSFX_OFFLINE=1`` (or ``offline=True``) never opens a connection; a missing file raises
:class:`DownloadError` naming the exact path to put it at. ``VOSFX_MODEL_BASE_URL`` (or
``base_url=``) fetches ``{base_url}/{filename}`` instead of the publisher's URL (mirrors, tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vosfx.errors import ModelError
from vosfx.files import atomic_write_json, exclusive_lock
from vosfx.models import registry
from vosfx.models.download import download_file, is_offline

__all__ = [
    "VerifyResult",
    "checkpoint_dir",
    "checkpoint_path",
    "ensure_checkpoint",
    "home",
    "import_checkpoint",
    "is_cached",
    "is_offline",
    "pull",
    "sha256_file",
    "verify",
]

Progress = Callable[[int, "int | None"], None]
"""``progress(done_bytes, total_bytes_or_None)``, called as bytes arrive."""

_INDEX = "index.json"


def home() -> Path:
    """The cache root: ``$VOSFX_HOME`` if set, else the platform's user cache dir."""
    env = os.environ.get("VOSFX_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("vosfx"))


def checkpoint_dir() -> Path:
    return home() / "checkpoints"


def checkpoint_path(model_id: str) -> Path:
    """Where ``model_id``'s checkpoint lives in the cache (whether or not it is there)."""
    return checkpoint_dir() / registry.get(model_id).filename


def sha256_file(path: str | Path, progress: Progress | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# index.json


def _read_index() -> dict[str, dict]:
    path = checkpoint_dir() / _INDEX
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cache index {path} is unreadable ({err}); delete it to rebuild") from err
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ModelError(f"cache index {path}: expected {{'models': {{...}}}}, found {data!r}")
    return models


def _record(model_id: str, path: Path, digest: str, *, source: str, trusted: bool) -> None:
    """Set ``model_id``'s entry. Read, change and write happen under ``index.json.lock``: two
    processes recording at once (a batch's workers, an import beside a run) would otherwise
    each write back the index they read, and the later one drop the other's entry (a lost
    trusted entry makes an imported fine-tune fail the published hash). The write is atomic,
    so readers never take the lock."""
    folder = checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stat = path.stat()
    with exclusive_lock(folder / (_INDEX + ".lock")):
        models = _read_index()
        models[model_id] = {
            "file": path.name,
            "sha256": digest,
            "size_bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "source": source,
            "trusted_unverified": trusted,
        }
        atomic_write_json(
            folder / _INDEX, {"version": 1, "models": models}, indent=1, sort_keys=True
        )


def _unchanged(entry: dict, path: Path) -> bool:
    stat = path.stat()
    return entry.get("size_bytes") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns


# ---------------------------------------------------------------------------------------------
# the API the engine and the CLI call


def _accepted_hash(spec: registry.ModelSpec, entry: dict | None) -> str | None:
    """The hash a cached file must have: the registry's, else the one the user trusted."""
    if entry and entry.get("trusted_unverified"):
        return entry.get("sha256")
    return spec.sha256


def _check_cached(spec: registry.ModelSpec, path: Path) -> None:
    """Raise ModelError unless the cached ``path`` is the file ``spec`` (or the user) vouches
    for. Re-hashes only when size or mtime changed since the last check."""
    entry = _read_index().get(spec.id)
    if (
        entry
        and entry.get("file") == path.name
        and _unchanged(entry, path)
        and entry.get("sha256") == _accepted_hash(spec, entry)
    ):
        return
    expected = _accepted_hash(spec, entry)
    found = sha256_file(path)
    if expected is None:
        raise ModelError(
            f"{path} is cached for {spec.id!r}, which has no published sha256, and was never "
            f"trusted (its sha256 is {found}); run `vosfx models import {path} --as {spec.id} "
            "--trust-unverified` to use it anyway"
        )
    trusted = bool(entry and entry.get("trusted_unverified"))
    if found != expected:
        # a file the user imported and trusted: the published one is not what they want back
        fix = (
            f"import your file again (`vosfx models import FILE --as {spec.id} "
            "--trust-unverified`), or delete it and run "
            if trusted
            else "delete it and run "
        )
        raise ModelError(
            f"{path} fails its hash for {spec.id!r}: expected sha256 {expected}, found {found}; "
            f"{fix}`vosfx models pull {spec.id}`" + (" for the published file" if trusted else "")
        )
    _remember(spec.id, path, found, source=(entry or {}).get("source", "found"), trusted=trusted)


def _remember(model_id: str, path: Path, digest: str, *, source: str, trusted: bool) -> None:
    """:func:`_record` for a file that has just verified: the entry only spares the next run
    a re-hash, so a cache it cannot write (a shared, read-only folder filled by an admin, as
    docs/models.md suggests for air-gapped machines) is said once and the file is used."""
    try:
        _record(model_id, path, digest, source=source, trusted=trusted)
    except OSError as err:
        import logging

        logging.getLogger(__name__).warning(
            "cannot update %s (%s): %s verified and is used, but is hashed again on each run",
            checkpoint_dir() / _INDEX,
            err.strerror or err,
            path.name,
        )


def expected_sha256(model_id: str) -> str | None:
    """The sha256 ``model_id``'s checkpoint is held to: the one the user trusted on import
    (a fine-tune put in the cache under this id), else the registry's published hash."""
    spec = registry.get(model_id)
    return _accepted_hash(spec, _read_index().get(spec.id))


def is_cached(model_id: str) -> bool:
    """Whether a file sits at ``model_id``'s cache path (not whether it verifies)."""
    return checkpoint_path(model_id).is_file()


def ensure_checkpoint(
    model_id: str,
    *,
    offline: bool | None = None,
    progress: Progress | None = None,
    trust_unverified: bool = False,
    base_url: str | None = None,
) -> Path:
    """The path of ``model_id``'s verified checkpoint, downloading it when missing.

    ``offline=None`` reads ``VOSFX_OFFLINE``. Raises :class:`ModelError` for an unknown id or a
    cached file with the wrong hash, :class:`DownloadError` when the file is missing and
    offline (the message names the path to put it at) or the download fails.
    """
    spec = registry.get(model_id)
    path = checkpoint_dir() / spec.filename
    if path.is_file():
        _check_cached(spec, path)
        return path
    return _download(
        spec,
        path,
        offline=offline,
        progress=progress,
        trust_unverified=trust_unverified,
        base_url=base_url,
    )


def _download(
    spec: registry.ModelSpec,
    path: Path,
    *,
    offline: bool | None,
    progress: Progress | None,
    trust_unverified: bool,
    base_url: str | None,
) -> Path:
    if spec.sha256 is None and not trust_unverified:
        raise ModelError(
            f"{spec.id!r} has no published sha256, so a download cannot be checked; pass "
            f"--trust-unverified to download it anyway, or import a "
            f"file you trust with `vosfx models import FILE --as {spec.id} --trust-unverified`"
        )
    base_url = base_url or os.environ.get("VOSFX_MODEL_BASE_URL") or None
    digest = download_file(
        spec.url_for(base_url),
        path,
        sha256=spec.sha256,
        size_bytes=spec.size_bytes,
        offline=offline,
        progress=progress,
        what=spec.id,
    )
    _record(spec.id, path, digest, source="download", trusted=spec.sha256 is None)
    return path


def pull(
    model_id: str,
    *,
    offline: bool | None = None,
    progress: Progress | None = None,
    force: bool = False,
    trust_unverified: bool = False,
    base_url: str | None = None,
) -> Path:
    """Download ``model_id`` into the cache (``force``: again, even when a good copy exists;
    the old file stays in place until the new one has verified)."""
    spec = registry.get(model_id)
    if force:
        return _download(
            spec,
            checkpoint_dir() / spec.filename,
            offline=offline,
            progress=progress,
            trust_unverified=trust_unverified,
            base_url=base_url,
        )
    return ensure_checkpoint(
        model_id,
        offline=offline,
        progress=progress,
        trust_unverified=trust_unverified,
        base_url=base_url,
    )


@dataclass(frozen=True)
class VerifyResult:
    """``status``: "ok", "trusted" (ok against a hash the user trusted), "mismatch",
    "unverified" (no hash to check against) or "missing"."""

    model_id: str
    path: Path
    status: str
    expected_sha256: str | None = None
    found_sha256: str | None = None


def verify(
    model_ids: list[str] | None = None, *, progress: Progress | None = None
) -> list[VerifyResult]:
    """Re-hash every cached checkpoint (or those named) against the registry or the trusted
    hash in the index; a file that now verifies is recorded, one that fails is reported (not
    deleted). Models never cached are "missing"."""
    entries = _read_index()
    results = []
    for model_id in model_ids if model_ids is not None else registry.model_ids():
        spec = registry.get(model_id)
        path = checkpoint_dir() / spec.filename
        if not path.is_file():
            results.append(VerifyResult(model_id, path, "missing", spec.sha256))
            continue
        entry = entries.get(model_id)
        expected = _accepted_hash(spec, entry)
        found = sha256_file(path, progress)
        trusted = bool(entry and entry.get("trusted_unverified"))
        if expected is None:
            status = "unverified"
        elif found != expected:
            status = "mismatch"
        else:
            status = "trusted" if trusted else "ok"
            _remember(
                model_id, path, found, source=(entry or {}).get("source", "found"), trusted=trusted
            )
        results.append(VerifyResult(model_id, path, status, expected, found))
    return results


def _check_architecture(src: Path, spec: registry.ModelSpec) -> None:
    """ModelError unless the unverified file ``src`` has the tensors of ``spec``'s
    architecture (read from its pickle header, no weights, no torch): imported under the wrong
    name it would be refused only at the first render, with a list of mismatched tensors."""
    from vosfx.models.torchfile import identify

    try:
        has = identify(src)
    except ModelError as err:
        raise ModelError(f"import: {src} is not a SAM 2 checkpoint vosfx can read: {err}") from None
    if has is None:
        raise ModelError(
            f"import: {src}'s tensors fit no known SAM 2 architecture; it cannot run as {spec.id!r}"
        )
    if has.config != spec.config:
        raise ModelError(
            f"import: {src} has the tensors of {has.id}, not of {spec.id}; import it --as {has.id}"
        )


def import_checkpoint(
    file: str | Path,
    model_id: str | None = None,
    *,
    trust_unverified: bool = False,
    progress: Progress | None = None,
) -> tuple[str, Path]:
    """Copy a checkpoint the user got elsewhere into the cache; returns (model id, cache path).

    Without ``model_id`` the file is identified by its sha256 among the registry's rows. With
    ``model_id`` its hash must be that row's, unless ``trust_unverified`` (a fine-tune, a test
    checkpoint, a SAM 2.0 file): then the file's own hash is recorded and later runs hold the
    file to it.
    """
    src = Path(file).expanduser()
    if not src.is_file():
        raise ModelError(f"import: expected a checkpoint file, found nothing at {src}")
    found = sha256_file(src, progress)
    if model_id is None:
        spec = registry.find_by_sha256(found)
        if spec is None:
            raise ModelError(
                f"import: {src} (sha256 {found}) matches no known checkpoint; name the model "
                "with --as NAME (and --trust-unverified for a file that is not the published one)"
            )
    else:
        spec = registry.get(model_id)
        if spec.sha256 != found and not trust_unverified:
            expected = spec.sha256 or "none published"
            raise ModelError(
                f"import: {src} is not the published {spec.id!r}: expected sha256 {expected}, "
                f"found {found}; pass --trust-unverified to use it as {spec.id!r} anyway"
            )
        if spec.sha256 != found:
            _check_architecture(src, spec)
    dest = checkpoint_dir() / spec.filename
    # Copy beside the destination and rename, so a crash never leaves a half file under the
    # real name; a failed copy (a full disk) leaves no half file at all, and a killed one
    # leaves one name that the next import overwrites.
    part = dest.with_name(dest.name + ".import")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, part)
        os.replace(part, dest)
    except OSError as err:
        part.unlink(missing_ok=True)
        raise ModelError(
            f"import: cannot copy {src} to {dest}: {err.strerror or err}; the cache is unchanged"
        ) from None
    _record(spec.id, dest, found, source="import", trusted=spec.sha256 != found)
    return spec.id, dest

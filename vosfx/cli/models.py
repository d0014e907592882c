"""`vosfx models`: list, pull, path, verify, import and export SAM 2 checkpoints.

Thin: every command calls one function of :mod:`vosfx.models.cache` (or the exporter) and
prints its result; errors are VosfxError subclasses that ``vosfx.cli.main`` turns into exit
codes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from vosfx.errors import BackendError, ModelError


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


class _Bar:
    """A click progress bar fed by ``progress(done_bytes, total_bytes)`` callbacks, showing
    MiB done and MiB/s. Created lazily: the total is known only once the server answers."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.done = 0
        self.start = time.monotonic()

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is None:
            self.bar = click.progressbar(
                length=total or 0,
                label=self.label,
                file=sys.stderr,
                item_show_func=lambda s: s,
            )
            self.bar.__enter__()
            self.done = 0
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = f"{_mib(done)} at {done / elapsed / 2**20:.1f} MiB/s"
        self.bar.update(done - self.done, current_item=rate)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _run_with_bar(label: str, quiet: bool, fn, **kwargs):
    bar = None if quiet else _Bar(label)
    try:
        return fn(progress=bar, **kwargs)
    finally:
        if bar is not None:
            bar.close()


@click.group()
def models() -> None:
    """Manage SAM 2 checkpoints in the cache ($VOSFX_HOME, or the platform's cache dir)."""


def _file_hash(spec, entries: dict) -> str:
    """The sha256 prefix of the cached file itself: as the cache last verified it (an
    imported fine-tune's own hash, marked), else the published hash it will be held to."""
    entry = entries.get(spec.id) or {}
    own = entry.get("sha256") if entry.get("file") == spec.filename else None
    if own:
        return own[:12] + (" (own, not the published)" if own != spec.sha256 else "")
    if spec.sha256:
        return spec.sha256[:12] + " (published)"
    return "(unpublished)"


@models.command("list")
def list_cmd() -> None:
    """Every known model: id, size, whether it is cached, and the sha256 of the cached file
    (as last verified), else the published one."""
    from vosfx.models import cache, registry

    entries = cache._read_index()
    rows = [("ID", "SIZE", "CACHED", "SHA256", "CONFIG")]
    for spec in registry.all_models():
        cached = cache.is_cached(spec.id)
        sha = (
            _file_hash(spec, entries)
            if cached
            else (spec.sha256[:12] if spec.sha256 else "(unpublished)")
        )
        rows.append((spec.id, _mib(spec.size_bytes), "yes" if cached else "no", sha, spec.config))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    click.echo(f"\ncache: {cache.checkpoint_dir()}")


@models.command()
@click.argument("name")
@click.option("--offline", is_flag=True, help="Never touch the network (also VOSFX_OFFLINE=1).")
@click.option("--force", is_flag=True, help="Download again even when a good copy is cached.")
@click.option(
    "--trust-unverified",
    is_flag=True,
    help="Allow a model with no published sha256 (the SAM 2.0 rows).",
)
@click.option(
    "--base-url",
    default=None,
    metavar="URL",
    help="Fetch URL/<file> instead of the publisher's (also VOSFX_MODEL_BASE_URL).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def pull(
    name: str,
    offline: bool | None,
    force: bool,
    trust_unverified: bool,
    base_url: str | None,
    quiet: bool,
) -> None:
    """Download NAME into the cache (resuming an interrupted download) and check its sha256."""
    from vosfx.models import cache

    path = _run_with_bar(
        name,
        quiet,
        cache.pull,
        model_id=name,
        offline=offline or None,
        force=force,
        trust_unverified=trust_unverified,
        base_url=base_url,
    )
    click.echo(str(path))


@models.command()
@click.argument("name")
def path(name: str) -> None:
    """Print where NAME's checkpoint lives (or would live) in the cache."""
    from vosfx.models import cache

    click.echo(str(cache.checkpoint_path(name)))


@models.command()
@click.argument("names", nargs=-1)
@click.option("--all", "show_all", is_flag=True, help="Also list models that are not cached.")
def verify(names: tuple[str, ...], show_all: bool) -> None:
    """Re-hash cached checkpoints (all, or NAMES); exit 7 if any fails."""
    from vosfx.models import cache

    results = cache.verify(list(names) or None)
    bad = []
    for r in results:
        if r.status == "missing" and not (show_all or names):
            continue
        click.echo(f"{r.status:<10}  {r.model_id:<18}  {r.path}")
        if r.status == "mismatch":
            click.echo(
                f"            expected {r.expected_sha256}\n            found    {r.found_sha256}"
            )
        if r.status in ("mismatch", "unverified") or (names and r.status == "missing"):
            bad.append(r.model_id)
    if not any(r.status != "missing" for r in results) and not names:
        click.echo(f"no checkpoints cached in {cache.checkpoint_dir()}")
    if bad:
        raise ModelError(
            f"verify: expected every checked checkpoint to pass, found failures: {', '.join(bad)}"
        )


@models.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--as",
    "as_name",
    default=None,
    metavar="NAME",
    help="The model this file is (default: by its sha256, else by its tensors' shapes).",
)
@click.option(
    "--trust-unverified",
    is_flag=True,
    help="Accept a file whose sha256 is not the published one (a fine-tune); its own "
    "hash is recorded and checked from then on.",
)
def import_cmd(file: Path, as_name: str | None, trust_unverified: bool) -> None:
    """Copy a checkpoint FILE you got elsewhere into the cache, after checking its hash.

    The model is the one whose published sha256 the file has; failing that, the one whose
    architecture its tensors have (then --trust-unverified is needed, as the hash is not the
    published one)."""
    from vosfx.models import cache, registry
    from vosfx.models.torchfile import identify

    if (
        as_name is None
        and file.is_file()
        and registry.find_by_sha256(cache.sha256_file(file)) is None
    ):
        try:
            spec = identify(file)
        except ModelError:  # not a torch checkpoint at all: said below
            spec = None
        if spec is None:
            raise ModelError(
                f"import: {file} is no published checkpoint and its tensors fit no known "
                f"SAM 2 architecture; pass --as NAME --trust-unverified (NAME: "
                f"{', '.join(registry.model_ids())})"
            )
        if not trust_unverified:
            raise ModelError(
                f"import: {file} has the tensors of {spec.id} but not its published sha256 "
                f"(a fine-tune?); pass --trust-unverified to import it as {spec.id}"
            )
        as_name = spec.id
    model_id, dest = cache.import_checkpoint(file, as_name, trust_unverified=trust_unverified)
    click.echo(f"{model_id}: {dest}")


@models.command()
@click.argument("name")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Bundle folder (default: in the cache).",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice(["fp16", "int8", "int8-u8", "bf16"]),
    help="Extra variants: fp16 (GPU), int8 (quantised image encoder and attention scores, "
    "CPU: the weights this CPU needs), int8-u8 (the uint8-weight one, for x86 CPUs without "
    "VNNI), bf16 (image encoder and memory attention for OpenVINO, CPUs with bf16); "
    "repeatable.",
)
@click.option(
    "--image-size",
    type=int,
    default=None,
    help="Model input size in pixels, a multiple of 16 (default or 0: the model's own, 1024); "
    "smaller for drafts.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def export(
    name: str, out_dir: Path | None, variants: tuple[str, ...], image_size: int | None, quiet: bool
) -> None:
    """Export NAME's stages to an ONNX bundle for the ONNX Runtime backend."""
    from vosfx.cli.flags import check_flag_values

    if image_size is not None:  # before a download or an export starts
        check_flag_values(
            {"model": {"image_size": image_size}}, {"model": {"image_size": "image_size"}}
        )
    image_size = image_size or None  # 0: the model's own, as everywhere else
    try:
        from vosfx.engine.export import export_bundle
    except ModuleNotFoundError as err:
        if err.name not in ("vosfx.engine.export", "torch", "sam2", "onnx"):
            raise
        raise BackendError(
            f"`vosfx models export` needs the exporter (vosfx.engine.export) and torch, sam2 "
            f"and onnx (pip install 'vosfx[torch]'); found {err.name} missing"
        ) from err

    def progress(event) -> None:
        if not quiet:
            click.echo(str(getattr(event, "message", "") or event), err=True)

    bundle = export_bundle(
        name, out_dir=out_dir, variants=variants, image_size=image_size, progress=progress
    )
    click.echo(str(bundle))

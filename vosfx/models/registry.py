"""The table of SAM 2 checkpoints vosfx knows: one :class:`ModelSpec` row per model.

Each row names the publisher's file (URL, byte size, sha256) and the ``sam2`` config that builds
the architecture it fits. The cache (:mod:`vosfx.models.cache`) downloads and checks files by
this table; the CLI's ``vosfx models list`` prints it.

SAM 2.1 hashes and sizes are the published ones. The SAM 2.0 files (072824) have no sha256 or
size we could confirm, so those rows hold ``None``: the cache refuses to trust an unhashed
download unless the caller says ``trust_unverified`` (``--trust-unverified``). Never fill in a
hash that was not read off the real file.

Tests and users with a fine-tune add rows with :func:`register` (no edit of this table needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from vosfx.errors import ModelError

DEFAULT_MODEL = "sam2.1-tiny"

_BASE_21 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_BASE_20 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"


@dataclass(frozen=True)
class ModelSpec:
    """One checkpoint.

    ``config`` is a ``sam2`` hydra config name (``configs/sam2.1/sam2.1_hiera_t.yaml``).
    ``sha256`` (64 lowercase hex) and ``size_bytes`` are ``None`` when not published.
    ``mem_mask_scale`` / ``mem_mask_bias`` are what the memory encoder applies to mask logits
    before the sigmoid (``sigmoid_scale_for_mem_enc`` / ``sigmoid_bias_for_mem_enc``): 20 / -10
    for every stock checkpoint (the ``sam2`` configs' values); the MOSEv2 fine-tune (MSS) was
    trained with 7.5 / -4.0, so a row for it must carry those or its memories are off.
    """

    id: str
    url: str
    config: str
    sha256: str | None = None
    size_bytes: int | None = None
    family: str = "sam2.1"
    mem_mask_scale: float = 20.0
    mem_mask_bias: float = -10.0
    description: str = ""

    def __post_init__(self) -> None:
        if self.sha256 is not None:
            digest = self.sha256.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ModelError(
                    f"model {self.id!r}: expected sha256 as 64 hex digits, found {self.sha256!r}"
                )
            object.__setattr__(self, "sha256", digest)
        if not self.filename.endswith(".pt"):
            raise ModelError(f"model {self.id!r}: expected a URL to a .pt file, found {self.url!r}")

    @property
    def filename(self) -> str:
        """The file's name as published (``sam2.1_hiera_tiny.pt``); also its name in the cache."""
        return PurePosixPath(urlsplit(self.url).path).name

    def url_for(self, base_url: str | None = None) -> str:
        """The download URL; with ``base_url`` (a mirror or a test server) the file is looked
        up flat under it: ``{base_url}/{filename}``."""
        if not base_url:
            return self.url
        return f"{base_url.rstrip('/')}/{self.filename}"

    def hydra_overrides(self) -> list[str]:
        """Overrides that make a stock ``sam2`` config match this row (memory mask scaling)."""
        return [
            f"++model.sigmoid_scale_for_mem_enc={self.mem_mask_scale}",
            f"++model.sigmoid_bias_for_mem_enc={self.mem_mask_bias}",
        ]


def _row(
    id_: str,
    base: str,
    name: str,
    cfg: str,
    sha: str | None,
    size: int | None,
    family: str,
    desc: str,
) -> ModelSpec:
    return ModelSpec(
        id=id_,
        url=base + name,
        config=cfg,
        sha256=sha,
        size_bytes=size,
        family=family,
        description=desc,
    )


# fmt: off
# id, base URL, file, sam2 config, sha256, bytes, family, note
_TABLE: tuple[ModelSpec, ...] = (
    _row("sam2.1-tiny", _BASE_21, "sam2.1_hiera_tiny.pt", "configs/sam2.1/sam2.1_hiera_t.yaml",
         "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156_008_466,
         "sam2.1", "38.9M params, fastest"),
    _row("sam2.1-small", _BASE_21, "sam2.1_hiera_small.pt", "configs/sam2.1/sam2.1_hiera_s.yaml",
         "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184_416_285,
         "sam2.1", "46M params"),
    _row("sam2.1-base-plus", _BASE_21, "sam2.1_hiera_base_plus.pt",
         "configs/sam2.1/sam2.1_hiera_b+.yaml",
         "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323_606_802,
         "sam2.1", "80.8M params"),
    _row("sam2.1-large", _BASE_21, "sam2.1_hiera_large.pt", "configs/sam2.1/sam2.1_hiera_l.yaml",
         "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898_083_611,
         "sam2.1", "224.4M params, most accurate"),
    # SAM 2.0: sha256 and size unpublished here; never fill them in from memory.
    _row("sam2-tiny", _BASE_20, "sam2_hiera_tiny.pt", "configs/sam2/sam2_hiera_t.yaml",
         None, None, "sam2", "SAM 2.0 (July 2024)"),
    _row("sam2-small", _BASE_20, "sam2_hiera_small.pt", "configs/sam2/sam2_hiera_s.yaml",
         None, None, "sam2", "SAM 2.0 (July 2024)"),
    _row("sam2-base-plus", _BASE_20, "sam2_hiera_base_plus.pt", "configs/sam2/sam2_hiera_b+.yaml",
         None, None, "sam2", "SAM 2.0 (July 2024)"),
    _row("sam2-large", _BASE_20, "sam2_hiera_large.pt", "configs/sam2/sam2_hiera_l.yaml",
         None, None, "sam2", "SAM 2.0 (July 2024)"),
)
# fmt: on

_MODELS: dict[str, ModelSpec] = {spec.id: spec for spec in _TABLE}


def model_ids() -> list[str]:
    """Every registered id, in table order (built-ins first, then registered ones)."""
    return list(_MODELS)


def all_models() -> list[ModelSpec]:
    return list(_MODELS.values())


def get(model_id: str) -> ModelSpec:
    """The row for ``model_id``; :class:`ModelError` listing the known ids when unknown."""
    try:
        return _MODELS[model_id]
    except KeyError:
        raise ModelError(
            f"unknown model {model_id!r}; expected one of: {', '.join(_MODELS)}"
        ) from None


def no_such_model(source: str) -> ModelError:
    """The error for ``source``, neither a known model id nor an existing checkpoint file:
    a name that looks like a file (a folder in it, or a checkpoint's extension) is said to
    be missing, anything else is said to be no model id."""
    text = str(source)
    pathlike = "/" in text or "\\" in text or text.lower().endswith((".pt", ".pth", ".ckpt"))
    if pathlike:
        return ModelError(f"checkpoint file {text} does not exist")
    return ModelError(
        f"expected a model id ({', '.join(_MODELS)}) or a checkpoint file, found {text!r}"
    )


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add a row (a fine-tune, a test model). An existing id needs ``replace=True``."""
    if not isinstance(spec, ModelSpec):
        raise ModelError(f"register: expected a ModelSpec, found {type(spec).__name__}")
    if spec.id in _MODELS and not replace:
        raise ModelError(f"model {spec.id!r} is already registered; pass replace=True")
    _MODELS[spec.id] = spec
    return spec


def unregister(model_id: str) -> None:
    """Remove a row added with :func:`register` (built-in rows come back on re-import only)."""
    get(model_id)
    del _MODELS[model_id]


def reset() -> None:
    """Back to the built-in table (tests call this after registering rows)."""
    _MODELS.clear()
    _MODELS.update({spec.id: spec for spec in _TABLE})


def find_by_sha256(digest: str) -> ModelSpec | None:
    """The row whose published sha256 is ``digest`` (hex, any case), or ``None``."""
    digest = digest.lower()
    for spec in _MODELS.values():
        if spec.sha256 == digest:
            return spec
    return None


def find_by_filename(name: str) -> ModelSpec | None:
    """The row whose published file is called ``name`` (``sam2.1_hiera_small.pt``), or None."""
    for spec in _MODELS.values():
        if spec.filename == name:
            return spec
    return None

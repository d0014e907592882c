"""Read an official SAM 2 checkpoint without torch and without running pickled code.

A file written by ``torch.save`` (zip format, torch >= 1.6) is a zip archive::

    <prefix>/data.pkl      the object tree (pickle): {"model": OrderedDict(name -> tensor)}
    <prefix>/data/<key>    one raw storage per key (little-endian unless <prefix>/byteorder)
    <prefix>/byteorder     "little" or "big" (absent in older files: little)

The pickle is read with an :class:`pickle.Unpickler` whose ``find_class`` knows six names and
nothing else (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
``_rebuild_parameter``, the ``torch.*Storage`` types): any other global (``os.system``,
``builtins.eval``, a class with a ``__reduce__``) stops the read with :class:`ModelError`, so no
code in the file ever runs; a BUILD of state into what they return is refused too. Tensors
come back as :class:`TensorRef` (storage key, dtype, shape, strides) first, so a file's layout
can be checked against the model before any weight is read; :func:`read_checkpoint` then
materialises them as numpy arrays, bounds-checked against their storage's real size.

The file's sha256 is checked first (``sha256=``), before the pickle is parsed.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vosfx.errors import ModelError
from vosfx.models import registry
from vosfx.models.shapes import Shapes, check_shapes

if TYPE_CHECKING:
    from typing_extensions import Self

# torch storage type name -> numpy dtype (bfloat16 is read as its uint16 bit pattern)
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
DTYPE_NAMES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


# data.pkl of a state dict: names and tensor headers, well under this
_MAX_PICKLE_BYTES = 64 << 20


class _Unbuildable:
    """Refuses pickle's BUILD opcode: without a ``__setstate__`` it writes straight into the
    instance's ``__dict__``, frozen or not, so a file could rewrite a tensor's strides or offset
    after :func:`_rebuild_tensor_v2` checked them (and read memory outside its storage), or
    rename this module's own storage-type singletons for every later read."""

    def __setstate__(self, state: object) -> None:
        raise pickle.UnpicklingError(
            f"a BUILD of {type(self).__name__} (state after the tensor header) is refused"
        )


@dataclass(frozen=True)
class _StorageType(_Unbuildable):
    name: str  # "FloatStorage"


@dataclass(frozen=True)
class Storage(_Unbuildable):
    key: str  # the zip entry data/<key>
    type_name: str  # "FloatStorage"
    numel: int


@dataclass(frozen=True)
class TensorRef(_Unbuildable):
    """A tensor as the pickle describes it: ``shape`` and ``strides`` in elements."""

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def dtype(self) -> str:
        """``float32``, ``bfloat16``, ... (torch's names without the prefix)."""
        return DTYPE_NAMES[self.storage.type_name]


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
) -> TensorRef:
    if not isinstance(storage, Storage):
        raise pickle.UnpicklingError(f"expected a storage, found {type(storage).__name__}")
    if not (
        isinstance(storage_offset, int)
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and len(size) == len(stride)
        and all(isinstance(v, int) and v >= 0 for v in (*size, *stride, storage_offset))
    ):
        raise pickle.UnpicklingError(
            f"malformed tensor header: offset {storage_offset!r}, size {size!r}, stride {stride!r}"
        )
    if backward_hooks:
        raise pickle.UnpicklingError("a tensor with backward hooks (code) is refused")
    return TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state) -> TensorRef:
    if backward_hooks:
        raise pickle.UnpicklingError("a parameter with backward hooks (code) is refused")
    return _rebuild_tensor_v2(data.storage, data.offset, data.shape, data.strides)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Knows only :data:`_ALLOWED`; storages are ``("storage", type, key, location, numel)``
    persistent ids as ``torch.save`` writes them."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name} (only tensors and dicts may be in a checkpoint)"
            ) from None

    def persistent_load(self, pid: Any) -> Storage:
        if (
            not isinstance(pid, tuple)
            or len(pid) != 5
            or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType)
            or not isinstance(pid[2], str)
            or not isinstance(pid[4], int)
            or pid[4] < 0
        ):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return Storage(key=pid[2], type_name=pid[1].name, numel=pid[4])


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CheckpointFile:
    """An open torch zip checkpoint: ``tensors`` ({name: TensorRef}) after :meth:`open`;
    :meth:`array` reads one tensor's data. A context manager (closes the zip)."""

    def __init__(self, path: str | Path, *, sha256: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"expected a checkpoint file at {self.path}, found nothing")
        if sha256 is not None:
            found = sha256_of(self.path)
            if found != sha256.lower():
                raise ModelError(
                    f"{self.path}: sha256 mismatch: expected {sha256.lower()}, "
                    f"found {found}; the file is not the checkpoint it claims to be"
                )
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as err:
            raise ModelError(
                f"{self.path}: expected a torch checkpoint (the zip archive torch.save "
                f"writes), found a file that is not one ({err})"
            ) from None
        self.tensors = self._read_tree()

    def _entry(self, suffix: str) -> str | None:
        for name in self._zip.namelist():
            if name.endswith(suffix) and name.count("/") == suffix.count("/"):
                return name
        return None

    def _read_tree(self) -> dict[str, TensorRef]:
        pkl = self._entry("/data.pkl")
        if pkl is None:
            raise ModelError(
                f"{self.path}: expected a torch zip checkpoint with data.pkl, "
                "found none (a legacy torch file or not a checkpoint)"
            )
        self._prefix = pkl[: -len("data.pkl")]
        order = self._entry("/byteorder")
        self._big = order is not None and self._zip.read(order).strip() == b"big"
        try:
            with self._zip.open(pkl) as fh:  # bounded: a compressed data.pkl may inflate
                text = fh.read(_MAX_PICKLE_BYTES + 1)
            if len(text) > _MAX_PICKLE_BYTES:
                raise ModelError(
                    f"{self.path}: data.pkl is over {_MAX_PICKLE_BYTES >> 20} MiB: not a "
                    "state dict's (SAM 2.1 large's is under 1 MiB)"
                )
            tree = _Unpickler(io.BytesIO(text)).load()
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            zipfile.BadZipFile,
            OSError,
        ) as err:
            raise ModelError(f"{self.path}: not a weights-only checkpoint: {err}") from None
        if isinstance(tree, Mapping) and isinstance(tree.get("model"), Mapping):
            tree = tree["model"]
        if not isinstance(tree, Mapping) or not all(
            isinstance(k, str) and isinstance(v, TensorRef) for k, v in tree.items()
        ):
            raise ModelError(
                f"{self.path}: expected {{'model': state_dict}} of named tensors, "
                f"found {type(tree).__name__}"
            )
        return dict(tree)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: t.shape for k, t in self.tensors.items()}

    def array(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a C-contiguous numpy array (bfloat16 widened to float32)."""
        ref = self.tensors[name]
        entry = f"{self._prefix}data/{ref.storage.key}"
        try:
            # torch writes its storages uncompressed; a compressed one could inflate to any
            # size before its length is checked (a few KB of file asking for gigabytes)
            if self._zip.getinfo(entry).compress_type != zipfile.ZIP_STORED:
                raise ModelError(
                    f"{self.path}: tensor {name!r}: storage {entry} is compressed, which torch "
                    "never writes: not a weights-only checkpoint"
                )
            raw = self._zip.read(entry)
        except KeyError:
            raise ModelError(
                f"{self.path}: tensor {name!r}: storage {entry} is missing (truncated file?)"
            ) from None
        except (zipfile.BadZipFile, OSError) as err:
            raise ModelError(f"{self.path}: tensor {name!r}: {err}") from None
        dtype = np.dtype(STORAGE_DTYPES[ref.storage.type_name])
        if self._big:
            dtype = dtype.newbyteorder(">")
        if len(raw) != ref.storage.numel * dtype.itemsize:
            raise ModelError(
                f"{self.path}: tensor {name!r}: storage holds {len(raw)} bytes, "
                f"expected {ref.storage.numel * dtype.itemsize}"
            )
        if ref.offset < 0 or any(s < 0 for s in ref.strides):  # as_strided would read outside
            raise ModelError(f"{self.path}: tensor {name!r}: negative offset or stride")
        flat = np.frombuffer(raw, dtype=dtype)
        if any(n == 0 for n in ref.shape):
            out = np.zeros(ref.shape, dtype)
        else:
            last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.strides))
            if last >= ref.storage.numel:
                raise ModelError(
                    f"{self.path}: tensor {name!r} reaches past its storage "
                    f"({last} >= {ref.storage.numel} elements)"
                )
            out = np.lib.stride_tricks.as_strided(
                flat[ref.offset :],
                shape=ref.shape,
                strides=tuple(s * dtype.itemsize for s in ref.strides),
                writeable=False,
            )
        out = np.ascontiguousarray(out).astype(dtype.newbyteorder("="), copy=False)
        if ref.storage.type_name == "BFloat16Storage":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Layout = Mapping[str, tuple[tuple[int, ...], str]]
"""{name: (shape, dtype name)} a model expects."""


def check_layout(found: Mapping[str, TensorRef], expected: Layout, *, source: str) -> None:
    """Raise ModelError unless ``found`` has exactly ``expected``'s names, shapes and dtypes
    (the message lists missing, unexpected and mismatched tensors)."""
    check_shapes(
        {k: v[0] for k, v in expected.items()},
        {k: t.shape for k, t in found.items()},
        source=source,
    )
    wrong = sorted(
        f"{k}: expected {expected[k][1]}, found {t.dtype}"
        for k, t in found.items()
        if t.dtype != expected[k][1]
    )
    if wrong:
        shown = ", ".join(wrong[:12]) + (
            f", ... and {len(wrong) - 12} more" if len(wrong) > 12 else ""
        )
        raise ModelError(f"{source}: dtype mismatches ({len(wrong)}): {shown}")


def read_checkpoint(
    path: str | Path, *, expected: Layout | None = None, sha256: str | None = None
) -> dict[str, np.ndarray]:
    """``{name: array}`` of a torch checkpoint, read without torch and without running code.

    ``sha256`` (hex) is verified before anything is parsed; ``expected`` ({name: (shape,
    dtype)}) is checked against the file's tensor headers before any weight is read.
    Raises :class:`ModelError`.
    """
    with CheckpointFile(path, sha256=sha256) as ckpt:
        if expected is not None:
            check_layout(ckpt.tensors, expected, source=str(path))
        return {name: ckpt.array(name) for name in ckpt.tensors}


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` from the file's pickle alone (no weight is read)."""
    with CheckpointFile(path) as ckpt:
        return ckpt.shapes()


_HIERA_SIZES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}
"""(trunk embed dim, trunk blocks) -> the size letter in the sam2 config names."""


def infer_config(shapes: Shapes) -> str | None:
    """The stock ``sam2`` config whose architecture a state dict's layout looks like, or None.

    Hiera sizes differ in embed dim and block count (tiny 96/12, small 96/16, base-plus 112/24,
    large 144/48); SAM 2.1 added ``no_obj_embed_spatial``. Only a guess: the strict shape check
    that follows decides.
    """
    patch = shapes.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {k.split(".")[3] for k in shapes if k.startswith("image_encoder.trunk.blocks.")}
    size = _HIERA_SIZES.get((patch[0], len(blocks)))
    if size is None:
        return None
    if "no_obj_embed_spatial" in shapes:
        return f"configs/sam2.1/sam2.1_hiera_{size}.yaml"
    return f"configs/sam2/sam2_hiera_{size}.yaml"


def identify(path: str | Path) -> registry.ModelSpec | None:
    """The registry row whose architecture ``path``'s tensors have (read from the file's
    pickle header without torch and without reading weights), or None. SAM 2.1 and 2.0 rows
    of one size differ in their tensors, so the family is told apart too."""
    config = infer_config(read_shapes(path))
    if config is None:
        return None
    return next((s for s in registry.all_models() if s.config == config), None)

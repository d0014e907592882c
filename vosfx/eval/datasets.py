"""Read (and write) datasets in the DAVIS layout.

::

    <root>/JPEGImages/[480p/]<seq>/00000.jpg ...
    <root>/Annotations/[480p/]<seq>/00000.png ...   palette PNGs: 0 background, k object k,
                                                    255 void (counted as background, as the
                                                    DAVIS 2017 toolkit does)

A sequence whose label maps hold only 0 and 255 is a binary mask (DAVIS 2016's annotations,
``cv2.imwrite(mask * 255)``): there 255 is object 1, not void.

Annotations may cover every frame (DAVIS train/val) or only some (test sets, where each object
is annotated on the frame it first appears). Label PNGs are read without Pillow: OpenCV expands
a palette image to colours, and the file's own ``PLTE`` chunk maps them back to indices.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import numpy as np

from vosfx.errors import InputError, OutputError
from vosfx.types import Frame, Prompt

VOID_LABEL = 255
FRAME_TIME_BASE = Fraction(1, 24)  # DAVIS has no timing; 24 fps is the dataset's capture rate


def is_binary_mask(values: set[int]) -> bool:
    """True for a sequence whose label values (over all its frames) are only 0 and 255: a 0/255
    binary mask, read as object 1, since an all-void ground truth would score nothing."""
    return VOID_LABEL in values and values <= {0, VOID_LABEL}


def davis_palette() -> np.ndarray:
    """(256, 3) uint8 RGB: the DAVIS/PASCAL VOC palette (index 1 = (128, 0, 0)). Each index's
    bits are dealt round-robin to R, G, B from the most significant bit down."""
    idx = np.arange(256)
    pal = np.zeros((256, 3), np.int64)
    for shift in range(8):
        for ch in range(3):
            bit = (idx >> (3 * shift + ch)) & 1
            pal[:, ch] |= bit << (7 - shift)
    return pal.astype(np.uint8)


def _png_chunks(data: bytes) -> dict[bytes, bytes]:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return {}
    chunks: dict[bytes, bytes] = {}
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.setdefault(kind, data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return chunks


def read_label_png(path: str | Path) -> np.ndarray:
    """(H, W) uint8 label map from a palette or 8-bit grayscale PNG (values are object ids).

    Raises InputError for an unreadable file or a colour PNG without a palette.
    """
    import cv2

    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise InputError(f"{path}: expected a PNG label map, found an unreadable or missing file")
    if img.ndim == 2:
        if img.dtype != np.uint8 and int(img.max(initial=0)) > 255:
            raise InputError(f"{path}: expected labels 0-255, found up to {int(img.max())}")
        return img.astype(np.uint8, copy=False)
    plte = _png_chunks(data).get(b"PLTE")
    if plte is None:
        raise InputError(f"{path}: expected a palette or grayscale PNG, found a colour image")
    pal = np.frombuffer(plte, np.uint8).reshape(-1, 3).astype(np.int64)
    codes = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    bgr = img[..., :3].astype(np.int64)
    pix = (bgr[..., 2] << 16) | (bgr[..., 1] << 8) | bgr[..., 0]
    # First index of each colour wins when a palette repeats colours.
    order = np.argsort(codes, kind="stable")
    pos = np.clip(np.searchsorted(codes[order], pix), 0, len(codes) - 1)
    found = codes[order][pos] == pix
    if not found.all():
        raise InputError(f"{path}: found pixel colours that are not in the PNG's palette")
    return order[pos].astype(np.uint8)


def write_label_png(
    path: str | Path, labels: np.ndarray, palette: np.ndarray | None = None
) -> None:
    """Write a (H, W) uint8 label map as an 8-bit palette PNG (the DAVIS palette by default),
    which the DAVIS and MOSE toolkits (Pillow) and :func:`read_label_png` read back as ids."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise OutputError(
            f"expected a (H, W) uint8 label map, found {labels.dtype} of shape {labels.shape}"
        )
    pal = davis_palette() if palette is None else np.asarray(palette, np.uint8)
    h, w = labels.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    rows = np.concatenate([np.zeros((h, 1), np.uint8), labels], axis=1)  # filter byte 0 (none)
    png = b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)),  # 8-bit, colour type 3
            chunk(b"PLTE", pal.reshape(-1).tobytes()),
            chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            chunk(b"IEND", b""),
        ]
    )
    try:
        Path(path).write_bytes(png)
    except OSError as err:
        raise OutputError(f"{path}: cannot write the label PNG ({err.strerror})") from err


@dataclass(frozen=True)
class Sequence:
    """One clip: frame JPEGs in order, and label PNGs for the frames that have one."""

    name: str
    frame_paths: tuple[Path, ...]
    annotation_paths: dict[str, Path]  # frame stem ("00000") -> label PNG

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def stems(self) -> list[str]:
        return [p.stem for p in self.frame_paths]

    def frame(self, index: int) -> Frame:
        """Frame ``index`` as RGB uint8, pts = index in 1/24 s units (DAVIS has no timing)."""
        import cv2

        path = self.frame_paths[index]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{path}: expected a JPEG frame, found an unreadable file")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return Frame(index=index, image=rgb, pts=index, time_base=FRAME_TIME_BASE)

    @cached_property
    def binary(self) -> bool:
        """Whether the annotations are 0/255 binary masks (:func:`is_binary_mask`)."""
        values: set[int] = set()
        for path in self.annotation_paths.values():
            values.update(int(v) for v in np.unique(read_label_png(path)))
        return is_binary_mask(values)

    def annotation(self, index: int) -> np.ndarray | None:
        """(H, W) uint8 labels of frame ``index`` (void 255 → 0; 255 → 1 in a binary mask), or
        None if not annotated."""
        path = self.annotation_paths.get(self.frame_paths[index].stem)
        if path is None:
            return None
        labels = read_label_png(path)
        labels[labels == VOID_LABEL] = 1 if self.binary else 0
        return labels

    def object_ids(self) -> tuple[int, ...]:
        """Every object id in any annotation, ascending."""
        ids: set[int] = set()
        for i in range(len(self)):
            labels = self.annotation(i)
            if labels is not None:
                ids.update(int(v) for v in np.unique(labels) if v != 0)
        return tuple(sorted(ids))

    def first_frame_prompts(self) -> list[Prompt]:
        """One mask prompt per object, on the first annotated frame where it appears, ordered
        by frame then object id. ``mask``: (H, W) bool at frame resolution."""
        prompts: list[Prompt] = []
        seen: set[int] = set()
        for i in range(len(self)):
            labels = self.annotation(i)
            if labels is None:
                continue
            for obj in (int(v) for v in np.unique(labels) if v != 0 and v not in seen):
                seen.add(obj)
                prompts.append(Prompt(frame_index=i, obj_id=obj, mask=labels == obj))
        return prompts


def _layout_dir(root: Path, name: str) -> Path:
    base = root / name
    return base / "480p" if (base / "480p").is_dir() else base


class DavisDataset:
    """A DAVIS-layout folder. ``sequences`` lists clips that have both frames and annotations."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.image_dir = _layout_dir(self.root, "JPEGImages")
        self.annotation_dir = _layout_dir(self.root, "Annotations")
        for d in (self.image_dir, self.annotation_dir):
            if not d.is_dir():
                raise InputError(
                    f"{self.root}: expected a DAVIS layout (JPEGImages/<seq>/*.jpg and "
                    f"Annotations/<seq>/*.png), found no folder {d}"
                )
        self.sequences = sorted(
            p.name
            for p in self.image_dir.iterdir()
            if p.is_dir() and (self.annotation_dir / p.name).is_dir()
        )

    def __len__(self) -> int:
        return len(self.sequences)

    def sequence(self, name: str) -> Sequence:
        if name not in self.sequences:
            raise InputError(
                f"{self.root}: no sequence {name!r}; found {', '.join(self.sequences) or 'none'}"
            )
        frames = tuple(sorted((self.image_dir / name).glob("*.jpg")))
        if not frames:
            raise InputError(f"{self.image_dir / name}: expected *.jpg frames, found none")
        pngs = {p.stem: p for p in sorted((self.annotation_dir / name).glob("*.png"))}
        return Sequence(name=name, frame_paths=frames, annotation_paths=pngs)

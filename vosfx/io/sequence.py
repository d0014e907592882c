"""Image sequences as a frame source: a folder of PNG/JPG/TIFF/EXR or a printf pattern.

Frame ``i`` (its position) is the ``i``-th file, with ``time_base = 1/fps`` and ``pts = i``.
A numbered sequence (``shot.1001.exr ... shot.1100.exr``: a printf pattern, or a folder whose
files share one name around their last run of digits) is sorted by those numbers and keeps
them (:class:`~vosfx.types.FrameNumbers` on its ``VideoInfo``): image-sequence outputs are
named by them, movie outputs start at their timecode, and missing numbers are reported as
gaps. Folders where no two names share one (``a.png``, ``b.png``) are sorted naturally (``f2``
before ``f10``) and numbered by position; a numbered sequence beside other images is refused.
A folder's hidden files (``._shot.1001.exr``) are never frames.
Two files with the same number (``shot.1.png``, ``shot.01.png``) are an error: which one is
the frame cannot be told. 8-bit images give uint8 RGB frames, 16-bit PNG/TIFF give uint16
RGB, float EXR (scene-linear) is sRGB-encoded and clipped into uint16 (read with the OpenEXR
package where it is installed, else FFmpeg's EXR decoder through PyAV, which every install
has: half and float, scanline and tiled, every compression), DPX gives its code values as
uint16, or a log scan or linear DPX sRGB-encoded as EXR is (:mod:`vosfx.io.exr_dpx`).
Several images are read at once (:func:`read_ahead`, :func:`default_readers`) and handed on
in order.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import struct
import zlib
from collections import deque
from collections.abc import Generator, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from vosfx.cpus import usable_cores
from vosfx.errors import InputError
from vosfx.io import exr_dpx
from vosfx.io.timecode import from_frames
from vosfx.types import Frame, FrameNumbers, VideoInfo

log = logging.getLogger("vosfx.io")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".dpx")
DEFAULT_FPS = Fraction(24)
_PRINTF = re.compile(r"%(0?\d*)d")


def list_files(path_or_pattern: str | Path) -> list[Path] | None:
    """The sequence's files in frame order, or None when the path is not a sequence (a video).

    Raises InputError for a folder or pattern that matches no image file.
    """
    found = scan(path_or_pattern)
    return None if found is None else found[0]


def scan(path_or_pattern: str | Path) -> tuple[list[Path], FrameNumbers | None] | None:
    """(the sequence's files in frame order, their own numbers or None), or None when the
    path is not a sequence (a video). A single image file is a one-frame clip numbered by
    position. Raises InputError for a folder or pattern that matches no image file, or two
    files with the same number."""
    text = str(path_or_pattern)
    path = Path(text)
    if _PRINTF.search(path.name):
        return _match_pattern(path)
    if path.is_dir():
        files = [
            p
            for p in path.iterdir()
            # hidden names are never frames: macOS's ._shot.1001.exr beside each image on
            # exFAT and network drives, an interrupted write's temporary file
            if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file()
        ]
        if not files:
            raise InputError(
                f"expected image files ({', '.join(IMAGE_EXTS)}) in folder {path}, found none"
            )
        return _numbered_folder(path, files)
    if path.suffix.lower() in IMAGE_EXTS and path.is_file():
        return [path], None
    return None


def is_pattern(path: str | Path) -> bool:
    """Whether ``path`` names a printf pattern (``frames/%05d.png``) rather than a file."""
    return bool(_PRINTF.search(Path(path).name))


def _match_pattern(path: Path) -> tuple[list[Path], FrameNumbers]:
    match = _PRINTF.search(path.name)
    assert match is not None  # scan calls this only for a printf pattern
    width = match.group(1)
    if not width:
        digits = r"\d+"
    elif width.startswith("0"):  # %05d: 5 digits zero padded, more past 99999 (no leading 0)
        digits = rf"\d{{{int(width)}}}|[1-9]\d{{{int(width)},}}"
    else:  # %5d: space padded
        digits = r"\s*\d+"
    prefix, suffix = path.name[: match.start()], path.name[match.end() :]
    regex = re.compile(re.escape(prefix) + f"({digits})" + re.escape(suffix) + "$")
    folder = path.parent
    numbered = (
        [(m.group(1).strip(), p) for p in folder.iterdir() if (m := regex.match(p.name))]
        if folder.is_dir()
        else []
    )
    if not numbered:
        raise InputError(f"expected files matching {path}, found none in {folder}")
    return _numbered(numbered, prefix, suffix, path)


_LAST_NUMBER = re.compile(r"(.*?)(\d+)(\D*)")  # prefix, the last digit run, suffix


def _numbered_folder(folder: Path, files: list[Path]) -> tuple[list[Path], FrameNumbers | None]:
    """A folder's files by their numbers when every name is ``<prefix><digits><suffix>`` with
    one prefix and suffix (``shot.1001.exr``); naturally sorted, without numbers, when no two
    names share one (``a.png``, ``b.png``). A numbered sequence beside other images (a mask
    saved with the plate, a second plate, a frame renamed ``shot.1042_fix.exr``) is refused:
    read in name order they would shift every frame after them, and which files are the clip
    cannot be told; the error gives the pattern that names the sequence."""
    parts = [_LAST_NUMBER.fullmatch(p.name) for p in files]
    groups: dict[tuple[str, str], list[tuple[str, Path]]] = {}
    for m, path in zip(parts, files):
        if m is not None:
            groups.setdefault((m.group(1), m.group(3)), []).append((m.group(2), path))
    if len(groups) == 1 and None not in parts:
        (((prefix, suffix), numbered),) = groups.items()
        return _numbered(numbered, prefix, suffix, folder)
    sequences = sorted(
        (g for g in groups.items() if len(g[1]) > 1), key=lambda g: (-len(g[1]), g[0])
    )
    if not sequences:
        return sorted(files, key=natural_key), None
    shown = [f"{_pattern(t, n, '#')} ({len(n)} files)" for t, n in sequences[:3]]
    held = {path for _, numbered in sequences for _, path in numbered}
    others = sorted((p.name for p in files if p not in held), key=str.lower)
    if others:
        shown.append(", ".join(others[:3]) + (f" and {len(others) - 3} more" if others[3:] else ""))
    raise InputError(
        f"expected one image sequence in folder {folder}, found {'; '.join(shown)}: give the "
        f"one to matte as a pattern ({folder / _pattern(*sequences[0], '%')}), or move the "
        "other files out"
    )


def _pattern(template: tuple[str, str], numbered: list[tuple[str, Path]], form: str) -> str:
    """A numbered sequence's name with its number as ``####`` (``form`` '#') or ``%04d``
    ('%'): padded where every number is printed at the shortest one's width."""
    padding = _padding([d for d, _ in numbered])
    if form == "#":
        digits = "#" * max(padding, 1)
    else:
        digits = f"%0{padding}d" if padding else "%d"
    return f"{template[0]}{digits}{template[1]}"


def _padding(texts: list[str]) -> int:
    """The zero padding of numbers printed as ``texts``: the shortest one's width where every
    one is its number printed with ``%0<width>d`` (1001..1100 and 0001..0100 are; f1..f10 and
    a mix of 1 and 002 are not), else 0."""
    width = min(len(d) for d in texts)
    return width if width > 1 and all(d == f"{int(d):0{width}d}" for d in texts) else 0


def _numbered(
    numbered: list[tuple[str, Path]], prefix: str, suffix: str, where: Path
) -> tuple[list[Path], FrameNumbers]:
    """Files (digits of their number, path) sorted by number; InputError for a number that
    two files share."""
    items = sorted(((int(d), d, p) for d, p in numbered), key=lambda item: item[0])
    for (a, _, pa), (b, _, pb) in itertools.pairwise(items):
        if a == b:
            raise InputError(
                f"expected one file per frame number in {where}, found two numbered {a}: "
                f"{pa.name} and {pb.name}; remove one"
            )
    numbers = FrameNumbers(
        numbers=tuple(n for n, _, _ in items),
        prefix=prefix,
        suffix=suffix,
        padding=_padding([d for _, d, _ in items]),
    )
    return [p for _, _, p in items], numbers


def natural_key(path: Path) -> list:
    """Sort key that orders the digit runs in a name by value: f2 < f10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def probe_files(
    path: str | Path, files: list[Path], fps, numbers: FrameNumbers | None = None
) -> VideoInfo:
    """VideoInfo from the first image; the others are checked as they are read. A numbered
    sequence's timecode is its first number counted at ``fps`` (non-drop-frame), the one
    Resolve gives an image sequence, so movie outputs conform to the plate by timecode."""
    fps = DEFAULT_FPS if fps is None else Fraction(fps).limit_denominator(1_000_000)
    if fps <= 0:
        raise InputError(f"expected an image-sequence fps > 0, found {fps}")
    first = read_image(files[0])
    depth = 8 if first.dtype == np.uint8 else 16
    return VideoInfo(
        path=str(path),
        width=int(first.shape[1]),
        height=int(first.shape[0]),
        num_frames=len(files),
        fps=fps,
        time_base=1 / fps,
        pix_fmt="rgb24" if depth == 8 else "rgb48le",
        bit_depth=depth,
        codec=files[0].suffix.lower().lstrip("."),
        frame_count_exact=True,
        timecode="" if numbers is None else from_frames(numbers.numbers[0], fps, drop=False),
        frame_numbers=numbers,
    )


def read_frames(
    files: list[Path], info: VideoInfo, start: int, end: int | None, readers: int | None = None
) -> Generator[Frame, None, None]:
    """Frames ``start``..``end`` (exclusive); every image must match the first one's size.

    ``readers``: images read at once (:func:`read_ahead`; default :func:`default_readers`); 1
    reads each one when its frame is asked for."""
    stop = len(files) if end is None else min(end, len(files))
    readers = default_readers() if readers is None else readers
    wanted = files[start:stop]
    if readers > 1 and len(wanted) > 1:
        ahead = read_ahead(wanted, readers)
        with contextlib.closing(ahead):  # a closed or failed clip stops its readers now
            yield from _checked(ahead, files, info, start)
    else:
        yield from _checked(map(read_image, wanted), files, info, start)


def _checked(
    images: Iterator[np.ndarray], files: list[Path], info: VideoInfo, start: int
) -> Generator[Frame, None, None]:
    """The frames of ``images`` (``files[start:]`` read), each checked against the first."""
    for index, image in enumerate(images, start):
        if image.shape[:2] != (info.height, info.width):
            raise InputError(
                f"expected every image of the sequence to be {info.width}x{info.height}, "
                f"found {image.shape[1]}x{image.shape[0]} in {files[index]} (frame {index})"
            )
        if (image.dtype == np.uint8) != (info.bit_depth == 8):
            # Mixed depths would change the frame dtype mid-clip; put them on the first's scale.
            image = (
                image.astype(np.uint16) * 257
                if info.bit_depth == 16
                else (image >> 8).astype(np.uint8)
            )
        yield Frame(index=index, image=image, pts=index, time_base=info.time_base, duration=1)


MAX_READERS = 4  # each reads one whole image ahead: 4 x 48 MB for 16-bit 4K


def default_readers() -> int:
    """Images a sequence reads at once: this process's cores but one (the one the rest of
    the chain needs: in a 1080p PNG sequence's ProRes render on 2 cores, bound by its total
    CPU, a second reader bought nothing and held ~45 MiB more; docs/benchmarks/io.md), at
    least 1 and at most :data:`MAX_READERS`."""
    return max(1, min(usable_cores() - 1, MAX_READERS))


def read_ahead(files: list[Path], readers: int) -> Generator[np.ndarray, None, None]:
    """:func:`read_image` of each file, in order, with up to ``readers`` of them being read at
    once on a thread pool (decoding a PNG, JPEG or EXR is one core's work, and OpenCV lets go
    of the GIL while it does it). A file's error is raised when its turn comes, after the
    images before it. Closing the generator cancels what has not started and waits for what
    has (at most ``readers`` images)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    pool = ThreadPoolExecutor(readers, thread_name_prefix="vosfx-read")
    queued: deque[Future[np.ndarray]] = deque()
    try:
        rest = iter(files)
        for path in itertools.islice(rest, readers):
            queued.append(pool.submit(read_image, path))
        while queued:
            image = queued.popleft().result()
            following = next(rest, None)
            if following is not None:
                queued.append(pool.submit(read_image, following))
            yield image
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 or uint16 RGB from a PNG/JPG/TIFF/EXR/DPX file; alpha is dropped."""
    suffix = path.suffix.lower()
    if suffix == ".exr":
        linear = exr_dpx.read_exr(path)
        return _linear_to_srgb16(linear if linear is not None else exr_dpx.read_exr_ffmpeg(path))
    if suffix == ".dpx":
        dpx = exr_dpx.read_dpx(path)
        return dpx if dpx.dtype == np.uint16 else _linear_to_srgb16(dpx)
    import cv2

    try:
        data = np.fromfile(path, np.uint8)  # fromfile + imdecode: non-ASCII paths work too
    except OSError as e:
        raise InputError(f"expected a readable image at {path}: {e}") from e
    if data[:8].tobytes() == PNG_SIGNATURE:
        damage, bad = png_check(data.data)
        if damage:
            raise InputError(f"expected a whole PNG image, {path} is damaged: {damage}")
        if bad:
            data = png_without(data, bad)
            names = ", ".join(dict.fromkeys(kind.decode("latin-1") for kind, _s, _e in bad))
            if (path.parent, names) not in _WARNED_CHUNKS:  # once per folder, not every frame
                _WARNED_CHUNKS.add((path.parent, names))
                log.warning(
                    "%s: its %s chunk fails its checksum; left out (the picture is whole)",
                    path,
                    names,
                )
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError(f"expected an image file, {path} cannot be decoded as one")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    image = cv2.cvtColor(image, code)
    if image.dtype in (np.float32, np.float64):
        image = _linear_to_srgb16(image)
    elif image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"expected 8-bit, 16-bit or float images, found {image.dtype} in {path}")
    return image


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WARNED_CHUNKS: set[tuple[Path, str]] = set()  # (folder, chunk type) said to be damaged


def _png_chunks(view: memoryview) -> Iterator[tuple[bytes, int, int, bool]]:
    """Each chunk of a PNG's bytes as (type, start, end, whether its CRC holds), in order, up
    to ``IEND``; a chunk that runs past the end comes with ``end`` beyond ``len(view)``."""
    pos, size = len(PNG_SIGNATURE), len(view)
    while pos + 12 <= size:
        (length,) = struct.unpack_from(">I", view, pos)
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length
        if end > size:
            yield kind, pos, end, False
            return
        (crc,) = struct.unpack_from(">I", view, pos + 8 + length)
        yield kind, pos, end, zlib.crc32(view[pos + 4 : pos + 8 + length]) == crc
        if kind == b"IEND":
            return
        pos = end


def png_check(data: bytes | memoryview) -> tuple[str | None, list[tuple[bytes, int, int]]]:
    """Why a PNG file's bytes are not a whole PNG (a cut copy, flipped bits), or None; and its
    ancillary chunks (text, colour metadata) that fail their checksum, as (type, start, end).

    Walks the chunks once and checks each one's CRC. A critical chunk's (``IHDR``, ``PLTE``,
    ``IDAT``, ``IEND``) is damage, as is a file that ends before ``IEND``: checked before
    libpng, which prints its own line on stderr for a checksum error beside the error vosfx
    raises, and says nothing for a cut file. An ancillary chunk's is no damage to the picture
    (libpng drops the chunk, with a warning line: :func:`png_without`). ~2 ms for a 10 MB
    16-bit 1080p frame, against ~50 ms to decode it.
    """
    view = memoryview(data).cast("B")
    bad: list[tuple[bytes, int, int]] = []
    for kind, pos, end, crc_ok in _png_chunks(view):
        name = kind.decode("latin-1")
        if end > len(view):
            return f"it ends at byte {len(view)}, inside its {name} chunk (a cut copy?)", bad
        if kind[:1].isupper() and not crc_ok:
            return f"its {name} chunk at byte {pos} fails its checksum", bad
        if not crc_ok:
            bad.append((kind, pos, end))
        if kind == b"IEND":
            return None, bad
    return f"it ends at byte {len(view)} without its IEND chunk (a cut copy?)", bad


def png_damage(data: bytes | memoryview) -> str | None:
    """:func:`png_check`'s reason the bytes are not a whole PNG, or None."""
    return png_check(data)[0]


def png_without(data: np.ndarray, chunks: list[tuple[bytes, int, int]]) -> np.ndarray:
    """A PNG's bytes without ``chunks`` (:func:`png_check`'s damaged ancillary ones): what
    libpng does with them, without its "libpng warning: tEXt: CRC error" line on stderr."""
    keep, start = [], 0
    for _kind, pos, end in chunks:
        keep.append(data[start:pos])
        start = end
    keep.append(data[start:])
    return np.concatenate(keep)


def _linear_to_srgb16(linear: np.ndarray) -> np.ndarray:
    """(H, W, 3) float scene-linear -> uint16 sRGB-encoded, clipped to [0, 1]: the model was
    trained on display-referred images."""
    import cv2

    x = np.clip(linear, 0.0, 1.0, dtype=np.float32)  # a new array: written in place below
    np.nan_to_num(x, copy=False, nan=0.0)  # a NaN (a CG render's) is no light
    # OpenCV's SIMD pow: 58 against 117 CPU ms a 1080p frame for numpy's float32 power on the
    # AMD Zen 3 kind, codes within one of the float64 formula (tests/test_source.py)
    srgb = cv2.pow(x, 1 / 2.4)
    srgb *= np.float32(1.055)
    srgb -= np.float32(0.055)
    low = x <= np.float32(0.0031308)
    np.multiply(x, np.float32(12.92), out=srgb, where=low)
    srgb *= np.float32(65535.0)
    return np.rint(srgb, out=srgb).astype(np.uint16)

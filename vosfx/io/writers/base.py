"""The writer base class and the file-system rules every writer follows.

A writer renders into a temporary name beside its output
(``.<name>.vosfx-tmp-<host>-<pid>-<random>``; one a dead process of this machine left for
the same output is removed first) and renames it into place only when the ``with`` block ends cleanly; on an exception
(KeyboardInterrupt included) or a failure while finishing, the temporary file or folder is
removed and the error re-raised. OSErrors become OutputError (ENOSPC: "disk full while
writing ...").
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from vosfx.config import OutputConfig
from vosfx.errors import OutputError
from vosfx.files import temp_name
from vosfx.types import Frame, Matte, VideoInfo

if TYPE_CHECKING:
    from typing_extensions import Self

    from vosfx.formats import FormatSpec


def check_output_path(
    path: str | os.PathLike, overwrite: bool = False, *, sequence: bool | None = None
) -> Path:
    """Check ``path`` can be written before any decoding starts. Returns it as a Path.

    OutputError when the parent folder is missing or not writable, or the output exists and
    ``overwrite`` is false. ``sequence``: whether the output is a folder of images (None: not
    known, so the folder checks are left out). An output replaces what is at its path whole,
    so an existing folder is never replaced by a movie, nor by a sequence unless it holds
    nothing but frames of an earlier render (``-o ~/shots --overwrite`` must not delete
    ``~/shots``).
    """
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        if parent.exists():  # a file where the folder should be: "create it" would mislead
            raise OutputError(f"output folder {parent} is a file, not a folder (for {out})")
        raise OutputError(f"output folder {parent} does not exist (for {out}); create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable (for {out})")
    if out.is_dir() and not out.is_symlink() and sequence is not None:
        _check_replaceable_folder(out, sequence)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputError(f"output {out} already exists; pass --overwrite to replace it")
        if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
            raise OutputError(f"output {out} exists and is a folder that cannot be replaced")
    return out


def make_parent_folders(path: str | os.PathLike) -> list[Path]:
    """Make the missing folders above ``path`` (a batch's output template may name a folder
    per clip or per object). Returns those made, outermost first. OutputError naming the
    folder where one cannot be made (a file in its place, no permission)."""
    parent, missing = Path(path).parent, []
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    if missing and not parent.is_dir():  # mkdir would say only "Not a directory"
        raise OutputError(f"output folder {parent} is a file, not a folder (for {path})")
    made: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # another worker made it meanwhile, or a file is there
            if folder.is_dir():
                continue
            raise OutputError(
                f"output folder {folder} cannot be made (for {path}): a file of that name is there"
            ) from None
        except OSError as err:
            raise OutputError(
                f"output folder {folder} cannot be made (for {path}): {err.strerror or err}"
            ) from None
        made.append(folder)
    return made


def _check_replaceable_folder(out: Path, sequence: bool) -> None:
    """OutputError unless the existing folder ``out`` is an earlier image-sequence render of
    this output (only ``<stem>.<frame>.<ext>`` files, as :class:`ImageSequenceWriter` names
    them), which a sequence output may replace."""
    if not sequence:
        raise OutputError(
            f"output {out} is a folder; this format writes one file: give a file name "
            f"(e.g. {out / 'matte'}.<ext>)"
        )
    name = out.name
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    frame = re.compile(re.escape(stem) + r"\.\d+\.(png|exr)")  # any padding: the source's
    foreign = sorted(p.name for p in out.iterdir() if not frame.fullmatch(p.name) or p.is_dir())
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise OutputError(
            f"output {out} is a folder that holds other files ({shown}); an image sequence "
            "replaces its folder whole: give a new folder name"
        )


def temp_path_for(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (same folder, so the final rename is atomic).
    What a dead process of this machine left there for ``path`` goes first
    (:func:`vosfx.files.stale_temps`): a render killed twice no longer leaves its half-written
    file for good."""
    from vosfx.files import stale_temps

    for stale in stale_temps(path):
        remove_path(stale)
    return temp_name(path)


def remove_path(path: Path) -> None:
    """Remove a file or folder if present (cleanup; never raises for a missing path)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def commit_path(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` onto ``final``. Files are replaced atomically; a folder that
    already exists is first moved aside (a rename) and removed after the new one is in place."""
    if not overwrite and (final.exists() or final.is_symlink()):
        raise OutputError(f"output {final} appeared while rendering; kept the old one")
    if final.exists() and (final.is_dir() or tmp.is_dir()):
        aside = temp_path_for(final)
        os.rename(final, aside)
        os.rename(tmp, final)
        remove_path(aside)
    else:
        os.replace(tmp, final)


def output_error(err: OSError, path: Path) -> OutputError:
    """The OutputError for an OSError raised while writing ``path``."""
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"disk full while writing {path}: {err}")
    return OutputError(f"could not write {path}: {err}")


_ABOVE_ONE = float(np.nextafter(np.float32(1.0), np.float32(2.0)))  # checkRange's max is open


def to_unit_alpha(alpha: np.ndarray, height: int, width: int, where: str) -> np.ndarray:
    """Validate an alpha plane: (height, width) float in [0, 1]. Returns float32, clipped,
    NaN mapped to 0 (a NaN from a refinement bug must not become a hole in a render)."""
    alpha = np.asarray(alpha)
    if alpha.shape != (height, width):
        raise OutputError(
            f"{where}: expected an alpha of shape ({height}, {width}), found {alpha.shape}"
        )
    if not np.issubdtype(alpha.dtype, np.floating):
        raise OutputError(f"{where}: expected a float alpha in [0, 1], found {alpha.dtype}")
    alpha = alpha.astype(np.float32, copy=False)
    # The refiner's alphas are already in range: one read-only check (~1 ms at 1080p) instead
    # of a NaN pass and a clip into a new array (~9 ms, on every writer's thread). The array
    # is then shared, not copied: writers never modify their alpha in place.
    if cv2.checkRange(alpha, True, 0.0, _ABOVE_ONE)[0]:
        return alpha
    return np.clip(np.nan_to_num(alpha, nan=0.0), 0.0, 1.0)


def premultiply(rgb: np.ndarray, alpha: np.ndarray) -> None:
    """``rgb *= alpha`` channel by channel, in place: (H, W, 3) float32 by (H, W). The alpha
    is merged into three channels by OpenCV first, since numpy's loops over a broadcast last
    axis of 3 are slow; the products are the same."""
    rgb *= cv2.merge([np.ascontiguousarray(alpha, np.float32)] * 3)


def image_rgb01(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from uint8, uint16 (full precision kept) or float RGB."""
    if image.dtype in (np.uint8, np.uint16):
        rgb = image.astype(np.float32)
        rgb *= np.float32(1.0 / np.iinfo(image.dtype).max)  # in place: one 1080p array, not two
        return rgb
    return image.astype(np.float32)


def frame_rgb01(frame: Frame) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from a uint8 or uint16 frame (full precision kept)."""
    return image_rgb01(frame.image)


class Writer:
    """Base writer: temporary name, atomic commit, cleanup on failure.

    Subclasses implement ``_open()``, ``_write(frame, alpha, matte)`` and ``_finish()``
    (flush and close; may raise) and ``_abort()`` (release resources, never raises).
    """

    def __init__(
        self,
        spec: FormatSpec,
        path: Path,
        info: VideoInfo,
        obj_ids: tuple[int, ...],
        config: OutputConfig,
        overwrite: bool,
        audio_from: str | None,
    ) -> None:
        self.spec = spec
        self.path = path
        self.info = info
        self.obj_ids = tuple(obj_ids)
        self.config = config
        self.overwrite = overwrite
        self.audio_from = audio_from if config.audio else None
        self.tmp_path = temp_path_for(path)
        self.frames_written = 0
        self._done = False

    @property
    def takes_source_ycbcr(self) -> bool:
        """Whether this writer uses the source's own Y'CbCr planes when frames carry them
        (``Frame.derived["ycbcr"]``; asked of every writer before decoding starts)."""
        return False

    # context manager -------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def write(self, frame: Frame, matte: Matte, alpha: np.ndarray | None = None) -> None:
        """Write one frame. ``alpha``: (H, W) float32 in [0, 1] to use instead of
        ``matte.merged`` (per-object outputs pass ``matte.alpha[i]``)."""
        if self._done:
            raise OutputError(f"{self.path}: write after the writer was closed")
        h, w = self.info.height, self.info.width
        if frame.image.shape[:2] != (h, w):
            raise OutputError(
                f"{self.path}: frame {frame.index} is {frame.width}x{frame.height}, "
                f"the output was opened for {w}x{h}"
            )
        where = f"{self.path} frame {frame.index}"
        alpha = to_unit_alpha(matte.merged if alpha is None else alpha, h, w, where)
        try:
            self._write(frame, alpha, matte)
        except OSError as err:
            self.abort()
            raise output_error(err, self.path) from err
        self.frames_written += 1

    def close(self) -> None:
        """Finish the output and move it into place. On any failure, nothing is left."""
        if self._done:
            return
        try:
            self._finish()
            commit_path(self.tmp_path, self.path, self.overwrite)
        except OSError as err:
            self.abort()
            raise output_error(err, self.path) from err
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Drop the render: release resources and remove the temporary file or folder."""
        if self._done:
            return
        self._done = True
        self._abort()
        remove_path(self.tmp_path)

    # subclass hooks ----------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _write(self, frame: Frame, alpha: np.ndarray, matte: Matte) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

"""Writers: one per kind of output, every writer a context manager.

A writer renders into a temporary name beside its output
(``.<name>.vosfx-tmp-<host>-<pid>-<random>``; one a dead process of this machine left for
the same output is removed first) and renames it into place only when the ``with`` block
ends cleanly, so an interrupted or failed render never leaves a file that looks finished. Image sequences render into a
temporary folder that is renamed the same way.

Layers inside this package, bottom first: :mod:`.formats` (the table), :mod:`.base` (the
Writer base class and path rules), :mod:`.audio`, :mod:`.backdrop`, then the writers
(:mod:`.video`, :mod:`.images`); :func:`open_writer` here picks one by the format's kind.
:mod:`.sidecar` writes the JSON beside each output; :mod:`.background` runs writes on a
thread.
"""

from __future__ import annotations

import os

from vosfx.config import OutputConfig
from vosfx.formats import FORMATS, FormatSpec, available_formats, check_encoder, get_format
from vosfx.io.writers.base import Writer, check_output_path, output_error
from vosfx.io.writers.sidecar import sidecar_path, write_sidecar
from vosfx.types import VideoInfo

__all__ = [
    "FORMATS",
    "FormatSpec",
    "Writer",
    "available_formats",
    "check_output_path",
    "get_format",
    "open_writer",
    "sidecar_path",
    "write_sidecar",
]


def open_writer(
    format_id: str,
    path: str | os.PathLike,
    info: VideoInfo,
    *,
    obj_ids: tuple[int, ...] | list[int],
    config: OutputConfig,
    audio_from: str | None = None,
    overwrite: bool = False,
) -> Writer:
    """Open a writer for ``format_id`` at ``path`` (a file for video, a folder for image
    sequences: ``<path>/<stem>.<number>.<ext>``, numbered by source frame:
    :func:`vosfx.io.writers.images.frame_name`).

    Raises ConfigError for an unknown format or an encoder this FFmpeg build lacks, and
    OutputError for a path that cannot be written (see ``check_output_path``).
    """
    spec = get_format(format_id)
    check_encoder(spec)
    out = check_output_path(path, overwrite, sequence=spec.is_sequence)
    cls: type[Writer]
    if spec.is_sequence:
        from vosfx.io.writers.images import ImageSequenceWriter as cls
    else:
        from vosfx.io.writers.video import VideoWriter as cls
    writer = cls(spec, out, info, tuple(obj_ids), config, overwrite, audio_from)
    try:
        writer._open()
    except OSError as err:
        writer.abort()
        raise output_error(err, out) from err
    except BaseException:
        writer.abort()
        raise
    return writer

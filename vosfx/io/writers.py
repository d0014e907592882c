"""Output formats: one table, one writer per kind, every writer a context manager.

A writer renders into a temporary name beside its output (``.<name>.vosfx-tmp-<random>``)
and renames it into place only when the ``with`` block ends cleanly, so an interrupted or
failed render never leaves a file that looks finished. Image sequences render into a
temporary folder that is renamed the same way.

Which formats get which alpha (``FormatSpec.alpha``):

- ``straight`` by default for the RGBA cut-outs (prores4444, webm-alpha, qtrle, png8, png16);
  they switch to premultiplied RGB when ``OutputConfig.alpha_mode == "premultiplied"``.
- ``none`` for luma mattes, single-channel matte images and the preview: the matte itself is
  the picture, so there is nothing to premultiply.

Audio (``FormatSpec.audio``): the video containers (mov, mkv, webm, mp4) carry the source's
audio when ``audio_from`` names a file with an audio stream; image sequences never do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vosfx.config import OutputConfig
from vosfx.errors import ConfigError, OutputError
from vosfx.io.writers_base import (
    Writer,
    check_output_path,
    output_error,
    remove_path,
    temp_path_for,
)
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

# kinds: what the picture holds
ALPHA_VIDEO = "alpha_video"  # RGB = source colour, A = matte
MATTE_VIDEO = "matte_video"  # luma = matte
RGBA_SEQUENCE = "rgba_sequence"  # one RGBA image per frame
MATTE_SEQUENCE = "matte_sequence"  # one single-channel image per frame
PREVIEW = "preview"  # source with a tinted mask and outline per object
COMPOSITE = "composite"  # source over [output] background (colour, image or video)

# Audio codecs each container takes as-is; the first is what anything else is re-encoded to.
_AUDIO_MOV = ("pcm_s16le", "aac", "alac", "mp3", "pcm_s24le", "pcm_s32le", "pcm_f32le")
_AUDIO_MKV = ("pcm_s16le", "aac", "opus", "vorbis", "flac", "mp3", "ac3", "alac", "pcm_s24le")
_AUDIO_WEBM = ("libopus", "opus", "vorbis")
_AUDIO_MP4 = ("aac", "mp3", "alac")


@dataclass(frozen=True)
class FormatSpec:
    """One row of the formats table.

    ``alpha``: "straight" (RGBA formats, premultiplied on request), "premultiplied" or "none"
    (mattes and previews). ``bit_depth``: bits per sample of the alpha/matte as stored.
    ``container``: FFmpeg muxer for video, "" for image sequences. ``options``: encoder
    options. ``audio``: audio codecs the container takes by copy, first = re-encode target;
    empty = the format never carries audio.
    """

    id: str
    kind: str
    ext: str
    codec: str
    pix_fmt: str
    alpha: str
    bit_depth: int
    lossless: bool
    description: str
    container: str = ""
    options: tuple[tuple[str, str], ...] = ()
    audio: tuple[str, ...] = ()

    @property
    def is_sequence(self) -> bool:
        return self.kind in (RGBA_SEQUENCE, MATTE_SEQUENCE)


_ROWS = (
    FormatSpec(
        "prores4444",
        ALPHA_VIDEO,
        "mov",
        "prores_ks",
        "yuva444p10le",
        "straight",
        16,
        False,
        "ProRes 4444 with alpha (10-bit 4:4:4 colour, alpha coded at 16 bits): the default "
        "for editors (Resolve, Premiere, Final Cut, After Effects).",
        container="mov",
        options=(("profile", "4"), ("alpha_bits", "16"), ("vendor", "apl0")),
        audio=_AUDIO_MOV,
    ),
    FormatSpec(
        "webm-alpha",
        ALPHA_VIDEO,
        "webm",
        "libvpx-vp9",
        "yuva420p",
        "straight",
        8,
        False,
        "VP9 with alpha in WebM for browsers (alpha plane full resolution, 8-bit, lossy). "
        "The alpha decodes only through the libvpx decoder (ffmpeg -c:v libvpx-vp9); the "
        "native vp9 decoder drops it.",
        container="webm",
        options=(
            ("crf", "15"),
            ("b", "0"),
            ("row-mt", "1"),
            ("deadline", "good"),
            ("cpu-used", "4"),
        ),
        audio=_AUDIO_WEBM,
    ),
    FormatSpec(
        "qtrle",
        ALPHA_VIDEO,
        "mov",
        "qtrle",
        "argb",
        "straight",
        8,
        True,
        "QuickTime Animation (RLE), 8-bit ARGB, lossless; large files, opens everywhere.",
        container="mov",
        audio=_AUDIO_MOV,
    ),
    FormatSpec(
        "ffv1-matte",
        MATTE_VIDEO,
        "mkv",
        "ffv1",
        "gray16le",
        "none",
        16,
        True,
        "FFV1 16-bit grayscale luma matte in Matroska, lossless.",
        container="matroska",
        options=(("level", "3"), ("slicecrc", "1"), ("g", "1")),
        audio=_AUDIO_MKV,
    ),
    FormatSpec(
        "prores422hq-matte",
        MATTE_VIDEO,
        "mov",
        "prores_ks",
        "yuv422p10le",
        "none",
        10,
        False,
        "ProRes 422 HQ 10-bit luma matte (video range: matte 0 -> code 64, 1 -> 940).",
        container="mov",
        options=(("profile", "3"), ("vendor", "apl0")),
        audio=_AUDIO_MOV,
    ),
    FormatSpec(
        "h264-matte",
        MATTE_VIDEO,
        "mp4",
        "libx264",
        "yuv420p",
        "none",
        8,
        False,
        "H.264 8-bit luma matte, PREVIEW QUALITY ONLY (lossy; odd sizes padded by one pixel "
        "at the right/bottom edge).",
        container="mp4",
        options=(("crf", "16"), ("preset", "medium")),
        audio=_AUDIO_MP4,
    ),
    FormatSpec(
        "png8",
        RGBA_SEQUENCE,
        "png",
        "png",
        "rgba",
        "straight",
        8,
        True,
        "PNG sequence, 8-bit RGBA cut-out (straight alpha).",
    ),
    FormatSpec(
        "png16",
        RGBA_SEQUENCE,
        "png",
        "png",
        "rgba64",
        "straight",
        16,
        True,
        "PNG sequence, 16-bit RGBA cut-out (straight alpha); 16-bit sources keep their precision.",
    ),
    FormatSpec(
        "png16-matte",
        MATTE_SEQUENCE,
        "png",
        "png",
        "gray16",
        "none",
        16,
        True,
        "PNG sequence, single-channel 16-bit matte.",
    ),
    FormatSpec(
        "exr16",
        MATTE_SEQUENCE,
        "exr",
        "exr",
        "grayf16",
        "none",
        16,
        False,
        "OpenEXR sequence, single-channel (Y) half-float matte, ZIP16 compression.",
        options=(("format", "half"), ("compression", "zip16")),
    ),
    FormatSpec(
        "exr32",
        MATTE_SEQUENCE,
        "exr",
        "exr",
        "grayf32",
        "none",
        32,
        True,
        "OpenEXR sequence, single-channel (Y) 32-bit float matte, ZIP16 compression.",
        options=(("format", "float"), ("compression", "zip16")),
    ),
    FormatSpec(
        "preview",
        PREVIEW,
        "mp4",
        "libx264",
        "yuv420p",
        "none",
        8,
        False,
        "H.264 preview: the source with a tinted mask and an outline per object "
        "(odd sizes padded by one pixel).",
        container="mp4",
        options=(("crf", "20"), ("preset", "veryfast")),
        audio=_AUDIO_MP4,
    ),
    FormatSpec(
        "composite",
        COMPOSITE,
        "mov",
        "prores_ks",
        "yuv422p10le",
        "none",
        10,
        False,
        "ProRes 422 HQ: the source composited over [output] background (#rrggbb, an image, "
        "or a video that loops and is scaled to fill), straight alpha blend.",
        container="mov",
        options=(("profile", "3"), ("vendor", "apl0")),
        audio=_AUDIO_MOV,
    ),
)

FORMATS: dict[str, FormatSpec] = {spec.id: spec for spec in _ROWS}


def get_format(format_id: str) -> FormatSpec:
    """The table row for ``format_id``; ConfigError listing the ids when unknown."""
    try:
        return FORMATS[format_id]
    except KeyError:
        raise ConfigError(
            f"unknown output format {format_id!r}; expected one of: {', '.join(FORMATS)}"
        ) from None


def available_formats() -> list[str]:
    """The format ids whose encoder this FFmpeg build (PyAV's) has, in table order."""
    import av

    return [fid for fid, spec in FORMATS.items() if spec.codec in av.codecs_available]


def _check_encoder(spec: FormatSpec) -> None:
    import av

    if spec.codec not in av.codecs_available:
        raise ConfigError(
            f"output format {spec.id!r} needs the {spec.codec} encoder, which this FFmpeg "
            f"build (PyAV {av.__version__}) lacks; formats available here: "
            f"{', '.join(available_formats()) or 'none'}"
        )


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
    sequences: ``<path>/<stem>.%05d.<ext>`` numbered by source frame index).

    Raises ConfigError for an unknown format or an encoder this FFmpeg build lacks, and
    OutputError for a path that cannot be written (see ``check_output_path``).
    """
    spec = get_format(format_id)
    _check_encoder(spec)
    out = check_output_path(path, overwrite)
    if spec.is_sequence:
        from vosfx.io.writers_images import ImageSequenceWriter as cls
    else:
        from vosfx.io.writers_video import VideoWriter as cls
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


def _json_default(value: Any) -> Any:
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"sidecar value of type {type(value).__name__} is not JSON serialisable")


def sidecar_path(output_path: str | os.PathLike) -> Path:
    """``<output>.json``: ``shot.mov`` -> ``shot.mov.json``; folder ``shot`` -> ``shot.json``."""
    out = Path(output_path)
    return out.with_name(out.name + ".json")


def write_sidecar(output_path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as JSON to ``<output>.json`` atomically (temp file, fsync, rename).
    Fractions become "num/den" strings, numpy values plain numbers. Returns the path."""
    path = sidecar_path(output_path)
    tmp = temp_path_for(path)
    try:
        text = json.dumps(data, indent=2, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise OutputError(f"sidecar {path}: data is not valid JSON ({err})") from None
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        remove_path(tmp)
        raise output_error(err, path) from err
    return path

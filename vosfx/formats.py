"""The output formats table: one typed row per format id, read by config validation, the
CLI's choices, the writers and the docs. Nothing here imports a writer.

Which formats get which alpha (``FormatSpec.alpha``):

- ``straight`` by default for the RGBA cut-outs (prores4444, webm-alpha, qtrle, png8, png16);
  they switch to premultiplied RGB when ``OutputConfig.alpha_mode == "premultiplied"``.
- ``none`` for luma mattes, single-channel matte images and the preview: the matte itself is
  the picture, so there is nothing to premultiply.

Audio (``FormatSpec.audio``): the video containers (mov, mkv, webm, mp4) carry the source's
audio when ``audio_from`` names a file with an audio stream; image sequences never do.
"""

from __future__ import annotations

from dataclasses import dataclass

from vosfx.errors import ConfigError

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
    options. ``chroma``, ``sample_bits`` and ``pad_to_even`` are the picture facts of
    ``pix_fmt`` the writers need, typed, so no writer parses a pixel-format string. ``audio``: audio codecs the container takes by copy, first = re-encode target;
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
    chroma: str = "gray"  # "444" / "422" / "420" (Y'CbCr), "rgb" (packed RGB(A)), "gray"
    sample_bits: int = 8  # bits per coded sample of the picture (10 for the ProRes pix_fmts)
    pad_to_even: bool = False  # 4:2:0 H.264 needs even sizes: odd ones padded by one pixel

    @property
    def is_ycbcr(self) -> bool:
        return self.chroma in ("444", "422", "420")

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
        # Fixed quantiser 1 (FFmpeg's -q:v 1: flags +qscale, global_quality 1 x 118): the
        # packets are bit-identical to prores_ks's own rate control on real 1080p frames (its
        # per-slice search ends at 1 for 4444 here, even on sigma-40 noise) at ~1/4 of the CPU
        # time (116 vs 453 ms a frame); benchmarks/prores.py, docs/benchmarks/render.md.
        options=(
            ("profile", "4"),
            ("alpha_bits", "16"),
            ("vendor", "apl0"),
            ("flags", "+qscale"),
            ("global_quality", "118"),
        ),
        audio=_AUDIO_MOV,
        chroma="444",
        sample_bits=10,
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
        chroma="420",
        sample_bits=8,
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
        chroma="rgb",
        sample_bits=8,
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
        chroma="gray",
        sample_bits=16,
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
        "ProRes 422 HQ 10-bit luma matte (video range: matte 0 -> code 64, 1 -> 940), at "
        "ProRes's finest quantiser: exact to ~3 codes; a grainy matte may exceed 422 HQ's "
        "nominal data rate.",
        container="mov",
        # Fixed quantiser 1, as prores4444: on refined mattes (smooth, mostly flat) the files
        # are byte for byte as large as with prores_ks's rate control and decode as close or
        # closer, at 1/6 of the CPU (22-24 vs 138 ms a 1080p frame); on a grainy matte, which
        # refinement does not make, rate control would quantise the grain away (47 codes off)
        # where q1 keeps it (3 codes) in 2.3x the bytes. benchmarks/prores.py --matte.
        options=(
            ("profile", "3"),
            ("vendor", "apl0"),
            ("flags", "+qscale"),
            ("global_quality", "118"),
        ),
        audio=_AUDIO_MOV,
        chroma="422",
        sample_bits=10,
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
        chroma="420",
        sample_bits=8,
        pad_to_even=True,
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
        chroma="rgb",
        sample_bits=8,
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
        chroma="rgb",
        sample_bits=16,
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
        chroma="gray",
        sample_bits=16,
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
        chroma="gray",
        sample_bits=16,
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
        chroma="gray",
        sample_bits=32,
    ),
    FormatSpec(
        "exr-layers",
        MATTE_SEQUENCE,
        "exr",
        "exr",
        "grayf16",
        "none",
        16,
        True,
        "OpenEXR sequence, one half-float channel per object (obj<id>.A), optionally the "
        "source's RGB in the same file; ZIP, PIZ, DWAA or no compression (OpenEXR library).",
        chroma="gray",
        sample_bits=16,
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
        chroma="420",
        sample_bits=8,
        pad_to_even=True,
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
        chroma="422",
        sample_bits=10,
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


def check_encoder(spec: FormatSpec) -> None:
    """ConfigError when this FFmpeg build (PyAV's) lacks ``spec``'s encoder."""
    import av

    if spec.codec not in av.codecs_available:
        raise ConfigError(
            f"output format {spec.id!r} needs the {spec.codec} encoder, which this FFmpeg "
            f"build (PyAV {av.__version__}) lacks; formats available here: "
            f"{', '.join(available_formats()) or 'none'}"
        )


# the file names each muxer's files go by, and other media names: a movie output named as
# another container's file or as an image (``-o matte.mp4`` with prores4444, ``-o a.png``)
# would be a file its own name misdescribes, which players and NLEs open by that name
CONTAINER_SUFFIXES = {
    "mov": (".mov", ".qt"),
    "matroska": (".mkv",),
    "webm": (".webm",),
    "mp4": (".mp4", ".m4v"),
}
_MOVIE_SUFFIXES = frozenset(
    {s for names in CONTAINER_SUFFIXES.values() for s in names}
    | {".avi", ".mxf", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv"}
)
_IMAGE_SUFFIXES = frozenset(
    {".gif", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".dpx", ".webp", ".bmp"}
)


def name_mismatch(name: str, spec: FormatSpec) -> str | None:
    """Why an output called ``name`` does not hold what ``spec`` writes, or None: a movie
    named as another container's file or an image, or an image sequence's folder named as a
    movie. A name without a media suffix (``shot_v1.2``, ``out``) is taken as given."""
    suffix = "." + name.rpartition(".")[2].lower() if "." in name else ""
    if spec.is_sequence:
        if suffix in _MOVIE_SUFFIXES:
            return (
                f"{spec.id} writes a folder of .{spec.ext} images, not a {suffix} movie: "
                f"drop the {suffix}, or choose a movie format"
            )
        return None
    if suffix not in _MOVIE_SUFFIXES | _IMAGE_SUFFIXES:
        return None
    if suffix in CONTAINER_SUFFIXES[spec.container]:
        return None
    others = [f.id for f in _ROWS if f.container and suffix in CONTAINER_SUFFIXES[f.container]]
    instead = f", or choose a format that writes {suffix} ({', '.join(others)})" if others else ""
    return f"{spec.id} writes a .{spec.ext} movie, not {suffix}: name it .{spec.ext}{instead}"

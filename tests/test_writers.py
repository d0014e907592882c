"""Writers: a round trip for every format through an independent decoder, timing, audio and
the failure paths (nothing that looks finished is ever left behind).

Decoders used to read outputs back: FFmpeg's decoders through PyAV for video (the prores
decoder is a different code base from prores_ks; webm alpha through libvpx-vp9 explicitly),
Pillow for 8-bit PNG and the 16-bit matte, FFmpeg's PNG decoder for 16-bit RGBA (Pillow cannot
hold it), and the small OpenEXR reader below for EXR.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import zlib
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from conftest import shared_data

from vosfx.config import OutputConfig
from vosfx.errors import ConfigError, OutputError
from vosfx.io.writers import (
    FORMATS,
    available_formats,
    check_output_path,
    open_writer,
    sidecar_path,
    write_sidecar,
)
from vosfx.io.writers import images as writers_images
from vosfx.types import Frame, FrameNumbers, Matte, VideoInfo

H, W = 38, 66  # odd-ish on purpose: not a multiple of 16 (ProRes MBs) nor of 4
TB = Fraction(1, 12800)
VFR_PTS = (0, 512, 1536, 1600, 2900)  # irregular steps: 40 ms, 80 ms, 5 ms, 102 ms
OBJ_IDS = (1, 2)

# Tolerance on alpha after a round trip, per format, with why.
ALPHA_TOL = {
    "prores4444": 1.5 / 1023,  # 10-bit input quantisation (0.5 code) + 12-bit decode rounding
    "webm-alpha": 0.03,  # lossy VP9 at crf 15 on the 8-bit alpha plane
    "qtrle": 0.5 / 255 + 1e-6,  # lossless 8-bit
    "ffv1-matte": 0.5 / 65535 + 1e-7,  # lossless 16-bit
    "prores422hq-matte": 4.0 / 876,  # 10-bit video range (876 steps) + ~3 codes DCT error
    "h264-matte": 0.06,  # preview quality, 8-bit 4:2:0 lossy
    "png8": 0.5 / 255 + 1e-6,
    "png16": 0.5 / 65535 + 1e-7,
    "png16-matte": 0.5 / 65535 + 1e-7,
    "exr16": 2.0**-11,  # half float: 11 significant bits, values <= 1
    "exr32": 0.0,  # float32 stored as is
}


def synthetic_alpha(i: int, h: int = H, w: int = W) -> np.ndarray:
    """(h, w) float32 in [0, 1]: a soft ramp that moves with the frame, plus hard 0 and 1."""
    y, x = np.mgrid[:h, :w]
    ramp = np.clip((x - 8 - 3 * i) / 30.0 + 0.1 * np.sin(y / 5.0), 0.0, 1.0)
    return ramp.astype(np.float32)


def synthetic_clip(pts=VFR_PTS, deep: bool = False, start: int = 0):
    """[(Frame, Matte)] with two objects: alpha and (1 - alpha) * 0.8; image uint8 or
    uint16 RGB with detail below 8 bits when ``deep``."""
    out = []
    y, x = np.mgrid[:H, :W]
    for k, p in enumerate(pts):
        i = start + k
        rgb = np.stack([x * 3 % 256, y * 5 % 256, (x + y + i * 7) % 256], -1).astype(np.float64)
        if deep:
            image = (rgb * 257 + (x * 37 + y * 11)[..., None] % 200).astype(np.uint16)
        else:
            image = rgb.astype(np.uint8)
        a = synthetic_alpha(i)
        matte = Matte(i, OBJ_IDS, np.stack([a, (1 - a) * 0.8]).astype(np.float32))
        out.append((Frame(i, image, p, TB), matte))
    return out


def make_info(n: int, fps=Fraction(25), deep=False) -> VideoInfo:
    return VideoInfo(
        path="synthetic",
        width=W,
        height=H,
        num_frames=n,
        fps=fps,
        time_base=TB,
        bit_depth=16 if deep else 8,
        is_vfr=True,
    )


def render(fmt: str, path: Path, clip, config: OutputConfig | None = None, **kw) -> Path:
    with open_writer(
        fmt, path, make_info(len(clip)), obj_ids=OBJ_IDS, config=config or OutputConfig(), **kw
    ) as writer:
        for frame, matte in clip:
            writer.write(frame, matte)
    assert writer.frames_written == len(clip)
    return path


def out_path(tmp_path: Path, fmt: str) -> Path:
    spec = FORMATS[fmt]
    return tmp_path / (f"shot_{fmt}" if spec.is_sequence else f"shot.{spec.ext}")


def planes(vf: av.VideoFrame, dtype) -> list[np.ndarray]:
    """Each plane of a decoded frame as a (h, w) array, line padding cut off."""
    out = []
    for p in vf.planes:
        buf = np.frombuffer(p, dtype)
        out.append(
            buf[: p.height * (p.line_size // buf.itemsize)]
            .reshape(p.height, -1)[:, : p.width]
            .copy()
        )
    return out


def decode_video(path: Path, decoder: str | None = None):
    """[(time_s, av.VideoFrame)] of the first video stream, plus the stream's facts
    (average_rate, time_base) read while the file is open: PyAV 19 refuses a closed
    container's stream."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    frames = []
    if decoder:
        ctx = av.CodecContext.create(decoder, "r")
        for packet in container.demux(stream):
            if packet.size:
                frames += [(float(packet.pts * packet.time_base), f) for f in ctx.decode(packet)]
        frames += [(None, f) for f in ctx.decode(None)]
    else:
        frames = [(float(f.pts * f.time_base), f) for f in container.decode(stream)]
    facts = SimpleNamespace(average_rate=stream.average_rate, time_base=stream.time_base)
    container.close()
    return frames, facts


def ycbcr_to_rgb(y, cb, cr, bits):
    """Inverse BT.709 video range, (H, W) codes -> (H, W, 3) float in [0, 1]."""
    s = float(1 << (bits - 8))
    yy = (y / s - 16) / 219
    pb, pr = (cb / s - 128) / 224, (cr / s - 128) / 224
    r = yy + 1.5748 * pr
    b = yy + 1.8556 * pb
    g = (yy - 0.2126 * r - 0.0722 * b) / 0.7152
    return np.stack([r, g, b], -1)


def read_exr(path: Path) -> np.ndarray:
    """A minimal OpenEXR reader (scanline, one channel, NONE/ZIPS/ZIP): (H, W) float32."""
    data = path.read_bytes()
    assert data[:4] == b"\x76\x2f\x31\x01"
    pos, attrs = 8, {}
    while data[pos] != 0:
        name_end = data.index(b"\0", pos)
        type_end = data.index(b"\0", name_end + 1)
        (size,) = struct.unpack_from("<i", data, type_end + 1)
        start = type_end + 5
        attrs[data[pos:name_end].decode()] = data[start : start + size]
        pos = start + size
    pos += 1
    chlist = attrs["channels"]
    (pixel_type,) = struct.unpack_from("<i", chlist, chlist.index(b"\0") + 1)
    assert chlist.count(b"\0") >= 2 and len(chlist) == chlist.index(b"\0") + 1 + 16 + 1
    compression = attrs["compression"][0]
    x0, y0, x1, y1 = struct.unpack("<4i", attrs["dataWindow"])
    w, h = x1 - x0 + 1, y1 - y0 + 1
    lines = {0: 1, 2: 1, 3: 16}[compression]
    nchunks = -(-h // lines)
    offsets = struct.unpack_from(f"<{nchunks}Q", data, pos)
    dtype = {1: np.float16, 2: np.float32}[pixel_type]
    rows = []
    for off in offsets:
        y, size = struct.unpack_from("<2i", data, off)
        chunk = data[off + 8 : off + 8 + size]
        n_lines = min(lines, y1 - y + 1)
        raw_size = n_lines * w * np.dtype(dtype).itemsize
        if compression and size < raw_size:
            d = np.frombuffer(zlib.decompress(chunk), np.uint8).astype(np.int64)
            d[1:] -= 128  # undo the predictor: t[i] = t[i-1] + d[i] - 128 (mod 256)
            t = (np.cumsum(d) % 256).astype(np.uint8)
            half = (len(t) + 1) // 2
            raw = np.empty_like(t)
            raw[0::2], raw[1::2] = t[:half], t[half:]
            chunk = raw.tobytes()
        rows.append(np.frombuffer(chunk, dtype).reshape(n_lines, w))
    return np.concatenate(rows).astype(np.float32)


def decoded_alpha(fmt: str, path: Path, clip):
    """[(time_s or None, (H, W) float alpha, (H, W, 3) float RGB or None)] read back."""
    spec = FORMATS[fmt]
    if spec.is_sequence:
        from PIL import Image

        out = []
        for frame, _ in clip:
            f = path / f"{path.name}.{frame.index:05d}.{spec.ext}"
            if fmt == "png16":
                vf = next(av.open(str(f)).decode(video=0))
                rgba = vf.to_ndarray(format="rgba64le").astype(np.float64) / 65535
                out.append((None, rgba[..., 3], rgba[..., :3]))
            elif fmt == "png8":
                rgba = np.asarray(Image.open(f)).astype(np.float64) / 255
                out.append((None, rgba[..., 3], rgba[..., :3]))
            elif fmt == "png16-matte":
                out.append((None, np.asarray(Image.open(f)).astype(np.float64) / 65535, None))
            else:
                out.append((None, read_exr(f), None))
        return out
    decoder = "libvpx-vp9" if fmt == "webm-alpha" else None
    frames, _ = decode_video(path, decoder)
    out = []
    for t, vf in frames:
        name = vf.format.name
        if name == "argb":
            argb = vf.to_ndarray(format="argb").astype(np.float64) / 255
            out.append((t, argb[..., 0], argb[..., 1:]))
        elif name == "gray16le":
            out.append((t, planes(vf, np.uint16)[0] / 65535, None))
        elif name.startswith("yuva"):
            bits = 8 if name == "yuva420p" else int(name[len("yuva444p") : -2])
            y, cb, cr, a = (
                p.astype(np.float64) for p in planes(vf, np.uint8 if bits == 8 else np.uint16)
            )
            if name == "yuva420p":  # chroma back to full size, for the RGB check only
                cb, cr = (np.repeat(np.repeat(c, 2, 0), 2, 1)[:H, :W] for c in (cb, cr))
            out.append((t, a / ((1 << bits) - 1), ycbcr_to_rgb(y, cb, cr, bits)))
        else:  # luma matte: video-range Y
            bits = 8 if name == "yuv420p" else int(name.split("p")[-1][:-2])
            y = planes(vf, np.uint8 if bits == 8 else np.uint16)[0].astype(np.float64)
            s = 1 << (bits - 8)
            out.append((t, ((y / s - 16) / 219)[:H, :W], None))
    return out


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# exr-layers holds one channel per object, not a merged matte: tests/test_exr_layers.py
@pytest.mark.parametrize(
    "fmt", [f for f in FORMATS if f not in ("preview", "composite", "exr-layers")]
)
def test_round_trip_every_format(tmp_path, fmt):
    clip = synthetic_clip()
    path = render(fmt, out_path(tmp_path, fmt), clip)
    assert listing(tmp_path) == [path.name], "a temporary file or folder was left behind"
    back = decoded_alpha(fmt, path, clip)
    assert len(back) == len(clip)
    for (frame, matte), (t, alpha, rgb) in zip(clip, back):
        err = np.abs(alpha - matte.merged).max()
        assert err <= ALPHA_TOL[fmt], f"{fmt} frame {frame.index}: alpha error {err}"
        if rgb is not None:  # RGBA cut-outs carry the source colour (straight alpha)
            tol = 0.5 / 255 + 1e-6 if fmt in ("png8", "png16", "qtrle") else 0.06
            crgb = np.abs(rgb - frame.image / 255.0)
            if fmt == "webm-alpha":  # 4:2:0 chroma: compare where colour is flat enough
                crgb = np.median(crgb)
            assert np.max(crgb) <= tol, f"{fmt} frame {frame.index}: colour error {crgb.max()}"
        if t is not None:  # timing: the source's pts, to the container's resolution
            src_t = float(frame.pts * frame.time_base)
            assert t == pytest.approx(
                src_t, abs=0.0011 if FORMATS[fmt].ext in ("webm", "mkv") else 1e-9
            )


@pytest.mark.parametrize("fmt", [f for f, s in FORMATS.items() if not s.is_sequence])
def test_video_keeps_frame_count_rate_and_vfr_pts(tmp_path, fmt):
    clip = synthetic_clip(pts=VFR_PTS)
    path = render(fmt, out_path(tmp_path, fmt), clip)
    decoder = "libvpx-vp9" if fmt == "webm-alpha" else None
    frames, stream = decode_video(path, decoder)
    assert len(frames) == len(clip)
    times = [t for t, _ in frames]
    want = [float(p * TB) for p in VFR_PTS]
    assert times == pytest.approx(want, abs=0.0011)
    assert stream.average_rate is not None
    if FORMATS[fmt].ext == "mov":  # mov keeps the source time base itself
        assert stream.time_base == TB


def test_sequence_numbered_by_source_index(tmp_path):
    clip = synthetic_clip(pts=(2560, 3072, 3584), start=120)
    path = render("png16-matte", tmp_path / "shot_matte", clip)
    assert listing(path) == [f"shot_matte.{i:05d}.png" for i in (120, 121, 122)]


@pytest.mark.parametrize(
    "padding, names",
    [
        (4, ["m.1001.png", "m.1002.png", "m.1005.png"]),  # the plate's own padding
        (8, ["m.00001001.png", "m.00001002.png", "m.00001005.png"]),
        (0, ["m.01001.png", "m.01002.png", "m.01005.png"]),  # unpadded plate: 5 digits
    ],
)
def test_sequence_of_a_numbered_plate_is_named_by_its_numbers(tmp_path, padding, names):
    """Frames 0, 1, 2 of plate.1001, plate.1002, plate.1005 (1003-1004 missing): each image
    carries its plate frame's number, so the matte lines up with the plate, gap included."""
    numbers = FrameNumbers((1001, 1002, 1005), "plate.", ".exr", padding)
    info = replace(make_info(3), frame_numbers=numbers)
    clip = synthetic_clip(pts=(0, 512, 1024))
    with open_writer(
        "png16-matte", tmp_path / "m", info, obj_ids=OBJ_IDS, config=OutputConfig()
    ) as writer:
        for frame, matte in clip:
            writer.write(frame, matte)
    assert listing(tmp_path / "m") == names


def test_preview_tints_objects_and_keeps_background(tmp_path):
    clip = synthetic_clip(pts=(0, 512, 1024))
    opacity = 0.5
    path = render("preview", tmp_path / "p.mp4", clip, OutputConfig(overlay_opacity=opacity))
    frames, _ = decode_video(path)
    assert len(frames) == len(clip)
    from vosfx.matte.compose import object_colour

    for (frame, matte), (_, vf) in zip(clip, frames):
        rgb = vf.to_ndarray(format="rgb24").astype(np.float64)[:H, :W] / 255
        src = frame.image / 255.0
        a1, a2 = matte.alpha
        full1 = (a1 == 1.0) & (a2 == 0.0)  # only object 1, fully inside
        full1[:, :4] = full1[:, -4:] = False
        full1[:4] = full1[-4:] = False
        expect = src * (1 - opacity) + np.asarray(object_colour(1)) / 255 * opacity
        # 4:2:0 H.264 at crf 20 on a busy synthetic texture: compare means, not pixels
        assert np.abs((rgb - expect)[full1]).mean() < 0.06
        # the tint is visible: at least half of the change it should make survives H.264
        assert np.abs((rgb - src)[full1]).mean() > 0.5 * np.abs((expect - src)[full1]).mean()
    assert not np.allclose(object_colour(1), object_colour(2), atol=50)


def test_sixteen_bit_source_keeps_precision(tmp_path):
    clip = synthetic_clip(pts=(0, 512), deep=True)
    path = render("png16", tmp_path / "png16", clip)
    for (frame, _), (_, _, rgb) in zip(clip, decoded_alpha("png16", path, clip)):
        assert np.abs(rgb - frame.image / 65535.0).max() <= 0.5 / 65535 + 1e-7
    # ProRes is lossy, so compare with the same clip cut to 8 bits first: the 16-bit path
    # must land much closer to the 16-bit truth (measured: mean 0.00056 vs 0.00127).
    clip8 = [(Frame(f.index, f.rgb8, f.pts, f.time_base), m) for f, m in clip]
    errors = {}
    for name, c in (("deep", clip), ("8bit", clip8)):
        path = render("prores4444", tmp_path / f"{name}.mov", c)
        for (frame, _), (_, _, rgb) in zip(clip, decoded_alpha("prores4444", path, c)):
            src = frame.image / 65535.0
            mid = (src > 0.05) & (src < 0.95)  # away from clipping at the range ends
            errors.setdefault(name, []).append(np.abs(rgb - src)[mid].mean())
    assert max(errors["deep"]) < 0.6 * min(errors["8bit"]), errors


@pytest.mark.parametrize(("fmt", "path"), [("png16", "pm"), ("qtrle", "pm.mov")])
def test_premultiplied_alpha(tmp_path, fmt, path):
    """Colour times alpha, on a sequence and on packed ARGB (qtrle)."""
    clip = synthetic_clip(pts=(0,))
    path = render(fmt, tmp_path / path, clip, OutputConfig(alpha_mode="premultiplied"))
    ((_, alpha, rgb),) = decoded_alpha(fmt, path, clip)
    frame, matte = clip[0]
    want = frame.image / 255.0 * matte.merged[..., None]
    assert np.abs(rgb - want).max() <= ALPHA_TOL[fmt] + 1e-6
    assert np.abs(alpha - matte.merged).max() <= ALPHA_TOL[fmt]


def test_alpha_argument_overrides_merged(tmp_path):
    clip = synthetic_clip(pts=(0, 512))
    path = tmp_path / "obj2.mkv"
    with open_writer(
        "ffv1-matte", path, make_info(2), obj_ids=(2,), config=OutputConfig()
    ) as writer:
        for frame, matte in clip:
            writer.write(frame, matte, alpha=matte.alpha[1])
    for (_, matte), (_, alpha, _) in zip(clip, decoded_alpha("ffv1-matte", path, clip)):
        assert np.abs(alpha - matte.alpha[1]).max() <= 1 / 65535


def _with_audio(path: Path, codec: str, fmt: str, seconds: float = 0.5) -> Path:
    """A source file with a video stream and ``seconds`` of a 440 Hz tone in ``codec``."""
    out = av.open(str(path), "w", format=fmt)
    vs = out.add_stream("ffv1", rate=25)
    vs.width, vs.height, vs.pix_fmt = 64, 32, "yuv420p"
    aus = out.add_stream(codec, rate=44100)
    aus.layout = "stereo"
    n = int(44100 * seconds)
    tone = (np.sin(np.arange(n) * 2 * np.pi * 440 / 44100) * 8000).astype(np.int16)
    for i in range(int(25 * seconds)):
        vf = av.VideoFrame.from_ndarray(np.zeros((32, 64, 3), np.uint8), format="rgb24")
        vf.pts = i
        for p in vs.encode(vf):
            out.mux(p)
    step = 1024
    for s in range(0, n, step):
        chunk = np.ascontiguousarray(np.stack([tone[s : s + step]] * 2))  # (2, k) planar
        af = av.AudioFrame.from_ndarray(chunk, format="s16p", layout="stereo")
        af.sample_rate, af.pts = 44100, s
        for p in aus.encode(af):
            out.mux(p)
    for st in (vs, aus):
        for p in st.encode(None):
            out.mux(p)
    out.close()
    return path


@pytest.mark.parametrize(
    "fmt, src_codec, want",
    [
        ("prores4444", "aac", "pcm_s16le"),  # decoded to PCM: cut sample-exact, lossless
        ("webm-alpha", "aac", "opus"),  # webm takes only opus/vorbis
        ("ffv1-matte", "pcm_s16le", "pcm_s16le"),
    ],
)
def test_audio_carried_over(tmp_path, fmt, src_codec, want):
    """Only the rendered span: first frame to the end of the last (pts + 1/25 s)."""
    src = _with_audio(tmp_path / "src.mkv", src_codec, "matroska")
    path = render(fmt, out_path(tmp_path, fmt), synthetic_clip(), audio_from=str(src))
    with av.open(str(path)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        audio = c.streams.audio[0]
        assert audio.codec_context.name == want
        samples = sum(f.samples for f in c.decode(audio))
        rate = audio.codec_context.sample_rate
    span = float((VFR_PTS[-1] - VFR_PTS[0]) * TB + Fraction(1, 25))  # 0.267 s of the 0.5 s
    assert samples / rate == pytest.approx(span, abs=0.5 / 1000 if want == "pcm_s16le" else 0.03)


def test_audio_off_and_missing_audio(tmp_path):
    src = _with_audio(tmp_path / "src.mkv", "pcm_s16le", "matroska")
    path = render(
        "qtrle",
        tmp_path / "a.mov",
        synthetic_clip(),
        OutputConfig(audio=False),
        audio_from=str(src),
    )
    silent = tmp_path / "silent.mkv"
    render("ffv1-matte", silent, synthetic_clip())
    path2 = render("qtrle", tmp_path / "b.mov", synthetic_clip(), audio_from=str(silent))
    for p in (path, path2):
        with av.open(str(p)) as c:
            assert [s.type for s in c.streams] == ["video"]


@pytest.mark.parametrize("fmt", ["prores4444", "ffv1-matte", "webm-alpha"])
def test_audio_that_ends_before_the_video_is_padded_with_silence(tmp_path, fmt):
    """A source whose sound stops early (0.1 s of tone under 0.27 s of frames): the movie's
    audio still spans every frame, silent after the source's end."""
    src = _with_audio(tmp_path / "src.mkv", "aac", "matroska", seconds=0.1)
    path = render(fmt, out_path(tmp_path, fmt), synthetic_clip(), audio_from=str(src))
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate = stream.codec_context.sample_rate
        mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
        decoded = [*c.decode(stream), None]  # None: the resampler's last samples
        pcm = np.concatenate(
            [r.to_ndarray().reshape(-1) for f in decoded for r in mono.resample(f)]
        )
    span = float((VFR_PTS[-1] - VFR_PTS[0]) * TB + Fraction(1, 25))
    assert pcm.size / rate == pytest.approx(span, abs=0.03)
    assert np.abs(pcm[: int(0.05 * rate)]).max() > 0.1  # the tone: 8000 / 32768 = 0.24
    assert np.abs(pcm[int(0.13 * rate) :]).max() < 1e-3  # silence once the source's sound ends


@pytest.mark.parametrize("fmt", ["prores4444", "png16"])
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_inside_with_leaves_nothing(tmp_path, fmt, exc):
    clip = synthetic_clip()
    with (
        pytest.raises(exc),
        open_writer(
            fmt, out_path(tmp_path, fmt), make_info(5), obj_ids=OBJ_IDS, config=OutputConfig()
        ) as writer,
    ):
        for frame, matte in clip[:3]:
            writer.write(frame, matte)
        raise exc("stop")
    assert listing(tmp_path) == []


def test_unknown_format_lists_ids(tmp_path):
    with pytest.raises(ConfigError, match="prores4444.*exr32"):
        open_writer(
            "prores9999", tmp_path / "x.mov", make_info(1), obj_ids=OBJ_IDS, config=OutputConfig()
        )


def test_every_format_has_its_encoder_and_a_missing_one_is_named(tmp_path, monkeypatch):
    assert available_formats() == list(FORMATS)  # this build must write everything
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libvpx-vp9"})
    assert "webm-alpha" not in available_formats()
    with pytest.raises(ConfigError, match="needs the libvpx-vp9 encoder.*prores4444"):
        open_writer(
            "webm-alpha", tmp_path / "x.webm", make_info(1), obj_ids=OBJ_IDS, config=OutputConfig()
        )
    assert listing(tmp_path) == []


def test_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "x.mov")
    with pytest.raises(OutputError, match="does not exist"):
        open_writer(
            "png16", tmp_path / "nope" / "x", make_info(1), obj_ids=OBJ_IDS, config=OutputConfig()
        )


def test_read_only_folder(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not os.access(ro, os.W_OK):  # not root: the real check
            with pytest.raises(OutputError, match="not writable"):
                check_output_path(ro / "x.mov")
    finally:
        ro.chmod(0o755)
    # Root passes os.access, but cannot create files under /proc: the open fails cleanly.
    with pytest.raises(OutputError, match="could not write|not writable"):
        open_writer(
            "prores4444",
            "/proc/vosfx-test.mov",
            make_info(1),
            obj_ids=OBJ_IDS,
            config=OutputConfig(),
        )
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(OutputError, match="not writable"):
        check_output_path(tmp_path / "x.mov")


@pytest.mark.parametrize("fmt", ["qtrle", "png8"])
def test_exists_without_and_with_overwrite(tmp_path, fmt):
    path = out_path(tmp_path, fmt)
    clip = synthetic_clip(pts=(0, 512))
    render(fmt, path, clip)
    before = sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_bytes()
    with pytest.raises(OutputError, match="already exists"):
        open_writer(fmt, path, make_info(2), obj_ids=OBJ_IDS, config=OutputConfig())
    after = sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_bytes()
    assert after == before
    render(fmt, path, synthetic_clip(pts=(0,), start=7), overwrite=True)
    assert listing(tmp_path) == [path.name]
    if path.is_dir():  # the old sequence is gone, not merged with the new one
        assert listing(path) == [f"{path.name}.00007.png"]
    else:
        assert len(decode_video(path)[0]) == 1


class _FullDisk:
    """Stands in for a file (or a muxer) whose writes fail with ENOSPC after ``ok`` calls."""

    def __init__(self, real, ok: int, method: str):
        self._real, self._left, self._method = real, ok, method

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        if name != self._method:
            return attr

        def failing(*args, **kwargs):
            if self._left <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            self._left -= 1
            return attr(*args, **kwargs)

        return failing

    def __enter__(self):
        self._real.__enter__()
        return self

    def __exit__(self, *exc):
        return self._real.__exit__(*exc)


def test_disk_full_sequence(tmp_path, monkeypatch):
    calls = {"n": 0}

    def fake_open(path, mode="r", *a, **k):
        calls["n"] += 1
        return _FullDisk(open(path, mode, *a, **k), 1 if calls["n"] < 3 else 0, "write")

    monkeypatch.setattr(writers_images, "open", fake_open, raising=False)
    with pytest.raises(OutputError, match="disk full while writing"):
        render("png16", tmp_path / "seq", synthetic_clip())
    assert listing(tmp_path) == []


def test_disk_full_video(tmp_path):
    clip = synthetic_clip()
    with (
        pytest.raises(OutputError, match="disk full while writing"),
        open_writer(
            "qtrle",
            tmp_path / "x.mov",
            make_info(5),
            obj_ids=OBJ_IDS,
            config=OutputConfig(),
        ) as writer,
    ):
        writer._container = _FullDisk(writer._container, 2, "mux")
        for frame, matte in clip:
            writer.write(frame, matte)
    assert listing(tmp_path) == []


@pytest.mark.slow
def test_disk_full_real_tmpfs(tmp_path):
    """A real ENOSPC from a 256 KiB tmpfs (needs root and mount; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        _, x = np.mgrid[:360, :640]
        noise = np.random.default_rng(0).integers(0, 65535, (360, 640, 3), dtype=np.uint16)
        info = VideoInfo("synthetic", 640, 360, 40, Fraction(25), TB, bit_depth=16)
        with (
            pytest.raises(OutputError, match="disk full"),
            open_writer("png16", mnt / "seq", info, obj_ids=(1,), config=OutputConfig()) as writer,
        ):
            for i in range(40):  # ~1.8 MB of incompressible PNG per frame
                a = ((x + i) % 97 / 96.0).astype(np.float32)[None]
                writer.write(Frame(i, noise, i * 512, TB), Matte(i, (1,), a))
        assert listing(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_write_checks_sizes_and_closed_state(tmp_path):
    clip = synthetic_clip(pts=(0, 512))
    frame, matte = clip[0]
    with (
        pytest.raises(OutputError, match=r"expected an alpha of shape \(38, 66\)"),
        open_writer(
            "ffv1-matte", tmp_path / "x.mkv", make_info(2), obj_ids=OBJ_IDS, config=OutputConfig()
        ) as writer,
    ):
        writer.write(frame, matte, alpha=np.zeros((10, 10), np.float32))
    assert listing(tmp_path) == []
    with open_writer(
        "ffv1-matte", tmp_path / "y.mkv", make_info(2), obj_ids=OBJ_IDS, config=OutputConfig()
    ) as writer:
        writer.write(frame, matte)
    with pytest.raises(OutputError, match="after the writer was closed"):
        writer.write(*clip[1])


def test_sidecar_atomic(tmp_path):
    out = tmp_path / "shot.mov"
    data = {
        "version": "0.1",
        "fps": Fraction(30000, 1001),
        "scores": np.array([0.5, 1.0]),
        "frames": np.int64(3),
        "input": tmp_path / "in.mp4",
    }
    path = write_sidecar(out, data)
    assert path == sidecar_path(out) == tmp_path / "shot.mov.json"
    loaded = json.loads(path.read_text())
    assert loaded == {
        "version": "0.1",
        "fps": "30000/1001",
        "scores": [0.5, 1.0],
        "frames": 3,
        "input": str(tmp_path / "in.mp4"),
    }
    # A failure keeps the previous sidecar intact and leaves no temporary file.
    with pytest.raises(OutputError, match="not valid JSON"):
        write_sidecar(out, {"bad": object()})
    with pytest.raises(OutputError, match="not valid JSON"):
        write_sidecar(out, {"nan": float("nan")})
    assert json.loads(path.read_text()) == loaded
    assert listing(tmp_path) == ["shot.mov.json"]


@pytest.mark.shared_data
def test_real_frames_854x480_prores_alpha_exact(tmp_path):
    """DAVIS frames at 854x480, the width where FFmpeg's swscale once in a while wrote a run
    of alpha = 0.5 into yuva444p10le; the writer fills planes itself and must never do so."""
    import cv2
    from PIL import Image

    root = shared_data("davis")
    clip = []
    for i in range(6):
        bgr = cv2.imread(str(root / "JPEGImages" / "blackswan" / f"{i:05d}.jpg"))
        mask = np.asarray(Image.open(root / "Annotations" / "blackswan" / f"{i:05d}.png")) > 0
        soft = cv2.GaussianBlur(mask.astype(np.float32), (9, 9), 2.0)  # a soft edge
        clip.append((Frame(i, bgr[..., ::-1].copy(), i * 512, TB), Matte(i, (1,), soft[None])))
    h, w = clip[0][0].image.shape[:2]
    info = VideoInfo("blackswan", w, h, len(clip), Fraction(25), TB)
    path = tmp_path / "swan.mov"
    with open_writer("prores4444", path, info, obj_ids=(1,), config=OutputConfig()) as writer:
        for frame, matte in clip:
            writer.write(frame, matte)
    frames, _ = decode_video(path)
    assert len(frames) == len(clip)
    for (_, matte), (_, vf) in zip(clip, frames):
        alpha = planes(vf, np.uint16)[3] / 4095.0
        assert np.abs(alpha - matte.alpha[0]).max() <= ALPHA_TOL["prores4444"]


@pytest.mark.parametrize("fmt", [f for f, s in FORMATS.items() if not s.is_sequence])
def test_odd_size_video(tmp_path, fmt):
    """65x37: every plane layout copes with odd sizes; 4:2:0 H.264 pads to 66x38."""
    h, w = 37, 65
    info = VideoInfo("synthetic", w, h, 2, Fraction(25), TB)
    path = out_path(tmp_path, fmt)
    alpha = synthetic_alpha(0, h, w)
    with open_writer(fmt, path, info, obj_ids=(1,), config=OutputConfig()) as writer:
        for i in range(2):
            image = np.full((h, w, 3), 90, np.uint8)
            writer.write(Frame(i, image, i * 512, TB), Matte(i, (1,), alpha[None]))
    frames, _ = decode_video(path, "libvpx-vp9" if fmt == "webm-alpha" else None)
    padded = FORMATS[fmt].codec == "libx264"
    assert [(f.width, f.height) for _, f in frames] == [(w + padded, h + padded)] * 2


# --- composite (background replacement) --------------------------------------------------


def _composite_case(tmp_path, background):
    from fractions import Fraction

    from vosfx.config import OutputConfig
    from vosfx.io.writers import open_writer
    from vosfx.types import Frame, Matte, VideoInfo

    h, w, n = 48, 64, 4
    info = VideoInfo(
        path="src", width=w, height=h, num_frames=n, fps=Fraction(24), time_base=Fraction(1, 24)
    )
    src = np.zeros((h, w, 3), np.uint8)
    src[..., 0] = 200  # a red source
    alpha = np.zeros((h, w), np.float32)
    alpha[:, : w // 2] = 1.0  # left half is the object
    out = tmp_path / "comp.mov"
    cfg = OutputConfig(format="composite", background=background)
    with open_writer("composite", out, info, obj_ids=(1,), config=cfg) as wr:
        for i in range(n):
            wr.write(Frame(i, src, i, Fraction(1, 24)), Matte(i, (1,), alpha[None]))
    import av

    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == n
    return frames, w


@pytest.mark.parametrize("kind", ["colour", "image", "video"])
def test_composite_puts_the_object_over_the_background(tmp_path, kind):
    if kind == "colour":
        bg, want = "#00ff00", (0, 255, 0)
    elif kind == "image":
        import cv2

        img = np.zeros((30, 40, 3), np.uint8)
        img[...] = (255, 0, 0)  # BGR: blue
        cv2.imwrite(str(tmp_path / "bg.png"), img)
        bg, want = str(tmp_path / "bg.png"), (0, 0, 255)
    else:
        from media import make_clip

        blue = [np.full((32, 32, 3), (0, 0, 255), np.uint8)] * 2  # shorter: it loops
        bg = str(
            make_clip(
                tmp_path / "bg.mkv",
                n=2,
                width=32,
                height=32,
                codec="ffv1",
                pix_fmt="yuv444p",
                frames=blue,
            )
        )
        want = (0, 0, 255)
    frames, w = _composite_case(tmp_path, bg)
    for f in frames:
        left = f[:, 4 : w // 2 - 4].reshape(-1, 3).mean(0)
        right = f[:, w // 2 + 4 : -4].reshape(-1, 3).mean(0)
        assert np.abs(left - (200, 0, 0)).max() < 6, left  # the source where alpha is 1
        assert np.abs(right - want).max() < 6, right  # the background where alpha is 0


def test_composite_with_a_missing_background_fails_before_writing(tmp_path):
    from vosfx.errors import ConfigError

    with pytest.raises(ConfigError, match="background"):
        _composite_case(tmp_path, str(tmp_path / "nope.png"))
    assert not any(p.name.startswith(("comp", ".comp")) for p in tmp_path.iterdir())


def _encode_prores(path: Path, pix_fmt: str, options: dict, frames: list) -> None:
    """``frames`` (av.VideoFrames of ``pix_fmt``) through prores_ks with ``options`` into a
    .mov at ``path``."""
    with av.open(str(path), "w", format="mov") as c:
        s = c.add_stream("prores_ks", rate=25)
        w, h = frames[0].width, frames[0].height
        s.width, s.height, s.pix_fmt, s.options = w, h, pix_fmt, options
        for i, vf in enumerate(frames):
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def test_prores4444_fixed_quantiser_matches_prores_ks_rate_control(tmp_path):
    # The formats table runs prores_ks at a fixed quantiser 1 (~4x less CPU at 1080p) on the
    # measurement that its own rate control ends at quantiser 1 for 4444 anyway: the packets
    # are the same. If an FFmpeg update changes that, re-measure (benchmarks/prores.py).
    from vosfx.formats import FORMATS
    from vosfx.io.writers.pictures import planar_frame

    rng = np.random.default_rng(3)
    w, h = 256, 128
    y, x = np.mgrid[:h, :w].astype(np.float32)

    def packets(options: dict) -> list[bytes]:
        path = tmp_path / f"{len(options)}_{options.get('global_quality')}.mov"
        frames = []
        for _ in range(2):
            noise = rng.normal(0, 40, (3, h, w)).astype(np.float32)
            ycc = [np.clip(64 + (x * 3 + y + 100 * k) % 876 + noise[k], 64, 940) for k in range(3)]
            frames.append(planar_frame("yuva444p10le", [*ycc, (x * 4) % 1024], w, h, 10))
        _encode_prores(path, "yuva444p10le", options, frames)
        with av.open(str(path)) as c:
            return [bytes(p) for p in c.demux(video=0) if p.size]

    table = dict(FORMATS["prores4444"].options)
    assert table["flags"] == "+qscale" and table["global_quality"] == "118"
    state = rng.bit_generator.state
    fixed = packets(table)
    rng.bit_generator.state = state
    rate_control = packets({k: v for k, v in table.items() if k not in ("flags", "global_quality")})
    assert fixed == rate_control
    rng.bit_generator.state = state  # and the options do reach the encoder: quantiser 2 differs
    assert packets({**table, "global_quality": "236"}) != rate_control


def test_prores422hq_matte_fixed_quantiser_is_as_small_and_as_exact_as_rate_control(tmp_path):
    # prores422hq-matte runs prores_ks at a fixed quantiser 1 (~6x less CPU at 1080p) on the
    # measurement that, on a refined matte (soft edges, flat elsewhere), the file is exactly
    # as large as with prores_ks's rate control and decodes no farther from the matte (its
    # rate control picks other quantisers only for slices that code the same either way).
    # If an FFmpeg update changes that, re-measure (benchmarks/prores.py --matte).
    from vosfx.formats import FORMATS
    from vosfx.io.writers.pictures import luma_frame

    w, h = 384, 256
    y, x = np.mgrid[:h, :w].astype(np.float32)

    def encode(options: dict) -> tuple[int, float]:
        path = tmp_path / f"{len(options)}.mov"
        errors, mattes, frames = [], [], []
        for i in range(3):  # a soft-edged ellipse moving 7 px a frame
            d = np.hypot((x - 150 - 7 * i) / 110, (y - 128) / 80)
            matte = np.clip((1.0 - d) * 12.0, 0.0, 1.0)
            mattes.append(np.rint((16 + 219 * matte) * 4))
            frames.append(luma_frame(matte, "yuv422p10le", 10, w, h))
        _encode_prores(path, "yuv422p10le", options, frames)
        with av.open(str(path)) as c:
            for vf, want in zip(c.decode(video=0), mattes):
                got = planes(vf, np.uint16)
                errors.append(np.abs(got[0].astype(np.float64) - want).mean())
                assert (got[1] == 512).all() and (got[2] == 512).all()
        return path.stat().st_size, float(np.mean(errors))

    table = dict(FORMATS["prores422hq-matte"].options)
    assert table["flags"] == "+qscale" and table["global_quality"] == "118"
    fixed = encode(table)
    rate_control = encode({k: v for k, v in table.items() if k not in ("flags", "global_quality")})
    assert fixed[0] == rate_control[0]
    assert fixed[1] <= rate_control[1]
    # and the options reach the encoder: quantiser 8 is coarser
    assert encode({**table, "global_quality": str(8 * 118)})[1] > fixed[1]


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("shape", [(1080, 1920), (37, 53)])
def test_rgb_to_ycbcr_codes_match_the_matrix_formula(bits, shape):
    # The reference is the plain formula (np.tensordot, as the converter was before it moved
    # to cv2.transform): after rounding, every code within 1 and nearly all identical.
    from vosfx.io.writers.pictures import rgb_to_ycbcr, ycbcr_matrix_of

    rng = np.random.default_rng(bits)
    rgb = rng.random((*shape, 3), dtype=np.float32)
    rgb[0, :3] = [[0, 0, 0], [1, 1, 1], [1, 0, 0]]  # black, white, saturated red
    ref = np.tensordot(ycbcr_matrix_of(1), rgb, axes=([1], [2]))  # (3, H, W)
    s = np.float32(1 << (bits - 8))
    ref[0] = (16.0 + 219.0 * ref[0]) * s
    ref[1:] = (128.0 + 224.0 * ref[1:]) * s
    got = np.stack(rgb_to_ycbcr(rgb, bits))
    assert got.shape == ref.shape and got.dtype == np.float32
    diff = np.abs(np.rint(got) - np.rint(ref))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.999
    np.testing.assert_allclose(got, ref, atol=2e-3 * float(s), rtol=0)
    # exact codes at the ends of the range: black, white, red
    assert [round(float(v)) for v in got[:, 0, 0]] == [16 * s, 128 * s, 128 * s]
    assert [round(float(v)) for v in got[:, 0, 1]] == [235 * s, 128 * s, 128 * s]
    assert round(float(got[2, 0, 2])) == 240 * s


@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(1080, 1920), (37, 53)])
def test_ycbcr_codes_of_integer_rgb_match_the_formula(depth, shape):
    # The ProRes 4444 picture's integer path: every 10-bit code within 1 of the exact
    # (float64) BT.709 formula, nearly all identical, and black/white/red exact.
    from vosfx.io.writers.pictures import ycbcr_codes, ycbcr_matrix_of

    full = np.iinfo(depth).max
    rng = np.random.default_rng(int(full))
    rgb = rng.integers(0, full + 1, (*shape, 3), dtype=depth)
    rgb[0, :3] = [[0, 0, 0], [full, full, full], [full, 0, 0]]
    ref = np.tensordot(ycbcr_matrix_of(1).astype(np.float64), rgb / full, axes=([1], [2]))
    ref[0] = (16.0 + 219.0 * ref[0]) * 4
    ref[1:] = (128.0 + 224.0 * ref[1:]) * 4
    got = ycbcr_codes(rgb, 10)
    assert got.dtype == np.uint16 and got.shape == (*shape, 3)
    diff = np.abs(np.moveaxis(got, 2, 0).astype(np.float64) - np.rint(ref))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.995
    assert got[0, 0].tolist() == [64, 512, 512]
    assert got[0, 1].tolist() == [940, 512, 512]
    assert got[0, 2, 2] == 960


@pytest.mark.parametrize("shape", [(1080, 1920), (37, 65), (480, 854)])
def test_prores_picture_integer_path_matches_the_float_path(shape):
    # yuva444_frame writes straight into the frame's planes (odd widths have padded rows):
    # every code within 1 of planar_frame's float path, alpha codes identical.
    from vosfx.io.writers.base import image_rgb01
    from vosfx.io.writers.pictures import planar_frame, rgb_to_ycbcr, yuva444_frame

    h, w = shape
    rng = np.random.default_rng(w)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.random((h, w), dtype=np.float32)
    alpha[: h // 3] = 1.0
    alpha[-h // 3 :] = 0.0
    fast = yuva444_frame(image, alpha, "yuva444p10le", 10)
    y, cb, cr = rgb_to_ycbcr(image_rgb01(image), 10)
    slow = planar_frame("yuva444p10le", [y, cb, cr, alpha * np.float32(1023)], w, h, 10)
    got, want = planes(fast, np.uint16), planes(slow, np.uint16)
    for g, s in zip(got[:3], want[:3]):
        d = np.abs(g.astype(int) - s.astype(int))
        assert d.max() <= 1 and (d == 0).mean() > 0.995
    np.testing.assert_array_equal(got[3], want[3])  # the float path's own rounding
    exact = np.rint(alpha.astype(np.float64) * 1023)  # and within a code of exact rounding
    assert np.abs(got[3].astype(np.float64) - exact).max() <= 1


@pytest.mark.parametrize(
    ("pix_fmt", "bits", "shape", "frame_hw"),
    [
        ("yuv422p10le", 10, (1080, 1920), (1080, 1920)),
        ("yuv422p10le", 10, (37, 65), (37, 65)),  # ProRes: odd sizes as they are
        ("yuv420p", 8, (37, 65), (38, 66)),  # H.264: padded to even by repeating the edge
        ("yuv420p", 8, (38, 66), (38, 66)),
    ],
)
def test_luma_matte_frame_in_place_matches_the_float_path(pix_fmt, bits, shape, frame_hw):
    # The luma matte's frame, written in place into a recycled frame, has exactly the codes
    # the float path made (the luma formula on the padded matte, rounded by planar_frame) and
    # neutral chroma; a second matte through the same pool leaves nothing of the first.
    from vosfx.io.writers.framepool import FramePool
    from vosfx.io.writers.pictures import luma_frame, pad_even, planar_frame

    h, w = shape
    fh, fw = frame_hw
    rng = np.random.default_rng(w)
    pool = FramePool(pix_fmt, fw, fh, depth=1)
    for _ in range(3):
        alpha = rng.random((h, w), dtype=np.float32)
        alpha[: h // 4] = 1.0
        alpha[-h // 4 :] = 0.0
        fast = luma_frame(alpha, pix_fmt, bits, fw, fh, pool)
        padded = pad_even(alpha) if (fh, fw) != (h, w) else alpha
        chroma_hw = [(p.height, p.width) for p in fast.planes[1:]]
        neutral = [np.full(c, 128 << (bits - 8), np.float32) for c in chroma_hw]
        luma = (16.0 + 219.0 * padded) * np.float32(1 << (bits - 8))  # the formula, float32
        slow = planar_frame(pix_fmt, [luma, *neutral], fw, fh, bits)
        dtype = np.uint16 if bits > 8 else np.uint8
        for got, want in zip(planes(fast, dtype), planes(slow, dtype)):
            np.testing.assert_array_equal(got, want)
        pool.give_back(fast)
    with pytest.raises(OutputError, match="does not fit"):
        luma_frame(np.zeros((10, 10), np.float32), pix_fmt, bits, 12, 10)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(1080, 1920), (37, 65)])
def test_argb_frame_in_place_matches_the_float_path(dtype, shape):
    # QuickTime Animation's packed ARGB, written in place (odd widths have padded rows) into
    # a recycled frame: the same codes as the float path (scale to [0, 1], x255, round).
    from vosfx.io.writers.base import image_rgb01
    from vosfx.io.writers.framepool import FramePool
    from vosfx.io.writers.pictures import argb_frame

    h, w = shape
    rng = np.random.default_rng(w)
    pool = FramePool("argb", w, h, depth=1)
    for _ in range(2):
        image = rng.integers(0, np.iinfo(dtype).max, (h, w, 3), dtype=dtype, endpoint=True)
        alpha = rng.random((h, w), dtype=np.float32)
        alpha[: h // 4] = 1.0
        alpha[-h // 4 :] = 0.0
        want = np.concatenate([alpha[..., None], image_rgb01(image)], axis=2)
        want = np.rint(want * 255.0).astype(np.uint8)
        fast = argb_frame(image, alpha, pool)
        np.testing.assert_array_equal(fast.to_ndarray(format="argb"), want)
        pool.give_back(fast)


def _bilinear_upsample(plane: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reference 4:4:4 upsampling in float64: each chroma sample centred on its sx-by-sy
    block, linear between samples, the edges held (independent of OpenCV)."""
    ch, cw = plane.shape
    sy, sx = -(-h // ch), -(-w // cw)

    def coords(n, s, cn):
        u = np.clip((np.arange(n) + 0.5) / s - 0.5, 0, cn - 1)
        lo = np.floor(u).astype(int)
        return lo, np.minimum(lo + 1, cn - 1), u - lo

    y0, y1, fy = coords(h, sy, ch)
    x0, x1, fx = coords(w, sx, cw)
    p = plane.astype(np.float64)
    rows = p[y0] * (1 - fy)[:, None] + p[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


@pytest.mark.parametrize(
    ("shape", "sub", "bits"),
    [
        ((1080, 1920), (2, 2), 8),
        ((37, 65), (2, 2), 8),
        ((480, 854), (2, 1), 8),
        ((38, 66), (1, 1), 8),
        ((37, 65), (2, 2), 10),
    ],
)
def test_prores_picture_from_the_source_planes(shape, sub, bits):
    # ProRes 4444 from the source's own Y'CbCr: luma is the source's codes exactly (shifted to
    # 10 bits), chroma the reference upsampling within one code, alpha as from RGB; colours
    # outside the RGB cube stay (an RGB round trip clips them)
    from media import ycbcr_planes

    from vosfx.io.video import plane_views
    from vosfx.io.writers.pictures import yuva444_frame, yuva444_from_source
    from vosfx.types import SourceYCbCr

    h, w = shape
    y, cb, cr = ycbcr_planes(5, w, h, *sub, bits=bits)
    alpha = np.random.default_rng(w).random((h, w), dtype=np.float32)
    got = plane_views(
        yuva444_from_source(SourceYCbCr(y, cb, cr, bits), alpha, "yuva444p10le", 10), np.uint16
    )
    shift = 10 - bits
    np.testing.assert_array_equal(got[0], y.astype(np.uint16) << shift)
    for g, plane in zip(got[1:3], (cb, cr)):
        want = _bilinear_upsample(plane.astype(np.float64) * (1 << shift), h, w)
        assert np.abs(g - want).max() <= 0.5 + 1e-6
    rgb_path = plane_views(
        yuva444_frame(np.zeros((h, w, 3), np.uint8), alpha, "yuva444p10le", 10), np.uint16
    )
    np.testing.assert_array_equal(got[3], rgb_path[3])
    # the planes hold colours outside the RGB cube: through 8-bit RGB they come back clipped
    k = float(1 << (bits - 8))
    luma = (y / k - 16) / 219
    pb, pr = (cb / k - 128) / 224, (cr / k - 128) / 224
    pb, pr = (_bilinear_upsample(p, h, w) for p in (pb, pr))
    rgb = np.stack([luma + 1.5748 * pr, luma - 0.1873 * pb - 0.4681 * pr, luma + 1.8556 * pb], -1)
    assert (rgb < -0.05).any() or (rgb > 1.05).any()
    rgb8 = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    through_rgb = plane_views(yuva444_frame(rgb8, alpha, "yuva444p10le", 10), np.uint16)
    assert max(np.abs(t.astype(int) - g).max() for t, g in zip(through_rgb[1:3], got[1:3])) > 20


def _source_planes_frame(i: int, deep: bool = False):
    from media import ycbcr_planes

    from vosfx.types import SourceYCbCr

    frame, matte = synthetic_clip(pts=(i * 512,), start=i)[0]
    y, cb, cr = ycbcr_planes(i, W, H)
    return replace(frame, derived={"ycbcr": SourceYCbCr(y, cb, cr, 8)}), matte


@pytest.mark.parametrize(
    ("fmt", "alpha_mode", "used"),
    [
        ("prores4444", "straight", True),
        ("prores4444", "premultiplied", False),
        ("webm-alpha", "straight", True),
        ("qtrle", "straight", False),
        ("ffv1-matte", "straight", False),
    ],
)
def test_which_writers_take_the_source_planes(tmp_path, monkeypatch, fmt, alpha_mode, used):
    # a writer that says it takes the planes uses them for every frame; one that does not
    # never reads them (premultiplied colour needs the RGB)
    from vosfx.io.writers import video as writers_video

    calls = []
    real = writers_video.yuva444_from_source
    monkeypatch.setattr(
        writers_video, "yuva444_from_source", lambda *a: calls.append(1) or real(*a)
    )
    real_planar = writers_video.planar_frame

    def planar(pix_fmt, planes, *a):
        calls.extend(1 for p in planes[:1] if p.dtype == np.uint8)  # source codes go in as is
        return real_planar(pix_fmt, planes, *a)

    monkeypatch.setattr(writers_video, "planar_frame", planar)
    clip = [_source_planes_frame(i) for i in range(3)]
    path = out_path(tmp_path, fmt)
    with open_writer(
        fmt, path, make_info(3), obj_ids=OBJ_IDS, config=OutputConfig(alpha_mode=alpha_mode)
    ) as writer:
        assert writer.takes_source_ycbcr is used
        for frame, matte in clip:
            writer.write(frame, matte)
    assert len(calls) == (3 if used else 0)


def test_webm_alpha_from_the_source_planes_is_the_source(tmp_path):
    # 8-bit 4:2:0 source into VP9's yuva420p: the picture handed to the encoder holds the
    # source's codes unchanged
    from vosfx.io.video import plane_views
    from vosfx.io.writers import video as writers_video

    frame, matte = _source_planes_frame(2)
    src = frame.derived["ycbcr"]
    with open_writer(
        "webm-alpha",
        out_path(tmp_path, "webm-alpha"),
        make_info(1),
        obj_ids=OBJ_IDS,
        config=OutputConfig(),
    ) as writer:
        vf = writers_video.VideoWriter._picture(writer, frame, matte.merged, matte)
        writer.write(frame, matte)
    y, cb, cr, a = plane_views(vf, np.uint8)
    for got, want in ((y, src.y), (cb, src.cb), (cr, src.cr)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(a, np.rint(matte.merged * np.float32(255)))


@pytest.mark.parametrize(
    ("matrix", "kr", "kb"),
    [(1, 0.2126, 0.0722), (5, 0.299, 0.114), (6, 0.299, 0.114), (9, 0.2627, 0.0593)],
)
def test_each_matrix_converts_with_its_own_luma_weights(matrix, kr, kb):
    # BT.709, BT.601 (two tags) and BT.2020: Y' = kr R + kg G + kb B, Cb and Cr scaled to
    # +-0.5 by the published constants; white, black and the primaries' luma codes exact
    from vosfx.io.writers.pictures import rgb_to_ycbcr, ycbcr_codes

    kg = 1 - kr - kb
    rgb = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0]]], np.float32)
    y, cb, cr = (p[0] for p in rgb_to_ycbcr(rgb, 10, matrix))
    np.testing.assert_allclose(y, 64 + 876 * np.array([kr, kg, kb, 1, 0]), atol=1e-3)
    np.testing.assert_allclose(cb[2], 512 + 896 * 0.5, atol=1e-3)  # blue: Cb at its top
    np.testing.assert_allclose(cr[0], 512 + 896 * 0.5, atol=1e-3)  # red: Cr at its top
    codes = ycbcr_codes((rgb * 255).astype(np.uint8), 10, matrix)
    assert codes[0, :, 0].tolist() == [round(64 + 876 * v) for v in (kr, kg, kb, 1, 0)]


def _prores_packets(take, give_back, n: int = 12, w: int = 192, h: int = 108) -> list[bytes]:
    """prores_ks 4444 packets (two frame threads) of ``n`` distinct pictures, each filled into
    the frame ``take()`` gives and handed to ``give_back`` once sent to the encoder."""
    from vosfx.io.video import plane_views

    y, x = np.mgrid[:h, :w]
    ctx = av.CodecContext.create("prores_ks", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuva444p10le"
    ctx.time_base = Fraction(1, 25)
    ctx.options = dict(FORMATS["prores4444"].options)
    ctx.thread_type, ctx.thread_count = "FRAME", 2
    out = []
    for i in range(n):
        vf = take()
        for k, v in enumerate(plane_views(vf, np.uint16)):
            v[...] = 64 + (x * (k + 1) + y * 3 + 37 * i) % 876
        vf.pts = i
        out += [bytes(p) for p in ctx.encode(vf)]
        give_back(vf)
    return out + [bytes(p) for p in ctx.encode(None)]


def test_frame_pool_recycles_frames_without_changing_a_packet():
    # The writers fill recycled frames (framepool.py). prores_ks's frame threads still read a
    # frame after encode() returns; make_writable gives such a frame a new buffer, so recycling
    # can never change what is encoded. A pool of one frame forces that case on every frame.
    from vosfx.io.writers.framepool import FramePool

    def fresh():
        return av.VideoFrame(192, 108, "yuva444p10le")

    expected = _prores_packets(fresh, lambda vf: None)
    assert len(expected) == 12 and len(set(expected)) == 12  # distinct pictures

    tight = FramePool("yuva444p10le", 192, 108, depth=1)
    assert _prores_packets(tight.take, tight.give_back) == expected
    assert tight.copied > 0  # the encoder did hold frames the pool wanted back
    assert tight.depth == 1 + tight.copied  # and the pool grew each time

    pool = FramePool("yuva444p10le", 192, 108)
    assert _prores_packets(pool.take, pool.give_back, n=24) == _prores_packets(
        fresh, lambda vf: None, n=24
    )
    assert pool.made <= pool.depth < 12  # a few frames, recycled for all 24


def test_video_writer_recycles_its_frames(tmp_path, monkeypatch):
    # Through the writer: a ProRes 4444 render makes a few frames for the whole clip, and its
    # output decodes to the clip's alpha.
    from vosfx.io.writers import video as writers_video

    clip = synthetic_clip(pts=tuple(range(0, 512 * 16, 512)))
    pools = []
    real_open = writers_video.VideoWriter._open

    def spy(self):
        real_open(self)
        pools.append(self._frames)

    monkeypatch.setattr(writers_video.VideoWriter, "_open", spy)
    path = render("prores4444", tmp_path / "a.mov", clip)
    (pool,) = pools
    assert pool.made <= pool.depth < len(clip)
    decoded = decoded_alpha("prores4444", path, clip)
    assert len(decoded) == len(clip)
    for (_, matte), (_, alpha, _) in zip(clip, decoded):
        assert np.abs(alpha - matte.merged).max() <= ALPHA_TOL["prores4444"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_rgb_picture_through_the_pools_scratch_is_the_same(dtype):
    # yuva444_frame with the writer's pool: the widened image and the codes are its scratch
    # arrays, reused frame after frame; the planes equal the path without a pool, also for an
    # image with padded rows (how PyAV's decoded RGB arrives).
    from vosfx.io.video import plane_views
    from vosfx.io.writers.framepool import FramePool
    from vosfx.io.writers.pictures import yuva444_frame

    h, w = 37, 66
    rng = np.random.default_rng(5)
    top = np.iinfo(dtype).max
    pool = FramePool("yuva444p10le", w, h)
    seen = set()
    for i in range(4):
        padded = rng.integers(0, top, (h, w + 5, 3), dtype=dtype, endpoint=True)
        image = padded[:, :w] if i % 2 else np.ascontiguousarray(padded[:, :w])
        alpha = rng.random((h, w), dtype=np.float32)
        want = plane_views(yuva444_frame(image, alpha, "yuva444p10le", 10), np.uint16)
        vf = yuva444_frame(image, alpha, "yuva444p10le", 10, pool=pool)
        for got, wnt in zip(plane_views(vf, np.uint16), want):
            np.testing.assert_array_equal(got, wnt)
        pool.give_back(vf)
        seen.add(id(pool.scratch("codes", (h, w, 3), np.uint16)))
    assert len(seen) == 1


def _encoder_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("vosfx-encode")]


@pytest.mark.parametrize("fmt", ["png8", "png16", "png16-matte", "exr16", "exr32", "exr-layers"])
def test_image_sequence_encoded_several_at_once_is_the_same(tmp_path, monkeypatch, fmt):
    # Up to default_encoders() images are encoded at once on a pool (EXR: a context per
    # thread): every file is byte for byte the one a single encoder writes, and the pool's
    # threads are gone after close.
    from vosfx.io.writers import images as writers_images

    clip = synthetic_clip(pts=tuple(range(0, 512 * 12, 512)))
    outputs = {}
    for encoders in (1, 3):
        monkeypatch.setattr(writers_images, "default_encoders", lambda e=encoders: e)
        config = OutputConfig(exr_rgb=True) if fmt == "exr-layers" else None
        (tmp_path / f"e{encoders}").mkdir()
        out = render(fmt, tmp_path / f"e{encoders}" / f"shot_{fmt}", clip, config)
        outputs[encoders] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert len(outputs[1]) == len(clip) and outputs[3] == outputs[1]
    assert not _encoder_threads()


@pytest.mark.parametrize("when", ["write", "close"])
def test_image_sequence_encoder_error_surfaces_and_leaves_nothing(tmp_path, monkeypatch, when):
    # An image that fails on an encoder thread fails the render at a later write() or at
    # close(), with the error as the writer gives it, and no folder (temporary or final) stays.
    from vosfx.io.writers import images as writers_images

    monkeypatch.setattr(writers_images, "default_encoders", lambda: 3)
    clip = synthetic_clip(pts=tuple(range(0, 512 * 8, 512)))
    bad = 2 if when == "write" else len(clip) - 1
    real = writers_images.ImageSequenceWriter._encode

    def encode(self, frame, alpha):
        if frame.index == bad:
            raise OSError(28, "No space left on device")
        return real(self, frame, alpha)

    monkeypatch.setattr(writers_images.ImageSequenceWriter, "_encode", encode)
    path = tmp_path / "shot_png16"
    with (
        pytest.raises(OutputError, match="disk full while writing") as err,
        open_writer(
            "png16", path, make_info(len(clip)), obj_ids=OBJ_IDS, config=OutputConfig()
        ) as writer,
    ):
        for frame, matte in clip:
            writer.write(frame, matte)
    assert "No space left" in str(err.value)
    assert listing(tmp_path) == [] and not _encoder_threads()


def test_default_encoders_take_the_cores_up_to_a_bound(monkeypatch):
    from vosfx.io.writers import images as writers_images

    for cores, want in ((1, 1), (2, 2), (3, 3), (16, writers_images.MAX_ENCODERS)):
        monkeypatch.setattr(writers_images, "usable_cores", lambda cores=cores: cores)
        assert writers_images.default_encoders() == want


def test_16_to_8_bit_codes_equal_both_float_paths_for_every_code():
    # codes8_of_16 (OpenCV) replaces qtrle's rint(v * (1 / 65535) * 255) and the PNG writer's
    # rint(v * (255 / 65535)), both in float32: all 65,536 codes, and exact rounding of v / 257
    from vosfx.io.writers.pictures import codes8_of_16

    v = np.arange(65536, dtype=np.float32)
    lut = codes8_of_16(np.arange(65536, dtype=np.uint16).reshape(256, 256)).ravel()
    assert lut.dtype == np.uint8 and lut.shape == (65536,)
    np.testing.assert_array_equal(lut, np.rint(v * np.float32(1 / 65535) * np.float32(255)))
    np.testing.assert_array_equal(lut, np.rint(v * np.float32(255 / 65535)))
    np.testing.assert_array_equal(lut, np.rint(v.astype(np.float64) / 257))


@pytest.mark.parametrize(
    ("src", "deep"), [(np.uint8, False), (np.uint8, True), (np.uint16, True), (np.uint16, False)]
)
def test_straight_png_codes_equal_the_float_path(src, deep):
    # bgra_codes (integer colour, one output array) gives the float path's exact codes.
    from vosfx.io.writers.images import bgra_codes

    rng = np.random.default_rng(11)
    top_in = np.iinfo(src).max
    image = rng.integers(0, top_in, (37, 66, 3), dtype=src, endpoint=True)
    alpha = rng.random((37, 66), dtype=np.float32)
    alpha[0, :4] = (0.0, 1.0, 0.5 / 65535, 0.5 / 255)
    out_max = 65535.0 if deep else 255.0
    bgra = np.empty((37, 66, 4), np.float32)
    bgra[..., :3] = image[..., ::-1].astype(np.float32) * np.float32(out_max / top_in)
    bgra[..., 3] = alpha * np.float32(out_max)
    want = np.rint(bgra).astype(np.uint16 if deep else np.uint8)
    got = bgra_codes(image, alpha, deep)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("sx", "sy"), [(2, 2), (2, 1)])
@pytest.mark.parametrize("shape", [(1080, 1920), (37, 65), (1, 1)])
def test_chroma_subsample_is_the_block_mean(sx, sy, shape):
    # subsample (OpenCV's area resize) against the plain block mean in float64, odd sizes
    # padded by repeating the last row/column: equal to float32 rounding.
    from vosfx.io.writers.pictures import subsample

    rng = np.random.default_rng(7)
    plane = (rng.random(shape, dtype=np.float32) * 1023).astype(np.float32)
    h, w = shape
    padded = np.pad(plane.astype(np.float64), ((0, -h % sy), (0, -w % sx)), mode="edge")
    want = padded.reshape(padded.shape[0] // sy, sy, padded.shape[1] // sx, sx).mean(axis=(1, 3))
    got = subsample(plane, sx, sy)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_premultiply_equals_the_broadcast_product():
    from vosfx.io.writers.base import premultiply

    rng = np.random.default_rng(9)
    for shape in ((1080, 1920), (37, 65)):
        rgb = rng.random(shape + (3,), dtype=np.float32)
        alpha = rng.random(shape, dtype=np.float32)
        want = rgb * alpha[..., None]
        premultiply(rgb, alpha)
        np.testing.assert_array_equal(rgb, want)

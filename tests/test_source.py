"""vosfx.io.source: streaming decode of synthetic clips, image sequences and the real clips."""

from __future__ import annotations

import sys
import threading
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from conftest import shared_data
from media import (
    make_clip,
    make_sequence,
    make_ycbcr_clip,
    moving_square,
    moving_square_frame,
    truncate,
    ycbcr_planes,
)

from vosfx.errors import InputError
from vosfx.io.source import open_source, probe
from vosfx.io.video import plane_views


def decode_all(path, **kwargs):
    with open_source(path, **kwargs) as src:
        return src.info, list(src)


def decode_threads():
    return [t for t in threading.enumerate() if t.name.startswith("vosfx-decode")]


@pytest.fixture
def h264(tmp_path):
    return make_clip(tmp_path / "clip.mp4", n=30, width=64, height=48)


def test_h264_8bit_frames_pts_and_pixels(h264):
    info, frames = decode_all(h264)
    assert (info.width, info.height, info.num_frames) == (64, 48, 30)
    assert info.frame_count_exact and info.fps == 24 and info.codec == "h264"
    assert (info.bit_depth, info.pix_fmt, info.rotation, info.is_vfr) == (8, "yuv420p", 0, False)
    assert [f.index for f in frames] == list(range(30))
    step = round(1 / (info.fps * info.time_base))
    assert [f.pts for f in frames] == [info.start_pts + i * step for i in range(30)]
    assert all(f.duration == step for f in frames)
    for f, ref in zip(frames, moving_square(30, 64, 48), strict=True):
        assert f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3)
        # lossy h264 4:2:0: mean error a few codes, nowhere near another frame's content
        assert np.abs(f.image.astype(int) - ref).mean() < 6


def test_prefetch_zero_gives_the_same_frames(h264):
    _, threaded = decode_all(h264, prefetch=4)
    _, direct = decode_all(h264, prefetch=0)
    assert [f.pts for f in threaded] == [f.pts for f in direct]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(threaded, direct, strict=True))


@pytest.mark.parametrize("prefetch", [0, 4])
def test_prepare_runs_on_the_decode_thread(h264, prefetch):
    # the engine's preprocessing hook: each frame comes out prepared, made on the thread that
    # decodes (the decode thread when prefetching), and the decoder is closed as before
    from dataclasses import replace

    threads = set()

    def prepare(frame):
        threads.add(threading.current_thread().name)
        return replace(frame, model_input=frame.image[::2, ::2].copy())

    _, frames = decode_all(h264, prefetch=prefetch, prepare=prepare, start=3, end=9)
    assert [f.index for f in frames] == list(range(3, 9))
    assert all(np.array_equal(f.model_input, f.image[::2, ::2]) for f in frames)
    want = threading.current_thread().name if prefetch == 0 else "vosfx-decode:clip.mp4"
    assert threads == {want}
    assert not decode_threads()


def test_ffv1_10bit_is_exact(tmp_path):
    frames = [moving_square_frame(i, 40, 30, depth=10)[0] for i in range(5)]
    frames[0][0, :4] = [[0, 0, 0], [1, 2, 3], [1021, 1022, 1023], [512, 256, 128]]
    path = make_clip(
        tmp_path / "ten.mkv",
        n=5,
        width=40,
        height=30,
        codec="ffv1",
        pix_fmt="gbrp10le",
        frames=frames,
    )
    info, decoded = decode_all(path)
    assert (info.bit_depth, info.pix_fmt) == (10, "gbrp10le")
    for got, ref in zip(decoded, frames, strict=True):
        assert got.image.dtype == np.uint16
        # full 16-bit scale: the 10-bit value sits in the top bits
        assert np.array_equal(got.image >> 6, ref)
    assert decoded[0].image[0, 3].tolist() == [
        512 * 64 + 512 // 16,
        256 * 64 + 256 // 16,
        128 * 64 + 128 // 16,
    ]


@pytest.mark.parametrize("codec,pix_fmt", [("ffv1", "yuv420p10le"), ("prores_ks", "yuv422p10le")])
def test_10bit_yuv_decodes_to_uint16(tmp_path, codec, pix_fmt):
    path = make_clip(tmp_path / "yuv10.mkv", n=4, width=64, height=48, codec=codec, pix_fmt=pix_fmt)
    info, frames = decode_all(path)
    assert (info.bit_depth, info.pix_fmt, len(frames)) == (10, pix_fmt, 4)
    ref = moving_square_frame(2, 64, 48, depth=10)[0].astype(np.float64) * 64
    err = np.abs(frames[2].image.astype(np.float64) - ref)
    assert frames[2].image.dtype == np.uint16
    assert np.median(err) < 64 * 4  # a few 10-bit codes (4:2:x chroma, RGB<->YUV rounding)
    assert frames[2].image.max() > 255 * 2  # really on the 16-bit scale, not 8-bit values


def test_odd_size_is_preserved(tmp_path):
    path = make_clip(tmp_path / "odd.mkv", n=3, width=853, height=479, codec="ffv1")
    info, frames = decode_all(path)
    assert (info.width, info.height) == (853, 479)
    assert all(f.image.shape == (479, 853, 3) for f in frames)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    # ffv1 is lossless, so the rotated frame equals np.rot90 of what was written
    path = make_clip(
        tmp_path / f"rot{rotation}.mkv",
        n=3,
        width=40,
        height=24,
        codec="ffv1",
        pix_fmt="bgr0",
        rotation=rotation,
    )
    info, frames = decode_all(path)
    assert info.rotation == rotation
    expect_wh = (24, 40) if rotation in (90, 270) else (40, 24)
    assert (info.width, info.height) == expect_wh
    written = moving_square_frame(1, 40, 24)[0]
    clockwise = np.rot90(written, k=-rotation // 90)
    assert np.array_equal(frames[1].image, clockwise)
    assert probe(path).rotation == rotation


def test_vfr_pts_come_back_exactly(tmp_path):
    pts = [0, 40, 95, 100, 180, 250, 262, 300, 390, 400, 410, 500]
    path = make_clip(tmp_path / "vfr.mkv", n=len(pts), pts=pts, time_base=Fraction(1, 1000))
    info, frames = decode_all(path)
    assert info.is_vfr and info.time_base == Fraction(1, 1000)
    assert [f.pts for f in frames] == pts
    assert [f.index for f in frames] == list(range(len(pts)))
    assert frames[2].time_s == pytest.approx(0.095)


def test_constant_rate_mkv_is_not_vfr(tmp_path):
    # 1 ms ticks round 1/24 s to 41 or 42: still constant rate
    path = make_clip(tmp_path / "cfr.mkv", n=40)
    assert probe(path).is_vfr is False


def test_audio_is_reported(tmp_path):
    path = make_clip(tmp_path / "av.mp4", n=12, audio=True)
    assert probe(path).has_audio
    assert not probe(make_clip(tmp_path / "v.mp4", n=3)).has_audio


@pytest.mark.parametrize("start,end", [(0, 5), (3, 9), (25, None), (58, 61), (70, 80)])
def test_range_matches_full_decode(tmp_path, start, end):
    # 80 frames, keyframe every 12 with B-frames: starts >= 48 take the seek path
    path = make_clip(tmp_path / "gop.mp4", n=80, options={"g": "12", "bf": "2"})
    _, full = decode_all(path)
    _, part = decode_all(path, start=start, end=end)
    want = full[start:end]
    assert [f.index for f in part] == [f.index for f in want]
    assert [f.pts for f in part] == [f.pts for f in want]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(part, want, strict=True))


@pytest.mark.parametrize(
    ("prefetch", "prefetch_bytes", "ahead"),
    # frames prepared while nobody reads: the queued ones and the one waiting to be queued
    [(8, 1 << 30, 9), (8, 25 << 20, 3), (8, 0, 2), (2, 1 << 30, 3)],
)
def test_decode_ahead_is_bounded_in_frames_and_bytes(h264, prefetch, prefetch_bytes, ahead):
    """10 MiB model inputs: 25 MiB queue two frames (10 + 10; a third would make 30), 0 bytes
    still lets the first through; every frame comes out, in order, either way."""
    import time
    from dataclasses import replace

    made = []

    def prepare(frame):
        made.append(frame.index)
        return replace(frame, model_input=np.zeros(10 << 20, np.uint8))

    src = open_source(h264, prefetch=prefetch, prefetch_bytes=prefetch_bytes, prepare=prepare)
    with src:
        deadline = time.monotonic() + 10
        while len(made) < ahead and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # time enough to run past the bound, were there none
        assert len(made) == ahead
        assert [f.index for f in src] == list(range(30))
    assert not decode_threads()


def test_frame_nbytes_counts_model_input_and_derived(h264):
    from dataclasses import replace

    from vosfx.matte.guided import GuidePrep

    _, (frame, *_) = decode_all(h264, end=1)
    guide = GuidePrep(frame.image, radius_px=2, eps=1e-3)
    h, w = guide.low_hw  # the guide, its grid's image and 12 float planes on the grid
    assert guide.nbytes == frame.image.nbytes + h * w * 3 + 12 * h * w * 4
    full = replace(frame, model_input=np.zeros((32, 32, 3), np.uint8), derived={"guide": guide})
    assert frame.nbytes == frame.image.nbytes
    assert full.nbytes == frame.image.nbytes + 32 * 32 * 3 + guide.nbytes


def test_bad_ranges(h264):
    with pytest.raises(InputError, match="start < 30"):
        open_source(h264, start=30)
    with pytest.raises(InputError, match="range"):
        open_source(h264, start=5, end=5)
    with pytest.raises(InputError, match="range"):
        open_source(h264, start=-1)


def test_image_sequence_folder_8bit(tmp_path):
    folder = make_sequence(tmp_path / "seq", n=12, name="f{}")  # f0..f11: natural order
    info, frames = decode_all(folder, fps=25)
    assert (info.num_frames, info.width, info.height, info.fps) == (12, 64, 48, 25)
    assert info.time_base == Fraction(1, 25) and info.bit_depth == 8
    assert [f.pts for f in frames] == list(range(12))
    for f in frames:
        assert np.array_equal(f.image, moving_square_frame(f.index, 64, 48)[0])


def test_image_sequence_pattern_16bit(tmp_path):
    make_sequence(tmp_path / "seq16", n=5, depth=16, first=100)
    (tmp_path / "seq16" / "notes.txt").write_text("not a frame")
    info, frames = decode_all(tmp_path / "seq16" / "%05d.png", start=1, end=4)
    assert info.num_frames == 5 and info.bit_depth == 16 and info.fps == 24
    assert [f.index for f in frames] == [1, 2, 3]
    assert frames[0].image.dtype == np.uint16
    assert np.array_equal(frames[0].image, moving_square_frame(1, 64, 48, depth=16)[0])


def test_image_sequence_size_mismatch_names_the_file(tmp_path):
    folder = make_sequence(tmp_path / "seq", n=3)
    cv2.imwrite(str(folder / "00003.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InputError, match=r"00003.png \(frame 3\)"):
        decode_all(folder)


def write_exr(path, rgb, half=False, compression="ZIP"):
    """(H, W, 3) float32 written with the OpenEXR package (a dev dependency), R, G, B as half
    or float, with ``compression`` (ZIP, PIZ, DWAA, NO)."""
    import OpenEXR

    kind = getattr(OpenEXR, f"{compression}_COMPRESSION")
    header = {"compression": kind, "type": OpenEXR.scanlineimage}
    dtype = np.float16 if half else np.float32
    channels = {c: np.ascontiguousarray(rgb[..., k]).astype(dtype) for k, c in enumerate("RGB")}
    with OpenEXR.File(header, channels) as exr:
        exr.write(str(path))


@pytest.mark.parametrize("openexr", [True, False])
def test_exr_sequence_is_srgb_encoded(tmp_path, monkeypatch, openexr):
    """Scene-linear EXR frames become sRGB-encoded 16-bit; without the OpenEXR package
    (the base install) FFmpeg's decoder reads them, to the same values."""
    (tmp_path / "seq").mkdir()
    linear = np.zeros((6, 8, 3), np.float32)
    linear[..., 0], linear[..., 1], linear[..., 2] = 0.18, 1.0, 2.5  # 2.5 is over-range
    write_exr(tmp_path / "seq" / "0001.exr", linear)
    if not openexr:
        monkeypatch.setitem(sys.modules, "OpenEXR", None)  # import fails: FFmpeg's turn
    info, frames = decode_all(tmp_path / "seq")
    assert info.bit_depth == 16 and frames[0].image.dtype == np.uint16
    # sRGB(0.18) = 0.4613; 1.0 -> full scale; over-range clips
    assert abs(int(frames[0].image[0, 0, 0]) - round(0.4613 * 65535)) < 40
    assert frames[0].image[0, 0, 1:].tolist() == [65535, 65535]


@pytest.mark.parametrize("half", [True, False])
@pytest.mark.parametrize("compression", ["NO", "RLE", "ZIPS", "ZIP", "PIZ", "PXR24", "B44"])
def test_exr_read_through_ffmpeg_equals_openexr(tmp_path, monkeypatch, half, compression):
    """FFmpeg's EXR decoder (every install has it through PyAV) and the OpenEXR package give
    the same frame, bit for bit, for every compression but DWA (refused, below). Odd sizes
    check the planes' row padding."""
    from vosfx.io.sequence import read_image

    rng = np.random.default_rng(0)
    for shape in ((37, 51), (5, 300), (120, 7)):
        linear = (rng.random((*shape, 3)) * 1.2).astype(np.float32)
        path = tmp_path / "f.exr"
        write_exr(path, linear, half=half, compression=compression)
        want = read_image(path)
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "OpenEXR", None)
            got = read_image(path)
        assert got.dtype == want.dtype == np.uint16 and got.shape == (*shape, 3)
        assert np.array_equal(got, want), (shape, np.abs(got.astype(int) - want).max())


@pytest.mark.parametrize("compression", ["DWAA", "DWAB"])
def test_dwa_exr_without_openexr_is_refused_naming_the_extra(tmp_path, monkeypatch, compression):
    """FFmpeg decodes some DWAA files wrong (zeros over whole blocks at widths such as 51;
    FFmpeg 8.1 in PyAV 18.1): without the OpenEXR package a DWA file is
    refused, never read wrong."""
    from vosfx.io.sequence import read_image

    write_exr(tmp_path / "f.exr", np.ones((37, 51, 3), np.float32), compression=compression)
    monkeypatch.setitem(sys.modules, "OpenEXR", None)
    with pytest.raises(InputError, match=r"DWA-compressed EXR needs the OpenEXR package"):
        read_image(tmp_path / "f.exr")


def test_luminance_exr_reads_as_grey_without_openexr(tmp_path, monkeypatch):
    import OpenEXR

    from vosfx.io.sequence import read_image

    y = np.linspace(0, 1, 6 * 8, dtype=np.float32).reshape(6, 8)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Y": y.astype(np.float16)}) as exr:
        exr.write(str(tmp_path / "y.exr"))
    monkeypatch.setitem(sys.modules, "OpenEXR", None)
    image = read_image(tmp_path / "y.exr")
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 65535


def test_an_unreadable_exr_is_named(tmp_path, monkeypatch):
    (tmp_path / "seq").mkdir()
    (tmp_path / "seq" / "0001.exr").write_bytes(b"v/1\x01" + bytes(64))
    for hidden in (False, True):
        if hidden:
            monkeypatch.setitem(sys.modules, "OpenEXR", None)
        with pytest.raises(InputError, match=r"expected a readable EXR image, .*0001.exr"):
            decode_all(tmp_path / "seq")


def write_dpx(path, planes, pix_fmt):
    """A DPX image through FFmpeg's encoder: ``planes`` as the format's own planes (uint16
    G, B, R for gbrp10le; one (H, W, 3) array for rgb48le)."""
    import av

    height, width = planes[0].shape[:2]
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("dpx", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        frame = av.VideoFrame(width, height, pix_fmt)
        for plane, values in zip(frame.planes, planes):
            rows = np.zeros((height, plane.line_size // 2), np.uint16)
            rows[:, : values.size // height] = values.reshape(height, -1)
            plane.update(rows.tobytes())
        for packet in (*stream.encode(frame), *stream.encode()):
            container.mux(packet)


def test_dpx_sequence_reads_its_code_values_at_16_bits(tmp_path):
    """DPX plates (film scans; Resolve and Nuke pipelines; the Resolve script passes them) are
    read through FFmpeg's decoder: 16-bit RGB as stored, 10-bit code values scaled to 16 bits
    by repeating their top bits (1023 -> 65535, 512 -> 32800), numbered by their files.
    (FFmpeg writes transfer 4, unspecified video: code values.)"""
    (tmp_path / "plate").mkdir()
    rgb = np.random.default_rng(0).integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    write_dpx(tmp_path / "plate" / "shot.1001.dpx", [rgb], "rgb48le")
    ten = np.array([[0, 1, 512, 1023, 100, 700, 1000, 3]] * 4, np.uint16)
    write_dpx(tmp_path / "ten.dpx", [ten, ten // 2, ten // 3], "gbrp10le")  # G, B, R
    info, frames = decode_all(tmp_path / "plate")
    assert info.bit_depth == 16 and info.frame_numbers.numbers == (1001,)
    assert np.array_equal(frames[0].image, rgb)
    from vosfx.io.sequence import read_image

    got = read_image(tmp_path / "ten.dpx").astype(np.int64)
    for channel, values in ((0, ten // 3), (1, ten), (2, ten // 2)):  # R, G, B
        want = (values.astype(np.int64) << 6) | (values.astype(np.int64) >> 4)
        assert np.array_equal(got[..., channel], want), channel
    (tmp_path / "plate" / "shot.1002.dpx").write_bytes(b"SDPX" + bytes(60))
    with pytest.raises(InputError, match=r"expected a readable DPX image, .*shot\.1002\.dpx"):
        decode_all(tmp_path / "plate")


@pytest.mark.parametrize("transfer", [1, 3, 2, 6])
def test_a_log_or_linear_dpx_reaches_the_model_as_a_picture(tmp_path, transfer):
    """A DPX whose header says its values are a log scan (1 printing density, 3 logarithmic:
    Cineon, black at code 95 and white at 685 of 1023) or linear light (2) is converted to
    linear light and sRGB-encoded as EXR is, not handed to the model as a flat log picture;
    video transfers (6: ITU-R 709) keep their code values."""
    from vosfx.io.sequence import _linear_to_srgb16, read_image

    ten = np.array([[0, 95, 470, 685, 1023, 300]] * 2, np.uint16)
    path = tmp_path / "scan.dpx"
    write_dpx(path, [ten, ten, ten], "gbrp10le")
    data = bytearray(path.read_bytes())
    data[801] = transfer  # image element 1's transfer characteristic
    path.write_bytes(bytes(data))
    got = read_image(path)
    codes = (ten.astype(np.int64) << 6) | (ten.astype(np.int64) >> 4)
    if transfer == 6:
        assert np.array_equal(got[..., 0], codes)
        return
    if transfer == 2:
        light = codes / 65535
    else:
        black = 10 ** ((95 - 685) * 0.002 / 0.6)
        light = (10 ** ((ten.astype(np.float64) - 685) * 0.002 / 0.6) - black) / (1 - black)
    want = _linear_to_srgb16(np.repeat(light[..., None], 3, axis=2).astype(np.float32))
    assert np.abs(got.astype(np.int64) - want).max() <= 1
    if transfer != 2:  # code 95 black, 685 white, 470 the scan's 18 % grey
        assert got[0, 1, 0] == 0 and got[0, 3, 0] == got[0, 4, 0] == 65535
        assert abs(got[0, 2, 0] / 65535 - 0.46) < 0.01  # sRGB(0.18)


# --- thread hygiene and memory ------------------------------------------------------------------


def test_no_thread_left_after_close_break_or_error(h264):
    with open_source(h264, prefetch=2) as src:
        assert decode_threads()
        for f in src:
            if f.index == 3:
                break
    assert not decode_threads()
    with pytest.raises(RuntimeError), open_source(h264, prefetch=2) as src:
        next(src)
        raise RuntimeError("consumer failed")
    assert not decode_threads()
    src = open_source(h264, prefetch=2)  # never iterated, closed explicitly
    src.close()
    src.close()
    assert not decode_threads()
    assert list(src) == []


def test_memory_stays_flat_over_600_frames(tmp_path):
    path = make_clip(tmp_path / "long.mp4", n=600, width=160, height=120, options={"g": "30"})
    page = 4096

    def rss_bytes():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    with open_source(path, prefetch=8) as src:
        for f in src:
            if f.index == 100:
                at_100 = rss_bytes()
        at_600 = rss_bytes()
    assert f.index == 599
    # 500 more frames of 57 KB each would be ~28 MB if they were kept; allow 8 MB of noise
    assert at_600 - at_100 < 8 * 2**20


# --- bad inputs ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="found nothing at"):
        open_source(tmp_path / "nope.mp4")


def test_text_file_is_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("hello, this is not a video\n" * 20)
    with pytest.raises(InputError, match="cannot be opened"):
        probe(path)


def test_audio_only_file(tmp_path):
    path = tmp_path / "a.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 4800), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 48000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(InputError, match="expected a video stream"):
        open_source(path)


def test_zero_frames(tmp_path):
    # a video stream without a single frame; the audio makes the muxer write the file at all
    path = make_clip(tmp_path / "empty.mkv", n=0, frames=[], audio=True)
    assert path.exists()
    with pytest.raises(InputError, match="at least one frame"):
        open_source(path)


def test_empty_folder_and_pattern(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="found none"):
        open_source(tmp_path / "empty")
    with pytest.raises(InputError, match="found none"):
        open_source(tmp_path / "empty" / "%04d.png")


def noisy_clip(path, n=60):
    # noise compresses badly, so the frame data (not the moov index) is most of the file
    rng = np.random.default_rng(1)
    frames = (rng.integers(0, 256, (64, 96, 3), np.uint8) for _ in range(n))
    return make_clip(path, n=n, width=96, height=64, faststart=True, frames=frames)


@pytest.mark.parametrize("prefetch", [0, 4])
def test_truncated_mp4_raises_with_frame_index(tmp_path, prefetch):
    path = noisy_clip(tmp_path / "full.mp4")
    cut = truncate(path, 0.5)
    assert probe(cut).num_frames == 60  # the index is intact: only the data stops
    with pytest.raises(InputError, match=r"frame \d+") as err:
        decode_all(cut, prefetch=prefetch)
    assert "truncated or corrupt" in str(err.value) or "failed at frame" in str(err.value)


def test_a_truncated_clip_without_a_frame_count_says_how_many_its_duration_implies(tmp_path):
    """Matroska keeps no frame count: a file cut short decodes as a shorter clip. Its
    declared duration still says more frames than its packets hold (VideoInfo's
    declared_frames, a warning in the render); a whole file has none. (MPEG-TS declares no
    duration at all: FFmpeg estimates it from the packets there, so a cut TS cannot be told
    from a short one.)"""
    whole = noisy_clip(tmp_path / "full.mkv")
    assert probe(whole).declared_frames is None and probe(whole).num_frames == 60
    info = probe(truncate(whole, 0.5))
    assert info.num_frames < 50 and info.declared_frames is not None
    assert info.declared_frames >= 55, info.declared_frames


def test_corrupt_middle_raises(tmp_path):
    path = noisy_clip(tmp_path / "full.mp4")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4000] = np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"frame \d+"):
        decode_all(bad)


# --- real clips ---------------------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name", ["01_dog.mp4", "03_blocks.mp4", "bedroom.mp4", "12_hideandseek.mp4"]
)
def test_real_clip_decodes_end_to_end(name):
    path = shared_data("videos", name)
    n = 0
    with open_source(path) as src:
        info = src.info
        for f in src:
            assert f.index == n and f.image.shape == (info.height, info.width, 3)
            n += 1
    assert info.frame_count_exact and n == info.num_frames
    assert not info.is_vfr and info.fps is not None


def test_unconvertible_pixel_format_is_refused(tmp_path):
    from vosfx.io import video

    class HardwareFrame:  # stands in for a frame left in GPU memory (cuda, vaapi, d3d11)
        format = av.VideoFormat("yuv420p")

        def to_ndarray(self, format):
            raise av.error.ArgumentError(22, "Invalid argument")

    with pytest.raises(InputError, match="pixel format convertible to rgb24"):
        video._check_convertible(HardwareFrame(), tmp_path / "hw.mp4")


def test_len_is_the_range_length(h264):
    with open_source(h264, start=10, end=25, prefetch=0) as src:
        assert len(src) == 15 and len(list(src)) == 15
    with open_source(h264, start=10) as src:
        assert len(src) == 20


@pytest.mark.shared_data
def test_real_clip_seek_matches_linear_decode(monkeypatch):
    from vosfx.io import video

    path = shared_data("videos", "01_dog.mp4")
    _, seeked = decode_all(path, start=250, end=262)
    monkeypatch.setattr(video, "_SEEK_MIN_FRAMES", 10**9)  # force decoding through from 0
    _, linear = decode_all(path, start=250, end=262)
    assert [f.index for f in seeked] == list(range(250, 262))
    assert [f.pts for f in seeked] == [f.pts for f in linear]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(seeked, linear, strict=True))


@pytest.mark.shared_data
def test_davis_jpeg_sequence():
    folder = shared_data("davis", "JPEGImages", "blackswan")
    info, frames = decode_all(folder, fps=Fraction(30000, 1001))
    assert (info.num_frames, info.width, info.height) == (50, 854, 480)
    assert len(frames) == 50 and frames[-1].index == 49 and frames[0].image.dtype == np.uint8
    assert frames[10].time_s == pytest.approx(10 * 1001 / 30000)


def test_image_sequence_corrupt_file_names_it(tmp_path):
    folder = make_sequence(tmp_path / "seq", n=4)
    (folder / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with open_source(folder) as src:
        assert next(src).index == 0 and next(src).index == 1
        with pytest.raises(InputError, match="00002.png"):
            next(src)
    assert not decode_threads()


def _reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vosfx-read")]


@pytest.mark.parametrize("readers", [1, 3])
def test_image_sequence_read_ahead_keeps_order_errors_and_threads(tmp_path, monkeypatch, readers):
    # Several images are read at once (sequence.read_ahead): the frames come in order and equal
    # one-at-a-time reading; a bad file fails in its turn, after the frames before it, naming
    # it; closing early or failing leaves no reader thread behind.
    from vosfx.io import sequence

    folder = make_sequence(tmp_path / "seq", n=9)
    monkeypatch.setattr(sequence, "default_readers", lambda: 1)
    with open_source(folder) as src:
        one_by_one = [f.image for f in src]
    monkeypatch.setattr(sequence, "default_readers", lambda: readers)
    with open_source(folder) as src:
        got = [f.image for f in src]
    assert len(got) == 9 and len({g.tobytes() for g in got}) == 9
    for g, w in zip(got, one_by_one):
        np.testing.assert_array_equal(g, w)
    with open_source(folder, start=2, end=6) as src:
        assert [f.index for f in src] == [2, 3, 4, 5]
    with open_source(folder, start=1) as src:
        assert next(src).index == 1  # closed with images still being read
    monkeypatch.setattr(sequence, "read_ahead", None)  # the caller's thread: one at a time
    with open_source(folder, prefetch=0) as src:
        assert [f.index for f in src] == list(range(9))
    monkeypatch.undo()
    monkeypatch.setattr(sequence, "default_readers", lambda: readers)
    (folder / "00005.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with open_source(folder) as src:
        assert [next(src).index for _ in range(5)] == [0, 1, 2, 3, 4]
        with pytest.raises(InputError, match="00005.png"):
            next(src)
    assert not decode_threads() and not _reader_threads()


def test_default_readers_leave_a_core_to_the_chain(monkeypatch):
    from vosfx.io import sequence

    for cores, want in ((1, 1), (2, 1), (3, 2), (16, sequence.MAX_READERS)):
        monkeypatch.setattr(sequence, "usable_cores", lambda cores=cores: cores)
        assert sequence.default_readers() == want


def test_unpadded_pattern_sorts_by_number_and_single_image(tmp_path):
    folder = make_sequence(tmp_path / "seq", n=12, name="shot_{}")
    info = probe(folder / "shot_%d.png", fps=12)
    assert info.num_frames == 12 and info.fps == 12 and info.frame_count_exact
    _, frames = decode_all(folder / "shot_%d.png", start=9)
    assert np.array_equal(frames[0].image, moving_square_frame(9, 64, 48)[0])
    info, frames = decode_all(folder / "shot_3.png")
    assert info.num_frames == 1 and np.array_equal(
        frames[0].image, moving_square_frame(3, 64, 48)[0]
    )


def test_numbered_plate_keeps_its_own_numbers(tmp_path):
    """A plate shot.1001.png ... with a file missing: frames are positions counted from 0,
    and the info keeps each file's number (folder or pattern alike), the gap and the
    timecode Resolve gives the sequence (its first number at its rate)."""
    folder = make_sequence(tmp_path / "plate", n=5, name="shot.{:04d}", first=1001)
    (folder / "shot.1003.png").unlink()
    for path in (folder, folder / "shot.%04d.png"):
        info, frames = decode_all(path, fps=24)
        numbers = info.frame_numbers
        assert numbers is not None and numbers.numbers == (1001, 1002, 1004, 1005)
        assert numbers.padding == 4 and numbers.pattern == "shot.%04d.png"
        assert numbers.label(2) == "frame 2 (shot.1004.png)"
        assert numbers.missing() == [(1003, 1003)] and numbers.missing(2) == []
        assert [f.index for f in frames] == [0, 1, 2, 3]
        assert np.array_equal(frames[2].image, moving_square_frame(3, 64, 48)[0])
        assert info.timecode == "00:00:41:17"  # frame 1001 at 24 fps


@pytest.mark.parametrize(
    "names, numbers, padding",
    [
        (["a.0998", "a.0999", "a.1000"], (998, 999, 1000), 4),
        (["a.9999", "a.10000"], (9999, 10000), 4),  # %04d printed past 9999
        (["00000001", "00000002"], (1, 2), 8),
        (["f1", "f2", "f10"], (1, 2, 10), 0),  # unpadded: sorted by number, not by name
        (["f1", "f002"], (1, 2), 0),  # no one padding
        (["v2_shot_7", "v2_shot_8"], (7, 8), 0),  # the last digits are the number
        (["a", "b"], None, None),  # no numbers: natural order, positions
        (["a1", "b2"], None, None),  # two names: not one numbered sequence
    ],
)
def test_which_folders_are_numbered(tmp_path, names, numbers, padding):
    for k, name in enumerate(names):
        make_sequence(tmp_path / "seq", n=1, name=name, first=k)
    info = probe(tmp_path / "seq")
    if numbers is None:
        assert info.frame_numbers is None and info.timecode == ""
    else:
        assert info.frame_numbers is not None
        assert (info.frame_numbers.numbers, info.frame_numbers.padding) == (numbers, padding)
    assert probe(tmp_path / "seq" / f"{names[0]}.png").frame_numbers is None  # one image


@pytest.mark.parametrize(
    "names, found, pattern",
    [
        # a mask saved with the plate: read in name order it was frame 0, every frame shifted
        (["shot.1001", "shot.1002", "shot.1003", "mask"], "shot.####.png (3 files); mask.png",
         "shot.%04d.png"),
        # two plates: the larger one is proposed
        (["A.0001", "A.0002", "B.0001", "B.0002", "B.0003"],
         "B.####.png (3 files); A.####.png (2 files)", "B.%04d.png"),
        # a frame renamed after a fix, unpadded numbers
        (["f1", "f2", "f10", "f2_fix"], "f#.png (3 files); f2_fix.png", "f%d.png"),
        (["s.01", "s.02", "a", "b", "c", "d"], "s.##.png (2 files); a.png, b.png, c.png and 1 more",
         "s.%02d.png"),
        # two of one length: in name order, whatever order the folder lists them in
        (["B.01", "B.02", "A.01", "A.02"], "A.##.png (2 files); B.##.png (2 files)", "A.%02d.png"),
    ],
)  # fmt: skip
def test_a_numbered_sequence_beside_other_images_is_refused(tmp_path, names, found, pattern):
    """A folder holding a numbered sequence and other images fell back to name order: a mask
    saved beside the plate became a frame and every frame after it lined up one off, without
    a word. It is refused, naming what was found and the pattern that gives the sequence,
    which then reads it alone."""
    for k, name in enumerate(names):
        make_sequence(tmp_path / "seq", n=1, name=name, first=k)
    folder = tmp_path / "seq"
    with pytest.raises(InputError) as err:
        probe(folder)
    said = str(err.value)
    assert said == (
        f"expected one image sequence in folder {folder}, found {found}: give the one to matte "
        f"as a pattern ({folder / pattern}), or move the other files out"
    )
    info = probe(folder / pattern)
    assert info.num_frames == int(found.split("(")[1].split()[0])


def test_hidden_files_in_a_folder_are_not_frames(tmp_path):
    """macOS writes ``._<name>`` beside every file it copies to exFAT or a network drive (with
    the image's extension, not an image); an interrupted write leaves a hidden temporary
    file. Neither is a frame: the folder reads as its one numbered sequence."""
    folder = make_sequence(tmp_path / "plate", n=3, name="shot.{:04d}", first=1001)
    for name in ("._shot.1001.png", "._shot.1002.png", ".shot.1003.png.vosfx-tmp-x.png"):
        (folder / name).write_bytes(b"\0\5\0\7 AppleDouble")
    info = probe(folder)
    assert info.num_frames == 3 and info.frame_numbers is not None
    assert info.frame_numbers.numbers == (1001, 1002, 1003)


def test_padded_pattern_goes_on_past_its_width(tmp_path):
    """%04d prints 10000 as 10000: a plate that runs past 9999 is one clip, not cut at 9999;
    a name padded wider than the pattern (01000) is not one of its frames."""
    make_sequence(tmp_path / "seq", n=3, name="shot.{:04d}", first=9998)
    make_sequence(tmp_path / "seq", n=1, name="shot.0{:04d}", first=1000)
    info = probe(tmp_path / "seq" / "shot.%04d.png")
    assert info.frame_numbers is not None
    assert info.frame_numbers.numbers == (9998, 9999, 10000)


def test_two_files_with_one_number_are_refused(tmp_path):
    make_sequence(tmp_path / "seq", n=2, name="shot.{}")
    make_sequence(tmp_path / "seq", n=1, name="shot.0{}", first=1)
    for path in (tmp_path / "seq", tmp_path / "seq" / "shot.%d.png"):
        with pytest.raises(InputError, match=r"two numbered 1: shot\.0?1\.png and shot\.0?1"):
            probe(path)


def test_rotated_phone_style_mp4(tmp_path):
    # the common case: an H.264 .mp4 shot in portrait, stored landscape + a display matrix
    path = make_clip(tmp_path / "portrait.mp4", n=4, width=64, height=48, rotation=90)
    info, frames = decode_all(path)
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    assert frames[0].image.shape == (64, 48, 3)
    ref = np.rot90(moving_square_frame(0, 64, 48)[0], k=-1)  # 90 degrees clockwise
    assert np.abs(frames[0].image.astype(int) - ref).mean() < 6


@pytest.mark.parametrize(
    ("pix_fmt", "sx", "sy", "bits"),
    [("yuv420p", 2, 2, 8), ("yuv422p", 2, 1, 8), ("yuv444p", 1, 1, 8), ("yuv420p10le", 2, 2, 10)],
)
def test_bt709_frames_keep_their_own_ycbcr_planes(tmp_path, pix_fmt, sx, sy, bits):
    # ycbcr=True: each frame carries its decoded planes exactly (odd size: chroma rounds up)
    w, h = 65, 37
    frames = [ycbcr_planes(i, w, h, sx, sy, bits) for i in range(3)]
    path = make_ycbcr_clip(tmp_path / "c.mkv", frames, pix_fmt=pix_fmt)
    with open_source(path, ycbcr=True) as src:
        got = [f.derived["ycbcr"] for f in src]
    assert len(got) == 3
    for planes, want in zip(got, frames):
        assert planes.bits == bits and planes.subsampling == (sx, sy)
        for g, wnt in zip((planes.y, planes.cb, planes.cr), want):
            assert g.dtype == wnt.dtype
            np.testing.assert_array_equal(g, wnt)
    with open_source(path) as src:  # not asked: not kept
        assert not any("ycbcr" in f.derived for f in src)


def test_kept_ycbcr_planes_survive_the_decoder_going_on(tmp_path):
    # The planes are views of the decoded frame (no copy). H.264 decodes with frame threads
    # and recycles its buffers once nobody references them: planes kept for every frame of a
    # clip must still hold their own frame's codes after the whole clip has been decoded,
    # equal to copies taken at once; and they are read-only (the decoder may still read them).
    import av

    path = make_clip(tmp_path / "c.mp4", n=40, width=96, height=64)
    copies = []
    with av.open(str(path)) as c:
        for vf in c.decode(video=0):
            copies.append([np.array(p) for p in plane_views(vf, np.uint8)])
    with open_source(path, ycbcr=True) as src:
        kept = [f.derived["ycbcr"] for f in src]
    assert len(kept) == len(copies) == 40
    assert len({c[0].tobytes() for c in copies}) > 1  # the frames differ
    for planes, want in zip(kept, copies):
        for got, wnt in zip((planes.y, planes.cb, planes.cr), want):
            np.testing.assert_array_equal(got, wnt)
            assert not got.flags.writeable


@pytest.mark.parametrize(
    ("kw", "matrix"),
    [
        ({"colorspace": 1}, 1),
        ({"colorspace": 5}, 5),  # BT.601 (PAL's tag)
        ({"colorspace": 9}, 9),  # BT.2020 (HDR10, HLG)
        ({"colorspace": 2}, 6),  # untagged SD: BT.601, as swscale and the editors take it
    ],
)
def test_ycbcr_planes_carry_the_matrix_they_are_coded_in(tmp_path, kw, matrix):
    path = make_ycbcr_clip(tmp_path / "c.mkv", [ycbcr_planes(0, 32, 16)], **kw)
    with open_source(path, ycbcr=True) as src:
        (frame,) = list(src)
    assert frame.derived["ycbcr"].matrix == matrix


@pytest.mark.parametrize(
    ("why", "kw"),
    [
        ("full range", {"color_range": 2}),
        ("rotated", {"rotation": 90}),
        ("a matrix vosfx does not convert with (SMPTE 240M)", {"colorspace": 7}),
    ],
)
def test_no_ycbcr_planes_where_the_writers_must_convert(tmp_path, why, kw):
    # elsewhere the RGB image is not a rendering of the planes as they lie in a matrix the
    # writers use, so they must convert the RGB
    path = make_ycbcr_clip(tmp_path / "c.mkv", [ycbcr_planes(0, 32, 16)], **kw)
    with open_source(path, ycbcr=True) as src:
        assert [("ycbcr" in f.derived) for f in src] == [False], why


@pytest.mark.parametrize(
    ("size", "tags", "want"),
    [
        ((1280, 720), {"colorspace": 9, "primaries": 9, "transfer": 16}, (9, 9, 16)),  # PQ
        ((1280, 720), {"colorspace": 9, "primaries": 9, "transfer": 18}, (9, 9, 18)),  # HLG
        ((1280, 720), {}, (1, 1, 1)),  # untagged HD: BT.709 throughout
        ((720, 576), {}, (6, 2, 2)),  # untagged SD: the BT.601 matrix, nothing else said
        ((720, 576), {"colorspace": 5, "primaries": 5, "transfer": 6}, (5, 5, 6)),
        ((1280, 720), {"colorspace": 7}, (1, 2, 2)),  # SMPTE 240M: outputs convert to BT.709
    ],
)
def test_probe_reads_the_colour_description(tmp_path, size, tags, want):
    from vosfx.types import Colour

    w, h = size
    kw = {"colorspace": tags.get("colorspace", 2)}
    path = make_ycbcr_clip(
        tmp_path / "c.mkv",
        [ycbcr_planes(0, w, h)],
        primaries=tags.get("primaries", 2),
        transfer=tags.get("transfer", 2),
        **kw,
    )
    assert probe(path).colour == Colour(*want)


def test_rgb_video_and_image_sequences_are_bt709(tmp_path):
    from vosfx.types import Colour

    folder = make_sequence(tmp_path / "seq", n=2)
    assert probe(folder).colour == Colour()
    rgb = make_clip(tmp_path / "rgb.mkv", n=2, codec="ffv1", pix_fmt="gbrp10le")
    assert probe(rgb).colour == Colour()


def test_image_sequences_carry_no_ycbcr_planes(tmp_path):
    folder = make_sequence(tmp_path / "seq", n=2)
    with open_source(folder, ycbcr=True) as src:
        assert [("ycbcr" in f.derived) for f in src] == [False, False]


@pytest.mark.parametrize(("width", "height", "want"), [(1280, 720, "709"), (720, 576, "601")])
def test_untagged_video_decodes_with_the_matrix_editors_assume(tmp_path, width, height, want):
    # no colour tag: BT.709 for HD, BT.601 below (what Resolve, Premiere and mpv assume; swscale
    # alone takes BT.601 for all), so RGB outputs match the source as an editor shows it. One
    # flat colour of strong chroma, lossless: the two matrices give different RGB.
    y = np.full((height, width), 120, np.uint8)
    cb = np.full((height // 2, width // 2), 90, np.uint8)
    cr = np.full((height // 2, width // 2), 200, np.uint8)
    path = make_ycbcr_clip(tmp_path / "c.mkv", [(y, cb, cr)], colorspace=2)
    with open_source(path, ycbcr=True) as src:
        (frame,) = list(src)
    kr, kb = {"709": (0.2126, 0.0722), "601": (0.299, 0.114)}[want]
    luma, pb, pr = (120 - 16) / 219, (90 - 128) / 224, (200 - 128) / 224
    r = luma + 2 * (1 - kr) * pr
    b = luma + 2 * (1 - kb) * pb
    g = (luma - kr * r - kb * b) / (1 - kr - kb)
    expected = np.clip(np.rint(np.array([r, g, b]) * 255), 0, 255)
    assert np.abs(frame.image[height // 2, width // 2].astype(int) - expected).max() <= 1
    assert frame.derived["ycbcr"].matrix == (1 if want == "709" else 6)


def test_linear_to_srgb16_codes_follow_the_formula():
    # EXR's scene-linear light -> 16-bit sRGB codes: within one code of the float64 formula
    # (nearly all exact), out-of-range light clipped, NaN (a CG render's) read as 0, and the
    # caller's array left as it was.
    from vosfx.io.sequence import _linear_to_srgb16

    rng = np.random.default_rng(2)
    linear = (rng.random((64, 96, 3)) ** 2.4).astype(np.float32)
    special = [0.0, 1.0, 0.0031308, 0.0031309, 1e-9, -1.0, 2.5, np.nan, np.inf, -np.inf, 0.18]
    linear[0, : len(special), 0] = special
    before = linear.copy()
    got = _linear_to_srgb16(linear).astype(np.int64)
    np.testing.assert_array_equal(linear, before)
    x = np.clip(np.nan_to_num(linear.astype(np.float64), nan=0.0), 0.0, 1.0)
    want = np.rint(
        65535 * np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    ).astype(np.int64)
    assert np.abs(got - want).max() <= 1 and (got == want).mean() > 0.99
    assert got[0, : len(special), 0].tolist()[5:10] == [0, 65535, 0, 65535, 0]
    assert abs(got[0, 10, 0] - round(65535 * (1.055 * 0.18 ** (1 / 2.4) - 0.055))) <= 1


def _png(tmp_path) -> bytes:
    import cv2

    image = np.random.default_rng(3).integers(0, 255, (40, 48, 3), np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def test_a_damaged_png_frame_is_named_by_vosfx_alone(tmp_path):
    """A frame with flipped bits or cut short: vosfx's error names the file and what is wrong,
    and libpng prints nothing of its own on stderr (it printed 'libpng error: IDAT: CRC
    error' beside vosfx's message; a cut file was only 'cannot be decoded')."""
    import subprocess
    import sys

    data = _png(tmp_path)
    idat = data.index(b"IDAT") - 4
    flipped = bytearray(data)
    flipped[idat + 20] ^= 0xFF
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    (tmp_path / "cut.png").write_bytes(data[: idat + 30])
    (tmp_path / "no_end.png").write_bytes(data[: data.index(b"IEND") - 4])
    script = (
        "import sys; from pathlib import Path; from vosfx.io.sequence import read_image\n"
        "for name in sys.argv[1:]:\n"
        "    try: read_image(Path(name))\n"
        "    except Exception as e: print(e)\n"
    )
    names = [str(tmp_path / n) for n in ("flipped.png", "cut.png", "no_end.png")]
    run = subprocess.run(
        [sys.executable, "-c", script, *names], capture_output=True, text=True, check=True
    )
    assert run.stderr == ""
    said = "expected a whole PNG image, {} is damaged: {}"
    assert run.stdout.splitlines() == [
        said.format(names[0], f"its IDAT chunk at byte {idat} fails its checksum"),
        said.format(names[1], f"it ends at byte {idat + 30}, inside its IDAT chunk (a cut copy?)"),
        said.format(
            names[2],
            f"it ends at byte {data.index(b'IEND') - 4} without its IEND chunk (a cut copy?)",
        ),
    ]


def test_a_png_whose_ancillary_chunk_is_damaged_still_reads(tmp_path, capfd, caplog):
    """libpng decodes a picture whose text chunk fails its checksum, and prints "libpng
    warning: tEXt: CRC error" on stderr: vosfx leaves the chunk out before libpng sees it,
    reads the same picture, and says so once in its own log."""
    import struct
    import zlib

    from vosfx.io.sequence import png_damage, read_image

    data = _png(tmp_path)
    body = b"tEXtComment\x00hello"
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) ^ 1)
    at = data.index(b"IDAT") - 4
    (tmp_path / "text.png").write_bytes(data[:at] + chunk + data[at:])
    (tmp_path / "text2.png").write_bytes(data[:at] + chunk + data[at:])
    (tmp_path / "frame.png").write_bytes(data)
    assert png_damage(data) is None and png_damage((tmp_path / "text.png").read_bytes()) is None
    caplog.set_level("WARNING", logger="vosfx")
    capfd.readouterr()
    damaged = read_image(tmp_path / "text.png")
    assert read_image(tmp_path / "text2.png").shape == (40, 48, 3)
    np.testing.assert_array_equal(damaged, read_image(tmp_path / "frame.png"))
    assert "libpng" not in capfd.readouterr().err
    said = [r.getMessage() for r in caplog.records if "tEXt" in r.getMessage()]
    assert len(said) == 1 and "its tEXt chunk fails its checksum; left out" in said[0]


@pytest.mark.parametrize("kind", ["grey", "float-tiff", "mixed-depth"])
def test_image_sequences_of_other_pixel_kinds_read_as_rgb(tmp_path, kind):
    """A greyscale scan, a float TIFF render and a plate mixing 8- and 16-bit frames: every
    frame comes out (H, W, 3) RGB of one dtype, the first frame's."""
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(3):
        depth = 16 if kind == "mixed-depth" and i == 1 else 8
        image = moving_square_frame(i, 64, 48, depth=depth)[0][:, :, ::-1]  # BGR for cv2
        if kind == "grey":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if kind == "float-tiff":
            image = image.astype(np.float32) / 255
        assert cv2.imwrite(str(folder / f"f.{i:04d}.{'tif' if 'tiff' in kind else 'png'}"), image)
    _, frames = decode_all(folder)
    assert [f.image.shape for f in frames] == [(48, 64, 3)] * 3
    assert {f.image.dtype for f in frames} == {np.dtype(np.uint16 if "float" in kind else np.uint8)}
    want = moving_square_frame(1, 64, 48)[0]
    if kind == "grey":
        assert np.array_equal(frames[1].image[..., 0], frames[1].image[..., 2])
    elif kind == "mixed-depth":  # the 16-bit frame on the first's 8-bit scale
        assert np.abs(frames[1].image.astype(int) - want).max() <= 1
    else:  # scene-linear float, as an EXR's: sRGB-encoded 16-bit codes
        from vosfx.io.sequence import _linear_to_srgb16

        assert np.array_equal(frames[1].image, _linear_to_srgb16(want.astype(np.float32) / 255))


def test_an_image_sequence_frame_that_cannot_be_decoded_is_named(tmp_path):
    folder = make_sequence(tmp_path / "seq", n=3, ext="jpg")
    (folder / "00001.jpg").write_bytes(b"not a jpeg at all")
    with open_source(folder) as src:
        assert next(src).index == 0
        with pytest.raises(InputError, match=r"expected an image file, .*00001\.jpg cannot be"):
            next(src)


def test_a_space_padded_pattern_finds_its_frames(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i:4d}.png"), moving_square_frame(i, 64, 48)[0])
    info, frames = decode_all(folder / "f%4d.png")
    assert info.num_frames == 3 and [f.index for f in frames] == [0, 1, 2]

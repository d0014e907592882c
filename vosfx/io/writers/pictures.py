"""The pictures the video writers encode: planes filled here, not through swscale.

Pixel data goes to the encoder as planes these functions fill (video range, in the source's
Y'CbCr matrix and tagged with its primaries and transfer: ``VideoInfo.colour``, BT.709 unless
the source says BT.601 or BT.2020; luma mattes BT.709), not through swscale: FFmpeg 8's
swscale, converting rgba64 to yuva444p10le, now and then writes a run of alpha = 0.5 into the
output when the width is not a multiple of 16 (seen at 854x480 and 66x38; nondeterministic),
and the alpha is the product. Doing the matrix here also keeps the matte's values exact (alpha
1.0 -> code 1023, not a rounding of a rounding). (Its yuv420p -> yuv444p10le does the like:
rows of 512 in the luma at 854x480, seen while testing the source-plane path.) A frame comes
new, or recycled from the writer's :class:`~vosfx.io.writers.framepool.FramePool`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vosfx.errors import OutputError
from vosfx.io.video import plane_views
from vosfx.io.writers.framepool import FramePool
from vosfx.types import YCBCR_MATRICES, SourceYCbCr

if TYPE_CHECKING:
    import av


@functools.cache
def ycbcr_matrix_of(matrix: int) -> np.ndarray:
    """(3, 3) float32 RGB -> Y'CbCr for an AVColorSpace of :data:`~vosfx.types.YCBCR_MATRICES`:
    rows Y' in [0, 1], Cb and Cr in [-0.5, 0.5]."""
    kr, kb = YCBCR_MATRICES[matrix]
    kg = 1.0 - kr - kb
    return np.array(
        [
            [kr, kg, kb],
            [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
            [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))],
        ],
        np.float32,
    )


AVCOL_BT709 = 1  # AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic
AVCOL_RANGE_MPEG = 1


@functools.cache
def _ycbcr_affine(bits: int, matrix: int = AVCOL_BT709) -> np.ndarray:
    """(3, 4) float32: the matrix with the video-range scale and offsets folded in, so one
    ``cv2.transform`` gives the codes."""
    scale = np.array([[219.0], [224.0], [224.0]]) * (1 << (bits - 8))
    offset = np.array([[16.0], [128.0], [128.0]]) * (1 << (bits - 8))
    return np.hstack([ycbcr_matrix_of(matrix) * scale, offset]).astype(np.float32)


def rgb_to_ycbcr(rgb01: np.ndarray, bits: int, matrix: int = AVCOL_BT709) -> list[np.ndarray]:
    """(H, W, 3) float32 RGB in [0, 1] -> [Y, Cb, Cr], each (H, W) float32 video-range codes
    for ``bits`` (8: Y 16..235, C 16..240; 10: Y 64..940, C 64..960), in the Y'CbCr
    ``matrix`` (an AVColorSpace; default BT.709).

    One ``cv2.transform`` (matrix and offsets folded) and a split: 3.7x less CPU than the
    former ``np.tensordot`` and scaling (15.5 vs 57.9 ms a 1080p frame, side by side), with
    the same codes after rounding except where a value sits within ~1e-4 of a half code
    (0.0015 % of 10-bit codes move by one; tests/test_writers.py).
    """
    rgb01 = np.ascontiguousarray(rgb01, dtype=np.float32)
    return list(cv2.split(cv2.transform(rgb01, _ycbcr_affine(bits, matrix))))  # 3 x (H, W)


@functools.cache
def _ycbcr_affine_int(bits: int, full: int, matrix: int = AVCOL_BT709) -> np.ndarray:
    """(3, 4) float64: :func:`_ycbcr_affine` for integer RGB in [0, ``full``]."""
    m = _ycbcr_affine(bits, matrix).astype(np.float64)
    m[:, :3] /= full
    return m


def ycbcr_codes(
    image: np.ndarray, bits: int, matrix: int = AVCOL_BT709, pool: FramePool | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 | uint16 RGB -> (H, W, 3) uint16 rounded video-range Y'CbCr codes for
    ``bits`` (> 8) in ``matrix`` (an AVColorSpace), the channels Y', Cb, Cr.

    One ``cv2.transform`` on the integer image: with a 16-bit input OpenCV rounds and
    saturates into 16-bit codes itself, so there is no float frame, no rounding pass and no
    clip (RGB in range cannot leave the video range). 8.7-9.4 against 27 CPU ms for the
    float path and its rounding (one 1080p frame, one thread; docs/benchmarks/render.md).
    Codes are within one of the exact BT.709 formula; at near-ties they land on the other
    side a little more often than the float path's (0.1 against 0.002 % of codes on random
    8-bit RGB; tests/test_writers.py). With ``pool``, the widened image and the codes are
    the pool's scratch arrays (valid until the next call), not new ones.
    """
    if image.dtype not in (np.uint8, np.uint16):
        raise OutputError(f"internal: expected a uint8 or uint16 frame, found {image.dtype}")
    full, src = 65535, image
    if image.dtype == np.uint8:  # widened to 16 bits: OpenCV's output takes the input's depth
        full = 255
        if pool is None:
            src = image.astype(np.uint16)
        else:
            src = pool.scratch("rgb16", image.shape, np.uint16)
            np.copyto(src, image)
    affine = _ycbcr_affine_int(bits, full, matrix)
    if pool is None:
        return cv2.transform(src, affine)  # (H, W, 3) uint16
    codes = pool.scratch("codes", image.shape, np.uint16)
    made = cv2.transform(src, affine, dst=codes)
    if not np.shares_memory(made, codes):  # a layout OpenCV would not write into
        codes[...] = made
    return codes


def new_frame(pix_fmt: str, w: int, h: int, pool: FramePool | None) -> av.VideoFrame:
    """A frame to fill completely: the writer's recycled one where its pool has the size and
    format, else a new one."""
    import av

    if pool is not None and (pool.pix_fmt, pool.width, pool.height) == (pix_fmt, w, h):
        return pool.take()
    return av.VideoFrame(w, h, pix_fmt)


def _yuva_frame(
    pix_fmt: str, h: int, w: int, pool: FramePool | None = None
) -> tuple[av.VideoFrame, list[np.ndarray]]:
    """A 4:4:4 Y'CbCr + alpha frame of ``pix_fmt`` (16-bit samples; new, or recycled from
    ``pool``) and writable (h, w) views of its four planes, to be filled in place."""
    vf = new_frame(pix_fmt, w, h, pool)
    views = plane_views(vf, np.uint16)
    for v in views:
        if not v.flags.writeable or v.shape != (h, w):
            raise OutputError(f"internal: plane {v.shape} does not fit {pix_fmt} ({h}, {w})")
    return vf, views


def yuva444_frame(
    image: np.ndarray,
    alpha: np.ndarray,
    pix_fmt: str,
    bits: int,
    matrix: int = AVCOL_BT709,
    pool: FramePool | None = None,
) -> av.VideoFrame:
    """A 4:4:4 Y'CbCr + alpha ``av.VideoFrame`` (``bits`` > 8, e.g. yuva444p10le) of an
    integer RGB frame and a straight alpha: :func:`ycbcr_codes` scattered into the frame's
    planes by ``cv2.mixChannels`` and the alpha scaled to full-range codes
    (:func:`alpha_codes`), written in place.

    ``image``: (H, W, 3) uint8 | uint16 RGB. ``alpha``: (H, W) float32 in [0, 1]. ``pool``:
    the writer's :class:`FramePool` to take the frame from.
    """
    h, w = alpha.shape
    vf, (y, cb, cr, a) = _yuva_frame(pix_fmt, h, w, pool)
    cv2.mixChannels([ycbcr_codes(image, bits, matrix, pool)], [y, cb, cr], [0, 0, 1, 1, 2, 2])
    alpha_codes(alpha, (1 << bits) - 1, a)
    return vf


def yuva444_from_source(
    src: SourceYCbCr, alpha: np.ndarray, pix_fmt: str, bits: int, pool: FramePool | None = None
) -> av.VideoFrame:
    """:func:`yuva444_frame` from the source's own Y'CbCr codes instead of its RGB: luma
    shifted to ``bits`` (the source's codes exactly), chroma shifted, then upsampled to 4:4:4
    by bilinear interpolation between samples centred on their blocks (what swscale does on
    the RGB path; swscale itself is not used, see the module's note), alpha as there. No RGB
    rounding or clipping: colours the source holds outside the RGB cube stay as they are.
    About half the CPU of the RGB path (docs/benchmarks/render.md).

    ``src``: 8- or 10-bit planes (``src.bits <= bits``), luma the size of ``alpha``.
    """
    h, w = alpha.shape
    vf, (y, cb, cr, a) = _yuva_frame(pix_fmt, h, w, pool)
    shift = bits - src.bits
    np.left_shift(src.y, shift, out=y, dtype=np.uint16)
    for dst, plane in ((cb, src.cb), (cr, src.cr)):
        if plane.shape == (h, w):
            np.left_shift(plane, shift, out=dst, dtype=np.uint16)
            continue
        codes = np.left_shift(plane, shift, dtype=np.uint16)
        ch, cw = plane.shape
        sx, sy = src.subsampling
        if (cw * sx, ch * sy) != (w, h):  # odd sizes: the last sample covers half a block
            dst[...] = cv2.resize(codes, (cw * sx, ch * sy), interpolation=cv2.INTER_LINEAR)[:h, :w]
            continue
        made = cv2.resize(codes, (w, h), dst=dst, interpolation=cv2.INTER_LINEAR)
        if not np.shares_memory(made, dst):  # a padded plane OpenCV would not write into
            dst[...] = made
    alpha_codes(alpha, (1 << bits) - 1, a)
    return vf


def alpha_codes(alpha: np.ndarray, top: int, out: np.ndarray) -> None:
    """``alpha`` ((H, W) float32 in [0, 1]) as full-range integer codes 0..``top`` written
    into ``out`` (uint16, a frame's plane view): the float32 product rounded half to even
    and clipped, exactly as :func:`planar_frame` rounds float planes. numpy, not
    ``cv2.multiply``: OpenCV 5.0 forms that product in double and 5.1 in float32 (one code
    apart on ~0.001 % of pixels), so outputs would depend on the installed OpenCV; the same
    ~1.1 ms a 1080p plane either way."""
    codes = np.multiply(alpha, np.float32(top), dtype=np.float32)
    np.clip(np.rint(codes, out=codes), 0, top, out=out, casting="unsafe")


def codes8_of_16(image: np.ndarray) -> np.ndarray:
    """16-bit codes as 8-bit ones, ``round(v / 257)``, in a new array of the same shape:
    OpenCV's SIMD scale and saturate (~3 ms a 1080p RGB frame). The float paths' ``rint(v *
    (1 / 65535) * 255)`` and ``rint(v * (255 / 65535))`` in float32 give these very codes for
    every v: v / 257 is never within 1 / 514 of a tie, far beyond float32's error, so OpenCV
    forming the product in float32 or double makes no difference."""
    return cv2.convertScaleAbs(image, alpha=1.0 / 257.0)


def argb_frame(
    image: np.ndarray, alpha: np.ndarray, pool: FramePool | None = None
) -> av.VideoFrame:
    """A packed 8-bit ARGB frame (QuickTime Animation) of an integer RGB image and a straight
    alpha, written in place: the colour as it is (8-bit) or narrowed by :func:`codes8_of_16`
    (16-bit), put in place by ``cv2.mixChannels``, the alpha by :func:`alpha_codes`; the same
    codes as scaling to floats and rounding, without the ~130 MB of float temporaries that
    made a 1080p frame (tests/test_writers.py, docs/benchmarks/write.md).

    ``image``: (H, W, 3) uint8 | uint16 RGB. ``alpha``: (H, W) float32 in [0, 1].
    """
    if image.dtype not in (np.uint8, np.uint16):
        raise OutputError(f"internal: expected a uint8 or uint16 frame, found {image.dtype}")
    h, w = alpha.shape
    vf = new_frame("argb", w, h, pool)
    plane = vf.planes[0]
    buf = np.frombuffer(plane, np.uint8)  # type: ignore[call-overload]
    argb = buf[: h * plane.line_size].reshape(h, plane.line_size)[:, : 4 * w].reshape(h, w, 4)
    rgb = image if image.dtype == np.uint8 else codes8_of_16(image)
    cv2.mixChannels([np.ascontiguousarray(rgb)], [argb], [0, 1, 1, 2, 2, 3])
    alpha_codes(alpha, 255, argb[..., 0])
    return vf


def luma_codes(alpha: np.ndarray, bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32 in [0, 1] -> (H, W) float32 video-range luma codes for ``bits``,
    ``(16 + 219 * alpha) * 2^(bits - 8)`` in float32, into ``out`` when given."""
    codes = np.multiply(alpha, np.float32(219.0), out=out)
    codes += np.float32(16.0)
    codes *= np.float32(1 << (bits - 8))
    return codes


def luma_frame(
    alpha: np.ndarray,
    pix_fmt: str,
    bits: int,
    width: int,
    height: int,
    pool: FramePool | None = None,
) -> av.VideoFrame:
    """A luma matte's frame (planar Y'CbCr of ``pix_fmt``, ``bits`` per sample): luma the
    video-range codes of ``alpha`` (:func:`luma_codes`, rounded and clipped as
    :func:`planar_frame` does, the same codes), chroma the neutral ``128 << (bits - 8)``.
    Written in place: one float32 scratch plane, no other full-frame temporaries (~3 vs
    ~10 CPU ms a 1080p frame made anew; docs/benchmarks/write.md).

    ``alpha``: (H, W) float32 in [0, 1]; a ``width`` x ``height`` frame one pixel larger (odd
    sides padded for 4:2:0 H.264) repeats its last column and row. ``pool``: the writer's
    :class:`FramePool`.
    """
    h, w = alpha.shape
    if not (0 <= width - w <= 1 and 0 <= height - h <= 1):
        raise OutputError(f"internal: a {w}x{h} matte does not fit a {width}x{height} frame")
    vf = new_frame(pix_fmt, width, height, pool)
    dtype, hi = (np.uint16, (1 << bits) - 1) if bits > 8 else (np.uint8, 255)
    y, cb, cr = plane_views(vf, dtype)
    codes = pool.scratch("luma", (h, w), np.float32) if pool else np.empty((h, w), np.float32)
    luma_codes(alpha, bits, out=codes)
    np.clip(np.rint(codes, out=codes), 0, hi, out=y[:h, :w], casting="unsafe")
    if y.shape != (h, w):  # pad_even's repeat of the last row and column
        y[:h, w:] = y[:h, w - 1 : w]
        y[h:, :] = y[h - 1 : h, :]
    cb.fill(128 << (bits - 8))
    cr.fill(128 << (bits - 8))
    return vf


def subsample(plane: np.ndarray, sx: int, sy: int) -> np.ndarray:
    """Mean over sx-by-sy blocks of a float plane; odd sizes repeat the last row/column
    (FFmpeg's ceil). OpenCV's area resize at a whole factor is that block mean: 0.8 against
    27.5 CPU ms a 1080p plane for numpy's reshaped mean (AMD Zen 3), the same values to
    float32 rounding (tests/test_writers.py)."""
    h, w = plane.shape
    ph, pw = -h % sy, -w % sx
    if ph or pw:
        plane = np.pad(plane, ((0, ph), (0, pw)), mode="edge")
    size = (plane.shape[1] // sx, plane.shape[0] // sy)
    return cv2.resize(plane, size, interpolation=cv2.INTER_AREA)


def pad_even(plane: np.ndarray) -> np.ndarray:
    """Repeat the last row/column to make both sides even (4:2:0 H.264 needs even sizes)."""
    h, w = plane.shape[:2]
    pads = ((0, h % 2), (0, w % 2)) + ((0, 0),) * (plane.ndim - 2)
    return np.pad(plane, pads, mode="edge") if h % 2 or w % 2 else plane


def planar_frame(
    pix_fmt: str,
    planes: list[np.ndarray],
    width: int,
    height: int,
    sample_bits: int = 8,
    pool: FramePool | None = None,
) -> av.VideoFrame:
    """An ``av.VideoFrame`` of ``pix_fmt`` (new, or recycled from ``pool``) filled from
    ``planes`` (float codes are rounded and clipped to the plane's integer type: uint8, or
    uint16 for ``sample_bits`` > 8)."""
    vf = new_frame(pix_fmt, width, height, pool)
    deep = sample_bits > 8
    dtype, hi = (np.uint16, (1 << sample_bits) - 1) if deep else (np.uint8, 255)
    for dst, src in zip(plane_views(vf, dtype), planes):
        if src.shape != dst.shape:
            raise OutputError(f"internal: plane {src.shape} does not fit {pix_fmt} {dst.shape}")
        if src.dtype.kind == "f":  # rounded, then clipped straight into the plane (2 passes)
            np.clip(np.rint(src), 0, hi, out=dst, casting="unsafe")
        else:
            dst[...] = src
    return vf

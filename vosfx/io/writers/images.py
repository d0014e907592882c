"""Image-sequence writers: PNG (8/16-bit RGBA cut-outs, 16-bit mattes) and EXR mattes.

The sequence goes into a folder ``<out>/`` as ``<stem>.<number>.<ext>``, where ``<stem>`` is
the folder's name without an extension and ``<number>`` the source frame's (:func:`frame_name`):
a numbered image-sequence source's own number at its own zero padding (``shot.1001.exr`` ->
``<stem>.1001.png``, so the matte lines up with the plate in Nuke, Resolve or Blender, gaps
included), else the frame's position in the source at 5 digits (a video rendered from frame
120 on starts at ``<stem>.00120.png``). Every image is encoded to bytes in
memory and written with plain file I/O, so a full disk surfaces as an OSError here.

PNG goes through OpenCV (libpng). EXR goes through FFmpeg's EXR encoder (PyAV): this
OpenCV build has no OpenEXR support (``cv2.getBuildInformation()``: "OpenEXR: NO"), and
FFmpeg writes half and float single-channel (Y) EXR with ZIP compression. ``exr-layers``
(several named channels in one file, PIZ/DWAA compression: beyond FFmpeg's EXR encoder) goes
through the OpenEXR library (the ``exr`` extra): one half-float channel ``obj<id>.A`` per
object, and with ``[output] exr_rgb`` the source's colour as linear-light R, G, B (the
BT.709 transfer undone, as compositors expect of EXR) with the merged alpha as A.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np

from vosfx.cpus import usable_cores
from vosfx.errors import ConfigError, OutputError
from vosfx.formats import RGBA_SEQUENCE
from vosfx.io.writers.base import Writer, premultiply
from vosfx.io.writers.pictures import alpha_codes, codes8_of_16
from vosfx.types import Frame, Matte, VideoInfo

# zlib level 2: one 1080p 16-bit RGBA frame took 0.33 s for 3.3 MB, against 0.54 s / 3.1 MB
# at level 3 and 1.5 s / 2.7 MB at level 6 (OpenCV 5, loaded 2-core EPYC); mattes are
# smooth and compress well at any level.
_PNG_LEVEL = 2


_EXR_COMPRESSION = {
    "zip": lambda exr: exr.ZIP_COMPRESSION,
    "piz": lambda exr: exr.PIZ_COMPRESSION,
    "dwaa": lambda exr: exr.DWAA_COMPRESSION,
    "none": lambda exr: exr.NO_COMPRESSION,
}


def _exr_layers_module():
    try:
        import OpenEXR
    except ImportError as err:
        raise ConfigError(
            "output format 'exr-layers' needs the OpenEXR package: pip install 'vosfx[exr]'"
        ) from err
    return OpenEXR


def bt709_to_linear(v: np.ndarray) -> np.ndarray:
    """BT.709 video code values in [0, 1] -> scene-linear light (the inverse OETF)."""
    import cv2

    v = np.clip(v, 0.0, 1.0, dtype=np.float32)  # a new array: written in place below
    # OpenCV's SIMD pow, not numpy's float32 power (2.3x the CPU on AVX2-only x86; the same
    # change as sequence._linear_to_srgb16, docs/benchmarks/io.md)
    linear = cv2.pow((v + np.float32(0.099)) * np.float32(1 / 1.099), 1 / 0.45)
    np.multiply(v, np.float32(1 / 4.5), out=linear, where=v < np.float32(0.081))
    return linear


# Digits of a frame number in an output name when the source has no padding of its own (a
# video, an unpadded or unnumbered sequence): 5 keep names in order by plain sorting.
DEFAULT_PADDING = 5


def sequence_name(stem: str, number: int, ext: str, padding: int = DEFAULT_PADDING) -> str:
    """``<stem>.%0<padding>d.<ext>`` (more digits past the padding rather than wrapping)."""
    return f"{stem}.{number:0{padding}d}.{ext}"


def frame_name(stem: str, info: VideoInfo, index: int, ext: str) -> str:
    """The output file name of source position ``index``: a numbered sequence's own number at
    the source's zero padding (a plate padded to 4 digits gives ``<stem>.1001.png``, as
    compositors name a matte of it; an unpadded source gets 5 digits), else the position at
    5 digits."""
    numbers = info.frame_numbers
    if numbers is None:
        return sequence_name(stem, index, ext)
    return sequence_name(stem, numbers.numbers[index], ext, numbers.padding or DEFAULT_PADDING)


MAX_ENCODERS = 4  # each holds one image in the making (~17 MB of codes for 1080p png16)


def default_encoders() -> int:
    """Images a sequence writer encodes at once: one a core of this process's, at most
    :data:`MAX_ENCODERS`. A PNG sequence's writer is the chain's slowest stage by far (a 16-bit
    1080p RGBA image is ~315 CPU ms of zlib), so it takes every core the rest leaves idle:
    the png16 chain 3.17 -> 6.13 frames/s on 2 cores (docs/benchmarks/write.md)."""
    return max(1, min(usable_cores(), MAX_ENCODERS))


def bgra_codes(image: np.ndarray, alpha: np.ndarray, deep: bool) -> np.ndarray:
    """(H, W, 4) uint16 (``deep``) or uint8 BGRA codes of a straight-alpha PNG: the colour
    scaled by a whole factor where the output is as deep or deeper (x257 from 8 to 16 bits,
    exact) or narrowed through :func:`~vosfx.io.writers.pictures.codes8_of_16` (16 to 8 bits),
    the alpha by :func:`~vosfx.io.writers.pictures.alpha_codes` (the float path's rounding).
    One output array, where the float path made ~140 MB of temporaries a 1080p 16-bit frame
    (the same codes: tests/test_writers.py)."""
    h, w = alpha.shape
    dtype, top = (np.uint16, 65535) if deep else (np.uint8, 255)
    out = np.empty((h, w, 4), dtype)
    if image.dtype == np.uint16 and not deep:  # RGB -> BGR while OpenCV puts it in place
        import cv2

        cv2.mixChannels([codes8_of_16(image)], [out], [0, 2, 1, 1, 2, 0])
    else:
        factor = top // (255 if image.dtype == np.uint8 else 65535)
        np.multiply(image[..., ::-1], dtype(factor), out=out[..., :3], dtype=dtype)
    alpha_codes(alpha, top, out[..., 3])
    return out


class ImageSequenceWriter(Writer):
    """Writes one image per frame into a temporary folder renamed into place on close.

    Images are independent, so up to :func:`default_encoders` of them are encoded and saved at once on a thread pool (zlib, OpenCV and FFmpeg let go of the
    GIL); ``write`` waits only when that many are in flight, and an image's error is raised
    by a later ``write`` or by ``close``, which waits for every image before the folder is
    moved into place.
    """

    _pool: ThreadPoolExecutor | None = None  # set by _open; None until then, and for one encoder

    def _open(self) -> None:
        self.tmp_path.mkdir()
        name = self.path.name
        self._stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
        self._layers = _exr_layers_module() if self.spec.id == "exr-layers" else None
        self._exr = threading.local()  # FFmpeg's EXR encoder: one context per thread
        self._names: set[str] = set()
        self._pending: deque[Future[None]] = deque()
        self._limit = default_encoders()
        self._pool = (
            ThreadPoolExecutor(self._limit, thread_name_prefix="vosfx-encode")
            if self._limit > 1
            else None
        )

    def _exr_context(self):
        """This thread's FFmpeg EXR encoder."""
        cc = getattr(self._exr, "context", None)
        if cc is None:
            import av

            cc = av.CodecContext.create("exr", "w")
            cc.width, cc.height = self.info.width, self.info.height
            cc.pix_fmt = "grayf32le"
            cc.time_base = Fraction(1, 25)  # unused by an image codec, but required
            # written as the header's pixelAspectRatio (anamorphic sources)
            cc.sample_aspect_ratio = self.info.pixel_aspect
            cc.options = dict(self.spec.options)
            self._exr.context = cc
        return cc

    def _encode(self, frame: Frame, alpha: np.ndarray) -> bytes:
        """The file's bytes for one frame."""
        import cv2

        spec = self.spec
        if spec.codec == "exr":
            import av

            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(alpha), format="grayf32le")
            packets = self._exr_context().encode(vf)
            if len(packets) != 1:
                raise OutputError(f"internal: EXR encoder gave {len(packets)} packets")
            return bytes(packets[0])
        params = [cv2.IMWRITE_PNG_COMPRESSION, _PNG_LEVEL]
        if spec.kind == RGBA_SEQUENCE:
            deep = spec.bit_depth == 16
            if self.config.alpha_mode != "premultiplied":
                image = bgra_codes(frame.image, alpha, deep)
            else:  # premultiplied: through floats
                src_max = 255.0 if frame.image.dtype == np.uint8 else 65535.0
                out_max = 65535.0 if deep else 255.0
                rgb = frame.image[..., ::-1].astype(np.float32)  # OpenCV wants BGR(A)
                premultiply(rgb, alpha)
                bgra = np.empty(rgb.shape[:2] + (4,), np.float32)
                bgra[..., :3] = rgb * np.float32(out_max / src_max)
                bgra[..., 3] = alpha * np.float32(out_max)
                image = np.rint(bgra).astype(np.uint16 if deep else np.uint8)
        else:
            image = np.rint(alpha * np.float32(65535.0)).astype(np.uint16)
        ok, buf = cv2.imencode(".png", image, params)
        if not ok:
            raise OutputError(f"PNG encoder failed on frame {frame.index} of {self.path}")
        return buf.tobytes()

    def _write(self, frame: Frame, alpha: np.ndarray, matte: Matte) -> None:
        name = frame_name(self._stem, self.info, frame.index, self.spec.ext)
        if name in self._names:
            raise OutputError(f"{self.path}: frame {frame.index} ({name}) written twice")
        self._names.add(name)
        target = self.tmp_path / name
        if self._pool is None:
            self._save(target, frame, alpha, matte)
            return
        while len(self._pending) >= self._limit:  # back-pressure; an image's error surfaces
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._save, target, frame, alpha, matte))

    def _save(self, target: Path, frame: Frame, alpha: np.ndarray, matte: Matte) -> None:
        """Encode one frame's image and write its file (on an encoder thread when pooled)."""
        if self._layers is not None:
            self._write_layers(target, frame, alpha, matte)
            return
        data = self._encode(frame, alpha)
        with open(target, "wb") as fh:
            fh.write(data)

    def _write_layers(self, target, frame: Frame, alpha: np.ndarray, matte: Matte) -> None:
        """One EXR with a half channel per object (and the source's linear RGB + A)."""
        exr = self._layers
        assert exr is not None  # _write calls this only with the OpenEXR module loaded
        h, w = alpha.shape
        channels: dict[str, np.ndarray] = {}
        for obj_id, plane in zip(matte.obj_ids, matte.alpha):
            if plane.shape != (h, w):
                raise OutputError(
                    f"{self.path}: object {obj_id}'s alpha is {plane.shape}, expected {(h, w)}"
                )
            channels[f"obj{obj_id}.A"] = np.clip(plane, 0.0, 1.0).astype(np.float16)
        if self.config.exr_rgb:
            src_max = 255.0 if frame.image.dtype == np.uint8 else 65535.0
            linear = bt709_to_linear(frame.image.astype(np.float32) / np.float32(src_max))
            # premultiplied by A, as OpenEXR defines RGBA (associated alpha): a compositor's
            # Read then Merge over it as is; straight colour would add the plate's colour
            # where A is 0
            premultiply(linear, alpha)
            for i, name in enumerate("RGB"):
                channels[name] = linear[..., i].astype(np.float16)
            channels["A"] = alpha.astype(np.float16)
        header = {
            "compression": _EXR_COMPRESSION[self.config.exr_compression](exr),
            "type": exr.scanlineimage,
            "pixelAspectRatio": float(self.info.pixel_aspect),  # anamorphic sources
        }
        with exr.File(header, channels) as out:
            out.write(str(target))

    def _finish(self) -> None:
        while self._pending:  # every image written (the first error raised) before the rename
            self._pending.popleft().result()
        if self._pool is not None:
            self._pool.shutdown()
        # One fsync of the folder: the rename that follows must not land before the files.
        fd = os.open(self.tmp_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _abort(self) -> None:
        # the images not started are dropped, those being written finish before the base
        # class removes the folder
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

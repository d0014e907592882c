"""The session's FrameProvider for the OFX worker: source frames fetched from the host one at a
time over the channel (``NEED k`` -> ``FRAME k``), the few most recent kept for refinement."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from vosfx.errors import Cancelled, ConfigError
from vosfx.ofx import protocol as P
from vosfx.types import Frame, VideoInfo

RECENT_FRAMES = 4  # frames kept for refine right after the session fetched them


class NotKept(Exception):
    """A frame the host would have to send, asked for while it is idle (between renders the
    effect answers no NEED): what needed it stops."""


class HostFrames:
    """The session's FrameProvider: each ``get`` asks the effect for one source frame. A mask
    plane sent along (the optional Mask clip) is handed to ``on_mask``; the frame's fingerprint
    (vosfx/ofx/source.py) to ``on_source`` with the frame's size as sent (it may raise
    :class:`~vosfx.ofx.source.SourceChanged`)."""

    def __init__(
        self,
        channel: P.Channel,
        info: VideoInfo,
        on_mask: Callable[[int, np.ndarray], None],
        on_source: Callable[[int, tuple[int, int], np.ndarray], None] | None = None,
    ) -> None:
        self.channel, self.info, self.on_mask = channel, info, on_mask
        self.on_source = on_source
        self.recent: OrderedDict[int, Frame] = OrderedDict()
        self.fetched = 0
        self.on_fetch: Callable[[int], None] | None = None
        # a frame of a proxy render (upscaled to full size) went to the session: its results
        # are proxy quality from then on
        self.proxy_used = False
        self.kept_only = False  # between renders: a frame not kept raises NotKept

    def get(self, index: int, *, fresh: bool = False) -> Frame:
        """Frame ``index`` (full size); ``fresh``: asked of the host even when kept, so its
        Mask plane is the one the host has now (the user may have just edited the roto)."""
        if not 0 <= index < self.info.num_frames:
            raise ConfigError(f"frame {index}: expected 0..{self.info.num_frames - 1}")
        frame = None if fresh else self.recent.get(index)
        if frame is not None:
            self.recent.move_to_end(index)
            return frame
        if self.kept_only:
            raise NotKept(f"frame {index} is not kept and the host is not rendering")
        self.channel.send(P.NEED, frame=index)
        msg = self.channel.recv()
        if msg.type == P.ABORT:
            raise Cancelled(f"the host cancelled the render while frame {index} was needed")
        if msg.type != P.FRAME or msg.frame != index:
            raise P.ProtocolError(
                f"expected FRAME {index}, found type {msg.type} frame {msg.frame}"
            )
        frame = Frame(index, self._pixels(msg), pts=index, time_base=self.info.time_base)
        self.fetched += 1
        self.recent[index] = frame
        while len(self.recent) > RECENT_FRAMES:
            self.recent.popitem(last=False)
        if self.on_fetch is not None:
            self.on_fetch(index)
        return frame

    def _pixels(self, msg: P.Message) -> np.ndarray:
        w, h = msg.width, msg.height
        if msg.format not in (P.FMT_RGB8, P.FMT_RGB16) or w <= 0 or h <= 0:
            raise P.ProtocolError(f"FRAME {msg.frame}: format {msg.format} {w}x{h}")
        dtype = np.uint8 if msg.format == P.FMT_RGB8 else np.uint16
        rgb_bytes = w * h * 3 * np.dtype(dtype).itemsize
        need = rgb_bytes + (w * h if msg.a else 0)
        if msg.shm_bytes < need:
            raise P.ProtocolError(f"FRAME {msg.frame}: {msg.shm_bytes} bytes for {need}")
        buf = self.channel.shm(need)
        rgb = np.frombuffer(buf[:rgb_bytes], dtype).reshape(h, w, 3).copy()
        mask = np.frombuffer(buf[rgb_bytes:need], np.uint8).reshape(h, w).copy() if msg.a else None
        buf.release()
        fp = self.channel.fingerprint(need, msg.b) if msg.b else None
        if fp is not None and self.on_source is not None:
            self.on_source(msg.frame, (w, h), fp)
        size = (self.info.width, self.info.height)
        if (w, h) != size:  # a proxy render scale: the session works at full size
            import cv2

            self.proxy_used = True
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
            if mask is not None:
                mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        if mask is not None:
            self.on_mask(msg.frame, mask)
        return rgb

    def close(self) -> None:
        self.recent.clear()

"""A clip session's image features: a byte-bounded LRU, shared between threads.

The image encoder is the costliest stage of a frame, so a session keeps recent frames'
features (:class:`FeatureCache`): a prompt, a correction or a pass on a frame met recently
runs without it. The studio also fills it ahead of a click from a background thread
(:meth:`FeatureCache.warm`, driven by :mod:`vosfx.studio.warm`); so the cache has its own lock,
and a frame being encoded is encoded once: a second caller waits for that encode. A warm-up
gives way to any other encode: it is interrupted (ONNX Runtime between nodes, OpenVINO by
cancelling, torch between the image encoder's blocks; :class:`~vosfx.engine.backend.Interrupt`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from vosfx.engine.backend import Interrupt
from vosfx.errors import Cancelled
from vosfx.session.store import SlotFile
from vosfx.types import Frame, nbytes

FEATURE_CACHE_BYTES = 256 << 20  # ~12 frames of SAM 2 features at 1024 (20 MiB each)
# A session that only sweeps its frames in order (a render) reads a frame's features again
# only within one visit (a prompt, then passes stepping that frame) or in a later segment,
# which the disk tier serves: its LRU keeps this many frames, not the byte budget (which a
# render filled with ~250 MiB at 1024 that nothing read again: docs/benchmarks/onnx.md)
SWEEP_FEATURE_FRAMES = 2
# Disk for features that a later pass reads again (FeatureSpill): 200 frames at 1024
FEATURE_SPILL_BYTES = 4 << 30

log = logging.getLogger(__name__)


class FeatureCache:
    """Image features of recent frames for one engine session, at most ``budget`` bytes and,
    when ``max_frames`` is given, at most that many frames.

    ``engine``: the engine session (its ``encode(frame, interrupt=None)``). ``stats``: the
    session's counters, updated here (``encoded``, ``feature_hits``, ``warmed``).
    """

    def __init__(
        self,
        engine: Any,
        budget: int,
        stats: dict[str, int],
        spill: FeatureSpill | None = None,
        max_frames: int | None = None,
    ) -> None:
        self.engine, self.budget, self.stats = engine, budget, stats
        self.max_frames = max_frames
        self.spill = spill  # the disk tier: frames a later pass reads again
        self._features: OrderedDict[int, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._encoding: dict[int, threading.Event] = {}  # frames being encoded now
        self._warming: tuple[int, Interrupt] | None = None  # warm()'s frame, to give way

    def get(self, frame: Frame) -> Any:
        """The frame's features: cached, being made by another thread (waited for), or
        encoded now (interrupting a warm-up of another frame first)."""
        t = frame.index
        while True:
            with self._lock:
                if t in self._features:
                    self._features.move_to_end(t)
                    self.stats["feature_hits"] += 1
                    return self._features[t]
                pending = self._encoding.get(t)
                if pending is None:
                    done = self._encoding[t] = threading.Event()
                    warming = self._warming
                    break
            pending.wait()  # another thread is encoding this frame: its features, not ours
        try:
            feats = None if self.spill is None else self.spill.get(t)
            if feats is not None:
                self.stats["spill_hits"] += 1
            else:
                if warming is not None and warming[0] != t:
                    warming[1].set()  # a warm-up of another frame gives the cores to this
                feats = self.engine.encode(frame)
                self.stats["encoded"] += 1
            self._keep(t, feats)
        finally:
            self._encoded(t, done)
        return feats

    def keep_on_disk(self, frame_index: int, feats: Any) -> None:
        """Write the frame's features (from :meth:`get`) to the disk tier, for a later pass
        that reads the frame again after the LRU has dropped them (objects whose gaps between
        prompted frames overlap but end at different frames). A no-op without a disk tier,
        for features that are not numpy arrays (the torch backend's tensors) or over its
        budget."""
        if self.spill is not None and self.spill.put(frame_index, feats):
            self.stats["spilled"] += 1

    def release(self, frames: Iterable[int]) -> None:
        """No later pass reads these frames: their disk copies go."""
        if self.spill is not None:
            self.spill.discard(frames)

    def warm(self, frame: Frame) -> bool:
        """Encode the frame's features ahead of a prompt on it (from another thread). An
        encode of another frame meanwhile interrupts it, so that encode does not share the
        cores with it. False when the features are cached
        or being encoded already, or it was interrupted."""
        t = frame.index
        interrupt = Interrupt()
        with self._lock:
            if t in self._features or t in self._encoding:
                return False
            done = self._encoding[t] = threading.Event()
            self._warming = (t, interrupt)
        try:
            self._keep(t, self.engine.encode(frame, interrupt=interrupt))
            self.stats["warmed"] += 1
        except Cancelled:
            return False  # a prompt or a sweep needed the image encoder for another frame
        finally:
            with self._lock:
                self._warming = None
            self._encoded(t, done)
        return True

    def has(self, frame_index: int) -> bool:
        with self._lock:
            return frame_index in self._features

    def clear(self) -> None:
        with self._lock:
            self._features.clear()
            self._bytes = 0

    def _keep(self, t: int, feats: Any) -> None:
        """Put a frame's features in the LRU (dropping the oldest over the budget)."""
        size = nbytes(feats)
        if size > self.budget:
            return
        with self._lock:
            if t in self._features:
                return
            self._features[t] = feats
            self._bytes += size
            while self._bytes > self.budget or (
                self.max_frames is not None and len(self._features) > self.max_frames
            ):
                _old, dropped = self._features.popitem(last=False)
                self._bytes -= nbytes(dropped)

    def _encoded(self, t: int, done: threading.Event) -> None:
        with self._lock:
            self._encoding.pop(t, None)
        done.set()


class FeatureSpill:
    """Image features on disk, one record per frame in a :class:`~vosfx.session.store.SlotFile`
    (slots of released frames are reused), at most ``budget`` bytes and a quarter of the
    folder's free space. The features round-trip exactly (raw bytes). Only a dataclass of
    numpy arrays of the same layout every frame (the ONNX backend's ImageFeatures) is kept;
    anything else is refused (:meth:`put` returns False) and encoded again when needed.

    About 20 MiB a frame at 1024 (the decoder's high-resolution features are most of it),
    written in tens of ms against the image encoder's seconds on a CPU.
    """

    def __init__(self, folder: Path, budget: int = FEATURE_SPILL_BYTES) -> None:
        self._folder = folder
        self._file = SlotFile(folder / "features.f32")
        self.budget = budget
        self._layout: tuple | None = None  # (dataclass type, ((field, shape, dtype), ...))
        self._lock = threading.Lock()  # the warm-up thread reads through FeatureCache.get

    @staticmethod
    def _layout_of(feats: Any) -> tuple | None:
        if not dataclasses.is_dataclass(feats) or isinstance(feats, type):
            return None
        fields = []
        for f in dataclasses.fields(feats):
            value = getattr(feats, f.name)
            if not isinstance(value, np.ndarray):
                return None
            fields.append((f.name, value.shape, value.dtype))
        return type(feats), tuple(fields)

    def put(self, index: int, feats: Any) -> bool:
        """Keep ``feats`` for frame ``index``; False when refused (see the class)."""
        layout = self._layout_of(feats)
        with self._lock:
            if layout is None or (self._layout is not None and layout != self._layout):
                return False
            if index in self._file:
                return True
            size = sum(int(np.prod(shape)) * dtype.itemsize for _n, shape, dtype in layout[1])
            if self._layout is None:
                # at most a quarter of the space free now: the temporary folder may be a
                # tmpfs (memory), and the frame stash and the results share it
                st = os.statvfs(self._folder)
                self.budget = min(self.budget, st.f_bavail * st.f_frsize // 4)
            if self._file.grows and (self._file.slots + 1) * size > self.budget:
                return False
            data = b"".join(
                np.ascontiguousarray(getattr(feats, name)).tobytes() for name, _s, _d in layout[1]
            )
            try:
                self._file.put(index, data)
            except OSError as err:  # a full disk: encode again instead
                log.warning("image features not kept on disk (%s): encoding again", err)
                return False
            self._layout = layout
            return True

    def get(self, index: int) -> Any:
        """Frame ``index``'s features as they were put, or None."""
        with self._lock:
            buf = self._file.get(index)
            if buf is None or self._layout is None:
                return None
            cls, fields = self._layout
        arrays, offset = {}, 0
        for name, shape, dtype in fields:
            n = int(np.prod(shape)) * dtype.itemsize
            arrays[name] = buf[offset : offset + n].view(dtype).reshape(shape)
            offset += n
        return cls(**arrays)

    def discard(self, frames: Iterable[int]) -> None:
        with self._lock:
            self._file.discard(frames)

    def close(self) -> None:
        with self._lock:
            self._file.close()

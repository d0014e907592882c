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

import threading
from collections import OrderedDict
from typing import Any

from vosfx.engine.backend import Interrupt
from vosfx.errors import Cancelled
from vosfx.types import Frame

FEATURE_CACHE_BYTES = 256 << 20  # ~12 frames of SAM 2 features at 1024 (20 MiB each)


class FeatureCache:
    """Image features of recent frames for one engine session, at most ``budget`` bytes.

    ``engine``: the engine session (its ``encode(frame, interrupt=None)``). ``stats``: the
    session's counters, updated here (``encoded``, ``feature_hits``, ``warmed``).
    """

    def __init__(self, engine: Any, budget: int, stats: dict[str, int]) -> None:
        self.engine, self.budget, self.stats = engine, budget, stats
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
        if warming is not None and warming[0] != t:
            warming[1].set()  # a warm-up of another frame gives the cores to this encode
        try:
            feats = self.engine.encode(frame)
            self._keep(t, feats)
            self.stats["encoded"] += 1
        finally:
            self._encoded(t, done)
        return feats

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
            while self._bytes > self.budget:
                _old, dropped = self._features.popitem(last=False)
                self._bytes -= nbytes(dropped)

    def _encoded(self, t: int, done: threading.Event) -> None:
        with self._lock:
            self._encoding.pop(t, None)
        done.set()


def nbytes(value: Any) -> int:
    """Bytes of a features object (numpy or torch arrays in a dataclass, dict or tuple)."""
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, f)) for f in value.__dataclass_fields__)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))

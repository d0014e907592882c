"""Finished mattes of one effect instance, keyed by (prompts-and-settings key, frame index).

Stored zlib-compressed (level 1: a 1080p matte of one object is mostly 0 and 1 and packs to tens
of kilobytes), least recently used first out once ``budget_bytes`` is exceeded, so the worker's
memory stays bounded however long the clip. The effect's host process holds none of this.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict

import numpy as np

from vosfx.types import Matte


class MatteCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self._items: OrderedDict[tuple[str, int], tuple[tuple[int, ...], tuple, bytes]] = (
            OrderedDict()
        )
        self.nbytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, matte: Matte) -> None:
        alpha = np.ascontiguousarray(matte.alpha, np.float32)  # (O, H, W) in [0, 1]
        packed = zlib.compress(alpha.tobytes(), 1)
        item = (alpha.shape, matte.obj_ids, packed)
        old = self._items.pop((key, matte.frame_index), None)
        if old is not None:
            self.nbytes -= len(old[2])
        self._items[(key, matte.frame_index)] = item
        self.nbytes += len(packed)
        while self.nbytes > self.budget_bytes and len(self._items) > 1:
            _k, (_s, _o, data) = self._items.popitem(last=False)
            self.nbytes -= len(data)

    def get(self, key: str, frame_index: int) -> Matte | None:
        item = self._items.get((key, frame_index))
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end((key, frame_index))
        self.hits += 1
        shape, obj_ids, packed = item
        alpha = np.frombuffer(zlib.decompress(packed), np.float32).reshape(shape)
        return Matte(frame_index, obj_ids, alpha)

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0

"""Per-frame results and stashed model inputs, kept on disk so memory stays flat in clip length.

Both stores are sparse files in a private temporary folder, written and read with positional
I/O (``os.pwrite``/``os.pread``): a frame costs disk only once written, and the kernel's page
cache, not the process, holds what was touched recently. (Memory-mapping them instead counted
every page written in the process's resident set: 116 -> 400 MiB from 200 to 2,000 frames
with the test double; benchmarks/session.py rss.) Records of a fixed size that come and go
(the stash, the features' disk tier) share :class:`SlotFile`. The folder is removed on close.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vosfx.types import ObjectResult

ABSENT = np.float32(-1024.0)  # SAM 2's "no object" score, for frames an object has no result


class ResultStore:
    """Low-res logits, object score and IoU per (object, frame); ``num_frames`` rows of
    ``low`` x ``low`` float32 logits (256 KiB per frame and object at 256²). float32, not
    float16: half precision moves a logit of 0.16 by 3e-4 and one of 20 by 1e-2, past the
    1e-3 parity the session keeps with the official predictor."""

    def __init__(self, num_frames: int, low: int, folder: Path) -> None:
        self.num_frames, self.low, self._folder = num_frames, low, folder
        self._fd: dict[int, int] = {}  # obj -> file of (num_frames, low, low) float32
        self._row = low * low * 4
        self._score: dict[int, np.ndarray] = {}
        self._iou: dict[int, np.ndarray] = {}
        self._state: dict[int, np.ndarray] = {}  # 0 none, 1 tracked, 2 prompted
        self._info: dict[int, dict[int, dict]] = {}

    def _ensure(self, obj_id: int) -> None:
        if obj_id in self._fd:
            return
        path = self._folder / f"logits_{obj_id}.f32"
        self._fd[obj_id] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._score[obj_id] = np.full(self.num_frames, ABSENT, np.float32)
        self._iou[obj_id] = np.zeros(self.num_frames, np.float32)
        self._state[obj_id] = np.zeros(self.num_frames, np.int8)
        self._info[obj_id] = {}

    def put(self, res: ObjectResult, *, prompted: bool = False) -> None:
        self._ensure(res.obj_id)
        t = res.frame_index
        data = np.ascontiguousarray(res.logits, np.float32).tobytes()
        if len(data) != self._row:
            raise ValueError(
                f"logits of shape {np.shape(res.logits)}, expected ({self.low}, {self.low})"
            )
        os.pwrite(self._fd[res.obj_id], data, t * self._row)
        self._score[res.obj_id][t] = res.object_score_logit
        self._iou[res.obj_id][t] = res.iou
        self._state[res.obj_id][t] = 2 if prompted else 1
        quality = res.info.get("quality")
        memory = res.info.get("memory")
        if quality is not None or memory:
            self._info[res.obj_id][t] = {"quality": quality, "memory": memory}
        else:
            self._info[res.obj_id].pop(t, None)

    def has(self, obj_id: int, frame_index: int) -> bool:
        return obj_id in self._state and bool(self._state[obj_id][frame_index])

    def is_prompted(self, obj_id: int, frame_index: int) -> bool:
        return obj_id in self._state and self._state[obj_id][frame_index] == 2

    def get(self, obj_id: int, frame_index: int) -> ObjectResult | None:
        if not self.has(obj_id, frame_index):
            return None
        data = os.pread(self._fd[obj_id], self._row, frame_index * self._row)
        return ObjectResult(
            obj_id,
            frame_index,
            np.frombuffer(data, np.float32).reshape(self.low, self.low).copy(),
            float(self._score[obj_id][frame_index]),
            float(self._iou[obj_id][frame_index]),
            dict(self._info[obj_id].get(frame_index, {})),
        )

    def clear(self, obj_id: int, frames: range | None = None) -> None:
        """Forget results of ``obj_id`` on ``frames`` (all frames when None)."""
        if obj_id not in self._state:
            return
        sl = slice(None) if frames is None else slice(frames.start, frames.stop)
        self._state[obj_id][sl] = 0
        self._score[obj_id][sl] = ABSENT
        for t in list(self._info[obj_id]):
            if frames is None or t in frames:
                del self._info[obj_id][t]

    def tracked(self, obj_id: int) -> np.ndarray:
        """(num_frames,) bool: frames with a result for ``obj_id``."""
        if obj_id not in self._state:
            return np.zeros(self.num_frames, bool)
        return self._state[obj_id] > 0

    def scores(self, obj_id: int) -> np.ndarray:
        """(num_frames,) float32 object-score logits (-1024 where there is no result)."""
        if obj_id not in self._score:
            return np.full(self.num_frames, ABSENT, np.float32)
        return self._score[obj_id]

    def drop(self, obj_id: int) -> None:
        fd = self._fd.pop(obj_id, None)
        if fd is not None:
            os.close(fd)
        for table in (self._score, self._iou, self._state, self._info):
            table.pop(obj_id, None)
        (self._folder / f"logits_{obj_id}.f32").unlink(missing_ok=True)

    def close(self) -> None:
        for fd in self._fd.values():
            os.close(fd)
        self._fd.clear()


class SlotFile:
    """Fixed-size records keyed by frame index in one file (the first :meth:`put` fixes the
    size): a slot freed by :meth:`discard` is reused, so the file grows to the most records
    kept at once, not one per frame. The frame stash and the features' disk tier
    (:class:`~vosfx.session.features.FeatureSpill`) are two."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self.record_bytes: int | None = None
        self._slot: dict[int, int] = {}  # frame index -> slot
        self._free: list[int] = []
        self.slots = 0  # slots the file has grown to (its size is ``slots`` records)

    def __contains__(self, index: int) -> bool:
        return index in self._slot

    @property
    def grows(self) -> bool:
        """Whether the next new record makes the file longer (no freed slot to reuse)."""
        return not self._free

    def put(self, index: int, data: bytes) -> None:
        """Write frame ``index``'s record (over its earlier one, if any). An OSError (a full
        disk) leaves the frame without a record."""
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            self.record_bytes = len(data)
        if len(data) != self.record_bytes:
            raise ValueError(f"record of {len(data)} bytes, expected {self.record_bytes}")
        slot = self._slot.get(index)
        new = slot is None
        if slot is None:
            slot = self._free[-1] if self._free else self.slots
        os.pwrite(self._fd, data, slot * len(data))
        if new:
            if self._free:
                self._free.pop()
            else:
                self.slots += 1
            self._slot[index] = slot

    def get(self, index: int) -> np.ndarray | None:
        """Frame ``index``'s record as a new (bytes,) uint8 array, or None."""
        slot = self._slot.get(index)
        if slot is None or self._fd is None or self.record_bytes is None:
            return None
        buf = np.empty(self.record_bytes, np.uint8)  # read straight into it: no copies
        os.preadv(self._fd, [buf.data], slot * self.record_bytes)
        return buf

    def discard(self, frames) -> None:
        for index in frames:
            slot = self._slot.pop(index, None)
            if slot is not None:
                self._free.append(slot)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._slot.clear()


class FrameStash:
    """Model-input frames (S x S x 3 uint8) of the frames a pass will read back, written
    during the sweep so that no frame is decoded twice for tracking (3 MiB a frame at
    S = 1024). Slots freed by :meth:`discard` are reused, so the disk used is the largest
    number of frames waiting at once (the longest gap between prompted frames), not the clip."""

    def __init__(self, folder: Path) -> None:
        self._file = SlotFile(folder / "stash.u8")
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None

    @property
    def slots(self) -> int:
        """Slots the file has grown to (its size is ``slots`` frames)."""
        return self._file.slots

    def put(self, index: int, image: np.ndarray) -> None:
        if self._shape is None:  # the first frame fixes the shape
            self._shape, self._dtype = image.shape, image.dtype
        if image.shape != self._shape or image.dtype != self._dtype:
            raise ValueError(
                f"stash: frame {index} is {image.dtype} {image.shape}, expected "
                f"{self._dtype} {self._shape}"
            )
        self._file.put(index, np.ascontiguousarray(image).tobytes())

    def get(self, index: int) -> np.ndarray | None:
        buf = self._file.get(index)
        if buf is None or self._shape is None or self._dtype is None:
            return None
        return buf.view(self._dtype).reshape(self._shape)

    def discard(self, frames) -> None:
        self._file.discard(frames)

    def close(self) -> None:
        self._file.close()


class Scratch:
    """The private temporary folder of one session's stores."""

    def __init__(self, prefix: str = "vosfx-session-") -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

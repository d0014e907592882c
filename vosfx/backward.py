"""Frames before the first prompt: track them backwards from it, then replay them in order.

SAM 2 tracks in both directions from a prompt; an editor prompts on the frame they are
looking at, usually mid-clip. Tracking backwards from frame k is tracking forwards over the
reversed frames k, k-1, ..., start, re-indexed 0, 1, 2, ...: SAM 2's reverse mode uses the
next frames as "previous" memories and the signed distance to the pointer frames, which is the
same arithmetic on reversed indices. So the backward pass is an ordinary Session fed frames in
reverse, decoded in chunks from the end (memory stays bounded by the chunk, not the range),
and its results wait on disk until the forward pass writes the frames in order.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from vosfx.types import Frame, MaskResult, ProgressEvent, Prompt

CHUNK_FRAMES = 16  # frames decoded at once going backwards (~100 MB at 1080p)


class BackwardResults:
    """The backward pass's MaskResults for source frames [start, stop), kept on disk.

    Logits are stored as float16 in a memory-mapped file (256² x 2 bytes = 128 KiB per frame
    and object), so a long lead-in does not grow memory.
    """

    def __init__(self, start: int, stop: int, obj_ids: tuple[int, ...], low: int) -> None:
        self.start, self.stop, self.obj_ids = start, stop, obj_ids
        self._dir = tempfile.TemporaryDirectory(prefix="vosfx-backward-")
        n, o = stop - start, len(obj_ids)
        self._logits = np.lib.format.open_memmap(Path(self._dir.name) / "logits.npy", mode="w+",
                                                 dtype=np.float16, shape=(n, o, low, low))
        self._scores = np.full((n, o), -1024.0, np.float32)
        self._iou = np.zeros((n, o), np.float32)

    def put(self, index: int, result: MaskResult) -> None:
        i = index - self.start
        for slot, oid in enumerate(result.obj_ids):
            j = self.obj_ids.index(oid)
            self._logits[i, j] = result.logits[slot]
            self._scores[i, j] = result.object_score_logits[slot]
            self._iou[i, j] = result.iou[slot]

    def get(self, index: int) -> MaskResult:
        i = index - self.start
        return MaskResult(index, self.obj_ids, np.asarray(self._logits[i], np.float32),
                          self._scores[i].copy(), self._iou[i].copy(),
                          info={"backward": True})

    def covers(self, index: int) -> bool:
        return self.start <= index < self.stop

    def close(self) -> None:
        self._logits = None
        self._dir.cleanup()


def track_backward(source_path: str, fps, info, engine, memory_cfg, prompts: list[Prompt],
                   start: int, *, shots: bool, on_progress=None, cancel=None,
                   chunk: int = CHUNK_FRAMES) -> BackwardResults:
    """Track the objects prompted on frame ``k`` (all ``prompts`` share it) backwards over
    frames k-1 .. ``start``; returns their results by source frame index."""
    from vosfx.errors import Cancelled
    from vosfx.io.source import open_source

    k = prompts[0].frame_index
    session = engine.start(info, memory_cfg)
    detector = None
    if shots:
        from vosfx.shots import ShotDetector

        detector = ShotDetector(threshold=memory_cfg.shot_threshold,
                                min_shot_frames=memory_cfg.shot_min_frames)
    obj_ids = tuple(sorted({p.obj_id for p in prompts}))
    store = None
    try:
        for p in prompts:
            session.add_prompt(replace(p, frame_index=0))
        r, total = 0, k - start
        for hi in range(k + 1, start, -chunk):  # chunks [lo, hi), last chunk first
            lo = max(start, hi - chunk)
            with open_source(source_path, start=lo, end=hi, fps=fps, prefetch=0) as src:
                frames = list(src)
            for f in reversed(frames):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled; no output was written")
                rf = Frame(r, f.image, f.pts, f.time_base, f.duration)
                shot = detector.push(rf) if detector is not None else 0
                result = session.step(rf, shot_id=shot)
                if store is None:
                    store = BackwardResults(start, k, obj_ids, result.logits.shape[-1])
                if f.index < k:
                    store.put(f.index, replace(result, frame_index=f.index))
                    if on_progress is not None:
                        on_progress(ProgressEvent("backward", r, total, f.index,
                                                  message=f"tracking backwards from frame {k}"))
                r += 1
    except BaseException:
        if store is not None:
            store.close()
        raise
    finally:
        session.close()
    return store

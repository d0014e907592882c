"""The OFX worker's tracking session and its lifetime: the engine (loaded when a render first
needs it, kept while the Model stays), one :class:`vosfx.session.ClipSession` per model,
memory settings and clip, its sweep kept open between renders (:mod:`vosfx.ofx.tracking`), the
frames fetched from the host (:mod:`vosfx.ofx.frames`), and the prompts it should hold: the
effect's points and the Mask clip's non-empty frames.

The session is dropped after an unexpected error, before a full-size render of one tracked on
proxy frames, and, with the fingerprints of the Source frames tracked, when the Source changed
upstream (:mod:`vosfx.ofx.source`); the next render makes it again from the prompts.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vosfx.config import JobConfig
from vosfx.engine import log_warnings
from vosfx.errors import ModelError
from vosfx.ofx import protocol as P
from vosfx.ofx.frames import HostFrames
from vosfx.ofx.points import digest, on_picture, parse_points
from vosfx.ofx.source import SourceChanged, SourceWatch
from vosfx.ofx.tracking import IncrementalTracker
from vosfx.types import Prompt, VideoInfo

log = logging.getLogger("vosfx.ofx")
EngineFactory = Callable[..., object]  # (ModelConfig, progress=...) -> vosfx.engine.Engine


@dataclass
class EffectConfig:
    """What the effect's latest CONFIG said, as the worker read it (``job`` and ``info``: None
    before the first); shared by the parts of the worker that act on it."""

    job: JobConfig | None = None
    info: VideoInfo | None = None
    settings_key: str = ""  # every setting that changes a matte, the frame size included
    mask_obj: int = 1  # the object the Mask clip prompts

    def need(self) -> tuple[JobConfig, VideoInfo]:
        if self.job is None or self.info is None:
            raise P.ProtocolError("RENDER before CONFIG")
        return self.job, self.info


class EffectSession:
    """One effect instance's tracking session, made when a render needs it and made again when
    the model, memory settings or clip change. ``stats``: the worker's counters (``tracked``
    and ``prepared`` counted here)."""

    def __init__(
        self,
        channel: P.Channel,
        make_engine: EngineFactory,
        config: EffectConfig,
        stats: dict[str, int],
    ) -> None:
        self.ch = channel
        self.make_engine = make_engine
        self.config = config
        self.stats = stats
        self.engine: Any = None  # vosfx.engine.Engine (loaded lazily)
        self.engine_key: str | None = None
        self.session: Any = None  # vosfx.session.ClipSession (imported lazily)
        self.session_key: str | None = None
        self.tracker: IncrementalTracker | None = None
        self._progress: tuple[range, float] = (range(0), 0.0)
        self.frames: HostFrames | None = None
        self.points: dict[tuple[int, int], Prompt] = {}  # (frame, obj) -> points prompt
        self.point_sig: dict[tuple[int, int], str] = {}
        self.masks: dict[int, tuple[str, np.ndarray]] = {}  # frame -> (digest, bool mask)
        self.masks_changed = False
        self.applied: dict[tuple[int, int], str] = {}  # what the session holds
        self.watch = SourceWatch()  # fingerprints of the Source frames tracked

    # ---- prompts -------------------------------------------------------------------------

    def set_points(self, data: dict) -> None:
        """The effect's whole point set: :func:`vosfx.ofx.points.parse_points`."""
        self.points, self.point_sig = parse_points(data)

    def prompts(self) -> dict[tuple[int, int], tuple[str, Prompt]]:
        """Every prompt the session should hold: points, and the Mask clip's non-empty frames
        (for ``mask_obj``, unless that object has points on that frame)."""
        info = self.config.info
        out = {}
        for k, p in self.points.items():
            onscreen = p if info is None else on_picture(p, info.width, info.height)
            if onscreen is not None:
                out[k] = (self.point_sig[k], onscreen)
        mask_obj = self.config.mask_obj
        for frame, (sig, mask) in self.masks.items():
            k = (frame, mask_obj)
            if k not in out and info is not None and 0 <= frame < info.num_frames:
                out[k] = ("mask:" + sig, Prompt(frame_index=frame, obj_id=mask_obj, mask=mask))
        return {k: v for k, v in out.items() if info is not None and 0 <= k[0] < info.num_frames}

    def key(self, prompts) -> str:
        """The matte cache key: the prompts (by content) and every setting that changes a
        matte (model, memory, refine, the frame size)."""
        sigs = sorted(f"{f}/{o}/{s}" for (f, o), (s, _p) in prompts.items())
        return digest((self.config.settings_key + "|" + ";".join(sigs)).encode())

    def _on_mask(self, frame: int, mask: np.ndarray) -> None:
        inside = mask >= 128
        old = self.masks.get(frame)
        if inside.any():
            sig = digest(np.packbits(inside).tobytes())
            if old is None or old[0] != sig:
                self.masks[frame] = (sig, inside)
                self.masks_changed = True
        elif old is not None:
            del self.masks[frame]
            self.masks_changed = True

    # ---- lifetime ------------------------------------------------------------------------

    def host_frames(self) -> HostFrames:
        if self.frames is None:
            raise P.ProtocolError("no session yet")
        return self.frames

    def ensure(self):
        """The session for the current CONFIG: the one open, or a new one (and the engine
        loaded again when the Model changed)."""
        cfg, info = self.config.need()
        model_key = json.dumps(cfg.to_dict()["model"], sort_keys=True)
        session_key = model_key + json.dumps(cfg.to_dict()["memory"], sort_keys=True)
        session_key += repr(info)
        if self.session is not None and self.session_key == session_key:
            return self.session
        self.drop()
        if self.engine is None or self.engine_key != model_key:
            if self.engine is not None:
                self.engine.close()
            self.engine = None
            self.ch.send(P.PROGRESS, a=0, b=0, text=f"loading {cfg.model.name}")
            try:
                _readable_checkpoint(cfg.model.name)
                self.engine = self.make_engine(cfg.model, progress=self._download_progress)
            except ModelError as err:  # named as the effect's field the user typed it in
                raise type(err)(f"Model {cfg.model.name!r}: {err}") from None
            self.engine_key = model_key
            log_warnings(self.engine)  # on the worker's stderr (the host's log)
        from vosfx.session import ClipSession

        self.frames = HostFrames(self.ch, info, self._on_mask, self._on_source)
        # corrections (rule d) resume the pass before them from a snapshot (checkpoints.py)
        self.session = ClipSession(
            self.engine,
            info,
            cfg.memory,
            frames=self.frames,
            # the refiner's temporal filter stops at cuts as the render's does, whatever
            # the policy (and the [refine] options change without a new session)
            detect_shots=True,
        )
        self.tracker = IncrementalTracker(self.session, self._on_result)
        self.session_key = session_key
        self.applied = {}
        return self.session

    def _on_source(self, index: int, size: tuple[int, int], fp: np.ndarray) -> None:
        if self.watch.differs(index, size, fp):
            raise SourceChanged(index)  # fetched again, and not what was tracked
        self.watch.record(index, size, fp)

    def _download_progress(self, done: int, total: int | None) -> None:
        mib = (int(done >> 20), int((total or 0) >> 20))
        self.ch.send(P.PROGRESS, a=mib[0], b=mib[1], text="downloading the model (MiB)")

    def drop(self, *, frames: bool = False) -> None:
        """Close the session (the engine stays); ``frames``: forget the host's recent frames
        as well (the old pixels, or upscaled proxy ones)."""
        if self.tracker is not None:
            self.tracker.reset()
            self.tracker = None
        if self.session is not None:
            session, self.session = self.session, None
            session.close()
        self.applied = {}
        if frames:
            self.frames = None

    def forget_source(self) -> None:
        """The Source changed upstream: nothing tracked from the old pixels stays (the Mask
        clip's prompts do; they come from the Mask, not the Source)."""
        self.watch.clear()
        self.drop(frames=True)

    def close(self) -> None:
        self.drop()
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # ---- tracking ------------------------------------------------------------------------

    def sync(self, prompts) -> None:
        """Make the session hold exactly ``prompts`` (:meth:`IncrementalTracker.sync`)."""
        assert self.tracker is not None
        self.tracker.sync(prompts, self.applied)

    def track(self, t: int) -> None:
        """Track, in order, what frame ``t`` needs (nothing when its results are current: a
        prompt far away or a refine setting changed only the cache key)."""
        tracker = self.tracker
        if tracker is None:
            raise P.ProtocolError("no session yet")
        frames = tracker.frames_to(t)
        if not frames:
            return
        t0 = time.perf_counter()
        self._progress = (frames, t0)
        self.stats["tracked"] += tracker.track_to(t)

    def _on_result(self, res) -> None:  # one ObjectResult per object and frame tracked
        frames, t0 = self._progress
        done = res.frame_index - frames.start + 1
        fps = done / max(time.perf_counter() - t0, 1e-9)
        self.ch.send(
            P.PROGRESS,
            frame=res.frame_index,
            a=max(0, min(done, len(frames))),
            b=len(frames),
            text=f"tracking frame {res.frame_index} ({fps:.1f} frames/s)",
        )

    def idle(self, t: int) -> None:
        """Nothing came for a while after frame ``t`` was shown: a point there is prepared
        (:meth:`IncrementalTracker.prepare`); nothing is sent, an error is logged."""
        if self.tracker is None or self.frames is None:
            return
        try:
            self.stats["prepared"] += self.tracker.prepare(t, self.frames)
        except Exception:  # noqa: BLE001 - idle work must not end the worker
            log.warning("preparing frame %d for a point failed:\n%s", t, traceback.format_exc())


def _readable_checkpoint(name: str) -> None:
    """A Model that names an existing file must be a checkpoint: ModelError saying the file
    cannot be read as one (read from its header, without torch), not that it is no model id
    (what the loader says of a file it cannot identify)."""
    path = Path(name).expanduser()
    if not path.is_file():
        return
    from vosfx.models.torchfile import identify

    try:
        identify(path)
    except ModelError as err:
        raise ModelError(f"the file cannot be read as a checkpoint ({err})") from None

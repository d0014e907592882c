"""The OFX effect's worker: one process per effect instance, one tracking session kept between
render calls, frames fetched from the host on demand (``NEED`` -> ``FRAME``), finished mattes
cached per (prompts, settings) key. Run as ``python -m vosfx.ofx.worker --fd N --shm-fd M``;
the effect starts it, nobody else.

A render of frame ``t`` (index into the clip, 0-based) goes:

1. the cached matte, if the key (points, Mask-input prompts, refine/model/memory settings) and
   ``t`` are known: no tracking, no frame fetched (scrubbing back is instant);
2. else the prompts are synced into the :class:`vosfx.session.ClipSession` (points after an
   object's first prompted frame as corrections, as `vosfx matte --edit-tracked` has them)
   and its sweep, kept open between renders (:mod:`vosfx.ofx.tracking`), visits frames in
   order up to what ``t`` needs, fetched from the host: the next frame tracks one more;
3. the frame's result is refined (the pipeline's :class:`~vosfx.matte.refine.Refiner`),
   cached, and its matte (merged or one object) goes back in shared memory as float32 alpha
   at the size the host asked for.

The cache key says nothing of the pixels, so every frame the host sends and every render
request carries a fingerprint of the Source frame (:mod:`vosfx.ofx.source`): when the host's
frame is no longer the one tracked (the clip was graded, replaced or re-timed upstream), the
mattes and the session are dropped, tracking starts again from the prompts, and the MATTE says
so (``b`` = 1 + the index of the frame found changed).

Errors the user can act on are :class:`~vosfx.errors.VosfxError` and go back as ``ERROR`` with
their message; anything else is logged with its traceback to stderr (the effect's log file),
reported the same way, and the session is rebuilt on the next render.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vosfx import __version__
from vosfx.config import JobConfig
from vosfx.engine import log_warnings
from vosfx.errors import Cancelled, ConfigError, ModelError, VosfxError
from vosfx.ofx import protocol as P
from vosfx.ofx.cache import MatteCache
from vosfx.ofx.frames import HostFrames
from vosfx.ofx.points import digest, on_picture, parse_points
from vosfx.ofx.scratch import WorkerScratch
from vosfx.ofx.source import SourceChanged, SourceWatch
from vosfx.ofx.tracking import IncrementalTracker, idle_seconds
from vosfx.types import Matte, Prompt, VideoInfo

log = logging.getLogger("vosfx.ofx")
# the [refine] and [model] options the effect sends, as its parameters are labelled in the host
# (plugins/ofx/vosfx_ofx.c vx_param_labels): the worker's messages name what the user sees
EFFECT_LABELS = {
    "alpha": "Alpha",
    "threshold": "Threshold",
    "softness": "Softness",
    "edge": "Edge",
    "shift_edge_px": "Shift edge (px)",
    "feather_px": "Feather (px)",
    "choke": "Choke",
    "clip_black": "Clip black",
    "clip_white": "Clip white",
    "fill_holes_px2": "Fill holes (px²)",
    "remove_specks_px2": "Remove specks (px²)",
    "temporal_strength": "Temporal smoothing",
    "non_overlap": "Non-overlapping objects",
    "name": "Model",
}
PROXY_KEY = "/proxy"  # cache key suffix of mattes made from proxy (render scale < 1) frames
EngineFactory = Callable[..., object]


def effect_terms(message: str) -> str:
    """``message`` (a :class:`~vosfx.config` error: "[refine] clip_black: expected below
    clip_white (0.1), found 0.9") with the options named as the effect's parameters ("Clip
    black: expected below Clip white (0.1), found 0.9")."""
    message = re.sub(
        r"\[(?:refine|model)\] (\w+)",
        lambda m: EFFECT_LABELS.get(m.group(1), m.group(0)),
        message,
    )
    words = "|".join(k for k in EFFECT_LABELS if "_" in k)  # clip_white; not "edge" in prose
    return re.sub(rf"\b({words})\b", lambda m: EFFECT_LABELS[m.group(1)], message)


class Worker:
    def __init__(self, channel: P.Channel, make_engine: EngineFactory) -> None:
        self.ch = channel
        self.make_engine = make_engine
        self.settings_key = ""
        self.job_config: JobConfig | None = None  # of the current CONFIG
        self.info: VideoInfo | None = None
        self.mask_obj = 1
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
        self.cache = MatteCache(512 << 20)
        self.refiner: Any = None  # vosfx.matte.refine.Refiner of refiner_key
        self.refiner_key: str | None = None
        self.watch = SourceWatch()  # fingerprints of the Source frames tracked
        # prepared: objects made ready for a point while the host was idle (Worker.idle)
        stats = ("renders", "cache_hits", "tracked", "source_changes", "prepared")
        self.stats = dict.fromkeys(stats, 0)
        self.shown: int | None = None  # the frame just rendered, until the next message
        self.idle_s = idle_seconds()

    # ---- messages ------------------------------------------------------------------------

    def serve(self) -> None:
        self.ch.send(P.READY, text=f"vosfx {__version__}")
        while True:
            shown, self.shown = self.shown, None
            if shown is not None and self.idle_s > 0 and not self.ch.waiting(self.idle_s):
                self.idle(shown)
            try:
                msg = self.ch.recv()
            except EOFError:
                return
            if msg.type == P.QUIT:
                return
            self.handle(msg)

    def handle(self, msg: P.Message) -> None:
        try:
            if msg.type == P.CONFIG:
                self.configure(P.json_body(msg))
                self.ch.send(P.OK)
            elif msg.type == P.PROMPTS:
                self.set_points(P.json_body(msg))
                self.ch.send(P.OK)
            elif msg.type == P.RENDER:
                # read first: the shared memory is the frames' and the matte's next
                fingerprint = self.ch.fingerprint(0, msg.shm_bytes)
                self.render(
                    msg.frame,
                    msg.width,
                    msg.height,
                    mask_clip=bool(msg.a),
                    obj=msg.b,
                    fingerprint=fingerprint,
                )
            else:
                raise P.ProtocolError(f"unexpected message type {msg.type}")
        except P.ProtocolError:
            raise  # the two sides disagree: end the worker, the effect reports it
        except Cancelled as err:
            self.ch.send(P.CANCELLED, text=str(err))
        except VosfxError as err:
            self.ch.send(P.ERROR, a=err.exit_code, text=f"{err}")
        except Exception as err:  # noqa: BLE001 - a bug must reach the user, not kill the host
            log.error("worker error:\n%s", traceback.format_exc())
            self._drop_session()
            self.ch.send(P.ERROR, a=1, text=f"worker error: {type(err).__name__}: {err}")

    def configure(self, cfg: dict) -> None:
        from vosfx.config import build_config

        clip = cfg.get("clip") or {}
        try:
            width, height = int(clip["width"]), int(clip["height"])
            frames = int(clip["frames"])
            fps = Fraction(str(clip.get("fps") or 24)).limit_denominator(100000)
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"CONFIG clip: expected width, height, frames, fps ({err})") from None
        if width <= 0 or height <= 0 or frames <= 0:
            raise ConfigError(
                f"CONFIG clip: expected a positive size and length, found "
                f"{width}x{height}, {frames} frames"
            )
        sections = {k: cfg[k] for k in ("model", "memory", "refine") if cfg.get(k)}
        try:
            self.job_config = build_config(sections)
        except ConfigError as err:  # named as the effect's parameters the user sees
            raise ConfigError(effect_terms(str(err))) from None
        # the frame size too: a matte cached for another size would come back stretched
        self.settings_key = json.dumps(
            {**self.job_config.to_dict(), "frame_size": [width, height]}, sort_keys=True
        )
        info = VideoInfo(
            path=str(clip.get("name") or "ofx-clip"),
            width=width,
            height=height,
            num_frames=frames,
            fps=fps,
            time_base=1 / fps,
        )
        if info != self.info:
            self.watch.clear()  # another clip: its frames are tracked afresh
        self.info = info
        self.mask_obj = int(cfg.get("mask_obj", 1))
        self.cache.budget_bytes = max(16, int(cfg.get("cache_mb", 512))) << 20

    def set_points(self, data: dict) -> None:
        """The effect's whole point set (sent when its points parameter changed):
        :func:`vosfx.ofx.points.parse_points`."""
        self.points, self.point_sig = parse_points(data)

    # ---- state ---------------------------------------------------------------------------

    def _need_config(self) -> tuple[JobConfig, VideoInfo]:
        if self.job_config is None or self.info is None:
            raise P.ProtocolError("RENDER before CONFIG")
        return self.job_config, self.info

    def _frames(self) -> HostFrames:
        if self.frames is None:
            raise P.ProtocolError("no session yet")
        return self.frames

    def prompts(self) -> dict[tuple[int, int], tuple[str, Prompt]]:
        """Every prompt the session should hold: points, and the Mask clip's non-empty frames
        (for ``mask_obj``, unless that object has points on that frame)."""
        out = {}
        for k, p in self.points.items():
            onscreen = p if self.info is None else on_picture(p, self.info.width, self.info.height)
            if onscreen is not None:
                out[k] = (self.point_sig[k], onscreen)
        for frame, (sig, mask) in self.masks.items():
            k = (frame, self.mask_obj)
            if k not in out and self.info is not None and 0 <= frame < self.info.num_frames:
                out[k] = ("mask:" + sig, Prompt(frame_index=frame, obj_id=self.mask_obj, mask=mask))
        return {
            k: v
            for k, v in out.items()
            if self.info is not None and 0 <= k[0] < self.info.num_frames
        }

    def key(self, prompts) -> str:
        """The matte cache key: the prompts (by content) and every setting that changes a
        matte (model, memory, refine, the frame size)."""
        sigs = sorted(f"{f}/{o}/{s}" for (f, o), (s, _p) in prompts.items())
        return digest((self.settings_key + "|" + ";".join(sigs)).encode())

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

    def ensure_session(self):
        cfg, info = self._need_config()
        model_key = json.dumps(cfg.to_dict()["model"], sort_keys=True)
        session_key = model_key + json.dumps(cfg.to_dict()["memory"], sort_keys=True)
        session_key += repr(info)
        if self.session is not None and self.session_key == session_key:
            return self.session
        self._drop_session()
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

    def _restart(self, t: int) -> None:
        """The Source changed upstream: no matte or session state made from the old pixels
        stays (the Mask clip's prompts do; they come from the Mask, not the Source)."""
        log.info("the Source changed at frame %d: mattes dropped, tracking restarts", t)
        self.stats["source_changes"] += 1
        self.cache.clear()
        self.watch.clear()
        self._drop_session()
        self.frames = None  # its recent frames are the old pixels
        self.refiner, self.refiner_key = None, None

    def _download_progress(self, done: int, total: int | None) -> None:
        mib = (int(done >> 20), int((total or 0) >> 20))
        self.ch.send(P.PROGRESS, a=mib[0], b=mib[1], text="downloading the model (MiB)")

    def _drop_session(self) -> None:
        if self.tracker is not None:
            self.tracker.reset()
            self.tracker = None
        if self.session is not None:
            session, self.session = self.session, None
            session.close()
        self.applied = {}

    def sync_prompts(self, prompts) -> None:
        """Make the session hold exactly ``prompts`` (:meth:`IncrementalTracker.sync`)."""
        assert self.tracker is not None
        self.tracker.sync(prompts, self.applied)

    # ---- render --------------------------------------------------------------------------

    def render(
        self,
        t: int,
        out_w: int,
        out_h: int,
        *,
        mask_clip: bool,
        obj: int,
        fingerprint: np.ndarray | None = None,
    ) -> None:
        """Frame ``t``'s matte to the effect; ``fingerprint``: of the Source image the host
        renders over, (16, 16, 3) float32 (None: not checked)."""
        _cfg, info = self._need_config()
        if not 0 <= t < info.num_frames:
            raise ConfigError(f"frame {t} is outside the clip (0..{info.num_frames - 1})")
        self.stats["renders"] += 1
        changed: int | None = None  # the frame found changed
        if fingerprint is not None and self.watch.differs(t, (out_w, out_h), fingerprint):
            changed = t
            self._restart(t)
        try:
            result = self._matte(t, out_w, out_h, mask_clip=mask_clip)
        except SourceChanged as err:
            if changed is not None:
                raise  # changed again within one render: reported as an error
            changed = err.frame
            self._restart(err.frame)
            result = self._matte(t, out_w, out_h, mask_clip=mask_clip)
        if result is None:  # nothing to matte: an empty matte, and why
            self.ch.send(P.MATTE, frame=t, format=P.FMT_NONE, text=self._why_empty(mask_clip))
            return
        matte, cached = result
        self._send_matte(matte, out_w, out_h, obj, cached=cached, changed=changed)
        self.shown = t

    def _why_empty(self, mask_clip: bool) -> str:
        """What the effect says when no prompt is usable ("": its own "no object is selected
        yet")."""
        if self.points:
            return (
                "every point lies off the picture (dragged past its edge): drag one back, or "
                "click the object. The matte is empty"
            )
        if mask_clip:
            return (
                "no object is selected yet: click the object on the viewer, or paint it in "
                "the Mask input (empty on the frames seen so far). The matte is empty"
            )
        return ""

    def idle(self, t: int) -> None:
        """Nothing came for ``idle_s`` after frame ``t`` was shown: a point there is
        prepared (:meth:`IncrementalTracker.prepare`); nothing is sent, an error is logged."""
        if self.tracker is None or self.frames is None:
            return
        try:
            self.stats["prepared"] += self.tracker.prepare(t, self.frames)
        except Exception:  # noqa: BLE001 - idle work must not end the worker
            log.warning("preparing frame %d for a point failed:\n%s", t, traceback.format_exc())

    def _matte(
        self, t: int, out_w: int, out_h: int, *, mask_clip: bool
    ) -> tuple[Matte, bool] | None:
        """Frame ``t``'s matte and whether it came from the cache; None without prompts."""
        _cfg, info = self._need_config()
        proxy = out_w > 0 and out_h > 0 and (out_w, out_h) != (info.width, info.height)
        if not proxy and self.frames is not None and self.frames.proxy_used:
            # a full-size render never shows a matte tracked or refined from upscaled proxy
            # frames: track again on full-size frames (the mattes cached at full size stay)
            self._drop_session()
            self.frames = None
        for _attempt in range(4):  # a Mask-clip frame seen while tracking changes the prompts
            self.masks_changed = False
            if mask_clip:
                self.ensure_session()
                # the mask plane of t as the host has it now: an edited roto changes the
                # prompts, so the key (a frame kept from a moment ago would give the old one)
                self._frames().get(t, fresh=_attempt == 0)
            elif self.masks:
                self.masks.clear()  # the Mask clip was disconnected
            prompts = self.prompts()
            if not prompts:
                return None
            key = self.key(prompts)
            matte = self.cache.get(key, t)
            if matte is None and proxy:  # a proxy render takes a proxy-made matte as well
                matte = self.cache.get(key + PROXY_KEY, t)
            if matte is not None:
                self.stats["cache_hits"] += 1
                return matte, True
            self.ensure_session()
            self.sync_prompts(prompts)
            self._track(t)
            if not self.masks_changed:
                break
        return self._refine(key, t), False

    def _track(self, t: int) -> None:
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

    def _refine(self, key: str, index: int) -> Matte:
        """The finished matte of frame ``index`` from the session's result, cached."""
        from vosfx.matte.refine import Refiner

        result = self.session.result(index)
        frame = self._frames().get(index)
        if self._frames().proxy_used:
            key += PROXY_KEY  # served to proxy renders only
        if self.refiner is None or self.refiner_key != key:
            self.refiner = Refiner(self._need_config()[0].refine, result.obj_ids)
            self.refiner_key = key
        # temporal smoothing only from the previous frame of the same shot, as the render
        self.refiner.follow(index, self.session.shot_id(index))
        matte = self.refiner(result, frame)
        self.cache.put(key, matte)
        return matte

    def _send_matte(
        self,
        matte: Matte,
        out_w: int,
        out_h: int,
        obj: int,
        *,
        cached: bool,
        changed: int | None = None,
    ) -> None:
        alpha: np.ndarray  # (H, W) float32 in [0, 1]
        if obj > 0:
            alpha = (
                matte.alpha[matte.obj_ids.index(obj)]
                if obj in matte.obj_ids
                else np.zeros(matte.alpha.shape[1:], np.float32)
            )
        else:
            alpha = matte.merged
        h, w = alpha.shape
        if out_w > 0 and out_h > 0 and (out_w, out_h) != (w, h):
            import cv2

            alpha = cv2.resize(alpha, (out_w, out_h), interpolation=cv2.INTER_AREA)
        buf = self.ch.shm(alpha.size * 4)
        np.copyto(np.frombuffer(buf, np.float32).reshape(alpha.shape), alpha)
        buf.release()
        self.ch.send(
            P.MATTE,
            frame=matte.frame_index,
            a=int(cached),
            b=0 if changed is None else 1 + changed,  # the Source had changed: the effect says so
            width=alpha.shape[1],
            height=alpha.shape[0],
            format=P.FMT_ALPHA_F32,
            shm_bytes=alpha.size * 4,
            # how the model runs (a GPU asked for and absent, ...): the effect keeps it up
            text="; ".join(self.engine.warnings) if self.engine is not None else "",
        )

    def close(self) -> None:
        self._drop_session()
        if self.engine is not None:
            self.engine.close()
            self.engine = None


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


def _engine_factory(spec: str | None) -> EngineFactory:
    """``module:callable`` taking (ModelConfig, progress=...) for tests; else load_engine."""
    module, _, attr = (spec or "vosfx.engine:load_engine").partition(":")
    return getattr(importlib.import_module(module), attr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vosfx ofx-worker", description=__doc__.split("\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="socket to the effect")
    parser.add_argument("--shm-fd", type=int, required=True, help="shared memory file")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # tests: module:factory
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="vosfx-ofx: %(message)s")
    channel = P.Channel(args.fd, args.shm_fd)
    worker = Worker(channel, _engine_factory(args.engine))
    # the sessions' temporary files in a folder of this worker's, removed at the end; a later
    # worker removes it when this one is killed (vosfx/ofx/scratch.py)
    with WorkerScratch():
        try:
            worker.serve()
        except (P.ProtocolError, OSError) as err:
            log.error("channel closed: %s", err)
            return 2
        finally:
            log.info("stats: %s", json.dumps(worker.stats))
            worker.close()
            channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

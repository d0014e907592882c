"""The OFX worker's answer to RENDER: frame ``t``'s matte (``t`` an index into the clip,
0-based), sent back in shared memory. A render goes:

1. the cached matte, if the key (points, Mask-input prompts, refine/model/memory settings) and
   ``t`` are known: no tracking, no frame fetched (scrubbing back is instant);
2. else the prompts are synced into the :class:`vosfx.session.ClipSession` (points after an
   object's first prompted frame as corrections, as `vosfx matte --edit-tracked` has them)
   and its sweep, kept open between renders (:mod:`vosfx.ofx.session`,
   :mod:`vosfx.ofx.tracking`), visits frames in order up to what ``t`` needs, fetched from the
   host: the next frame tracks one more;
3. the frame's result is refined (the pipeline's :class:`~vosfx.matte.refine.Refiner`),
   cached, and its matte (merged or one object) goes back in shared memory as float32 alpha
   at the size the host asked for.

The cache key says nothing of the pixels, so every frame the host sends and every render
request carries a fingerprint of the Source frame (:mod:`vosfx.ofx.source`): when the host's
frame is no longer the one tracked (the clip was graded, replaced or re-timed upstream), the
mattes and the session are dropped, tracking starts again from the prompts, and the MATTE says
so (``b`` = 1 + the index of the frame found changed).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from vosfx.errors import ConfigError
from vosfx.ofx import protocol as P
from vosfx.ofx.cache import MatteCache
from vosfx.ofx.session import EffectConfig, EffectSession
from vosfx.ofx.source import SourceChanged
from vosfx.types import Matte

log = logging.getLogger("vosfx.ofx")
PROXY_KEY = "/proxy"  # cache key suffix of mattes made from proxy (render scale < 1) frames


class MatteDelivery:
    """Each rendered frame's matte, from the cache or tracked by ``tracking`` and refined, sent
    to the effect. ``stats``: the worker's counters (``renders``, ``cache_hits`` and
    ``source_changes`` counted here)."""

    def __init__(
        self,
        channel: P.Channel,
        config: EffectConfig,
        tracking: EffectSession,
        stats: dict[str, int],
    ) -> None:
        self.ch = channel
        self.config = config
        self.tracking = tracking
        self.stats = stats
        self.cache = MatteCache(512 << 20)
        self.refiner: Any = None  # vosfx.matte.refine.Refiner of refiner_key
        self.refiner_key: str | None = None

    def render(
        self,
        t: int,
        out_w: int,
        out_h: int,
        *,
        mask_clip: bool,
        obj: int,
        fingerprint: np.ndarray | None = None,
    ) -> int | None:
        """Frame ``t``'s matte to the effect; ``fingerprint``: of the Source image the host
        renders over, (16, 16, 3) float32 (None: not checked). Returns ``t`` when a matte was
        sent, None when an empty one was (no prompt to matte from)."""
        _cfg, info = self.config.need()
        if not 0 <= t < info.num_frames:
            raise ConfigError(f"frame {t} is outside the clip (0..{info.num_frames - 1})")
        self.stats["renders"] += 1
        changed: int | None = None  # the frame found changed
        if fingerprint is not None and self.tracking.watch.differs(t, (out_w, out_h), fingerprint):
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
            return None
        matte, cached = result
        self._send_matte(matte, out_w, out_h, obj, cached=cached, changed=changed)
        return t

    def _restart(self, t: int) -> None:
        """The Source changed upstream: no matte or session state made from the old pixels
        stays (:meth:`EffectSession.forget_source`)."""
        log.info("the Source changed at frame %d: mattes dropped, tracking restarts", t)
        self.stats["source_changes"] += 1
        self.cache.clear()
        self.tracking.forget_source()
        self.refiner, self.refiner_key = None, None

    def _why_empty(self, mask_clip: bool) -> str:
        """What the effect says when no prompt is usable ("": its own "no object is selected
        yet")."""
        if self.tracking.points:
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

    def _matte(
        self, t: int, out_w: int, out_h: int, *, mask_clip: bool
    ) -> tuple[Matte, bool] | None:
        """Frame ``t``'s matte and whether it came from the cache; None without prompts."""
        _cfg, info = self.config.need()
        tracking = self.tracking
        proxy = out_w > 0 and out_h > 0 and (out_w, out_h) != (info.width, info.height)
        if not proxy and tracking.frames is not None and tracking.frames.proxy_used:
            # a full-size render never shows a matte tracked or refined from upscaled proxy
            # frames: track again on full-size frames (the mattes cached at full size stay)
            tracking.drop(frames=True)
        for _attempt in range(4):  # a Mask-clip frame seen while tracking changes the prompts
            tracking.masks_changed = False
            if mask_clip:
                tracking.ensure()
                # the mask plane of t as the host has it now: an edited roto changes the
                # prompts, so the key (a frame kept from a moment ago would give the old one)
                tracking.host_frames().get(t, fresh=_attempt == 0)
            elif tracking.masks:
                tracking.masks.clear()  # the Mask clip was disconnected
            prompts = tracking.prompts()
            if not prompts:
                return None
            key = tracking.key(prompts)
            matte = self.cache.get(key, t)
            if matte is None and proxy:  # a proxy render takes a proxy-made matte as well
                matte = self.cache.get(key + PROXY_KEY, t)
            if matte is not None:
                self.stats["cache_hits"] += 1
                return matte, True
            tracking.ensure()
            tracking.sync(prompts)
            tracking.track(t)
            if not tracking.masks_changed:
                break
        return self._refine(key, t), False

    def _refine(self, key: str, index: int) -> Matte:
        """The finished matte of frame ``index`` from the session's result, cached."""
        from vosfx.matte.refine import Refiner

        session = self.tracking.session
        result = session.result(index)
        frame = self.tracking.host_frames().get(index)
        if self.tracking.host_frames().proxy_used:
            key += PROXY_KEY  # served to proxy renders only
        if self.refiner is None or self.refiner_key != key:
            self.refiner = Refiner(self.config.need()[0].refine, result.obj_ids)
            self.refiner_key = key
        # temporal smoothing only from the previous frame of the same shot, as the render
        self.refiner.follow(index, session.shot_id(index))
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
        engine = self.tracking.engine
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
            text="; ".join(engine.warnings) if engine is not None else "",
        )

"""The OFX effect's worker: one process per effect instance, one tracking session kept between
render calls, frames fetched from the host on demand (``NEED`` -> ``FRAME``), finished mattes
cached per (prompts, settings) key. Run as ``python -m vosfx.ofx.worker --fd N --shm-fd M``
(POSIX) or ``--connect PORT --shm-file NAME`` (Windows: :mod:`vosfx.ofx.protocol`); the effect
starts it, nobody else.

This module reads the effect's messages and answers them in turn: CONFIG (the clip and its
settings), PROMPTS (the effect's points) and RENDER (the frame's matte, how a render goes:
:mod:`vosfx.ofx.delivery`, from the tracking session of :mod:`vosfx.ofx.session`).

Errors the user can act on are :class:`~vosfx.errors.VosfxError` and go back as ``ERROR`` with
their message; anything else is logged with its traceback to stderr (the effect's log file),
reported the same way, and the session is rebuilt on the next render.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
import traceback
from fractions import Fraction

from vosfx import __version__
from vosfx.errors import Cancelled, ConfigError, VosfxError
from vosfx.ofx import protocol as P
from vosfx.ofx.delivery import MatteDelivery
from vosfx.ofx.scratch import WorkerScratch
from vosfx.ofx.session import EffectConfig, EffectSession, EngineFactory
from vosfx.ofx.tracking import idle_seconds
from vosfx.types import VideoInfo

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
    """One effect instance's messages, answered in turn; the tracking session
    (:attr:`tracking`) and the mattes (:attr:`mattes`) act on what the latest CONFIG said
    (:attr:`config`) and count in :attr:`stats`."""

    def __init__(self, channel: P.Channel, make_engine: EngineFactory) -> None:
        self.ch = channel
        self.config = EffectConfig()
        # prepared: objects made ready for a point while the host was idle (EffectSession.idle)
        stats = ("renders", "cache_hits", "tracked", "source_changes", "prepared")
        self.stats = dict.fromkeys(stats, 0)
        self.tracking = EffectSession(channel, make_engine, self.config, self.stats)
        self.mattes = MatteDelivery(channel, self.config, self.tracking, self.stats)
        self.shown: int | None = None  # the frame just rendered, until the next message
        self.idle_s = idle_seconds()

    def serve(self) -> None:
        self.ch.send(P.READY, text=f"vosfx {__version__}")
        while True:
            shown, self.shown = self.shown, None
            if shown is not None and self.idle_s > 0 and not self.ch.waiting(self.idle_s):
                self.tracking.idle(shown)
            try:
                msg = self.ch.recv()
                if msg.type == P.QUIT:
                    return
                self.handle(msg)
            except EOFError:  # the effect closed the channel, between messages or mid-render
                return

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
                self.shown = self.mattes.render(
                    msg.frame,
                    msg.width,
                    msg.height,
                    mask_clip=bool(msg.a),
                    obj=msg.b,
                    fingerprint=fingerprint,
                )
            else:
                raise P.ProtocolError(f"unexpected message type {msg.type}")
        except (P.ProtocolError, EOFError):
            raise  # the two sides disagree, or the effect is gone: end the worker
        except Cancelled as err:
            self.ch.send(P.CANCELLED, text=str(err))
        except VosfxError as err:
            self.ch.send(P.ERROR, a=err.exit_code, text=f"{err}")
        except Exception as err:  # noqa: BLE001 - a bug must reach the user, not kill the host
            log.error("worker error:\n%s", traceback.format_exc())
            self.tracking.drop()
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
        if fps <= 0:
            raise ConfigError(f"CONFIG clip: expected a positive fps, found {clip.get('fps')!r}")
        if width <= 0 or height <= 0 or frames <= 0:
            raise ConfigError(
                f"CONFIG clip: expected a positive size and length, found "
                f"{width}x{height}, {frames} frames"
            )
        # read before anything changes: a refused CONFIG leaves the previous one whole
        mask_obj, cache_mb = _integer(cfg, "mask_obj", 1), _integer(cfg, "cache_mb", 512)
        sections = {k: cfg[k] for k in ("model", "memory", "refine") if cfg.get(k)}
        try:
            job = build_config(sections)
        except ConfigError as err:  # named as the effect's parameters the user sees
            raise ConfigError(effect_terms(str(err))) from None
        config = self.config
        config.job = job
        # the frame size too: a matte cached for another size would come back stretched
        config.settings_key = json.dumps(
            {**job.to_dict(), "frame_size": [width, height]}, sort_keys=True
        )
        info = VideoInfo(
            path=str(clip.get("name") or "ofx-clip"),
            width=width,
            height=height,
            num_frames=frames,
            fps=fps,
            time_base=1 / fps,
        )
        if info != config.info:
            self.tracking.watch.clear()  # another clip: its frames are tracked afresh
        config.info = info
        config.mask_obj = mask_obj
        self.mattes.cache.budget_bytes = max(16, cache_mb) << 20

    def set_points(self, data: dict) -> None:
        """The effect's whole point set (sent when its points parameter changed):
        :func:`vosfx.ofx.points.parse_points`."""
        self.tracking.set_points(data)

    def close(self) -> None:
        self.tracking.close()


def _integer(cfg: dict, name: str, default: int) -> int:
    """CONFIG's ``name`` as an integer (``default`` when absent); ConfigError naming it."""
    value = cfg.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"CONFIG {name}: expected an integer, found {value!r}") from None


def _engine_factory(spec: str | None) -> EngineFactory:
    """``module:callable`` taking (ModelConfig, progress=...) for tests; else load_engine."""
    module, _, attr = (spec or "vosfx.engine:load_engine").partition(":")
    return getattr(importlib.import_module(module), attr)


def _channel(parser: argparse.ArgumentParser, args: argparse.Namespace) -> P.Channel:
    """The channel the effect's arguments name: --fd and --shm-fd, or --connect and --shm-file
    with the token in VOSFX_OFX_TOKEN (taken out of the environment: no child sees it)."""
    if args.fd is not None and args.shm_fd is not None and args.connect is None:
        return P.Channel.inherited(args.fd, args.shm_fd)
    if args.connect is not None and args.shm_file and args.fd is None and args.shm_fd is None:
        token = os.environ.pop("VOSFX_OFX_TOKEN", "")
        try:
            return P.Channel.connect(args.connect, token, args.shm_file)
        except (P.ProtocolError, OSError) as err:
            parser.exit(2, f"vosfx-ofx: cannot reach the effect: {err}\n")
    parser.error("expected --fd and --shm-fd, or --connect and --shm-file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vosfx ofx-worker", description=__doc__.split("\n")[0])
    parser.add_argument("--fd", type=int, help="socket to the effect (POSIX)")
    parser.add_argument("--shm-fd", type=int, help="shared memory file (POSIX)")
    parser.add_argument("--connect", type=int, metavar="PORT", help="the effect's port (Windows)")
    parser.add_argument("--shm-file", help="shared memory file, in this folder (Windows)")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # tests: module:factory
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="vosfx-ofx: %(message)s")
    channel = _channel(parser, args)
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

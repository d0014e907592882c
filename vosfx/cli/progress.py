"""Progress renderers for the CLI: a one-line bar on a terminal, JSON lines for plugins."""

from __future__ import annotations

import json
import sys
import time

import click

from vosfx.types import ProgressEvent


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class TerminalProgress:
    """``[#####.....]  120/400 frames  3.1 fps  ETA 01:30`` on stderr, redrawn at most 10x/s."""

    def __init__(self, label: str, stream=None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self._last = 0.0

    def __call__(self, ev: ProgressEvent) -> None:
        now = time.monotonic()
        if (
            ev.event in ("frame", "download", "backward")
            and now - self._last < 0.1
            and ev.frames_done < ev.total_frames
        ):
            return
        self._last = now
        if ev.event == "warning":  # a line of its own, kept above the bar
            self.stream.write(f"\r\x1b[2Kvosfx: warning: {ev.message}\n")
        elif ev.event == "download":
            total = f"/{ev.total_frames / 2**20:.1f}" if ev.total_frames else ""
            self.stream.write(f"\r\x1b[2K{ev.message}: {ev.frames_done / 2**20:.1f}{total} MiB")
        elif ev.event == "done":
            self.stream.write(f"\r\x1b[2K{self.label}: {ev.frames_done} frames, {ev.fps:.2f} fps\n")
        elif ev.event == "backward":
            self.stream.write(
                f"\r\x1b[2K{self.label}: {ev.message}: {ev.frames_done}/{ev.total_frames} frames"
            )
        elif ev.event == "frame":
            width = 30
            frac = ev.frames_done / ev.total_frames if ev.total_frames else 0.0
            bar = "#" * int(frac * width) + "." * (width - int(frac * width))
            self.stream.write(
                f"\r\x1b[2K{self.label} [{bar}] {ev.frames_done}/{ev.total_frames} frames "
                f"{ev.fps:5.2f} fps  ETA {_fmt_eta(ev.eta_s)}"
            )
        self.stream.flush()


class LogProgress:
    """Plain progress lines on stderr when it is not a terminal (a log file, a CI job, a pipe):
    ``vosfx: clip.mp4: 120/400 frames, 3.10 fps, ETA 01:30``, at most one every
    ``every_s`` seconds, plus the start and the end, so a long render never looks hung."""

    def __init__(self, label: str, stream=None, every_s: float = 5.0) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self._last = float("-inf")

    def __call__(self, ev: ProgressEvent) -> None:
        now = time.monotonic()
        if ev.event in ("frame", "download", "backward") and now - self._last < self.every_s:
            return
        self._last = now
        if ev.event == "start":
            line = f"{self.label}: matting {ev.total_frames} frames"
        elif ev.event == "warning":
            line = f"warning: {ev.message}"
        elif ev.event == "download":
            total = f" of {ev.total_frames / 2**20:.1f}" if ev.total_frames else ""
            line = f"{ev.message}: {ev.frames_done / 2**20:.1f}{total} MiB"
        elif ev.event == "backward":
            line = f"{self.label}: {ev.message}: {ev.frames_done}/{ev.total_frames} frames"
        elif ev.event == "frame":
            line = (
                f"{self.label}: {ev.frames_done}/{ev.total_frames} frames, {ev.fps:.2f} fps, "
                f"ETA {_fmt_eta(ev.eta_s)}"
            )
        elif ev.event == "done":
            line = f"{self.label}: done, {ev.frames_done} frames, {ev.fps:.2f} fps"
        else:
            return
        self.stream.write(f"vosfx: {line}\n")
        self.stream.flush()


def emit_json(event: dict) -> None:
    """One JSON object per line on stdout, flushed (hosts read it as it comes)."""
    click.echo(json.dumps(event, separators=(",", ":")))
    sys.stdout.flush()


def json_progress(ev: ProgressEvent) -> None:
    emit_json(ev.to_dict())

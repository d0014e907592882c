"""SMPTE timecode arithmetic, so outputs start at the source's timecode plus the first frame
rendered and conform in an editor ("conform by timecode", relinking mattes to clips).

``HH:MM:SS:FF`` is non-drop-frame; ``HH:MM:SS;FF`` is drop-frame (29.97 and 59.94 fps skip
frame numbers 0-1 (0-3 at 59.94) at the start of every minute except every tenth, so the count
follows wall-clock time).
"""

from __future__ import annotations

from fractions import Fraction

from vosfx.errors import InputError


def _nominal(fps: Fraction | float) -> int:
    return max(1, round(float(fps)))


def to_frames(tc: str, fps: Fraction | float) -> tuple[int, bool]:
    """(frame count since 00:00:00:00, drop-frame?) of ``tc`` at ``fps``."""
    text = tc.strip()
    drop = ";" in text or "." in text
    parts = text.replace(";", ":").replace(".", ":").split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise InputError(f"expected a timecode HH:MM:SS:FF, found {tc!r}")
    h, m, s, f = (int(p) for p in parts)
    nominal = _nominal(fps)
    frames = ((h * 60 + m) * 60 + s) * nominal + f
    if drop:
        per_minute = 2 * nominal // 30
        minutes = h * 60 + m
        frames -= per_minute * (minutes - minutes // 10)
    return frames, drop


def from_frames(frames: int, fps: Fraction | float, drop: bool) -> str:
    """The timecode of frame count ``frames`` (wraps at 24 hours, as SMPTE does)."""
    nominal = _nominal(fps)
    if drop:
        d = 2 * nominal // 30  # frame numbers skipped per minute
        per_10_min = nominal * 600 - 9 * d
        per_min = nominal * 60 - d
        tens, rem = divmod(frames, per_10_min)
        frames += 9 * d * tens + (d * ((rem - d) // per_min) if rem > d else 0)
    ff = frames % nominal
    ss = frames // nominal % 60
    mm = frames // (nominal * 60) % 60
    hh = frames // (nominal * 3600) % 24
    return f"{hh:02d}:{mm:02d}:{ss:02d}{';' if drop else ':'}{ff:02d}"


def offset(tc: str, frames: int, fps: Fraction | float) -> str:
    """``tc`` moved ``frames`` frames later, keeping its drop-frame flavour."""
    start, drop = to_frames(tc, fps)
    return from_frames(start + frames, fps, drop)

"""SMPTE timecode -> frame number (pure; Resolve reports the playhead only as timecode)."""


def timecode_to_frame(tc, fps, drop_frame=False):
    """``"01:00:00:12"`` (``;`` before the frames marks drop-frame) at ``fps`` -> frame count
    since 00:00:00:00. Drop-frame (29.97, 59.94) skips frame numbers 0 and 1 (0-3 at 59.94)
    at the start of every minute except every tenth, so the count follows wall-clock time."""
    text = str(tc).strip()
    drop_frame = drop_frame or ";" in text
    parts = text.replace(";", ":").split(":")
    if len(parts) != 4:
        raise ValueError(f"expected a timecode HH:MM:SS:FF, found {tc!r}")
    h, m, s, f = (int(p) for p in parts)
    nominal = round(fps)
    frames = ((h * 60 + m) * 60 + s) * nominal + f
    if drop_frame:
        dropped = 2 * nominal // 30  # 2 per minute at 29.97, 4 at 59.94
        minutes = h * 60 + m
        frames -= dropped * (minutes - minutes // 10)
    return frames

"""What a run said and how it ended: the result of a render, exit messages and the fields of
progress and result events made safe to draw (part of the host client, ``vosfx_client``;
standard library only)."""

import signal

# Documented exit codes of `vosfx` (vosfx/errors.py); hosts show the message of the error event.
EXIT_CODES = {
    0: "ok",
    1: "error",
    2: "usage",  # click: bad command line
    3: "config",
    4: "input",
    5: "prompt",
    6: "output",
    7: "model",
    8: "download",
    9: "backend",
    10: "batch",
    130: "cancelled",
}


class RenderResult:
    """What a finished run left: ``exit_code``; ``result`` (the final result event, or None);
    ``error`` (the error event, or None); ``events`` (every event, in order); ``stderr``."""

    def __init__(self, exit_code, events, stderr):
        self.exit_code = exit_code
        self.events = events
        self.stderr = stderr
        self.result = next((e for e in events if e.get("event") == "result"), None)
        self.error = next((e for e in events if e.get("event") == "error"), None)

    @property
    def warnings(self):
        """What the run said the user must know (a gap in a numbered input, a GPU asked for
        and absent, a tier in its slower form), each once: the "warning" events' messages."""
        return [e.get("message", "") for e in self.events if e.get("event") == "warning"]

    @property
    def ok(self):
        return self.exit_code == 0 and self.result is not None

    @property
    def cancelled(self):
        return self.exit_code == 130

    def message(self):
        """One line for the host's dialog."""
        if self.ok:
            return f"done: {self.result.get('frames', 0)} frames"
        if self.error is not None:
            return "vosfx {} error: {}".format(self.error.get("kind"), self.error.get("message"))
        tail = self.stderr.strip().splitlines()[-1:] if self.stderr.strip() else []
        return exit_message("vosfx", self.exit_code) + (": " + tail[0] if tail else "")


def exit_message(what, code):
    """How ``what`` ended, for a run that left no error event: a clean exit without its
    result, a signal (negative code: SIGKILL is most often the system out of memory) or an
    exit code (the documented meaning named)."""
    if code == 0:
        return f"{what} ended without a result (exit 0, no result event)"
    signum = -code if code < 0 else (code - 128 if 128 < code < 160 and code != 130 else None)
    if signum is not None:  # negative: Popen's signal; 129-159: a shell wrapper's 128 + N
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        why = " (out of memory?)" if name == "SIGKILL" else ""
        return f"{what} was killed by {name}{why}"
    return "{} exited with {} ({})".format(what, code, EXIT_CODES.get(code, "unknown"))


def progress_of(event):
    """(frames_done, total_frames, eta_s) of a ``frame`` event, made safe to draw: done within
    [0, total] (a total of 0: unknown, done as reported), eta_s >= 0 or None, so that a count
    past its total never draws a bar past 100 % or a negative time left."""
    done = max(int(event.get("frames_done") or 0), 0)
    total = max(int(event.get("total_frames") or 0), 0)
    if total:
        done = min(done, total)
    eta = event.get("eta_s")
    eta = None if eta is None else max(float(eta), 0.0)
    return done, total, eta


def presence_ranges(result_event, obj_id=None):
    """[(first, last_inclusive)] source frames where an object (default: any) is present, from
    the result event's ``presence``."""
    ranges = []
    for oid, runs in sorted((result_event or {}).get("presence", {}).items()):
        if obj_id is not None and str(obj_id) != oid:
            continue
        ranges.extend((a, b) for a, b, present in runs if present)
    return sorted(ranges)

"""Host side of the vosfx plugin protocol (standard library only; Python 3.6+).

Editor plugins never import vosfx, torch or numpy: they write a job description (JSON), run the
user's ``vosfx`` executable on it and read JSON lines from its stdout::

    vosfx matte --job job.json --json-progress

Events, one JSON object per line (see plugins/README.md for every field):
``start`` -> ``frame`` (frames_done, total_frames, frame, fps, eta_s, object_scores) ... ->
``done`` -> ``result`` (outputs, sidecars, frames, presence, shots); on failure an ``error``
event (kind, message, exit_code) and that exit code. Cancelling terminates the process group
vosfx runs in (SIGTERM on Linux/macOS, so a wrapper such as ``conda run`` or a shell script
passes it on): vosfx stops cleanly, exits 130 and leaves no half-written outputs.

This file is copied next to each host plugin by ``vosfx plugins install``.
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading

PROTOCOL_VERSION = 1
CONFIG_NAME = "vosfx_plugin_config.json"

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


class VosfxNotFound(OSError):
    """The vosfx command cannot be started (not installed, moved, not executable)."""


def parse_points(text):
    """Typed clicks, the fallback when the studio cannot be used: ``"420,300 -80,40"`` ->
    ([[420.0, 300.0], [80.0, 40.0]], [1, 0]). x,y in source pixels, separated by spaces or
    ``;``; a leading ``-`` marks an exclude (background) point. ValueError when malformed."""
    points, labels = [], []
    for token in text.replace(";", " ").split():
        try:
            x, y = (float(v) for v in token.lstrip("+-").split(","))
        except ValueError:
            raise ValueError(
                f"a point is x,y in source pixels (e.g. 420,300), found {token!r}"
            ) from None
        points.append([x, y])
        labels.append(0 if token.startswith("-") else 1)
    return points, labels


def load_command(folder, default=None):
    """The vosfx command (argument list) that ``vosfx plugins install`` recorded in
    ``folder/vosfx_plugin_config.json``; ``VOSFX_EXECUTABLE`` (one path) wins; else
    ``default`` or ``["vosfx"]``."""
    env = os.environ.get("VOSFX_EXECUTABLE")
    if env:
        return [env]
    path = os.path.join(folder, CONFIG_NAME)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        command = data.get("command")
        if isinstance(command, list) and command and all(isinstance(c, str) for c in command):
            return list(command)
    return list(default or ["vosfx"])


def build_job(
    input_path,
    output,
    prompts,
    start=0,
    end=None,
    presets=("prores4444",),
    overrides=None,
    overwrite=False,
    extra_formats=(),
):
    """A version-1 job description (a dict ready for JSON).

    ``prompts``: list of dicts, each ``{"frame": int, "mask": path}`` or ``{"frame": int,
    "points": [[x, y], ...], "labels": [1|0, ...]}`` in source pixels, frame = source frame
    index (0-based). ``start``/``end``: source frame range, end exclusive (None: to the end).
    ``extra_formats``: further format ids written in the same pass beside ``output``.
    """
    if not prompts:
        raise ValueError("a job needs at least one prompt (a mask image or points)")
    job = {
        "version": PROTOCOL_VERSION,
        "input": str(input_path),
        "output": str(output),
        "presets": list(presets),
        "prompts": list(prompts),
        "start": int(start),
        "end": None if end is None else int(end),
        "overwrite": bool(overwrite),
    }
    if overrides or extra_formats:
        job["overrides"] = dict(overrides or {})
        if extra_formats:
            out = dict(job["overrides"].get("output", {}))
            out["extra_formats"] = list(extra_formats)
            job["overrides"]["output"] = out
    return job


def write_job(job, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(job, f, indent=2)
    return path


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


def _spawn(args, env, stdout):
    """Start vosfx from an argument list (never a shell string), stdin closed, stderr piped as
    text, as the leader of its own process group (a new session), so that a cancel reaches
    vosfx when the recorded command is a wrapper that does not ``exec`` it (``conda run``, a
    shell script); on Windows in its own process group, without a console window popping up
    over the editor."""
    windows = sys.platform == "win32"
    flags = 0
    if windows:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) | getattr(
            subprocess, "CREATE_NEW_PROCESS_GROUP", 0
        )
    try:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            creationflags=flags,
            start_new_session=not windows,
            universal_newlines=True,
            encoding="utf-8",
            errors="replace",
        )
    except OSError as err:
        raise VosfxNotFound(
            f"cannot run vosfx ({args[0]}): {err.strerror or err}. Run `vosfx plugins install` "
            "again from the environment where vosfx works, or set VOSFX_EXECUTABLE to the vosfx "
            "command"
        ) from None


def _signal_group(proc, force):
    """SIGTERM (``force``: SIGKILL) to the process group ``proc`` leads (:func:`_spawn`): vosfx
    and whatever wrapper started it. Windows has no signal a console-less vosfx answers: the
    tree is ended with ``taskkill /T /F`` (TerminateProcess), a hidden temporary output can
    stay behind."""
    if sys.platform == "win32":
        done = subprocess.run(
            ["taskkill", "/PID", str(proc.pid), "/T", "/F"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            check=False,
        )
        if done.returncode != 0 and proc.poll() is None:
            proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL if force else signal.SIGTERM)
    except ProcessLookupError:  # the group is gone already
        pass
    except PermissionError:  # not ours (cannot happen for a group we lead): the child only
        (proc.kill if force else proc.terminate)()


def _stop(proc, timeout_s):
    """SIGTERM to vosfx's process group, then SIGKILL to it after ``timeout_s``."""
    _signal_group(proc, force=False)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, force=True)
        proc.wait()


class VosfxProcess:
    """One render: ``start()``, then ``poll()`` from the host's UI timer (never blocks),
    ``cancel()`` from its cancel button, ``wait()`` for the :class:`RenderResult`.

    ``command``: the vosfx executable as an argument list (never a shell string).
    """

    def __init__(self, command, job_path, env=None):
        if isinstance(command, str):
            raise TypeError("command must be a list of arguments, not a shell string")
        self.args = list(command) + ["matte", "--job", str(job_path), "--json-progress"]
        self.env = env
        self.proc = None
        self.events = []
        self._queue = queue.Queue()
        self._stderr = []
        self._threads = []

    def start(self):
        self.proc = _spawn(self.args, self.env, stdout=subprocess.PIPE)
        for target, stream in (
            (self._read_stdout, self.proc.stdout),
            (self._read_stderr, self.proc.stderr),
        ):
            t = threading.Thread(target=target, args=(stream,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _read_stdout(self, stream):
        for line in stream:
            line = line.strip()
            if not line.startswith("{"):
                continue  # not an event (a warning printed by a library)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._queue.put(event)
        stream.close()

    def _read_stderr(self, stream):
        for line in stream:
            self._stderr.append(line)
        stream.close()

    def poll(self):
        """Events that arrived since the last call (list of dicts); never blocks."""
        new = []
        while True:
            try:
                new.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self.events.extend(new)
        return new

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def cancel(self, timeout_s=15.0):
        """Ask vosfx to stop (SIGTERM to its process group; on Windows the tree is ended) and
        wait for it. vosfx removes its temporary outputs before exiting 130; after
        ``timeout_s`` the group is killed."""
        if self.running:
            _stop(self.proc, timeout_s)

    def terminate(self):
        """Ask vosfx to stop without waiting (a host's UI thread: poll ``running`` after it,
        and :meth:`kill` when it is still running a while later)."""
        if self.running:
            _signal_group(self.proc, force=False)

    def kill(self):
        """SIGKILL vosfx's process group (the last resort after :meth:`terminate`)."""
        if self.running:
            _signal_group(self.proc, force=True)

    def wait(self, timeout_s=None):
        code = self.proc.wait(timeout_s)
        for t in self._threads:
            # a process of the group that outlived vosfx (a wrapper's child) can hold the pipes
            # open: end the group rather than hang the host on its reader threads
            t.join(5.0)
            if t.is_alive():
                _signal_group(self.proc, force=True)
                t.join(5.0)
        self.poll()
        return RenderResult(code, list(self.events), "".join(self._stderr))


def run(command, job_path, on_event=None, should_cancel=None, env=None, poll_s=0.1):
    """Blocking helper: run a job, call ``on_event(event)`` for each event as it comes and
    cancel when ``should_cancel()`` returns True. Returns the :class:`RenderResult`."""
    proc = VosfxProcess(command, job_path, env=env).start()
    try:
        while proc.running:
            for ev in proc.poll():
                if on_event is not None:
                    on_event(ev)
            if should_cancel is not None and should_cancel():
                proc.cancel()
                break
            try:
                proc.proc.wait(poll_s)
            except subprocess.TimeoutExpired:
                pass
    except BaseException:
        proc.cancel()  # the host script itself was interrupted: never leave vosfx running
        raise
    done = len(proc.events)
    result = proc.wait()
    if on_event is not None:
        for ev in result.events[done:]:
            on_event(ev)
    return result


class StudioPick:
    """ "Pick in vosfx studio": open the studio page on ``clip``'s source frames [start, end)
    at ``frame``; when the user presses Done the studio writes the job and exits 0. Like
    :class:`VosfxProcess`: ``start()``, ``running``, ``cancel()``, then ``picked()`` for the
    job (a dict, mask paths made absolute) or None when the page was closed without Done.

    Runs ``vosfx studio CLIP --start S --end E --frame F --done-job OUT.json`` (``--fps`` too
    when given: an image sequence's rate; an argument list, never a shell string); the studio
    opens the user's default browser itself.

    The picked job and its mask files live in a temporary folder made here: it is removed when
    the page was closed without Done (:meth:`picked` returns None), and by :meth:`discard`,
    which the host calls once the render that reads the picked masks has ended (done, failed
    or cancelled).
    """

    def __init__(self, command, clip, start, end, frame, env=None, folder=None, fps=None):
        import tempfile

        if isinstance(command, str):
            raise TypeError("command must be a list of arguments, not a shell string")
        self._own_folder = folder is None  # made here: removed here if vosfx cannot start
        self.folder = folder or tempfile.mkdtemp(prefix="vosfx_pick_")
        self.job_path = os.path.join(self.folder, "picked.json")
        self.args = list(command) + [
            "studio",
            str(clip),
            "--start",
            str(int(start)),
            "--end",
            str(int(end)),
            "--frame",
            str(int(frame)),
            "--done-job",
            self.job_path,
        ]
        if fps is not None:  # an image sequence's rate (the host's)
            self.args += ["--fps", f"{float(fps):g}"]
        self.env = env
        self.proc = None
        self.stderr = ""

    def start(self):
        try:
            self.proc = _spawn(self.args, self.env, stdout=subprocess.DEVNULL)
        except VosfxNotFound:
            self.discard()
            raise
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        return self

    def _read_stderr(self):
        self.stderr = self.proc.stderr.read()
        self.proc.stderr.close()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def cancel(self, timeout_s=15.0):
        """Close the studio while it runs (its process group: :func:`_stop`) and remove the
        pick's folder; a pick that ended with Done is kept (:meth:`discard` removes it)."""
        if self.running:
            _stop(self.proc, timeout_s)
            self.discard()

    def wait(self, timeout_s=None):
        code = self.proc.wait(timeout_s)
        self._reader.join(5.0)
        return code

    def picked(self):
        """The job the user finished with Done (dict, its prompts' files made absolute), or None
        (closed, cancelled: the pick's folder is removed then)."""
        if self.proc is None or self.proc.poll() != 0 or not os.path.isfile(self.job_path):
            if self.proc is not None and self.proc.poll() is not None:
                self.discard()  # closed without Done: nothing in the folder is wanted
            return None
        with open(self.job_path, encoding="utf-8") as f:
            job = json.load(f)
        for prompt in job.get("prompts", []):
            for key in ("mask", "prior"):  # files beside the picked job: a correction's prior too
                path = prompt.get(key)
                if path and not os.path.isabs(path):
                    prompt[key] = os.path.join(self.folder, path)
        return job

    def discard(self):
        """Remove the temporary folder of the pick (the picked job and its masks), when made
        here; call it once the render that reads them has ended, or the pick is abandoned."""
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def message(self):
        code = self.proc.poll() if self.proc is not None else None
        if code == 0:
            return "picked in vosfx studio"
        tail = self.stderr.strip().splitlines()[-1:] if self.stderr.strip() else []
        if code == 130:
            return "vosfx studio was closed without Done"
        return exit_message("vosfx studio", code) + (": " + tail[0] if tail else "")


def job_from_pick(
    picked,
    output,
    presets=("prores4444",),
    overwrite=False,
    extra_formats=(),
    output_overrides=None,
):
    """The host's render job from a studio pick: its prompts, range and finishing (model,
    memory and refine settings), with the host's own output, format presets and extras (the
    studio's output section is dropped, so the host's presets decide the files)."""
    overrides = {k: v for k, v in (picked.get("overrides") or {}).items() if k != "output"}
    if output_overrides:
        overrides["output"] = dict(output_overrides)
    return build_job(
        picked["input"],
        output,
        picked["prompts"],
        start=picked.get("start", 0),
        end=picked.get("end"),
        presets=presets,
        overrides=overrides,
        overwrite=overwrite,
        extra_formats=extra_formats,
    )


def pick_in_studio(command, clip, start, end, frame, env=None, should_cancel=None, poll_s=0.2):
    """Blocking helper: open the studio, wait for Done. Returns (job dict or None, message)."""
    pick = StudioPick(command, clip, start, end, frame, env=env).start()
    try:
        while pick.running:
            if should_cancel is not None and should_cancel():
                pick.cancel()
                break
            try:
                pick.proc.wait(poll_s)
            except subprocess.TimeoutExpired:
                pass
    except BaseException:
        pick.cancel()
        raise
    pick.wait()
    return pick.picked(), pick.message()  # the caller discards the picked job's folder


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

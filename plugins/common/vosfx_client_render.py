"""One render: ``vosfx matte --job JOB --json-progress`` run in the background, its JSON-line
events read as they come, cancelled through its process group (part of the host client,
``vosfx_client``; standard library only)."""

import json
import queue
import subprocess
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING or __package__:  # in a package: Blender's add-on; mypy's plugins.common
    from .vosfx_client_events import RenderResult
    from .vosfx_client_launch import signal_group, spawn, stop
else:  # flat on sys.path: Resolve's support folder, the tests
    from vosfx_client_events import RenderResult
    from vosfx_client_launch import signal_group, spawn, stop


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
        self.proc = spawn(self.args, self.env, stdout=subprocess.PIPE)
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
            stop(self.proc, timeout_s)

    def terminate(self):
        """Ask vosfx to stop without waiting (a host's UI thread: poll ``running`` after it,
        and :meth:`kill` when it is still running a while later)."""
        if self.running:
            signal_group(self.proc, force=False)

    def kill(self):
        """SIGKILL vosfx's process group (the last resort after :meth:`terminate`)."""
        if self.running:
            signal_group(self.proc, force=True)

    def wait(self, timeout_s=None):
        code = self.proc.wait(timeout_s)
        for t in self._threads:
            # a process of the group that outlived vosfx (a wrapper's child) can hold the pipes
            # open: end the group rather than hang the host on its reader threads
            t.join(5.0)
            if t.is_alive():
                signal_group(self.proc, force=True)
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

""" "Pick in vosfx studio": the studio page opened on a clip's frames, the job the user
finished with Done read back (part of the host client, ``vosfx_client``; standard library
only)."""

import json
import os
import shutil
import subprocess
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING or __package__:  # in a package: Blender's add-on; mypy's plugins.common
    from .vosfx_client_events import exit_message
    from .vosfx_client_launch import VosfxNotFound, spawn, stop
else:  # flat on sys.path: Resolve's support folder, the tests
    from vosfx_client_events import exit_message
    from vosfx_client_launch import VosfxNotFound, spawn, stop


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
            self.proc = spawn(self.args, self.env, stdout=subprocess.DEVNULL)
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
        """Close the studio while it runs (its process group: ``vosfx_client_launch.stop``)
        and remove the pick's folder; a pick that ended with Done is kept (:meth:`discard`
        removes it)."""
        if self.running:
            stop(self.proc, timeout_s)
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
            if "the prompts were not saved; they are kept in" in self.stderr:
                return (
                    "vosfx studio was closed without Done; its prompts are kept, and the "
                    "studio offers them back (Restore) when this clip is picked again"
                )
            return "vosfx studio was closed without Done"
        return exit_message("vosfx studio", code) + (": " + tail[0] if tail else "")


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

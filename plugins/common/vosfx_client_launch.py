"""Finding and starting the vosfx executable, and stopping it with its process group (part of
the host client, ``vosfx_client``; standard library only)."""

import json
import os
import signal
import subprocess
import sys

CONFIG_NAME = "vosfx_plugin_config.json"


class VosfxNotFound(OSError):
    """The vosfx command cannot be started (not installed, moved, not executable)."""


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


def spawn(args, env, stdout):
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


def signal_group(proc, force):
    """SIGTERM (``force``: SIGKILL) to the process group ``proc`` leads (:func:`spawn`): vosfx
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


def stop(proc, timeout_s):
    """SIGTERM to vosfx's process group, then SIGKILL to it after ``timeout_s``."""
    signal_group(proc, force=False)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        signal_group(proc, force=True)
        proc.wait()

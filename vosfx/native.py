"""C sources compiled on first use and loaded with ctypes.

vosfx ships a few loops as C source (the refiner's per-pixel loops, the bf16 tier's int8
attention) and builds each with the system's C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) the
first time a process needs it, into a cache directory the caller names, as a shared library
named by the hash of its source, the compiler's version and the flags: a new vosfx or compiler
builds anew, and the older builds of that source are removed. A library is loaded only from a
folder and file of this user's own that no other user can write (a shared cache could
otherwise hand this process another user's code). Two processes building at once
each write their own temporary file and rename it into place. :func:`build` raises
:class:`Unavailable` saying why where it cannot (no compiler, a compile error, an unwritable
cache, a platform with no build): each caller has its own way to go on without the library.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

FLAGS = ("-O3", "-shared", "-fPIC", "-pthread")


class Unavailable(RuntimeError):
    """The library cannot be built or loaded here; the message says why."""


def compiler() -> str | None:
    """The C compiler's path: ``$CC``, else ``cc``, ``gcc`` or ``clang``; None where there is
    none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def build(
    source: Path, directory: Path, flags: Sequence[str] = (), *, name: str | None = None
) -> ctypes.CDLL:
    """``source`` compiled (once per source, compiler and flags) into ``directory`` and loaded.
    ``flags``: besides :data:`FLAGS`; ``name``: the library's (default the source's stem; a
    build of the same source with other flags that must stay beside it takes another: each
    name keeps its latest build alone). Raises :class:`Unavailable`."""
    if not sys.platform.startswith(("linux", "darwin", "freebsd")):
        raise Unavailable(f"no build of {source.name} for {sys.platform}")
    cc = compiler()
    if cc is None:
        raise Unavailable("no C compiler found ($CC, cc, gcc, clang)")
    try:
        version = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise Unavailable(f"{cc} --version failed: {err}") from err
    every = (*FLAGS, *flags)
    digest = hashlib.sha256(source.read_bytes() + version.encode() + repr(every).encode())
    stem = name or source.stem
    target = directory / f"{stem}-{digest.hexdigest()[:16]}.so"
    if not target.exists():
        _compile(cc, source, every, target)
        _remove_older_builds(target, stem)
    for path in (directory, target):
        why = not_private(path)
        if why is not None:
            raise Unavailable(
                f"{why}: a library there is not loaded (another user could put code in it); "
                "use a cache folder of your own (VOSFX_HOME)"
            )
    try:
        return ctypes.CDLL(str(target))
    except OSError as err:
        raise Unavailable(f"could not load {target}: {err}") from err


def not_private(path: Path) -> str | None:
    """Why what is in ``path`` (a library, or the folder it is in; any file this process
    trusts as its own) is not to be read: not this user's own, or writable by other users
    (POSIX); None where it is private."""
    if os.name != "posix":
        return None
    try:
        st = path.stat()
    except OSError as err:
        return f"{path} cannot be read ({err.strerror})"
    if st.st_uid != os.geteuid():
        return f"{path} belongs to another user"
    if st.st_mode & 0o022:
        return f"{path} is writable by other users"
    return None


def _compile(cc: str, source: Path, flags: Sequence[str], target: Path) -> None:
    """Compiles ``source`` to ``target``, through a temporary file renamed into place (a
    second process compiling at the same time writes its own and renames over it)."""
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as err:
        raise Unavailable(f"cannot write to {target.parent}: {err}") from err
    try:
        done = subprocess.run(
            [cc, *flags, "-o", tmp, str(source), "-lm"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            said = " ".join(done.stderr.split())[:300]
            raise Unavailable(f"{cc} could not compile {source.name}: {said}")
        os.chmod(tmp, 0o755)  # whatever the umask: loadable, writable by its owner alone
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as err:
        raise Unavailable(f"{cc} failed on {source.name}: {err}") from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _remove_older_builds(target: Path, stem: str) -> None:
    """Removes the directory's other builds of ``stem`` (an older source, compiler or flags:
    each built its own file, and none is read again). A process that loaded one keeps its
    mapping; one that removal races with compiles its own. What cannot be removed is left."""
    for old in target.parent.glob(f"{stem}-*.so"):
        if old != target:
            try:
                old.unlink()
            except OSError:
                pass

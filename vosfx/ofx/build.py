"""Build the vosfx Matte OpenFX bundle from its C sources with the system compiler.

``vosfx plugins install ofx`` and the tests call :func:`build_bundle`; ``plugins/ofx/Makefile``
does the same by hand. The layout is the standard one every OFX host scans for::

    vosfx.ofx.bundle/Contents/Info.plist
    vosfx.ofx.bundle/Contents/Linux-x86-64/vosfx.ofx      (MacOS/ or Win64/ elsewhere)
    vosfx.ofx.bundle/Contents/Resources/vosfx_worker.cfg  (which command runs vosfx)

Linux and macOS: the system C compiler (``$CC``, ``cc``, ``gcc``, ``clang``). Windows: gcc or
clang of mingw-w64 (MSYS2, LLVM-MinGW) on PATH or in ``$CC``, else Zig's clang from the
``ziglang`` package (``pip install ziglang``: no Visual Studio needed); MSVC's ``cl`` does not
take the GNU attributes the sources use. ``system="Windows"`` builds the Windows bundle from
Linux too (``cc="x86_64-w64-mingw32-gcc"``: how the tests build it, then run it under Wine).

The compiler runs with an argument list, never through a shell.
"""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from vosfx import native
from vosfx.errors import VosfxError

COMMON_SOURCES = (
    "vosfx_ofx.c",
    "vosfx_conversation.c",
    "vosfx_image.c",
    "vosfx_overlay.c",
    "vosfx_points.c",
    "vosfx_config.c",
    "vosfx_channel.c",
)
SOURCES = (*COMMON_SOURCES, "vosfx_worker.c")  # Linux, macOS
WINDOWS_SOURCES = (*COMMON_SOURCES, "vosfx_worker_win.c")
# Zig's clang for a Windows build where no gcc or clang is installed
ZIG_CC = ("-m", "ziglang", "cc", "-target", "x86_64-windows-gnu")
BUNDLE = "vosfx.ofx.bundle"
CONFIG_NAME = "vosfx_worker.cfg"


class BuildError(VosfxError):
    """The bundle could not be compiled (no C compiler, a compile error)."""

    kind = "build"


def arch_dir(system: str | None = None, machine: str | None = None) -> str:
    """The OFX binary folder name for this OS and CPU (the spec's bundle layout)."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if system == "Darwin":
        return "MacOS"
    if system == "Windows":
        return "Win64" if machine in ("amd64", "x86_64", "arm64") else "Win32"
    if machine in ("aarch64", "arm64"):
        return "Linux-arm-64"
    return "Linux-x86-64" if machine in ("x86_64", "amd64") else "Linux-x86"


def find_compiler(cc: str | None = None, *, system: str | None = None) -> list[str]:
    """The compiler's command (its words) for a build for ``system`` (this one's by default):
    ``cc`` as given; else this system's (``$CC``, ``cc``, ``gcc``, ``clang``); for Windows,
    else ``python -m ziglang cc`` (which also builds it from Linux). BuildError when there is
    none."""
    system = system or platform.system()
    if cc:
        found = shutil.which(cc)
        if found:
            return [found]
        raise BuildError(f"the C compiler {cc!r} is not on PATH")
    if system == platform.system():
        found = native.compiler()
        if found:
            return [found]
    if system == "Windows":
        if importlib.util.find_spec("ziglang") is not None:
            return [sys.executable, *ZIG_CC]
        raise BuildError(
            "no C compiler found (expected gcc or clang on PATH, or $CC); "
            "pip install ziglang (a C compiler in a Python package) and try again"
        )
    if system != platform.system():
        raise BuildError(f"building for {system} on {platform.system()} needs its compiler (cc)")
    raise BuildError(
        "no C compiler found (expected cc, gcc or clang on PATH, or $CC); "
        "install one (Debian/Ubuntu: apt-get install gcc) and try again"
    )


def build_bundle(
    src: Path,
    out_dir: Path,
    *,
    cc: str | None = None,
    sanitize: bool = False,
    extra_flags: tuple[str, ...] = (),
    system: str | None = None,
) -> Path:
    """Compile ``src`` (the plugins/ofx folder) into ``out_dir/vosfx.ofx.bundle``; returns the
    bundle path. ``sanitize``: AddressSanitizer + UndefinedBehaviorSanitizer build, for the
    test host. ``system``: "Linux", "Darwin" or "Windows" (x86-64), this one's by default."""
    system = system or platform.system()
    compiler = find_compiler(cc, system=system)
    bundle = Path(out_dir) / BUNDLE
    machine = "x86_64" if system != platform.system() else None
    binary = bundle / "Contents" / arch_dir(system, machine) / "vosfx.ofx"
    binary.parent.mkdir(parents=True, exist_ok=True)
    (bundle / "Contents" / "Resources").mkdir(parents=True, exist_ok=True)
    flags = ["-std=c11", "-O2", "-g", "-Wall", "-Wextra"]
    sources = SOURCES
    if system == "Windows":
        # the GNU printf forms (%zu) on every Windows C runtime; no DLL of the compiler's
        flags.append("-D__USE_MINGW_ANSI_STDIO=1")
        if tuple(compiler[1:]) != ZIG_CC:  # Zig links its runtime in already
            flags.append("-static-libgcc")
        link = ["-shared", "-lws2_32", "-lbcrypt"]
        sources = WINDOWS_SOURCES
    else:
        flags += ["-fPIC", "-fvisibility=hidden"]
        link = ["-bundle"] if system == "Darwin" else ["-shared", "-ldl", "-lpthread", "-lm"]
    if sanitize:
        # float-cast-overflow: not part of "undefined" in GCC (a NaN pixel made an integer)
        flags += ["-fsanitize=address,undefined,float-cast-overflow", "-fno-omit-frame-pointer"]
    cmd = [
        *compiler,
        *flags,
        *extra_flags,
        "-o",
        str(binary),
        *(str(Path(src) / s) for s in sources),
        *link,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(
            f"compiling the OFX bundle failed ({' '.join(cmd)}):\n{proc.stderr.strip()[-4000:]}"
        )
    shutil.copy2(Path(src) / "Info.plist", bundle / "Contents" / "Info.plist")
    return bundle


def write_worker_config(
    bundle: Path,
    vosfx_command: list[str],
    *,
    worker_command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """``Contents/Resources/vosfx_worker.cfg``: one argument per line (``vosfx ARG``,
    ``worker ARG``), ``env NAME=VALUE``; the effect splits nothing, so paths with spaces
    are safe. A line break inside an argument cannot be written and is refused."""
    lines = ["# written by `vosfx plugins install ofx`: the command that runs vosfx"]
    for kind, args in (("vosfx", vosfx_command), ("worker", worker_command or [])):
        for arg in args:
            if "\n" in arg or "\r" in arg:
                raise VosfxError(f"worker command: a line break in {arg!r} cannot be stored")
            lines.append(f"{kind} {arg}")
    for name, value in (env or {}).items():
        if "\n" in value or "=" in name or "\n" in name:
            raise VosfxError(f"worker environment: cannot store {name!r}")
        lines.append(f"env {name}={value}")
    path = bundle / "Contents" / "Resources" / CONFIG_NAME
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

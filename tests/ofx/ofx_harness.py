"""Build the vosfx Matte bundle and the C test host (ofx_host.c) with the system compiler, make
a clip the host serves, and run host scripts. Used by test_ofx.py and benchmarks/ofx.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SRC = REPO / "plugins" / "ofx"
sys.path.insert(0, str(REPO / "tests"))

from media import make_sequence, moving_square_frame

W, H, N = 96, 64, 12  # the test clip


@dataclass(frozen=True)
class Built:
    bundle: Path
    host: Path
    sanitize: bool


def build(out: Path, *, sanitize: bool = False) -> Built:
    """The bundle (with its worker config pointing at the FakeEngine of ofx_fakes.py) and the
    host, both -Wall -Wextra -Werror; ``sanitize``: both with AddressSanitizer and
    UndefinedBehaviorSanitizer."""
    from vosfx.ofx.build import build_bundle, find_compiler, write_worker_config

    out.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(SRC, out, sanitize=sanitize, extra_flags=("-Werror",))
    write_worker_config(
        bundle,
        [sys.executable, str(HERE / "vosfx_drift_fake.py")],
        worker_command=[
            sys.executable,
            "-m",
            "vosfx.ofx.worker",
            "--engine",
            "ofx_fakes:make_engine",
        ],
        env={"PYTHONPATH": str(HERE)},
    )
    host = out / "ofx_host"
    flags = ["-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{SRC}", "-rdynamic"]
    if sanitize:
        flags += ["-fsanitize=address,undefined,float-cast-overflow", "-fno-omit-frame-pointer"]
    cmd = [
        *find_compiler(),
        *flags,
        "-o",
        str(host),
        str(HERE / "ofx_host.c"),
        "-ldl",
        "-lpthread",
        "-lm",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling the test host failed:\n{proc.stderr}")
    return Built(bundle, host, sanitize)


# ---- the Windows effect: cross-compiled with mingw-w64, run under Wine ----------------------

MINGW = "x86_64-w64-mingw32-gcc"


def wine() -> str:
    """Wine's 64-bit loader (Debian: /usr/lib/wine/wine64, package wine64)."""
    found = shutil.which("wine64") or "/usr/lib/wine/wine64"
    if not Path(found).is_file():
        raise RuntimeError("wine64 is missing: apt-get install wine64 (.ci/run installs it)")
    return found


def z(path: Path | str) -> str:
    """A Linux path as Windows programs under Wine name it (drive Z: is /)."""
    return "Z:" + str(path).replace("/", "\\")


def build_windows(out: Path, *, worker: list[str] | None = None, zig: bool = False) -> Built:
    """The Windows bundle and the test host, cross-compiled with mingw-w64 (-Werror); ``zig``:
    the bundle with Zig's clang instead (``python -m ziglang cc``, what `vosfx plugins install
    ofx` uses on a Windows machine without gcc or clang). The worker config starts the Linux
    vosfx worker (FakeEngine) through /usr/bin/env: Wine hands a Unix program its argv[0] in
    Windows form, where Python would not find its virtual environment. ``worker``: another
    worker command (its program a Linux path)."""
    from vosfx.ofx.build import build_bundle, write_worker_config

    if shutil.which(MINGW) is None:
        raise RuntimeError(f"{MINGW} is missing: apt-get install gcc-mingw-w64-x86-64-win32")
    out.mkdir(parents=True, exist_ok=True)
    cc = None if zig else MINGW  # None: ziglang, the only compiler for Windows it knows here
    bundle = build_bundle(SRC, out, system="Windows", cc=cc, extra_flags=("-Werror",))
    default = [sys.executable, "-m", "vosfx.ofx.worker", "--engine", "ofx_fakes:make_engine"]
    write_worker_config(
        bundle,
        [z("/usr/bin/env"), sys.executable, str(HERE / "vosfx_drift_fake.py")],
        worker_command=[z("/usr/bin/env"), *(worker or default)],
        env={"PYTHONPATH": str(HERE)},
    )
    host = out / "ofx_host.exe"
    flags = ["-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-D__USE_MINGW_ANSI_STDIO=1"]
    cmd = [MINGW, *flags, f"-I{SRC}", "-o", str(host), str(HERE / "ofx_host.c"), "-static"]
    proc = subprocess.run([*cmd, "-lpthread"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling the Windows test host failed:\n{proc.stderr}")
    return Built(bundle, host, False)


def run_wine(
    built: Built,
    lines: list[str],
    tmp: Path,
    prefix: Path,
    *,
    env: dict | None = None,
    timeout: float = 300,
) -> Run:
    """The Windows test host under Wine (its prefix ``prefix``, made on first use), on a
    script whose paths are already in Windows form (:func:`z`). %TEMP% is the prefix's own
    (:func:`wine_temp`: Wine sets it from the prefix, whatever the environment says)."""
    script = tmp / f"script-{len(list(tmp.glob('script-*')))}.txt"
    script.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    proc = subprocess.run(
        [wine(), str(built.host), z(script)],
        capture_output=True,
        env=wine_env(prefix, env),
        timeout=timeout,
        check=False,
    )
    return Run(  # a Windows program's text-mode stdout ends its lines with \r\n
        proc.returncode,
        proc.stdout.decode("utf-8", "replace").replace("\r\n", "\n"),
        proc.stderr.decode("utf-8", "replace"),
    )


def wine_env(prefix: Path, env: dict | None = None) -> dict:
    """This environment for a Windows program under Wine in ``prefix``: no display, no Wine
    debug output, no VOSFX_OFX_CONFIG of the caller's; ``env`` over it."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("VOSFX_OFX_CONFIG", "DISPLAY")}
    full_env.update(WINEPREFIX=str(prefix), WINEDEBUG="-all", **(env or {}))
    return full_env


def wine_temp(prefix: Path) -> Path:
    """%TEMP% of Windows programs in ``prefix``: where the effect makes its workers' folders."""
    import getpass

    return prefix / "drive_c" / "users" / getpass.getuser() / "Temp"


def studio_words(src: str, *, frame: int, model: str = "sam2.1-tiny", n: int = N) -> list[str]:
    """The words the effect's Pick in vosfx studio gives `vosfx` for the clip ``src`` shown at
    ``frame`` (the effect's Model: the studio shows what renders give; the clip after "--": a
    name starting with "-" is not an option)."""
    return ["studio", "--start", "0", "--end", str(n), "--frame", str(frame), "--model", model] + [
        "--",
        src,
    ]


class ArgvRecorder:
    """A stand-in `vosfx` (``script``, run by the Python here) that writes the words it was
    started with to ``record``, one per line: what the effect's Pick in vosfx studio passes."""

    def __init__(self, folder: Path) -> None:
        self.record = folder / "argv.txt"
        self.script = folder / "fake_vosfx.py"
        self.script.write_text(
            "import sys, pathlib\n"
            f"pathlib.Path({str(self.record)!r}).write_text('\\n'.join(sys.argv[1:]))\n",
            encoding="utf-8",
        )

    def words(self, timeout: float = 30) -> list[str]:
        """The words, once written (the studio runs on after the host: waited for); the
        record is then removed for the next start."""
        import time

        deadline = time.monotonic() + timeout
        while not (self.record.exists() and self.record.read_text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing started the stand-in vosfx in {timeout} s")
            time.sleep(0.1)
        words = self.record.read_text().split("\n")
        self.record.unlink()
        return words


def make_clip(
    folder: Path,
    n: int = N,
    width: int = W,
    height: int = H,
    *,
    frame: Callable[[int], np.ndarray] | None = None,
) -> Path:
    """The moving-square clip as a PNG sequence (for `vosfx matte`) and as raw RGB files
    ``raw/%05d.rgb`` (for the host): the same 8-bit pixels. ``frame``: another clip, frame
    ``i`` as (H, W, 3) uint8 RGB (a graded or re-timed version of the moving square)."""
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    if frame is None:
        make_sequence(folder / "png", n, width, height)
    else:
        import cv2

        (folder / "png").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = moving_square_frame(i, width, height)[0] if frame is None else frame(i)
        if frame is not None:
            cv2.imwrite(str(folder / "png" / f"{i:05d}.png"), image[..., ::-1])
        image.tofile(raw / f"{i:05d}.rgb")
    return folder


def read_output(path: Path, width: int = W, height: int = H) -> np.ndarray:
    """(H, W, 4) float32 RGBA, top-down, as the host wrote it."""
    return np.fromfile(path, np.float32).reshape(height, width, 4)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def statuses(self, command: str) -> list[int]:
        return [
            int(m) for m in re.findall(rf"^STATUS {command} (-?\d+)$", self.stdout, re.MULTILINE)
        ]

    def renders(self) -> list[dict]:
        """Per render: time, status, Source images fetched, progress calls, and ``host_ms``:
        the part of ``ms`` the test host spent making images (a real host has them ready)."""
        rows = re.findall(
            r"^RENDER (\S+) (\S+) ms status (-?\d+) fetches (\d+) progress (\d+) host_ms (\S+)$",
            self.stdout,
            re.MULTILINE,
        )
        keys = ("t", "ms", "status", "fetches", "progress", "host_ms")
        kinds = (float, float, int, int, int, float)
        return [{k: f(v) for k, f, v in zip(keys, kinds, row)} for row in rows]

    def messages(self) -> list[str]:
        return re.findall(r"^MESSAGE (.*)$", self.stdout, re.MULTILINE)


def run_host(
    built: Built, lines: list[str], tmp: Path, *, env: dict | None = None, timeout: float = 300
) -> Run:
    script = tmp / f"script-{os.getpid()}-{len(list(tmp.glob('script-*')))}.txt"
    # surrogateescape: a line may carry bytes that are not UTF-8 ("\udcff" is the byte 0xFF)
    script.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    full_env = dict(os.environ)
    full_env.pop("VOSFX_OFX_CONFIG", None)
    full_env["TMPDIR"] = str(tmp)  # the worker logs of crashed workers stay in the test's folder
    if built.sanitize:
        full_env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=23"
        full_env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=24"
    full_env.update(env or {})
    proc = subprocess.run(
        [str(built.host), str(script)],
        capture_output=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    # bytes the effect passed on that are not UTF-8 show as U+FFFD (the tests look for none)
    return Run(
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def preamble(
    built: Built,
    clip: Path,
    *,
    n: int = N,
    width: int = W,
    height: int = H,
    depth: str = "float",
    context: str = "filter",
    mask: Path | None = None,
    first: int = 0,
    name: Callable[[Path], str] = str,
) -> list[str]:
    """Load, describe and create, on ``clip``'s raw frames; ``name``: how the host names a
    path (:func:`z` for the Windows host under Wine)."""
    lines = [
        f"0 load {name(built.bundle)}",
        "0 describe",
        f"0 describe_context {context}",
        f"0 frames {name(clip / 'raw')} {width} {height} {n} {first} 24",
        f"0 depth {depth}",
    ]
    if mask is not None:
        lines.append(f"0 mask {name(mask)}")
    lines.append("0 create")
    return lines


def postamble() -> list[str]:
    return ["0 destroy", "0 unload"]

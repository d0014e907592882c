"""The OpenFX effect built for Windows (vosfx_worker_win.c: the worker started with its handles
listed, a loopback connection with a token, a shared file) with mingw-w64, loaded by the test
host built the same way and run under Wine. Wine starts the Linux worker (the FakeEngine), so
the mattes can be compared with the POSIX effect's on the same script: they are the same
bytes.

Wine gives no process handle for a Unix program and does not hand it the listed standard
handles, so the process handling (exit status, log, timeout, job object) is tested with a
stand-in worker built as a Windows program (fake_worker_win.c). The macOS build is compiled
here too (Zig's clang, both architectures), never run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from media import moving_square_frame
from ofx_harness import (
    HERE,
    MINGW,
    SRC,
    ArgvRecorder,
    Built,
    H,
    W,
    build,
    build_windows,
    make_clip,
    postamble,
    preamble,
    read_output,
    run_host,
    run_wine,
    studio_words,
    wine,
    wine_env,
    wine_temp,
    z,
)

CLICK = (8, 8)  # inside the square on frame 0 (pixels, top-left origin)
PEN = f"{CLICK[0]} {H - CLICK[1]}"  # OFX canonical coordinates (y up)
ORDER = [0, 1, 2, 3, 7, 4, 11, 5, 9, 3, 0]


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """One Wine prefix for the module (made by the first run, ~5 s)."""
    return tmp_path_factory.mktemp("wine-prefix") / "pfx"


@pytest.fixture(scope="module")
def built_win(tmp_path_factory):
    # a folder with letters outside ASCII: the effect finds its config by its
    # own module's wide path, and reads it by that name
    return build_windows(tmp_path_factory.mktemp("ofx-win") / "Plug-ins-é-ü")


@pytest.fixture(scope="module")
def built_posix(tmp_path_factory):
    """The POSIX effect and test host: the reference the Windows outputs must equal."""
    return build(tmp_path_factory.mktemp("ofx-posix"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("ofx-clip"))


def _script(
    built: Built, clip: Path, outputs: list[str], *, name=z, extra: tuple[str, ...] = ()
) -> list[str]:
    """The effect created on ``clip``, a point on frame 0, its overlay drawn, then ORDER's
    frames rendered into ``outputs`` (as many as given); paths named by ``name``."""
    lines = preamble(built, clip, name=name) + [
        *extra,
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        "* draw 0",
    ]
    lines += [f"0 render {t} {out}" for t, out in zip(ORDER, outputs)]
    return lines + postamble()


def _passed_through(path: Path) -> None:
    """The output of frame 0 is the Source's pixels (no matte was made)."""
    source = moving_square_frame(0, W, H)[0].astype(np.float32) / 255
    np.testing.assert_allclose(read_output(path)[..., :3], source, atol=1e-6)


def _pe_dump(binary: Path) -> str:
    """The headers of a Windows binary (its imports and exports), as mingw's objdump reads them."""
    objdump = MINGW.replace("gcc", "objdump")
    return subprocess.run(
        [objdump, "-p", str(binary)], capture_output=True, text=True, check=True
    ).stdout


def _ok(run) -> None:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "DONE" in run.stdout, run.stdout[-3000:]


def test_windows_bundle_exports_two_entry_points_and_needs_only_system_dlls(built_win):
    binary = built_win.bundle / "Contents" / "Win64" / "vosfx.ofx"
    assert binary.is_file() and (built_win.bundle / "Contents" / "Info.plist").is_file()
    dump = _pe_dump(binary)
    table = dump.split("[Ordinal/Name Pointer] Table", 1)[1].split("\n\n", 1)[0]
    assert sorted(re.findall(r"\]\s+(\w+)", table)) == ["OfxGetNumberOfPlugins", "OfxGetPlugin"]
    dlls = {name.lower() for name in re.findall(r"DLL Name: (\S+)", dump)}
    # what every Windows has: no compiler runtime (libgcc, winpthread) to ship beside it
    assert dlls <= {"kernel32.dll", "msvcrt.dll", "ws2_32.dll", "bcrypt.dll"}, dlls


def test_windows_effect_gives_the_posix_effects_mattes(
    built_win, built_posix, clip, prefix, tmp_path
):
    """Renders in and out of order, an overlay draw: every output is the POSIX effect's, byte
    for byte, and the worker's folder is gone after the instance is destroyed."""
    win = [z(tmp_path / f"w{k}.raw") for k in range(len(ORDER))]
    run = run_wine(built_win, _script(built_win, clip, win), tmp_path, prefix)
    _ok(run)
    assert "OfxMessageError" not in run.stdout, run.messages()
    assert "DRAW vertices=2" in run.stdout  # the GL calls found in the host program's exports
    lin = [str(tmp_path / f"l{k}.raw") for k in range(len(ORDER))]
    ref = run_host(built_posix, _script(built_posix, clip, lin, name=str), tmp_path)
    assert ref.returncode == 0, ref.stdout[-2000:]
    for k, t in enumerate(ORDER):
        got, want = read_output(tmp_path / f"w{k}.raw"), read_output(tmp_path / f"l{k}.raw")
        assert np.array_equal(got, want), f"frame {t}"
    assert read_output(tmp_path / "w4.raw")[..., 3].max() > 0.99  # a real matte
    assert sorted(wine_temp(prefix).glob("vosfx-ofx-*")) == []  # folder, file, log: removed


def test_the_bundle_zig_builds_gives_the_same_mattes(built_win, clip, prefix, tmp_path):
    """Built by Zig's clang against the Universal C Runtime (what `vosfx plugins install ofx`
    does on Windows without gcc or clang): the same two exports, the same mattes."""
    from vosfx.ofx.build import ZIG_CC, find_compiler

    assert find_compiler(system="Windows")[1:] == list(ZIG_CC)  # no mingw gcc is looked for
    zig = build_windows(tmp_path / "zig", zig=True)
    outputs = {}
    for name, built in (("zig", zig), ("mingw", built_win)):
        out = [z(tmp_path / f"{name}{k}.raw") for k in range(len(ORDER))]
        run = run_wine(built, _script(built, clip, out), tmp_path, prefix)
        _ok(run)
        assert "OfxMessageError" not in run.stdout, run.messages()
        outputs[name] = [read_output(tmp_path / f"{name}{k}.raw") for k in range(len(ORDER))]
    for k, t in enumerate(ORDER):
        assert np.array_equal(outputs["zig"][k], outputs["mingw"][k]), f"frame {t}"
    dump = _pe_dump(zig.bundle / "Contents" / "Win64" / "vosfx.ofx")
    assert "OfxGetPlugin" in dump and "api-ms-win-crt-runtime" in dump  # the UCRT, not msvcrt


def test_numbers_ignore_the_host_locale_on_windows(built_win, clip, prefix, tmp_path):
    """A German host locale (C runtime: "0,50"): the saved points and the worker's JSON keep
    the point, through the per-thread locale of vx_numbers_begin."""
    lines = _script(
        built_win,
        clip,
        [z(tmp_path / "o.raw")],
        extra=("0 locale German", "14 set_string points 0 2 1 80.500 14.250;"),
    )
    lines.insert(lines.index("* draw 0") + 1, "0 print_param points")
    run = run_wine(built_win, lines, tmp_path, prefix)
    _ok(run)
    assert "OfxMessageError" not in run.stdout, run.messages()
    values = re.findall(r"^PARAM points = (.*)$", run.stdout, re.MULTILINE)
    assert values == ["0 2 1 80.500 14.250;0 1 1 8.000 56.000;"]


def test_a_connection_without_the_token_is_refused(clip, prefix, tmp_path):
    """Another program that reaches the effect's port first (with a wrong token) is cut off;
    the worker that comes next with the right one is served."""
    marker = tmp_path / "impostor.txt"
    impostor = [sys.executable, str(HERE / "ofx_impostor.py"), str(marker)]
    built = build_windows(tmp_path / "build", worker=impostor)
    out = [z(tmp_path / f"w{k}.raw") for k in range(len(ORDER))]
    run = run_wine(built, _script(built, clip, out), tmp_path, prefix)
    _ok(run)
    assert marker.read_text() == "closed"
    assert "OfxMessageError" not in run.stdout, run.messages()
    assert read_output(tmp_path / "w4.raw")[..., 3].max() > 0.99


@pytest.mark.parametrize(
    "worker,said",
    [
        (["Z:\\no\\such\\python.exe"], "cannot start the vosfx worker 'Z:\\no\\such\\python.exe'"),
        (["vosfx-nowhere"], "cannot start the vosfx worker 'vosfx-nowhere': not found on PATH"),
    ],
)
def test_a_worker_that_cannot_start_is_a_message(clip, prefix, tmp_path, worker, said):
    built = build_windows(tmp_path / "build")
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("".join(f"worker {arg}\n" for arg in worker), encoding="utf-8")
    lines = _script(built, clip, [z(tmp_path / "p.raw")])
    lines.insert(lines.index("0 destroy"), f"0 expect_message {said}")
    run = run_wine(built, lines, tmp_path, prefix, env={"VOSFX_OFX_CONFIG": z(cfg)})
    _ok(run)
    _passed_through(tmp_path / "p.raw")
    assert sorted(wine_temp(prefix).glob("vosfx-ofx-*")) == []


def test_a_worker_that_dies_is_a_message_and_the_next_render_starts_another(
    built_win, clip, prefix, tmp_path
):
    """The worker exits right after it connected (the engine does not load): the channel
    closes, the effect says so and passes the image through."""
    lines = _script(built_win, clip, [z(tmp_path / "p.raw")])
    lines.insert(lines.index("0 destroy"), "0 expect_message worker failed")
    run = run_wine(built_win, lines, tmp_path, prefix, env={"VOSFX_FAKE_CRASH": "3"})
    _ok(run)
    assert "closed its channel" in run.stdout, run.messages()
    _passed_through(tmp_path / "p.raw")


def test_the_studio_gets_each_argument_whole(built_win, clip, prefix, tmp_path):
    """Pick in vosfx studio: the command line CreateProcessW gets is read back into the same
    words (blanks, quotes, backslashes before a quote and at the end), the clip after "--"."""
    fake = ArgvRecorder(tmp_path)
    cfg = tmp_path / "studio.cfg"
    cfg.write_text(f"vosfx {z('/usr/bin/env')}\nvosfx {sys.executable}\nvosfx {fake.script}\n")
    src = 'C:\\clips\\-my clip "take 2" \\"q\\" end\\'
    lines = _script(built_win, clip, [])
    lines.insert(lines.index("0 destroy"), f"14 set_string studioSource {src}")
    lines.insert(lines.index("0 destroy"), "0 press pickInStudio 4")
    run = run_wine(built_win, lines, tmp_path, prefix, env={"VOSFX_OFX_CONFIG": z(cfg)})
    _ok(run)
    assert fake.words() == studio_words(src, frame=4)


@pytest.mark.parametrize("compiler", ["mingw", "zig"])
def test_plugins_install_ofx_on_windows_builds_the_windows_bundle(tmp_path, monkeypatch, compiler):
    """`vosfx plugins install ofx` as on Windows (the system said to be Windows): with a gcc
    in $CC (MSYS2's), and with none (Zig's clang from the ziglang package): Contents/Win64."""
    from click.testing import CliRunner

    import vosfx.ofx.build
    from vosfx.cli import cli

    monkeypatch.setattr(vosfx.ofx.build.platform, "system", lambda: "Windows")
    if compiler == "mingw":
        monkeypatch.setenv("CC", MINGW)
    else:  # no compiler of Windows on PATH: cc, gcc and clang here build for Linux
        monkeypatch.setattr(vosfx.ofx.build.native, "compiler", lambda: None)
    dest = tmp_path / "OFX Plugins"
    result = CliRunner().invoke(cli, ["plugins", "install", "ofx", "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    binary = dest / "vosfx.ofx.bundle" / "Contents" / "Win64" / "vosfx.ofx"
    assert binary.read_bytes()[:2] == b"MZ"  # a Windows DLL
    assert "OfxGetPlugin" in _pe_dump(binary)
    cfg = (binary.parents[1] / "Resources" / "vosfx_worker.cfg").read_text().splitlines()
    assert f"vosfx {sys.executable}" in cfg and "worker vosfx.ofx.worker" in cfg


# ---- process handling, with a Windows program as the worker (tests/ofx/fake_worker_win.c) ----


@pytest.fixture(scope="module")
def fake_worker(tmp_path_factory):
    """The stand-in worker, built as a Windows program, and a config that starts it."""
    out = tmp_path_factory.mktemp("fake-worker")
    exe = out / "fake_worker.exe"
    cmd = [MINGW, "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{SRC}", "-o", str(exe)]
    subprocess.run([*cmd, str(HERE / "fake_worker_win.c"), "-lws2_32"], check=True)
    cfg = out / "fake.cfg"
    cfg.write_text(f"worker {z(exe)}\n", encoding="utf-8")
    return cfg


def _worker_folders(prefix: Path) -> list[Path]:
    return sorted(wine_temp(prefix).glob("vosfx-ofx-*"))


def test_a_worker_that_exits_before_it_connects_is_seen_at_once_with_its_error(
    built_win, clip, prefix, tmp_path, fake_worker
):
    """Its process handle says it ended (no 120 s wait for a connection); the message has its
    exit status and the last line of its log, and the log is kept where it says."""
    before = set(_worker_folders(prefix))
    lines = _script(built_win, clip, [z(tmp_path / "p.raw")])
    said = "exited with status 3: ModuleNotFoundError: No module named 'vosfx'"
    lines.insert(lines.index("0 destroy"), f"0 expect_message {said}")
    env = {"VOSFX_OFX_CONFIG": z(fake_worker), "VOSFX_FAKE_WIN": "exit3"}
    started = time.monotonic()
    run = run_wine(built_win, lines, tmp_path, prefix, env=env)
    _ok(run)
    assert time.monotonic() - started < 60
    _passed_through(tmp_path / "p.raw")
    (kept,) = set(_worker_folders(prefix)) - before
    assert [p.name for p in kept.iterdir()] == ["worker.log"]  # the shared file removed
    assert "No module named 'vosfx'" in (kept / "worker.log").read_text()
    message = next(m for m in run.messages() if said in m)
    assert message.rstrip(".").endswith("worker.log") and kept.name in message


def test_a_worker_that_hangs_is_ended_after_the_timeout(
    built_win, clip, prefix, tmp_path, fake_worker
):
    """No answer within VOSFX_OFX_TIMEOUT_S: the effect says so, and the worker, which does not
    quit when asked, is terminated."""
    lines = _script(built_win, clip, [z(tmp_path / "p.raw")])
    said = "did not answer for 2 s; it did not quit and was ended"
    lines.insert(lines.index("0 destroy"), f"0 expect_message {said}")
    env = {"VOSFX_OFX_CONFIG": z(fake_worker), "VOSFX_FAKE_WIN": "hang"}
    run = run_wine(built_win, lines, tmp_path, prefix, env={**env, "VOSFX_OFX_TIMEOUT_S": "2"})
    _ok(run)
    _passed_through(tmp_path / "p.raw")


def test_the_worker_ends_when_the_host_is_killed(built_win, clip, prefix, tmp_path, fake_worker):
    """A host that crashes mid-render (killed): the job object it held the worker in ends the
    worker with it, so no worker is left running on its own."""
    mark = tmp_path / "survived.txt"
    before = set(_worker_folders(prefix))
    lines = _script(built_win, clip, [z(tmp_path / "p.raw")])
    script = tmp_path / "script.txt"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {"VOSFX_OFX_CONFIG": z(fake_worker), "VOSFX_FAKE_WIN": "linger"}
    host = subprocess.Popen(
        [wine(), str(built_win.host), z(script)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=wine_env(prefix, {**env, "VOSFX_FAKE_MARK": z(mark)}),
    )
    try:
        deadline = time.monotonic() + 60
        while not set(_worker_folders(prefix)) - before:  # the worker was started
            assert time.monotonic() < deadline and host.poll() is None
            time.sleep(0.05)
        time.sleep(1.0)  # it connected and said READY; the effect waits for its answer
    finally:
        host.kill()
        host.wait()
    time.sleep(6.5)  # the worker would write its mark 5 s after READY
    assert not mark.exists()


@pytest.mark.parametrize("arch", ["aarch64", "x86_64"])
def test_the_macos_sources_compile_for_both_architectures(tmp_path, arch):
    """The macOS branches of the POSIX sources (xlocale.h, shm_open, SO_NOSIGPIPE,
    POSIX_SPAWN_CLOEXEC_DEFAULT) compile and link without a warning, by Zig's clang against its
    macOS headers: built, never run (no Mac here; a host loads the Mach-O with dlopen)."""
    from vosfx.ofx.build import SOURCES, ZIG_CC

    out = tmp_path / "vosfx.ofx"
    cmd = [sys.executable, *ZIG_CC[:-2], "-target", f"{arch}-macos", "-std=c11", "-O2"]
    cmd += ["-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-shared", "-o", str(out)]
    proc = subprocess.run(
        [*cmd, *(str(SRC / s) for s in SOURCES)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    magic = out.read_bytes()[:4]
    assert magic == b"\xcf\xfa\xed\xfe"  # Mach-O, 64-bit, little-endian


@pytest.mark.parametrize("case", ["byte", "short", "proxy", "mask", "modes"])
def test_the_windows_effect_gives_the_posix_effects_bytes_on_every_path(
    built_win, built_posix, clip, prefix, tmp_path, case
):
    """The effect's other paths, under the Windows C runtime: 8- and 16-bit images, half-scale
    (proxy) renders, a Mask input that prompts on one frame, the Output modes (premultiplied,
    overlay): every output file is the POSIX effect's, byte for byte."""
    mask_dir = tmp_path / "mask"
    mask_dir.mkdir()
    (moving_square_frame(3, W, H)[1].astype(np.uint8) * 255).tofile(mask_dir / "00003.a")
    depth = case if case in ("byte", "short") else "float"

    def script(built: Built, name, out) -> list[str]:
        mask = mask_dir if case == "mask" else None
        lines = preamble(built, clip, depth=depth, context="general", mask=mask, name=name)
        if case != "mask":
            lines += ["0 overlay", f"0 pen_down 0 {PEN}"]
        if case == "proxy":
            lines += ["0 render 3 -", f"0 render 3 {out(0)} 0.5", f"0 render 6 {out(1)} 0.5"]
        elif case == "modes":
            lines += ["14 set_int outputMode 2", f"0 render 4 {out(0)}"]
            lines += ["14 set_int outputMode 3", f"0 render 4 {out(1)}"]
        else:
            lines += [f"0 render {t} {out(k)}" for k, t in enumerate((3, 5, 1))]
        return lines + postamble()

    run = run_wine(
        built_win, script(built_win, z, lambda k: z(tmp_path / f"w{k}")), tmp_path, prefix
    )
    _ok(run)
    assert "OfxMessageError" not in run.stdout, run.messages()
    lines = script(built_posix, str, lambda k: tmp_path / f"l{k}")
    ref = run_host(built_posix, lines, tmp_path)
    assert ref.returncode == 0, ref.stdout[-2000:]
    written = sorted(tmp_path.glob("l[0-9]"))
    assert len(written) >= 2
    for posix_out in written:
        win_out = tmp_path / f"w{posix_out.name[1:]}"
        assert win_out.read_bytes() == posix_out.read_bytes(), posix_out.name
    size = (W // 2, H // 2) if case == "proxy" else (W, H)
    assert read_output(tmp_path / "w0", *size)[..., 3].max() > 0.99  # a matte, not nothing

"""`vosfx plugins`: put the editor plugins where their host looks for them.

``vosfx plugins install resolve|blender [--dest DIR]`` copies the plugin (and the protocol
client, plugins/common/vosfx_client*.py) and records the command that runs *this* vosfx, so the
host finds it even when it was started from a desktop launcher without the user's PATH.
``vosfx plugins install ofx [--dest DIR | --user]`` compiles the OpenFX effect (plugins/ofx, with
the system C compiler) into ``vosfx.ofx.bundle`` in the OFX folder every host scans.
``vosfx plugins path [HOST]`` prints the default destinations.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from vosfx.errors import OutputError, VosfxError

HOSTS = ("resolve", "blender", "ofx")
CONFIG_NAME = "vosfx_plugin_config.json"  # read by plugins/common/vosfx_client_launch.py
RESOLVE_ENTRY = "vosfx Matte.py"
RESOLVE_PAGES = ("Edit", "Color")  # Workspace > Scripts menus on these pages
RESOLVE_SUPPORT = "vosfx_support"  # not a page name, so Resolve lists no menu for it
BLENDER_ADDON = "vosfx_sequencer"
# the protocol client: vosfx_client.py and the modules it gathers, copied beside each plugin
CLIENT_FILES = "vosfx_client*.py"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def default_dest(
    host: str,
    *,
    platform: str | None = None,
    home: Path | None = None,
    env: dict | None = None,
    blender_version: str = "5.0",
    user: bool = False,
) -> Path:
    """Per-user folder the host scans: Resolve's Fusion ``Scripts`` folder (the README of
    Resolve's scripting API lists it per OS) or Blender's ``scripts/addons`` for a version.
    OFX: the system-wide folder that Resolve, Nuke, Natron, Fusion and Vegas all scan
    (``/usr/OFX/Plugins``, ``/Library/OFX/Plugins``, ``C:\\Program Files\\Common
    Files\\OFX\\Plugins``), or with ``user`` a per-user folder to put on OFX_PLUGIN_PATH."""
    platform = platform or sys.platform
    home = Path(home) if home is not None else Path.home()
    environ: Mapping[str, str] = os.environ if env is None else env
    appdata = Path(environ.get("APPDATA") or home / "AppData" / "Roaming")
    if host == "ofx":
        return _ofx_dest(platform, home, environ, appdata, user)
    if host == "resolve":
        if platform == "win32":
            return (
                appdata / "Blackmagic Design" / "DaVinci Resolve" / "Support" / "Fusion" / "Scripts"
            )
        if platform == "darwin":
            return (
                home
                / "Library"
                / "Application Support"
                / "Blackmagic Design"
                / "DaVinci Resolve"
                / "Fusion"
                / "Scripts"
            )
        return home / ".local" / "share" / "DaVinciResolve" / "Fusion" / "Scripts"
    if host == "blender":
        if platform == "win32":
            base = appdata / "Blender Foundation" / "Blender"
        elif platform == "darwin":
            base = home / "Library" / "Application Support" / "Blender"
        else:
            base = Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "blender"
        return base / blender_version / "scripts" / "addons"
    raise click.UsageError(f"unknown host {host!r}; known: {', '.join(HOSTS)}")


def _ofx_dest(platform: str, home: Path, env: Mapping[str, str], appdata: Path, user: bool) -> Path:
    if user:
        if platform == "win32":
            return appdata / "OFX" / "Plugins"
        if platform == "darwin":
            return home / "Library" / "OFX" / "Plugins"
        return Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "OFX" / "Plugins"
    if platform == "win32":
        common = env.get("CommonProgramFiles") or r"C:\Program Files\Common Files"
        return Path(common) / "OFX" / "Plugins"
    if platform == "darwin":
        return Path("/Library/OFX/Plugins")
    return Path("/usr/OFX/Plugins")


def plugins_source() -> Path:
    """The plugins/ folder shipped with this vosfx: package data ``vosfx._plugins`` in a
    wheel, else the source tree beside the package (editable install, checkout)."""
    import importlib.util

    spec = importlib.util.find_spec("vosfx._plugins")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    import vosfx

    tree = Path(vosfx.__file__).resolve().parents[1] / "plugins"
    if (tree / "common" / "vosfx_client.py").is_file():
        return tree
    raise VosfxError(
        f"the plugin files are missing: expected them in {tree} or as the "
        "package vosfx._plugins; reinstall vosfx"
    )


def _replace_tree(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=_IGNORE)


def _copy_client(src: Path, folder: Path) -> None:
    """The protocol client's files (``CLIENT_FILES`` in plugins/common) into ``folder``, those
    an earlier install left there removed first, so a reinstall leaves no module the client
    no longer has."""
    for old in folder.glob(CLIENT_FILES):
        old.unlink()
    for path in sorted((src / "common").glob(CLIENT_FILES)):
        shutil.copy2(path, folder / path.name)


def _write_config(folder: Path, command: list[str]) -> None:
    data = {"command": command, "installed_by": sys.executable}
    (folder / CONFIG_NAME).write_text(json.dumps(data, indent=2), encoding="utf-8")


def install_resolve(src: Path, dest: Path, command: list[str]) -> list[Path]:
    """``dest`` = Resolve's Fusion Scripts folder. Writes ``Edit|Color/vosfx Matte.py`` (a
    stub that knows where its support files are) and ``vosfx_support/``."""
    support = dest / RESOLVE_SUPPORT
    support.mkdir(parents=True, exist_ok=True)
    _replace_tree(src / "resolve" / "vosfx_resolve", support / "vosfx_resolve")
    _copy_client(src, support)
    _write_config(support, command)
    template = (src / "resolve" / "entry.py").read_text(encoding="utf-8")
    # repr(): a valid Python literal for any path, backslashes and quotes included
    stub = template.replace("SUPPORT_DIR = None", f"SUPPORT_DIR = {str(support)!r}", 1)
    written = [support]
    for page in RESOLVE_PAGES:
        (dest / page).mkdir(parents=True, exist_ok=True)
        target = dest / page / RESOLVE_ENTRY
        target.write_text(stub, encoding="utf-8")
        written.append(target)
    return written


def install_blender(src: Path, dest: Path, command: list[str]) -> list[Path]:
    """``dest`` = Blender's scripts/addons folder; writes ``vosfx_sequencer/``."""
    addon = dest / BLENDER_ADDON
    dest.mkdir(parents=True, exist_ok=True)
    _replace_tree(src / "blender" / BLENDER_ADDON, addon)
    _copy_client(src, addon)
    _write_config(addon, command)
    return [addon]


def install_ofx(src: Path, dest: Path, command: list[str]) -> list[Path]:
    """``dest`` = an OFX plug-in folder; compiles ``vosfx.ofx.bundle`` there (built beside it
    first, then moved in, so a failed build leaves any installed bundle alone) and records the
    worker command in its Resources."""
    import tempfile

    from vosfx.ofx.build import BUNDLE, build_bundle, write_worker_config

    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".vosfx-build-", dir=dest) as tmp:
        bundle = build_bundle(src / "ofx", Path(tmp))
        worker = None
        if command == _this_vosfx():  # the interpreter directly: no click import per start
            worker = [sys.executable, "-m", "vosfx.ofx.worker"]
        write_worker_config(bundle, command, worker_command=worker)
        target = dest / BUNDLE
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(bundle), str(target))
    return [target]


def _split_command(text: str) -> list[str]:
    """``--command`` split like a shell would (never run by one)."""
    try:
        command = split_windows(text) if os.name == "nt" else shlex.split(text)
    except ValueError as err:  # an unclosed quote
        raise click.BadParameter(
            f"expected a command line, found {text!r}: {err}", param_hint="--command"
        ) from None
    if not command:
        raise click.BadParameter(f"expected a command line, found {text!r}", param_hint="--command")
    return command


def split_windows(text: str) -> list[str]:
    """A Windows command line split into its words as programs there read theirs (the C
    runtime's rules): blanks separate words, double quotes group a word and are dropped,
    backslashes are literal except before a quote (``\\"`` is a quote in the word).
    ``shlex.split(posix=False)`` kept the quotes (``"C:\\Program Files\\vosfx.exe"``
    could then not be started). ValueError for an unclosed quote."""
    words: list[str] = []
    word: list[str] = []
    in_word = quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            j = i
            while j < len(text) and text[j] == "\\":
                j += 1
            n = j - i
            if j < len(text) and text[j] == '"':  # 2n backslashes + quote: n of them, a quote
                word.append("\\" * (n // 2))
                if n % 2:
                    word.append('"')
                    j += 1
            else:
                word.append("\\" * n)
            i, in_word = j, True
            continue
        if c == '"':
            quoted, in_word = not quoted, True
        elif c in " \t" and not quoted:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        else:
            word.append(c)
            in_word = True
        i += 1
    if quoted:
        raise ValueError("No closing quotation")
    if in_word:
        words.append("".join(word))
    return words


def _this_vosfx() -> list[str]:
    """The command that runs this vosfx: its interpreter with ``-m vosfx`` (works whether or
    not the console script is on the host's PATH)."""
    return [sys.executable, "-m", "vosfx"]


@click.group()
def plugins() -> None:
    """Editor plugins (DaVinci Resolve script, Blender sequencer add-on, OpenFX effect)."""


@plugins.command("install")
@click.argument("host", type=click.Choice(HOSTS))
@click.option(
    "--dest",
    type=click.Path(file_okay=False),
    help="Install here instead of the "
    "host's per-user folder (Resolve: the Fusion Scripts folder; Blender: scripts/addons; "
    "OFX: an OFX plug-in folder).",
)
@click.option(
    "--blender-version",
    default="5.0",
    show_default=True,
    help="Blender version folder for the default destination.",
)
@click.option(
    "--command",
    "command_text",
    help="Command the plugin runs instead of this vosfx "
    "(e.g. '/opt/envs/vosfx/bin/vosfx'); split like a shell would, never run by one.",
)
@click.option(
    "--user",
    is_flag=True,
    help="OFX: a per-user folder instead of the system one "
    "(add it to OFX_PLUGIN_PATH for the host).",
)
def install(
    host: str, dest: str | None, blender_version: str, command_text: str | None, user: bool
) -> None:
    """Install the HOST plugin where the host finds it (ofx: compiled with the system C
    compiler) and print what was written."""
    target = Path(dest) if dest else default_dest(host, blender_version=blender_version, user=user)
    command = _split_command(command_text) if command_text else _this_vosfx()
    src = plugins_source()
    installer = {"resolve": install_resolve, "blender": install_blender, "ofx": install_ofx}
    try:
        written = installer[host](src, target, command)
    except OSError as err:
        admin = "as administrator" if sys.platform == "win32" else "with sudo"
        hint = f" (a system folder: run {admin}, or use --user / --dest)" if host == "ofx" else ""
        raise OutputError(f"cannot install the {host} plugin into {target}: {err}{hint}") from None
    for path in written:
        click.echo(str(path))
    if host == "blender":
        click.echo(
            "enable it in Blender: Edit > Preferences > Add-ons > 'vosfx Matte' (the folder "
            f"{BLENDER_ADDON})",
            err=True,
        )
    if host == "ofx":
        click.echo(
            "restart the host; the effect is 'vosfx Matte' in the vosfx group. A folder "
            "other than the system one must be on OFX_PLUGIN_PATH.",
            err=True,
        )


@click.command("ofx-worker", hidden=True)
@click.option("--fd", type=int, help="socket to the effect (POSIX)")
@click.option("--shm-fd", type=int, help="shared memory file (POSIX)")
@click.option("--connect", type=int, help="the effect's port on 127.0.0.1 (Windows)")
@click.option("--shm-file", help="shared memory file in this folder (Windows)")
@click.pass_context
def ofx_worker(
    ctx: click.Context,
    fd: int | None,
    shm_fd: int | None,
    connect: int | None,
    shm_file: str | None,
) -> None:
    """The OpenFX effect's worker, as the effect starts it when its config names a vosfx
    command (`install ofx --command`) rather than an interpreter (plugins/ofx/README.md)."""
    import logging

    from vosfx.ofx.worker import main

    vosfx_log = logging.getLogger("vosfx")  # the worker logs to its own handler: once a line
    for handler in [h for h in vosfx_log.handlers if h.get_name() == "vosfx"]:
        vosfx_log.removeHandler(handler)
    given = {"--fd": fd, "--shm-fd": shm_fd, "--connect": connect, "--shm-file": shm_file}
    ctx.exit(
        main([str(a) for name, value in given.items() if value is not None for a in (name, value)])
    )


@plugins.command("path")
@click.argument("host", type=click.Choice(HOSTS), required=False)
@click.option("--blender-version", default="5.0", show_default=True)
def path_cmd(host: str | None, blender_version: str) -> None:
    """Print where `install` puts the HOST plugin (every host's when none is given)."""
    for name in (host,) if host else HOSTS:
        dest = default_dest(name, blender_version=blender_version)
        click.echo(str(dest) if host else f"{name}: {dest}")

"""Presets: TOML files that set config options, with ``extends`` to build on another preset.

Built-in presets ship inside the wheel (``vosfx._builtin_presets``); user presets live in
``<user config dir>/presets/*.toml`` and may shadow a built-in of the same name. The user
config file ``<user config dir>/config.toml`` holds personal defaults. The user config dir is
``platformdirs.user_config_dir("vosfx")``, or ``$VOSFX_CONFIG_DIR`` when set.

Precedence, lowest first: defaults < the default preset (when none is named) < user config
< the presets named for the run (in the order given) < CLI flags (:func:`resolve_config`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from vosfx.config import JobConfig, build_config, merge_dicts
from vosfx.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PRESET = "prores4444"
_META_KEYS = ("description", "extends")


@dataclass(frozen=True)
class PresetInfo:
    name: str
    description: str
    source: str  # "built-in" or the file's path
    shadows_builtin: bool = False  # a user preset named as a built-in one, used instead of it


def user_config_dir() -> Path:
    env = os.environ.get("VOSFX_CONFIG_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("vosfx"))


def builtin_dir() -> Path:
    """The folder of the built-in presets inside the installed package (read-only: copy one
    into :func:`user_config_dir`'s ``presets`` to change it)."""
    return Path(str(resources.files("vosfx._builtin_presets")))


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where}: not valid TOML ({err})") from None


def _sources() -> dict[str, tuple[str, str]]:
    """name -> (TOML text, source) for every preset; user presets shadow built-ins."""
    found = {
        name: (entry.read_text(encoding="utf-8"), "built-in")
        for name, entry in _builtin_entries().items()
    }
    user_dir = user_config_dir() / "presets"
    if user_dir.is_dir():
        for path in sorted(user_dir.glob("*.toml")):
            found[path.stem] = (path.read_text(encoding="utf-8"), str(path))
    return found


def _builtin_entries() -> dict[str, Any]:
    """name -> the built-in preset's file (an importlib Traversable)."""
    entries = resources.files("vosfx._builtin_presets").iterdir()
    return {e.name[:-5]: e for e in entries if e.name.endswith(".toml")}


def list_presets() -> list[PresetInfo]:
    builtin = _builtin_entries()
    out = []
    for name, (text, source) in sorted(_sources().items()):
        data = _parse_toml(text, f"preset {name!r} ({source})")
        shadows = source != "built-in" and name in builtin
        out.append(PresetInfo(name, str(data.get("description", "")), source, shadows))
    return out


def load_preset(name: str, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The preset's option sections as a nested dict, its ``extends`` chain resolved (the
    preset's own values win over the one it extends)."""
    sources = _sources()
    if name not in sources:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(sources))}")
    if name in _chain:
        raise ConfigError(f"preset {name!r} extends itself: {' -> '.join(_chain + (name,))}")
    text, source = sources[name]
    data = _parse_toml(text, f"preset {name!r} ({source})")
    parents = data.get("extends", [])
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"preset {name!r}: extends must be a name or a list of names")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = merge_dicts(merged, load_preset(parent, _chain + (name,)))
    own = {k: v for k, v in data.items() if k not in _META_KEYS}
    merged = merge_dicts(merged, own)
    try:
        build_config(merged)  # validate here so the error names the preset
    except ConfigError as err:
        raise ConfigError(f"preset {name!r} ({source}): {err}") from None
    return merged


def load_user_config() -> dict[str, Any]:
    path = user_config_dir() / "config.toml"
    if not path.is_file():
        return {}
    data = _parse_toml(path.read_text(encoding="utf-8"), str(path))
    try:
        build_config(data)
    except ConfigError as err:
        raise ConfigError(f"user config {path}: {err}") from None
    return data


def resolve_config(
    presets: list[str] | tuple[str, ...] = (),
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    use_user_config: bool = True,
) -> JobConfig:
    """defaults < the default preset (when none is named) < user config < the named presets
    (in order) < overrides (flags, a job's own ``config``).

    The user config holds standing choices; a preset named for this run (``--preset``, a job's
    or manifest row's ``presets``) is the more specific ask and wins where both set a key:
    ``--preset fast`` runs tiny even where the config says large, ``--preset png16`` writes
    PNG where the config says EXR. The config's other keys still apply."""
    merged: dict[str, Any] = {} if presets else load_preset(DEFAULT_PRESET)
    if use_user_config:
        merged = merge_dicts(merged, load_user_config())
    for name in presets:
        merged = merge_dicts(merged, load_preset(name))
    merged = merge_dicts(merged, overrides or {})
    return build_config(merged)

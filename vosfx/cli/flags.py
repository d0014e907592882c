"""Config options set by command-line flags, validated one by one so that an error names the
flag as the user typed it."""

from __future__ import annotations

import click


def check_flag_values(overrides: dict, flags: dict[str, dict[str, str]]) -> None:
    """Validate each CLI-set option on its own, so that a bad value is a usage error (exit 2)
    that names the flag the user typed (``--reduce-chatter``), not the config key it sets
    (``[refine] temporal_strength``). ``flags``: option name -> config key, per section."""
    from vosfx.config import build_config
    from vosfx.errors import ConfigError

    for section, values in overrides.items():
        names = {key: opt for opt, key in flags.get(section, {}).items()}
        for key, value in values.items():
            try:
                build_config({section: {key: value}})
            except ConfigError as err:
                flag = "--" + names.get(key, key).replace("_", "-")
                reason = str(err).removeprefix(f"[{section}] {key}: ")
                raise click.BadParameter(reason, param_hint=flag) from None

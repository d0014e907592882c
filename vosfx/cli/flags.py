"""Config options set by command-line flags, validated one by one so that an error names the
flag as the user typed it."""

from __future__ import annotations

import re

import click


def check_flag_values(overrides: dict, flags: dict[str, dict[str, str]]) -> None:
    """Validate each CLI-set option on its own, so that a bad value is a usage error (exit 2)
    that names the flag the user typed (``--reduce-chatter``), not the config key it sets
    (``[refine] temporal_strength``), then each section's flags together (options that must
    agree: ``--clip-black`` below ``--clip-white``). ``flags``: option name -> config key,
    per section."""
    from vosfx.config import build_config
    from vosfx.errors import ConfigError

    for section, values in overrides.items():
        names = {key: opt for opt, key in flags.get(section, {}).items()}
        for key, value in values.items():
            try:
                build_config({section: {key: value}})
            except ConfigError as err:
                raise _bad_flag(err, section, {key: value}, names, key) from None
        try:
            build_config({section: values})
        except ConfigError as err:
            raise _bad_flag(err, section, values, names, next(iter(values))) from None


def _bad_flag(err, section: str, values: dict, names: dict, typed: str) -> click.BadParameter:
    """The error as a usage error on the flag it is about (else on ``typed``'s), every other
    key the user set by a flag named by that flag."""

    def flag_of(key: str) -> str:
        return "--" + names.get(key, key).replace("_", "-")

    head, _, reason = str(err).partition(": ")
    about = head.removeprefix(f"[{section}] ")
    if about not in values:  # about a key no flag set: keep its name, say which flag clashed
        reason, about = str(err), typed
    for key in values:
        reason = re.sub(rf"\b{re.escape(key)}\b", flag_of(key), reason)
    return click.BadParameter(reason, param_hint=flag_of(about))

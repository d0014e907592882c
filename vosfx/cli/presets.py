"""`vosfx presets list|show|path`."""

from __future__ import annotations

import json

import click


@click.group()
def presets() -> None:
    """List and inspect presets (built-in and user)."""


@presets.command("list")
def list_cmd() -> None:
    """Every preset with its description and where it comes from."""
    from vosfx.presets import builtin_dir, list_presets, user_config_dir

    rows = list_presets()
    width = max(len(r.name) for r in rows)
    for r in rows:
        src = "" if r.source == "built-in" else f"  [{r.source}]"
        if r.shadows_builtin:
            src += " (used instead of the built-in)"
        click.echo(f"{r.name:<{width}}  {r.description}{src}")
    click.echo(
        f"\nbuilt-in presets: {builtin_dir()}\n"
        f"your presets:     {user_config_dir() / 'presets'} (one NAME.toml each; "
        "copy a built-in there to change it)"
    )


@presets.command("path")
def path_cmd() -> None:
    """Where your config file and your own presets go (whether they exist yet or not), and where
    the built-in presets are."""
    from vosfx.presets import builtin_dir, user_config_dir

    folder = user_config_dir()
    for label, path in (("config", folder / "config.toml"), ("presets", folder / "presets")):
        click.echo(f"{label}: {path}{'' if path.exists() else '  (not created yet)'}")
    click.echo(f"built-in: {builtin_dir()}")


@presets.command("show")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--resolved",
    is_flag=True,
    help="The full effective config (defaults, presets, user config) instead of "
    "the preset's own keys.",
)
def show_cmd(names: tuple[str, ...], resolved: bool) -> None:
    """Show a preset (TOML keys as JSON), or the resolved config of NAMES combined."""
    from vosfx.presets import load_preset, resolve_config

    if resolved:
        data = resolve_config(names).to_dict()
    else:
        data = {}
        for name in names:
            data[name] = load_preset(name)
        if len(names) == 1:
            data = data[names[0]]
    click.echo(json.dumps(data, indent=2, default=list))

"""The `vosfx` command. Subcommands live one per module and load only when invoked, so
`vosfx --version` and `vosfx --help` import nothing heavy."""

from __future__ import annotations

import importlib
import sys

import click

from vosfx import __version__

# command name -> "module:attribute"
COMMANDS = {
    "matte": "vosfx.cli.matte:matte",
    "presets": "vosfx.cli.presets:presets",
    "models": "vosfx.cli.models:models",
    "eval": "vosfx.cli.eval:eval_cmd",
    "bench": "vosfx.cli.eval:bench",
    "batch": "vosfx.cli.batch:batch",
    "plugins": "vosfx.cli.plugins:plugins",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="vosfx", message="%(prog)s %(version)s")
def cli() -> None:
    """Production-quality video mattes from one mask or click, with SAM 2."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns VosfxError into its exit code (README lists them)."""
    from vosfx.errors import VosfxError

    try:
        cli.main(args=argv, prog_name="vosfx", standalone_mode=False)
    except VosfxError as err:
        click.echo(f"vosfx: error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("vosfx: cancelled", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("vosfx: cancelled", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)

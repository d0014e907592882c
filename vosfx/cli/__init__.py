"""The `vosfx` command. Subcommands live one per module and load only when invoked, so
`vosfx --version` and `vosfx --help` import nothing heavy."""

from __future__ import annotations

import importlib

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
    "studio": "vosfx.cli.studio:studio",
    "doctor": "vosfx.cli.doctor:doctor",
    "ofx-worker": "vosfx.cli.plugins:ofx_worker",  # hidden: the OpenFX effect starts it
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

    def invoke(self, ctx: click.Context):
        """VosfxError -> one line on stderr and its exit code (README lists them); Ctrl-C ->
        130. Done here, not in main(), so click's test runner sees the same codes. With
        ``--json-progress`` every failure is also an ``error`` event on stdout
        (plugins/README.md), those click finds while it parses the command line (an unknown
        option, a value of the wrong type) and unexpected ones (kind ``internal``, exit 1,
        the traceback on stderr) included."""
        from vosfx.errors import BatchError, Cancelled, VosfxError

        # the subcommand's own arguments before click parses them (up to a "--", after which
        # every word is a positional argument)
        raw = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        events = "--json-progress" in raw[: raw.index("--") if "--" in raw else len(raw)]
        try:
            return super().invoke(ctx)
        except VosfxError as err:
            # a batch whose jobs ran said its failures in its batch_result event; any other
            # batch error (a bad manifest, the state locked or unwritable) is an error event
            if events and not (isinstance(err, BatchError) and err.said_as_result):
                _error_event(err.kind, str(err), err.exit_code)
            click.echo(f"vosfx: error: {err}", err=True)
            ctx.exit(err.exit_code)
        except click.UsageError as err:  # click prints it and exits 2
            if events:
                _error_event("usage", err.format_message(), err.exit_code)
            raise
        except KeyboardInterrupt:
            if events:
                _error_event(Cancelled.kind, "cancelled", Cancelled.exit_code)
            click.echo("vosfx: cancelled", err=True)
            ctx.exit(Cancelled.exit_code)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise  # click's own ends (--help, a prompt aborted, its messages): it prints them
        except Exception as err:  # a bug: the traceback as ever, and the host told why (exit 1)
            if events:
                _error_event("internal", f"{type(err).__name__}: {err}", 1)
            raise


def _error_event(kind: str, message: str, exit_code: int) -> None:
    from vosfx.cli.progress import emit_json

    emit_json({"event": "error", "kind": kind, "message": message, "exit_code": exit_code})


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="vosfx", message="%(prog)s %(version)s")
def cli() -> None:
    """Production-quality video mattes from one mask or click, with SAM 2."""
    _log_to_stderr()


def _log_to_stderr() -> None:
    """vosfx's log messages (first-use export, provider fallbacks) as ``vosfx: ...`` lines on
    stderr; stdout stays for results and JSON progress."""
    import logging

    logger = logging.getLogger("vosfx")
    if not any(h.get_name() == "vosfx" for h in logger.handlers):
        handler = logging.StreamHandler()  # stderr
        handler.setFormatter(logging.Formatter("vosfx: %(message)s"))
        handler.set_name("vosfx")  # marks ours: added once however often the CLI runs
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="vosfx")

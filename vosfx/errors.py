"""Errors vosfx raises, each with the exit code the CLI uses for it.

Library code raises these with a message that says what was expected and what was found; only
the CLI prints them and chooses the exit code. The codes are documented in README.md.
"""

from __future__ import annotations


class VosfxError(Exception):
    """Base class. ``exit_code`` is what ``vosfx`` exits with; ``kind`` names the class in
    JSON progress events (plugins switch on it)."""

    exit_code = 1
    kind = "error"


class ConfigError(VosfxError):
    """A preset, config file or option is invalid (unknown key, out-of-range value)."""

    exit_code = 3
    kind = "config"


class StartPastEndError(ConfigError):
    """The range's first frame (``--start``, a job's ``start``) is past the clip's last: known
    once the clip is probed. ``vosfx matte`` says it as a usage error (exit 2) when
    ``--start`` was typed."""


class InputError(VosfxError):
    """The input video or image sequence is missing, unreadable, corrupt or unsupported."""

    exit_code = 4
    kind = "input"


class PromptError(VosfxError):
    """The prompt (mask, points, box) is invalid: wrong size, empty, past the end."""

    exit_code = 5
    kind = "prompt"


class OutputError(VosfxError):
    """An output cannot be written: exists, missing or read-only folder, disk full."""

    exit_code = 6
    kind = "output"


class ModelError(VosfxError):
    """A model is unknown, missing from the cache, fails its hash or cannot be loaded."""

    exit_code = 7
    kind = "model"


class DownloadError(ModelError):
    """A checkpoint download failed (network, offline mode, server error)."""

    exit_code = 8
    kind = "download"


class BackendError(VosfxError):
    """A runtime is unavailable: torch not installed, execution provider missing."""

    exit_code = 9
    kind = "backend"


class BatchError(VosfxError):
    """A batch finished with failed jobs, or its manifest is invalid."""

    exit_code = 10
    kind = "batch"
    # the failures of a batch whose jobs ran, said in its result (``--json-progress``'s
    # batch_result event): no error event then
    said_as_result = False


class Cancelled(VosfxError):
    """The render was cancelled (Ctrl-C, SIGTERM from a host plugin)."""

    exit_code = 130
    kind = "cancelled"


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (
        VosfxError,
        ConfigError,
        StartPastEndError,
        InputError,
        PromptError,
        OutputError,
        ModelError,
        DownloadError,
        BackendError,
        BatchError,
        Cancelled,
    )
}

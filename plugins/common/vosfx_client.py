"""Host side of the vosfx plugin protocol (standard library only; Python 3.6+).

Editor plugins never import vosfx, torch or numpy: they write a job description (JSON), run the
user's ``vosfx`` executable on it and read JSON lines from its stdout::

    vosfx matte --job job.json --json-progress

Events, one JSON object per line (see plugins/README.md for every field):
``start`` -> ``frame`` (frames_done, total_frames, frame, fps, eta_s, object_scores) ... ->
``done`` -> ``result`` (outputs, sidecars, frames, presence, shots); on failure an ``error``
event (kind, message, exit_code) and that exit code. Cancelling terminates the process group
vosfx runs in (SIGTERM on Linux/macOS, so a wrapper such as ``conda run`` or a shell script
passes it on): vosfx stops cleanly, exits 130 and leaves no half-written outputs.

Hosts import this module only; it gathers the client's parts, each a module beside it:

- ``vosfx_client_launch``: the recorded vosfx command, starting it in its own process group,
  stopping that group
- ``vosfx_client_events``: exit codes and messages, the render's result, progress and presence
- ``vosfx_client_jobs``: typed points, the job description, the job from a studio pick
- ``vosfx_client_render``: one render in the background (``VosfxProcess``, ``run``)
- ``vosfx_client_studio``: "Pick in vosfx studio" (``StudioPick``, ``pick_in_studio``)

``vosfx plugins install`` copies every ``vosfx_client*.py`` next to each host plugin: flat in
Resolve's support folder (on ``sys.path``), inside Blender's add-on package.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING or __package__:  # in a package: Blender's add-on; mypy's plugins.common
    from .vosfx_client_events import (
        EXIT_CODES,
        RenderResult,
        exit_message,
        presence_ranges,
        progress_of,
    )
    from .vosfx_client_jobs import (
        PROTOCOL_VERSION,
        build_job,
        job_from_pick,
        parse_points,
        write_job,
    )
    from .vosfx_client_launch import CONFIG_NAME, VosfxNotFound, load_command
    from .vosfx_client_render import VosfxProcess, run
    from .vosfx_client_studio import StudioPick, pick_in_studio
else:  # flat on sys.path: Resolve's support folder, the tests
    from vosfx_client_events import (
        EXIT_CODES,
        RenderResult,
        exit_message,
        presence_ranges,
        progress_of,
    )
    from vosfx_client_jobs import (
        PROTOCOL_VERSION,
        build_job,
        job_from_pick,
        parse_points,
        write_job,
    )
    from vosfx_client_launch import CONFIG_NAME, VosfxNotFound, load_command
    from vosfx_client_render import VosfxProcess, run
    from vosfx_client_studio import StudioPick, pick_in_studio

__all__ = [
    "CONFIG_NAME",
    "EXIT_CODES",
    "PROTOCOL_VERSION",
    "RenderResult",
    "StudioPick",
    "VosfxNotFound",
    "VosfxProcess",
    "build_job",
    "exit_message",
    "job_from_pick",
    "load_command",
    "parse_points",
    "pick_in_studio",
    "presence_ranges",
    "progress_of",
    "run",
    "write_job",
]

"""The one loop and what belongs to it.

:func:`run` (``loop.py``) mattes one clip: source -> shots -> engine session -> refine ->
writers, with progress events and a sidecar. Every caller runs it: the CLI, batch workers, host
plugins (through ``vosfx matte --job``), ``vosfx bench`` (``bench.py``) and the Python API.
``checks.py`` what it checks before reading anything, ``output.py`` its writing half (the outputs, their writers, the sidecar and the report),
``presence.py`` the presence intervals of its report; the clip session it drives (prompts,
passes, shot cuts) is :mod:`vosfx.session`.
"""

from vosfx.pipeline.checks import (
    check_output_name,
    check_outputs,
    check_sidecar_path,
    job_file_clash,
)
from vosfx.pipeline.loop import (
    resolve_prompts,
    results_in_order,
    run,
    track_arrays,
)
from vosfx.pipeline.output import JobReport, ProgressCallback, plan_outputs

__all__ = [
    "JobReport",
    "ProgressCallback",
    "check_output_name",
    "check_outputs",
    "check_sidecar_path",
    "job_file_clash",
    "plan_outputs",
    "resolve_prompts",
    "results_in_order",
    "run",
    "track_arrays",
]

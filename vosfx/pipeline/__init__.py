"""The one loop and what belongs to it.

:func:`run` (``loop.py``) mattes one clip: source -> shots -> engine session -> refine ->
writers, with progress events and a sidecar. Every caller runs it: the CLI, batch workers, host
plugins (through ``vosfx matte --job``), ``vosfx bench`` (``bench.py``) and the Python API.
``backward.py`` is its pass over the frames before the first prompt, ``shots.py`` its shot-cut
detector, ``presence.py`` the presence intervals of its report.
"""

from vosfx.pipeline.loop import (
    JobReport,
    ProgressCallback,
    plan_outputs,
    resolve_prompts,
    results_in_order,
    run,
    track_arrays,
)

__all__ = [
    "JobReport",
    "ProgressCallback",
    "plan_outputs",
    "resolve_prompts",
    "results_in_order",
    "run",
    "track_arrays",
]

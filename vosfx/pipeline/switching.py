"""The interpreter's thread switch interval while a render runs.

A render's Python threads work at once: tracking (the model, on the caller's thread),
decoding, refining, and one writer per output. Where the tracking thread runs Python most of
the time, as it does when a GPU runs the model (the torch backend launching hundreds of
kernels a frame: the GPU waits for the host), each time another thread comes back from a call
that let go of the GIL (a numpy or OpenCV operation, an encoder call) it waits for the
tracking thread's time slice to run out: CPython's switch interval, 5 ms by default. A
frame's refinement and writing make dozens of such calls, so those threads spend their frame
mostly waiting for the GIL, and the render falls behind the model (the convoy effect). With a
shorter interval each waits at most that long; the tracking thread gives up the GIL as often,
for the other threads' short Python between their calls, which they would run anyway.

Measured on 2 cores, the tracking thread on a core of its own spending 40 ms a frame in
Python, ProRes 4444 at 1080p (``benchmarks/host_bound.py``, docs/benchmarks/render.md): the
render makes 9.2 frames/s at 5 ms, 11.6 at 1 ms, 12.2 at 0.5, 12.7 at 0.25 and 13.4 at 0.1,
where beside a tracking thread that holds no GIL it makes 14.1-14.3; the tracking thread's
own frame is no slower beyond the noise (44-52 ms in the render at every interval, 33
alone). Renders whose tracking thread waits in ONNX Runtime's kernels, which let go of the
GIL (the CPU path), ran as fast either way.

The interval is the process's, so :func:`short_switch_interval` lowers it for as long as any
render runs in the process (renders in several threads share one count) and puts back what it
found when the last one ends; an interval already shorter is left as it is.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SWITCH_INTERVAL_S = 0.00025  # CPython's default: 0.005

_lock = threading.Lock()
_renders = 0
_found = 0.0  # the interval before the first render of the current ones


@contextmanager
def short_switch_interval(interval_s: float = SWITCH_INTERVAL_S) -> Iterator[None]:
    """The switch interval at most ``interval_s`` inside the block (and while any other
    block of this function is open), what it was before once the last one closes."""
    global _renders, _found
    with _lock:
        if _renders == 0:
            _found = sys.getswitchinterval()
        _renders += 1
        if sys.getswitchinterval() > interval_s:
            sys.setswitchinterval(interval_s)
    try:
        yield
    finally:
        with _lock:
            _renders -= 1
            if _renders == 0:
                sys.setswitchinterval(_found)

"""The one check of :class:`vosfx.engine.backend.Interrupt` every backend that honours it
passes (ONNX Runtime's terminate flag, OpenVINO's cancel)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vosfx.engine.backend import Interrupt
from vosfx.errors import Cancelled


def check_interrupts(backend) -> None:
    """``encode_image`` raises Cancelled when its interrupt is set before or during the call
    (sooner than a whole call); with an interrupt never set it gives the plain call's
    features; and an interrupt set after its call ended cancels nothing later (the same
    session or infer request serves the next caller)."""
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    early = Interrupt()
    early.set()
    with pytest.raises(Cancelled):
        backend.encode_image(rgb, interrupt=early)
    t0 = time.perf_counter()
    want = backend.encode_image(rgb).vision_feat
    whole = time.perf_counter() - t0
    during = Interrupt()
    timer = threading.Timer(whole / 4, during.set)
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        backend.encode_image(rgb, interrupt=during)
    assert time.perf_counter() - t0 < whole
    timer.join()
    stale = Interrupt()
    ran = backend.encode_image(rgb, interrupt=stale)  # never set while it ran
    np.testing.assert_array_equal(ran.vision_feat, want)
    late = threading.Timer(whole / 4, stale.set)  # set during the next, unrelated call
    late.start()
    np.testing.assert_array_equal(backend.encode_image(rgb).vision_feat, want)
    late.join()

"""An engine factory whose import fails in the first process that imports it: a Ray node that
cannot start its worker beside one that can (tests/test_batch_ray.py). The test removes
:data:`MARK` first."""

from __future__ import annotations

import os
import tempfile

MARK = os.path.join(tempfile.gettempdir(), f"vosfx-flaky-factory-{os.getuid()}")

try:
    _fd = os.open(MARK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except FileExistsError:
    pass
else:
    os.close(_fd)
    raise ImportError("No module named 'a_package_this_node_lacks' (a stand-in)")

from batch_fakes import fake_engine as factory

__all__ = ["factory"]

"""vosfx Matte: SAM 2 mattes for the clip under the playhead (DaVinci Resolve script).

Installed by `vosfx plugins install resolve` into Fusion/Scripts/Edit and /Color, so it shows
in Workspace > Scripts. It imports nothing heavy: the work is done by the `vosfx` executable.
"""

import os
import sys

SUPPORT_DIR = None  # set by `vosfx plugins install`; None: running from a source checkout

if SUPPORT_DIR is None:
    _here = os.path.dirname(os.path.abspath(globals().get("__file__", "plugins/resolve/x")))
    SUPPORT_DIR = _here
    sys.path.insert(0, os.path.join(_here, "..", "common"))
sys.path.insert(0, SUPPORT_DIR)

from vosfx_resolve.app import main

# Resolve's script runner defines `resolve`, `fusion` and `bmd` as globals.
main(
    resolve=globals().get("resolve"),
    fusion=globals().get("fusion"),
    bmd=globals().get("bmd"),
    support_dir=SUPPORT_DIR,
)

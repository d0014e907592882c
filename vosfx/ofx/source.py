"""Noticing a Source changed upstream (graded, replaced, re-timed) under the OFX worker's mattes.

The effect sends a fingerprint with every frame it hands over and with every render request
(plugins/ofx/vosfx_ofx_proto.h): the mean RGB of 16 x 16 cells of the frame, each over 16 x 16
pixels sampled at fixed fractions of the frame, so a proxy image (render scale < 1) and the
full-size one give nearly the same cells. :class:`SourceWatch` keeps the fingerprints of the
frames the worker tracked, per frame and image size, and says when the host's frame is no
longer the one tracked:

a. the same size (like with like): the same pixels give the same cells; a cell that moved by
   more than ``SAME_SIZE_MAX`` (5/255: above float and codec noise, below any grade or slip
   that would move a matte) is a change;
b. another size (a proxy render served a full-size matte, or the reverse): resampling moves
   cells near edges by up to about 2 pixels' worth of the cell, so only what it cannot explain
   is a change: a cell moved by more than ``max(CROSS_SIZE_MAX, 2 / cell_px)``, or all cells
   by ``CROSS_SIZE_MEAN`` on average (a grade). Small slips are then noticed at the next
   render of that size. Below ``MIN_CROSS_SIDE_PX`` on the smaller image's short side (two
   pixels a cell: a proxy of a small clip, 97 x 63 at render scale 0.1) a cell is less than
   its own resampling error, so nothing can be told across sizes and nothing is compared;
   like with like (a.) still applies at every size.
"""

from __future__ import annotations

import numpy as np

from vosfx.errors import VosfxError
from vosfx.ofx.protocol import FP_CELLS

SAME_SIZE_MAX = 5 / 255
CROSS_SIZE_MAX = 0.1
CROSS_SIZE_MEAN = 0.03
MIN_CROSS_SIDE_PX = 2 * FP_CELLS


class SourceChanged(VosfxError):
    """A frame fetched for tracking is not the frame tracked before under that index."""

    def __init__(self, frame: int) -> None:
        super().__init__(
            f"Source frame {frame} changed while it was being tracked (an upstream effect that "
            "gives different pixels each time? render its result to a file and use that)"
        )
        self.frame = frame


def differs(a: np.ndarray, size_a: tuple[int, int], b: np.ndarray, size_b: tuple[int, int]):
    """Whether fingerprints ``a`` and ``b`` ((16, 16, 3) mean RGB in [0, 1]) of images of
    ``size_a`` and ``size_b`` (width, height in pixels) show different frames."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32))
    if size_a == size_b:
        return bool(d.max() > SAME_SIZE_MAX)
    short_side = min(*size_a, *size_b)
    if short_side < MIN_CROSS_SIDE_PX:
        return False  # cells smaller than resampling's error: nothing to tell (b.)
    cell_px = short_side / FP_CELLS  # a cell's short side, smaller image
    return bool(d.max() > max(CROSS_SIZE_MAX, 2.0 / cell_px) or d.mean() > CROSS_SIZE_MEAN)


class SourceWatch:
    """The fingerprints of the Source frames the worker tracked: frame index -> image size ->
    (16, 16, 3) float16 (1.5 KB a frame and size)."""

    def __init__(self) -> None:
        self._seen: dict[int, dict[tuple[int, int], np.ndarray]] = {}

    def differs(self, index: int, size: tuple[int, int], fp: np.ndarray) -> bool:
        """Whether ``fp`` of an image of ``size`` shows another frame than the one tracked as
        frame ``index`` (compared with the same size when seen, else with every size seen)."""
        seen = self._seen.get(index)
        if not seen:
            return False
        if size in seen:
            return differs(seen[size], size, fp, size)
        return any(differs(ref, other, fp, size) for other, ref in seen.items())

    def record(self, index: int, size: tuple[int, int], fp: np.ndarray) -> None:
        self._seen.setdefault(index, {})[size] = fp.astype(np.float16)

    def clear(self) -> None:
        self._seen.clear()

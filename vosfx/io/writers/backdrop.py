"""Backgrounds for the ``composite`` output: a colour, an image or a video, one frame per
source frame (a video background loops when shorter than the clip and is scaled to cover the
frame, centre-cropped, like an editor's "fill")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vosfx.config import parse_colour
from vosfx.errors import ConfigError
from vosfx.io.writers.base import image_rgb01

if TYPE_CHECKING:
    from vosfx.io.source import FrameSource
    from vosfx.types import Frame


def check_background(spec: str) -> Path:
    """The background file ``spec`` names (not a colour), or ConfigError where there is none:
    checked before the model is loaded, not when the first frame is written."""
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"[output] background: expected #rrggbb, an image or a video file, "
            f"found {'a folder' if path.is_dir() else 'nothing'} at {spec!r}"
        )
    return path


class Backdrop:
    """``frame(hw) -> (H, W, 3) float32 in [0, 1]`` or an (r, g, b) colour, once per source
    frame, in order. ``spec``: "" (black), ``#rrggbb``, an image file or a video file."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.colour = parse_colour(spec) if spec else (0.0, 0.0, 0.0)
        self._image: np.ndarray | None = None
        self._source: FrameSource | None = None
        self._iter: Iterator[Frame] | None = None
        if self.colour is not None:
            return
        path = check_background(spec)
        from vosfx.io.sequence import IMAGE_EXTS, read_image

        if path.suffix.lower() in (*IMAGE_EXTS, ".bmp"):  # a still: read once
            self._image = image_rgb01(read_image(path))
        else:
            self._path = str(path)
            self._reopen()

    def _reopen(self) -> Iterator[Frame]:
        from vosfx.io.source import open_source

        if self._source is not None:
            self._source.close()
        source = self._source = open_source(self._path, prefetch=2)
        self._iter = iter(source)
        return self._iter

    def frame(self, hw: tuple[int, int]) -> tuple[float, float, float] | np.ndarray:
        """The background for the next source frame: a colour tuple or an (H, W, 3) image."""
        from vosfx.matte.compose import fit_background

        if self.colour is not None:
            return self.colour
        if self._image is not None:
            if self._image.shape[:2] != hw:
                self._image = fit_background(self._image, hw)
            return self._image
        assert self._iter is not None  # neither a colour nor an image: a video, opened
        frame = next(self._iter, None)
        if frame is None:  # loop a background shorter than the clip
            frame = next(self._reopen())
        return fit_background(image_rgb01(frame.image), hw)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

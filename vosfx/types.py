"""The values that flow through the pipeline. Plain frozen dataclasses over numpy arrays."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

# The Y'CbCr matrices vosfx converts with, by FFmpeg's AVColorSpace number: luma weights
# (kr, kb). 1 BT.709; 5 and 6 BT.601 (PAL and NTSC tags of the same matrix); 9 BT.2020
# non-constant luminance (HDR10, HLG).
YCBCR_MATRICES = {1: (0.2126, 0.0722), 5: (0.299, 0.114), 6: (0.299, 0.114), 9: (0.2627, 0.0593)}


@dataclass(frozen=True)
class Colour:
    """How a video's pictures are to be read, by FFmpeg's numbers (AVColorSpace,
    AVColorPrimaries, AVColorTransferCharacteristic; 2 is unspecified): ``matrix`` the Y'CbCr
    matrix its RGB frames were decoded with, ``primaries`` and ``transfer`` as the source says
    them. Y'CbCr outputs are written and tagged with the same, so an editor reads them as it
    reads the source (BT.601, BT.709, BT.2020 with HLG or PQ). Default BT.709 throughout
    (image sequences, RGB video)."""

    matrix: int = 1
    primaries: int = 1
    transfer: int = 1


@dataclass(frozen=True)
class FrameNumbers:
    """A numbered image sequence's own frame numbers (``shot.1001.exr``, ``shot.1002.exr``,
    ...). Frame *positions* (``Frame.index``, ``--start``/``--end``, prompt frames) count the
    files from 0; ``numbers[i]`` is the number in the name of the file at position ``i``,
    increasing, with gaps where files are missing. ``prefix``/``suffix``: the names around
    the number; ``padding``: the digits the source zero-pads its numbers to (``0001`` -> 4;
    0 when its names are not zero-padded, or not all alike)."""

    numbers: tuple[int, ...]
    prefix: str
    suffix: str
    padding: int

    def name(self, index: int) -> str:
        """The source file name of position ``index`` (``shot.1013.exr``)."""
        return f"{self.prefix}{self.numbers[index]:0{self.padding}d}{self.suffix}"

    @property
    def pattern(self) -> str:
        """The source's names as a printf pattern (``shot.%04d.exr``; ``%d`` unpadded)."""
        digits = f"%0{self.padding}d" if self.padding else "%d"
        return f"{self.prefix}{digits}{self.suffix}"

    def label(self, index: int) -> str:
        """``frame 12 (shot.1013.exr)``: a position as messages show it."""
        return f"frame {index} ({self.name(index)})"

    def missing(self, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        """The numbers missing between positions ``start`` and ``end`` (exclusive), as
        inclusive ranges ``[(1050, 1052), (1077, 1077)]``: the gaps a movie output drifts at."""
        part = self.numbers[start:end]
        return [(a + 1, b - 1) for a, b in itertools.pairwise(part) if b - a > 1]


def format_ranges(ranges: list[tuple[int, int]], limit: int = 8) -> str:
    """``1050-1052, 1077`` (at most ``limit`` ranges, then ``and N more``)."""
    shown = [str(a) if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    more = f" and {len(ranges) - limit} more" if len(ranges) > limit else ""
    return ", ".join(shown) + more


@dataclass(frozen=True)
class VideoInfo:
    """What a source knows before decoding. ``num_frames`` may be an estimate for containers
    without a frame count (``frame_count_exact`` says which)."""

    path: str
    width: int  # display width, after rotation
    height: int  # display height, after rotation
    num_frames: int
    fps: Fraction | None  # average rate; None for an image sequence without a rate
    time_base: Fraction
    rotation: int = 0  # degrees clockwise applied on decode (0, 90, 180, 270)
    pix_fmt: str = "rgb24"
    bit_depth: int = 8
    codec: str = ""
    is_vfr: bool = False
    has_audio: bool = False
    frame_count_exact: bool = True
    start_pts: int = 0
    timecode: str = ""  # SMPTE start timecode of the first frame ("" when the source has none)
    colour: Colour = Colour()  # the source's colour description (BT.709 unless it says other)
    # the width of a pixel over its height as displayed, after rotation (anamorphic: HDV's
    # 1440x1080 is 4/3, shown 1920 wide); video outputs are tagged with it
    pixel_aspect: Fraction = Fraction(1)
    # a numbered image sequence's own frame numbers (None: a video, or files without numbers)
    frame_numbers: FrameNumbers | None = None
    # a video without a frame count whose declared duration implies more frames than its
    # packets hold (a truncated download or copy): that many; None otherwise
    declared_frames: int | None = None


@dataclass(frozen=True)
class SourceYCbCr:
    """A decoded video frame's own Y'CbCr planes, kept beside its RGB image when they are video
    range in one of :data:`YCBCR_MATRICES` (``Frame.derived["ycbcr"]``), so a Y'CbCr writer
    can take the source's codes instead of converting RGB back (ProRes 4444: exact luma, no
    RGB rounding or clip).

    ``y``: (H, W) codes at ``bits`` (uint8 for 8, uint16 for 10). ``cb``, ``cr``: the same
    type, (H / sy, W / sx) for the source's chroma subsampling (4:2:0, 4:2:2 or 4:4:4).
    """

    y: np.ndarray
    cb: np.ndarray
    cr: np.ndarray
    bits: int
    matrix: int = 1  # the AVColorSpace the planes are coded with (a key of YCBCR_MATRICES)

    @property
    def subsampling(self) -> tuple[int, int]:
        """(sx, sy): 2, 2 for 4:2:0; 2, 1 for 4:2:2; 1, 1 for 4:4:4."""
        h, w = self.y.shape
        return -(-w // self.cb.shape[1]), -(-h // self.cb.shape[0])


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    ``image``: (H, W, 3) uint8 RGB, or uint16 RGB scaled to [0, 65535] for >8-bit sources.
    ``pts`` is in ``time_base`` units (None for image sequences without timing).
    ``model_input``: the image as the engine's model takes it ((S, S, 3) uint8 for SAM 2),
    made ahead on the decode thread by the source's ``prepare`` hook; None when not prepared
    (the engine then makes it itself). ``derived``: other things made from ``image`` alone
    on the decode thread, by the name of what uses them (``"guide"``: the refiner's
    :class:`~vosfx.matte.guided.GuidePrep`; ``"ycbcr"``: the source's
    :class:`SourceYCbCr` planes); read-only, empty when not prepared.
    """

    index: int
    image: np.ndarray
    pts: int | None
    time_base: Fraction
    duration: int | None = None
    model_input: np.ndarray | None = field(default=None, repr=False, compare=False)
    derived: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def time_s(self) -> float | None:
        return None if self.pts is None else float(self.pts * self.time_base)

    @property
    def nbytes(self) -> int:
        """Bytes of the frame's arrays: its image, model input and what ``derived`` holds
        (:func:`nbytes`)."""
        return nbytes(self)

    @property
    def rgb8(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB, whatever the source depth."""
        if self.image.dtype == np.uint8:
            return self.image
        return (self.image >> 8).astype(np.uint8)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class Prompt:
    """A prompt for one object on one frame. Exactly one of mask, points or box is set
    (points and box may be combined, as SAM 2 allows).

    ``mask``: (H, W) bool at video resolution (another dtype: its non-zero pixels, on every
    backend). ``points``: (N, 2) float32 pixel x, y at video
    resolution; ``labels``: (N,) int32, 1 positive, 0 negative. ``box``: (4,) float32 x0, y0,
    x1, y1 in pixels. ``prior``: with points or a box, (s, s) float32 low-resolution mask
    logits the decoder takes as its dense input (SAM 2's previous mask logits), so that the
    clicks edit that mask instead of starting from nothing: the studio keeps a tracked frame's
    output as the prior of a correction on it (a job carries it as a ``.npy`` file).
    ``correction``: with points or a box, the clicks edit the mask the object's previous
    prompted frame tracks forwards to this frame, decoded with that pass's memory, as SAM 2
    decodes clicks on a frame it has tracked (docs/session.md, rule d); on the object's first
    prompted frame it is an ordinary prompt.
    """

    frame_index: int
    obj_id: int
    mask: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    prior: np.ndarray | None = None
    correction: bool = False


def prior_ok(logits: np.ndarray) -> bool:
    """Whether ``logits`` can be a :class:`Prompt`'s ``prior``: (s, s) finite float mask
    logits, s >= 4 (what the engine takes, and what a job's ``.npy`` must hold)."""
    a = np.asarray(logits)
    square = a.ndim == 2 and a.shape[0] == a.shape[1] >= 4
    return square and np.issubdtype(a.dtype, np.floating) and bool(np.isfinite(a).all())


@dataclass(frozen=True)
class ObjectResult:
    """The engine's output for one object on one frame.

    ``logits``: (h, w) float32 low-resolution mask logits (holes filled, as SAM 2 outputs
    them). ``object_score_logit`` > 0 means the object is present; ``iou`` is the predicted IoU
    of the chosen mask. ``info``: engine metadata (quality, memory events, pass direction).
    """

    obj_id: int
    frame_index: int
    logits: np.ndarray
    object_score_logit: float
    iou: float
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MaskResult:
    """The engine's output for one frame, all objects.

    ``logits``: (O, h, w) float32 low-resolution mask logits (h = w = image_size // 4, 256 for
    SAM 2 at 1024). ``object_score_logits``: (O,) float32, > 0 means the object is present.
    ``iou``: (O,) float32 predicted IoU of the chosen mask. ``obj_ids`` are the stable user ids,
    in slot order.
    """

    frame_index: int
    obj_ids: tuple[int, ...]
    logits: np.ndarray
    object_score_logits: np.ndarray
    iou: np.ndarray
    info: dict = field(default_factory=dict)  # per-frame engine metadata (memory, promoted)

    def video_logits(self, height: int, width: int) -> np.ndarray:
        """(O, height, width) float32 logits, bilinear with half-pixel centres (the same as
        torch's ``interpolate(..., align_corners=False)`` that SAM 2 uses)."""
        import cv2

        return (
            np.stack(
                [
                    cv2.resize(lg, (width, height), interpolation=cv2.INTER_LINEAR)
                    for lg in self.logits
                ]
            )
            if len(self.logits)
            else np.zeros((0, height, width), np.float32)
        )


@dataclass(frozen=True)
class Matte:
    """Finished alpha for one frame. ``alpha``: (O, H, W) float32 in [0, 1] at source
    resolution, one plane per object in ``obj_ids`` order."""

    frame_index: int
    obj_ids: tuple[int, ...]
    alpha: np.ndarray

    @property
    def merged(self) -> np.ndarray:
        """(H, W) float32 in [0, 1]: the union of all objects (max over objects). For one
        object, that object's plane itself (a view, not a copy: read it, do not write it)."""
        if len(self.obj_ids) == 0:
            return np.zeros(self.alpha.shape[1:], np.float32)
        if len(self.obj_ids) == 1:
            return self.alpha[0]
        return self.alpha.max(axis=0)


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update. ``event`` is "download" (model bytes, first use only), "backward"
    (frames before the first prompt, tracked backwards from it, before "start"), "start",
    "warning" (``message``: something about the input or how the model runs that the user
    must know, said once right after "start"; the report keeps it too), "frame", "done" or
    "error"."""

    event: str
    frames_done: int = 0
    total_frames: int = 0
    frame_index: int | None = None
    fps: float = 0.0
    eta_s: float | None = None
    object_scores: dict[int, float] = field(default_factory=dict)
    message: str = ""

    def to_dict(self) -> dict:
        d = {
            "event": self.event,
            "frames_done": self.frames_done,
            "total_frames": self.total_frames,
            "fps": round(self.fps, 3),
        }
        if self.frame_index is not None:
            d["frame"] = self.frame_index
        if self.eta_s is not None:
            d["eta_s"] = round(self.eta_s, 2)
        if self.object_scores:
            d["object_scores"] = {str(k): round(v, 4) for k, v in self.object_scores.items()}
        if self.message:
            d["message"] = self.message
        return d


def nbytes(value: Any) -> int:
    """Bytes of the arrays in ``value``: numpy or torch arrays, ONNX Runtime OrtValues, or
    objects with their own ``nbytes``, in a dataclass, dict, list or tuple (image features,
    a decoded frame with what it carries)."""
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, f)) for f in value.__dataclass_fields__)
    if isinstance(value, Mapping):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if callable(getattr(value, "tensor_size_in_bytes", None)):
        return int(value.tensor_size_in_bytes())  # an onnxruntime OrtValue (IOBinding)
    return int(getattr(value, "nbytes", 0))

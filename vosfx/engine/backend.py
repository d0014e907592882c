"""The ``Backend`` protocol: SAM 2's stages as plain functions, and the preprocessing shared by
every backend.

A backend is thin: it runs the stages of :mod:`vosfx.engine.stages` (torch modules, or their
ONNX exports) and assembles their inputs. Every decision (which memories to attend, multimask
or single mask, whether a frame is an initial conditioning frame) is the tracker's.

Arrays that only travel between backend calls (image features, mask memories, object pointers)
are *backend-native* (torch tensors on the model's device for the torch backend, numpy for ONNX
Runtime): the tracker stores them and hands them back but never reads them, so a CUDA run does
not copy 16 MiB of features to the host every frame. Everything the tracker reads (logits,
scores) is numpy.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import numpy as np

_WARNED: set[str] = set()


def warn_once(logger: logging.Logger, message: str) -> None:
    """Log ``message`` as a warning on ``logger`` the first time only (per process): a
    runtime fallback is said once, not on every frame."""
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


# ImageNet statistics SAM 2 normalises with (sam2.utils.misc.load_video_frames defaults)
IMG_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMG_STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(rgb8: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, S, S) float32 normalised, exactly as SAM 2's JPEG loader.

    ``sam2.utils.misc._load_img_as_tensor`` resizes the decoded RGB image with PIL's
    ``Image.resize((S, S))`` (its default filter, bicubic), divides by 255 in float64, stores
    float32, then subtracts the mean and divides by the std in float32. Doing the same steps on
    the same decoded pixels gives bit-identical encoder inputs; frames decoded by another
    decoder (PyAV for video files) differ only by that decoder's pixels.
    """
    # A uint8 input has 256 values per channel: each plane is a lookup (cv2.LUT) in the table
    # of those steps done on every value (same operations, so bit for bit the same result),
    # written straight as a (S, S) plane: ~40 -> ~6-13 CPU ms at 1024 instead of float64
    # passes and a transpose.
    import cv2

    resized = model_sized(rgb8, image_size)
    lut = normalise_table()  # (3, 256) float32
    out = np.empty((3, image_size, image_size), np.float32)
    for c, plane in enumerate(cv2.split(resized)):
        cv2.LUT(plane, lut[c], dst=out[c])
    return out


def model_sized(rgb8: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (S, S, 3) uint8, resized as SAM 2's JPEG loader does (PIL's
    default filter); a frame already S x S (prepared on the decode thread: ``model_input``)
    as it is. The first half of :func:`preprocess`."""
    from PIL import Image

    if rgb8.dtype != np.uint8 or rgb8.ndim != 3 or rgb8.shape[2] != 3:
        from vosfx.errors import InputError

        raise InputError(f"expected an (H, W, 3) uint8 RGB frame, found {rgb8.dtype} {rgb8.shape}")
    if rgb8.shape[:2] != (image_size, image_size):
        return np.asarray(Image.fromarray(rgb8).resize((image_size, image_size)))
    return rgb8


@functools.cache
def normalise_table() -> np.ndarray:
    """(3, 256) float32: for each channel and uint8 value, the steps of SAM 2's loader in its
    order: ``v / 255`` in float64 stored as float32, minus the mean, divided by the std (both
    float32)."""
    img = (np.arange(256)[:, None].repeat(3, axis=1) / 255.0).astype(np.float32)  # (256, 3)
    img -= IMG_MEAN
    img /= IMG_STD
    return np.ascontiguousarray(img.T)


def aa_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float32 weights of torch's ``F.interpolate(mode="bilinear",
    align_corners=False, antialias=True)`` along one axis (a triangle filter stretched by the
    scale when shrinking, normalised per output pixel), so ``wy @ x @ wx.T`` resizes ``x``."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    w = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        taps = np.clip(1.0 - np.abs((np.arange(lo, hi) - center + 0.5) * inv), 0.0, None)
        total = taps.sum()
        w[i, lo:hi] = taps / total if total != 0 else taps
    return w.astype(np.float32)


@functools.lru_cache(maxsize=16)
def aa_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's antialiased-bilinear taps along one axis, computed as its CPU kernel does
    (``_compute_weights_aa`` in float32): ``(index (size_out, K) int64, weight (size_out, K)
    float32)``, rows padded with weight 0 at index 0 (a zero tap adds nothing exactly)."""
    f32 = np.float32
    scale = f32(size_in / size_out)
    support = scale if scale >= 1.0 else f32(1.0)
    invscale = f32(1.0) / scale if scale >= 1.0 else f32(1.0)
    rows = []
    for i in range(size_out):
        center = scale * f32(i + 0.5)
        xmin = max(int(center - support + f32(0.5)), 0)
        xsize = min(int(center + support + f32(0.5)), size_in) - xmin
        w = np.empty(xsize, np.float32)
        total = f32(0.0)
        for j in range(xsize):
            x = (f32(j + xmin) - center + f32(0.5)) * invscale
            w[j] = max(f32(0.0), f32(1.0) - abs(x))
            total = f32(total + w[j])
        if total != 0:
            w = (w / total).astype(np.float32)
        rows.append((xmin, w))
    k = max(len(w) for _x, w in rows)
    index = np.zeros((size_out, k), np.int64)
    weight = np.zeros((size_out, k), np.float32)
    for i, (xmin, w) in enumerate(rows):
        index[i, : len(w)] = np.arange(xmin, xmin + len(w))
        weight[i, : len(w)] = w
    index.flags.writeable = weight.flags.writeable = False  # cached: shared by every call
    return index, weight


def _aa_pass(x: np.ndarray, taps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Resample the last axis of float32 ``x`` with ``taps`` the way torch's kernel sums:
    tap 0 times its weight, then each further tap added by a fused multiply-add (the kernel
    is compiled with FMA contraction). FMA is computed in float64 (the float32 product is
    exact there) and rounded once to float32."""
    index, weight = taps
    t = x[..., index[:, 0]] * weight[:, 0]
    for j in range(1, index.shape[1]):
        t = (
            x[..., index[:, j]].astype(np.float64) * weight[:, j].astype(np.float64)
            + t.astype(np.float64)
        ).astype(np.float32)
    return t


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) bool -> (size, size) float32 in {0, 1}: antialiased bilinear then >= 0.5, as
    SAM 2's ``add_new_mask``, bit for bit: width first, then height, with torch's float32
    weights and summation (tests/test_resize_mask.py checks every DAVIS mask at 256, 512 and
    1024; a matrix product instead lands some 0.5 ties on the other side). A mask of another
    dtype is its non-zero pixels, as the torch backend reads it (a uint8 0/255 mask went in
    as 255)."""
    m = np.asarray(mask, bool).astype(np.float32)
    if m.shape == (size, size):
        return m
    h = _aa_pass(m, aa_taps(m.shape[1], size))  # (H, size)
    out = _aa_pass(h.T, aa_taps(m.shape[0], size)).T  # (size, size)
    return (out >= 0.5).astype(np.float32)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even as torch's
    ``.to(torch.bfloat16)`` (finite values; SAM 2's memories are)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))
    return (rounded >> 16).astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 (exact)."""
    return (b.astype(np.uint32) << 16).view(np.float32)


class Interrupt:
    """Stops a stage call in progress from another thread: set it, and ONNX Runtime ends the
    run between two nodes (``RunOptions.terminate``), OpenVINO cancels its inference
    (``InferRequest.cancel``), the torch backend stops before the image encoder's next block,
    and the call raises :class:`~vosfx.errors.Cancelled`. The studio's feature warm-up
    (:meth:`vosfx.session.ClipSession.warm`) gives way to a click on another frame with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []
        self.is_set = False

    def set(self) -> None:
        with self._lock:
            self.is_set = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def bind(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when set (now, if it is already)."""
        with self._lock:
            if not self.is_set:
                self._hooks.append(hook)
                return
        hook()


@dataclass
class ImageFeatures:
    """One frame's encoder output (backend-native arrays).

    ``feat_s0`` (1, 32, S/4, S/4), ``feat_s1`` (1, 64, S/8, S/8), ``vision_feat``
    (1, 256, S/16, S/16), ``vision_pos`` (1, 256, S/16, S/16).
    """

    feat_s0: Any
    feat_s1: Any
    vision_feat: Any
    vision_pos: Any


@dataclass(frozen=True)
class MemoryItem:
    """A stored mask memory (backend-native (1, 64, g, g)) and its temporal slot ``t_pos``
    (0 conditioning, 1 .. num_maskmem-1 recent; num_maskmem-1 is the previous frame).
    ``key_scale``: the memory attention's key input for these tokens (memory plus position
    encoding, before the key projection) is multiplied by it (SAM2Long; a backend without
    ``supports_key_scale`` only accepts 1.0)."""

    maskmem: Any
    t_pos: int
    key_scale: float = 1.0


@dataclass(frozen=True)
class PointerItem:
    """A stored object pointer (backend-native (1, 256)) and its signed frame distance;
    ``key_scale`` as :class:`MemoryItem`'s."""

    obj_ptr: Any
    t_diff: int
    key_scale: float = 1.0


@dataclass(frozen=True)
class TrackOutput:
    """All decoder candidates for one object on one frame.

    ``multi_logits`` (3, s, s) float32, ``multi_ious`` (3,) float32; ``single_logits``
    (s, s) float32 and ``single_iou`` float; ``object_score_logit`` float; ``multi_ptrs`` and
    ``single_ptr``: backend-native pointers ((3, 256) and (1, 256)) for each choice.
    """

    multi_logits: np.ndarray
    multi_ious: np.ndarray
    single_logits: np.ndarray
    single_iou: float
    object_score_logit: float
    multi_ptrs: Any
    single_ptr: Any


@dataclass(frozen=True)
class TrackRequest:
    """One object on one frame, for :meth:`Backend.track`.

    ``memories`` None: an initial conditioning frame (no memory; SAM 2's ``no_mem_embed``);
    else the selected mask memories, with ``pointers`` and ``t_diff_max`` (the normalisation
    of the pointers' temporal encoding). ``point_coords`` (P, 2) float32 in model pixels
    [0, S] with ``point_labels`` (P,) int32 (1 include, 0 exclude, 2/3 box corners), or None
    for no points; ``mask_logits`` (s, s) float32 dense prompt (low-res logits) or None.
    ``min_object_score``: the object-score logit above which the decoder's masks and pointer
    count as "object present" (SAM 2: 0; a policy may move it, SAMURAI uses -1).
    ``conditioned``: the frame's features already conditioned on ``memories`` (what
    :meth:`Backend.condition` returned for this request's frame and memory): the decoder
    alone runs, memory attention is not run again (a correction's further clicks).
    """

    features: ImageFeatures
    memories: list[MemoryItem] | None = None
    pointers: list[PointerItem] = field(default_factory=list)
    t_diff_max: int = 0
    point_coords: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    mask_logits: np.ndarray | None = None
    min_object_score: float = 0.0
    conditioned: Any = None


@dataclass(frozen=True)
class MemoryRequest:
    """One object's memory to encode, for :func:`encode_memory_many`: the arguments of
    :meth:`Backend.encode_memory`."""

    features: ImageFeatures
    low_res: np.ndarray
    object_score_logit: float
    binarize: bool


class Backend(Protocol):
    """SAM 2's stages on one runtime. Attributes describe the loaded model."""

    image_size: int  # S
    num_maskmem: int  # 7 for SAM 2
    max_obj_ptrs: int  # 16 for SAM 2
    device: str
    # the model's tracking rules the tracker mirrors (SAM2Base attributes of the same names)
    multimask_output_in_sam: bool
    multimask_output_for_tracking: bool
    multimask_min_pt_num: int
    multimask_max_pt_num: int
    use_mask_input_as_output_without_sam: bool
    binarize_mask_from_pts_for_mem_enc: bool
    # what the user must know of how the model runs (an execution provider missing, a tier
    # running a slower form): recorded here, not logged; whoever presents a run says them
    # (the pipeline's "warning" events and sidecar; `vosfx studio` and `eval` on stderr)
    warnings: list[str]

    def encode_image(self, rgb8: np.ndarray, interrupt: Interrupt | None = None) -> ImageFeatures:
        """(H, W, 3) uint8 RGB at any size -> features (resized with :func:`preprocess`).
        ``interrupt``: set from another thread to stop the call where the runtime can
        (:class:`Interrupt`)."""
        ...

    def track(self, request: TrackRequest) -> TrackOutput:
        """Memory attention + prompt encoder + mask decoder for one object (see
        :class:`TrackRequest`)."""
        ...

    def condition(self, request: TrackRequest) -> Any:
        """Memory attention alone: the request's frame features conditioned on its memory
        (or on none: ``no_mem_embed``), backend-native (1, 256, g, g), for
        :attr:`TrackRequest.conditioned` (the same arithmetic as inside :meth:`track`)."""
        ...

    def mask_as_output(
        self, features: ImageFeatures, mask: np.ndarray
    ) -> tuple[np.ndarray, float, Any]:
        """A mask prompt used as the output: ``mask`` (H, W) bool at video resolution, resized
        to S x S as SAM 2's ``add_new_mask`` does (antialiased bilinear, then >= 0.5) -> (low-res
        logits (s, s) float32, object-score logit, pointer (1, 256) backend-native)."""
        ...

    def encode_memory(
        self,
        features: ImageFeatures,
        low_res: np.ndarray,
        object_score_logit: float,
        binarize: bool,
    ) -> Any:
        """Memory encoder: ``low_res`` (s, s) float32 logits -> maskmem (1, 64, g, g),
        backend-native, rounded to bfloat16 as SAM 2 stores it."""
        ...

    def nbytes(self, value: Any) -> int:
        """Bytes a stored backend-native array occupies (for memory reports)."""
        ...

    def runtime(self) -> dict[str, Any]:
        """What computes the stages (library, versions, precision, device, per-stage runtime),
        recorded in the sidecar as ``model.runtime``."""
        ...


class BatchedBackend(Protocol):
    """Optional batched calls a backend may add to :class:`Backend`: several objects (or
    SAM2Long pathways) of one frame in one call. Results, in request order, are those of one
    :meth:`Backend.track` / :meth:`Backend.encode_memory` call each, within the parity
    tolerance. Call them through :func:`track_many` and :func:`encode_memory_many`, which loop
    over the single calls for a backend without them."""

    def track_many(self, requests: Sequence[TrackRequest]) -> list[TrackOutput]: ...

    def encode_memory_many(self, requests: Sequence[MemoryRequest]) -> list[Any]: ...


R = TypeVar("R")
T = TypeVar("T")


def in_batches(
    requests: Sequence[R], key: Callable[[R], Hashable], run: Callable[[list[R]], list[T]]
) -> list[T]:
    """``run`` over the requests grouped by ``key`` (one call per group, a batch), the
    results put back in request order: how a backend's batched calls split requests whose
    layouts differ."""
    groups: dict[Hashable, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(key(r), []).append(i)
    out: list[T | None] = [None] * len(requests)
    for idx in groups.values():
        for i, result in zip(idx, run([requests[i] for i in idx]), strict=True):
            out[i] = result
    return cast(list[T], out)


def track_many(backend: Backend, requests: Sequence[TrackRequest]) -> list[TrackOutput]:
    """``backend.track`` for each request, in one batched call where the backend has one."""
    batched = getattr(backend, "track_many", None)
    if batched is not None and len(requests) > 1:
        return list(batched(requests))
    return [backend.track(r) for r in requests]


def encode_memory_many(backend: Backend, requests: Sequence[MemoryRequest]) -> list[Any]:
    """``backend.encode_memory`` for each request, in one batched call where the backend has
    one."""
    batched = getattr(backend, "encode_memory_many", None)
    if batched is not None and len(requests) > 1:
        return list(batched(requests))
    return [
        backend.encode_memory(r.features, r.low_res, r.object_score_logit, r.binarize)
        for r in requests
    ]

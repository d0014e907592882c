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

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

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
    from PIL import Image

    if rgb8.dtype != np.uint8 or rgb8.ndim != 3 or rgb8.shape[2] != 3:
        from vosfx.errors import InputError

        raise InputError(f"expected an (H, W, 3) uint8 RGB frame, found {rgb8.dtype} "
                         f"{rgb8.shape}")
    resized = np.asarray(Image.fromarray(rgb8).resize((image_size, image_size)))
    img = (resized / 255.0).astype(np.float32)  # float64 division, float32 storage, as sam2
    img -= IMG_MEAN
    img /= IMG_STD
    return np.ascontiguousarray(img.transpose(2, 0, 1))


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
    (0 conditioning, 1 .. num_maskmem-1 recent; num_maskmem-1 is the previous frame)."""

    maskmem: Any
    t_pos: int


@dataclass(frozen=True)
class PointerItem:
    """A stored object pointer (backend-native (1, 256)) and its signed frame distance."""

    obj_ptr: Any
    t_diff: int


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

    def encode_image(self, rgb8: np.ndarray) -> ImageFeatures:
        """(H, W, 3) uint8 RGB at any size -> features (resized with :func:`preprocess`)."""
        ...

    def track(self, features: ImageFeatures, memories: list[MemoryItem] | None,
              pointers: list[PointerItem], t_diff_max: int, point_coords: np.ndarray | None,
              point_labels: np.ndarray | None, mask_logits: np.ndarray | None) -> TrackOutput:
        """Memory attention + prompt encoder + mask decoder for one object.

        ``memories`` None: an initial conditioning frame (no memory; SAM 2's ``no_mem_embed``).
        ``point_coords`` (P, 2) float32 in model pixels [0, S], ``point_labels`` (P,) int32, or
        None for no points; ``mask_logits`` (s, s) float32 dense prompt or None.
        """
        ...

    def mask_as_output(self, features: ImageFeatures,
                       mask: np.ndarray) -> tuple[np.ndarray, float, Any]:
        """A mask prompt used as the output: ``mask`` (H, W) bool at video resolution, resized
        to S x S as SAM 2's ``add_new_mask`` does (antialiased bilinear, then >= 0.5) -> (low-res
        logits (s, s) float32, object-score logit, pointer (1, 256) backend-native)."""
        ...

    def encode_memory(self, features: ImageFeatures, low_res: np.ndarray,
                      object_score_logit: float, binarize: bool) -> Any:
        """Memory encoder: ``low_res`` (s, s) float32 logits -> maskmem (1, 64, g, g),
        backend-native, rounded to bfloat16 as SAM 2 stores it."""
        ...

    def nbytes(self, value: Any) -> int:
        """Bytes a stored backend-native array occupies (for memory reports)."""
        ...

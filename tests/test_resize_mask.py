"""The ONNX path's mask-prompt resize equals torch's (what SAM 2's ``add_new_mask`` uses) bit
for bit on every mask of the shared DAVIS annotations, at 256, 512 and 1024: a matrix-product
resize put 0.5 ties on the other side (bmx-trees frame 37 at 512: prompt-frame logits off by
0.81 against the official predictor)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import shared_data
from vosfx.engine.backend import resize_mask

torch = pytest.importorskip("torch")


def _torch(mask: np.ndarray, size: int) -> np.ndarray:
    import torch.nn.functional as F

    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (out[0, 0].numpy() >= 0.5).astype(np.float32)


@pytest.mark.parametrize("shape", [(32, 48), (64, 64)], ids=["resized", "model_size"])
@pytest.mark.parametrize(
    "as_given", [lambda m: m.astype(np.uint8) * 255, lambda m: m * np.float32(0.3)]
)
def test_a_mask_that_is_not_bool_is_its_nonzero_pixels(shape, as_given):
    """The torch backend reads a mask prompt as bool (non-zero is the object); the ONNX path
    took its values: a cv2-style uint8 0/255 mask went into the mask-as-output graph as 255
    (logits of 5,090 at the model's size, 9.45 off elsewhere) and a soft 0.3 mask was empty."""
    mask = np.zeros(shape, bool)
    mask[8:20, 10:30] = True
    want = resize_mask(mask, 64)
    np.testing.assert_array_equal(resize_mask(as_given(mask), 64), want)
    np.testing.assert_array_equal(want, _torch(mask, 64))


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("size", [256, 512, 1024])
def test_every_davis_mask_resizes_as_torch_does(size):
    from PIL import Image

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    checked, differ = 0, []
    try:
        for path in sorted(shared_data("davis", "Annotations").glob("*/*.png")):
            labels = np.asarray(Image.open(path))
            for obj in np.unique(labels):
                if obj == 0:
                    continue
                mask = labels == obj
                if not np.array_equal(resize_mask(mask, size), _torch(mask, size)):
                    differ.append(f"{path.parent.name}/{path.name} object {obj}")
                checked += 1
    finally:
        torch.set_num_threads(threads)
    assert checked > 250, checked
    assert not differ, differ


def test_the_known_tie_lands_where_torch_puts_it():
    from PIL import Image

    labels = np.asarray(Image.open(shared_data("davis", "Annotations", "bmx-trees", "00037.png")))
    mask = labels == 1
    np.testing.assert_array_equal(resize_mask(mask, 512), _torch(mask, 512))
    # the plain matrix-product resize gets it wrong: the test could fail
    from vosfx.engine.backend import aa_weights

    naive = aa_weights(mask.shape[0], 512) @ (
        mask.astype(np.float32) @ aa_weights(mask.shape[1], 512).T
    )
    assert not np.array_equal((naive >= 0.5).astype(np.float32), _torch(mask, 512))

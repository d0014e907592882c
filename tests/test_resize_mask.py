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

"""Each stage equals the SAM2Base method it stands for, on seeded random weights."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

import torch.nn.functional as F

from vosfx.engine.stages import (
    DecoderStage,
    ImageEncoderStage,
    MaskAsOutputStage,
    MemoryEncoderStage,
)
from vosfx.models.checkpoint import build_model

S = 128


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_model("configs/sam2.1/sam2.1_hiera_t.yaml", image_size=S)
    net.binarize_mask_from_pts_for_mem_enc = True
    return net


@pytest.fixture(scope="module")
def feats(model):
    torch.manual_seed(1)
    img = torch.randn(1, 3, S, S)
    with torch.inference_mode():
        ours = ImageEncoderStage(model)(img)
        out = model.forward_image(img)
        _, vision_feats, vision_pos, sizes = model._prepare_backbone_features(out)
    return ours, vision_feats, vision_pos, sizes


def _close(a, b, tol=1e-5):
    assert a.shape == b.shape
    assert float((a.float() - b.float()).abs().max()) <= tol


def test_image_encoder_matches_forward_image(feats):
    (s0, s1, feat, pos), vision_feats, vision_pos, _sizes = feats
    g = S // 16
    assert s0.shape == (1, 32, S // 4, S // 4) and s1.shape == (1, 64, S // 8, S // 8)
    _close(feat.flatten(2).permute(2, 0, 1), vision_feats[-1])
    _close(pos.flatten(2).permute(2, 0, 1), vision_pos[-1])
    _close(s0.flatten(2).permute(2, 0, 1), vision_feats[0])
    assert feat.shape == (1, 256, g, g) and float(feat.std()) > 0


@pytest.mark.parametrize("multimask", [True, False])
def test_decoder_matches_forward_sam_heads(model, feats, multimask):
    (s0, s1, feat, _), *_ = feats
    coords = torch.tensor([[[40.0, 60.0]]])
    labels = torch.tensor([[1]], dtype=torch.int32)
    with torch.inference_mode():
        ml, mi, sl, si, score, mptr, sptr = DecoderStage(model)(feat, s0, s1, coords, labels)
        ref = model._forward_sam_heads(
            feat,
            {"point_coords": coords, "point_labels": labels},
            None,
            [s0, s1],
            multimask_output=multimask,
        )
    low_multi, _, ious, low, _, ptr, ref_score = ref
    _close(score, ref_score)
    if multimask:
        _close(ml, low_multi)
        _close(mi, ious)
        k = int(mi.argmax())
        _close(mptr[:, k], ptr)
    else:
        _close(sl, low)
        _close(si, ious)
        _close(sptr, ptr)


def test_mask_as_output_matches(model, feats):
    (s0, s1, feat, _), *_ = feats
    mask = torch.zeros(1, 1, S, S)
    mask[..., 30:90, 20:70] = 1
    with torch.inference_mode():
        low, score, iou, ptr = MaskAsOutputStage(model, DecoderStage(model))(feat, s0, s1, mask)
        ref = model._use_mask_as_output(feat, [s0, s1], mask)
    _close(low, ref[0])
    _close(score, ref[6])
    _close(ptr, ref[5])
    assert float(iou) == 1.0 and float(score) == 10.0


@pytest.mark.parametrize("binarize, score", [(True, 3.0), (False, -2.0)])
def test_memory_encoder_matches(model, feats, binarize, score):
    (_, _, feat, _), vision_feats, _, sizes = feats
    torch.manual_seed(2)
    low = torch.randn(1, 1, S // 4, S // 4) * 5
    obj = torch.tensor([[score]])
    with torch.inference_mode():
        mem, pos = MemoryEncoderStage(model)(feat, low, obj, torch.tensor([binarize]))
        high = F.interpolate(low, size=(S, S), mode="bilinear", align_corners=False)
        ref_mem, ref_pos = model._encode_new_memory(vision_feats, sizes, high, obj, binarize)
    _close(mem, ref_mem)
    _close(pos, ref_pos[-1])
    assert mem.shape == (1, 64, S // 16, S // 16)


def test_preprocess_matches_sam2_loader(tmp_path):
    from PIL import Image
    from sam2.utils.misc import load_video_frames

    from vosfx.engine.backend import preprocess

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    rgb[:16, :16] = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)  # every value (normalise
    # table) and a 64 x 64 frame, which preprocess takes as already resized (model_input)
    square = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for folder, img in (("a", rgb), ("b", square)):
        (tmp_path / folder).mkdir()
        Image.fromarray(img).save(tmp_path / folder / "00000.jpg", quality=95)
        decoded = np.asarray(Image.open(tmp_path / folder / "00000.jpg").convert("RGB"))
        images, h, w = load_video_frames(
            str(tmp_path / folder),
            64,
            offload_video_to_cpu=True,
            compute_device=torch.device("cpu"),
        )
        assert (h, w) == img.shape[:2]
        assert np.array_equal(preprocess(decoded, 64), images[0].numpy())  # bit-identical


@pytest.mark.parametrize("shape", [(1080, 1920, 3), (256, 256, 3)])
def test_normalising_on_the_device_equals_the_cpu_lookup(shape):
    """The torch backend on a GPU looks the normalisation table up on the device (a uint8
    upload); the input is bit for bit the CPU path's, whether the frame comes at the model's
    size (prepared on the decode thread) or at the video's."""
    from vosfx.engine.backend import preprocess
    from vosfx.engine.torch_backend import normalised_on

    rgb8 = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    got = normalised_on(torch.device("cpu"), rgb8, 256)
    assert got.dtype == torch.float32 and got.shape == (1, 3, 256, 256)
    np.testing.assert_array_equal(got[0].numpy(), preprocess(rgb8, 256))

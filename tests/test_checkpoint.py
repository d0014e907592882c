"""Loading checkpoints: strict key/shape check, weights-only load, the official layout, and a
model built small (image_size 256) that still tracks through memory attention."""

from __future__ import annotations

import argparse

import pytest
from ckpt import SMALL, TINY, build_state_dict, make_checkpoint
from conftest import shared_data

from vosfx.errors import ModelError
from vosfx.models import cache, registry
from vosfx.models.checkpoint import (
    check_shapes,
    load_sam2,
    manifest_shapes,
    read_state_dict,
    shapes_of,
    size_overrides,
)
from vosfx.models.registry import ModelSpec
from vosfx.models.torchfile import identify, infer_config

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt")[0]


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    registry.reset()


EXPECTED = {"a.weight": (4, 3), "a.bias": (4,), "b": (1, 1, 256)}


@pytest.mark.parametrize(
    "found, fragments",
    [
        ({"a.weight": (4, 3), "a.bias": (4,)}, ["missing keys (1): b"]),
        ({**EXPECTED, "c": (2,)}, ["unexpected keys (1): c"]),
        (
            {**EXPECTED, "a.weight": (3, 4)},
            ["shape mismatches (1): a.weight: expected (4, 3), found (3, 4)"],
        ),
        (
            {"a.weight": (4, 3), "z": (1,), "b": (2,)},
            ["missing keys (1): a.bias", "unexpected keys (1): z", "b: expected (1, 1, 256)"],
        ),
    ],
)
def test_check_shapes_lists_what_is_wrong(found, fragments):
    with pytest.raises(ModelError) as err:
        check_shapes(EXPECTED, found, source="x.pt")
    assert str(err.value).startswith("x.pt does not fit the model")
    for fragment in fragments:
        assert fragment in str(err.value)


def test_check_shapes_accepts_an_exact_match_and_truncates_long_lists():
    check_shapes(EXPECTED, dict(EXPECTED))
    many = {f"k{i:02d}": (1,) for i in range(30)}
    with pytest.raises(ModelError, match=r"missing keys \(30\): k00, .*k11, \.\.\. and 18 more"):
        check_shapes(many, {})


@pytest.mark.parametrize(
    "config, manifest",
    [
        (TINY, "sam2.1_hiera_tiny.pt.state_dict_manifest.json"),
        (SMALL, "sam2.1_hiera_small.pt.state_dict_manifest.json"),
    ],
)
def test_generated_layout_equals_the_official_checkpoint(config, manifest, tiny_file):
    official = manifest_shapes(shared_data("models", manifest))
    if config == TINY:  # the file other tests use, read back the way the loader reads it
        generated = shapes_of(read_state_dict(tiny_file))
    else:
        generated = shapes_of(build_state_dict(config))
    check_shapes(official, generated, source=f"generated {config}")
    assert generated == official


def test_manifest_of_wrong_model_is_refused(tiny_file):
    small = manifest_shapes(shared_data("models", "sam2.1_hiera_small.pt.state_dict_manifest.json"))
    with pytest.raises(ModelError, match="shape mismatches|missing keys"):
        check_shapes(small, shapes_of(read_state_dict(tiny_file)))


def test_load_at_256_keeps_weights_and_tracks_with_memory(tiny_file):
    net = load_sam2(tiny_file, image_size=256)
    saved = read_state_dict(tiny_file)
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert net.image_size == 256
    # RoPE tables sized for the 16x16 map at build time, not recomputed on the first call
    layer = net.memory_attention.layers[0]
    assert layer.self_attn.freqs_cis.shape[0] == 16 * 16
    assert layer.cross_attn_image.freqs_cis.shape[0] == 16 * 16
    out = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for idx in range(2):
            img = torch.randn(1, 3, 256, 256, generator=gen)
            _, feats, pos, sizes = net._prepare_backbone_features(net.forward_image(img))
            mask = (torch.rand(1, 1, 256, 256, generator=gen) > 0.5).float() if idx == 0 else None
            step = net.track_step(idx, idx == 0, feats, pos, sizes, None, mask, out, 2)
            out["cond_frame_outputs" if idx == 0 else "non_cond_frame_outputs"][idx] = step
    assert tuple(step["pred_masks"].shape) == (1, 1, 64, 64)
    assert tuple(step["maskmem_features"].shape) == (1, 64, 16, 16)
    assert torch.isfinite(step["pred_masks"]).all()


def test_load_by_model_id_through_the_cache_applies_mem_mask_scaling(config_home, tiny_file):
    registry.register(
        ModelSpec(
            id="mose-ft",
            url="https://e.invalid/mose_ft.pt",
            config=TINY,
            sha256=None,
            mem_mask_scale=7.5,
            mem_mask_bias=-4.0,
        )
    )
    cache.import_checkpoint(tiny_file, "mose-ft", trust_unverified=True)
    net = load_sam2("mose-ft", image_size=256, offline=True)
    assert (net.sigmoid_scale_for_mem_enc, net.sigmoid_bias_for_mem_enc) == (7.5, -4.0)


def test_tiny_weights_into_small_config_list_the_differences(tiny_file):
    with pytest.raises(ModelError) as err:
        load_sam2(tiny_file, config=SMALL, image_size=256)
    msg = str(err.value)
    assert str(tiny_file) in msg and "missing keys" in msg
    assert "image_encoder.trunk.blocks.11" in msg  # small has 16 blocks, tiny 12


def test_missing_cached_model_offline_names_the_path(config_home):
    with pytest.raises(ModelError, match="sam2.1_hiera_tiny.pt"):
        load_sam2("sam2.1-tiny", offline=True)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not a zip or a pickle", "not a loadable weights-only checkpoint"),
        ("pickled-code", "not a loadable weights-only checkpoint"),
        ("list", "expected {'model': state_dict}"),
    ],
)
def test_unloadable_files_are_model_errors(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if content == "pickled-code":  # an object weights_only refuses to unpickle
        torch.save({"model": {"x": argparse.Namespace(a=1)}}, path)
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        read_state_dict(path)


def test_config_of_an_unnamed_file_is_inferred_from_its_layout(tmp_path, tiny_file):
    other = tmp_path / "weights.pt"
    other.write_bytes(tiny_file.read_bytes())
    net = load_sam2(other, image_size=256)
    assert len(net.image_encoder.trunk.blocks) == 12
    with pytest.raises(ModelError, match=r"checkpoint file .*absent.pt does not exist"):
        load_sam2(tmp_path / "absent.pt")
    with pytest.raises(ModelError, match=r"expected a model id \(sam2.1-tiny, .*found 'tiny'"):
        load_sam2("tiny")


def test_unrecognisable_layout_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, path)
    with pytest.raises(ModelError, match="matches none of them"):
        load_sam2(path)
    assert identify(path) is None


def test_identify_names_the_model_from_tensor_shapes_alone(tmp_path, tiny_file):
    assert identify(tiny_file).id == "sam2.1-tiny"
    small = tmp_path / "whatever.pt"
    torch.save({"model": build_state_dict(SMALL)}, small)
    assert identify(small).id == "sam2.1-small"


def _layout(dim: int, blocks: int, v21: bool) -> dict:
    shapes = {"image_encoder.trunk.patch_embed.proj.weight": (dim, 3, 7, 7)}
    shapes.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": (dim,) for i in range(blocks)})
    if v21:
        shapes["no_obj_embed_spatial"] = (1, 64)
    return shapes


@pytest.mark.parametrize(
    "dim, blocks, v21, expected",
    [
        (96, 12, True, "configs/sam2.1/sam2.1_hiera_t.yaml"),
        (96, 16, True, "configs/sam2.1/sam2.1_hiera_s.yaml"),
        (112, 24, True, "configs/sam2.1/sam2.1_hiera_b+.yaml"),
        (144, 48, True, "configs/sam2.1/sam2.1_hiera_l.yaml"),
        (96, 12, False, "configs/sam2/sam2_hiera_t.yaml"),
        (144, 48, False, "configs/sam2/sam2_hiera_l.yaml"),
        (128, 12, True, None),
    ],
)
def test_infer_config(dim, blocks, v21, expected):
    assert infer_config(_layout(dim, blocks, v21)) == expected


def test_infer_config_on_the_official_layouts():
    for size, letter in (("tiny", "t"), ("small", "s")):
        shapes = manifest_shapes(
            shared_data("models", f"sam2.1_hiera_{size}.pt.state_dict_manifest.json")
        )
        assert infer_config(shapes) == f"configs/sam2.1/sam2.1_hiera_{letter}.yaml"


@pytest.mark.parametrize(
    "size, ok", [(None, True), (1024, True), (256, True), (512, True), (100, False), (48, False)]
)
def test_size_overrides(size, ok):
    if ok:
        overrides = size_overrides(size)
        if size in (None, 1024):
            assert overrides == []
        else:
            f = size // 16
            assert (
                f"++model.memory_attention.layer.cross_attention.feat_sizes=[{f},{f}]" in overrides
            )
    else:
        with pytest.raises(ModelError, match="multiple of 16"):
            size_overrides(size)

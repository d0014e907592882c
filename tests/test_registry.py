"""The model table: published hashes and URLs, config names that exist in sam2, lookups."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from vosfx.errors import ModelError
from vosfx.models import registry
from vosfx.models.registry import ModelSpec

PUBLISHED_21 = {  # id: (file, sha256, bytes) as published by the SAM 2 authors
    "sam2.1-tiny": (
        "sam2.1_hiera_tiny.pt",
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        156_008_466,
    ),
    "sam2.1-small": (
        "sam2.1_hiera_small.pt",
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        184_416_285,
    ),
    "sam2.1-base-plus": (
        "sam2.1_hiera_base_plus.pt",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        323_606_802,
    ),
    "sam2.1-large": (
        "sam2.1_hiera_large.pt",
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        898_083_611,
    ),
}


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    registry.reset()


def _sam2_dir() -> Path:
    spec = importlib.util.find_spec("sam2")
    if spec is None or spec.origin is None:
        pytest.skip("sam2 is not installed")
    return Path(spec.origin).parent


@pytest.mark.parametrize("model_id", sorted(PUBLISHED_21))
def test_sam21_rows_carry_the_published_file(model_id):
    name, sha, size = PUBLISHED_21[model_id]
    spec = registry.get(model_id)
    assert spec.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{name}"
    assert (spec.filename, spec.sha256, spec.size_bytes) == (name, sha, size)


def test_sam20_rows_use_072824_and_claim_no_hash():
    rows = [s for s in registry.all_models() if s.family == "sam2"]
    assert {s.id for s in rows} == {"sam2-tiny", "sam2-small", "sam2-base-plus", "sam2-large"}
    for spec in rows:
        assert spec.url.startswith("https://dl.fbaipublicfiles.com/segment_anything_2/072824/")
        assert spec.sha256 is None and spec.size_bytes is None
        assert spec.config.startswith("configs/sam2/sam2_hiera_")


@pytest.mark.parametrize("spec", registry.all_models(), ids=lambda s: s.id)
def test_config_exists_and_mem_mask_scaling_matches_it(spec):
    omegaconf = pytest.importorskip("omegaconf")
    path = _sam2_dir() / spec.config
    assert path.is_file(), f"{spec.id}: {spec.config} not in the sam2 package"
    cfg = omegaconf.OmegaConf.load(path)
    assert spec.mem_mask_scale == cfg.model.sigmoid_scale_for_mem_enc
    assert spec.mem_mask_bias == cfg.model.sigmoid_bias_for_mem_enc


def test_default_model_is_registered():
    assert registry.get(registry.DEFAULT_MODEL).id == registry.DEFAULT_MODEL


def test_unknown_id_lists_the_known_ones():
    with pytest.raises(ModelError) as err:
        registry.get("sam3-huge")
    msg = str(err.value)
    assert "'sam3-huge'" in msg
    for model_id in registry.model_ids():
        assert model_id in msg


def test_register_replace_unregister_reset():
    spec = ModelSpec(
        id="my-ft",
        url="https://example.org/ft/my_ft.pt",
        config="configs/sam2.1/sam2.1_hiera_b+.yaml",
        sha256="AB" * 32,
        mem_mask_scale=7.5,
        mem_mask_bias=-4.0,
    )
    registry.register(spec)
    assert registry.get("my-ft").sha256 == "ab" * 32  # normalised to lowercase
    assert registry.find_by_sha256("AB" * 32) is registry.get("my-ft")
    assert registry.find_by_filename("my_ft.pt") is registry.get("my-ft")
    with pytest.raises(ModelError, match="already registered"):
        registry.register(spec)
    registry.register(ModelSpec(id="my-ft", url=spec.url, config=spec.config), replace=True)
    assert registry.get("my-ft").sha256 is None
    registry.unregister("my-ft")
    assert "my-ft" not in registry.model_ids()
    registry.register(spec)
    registry.reset()
    assert "my-ft" not in registry.model_ids()
    assert len(registry.model_ids()) == 8


def test_lookups_miss_cleanly():
    assert registry.find_by_sha256("0" * 64) is None
    assert registry.find_by_filename("nope.pt") is None
    assert registry.find_by_sha256(PUBLISHED_21["sam2.1-small"][1]).id == "sam2.1-small"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sha256": "abc"}, "64 hex digits"),
        ({"sha256": "g" * 64}, "64 hex digits"),
        ({"url": "https://example.org/model.bin"}, "a .pt file"),
    ],
)
def test_spec_validation(kwargs, match):
    base = {"id": "x", "url": "https://example.org/x.pt", "config": "c.yaml"}
    with pytest.raises(ModelError, match=match):
        ModelSpec(**{**base, **kwargs})


def test_register_rejects_non_spec():
    with pytest.raises(ModelError, match="expected a ModelSpec"):
        registry.register({"id": "x"})


def test_url_for_base_url_and_hydra_overrides():
    spec = registry.get("sam2.1-small")
    assert spec.url_for(None) == spec.url
    assert (
        spec.url_for("http://127.0.0.1:8000/m/") == "http://127.0.0.1:8000/m/sam2.1_hiera_small.pt"
    )
    mss = ModelSpec(
        id="m", url="https://e.org/m.pt", config="c", mem_mask_scale=7.5, mem_mask_bias=-4.0
    )
    assert mss.hydra_overrides() == [
        "++model.sigmoid_scale_for_mem_enc=7.5",
        "++model.sigmoid_bias_for_mem_enc=-4.0",
    ]

import pytest

from vosfx.config import JobConfig, build_config, describe_options, merge_dicts
from vosfx.errors import ConfigError


def test_defaults_round_trip():
    cfg = JobConfig()
    assert build_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"refine": {"feathr_px": 2}}, "unknown key [refine] feathr_px"),
        ({"colour": {}}, "unknown section [colour]"),
        ({"refine": {"feather_px": -1}}, "[refine] feather_px: expected >= 0"),
        ({"refine": {"choke": 2}}, "[refine] choke: expected <= 1"),
        (
            {"refine": {"clip_black": 0.6, "clip_white": 0.4}},
            "[refine] clip_black: expected below clip_white (0.4), found 0.6",
        ),
        ({"memory": {"policy": "xmem"}}, "[memory] policy: expected one of sam2, rcms"),
        ({"model": {"image_size": "big"}}, "[model] image_size: expected an integer"),
        ({"model": {"image_size": 500}}, "[model] image_size: expected 0 (the model's own) or"),
        ({"model": {"image_size": 32}}, "a multiple of 16 from 64 to 4096, found 32"),
        ({"output": {"sidecar": "yes"}}, "[output] sidecar: expected true or false"),
        ({"refine": {"feather_px": True}}, "expected a number"),
        ({"output": {"extra_formats": [1]}}, "expected a list of strings"),
        ({"refine": 3}, "[refine]: expected a table"),
        # a stray control character is shown escaped: the message stays one line
        ({"\r": {}}, "unknown section [\\r]"),
        ({"model": {"x\ny": 1}}, "unknown key [model] x\\ny;"),
        ({"modèle": {}}, "unknown section [modèle]"),
    ],
)
def test_invalid_values_name_the_key(data, fragment):
    with pytest.raises(ConfigError) as err:
        build_config(data)
    assert fragment in str(err.value)
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("size", [0, 64, 256, 512, 1008, 1024, 4096])
def test_image_sizes_the_model_runs_at_are_accepted(size):
    assert build_config({"model": {"image_size": size}}).model.image_size == size


def test_int_accepted_for_float_and_lists_for_tuples():
    cfg = build_config({"refine": {"feather_px": 2}, "output": {"extra_formats": ["preview"]}})
    assert cfg.refine.feather_px == 2.0 and isinstance(cfg.refine.feather_px, float)
    assert cfg.output.extra_formats == ("preview",)
    assert build_config({"output": {"extra_formats": "preview,png16"}}).output.extra_formats == (
        "preview",
        "png16",
    )


def test_merge_is_deep_and_override_wins():
    a = {"refine": {"feather_px": 1.0, "choke": 0.2}, "model": {"name": "x"}}
    b = {"refine": {"feather_px": 3.0}}
    assert merge_dicts(a, b) == {
        "refine": {"feather_px": 3.0, "choke": 0.2},
        "model": {"name": "x"},
    }
    assert a["refine"]["feather_px"] == 1.0  # inputs untouched


def test_replace_validates():
    cfg = JobConfig().replace({"refine": {"feather_px": 4}})
    assert cfg.refine.feather_px == 4.0
    with pytest.raises(ConfigError):
        JobConfig().replace({"refine": {"nope": 1}})


def test_describe_options_covers_every_option():
    rows = describe_options()
    assert {r[0] for r in rows} == {"model", "memory", "refine", "output"}
    assert len(rows) == sum(
        len(JobConfig().to_dict()[s]) for s in ("model", "memory", "refine", "output")
    )


def test_sam2long_runs_on_any_backend():
    """SAM2Long's key scaling is an input of the exported memory-attention graph (bundle
    format 3): the policy keeps the configured backend and precision."""
    cfg = build_config({"memory": {"policy": "sam2long"}})
    assert cfg.model.backend == "auto"
    for model in ({"backend": "onnx"}, {"precision": "bf16"}, {"device": "tensorrt"}):
        got = build_config({"model": model, "memory": {"policy": "sam2long"}}).model
        for key, value in model.items():
            assert getattr(got, key) == value

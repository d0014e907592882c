import pytest

from vosfx.errors import ConfigError
from vosfx.presets import list_presets, load_preset, resolve_config

SHIPPED = {
    "prores4444",
    "webm-alpha",
    "png16",
    "exr",
    "matte-ffv1",
    "preview",
    "fast",
    "balanced",
    "best",
}


def test_every_shipped_preset_loads_and_validates(config_home):
    names = {p.name for p in list_presets()}
    assert SHIPPED <= names
    for name in names:
        resolve_config([name])  # raises on any invalid key or value


def test_shipped_format_presets_name_real_writer_formats(config_home):
    from vosfx.io.writers import FORMATS

    for p in list_presets():
        fmt = resolve_config([p.name]).output.format
        assert fmt in FORMATS, (p.name, fmt)


def test_default_is_prores4444(config_home):
    assert resolve_config([]).output.format == "prores4444"


def test_extends_merges_parent_then_own(config_home):
    best = load_preset("best")
    assert best["model"]["name"] == "sam2.1-large"  # own value wins over balanced's
    assert best["refine"]["guided_eps"] == 0.01  # inherited from balanced


def test_precedence_defaults_preset_user_cli(config_home):
    cfg_dir = config_home / "config"
    cfg_dir.mkdir()
    (cfg_dir / "config.toml").write_text(
        '[refine]\nfeather_px = 3.0\n[model]\nname = "sam2.1-small"\n'
    )
    cfg = resolve_config(["fast"], {"refine": {"feather_px": 5.0}})
    assert cfg.refine.feather_px == 5.0  # CLI beats user config
    assert cfg.model.name == "sam2.1-tiny"  # a named preset beats user config (which says small)
    assert cfg.refine.edge == "bilinear"  # from the preset
    assert resolve_config(["fast"], use_user_config=False).model.name == "sam2.1-tiny"
    # no preset named: the user config beats the default preset, and stands where a named
    # preset says nothing (fast sets no format, prores4444 no model)
    (cfg_dir / "config.toml").write_text(
        '[output]\nformat = "png16"\n[model]\nname = "sam2.1-small"\n'
    )
    assert resolve_config([]).output.format == "png16"
    assert resolve_config(["fast"]).output.format == "png16"
    assert resolve_config(["prores4444"]).model.name == "sam2.1-small"
    assert resolve_config(["prores4444"]).output.format == "prores4444"  # named: it wins


def test_user_preset_shadows_and_extends_builtin(config_home):
    d = config_home / "config" / "presets"
    d.mkdir(parents=True)
    (d / "mine.toml").write_text(
        'description = "m"\nextends = "webm-alpha"\n[refine]\nchoke = 0.5\n'
    )
    cfg = resolve_config(["mine"])
    assert cfg.output.format == "webm-alpha" and cfg.refine.choke == 0.5
    assert any(p.name == "mine" and p.source.endswith("mine.toml") for p in list_presets())


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[refine]\nfeathr = 1\n", "unknown key [refine] feathr"),
        ("[refine]\nfeather_px = -2\n", "feather_px: expected >= 0"),
        ('extends = "bad"\n', "extends itself"),
        ("[refine\n", "not valid TOML"),
    ],
)
def test_bad_user_preset_names_the_problem(config_home, text, fragment):
    d = config_home / "config" / "presets"
    d.mkdir(parents=True)
    (d / "bad.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_preset("bad")
    assert fragment in str(err.value) and "bad" in str(err.value)


def test_unknown_preset_lists_available(config_home):
    with pytest.raises(ConfigError, match="available: .*prores4444"):
        load_preset("nope")

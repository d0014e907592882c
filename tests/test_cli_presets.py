"""`vosfx presets list|show|path` in-process (click's CliRunner)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vosfx.cli import cli
from vosfx.presets import builtin_dir


def presets(*args):
    return CliRunner().invoke(cli, ["presets", *args])


def test_path_names_the_user_config_file_and_presets_folder(config_home):
    """docs/config.md sends users to `vosfx presets path` to find the user config file."""
    r = presets("path")
    assert r.exit_code == 0, r.output
    folder = config_home / "config"
    assert r.output.splitlines() == [
        f"config: {folder / 'config.toml'}  (not created yet)",
        f"presets: {folder / 'presets'}  (not created yet)",
        f"built-in: {builtin_dir()}",
    ]
    assert (builtin_dir() / "prores4444.toml").is_file()
    (folder / "presets").mkdir(parents=True)
    (folder / "config.toml").write_text("[refine]\nfeather_px = 2\n")
    (folder / "presets" / "soft.toml").write_text('description = "mine"\n[refine]\nchoke = 0.5\n')
    assert presets("path").output.splitlines()[:2] == [
        f"config: {folder / 'config.toml'}",
        f"presets: {folder / 'presets'}",
    ]
    listed = presets("list").output
    assert f"soft        mine  [{folder / 'presets' / 'soft.toml'}]\n" in listed
    assert f"built-in presets: {builtin_dir()}\n" in listed
    assert f"your presets:     {folder / 'presets'} (" in listed
    resolved = json.loads(presets("show", "soft", "--resolved").output)
    assert resolved["refine"]["choke"] == 0.5 and resolved["refine"]["feather_px"] == 2.0


def test_list_says_which_user_preset_replaces_a_built_in(config_home):
    """A user preset named as a built-in one is used instead of it: the list says so."""
    folder = config_home / "config" / "presets"
    folder.mkdir(parents=True)
    (folder / "fast.toml").write_text('description = "my fast"\n[refine]\nchoke = 0.1\n')
    listed = presets("list").output.splitlines()
    fast = [line for line in listed if line.startswith("fast ")]
    assert fast == [f"fast        my fast  [{folder / 'fast.toml'}] (used instead of the built-in)"]
    assert not any("used instead" in line for line in listed if not line.startswith("fast "))


def test_show_unknown_preset_is_a_config_error(config_home):
    r = presets("show", "nope")
    assert r.exit_code == 3 and "unknown preset 'nope'" in r.output, r.output


def test_show_one_preset_prints_its_table_and_several_by_name(config_home):
    one = json.loads(presets("show", "png16").output)
    assert one == {"output": {"format": "png16"}}
    two = json.loads(presets("show", "png16", "fast").output)
    assert list(two) == ["png16", "fast"] and two["png16"] == one


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[refine]\nfeathr_px = 2\n", "user config {path}: unknown key [refine] feathr_px"),
        ("[output]\nformat = 3\n", "user config {path}: [output] format: expected a string"),
        ("[refine\n", "{path}: not valid TOML"),
    ],
)
def test_a_bad_user_config_is_a_config_error_naming_the_file(config_home, text, said):
    """Every command that resolves presets refuses it (exit 3), naming the file to fix."""
    path = config_home / "config" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    for args in (["presets", "show", "fast", "--resolved"], ["matte", "x.mp4", "m.png"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 3, r.output
        assert r.output.startswith("vosfx: error: " + said.format(path=path)), r.output

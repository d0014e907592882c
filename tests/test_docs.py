"""Docs that must stay true: every config option has a description, and docs/config.md is
the table generated from vosfx/config.py."""

from __future__ import annotations

from pathlib import Path

from vosfx.config import describe_options, options_markdown

REPO = Path(__file__).resolve().parents[1]


def test_every_config_option_has_a_description():
    missing = [
        f"[{section}] {key}"
        for section, key, _default, doc in describe_options()
        if not doc.strip()
    ]
    assert not missing, f"options without a description (doc=... in vosfx/config.py): {missing}"


def test_docs_config_md_lists_every_option_as_the_code_does():
    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    table = options_markdown()
    assert table in text, (
        "docs/config.md is out of date; regenerate its table with vosfx.config.options_markdown()"
    )
    for section, key, _default, _doc in describe_options():
        assert f"`[{section}] {key}`" in text

"""The README's exit-code table is the code's: every VosfxError class's exit code is a row that
names the class, and every row (besides click's 0 and 2) is a class's code."""

from __future__ import annotations

import re
from pathlib import Path

from vosfx import errors

README = Path(__file__).resolve().parents[1] / "README.md"
CLICK_CODES = {0: "success", 2: "command-line usage error"}


def _classes() -> list[type[errors.VosfxError]]:
    found = []
    for obj in vars(errors).values():
        if isinstance(obj, type) and issubclass(obj, errors.VosfxError):
            found.append(obj)
    return found


def readme_exit_table() -> dict[int, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.MULTILINE)
    return {int(code): meaning for code, meaning in rows}


def test_readme_exit_table_equals_the_error_classes():
    table = readme_exit_table()
    codes = {cls.exit_code for cls in _classes()}
    assert set(table) == codes | set(CLICK_CODES)
    for cls in _classes():
        assert f"`{cls.__name__}`" in table[cls.exit_code], (cls.__name__, table[cls.exit_code])
    for code, meaning in CLICK_CODES.items():
        assert meaning in table[code].lower()


def test_exit_codes_mapping_lists_every_class():
    assert errors.EXIT_CODES == {cls.__name__: cls.exit_code for cls in _classes()}


def test_each_code_belongs_to_one_kind():
    kinds = {}
    for cls in _classes():
        assert kinds.setdefault(cls.kind, cls.exit_code) == cls.exit_code

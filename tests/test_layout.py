"""The layout holds: layers without cycles (import-linter over pyproject's contract), plugins
that import nothing from vosfx, the plugins' exit-code table equal to vosfx's, and a type
checker clean on the package and the plugins."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it comes with the dev extra: pip install -e .[dev])")
    return found


def test_import_contracts_hold():
    out = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in out.stdout


def test_no_import_cycles_at_run_time():
    """benchmarks/layout.py (docs/benchmarks.md's layout facts) finds no two vosfx modules
    importing each other at run time (grimp: directly or through others, imports inside
    functions included; those under TYPE_CHECKING, for annotations alone, listed apart)."""
    out = subprocess.run(
        [sys.executable, "benchmarks/layout.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "import cycles between vosfx modules at run time: 0\n" in out.stdout, out.stdout
    assert "more through imports for annotations alone (TYPE_CHECKING):" in out.stdout


def test_plugins_import_nothing_from_vosfx():
    offenders = []
    for path in sorted((REPO / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno} {n}"
                for n in names
                if n == "vosfx" or n.startswith("vosfx.")
            ]
    assert not offenders, offenders


def test_plugins_exit_codes_equal_vosfx_errors():
    sys.path.insert(0, str(REPO / "plugins" / "common"))
    try:
        import vosfx_client
    finally:
        sys.path.remove(str(REPO / "plugins" / "common"))
    from vosfx import errors

    ours = {
        cls.exit_code: cls.kind
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.VosfxError)
    }
    ours[0] = "ok"
    ours[2] = "usage"  # click's own exit code for a bad command line
    assert vosfx_client.EXIT_CODES == ours


def test_the_type_checker_is_clean():
    out = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_ruff_format_is_clean():
    out = subprocess.run(
        [_tool("ruff"), "format", "--check", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]

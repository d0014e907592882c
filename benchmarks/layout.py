"""Layout facts for issue 16: import cycles between vosfx's modules (at run time, and those
through imports for annotations alone, under ``TYPE_CHECKING``), the largest module and the
largest function (lines). Prints what it found.

    python benchmarks/layout.py
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cycles(*, annotations: bool = False) -> list[tuple[str, str]]:
    """Pairs of vosfx modules that import each other, directly or through others (grimp): at
    run time (imports inside functions too), or with ``annotations`` also through the imports
    under ``TYPE_CHECKING``."""
    import grimp

    graph = grimp.build_graph(
        "vosfx", include_external_packages=False, exclude_type_checking_imports=not annotations
    )
    found = []
    modules = sorted(graph.modules)
    for i, a in enumerate(modules):
        for b in modules[i + 1 :]:
            if graph.chain_exists(importer=a, imported=b) and graph.chain_exists(
                importer=b, imported=a
            ):
                found.append((a, b))
    return found


def sizes() -> tuple[tuple[int, str], tuple[int, str]]:
    biggest_module, biggest_function = (0, ""), (0, "")
    for path in sorted((ROOT / "vosfx").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(ROOT))
        biggest_module = max(biggest_module, (len(text.splitlines()), rel))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                biggest_function = max(biggest_function, (n, f"{rel}:{node.name}"))
    return biggest_module, biggest_function


if __name__ == "__main__":
    found = cycles()
    typed = [pair for pair in cycles(annotations=True) if pair not in found]
    (mod_lines, mod), (fn_lines, fn) = sizes()
    print(f"import cycles between vosfx modules at run time: {len(found)}")
    for a, b in found[:20]:
        print(f"  {a} <-> {b}")
    print(f"more through imports for annotations alone (TYPE_CHECKING): {len(typed)}")
    for a, b in typed[:20]:
        print(f"  {a} <-> {b}")
    print(f"largest module: {mod} ({mod_lines} lines)")
    print(f"largest function: {fn} ({fn_lines} lines)")

"""Reading batch manifests: a TOML, CSV or JSON-lines file, or a folder of clips, as the same
rows ``(where, row dict)`` that :mod:`vosfx.batch.manifest` validates into jobs; and the
rows' output templates (:func:`expand_template`)."""

from __future__ import annotations

import csv
import io
import json
import re
import string
import sys
from pathlib import Path
from typing import Any

from vosfx.errors import BatchError, ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TOML_TOP_KEYS = {"version", "defaults", "jobs"}
VIDEO_EXTENSIONS = (
    ".mp4",
    ".mov",
    ".mkv",
    ".avi",
    ".webm",
    ".mxf",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".y4m",
)
DEFAULT_MASK_RULE = "{stem}.mask.png"


def read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    try:
        # utf-8-sig: Excel's "CSV UTF-8" and some Windows editors start with a BOM
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise BatchError(f"manifest {path}: cannot be read ({err})") from None
    if suffix == ".toml":
        return _toml_rows(text, path.name)
    if suffix == ".csv":
        return _csv_rows(text, path.name)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl_rows(text, path.name)
    raise BatchError(
        f"manifest {path}: expected a .toml, .csv or .jsonl file, found {suffix or 'no extension'}"
    )


def _toml_rows(text: str, name: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise BatchError(f"manifest {name}: not valid TOML ({err})") from None
    unknown = set(data) - _TOML_TOP_KEYS
    if unknown:
        raise BatchError(
            f"manifest {name}: unknown top-level key(s) {sorted(unknown)}; "
            f"known: {sorted(_TOML_TOP_KEYS)}"
        )
    if data.get("version", 1) != 1:
        raise BatchError(
            f"manifest {name}: version {data['version']!r} is not supported (this vosfx reads 1)"
        )
    jobs = data.get("jobs", [])  # none: "no jobs found", as an empty CSV or JSONL
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        raise BatchError(f"manifest {name}: expected [[jobs]] tables, found {jobs!r}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise BatchError(f"manifest {name}: [defaults] must be a table, found {defaults!r}")
    rows = [(f"{name} jobs[{i}]", j) for i, j in enumerate(jobs)]
    return [("defaults", defaults)] + rows if defaults else rows


def _csv_rows(text: str, name: str) -> list[tuple[str, dict[str, Any]]]:
    """CSV with a header. Columns are row keys; ``presets`` splits on ``+`` or ``;``;
    ``overrides`` is JSON; a ``section.key`` column (``refine.feather_px``) sets one override,
    merged with the ``overrides`` cell. Empty cells mean "not given"; one setting given by two
    cells of a row (a ``section.key`` column and the same key in ``overrides``, ``preset`` and
    ``presets``, a column twice) is refused, naming both columns."""
    reader = csv.reader(io.StringIO(text))
    columns = [c.strip() for c in next(reader, [])]
    rows = []
    for record in reader:
        where = f"{name} line {reader.line_num}"
        if len(record) > len(columns):
            raise BatchError(f"{where}: more cells than header columns")
        row: dict[str, Any] = {}
        given: dict[str, str] = {}  # setting -> the column that gave it
        dotted: list[tuple[str, str, Any, str]] = []  # (section, key, value, column)
        for column, cell in zip(columns, record):
            cell = cell.strip()
            if not cell:
                continue
            setting = "presets" if column == "preset" else column
            if setting in given:
                raise _twice(where, setting, given[setting], column)
            given[setting] = column
            if "." in column:
                section, key = column.split(".", 1)
                dotted.append((section, key, _scalar(cell), column))
            elif setting == "presets":
                row["presets"] = [p for p in re.split(r"[+;]", cell) if p.strip()]
            elif column in ("overrides", "prompts", "objects"):
                row[column] = _json_cell(cell, f"{where} column {column!r}")
            elif column in ("mask_frame", "start", "end", "fps", "fit", "overwrite"):
                row[column] = _scalar(cell)
            else:
                row[column] = cell
        if dotted:
            row["overrides"] = _merge_dotted(row.get("overrides", {}), dotted, where)
        if row:
            rows.append((where, row))
    return rows


def _merge_dotted(
    overrides: Any, dotted: list[tuple[str, str, Any, str]], where: str
) -> dict[str, Any]:
    """The ``overrides`` cell with each ``section.key`` column's value added (a new dict)."""
    if not isinstance(overrides, dict):
        raise BatchError(
            f"{where} column 'overrides': expected a JSON object ({{\"refine\": "
            f'{{"feather_px": 2}}}}), found {overrides!r}'
        )
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in overrides.items()}
    for section, key, value, column in dotted:
        table = merged.setdefault(section, {})
        if not isinstance(table, dict) or key in table:
            raise _twice(where, f"{section}.{key}", "overrides", column)
        table[key] = value
    return merged


def _twice(where: str, setting: str, first: str, second: str) -> BatchError:
    return BatchError(
        f"{where}: {setting} is given twice, in columns {first!r} and {second!r}; keep one"
    )


def _jsonl_rows(text: str, name: str) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = _json_cell(line, f"{name} line {n}")
        if not isinstance(row, dict):
            raise BatchError(f"{name} line {n}: expected a JSON object, found {line[:60]!r}")
        rows.append((f"{name} line {n}", row))
    return rows


def _json_cell(cell: str, where: str) -> Any:
    try:
        return json.loads(cell)
    except json.JSONDecodeError as err:
        raise BatchError(f"{where}: not valid JSON ({err})") from None


def _scalar(cell: str) -> Any:
    """A CSV cell as JSON when it parses (numbers, true/false), else the string."""
    try:
        return json.loads(cell)
    except json.JSONDecodeError:
        return cell


def folder_rows(
    folder: Path, mask_rule: str = DEFAULT_MASK_RULE
) -> list[tuple[str, dict[str, Any]]]:
    """One row per video file in ``folder`` (not recursive), its mask named by ``mask_rule``
    (``clip.mp4`` <-> ``clip.mask.png`` by default). A missing mask is reported by validation,
    except for a movie vosfx wrote (its sidecar beside it) and no mask names: an earlier
    batch's output written into the folder, not a clip to matte, so a rerun is not refused."""
    bad = template_fields(mask_rule) - {"stem", "name", "ext"}
    if bad:
        raise BatchError(
            f"mask rule {mask_rule!r}: unknown field(s) {sorted(bad)}; "
            "known: {stem}, {name}, {ext}"
        )
    clips = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")
    )
    rows = []
    for clip in clips:
        mask = mask_rule.format(stem=clip.stem, name=clip.name, ext=clip.suffix.lstrip("."))
        if not (folder / mask).exists() and _written_by_vosfx(clip):
            continue
        rows.append((clip.name, {"input": clip.name, "mask": mask}))
    if not rows:
        said = f"; {len(clips)} are vosfx's own outputs" if clips else ""
        raise BatchError(
            f"folder {folder}: no clips to matte (video files: {', '.join(VIDEO_EXTENSIONS)})"
            + said
        )
    return rows


def _written_by_vosfx(clip: Path) -> bool:
    """Whether ``clip`` has the sidecar vosfx writes beside its outputs (``<clip>.json``
    naming the vosfx version that wrote it)."""
    side = clip.with_name(clip.name + ".json")
    try:
        record = json.loads(side.read_text(encoding="utf-8")) if side.is_file() else None
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "vosfx_version" in record and "job" in record


def template_fields(template: str) -> set[str]:
    try:
        return {
            f.split(".")[0].split("[")[0]
            for _, f, _, _ in string.Formatter().parse(template)
            if f is not None
        }
    except ValueError as err:
        raise ConfigError(f"template {template!r}: {err}") from None


_TEMPLATE_FIELDS = {"stem", "name", "ext", "parent", "id", "index", "preset", "obj"}


def input_stem(path: str) -> str:
    """``clip`` for ``a/clip.mp4``; the folder name for ``shot/%05d.png`` or ``shot/``."""
    p = Path(path)
    if "%" in path:
        return p.parent.name or "sequence"
    return p.stem if p.suffix else p.name


class _KeepObj(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def expand_template(
    template: str, *, input_path: str, job_id: str, index: int, presets: tuple[str, ...]
) -> str:
    """Fill an output path template. ``{obj}`` stays for the pipeline. Raises ConfigError for
    an unknown field or a bad format spec."""
    fields = template_fields(template)
    unknown = fields - _TEMPLATE_FIELDS
    if unknown:
        raise ConfigError(
            f"output template {template!r}: unknown field(s) "
            f"{sorted(unknown)}; known: " + ", ".join(sorted(_TEMPLATE_FIELDS))
        )
    if "%" in input_path:  # a pattern is its folder's sequence: named as a folder input is
        p, ext = Path(input_path).parent, Path(input_path).suffix.lstrip(".")
    else:
        p = Path(input_path)
        ext = p.suffix.lstrip(".")
    values = _KeepObj(
        stem=input_stem(input_path),
        name=p.name,
        ext=ext,
        parent=p.parent.name,
        id=job_id,
        index=index,
        preset="+".join(presets) if presets else "default",
    )
    try:
        return string.Formatter().vformat(template, (), values)
    except (ValueError, IndexError, KeyError) as err:
        raise ConfigError(f"output template {template!r}: {err}") from None

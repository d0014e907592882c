"""A job: one input, its prompts, its outputs and the effective config.

The same description serves the CLI, the Python API, batch manifests and host plugins. Its JSON
form (``vosfx matte --job job.json``) is versioned; see plugins/README.md::

    {"version": 1, "input": "clip.mov", "output": "clip.matte.mov",
     "presets": ["prores4444"], "overrides": {"refine": {"feather_px": 2}},
     "prompts": [{"frame": 0, "mask": "mask.png"},
                 {"frame": 0, "obj_id": 2, "points": [[420, 300]], "labels": [1]}],
     "start": 0, "end": null, "overwrite": false, "fit": false, "objects": null}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vosfx.config import JobConfig
from vosfx.errors import ConfigError

JOB_VERSION = 1
_JOB_KEYS = {
    "version", "input", "output", "presets", "overrides", "prompts", "start", "end",
    "overwrite", "fit", "objects", "fps",
}
_PROMPT_KEYS = {"frame", "obj_id", "mask", "points", "labels", "box", "threshold"}


@dataclass(frozen=True)
class PromptSpec:
    """A prompt as the user wrote it; resolved into :class:`vosfx.types.Prompt` once the
    video's size is known. ``mask`` is an image path (binary, grayscale, palette or RGBA: a
    palette or several grey levels may hold several objects). ``points``: ((x, y), ...) in
    video pixels with ``labels`` (1 positive, 0 negative); ``box``: (x0, y0, x1, y1)."""

    frame: int = 0
    # None: a mask's own ids (palette index, else 1); clicks/box: 1, or, when the job also has
    # mask prompts (listed before them), one more object after the masks' highest id
    obj_id: int | None = None
    mask: str | None = None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    threshold: int = 128

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"frame": self.frame}
        if self.obj_id is not None:
            d["obj_id"] = self.obj_id
        if self.mask is not None:
            d["mask"] = self.mask
        if self.points:
            d["points"] = [list(p) for p in self.points]
            d["labels"] = list(self.labels)
        if self.box is not None:
            d["box"] = list(self.box)
        if self.threshold != 128:
            d["threshold"] = self.threshold
        return d


@dataclass(frozen=True)
class Job:
    input: str
    prompts: tuple[PromptSpec, ...]
    output: str
    config: JobConfig = field(default_factory=JobConfig)
    presets: tuple[str, ...] = ()
    start: int = 0
    end: int | None = None  # exclusive
    overwrite: bool = False
    fit: bool = False
    objects: tuple[int, ...] | None = None  # keep only these object ids
    fps: float | None = None  # for image-sequence inputs

    def with_config(self, config: JobConfig) -> Job:
        return replace(self, config=config)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": JOB_VERSION,
            "input": self.input,
            "output": self.output,
            "presets": list(self.presets),
            "config": self.config.to_dict(),
            "prompts": [p.to_dict() for p in self.prompts],
            "start": self.start,
            "end": self.end,
            "overwrite": self.overwrite,
            "fit": self.fit,
            "objects": list(self.objects) if self.objects is not None else None,
            "fps": self.fps,
        }


def _num_pair(value: Any, where: str) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) for v in value)):
        raise ConfigError(f"{where}: expected [x, y], found {value!r}")
    return (float(value[0]), float(value[1]))


def prompt_from_dict(data: dict[str, Any], where: str, base: Path) -> PromptSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, found {data!r}")
    unknown = set(data) - _PROMPT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_PROMPT_KEYS)}")
    points = tuple(_num_pair(p, f"{where}.points") for p in data.get("points", []))
    labels = tuple(int(v) for v in data.get("labels", [1] * len(points)))
    if len(labels) != len(points):
        raise ConfigError(f"{where}: {len(points)} points but {len(labels)} labels")
    if any(v not in (0, 1) for v in labels):
        raise ConfigError(f"{where}.labels: expected 1 (positive) or 0 (negative), found {labels}")
    box = data.get("box")
    if box is not None:
        if len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
            raise ConfigError(f"{where}.box: expected [x0, y0, x1, y1], found {box!r}")
        box = tuple(float(v) for v in box)
    mask = data.get("mask")
    if mask is not None:
        mask = str(base / mask) if not Path(mask).is_absolute() else mask
    if mask is None and not points and box is None:
        raise ConfigError(f"{where}: a prompt needs a mask, points or a box")
    return PromptSpec(
        frame=int(data.get("frame", 0)), obj_id=data.get("obj_id"), mask=mask, points=points,
        labels=labels, box=box, threshold=int(data.get("threshold", 128)),
    )


def job_from_dict(data: dict[str, Any], *, base: Path | None = None,
                  cli_overrides: dict | None = None) -> Job:
    """Validate a job description (JSON form) into a Job. Relative paths resolve against
    ``base`` (the job file's folder)."""
    from vosfx.config import merge_dicts
    from vosfx.presets import resolve_config

    base = base or Path.cwd()
    if not isinstance(data, dict):
        raise ConfigError(f"job: expected a JSON object, found {type(data).__name__}")
    version = data.get("version", JOB_VERSION)
    if version != JOB_VERSION:
        raise ConfigError(f"job: version {version!r} is not supported (this vosfx reads {JOB_VERSION})")
    unknown = set(data) - _JOB_KEYS
    if unknown:
        raise ConfigError(f"job: unknown key(s) {sorted(unknown)}; known: {sorted(_JOB_KEYS)}")
    for key in ("input", "output"):
        if not isinstance(data.get(key), str):
            raise ConfigError(f"job: {key!r} must be a path string, found {data.get(key)!r}")
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise ConfigError("job: 'prompts' must be a non-empty list")
    presets = data.get("presets", [])
    if isinstance(presets, str):
        presets = [presets]

    def rel(p: str) -> str:
        return p if Path(p).is_absolute() else str(base / p)

    overrides = merge_dicts(data.get("overrides") or {}, cli_overrides or {})
    config = resolve_config(tuple(presets), overrides)
    objects = data.get("objects")
    return Job(
        input=rel(data["input"]),
        output=rel(data["output"]),
        prompts=tuple(prompt_from_dict(p, f"job.prompts[{i}]", base) for i, p in enumerate(prompts)),
        config=config,
        presets=tuple(presets),
        start=int(data.get("start") or 0),
        end=None if data.get("end") is None else int(data["end"]),
        overwrite=bool(data.get("overwrite", False)),
        fit=bool(data.get("fit", False)),
        objects=None if objects is None else tuple(int(o) for o in objects),
        fps=data.get("fps"),
    )


def load_job_file(path: str | Path, *, cli_overrides: dict | None = None) -> Job:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"job file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"job file {path}: not valid JSON ({err})") from None
    return job_from_dict(data, base=path.parent, cli_overrides=cli_overrides)

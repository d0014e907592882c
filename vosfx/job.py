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
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vosfx.config import JobConfig, parse_colour
from vosfx.errors import ConfigError

JOB_VERSION = 1
_JOB_KEYS = {
    "version",
    "input",
    "output",
    "presets",
    "overrides",
    "prompts",
    "start",
    "end",
    "overwrite",
    "fit",
    "objects",
    "fps",
    "names",
}
_PROMPT_KEYS = {
    "frame",
    "obj_id",
    "mask",
    "points",
    "labels",
    "box",
    "threshold",
    "prior",
    "correction",
}


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
    # with points/box: a .npy file of (s, s) low-res mask logits, the decoder's dense input
    # (a correction keeps the tracked mask it edits: docs/studio.md)
    prior: str | None = None
    # with points/box: the clicks edit the mask the object's previous prompted frame tracks
    # to this frame (docs/session.md, rule d); an ordinary prompt on its first prompted frame
    correction: bool = False
    # what the user typed it as, for errors found once the clip is known (``--point
    # 12:410,220@2``, ``job.prompts[3]``); not part of the job
    where: str = field(default="", compare=False)

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
        if self.prior is not None:
            d["prior"] = self.prior
        if self.correction:
            d["correction"] = True
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
    # object id -> the name the user gave it (the studio's); kept with the job, not rendered
    # (and not hashed: a Job stays hashable)
    names: dict[int, str] = field(default_factory=dict, hash=False)

    def with_config(self, config: JobConfig) -> Job:
        return replace(self, config=config)

    def files_read(self) -> list[tuple[str, str]]:
        """Every file the render reads besides its checkpoint, as (path as given, what it is
        in the user's words): the input, each prompt's mask and prior, a composite's
        background file. No output may replace one of them, even with ``overwrite``."""
        found = [(self.input, f"the input {self.input}")]
        for p in self.prompts:
            for kind, path in (("mask", p.mask), ("prior", p.prior)):
                if path is not None:
                    found.append(
                        (path, f"the {kind} of {p.where}" if p.where else f"the {kind} {path}")
                    )
        background = self.config.output.background
        if background and parse_colour(background) is None:
            found.append((background, f"the background {background}"))
        return found

    def to_record(self, base: Path | None = None) -> dict[str, Any]:
        """:meth:`to_dict` with every path absolute (relative ones against ``base``, default
        the working directory): the input, the output, prompt masks and the config's files.
        What a sidecar keeps: as typed, a relative path meant a directory the sidecar does
        not say."""
        base = Path.cwd() if base is None else base
        d = self.to_dict()
        d["input"], d["output"] = _beside(d["input"], base), _beside(d["output"], base)
        for prompt in d["prompts"]:
            for key in ("mask", "prior"):
                if key in prompt:
                    prompt[key] = _beside(prompt[key], base)
        d["config"] = _files_beside(d["config"], base)
        return d

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
            **({"names": {str(k): v for k, v in sorted(self.names.items())}} if self.names else {}),
        }


def beside_input(input_path: str, suffix: str) -> str:
    """``<the input's folder>/<its stem><suffix>``: a video's stem, an image folder's name
    (beside the folder), a pattern's name before its number (``shot.%04d.png``: ``shot``,
    not ``shot.``)."""
    head = input_path.split("%")[0]  # a pattern: what comes before its number
    src = Path(head.rstrip("/") or input_path)
    if head != input_path and not head.endswith("/"):
        src = src.with_name(src.name.rstrip("._- ") or src.name)
    stem = src.stem if src.suffix else src.name
    return str(src.parent / f"{stem}{suffix}")


def default_output(input_path: str, fmt: str) -> str:
    """Where ``vosfx matte`` writes ``input_path`` in format ``fmt`` without ``-o`` (the
    studio proposes the same), :func:`beside_input`: ``<stem>_vosfx.mov`` for the default
    ProRes 4444, else ``<stem>_vosfx_<format>`` (a folder for a sequence, ``.<ext>`` for a
    movie)."""
    from vosfx.config import OutputConfig
    from vosfx.formats import FORMATS

    spec = FORMATS.get(fmt)
    if spec is None or spec.is_sequence:  # sequences are written into a folder
        return beside_input(input_path, f"_vosfx_{fmt}")
    if fmt == OutputConfig().format:  # the default ProRes 4444
        return beside_input(input_path, f"_vosfx.{spec.ext}")
    # other movie formats carry their name: qtrle, prores422hq-matte and composite are .mov
    # too, and one would otherwise be the other's "already exists"
    return beside_input(input_path, f"_vosfx_{fmt}.{spec.ext}")


# --- validation: every field, each message naming it as the job file spells it ----------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any, where: str, *, lo: int | None = None, hi: int | None = None) -> int:
    if not _is_int(value):
        raise ConfigError(f"{where}: expected an integer, found {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: expected an integer >= {lo}, found {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: expected an integer <= {hi}, found {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, found {value!r}")
    return value


def _path(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ConfigError(f"{where}: expected a path string, found {value!r}")
    return value


def _num_list(value: Any, n: int, where: str, shape: str) -> list[float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != n
        or not all(_is_num(v) for v in value)
    ):
        raise ConfigError(f"{where}: expected {shape} (finite numbers), found {value!r}")
    return [float(v) for v in value]


def _point(value: Any, where: str) -> tuple[float, float]:
    x, y = _num_list(value, 2, where, "[x, y]")
    return (x, y)


def _box(value: Any, where: str) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = _num_list(value, 4, where, "[x0, y0, x1, y1]")
    if x1 <= x0 or y1 <= y0:
        raise ConfigError(f"{where}: expected x1 > x0 and y1 > y0, found {[x0, y0, x1, y1]}")
    return (x0, y0, x1, y1)


def _list(value: Any, where: str, what: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of {what}, found {value!r}")
    return value


def _unknown(data: dict, known: set[str], where: str) -> None:
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(map(str, unknown))}; known: {sorted(known)}"
        )


def prompt_from_dict(data: dict[str, Any], where: str, base: Path) -> PromptSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, found {data!r}")
    _unknown(data, _PROMPT_KEYS, where)
    points = tuple(
        _point(p, f"{where}.points[{i}]")
        for i, p in enumerate(_list(data.get("points", []), f"{where}.points", "[x, y] pairs"))
    )
    labels_raw = _list(data.get("labels", [1] * len(points)), f"{where}.labels", "0 or 1")
    if any(not _is_int(v) or v not in (0, 1) for v in labels_raw):
        raise ConfigError(
            f"{where}.labels: expected 1 (positive) or 0 (negative) per point, found {labels_raw!r}"
        )
    labels = tuple(labels_raw)
    if len(labels) != len(points):
        raise ConfigError(f"{where}.labels: {len(points)} points but {len(labels)} labels")
    box = data.get("box")
    if box is not None:
        box = _box(box, f"{where}.box")
    mask = data.get("mask")
    if mask is not None:
        mask = _path(mask, f"{where}.mask")
        mask = _beside(mask, base)
    if mask is None and not points and box is None:
        raise ConfigError(f"{where}: a prompt needs a mask, points or a box")
    prior = data.get("prior")
    if prior is not None:
        if mask is not None:
            raise ConfigError(f"{where}.prior: a prior goes with points or a box, not a mask")
        prior = _beside(_path(prior, f"{where}.prior"), base)
    correction = data.get("correction", False)
    if not isinstance(correction, bool):
        raise ConfigError(f"{where}.correction: expected true or false, found {correction!r}")
    if correction and mask is not None:
        raise ConfigError(f"{where}.correction: a correction is points or a box, not a mask")
    if correction and prior is not None:
        raise ConfigError(
            f"{where}.correction: a correction edits the mask tracked there; it takes no prior"
        )
    obj_id = data.get("obj_id")
    if obj_id is not None:
        obj_id = _int(obj_id, f"{where}.obj_id", lo=1, hi=2**31 - 1)
    return PromptSpec(
        frame=_int(data.get("frame", 0), f"{where}.frame", lo=0),
        obj_id=obj_id,
        mask=mask,
        points=points,
        labels=labels,
        box=box,
        threshold=_int(data.get("threshold", 128), f"{where}.threshold", lo=0, hi=255),
        prior=prior,
        correction=correction,
        where=where,
    )


def _range(data: dict[str, Any]) -> tuple[int, int | None]:
    start = data.get("start")
    start = 0 if start is None else _int(start, "job.start", lo=0)
    end = data.get("end")
    if end is not None:
        end = _int(end, "job.end", lo=1)
        if end <= start:
            raise ConfigError(f"job.end: expected a frame after job.start ({start}), found {end}")
    return start, end


def _objects(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = _list(value, "job.objects", "object ids")
    if not items or not all(_is_int(o) and o >= 1 for o in items):
        raise ConfigError(
            f"job.objects: expected a non-empty list of object ids >= 1, found {value!r}"
        )
    return tuple(items)


def _names(value: Any) -> dict[int, str]:
    """``job.names``: {"1": "dog", ...}, an object id (as JSON spells a key) to its name."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k.isdigit() and int(k) >= 1 and isinstance(v, str) and v.strip()
        for k, v in value.items()
    ):
        raise ConfigError(
            'job.names: expected an object of object ids to names ({"1": "dog"}), '
            f"found {value!r}"
        )
    return {int(k): v.strip()[:80] for k, v in value.items()}


def _fps(value: Any) -> float | None:
    if value is None:
        return None
    if not _is_num(value) or not 0 < value <= 1000:
        raise ConfigError(f"job.fps: expected a frame rate > 0 and <= 1000, found {value!r}")
    return float(value)


def _presets(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ConfigError(f"job.presets: expected a preset name or a list of them, found {value!r}")
    return value


def _beside(path: str, base: Path) -> str:
    """``path`` as it is when absolute, else joined to ``base``."""
    return path if Path(path).is_absolute() else str(base / path)


def _files_beside(overrides: dict[str, Any], base: Path) -> dict[str, Any]:
    """``overrides`` with its file options (``[model] checkpoint``, an ``[output] background``
    that is not a colour) made absolute against ``base``, like the job's input and masks."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in overrides.items()}
    model, output = out.get("model", {}), out.get("output", {})
    if model.get("checkpoint") and not Path(model["checkpoint"]).expanduser().is_absolute():
        model["checkpoint"] = str(base / model["checkpoint"])
    background = output.get("background")
    colour = background and parse_colour(background) is not None
    if background and not colour and not Path(background).expanduser().is_absolute():
        output["background"] = str(base / background)
    return out


def job_from_dict(
    data: dict[str, Any], *, base: Path | None = None, cli_overrides: dict | None = None
) -> Job:
    """Validate a job description (JSON form) into a Job. Relative paths resolve against
    ``base`` (the job file's folder). Every field is checked; a bad one raises
    :class:`ConfigError` naming it (``job.start``, ``job.prompts[0].box``)."""
    from vosfx.config import build_config, merge_dicts
    from vosfx.presets import resolve_config

    base = base or Path.cwd()
    if not isinstance(data, dict):
        raise ConfigError(f"job: expected a JSON object, found {type(data).__name__}")
    version = data.get("version", JOB_VERSION)
    if not _is_int(version) or version != JOB_VERSION:
        raise ConfigError(
            f"job.version: {version!r} is not supported (this vosfx reads {JOB_VERSION})"
        )
    _unknown(data, _JOB_KEYS, "job")
    inp = _path(data.get("input"), "job.input")
    out = _path(data.get("output"), "job.output")
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise ConfigError(f"job.prompts: expected a non-empty list of prompts, found {prompts!r}")
    presets = _presets(data.get("presets", []))
    overrides = data.get("overrides")
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(
            f"job.overrides: expected an object of config sections, found {overrides!r}"
        )
    start, end = _range(data)
    specs = tuple(prompt_from_dict(p, f"job.prompts[{i}]", base) for i, p in enumerate(prompts))
    objects = _objects(data.get("objects"))
    fps = _fps(data.get("fps"))
    names = _names(data.get("names"))
    overwrite = _bool(data.get("overwrite", False), "job.overwrite")
    fit = _bool(data.get("fit", False), "job.fit")
    if overrides:
        try:
            build_config(overrides)  # alone first, so the message can name job.overrides
        except ConfigError as err:
            raise ConfigError(f"job.overrides: {err}") from None
        overrides = _files_beside(overrides, base)
    config = resolve_config(tuple(presets), merge_dicts(overrides or {}, cli_overrides or {}))

    return Job(
        input=_beside(inp, base),
        output=_beside(out, base),
        prompts=specs,
        config=config,
        presets=tuple(presets),
        start=start,
        end=end,
        overwrite=overwrite,
        fit=fit,
        objects=objects,
        fps=fps,
        names=names,
    )


def load_job_file(path: str | Path, *, cli_overrides: dict | None = None) -> Job:
    path = Path(path)
    try:
        # utf-8-sig: a job saved by Windows Notepad starts with a BOM
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"job file {path} does not exist") from None
    except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, nesting too deep
        raise ConfigError(
            f"job file {path}: expected UTF-8 JSON, found error {type(err).__name__}: {err}"
        ) from None
    except OSError as err:
        raise ConfigError(f"job file {path} cannot be read: {err.strerror or err}") from None
    return job_from_dict(data, base=path.parent, cli_overrides=cli_overrides)

"""Frozen configuration dataclasses and their validation.

Presets, the user config file and CLI flags are all plain nested dicts (``{"refine":
{"feather_px": 2.0}}``) merged in precedence order (defaults < the default preset < user
config < presets named for the run < CLI flags; :func:`vosfx.presets.resolve_config`) and
validated once here, at the edge: an unknown section or key, a wrong type or an
out-of-range value raises :class:`~vosfx.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from vosfx.errors import ConfigError
from vosfx.formats import FORMATS
from vosfx.policies import MEMORY_POLICIES

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_colour(text: str) -> tuple[float, float, float] | None:
    """``#rrggbb`` -> (r, g, b) in [0, 1]; None when ``text`` is not a colour (an
    ``[output] background`` is a colour or an image/video file)."""
    m = _HEX.match(text.strip())
    if not m:
        return None
    v = int(m.group(1), 16)
    return ((v >> 16) / 255.0, ((v >> 8) & 255) / 255.0, (v & 255) / 255.0)


def _opt(
    default: Any,
    *,
    choices: tuple | None = None,
    lo: float | None = None,
    hi: float | None = None,
    doc: str = "",
) -> Any:
    return field(default=default, metadata={"choices": choices, "lo": lo, "hi": hi, "doc": doc})


@dataclass(frozen=True)
class ModelConfig:
    name: str = _opt("sam2.1-tiny", doc="model id from `vosfx models list`")
    backend: str = _opt(
        "auto",
        choices=("auto", "torch", "onnx"),
        doc="auto: ONNX Runtime (its bundle filled or exported on first use); torch with "
        "device mps",
    )
    device: str = _opt(
        "auto",
        choices=("auto", "cpu", "cuda", "mps", "tensorrt", "coreml", "dml"),
        doc=(
            "where the model runs; auto: the best execution provider found. Named and "
            "missing: the onnx backend runs on the CPU with a warning (stderr, a `warning` "
            "event, the sidecar); the torch backend refuses it (exit 9)"
        ),
    )
    image_size: int = _opt(
        0,
        lo=0,
        hi=4096,
        doc="0: the model's own (1024); else a multiple of 16 from 64, smaller only for tests "
        "and drafts",
    )
    precision: str = _opt(
        "fp32",
        choices=("fp32", "fp16", "bf16", "int8", "auto"),
        doc="fp32 exact; fp16 for GPUs; bf16: image encoder and memory attention (with AMX also "
        "decoder and memory encoder) in bfloat16 on OpenVINO (CPUs with AMX/AVX512_BF16, "
        "`vosfx[openvino]`); int8: 8-bit image encoder and, with VNNI, int8 attention scores on "
        "CPUs (onnx backend only); auto (the `fast` preset's): bf16 where the onnx backend runs "
        "on such a CPU and OpenVINO is installed, else fp32 (said on stderr, with why)",
    )
    threads: int = _opt(
        0,
        lo=0,
        hi=1024,
        doc="CPU threads of the model's runtime and of refinement's full-resolution loops; 0 "
        "lets the runtime choose (the loops: the cores, at most 8), or takes `OMP_NUM_THREADS` "
        "where that is set (a CPU batch worker's share of the cores)",
    )
    low_memory: bool = _opt(
        False,
        doc="the lowest peak memory, slower: ONNX Runtime without its CPU memory arena, blocks "
        "of 1 MiB and more returned to the system as soon as they are freed (glibc), one frame "
        "decoded ahead (`vosfx matte` at 1024: 885-901 vs 1183-1192 MiB, 1.2-1.5x the time); "
        "with bf16 precision, the OpenVINO buffers of the two heavy stages released after every call",
    )
    checkpoint: str = _opt("", doc="path to a checkpoint file, overriding the cache")
    io_binding: str = _opt(
        "auto",
        choices=("auto", "on", "off"),
        doc="onnx backend: keep image features on the GPU between stages (ONNX Runtime's "
        "IOBinding); auto: on with CUDA and TensorRT",
    )

    def __post_init__(self) -> None:
        # The model runs on a stride-16 feature map: any other size fails only once the model is
        # built (after a first-use export has started), so it is refused here, at the edge.
        size = self.image_size
        if size and (size < 64 or size % 16):
            raise ConfigError(
                f"[model] image_size: expected 0 (the model's own) or a multiple of 16 from 64 "
                f"to 4096, found {size}"
            )


@dataclass(frozen=True)
class MemoryConfig:
    policy: str = _opt(
        "rcms+shots",
        choices=tuple(MEMORY_POLICIES),
        doc="memory policy (docs/memory.md); names in vosfx.policies",
    )
    rcms_max_promote: int = _opt(5, lo=0, hi=64, doc="N: frames promoted on a disappearance")
    rcms_threshold: float = _opt(0.6, lo=0.0, hi=1.0, doc="θ: quality a frame must exceed")
    max_cond_frames: int = _opt(
        16, lo=1, hi=256, doc="cap on conditioning memory; oldest promoted leave first"
    )
    skip_absent: bool = _opt(False, doc="do not write frames without the object to memory")
    reprompt: bool = _opt(
        False,
        doc="re-prompt the decoder from the last reliable mask when a "
        "frame's quality or area drops sharply",
    )
    track_backward: bool = _opt(
        True, doc="matte the frames before the first prompt by tracking backwards from it"
    )
    shot_threshold: float = _opt(0.0, lo=0.0, hi=255.0, doc="cut threshold; 0: detector default")
    shot_min_frames: int = _opt(15, lo=1, hi=10_000, doc="shortest shot, in frames")


@dataclass(frozen=True)
class RefineConfig:
    alpha: str = _opt(
        "soft", choices=("soft", "hard"), doc="soft: calibrated sigmoid of the logits; hard: 0 or 1"
    )
    threshold: float = _opt(0.0, lo=-50.0, hi=50.0, doc="logit threshold for hard alpha")
    softness: float = _opt(1.0, lo=0.01, hi=100.0, doc="sigmoid temperature for soft alpha")
    edge: str = _opt(
        "guided",
        choices=("bilinear", "guided"),
        doc="guided: snap the upsampled edge to the image; bilinear: plain",
    )
    guided_radius_px: int = _opt(
        0, lo=0, hi=128, doc="0: one mask-logit cell (frame width / logit width)"
    )
    guided_eps: float = _opt(
        1e-2, lo=1e-8, hi=1.0, doc="guided filter regularisation; smaller follows edges closer"
    )
    guided_strength: float = _opt(
        1.0, lo=0.0, hi=8.0, doc="how hard uncertain edges snap to image edges"
    )
    fill_holes_px2: int = _opt(0, lo=0, hi=10**9, doc="fill holes up to this area (px²); 0 off")
    remove_specks_px2: int = _opt(
        0, lo=0, hi=10**9, doc="remove islands up to this area (px²); 0 off"
    )
    shift_edge_px: float = _opt(0.0, lo=-256.0, hi=256.0, doc="grow (+) or shrink (-)")
    feather_px: float = _opt(0.0, lo=0.0, hi=256.0, doc="soften the edge by this radius")
    choke: float = _opt(0.0, lo=0.0, hi=1.0, doc="contract the soft edge (0 off, 1 hard)")
    clip_black: float = _opt(
        0.0, lo=0.0, hi=1.0, doc="alpha at or below this becomes 0 (the rest is stretched); 0 off"
    )
    clip_white: float = _opt(
        1.0, lo=0.0, hi=1.0, doc="alpha at or above this becomes 1 (the rest is stretched); 1 off"
    )
    temporal_strength: float = _opt(0.0, lo=0.0, hi=1.0, doc="reduce chatter; 0 off")
    non_overlap: bool = _opt(True, doc="objects never share alpha where they meet")

    def __post_init__(self) -> None:
        if self.clip_black >= self.clip_white:
            raise ConfigError(
                f"[refine] clip_black: expected below clip_white ({self.clip_white}), "
                f"found {self.clip_black}"
            )


@dataclass(frozen=True)
class OutputConfig:
    format: str = _opt(
        "prores4444", choices=tuple(FORMATS), doc="an id from the formats table (README)"
    )
    extra_formats: tuple[str, ...] = _opt(
        (), choices=tuple(FORMATS), doc="more outputs written in the same pass"
    )
    objects: str = _opt(
        "merged", choices=("merged", "each"), doc="one merged matte, or one output per object"
    )
    alpha_mode: str = _opt(
        "straight",
        choices=("straight", "premultiplied"),
        doc="RGBA outputs: straight colour, or colour multiplied by alpha",
    )
    sidecar: bool = _opt(True, doc="write <output>.json beside every output")
    audio: bool = _opt(True, doc="carry the source's audio where the container allows")
    overlay_opacity: float = _opt(
        0.5, lo=0.0, hi=1.0, doc="preview output: strength of the object tint"
    )
    background: str = _opt(
        "",
        doc="composite output: #rrggbb, an image or a video file "
        "(looped, scaled to fill); empty is black",
    )
    exr_compression: str = _opt(
        "zip",
        choices=("zip", "piz", "dwaa", "none"),
        doc="exr-layers output: ZIP and PIZ are lossless; DWAA is smaller, lossy on the colour "
        "of exr_rgb only (alpha channels stay exact)",
    )
    exr_rgb: bool = _opt(
        False,
        doc="exr-layers output: also store the source's RGB (linear "
        "light, BT.709 transfer undone) premultiplied by the merged alpha, stored as A",
    )

    def __post_init__(self) -> None:
        text = self.background.strip()
        if text.startswith("#") and parse_colour(text) is None and not Path(text).exists():
            raise ConfigError(
                "[output] background: expected #rrggbb (six hex digits), an image or a video "
                f"file, found {self.background!r}"
            )


@dataclass(frozen=True)
class JobConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: _section_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, overrides: dict[str, dict[str, Any]]) -> JobConfig:
        """A new config with ``overrides`` (nested dict) applied and validated."""
        return build_config(merge_dicts(self.to_dict(), overrides))


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "memory": MemoryConfig,
    "refine": RefineConfig,
    "output": OutputConfig,
}


def _section_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def merge_dicts(base: dict, override: dict) -> dict:
    """Deep merge: values in ``override`` win; nested dicts merge key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(value: Any, typ: Any, where: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, found {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, found {value!r}")
        return value
    if typ is float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{where}: expected a number (finite), found {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, found {value!r}")
        return value
    if typ == tuple[str, ...]:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, found {value!r}")
        return tuple(value)
    raise ConfigError(f"{where}: unsupported option type {typ}")  # a bug in this table


def _as_typed(name: Any) -> str:
    """A section or key name as the user's file has it, its control characters escaped, so
    that the message naming it stays one line (a stray ``\\r`` in a job file)."""
    text = str(name)
    return text if text.isprintable() else repr(text)[1:-1]


def _build_section(cls: type, data: dict[str, Any], section: str) -> Any:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"[{section}] {_as_typed(key)}"
        if key not in fields:
            raise ConfigError(
                f"unknown key {where}; known keys in [{section}]: {', '.join(sorted(fields))}"
            )
        meta = fields[key].metadata
        value = _coerce(value, hints[key], where)
        choices = meta.get("choices")
        for item in value if isinstance(value, tuple) else (value,):
            if choices and item not in choices:
                raise ConfigError(f"{where}: expected one of {', '.join(choices)}, found {item!r}")
        if meta.get("lo") is not None and value < meta["lo"]:
            raise ConfigError(f"{where}: expected >= {meta['lo']}, found {value!r}")
        if meta.get("hi") is not None and value > meta["hi"]:
            raise ConfigError(f"{where}: expected <= {meta['hi']}, found {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def build_config(data: dict[str, Any]) -> JobConfig:
    """Validate a nested dict into a :class:`JobConfig`. Keys absent keep their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a table of sections, found {type(data).__name__}")
    sections = {}
    for name, body in data.items():
        if name not in SECTIONS:
            raise ConfigError(
                f"unknown section [{_as_typed(name)}]; known sections: {', '.join(SECTIONS)}"
            )
        if not isinstance(body, dict):
            raise ConfigError(f"[{name}]: expected a table, found {body!r}")
        sections[name] = _build_section(SECTIONS[name], body, name)
    return JobConfig(**sections)


def option_choices(section: str, key: str) -> list[str]:
    """The allowed values of ``[section] key`` (for the CLI's choices: one list, here)."""
    cls = SECTIONS[section]
    field_ = {f.name: f for f in dataclasses.fields(cls)}[key]
    return list(field_.metadata["choices"])


def describe_options() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, doc) for every option, for `vosfx presets show` and docs."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((section, f.name, f.default, f.metadata.get("doc", "")))
    return rows


def options_markdown() -> str:
    """The table of every option (docs/config.md is this text; a test keeps them equal)."""
    lines = ["| option | default | description |", "|---|---|---|"]
    for section, key, default, doc in describe_options():
        lines.append(f"| `[{section}] {key}` | `{default!r}` | {doc} |")
    return "\n".join(lines) + "\n"

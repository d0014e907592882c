"""Graphs cut at their attentions (and linear products), so that kernels of vosfx's run them
between ONNX Runtime's parts: the bundles' ``parts`` and ``parts-linear`` variants' names and
metadata, and :class:`AttentionParts`, which runs them; :mod:`vosfx.engine.ort_cut` cuts them.

ONNX Runtime's CPU wheel runs no operator it does not ship (a custom operator library must be
built against its C API), so the default path's graphs are cut instead: part 0 runs the graph
up to the first attention's query, key and value, the kernel of
:mod:`vosfx.engine.int16_attention` computes that attention, part 1 runs from its output to the
second attention's operands, and so on. Memory attention has 8 attentions (9 parts), the
image encoder Hiera's global attentions (3 in the tiny model, 4 heads each; its windowed
attentions stay in the parts as ONNX Runtime's products). A process loads the parts alone, not
the whole graph.

Each part's inputs and outputs keep the whole graph's tensor names. A part's metadata says
which attention follows it (``vosfx.attention``: the query, key, value and output names, the
heads and the scale, JSON). The shipped templates carry the ``parts`` variant ready-made
(:mod:`vosfx.engine.export_template`).

The ``parts-linear`` variant (:data:`LINEAR_VARIANT`) cuts the two stages at their linear
layers' products too (each MatMul with a weight, with the Add of its bias), for the int16
kernel's AMX form to compute them between the parts (:mod:`vosfx.engine.amx_linear`); a
part's metadata then says which product follows it (``vosfx.linear``: input and output names,
the weight's and bias's keys in ``<stage>.linear.json``, which says where they are). Made on
first use where that form runs, never shipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vosfx.engine.backend import Interrupt
from vosfx.errors import Cancelled, ModelError

VARIANT = "parts"
# the stages the variant cuts, where their graphs have attentions the kernel takes
STAGES = ("image_encoder", "memory_attention")
# the variant's manifest entry: part i of a stage under "<stage>.<i>"
PART_KEY = "{}.{}"
PART_FILE = "{}.part{}.onnx"
ATTENTION_KEY = "vosfx.attention"  # a part's metadata: the attention after it
# The variant cut at the linear layers' products too (MatMul with a weight, and the Add of its
# bias where one follows), for the AMX form's products between the parts
# (:mod:`vosfx.engine.amx_linear`): made on first use where that form runs, never shipped.
LINEAR_VARIANT = "parts-linear"
LINEAR_PART_FILE = "{}.linpart{}.onnx"
LINEAR_KEY = "vosfx.linear"  # a part's metadata: the linear product after it
# the variant's manifest entry of a stage's weights: a JSON index, w<i> and b<i> (the product
# after part i) -> the file, byte offset and shape of its float32s; the graph's own weights
# file where it keeps them, else WEIGHTS_BIN
WEIGHTS_KEY = "{}.weights"
WEIGHTS_FILE = "{}.linear.json"
WEIGHTS_BIN = "{}.linear.bin"
OUTPUTS_KEY = "vosfx.outputs"  # the last part's: the whole graph's outputs, in order


@dataclass(frozen=True)
class Attention:
    """One attention between two parts: its operands' and output's tensor names, its heads
    (the channels of each operand split evenly among them) and its scale."""

    query: str
    key: str
    value: str
    output: str
    heads: int
    scale: float | None  # None: 1 / sqrt(a head's channels), as the fused op's default

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.query, self.key, self.value)


@dataclass(frozen=True)
class Linear:
    """One linear product between two parts: ``output = input @ weight (+ bias)``, the
    weight and bias by their keys in the stage's weights file (bias None: none)."""

    input: str
    output: str
    weight: str
    bias: str | None

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.input,)


def linear_weights(folder: Path, entry: dict[str, str], stage: str) -> dict[str, np.ndarray]:
    """The :data:`LINEAR_VARIANT`'s weights of ``stage`` (``entry``: the variant's manifest
    entry) by their keys in the parts' metadata, float32 as the index lists them; raises
    ModelError where the index names a file outside the bundle or a file ends too soon."""
    listed = entry.get(WEIGHTS_KEY.format(stage))
    if listed is None:
        raise ModelError(f"the {LINEAR_VARIANT} variant lists no weights of {stage}")
    index = json.loads((folder / listed).read_text(encoding="utf-8"))
    found = {}
    for key, at in index.items():
        name, shape = at["file"], [int(d) for d in at["shape"]]
        if Path(name).name != name:
            raise ModelError(f"{listed}: {key} in {name!r}, not a file of the bundle")
        count = math.prod(shape)
        array = np.fromfile(folder / name, dtype="<f4", count=count, offset=int(at["offset"]))
        if array.size != count:
            raise ModelError(f"{listed}: {name} ends before {key}'s {count} weights")
        found[key] = array.reshape(shape)
    return found


def part_files(files: dict[str, str], stage: str) -> list[str]:
    """The variant's part files of ``stage`` in order (from the manifest's entry); [] where it
    has none."""
    found: list[str] = []
    while PART_KEY.format(stage, len(found)) in files:
        found.append(files[PART_KEY.format(stage, len(found))])
    return found


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Name:
    name: str


class AttentionParts:
    """A stage's graph as ONNX Runtime ``sessions`` (the variant's parts, in order) with
    ``attend(q, k, v, scale, out)`` (2-D float32 arrays, ``out`` C-contiguous) computing each
    head of the attention between each two, and ``linear(x, step)`` the linear product of a
    :class:`Linear` step (the :data:`LINEAR_VARIANT`'s parts; None where there are none);
    quacks as the one session it stands for (``run``, ``get_inputs``, ``get_outputs``,
    ``get_providers``). ``stage`` names it in messages; ``run_options``: ONNX Runtime's
    ``RunOptions`` class (an interrupt stops a part too)."""

    def __init__(
        self,
        stage: str,
        sessions: list[Any],
        attend: Any,
        run_options: Any = None,
        linear: Any = None,
    ) -> None:
        self.stage, self.sessions, self._attend = stage, sessions, attend
        self._linear = linear
        self._run_options = run_options
        self.steps: list[Attention | Linear] = []
        for sess in sessions[:-1]:
            said = sess.get_modelmeta().custom_metadata_map
            if ATTENTION_KEY in said:
                self.steps.append(Attention(**json.loads(said[ATTENTION_KEY])))
            elif LINEAR_KEY in said and linear is not None:
                self.steps.append(Linear(**json.loads(said[LINEAR_KEY])))
            else:
                raise ModelError(f"a part of {stage} without its attention ({ATTENTION_KEY})")
        self._ins = [[i.name for i in s.get_inputs()] for s in sessions]
        self._outs = [[o.name for o in s.get_outputs()] for s in sessions]
        made = {o for outs in self._outs for o in outs} | {a.output for a in self.steps}
        self._inputs: list[str] = []
        for ins in self._ins:
            self._inputs.extend(i for i in ins if i not in made and i not in self._inputs)
        listed = sessions[-1].get_modelmeta().custom_metadata_map.get(OUTPUTS_KEY)
        if listed is None:
            raise ModelError(f"the last part of {stage} without its outputs ({OUTPUTS_KEY})")
        self._outputs = [_Name(name) for name in json.loads(listed)]
        # the tensors nothing reads after each step: dropped then (their memory freed)
        last_read: dict[str, int] = {}
        for k, ins in enumerate(self._ins):
            for i in ins:
                last_read[i] = k
        for k, step in enumerate(self.steps):
            for i in step.reads:
                last_read[i] = max(last_read.get(i, -1), k)
        for o in self._outputs:  # kept to the end, whichever part made them
            last_read[o.name] = len(sessions)
        self._drop: list[list[str]] = [[] for _ in sessions]
        for name, k in last_read.items():
            if k < len(sessions):
                self._drop[k].append(name)

    @property
    def attentions(self) -> list[Attention]:
        return [step for step in self.steps if isinstance(step, Attention)]

    def get_inputs(self) -> list[_Name]:
        return [_Name(i) for i in self._inputs]

    def get_outputs(self) -> list[_Name]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return self.sessions[0].get_providers()

    def run(
        self,
        names: Any,
        feeds: dict[str, Any],
        options: Any = None,
        interrupt: Interrupt | None = None,
    ) -> list[np.ndarray]:
        """The whole graph's outputs (``names`` ignored: all, in order). ``interrupt``: stops
        the part running (ONNX Runtime's terminate flag) or before the next, raising
        Cancelled."""
        env = dict(feeds)
        if interrupt is not None and self._run_options is not None:
            options = self._run_options()
            interrupt.bind(lambda: setattr(options, "terminate", True))
        for k, sess in enumerate(self.sessions):
            if interrupt is not None and interrupt.is_set:
                raise Cancelled(f"{self.stage} interrupted")
            try:
                got = sess.run(None, {i: env[i] for i in self._ins[k]}, options)
            except Exception as err:
                if interrupt is not None and interrupt.is_set:
                    raise Cancelled(f"{self.stage} interrupted") from err
                raise
            env.update(zip(self._outs[k], got, strict=True))
            if k < len(self.steps):
                step = self.steps[k]
                if isinstance(step, Linear):
                    env[step.output] = self._linear(env[step.input], step)
                else:
                    q, key, v = (env[i] for i in step.reads)
                    env[step.output] = self._attention(step, q, key, v)
            for name in self._drop[k]:
                env.pop(name, None)
        return [env[o.name] for o in self._outputs]

    def _attention(self, a: Attention, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(B, Nq, H*D) queries, (B, Nk, H*D) keys, (B, Nk, H*Dv) values -> (B, Nq, H*Dv), each
        head on its own channels; a batch of 1 on one side is shared by every batch row of the
        others (as the fused op broadcasts)."""
        batch, heads = max(q.shape[0], k.shape[0], v.shape[0]), a.heads
        depth, channels = q.shape[-1] // heads, v.shape[-1] // heads
        scale = a.scale if a.scale is not None else 1.0 / math.sqrt(depth)
        out = np.empty((batch, q.shape[1], v.shape[-1]), np.float32)
        head_out = np.empty((q.shape[1], channels), np.float32) if heads > 1 else None
        for b in range(batch):
            qb, kb, vb = q[min(b, len(q) - 1)], k[min(b, len(k) - 1)], v[min(b, len(v) - 1)]
            if head_out is None:
                self._attend(qb, kb, vb, scale, out[b])
                continue
            for h in range(heads):
                d, c = slice(h * depth, (h + 1) * depth), slice(h * channels, (h + 1) * channels)
                self._attend(qb[:, d], kb[:, d], vb[:, c], scale, head_out)
                out[b, :, c] = head_out
        return out

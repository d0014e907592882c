"""Export weightless ONNX graph structures ("templates") that vosfx ships in the wheel.

A template is the bundle of :mod:`vosfx.engine.export` for one SAM 2 architecture and image
size with every weight taken out: each graph's initializers are external data in
``<stage>.bin`` at a recorded offset, and ``template.json`` says, for each, which checkpoint
tensor fills it (or which shipped constant: RoPE tables and resize weights, which depend on the
image size only). :mod:`vosfx.engine.template` fills them from a checkpoint read by
:mod:`vosfx.models.torchfile`, so a user without torch gets the same graphs the exporter would
have written.

How a graph initializer is tied to a checkpoint tensor, without trusting names (the stage
modules rename submodules, memory attention is a deep copy): before export every checkpoint
tensor of the model is set to distinct seeded random values, so each initializer's bytes equal
exactly one checkpoint tensor or none. Anything that equals none is a constant of the
architecture and size. A constant computed *from* a weight (a folded transpose, the prompt
encoder's dense positional encoding) would be baked wrongly, so:

- the graphs are exported without torch's constant folding (ONNX Runtime folds the same
  subgraphs when it loads a session, so the run time is the same);
- the decoder's dense positional encoding, a buffer computed from the prompt encoder's
  Gaussian matrix, is recomputed inside the traced forward;
- tests fill a template with a second, differently seeded checkpoint and compare every graph
  output with a plain export of that checkpoint.

Needs torch, sam2 and onnx (the ``torch`` extra). ``python -m vosfx.engine.export_template``
regenerates the shipped templates.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vosfx.engine.template import TEMPLATE_FORMAT, TEMPLATES, template_name

ALIGN = 64  # byte alignment of each initializer in <stage>.bin
SEED = 1234
SHIPPED = (  # (sam2 config, image size): the templates in the wheel
    ("configs/sam2.1/sam2.1_hiera_t.yaml", 1024),
    ("configs/sam2.1/sam2.1_hiera_s.yaml", 1024),
    ("configs/sam2.1/sam2.1_hiera_b+.yaml", 1024),
    ("configs/sam2.1/sam2.1_hiera_l.yaml", 1024),
)

Progress = Callable[[str], None]


def _distinct_weights(net) -> dict[str, str]:
    """Give every checkpoint tensor distinct seeded values; return {sha256 of bytes: name}."""
    import torch

    gen = torch.Generator().manual_seed(SEED)
    by_hash: dict[str, str] = {}
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.02)
            digest = hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()
            if digest in by_hash:  # cannot happen with distinct random draws, but never guess
                raise RuntimeError(f"{name} and {by_hash[digest]} hold the same bytes")
            by_hash[digest] = name
    return by_hash


class _LiveDensePE:
    """During tracing, the decoder's ``dense_pe`` buffer is recomputed from the prompt
    encoder's weights (traced ops) instead of being baked as a constant."""

    def __init__(self, decoder) -> None:
        self.decoder = decoder

    def __enter__(self):
        self.saved = self.decoder._buffers["dense_pe"]
        return self

    def hook(self, module, args):
        self.decoder._buffers["dense_pe"] = self.decoder.prompt_encoder.get_dense_pe()

    def __exit__(self, *exc) -> None:
        self.decoder._buffers["dense_pe"] = self.saved


def export_template(
    config: str, image_size: int, out_dir: str | Path, progress: Progress | None = None
) -> Path:
    """Write the template for ``config`` at ``image_size`` into ``out_dir/<name>/``."""
    import onnx
    import torch

    from vosfx._version import __version__
    from vosfx.engine.export import OPSET, _io, export_spec, model_attrs
    from vosfx.engine.export_stages import stage_specs
    from vosfx.models.cache import sha256_file
    from vosfx.models.checkpoint import build_model

    say = progress or (lambda _msg: None)
    name = template_name(config, image_size)
    folder = Path(out_dir) / name
    tmp = folder.with_name(name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    net = build_model(config, image_size=image_size).float().eval()
    net.binarize_mask_from_pts_for_mem_enc = True
    by_hash = _distinct_weights(net)
    layout = {k: [list(v.shape), "float32"] for k, v in net.state_dict().items()}
    constants: dict[str, Any] = {}
    graphs = {}
    for spec in stage_specs(net):
        say(f"exporting {name} {spec.name}")
        file = tmp / f"{spec.name}.onnx"
        decoder = getattr(spec.module, "stage", spec.module)
        decoder = getattr(decoder, "decoder", decoder)
        live = _LiveDensePE(decoder) if "dense_pe" in getattr(decoder, "_buffers", {}) else None
        handle = spec.module.register_forward_pre_hook(live.hook) if live else None
        if live:
            live.__enter__()
        try:
            model = export_spec(spec, file, fold=False)
        finally:
            if live is not None and handle is not None:
                live.__exit__()
                handle.remove()
        onnx.checker.check_model(model)
        inits = _externalise(model, spec.name, by_hash, constants)
        file.write_bytes(model.SerializeToString())
        graphs[spec.name] = {
            "file": file.name,
            "data": f"{spec.name}.bin",
            "sha256": sha256_file(file),
            "initializers": inits,
            "inputs": _io(model.graph.input),
            "outputs": _io(model.graph.output),
        }
    import numpy as np

    with open(tmp / "constants.npz", "wb") as fh:
        np.savez_compressed(fh, **constants)
    attrs = model_attrs(net)
    variants = _variants(tmp, attrs)
    meta = {
        "format": TEMPLATE_FORMAT,
        "config": config,
        "image_size": int(image_size),
        "mem_mask_scale": float(net.sigmoid_scale_for_mem_enc),
        "mem_mask_bias": float(net.sigmoid_bias_for_mem_enc),
        "opset": OPSET,
        "vosfx_version": __version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "exporter": "torch.onnx.export(dynamo=False, do_constant_folding=False)",
        "attrs": attrs,
        "layout": layout,
        "graphs": graphs,
        "variants": variants,
    }
    (tmp / "template.json").write_text(
        json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _variants(folder: Path, attrs: dict) -> dict[str, dict[str, str]]:
    """The variants a template carries ready-made, written into ``folder`` beside its graphs:
    ``cpu`` (:mod:`vosfx.engine.ort_attention`) and ``parts`` (:mod:`vosfx.engine.ort_parts`),
    whose graphs read the weights files of memory attention (and of the image encoder), so a
    filled template has them without the onnx package."""
    from vosfx.engine import ort_cut, ort_parts
    from vosfx.engine.ort_attention import write_variant

    return {
        "cpu": write_variant(folder, "memory_attention.onnx", {"attrs": attrs}),
        ort_parts.VARIANT: ort_cut.write_variant(
            folder, {stage: f"{stage}.onnx" for stage in ort_parts.STAGES}
        ),
    }


def _externalise(
    model, stage: str, by_hash: dict[str, str], constants: dict[str, Any]
) -> list[list]:
    """Move every initializer of ``model`` to external data in ``<stage>.bin`` (big Constant
    nodes are initializers already: :func:`vosfx.engine.export_constants.share_constants`); return
    ``[[name, "ckpt"|"const", key, offset, nbytes], ...]``."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    table, placed, offset = [], {}, 0
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        raw = arr.tobytes()
        digest = hashlib.sha256(raw).hexdigest()
        source, key = ("ckpt", by_hash[digest]) if digest in by_hash else ("const", digest[:16])
        if source == "const":
            constants[key] = arr
        if (source, key) not in placed:
            placed[(source, key)] = offset
            offset += -(-len(raw) // ALIGN) * ALIGN
        table.append([init.name, source, key, placed[(source, key)], len(raw)])
        init.ClearField("raw_data")
        for f in (
            "float_data",
            "int32_data",
            "int64_data",
            "double_data",
            "uint64_data",
            "string_data",
        ):
            init.ClearField(f)
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        for k, v in (
            ("location", f"{stage}.bin"),
            ("offset", str(placed[(source, key)])),
            ("length", str(len(raw))),
        ):
            entry = init.external_data.add()
            entry.key, entry.value = k, v
    return table


def main(argv: list[str] | None = None) -> None:
    """Regenerate the shipped templates (all, or those whose name contains an argument)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    for config, size in SHIPPED:
        name = template_name(config, size)
        if args and not any(a in name for a in args):
            continue
        export_template(config, size, TEMPLATES, progress=print)


if __name__ == "__main__":
    main()

"""The linear layers' products in the int16 kernel's AMX form (vosfx/engine/amx_linear.py) and
the bundle's parts-linear variant that runs them between ONNX Runtime's parts: the arithmetic
with the tile instructions emulated (no AMX CPU here), the cut graphs against the whole ones,
and the default's choice."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_int16_attention import _bf16, _emulated_or_skip

from vosfx.engine import amx_linear, ort_cut, ort_parts
from vosfx.engine import int16_attention as ka
from vosfx.errors import BackendError


def _triples(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The form's arithmetic in numpy: x and w each split into bfloat16 hi and lo, the product
    hi.hi + hi.lo + lo.hi (float64 here), plus the bias."""
    x_hi, w_hi = _bf16(x), _bf16(w)
    x_lo, w_lo = _bf16(x - x_hi), _bf16(w - w_hi)
    x_hi, x_lo, w_hi, w_lo = (a.astype(np.float64) for a in (x_hi, x_lo, w_hi, w_lo))
    out = x_hi @ w_hi + x_hi @ w_lo + x_lo @ w_hi
    return out if b is None else out + b


@pytest.mark.parametrize(
    "shape, depth, outputs, bias",
    [
        ((1,), 1, 1, False),  # one of everything
        ((37,), 100, 50, True),  # nothing a multiple of a tile
        ((2, 9, 7), 96, 288, True),  # Hiera's qkv, batched leading dims, 126 rows
        ((300,), 768, 64, False),  # deep: 24 steps of 32 channels, rows past a block of 128
        ((129,), 64, 256, True),  # memory attention's key projection, one row past a block
    ],
)
def test_the_products_compute_their_arithmetic(shape, depth, outputs, bias):
    """Within float32's summation of the form's own arithmetic (emulated in numpy), and within
    ~3e-6 of |x| |w| of the exact product (median; float32's own is ~1e-7: the split keeps
    ~16 bits of each operand), for shapes that are not multiples of the tiles'."""
    _emulated_or_skip()
    rng = np.random.default_rng(depth + outputs)
    x = rng.standard_normal((*shape, depth)).astype(np.float32)
    w = (rng.standard_normal((depth, outputs)) / np.sqrt(depth)).astype(np.float32)
    b = rng.standard_normal(outputs).astype(np.float32) if bias else None
    got = amx_linear.linear(x, amx_linear.pack(w, b, emulated=True), threads=2)
    assert got.shape == (*shape, outputs) and got.dtype == np.float32
    rows = x.reshape(-1, depth)
    size = np.linalg.norm(rows, axis=1)[:, None] * np.linalg.norm(w, axis=0)[None, :]
    own = (got.reshape(-1, outputs) - _triples(rows, w, b)) / size
    assert np.abs(own).max() < 1e-6  # float32 sums (and the bias), 1e-7 of each term
    exact = rows.astype(np.float64) @ w.astype(np.float64) + (0 if b is None else b)
    off = np.abs(got.reshape(-1, outputs) - exact) / size
    assert off.max() < 2e-5  # one product: each operand to ~2^-17
    if depth > 1:  # a sum's errors partly cancel
        assert np.median(off) < 3e-6


def test_threads_and_blocks_change_nothing_and_out_is_filled():
    """The outputs are the same bits on any number of threads and with any block of rows a
    thread takes at a time (the measure picks one per CPU: it must not pick the results)."""
    _emulated_or_skip()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((700, 96)).astype(np.float32)
    packed = amx_linear.pack(rng.standard_normal((96, 40)).astype(np.float32), None, emulated=True)
    one = amx_linear.linear(x, packed, threads=1)
    out = np.full((700, 40), np.nan, np.float32)
    assert amx_linear.linear(x, packed, threads=5, out=out) is out
    assert np.array_equal(one, out)
    for block in ka.LINEAR_BLOCKS:  # 700 rows: a part block at the end for each
        assert np.array_equal(one, amx_linear.linear(x, packed, threads=2, block=block))
    with pytest.raises(ValueError, match=r"block must be one of \(32, 64, 128, 256\), found 48"):
        amx_linear.linear(x, packed, threads=2, block=48)


def test_the_measure_times_every_block_against_numpy():
    """gain() runs the form on its shapes in every block, on every CPU the process may use,
    and numpy's product beside it (here the emulated tiles, several times slower than numpy's
    float32: under the bar), once a process."""
    from vosfx.engine.int8_attention import cpu_count

    _emulated_or_skip()
    amx_linear.gain.cache_clear()
    calls = []
    real = amx_linear.linear

    def counted(x, packed, **kw):
        calls.append((x.shape, kw["block"]))
        assert kw["threads"] == cpu_count()
        return real(x, packed, **kw)

    try:
        amx_linear.linear = counted
        measured = amx_linear.gain(emulated=True)
        assert amx_linear.gain(emulated=True) is measured  # once
    finally:
        amx_linear.linear = real
        amx_linear.gain.cache_clear()
    assert measured.block in ka.LINEAR_BLOCKS
    assert 0 < measured.ratio < amx_linear.WORTH  # emulated: ~0.2x numpy's
    shapes = [(rows, depth) for rows, depth, _ in amx_linear.PROBES]
    want = {(shape, block) for shape in shapes for block in ka.LINEAR_BLOCKS}
    assert set(calls) == want and len(calls) == 4 * len(want)  # warm-up + best of 3


def test_inputs_it_does_not_take_are_refused():
    _emulated_or_skip()
    w = np.ones((8, 4), np.float32)
    packed = amx_linear.pack(w, None, emulated=True)
    with pytest.raises(ValueError, match="the input has 7 channels, the weight 8"):
        amx_linear.linear(np.ones((3, 7), np.float32), packed, threads=1)
    with pytest.raises(ValueError, match=r"out must be C-contiguous float32 \(3, 4\)"):
        amx_linear.linear(np.ones((3, 8), np.float32), packed, threads=1, out=np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"the bias must be \(4,\), found \(3,\)"):
        amx_linear.pack(w, np.ones(3, np.float32), emulated=True)
    with pytest.raises(ValueError, match=r"must be \(depth, outputs\), found \(8,\)"):
        amx_linear.pack(np.ones(8, np.float32), None, emulated=True)


def test_a_cpu_without_amx_refuses_the_real_build():
    """The build that runs the tile instructions refuses to on a CPU that lacks them (the C
    side asks the CPU and Linux for the tiles first), rather than faulting."""
    try:
        real = ka.library()
    except ka.Unavailable as err:
        pytest.skip(f"the kernel cannot be built here: {err}")
    if real.vosfx_int16_attention_supported(ka.FORMS["amx"][0]):
        pytest.skip("this CPU has AMX: tested by test_the_products_on_this_cpu")
    packed = amx_linear.pack(np.ones((8, 4), np.float32))
    with pytest.raises(amx_linear.Unavailable, match="this CPU lacks AMX-BF16"):
        amx_linear.linear(np.ones((3, 8), np.float32), packed, threads=1)


def test_the_products_on_this_cpu():
    """On a CPU with AMX, the hardware's products: the self check (which covers them) passes,
    and they agree with the emulation."""
    try:
        runs = ka.supported("amx")
    except ka.Unavailable as err:
        pytest.skip(f"the kernel cannot be built here: {err}")
    if not runs:
        pytest.skip("this CPU lacks AMX-BF16 (the products are tested emulated above)")
    assert ka.checked("amx") is None
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 200)).astype(np.float32)
    w, b = rng.standard_normal((200, 70)).astype(np.float32), np.ones(70, np.float32)
    got = amx_linear.linear(x, amx_linear.pack(w, b), threads=2)
    want = amx_linear.linear(x, amx_linear.pack(w, b, emulated=True), threads=2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_the_switch(monkeypatch):
    monkeypatch.setenv("VOSFX_AMX_LINEAR", "off")
    assert amx_linear.switched_off()
    assert amx_linear.why_unused() == "turned off (VOSFX_AMX_LINEAR=off)"
    monkeypatch.setenv("VOSFX_AMX_LINEAR", "1")
    assert not amx_linear.switched_off()
    monkeypatch.setenv("VOSFX_AMX_LINEAR", "maybe")
    with pytest.raises(BackendError, match=r"VOSFX_AMX_LINEAR: expected 0 \(off\) or 1 .*'maybe'"):
        amx_linear.why_unused()


def test_it_follows_the_attentions_form_and_its_measure(monkeypatch):
    """Used where the int16 kernel runs its attentions in the AMX form and the products
    measured worth it, and not elsewhere."""
    monkeypatch.delenv("VOSFX_AMX_LINEAR", raising=False)
    monkeypatch.setattr(ka, "form", lambda worth_it=True: "amx")
    monkeypatch.setattr(amx_linear, "gain", lambda: amx_linear.Gain(2.1, 64))
    assert amx_linear.why_unused() is None
    monkeypatch.setattr(amx_linear, "gain", lambda: amx_linear.Gain(1.12, 64))
    assert amx_linear.why_unused() == (
        "its products ran 1.12x numpy's float32 products here, under the 1.5x the default "
        "takes them from"
    )

    def out_of_memory():
        raise MemoryError("AMX linear product: out of memory")

    monkeypatch.setattr(amx_linear, "gain", out_of_memory)
    assert amx_linear.why_unused() == (
        "its products could not be measured: AMX linear product: out of memory"
    )
    monkeypatch.setattr(ka, "form", lambda worth_it=True: "avx512")
    assert amx_linear.why_unused() == "the int16 kernel runs in its AVX512_VNNI form, not AMX's"

    def lacking(worth_it=True):
        raise ka.Unavailable("this CPU lacks AVX512_VNNI")

    monkeypatch.setattr(ka, "form", lacking)
    assert amx_linear.why_unused() == (
        "the int16 kernel does not run here: this CPU lacks AVX512_VNNI"
    )


# --- the parts-linear variant ------------------------------------------------------------------


@pytest.fixture(scope="module")
def linear_bundle(tmp_path_factory):
    """A copy of the test bundle with the parts-linear variant."""
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.onnx_bundle import exported
    from vosfx.engine.variants import add_variants

    folder = tmp_path_factory.mktemp("linear") / "bundle"
    shutil.copytree(exported()[2], folder)
    add_variants(folder, ("parts-linear",), lambda _msg: None)
    return folder


def _exact_parts(folder, stage):
    """The stage's parts-linear parts with float64 attentions and products between them, and
    the whole graph's session."""
    import onnxruntime as ort
    from test_int16_attention import _exact

    man = json.loads((folder / "manifest.json").read_text())
    entry = man["variants"][ort_parts.LINEAR_VARIANT]
    files = ort_parts.part_files(entry, stage)
    weights = ort_parts.linear_weights(folder, entry, stage)
    sessions = [
        ort.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"]) for f in files
    ]

    def attend(q, k, v, scale, out):
        out[:] = _exact(q, k, v, scale)

    def linear(x, step):
        y = x.astype(np.float64) @ weights[step.weight].astype(np.float64)
        return (y if step.bias is None else y + weights[step.bias]).astype(np.float32)

    parts = ort_parts.AttentionParts(stage, sessions, attend, ort.RunOptions, linear)
    whole = ort.InferenceSession(
        str(folder / man["graphs"][stage]["file"]), providers=["CPUExecutionProvider"]
    )
    return parts, whole, files, weights


@pytest.mark.parametrize("stage", ["image_encoder", "memory_attention"])
def test_the_linear_parts_with_exact_steps_are_the_whole_graph(linear_bundle, stage):
    """Every linear layer's product (with its bias) is cut out, none is left in a part, a
    weight shared through Identity nodes (torch's export of layers of equal weights) is read
    directly, and the parts with float64 steps between them give the whole graph's outputs to
    float32's rounding."""
    import onnx
    from test_int16_attention import _feeds

    parts, whole, files, weights = _exact_parts(linear_bundle, stage)
    model = onnx.load(str(linear_bundle / f"{stage}.onnx"), load_external_data=False)
    initial = {t.name for t in model.graph.initializer}
    identities = {n.output[0] for n in model.graph.node if n.op_type == "Identity"}
    products = [
        n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in initial | identities
    ]
    linear = [s for s in parts.steps if isinstance(s, ort_parts.Linear)]
    assert len(linear) == len(products) > 10
    assert sum(s.bias is not None for s in linear) > len(linear) // 2
    assert len(parts.attentions) == (8 if stage == "memory_attention" else 3)
    for file in files:  # no product of a weight is left in a part
        graph = onnx.load(str(linear_bundle / file), load_external_data=False).graph
        held = {t.name for t in graph.initializer}
        assert not [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in held]
    assert set(weights) == {s.weight for s in linear} | {s.bias for s in linear if s.bias}
    if stage == "memory_attention":
        feeds = _feeds(linear_bundle, 2, 3, 8)
    else:
        size = json.loads((linear_bundle / "manifest.json").read_text())["image_size"]
        feeds = {
            "image": np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        }
    names = {i.name for i in whole.get_inputs()}
    want = whole.run(None, {k: v for k, v in feeds.items() if k in names})
    got = parts.run(
        None, {k: v for k, v in feeds.items() if k in {i.name for i in parts.get_inputs()}}
    )
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=3e-5, rtol=1e-5)


def test_the_weights_are_read_where_the_graph_keeps_them(linear_bundle, tmp_path):
    """The variant's index points into the graph's own weights file (no second copy); a graph
    with inline weights (a bundle exported before vosfx kept them apart) gets them written
    once to <stage>.linear.bin; both read back as the graph's initializers."""
    import onnx
    from onnx import numpy_helper

    man = json.loads((linear_bundle / "manifest.json").read_text())
    entry = man["variants"][ort_parts.LINEAR_VARIANT]
    index = json.loads((linear_bundle / entry["memory_attention.weights"]).read_text())
    assert {at["file"] for at in index.values()} == {"memory_attention.bin"}
    index = json.loads((linear_bundle / entry["image_encoder.weights"]).read_text())
    spare = [at for at in index.values() if at["file"] != "image_encoder.bin"]
    # the exporter's small tensors stay inline (ONNX's 1 KiB threshold): Hiera's first biases
    assert all(4 * np.prod(at["shape"]) < 1024 for at in spare) and len(spare) < len(index) / 4
    model = onnx.load(str(linear_bundle / "memory_attention.onnx"))  # its weights inline now
    onnx.save(model, str(tmp_path / "memory_attention.onnx"))
    inline = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    files = ort_cut.write_variant(
        tmp_path, {"memory_attention": "memory_attention.onnx"}, linear=True
    )
    index = json.loads((tmp_path / files["memory_attention.weights"]).read_text())
    assert {at["file"] for at in index.values()} == {"memory_attention.linear.bin"}
    got = ort_parts.linear_weights(tmp_path, files, "memory_attention")
    kept = ort_parts.linear_weights(linear_bundle, entry, "memory_attention")
    assert got.keys() == kept.keys()
    for key, array in got.items():
        assert np.array_equal(array, kept[key])
        assert any(array.shape == w.shape and np.array_equal(array, w) for w in inline.values())


def test_a_damaged_weights_index_is_refused(linear_bundle, tmp_path):
    from vosfx.errors import ModelError

    man = json.loads((linear_bundle / "manifest.json").read_text())
    entry = man["variants"][ort_parts.LINEAR_VARIANT]
    index = json.loads((linear_bundle / entry["memory_attention.weights"]).read_text())
    key = next(iter(index))
    for change, said in [
        ({"file": "../memory_attention.bin"}, r"not a file of the bundle"),
        ({"offset": (linear_bundle / "memory_attention.bin").stat().st_size - 8}, "ends before"),
    ]:
        shutil.copy(linear_bundle / "memory_attention.bin", tmp_path / "memory_attention.bin")
        damaged = {**index, key: {**index[key], **change}}
        (tmp_path / "index.json").write_text(json.dumps(damaged))
        with pytest.raises(ModelError, match=said):
            ort_parts.linear_weights(
                tmp_path, {"memory_attention.weights": "index.json"}, "memory_attention"
            )


def test_the_variant_is_made_where_the_form_runs(monkeypatch):
    """automatic(): the parts-linear variant with the others where asked and the onnx package
    can cut the graphs, never otherwise; asked for a bundle where the model runs fp32 on ONNX
    Runtime's CPU provider and the CPU runs the products in the AMX form."""
    import importlib.util

    from vosfx.config import ModelConfig
    from vosfx.engine import export, variants

    pytest.importorskip("onnx")
    assert variants.automatic() == variants.AUTOMATIC
    assert variants.automatic(linear=True) == (*variants.AUTOMATIC, "parts-linear")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    assert variants.automatic(linear=True) == ()
    from vosfx.engine import cpu_features

    monkeypatch.setattr(amx_linear, "why_unused", lambda: None)
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: frozenset({"amx_bf16", "avx512f"}))
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert export._amx_linear(ModelConfig())  # auto backend and device, fp32
    assert export._amx_linear(ModelConfig(backend="onnx", device="cpu"))
    assert not export._amx_linear(ModelConfig(precision="bf16"))
    assert not export._amx_linear(ModelConfig(backend="torch"))
    assert not export._amx_linear(ModelConfig(device="cuda"))
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: frozenset({"avx512f"}))
    assert not export._amx_linear(ModelConfig())  # told apart by Linux's flags alone
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: None)  # no /proc/cpuinfo
    assert export._amx_linear(ModelConfig())
    monkeypatch.setattr("platform.machine", lambda: "arm64")
    assert not export._amx_linear(ModelConfig())
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(amx_linear, "why_unused", lambda: "the int16 kernel runs in its ...")
    assert not export._amx_linear(ModelConfig())


@pytest.mark.parametrize("runs", [True, False], ids=["amx", "no_amx"])
def test_first_use_makes_the_variant_where_the_products_run(config_home, monkeypatch, runs):
    """The loader's path (ensure_bundle_for_config): the cached bundle gets the parts-linear
    variant once where the CPU runs the products in the AMX form (stood in for here), and
    not elsewhere (every other CPU: no cutting, no extra files)."""
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.onnx_bundle import SIZE, exported
    from vosfx.config import ModelConfig
    from vosfx.engine import export
    from vosfx.engine.bundle import bundle_dir

    ckpt, sha, folder = exported()
    cached = bundle_dir(ckpt.name, sha, SIZE)
    shutil.copytree(folder, cached)
    from vosfx.engine import cpu_features

    monkeypatch.setattr(amx_linear, "why_unused", lambda: None if runs else "no AMX here")
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    got = export.ensure_bundle_for_config(ModelConfig(checkpoint=str(ckpt), image_size=SIZE))
    assert got == cached
    entry = json.loads((cached / "manifest.json").read_text())["variants"].get("parts-linear")
    assert (entry is not None) == runs
    assert (cached / "image_encoder.linear.json").is_file() == runs
    assert (cached / "memory_attention.linpart0.onnx").is_file() == runs


def test_the_cut_benchmark_runs(linear_bundle):
    """benchmarks/linear_cut.py prints each stage's row: the default, the cut with float32
    products (and the products' share), and the AMX products where the CPU runs them, with
    what their measure at first use said."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    size = json.loads((linear_bundle / "manifest.json").read_text())["image_size"]
    done = subprocess.run(
        [sys.executable, "benchmarks/linear_cut.py", "--bundle", str(linear_bundle)]
        + ["--size", str(size), "--runs", "1"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    lines = done.stdout.splitlines()
    said = next(line for line in lines if line.startswith("AMX products: "))
    try:  # where the attentions run in the AMX form, the column is measured whatever the
        runs = ka.form() == "amx" and not amx_linear.switched_off()  # products' measure said
    except ka.Unavailable:
        runs = False
    assert (said == "AMX products: run") == runs
    measure = next(line for line in lines if line.startswith("the products' measure: "))
    assert ("numpy's float32 products" in measure) == runs
    for stage, steps in (("image_encoder", 51), ("memory_attention", 56)):
        row = next(line for line in lines if line.startswith(f"| {stage} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == str(steps)
        default, cut = float(cells[2]), float(cells[3].split()[0])
        products = float(cells[3].split("(")[1].rstrip(")"))
        assert 0 < products < cut and default > 0
        assert (cells[5] != "-") == runs


def test_the_reference_benchmark_prints_each_shape():
    """benchmarks/linear_reference.py (the basis of the measure's bar: numpy's products against
    ONNX Runtime's) prints a row for each shape, its ratio the two rates' quotient."""
    pytest.importorskip("onnx")
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "benchmarks/linear_reference.py", "--threads", "2", "--runs", "2"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    rows = [line for line in done.stdout.splitlines() if line[:3].strip("| ").isdigit()]
    shapes = [tuple(int(n) for n in r.split("|")[1].replace("->", "x").split("x")) for r in rows]
    assert set(amx_linear.PROBES) <= set(shapes) and len(shapes) == 11
    for row in rows:
        numpy_rate, ort_rate, ratio = (float(c) for c in row.strip("|").split("|")[1:])
        assert numpy_rate > 0 and ort_rate > 0
        assert ratio == pytest.approx(numpy_rate / ort_rate, rel=0.05, abs=0.01)

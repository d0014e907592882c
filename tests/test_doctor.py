"""`vosfx doctor`: one line per check, each from the module that decides the matter; what is
missing says what needs it and how to get it; a check that fails cannot hide the others."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import pytest
from click.testing import CliRunner

from vosfx.cli import cli
from vosfx.cli import doctor as doc

CHECKS = [
    "vosfx",
    "cpu",
    "onnxruntime",
    "gpu",
    "openvino",
    "--precision auto",
    "int16 attention kernel",
    "int8 attention kernel",
    "refinement loops",
    "torch",
    "encoders",
    "OpenEXR",
    "C compiler",
    "model cache",
]


def _doctor(*args: str) -> list[dict]:
    res = CliRunner().invoke(cli, ["doctor", "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_every_check_has_its_line(config_home):
    res = CliRunner().invoke(cli, ["doctor"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert [ln.split("  ")[0].strip() for ln in lines] == CHECKS
    got = _doctor()
    assert [c["check"] for c in got] == CHECKS
    assert {c["state"] for c in got} <= {"ok", "missing", "info"}
    # the fresh cache of this test holds no model, and says where it is
    cache = got[-1]
    assert cache["state"] == "ok" and str(config_home / "cache") in cache["detail"]
    assert cache["detail"].endswith("cached: none")


def test_int16_kernel_line_says_whether_memory_attention_runs_in_it(config_home, monkeypatch):
    from vosfx.engine import int16_attention

    if int16_attention.why_unavailable(worth_it=False) is not None:
        pytest.skip("the int16 attention kernel cannot run on this CPU (AVX512_VNNI)")
    form = int16_attention.form(worth_it=False)  # this CPU's first
    monkeypatch.setattr(int16_attention, "gain", lambda name="avx512": 2.01)
    monkeypatch.setattr(int16_attention, "checked", lambda name: None)
    monkeypatch.setattr(int16_attention, "attention_gain", lambda: 1.5)  # (on an AMX CPU)
    line = {c["check"]: c for c in _doctor()}["int16 attention kernel"]
    assert line["state"] == "ok"
    instructions = int16_attention.FORMS[form][1]
    assert line["detail"].startswith(f"{instructions} form, 2.01x float32's multiply-adds: the")
    monkeypatch.setattr(int16_attention, "gain", lambda name="avx512": 1.01)
    line = {c["check"]: c for c in _doctor()}["int16 attention kernel"]
    assert line["state"] == "info"
    assert "no faster than its float32 FMAs (1.01x" in line["detail"]
    monkeypatch.setattr(
        int16_attention, "why_unavailable", lambda worth_it=True: "no C compiler found (cc)"
    )
    line = {c["check"]: c for c in _doctor()}["int16 attention kernel"]
    assert line["state"] == "missing" and "slower a frame" in line["detail"]


def test_int8_kernel_line_on_an_amx_cpu_says_what_the_bf16_tiers_attentions_run_in(
    config_home, monkeypatch
):
    """On a CPU with AMX (stood in for) the int8 kernel is not the tier's: the line says
    whether the AMX bf16 attention kernel runs the tier's attentions, as measured, or why
    the query blocks do."""
    pytest.importorskip("openvino", reason="the bf16 tier runs on OpenVINO")
    from vosfx.engine import amx_attention
    from vosfx.engine import openvino_runtime as ovr

    monkeypatch.setattr(ovr, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(amx_attention, "why_unavailable", lambda threads: None)
    monkeypatch.setattr(amx_attention, "gain", lambda threads: 1.87)
    line = {c["check"]: c for c in _doctor()}["int8 attention kernel"]
    assert line["state"] == "info"
    assert line["detail"] == (
        "not used on this CPU (AMX): the bf16 tier's attentions run in the AMX bf16 attention "
        "kernel (1.87x OpenVINO's query blocks)"
    )
    said = "its attentions ran 0.90x OpenVINO's query blocks here, under the 1.2x the tier takes"
    monkeypatch.setattr(amx_attention, "why_unavailable", lambda threads: said)
    line = {c["check"]: c for c in _doctor()}["int8 attention kernel"]
    assert line["detail"] == (
        f"not used on this CPU (AMX): the bf16 tier's attentions run in OpenVINO's query "
        f"blocks ({said})"
    )


def test_int16_kernel_line_in_the_amx_form_says_whether_the_products_run_in_it(
    config_home, monkeypatch
):
    """Where the kernel runs in its AMX form (a Xeon; here its choice stood in for), the
    line says whether the linear layers' products run in it too, or why not."""
    from vosfx.engine import amx_linear, int16_attention

    monkeypatch.setattr(int16_attention, "why_unavailable", lambda worth_it=True: None)
    monkeypatch.setattr(int16_attention, "form", lambda worth_it=True: "amx")
    monkeypatch.setattr(int16_attention, "gain", lambda name="avx512": 4.87)
    monkeypatch.setattr(int16_attention, "attention_gain", lambda: 1.91)
    monkeypatch.setattr(amx_linear, "gain", lambda: amx_linear.Gain(2.345, 64))
    monkeypatch.delenv("VOSFX_AMX_LINEAR", raising=False)
    line = {c["check"]: c for c in _doctor()}["int16 attention kernel"]
    assert line["state"] == "ok"
    assert line["detail"].startswith("AMX-BF16 form, 4.87x float32's multiply-adds: the")
    assert line["detail"].endswith(
        "(fp32 on the CPU), its attentions 1.91x the AVX-512 form's; their linear layers' "
        "products too (2.35x numpy's float32 products, 64 rows a thread at a time; the onnx "
        "package cuts the graphs for them once)"
    )
    monkeypatch.setattr(amx_linear, "gain", lambda: amx_linear.Gain(1.05, 64))
    line = {c["check"]: c for c in _doctor()}["int16 attention kernel"]
    assert line["detail"].endswith(
        "; their linear layers' products not: its products ran 1.05x numpy's float32 "
        "products here, under the 1.5x the default takes them from"
    )
    monkeypatch.setenv("VOSFX_AMX_LINEAR", "0")
    assert amx_linear.switched_off()
    line = {c["check"]: c for c in _doctor()}["int16 attention kernel"]
    assert line["detail"].endswith(
        "; their linear layers' products not: turned off (VOSFX_AMX_LINEAR=0)"
    )


def test_precision_auto_line_is_what_a_run_would_take(config_home):
    from vosfx.engine.auto_precision import choose

    precision, why = choose("onnx", "auto")
    line = {c["check"]: c for c in _doctor()}["--precision auto"]
    assert line["detail"] == f"{precision} ({why})"


def test_openvino_missing_says_what_needs_it(config_home, monkeypatch):
    real_spec, real_version = importlib.util.find_spec, importlib.metadata.version

    def spec(name, *a, **k):
        return None if name == "openvino" else real_spec(name, *a, **k)

    def version(dist):
        if dist == "openvino":
            raise importlib.metadata.PackageNotFoundError(dist)
        return real_version(dist)

    monkeypatch.setattr(importlib.util, "find_spec", spec)
    monkeypatch.setattr(importlib.metadata, "version", version)
    lines = {c["check"]: c for c in _doctor()}
    assert lines["openvino"]["state"] == "missing"
    assert 'pip install "vosfx[openvino]"' in lines["openvino"]["detail"]
    assert lines["--precision auto"]["detail"].startswith("fp32 (")


def test_openexr_missing_names_the_one_format_that_needs_it(config_home, monkeypatch):
    # exr16 / exr32 are FFmpeg's encoder (PyAV); only exr-layers goes through OpenEXR
    real_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name == "OpenEXR" else real_spec(name, *a, **k),
    )
    line = {c["check"]: c for c in _doctor()}["OpenEXR"]
    assert line["state"] == "missing"
    assert "the exr-layers format and DWA-compressed EXR input need it" in line["detail"]
    assert "exr16 and exr32 outputs and other EXR input do not" in line["detail"]
    assert 'pip install "vosfx[exr]"' in line["detail"]


def test_a_missing_encoder_names_the_formats_that_need_it(config_home, monkeypatch):
    import av

    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"ffv1"})
    line = {c["check"]: c for c in _doctor()}["encoders"]
    assert line["state"] == "missing"
    assert "ffv1-matte (ffv1)" in line["detail"]
    assert "prores4444" not in line["detail"]


def test_a_failing_check_has_its_own_line_and_the_others_still_run(config_home, monkeypatch):
    def _broken():
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(doc, "CHECKS", (doc._python, _broken, doc._torch))
    got = _doctor()
    assert [c["check"] for c in got] == ["vosfx", "broken", "torch"]
    assert got[1] == {
        "check": "broken",
        "state": "missing",
        "detail": "the check failed: RuntimeError: probe exploded",
    }


def test_the_refinement_loops_line(monkeypatch):
    from vosfx.matte import kernels

    monkeypatch.setattr(kernels, "implementation", lambda: ("C", "/cache/kernels/kernels-1.so"))
    assert doc._refine_loops() == (
        "refinement loops",
        "ok",
        "C, built: /cache/kernels/kernels-1.so",
    )
    monkeypatch.setattr(kernels, "implementation", lambda: ("numba", "no C compiler found"))
    _what, state, detail = doc._refine_loops()
    assert state == "info" and detail.startswith("numba (no C compiler found): the same results")


@pytest.mark.parametrize("compiler", [None, "gcc"])
def test_the_compiler_line(monkeypatch, compiler):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(
        doc.shutil, "which", lambda name: f"/usr/bin/{name}" if name == compiler else None
    )
    _what, state, detail = doc._compiler()
    if compiler is None:
        assert state == "missing" and "vosfx plugins install ofx" in detail
    else:
        assert state == "ok" and detail.startswith("/usr/bin/gcc ")


@pytest.mark.parametrize("zig", [False, True])
def test_the_compiler_line_on_windows(monkeypatch, zig):
    """On Windows a compiler builds the OpenFX effect alone (the kernels are not built
    there), and where none is installed Zig's, from the ziglang package, is named."""
    import vosfx.ofx.build

    monkeypatch.setattr(doc.platform, "system", lambda: "Windows")
    monkeypatch.setattr(vosfx.ofx.build.native, "compiler", lambda: None)
    if not zig:  # the ziglang package not installed
        find_spec = vosfx.ofx.build.importlib.util.find_spec
        monkeypatch.setattr(
            vosfx.ofx.build.importlib.util,
            "find_spec",
            lambda name, *a: None if name == "ziglang" else find_spec(name, *a),
        )
    _what, state, detail = doc._compiler()
    if zig:
        assert state == "ok" and detail.endswith(
            "-m ziglang cc -target x86_64-windows-gnu (builds the OpenFX effect)"
        )
    else:
        assert state == "missing" and 'pip install "vosfx[ofx]"' in detail


# --- --time ------------------------------------------------------------------------------------


def test_a_time_flag_without_time_is_a_usage_error(config_home):
    res = CliRunner().invoke(cli, ["doctor", "--checkpoint", "x.pt"])
    assert res.exit_code == 2
    assert "--checkpoint is for --time" in res.output


def test_a_bad_time_flag_is_named_as_typed(config_home):
    res = CliRunner().invoke(cli, ["doctor", "--time", "--image-size", "500"])
    assert res.exit_code == 2
    assert "--image-size" in res.output and "multiple of 16" in res.output


def test_time_without_the_model_downloads_nothing_and_says_how(config_home, monkeypatch):
    from vosfx.models import download

    monkeypatch.setattr(download, "download_file", lambda *a, **k: pytest.fail("downloaded"))
    lines = _doctor("--time")
    (timing,) = [ln for ln in lines if ln["check"] == "time"]
    assert timing["state"] == "missing"
    assert "not in the cache" in timing["detail"] and "--checkpoint" in timing["detail"]


def test_time_times_each_tier_and_names_the_fastest(config_home, monkeypatch, tmp_path):
    """Each tier through the whole pipeline (the test double's engine here, slower the more
    precise); a tier the loader refuses says the loader's words; the fastest is named."""
    import time

    from fakes import FakeEngine

    from vosfx.cli import doctor_time
    from vosfx.errors import BackendError

    delay = {"fp32": 0.2, "int8": 0.05}  # apart by far more than a loaded machine's jitter
    loaded = []

    def load_engine(model):
        loaded.append(model.precision)
        if model.precision == "bf16":
            raise BackendError("--precision bf16 needs OpenVINO here (a test's refusal)")
        engine = FakeEngine(logit_fn=lambda i, o, base: time.sleep(delay[model.precision]) or base)
        if model.precision == "int8":
            engine.runtime_warnings.append("int8 ran in a slower form (a test's warning)")
        return engine

    monkeypatch.setattr("vosfx.engine.load_engine", load_engine)
    monkeypatch.setattr(doctor_time, "tiers", lambda model: ("fp32", "bf16", "int8"))
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not read: the engine is the test double")
    lines = {
        ln["check"]: ln for ln in _doctor("--time", "--checkpoint", str(ckpt), "--frames", "4")
    }
    assert loaded == ["fp32", "bf16", "int8"]
    fp32, bf16, int8 = lines["time fp32"], lines["time bf16"], lines["time int8"]
    assert fp32["state"] == int8["state"] == "ok"
    seconds = {
        k: float(v["detail"].split(" s a frame")[0]) for k, v in (("fp32", fp32), ("int8", int8))
    }
    assert 0.2 <= seconds["fp32"] < 2 and 0.05 <= seconds["int8"] < seconds["fp32"]
    assert "x fp32" in int8["detail"] and "median of frames 2-4" in int8["detail"]
    assert int8["detail"].endswith("; warning: int8 ran in a slower form (a test's warning)")
    assert "warning" not in fp32["detail"]
    assert bf16 == {
        "check": "time bf16",
        "state": "missing",
        "detail": "--precision bf16 needs OpenVINO here (a test's refusal)",
    }
    assert lines["time"]["detail"].startswith("fastest here: int8; --precision auto takes ")


def test_time_tiers_follow_the_backend_and_device(monkeypatch):
    import onnxruntime as ort

    from vosfx.cli.doctor_time import tiers
    from vosfx.config import ModelConfig

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert tiers(ModelConfig()) == ("fp32", "bf16", "int8")
    assert tiers(ModelConfig(backend="torch")) == ("fp32",)
    assert tiers(ModelConfig(device="mps")) == ("fp32",)  # Apple's GPUs run on torch
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert tiers(ModelConfig()) == ("fp32", "fp16")
    assert tiers(ModelConfig(device="cpu")) == ("fp32", "bf16", "int8")


@pytest.mark.slow
def test_time_runs_the_real_model(config_home, monkeypatch):
    """fp32 on the exported test bundle (256 px), through the loader and the pipeline."""
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.onnx_bundle import SIZE, exported
    from vosfx.cli import doctor_time
    from vosfx.engine import export

    ckpt, _, folder = exported()
    monkeypatch.setattr(export, "ensure_bundle_for_config", lambda model, progress=None: folder)
    monkeypatch.setattr(doctor_time, "tiers", lambda model: ("fp32",))
    lines = {
        ln["check"]: ln
        for ln in _doctor(
            "--time",
            "--checkpoint",
            str(ckpt),
            "--image-size",
            str(SIZE),
            "--device",
            "cpu",
            "--frames",
            "3",
        )
    }
    fp32 = lines["time fp32"]
    assert fp32["state"] == "ok", fp32
    assert float(fp32["detail"].split(" s a frame")[0]) > 0
    assert f"at {SIZE} px" in fp32["detail"]
    assert lines["time"]["detail"].startswith("fastest here: fp32")

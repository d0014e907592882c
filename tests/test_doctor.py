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
    "int8 attention kernel",
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

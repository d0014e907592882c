"""The job JSON (plugin protocol): every field validated, each message naming the field.

A host that sends a malformed job gets exit 3 and one error event, never a traceback (exit 1)
or a half-written output. The property test mutates one field of a valid job at a time into a
value the protocol does not allow; the oracle (``VALID``) is written here independently of
vosfx.job's checks."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vosfx.cli import cli
from vosfx.errors import ConfigError
from vosfx.job import job_from_dict
from vosfx.presets import list_presets

PRESETS = {p.name for p in list_presets()}

BASE_PROMPT = {"frame": 0, "points": [[10, 20]], "labels": [1]}


def base_job() -> dict:
    return {
        "version": 1,
        "input": "clip.mp4",
        "output": "out.mov",
        "presets": ["prores4444"],
        "prompts": [dict(BASE_PROMPT)],
        "start": 0,
        "end": None,
        "overwrite": False,
        "fit": False,
        "objects": None,
        "fps": None,
    }


def _int(v) -> bool:
    return type(v) is int


def _num(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _path(v) -> bool:
    return type(v) is str and v.strip() != "" and "\x00" not in v


# field -> is this value allowed there (given the rest of base_job())
VALID = {
    "version": lambda v: _int(v) and v == 1,
    "input": _path,
    "output": _path,
    "start": lambda v: v is None or (_int(v) and v >= 0),
    "end": lambda v: v is None or (_int(v) and v >= 1),
    "fps": lambda v: v is None or (_num(v) and 0 < v <= 1000),
    "overwrite": lambda v: type(v) is bool,
    "fit": lambda v: type(v) is bool,
    "objects": lambda v: (
        v is None or (type(v) is list and len(v) > 0 and all(_int(o) and o >= 1 for o in v))
    ),
    "presets": lambda v: (
        (type(v) is str and v in PRESETS)
        or (type(v) is list and all(type(p) is str and p in PRESETS for p in v))
    ),
    "overrides": lambda v: (
        v is None
        or (
            type(v) is dict
            and all(k in ("model", "memory", "refine", "output") and v[k] == {} for k in v)
        )
    ),
}
PROMPT_VALID = {
    "frame": lambda v: _int(v) and v >= 0,
    "obj_id": lambda v: v is None or (_int(v) and 1 <= v < 2**31),
    "threshold": lambda v: _int(v) and 0 <= v <= 255,
    "points": lambda v: (
        type(v) is list
        and len(v) == 1
        and type(v[0]) is list
        and len(v[0]) == 2
        and all(_num(x) for x in v[0])
    ),
    "labels": lambda v: v in ([1], [0]),
    "box": lambda v: (
        v is None
        or (
            type(v) is list
            and len(v) == 4
            and all(_num(x) for x in v)
            and v[2] > v[0]
            and v[3] > v[1]
        )
    ),
    "mask": lambda v: v is None or _path(v),
}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def malformed_jobs(draw) -> dict:
    job = base_job()
    kind = draw(st.sampled_from(["field", "prompt", "unknown", "prompt_unknown"]))
    if kind == "field":
        key = draw(st.sampled_from([*sorted(VALID), "prompts"]))
        if key == "prompts":  # not a list, empty, or prompts that are not objects or are empty
            job[key] = draw(
                st.one_of(
                    json_scalars,
                    st.lists(json_scalars, max_size=3),
                    st.just([{}]),
                    st.dictionaries(st.text(), json_scalars),
                )
            )
        else:
            job[key] = draw(json_values.filter(lambda v: not VALID[key](v)))
    elif kind == "prompt":
        key = draw(st.sampled_from(sorted(PROMPT_VALID)))
        job["prompts"][0][key] = draw(json_values.filter(lambda v: not PROMPT_VALID[key](v)))
    elif kind == "unknown":
        job[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in base_job()))] = 1
    else:
        job["prompts"][0][
            draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in PROMPT_VALID))
        ] = 1
    return job


@pytest.fixture
def jobdir(tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.mktemp("jobs")
    monkeypatch.setenv("VOSFX_CONFIG_DIR", str(folder / "config"))
    monkeypatch.setenv("VOSFX_HOME", str(folder / "cache"))
    return folder


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(job=malformed_jobs(), json_progress=st.booleans())
def test_malformed_job_exits_3_with_one_message_and_no_output(jobdir, job, json_progress):
    path = jobdir / "job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    before = sorted(p.name for p in jobdir.iterdir())
    args = ["matte", "--job", str(path)] + (["--json-progress"] if json_progress else [])
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 3, (job, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output + r.stderr
    assert sorted(p.name for p in jobdir.iterdir()) == before  # nothing written
    if json_progress:
        lines = r.stdout.splitlines()
        assert len(lines) == 1, r.stdout
        event = json.loads(lines[0])
        assert event["event"] == "error" and event["kind"] == "config"
        assert event["exit_code"] == 3 and event["message"]
    else:
        assert r.stdout == ""
        assert r.stderr.startswith("vosfx: error: ") and len(r.stderr.splitlines()) == 1


# one row per field: the value, and the field name the message must carry
ROWS = [
    ("start", "x", "job.start"),
    ("start", -1, "job.start"),
    ("start", 1.5, "job.start"),
    ("start", True, "job.start"),
    ("end", "10", "job.end"),
    ("end", 0, "job.end"),
    ("fps", "24", "job.fps"),
    ("fps", 0, "job.fps"),
    ("fps", float("inf"), "job.fps"),
    ("fps", -24, "job.fps"),
    ("overwrite", "yes", "job.overwrite"),
    ("fit", 1, "job.fit"),
    ("objects", 5, "job.objects"),
    ("objects", [0], "job.objects"),
    ("objects", ["1"], "job.objects"),
    ("names", ["dog"], "job.names"),
    ("names", {"0": "dog"}, "job.names"),
    ("names", {"dog": "1"}, "job.names"),
    ("names", {"1": ""}, "job.names"),
    ("names", {"1": 5}, "job.names"),
    ("presets", 5, "job.presets"),
    ("presets", [1], "job.presets"),
    ("overrides", [], "job.overrides"),
    ("overrides", {"refine": {"feather_px": float("nan")}}, "feather_px"),
    ("overrides", {"nope": {}}, "job.overrides"),
    ("input", 5, "job.input"),
    ("input", "", "job.input"),
    ("output", None, "job.output"),
    ("version", 2, "job.version"),
    ("version", True, "job.version"),
    ("prompts", [], "job.prompts"),
    ("prompts", {}, "job.prompts"),
]
PROMPT_ROWS = [
    ("box", 5, "job.prompts[0].box"),
    ("box", [1, 2, 3], "job.prompts[0].box"),
    ("box", [10, 10, 5, 20], "job.prompts[0].box"),
    ("box", ["a", 1, 2, 3], "job.prompts[0].box"),
    ("frame", "0", "job.prompts[0].frame"),
    ("frame", -2, "job.prompts[0].frame"),
    ("obj_id", "a", "job.prompts[0].obj_id"),
    ("obj_id", 0, "job.prompts[0].obj_id"),
    ("threshold", 300, "job.prompts[0].threshold"),
    ("points", 5, "job.prompts[0].points"),
    ("points", [[1, "y"]], "job.prompts[0].points[0]"),
    ("labels", [2], "job.prompts[0].labels"),
    ("labels", "1", "job.prompts[0].labels"),
    ("labels", [1, 1], "job.prompts[0].labels"),
    ("mask", 5, "job.prompts[0].mask"),
    ("mask", "", "job.prompts[0].mask"),
    ("prior", 5, "job.prompts[0].prior"),
    ("prior", "", "job.prompts[0].prior"),
]


@pytest.mark.parametrize(("key", "value", "named"), ROWS)
def test_each_job_field_is_checked_and_named(jobdir, key, value, named):
    job = base_job()
    job[key] = value
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        job_from_dict(job, base=jobdir)


@pytest.mark.parametrize(("key", "value", "named"), PROMPT_ROWS)
def test_each_prompt_field_is_checked_and_named(jobdir, key, value, named):
    job = base_job()
    job["prompts"][0][key] = value
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        job_from_dict(job, base=jobdir)


def test_a_valid_job_round_trips(jobdir):
    job = base_job() | {"start": 2, "end": 9, "fps": 25, "objects": [1, 2], "overwrite": True}
    job["prompts"].append({"frame": 3, "obj_id": 2, "box": [1, 2, 30, 40]})
    parsed = job_from_dict(job, base=jobdir)
    assert (parsed.start, parsed.end, parsed.fps, parsed.objects) == (2, 9, 25.0, (1, 2))
    assert parsed.prompts[1].box == (1.0, 2.0, 30.0, 40.0) and parsed.prompts[1].obj_id == 2
    assert parsed.input == str(jobdir / "clip.mp4")


def test_a_prompts_prior_travels_with_the_job_and_is_read_safely(jobdir):
    """A correction's prior: a path beside the job, absolute in the sidecar's record, only
    with points or a box, and read as a plain array (no pickles) of (s, s) finite logits;
    anything else is one PromptError naming the prompt and the file."""
    import numpy as np

    from vosfx.errors import PromptError
    from vosfx.io.prompts import load_prior

    np.save(jobdir / "prior.npy", np.full((64, 64), 3.0, np.float32))
    job = base_job()
    job["prompts"] = [{"frame": 4, "points": [[5, 6]], "labels": [0], "prior": "prior.npy"}]
    parsed = job_from_dict(job, base=jobdir)
    assert parsed.prompts[0].prior == str(jobdir / "prior.npy")
    assert parsed.to_record(jobdir)["prompts"][0]["prior"] == str(jobdir / "prior.npy")
    assert load_prior(parsed.prompts[0].prior).shape == (64, 64)
    job["prompts"] = [{"frame": 4, "mask": "m.png", "prior": "prior.npy"}]
    with pytest.raises(ConfigError, match=r"job.prompts\[0\].prior: a prior goes with points"):
        job_from_dict(job, base=jobdir)
    np.save(jobdir / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(jobdir / "flat.npy", np.zeros(64, np.float32))
    np.save(jobdir / "nan.npy", np.full((8, 8), np.nan, np.float32))
    (jobdir / "text.npy").write_text("not an array")
    for name, says in [
        ("missing.npy", "no such file"),
        ("objects.npy", "expected a .npy array"),
        ("text.npy", "expected a .npy array"),
        ("flat.npy", "(s, s) finite float mask logits, found float32 (64,)"),
        ("nan.npy", "(s, s) finite float mask logits"),
    ]:
        with pytest.raises(PromptError, match=f"job.prompts\\[2\\]: prior .*{name}") as err:
            load_prior(str(jobdir / name), "job.prompts[2]: ")
        assert says in str(err.value)


def test_a_correction_prompt_is_points_or_a_box_and_round_trips(jobdir):
    """``"correction": true`` (rule d, docs/session.md): kept through to_dict; with a mask or a
    prior, or not a boolean, one ConfigError naming the field."""
    job = base_job()
    job["prompts"].append({"frame": 6, "points": [[5, 6]], "labels": [0], "correction": True})
    parsed = job_from_dict(job, base=jobdir)
    assert [p.correction for p in parsed.prompts] == [False, True]
    job["prompts"] = [p.to_dict() for p in parsed.prompts]
    assert job_from_dict(job, base=jobdir).prompts == parsed.prompts
    assert "correction" not in parsed.prompts[0].to_dict()
    for bad, says in [
        ({"frame": 6, "mask": "m.png", "correction": True}, "a correction is points or a box"),
        (
            {"frame": 6, "points": [[5, 6]], "prior": "p.npy", "correction": True},
            "takes no prior",
        ),
        ({"frame": 6, "points": [[5, 6]], "correction": "yes"}, "expected true or false"),
    ]:
        job["prompts"] = [bad]
        with pytest.raises(ConfigError, match=rf"job.prompts\[0\].correction: .*{says}"):
            job_from_dict(job, base=jobdir)


@pytest.mark.parametrize("content", [b"\xff\xfe{", b"[" * 100_000, b"{", b"null"])
def test_unreadable_job_file_is_a_config_error(jobdir, content):
    path = jobdir / "job.json"
    path.write_bytes(content)
    r = CliRunner().invoke(cli, ["matte", "--job", str(path)])
    assert r.exit_code == 3, (r.output, r.exception)
    assert "Traceback" not in r.output and r.stderr.startswith("vosfx: error: job")


def test_file_paths_in_overrides_resolve_against_the_job_folder(jobdir, tmp_path, monkeypatch):
    """A checkpoint or background image named relative in a job file or manifest row is beside
    it, like the input and masks: not in whatever folder the render was started from (a batch
    started from the home folder, a Ray actor's working directory)."""
    monkeypatch.chdir(tmp_path)
    job = base_job() | {
        "overrides": {
            "model": {"checkpoint": "ckpt/ft.pt"},
            "output": {"background": "plates/bg.png"},
        }
    }
    parsed = job_from_dict(job, base=jobdir)
    assert parsed.config.model.checkpoint == str(jobdir / "ckpt" / "ft.pt")
    assert parsed.config.output.background == str(jobdir / "plates" / "bg.png")
    colour = base_job() | {"overrides": {"output": {"background": "#ff8800"}}}
    assert job_from_dict(colour, base=jobdir).config.output.background == "#ff8800"
    absolute = base_job() | {"overrides": {"model": {"checkpoint": "/data/ft.pt"}}}
    assert job_from_dict(absolute, base=jobdir).config.model.checkpoint == "/data/ft.pt"
    # a CLI flag's path stays relative to where the command runs
    cli = job_from_dict(base_job(), base=jobdir, cli_overrides={"model": {"checkpoint": "here.pt"}})
    assert cli.config.model.checkpoint == "here.pt"


def test_a_job_file_with_a_byte_order_mark_loads(jobdir):
    from vosfx.job import load_job_file

    path = jobdir / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(base_job()).encode())
    assert load_job_file(path) == job_from_dict(base_job(), base=jobdir)

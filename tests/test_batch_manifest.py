"""Manifest forms, templates and validation (vosfx.batch.manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_fakes import clip_with_mask

from vosfx.batch.manifest import expand_template, load_manifest
from vosfx.errors import BatchError, ConfigError


@pytest.fixture
def clips(tmp_path, config_home):
    for name in ("a", "b"):
        clip_with_mask(tmp_path, name, n=4)
    (tmp_path / "out").mkdir()
    return tmp_path


def _write_forms(folder: Path) -> dict[str, Path]:
    toml = folder / "m.toml"
    toml.write_text(
        '[defaults]\noutput = "out/{stem}.{preset}.mkv"\npresets = ["matte-ffv1"]\n'
        '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\n'
        '[[jobs]]\ninput = "b.mp4"\nprompts = [{frame = 0, mask = "b.mask.png"}]\n'
        "overrides = {refine = {feather_px = 2.0}}\n"
    )
    csv = folder / "m.csv"
    csv.write_text(
        "input,mask,output,presets,refine.feather_px\n"
        "a.mp4,a.mask.png,out/{stem}.{preset}.mkv,matte-ffv1,\n"
        "b.mp4,b.mask.png,out/{stem}.{preset}.mkv,matte-ffv1,2.0\n"
    )
    jsonl = folder / "m.jsonl"
    rows = [
        {
            "input": "a.mp4",
            "mask": "a.mask.png",
            "output": "out/{stem}.{preset}.mkv",
            "preset": "matte-ffv1",
        },
        {
            "input": "b.mp4",
            "prompts": [{"mask": "b.mask.png"}],
            "presets": ["matte-ffv1"],
            "output": "out/{stem}.{preset}.mkv",
            "overrides": {"refine": {"feather_px": 2}},
        },
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"toml": toml, "csv": csv, "jsonl": jsonl}


def test_three_forms_give_the_same_jobs(clips):
    forms = _write_forms(clips)
    loaded = {k: load_manifest(p) for k, p in forms.items()}
    ref = [(bj.id, bj.job.to_dict()) for bj in loaded["toml"].jobs]
    assert [i for i, _ in ref] == ["a", "b"]
    assert ref[0][1]["output"] == str(clips / "out" / "a.matte-ffv1.mkv")
    assert ref[1][1]["config"]["refine"]["feather_px"] == 2.0
    assert ref[0][1]["config"]["refine"]["feather_px"] == 0.0
    assert ref[0][1]["config"]["output"]["format"] == "ffv1-matte"
    for kind in ("csv", "jsonl"):
        assert [(bj.id, bj.job.to_dict()) for bj in loaded[kind].jobs] == ref, kind


def test_folder_with_mask_rule(clips):
    m = load_manifest(clips, defaults={"output": "out/{stem}_matte.mkv", "presets": ["matte-ffv1"]})
    assert [bj.id for bj in m.jobs] == ["a", "b"]
    assert m.jobs[0].job.prompts[0].mask == str(clips / "a.mask.png")
    (clips / "b.mask.png").unlink()
    with pytest.raises(BatchError, match=r"b\.mask\.png does not exist"):
        load_manifest(clips, defaults={"output": "out/{stem}_matte.mkv"})


@pytest.mark.parametrize(
    "template, presets, expected",
    [
        ("out/{stem}.mov", (), "out/clip.mov"),
        ("{parent}/{name}.{ext}.matte", (), "shots/clip.mp4.mp4.matte"),
        ("m/{id}_{index:03d}.mkv", (), "m/job7_007.mkv"),
        ("{stem}.{preset}.mov", ("prores4444", "fast"), "clip.prores4444+fast.mov"),
        ("{stem}.{preset}.mov", (), "clip.default.mov"),
        ("{stem}_{obj}.mov", (), "clip_{obj}.mov"),
    ],
)
def test_expand_template(template, presets, expected):
    got = expand_template(
        template, input_path="shots/clip.mp4", job_id="job7", index=7, presets=presets
    )
    assert got == expected


def test_parent_is_the_folder_of_a_relative_input(clips, monkeypatch):
    """{parent} of an input named relative to the manifest (and of every clip in folder
    mode) is the folder it is in, as for an absolute input; it was empty, so
    `mattes/{parent}/{stem}.mov` put every job in `mattes/`."""
    monkeypatch.chdir(clips / "out")  # not the manifest's folder: the manifest's counts
    shots = clips.name
    (clips / "m.csv").write_text(
        "input,mask,output\n"
        "a.mp4,a.mask.png,out/{parent}/{stem}.mov\n"
        f"{clips / 'b.mp4'},b.mask.png,out/{{parent}}/{{stem}}.mov\n"
    )
    outputs = [bj.job.output for bj in load_manifest(clips / "m.csv").jobs]
    assert outputs == [str(clips / "out" / shots / "a.mov"), str(clips / "out" / shots / "b.mov")]
    folder = load_manifest(clips, defaults={"output": str(clips / "out/{parent}_{stem}.mov")})
    assert [bj.job.output for bj in folder.jobs] == [
        str(clips / "out" / f"{shots}_a.mov"),
        str(clips / "out" / f"{shots}_b.mov"),
    ]


@pytest.mark.parametrize(
    "input_path, expected",
    [
        ("shots/sh010/shot.%04d.exr", "shots/sh010/sh010/exr"),  # was "shots/sh010/shot./"
        ("shots/sh010/%05d.png", "shots/sh010/sh010/png"),
        ("shots/sh010", "shots/sh010/sh010/"),  # a folder: its frames' type is not read here
    ],
)
def test_an_image_sequence_is_named_as_its_folder_in_templates(input_path, expected):
    """A pattern and a folder of the same frames give the same {parent}, {stem} and {name}
    (the folder's); a pattern's {ext} is its frames'."""
    got = expand_template(
        "{parent}/{stem}/{name}/{ext}", input_path=input_path, job_id="j", index=0, presets=()
    )
    assert got == expected


@pytest.mark.parametrize("template", ["{stme}.mov", "{stem", "{index:q}.mov"])
def test_bad_template(template):
    with pytest.raises(ConfigError, match="template"):
        expand_template(template, input_path="a.mp4", job_id="a", index=0, presets=())


def test_sequence_input_stem():
    got = expand_template(
        "{stem}.mov", input_path="/x/shot12/%05d.png", job_id="j", index=0, presets=()
    )
    assert got == "shot12.mov"


def test_every_problem_reported_before_any_work(clips):
    bad = clips / "bad.toml"
    bad.write_text(
        '[defaults]\npresets = ["matte-ffv1"]\n'
        '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\noutput = "out/x.mkv"\ncolour = 1\n'
        '[[jobs]]\ninput = "missing.mp4"\nmask = "a.mask.png"\noutput = "out/m.mkv"\n'
        '[[jobs]]\ninput = "a.mp4"\nmask = "nomask.png"\noutput = "out/n.mkv"\n'
        '[[jobs]]\nid = "one"\ninput = "a.mp4"\nmask = "a.mask.png"\noutput = "out/same.mkv"\n'
        '[[jobs]]\nid = "two"\ninput = "b.mp4"\nmask = "b.mask.png"\noutput = "out/same.mkv"\n'
        '[[jobs]]\ninput = "b.mp4"\nmask = "b.mask.png"\noutput = "a.mp4"\n'
        '[[jobs]]\ninput = "b.mp4"\nmask = "b.mask.png"\noutput = "out/{obj}.mkv"\n'
        '[[jobs]]\ninput = "b.mp4"\nmask = "b.mask.png"\noutput = "out/p.mkv"\n'
        'presets = ["no-such-preset"]\n'
        '[[jobs]]\ninput = "b.mp4"\nmask = "b.mask.png"\noutput = "out/q.mov"\n'
    )
    with pytest.raises(BatchError) as err:
        load_manifest(bad)
    text = str(err.value)
    for needle in (
        "unknown key(s) ['colour']",
        "missing.mp4 does not exist",
        "nomask.png does not exist",
        "out/same.mkv is also written by",
        "would overwrite the input",
        "{obj}",
        "no-such-preset",
        "out/q.mov: ffv1-matte writes a .mkv movie, not .mov: name it .mkv",
        "nothing was run",
    ):
        assert needle in text, needle
    assert not (clips / ".vosfx-batch").exists()
    assert list((clips / "out").iterdir()) == []


_ONE_ROW = '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\noutput = "o.mkv"\n'


@pytest.mark.parametrize(
    "text, needle",
    [
        ('version = 2\n[[jobs]]\ninput = "a.mp4"', "version 2"),
        ("jobs = 3", "expected [[jobs]]"),
        ("[batch]\nx = 1", "unknown top-level key"),
        ('[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"', "no 'output'"),
        ('[[jobs]]\nid = "a b"\ninput = "a.mp4"\nmask = "a.mask.png"\noutput="o.mkv"', "id 'a b'"),
        ("not toml = = 1", "not valid TOML"),
        (
            _ONE_ROW + 'preset = "fast"\npresets = ["png16"]',
            "give 'preset' or 'presets', not both",
        ),
        (
            _ONE_ROW + "prompts = [{frame = 0, points = [[1, 1]]}]",
            "give 'mask' or 'prompts', not both",
        ),
    ],
)
def test_toml_errors(clips, text, needle):
    path = clips / "e.toml"
    path.write_text(text)
    with pytest.raises(BatchError) as err:
        load_manifest(path)
    assert needle in str(err.value)


def test_allow_missing_and_ids(clips):
    path = clips / "m.jsonl"
    rows = [
        {"input": n, "mask": "a.mask.png", "output": f"out/{i}.mov"}
        for i, n in enumerate(["a.mp4", "gone.mp4", "sub/a.mp4"])
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(BatchError, match="gone.mp4 does not exist"):
        load_manifest(path)
    m = load_manifest(path, allow_missing=True)
    assert [bj.id for bj in m.jobs] == ["a", "gone", "a-2"]


def test_bad_csv_and_jsonl(clips):
    (clips / "x.jsonl").write_text('{"input": "a.mp4"}\n[1, 2]\n')
    with pytest.raises(BatchError, match="line 2: expected a JSON object"):
        load_manifest(clips / "x.jsonl")
    (clips / "x.csv").write_text("input,overrides\na.mp4,{bad json}\n")
    with pytest.raises(BatchError, match="column 'overrides'"):
        load_manifest(clips / "x.csv")
    (clips / "x.yaml").write_text("a: 1")
    with pytest.raises(BatchError, match="expected a .toml"):
        load_manifest(clips / "x.yaml")


def test_a_model_typo_or_missing_checkpoint_is_found_before_any_work(clips):
    """A model every job of a row needs is checked with the rest of the manifest: a typo in
    one row must not cost that shot the night."""
    bad = clips / "models.toml"
    bad.write_text(
        '[defaults]\npresets = ["matte-ffv1"]\n'
        '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\noutput = "out/a.mkv"\n'
        'overrides = {model = {name = "sam2.1-tinny"}}\n'
        '[[jobs]]\ninput = "b.mp4"\nmask = "b.mask.png"\noutput = "out/b.mkv"\n'
        'overrides = {model = {checkpoint = "ckpt/gone.pt"}}\n'
    )
    with pytest.raises(BatchError) as err:
        load_manifest(bad)
    text = str(err.value)
    assert "models.toml jobs[0]" in text and "unknown model 'sam2.1-tinny'" in text
    assert "models.toml jobs[1]" in text and str(clips / "ckpt" / "gone.pt") in text
    assert "2 problem(s)" in text


@pytest.mark.parametrize("suffix", ["csv", "toml", "jsonl"])
def test_a_manifest_saved_with_a_byte_order_mark_reads_as_without(clips, suffix):
    """Excel's "CSV UTF-8" and Windows editors start the file with a BOM: the first column is
    still ``input``, not an unknown key ``\\ufeffinput``."""
    plain = _write_forms(clips)[suffix]
    bom = clips / f"bom.{suffix}"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert [bj.job for bj in load_manifest(bom).jobs] == [
        bj.job for bj in load_manifest(plain).jobs
    ]


def test_an_output_among_an_image_folder_inputs_frames_is_found_before_any_job(clips):
    """Refused by the render itself too; a batch now says it while validating, with every
    other problem, instead of failing that job after the others ran."""
    from media import make_sequence

    make_sequence(clips / "seq", n=3)
    bad = clips / "seq.toml"
    bad.write_text(
        '[[jobs]]\ninput = "seq"\nmask = "a.mask.png"\noutput = "seq/matte.mov"\n'
        '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\noutput = "out/a.mov"\n'
    )
    with pytest.raises(BatchError) as err:
        load_manifest(bad)
    (line,) = [ln for ln in str(err.value).splitlines() if "seq.toml jobs[0]:" in ln]
    assert "is inside the input's image folder" in line, line


def test_no_job_writes_over_a_composite_background(clips):
    """A composite's background is read like a mask: another row's output may not replace it."""
    import cv2
    import numpy as np

    cv2.imwrite(str(clips / "plate.png"), np.zeros((48, 64, 3), np.uint8))
    bad = clips / "bg.toml"
    bad.write_text(
        '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\noutput = "out/a.mov"\n'
        'overrides = {output = {format = "composite", background = "plate.png"}}\n'
        '[[jobs]]\ninput = "b.mp4"\nmask = "b.mask.png"\noutput = "plate.png"\n'
        'overrides = {output = {format = "png8"}}\n'
    )
    with pytest.raises(BatchError) as err:
        load_manifest(bad)
    (line,) = [ln for ln in str(err.value).splitlines() if "bg.toml jobs[1]:" in ln]
    assert line.endswith("plate.png would overwrite the input of bg.toml jobs[0]"), line


def test_per_object_file_names_are_part_of_the_duplicate_output_check(clips):
    """``objects = "each"`` writes one file per object: ``<stem>_obj<id>`` when the path has no
    ``{obj}``. Those names must not be another row's output, the same per-object names of
    another row, or an input."""
    clip_with_mask(clips, "c_obj1", n=4)
    each = 'overrides = {output = {objects = "each"}}\n'

    def row(out, *, each_obj=True, clip="a"):
        return f'[[jobs]]\ninput = "{clip}.mp4"\nmask = "{clip}.mask.png"\noutput = "{out}"\n' + (
            each if each_obj else ""
        )

    bad = clips / "each.toml"
    bad.write_text(
        '[defaults]\npresets = ["matte-ffv1"]\n'
        + row("out/a.mkv")
        + row("out/a_obj1.mkv", each_obj=False, clip="b")  # object 1 of the row above
        + row("out/s.mkv")
        + row("out/s_obj{obj}.mkv", clip="b")  # the same per-object names
        + row("out/t{obj}.mkv")
        + row("out/t1{obj}.mkv", clip="b")  # t1{2} is t{12}
        + row("c.mp4", clip="b")  # object 1: c_obj1.mp4, the next row's input
        + row("out/c1.mkv", each_obj=False, clip="c_obj1")
        + row("out/u.mkv")  # fine: u_obj<id>.mkv is not u_obj.mkv, v{obj}, w{obj}
        + row("out/u_obj.mkv", each_obj=False, clip="b")
        + row("out/v{obj}.mkv")
        + row("out/w{obj}.mkv", clip="b")
        + row("out/x0{obj}.mkv")  # fine: ids have no leading zero
        + row("out/x{obj}.mkv", clip="b")
    )
    with pytest.raises(BatchError) as err:
        load_manifest(bad)
    text = str(err.value)
    # each clash once for the output, once for its sidecar; and c.mp4 is no name for an
    # ffv1-matte movie
    assert "8 problem(s)" in text, text
    for where, needle in (
        ("jobs[0]", "a_obj1.mkv, also written by each.toml jobs[1]"),
        ("jobs[3]", "s_obj{obj}.mkv"),
        ("jobs[5]", "t1{obj}.mkv"),
        ("jobs[6]", "would overwrite the input of each.toml jobs[7]"),
        ("jobs[6]", "ffv1-matte writes a .mkv movie, not .mp4"),
    ):
        lines = [ln for ln in text.splitlines() if f"each.toml {where}:" in ln]
        assert any(needle in ln for ln in lines), (where, text)


@pytest.mark.parametrize(
    "a, b, overlap",
    [
        ("o/s_obj{obj}.mkv", "o/s_obj{obj}.mkv", True),
        ("o/t{obj}.mkv", "o/t1{obj}.mkv", True),  # t + 12 = t1 + 2
        ("o/t{obj}1.mkv", "o/t{obj}.mkv", True),  # t + 1 + 1 = t + 11
        ("o/t1{obj}.mkv", "o/t{obj}2.mkv", True),  # t1 + 2 + 2 = t + 12 + 2
        ("o/x0{obj}.mkv", "o/x{obj}.mkv", False),  # an id never starts with 0
        ("o/v{obj}.mkv", "o/w{obj}.mkv", False),
        ("o/a{obj}.mkv", "o/a{obj}.mov", False),
        ("o/{obj}/m.mkv", "o/1{obj}/m.mkv", True),
    ],
)
def test_per_object_templates_overlap(a, b, overlap):
    from vosfx.batch.manifest import _templates_overlap

    assert _templates_overlap(a, b) is overlap
    assert _templates_overlap(b, a) is overlap


def test_a_csv_row_merges_its_overrides_cell_and_section_key_columns(clips):
    """An ``overrides`` cell after a ``section.key`` column must not replace it: different
    settings merge, the same one given twice is a problem naming the row and both columns."""
    path = clips / "o.csv"
    path.write_text(
        "input,mask,output,presets,refine.feather_px,overrides\n"
        'a.mp4,a.mask.png,out/a.mkv,matte-ffv1,2.5,"{""refine"": {""temporal_strength"": 0.5}}"\n'
    )
    job = load_manifest(path).jobs[0].job
    assert job.config.refine.feather_px == 2.5 and job.config.refine.temporal_strength == 0.5
    for header, cell, other in (
        ("refine.feather_px,overrides", '3,"{""refine"": {""feather_px"": 1}}"', "overrides"),
        ("overrides,refine.feather_px", '"{""refine"": {""feather_px"": 1}}",3', "overrides"),
        ("refine.feather_px, refine.feather_px", "3,1", "refine.feather_px"),
        ("presets,preset", "matte-ffv1,matte-ffv1", "presets"),
    ):
        path.write_text(f"input,mask,output,{header}\na.mp4,a.mask.png,out/a.mkv,{cell}\n")
        with pytest.raises(BatchError) as err:
            load_manifest(path)
        text = str(err.value)
        assert "o.csv line 2" in text and "twice" in text, text
        first, second = (c.strip() for c in header.split(","))
        assert f"{first!r}" in text and f"{second!r}" in text and other in text, text


def test_a_row_replaces_the_defaults_key_families_and_merges_their_overrides(clips):
    path = clips / "m.toml"
    path.write_text(
        '[defaults]\noutput = "out/{stem}.{preset}"\npresets = ["matte-ffv1"]\n'
        "prompts = [{frame = 0, points = [[5, 5]]}]\n"
        "overrides = {model = {image_size = 512}, refine = {feather_px = 1.0}}\n"
        '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\npreset = "png16"\n'
        "overrides = {refine = {feather_px = 2.0}}\n"
        '[[jobs]]\ninput = "b.mp4"\n'
    )
    a, b = (bj.job for bj in load_manifest(path).jobs)
    # the row's preset and mask, not the defaults' presets and prompts
    assert a.presets == ("png16",) and a.output.endswith("a.png16")
    assert [p.mask for p in a.prompts] == [str(clips / "a.mask.png")]
    # overrides merged setting by setting: the row's feather, the defaults' image size
    assert a.config.refine.feather_px == 2.0 and a.config.model.image_size == 512
    # a row without them keeps the defaults whole
    assert b.presets == ("matte-ffv1",) and b.config.refine.feather_px == 1.0
    assert b.prompts[0].points is not None and b.prompts[0].mask is None


def test_a_rows_unknown_preset_is_found_even_beside_default_presets(clips):
    path = clips / "m.toml"
    path.write_text(
        '[defaults]\noutput = "out/{stem}.mkv"\npresets = ["matte-ffv1"]\n'
        '[[jobs]]\ninput = "a.mp4"\nmask = "a.mask.png"\npreset = "prores-typo"\n'
    )
    with pytest.raises(BatchError, match="prores-typo"):
        load_manifest(path)


def test_a_job_writing_over_the_manifest_itself_is_refused(clips):
    # a JSON manifest "seq.json" whose job renders the PNG sequence folder "seq": its sidecar
    # is seq.json, the manifest itself (the studio's saved jobs are JSON manifests too)
    manifest = clips / "seq.json"
    row = {"input": "a.mp4", "mask": "a.mask.png", "output": "seq", "preset": "png16"}
    manifest.write_text(json.dumps(row) + "\n")
    with pytest.raises(BatchError) as err:
        load_manifest(manifest)
    text = str(err.value)
    assert "1 problem(s)" in text and "sidecar " in text and "seq.json would" in text, text
    assert "would overwrite the manifest itself" in text, text
    row["output"] = "seq_out"  # another name: fine
    manifest.write_text(json.dumps(row) + "\n")
    assert len(load_manifest(manifest).jobs) == 1


def test_every_problem_is_listed_once(clips):
    """An unknown key in [defaults] is said once (it was said again for every row, hiding
    their own problems), and one problem of a row does not hide the next (an unknown preset
    hid a missing mask)."""
    bad = clips / "all.toml"
    bad.write_text(
        '[defaults]\nbogus = 1\noutput = "out/{stem}.mov"\n'
        '[[jobs]]\ninput = "a.mp4"\nmask = "nomask.png"\npresets = ["no-such-preset"]\n'
        '[[jobs]]\ninput = "b.mp4"\nmask = "b.mask.png"\ncolour = "red"\n'
        '[[jobs]]\ninput = "gone.mp4"\nmask = "b.mask.png"\n'
    )
    with pytest.raises(BatchError) as err:
        load_manifest(bad)
    lines = str(err.value).splitlines()[1:]
    assert sum("bogus" in ln for ln in lines) == 1, lines
    assert any("jobs[0]" in ln and "no-such-preset" in ln for ln in lines), lines
    assert any("jobs[0]" in ln and "nomask.png does not exist" in ln for ln in lines), lines
    assert any("jobs[1]" in ln and "'colour'" in ln for ln in lines), lines
    assert any("jobs[2]" in ln and "gone.mp4 does not exist" in ln for ln in lines), lines
    assert len(lines) == 5, lines

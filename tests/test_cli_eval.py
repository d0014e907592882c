"""`vosfx eval` and `vosfx bench` (vosfx.cli.eval), with vosfx.eval.report and .bench under
them: synthetic datasets, the fake engine, real DAVIS frames, random-weight SAM 2."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared_data
from fakes import FakeEngine, shift_logits
from test_datasets import make_davis

from vosfx.cli import cli
from vosfx.config import MemoryConfig
from vosfx.errors import InputError
from vosfx.eval import metrics as m
from vosfx.eval.datasets import read_label_png, write_label_png
from vosfx.eval.report import evaluate_dirs
from vosfx.pipeline.bench import run_bench


def _copy_preds(gt_root, pred_root, edit=None):
    """Predictions = the ground truth, optionally edited per frame: edit(i, labels)."""
    for seq_dir in sorted((gt_root / "Annotations").iterdir()):
        out = pred_root / seq_dir.name
        out.mkdir(parents=True)
        for i, png in enumerate(sorted(seq_dir.glob("*.png"))):
            lab = read_label_png(png)
            lab[lab == 255] = 0
            write_label_png(out / png.name, edit(i, lab) if edit else lab)


def test_eval_perfect_predictions_score_one_in_every_format(tmp_path):
    make_davis(tmp_path / "gt", n=6)
    _copy_preds(tmp_path / "gt", tmp_path / "pred")
    args = ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    res = CliRunner().invoke(cli, [*args, "--format", "json", "--out", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["summary"]["J&F"] == 1.0 and data["summary"]["J-Decay"] == 0.0
    assert [(o["object"], o["frames"]) for o in data["objects"]] == [(1, 4), (2, 4)]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t" / "eval.csv").read_text())))
    assert [(r["sequence"], r["object"]) for r in rows] == [
        ("toy", "1"),
        ("toy", "2"),
        ("toy", "mean"),
        ("ALL", "mean"),
    ]
    assert float(rows[-1]["J&F"]) == 1.0
    md = (tmp_path / "t" / "eval.md").read_text()
    assert md.startswith("| sequence | object | frames | J&F |") and "| ALL | mean | 8 |" in md


def test_eval_matches_direct_metrics_on_a_perturbed_object(tmp_path):
    labels = make_davis(tmp_path / "gt", n=6)

    def drop_object_two_late(i, lab):
        if i >= 4:
            lab[lab == 2] = 0  # missed on frame 4 (frame 5 is the last: not scored)
        return lab

    _copy_preds(tmp_path / "gt", tmp_path / "pred", drop_object_two_late)
    rep = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "davis")
    two = next(o for o in rep.objects if o.obj_id == 2)
    # frames 1-4 scored; object 2 absent in the gt of frame 1 (both empty: 1), present 2-3
    # (perfect: 1), missed on 4 (0)
    assert two.scores["J"] == pytest.approx(3 / 4) and two.scores["F"] == pytest.approx(3 / 4)
    assert two.scores["J-Recall"] == pytest.approx(3 / 4)
    one = next(o for o in rep.objects if o.obj_id == 1)
    assert one.scores["J&F"] == 1.0
    assert rep.summary["J"] == pytest.approx((1 + 3 / 4) / 2)
    gt4 = labels[4] == 2
    assert m.j_score(np.zeros_like(gt4), gt4) == 0.0


def test_eval_mosev2_disappearance_and_reappearance(tmp_path):
    gt_dir = tmp_path / "gt" / "seq"
    pred_dir = tmp_path / "pred" / "seq"
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir(parents=True)
    present = [1, 1, 1, 0, 0, 1, 1, 1]  # leaves at frame 3, back at 5
    for i, p in enumerate(present):
        gt = np.zeros((240, 320), np.uint8)  # 0.008 × diagonal = 3.2 px: F 4 px, Ḟ 3 px
        gt[10:30, 10:40] = p
        pred = gt.copy()
        if i == 3:
            pred[10:30, 10:40] = 1  # keeps predicting the object after it left
        write_label_png(gt_dir / f"{i:05d}.png", gt)
        write_label_png(pred_dir / f"{i:05d}.png", pred)
    res = CliRunner().invoke(
        cli,
        [
            "eval",
            "--pred",
            str(tmp_path / "pred"),
            "--gt",
            str(tmp_path / "gt"),
            "--metrics",
            "mosev2",
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)["summary"]
    # scored frames 1-6; disappearance segment = frames 3-4: J = 1/601 then 1, F-dot 0 then 1
    assert s["J&Ḟ_d"] == pytest.approx(((1 / 601 + 1) / 2 + 0.5) / 2)
    assert s["J&Ḟ_r"] == 1.0  # frames 5-6 perfect
    assert s["J&Ḟ"] == pytest.approx((s["J"] + s["Ḟ"]) / 2) and s["J&Ḟ"] < 1.0


def test_eval_reports_missing_frames_and_sequences(tmp_path):
    make_davis(tmp_path / "gt")
    _copy_preds(tmp_path / "gt", tmp_path / "pred")
    (tmp_path / "pred" / "toy" / "00002.png").unlink()
    with pytest.raises(InputError, match="00002.png"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    with pytest.raises(InputError, match="no ground truth for sequence 'zzz'"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt", sequences=["zzz"])
    with pytest.raises(InputError, match="protocol"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "kitti")


# --- bench ---------------------------------------------------------------------------------------


def _static_dataset(root, n=5):
    """Frames whose object never moves: a tracker that repeats its prompt is exact."""
    (root / "JPEGImages" / "still").mkdir(parents=True)
    (root / "Annotations" / "still").mkdir(parents=True)
    import cv2

    for i in range(n):
        cv2.imwrite(
            str(root / "JPEGImages" / "still" / f"{i:05d}.jpg"), np.zeros((64, 64, 3), np.uint8)
        )
        lab = np.zeros((64, 64), np.uint8)
        lab[16:48, 8:40] = 1
        lab[50:60, 50:60] = 3
        write_label_png(root / "Annotations" / "still" / f"{i:05d}.png", lab)


def test_run_bench_with_fake_engine(tmp_path):
    _static_dataset(tmp_path / "ds")
    engine = FakeEngine()
    rep = run_bench(
        tmp_path / "ds", engine, memory_cfg=MemoryConfig(policy="sam2"), out_dir=tmp_path / "out"
    )
    assert rep.summary_row()["J&F"] == 1.0 and rep.frames == 5 and rep.fps > 0
    assert rep.peak_rss_mib > 10 and rep.memory_policy == "sam2"
    (session,) = engine.sessions
    # frame 0 holds the prompts (computed, not tracked); frames 1-4 are tracked, once each
    assert session.closed and session.steps == [1, 2, 3, 4] and not engine.closed
    assert sorted(f for _o, f in session.prompted) == [0] * len(session.prompted)
    pred = read_label_png(tmp_path / "out" / "still" / "00003.png")
    assert set(np.unique(pred)) == {0, 1, 3}  # object ids survive into the label PNG
    drift = run_bench(
        tmp_path / "ds",
        FakeEngine(shift_logits(2)),
        memory_cfg=MemoryConfig(),
        out_dir=tmp_path / "out2",
    )
    assert drift.summary_row()["J"] < 0.9  # 2 low-res px = 2 frame px per frame of drift


def test_bench_cli_compares_policies_with_fake_engine(tmp_path, monkeypatch):
    import vosfx.cli.eval as cli_eval

    _static_dataset(tmp_path / "ds", n=4)
    engines = []

    def fake_load(model_cfg):
        engines.append(FakeEngine(model_id=model_cfg.name))
        return engines[-1]

    monkeypatch.setattr(cli_eval, "open_engine", fake_load)
    res = CliRunner().invoke(
        cli,
        [
            "bench",
            str(tmp_path / "ds"),
            "--memory",
            "sam2",
            "--memory",
            "rcms",
            "--out",
            str(tmp_path / "o"),
            "--format",
            "csv",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["config"] for r in rows] == ["sam2.1-tiny/sam2/auto", "sam2.1-tiny/rcms/auto"]
    assert all(float(r["J&F"]) == 1.0 and float(r["fps"]) > 0 for r in rows)
    assert len(engines) == 1 and engines[0].closed  # loaded once per model, then closed
    saved = json.loads((tmp_path / "o" / "bench.json").read_text())
    assert saved["machine"]["cpus"] and len(saved["runs"]) == 2
    bad = CliRunner().invoke(cli, ["bench", str(tmp_path / "ds"), "--memory", "lru"])
    assert bad.exit_code == 2 and "--memory" in bad.output and "'lru'" in bad.output, bad.output


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--device", "gpu"], "'--device'"),
        (["--backend", "tensorflow"], "'--backend'"),
        (["--image-size", "500"], "--image-size"),
        (["--image-size", "8192"], "--image-size"),
        (["--memory", "sam2,xmem"], "--memory"),
        # one file for two models: both rows would run it under different names
        (["-m", "sam2.1-tiny", "-m", "sam2.1-large", "--checkpoint", "x.pt"], "--checkpoint"),
    ],
)
def test_bench_bad_flag_values_are_usage_errors_before_any_model_loads(
    tmp_path, monkeypatch, args, flag
):
    """README: a bad option value exits 2, its message names the flag as typed (before, a bad
    --device or --image-size exited 3 blaming "--memory rcms+shots --backend auto")."""
    import vosfx.cli.eval as cli_eval

    _static_dataset(tmp_path / "ds", n=3)
    opened = []
    monkeypatch.setattr(cli_eval, "open_engine", lambda cfg: opened.append(cfg) or FakeEngine())
    res = CliRunner().invoke(cli, ["bench", str(tmp_path / "ds"), *args])
    assert res.exit_code == 2, res.output
    assert f"Invalid value for {flag}" in res.output and "[model]" not in res.output, res.output
    assert opened == []


def test_bench_real_davis_sequence_with_fake_engine(tmp_path):
    davis = shared_data("davis")
    rep = run_bench(
        davis, FakeEngine(), memory_cfg=MemoryConfig(), out_dir=tmp_path, sequences=["car-shadow"]
    )
    assert rep.frames == 40 and len(list((tmp_path / "car-shadow").glob("*.png"))) == 40
    gt0 = read_label_png(davis / "Annotations" / "car-shadow" / "00000.png") == 1
    pred0 = read_label_png(tmp_path / "car-shadow" / "00000.png") == 1
    assert m.j_score(pred0, gt0) > 0.85  # the prompt through 64×64 logits and back
    # repeating frame 0 while the car drives away: J decays, but the report agrees with a
    # direct computation on the files it wrote
    obj = rep.evaluation.objects[0]
    direct = np.mean(
        [
            m.j_score(
                read_label_png(tmp_path / "car-shadow" / f"{i:05d}.png") == 1,
                read_label_png(davis / "Annotations" / "car-shadow" / f"{i:05d}.png") == 1,
            )
            for i in range(1, 39)
        ]
    )
    assert obj.scores["J"] == pytest.approx(direct) and obj.scores["J-Decay"] > 0.1


@pytest.mark.slow
def test_bench_random_weight_sam2_end_to_end(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from ckpt import make_checkpoint

    from vosfx.config import ModelConfig
    from vosfx.engine import load_engine

    src = shared_data("davis")
    for sub, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        (tmp_path / "ds" / sub / "libby").mkdir(parents=True)
        for i in range(3):
            shutil.copy(src / sub / "libby" / f"{i:05d}.{ext}", tmp_path / "ds" / sub / "libby")
    # the official file name tells the loader which config fits (weights are random)
    ckpt, _ = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    engine = load_engine(
        ModelConfig(backend="torch", device="cpu", image_size=256, checkpoint=str(ckpt))
    )
    try:
        rep = run_bench(
            tmp_path / "ds",
            engine,
            memory_cfg=MemoryConfig(policy="sam2"),
            out_dir=tmp_path / "out",
            protocol="mosev2",
        )
    finally:
        engine.close()
    # random weights: no accuracy claim, only that every stage ran and was measured
    assert rep.frames == 3 and rep.fps > 0 and rep.peak_rss_mib > 100
    row = rep.summary_row()
    assert 0.0 <= row["J&Ḟ"] <= 1.0 and row["J&Ḟ_d"] is None
    assert len(list((tmp_path / "out" / "libby").glob("*.png"))) == 3


# --- label conventions a researcher's files follow: real DAVIS masks ------------------------------


def _davis_masks(seq, n=12):
    """The first ``n`` ground-truth masks of a real DAVIS sequence, (H, W) bool each."""
    gt = shared_data("davis", "Annotations", seq)
    return [read_label_png(gt / f"{i:05d}.png") == 1 for i in range(n)]


def _iou(p, g):
    """Independent of vosfx.eval.metrics: DAVIS's J with 1 for an empty union."""
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else np.logical_and(p, g).sum() / union


def test_eval_reads_binary_0_255_masks_as_one_object(tmp_path):
    """DAVIS 2016's annotations (and `cv2.imwrite(mask * 255)`) are 0/255 binary masks: one
    object, not an all-void ground truth scored as nothing."""
    import cv2

    masks = _davis_masks("blackswan")
    for i, g in enumerate(masks):
        (tmp_path / "gt" / "blackswan").mkdir(parents=True, exist_ok=True)
        (tmp_path / "pred" / "blackswan").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "gt" / "blackswan" / f"{i:05d}.png"), g.astype(np.uint8) * 255)
        shifted = np.roll(g, 4 * i, axis=1)  # drifts further right each frame
        cv2.imwrite(str(tmp_path / "pred" / "blackswan" / f"{i:05d}.png"), shifted * np.uint8(255))
    rep = evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    assert [o.obj_id for o in rep.objects] == [1]
    expected = np.mean([_iou(np.roll(g, 4 * i, axis=1), g) for i, g in enumerate(masks)][1:-1])
    assert rep.summary["J"] == pytest.approx(expected) and 0.2 < expected < 0.9


def test_eval_refuses_prediction_labels_no_ground_truth_object_has(tmp_path):
    """A 0/255 prediction against palette ground truth (object 1) scored J = 0 in silence;
    the DAVIS toolkit refuses an id above the ground truth's objects, and so does vosfx."""
    import cv2

    masks = _davis_masks("car-shadow", n=5)
    (tmp_path / "pred" / "car-shadow").mkdir(parents=True)
    for i, g in enumerate(masks):
        cv2.imwrite(str(tmp_path / "pred" / "car-shadow" / f"{i:05d}.png"), g * np.uint8(255))
    gt = shared_data("davis")
    out = tmp_path / "tables"
    args = ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(gt), "-s", "car-shadow"]
    res = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert res.exit_code == InputError.exit_code, res.output
    assert "00001.png" in res.output and "255" in res.output and "0/255" in res.output
    assert not out.exists()


def test_eval_refuses_ground_truth_without_any_object(tmp_path):
    for root in ("gt", "pred"):
        (tmp_path / root / "empty").mkdir(parents=True)
        for i in range(4):
            write_label_png(tmp_path / root / "empty" / f"{i:05d}.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="no object"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt")


def test_eval_refuses_to_score_only_the_prompt_of_a_sparse_ground_truth(tmp_path):
    """A test-set layout annotates the first frame only: scoring that frame (the prompt)
    reported a perfect 1.0 for any tracker."""
    masks = _davis_masks("libby", n=10)
    (tmp_path / "gt" / "libby").mkdir(parents=True)
    (tmp_path / "pred" / "libby").mkdir(parents=True)
    write_label_png(tmp_path / "gt" / "libby" / "00000.png", masks[0].astype(np.uint8))
    for i in range(10):
        write_label_png(tmp_path / "pred" / "libby" / f"{i:05d}.png", masks[0].astype(np.uint8))
    with pytest.raises(InputError, match="1 annotated frame"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt")


def test_bench_says_how_the_model_runs_when_it_loads_it(monkeypatch, caplog):
    """`vosfx bench` holds the engine outside a run: the engine's warnings (a provider
    missing, a tier in a slower form) are logged once as it loads the model."""
    import logging

    import vosfx.engine
    from vosfx.cli.eval import open_engine
    from vosfx.config import ModelConfig

    engine = FakeEngine()
    engine.runtime_warnings.append("--device cuda: no CUDA here")
    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model: engine)
    with caplog.at_level(logging.WARNING, logger="vosfx"):
        assert open_engine(ModelConfig()) is engine
    assert [r.getMessage() for r in caplog.records] == ["--device cuda: no CUDA here"]


def test_sequences_named_twice_are_scored_once():
    """`-s a,a` (or `-s a -s a`) scored the sequence twice, its frames counted twice in the
    summary; each name now counts once, in the order typed."""
    from vosfx.cli.eval import _split

    assert _split(("car-shadow,car-shadow", " libby", "car-shadow", ",")) == [
        "car-shadow",
        "libby",
    ]
    assert _split(()) is None and _split((",",)) is None


@pytest.mark.parametrize(
    ("case", "code", "said"),
    [
        ("pred_size", 4, "00001.png: expected 32x24 like the ground truth, found 30x24"),
        ("gt_empty", 4, "expected <sequence>/ folders of label PNGs, found none"),
        ("out_blocked", 6, "cannot write the eval tables (Not a directory)"),
    ],
)
def test_eval_that_cannot_score_or_write_says_why(tmp_path, case, code, said):
    make_davis(tmp_path / "gt", n=6)
    _copy_preds(
        tmp_path / "gt",
        tmp_path / "pred",
        (lambda i, lab: lab[:, :-2]) if case == "pred_size" else None,
    )
    gt = tmp_path / "gt"
    if case == "gt_empty":
        gt = tmp_path / "empty"
        gt.mkdir()
    args = ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(gt)]
    if case == "out_blocked":  # a file where the tables' folder would go
        (tmp_path / "taken").write_text("a file")
        args += ["--out", str(tmp_path / "taken" / "tables")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == code, res.output
    assert res.output.startswith("vosfx: error: ") and said in res.output, res.output

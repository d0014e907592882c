"""Score prediction folders against ground truth, and render the tables (Markdown, CSV, JSON).

Both folders hold ``<seq>/<frame>.png`` label maps (palette or grayscale; pixel value = object
id). Each object of each sequence is scored on the frames that have ground truth, except the
sequence's first and last frame (the first is the prompt; DAVIS 2017 and MOSEv2 both leave
both out). A clip shorter than 3 frames is scored on all its frames instead of none.
Ground truth of only 0 and 255 is a binary mask (one object, id 1; predictions read as
nonzero = object); otherwise a prediction label no ground-truth object has is refused.

Protocols (docs/eval.md):

- ``davis``: per object J and F mean, recall and decay; J&F = (mean J + mean F) / 2, means
  taken over all objects of all sequences.
- ``mosev2``: per object J (+1 smoothed), F, F-dot (adaptive), J&F, J&F-dot, and the
  disappearance / reappearance scores J&F-dot_d, J&F-dot_r; the dataset's d and r means are
  over the objects that have such a transition.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vosfx.errors import InputError
from vosfx.eval import metrics as m
from vosfx.eval.datasets import VOID_LABEL, is_binary_mask, read_label_png

PROTOCOLS = ("davis", "mosev2")
COLUMNS = {
    "davis": ("J&F", "J", "J-Recall", "J-Decay", "F", "F-Recall", "F-Decay"),
    "mosev2": ("J&Ḟ", "J", "Ḟ", "F", "J&F", "J&Ḟ_d", "J&Ḟ_r"),
}


@dataclass(frozen=True)
class ObjectResult:
    """Scores of one object over one sequence; ``scores`` keys are ``COLUMNS[protocol]``
    (a value is None where it does not apply, e.g. J&Ḟ_d for an object that never leaves).
    ``parts`` keeps the means that dataset-level d/r scores average separately."""

    sequence: str
    obj_id: int
    n_frames: int
    scores: dict[str, float | None]
    parts: dict[str, float | None] = field(default_factory=dict, repr=False)


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _pair_mean(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (a + b) / 2


def score_object(
    sequence: str, obj_id: int, preds: list[np.ndarray], gts: list[np.ndarray], protocol: str
) -> ObjectResult:
    """Score one object. ``preds``, ``gts``: per evaluated frame, (H, W) bool masks."""
    if protocol == "davis":
        j = np.array([m.j_score(p, g) for p, g in zip(preds, gts)])
        f = np.array([m.f_score(p, g) for p, g in zip(preds, gts)])
        jm, jr, jd = m.statistics(j)
        fm, fr, fd = m.statistics(f)
        vals = {"J": jm, "J-Recall": jr, "J-Decay": jd, "F": fm, "F-Recall": fr, "F-Decay": fd}
        scores = {k: _nan_to_none(v) for k, v in vals.items()}
        scores["J&F"] = _pair_mean(scores["J"], scores["F"])
        return ObjectResult(sequence, obj_id, len(j), {c: scores[c] for c in COLUMNS[protocol]})
    if protocol != "mosev2":
        raise InputError(f"expected a protocol in {', '.join(PROTOCOLS)}, found {protocol!r}")
    j = np.array([m.j_score_mosev2(p, g) for p, g in zip(preds, gts)])
    ff = np.array([m.f_adaptive(p, g) for p, g in zip(preds, gts)]).reshape(-1, 2)
    empty = np.array([not g.any() for g in gts], bool)
    tr = m.transition_scores(j, ff[:, 1], empty)
    j_mean = _nan_to_none(float(j.mean())) if len(j) else None
    f_mean = _nan_to_none(float(ff[:, 0].mean())) if len(j) else None
    fdot_mean = _nan_to_none(float(ff[:, 1].mean())) if len(j) else None
    parts = {
        "dis_j": tr.disappear_j,
        "dis_f": tr.disappear_f,
        "re_j": tr.reappear_j,
        "re_f": tr.reappear_f,
    }
    scores = {
        "J&Ḟ": _pair_mean(j_mean, fdot_mean),
        "J": j_mean,
        "Ḟ": fdot_mean,
        "F": f_mean,
        "J&F": _pair_mean(j_mean, f_mean),
        "J&Ḟ_d": _pair_mean(tr.disappear_j, tr.disappear_f),
        "J&Ḟ_r": _pair_mean(tr.reappear_j, tr.reappear_f),
    }
    return ObjectResult(sequence, obj_id, len(j), scores, parts)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(objects: list[ObjectResult], protocol: str) -> dict[str, float | None]:
    """Dataset means over objects, as the reference toolkits aggregate them."""
    out = {c: _mean([o.scores[c] for o in objects]) for c in COLUMNS[protocol]}
    if protocol == "davis":
        out["J&F"] = _pair_mean(out["J"], out["F"])
    else:
        out["J&Ḟ"] = _pair_mean(out["J"], out["Ḟ"])
        out["J&F"] = _pair_mean(out["J"], out["F"])
        # score.py: (mean of per-object J_d + mean of per-object F_d) / 2, objects that have one
        for key, a, b in (("J&Ḟ_d", "dis_j", "dis_f"), ("J&Ḟ_r", "re_j", "re_f")):
            out[key] = _pair_mean(
                _mean([o.parts.get(a) for o in objects]), _mean([o.parts.get(b) for o in objects])
            )
    return out


@dataclass(frozen=True)
class EvalReport:
    protocol: str
    objects: list[ObjectResult]
    summary: dict[str, float | None]

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS[self.protocol]

    def sequences(self) -> dict[str, dict[str, float | None]]:
        """Per-sequence means over its objects."""
        names = sorted({o.sequence for o in self.objects})
        return {
            s: summarize([o for o in self.objects if o.sequence == s], self.protocol) for s in names
        }

    def rows(self) -> list[dict]:
        """Table rows: every object, then every sequence's mean (object "mean"), then the
        dataset mean (sequence "ALL")."""
        rows = [
            {"sequence": o.sequence, "object": str(o.obj_id), "frames": o.n_frames, **o.scores}
            for o in self.objects
        ]
        for seq, scores in self.sequences().items():
            n = sum(o.n_frames for o in self.objects if o.sequence == seq)
            rows.append({"sequence": seq, "object": "mean", "frames": n, **scores})
        rows.append(
            {
                "sequence": "ALL",
                "object": "mean",
                "frames": sum(o.n_frames for o in self.objects),
                **self.summary,
            }
        )
        return rows

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "summary": self.summary,
            "sequences": self.sequences(),
            "objects": [
                {"sequence": o.sequence, "object": o.obj_id, "frames": o.n_frames, **o.scores}
                for o in self.objects
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_csv(self) -> str:
        return rows_to_csv(self.rows(), ("sequence", "object", "frames", *self.columns))

    def to_markdown(self) -> str:
        return rows_to_markdown(self.rows(), ("sequence", "object", "frames", *self.columns))


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def rows_to_markdown(rows: list[dict], columns: tuple[str, ...]) -> str:
    """A GitHub Markdown table; floats to 4 decimals, None as an empty cell."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rows_to_csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    """CSV with a header; floats at full precision, None as an empty field."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    return buf.getvalue()


def _annotation_root(gt: Path) -> Path:
    """Accept a DAVIS root (with Annotations/[480p/]) or the annotations folder itself."""
    for cand in (gt / "Annotations" / "480p", gt / "Annotations"):
        if cand.is_dir():
            return cand
    return gt


def _object_ids(gt_dir: Path, gt_paths: list[Path]) -> tuple[list[int], bool]:
    """The sequence's object ids, and whether its label maps are 0/255 binary masks (DAVIS
    2016's annotations, ``cv2.imwrite(mask * 255)``): then 255 is object 1, not void."""
    values: set[int] = set()
    for path in gt_paths:  # objects from every annotated frame, prompts included
        values.update(int(v) for v in np.unique(read_label_png(path)))
    if is_binary_mask(values):
        return [1], True
    ids = sorted(values - {0, VOID_LABEL})
    if ids:
        return ids, False
    raise InputError(
        f"{gt_dir}: expected objects in the ground truth (labels 1-254, or 255 in 0/255 "
        "binary masks), found no object on any frame"
    )


def _check_labels(pred_path: Path, pred: np.ndarray, ids: list[int]) -> None:
    """Refuse prediction labels that no ground-truth object has, as the DAVIS toolkit does:
    silently treating them as background would score a 0/255 mask J = 0."""
    extra = sorted(set(np.unique(pred).tolist()) - {0, *ids})
    if extra:
        hint = (
            "; predictions are label maps (pixel value = object id), not 0/255 masks"
            if VOID_LABEL in extra
            else ""
        )
        raise InputError(
            f"{pred_path}: found label(s) {', '.join(map(str, extra))} that no ground-truth "
            f"object has (objects: {', '.join(map(str, ids))}){hint}"
        )


def evaluate_sequence(name: str, pred_dir: Path, gt_dir: Path, protocol: str) -> list[ObjectResult]:
    """Score every object of one sequence; ``gt_dir``/``pred_dir`` hold ``<frame>.png``."""
    gt_paths = sorted(gt_dir.glob("*.png"))
    if not gt_paths:
        raise InputError(f"{gt_dir}: expected ground-truth *.png label maps, found none")
    n_pred = len(list(pred_dir.glob("*.png")))
    if len(gt_paths) < 3 and n_pred > len(gt_paths):
        # a test-set layout (only the prompt annotated): scoring it would report the prompt
        raise InputError(
            f"{gt_dir}: expected ground truth on the frames to score, found {len(gt_paths)} "
            f"annotated frame(s) for {n_pred} predicted (only the prompt is annotated?)"
        )
    chosen = gt_paths[1:-1] if len(gt_paths) >= 3 else gt_paths
    ids, binary = _object_ids(gt_dir, gt_paths)
    frames: list[tuple[np.ndarray, np.ndarray]] = []
    for path in chosen:
        gt = read_label_png(path)
        pred_path = pred_dir / path.name
        if not pred_path.is_file():
            raise InputError(f"{pred_path}: expected a prediction for {name}/{path.name}")
        pred = read_label_png(pred_path)
        if pred.shape != gt.shape:
            raise InputError(
                f"{pred_path}: expected {gt.shape[1]}x{gt.shape[0]} like the ground truth, "
                f"found {pred.shape[1]}x{pred.shape[0]}"
            )
        if binary:  # one object: any nonzero prediction (id 1 or 255) is it
            gt, pred = (gt != 0).view(np.uint8), (pred != 0).view(np.uint8)
        else:
            _check_labels(pred_path, pred, ids)
        frames.append((pred, gt))
    return [
        score_object(
            name, obj, [p == obj for p, _ in frames], [g == obj for _, g in frames], protocol
        )
        for obj in ids
    ]


def evaluate_dirs(
    pred: str | Path,
    gt: str | Path,
    protocol: str = "davis",
    sequences: list[str] | None = None,
) -> EvalReport:
    """Score ``pred/<seq>/*.png`` against ``gt`` (a DAVIS root or an annotations folder) for
    every ground-truth sequence (or those named). Raises InputError for a missing sequence,
    frame or size mismatch."""
    if protocol not in PROTOCOLS:
        raise InputError(f"expected a protocol in {', '.join(PROTOCOLS)}, found {protocol!r}")
    pred, gt_root = Path(pred), _annotation_root(Path(gt))
    if not gt_root.is_dir():
        raise InputError(f"{gt}: expected a ground-truth folder, found none")
    names = sequences or sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    if not names:
        raise InputError(f"{gt_root}: expected <sequence>/ folders of label PNGs, found none")
    objects: list[ObjectResult] = []
    for name in names:
        if not (gt_root / name).is_dir():
            raise InputError(f"{gt_root}: no ground truth for sequence {name!r}")
        if not (pred / name).is_dir():
            raise InputError(f"{pred}: expected predictions for sequence {name!r}, found none")
        objects += evaluate_sequence(name, pred / name, gt_root / name, protocol)
    return EvalReport(protocol, objects, summarize(objects, protocol))

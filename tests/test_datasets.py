"""vosfx.eval.datasets: DAVIS layout, label PNGs read without Pillow, first-frame prompts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import shared_data

from vosfx.errors import InputError
from vosfx.eval.datasets import (
    DavisDataset,
    davis_palette,
    read_label_png,
    write_label_png,
)


def make_davis(root, name="toy", n=5, h=24, w=32, late_object_at=2):
    """A tiny DAVIS layout: object 1 on every frame, object 2 from frame ``late_object_at``,
    and a void (255) border on frame 0. Returns the label maps."""
    (root / "JPEGImages" / name).mkdir(parents=True)
    (root / "Annotations" / name).mkdir(parents=True)
    labels = []
    for i in range(n):
        img = np.full((h, w, 3), 40 * i % 255, np.uint8)
        cv2.imwrite(str(root / "JPEGImages" / name / f"{i:05d}.jpg"), img)
        lab = np.zeros((h, w), np.uint8)
        lab[4:12, 4 + i : 12 + i] = 1
        if i >= late_object_at:
            lab[16:22, 20:30] = 2
        if i == 0:
            lab[0, :] = 255
        write_label_png(root / "Annotations" / name / f"{i:05d}.png", lab)
        labels.append(lab)
    return labels


def test_palette_is_davis():
    pal = davis_palette()
    assert pal[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert len({tuple(c) for c in pal}) == 256  # no repeated colour: indices read back exactly


def test_label_png_round_trip_palette_and_grayscale(tmp_path):
    labels = np.random.default_rng(1).integers(0, 7, (9, 13)).astype(np.uint8)
    write_label_png(tmp_path / "p.png", labels)
    assert (read_label_png(tmp_path / "p.png") == labels).all()
    # OpenCV alone sees colours: the palette is what maps them back
    assert cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED).ndim == 3
    cv2.imwrite(str(tmp_path / "g.png"), labels)  # 8-bit grayscale ids
    assert (read_label_png(tmp_path / "g.png") == labels).all()


def test_label_png_errors(tmp_path):
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="palette or grayscale"):
        read_label_png(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="unreadable or missing"):
        read_label_png(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="unreadable"):
        read_label_png(tmp_path / "bad.png")


def test_synthetic_layout_frames_annotations_prompts(tmp_path):
    labels = make_davis(tmp_path)
    ds = DavisDataset(tmp_path)
    assert ds.sequences == ["toy"] and len(ds) == 1
    seq = ds.sequence("toy")
    assert len(seq) == 5 and seq.stems[0] == "00000"
    frame = seq.frame(3)
    assert frame.image.shape == (24, 32, 3) and frame.image.dtype == np.uint8
    assert frame.index == 3 and frame.pts == 3 and frame.time_s == pytest.approx(3 / 24)
    first = seq.annotation(0)
    assert (first[0] == 0).all()  # void counts as background
    assert (seq.annotation(4) == labels[4]).all()
    assert seq.object_ids() == (1, 2)
    prompts = seq.first_frame_prompts()
    assert [(p.frame_index, p.obj_id) for p in prompts] == [(0, 1), (2, 2)]
    assert (prompts[1].mask == (labels[2] == 2)).all() and prompts[1].mask.dtype == bool


def test_layout_errors(tmp_path):
    with pytest.raises(InputError, match="DAVIS layout"):
        DavisDataset(tmp_path)
    make_davis(tmp_path)
    with pytest.raises(InputError, match="no sequence 'other'; found toy"):
        DavisDataset(tmp_path).sequence("other")


def test_davis_480p_subfolder_is_found(tmp_path):
    make_davis(tmp_path / "tmp")
    for sub in ("JPEGImages", "Annotations"):
        (tmp_path / sub).mkdir()
        (tmp_path / "tmp" / sub).rename(tmp_path / sub / "480p")
    assert DavisDataset(tmp_path).sequences == ["toy"]


def test_real_davis_sequences():
    ds = DavisDataset(shared_data("davis"))
    assert {"blackswan", "bmx-trees", "car-shadow", "chair", "libby"} <= set(ds.sequences)
    seq = ds.sequence("car-shadow")
    assert len(seq) == 40
    assert seq.frame(0).image.shape == (480, 854, 3)
    labels = seq.annotation(10)
    assert labels.shape == (480, 854) and set(np.unique(labels)) == {0, 1}
    (prompt,) = seq.first_frame_prompts()
    assert prompt.frame_index == 0 and prompt.obj_id == 1 and 1000 < prompt.mask.sum() < 200_000


def test_davis_2016_binary_annotations_are_object_1(tmp_path):
    """DAVIS 2016 layout: JPEGImages/480p, Annotations/480p of 0/255 grayscale masks. 255 is
    the object there, not void: bench must prompt it instead of finding no object."""
    real = shared_data("davis")
    for i in range(3):
        for sub, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            (tmp_path / sub / "480p" / "blackswan").mkdir(parents=True, exist_ok=True)
        (tmp_path / "JPEGImages" / "480p" / "blackswan" / f"{i:05d}.jpg").write_bytes(
            (real / "JPEGImages" / "blackswan" / f"{i:05d}.jpg").read_bytes()
        )
        mask = read_label_png(real / "Annotations" / "blackswan" / f"{i:05d}.png") == 1
        cv2.imwrite(
            str(tmp_path / "Annotations" / "480p" / "blackswan" / f"{i:05d}.png"),
            mask * np.uint8(255),
        )
    seq = DavisDataset(tmp_path).sequence("blackswan")
    assert seq.object_ids() == (1,)
    assert set(np.unique(seq.annotation(2))) == {0, 1}
    (prompt,) = seq.first_frame_prompts()
    want = read_label_png(real / "Annotations" / "blackswan" / "00000.png") == 1
    assert prompt.obj_id == 1 and (prompt.mask == want).all()

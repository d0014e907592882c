"""vosfx.io.prompts: every mask kind, size checks, points and boxes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_data
from media import moving_square_frame
from PIL import Image

from vosfx.errors import PromptError
from vosfx.io.prompts import (
    load_mask_prompt,
    parse_box,
    parse_points,
    resize_nearest,
    validate_prompt_frame,
)
from vosfx.types import Prompt

W, H = 64, 48


@pytest.fixture
def square():
    return moving_square_frame(3, W, H)[1]  # (H, W) bool


def save(tmp_path, name, array, mode=None):
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def two_object_palette(tmp_path, width=W, height=H, ids=(1, 3)):
    labels = np.zeros((height, width), np.uint8)
    labels[2:10, 2:12] = ids[0]
    labels[20:40, 30:60] = ids[1]
    img = Image.fromarray(labels, mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12))
    path = tmp_path / "palette.png"
    img.save(path)
    return path, labels


def test_binary_png(tmp_path, square):
    path = save(tmp_path, "bin.png", square.astype(np.uint8) * 255)
    [prompt] = load_mask_prompt(path, video_size=(W, H), frame_index=4)
    assert (prompt.obj_id, prompt.frame_index) == (1, 4)
    assert prompt.mask.dtype == bool and np.array_equal(prompt.mask, square)


def test_one_bit_png(tmp_path, square):
    path = tmp_path / "one.png"
    Image.fromarray(square).convert("1").save(path)
    [prompt] = load_mask_prompt(path, video_size=(W, H))
    assert np.array_equal(prompt.mask, square)


@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
def test_zero_one_mask_is_a_boolean_mask(tmp_path, square, depth):
    """A boolean mask written as integers (``cv2.imwrite(p, mask.astype(np.uint8))``) holds
    only 0 and 1: foreground where it is 1, not an empty mask under the 128 threshold."""
    import cv2

    path = tmp_path / "zero_one.png"
    cv2.imwrite(str(path), square.astype(depth))
    [prompt] = load_mask_prompt(path, video_size=(W, H))
    assert np.array_equal(prompt.mask, square)


def test_grayscale_threshold(tmp_path, square):
    gray = np.where(square, 200, 100).astype(np.uint8)
    path = save(tmp_path, "gray.png", gray)
    assert np.array_equal(load_mask_prompt(path)[0].mask, square)
    # threshold above 200: nothing left
    with pytest.raises(PromptError, match="found none"):
        load_mask_prompt(path, threshold=201)
    assert load_mask_prompt(path, threshold=100)[0].mask.all()


def test_jpeg_survives_compression(tmp_path, square):
    path = tmp_path / "mask.jpg"
    Image.fromarray(square.astype(np.uint8) * 255).save(path, quality=75)
    mask = load_mask_prompt(path, video_size=(W, H))[0].mask
    assert (mask != square).mean() < 0.01


def test_sixteen_bit_grayscale(tmp_path, square):
    path = tmp_path / "m16.png"
    Image.fromarray(np.where(square, 40000, 1000).astype(np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    assert np.array_equal(load_mask_prompt(path)[0].mask, square)
    # 128 * 257 = 32896 < 40000 < 160 * 257 = 41120
    with pytest.raises(PromptError):
        load_mask_prompt(path, threshold=160)


def test_rgba_alpha_is_the_mask(tmp_path, square):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere: only alpha says where the object is
    rgba[..., 3] = np.where(square, 255, 0)
    path = save(tmp_path, "rgba.png", rgba)
    assert np.array_equal(load_mask_prompt(path)[0].mask, square)


def test_rgba_opaque_uses_colour(tmp_path, square):
    rgba = np.full((H, W, 4), 255, np.uint8)
    rgba[..., :3] = 0
    rgba[square, 0] = 255  # a red mask on black, saved with an opaque alpha
    path = save(tmp_path, "red.png", rgba)
    assert np.array_equal(load_mask_prompt(path)[0].mask, square)


def test_palette_multi_object(tmp_path):
    path, labels = two_object_palette(tmp_path)
    prompts = load_mask_prompt(path, video_size=(W, H), frame_index=2)
    assert [p.obj_id for p in prompts] == [1, 3]
    for p in prompts:
        assert p.frame_index == 2 and np.array_equal(p.mask, labels == p.obj_id)
    [only] = load_mask_prompt(path, objects=[3])
    assert only.obj_id == 3
    with pytest.raises(PromptError, match=r"among \[1, 3\].*\[2\]"):
        load_mask_prompt(path, objects=[2, 3])


def test_wrong_size_names_both_and_suggests_fit(tmp_path, square):
    path = save(tmp_path, "bin.png", square.astype(np.uint8) * 255)
    with pytest.raises(PromptError, match=r"128x96.*64x48.*--fit"):
        load_mask_prompt(path, video_size=(128, 96))


def test_fit_scales_palette_keeping_indices(tmp_path):
    path, labels = two_object_palette(tmp_path)
    prompts = load_mask_prompt(path, video_size=(W * 2, H * 2), fit=True)
    assert [p.obj_id for p in prompts] == [1, 3]
    for p in prompts:
        assert p.mask.shape == (H * 2, W * 2)
        # exact 2x nearest neighbour: each label pixel becomes a 2x2 block
        assert np.array_equal(p.mask, np.kron(labels == p.obj_id, np.ones((2, 2), bool)))
    # odd target: still only the ids that were there, no blended values
    odd = load_mask_prompt(path, video_size=(853, 479), fit=True)
    assert [p.obj_id for p in odd] == [1, 3] and odd[0].mask.shape == (479, 853)


def test_resize_nearest_values_are_copied():
    labels = np.arange(12, dtype=np.int32).reshape(3, 4)
    out = resize_nearest(labels, 7, 5)
    assert out.shape == (5, 7) and set(np.unique(out)) <= set(labels.ravel())
    assert out[0, 0] == 0 and out[-1, -1] == 11


def test_empty_mask(tmp_path):
    path = save(tmp_path, "empty.png", np.zeros((H, W), np.uint8))
    with pytest.raises(PromptError, match="foreground"):
        load_mask_prompt(path, video_size=(W, H))


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(PromptError, match="no file"):
        load_mask_prompt(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(PromptError, match="cannot be read"):
        load_mask_prompt(tmp_path / "text.png")


@pytest.mark.shared_data
def test_davis_annotation():
    path = shared_data("davis", "Annotations", "blackswan", "00000.png")
    [prompt] = load_mask_prompt(path, video_size=(854, 480))
    assert prompt.obj_id == 1 and 0.01 < prompt.mask.mean() < 0.5


# --- points and boxes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,labels,want_pts,want_labels",
    [
        ("120,80", None, [[120, 80]], [1]),
        ("120,80;40,60", "1,0", [[120, 80], [40, 60]], [1, 0]),
        ("+120,80;-40,60", None, [[120, 80], [40, 60]], [1, 0]),
        ("+1.5,2.25 -3,4 5, 6", None, [[1.5, 2.25], [3, 4], [5, 6]], [1, 0, 1]),
        (" 7,8 ; ", None, [[7, 8]], [1]),
    ],
)
def test_parse_points(text, labels, want_pts, want_labels):
    pts, lab = parse_points(text, labels)
    assert pts.dtype == np.float32 and pts.shape == (len(want_pts), 2)
    assert lab.dtype == np.int32
    assert pts.tolist() == want_pts and lab.tolist() == want_labels


@pytest.mark.parametrize(
    "text,labels,match",
    [
        ("", None, "expected points"),
        ("120", None, "expected a point"),
        ("a,b", None, "expected a point"),
        ("1,2;3,4", "1", "2 labels"),
        ("1,2", "2", "labels of 0 or 1"),
        ("+1,2", "1", "either signed points or labels"),
    ],
)
def test_parse_points_errors(text, labels, match):
    with pytest.raises(PromptError, match=match):
        parse_points(text, labels)


def test_points_outside_the_frame():
    assert parse_points("64,48", video_size=(64, 48))[0].tolist() == [[64, 48]]
    with pytest.raises(PromptError, match=r"inside the 64x48 frame.*\(65, 10\)"):
        parse_points("10,10;65,10", video_size=(64, 48))
    with pytest.raises(PromptError, match="inside"):
        parse_points("10,-1", video_size=(64, 48))


def test_parse_box():
    box = parse_box("1,2,30.5,40", video_size=(64, 48))
    assert box.dtype == np.float32 and box.tolist() == [1, 2, 30.5, 40]
    for bad, match in [
        ("1,2,3", "x0,y0,x1,y1"),
        ("1,2,a,4", "x0,y0,x1,y1"),
        ("5,2,3,4", "x0 < x1"),
        ("1,5,3,4", "y0 < y1"),
    ]:
        with pytest.raises(PromptError, match=match):
            parse_box(bad)
    with pytest.raises(PromptError, match="box corner"):
        parse_box("0,0,100,10", video_size=(64, 48))


def test_validate_prompt_frame():
    validate_prompt_frame(Prompt(frame_index=9, obj_id=1, box=np.zeros(4, np.float32)), 10)
    for index in (10, -1):
        with pytest.raises(PromptError, match=r"0\.\.9.*10 frames.*frame " + str(index)):
            validate_prompt_frame(Prompt(frame_index=index, obj_id=2), 10)

"""The vosfx Matte OpenFX effect, loaded by a C test host exactly as a host loads it.

The bundle and host are compiled here with the system compiler (-Wall -Wextra -Werror); the
worker runs the drifting FakeEngine (ofx_fakes.py), and `vosfx matte` runs the same engine
(vosfx_drift_fake.py), so the effect's alpha is compared with the CLI's for the same clicks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import moving_square_frame
from ofx_harness import (
    HERE,
    ArgvRecorder,
    H,
    N,
    W,
    build,
    make_clip,
    postamble,
    preamble,
    read_output,
    run_host,
    studio_words,
)

CLICK = (8.0, 8.0)  # pixels, top-left origin: inside the square on frame 0
ID = "org.vosfx.matte"  # the effect's messages' id (the text says "vosfx Matte: " once)
PEN = f"{CLICK[0]} {H - CLICK[1]}"  # the same point in OFX canonical coordinates (y up)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("ofx-build"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("ofx-clip"))


def vosfx_matte(clip: Path, out: Path, *args: str, real: bool = False) -> np.ndarray:
    """(N, H, W) float32: the alpha `vosfx matte` writes (16-bit PNG matte sequence), with the
    drifting FakeEngine, or with ``real`` the real CLI (its engine options in ``args``)."""
    vosfx = ["-m", "vosfx"] if real else [str(HERE / "vosfx_drift_fake.py")]
    cmd = [
        sys.executable,
        *vosfx,
        "matte",
        str(clip / "png"),
        *args,
        "-f",
        "png16-matte",
        "-o",
        str(out),
        "--no-sidecar",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("*.png"))
    assert len(files) == N
    alpha = np.stack([cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files])
    return alpha.astype(np.float32) / 65535.0


@pytest.fixture(scope="module")
def cli_alpha(clip, tmp_path_factory):
    """What `vosfx matte` writes for the click on frame 0."""
    out = tmp_path_factory.mktemp("ofx-cli") / "matte"
    return vosfx_matte(clip, out, "--point", f"{CLICK[0]:g},{CLICK[1]:g}")


def _ok(run):
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "DONE" in run.stdout
    assert "LEAKS memory_suite=0 image_memory=0 mutexes=0 images=0" in run.stdout


def _source(i: int) -> np.ndarray:
    return moving_square_frame(i, W, H)[0].astype(np.float32) / 255.0


def test_bundle_layout_and_exports(built):
    binary = built.bundle / "Contents" / "Linux-x86-64" / "vosfx.ofx"
    assert binary.is_file() and (built.bundle / "Contents" / "Info.plist").is_file()
    assert (built.bundle / "Contents" / "Resources" / "vosfx_worker.cfg").is_file()
    syms = subprocess.run(
        ["nm", "-D", "--defined-only", str(binary)], capture_output=True, text=True, check=True
    ).stdout
    exported = sorted(line.split()[-1] for line in syms.splitlines() if " T " in line)
    assert exported == ["OfxGetNumberOfPlugins", "OfxGetPlugin"]


def test_load_describe_contexts_unload(built, clip, tmp_path):
    for context in ("filter", "general"):
        run = run_host(built, preamble(built, clip, context=context) + postamble(), tmp_path)
        _ok(run)
        assert "PLUGIN org.vosfx.matte 1.0" in run.stdout
        assert "PARAMS 25 CLIPS 3" in run.stdout  # Source, Mask, Output


def test_alpha_equals_vosfx_matte_in_and_out_of_order(built, clip, cli_alpha, tmp_path):
    order = [0, 1, 2, 3, 7, 4, 11, 5, 9, 6, 8, 10, 3, 0]
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    lines += [f"0 render {t} {tmp_path / f'out{k}.raw'}" for k, t in enumerate(order)]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    assert "MESSAGE OfxMessageError" not in run.stdout
    for k, t in enumerate(order):
        out = read_output(tmp_path / f"out{k}.raw")
        # 16-bit PNG quantisation: half a step, plus float rounding
        np.testing.assert_allclose(
            out[..., 3], cli_alpha[t], atol=0.5 / 65535 + 1e-6, err_msg=f"frame {t}"
        )
        np.testing.assert_allclose(out[..., :3], _source(t), atol=1e-6)  # straight: RGB kept
    assert cli_alpha[5].max() > 0.99 and cli_alpha[5].min() < 0.01  # a real matte, not flat


def _exclude_on_6(clip, tmp_path):
    """An exclude point in the square's corner on frame 6 (pixels) and `vosfx matte
    --edit-tracked`'s alpha for it after the include click on frame 0."""
    from media import moving_square_frame

    _, square = moving_square_frame(6, W, H)
    ys, xs = np.nonzero(square)
    fx, fy = float(xs.min()) + 1.5, float(ys.min()) + 1.5  # in the square's corner
    cli = vosfx_matte(
        clip,
        tmp_path / "cli",
        "--point",
        f"{CLICK[0]:g},{CLICK[1]:g}",
        "--neg-point",
        f"6:{fx:g},{fy:g}@1",
        "--edit-tracked",
    )
    return (fx, fy), cli


def test_points_on_a_later_frame_correct_the_tracked_matte(built, clip, cli_alpha, tmp_path):
    """An exclude point on frame 6 for the object clicked on frame 0 edits the matte tracked
    there (rule d, docs/session.md): the alpha equals `vosfx matte --edit-tracked` for the
    same clicks, rendered in and out of order."""
    (fx, fy), cli = _exclude_on_6(clip, tmp_path)
    assert np.abs(cli[6] - cli_alpha[6]).max() > 0.5  # the correction changed the matte
    assert cli[6].max() > 0.99  # and kept the tracked square (an exclude click alone: none)
    np.testing.assert_array_equal(cli[:6], cli_alpha[:6])  # the frames before it: unchanged
    order = [8, 2, 6, 5, 11, 7]
    lines = preamble(built, clip) + [
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        "14 set_int pointLabel 1",
        f"0 pen_down 6 {fx} {H - fy}",
    ]
    lines += [f"0 render {t} {tmp_path / f'out{k}.raw'}" for k, t in enumerate(order)]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    for k, t in enumerate(order):
        out = read_output(tmp_path / f"out{k}.raw")
        np.testing.assert_allclose(
            out[..., 3], cli[t], atol=0.5 / 65535 + 1e-6, err_msg=f"frame {t}"
        )


def test_a_point_on_the_frame_left_shown_costs_the_decoder_alone(built, clip, tmp_path):
    """The host shows frame 6 and sends nothing for a while: the worker prepares it for a
    point (memory attention there, `Worker.idle`), so the exclude point the user then adds
    renders without it; the matte is `vosfx matte --edit-tracked`'s. Without the pause the
    same point waits for memory attention (each engine step slowed to 0.4 s here)."""
    (fx, fy), cli = _exclude_on_6(clip, tmp_path)
    ms = {}
    # (a pause, VOSFX_OFX_IDLE_S): the default 0.5 s, no pause, the preparation turned off
    for pause, idle in ((True, None), (False, None), (True, "0")):
        env = {"VOSFX_FAKE_DELAY_S": "0.4", **({"VOSFX_OFX_IDLE_S": idle} if idle else {})}
        lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}", "0 render 6 -"]
        lines += ["0 sleep 2000"] if pause else []
        lines += [
            "14 set_int pointLabel 1",
            f"0 pen_down 6 {fx} {H - fy}",
            f"0 render 6 {tmp_path / 'point.raw'}",
        ]
        run = run_host(built, lines + postamble(), tmp_path, env=env)
        _ok(run)
        out = read_output(tmp_path / "point.raw")
        np.testing.assert_allclose(out[..., 3], cli[6], atol=0.5 / 65535 + 1e-6)
        ms[(pause, idle)] = run.renders()[-1]["ms"]
    assert ms[(False, None)] >= 400  # memory attention on frame 6 (one slowed engine call)
    assert ms[(True, "0")] >= 400  # turned off: the same, pause or not
    assert ms[(True, None)] < 300, ms  # the decoder alone: prepared while the host was idle


def test_tracking_fetches_earlier_frames_and_cache_is_instant(built, clip, tmp_path):
    """Frames are tracked in order from the prompt up to the rendered frame, no further; the
    next frame costs one more frame; frames rendered before come from the cache."""
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    lines += [f"0 render {t} -" for t in (6, 7, 6, 3, 3)]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    r6, r7, r6b, r3, r3b = run.renders()
    # frame 0 (the prompt), frames 1..6 tracked, the composite's fetch; not the whole clip
    assert r6["fetches"] == 8 and r6["progress"] > 0
    assert r7["fetches"] == 2 and r7["progress"] > 0  # one more frame tracked
    assert r6b["fetches"] == 1 and r6b["progress"] == 0  # cached: only the composite's fetch
    assert r3["fetches"] == 2 and r3["progress"] == 0  # tracked already: refined, no tracking
    assert r3b["fetches"] == 1  # scrubbing back: cached


def test_output_modes_and_premultiplication(built, clip, cli_alpha, tmp_path):
    modes = {
        0: "OfxImageOpaque",
        1: "OfxImageAlphaUnPremultiplied",
        2: "OfxImageAlphaPremultiplied",
        3: "OfxImageOpaque",
    }
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    for mode in modes:
        lines += [f"14 set_int outputMode {mode}", f"0 render 2 {tmp_path / f'mode{mode}.raw'}"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    assert re.findall(r"^PREMULT (\S+)$", run.stdout, re.MULTILINE) == list(modes.values())
    a, src = cli_alpha[2], _source(2)
    matte, straight, premult, overlay = (read_output(tmp_path / f"mode{m}.raw") for m in modes)
    tol = 0.5 / 65535 + 1e-6
    for c in range(4):
        np.testing.assert_allclose(matte[..., c], a, atol=tol)
    np.testing.assert_allclose(premult[..., :3], src * a[..., None], atol=tol)
    np.testing.assert_allclose(premult[..., 3], straight[..., 3], atol=0)
    tint = np.array([255, 64, 64], np.float32) / 255
    np.testing.assert_allclose(
        overlay[..., :3], src + (tint - src) * (0.5 * a)[..., None], atol=1e-5
    )
    np.testing.assert_allclose(overlay[..., 3], 1.0)


def test_clip_black_and_white_are_effect_parameters(built, clip, tmp_path):
    """The effect's Clip black / Clip white reach the refiner: the matte is the default one's
    levels stretched from [0.3, 0.7] to [0, 1], with no re-tracking (refine only)."""
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    lines += ["14 set_int outputMode 0", f"0 render 2 {tmp_path / 'plain.raw'}"]
    lines += ["14 set_double clipBlack 0.3", "14 set_double clipWhite 0.7"]
    lines += [f"0 render 2 {tmp_path / 'clipped.raw'}"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    plain = read_output(tmp_path / "plain.raw")[..., 3]
    clipped = read_output(tmp_path / "clipped.raw")[..., 3]
    assert ((plain > 0.3) & (plain < 0.7)).any()  # the soft edge the levels stretch
    np.testing.assert_allclose(clipped, np.clip((plain - 0.3) / 0.4, 0, 1), atol=1e-5)
    _first, second = run.renders()
    assert second["progress"] == 0  # refined again, not tracked again


def test_worker_refuses_clip_black_above_clip_white():
    from vosfx.errors import ConfigError
    from vosfx.ofx.worker import Worker

    worker = Worker(channel=None, make_engine=None)
    clip = {"width": 8, "height": 8, "frames": 3, "fps": 24}
    with pytest.raises(ConfigError, match="^Clip black: expected below Clip white"):
        worker.configure({"clip": clip, "refine": {"clip_black": 0.8, "clip_white": 0.7}})


@pytest.mark.parametrize("depth,step", [("byte", 1 / 255), ("short", 1 / 65535)])
def test_integer_depths(built, clip, cli_alpha, tmp_path, depth, step):
    lines = preamble(built, clip, depth=depth) + [
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        f"0 render 4 {tmp_path / 'out.raw'}",
    ]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    out = read_output(tmp_path / "out.raw")
    np.testing.assert_allclose(out[..., 3], cli_alpha[4], atol=step / 2 + 0.5 / 65535 + 1e-6)


def test_proxy_render_scale(built, clip, cli_alpha, tmp_path):
    """Half-scale renders: a frame tracked at full size comes back resized from the cache; one
    first seen at proxy size is tracked on the upscaled proxy (edges differ a little)."""
    lines = preamble(built, clip) + [
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        "0 render 3 -",
        f"0 render 3 {tmp_path / 'half.raw'} 0.5",
        f"0 render 6 {tmp_path / 'proxy6.raw'} 0.5",
    ]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    size = (W // 2, H // 2)
    half = read_output(tmp_path / "half.raw", *size)
    expect = cv2.resize(cli_alpha[3], size, interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(half[..., 3], expect, atol=1e-4)
    proxy = read_output(tmp_path / "proxy6.raw", *size)[..., 3] >= 0.5
    full = cv2.resize(cli_alpha[6], size, interpolation=cv2.INTER_AREA) >= 0.5
    assert (proxy & full).sum() / (proxy | full).sum() > 0.8


def test_overlay_pen_events_edit_the_points(built, clip, tmp_path):
    y = H - 8
    lines = preamble(built, clip) + [
        "0 overlay",
        f"0 pen_down 0 8 {y}",
        f"14 pen_up 0 8 {y}",  # include, object 1
        "14 set_int object 2",
        f"14 key_down {0xFFE1}",
        f"0 pen_down 0 40 {y}",
        f"14 key_up {0xFFE1}",  # shift: exclude
        f"0 pen_down 0 41 {y + 1}",
        f"0 pen_motion 0 50 {y - 10}",
        f"0 pen_up 0 60 {y - 20}",
        "0 print_param points",
        "0 draw 0",
        "0 draw 1",
        f"14 key_down {0xFFE3}",
        f"0 pen_down 0 60 {y - 20}",
        f"14 key_up {0xFFE3}",  # ctrl
        "0 print_param points",
        f"0 pen_down 5 30 {y}",
        "0 press clearFrame 0",
        "0 print_param points",
        "0 press clearAll 0",
        "0 print_param points",
    ]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    values = re.findall(r"^PARAM points = (.*)$", run.stdout, re.MULTILINE)
    assert values[0] == "0 1 1 8.000 56.000;0 2 0 60.000 36.000;"  # dragged to the pen-up spot
    assert values[1] == "0 1 1 8.000 56.000;"
    assert values[2] == "5 2 1 30.000 56.000;"  # frame 0 cleared, frame 5 kept
    assert values[3] == ""
    draws = re.findall(r"^DRAW vertices=(\d+)$", run.stdout, re.MULTILINE)
    assert int(draws[0]) > 0 and int(draws[1]) == 0  # points show on their frame only
    assert "VERTEX 8.0 56.0" in run.stdout


def test_mask_clip_prompts_on_its_non_empty_frame(built, clip, tmp_path):
    """A Mask input that is empty except on frame 3 prompts object 1 there: the alpha is what
    `vosfx matte MASK --mask-frame 3` gives, on that frame and after it."""
    mask_dir = tmp_path / "mask"
    mask_dir.mkdir()
    _, square = moving_square_frame(3, W, H)
    (square.astype(np.uint8) * 255).tofile(mask_dir / "00003.a")  # only frame 3 has a mask
    cv2.imwrite(str(tmp_path / "mask3.png"), square.astype(np.uint8) * 255)
    expect = vosfx_matte(clip, tmp_path / "cli", str(tmp_path / "mask3.png"), "--mask-frame", "3")
    lines = preamble(built, clip, mask=mask_dir) + [
        f"0 render 3 {tmp_path / 'm3.raw'}",
        f"0 render 5 {tmp_path / 'm5.raw'}",
        f"0 render 1 {tmp_path / 'm1.raw'}",  # before the mask's frame: tracked backwards
    ]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    # The session keeps results as float16 logits, `vosfx matte` streams the frames after the
    # last prompt at float32: a mask prompt's soft logits (unlike the clicks' +-10) show it as
    # alpha differences of ~1e-4 on edge pixels.
    for t in (1, 3, 5):
        np.testing.assert_allclose(
            read_output(tmp_path / f"m{t}.raw")[..., 3], expect[t], atol=3e-4, err_msg=f"frame {t}"
        )


NOTHING = {  # what makes no point usable, what the effect then says
    "none": ([], "no object is selected yet"),
    "off the picture": (["0 pen_down 0 -5 -5"], "every point lies off the picture"),
    "outside the clip": (["0 pen_down 40 8 56"], "none of the 1 points is on a frame"),
}


@pytest.mark.parametrize("case", sorted(NOTHING))
def test_no_usable_point_is_an_empty_matte_in_every_mode(built, clip, tmp_path, case):
    """No object selected (no point, only points dragged off the picture, or points on frames
    the Source does not have): nothing is selected, so the matte is empty (alpha 0) in every
    output mode, in a final render too (a successful frame: it is the matte), and the effect
    says why; the Overlay shows the Source untinted."""
    points, said = NOTHING[case]
    lines = preamble(built, clip) + ["0 render_mode final", "0 overlay", *points]
    for mode in range(4):
        lines += [f"14 set_int outputMode {mode}", f"0 render 2 {tmp_path / f'm{mode}.raw'}"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    src = _source(2)
    matte, straight, premult, overlay = (read_output(tmp_path / f"m{m}.raw") for m in range(4))
    np.testing.assert_allclose(matte, 0.0)
    np.testing.assert_allclose(straight[..., :3], src, atol=1e-6)
    np.testing.assert_allclose(straight[..., 3], 0.0)
    np.testing.assert_allclose(premult, 0.0)
    np.testing.assert_allclose(overlay[..., :3], src, atol=1e-6)
    np.testing.assert_allclose(overlay[..., 3], 1.0)
    warned = [m for m in run.messages() if m.startswith("OfxMessageWarning")]
    assert len(warned) == 1 and said in warned[0], run.messages()  # kept up, not per frame
    assert "OfxMessageError" not in run.stdout


def test_missing_vosfx_reports_and_passes_through(built, clip, tmp_path):
    lines = preamble(built, clip) + [
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        f"0 render 2 {tmp_path / 'p.raw'}",
        "0 expect_message not set up",
        "0 render 3 -",
    ]
    run = run_host(
        built, lines + postamble(), tmp_path, env={"VOSFX_OFX_CONFIG": str(tmp_path / "absent.cfg")}
    )
    _ok(run)
    np.testing.assert_allclose(read_output(tmp_path / "p.raw")[..., :3], _source(2), atol=1e-6)
    assert len([m for m in run.messages() if "not set up" in m]) == 1  # said once, not per frame

    cfg = tmp_path / "bad.cfg"
    cfg.write_text(f"worker {tmp_path / 'no-such-python'}\n", encoding="utf-8")
    run = run_host(
        built,
        preamble(built, clip)
        + ["0 overlay", f"0 pen_down 0 {PEN}", "0 render 2 -", "0 expect_message cannot start"]
        + postamble(),
        tmp_path,
        env={"VOSFX_OFX_CONFIG": str(cfg)},
    )
    _ok(run)


def test_worker_crash_is_a_message_and_a_new_worker(built, clip, cli_alpha, tmp_path):
    lines = preamble(built, clip) + [
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        "0 render 1 -",
        "0 children",
        "0 kill_children 9",
        "0 sleep 100",
        f"0 render 2 {tmp_path / 'after.raw'}",
        "0 expect_message worker failed",
        f"0 render 2 {tmp_path / 'again.raw'}",
        "0 children",
    ]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    assert re.findall(r"^CHILDREN (\d+)$", run.stdout, re.MULTILINE) == ["1", "1"]
    assert any("signal 9" in m or "closed its channel" in m for m in run.messages())
    np.testing.assert_allclose(
        read_output(tmp_path / "after.raw")[..., :3], _source(2), atol=1e-6
    )  # passed through
    np.testing.assert_allclose(
        read_output(tmp_path / "again.raw")[..., 3], cli_alpha[2], atol=0.5 / 65535 + 1e-6
    )  # the next render: a new worker


def test_worker_dying_on_start_is_reported(built, clip, tmp_path):
    lines = preamble(built, clip) + [
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        f"0 render 2 {tmp_path / 'p.raw'}",
        "0 expect_message exited with status 3",
    ]
    run = run_host(built, lines + postamble(), tmp_path, env={"VOSFX_FAKE_CRASH": "3"})
    _ok(run)
    np.testing.assert_allclose(read_output(tmp_path / "p.raw")[..., :3], _source(2), atol=1e-6)


def test_host_abort_stops_tracking_and_the_session_recovers(built, clip, cli_alpha, tmp_path):
    lines = preamble(built, clip) + [
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        "0 abort_after 4",
        f"0 render 9 {tmp_path / 'aborted.raw'}",
        "0 abort_after 0",
        f"0 render 9 {tmp_path / 'full.raw'}",
    ]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    aborted, full = run.renders()
    assert aborted["fetches"] < full["fetches"] + 4
    np.testing.assert_allclose(read_output(tmp_path / "aborted.raw")[..., 3], 1.0)  # source
    np.testing.assert_allclose(
        read_output(tmp_path / "full.raw")[..., 3], cli_alpha[9], atol=0.5 / 65535 + 1e-6
    )


def test_return_codes_and_failure_paths(built, clip, tmp_path):
    lines = preamble(built, clip) + [
        "14 action OfxActionNoSuchAction",
        "9 action_null OfxImageEffectActionRender",
        "9 action_null OfxActionDescribe",
        "14 action OfxImageEffectActionIsIdentity",  # not trapped: the host's default
        "0 action OfxActionPurgeCaches",
        "14 set_int outputMode 1",  # a plain parameter: the host's default handling
        "0 fail_source 1",
        f"0 render 1 {tmp_path / 'black.raw'}",
        "0 fail_source 0",
    ]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    np.testing.assert_allclose(read_output(tmp_path / "black.raw"), 0.0)  # no source: black

    run = run_host(built, ["* nosuite OfxParameterSuite 1", f"4 load {built.bundle}"], tmp_path)
    assert run.returncode == 0 and run.statuses("load") == [4]  # kOfxStatErrMissingHostFeature


def test_optional_suites_absent(built, clip, cli_alpha, tmp_path):
    absent = [
        "OfxMemorySuite 1",
        "OfxMultiThreadSuite 1",
        "OfxMessageSuite 2",
        "OfxInteractSuite 1",
        "OfxProgressSuite 1",
    ]
    lines = (
        [f"0 nosuite {s}" for s in absent]
        + preamble(built, clip)
        + ["0 overlay", f"0 pen_down 0 {PEN}", f"0 render 3 {tmp_path / 'o.raw'}"]
    )
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    np.testing.assert_allclose(
        read_output(tmp_path / "o.raw")[..., 3], cli_alpha[3], atol=0.5 / 65535 + 1e-6
    )


@pytest.mark.parametrize("persistent", [True, False])
def test_how_the_model_runs_is_a_warning_kept_up(built, clip, tmp_path, persistent):
    """The engine's warnings (a GPU asked for and absent, a tier in a slower form) come with
    each matte: the effect posts them once as a persistent warning and keeps it up while the
    mattes come (not cleared, not posted again per frame); a host without persistent messages
    gets one message, not one a frame."""
    said = "--device cuda: ONNX Runtime has no CUDAExecutionProvider in this install"
    lines = [] if persistent else ["0 nosuite OfxMessageSuite 2"]
    lines += preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    lines += [f"0 render {t} -" for t in range(4)]
    run = run_host(built, lines + postamble(), tmp_path, env={"VOSFX_FAKE_WARNING": said})
    _ok(run)
    assert run.messages() == [f"OfxMessageWarning {ID}: vosfx Matte: {said}"], run.messages()
    # without the warning, the mattes clear the message board as before
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    assert all(m == "cleared" for m in run.messages()), run.messages()


def test_studio_button(built, clip, tmp_path):
    run = run_host(
        built,
        preamble(built, clip)
        + ["0 press pickInStudio 0", "0 expect_message unavailable"]
        + postamble(),
        tmp_path,
    )
    _ok(run)
    fake = ArgvRecorder(tmp_path)
    cfg = tmp_path / "studio.cfg"
    cfg.write_text(f"vosfx {sys.executable}\nvosfx {fake.script}\n", encoding="utf-8")
    src = tmp_path / "-my clip; rm -rf x.mov"  # one argv entry: no shell word, no option
    lines = preamble(built, clip) + [
        f"14 set_string studioSource {src}",
        "0 press pickInStudio 4",
    ]
    run = run_host(built, lines + postamble(), tmp_path, env={"VOSFX_OFX_CONFIG": str(cfg)})
    assert run.returncode == 0, run.stdout
    assert fake.words() == studio_words(str(src), frame=4)
    run = run_host(
        built,
        lines[:-1] + ["14 set_string model sam2.1-small", lines[-1]] + postamble(),
        tmp_path,
        env={"VOSFX_OFX_CONFIG": str(cfg)},
    )
    assert run.returncode == 0, run.stdout
    assert fake.words()[-4:-2] == ["--model", "sam2.1-small"]


def test_harness_under_address_and_undefined_behaviour_sanitizers(
    tmp_path_factory, clip, cli_alpha, retimed, tmp_path
):
    asan = build(tmp_path_factory.mktemp("ofx-asan"), sanitize=True)
    lines = preamble(asan, clip) + [
        "0 poison 3 5 nan",  # a NaN pixel in the float Source: never made an integer
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        f"0 pen_down 0 30 {H - 30}",
        f"0 pen_down 0 30 {H - 30}",
        f"0 pen_motion 0 31 {H - 31}",
        f"0 pen_up 0 32 {H - 32}",
        "0 draw 0",
        f"0 render 5 {tmp_path / 'a5.raw'}",
        "0 render 2 -",
        "0 render 5 -",
        # a final render that fails, the Source re-timed upstream, a host that says nothing
        "0 render_mode final",
        "14 set_double softness -1",
        "1 render 2 -",
        "14 set_double softness 1",
        f"0 frames {retimed / 'raw'} {W} {H} {N} 0 24",
        "0 render 2 -",
        "0 render_mode unset",
        "0 render 4 - 0.5",
        "0 render_mode interactive",
        "14 set_int outputMode 2",
        "0 render 3 - 0.5",
        "0 press clearFrame 0",
        "0 kill_children 9",
        "0 render 1 -",
        "0 fail_source 1",
        "0 render 1 -",
        "14 action OfxActionNoSuchAction",
    ]
    # a timeout past what poll's int milliseconds hold: clamped, no signed overflow
    run = run_host(asan, lines + postamble(), tmp_path, env={"VOSFX_OFX_TIMEOUT_S": "3000000"})
    _clean(run)
    # 8-bit images (the packing fast path), the Mask input, a proxy render, output modes
    mask_dir = tmp_path / "mask"
    mask_dir.mkdir()
    (moving_square_frame(4, W, H)[1].astype(np.uint8) * 255).tofile(mask_dir / "00004.a")
    lines = preamble(asan, clip, depth="byte", mask=mask_dir) + [
        "0 render 4 -",
        "0 render 6 - 0.5",
        "0 render_mode final",
        "0 abort_after 3",
        "1 render 9 -",
        "0 abort_after 0",
        "0 render_mode interactive",
        f"0 frames {retimed / 'raw'} {W} {H} {N} 0 24",
        "14 set_int outputMode 3",
        "0 render 5 -",
        "14 set_int outputMode 0",
        "0 render 2 -",
        "0 action OfxActionPurgeCaches",
        "0 render 7 -",
    ]
    run = run_host(asan, lines + postamble(), tmp_path)
    _clean(run)


def _clean(run):
    for tool in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
        assert tool not in run.stderr, run.stderr
    _ok(run)


def test_a_model_that_does_not_load_names_the_model_field(built, clip, tmp_path):
    """A Model the loader refuses (a typo): the effect's error names its Model field and what
    was typed there, with the loader's reason; once every point is cleared nothing is matted,
    so the error comes down (it stayed up before)."""
    lines = preamble(built, clip) + ["14 set_string model sam2.1-tinyy", "0 overlay"]
    lines += [f"0 pen_down 0 {PEN}", f"0 render 3 {tmp_path / 'o.raw'}"]
    lines += ["0 press clearAll 0", f"0 render 3 {tmp_path / 'p.raw'}"]
    run = run_host(built, lines + postamble(), tmp_path)
    said = run.messages()
    errors = [m for m in said if m.startswith("OfxMessageError")]
    assert errors and all(
        "Model 'sam2.1-tinyy': expected a model id (sam2.1-tiny" in m for m in errors
    ), said
    assert "no object is selected yet" in said[-1], said  # the error is down


def test_protocol_layout_matches_the_c_header():
    from vosfx.ofx import protocol as P

    header = (HERE.parents[1] / "plugins" / "ofx" / "vosfx_ofx_proto.h").read_text()
    assert P.HEADER.size == 48 and "sizeof(VxMsg) == 48" in header
    assert f"{P.MAGIC:#x}".upper().replace("X", "x") in header.replace("u ", " ").upper().replace(
        "X", "x"
    )
    for name in (
        "CONFIG",
        "PROMPTS",
        "RENDER",
        "FRAME",
        "ABORT",
        "QUIT",
        "READY",
        "OK",
        "ERROR",
        "NEED",
        "PROGRESS",
        "MATTE",
        "CANCELLED",
    ):
        assert re.search(rf"VX_{name} = {getattr(P, name)}\b", header), name
    assert re.search(rf"VX_FP_CELLS {P.FP_CELLS}\n", header)
    assert "VX_FP_BYTES (VX_FP_CELLS * VX_FP_CELLS * 3 * 4)" in header
    assert P.FP_BYTES == P.FP_CELLS * P.FP_CELLS * 3 * 4


def test_plugins_install_ofx_builds_the_bundle(tmp_path):
    from click.testing import CliRunner

    from vosfx.cli import cli

    dest = tmp_path / "OFX Plugins"  # a space in the path: no shell anywhere
    result = CliRunner().invoke(cli, ["plugins", "install", "ofx", "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    bundle = dest / "vosfx.ofx.bundle"
    assert (bundle / "Contents" / "Linux-x86-64" / "vosfx.ofx").is_file()
    cfg = (bundle / "Contents" / "Resources" / "vosfx_worker.cfg").read_text().splitlines()
    assert f"vosfx {sys.executable}" in cfg and "worker vosfx.ofx.worker" in cfg
    assert not list(dest.glob(".vosfx-build-*"))  # the temporary build folder is gone
    result = CliRunner().invoke(
        cli,
        ["plugins", "install", "ofx", "--dest", str(dest), "--command", "/opt/my env/bin/vosfx"],
    )
    assert result.exit_code == 0, result.output
    cfg = (bundle / "Contents" / "Resources" / "vosfx_worker.cfg").read_text().splitlines()
    assert "vosfx /opt/my" in cfg and "vosfx env/bin/vosfx" in cfg  # split like a shell would


@pytest.mark.parametrize(
    "platform,user,expect",
    [
        ("linux", False, "/usr/OFX/Plugins"),
        ("darwin", False, "/Library/OFX/Plugins"),
        ("win32", False, "C:/Program Files/Common Files/OFX/Plugins"),
        ("linux", True, "/home/u/.local/share/OFX/Plugins"),
        ("darwin", True, "/home/u/Library/OFX/Plugins"),
        ("win32", True, "/home/u/AppData/Roaming/OFX/Plugins"),
    ],
)
def test_ofx_default_folders(platform, user, expect):
    from vosfx.cli.plugins import default_dest

    env = {"CommonProgramFiles": "C:/Program Files/Common Files"}
    got = default_dest("ofx", platform=platform, home=Path("/home/u"), env=env, user=user)
    assert got.as_posix() == expect


def test_matte_cache_is_bounded_and_exact():
    from vosfx.ofx.cache import MatteCache
    from vosfx.types import Matte

    rng = np.random.default_rng(0)
    cache = MatteCache(budget_bytes=200_000)
    first = Matte(0, (1,), rng.random((1, 64, 96), dtype=np.float32))
    cache.put("k", first)
    np.testing.assert_array_equal(cache.get("k", 0).alpha, first.alpha)  # lossless
    for i in range(1, 40):
        cache.put("k", Matte(i, (1,), rng.random((1, 64, 96), dtype=np.float32)))
    assert cache.nbytes <= 200_000 and cache.get("k", 0) is None and cache.get("k", 39)
    assert cache.get("other", 39) is None  # keyed by prompts and settings too


def test_worker_rejects_malformed_points_and_config():
    from vosfx.errors import ConfigError
    from vosfx.ofx.worker import Worker

    worker = Worker(channel=None, make_engine=None)
    with pytest.raises(ConfigError, match="expected \\[frame, obj, label, x, y\\]"):
        worker.set_points({"points": [[0, 1, "x"]]})
    with pytest.raises(ConfigError, match="positive size"):
        worker.configure({"clip": {"width": 0, "height": 10, "frames": 3, "fps": 24}})
    with pytest.raises(ConfigError, match="Softness"):
        worker.configure(
            {"clip": {"width": 8, "height": 8, "frames": 3, "fps": 24}, "refine": {"softness": -1}}
        )
    worker.set_points({"points": [[2, 1, 1, 3.5, 4.5], [2, 1, 0, 1, 1], [0, 2, 1, 5, 5]]})
    assert sorted(worker.tracking.points) == [(0, 2), (2, 1)]
    np.testing.assert_array_equal(worker.tracking.points[(2, 1)].labels, [1, 0])


def test_worker_leaves_out_points_dragged_off_the_picture():
    from vosfx.ofx.worker import Worker

    worker = Worker(channel=None, make_engine=None)
    worker.configure({"clip": {"width": 8, "height": 6, "frames": 3, "fps": 24}})
    worker.set_points(
        {"points": [[1, 1, 1, 3.5, 4.5], [1, 1, 0, 9.5, 1], [2, 1, 1, -1, 2], [0, 2, 1, 8, 6]]}
    )
    prompts = {k: p for k, (_sig, p) in worker.tracking.prompts().items()}
    assert sorted(prompts) == [(0, 2), (1, 1)]  # frame 2's only point is off the picture
    np.testing.assert_array_equal(prompts[(1, 1)].points, [[3.5, 4.5]])
    np.testing.assert_array_equal(prompts[(1, 1)].labels, [1])
    np.testing.assert_array_equal(prompts[(0, 2)].points, [[8, 6]])  # edges are inside


@pytest.mark.slow
def test_real_engine_alpha_equals_vosfx_matte(built, clip, tmp_path):
    """The real SAM 2.1 tiny tracker (random weights, 128 px model input, torch on CPU), a
    click on frame 2 (so frames 0-1 are tracked backwards), renders out of order. The session
    stores results as float16 logits while `vosfx matte` streams the frames after the last
    prompt at float32: alpha = sigmoid(logit) moves by at most max|x sigmoid'(x)| * 2^-11
    ~ 1.1e-4 for that rounding; the guided filter can add a little."""
    from ckpt import make_checkpoint

    ckpt, _ = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    size = "128"
    x, y = 40.0, 30.0
    engine = ["--checkpoint", str(ckpt), "--backend", "torch", "--device", "cpu"]
    engine += ["--image-size", size, "--threads", "1"]
    expect = vosfx_matte(
        clip, tmp_path / "cli", "--point", f"{x:g},{y:g}", "--mask-frame", "2", *engine, real=True
    )
    cfg = tmp_path / "real.cfg"
    cfg.write_text(
        f"worker {sys.executable}\nworker -m\nworker vosfx.ofx.worker\n"
        "worker --engine\nworker ofx_fakes:make_real_engine\n"
        f"env PYTHONPATH={HERE}\n",
        encoding="utf-8",
    )
    order = [5, 2, 0, 11, 1, 7]
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 2 {x} {H - y}"]
    lines += [f"0 render {t} {tmp_path / f'r{t}.raw'}" for t in order]
    run = run_host(
        built,
        lines + postamble(),
        tmp_path,
        timeout=900,
        env={
            "VOSFX_OFX_CONFIG": str(cfg),
            "VOSFX_TEST_CKPT": str(ckpt),
            "VOSFX_TEST_IMAGE_SIZE": size,
        },
    )
    _ok(run)
    assert "OfxMessageError" not in run.stdout
    worst = max(
        float(np.abs(read_output(tmp_path / f"r{t}.raw")[..., 3] - expect[t]).max()) for t in order
    )
    print(f"largest alpha difference against vosfx matte: {worst:.2e}")
    assert worst <= 5e-4


def test_hung_worker_times_out_into_a_message(built, clip, tmp_path):
    lines = preamble(built, clip) + [
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        f"0 render 1 {tmp_path / 'p.raw'}",
        "0 expect_message did not answer for 2 s",
        "0 children",
    ]
    run = run_host(
        built,
        lines + postamble(),
        tmp_path,
        env={"VOSFX_OFX_TIMEOUT_S": "2", "VOSFX_FAKE_DELAY_S": "30"},
    )
    _ok(run)
    assert "CHILDREN 0" in run.stdout  # the hung worker was stopped, not left behind
    np.testing.assert_allclose(read_output(tmp_path / "p.raw")[..., :3], _source(1), atol=1e-6)


@pytest.mark.slow
def test_wheel_ships_the_worker_and_the_c_sources(tmp_path):
    """`vosfx plugins install ofx` from an installed wheel compiles vosfx._plugins/ofx."""
    import zipfile

    from vosfx.ofx.build import SOURCES, WINDOWS_SOURCES

    repo = HERE.parents[1]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(repo),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("vosfx-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    c_files = [*SOURCES, *WINDOWS_SOURCES, "vosfx_ofx.h", "vosfx_ofx_api.h", "vosfx_ofx_proto.h"]
    c_files.append("Info.plist")
    assert {f"vosfx/_plugins/ofx/{n}" for n in c_files} <= names
    assert {
        f"vosfx/ofx/{n}.py" for n in ("worker", "frames", "protocol", "cache", "build")
    } <= names


def test_clip_frames_numbered_from_1001(built, clip, cli_alpha, tmp_path):
    """OFX times are the host's frame numbers: a clip starting at 1001 maps time 1001 + i to
    source frame i, points included."""
    lines = preamble(built, clip, first=1001) + ["0 overlay", f"0 pen_down 1001 {PEN}"]
    lines += [f"0 render {1001 + t} {tmp_path / f'f{t}.raw'}" for t in (4, 0, 5)]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    for t in (4, 0, 5):
        np.testing.assert_allclose(
            read_output(tmp_path / f"f{t}.raw")[..., 3], cli_alpha[t], atol=0.5 / 65535 + 1e-6
        )


def test_worker_dying_before_ready_is_reported_once(built, clip, tmp_path):
    cfg = tmp_path / "dies.cfg"
    cfg.write_text(
        f"worker {sys.executable}\nworker -c\nworker import sys; sys.exit(7)\n", encoding="utf-8"
    )
    lines = preamble(built, clip) + [
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        f"0 render 2 {tmp_path / 'p.raw'}",
        "0 expect_message exited with status 7",
        "0 render 3 -",
    ]
    run = run_host(built, lines + postamble(), tmp_path, env={"VOSFX_OFX_CONFIG": str(cfg)})
    _ok(run)
    assert len([m for m in run.messages() if "status 7" in m]) == 1  # not again per frame
    np.testing.assert_allclose(read_output(tmp_path / "p.raw")[..., :3], _source(2), atol=1e-6)


def test_two_objects_and_the_output_object(built, clip, tmp_path):
    """Points for object 1 (the square) and object 2 (the background's corner); Output object
    0 is the merged matte (the max of the two, after non-overlap), 1 and 2 each object."""
    lines = preamble(built, clip) + [
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        "14 set_int object 2",
        f"0 pen_down 0 80 {H - 50}",
        f"0 render 3 {tmp_path / 'all.raw'}",
        "14 set_int outputObject 1",
        f"0 render 3 {tmp_path / 'o1.raw'}",
        "14 set_int outputObject 2",
        f"0 render 3 {tmp_path / 'o2.raw'}",
        "14 set_int outputObject 3",
        f"0 render 3 {tmp_path / 'o3.raw'}",
    ]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    merged, o1, o2, o3 = (
        read_output(tmp_path / f"{n}.raw")[..., 3] for n in ("all", "o1", "o2", "o3")
    )
    assert (o1 >= 0.5).sum() > 50 and (o2 >= 0.5).sum() > 50
    assert ((o1 >= 0.5) & (o2 >= 0.5)).sum() == 0  # different places
    np.testing.assert_allclose(merged, np.maximum(o1, o2), atol=1e-7)
    np.testing.assert_allclose(o3, 0.0)  # no such object: an empty matte
    assert run.renders()[1]["fetches"] == 1  # another output object: from the cache


def _comma_locale(folder: Path) -> dict:
    """LOCPATH for a de_DE.UTF-8 locale (comma decimal separator) built here with localedef;
    skips where the system cannot build it."""
    import shutil

    if shutil.which("localedef") is None:
        pytest.skip("localedef is missing: cannot build a comma-decimal locale")
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["localedef", "-i", "de_DE", "-f", "UTF-8", str(folder / "de_DE.UTF-8")],
        capture_output=True,
        text=True,
        check=False,
    )
    if not (folder / "de_DE.UTF-8").is_dir():
        pytest.skip(f"localedef could not build de_DE.UTF-8: {proc.stderr.strip()}")
    return {"LOCPATH": str(folder)}


def test_numbers_ignore_the_host_locale(built, clip, cli_alpha, tmp_path):
    """Qt hosts (Resolve, Nuke, Natron) call setlocale(LC_ALL, "") on Linux: with a German
    LANG printf writes 0,5. The points parameter and the worker's JSON must not follow it:
    a project saved under one locale opens under another with its points, and the worker
    understands the settings."""
    env = _comma_locale(tmp_path / "locale")
    lines = preamble(built, clip) + [
        "0 locale de_DE.UTF-8",
        # a project saved on a machine with a point-decimal locale: a fractional point
        "14 set_string points 0 2 1 80.500 14.250;",
        "0 overlay",
        f"0 pen_down 0 {PEN}",
        "0 print_param points",
        "14 set_int outputObject 1",
        f"0 render 3 {tmp_path / 'o.raw'}",
    ]
    run = run_host(built, lines + postamble(), tmp_path, env=env)
    _ok(run)
    assert "OfxMessageError" not in run.stdout, run.messages()
    values = re.findall(r"^PARAM points = (.*)$", run.stdout, re.MULTILINE)
    assert values == ["0 2 1 80.500 14.250;0 1 1 8.000 56.000;"]
    np.testing.assert_allclose(
        read_output(tmp_path / "o.raw")[..., 3], cli_alpha[3], atol=0.5 / 65535 + 1e-6
    )


def test_full_scale_render_after_proxy_is_not_the_proxy_matte(built, clip, cli_alpha, tmp_path):
    """Working in proxy mode, then delivering at full resolution: the final frames are what
    `vosfx matte` gives on the full-size frames, not mattes refined from upscaled proxies
    cached while scrubbing (their edges are soft and offset)."""
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    lines += [f"0 render {t} - 0.5" for t in range(7)]  # scrubbing in proxy mode
    lines += [f"0 render {t} {tmp_path / f'full{t}.raw'}" for t in (6, 2, 4)]  # the delivery
    lines += [f"0 render 4 {tmp_path / 'half4.raw'} 0.5"]  # proxy again: from the full cache
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    for t in (6, 2, 4):
        np.testing.assert_allclose(
            read_output(tmp_path / f"full{t}.raw")[..., 3],
            cli_alpha[t],
            atol=0.5 / 65535 + 1e-6,
            err_msg=f"frame {t}",
        )
    size = (W // 2, H // 2)
    half = read_output(tmp_path / "half4.raw", *size)[..., 3]
    np.testing.assert_allclose(
        half, cv2.resize(cli_alpha[4], size, interpolation=cv2.INTER_AREA), atol=1e-4
    )
    assert run.renders()[-1]["fetches"] == 1  # tracked at full size already: cached


def test_mask_input_edited_on_the_shown_frame_updates_the_matte(built, clip, tmp_path):
    """The user edits the roto that feeds Mask while looking at that frame: the host renders
    the frame again and the matte follows the new mask (not the one seen a moment ago)."""
    masks = {}
    for name, frame in (("before", 3), ("after", 8)):  # "after": the square where frame 8 has it
        folder = tmp_path / name
        folder.mkdir()
        square = moving_square_frame(frame, W, H)[1].astype(np.uint8) * 255
        square.tofile(folder / "00003.a")
        cv2.imwrite(str(tmp_path / f"{name}.png"), square)
        masks[name] = folder
    expect = vosfx_matte(clip, tmp_path / "cli", str(tmp_path / "after.png"), "--mask-frame", "3")
    lines = preamble(built, clip, mask=masks["before"]) + [
        "0 render 3 -",
        f"0 mask {masks['after']}",  # the edit
        f"0 render 3 {tmp_path / 'edited.raw'}",
    ]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    np.testing.assert_allclose(read_output(tmp_path / "edited.raw")[..., 3], expect[3], atol=3e-4)


def test_install_with_command_starts_the_worker(built, clip, tmp_path):
    """`vosfx plugins install ofx --command VOSFX` records only that command: the effect
    starts the worker as `VOSFX ofx-worker --fd 3 --shm-fd 4`, which must exist."""
    from click.testing import CliRunner

    from vosfx.cli import cli

    dest = tmp_path / "plugins"
    command = f"{sys.executable} -X utf8 -m vosfx"  # not this vosfx: no worker lines
    result = CliRunner().invoke(
        cli, ["plugins", "install", "ofx", "--dest", str(dest), "--command", command]
    )
    assert result.exit_code == 0, result.output
    cfg = dest / "vosfx.ofx.bundle" / "Contents" / "Resources" / "vosfx_worker.cfg"
    assert not [line for line in cfg.read_text().splitlines() if line.startswith("worker ")]
    lines = preamble(built, clip) + [f"0 render 2 {tmp_path / 'p.raw'}", "0 children"]
    run = run_host(built, lines + postamble(), tmp_path, env={"VOSFX_OFX_CONFIG": str(cfg)})
    _ok(run)
    # no prompts yet: an empty matte from a live worker, which says so
    said = [m for m in run.messages() if m != "cleared"]
    assert len(said) == 1 and "no object is selected yet" in said[0], said
    assert "CHILDREN 1" in run.stdout


def test_matte_cache_key_follows_the_frame_size():
    """The timeline's resolution changed (1920x1080 to 2048x1080: the same points, as the
    effect sends them): the mattes cached for the old frame size are not served stretched."""
    from vosfx.ofx.worker import Worker

    worker = Worker(channel=None, make_engine=None)
    worker.set_points({"points": [[0, 1, 1, 5, 5]]})
    keys = []
    for width in (1920, 2048):
        worker.configure({"clip": {"width": width, "height": 1080, "frames": 12, "fps": 24}})
        keys.append(worker.tracking.key(worker.tracking.prompts()))
    assert keys[0] != keys[1]


# ---- final renders: a failed matte fails the render ----------------------------------------

# what makes the render of frame 9 fail, what puts things right, what the message names
FAILURES = {
    "crash": (["0 render 1 -", "0 kill_children 9", "0 sleep 100"], [], "worker failed"),
    "error": (["14 set_double softness -1"], ["14 set_double softness 1"], "Softness"),
    "cancel": (["0 abort_after 4"], ["0 abort_after 0"], "cancelled"),
}
FINAL_NOTE = "no frame without its matte is delivered"


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("mode", ["final", "unset", "interactive"])
def test_failed_matte_fails_a_final_render(built, clip, cli_alpha, tmp_path, failure, mode):
    """A delivery (the host says the render is not interactive, or says nothing: the safe
    reading) never gets the untouched Source as a successful frame: the render fails with the
    cause in the effect's message. On the viewer the Source passes through, as before. The
    next render recovers."""
    breaks, mends, cause = FAILURES[failure]
    final = mode != "interactive"
    lines = preamble(built, clip) + [f"0 render_mode {mode}", "0 overlay", f"0 pen_down 0 {PEN}"]
    lines += [*breaks, f"{int(final)} render 9 {tmp_path / 'failed.raw'}", *mends]
    lines += [f"0 render 9 {tmp_path / 'ok.raw'}"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    failed = read_output(tmp_path / "failed.raw")
    if final:
        np.testing.assert_allclose(failed, 0.0)  # transparent black, never the bare Source
        said = [m for m in run.messages() if FINAL_NOTE in m]
        assert said and cause in said[-1], run.messages()
    else:
        np.testing.assert_allclose(failed[..., :3], _source(9), atol=1e-6)  # passes through
        np.testing.assert_allclose(failed[..., 3], 1.0)
        assert not [m for m in run.messages() if FINAL_NOTE in m]
    np.testing.assert_allclose(
        read_output(tmp_path / "ok.raw")[..., 3], cli_alpha[9], atol=0.5 / 65535 + 1e-6
    )


def test_background_host_renders_are_final(built, clip, tmp_path):
    """A background (render-only) host: every render is a delivery, whatever it says."""
    lines = ["0 background 1", *preamble(built, clip), "0 overlay", f"0 pen_down 0 {PEN}"]
    lines += ["14 set_double softness -1", "1 render 2 -"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    assert [m for m in run.messages() if FINAL_NOTE in m and "Softness" in m]


# ---- upstream changes to the Source --------------------------------------------------------


@pytest.fixture(scope="module")
def retimed(tmp_path_factory):
    """The clip slipped upstream by three frames: frame i shows the square of frame i + 3."""
    return make_clip(
        tmp_path_factory.mktemp("ofx-retimed"), frame=lambda i: moving_square_frame(i + 3, W, H)[0]
    )


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The clip graded upstream: darker, lifted blacks."""
    return make_clip(
        tmp_path_factory.mktemp("ofx-graded"),
        frame=lambda i: (moving_square_frame(i, W, H)[0] * 0.5 + 40).astype(np.uint8),
    )


CHANGED = "Source changed"


@pytest.mark.parametrize("depth,step", [("byte", 1 / 255), ("short", 1 / 65535), ("float", 0)])
def test_source_changed_upstream_restarts_from_the_prompts(
    built, clip, cli_alpha, retimed, tmp_path, depth, step
):
    """Frames tracked and cached, then the clip is re-timed upstream: the next render notices,
    drops the mattes, tracks again from the click on the new pixels (the alpha is what `vosfx
    matte` gives on them) and says so once. Renders of the unchanged Source, at full and proxy
    scale, never restart anything."""
    expect = vosfx_matte(retimed, tmp_path / "cli", "--point", f"{CLICK[0]:g},{CLICK[1]:g}")
    assert np.abs(expect[4] - cli_alpha[4]).max() > 0.05  # the new pixels give another matte
    lines = preamble(built, clip, depth=depth) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    lines += [f"0 render {t} -" for t in range(7)]
    lines += ["0 render 4 -", "0 render 2 - 0.5", "0 render 6 -"]  # unchanged: all cached
    lines += [f"0 frames {retimed / 'raw'} {W} {H} {N} 0 24"]  # the change upstream
    lines += [f"0 render 4 {tmp_path / 'r4.raw'}", f"0 render 5 {tmp_path / 'r5.raw'}"]
    lines += ["0 render 4 -"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    renders = run.renders()
    assert [r["fetches"] for r in renders[7:10]] == [1, 1, 1]  # cache hits, no restart
    assert renders[10]["fetches"] == 6  # frames 0..4 tracked again, the composite's fetch
    assert renders[11]["fetches"] == 2 and renders[12]["fetches"] == 1  # on from there
    tol = step / 2 + 0.5 / 65535 + 1e-6
    for t in (4, 5):
        np.testing.assert_allclose(
            read_output(tmp_path / f"r{t}.raw")[..., 3], expect[t], atol=tol, err_msg=f"frame {t}"
        )
    changed = [m for m in run.messages() if CHANGED in m]
    assert len(changed) == 1 and "frame 4" in changed[0], run.messages()


def test_source_graded_upstream_is_noticed_at_proxy_scale(built, clip, graded, tmp_path):
    """Tracked at full size, the clip graded, then viewed in proxy mode: the proxy image is
    compared with the full-size frame's fingerprint (the same cells at either scale), the
    grade is noticed and the frame is tracked again. Unchanged, proxy renders are cache hits."""
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    lines += ["0 render 3 -", "0 render 3 - 0.5", "0 render 2 - 0.5"]
    lines += [f"0 frames {graded / 'raw'} {W} {H} {N} 0 24", "0 render 3 - 0.5", "0 render 3 -"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    fetches = [r["fetches"] for r in run.renders()]
    assert fetches[1:3] == [1, 1]  # unchanged: the full-size mattes serve the proxy renders
    assert fetches[3] == 5  # graded: frames 0..3 tracked again at proxy scale, the composite
    assert fetches[4] > 1  # full size after proxy tracking: tracked again (not a restart)
    assert len([m for m in run.messages() if CHANGED in m]) == 1, run.messages()


def test_source_watch_tolerances():
    """Same scale: any cell moving by more than 5/255 is a change; across scales (a proxy
    image against a full-size frame) only what resampling cannot explain."""
    from vosfx.ofx.source import SourceWatch

    rng = np.random.default_rng(0)
    base = rng.random((16, 16, 3), dtype=np.float32)
    watch = SourceWatch()
    assert not watch.differs(0, (96, 64), base)  # nothing recorded: nothing to compare
    watch.record(0, (1920, 1080), base)
    cases = [
        ((1920, 1080), base, False),
        ((1920, 1080), base + 0.01, False),  # float or codec noise
        ((1920, 1080), base + 0.03, True),  # a grade
        ((1920, 1080), np.where(np.arange(16)[:, None, None] == 5, base + 0.2, base), True),
        ((960, 540), base + rng.normal(0, 0.01, base.shape).astype(np.float32), False),
        ((960, 540), base * 0.8, True),  # a grade, seen at proxy scale
        ((960, 540), rng.random((16, 16, 3), dtype=np.float32), True),  # another clip
    ]
    for size, fp, want in cases:
        assert watch.differs(0, size, fp) is want, (size, want)
    watch.record(0, (960, 540), base + 0.004)
    assert watch.differs(0, (960, 540), base + 0.03)  # like with like: the tight tolerance
    watch.clear()
    assert not watch.differs(0, (1920, 1080), base * 0)


def test_source_change_seen_on_a_frame_fetched_again_restarts_the_tracking(
    built, clip, retimed, tmp_path
):
    """The change is noticed on the frame the host renders, and also on any tracked frame the
    worker fetches again: here a second click on frame 0 makes the sweep start there again
    while the frame rendered (8) was never tracked, so its own fingerprint has nothing to be
    compared with. The tracking restarts on the new pixels; no error, one note."""
    second = (20.0, 14.0)
    expect = vosfx_matte(
        retimed, tmp_path / "cli", "--point", f"{CLICK[0]:g},{CLICK[1]:g}",
        "--point", f"{second[0]:g},{second[1]:g}",
    )  # fmt: skip
    # 0..6 tracked: frame 0 is no longer among the few the worker keeps for refining
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}", "0 render 6 -"]
    lines += [f"0 frames {retimed / 'raw'} {W} {H} {N} 0 24"]
    lines += [f"0 pen_down 0 {second[0]} {H - second[1]}", f"0 render 8 {tmp_path / 'r8.raw'}"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    assert "OfxMessageError" not in run.stdout, run.messages()
    assert len([m for m in run.messages() if CHANGED in m and "frame 0" in m]) == 1
    assert run.renders()[1]["fetches"] == 11  # frame 0 fetched again, then 0..8, the composite
    np.testing.assert_allclose(
        read_output(tmp_path / "r8.raw")[..., 3], expect[8], atol=0.5 / 65535 + 1e-6
    )


def test_the_idle_time_before_preparing_a_frame(monkeypatch, caplog):
    from vosfx.ofx.tracking import IDLE_S, idle_seconds

    for said, want in (("", IDLE_S), ("0", 0.0), ("1.5", 1.5), (" 2 ", 2.0), ("-3", 0.0)):
        monkeypatch.setenv("VOSFX_OFX_IDLE_S", said)
        assert idle_seconds() == want, said
    monkeypatch.setenv("VOSFX_OFX_IDLE_S", "soon")
    with caplog.at_level("WARNING", logger="vosfx.ofx"):
        assert idle_seconds() == IDLE_S
    assert "VOSFX_OFX_IDLE_S: expected seconds (0 turns it off), found 'soon'" in caplog.text


# ---- the worker process: descriptors, environment, config, start failures ------------------


def _worker_fds(run) -> dict[int, dict[int, str]]:
    """{pid: {fd: target}} from the host's child_fds."""
    out: dict[int, dict[int, str]] = {}
    for pid, fd, target in re.findall(r"^CHILDFD (\d+) (\d+) ?(.*)$", run.stdout, re.MULTILINE):
        out.setdefault(int(pid), {})[int(fd)] = target
    return out


def test_the_worker_gets_only_its_channel_descriptors(built, clip, tmp_path):
    """A host's own files, pipes and sockets that are not close-on-exec stay out of the worker:
    it has 0 (/dev/null), 1 and 2 (its log), 3 (the socket) and 4 (the shared memory), and
    what it opens itself."""
    private = tmp_path / "host-private.txt"
    private.write_text("the host's\n", encoding="utf-8")
    lines = preamble(built, clip) + [f"0 open_fd {private}", "0 overlay", f"0 pen_down 0 {PEN}"]
    lines += ["0 render 2 -", "0 child_fds"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    opened = int(re.search(r"^OPENED (\d+)$", run.stdout, re.MULTILINE).group(1))
    assert opened > 4
    (fds,) = _worker_fds(run).values()
    assert str(private) not in fds.values(), fds
    assert fds[0] == "/dev/null" and fds[1] == fds[2] and "vosfx-ofx-" in fds[1]
    assert fds[3].startswith("socket:") and "memfd:vosfx-ofx" in fds[4]


def test_cfg_env_overrides_the_hosts_and_trailing_blanks_are_trimmed(built, clip, tmp_path):
    """An `env NAME=VALUE` line wins over the host's NAME (the worker sees one NAME, the
    config's); blanks at the end of a line are no part of its argument."""
    cfg = built.bundle / "Contents" / "Resources" / "vosfx_worker.cfg"
    mine = tmp_path / "mine.cfg"
    text = cfg.read_text(encoding="utf-8").splitlines()
    mine.write_text(
        "\n".join([*(line + "  \t" for line in text), "env VOSFX_TEST_SAID=cfg "]) + "\n",
        encoding="utf-8",
    )
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}", "0 render 2 -"]
    lines += ["0 child_env VOSFX_TEST_SAID"]
    env = {"VOSFX_OFX_CONFIG": str(mine), "VOSFX_TEST_SAID": "host"}
    run = run_host(built, lines + postamble(), tmp_path, env=env)
    _ok(run)
    assert "OfxMessageError" not in run.stdout, run.messages()
    assert re.findall(r"^CHILDENV (.*)$", run.stdout, re.MULTILINE) == ["VOSFX_TEST_SAID=cfg"]


BAD_CFG = {  # the cfg's lines (a `worker` line to start with), what the message says
    "long line": (["worker " + "x" * 3000], "line 2: longer than 2047 bytes"),
    "33 args": ([f"worker a{i}" for i in range(33)], "line 33: more than 32 'worker' lines"),
    "17 env": ([f"env A{i}=1" for i in range(17)], "line 18: more than 16 'env' lines"),
    "not UTF-8": (["worker caf\udce9"], "line 2: not UTF-8 text"),
    "unknown": (["wroker python"], "line 2: expected 'vosfx ARG'"),
    "env without =": (["env NAME"], "line 2: expected 'env NAME=VALUE'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CFG))
def test_a_bad_cfg_line_is_an_error_naming_the_file_and_line(built, clip, tmp_path, case):
    body, said = BAD_CFG[case]
    cfg = tmp_path / "bad.cfg"
    cfg.write_bytes(
        ("\n".join([f"worker {sys.executable}", *body]) + "\n").encode("utf-8", "surrogateescape")
    )
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}", "0 render 2 -"]
    run = run_host(built, lines + postamble(), tmp_path, env={"VOSFX_OFX_CONFIG": str(cfg)})
    _ok(run)
    (message,) = [m for m in run.messages() if "OfxMessageError" in m]
    assert f"config {cfg}, {said}" in message, message
    assert "\ufffd" not in message and "CHILDREN" not in run.stdout


def test_a_worker_that_cannot_start_says_why_and_leaves_no_empty_log(built, clip, tmp_path):
    """The worker exits at once (vosfx not in that Python): the message has the last line of
    its log (the cause) and the log's path. A worker that cannot even be spawned leaves no
    log behind, however often it is tried."""
    cfg = tmp_path / "nomodule.cfg"
    cfg.write_text(
        f"worker {sys.executable}\nworker -m\nworker no_such_vosfx_module\n", encoding="utf-8"
    )
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}", "0 render 2 -"]
    run = run_host(built, lines + postamble(), tmp_path, env={"VOSFX_OFX_CONFIG": str(cfg)})
    _ok(run)
    (message,) = [m for m in run.messages() if "OfxMessageError" in m]
    assert "exited with status 1: " in message and "No module named no_such_vosfx_module" in message
    assert re.search(r"Log: \S+vosfx-ofx-\w+\.log", message), message

    spawn = tmp_path / "spawn"
    spawn.mkdir()
    cfg.write_text("worker relative/python\n", encoding="utf-8")
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    for k in range(3):  # each parameter change tries again
        lines += [f"14 set_int object {k + 2}", "0 render 2 -", "0 expect_message cannot start"]
    run = run_host(built, lines + postamble(), spawn, env={"VOSFX_OFX_CONFIG": str(cfg)})
    _ok(run)
    assert not list(spawn.glob("vosfx-ofx-*.log"))


def test_a_killed_workers_scratch_folder_is_removed(built, clip, tmp_path):
    """A worker killed (kill -9, a timeout) cannot remove its scratch folder (the session's
    logits files): the next worker removes it, and the folders of this user's other ended
    workers on this machine; a live process's folder stays."""
    from vosfx.files import HOST_ID
    from vosfx.ofx.scratch import PREFIX

    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = tmp_path / f"{PREFIX}{HOST_ID}-{ended.pid}"
    live = tmp_path / f"{PREFIX}{HOST_ID}-{os.getpid()}"  # this test's process: alive
    for folder in (dead, live):
        (folder / "vosfx-session-x").mkdir(parents=True)
        (folder / "vosfx-session-x" / "logits.bin").write_bytes(b"\0" * 1024)
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}", "0 render 3 -"]
    lines += ["0 child_fds", "0 kill_children 9", "0 sleep 100", "0 render 4 -"]  # it failed
    lines += ["0 render 4 -", "0 child_fds"]  # a new worker
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    killed, second = (int(p) for p in re.findall(r"^CHILDFD (\d+) 0 ", run.stdout, re.MULTILINE))
    assert killed != second
    assert not dead.exists() and live.is_dir()
    left = sorted(p.name for p in tmp_path.glob(f"{PREFIX}*"))
    assert left == [live.name], left  # the killed worker's is gone, the last one's too
    assert not list(tmp_path.glob("vosfx-session-*"))


# ---- parameters the worker cannot take -----------------------------------------------------


def _worker_pids(run) -> list[int]:
    return [int(p) for p in re.findall(r"^CHILDFD (\d+) 0 ", run.stdout, re.MULTILINE)]


def test_bad_parameter_values_are_refused_and_the_worker_lives_on(built, clip, cli_alpha, tmp_path):
    """A point with NaN or inf coordinates (a hand-edited project) is skipped; a NaN or inf
    setting and a Model that is not UTF-8 are refused with the parameter's name as the host
    shows it; the worker is never restarted for any of them."""
    lines = preamble(built, clip) + [
        "0 overlay",
        "14 set_string points 0 1 1 nan 10;0 1 1 8 56;0 1 1 inf 3;0 1 0 1e308 5;",
        f"0 render 2 {tmp_path / 'skipped.raw'}",
        "0 child_fds",
        "14 set_double threshold nan",
        "0 render 2 -",
        "0 expect_message Threshold: expected a number, found NaN",
        "14 set_double threshold 0",
        "14 set_double shiftEdge -inf",
        "0 render 2 -",
        "0 expect_message Shift edge (px): expected a number, found -inf",
        "14 set_double shiftEdge 0",
        "14 set_string model sam2.1-tiny\udcff",
        "0 render 2 -",
        "0 expect_message Model: expected UTF-8 text, found 'sam2.1-tiny?'",
        "14 set_string model sam2.1-tiny",
        f"0 render 3 {tmp_path / 'again.raw'}",
        "0 child_fds",
    ]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    np.testing.assert_allclose(
        read_output(tmp_path / "skipped.raw")[..., 3], cli_alpha[2], atol=0.5 / 65535 + 1e-6
    )
    np.testing.assert_allclose(
        read_output(tmp_path / "again.raw")[..., 3], cli_alpha[3], atol=0.5 / 65535 + 1e-6
    )
    first, last = _worker_pids(run)
    assert first == last  # one worker all along
    assert not [m for m in run.messages() if "worker failed" in m], run.messages()


class _Recorder:
    def __init__(self):
        self.sent = []

    def send(self, mtype, **kw):
        self.sent.append((mtype, kw.get("text", "")))


def test_the_worker_answers_a_malformed_message_with_an_error():
    """Text the worker cannot take (not UTF-8, not JSON, NaN or 1e999 in it) is answered
    with ERROR; the worker goes on (it ended on each before, and a new one was started on
    every render)."""
    from vosfx.ofx import protocol as P
    from vosfx.ofx.worker import Worker

    channel = _Recorder()
    worker = Worker(channel=channel, make_engine=None)
    clip_ok = '{"clip": {"width": 8, "height": 8, "frames": 3, "fps": 24}}'
    bad = [
        P.Message(P.CONFIG, text='{"model": {"name": "sam\ufffd"}}', utf8=False),
        P.Message(P.CONFIG, text='{"refine": {"threshold": nan}}'),
        P.Message(P.CONFIG, text='{"refine": {"threshold": NaN}}'),
        P.Message(P.PROMPTS, text='{"points": [[0, 1, 1, 1e999, 2]]}'),
        P.Message(P.PROMPTS, text="[1, 2]"),
    ]
    for msg in bad:
        worker.handle(msg)
    worker.handle(P.Message(P.CONFIG, text=clip_ok))
    kinds = [mtype for mtype, _text in channel.sent]
    assert kinds == [P.ERROR] * len(bad) + [P.OK], channel.sent
    assert "UTF-8" in channel.sent[0][1] and "NaN" in channel.sent[2][1]


def test_refine_errors_name_the_effects_parameters(built, clip, tmp_path):
    """The worker's refusal names the parameters as the host shows them, and the message says
    "vosfx Matte: " once."""
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    lines += ["14 set_double clipBlack 0.9", "14 set_double clipWhite 0.1", "0 render 2 -"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    (message,) = [m for m in run.messages() if "OfxMessageError" in m]
    assert message.startswith(
        f"OfxMessageError {ID}: vosfx Matte: Clip black: expected below Clip white (0.1)"
    ), message
    assert message.count("vosfx Matte") == 1


def test_the_workers_labels_are_the_effects():
    from vosfx.ofx.worker import EFFECT_LABELS

    src = (HERE.parents[1] / "plugins" / "ofx" / "vosfx_ofx.c").read_text(encoding="utf-8")
    table = src[src.index("vx_param_labels[VXP_COUNT] = {") :].split("};")[0]
    labels = set(re.findall(r'"([^"]+)"', table))
    assert set(EFFECT_LABELS.values()) <= labels, set(EFFECT_LABELS.values()) - labels


# ---- the overlay ---------------------------------------------------------------------------


def test_a_ctrl_click_that_hits_no_point_adds_none(built, clip, tmp_path):
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}", "0 print_param points"]
    lines += [f"14 key_down {0xFFE3}", "0 pen_down 0 60 20", f"14 key_up {0xFFE3}"]
    lines += ["0 print_param points"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    before, after = re.findall(r"^PARAM points = (.*)$", run.stdout, re.MULTILINE)
    assert before == after == "0 1 1 8.000 56.000;"
    assert not run.messages()


def test_the_point_past_the_limit_is_refused_with_a_message(built, clip, tmp_path):
    lines = preamble(built, clip) + ["0 overlay"]
    # 10 px apart: each click misses the others (8 px), most lie off the picture (kept)
    lines += [f"0 pen_down 0 {i % 64 * 10} {i // 64 * 10}" for i in range(4097)]
    lines += ["0 print_param points"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    (value,) = re.findall(r"^PARAM points = (.*)$", run.stdout, re.MULTILINE)
    assert value.count(";") == 4096
    (said,) = run.messages()
    assert "at most 4096 points" in said, said


def test_the_studio_is_reaped_and_a_dash_file_is_no_option(built, clip, tmp_path):
    """Studios that ended are reaped at the effect's next action, however many were opened
    (none is left a zombie)."""
    cfg = tmp_path / "studio.cfg"
    cfg.write_text("vosfx /bin/true\n", encoding="utf-8")
    lines = preamble(built, clip) + ["14 set_string studioSource --help"]
    lines += ["0 press pickInStudio 4"] * 10
    lines += ["0 sleep 500", "0 action OfxActionPurgeCaches", "0 zombies"]
    run = run_host(built, lines + postamble(), tmp_path, env={"VOSFX_OFX_CONFIG": str(cfg)})
    _ok(run)
    assert "ZOMBIES 0" in run.stdout
    assert not run.messages()


# ---- the Source: small proxies, huge frames, missing images, NaN pixels ---------------------


def test_tiny_proxies_are_no_source_change(built, tmp_path_factory, tmp_path):
    """A small clip rendered at full size, then at render scales down to 0.01 (1 x 1 pixels):
    the proxy fingerprints cannot be told from the full-size ones' and say nothing; no
    restart, no note (cache hits only)."""
    w, h = 97, 63
    small = make_clip(tmp_path_factory.mktemp("ofx-small"), n=3, width=w, height=h)
    lines = preamble(built, small, n=3, width=w, height=h)
    lines += ["0 overlay", f"0 pen_down 0 {w * 0.3} {h * 0.7}", "0 render 1 -"]
    lines += [f"0 render 1 - {s}" for s in (0.5, 0.33, 0.1, 0.01)]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    assert not [m for m in run.messages() if CHANGED in m], run.messages()
    assert [r["fetches"] for r in run.renders()[1:]] == [1, 1, 1, 1]


def test_frames_past_the_size_limit_are_named(built, tmp_path):
    clip = tmp_path / "wide"
    (clip / "raw").mkdir(parents=True)
    np.zeros((8, 40000, 3), np.uint8).tofile(clip / "raw" / "00000.rgb")
    lines = preamble(built, clip, n=1, width=40000, height=8, depth="byte")
    lines += ["0 overlay", "0 pen_down 0 10 4", "0 render 0 -"]
    lines += ["0 expect_message the Source is 40000 x 8 pixels; the effect mattes frames up to"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)


def test_a_missing_source_image_fails_a_final_render(built, clip, tmp_path):
    """The host gives no Source image for the rendered frame, or for a frame the tracking
    needs: a delivery fails with the frame named; a viewer says so (the rendered frame's
    missing image: transparent black; a tracked one's: the Source passes through)."""
    lines = preamble(built, clip) + ["0 overlay", f"0 pen_down 0 {PEN}"]
    lines += ["0 render_mode final", "0 fail_source 1", f"1 render 1 {tmp_path / 'f.raw'}"]
    lines += ["0 expect_message no Source image for frame 1. The render stops"]
    lines += ["0 render_mode interactive", "0 render 1 -", "0 expect_message no Source image"]
    lines += ["0 fail_source 0", "0 fail_frame 2", "0 render_mode final", "1 render 5 -"]
    lines += ["0 expect_message no Source image for frame 2, which the tracking of frame 5"]
    lines += ["0 render_mode interactive", f"0 render 5 {tmp_path / 'i.raw'}"]
    lines += ["0 expect_message no Source image for frame 2", "0 fail_frame -1", "0 render 5 -"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    np.testing.assert_allclose(read_output(tmp_path / "f.raw"), 0.0)
    np.testing.assert_allclose(read_output(tmp_path / "i.raw")[..., :3], _source(5), atol=1e-6)
    assert run.renders()[-1]["status"] == 0


def test_a_model_file_that_is_no_checkpoint_is_named_so(built, clip, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(range(256)) * 8)
    lines = preamble(built, clip) + [f"14 set_string model {bad}", "0 overlay"]
    lines += [f"0 pen_down 0 {PEN}", "0 render 3 -"]
    lines += [f"0 expect_message Model '{bad}': the file cannot be read as a checkpoint"]
    run = run_host(built, lines + postamble(), tmp_path)
    _ok(run)
    assert "unknown model" not in run.stdout

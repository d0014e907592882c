"""The Blender add-on in a real (headless) Blender: the `bpy` 5.0.1 wheel, which needs Python
3.11 and numpy < 2, lives in its own environment that this test builds once in a cache folder.
The add-on is installed with `vosfx plugins install blender`, pointed at the FakeEngine vosfx
launcher, run on a real clip, and the frames Blender renders must carry the matte as alpha."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared_data

from vosfx.cli import cli

REPO = Path(__file__).resolve().parents[1]
# the bpy wheels the add-on is run in: the newest Blender, and the 4.2 LTS its bl_info names
# as the oldest (4.2 calls the sequencer's strips "sequences")
BPY_VERSIONS = ("5.0.1", "4.2.0")
FAKE_VOSFX = f'"{sys.executable}" "{REPO / "tests" / "bin" / "vosfx_fake.py"}"'
TRIM_IN, USED, PLAYHEAD = 10, 4, 2  # strip uses source frames 10..13, playhead on frame 12
pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


@pytest.fixture(params=BPY_VERSIONS)
def bpy_version(request) -> str:
    return request.param


def _env_dir(version: str) -> Path:
    base = os.environ.get("VOSFX_TEST_CACHE") or Path.home() / ".cache" / "vosfx-test"
    return Path(base) / ("bpy-env" if version == BPY_VERSIONS[0] else f"bpy-env-{version}")


def bpy_python(version: str) -> Path:
    """Python of the bpy ``version`` environment, built on first use (about a minute, ~1 GB);
    skip with the reason when it cannot be built (no python3.11, no network)."""
    env = _env_dir(version)
    py = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    check = [str(py), "-c", "import bpy, numpy; assert numpy.__version__ < '2'"]
    if py.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return py
    base = shutil.which("python3.11")
    if base is None:
        pytest.skip(f"the Blender test needs python3.11 (the bpy {version} wheel is built for it)")
    steps = [
        [base, "-m", "venv", "--clear", str(env)],
        [str(py), "-m", "pip", "install", "-q", f"bpy=={version}", "numpy<2"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot build the bpy environment in {env}: {done.stderr[-500:]}")
    return py


def install_addon(tmp_path: Path) -> Path:
    """`vosfx plugins install blender` into ``tmp_path/addons``, pointed at the FakeEngine
    vosfx launcher; returns the add-ons folder."""
    addons = tmp_path / "addons"
    r = CliRunner().invoke(
        cli, ["plugins", "install", "blender", "--dest", str(addons), "--command", FAKE_VOSFX]
    )
    assert r.exit_code == 0, r.output
    return addons


def run_in_blender(tmp_path: Path, version: str, script: str, args: dict, **env) -> dict:
    """Runs ``script`` in the bpy ``version`` environment with ``args`` as JSON; returns the
    JSON it printed after ``RESULT ``."""
    return run_in_blender_printing(tmp_path, version, script, args, **env)[0]


def run_in_blender_printing(
    tmp_path: Path, version: str, script: str, args: dict, **env
) -> tuple[dict, str]:
    """:func:`run_in_blender`, and all the script printed (the operators' reports among it)."""
    py = bpy_python(version)
    (tmp_path / "run.py").write_text(script)
    done = subprocess.run(
        [str(py), str(tmp_path / "run.py"), "--", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHONPATH=str(REPO), **env),
        check=False,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[0][len("RESULT ") :]), done.stdout


PRELUDE = r"""
import json, os, sys
import bpy
import addon_utils

args = json.loads(sys.argv[-1])
sys.path.insert(0, args["addons"])
addon_utils.enable("vosfx_sequencer", default_set=True)


def strips(ed):  # Blender 5.0: strips; 4.2: sequences
    return ed.strips if hasattr(ed, "strips") else ed.sequences


def use_scene(scene):  # Blender 5.0 edits the workspace's sequencer scene
    if hasattr(bpy.context.workspace, "sequencer_scene"):
        bpy.context.workspace.sequencer_scene = scene
"""  # each script's start: its args, the add-on enabled, what differs between Blender versions

SCRIPT = (
    PRELUDE
    + r"""
scene = bpy.context.scene
use_scene(scene)
ed = scene.sequence_editor_create()
strip = strips(ed).new_movie("clip", args["clip"], channel=1, frame_start=1)
strip.frame_offset_start = args["trim_in"]
strip.frame_final_duration = args["used"]
ed.active_strip = strip
scene.frame_current = int(strip.frame_final_start) + args["playhead"]
ret = bpy.ops.sequencer.vosfx_matte(mask_path=args["mask"], output_dir=args["out"])
assert ret == {"FINISHED"}, ret
mod = strip.modifiers["vosfx matte"]
r = scene.render
r.resolution_x, r.resolution_y, r.resolution_percentage = strip.elements[0].orig_width, \
    strip.elements[0].orig_height, 100
r.image_settings.file_format = "PNG"
r.image_settings.color_mode = "RGBA"
r.image_settings.color_depth = "16"
rendered = {}
for k in args["render"]:
    scene.frame_set(int(strip.frame_final_start) + k)
    r.filepath = "%s/render_%d.png" % (args["out"], k)
    bpy.ops.render.render(write_still=True)
    rendered[k] = r.filepath
print("RESULT " + json.dumps({
    "rendered": rendered, "matte_strip": mod.input_mask_strip.name,
    "matte_start": int(mod.input_mask_strip.frame_start),
    "strip_start": int(strip.frame_start), "muted": mod.input_mask_strip.mute,
    "files": [e.filename for e in mod.input_mask_strip.elements],
    "directory": mod.input_mask_strip.directory,
}))
"""
)


def _ellipse(width, height):
    import cv2

    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 3, height // 2), (width // 6, height // 4), 20, 0, 360, 255, -1)
    return mask


def test_addon_masks_the_strip_and_renders_alpha(tmp_path, config_home, bpy_version):
    import cv2

    clip = shared_data("videos", "01_dog.mp4")
    addons = install_addon(tmp_path)
    mask = _ellipse(1280, 720)
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    args = {
        "addons": str(addons),
        "clip": str(clip),
        "mask": str(tmp_path / "mask.png"),
        "out": str(tmp_path),
        "trim_in": TRIM_IN,
        "used": USED,
        "playhead": PLAYHEAD,
        "render": [0, PLAYHEAD, USED - 1],
    }
    said = "--device cuda: ONNX Runtime has no CUDAExecutionProvider in this install"
    out, printed = run_in_blender_printing(
        tmp_path, bpy_version, SCRIPT, args, VOSFX_FAKE_WARNING=said
    )
    # what the run said the user must know is the operator's warning report
    assert f"vosfx: {said}" in printed, printed[-3000:]

    # the matte covers exactly the used source frames and sits on them
    stem = f"01_dog_vosfx_{TRIM_IN}-{TRIM_IN + USED - 1}"
    assert out["files"] == [f"{stem}.{i:05d}.png" for i in range(TRIM_IN, TRIM_IN + USED)]
    assert out["matte_start"] == out["strip_start"] + TRIM_IN and out["muted"]
    sidecar = json.loads((tmp_path / f"{stem}.json").read_text())
    assert sidecar["job"]["prompts"][0]["frame"] == TRIM_IN + PLAYHEAD

    for k, path in out["rendered"].items():
        rgba = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert rgba is not None and rgba.shape == (720, 1280, 4), path
        alpha = rgba[..., 3].astype(np.float32) / 65535.0
        matte = cv2.imread(str(tmp_path / stem / out["files"][int(k)]), cv2.IMREAD_UNCHANGED)
        expected = matte.astype(np.float32) / 65535.0
        assert np.abs(alpha - expected).mean() < 0.01, k
        # the fake repeats the prompt, forwards and (before the playhead) backwards
        assert np.abs(alpha - mask / 255.0).mean() < 0.02, k
        assert rgba[..., :3][alpha > 0.99].mean() > 0  # the picture is there, not just alpha


REFUSALS = (
    PRELUDE
    + r"""
win = bpy.context.window_manager.windows[0]
area = win.screen.areas[0]
area.ui_type = "SEQUENCE_EDITOR"  # the Add > Movie and retiming operators need the editor
region = [r for r in area.regions if r.type == "WINDOW"][0]
reports = {}


def fresh(fps, fps_base=1.0):
    scene = bpy.context.scene
    use_scene(scene)
    scene.render.fps, scene.render.fps_base = fps, fps_base
    ed = scene.sequence_editor_create()
    for s in list(strips(ed)):
        strips(ed).remove(s)
    return scene, ed


def matte(case, scene, ed, strip, **kw):
    ed.active_strip = strip
    scene.frame_current = int(strip.frame_final_start) + 2
    before = set(os.listdir(args["temp"]))
    try:
        ret = bpy.ops.sequencer.vosfx_matte(mask_path=args["mask"], output_dir=args["out"], **kw)
    except RuntimeError as err:  # an operator's ERROR report
        ret = str(err)
    reports[case] = {"ret": str(ret), "left": sorted(set(os.listdir(args["temp"])) - before)}


# Add > Movie with its default Adjust Playback Rate: a 29.97 fps movie in a 24 fps scene
scene, ed = fresh(24)
add = bpy.ops.sequencer.movie_strip_add
options = dict(
    filepath=args["clip"], directory=os.path.dirname(args["clip"]),
    files=[{"name": os.path.basename(args["clip"])}], frame_start=1, channel=1,
    sound=False, use_framerate=False, set_view_transform=False, adjust_playback_rate=True,
    overlap=False, move_strips=False, replace_sel=False,
)
known = {p.identifier for p in add.get_rna_type().properties}  # move_strips: not in 4.2
with bpy.context.temp_override(window=win, area=area, region=region):
    add("EXEC_DEFAULT", **{k: v for k, v in options.items() if k in known})
matte("playback_rate", scene, ed, strips(ed)[0])

# a retimed strip: 50 % speed from its 50th frame
scene, ed = fresh(30, 1.001)
strip = strips(ed).new_movie("clip", args["clip"], channel=1, frame_start=1)
strip.select = True
ed.active_strip = strip
with bpy.context.temp_override(window=win, area=area, region=region):
    bpy.ops.sequencer.retiming_key_add("EXEC_DEFAULT", timeline_frame=50)
    bpy.ops.sequencer.retiming_segment_speed_set("EXEC_DEFAULT", speed=50)
matte("retimed", scene, ed, strip)

# a flipped strip: Blender renders its mask unflipped
scene, ed = fresh(30, 1.001)
strip = strips(ed).new_movie("clip", args["clip"], channel=1, frame_start=1)
strip.use_flip_x = True
matte("flipped", scene, ed, strip)

# image strips vosfx cannot read image for image: a single image, part of a sequence
scene, ed = fresh(30, 1.001)
images = sorted(os.listdir(args["sequence"]))
strip = strips(ed).new_image("still", os.path.join(args["sequence"], images[0]), 1, 1)
matte("single_image", scene, ed, strip)
scene, ed = fresh(30, 1.001)
strip = strips(ed).new_image("part", os.path.join(args["sequence"], images[0]), 1, 1)
strip.elements.append(images[1])
matte("part_of_sequence", scene, ed, strip)

# the movie at the scene's rate, but the vosfx the add-on runs is gone
scene, ed = fresh(30, 1.001)
strip = strips(ed).new_movie("clip", args["clip"], channel=1, frame_start=1)
prefs = bpy.context.preferences.addons["vosfx_sequencer"].preferences
prefs.vosfx_executable = args["gone"]
matte("missing_vosfx", scene, ed, strip)
print("RESULT " + json.dumps(reports))
"""
)


def test_addon_refuses_what_it_cannot_align_and_a_missing_vosfx(tmp_path, config_home, bpy_version):
    """Strips whose frames are not source frames one to one (Add > Movie's Adjust Playback
    Rate at another scene rate, speed keys), flipped strips (Blender does not flip a mask
    strip) and image strips that are not a whole numbered sequence are refused with the
    reason, and a vosfx that
    cannot be started is one error naming it; no job file is left behind."""
    clip = shared_data("videos", "01_dog.mp4")  # 29.97 fps
    addons = install_addon(tmp_path)
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "mask.png"), _ellipse(1280, 720))
    (tmp_path / "temp").mkdir()
    (tmp_path / "seq").mkdir()
    for k in (1, 2, 3):
        cv2.imwrite(str(tmp_path / "seq" / f"a.{k}.png"), np.zeros((8, 8, 3), np.uint8))
    gone = str(tmp_path / "gone" / "vosfx")
    args = {
        "addons": str(addons),
        "clip": str(clip),
        "mask": str(tmp_path / "mask.png"),
        "out": str(tmp_path),
        "temp": str(tmp_path / "temp"),
        "sequence": str(tmp_path / "seq"),
        "gone": gone,
    }
    out = run_in_blender(tmp_path, bpy_version, REFUSALS, args, TMPDIR=str(tmp_path / "temp"))
    assert "29.970 fps and the scene at 24.000 fps" in out["playback_rate"]["ret"], out
    assert "Frame Rate" in out["playback_rate"]["ret"]
    assert "is retimed" in out["retimed"]["ret"] and "Reset Retiming" in out["retimed"]["ret"]
    assert "is flipped (Flip X)" in out["flipped"]["ret"], out
    assert "turn the flip off" in out["flipped"]["ret"]
    assert "is a single image" in out["single_image"]["ret"], out
    assert "not the whole numbered sequence" in out["part_of_sequence"]["ret"], out
    assert "a.3.png is missing" not in out["part_of_sequence"]["ret"]
    assert gone in out["missing_vosfx"]["ret"], out
    assert "VOSFX_EXECUTABLE" in out["missing_vosfx"]["ret"]
    assert all(not case["left"] for case in out.values()), out
    assert not list(tmp_path.glob("01_dog_vosfx_*")), "nothing is written"


FOLLOWING = (
    PRELUDE
    + r"""
scene = bpy.context.scene
use_scene(scene)
scene.render.fps, scene.render.fps_base = 30, 1.0
r = scene.render
r.resolution_x, r.resolution_y, r.resolution_percentage = 512, 128, 100
r.image_settings.file_format = "PNG"
r.image_settings.color_mode = "RGBA"
r.image_settings.color_depth = "16"
ed = scene.sequence_editor_create()
out = {}


def render(case, strip, offsets):
    mod = strip.modifiers["vosfx matte"]
    for k in offsets:
        t = int(strip.frame_final_start) + k
        for on in (True, False):  # the cut-out, then the picture alone
            mod.mute = not on
            scene.frame_set(t)
            r.filepath = "%s/%s_%d_%s.png" % (args["out"], case, k, "cut" if on else "pic")
            bpy.ops.render.render(write_still=True)
        mod.mute = False
    out[case] = {"offsets": offsets, "matte_start": int(mod.input_mask_strip.frame_start)}


def matte(case, whole_clip=False, **strip_settings):
    for s in list(strips(ed)):
        strips(ed).remove(s)
    strip = strips(ed).new_movie(case, args["clip"], channel=1, frame_start=1)
    for name, value in strip_settings.items():
        setattr(strip, name, value)
    ed.active_strip = strip
    scene.frame_current = int(strip.frame_final_start) + 2
    ret = bpy.ops.sequencer.vosfx_matte(
        mask_path=args["masks"], output_dir=args["out"], whole_clip=whole_clip
    )
    assert ret == {"FINISHED"}, ret
    return strip


# a hold offset (the strip's content starts at source frame 5) and trims
strip = matte("hold", animation_offset_start=5, frame_offset_start=3, frame_final_duration=10)
render("hold", strip, [0, 2, 9])
# played reversed, trimmed
strip = matte("reversed", use_reverse_frames=True, frame_offset_start=4, frame_final_duration=12)
render("reversed", strip, [0, 2, 11])
# matted whole as it was, then slid in time, moved, scaled and rotated, and reversed: the matte
# follows (reversed, a trimmed strip shows other source frames: the whole clip's matte has them)
strip = matte("moved", whole_clip=True, frame_offset_start=2, frame_final_duration=14)
strip.frame_start += 7
strip.transform.offset_x, strip.transform.offset_y = 48.0, -10.0
strip.transform.scale_x = strip.transform.scale_y = 0.75
strip.transform.rotation = 0.2
bpy.context.view_layer.update()
render("moved", strip, [0, 2, 13])
strip.use_reverse_frames = True
bpy.context.view_layer.update()
render("moved_reversed", strip, [1, 6])
# the strip duplicated with its modifier (Shift+D): the matte stays with the strip it was made
# for, and the two strips do not pull it back and forth one update after the other
from vosfx_sequencer import plan as vplan

twin = strips(ed).new_movie("twin", args["clip"], channel=5, frame_start=60)
twin_mod = twin.modifiers.new("vosfx matte", "MASK")
twin_mod.input_mask_type = "STRIP"
twin_mod.input_mask_strip = strip.modifiers["vosfx matte"].input_mask_strip
bpy.context.view_layer.update()
settled = [vplan.follow_all(scene) for _ in range(3)]
render("moved_twin", strip, [1, 6])
out["moved_twin"]["settled"] = settled
# the 30 fps movie in a 24 fps scene, one source frame per scene frame (not Adjust Playback
# Rate), with a hold offset: accepted and aligned
scene.render.fps = 24
strip = matte("other_rate", animation_offset_start=2, frame_final_duration=12)
render("other_rate", strip, [0, 2, 11])
scene.render.fps = 30
# an image sequence (shot.1001.png ...) with a hold offset and trims
for s in list(strips(ed)):
    strips(ed).remove(s)
files = sorted(os.listdir(args["sequence"]))
strip = strips(ed).new_image(
    "sequence", os.path.join(args["sequence"], files[0]), channel=1, frame_start=1
)
for name in files[1:]:
    strip.elements.append(name)
strip.animation_offset_start, strip.frame_offset_start, strip.frame_final_duration = 4, 3, 9
ed.active_strip = strip
scene.frame_current = int(strip.frame_final_start) + 2
ret = bpy.ops.sequencer.vosfx_matte(mask_path=args["masks"], output_dir=args["out"])
assert ret == {"FINISHED"}, ret
render("sequence", strip, [0, 2, 8])
print("RESULT " + json.dumps(out))
"""
)


def _bars(n, width, height):
    """Source frame k of the clip: a white bar over low-res column k (x in [8k, 8k + 8) at
    512 px), so the picture says which source frame Blender shows."""
    step = width // 64
    for k in range(n):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, step * k : step * (k + 1)] = 255
        yield image


def test_matte_stays_on_its_strip_frame_for_frame(tmp_path, config_home, bpy_version):
    """The matte of a strip with a hold offset, of a reversed strip, of a strip moved in time
    and in the frame (moved, scaled, rotated), then reversed, after matting, and of an image
    sequence strip (shot.1001.png ...) sits on the picture in Blender's render: each
    source frame k shows a bar at column k, and vosfx's (fake) matte of frame k is that
    column, so a matte one frame off lands one bar width beside the picture."""
    import cv2
    from media import make_clip

    clip = make_clip(
        tmp_path / "bars.mp4",
        width=512,
        height=128,
        fps=30,
        frames=_bars(40, 512, 128),
        options={"crf": "0", "g": "1"},
    )
    addons = install_addon(tmp_path)
    # any mask: the fake mattes frame k as column k whatever the prompt
    sequence = tmp_path / "seq"
    sequence.mkdir()
    for k, image in enumerate(_bars(24, 512, 128)):  # numbered from 1001, as shots are
        cv2.imwrite(str(sequence / f"shot.{1001 + k}.png"), image)
    mask = np.zeros((128, 512), np.uint8)
    mask[:, 100:140] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    args = {
        "addons": str(addons),
        "clip": str(clip),
        "sequence": str(sequence),
        "masks": str(tmp_path / "mask.png"),
        "out": str(tmp_path),
    }
    out = run_in_blender(tmp_path, bpy_version, FOLLOWING, args, VOSFX_FAKE_MATTE="column")
    assert set(out) == {
        "hold",
        "reversed",
        "moved",
        "moved_reversed",
        "moved_twin",
        "other_rate",
        "sequence",
    }
    assert out["moved_twin"]["settled"] == [False, False, False]
    for case, info in out.items():
        for k in info["offsets"]:
            pic = cv2.imread(str(tmp_path / f"{case}_{k}_pic.png"), cv2.IMREAD_UNCHANGED)
            cut = cv2.imread(str(tmp_path / f"{case}_{k}_cut.png"), cv2.IMREAD_UNCHANGED)
            row = 64
            bar = (pic[row, :, :3].astype(np.float32).mean(axis=1) > 32768) & (
                pic[row, :, 3] > 32768
            )
            alpha = cut[row, :, 3] > 32768
            assert bar.sum() >= 4, (case, k, "no bar in the picture")
            overlap = (bar & alpha).sum() / (bar | alpha).sum()
            assert overlap > 0.6, (case, k, np.flatnonzero(bar), np.flatnonzero(alpha))


RERUNS = (
    PRELUDE
    + r"""
import vosfx_sequencer
from vosfx_sequencer import plan as vplan

scene = bpy.context.scene
use_scene(scene)
scene.render.fps, scene.render.fps_base = 24, 1.0
ed = scene.sequence_editor_create()
out = {}


def refusal(fn):
    try:
        fn()
        return "ok"
    except (ValueError, RuntimeError) as err:
        return str(err)


strip = strips(ed).new_movie("clip", args["clip"], channel=1, frame_start=1)
ed.active_strip = strip
scene.frame_current = 3
for _ in (1, 2):  # a re-run replaces the matte strip of the first
    ret = bpy.ops.sequencer.vosfx_matte(mask_path=args["mask"], output_dir=args["out"])
    assert ret == {"FINISHED"}, ret
out["strips"] = sorted([s.name, s.channel] for s in strips(ed))
out["matte_dir"] = strip.modifiers["vosfx matte"].input_mask_strip.directory
# a studio pick carries its own frames: the playhead may have left the strip meanwhile
picked = {"input": vplan.source_path(strip), "start": 0, "end": 20, "overrides": {},
          "prompts": [{"frame": 2, "mask": args["mask"]}]}
scene.frame_current = 100
p = vplan.plan_job(scene, strip, None, None, False, args["out"], picked=picked)
os.remove(p["job_path"])
out["picked"] = [p["start"], p["end"], p["output"]]
scene.frame_current = 3
# a second render while one runs is refused (they share the status bar)
vosfx_sequencer._state["busy"] = True
out["busy"] = refusal(lambda: bpy.ops.sequencer.vosfx_matte(mask_path=args["mask"]))
vosfx_sequencer._state["busy"] = False
# the strip deleted while vosfx rendered: said, nothing attached, no traceback
p = vplan.plan_job(scene, strip, args["mask"], None, False, args["out"])
cmd = vosfx_sequencer.vosfx_client.load_command(os.path.join(args["addons"], "vosfx_sequencer"))
res = vosfx_sequencer.vosfx_client.run(
    cmd, vosfx_sequencer.vosfx_client.write_job(p["job"], p["job_path"]))
strips(ed).remove(strip)


class Op:
    reports = []

    def report(self, kind, text):
        self.reports.append([sorted(kind)[0], text])


ret = vosfx_sequencer.SEQUENCER_OT_vosfx_matte._finish(Op(), bpy.context, scene, strip, p, res)
out["deleted"] = [sorted(ret), Op.reports, os.path.exists(p["job_path"])]
# retiming keys at 100 % speed are no retiming; a 50 % segment is
for s in list(strips(ed)):
    strips(ed).remove(s)
strip = strips(ed).new_movie("rt", args["clip"], channel=1, frame_start=1)
ed.active_strip = strip
strip.select = True
win = bpy.context.window_manager.windows[0]
area = win.screen.areas[0]
area.ui_type = "SEQUENCE_EDITOR"
region = [r for r in area.regions if r.type == "WINDOW"][0]
check = lambda: vplan.check_one_to_one(scene, strip, vplan.source_path(strip))
with bpy.context.temp_override(window=win, area=area, region=region):
    scene.frame_current = 10
    bpy.ops.sequencer.retiming_key_add()
    out["keys"] = len(strip.retiming_keys)
    out["at_100"] = refusal(check)
    bpy.ops.sequencer.retiming_segment_speed_set(speed=50)
    out["at_50"] = refusal(check)
print("RESULT " + json.dumps(out))
"""
)


def test_reruns_picks_retiming_keys_and_a_deleted_strip(tmp_path, config_home, bpy_version):
    """A movie named ``wide 100%.mp4`` (a % that is no frame number): a re-run replaces the
    matte strip of the first (one matte strip left); a studio pick plans with the playhead
    off the strip; a render while one runs is refused; the strip deleted during a render
    is said, not a traceback; retiming keys at 100 % speed pass, a 50 % segment is refused."""
    from media import make_clip, moving_square_frame
    from PIL import Image

    clip = make_clip(tmp_path / "wide 100%.mp4", n=20, width=96, height=64, fps=24)
    _, mask = moving_square_frame(2, 96, 64)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    args = {
        "addons": str(install_addon(tmp_path)),
        "clip": str(clip),
        "mask": str(tmp_path / "mask.png"),
        "out": str(tmp_path),
    }
    out = run_in_blender(tmp_path, bpy_version, RERUNS, args)
    assert out["strips"] == [["clip", 1], ["clip matte", 2]], out
    assert Path(out["matte_dir"]).name == "wide 100%_vosfx_0-19", out
    assert out["picked"][:2] == [0, 20]
    assert out["picked"][2] == str(tmp_path / "wide 100%_vosfx_0-19")
    assert "already running" in out["busy"], out
    ret, reports, job_left = out["deleted"]
    assert ret == ["CANCELLED"] and not job_left, out
    assert reports[0][0] == "WARNING" and "deleted while it ran" in reports[0][1], out
    assert "nothing was attached" in reports[0][1]
    assert out["keys"] >= 1 and out["at_100"] == "ok", out
    assert "is retimed" in out["at_50"], out

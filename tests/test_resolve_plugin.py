"""The DaVinci Resolve script against the stand-in (tests/resolve_standin): the clip under the
playhead -> a vosfx job for the right source frames -> vosfx (FakeEngine launcher) -> the matte
attached to the clip and the alpha clip on the track above, aligned."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from media import make_clip, moving_square_frame
from PIL import Image
from resolve_standin import Resolve

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins" / "resolve"), str(REPO / "plugins" / "common")]
from vosfx_resolve import api, app
from vosfx_resolve.timecode import timecode_to_frame

FAKE_VOSFX = [sys.executable, str(REPO / "tests" / "bin" / "vosfx_fake.py")]
W, H, N = 96, 64, 20
FPS = 24
HOUR = 3600 * FPS  # timelines start at 01:00:00:00
ENV = dict(
    os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
)


def _left(folder):
    """The files in ``folder``, but the test's model cache (``cache``, its VOSFX_HOME, where
    the refinement's C loops are built on first use)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "cache")


def _frames(path):
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _alpha(path):
    """(N, H, W) float alpha of a ProRes 4444 file."""
    import av

    with av.open(str(path)) as c:
        planes = [f.to_ndarray(format="yuva444p16le")[..., 3] for f in c.decode(video=0)]
    return np.stack(planes).astype(np.float32) / 65535.0


@pytest.fixture
def timeline(tmp_path, config_home):
    """A 20-frame clip used from source frame 5 for 8 frames at 01:00:00:10 on V1, with the
    playhead on its 4th frame (source frame 8)."""
    clip = make_clip(tmp_path / "shot.mp4", n=N, width=W, height=H)
    _, mask = moving_square_frame(8, W, H)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    resolve = Resolve(fps=FPS, frames_of=_frames)
    resolve.add_clip(str(clip), N, record_start=HOUR + 10, duration=8, left_offset=5)
    resolve.timeline.playhead = HOUR + 13
    return resolve, tmp_path, mask


def _run(resolve, options):
    ctx = api.current_clip(resolve)
    plan = app.plan_job(ctx, options)
    events = []
    result = app.render(plan, FAKE_VOSFX, on_event=events.append, env=ENV)
    return ctx, plan, result, events


def test_current_clip_reads_the_used_range_and_playhead(timeline):
    resolve, _tmp, _mask = timeline
    ctx = api.current_clip(resolve)
    assert (ctx.source_in, ctx.source_out, ctx.duration) == (5, 13, 8)
    assert (ctx.record_start, ctx.track, ctx.source_frames) == (HOUR + 10, 1, N)
    assert ctx.playhead_source == 8 and ctx.path.endswith("shot.mp4")
    # the playhead is read first (which clips are under it), then the clip
    assert resolve.calls("GetCurrentTimeline", "GetCurrentVideoItem", "GetMediaPoolItem")[:3] == [
        "GetCurrentTimeline",
        "GetCurrentVideoItem",
        "GetMediaPoolItem",
    ]
    assert "GetItemListInTrack" not in resolve.calls()  # the top item is the source


@pytest.mark.parametrize("major, end_frame", [(18, 7), (19, 8), (20, 8)])
def test_used_range_render_lands_on_the_track_above(timeline, major, end_frame):
    """AppendToTimeline's endFrame is inclusive up to Resolve 18 and exclusive from 19: the
    placed alpha clip has the timeline clip's 8 frames on either."""
    resolve, tmp, mask = timeline
    resolve.version[0] = major  # the media pool shares the list
    options = app.Options(mask_path=str(tmp / "mask.png"), attach=False, place=True)
    ctx, plan, result, events = _run(resolve, options)
    assert result.ok, result.message() + result.stderr
    assert (plan.start, plan.end) == (5, 13)
    assert [e["frame"] for e in events if e["event"] == "frame"] == list(range(5, 13))
    assert result.result["outputs"] == [plan.alpha_path]
    alpha = _alpha(plan.alpha_path)
    assert alpha.shape == (8, H, W)
    assert np.abs(alpha - mask).mean() < 0.02  # the fake engine repeats the prompt's mask

    resolve.log.clear()
    summary = app.bring_back(resolve, ctx, plan, result, options)
    assert "track 2" in summary
    assert resolve.calls("ImportMedia", "GetTrackCount", "AddTrack", "AppendToTimeline") == [
        "ImportMedia",
        "GetTrackCount",  # no track 2: no alpha clip of an earlier run to replace
        "GetTrackCount",
        "AddTrack",
        "GetTrackCount",
        "AppendToTimeline",
    ]
    (_, _, (infos,)) = [entry for entry in resolve.log if entry[1] == "AppendToTimeline"][-1]
    assert infos[0]["startFrame"] == 0 and infos[0]["endFrame"] == end_frame
    assert infos[0]["trackIndex"] == 2 and infos[0]["recordFrame"] == HOUR + 10
    placed = resolve.timeline.items[-1]
    assert (placed.start, placed.duration, placed.track) == (HOUR + 10, 8, 2)
    assert "AddClipMattesToMediaPool" not in resolve.calls()


def test_clip_matte_covers_the_whole_clip_and_aligns(timeline):
    resolve, tmp, _mask = timeline
    options = app.Options(mask_path=str(tmp / "mask.png"), attach=True, place=True)
    ctx, plan, result, _events = _run(resolve, options)
    assert result.ok, result.message() + result.stderr
    assert (plan.start, plan.end) == (0, N)
    assert sorted(result.result["outputs"]) == sorted([plan.alpha_path, plan.matte_path])
    assert _frames(plan.matte_path) == N and _frames(plan.alpha_path) == N

    resolve.log.clear()
    app.bring_back(resolve, ctx, plan, result, options)
    assert resolve.calls("AddClipMattesToMediaPool", "ImportMedia", "AppendToTimeline") == [
        "AddClipMattesToMediaPool",
        "ImportMedia",
        "AppendToTimeline",
    ]
    assert ctx.media_pool_item.mattes == [plan.matte_path]
    (_, _, (infos,)) = [entry for entry in resolve.log if entry[1] == "AppendToTimeline"][-1]
    # the whole-clip file starts at source frame 0: the used part is frames 5..12 of it
    assert (infos[0]["startFrame"], infos[0]["endFrame"]) == (5, 13)  # Resolve 19: exclusive
    assert infos[0]["recordFrame"] == HOUR + 10
    placed = resolve.timeline.items[-1]
    assert (placed.start, placed.duration, placed.left_offset) == (HOUR + 10, 8, 5)


def test_alpha_clip_is_framed_as_the_clip(timeline):
    """A clip zoomed, moved, rotated, flipped, cropped and fit in the Inspector: the alpha
    clip placed above takes the same framing, so its cut-out lands on the picture; its
    opacity and composite mode stay the placed clip's own (a cut-out composites normally)."""
    resolve, tmp, _mask = timeline
    framing = {
        "Pan": 120.0,
        "Tilt": -35.5,
        "ZoomX": 1.4,
        "ZoomY": 1.25,
        "ZoomGang": False,
        "RotationAngle": 12.0,
        "AnchorPointX": 10.0,
        "FlipX": True,
        "CropLeft": 50.0,
        "CropSoftness": 4.0,
        "Scaling": 2,
    }
    source = resolve.timeline.items[0]
    source.properties.update(framing, Opacity=60.0, CompositeMode=3)
    options = app.Options(mask_path=str(tmp / "mask.png"), attach=False, place=True)
    ctx, plan, result, _events = _run(resolve, options)
    assert result.ok, result.message() + result.stderr
    summary = app.bring_back(resolve, ctx, plan, result, options)
    assert "framed as the clip" in summary and "by hand" not in summary
    placed = resolve.timeline.items[-1]
    assert {k: placed.properties[k] for k in framing} == framing
    assert placed.properties["Opacity"] == 100.0 and placed.properties["CompositeMode"] == 0
    assert set(api.FRAMING) <= set(placed.properties)  # only documented keys are set


def test_alpha_clip_framing_refused_or_unreadable_is_said(timeline, monkeypatch):
    """A key this Resolve refuses is named in the summary; a Resolve that reports no
    properties gets the clip placed and a word to frame it by hand."""
    import resolve_standin

    resolve, tmp, _mask = timeline
    resolve.timeline.items[0].properties["ZoomX"] = 2.0
    options = app.Options(mask_path=str(tmp / "mask.png"), attach=False, place=True)
    ctx, plan, result, _events = _run(resolve, options)
    assert result.ok, result.message() + result.stderr
    real_set = resolve_standin.TimelineItem.SetProperty

    def refuse_distortion(self, key, value):
        return False if key == "Distortion" else real_set(self, key, value)

    monkeypatch.setattr(resolve_standin.TimelineItem, "SetProperty", refuse_distortion)
    summary = app.bring_back(resolve, ctx, plan, result, options)
    assert "Resolve kept its own Distortion: set them by hand" in summary
    assert resolve.timeline.items[-1].properties["ZoomX"] == 2.0
    monkeypatch.setattr(resolve_standin.TimelineItem, "GetProperty", lambda self, key=None: None)
    summary = app.bring_back(resolve, ctx, plan, result, options)
    assert "(frame it as the clip)" in summary


@pytest.mark.parametrize(
    "project_fps, timeline_fps, drop, hour",
    [
        (24, 25, False, 3600 * 25),  # a timeline with its own frame rate (custom settings)
        (25, 24, False, 3600 * 24),
        (29.97, 29.97, True, 107892),  # 01:00:00;00 drop-frame is frame 107892
        (59.94, 59.94, True, 215784),
        (23.976, 23.976, False, 3600 * 24),
    ],
)
def test_playhead_is_read_at_the_timelines_own_rate(
    tmp_path, project_fps, timeline_fps, drop, hour
):
    resolve = Resolve(fps=project_fps, timeline_fps=timeline_fps, drop=drop)
    resolve.add_clip(str(tmp_path / "a.mov"), 40, record_start=hour + 10, duration=8, left_offset=5)
    resolve.timeline.playhead = hour + 13
    ctx = api.current_clip(resolve)
    assert ctx.fps == pytest.approx(timeline_fps)
    assert ctx.playhead_source == 8


def test_points_prompt_becomes_the_job_prompt(timeline):
    resolve, _tmp, _mask = timeline
    ctx = api.current_clip(resolve)
    plan = app.plan_job(ctx, app.Options(points=app.parse_points("40,30 -2,3"), attach=False))
    assert plan.job["prompts"] == [
        {"frame": 8, "points": [[40.0, 30.0], [2.0, 3.0]], "labels": [1, 0]}
    ]
    assert (plan.job["start"], plan.job["end"]) == (5, 13)


def test_cancel_leaves_nothing_and_brings_nothing_back(timeline):
    resolve, tmp, _mask = timeline
    ctx = api.current_clip(resolve)
    plan = app.plan_job(ctx, app.Options(mask_path=str(tmp / "mask.png"), attach=False))
    events = []
    result = app.render(
        plan,
        FAKE_VOSFX,
        on_event=events.append,
        should_cancel=lambda: any(e["event"] == "frame" for e in events),
        env=dict(ENV, VOSFX_FAKE_DELAY_S="0.25"),
    )
    assert result.cancelled and result.error["kind"] == "cancelled"
    assert _left(tmp) == ["mask.png", "shot.mp4"]


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("off_clip", "no video clip under the playhead"),
        ("no_prompt", "pick a mask image"),
        ("prompt_outside", "outside the frames to matte"),
    ],
)
def test_user_mistakes_are_plain_messages(timeline, case, fragment):
    resolve, _tmp, _mask = timeline
    options = app.Options(points=[(1, 1, 1)], attach=False)
    if case == "off_clip":
        resolve.timeline.playhead = HOUR
    elif case == "no_prompt":
        options = app.Options(attach=False)
    else:
        options.prompt_frame = 2
    with pytest.raises(api.ResolveError, match=fragment):
        app.plan_job(api.current_clip(resolve), options)


def test_bad_points_are_refused():
    assert app.parse_points("1,2;3,4") == [(1.0, 2.0, 1), (3.0, 4.0, 1)]
    with pytest.raises(api.ResolveError, match="x,y"):
        app.parse_points("12")


@pytest.mark.parametrize(
    "tc, fps, frame",
    [
        ("00:00:00:00", 24, 0),
        ("01:00:00:00", 24, 86400),
        ("00:00:01:05", 25, 30),
        ("00:01:00;02", 29.97, 1800),
        ("00:10:00;00", 29.97, 17982),
        ("00:01:00;04", 59.94, 3600),
    ],
)
def test_timecode_to_frame(tc, fps, frame):
    assert timecode_to_frame(tc, fps) == frame


def test_progress_text():
    line = app.progress_text({"frames_done": 5, "total_frames": 10, "fps": 2.0, "eta_s": 75})
    assert line.startswith("[" + "#" * 12 + "." * 12 + "]") and "5/10" in line
    assert line.endswith("ETA 01:15")
    # a count past its total: a full bar, no negative time left
    line = app.progress_text({"frames_done": 12, "total_frames": 10, "fps": 2.0, "eta_s": -4})
    assert line.startswith("[" + "#" * 24 + "]") and "10/10" in line
    assert line.endswith("ETA 00:00")


@pytest.mark.parametrize("warned", [False, True])
def test_dialog_runs_vosfx_shows_progress_and_brings_back(timeline, monkeypatch, warned):
    """The dialog runs vosfx, shows its progress and brings the matte back; what the run
    said the user must know (a GPU asked for and absent) stays on the status line after."""
    import time

    from resolve_standin.ui import Bmd, Fusion
    from vosfx_resolve.ui import Dialog

    resolve, tmp, _mask = timeline
    statuses = []

    def user(win, disp):
        assert win.shown
        win.On.Browse.Clicked({})  # picks tmp/mask.png through fusion.RequestFile()
        win.GetItems()["Attach"].Checked = False
        win.On.Run.Clicked({})
        timer = disp.ui.timers[0]
        deadline = time.monotonic() + 60
        while timer.active and time.monotonic() < deadline:
            disp.On.vosfxPoll.Timeout({})
            statuses.append(win.GetItems()["Status"].Text)
            time.sleep(0.05)
        win.On.vosfxWin.Close({})

    said = "--device cuda: ONNX Runtime has no CUDAExecutionProvider in this install"
    if warned:
        monkeypatch.setenv("VOSFX_FAKE_WARNING", said)
    fusion = Fusion(user, picked_file=str(tmp / "mask.png"))
    dialog = Dialog(resolve, fusion, Bmd(fusion), FAKE_VOSFX)
    dialog.run()
    warning = f"; warning: {said}" if warned else ""
    assert statuses[-1] == "alpha clip on video track 2, framed as the clip" + warning, statuses
    assert any("/8 " in s for s in statuses if s.startswith("[")), statuses
    assert resolve.calls("AppendToTimeline") == ["AppendToTimeline"]
    assert (tmp / "shot_vosfx_5-12.mov").is_file()
    assert fusion.UIManager.widgets["Run"].Enabled


def test_dialog_cancel_stops_vosfx_and_closes(timeline, monkeypatch):
    import time

    from resolve_standin.ui import Bmd, Fusion
    from vosfx_resolve.ui import Dialog

    resolve, tmp, _mask = timeline
    monkeypatch.setenv("VOSFX_FAKE_DELAY_S", "0.25")
    seen = {}

    def user(win, disp):
        items = win.GetItems()
        items["Mask"].Text = str(tmp / "mask.png")
        items["Attach"].Checked = False
        win.On.Run.Clicked({})
        deadline = time.monotonic() + 60
        while not items["Status"].Text.startswith("[") and time.monotonic() < deadline:
            disp.On.vosfxPoll.Timeout({})
            time.sleep(0.05)
        win.On.vosfxWin.Close({})  # closing the dialog mid-render
        seen["status"], seen["exited"] = items["Status"].Text, disp.exited

    fusion = Fusion(user)
    Dialog(resolve, fusion, Bmd(fusion), FAKE_VOSFX).run()
    assert seen == {"status": "cancelled; no output was written", "exited": True}
    assert _left(tmp) == ["mask.png", "shot.mp4"]
    assert "AppendToTimeline" not in resolve.calls()


def test_dialog_says_when_vosfx_cannot_be_run(timeline, tmp_path, monkeypatch):
    """The recorded vosfx is gone: the status line says so and names the command; the dialog
    stays usable and no job file is left in the temporary folder."""
    import tempfile

    from resolve_standin.ui import Bmd, Fusion
    from vosfx_resolve.ui import Dialog

    resolve, tmp, _mask = timeline
    gone = str(tmp_path / "gone" / "vosfx")
    seen = {}
    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))

    def user(win, disp):
        items = win.GetItems()
        items["Mask"].Text = str(tmp / "mask.png")
        items["Attach"].Checked = False
        win.On.Run.Clicked({})
        seen["run"] = (items["Status"].Text, items["Run"].Enabled, disp.ui.timers[0].active)
        win.On.Studio.Clicked({})
        seen["studio"] = (items["Status"].Text, items["Studio"].Enabled)
        win.On.vosfxWin.Close({})

    fusion = Fusion(user)
    Dialog(resolve, fusion, Bmd(fusion), [gone]).run()
    status, enabled, polling = seen["run"]
    assert gone in status and "VOSFX_EXECUTABLE" in status and enabled and not polling
    assert gone in seen["studio"][0] and seen["studio"][1]
    assert not os.listdir(tmp_path / "temp")


@pytest.mark.parametrize(
    "name, frames, expected",
    [
        ("shot.[1001-1012].png", 12, "shot.%04d.png"),  # Resolve's name for a sequence
        ("shot.[0001-0012].png", 12, "shot.%04d.png"),
        ("shot.[8-12].png", 5, "shot.%d.png"),
        ("shot.[98-102].png", 5, "shot.%d.png"),
        ("shot.1001.png", 12, "shot.%04d.png"),  # a path to one of its images
        ("shot.7.png", 12, "shot.%d.png"),
        ("still.1001.png", 1, "still.1001.png"),  # one image: itself
        ("clip_0001.mov", 12, "clip_0001.mov"),  # a movie: its file
    ],
)
def test_media_input_reads_an_image_sequence_as_a_pattern(tmp_path, name, frames, expected):
    assert api.media_input(str(tmp_path / name), frames) == str(tmp_path / expected)


@pytest.mark.parametrize("resolve_names_it", ["range", "first image"])
def test_image_sequence_clip_renders_and_lands_on_the_track_above(
    tmp_path, config_home, resolve_names_it
):
    """An EXR/PNG shot on the timeline: vosfx reads its images as a pattern at the clip's own
    rate, the used frames are mattes of the right images, and the alpha clip is placed."""
    folder = tmp_path / "plates"
    folder.mkdir()
    for k in range(N):
        image, _ = moving_square_frame(k, W, H)
        Image.fromarray(image).save(folder / f"shot.{1001 + k}.png")
    _, mask = moving_square_frame(8, W, H)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    path = folder / ("shot.[1001-1020].png" if resolve_names_it == "range" else "shot.1001.png")
    resolve = Resolve(fps=25, frames_of=_frames)
    resolve.add_clip(str(path), N, record_start=3600 * 25 + 10, duration=8, left_offset=5)
    resolve.media_pool.clips[-1].fps = 25.0
    resolve.timeline.playhead = 3600 * 25 + 13
    options = app.Options(mask_path=str(tmp_path / "mask.png"), attach=False, place=True)
    ctx, plan, result, events = _run(resolve, options)
    assert ctx.path == str(folder / "shot.%04d.png") and ctx.clip_fps == 25.0
    assert plan.job["fps"] == 25.0 and plan.alpha_path.endswith("shot_vosfx_5-12.mov")
    assert result.ok, result.message() + result.stderr
    assert [e["frame"] for e in events if e["event"] == "frame"] == list(range(5, 13))
    import av

    with av.open(plan.alpha_path) as c:
        assert c.streams.video[0].average_rate == 25
    alpha = _alpha(plan.alpha_path)
    assert alpha.shape == (8, H, W) and np.abs(alpha - mask).mean() < 0.02
    summary = app.bring_back(resolve, ctx, plan, result, options)
    assert "track 2" in summary
    placed = resolve.timeline.items[-1]
    assert (placed.start, placed.duration) == (3600 * 25 + 10, 8)


def test_a_rerun_mattes_the_source_not_its_own_alpha_clip_and_replaces_it(timeline):
    """The second run on a clip: the alpha clip the first placed on V2 (and a title on V3
    above it) is under the playhead on top, yet the clip to matte is the source on V1; its
    alpha clip and clip matte replace the first run's instead of stacking more."""
    import resolve_standin

    resolve, tmp, _mask = timeline
    options = app.Options(mask_path=str(tmp / "mask.png"), attach=True, place=True)
    ctx, plan, result, _ = _run(resolve, options)
    assert result.ok, result.message() + result.stderr
    app.bring_back(resolve, ctx, plan, result, options)
    resolve.timeline.tracks = 3
    title = resolve_standin.TimelineItem(resolve.log, None, HOUR, 100, 0, 3)
    resolve.timeline.items.append(title)
    assert resolve.timeline.GetCurrentVideoItem() is title
    ctx2, plan2, result2, _ = _run(resolve, options)
    assert ctx2.item is resolve.timeline.items[0] and ctx2.path.endswith("shot.mp4")
    assert plan2.alpha_path == plan.alpha_path
    assert result2.ok, result2.message() + result2.stderr
    app.bring_back(resolve, ctx2, plan2, result2, options)
    on_v2 = [i for i in resolve.timeline.items if i.track == 2]
    assert len(on_v2) == 1 and on_v2[0].mpi.path == plan.alpha_path
    assert resolve.timeline.tracks == 3  # no track added for the re-run
    assert ctx2.media_pool_item.mattes == [plan.matte_path]


def test_only_mattes_and_titles_under_the_playhead_is_said(timeline):
    import resolve_standin

    resolve, _tmp, _mask = timeline
    resolve.timeline.items[0].mpi.path = "/media/shot_vosfx_0-19.mov"
    resolve.timeline.tracks = 2
    resolve.timeline.items.append(resolve_standin.TimelineItem(resolve.log, None, HOUR, 99, 0, 2))
    with pytest.raises(api.ResolveError, match=r"only 'Title' \(a title.*\(a vosfx matte\)"):
        api.current_clip(resolve)


def _gap_timeline(tmp_path, left_offset):
    """shot.[1001-1020].png without shot.1004.png (19 images; Resolve counts 20 frames),
    used from position ``left_offset`` for 8 frames at 01:00:00:10, playhead on its 4th."""
    folder = tmp_path / "plates"
    folder.mkdir(exist_ok=True)
    for k in range(N):
        if k != 3:
            image, _ = moving_square_frame(k, W, H)
            Image.fromarray(image).save(folder / f"shot.{1001 + k}.png")
    _, mask = moving_square_frame(8, W, H)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    resolve = Resolve(fps=25, frames_of=_frames)
    path = str(folder / "shot.[1001-1020].png")
    resolve.add_clip(path, N, record_start=3600 * 25 + 10, duration=8, left_offset=left_offset)
    resolve.media_pool.clips[-1].fps = 25.0
    resolve.timeline.playhead = 3600 * 25 + 13
    return resolve


def test_image_sequence_with_a_gap_maps_to_vosfx_positions(tmp_path, config_home):
    """Resolve's positions count frame numbers, gap included; vosfx's count the images
    present. The used range after the gap (1006-1013) is vosfx's 4..11, the prompt on the
    playhead's image (1009) is vosfx's 7, and the alpha clip lands on the clip's frames."""
    resolve = _gap_timeline(tmp_path, left_offset=5)
    options = app.Options(mask_path=str(tmp_path / "mask.png"), attach=False, place=True)
    ctx, plan, result, events = _run(resolve, options)
    assert ctx.missing(0, N) == [1004] and ctx.to_vosfx(5) == 4
    assert (plan.start, plan.end, plan.source_start) == (4, 12, 5)
    assert plan.job["prompts"][0]["frame"] == 7
    assert result.ok, result.message() + result.stderr
    assert [e["frame"] for e in events if e["event"] == "frame"] == list(range(4, 12))
    sidecar = json.loads(Path(plan.alpha_path + ".json").read_text())
    assert sidecar["frame_numbers"]["numbers"] == list(range(1006, 1014))
    app.bring_back(resolve, ctx, plan, result, options)
    (_, _, (infos,)) = [entry for entry in resolve.log if entry[1] == "AppendToTimeline"][-1]
    assert (infos[0]["startFrame"], infos[0]["endFrame"]) == (0, 8)


@pytest.mark.parametrize(
    "left_offset, attach, what",
    [(5, True, "a clip matte cannot have the clip's 20 frames"), (2, False, "the alpha clip")],
)
def test_image_sequence_gap_in_the_frames_to_matte_is_refused(tmp_path, left_offset, attach, what):
    resolve = _gap_timeline(tmp_path, left_offset)
    options = app.Options(mask_path=str(tmp_path / "mask.png"), attach=attach, place=True)
    with pytest.raises(api.ResolveError, match="frame number 1004") as err:
        app.plan_job(api.current_clip(resolve), options)
    assert what in str(err.value) and "fill the gap" in str(err.value)


@pytest.mark.parametrize(
    "clip_fps, span, fragment",
    [
        (25.0, None, "runs at 25 fps and the timeline at 24 fps"),
        (24.0, (5, 21), "is retimed: its 8 timeline frames show source frames 5-21"),
        (24.0, (12, 5), "is retimed"),  # reversed
        (24.0, (5, 13), None),  # 100 %, end exclusive
        (24.0, (5, 12), None),  # 100 %, end inclusive
    ],
)
def test_retimed_or_other_rate_clip_is_refused(timeline, monkeypatch, clip_fps, span, fragment):
    import resolve_standin

    resolve, tmp, _mask = timeline
    resolve.media_pool.clips[0].fps = clip_fps
    if span is not None:
        monkeypatch.setattr(
            resolve_standin.TimelineItem, "GetSourceStartFrame", lambda self: span[0], False
        )
        monkeypatch.setattr(
            resolve_standin.TimelineItem, "GetSourceEndFrame", lambda self: span[1], False
        )
    options = app.Options(mask_path=str(tmp / "mask.png"), attach=False)
    ctx = api.current_clip(resolve)
    if fragment is None:
        assert app.plan_job(ctx, options).start == 5
        return
    with pytest.raises(api.ResolveError, match=fragment):
        app.plan_job(ctx, options)


@pytest.mark.parametrize("sequence", [False, True])
def test_a_percent_in_a_movie_name_is_no_frame_number(timeline, sequence):
    resolve, tmp, _mask = timeline
    ctx = api.current_clip(resolve)
    ctx.path = str(tmp / ("shot.%04d.png" if sequence else "wide 100%.mp4"))
    ctx.is_sequence = sequence
    plan = app.plan_job(ctx, app.Options(points=[(1, 1, 1)], attach=False))
    name = "shot_vosfx_5-12.mov" if sequence else "wide 100%_vosfx_5-12.mov"
    assert plan.alpha_path == str(tmp / name)

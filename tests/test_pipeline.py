"""The pipeline loop with the deterministic test double (tests/fakes.py) as its engine."""

from __future__ import annotations

import json
import threading

import av
import cv2
import numpy as np
import pytest
from fakes import FakeEngine
from media import make_clip, moving_square_frame
from PIL import Image

from vosfx.errors import Cancelled, ConfigError, OutputError, PromptError
from vosfx.job import Job, PromptSpec
from vosfx.pipeline import run
from vosfx.presets import resolve_config


@pytest.fixture
def clip(tmp_path):
    path = make_clip(tmp_path / "clip.mp4", n=12, width=96, height=64)
    _, mask = moving_square_frame(0, 96, 64)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    return path, tmp_path / "mask.png"


def decode_threads():
    return [t for t in threading.enumerate() if t.name.startswith("vosfx-decode")]


def _job(tmp_path, clip, **kw):
    path, mask = clip
    presets = kw.pop("presets", ("png16",))
    overrides = kw.pop("overrides", {})
    return Job(
        input=str(path),
        prompts=(PromptSpec(frame=0, mask=str(mask)),),
        output=str(tmp_path / "out"),
        config=resolve_config(presets, overrides),
        **kw,
    )


def test_run_writes_every_frame_and_a_sidecar(tmp_path, clip, config_home):
    events = []
    report = run(_job(tmp_path, clip), engine=FakeEngine(), on_progress=events.append)
    assert report.frames == 12
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 12
    # the fake repeats the first-frame mask: frame 0's matte equals the prompt
    alpha0 = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)[..., 3] / 65535.0
    _, mask = moving_square_frame(0, 96, 64)
    assert ((alpha0 > 0.5) ^ mask).mean() < 0.02
    kinds = [e.event for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("frame") == 12
    assert events[-2].frames_done == 12 and events[-2].eta_s == 0
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["frames"] == 12 and side["model"]["id"] == "fake"
    assert side["job"]["config"]["output"]["format"] == "png16"
    assert len(side["object_scores"]["1"]) == 12
    assert side["presence"]["1"] == [[0, 11, True]]
    assert set(side["timings_s"]) >= {"track", "refine", "write", "decode_wait"}


def test_extra_formats_and_each_object(tmp_path, clip, config_home):
    job = _job(
        tmp_path,
        clip,
        presets=("png16",),
        overrides={"output": {"extra_formats": ["preview"], "objects": "each"}},
    )
    report = run(job, engine=FakeEngine())
    names = sorted(p.rsplit("/", 1)[-1] for p in report.outputs)
    assert names == ["out.preview_obj1.mp4", "out_obj1"], names
    assert all((tmp_path / n).exists() for n in names)


def test_start_end_range_and_prompt_outside(tmp_path, clip, config_home):
    report = run(_job(tmp_path, clip, start=0, end=5), engine=FakeEngine())
    assert report.frames == 5
    with pytest.raises(PromptError, match="outside the frames"):
        run(_job(tmp_path, clip, start=3, end=8, overwrite=True), engine=FakeEngine())


@pytest.mark.parametrize(
    "start, end, fragment",
    [(-2, None, "start -2: expected a frame >= 0"), (6, 4, "end 4: expected a frame after")],
)
def test_a_range_that_cannot_work_names_the_bound_at_fault(
    tmp_path, clip, config_home, start, end, fragment
):
    with pytest.raises(ConfigError, match=fragment):
        run(_job(tmp_path, clip, start=start, end=end), engine=FakeEngine())


def test_existing_output_is_refused_before_any_work(tmp_path, clip, config_home):
    (tmp_path / "out").mkdir()
    engine = FakeEngine()
    with pytest.raises(OutputError, match="exists"):
        run(_job(tmp_path, clip), engine=engine)
    assert engine.sessions == []  # nothing decoded or tracked


def test_cancel_leaves_no_output(tmp_path, clip, config_home):
    cancel = threading.Event()

    def stop_after_three(ev):
        if ev.frames_done == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        run(_job(tmp_path, clip), engine=FakeEngine(), on_progress=stop_after_three, cancel=cancel)
    assert not decode_threads()  # stopped with the run, not when the traceback is freed
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clip.mp4",
        "config",
        "mask.png",
    ] or not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_engine_session_is_closed_on_error(tmp_path, clip, config_home, monkeypatch):
    engine = FakeEngine()
    from vosfx.io.writers.images import ImageSequenceWriter

    def boom(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ImageSequenceWriter, "_write", boom)
    with pytest.raises(OutputError) as raised:
        run(_job(tmp_path, clip), engine=engine)
    assert engine.sessions[0].closed
    assert raised.value is not None and not decode_threads()
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_clicks_after_a_palette_mask_become_the_next_object(tmp_path):
    from fractions import Fraction

    from vosfx.pipeline import resolve_prompts
    from vosfx.types import VideoInfo

    labels = np.zeros((64, 96), np.uint8)
    labels[5:20, 5:20], labels[30:50, 40:60] = 1, 3  # palette objects 1 and 3
    img = Image.fromarray(labels, mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * 756)
    img.save(tmp_path / "pal.png")
    info = VideoInfo(
        path="x", width=96, height=64, num_frames=10, fps=Fraction(24), time_base=Fraction(1, 24)
    )
    specs = (
        PromptSpec(frame=0, mask=str(tmp_path / "pal.png")),
        PromptSpec(frame=0, points=((70.0, 10.0),), labels=(1,)),
    )
    got = resolve_prompts(specs, info, fit=False, objects=None, start=0, end=10)
    assert sorted(p.obj_id for p in got) == [1, 3, 4]
    clicks_only = resolve_prompts(specs[1:], info, fit=False, objects=None, start=0, end=10)
    assert [p.obj_id for p in clicks_only] == [1]


_MULTI = {"output": {"extra_formats": ["prores4444", "ffv1-matte"]}}


def test_each_output_frame_guide_is_made_on_the_decode_thread(
    tmp_path, clip, config_home, monkeypatch
):
    # the refiner's per-frame guide is made once per written frame, on the decode thread
    # (Refiner.prepare through the source's prepare hook), and the loop's thread uses it
    from vosfx.matte import refine

    made, used = [], []
    real_init, real_guide = refine.GuidePrep.__init__, refine.Refiner._guide

    def init(self, *a, **k):
        made.append(threading.current_thread().name)
        real_init(self, *a, **k)

    def guide(self, frame, logit_size):
        got = real_guide(self, frame, logit_size)
        used.append(got is frame.derived.get("guide"))
        return got

    monkeypatch.setattr(refine.GuidePrep, "__init__", init)
    monkeypatch.setattr(refine.Refiner, "_guide", guide)
    report = run(_job(tmp_path, clip), engine=FakeEngine())
    assert report.frames == 12 and len(used) == 12 and all(used)
    assert made == ["vosfx-decode:clip.mp4"] * 12


def test_a_warning_the_engine_gives_mid_run_is_said_then_and_kept(tmp_path, clip, config_home):
    """A graph opened on first use (the dense-mask decoder) may fall back after the run said
    the engine's warnings: the run says the new one as it comes, once, and the sidecar and
    the report keep it beside those said at the start."""
    engine = FakeEngine()
    engine.runtime_warnings.append("said at the start")

    def logit_fn(frame_index, obj_id, base):
        if frame_index == 4 and "a late fallback" not in engine.runtime_warnings:
            engine.runtime_warnings.append("a late fallback")
        return base

    engine.logit_fn = logit_fn
    runtimes = iter([{"stages": {"decoder_mask": "not opened"}}])
    engine.runtime = lambda: next(runtimes, {"stages": {"decoder_mask": "on the CPU"}})
    events = []
    report = run(_job(tmp_path, clip), engine=engine, on_progress=events.append)
    said = [(e.frames_done, e.message) for e in events if e.event == "warning"]
    assert said == [(0, "said at the start"), (4, "a late fallback")]
    assert report.warnings == ("said at the start", "a late fallback")
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["warnings"] == ["said at the start", "a late fallback"]
    assert side["model"]["runtime"] == {"stages": {"decoder_mask": "on the CPU"}}


def test_refinement_runs_beside_tracking(tmp_path, clip, config_home, monkeypatch):
    # the loop's thread tracks frame t + 1 while frame t is refined on "vosfx-refine": the
    # refiner of frame t waits (up to 5 s) for the engine to start frame t + 1, which never
    # happens if both run on one thread
    from vosfx.matte import refine

    tracking = {i: threading.Event() for i in range(13)}
    refined, overlapped = [], []

    def logit_fn(frame_index, obj_id, base):
        tracking[frame_index].set()
        return base

    real_call = refine.Refiner.__call__

    def call(self, result, frame):
        refined.append(threading.current_thread().name)
        if frame.index + 1 < 12:
            overlapped.append(tracking[frame.index + 1].wait(timeout=5))
        return real_call(self, result, frame)

    monkeypatch.setattr(refine.Refiner, "__call__", call)
    report = run(_job(tmp_path, clip), engine=FakeEngine(logit_fn=logit_fn))
    assert report.frames == 12 and len(refined) == 12
    assert set(refined) == {"vosfx-refine"} and all(overlapped)
    assert report.timings_s["refine"] > 0 and "refine_wait" in report.timings_s
    assert not [t for t in threading.enumerate() if t.name == "vosfx-refine"]


def test_a_refinement_error_stops_the_run_and_leaves_no_output(
    tmp_path, clip, config_home, monkeypatch
):
    from vosfx.errors import VosfxError
    from vosfx.matte import refine

    def boom(self, result, frame):
        raise VosfxError(f"refine failed on frame {frame.index}")

    monkeypatch.setattr(refine.Refiner, "__call__", boom)
    with pytest.raises(VosfxError, match="refine failed on frame 0"):
        run(_job(tmp_path, clip), engine=FakeEngine())
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())
    assert not decode_threads()
    assert not [t for t in threading.enumerate() if t.name in ("vosfx-refine", "vosfx-writer")]


def test_multi_output_writers_run_side_by_side(tmp_path, clip, config_home, monkeypatch):
    from vosfx.io.writers.base import Writer

    threads: dict[str, set[str]] = {}
    real_write = Writer.write

    def spy(self, frame, matte, alpha=None):
        threads.setdefault(str(self.path), set()).add(threading.current_thread().name)
        real_write(self, frame, matte, alpha)

    monkeypatch.setattr(Writer, "write", spy)
    report = run(_job(tmp_path, clip, overrides=_MULTI), engine=FakeEngine())
    assert len(report.outputs) == 3 and report.frames == 12
    assert all((tmp_path / p.rsplit("/", 1)[-1]).exists() for p in report.outputs)
    names = [t for ts in threads.values() for t in ts]
    assert len(threads) == 3 and len(names) == 3 and len(set(names)) == 3  # one thread each
    assert report.timings_s["write_busiest"] <= report.timings_s["write"]


@pytest.mark.parametrize("failing", ["VideoWriter", "ImageSequenceWriter"])
def test_multi_output_one_writer_fails_and_nothing_is_left(
    tmp_path, clip, config_home, monkeypatch, failing
):
    from vosfx.io.writers import images, video

    cls = {"VideoWriter": video.VideoWriter, "ImageSequenceWriter": images.ImageSequenceWriter}
    real = cls[failing]._write

    def boom(self, frame, alpha, matte):
        if frame.index == 4:
            raise OSError(28, "No space left on device")
        real(self, frame, alpha, matte)

    monkeypatch.setattr(cls[failing], "_write", boom)
    engine = FakeEngine()
    with pytest.raises(OutputError, match="No space"):
        run(_job(tmp_path, clip, overrides=_MULTI), engine=engine)
    assert engine.sessions[0].closed
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_multi_output_cancel_removes_every_partial_output(tmp_path, clip, config_home):
    cancel = threading.Event()

    def stop_after_three(ev):
        if ev.frames_done == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        run(
            _job(tmp_path, clip, overrides=_MULTI),
            engine=FakeEngine(),
            on_progress=stop_after_three,
            cancel=cancel,
        )
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_prores_of_a_bt709_source_keeps_its_ycbcr(tmp_path, config_home, monkeypatch):
    # a BT.709 source rendered to ProRes 4444 carries its own Y'CbCr into the file (luma and
    # chroma within ProRes's coding error, colours outside the RGB cube included); a job
    # without a writer that takes the planes does not decode them
    from media import make_ycbcr_clip, ycbcr_planes

    from vosfx.io import source

    w, h = 96, 64
    planes = [ycbcr_planes(i, w, h) for i in range(6)]
    path = make_ycbcr_clip(tmp_path / "clip.mkv", planes)
    _, mask = moving_square_frame(0, w, h)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    asked = []
    real_open = source.open_source
    monkeypatch.setattr(
        source, "open_source", lambda *a, **k: asked.append(k.get("ycbcr")) or real_open(*a, **k)
    )
    clip = (path, tmp_path / "mask.png")
    run(_job(tmp_path, clip, presets=("prores4444",)), engine=FakeEngine())
    assert asked == [True]
    with av.open(str(tmp_path / "out")) as c:
        decoded = [f for f in c.decode(video=0)]
    assert len(decoded) == 6
    for vf, (y, cb, cr) in zip(decoded, planes):
        assert vf.format.name == "yuva444p12le"
        got = [
            np.frombuffer(p, np.uint16).reshape(p.height, -1)[:, : p.width] / 4.0
            for p in vf.planes[:3]
        ]
        assert np.abs(got[0] - y.astype(np.float64) * 4).max() <= 4
        for g, c in zip(got[1:], (cb, cr)):
            want = cv2.resize(c.astype(np.float32) * 4, (w, h), interpolation=cv2.INTER_LINEAR)
            assert np.abs(g - want).max() <= 6
    asked.clear()
    run(_job(tmp_path, clip, presets=("matte-ffv1",), overwrite=True), engine=FakeEngine())
    assert asked == [False]


@pytest.mark.parametrize(
    ("pix_fmt", "bits", "tags"),
    [
        ("yuv420p10le", 10, {"colorspace": 9, "primaries": 9, "transfer": 16}),  # HDR10 (PQ)
        ("yuv420p10le", 10, {"colorspace": 9, "primaries": 9, "transfer": 18}),  # HLG
        ("yuv420p", 8, {"colorspace": 5, "primaries": 5, "transfer": 6}),  # BT.601 (PAL)
    ],
    ids=["bt2020-pq", "bt2020-hlg", "bt601"],
)
def test_prores_keeps_the_source_colour_description(tmp_path, config_home, pix_fmt, bits, tags):
    # an HDR or SD source's ProRes 4444 is tagged as the source is (an editor reads both
    # alike) and holds its Y'CbCr codes, not a BT.709 conversion tagged BT.709
    from media import make_ycbcr_clip, ycbcr_planes

    w, h = 96, 64
    planes = [ycbcr_planes(i, w, h, bits=bits) for i in range(4)]
    path = make_ycbcr_clip(tmp_path / "clip.mkv", planes, pix_fmt=pix_fmt, **tags)
    _, mask = moving_square_frame(0, w, h)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    run(_job(tmp_path, (path, tmp_path / "mask.png"), presets=("prores4444",)), engine=FakeEngine())
    with av.open(str(tmp_path / "out")) as c:
        cc = c.streams.video[0].codec_context
        got_tags = (int(cc.colorspace), int(cc.color_primaries), int(cc.color_trc))
        decoded = list(c.decode(video=0))
    assert got_tags == (tags["colorspace"], tags["primaries"], tags["transfer"])
    assert len(decoded) == 4
    for vf, (y, _cb, _cr) in zip(decoded, planes):
        luma = np.frombuffer(vf.planes[0], np.uint16).reshape(h, -1)[:, :w] / 4.0  # 12 -> 10
        assert np.abs(luma - y.astype(np.float64) * (1 << (10 - bits))).max() <= 4


@pytest.mark.parametrize("low_memory, want", [(False, 64 << 20), (True, 0)])
def test_low_memory_decodes_one_frame_ahead(
    tmp_path, clip, config_home, monkeypatch, low_memory, want
):
    """``--low-memory``: the decode-ahead queue holds one prepared frame, not 64 MiB of them
    (~30-40 MiB less at 1024 on a DAVIS clip)."""
    from vosfx.io import source

    asked = []
    real = source.open_source

    def spy(*a, **k):
        asked.append(k.get("prefetch_bytes"))
        return real(*a, **k)

    monkeypatch.setattr(source, "open_source", spy)
    job = _job(tmp_path, clip, overrides={"model": {"low_memory": low_memory}})
    assert run(job, engine=FakeEngine()).frames == 12
    assert asked and set(asked) == {want}
    assert source.PREFETCH_BYTES == 64 << 20


@pytest.mark.parametrize("policy", ["sam2", "rcms"])
def test_shots_are_found_for_the_temporal_filter_whatever_the_policy(tmp_path, config_home, policy):
    """A policy that does not track by shots still has its refiner's temporal filter stop at
    the cuts (the render found none for it before: every frame was shot 0)."""
    from tests.test_shots import _scene

    rng = np.random.default_rng(0)
    folder = tmp_path / "two_shots"
    folder.mkdir()
    images = [*_scene(rng, (200, 40, 40), 30), *_scene(rng, (30, 160, 220), 25)]
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:05d}.png")
    mask = np.zeros(images[0].shape[:2], np.uint8)
    mask[20:44, 10:34] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    clip = (folder, tmp_path / "mask.png")
    memory = {"memory": {"policy": policy}}
    smooth = run(
        _job(tmp_path, clip, overrides={**memory, "refine": {"temporal_strength": 0.3}}),
        engine=FakeEngine(),
    )
    assert smooth.shots == (30,)
    # nothing to smooth: no detector runs for such a policy
    still = run(
        _job(
            tmp_path,
            clip,
            overrides={**memory, "refine": {"temporal_strength": 0.0}},
            overwrite=True,
        ),
        engine=FakeEngine(),
    )
    assert still.shots == ()


def test_cancel_stops_a_first_use_download_and_keeps_its_part(
    tmp_path, clip, config_home, monkeypatch
):
    """Ctrl-C while a 150-900 MB checkpoint downloads stops the download, not after it."""
    import hashlib
    import random

    from fileserver import FileServer

    from vosfx.models import cache, download, registry
    from vosfx.models.registry import ModelSpec

    payload = random.Random(2).randbytes(3 * 2**20)
    registry.register(
        ModelSpec(
            id="dl-test",
            url="https://publisher.invalid/dl_test.pt",
            config="configs/sam2.1/sam2.1_hiera_t.yaml",
            sha256=hashlib.sha256(payload).hexdigest(),
            size_bytes=len(payload),
        )
    )
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.delenv("VOSFX_OFFLINE", raising=False)
    cancel = threading.Event()

    def ctrl_c_on_download(ev):
        if ev.event == "download":
            cancel.set()

    job = _job(tmp_path, clip, overrides={"model": {"name": "dl-test", "backend": "torch"}})
    try:
        with FileServer(files={"dl_test.pt": payload}) as srv:
            monkeypatch.setenv("VOSFX_MODEL_BASE_URL", srv.url)
            with pytest.raises(Cancelled, match="download; the next run resumes it"):
                run(job, on_progress=ctrl_c_on_download, cancel=cancel)
        path = cache.checkpoint_path("dl-test")
        assert not path.exists()
        assert 0 < path.with_name(path.name + ".part").stat().st_size < len(payload)
    finally:
        registry.reset()


def test_a_correction_edits_what_the_pipeline_tracked(tmp_path, clip, config_home):
    """`vosfx matte --edit-tracked`'s prompts through the one loop: the click on frame 6 is
    decoded with the pass from frame 0 (the engine sees a correction there) and cuts the
    tracked mask; the same click without the flag starts from nothing."""
    path, mask = clip
    # an exclude click inside frame 6's square: the correction keeps the rest of the mask
    _, m6 = moving_square_frame(6, 96, 64)
    ys, xs = np.nonzero(m6)
    click = ((float(xs.min() + 1), float(ys.min() + 1)),)
    alphas = {}
    for correction in (True, False):
        engine = FakeEngine()
        out = tmp_path / f"out{int(correction)}"
        job = Job(
            input=str(path),
            prompts=(
                PromptSpec(frame=0, mask=str(mask)),
                PromptSpec(frame=6, obj_id=1, points=click, labels=(0,), correction=correction),
            ),
            output=str(out),
            config=resolve_config(("png16",), {"output": {"format": "png16-matte"}}),
        )
        run(job, engine=engine)
        assert engine.sessions[0].corrections == ([(1, 6, 1)] if correction else [])
        png = sorted(out.glob("*.png"))[6]
        alphas[correction] = cv2.imread(str(png), cv2.IMREAD_UNCHANGED) / 65535.0
        side = json.loads((tmp_path / f"out{int(correction)}.json").read_text())
        assert side["job"]["prompts"][1].get("correction", False) is correction
    assert alphas[True].max() > 0.5  # the tracked mask, cut where the click is
    assert alphas[False].max() < 0.5  # an exclude click alone: nothing

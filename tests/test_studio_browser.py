"""vosfx studio end to end in a real browser (Debian's chromium driven by Playwright): open a
clip, click, exclude, track, scrub, correct a tracked frame and re-track, change finishing,
render, and the render equals `vosfx matte --job` of the job the page saved. A screenshot of
each state goes under the test's tmp_path."""

from __future__ import annotations

import base64
import io
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.fakes import FakeEngine
from tests.media import make_clip, square_box
from tests.studio_helpers import Running
from vosfx.config import RefineConfig
from vosfx.job import load_job_file
from vosfx.matte.refine import Refiner
from vosfx.session import ClipSession
from vosfx.session.frames import SourceFrames
from vosfx.types import Prompt

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
W, H, N = 160, 120, 40

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)"
)


PAGE_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "clip.mp4", n=N, width=W, height=H)


@contextmanager
def _studio_page(browser, clip, tmp_path, *, size=(1000, 700), engine=None):
    """A studio on ``clip`` (``engine``, else the test-double engine) and its page, ready;
    both closed after."""
    run = Running(clip, tmp_path / "work", engine=engine)
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-ready='1']")
        yield run, page
    finally:
        page.close()
        run.close()


def _centre(t: int) -> tuple[float, float]:
    x0, y0, x1, y1 = square_box(t, W, H)
    return (x0 + x1) / 2, (y0 + y1) / 2


def _screen(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y) in the viewer."""
    return page.evaluate(
        """([x, y]) => {
        const S = window.vosfx.state, r = document.getElementById('canvas')
            .getBoundingClientRect();
        return [r.left + S.panX + x * S.zoom, r.top + S.panY + y * S.zoom]; }""",
        [x, y],
    )


def _prompt(page, x: float, y: float, *, exclude: bool = False) -> dict:
    before = page.evaluate("window.vosfx.drawn")
    page.evaluate("window.vosfx.last = null")
    sx, sy = _screen(page, x, y)
    if exclude:
        page.keyboard.down("Alt")
    page.mouse.click(sx, sy)
    if exclude:
        page.keyboard.up("Alt")
    # the overlay from the returned masks first, then the finished view
    page.wait_for_function("window.vosfx.last && window.vosfx.last.exactMs !== undefined")
    assert page.evaluate("window.vosfx.drawn") > before
    return page.evaluate("window.vosfx.last")


def _matte(run: Running, t: int) -> np.ndarray:
    status, data = run.request(f"/api/view/{t}?view=matte")
    assert status == 200
    return np.asarray(Image.open(io.BytesIO(data)))


def _canvas_pixel(page, x: float, y: float) -> list[int]:
    sx, sy = page.evaluate(
        """([x, y]) => { const S = window.vosfx.state;
        return [S.panX + x * S.zoom, S.panY + y * S.zoom]; }""",
        [x, y],
    )
    return page.evaluate(
        """([x, y]) => Array.from(document.getElementById('canvas')
        .getContext('2d').getImageData(Math.round(x), Math.round(y), 1, 1).data)""",
        [sx, sy],
    )


def _as_prompt(d: dict) -> Prompt:
    return Prompt(
        d["frame"], d["obj_id"], points=np.float32(d["points"]), labels=np.int32(d["labels"])
    )


def _engine_matte(clip: Path, prompts: list[Prompt], t: int, cfg: RefineConfig) -> np.ndarray:
    """The engine's own output for the same prompts (a fresh session), refined: what the
    page must show."""
    from vosfx.config import MemoryConfig

    with SourceFrames(clip) as frames:
        session = ClipSession(FakeEngine(), frames.info, MemoryConfig(), frames=frames)
        for p in prompts:
            session.add_prompt(p, refine=False)
        res = session.result(t)
        alpha = Refiner(cfg, res.obj_ids)(res, frames.get(t)).alpha.max(axis=0)
        session.close()
    return np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)


def _answerer(asked: list[str]):
    """``answer(yes)``: a dialog handler that records the dialog's message in ``asked`` and
    answers Yes (accept) or No (dismiss)."""

    def answer(yes: bool):
        def on_dialog(d):
            asked.append(d.message)
            d.accept() if yes else d.dismiss()

        return on_dialog

    return answer


def test_studio_end_to_end(browser, clip, tmp_path, monkeypatch, config_home):
    shots = tmp_path / "screens"
    shots.mkdir()
    run = Running(clip, tmp_path / "work")
    page = browser.new_page(viewport={"width": 1200, "height": 760})
    # a loaded CI machine (2 cores) can take more than Playwright's 30 s default
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function("window.vosfx.drawn > 0")
        page.screenshot(path=shots / "01_open.png")

        # click: include point on the square; the mask is drawn at once
        x, y = _centre(0)
        before = _canvas_pixel(page, x, y)
        last = _prompt(page, x, y)
        assert last["frame"] == 0 and last["objects"][0]["area"] > 0
        after = _canvas_pixel(page, x, y)
        assert after != before  # the overlay tinted the object
        cfg = run.studio.config.refine
        sent = run.request("/api/state")[1]["prompts"]
        assert len(sent) == 1 and np.allclose(sent[0]["points"], [[x, y]], atol=1.0)
        want = _engine_matte(clip, [_as_prompt(sent[0])], 0, cfg)
        np.testing.assert_array_equal(_matte(run, 0), want)
        page.screenshot(path=shots / "02_click.png")

        # exclude point (Alt-click) beside it
        ex, ey = x + 12, y
        _prompt(page, ex, ey, exclude=True)
        st = run.request("/api/state")[1]
        assert st["prompts"][0]["labels"] == [1, 0]
        want = _engine_matte(clip, [_as_prompt(st["prompts"][0])], 0, cfg)
        np.testing.assert_array_equal(_matte(run, 0), want)
        page.screenshot(path=shots / "03_exclude.png")

        # track: progress, then every frame has a result
        fake = run.engine.sessions[0]
        page.click("#track")
        page.wait_for_function("window.vosfx.events.includes('tracked')")
        tl = run.request("/api/timeline")[1]
        assert tl["objects"][0]["tracked"] == [[0, N - 1]]
        page.screenshot(path=shots / "04_tracked.png")

        # scrub: keys and a drag on the timeline
        page.keyboard.press("End")
        assert page.evaluate("document.body.dataset.frame") == str(N - 1)
        page.keyboard.press("Shift+ArrowLeft")
        page.keyboard.press("ArrowLeft")
        assert page.evaluate("document.body.dataset.frame") == str(N - 12)
        box = page.locator("#timeline").bounding_box()
        page.mouse.move(box["x"] + 2, box["y"] + 50)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 20.5 / N, box["y"] + 50, steps=5)
        page.mouse.up()
        assert page.evaluate("document.body.dataset.frame") == "20"
        page.wait_for_function("document.getElementById('canvas').dataset.frame === '20'")
        page.screenshot(path=shots / "05_scrubbed.png")

        # correction on a tracked frame: a prompt there, kept by re-tracking
        cx, cy = _centre(20)
        _prompt(page, cx, cy)
        corrected = _matte(run, 20)
        n_before = len(fake.stepped)
        page.evaluate("window.vosfx.events = []")
        page.click("#track")
        page.wait_for_function("window.vosfx.events.includes('tracked')")
        np.testing.assert_array_equal(_matte(run, 20), corrected)
        assert (1, 20) not in {(o, t) for o, t, _d in fake.stepped[n_before:]}
        # a second correction later on changes only the frames after frame 20
        page.keyboard.press("ArrowRight")
        for _ in range(10):
            page.keyboard.press("ArrowRight")
        page.wait_for_function("document.getElementById('canvas').dataset.frame === '31'")
        _prompt(page, *_centre(31))
        n_before = len(fake.stepped)
        page.evaluate("window.vosfx.events = []")
        page.click("#track")
        page.wait_for_function("window.vosfx.events.includes('tracked')")
        redone = sorted({t for _o, t, _d in fake.stepped[n_before:]})
        assert redone and min(redone) > 20
        np.testing.assert_array_equal(_matte(run, 20), corrected)
        page.screenshot(path=shots / "06_corrected.png")

        # finishing: a feather changes the current frame's matte, live
        before = _matte(run, 31)
        page.evaluate("""() => { const el = document.querySelector('[data-key=feather_px]');
            el.value = 6; el.dispatchEvent(new Event('input')); }""")
        page.wait_for_function("document.body.dataset.refined !== undefined")
        page.wait_for_function("""document.getElementById('canvas').dataset.version ===
            document.body.dataset.refined""")
        assert run.studio.config.refine.feather_px == 6
        assert not np.array_equal(_matte(run, 31), before)
        page.select_option("#view", "cutout")
        page.wait_for_function("document.getElementById('canvas').dataset.view === 'cutout'")
        page.screenshot(path=shots / "07_finishing_cutout.png")

        # render, then save the job with another output and run `vosfx matte --job` on it
        out_a, out_b = tmp_path / "studio_render", tmp_path / "cli_render"
        page.select_option("#preset", "png16")  # an output preset picks its format
        assert page.input_value("#format") == "png16"
        page.fill("#output", str(out_a))
        page.click("#render")
        page.wait_for_function("document.body.dataset.rendered")
        page.screenshot(path=shots / "08_rendered.png")
        assert out_a.is_dir()
        job_path = tmp_path / "saved_job.json"
        page.fill("#output", str(out_b))
        page.fill("#job-path", str(job_path))
        page.click("#save-job")
        page.wait_for_function("document.body.dataset.saved")
    finally:
        page.close()
        run.close()
    import vosfx.engine
    from vosfx.cli import cli

    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: FakeEngine())
    res = CliRunner().invoke(cli, ["matte", "--job", str(job_path)])
    assert res.exit_code == 0, res.output
    a, b = sorted(out_a.glob("*.png")), sorted(out_b.glob("*.png"))
    assert len(a) == len(b) == N
    for pa, pb in zip(a, b):
        ia, ib = np.asarray(Image.open(pa)), np.asarray(Image.open(pb))
        np.testing.assert_array_equal(ia, ib)
    assert np.asarray(Image.open(a[20]))[..., 3].max() > 0  # the object is in the render


def test_page_says_which_model_file_to_put_where(browser, clip, tmp_path, monkeypatch, config_home):
    monkeypatch.setenv("VOSFX_OFFLINE", "1")

    def load():
        from vosfx.engine import load_engine
        from vosfx.presets import resolve_config

        return load_engine(resolve_config((), {}).model)

    run = Running(clip, tmp_path / "work", load=load)
    page = browser.new_page()
    # a loaded CI machine (2 cores) can take more than Playwright's 30 s default
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-error='download']")
        text = page.inner_text("#problem")
        assert "sam2.1_hiera_tiny.pt" in text
        assert str(config_home / "cache" / "checkpoints") in text
        page.screenshot(path=tmp_path / "model_missing.png")
    finally:
        page.close()
        run.close()


def test_page_without_token_is_refused(browser, clip, tmp_path, config_home):
    run = Running(clip, tmp_path / "work")
    page = browser.new_page()
    # a loaded CI machine (2 cores) can take more than Playwright's 30 s default
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        res = page.goto(run.base + "/")
        assert res.status == 403
        res = page.goto(run.url.replace("token=", "token=x"))
        assert res.status == 403
    finally:
        page.close()
        run.close()


def test_saved_job_is_a_batch_manifest_too(clip, tmp_path, config_home, monkeypatch):
    """The saved job runs unchanged as a one-job `vosfx batch` manifest, with the same
    output as `vosfx matte --job`."""
    import vosfx.engine
    from vosfx.cli import cli

    run = Running(clip, tmp_path / "work")
    try:
        x, y = _centre(5)
        run.request("/api/click", {"obj_id": 1, "frame": 5, "x": x, "y": y})
        run.request("/api/refine", {"refine": {"feather_px": 2, "shift_edge_px": 1}})
        run.request("/api/objects", {"op": "rename", "obj_id": 1, "name": "the square"})
        for name in ("via_batch", "via_matte"):
            status, _ = run.request(
                "/api/save",
                {
                    "output": str(tmp_path / name),
                    "formats": ["png16"],
                    "path": str(tmp_path / f"{name}_job.json"),  # {name}.json: its sidecar
                },
            )
            assert status == 200
    finally:
        run.close()
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    res = CliRunner().invoke(
        cli,
        [
            "batch",
            str(tmp_path / "via_batch_job.json"),
            "--executor",
            "inline",
            "--engine-factory",
            "batch_fakes:fake_engine",
        ],
    )
    assert res.exit_code == 0, res.output
    # the object's name travels with the job (into the render's sidecar too), not rendered
    sidecar = json.loads((tmp_path / "via_batch.json").read_text())
    assert sidecar["job"]["names"] == {"1": "the square"}, sidecar.keys()
    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: FakeEngine())
    res = CliRunner().invoke(cli, ["matte", "--job", str(tmp_path / "via_matte_job.json")])
    assert res.exit_code == 0, res.output
    a, b = (
        sorted((tmp_path / "via_batch").glob("*.png")),
        sorted((tmp_path / "via_matte").glob("*.png")),
    )
    assert len(a) == len(b) == N
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))


def test_drop_a_mask_image_on_the_viewer(browser, clip, tmp_path, config_home):
    import base64

    x0, y0, x1, y1 = square_box(3, W, H)
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, "PNG")
    run = Running(clip, tmp_path / "work")
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    # a loaded CI machine (2 cores) can take more than Playwright's 30 s default
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-ready='1']")
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.wait_for_function("document.getElementById('canvas').dataset.frame === '3'")
        page.evaluate("window.vosfx.last = null")
        data = page.evaluate_handle(
            """(b64) => { const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'mask.png', {type: 'image/png'}));
            return dt; }""",
            base64.b64encode(buf.getvalue()).decode(),
        )
        page.dispatch_event("#viewer", "drop", {"dataTransfer": data})
        page.wait_for_function("window.vosfx.last && window.vosfx.last.drawnMs !== undefined")
        assert run.studio.edits[(1, 3)].mask is not None
        page.select_option("#view", "matte")
        page.wait_for_function("document.getElementById('canvas').dataset.view === 'matte'")
        matte = _matte(run, 3)
        inside = matte[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3]
        far = np.ones((H, W), bool)
        far[max(0, y0 - 8) : y1 + 8, max(0, x0 - 8) : x1 + 8] = False
        assert inside.min() > 200 and matte[far].max() < 50
        page.screenshot(path=tmp_path / "dropped_mask.png")
    finally:
        page.close()
        run.close()


def test_a_session_that_ended_unsaved_is_offered_restored_or_discarded(
    browser, clip, tmp_path, config_home
):
    """A studio closed with prompts not saved: the next page on the clip says so above the
    picture; Restore puts its prompts and finishing back (the mask drawn on its frame);
    Discard, on the page after that one, removes it."""
    first = Running(clip, tmp_path / "first")
    x, y = _centre(0)
    first.request("/api/click", {"obj_id": 1, "frame": 0, "x": x, "y": y})
    first.request("/api/refine", {"refine": {"feather_px": 2.0}})
    first.close()
    with _studio_page(browser, clip, tmp_path) as (run, page):
        assert page.is_visible("#recovery")
        assert "1 prompt on 1 object" in page.text_content("#recovery-text")
        page.click("#restore")
        page.wait_for_function("document.getElementById('recovery').hidden")
        page.wait_for_function(
            "document.getElementById('status').textContent.includes('kept session is back')"
        )
        assert run.studio.edits[(1, 0)].points == ((x, y),)
        assert page.input_value("#finishing [data-key='feather_px']") == "2"
        page.select_option("#view", "matte")
        page.wait_for_function("document.getElementById('canvas').dataset.view === 'matte'")
        x0, y0, x1, y1 = square_box(0, W, H)
        assert _matte(run, 0)[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3].min() > 200
        page.screenshot(path=tmp_path / "restored.png")
    (kept,) = tmp_path.glob("recovered/*/job.json")  # not saved again: kept again
    with _studio_page(browser, clip, tmp_path) as (run, page):  # (the first one's folder is gone)
        page.click("#discard")
        page.wait_for_function("document.getElementById('recovery').hidden")
        assert not kept.exists() and not run.studio.edits


def test_the_job_saved_beside_the_clip_opens_from_the_page(browser, clip, tmp_path, config_home):
    """Saved where Save job proposes, the job is offered by the next studio on the clip:
    Open puts its prompts back and the Render panel takes its output and its file."""
    first = Running(clip, tmp_path / "first")
    x, y = _centre(2)
    first.request("/api/click", {"obj_id": 1, "frame": 2, "x": x, "y": y})
    saved = str(tmp_path / "clip_vosfx_job.json")
    out = str(tmp_path / "final.mov")
    assert first.request("/api/save", {"output": out, "path": saved})[0] == 200
    first.close()
    with _studio_page(browser, clip, tmp_path) as (run, page):
        assert page.is_visible("#saved-offer") and page.is_hidden("#kept-offer")
        assert "clip_vosfx_job.json" in page.text_content("#saved-text")
        page.click("#open-saved")
        page.wait_for_function(
            "document.getElementById('status').textContent === 'the saved job is open'"
        )
        assert page.is_hidden("#recovery") and (1, 2) in run.studio.edits
        assert page.input_value("#job-path") == saved and page.input_value("#output") == out


def test_box_drag_undo_redo_keys_zoom_and_objects(browser, clip, tmp_path, config_home):
    run = Running(clip, tmp_path / "work")
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    # a loaded CI machine (2 cores) can take more than Playwright's 30 s default
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-ready='1']")
        x0, y0, x1, y1 = square_box(0, W, H)
        ax, ay = _screen(page, x0, y0)
        bx, by = _screen(page, x1, y1)
        page.evaluate("window.vosfx.last = null")
        page.mouse.move(ax, ay)
        page.mouse.down()
        page.mouse.move(bx, by, steps=6)
        page.mouse.up()
        page.wait_for_function("window.vosfx.last && window.vosfx.last.drawnMs !== undefined")
        box = run.studio.edits[(1, 0)].box
        assert box is not None and np.allclose(box, (x0, y0, x1, y1), atol=1.5)
        page.keyboard.press("Control+z")
        page.wait_for_function("!window.vosfx.state.prompts.length")
        assert run.studio.edits == {}
        page.keyboard.press("Control+Shift+z")
        page.wait_for_function("window.vosfx.state.prompts.length === 1")
        assert run.studio.edits[(1, 0)].box == box
        # a second object, selected, gets the next click
        page.click("#add-object")
        page.wait_for_function("document.querySelectorAll('#objects li').length === 2")
        page.wait_for_function("window.vosfx.state.obj === 2")  # the new one is selected
        assert page.get_attribute("#objects li.selected", "data-obj") == "2"
        _prompt(page, *_centre(0))
        assert (2, 0) in run.studio.edits
        # 1-9 select by place in the list; [ ] go to the selected object's prompted frames
        for t in (6, 3):
            page.evaluate(f"showFrame({t})")
            page.wait_for_function(f"document.getElementById('canvas').dataset.frame === '{t}'")
            _prompt(page, *_centre(t))
        page.keyboard.press("1")
        page.wait_for_function("window.vosfx.state.obj === 1")
        page.keyboard.press("]")  # object 1: only frame 0 is prompted
        page.wait_for_function(
            "document.getElementById('status').textContent === "
            "'object 1 has no prompt after frame 3'"
        )
        page.keyboard.press("[")
        page.wait_for_function("document.getElementById('canvas').dataset.frame === '0'")
        page.keyboard.press("2")
        page.wait_for_function("window.vosfx.state.obj === 2")
        for t in ("3", "6"):
            page.keyboard.press("]")
            page.wait_for_function(f"document.getElementById('canvas').dataset.frame === '{t}'")
        page.keyboard.press("[")
        page.wait_for_function("document.getElementById('canvas').dataset.frame === '3'")
        page.keyboard.press("9")  # no ninth object: nothing changes
        assert page.evaluate("window.vosfx.state.obj") == 2
        page.keyboard.press("Home")
        page.wait_for_function("document.getElementById('canvas').dataset.frame === '0'")
        # zoom in with the wheel around the pointer, double-click fits again
        fit_zoom = page.evaluate("window.vosfx.state.zoom")
        page.mouse.move(*_screen(page, W / 2, H / 2))
        page.mouse.wheel(0, -400)
        page.wait_for_function(f"window.vosfx.state.zoom > {fit_zoom} * 1.5")
        page.dblclick("#canvas", position={"x": 5, "y": 5})
        page.wait_for_function(f"Math.abs(window.vosfx.state.zoom - {fit_zoom}) < 1e-6")
    finally:
        page.close()
        run.close()


def test_stop_a_track_and_play(browser, clip, tmp_path, config_home):
    import time

    def slow(frame_index, obj_id, base):
        time.sleep(0.1)
        return base

    run = Running(clip, tmp_path / "work", engine=FakeEngine(logit_fn=slow))
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    # a loaded CI machine (2 cores) can take more than Playwright's 30 s default
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-ready='1']")
        _prompt(page, *_centre(0))
        page.click("#track")
        page.wait_for_function("window.vosfx.events.includes('frame')")
        page.click("#stop")
        page.wait_for_function("window.vosfx.events.includes('stopped')")
        assert run.studio.busy is None and run.studio.session.stale()  # work left to do
        assert "tracked" not in page.evaluate("window.vosfx.events")
        page.click("#play")
        page.wait_for_function("Number(document.body.dataset.frame) >= 5")
        page.click("#play")  # pause
        t = int(page.evaluate("document.body.dataset.frame"))
        page.wait_for_timeout(300)
        assert int(page.evaluate("document.body.dataset.frame")) <= t + 1
    finally:
        page.close()
        run.close()


def _engine_mask(clip: Path, prompts: list[Prompt], t: int, cfg: RefineConfig) -> np.ndarray:
    """The engine's own mask for the prompts at the clip's size (a fresh session; the
    render's resampling and threshold, before guided refine and finishing)."""
    from vosfx.config import MemoryConfig
    from vosfx.matte.refine import logits_to_prob

    with SourceFrames(clip) as frames:
        session = ClipSession(FakeEngine(), frames.info, MemoryConfig(), frames=frames)
        for p in prompts:
            session.add_prompt(p, refine=False)
        logits = session.result(t).logits[0]
        session.close()
    return logits_to_prob(logits, (H, W), cfg.threshold, cfg.softness) >= 0.5


def _source_pixel(page, x: int, y: int) -> list[int]:
    """Pixel (x, y) of the source picture the page draws a prompt's overlay on."""
    return page.evaluate(
        """([x, y]) => { const S = window.vosfx.state, c = document.createElement('canvas');
        c.width = S.clip.width; c.height = S.clip.height;
        const g = c.getContext('2d'); g.drawImage(S.quick.src, 0, 0);
        return Array.from(g.getImageData(x, y, 1, 1).data); }""",
        [x, y],
    )


def test_click_overlay_is_drawn_from_the_returned_mask(browser, clip, tmp_path, config_home):
    """With the finished view held back, the canvas after a click shows the mask the click
    returned (the engine's mask for the prompts) tinted over the source frame: a pixel inside
    it is blended with the object's colour, one outside is the source's; an exclude click
    that carves the mask untints what it removed."""
    from vosfx.matte.compose import object_colour

    run = Running(clip, tmp_path / "work")
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    held: list[str] = []

    def hold_finished_views(route) -> None:
        if "view=source" in route.request.url:
            route.continue_()
        else:
            held.append(route.request.url)
            route.abort()

    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function("window.vosfx.drawn > 0")
        version = page.evaluate("document.getElementById('canvas').dataset.version")
        page.route("**/api/view/**", hold_finished_views)
        cfg = run.studio.config.refine
        colour = np.array(object_colour(1), float)
        x, y = _centre(0)
        ex, ey = x + 12, y
        for step, exclude in ((1, False), (2, True)):
            page.evaluate("window.vosfx.last = null")
            sx, sy = _screen(page, ex if exclude else x, ey if exclude else y)
            if exclude:
                page.keyboard.down("Alt")
            page.mouse.click(sx, sy)
            if exclude:
                page.keyboard.up("Alt")
            page.wait_for_function("window.vosfx.last && window.vosfx.last.drawnMs !== undefined")
            last = page.evaluate("window.vosfx.last")
            page.wait_for_timeout(400)  # the finished view was asked for (and held back)
            assert held and "exactMs" not in page.evaluate("window.vosfx.last")
            assert page.evaluate("document.getElementById('canvas').dataset.version") == version
            assert page.evaluate("document.getElementById('canvas').dataset.quick") == str(
                last["version"]
            )
            # the returned mask is the engine's mask for the prompts the page sent
            index = np.asarray(Image.open(io.BytesIO(base64.b64decode(last["objects"][0]["mask"]))))
            sent = [_as_prompt(d) for d in last["prompts"]]
            assert len(sent) == 1 and len(sent[0].labels) == step
            want = _engine_mask(clip, sent, 0, cfg)
            np.testing.assert_array_equal(index > 0, want)
            # canvas pixels: inside (not on the outline) tinted, outside the source's
            ins = np.argwhere(index == 1)
            iy, ix = ins[len(ins) // 2]
            oy, ox = H - 5, W - 5
            assert not want[oy, ox]
            for (py, px), tinted in (((iy, ix), True), ((oy, ox), False)):
                src = np.array(_source_pixel(page, int(px), int(py))[:3], float)
                got = np.array(_canvas_pixel(page, px + 0.5, py + 0.5)[:3], float)
                expect = src + (colour - src) * (128 / 255) if tinted else src
                assert np.abs(got - expect).max() <= 6, (step, (px, py), got, expect, src)
                if tinted:
                    assert np.abs(got - src).max() > 40
            # a spot the exclude point carves (away from its marker): inside after the first
            # click, outside and untinted after the second
            cx, cy = int(ex), int(ey) - 5
            if exclude:
                assert not want[cy, cx]
                src = np.array(_source_pixel(page, cx, cy)[:3], float)
                got = np.array(_canvas_pixel(page, cx + 0.5, cy + 0.5)[:3], float)
                assert np.abs(got - src).max() <= 6, (got, src)
            else:
                assert want[cy, cx]
        page.screenshot(path=tmp_path / "quick_overlay.png")
        # the finished view follows once it is let through
        page.unroute("**/api/view/**")
        page.evaluate("window.vosfx.last = null")
        page.mouse.click(*_screen(page, x, y))
        page.wait_for_function("window.vosfx.last && window.vosfx.last.exactMs !== undefined")
        assert page.evaluate("document.getElementById('canvas').dataset.version") != version
    finally:
        page.close()
        run.close()


def test_a_studio_restarted_under_the_page_is_said_plainly(browser, clip, tmp_path, config_home):
    """The page of an earlier run (a studio restarted on the same port has a new token): a
    click says to open the new address; before, it showed a JSON parse error of the 403's
    plain-text body ("Unexpected token 'f', "forbidden" is not valid JSON")."""
    with _studio_page(browser, clip, tmp_path) as (run, page):
        run.ctl.token = "the-next-run"  # what a restart on this port looks like to the page
        page.mouse.click(*_screen(page, *_centre(0)))
        page.wait_for_function("document.getElementById('problem').textContent.length > 0")
        text = page.text_content("#problem")
        assert "earlier run" in text and "vosfx studio" in text, text


def test_how_the_model_runs_is_on_the_page(browser, clip, tmp_path, config_home):
    """The engine's warnings (a GPU asked for and absent, a tier in a slower form) stay on the
    page under the banner's place; without any, nothing is shown."""
    engine = FakeEngine()
    engine.runtime_warnings.append("--device cuda: no CUDAExecutionProvider: running on CPU")
    with _studio_page(browser, clip, tmp_path, engine=engine) as (_run, page):
        assert page.is_visible("#notice")
        assert page.text_content("#notice") == (
            "warning: --device cuda: no CUDAExecutionProvider: running on CPU"
        )
        assert page.is_hidden("#problem")
    with _studio_page(browser, clip, tmp_path / "plain") as (_run, page):
        assert page.is_hidden("#notice")


def _status(page) -> str:
    return page.text_content("#status")


def _banner(page) -> str | None:
    return None if page.is_hidden("#problem") else page.text_content("#problem")


def test_a_failure_banner_goes_with_the_next_action_that_works(
    browser, clip, tmp_path, config_home
):
    """The page loads without a console error (the browser's favicon request was refused
    403); an action that fails puts up the red banner and the next one that works takes it
    down (it stayed for the rest of the session); an existing output names the page's
    "replace existing" box, not the CLI's --overwrite."""
    run = Running(clip, tmp_path / "work")
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    console: list[str] = []
    page.on("console", lambda m: m.type == "error" and console.append(m.text))
    page.on("pageerror", lambda e: console.append(str(e)))
    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function("window.vosfx.drawn > 0")
        page.wait_for_timeout(300)  # the favicon request, if any, is answered by now
        assert console == []
        page.click("#render")  # no prompt yet
        page.wait_for_function("!document.getElementById('problem').hidden")
        assert "no prompt yet" in _banner(page)
        _prompt(page, *_centre(0))
        assert _banner(page) is None, _banner(page)
        out = tmp_path / "taken.mov"
        out.write_bytes(b"")
        page.fill("#output", str(out))
        page.select_option("#format", "prores4444")
        page.fill("#output", str(out))
        page.click("#render")
        page.wait_for_function("!document.getElementById('problem').hidden")
        text = _banner(page)
        assert "already exists" in text and "replace existing" in text, text
        assert "--overwrite" not in text
        assert out.read_bytes() == b""
    finally:
        page.close()
        run.close()


def test_a_format_change_keeps_a_typed_output_path(browser, clip, tmp_path, config_home):
    """Until the user types a path the output is `vosfx matte`'s default for the format, and
    follows it (the studio opened with png16 proposed `clip_vosfx.mov`, which Render then
    refused); once typed, a change swaps only the ending an earlier format gave it (a typed
    path was mangled: `myshot.mov` -> `myshot.mov_png16` -> `myshot.mov_png16.mov`)."""
    with _studio_page(browser, clip, tmp_path) as (run, page):
        folder = Path(run.studio.clip).parent
        assert page.input_value("#format") == "png16"  # the studio's -p png16
        assert page.input_value("#output") == str(folder / "clip_vosfx_png16")
        for fmt, name in (
            ("prores4444", "clip_vosfx.mov"),
            ("webm-alpha", "clip_vosfx_webm-alpha.webm"),
            ("exr-layers", "clip_vosfx_exr-layers"),
        ):
            page.select_option("#format", fmt)
            assert page.input_value("#output") == str(folder / name), fmt
        page.select_option("#preset", "png16")  # a preset's format is followed too
        assert page.input_value("#output") == str(folder / "clip_vosfx_png16")
        page.fill("#output", "/shots/sh010/sh010_final.mov")
        for fmt, want in (
            ("png16", "/shots/sh010/sh010_final_png16"),
            ("exr-layers", "/shots/sh010/sh010_final_exr-layers"),
            ("webm-alpha", "/shots/sh010/sh010_final.webm"),
            ("prores4444", "/shots/sh010/sh010_final.mov"),
        ):
            page.select_option("#format", fmt)
            assert page.input_value("#output") == want, fmt


def test_controls_follow_what_can_run(browser, clip, tmp_path, config_home, caplog):
    """Clear frame is greyed with nothing to clear (with no object it sent `obj_id: null` and
    showed "obj_id: expected an integer, found None"); a stopped track says its frames are
    kept (it said "nothing partial was kept" over a timeline showing them); a track that fails
    leaves Stop greyed (it stayed enabled with nothing running)."""
    import time

    def slow(frame_index, obj_id, base):
        time.sleep(0.05)
        return base

    def boom(frame_index, obj_id, base):
        raise RuntimeError("out of memory (a stand-in)")

    with _studio_page(browser, clip, tmp_path, engine=FakeEngine(logit_fn=slow)) as (run, page):
        assert page.is_disabled("#clear-frame")  # an object, no prompt
        _prompt(page, *_centre(0))
        assert page.is_enabled("#clear-frame")
        page.keyboard.press("ArrowRight")
        assert page.is_disabled("#clear-frame")  # no prompt on frame 1
        page.keyboard.press("ArrowLeft")
        assert page.is_enabled("#clear-frame")
        page.click("#track")
        page.wait_for_function("window.vosfx.events.includes('frame')")
        page.click("#stop")
        page.wait_for_function("window.vosfx.events.includes('stopped')")
        tracked = run.request("/api/timeline")[1]["objects"][0]["tracked"]
        assert tracked, "the stopped track kept no frames: the message below would be wrong"
        assert "kept" in _status(page) and "nothing partial" not in _status(page), _status(page)
        run.engine.sessions[0].logit_fn = boom
        page.click("#track")
        page.wait_for_function("window.vosfx.events.includes('error')")
        assert "out of memory" in _banner(page)
        page.wait_for_function("document.getElementById('stop').disabled")
        assert run.studio.busy is None
        page.once("dialog", lambda d: d.accept())  # "Delete object 1 and its prompts?"
        page.click("#objects li .delete")
        page.wait_for_function("!document.querySelectorAll('#objects li').length")
        assert page.is_disabled("#clear-frame")
        caplog.clear()  # the stand-in failure's traceback, logged as the studio does


def test_a_narrow_window_keeps_the_picture_usable(browser, clip, tmp_path, config_home):
    """Below ~700 px wide the fixed side columns squeezed the picture to a sliver (zoom 0.006
    at 420x300); narrow windows now stack the panels under a full-width picture."""
    with _studio_page(browser, clip, tmp_path, size=(420, 700)) as (_run, page):
        box = page.locator("#canvas").bounding_box()
        assert box is not None and box["width"] >= 400 and box["height"] >= 250, box
        assert page.evaluate("window.vosfx.state.zoom") * W >= 380  # the picture's width on screen
        # the panels are still there, below the picture
        assert page.locator("#right").bounding_box()["y"] > box["y"] + box["height"] - 1
        _prompt(page, *_centre(0))  # and a click on it is taken


def test_the_render_range_is_shown_and_taken_inclusive(browser, clip, tmp_path, config_home):
    """The range fields read like the frame counter ("frame N / 39"): both ends rendered. The
    end field showed the exclusive end (40 for a 40-frame clip), one past the last frame."""
    with _studio_page(browser, clip, tmp_path) as (_run, page):
        assert page.input_value("#range-start") == "0"
        assert page.input_value("#range-end") == str(N - 1)
        _prompt(page, *_centre(0))
        out = tmp_path / "part"
        page.select_option("#format", "png16")
        page.fill("#output", str(out))
        page.fill("#range-end", "2")
        page.click("#render")
        page.wait_for_function(
            "document.body.dataset.rendered || document.getElementById('problem').textContent"
        )
        assert not page.text_content("#problem"), page.text_content("#problem")
        assert [p.name for p in sorted(out.glob("*.png"))] == [
            f"part.{i:05d}.png" for i in (0, 1, 2)
        ]


def test_save_job_asks_before_replacing(browser, clip, tmp_path, config_home):
    """Saving over an existing job file asks first; No keeps the file, Yes replaces it."""
    job_path = tmp_path / "shot.json"
    job_path.write_text("kept\n")
    with _studio_page(browser, clip, tmp_path) as (_run, page):
        _prompt(page, *_centre(0))
        page.fill("#job-path", str(job_path))
        asked: list[str] = []
        answer = _answerer(asked)
        page.once("dialog", answer(False))
        page.click("#save-job")
        page.wait_for_function("document.getElementById('job-result').textContent !== ''")
        assert "already exists" in page.text_content("#job-result")
        assert job_path.read_text() == "kept\n" and str(job_path) in asked[0]
        page.once("dialog", answer(True))
        page.click("#save-job")
        page.wait_for_function(f"document.body.dataset.saved === {json.dumps(str(job_path))}")
        assert load_job_file(job_path).input == str(clip) and len(asked) == 2


def test_an_edit_during_a_render_asks_first(browser, clip, tmp_path, config_home):
    """A click, Track or another Render stops a running render (one worker) and a stopped
    render keeps nothing, so the page asks: No leaves the render running to its end and sends
    nothing; Yes stops it (its files removed) and the click is taken."""
    import time

    def slow(frame_index, obj_id, base):
        time.sleep(0.1)
        return base

    out = tmp_path / "shot"
    count = "(e) => window.vosfx.events.filter((x) => x === e).length"
    with _studio_page(browser, clip, tmp_path, engine=FakeEngine(logit_fn=slow)) as (run, page):
        _prompt(page, *_centre(0))
        page.select_option("#format", "png16")
        page.fill("#output", str(out))
        page.click("#render")
        page.wait_for_function("window.vosfx.state.busy === 'render'")
        asked: list[str] = []
        answer = _answerer(asked)
        page.evaluate("window.vosfx.last = null")
        page.once("dialog", answer(False))
        page.mouse.click(*_screen(page, *_centre(0)))
        assert asked and "A render is running" in asked[0], asked
        page.once("dialog", answer(False))
        page.click("#track")
        assert len(asked) == 2
        # reloading (or closing) the page would stop it too: the browser asks, and No keeps it
        kinds: list[str] = []
        page.once("dialog", lambda d: (kinds.append(d.type), d.dismiss()))
        page.evaluate("window.marker = 1; setTimeout(() => location.reload(), 0)")
        for _ in range(200):
            if kinds:
                break
            page.wait_for_timeout(25)
        assert kinds == ["beforeunload"]
        assert page.evaluate("window.marker") == 1  # the same page: not reloaded
        page.wait_for_function(f"({count})('rendered') === 1")
        assert page.evaluate("window.vosfx.last") is None  # the refused click was not sent
        assert page.evaluate(f"({count})('stopped')") == 0
        first = {f.name: f.stat().st_mtime_ns for f in out.glob("*.png")}
        assert len(first) == N
        assert page.evaluate("window.vosfx.state.busy") is None
        # nothing running now: a click asks nothing
        _prompt(page, *_centre(0))
        assert len(asked) == 2
        # again over the same files, and Yes: the render stops, the click is taken, and the
        # first render's files are as they were (nothing of the stopped one's is left)
        page.check("#overwrite")
        page.click("#render")
        page.wait_for_function("window.vosfx.state.busy === 'render'")
        page.evaluate("window.vosfx.last = null")
        page.once("dialog", answer(True))
        page.mouse.click(*_screen(page, *_centre(0)))
        page.wait_for_function(f"({count})('stopped') === 1")
        page.wait_for_function("window.vosfx.last && window.vosfx.last.exactMs !== undefined")
        assert len(asked) == 3 and page.evaluate(f"({count})('rendered')") == 1
        assert {f.name: f.stat().st_mtime_ns for f in out.glob("*.png")} == first
        assert run.studio.busy is None


def test_an_odd_sized_clip_is_clicked_tracked_and_rendered_at_its_own_size(
    browser, tmp_path, config_home
):
    """161x121 (odd both ways, which 4:2:0 video cannot hold: a PNG sequence): the page's
    picture, a click's mask, the matte view and the rendered PNGs are all 161x121, and the
    click lands where it was made."""
    from tests.media import make_sequence, moving_square_frame

    w, h, n = 161, 121, 6
    seq = make_sequence(tmp_path / "odd", n=n, width=w, height=h)
    _frame, square = moving_square_frame(0, w, h)
    ys, xs = np.nonzero(square)
    cx, cy = float(xs.mean()), float(ys.mean())
    with _studio_page(browser, seq, tmp_path) as (run, page):
        assert page.evaluate("[window.vosfx.state.clip.width, window.vosfx.state.clip.height]") == [
            w,
            h,
        ]
        sent = _prompt(page, cx, cy)
        assert sent["frame"] == 0
        (prompt,) = run.request("/api/state")[1]["prompts"]
        np.testing.assert_allclose(prompt["points"][0], [cx, cy], atol=1.0)  # where clicked
        matte = _matte(run, 0)
        assert matte.shape == (h, w)
        assert matte[int(cy), int(cx)] > 128  # the clicked object is in the matte
        out = tmp_path / "odd_out"
        page.select_option("#format", "png16")
        page.fill("#output", str(out))
        page.click("#render")
        page.wait_for_function(
            "document.body.dataset.rendered || document.getElementById('problem').textContent"
        )
        assert not page.text_content("#problem"), page.text_content("#problem")
        files = sorted(out.glob("*.png"))
        assert len(files) == n
        for f in files:
            assert Image.open(f).size == (w, h)


def test_a_double_click_fits_and_adds_no_point(browser, clip, tmp_path, config_home):
    """A double-click on the picture fits the view and leaves the prompts as they were: each
    of its presses was also a click (two include points). The first press goes at once, as
    every click does (no wait for the double-click time), and is taken back without a redo
    step: the redo the user had is still there."""
    with _studio_page(browser, clip, tmp_path) as (run, page):
        (ax, ay), (bx, by) = _centre(0), (_centre(0)[0] + 3, _centre(0)[1] + 2)
        _prompt(page, ax, ay)
        _prompt(page, bx, by)
        page.keyboard.press("Control+z")  # B waits in redo
        page.wait_for_function("window.vosfx.state.prompts[0].points.length === 1")
        before = run.studio.edits[(1, 0)]
        fit_zoom = page.evaluate("window.vosfx.state.zoom")
        page.mouse.move(*_screen(page, ax - 6, ay - 4))  # (zoomed around it: stays in view)
        page.mouse.wheel(0, -400)
        page.wait_for_function(f"window.vosfx.state.zoom > {fit_zoom} * 1.5")
        clicks: list[str] = []
        page.on("request", lambda r: r.url.endswith("/api/click") and clicks.append(r.url))
        page.mouse.dblclick(*_screen(page, ax - 6, ay - 4))
        page.wait_for_function("document.body.dataset.fitted === '1'")
        assert abs(page.evaluate("window.vosfx.state.zoom") - fit_zoom) < 1e-6
        assert len(clicks) == 1  # the first press only, sent at once
        assert run.studio.edits == {(1, 0): before}
        page.wait_for_function("window.vosfx.state.prompts[0].points.length === 1")
        assert page.is_enabled("#redo")
        page.keyboard.press("Control+Shift+z")
        page.wait_for_function("window.vosfx.state.prompts[0].points.length === 2")
        assert run.studio.edits[(1, 0)].points[0] == before.points[0]
        assert np.allclose(run.studio.edits[(1, 0)].points[1], (bx, by), atol=1)
        # a single click still adds its point
        _prompt(page, ax - 6, ay - 4)
        assert len(run.studio.edits[(1, 0)].points) == 3


def test_save_job_refuses_without_asking_and_says_only_this_press(
    browser, clip, tmp_path, config_home
):
    """A job path Save job refuses anyway (not .json) is refused without asking "Replace
    it?"; the job line says only the last press's outcome (an earlier "not saved" stayed
    beside later, different errors)."""
    taken = tmp_path / "shot.json"
    taken.write_text("kept\n")
    frame = tmp_path / "frame.png"
    frame.write_bytes(b"a clip's frame")
    with _studio_page(browser, clip, tmp_path) as (_run, page):
        _prompt(page, *_centre(0))
        asked: list[str] = []
        answer = _answerer(asked)
        page.once("dialog", answer(False))
        page.fill("#job-path", str(taken))
        page.click("#save-job")
        page.wait_for_function("document.getElementById('job-result').textContent !== ''")
        assert "not saved" in page.text_content("#job-result") and len(asked) == 1
        page.on("dialog", answer(False))
        page.fill("#job-path", str(frame))
        page.click("#save-job")
        page.wait_for_function("!document.getElementById('problem').hidden")
        assert ".json" in _banner(page) and len(asked) == 1, asked
        assert page.text_content("#job-result") == ""
        assert frame.read_bytes() == b"a clip's frame"


def test_finishing_number_fields_send_only_what_the_studio_takes(
    browser, clip, tmp_path, config_home
):
    """Typing 1.5 in "fill holes px²" (whole numbers) sent it: a 400 banner, the field kept
    1.5, and after the next change that worked the banner went but the status still said
    "error: ...". Now nothing is sent while the field cannot be taken, leaving it makes it a
    whole number, and the status and banner clear together."""
    with _studio_page(browser, clip, tmp_path) as (run, page):
        field = "#finishing [data-key=fill_holes_px2]"
        refines: list[str] = []
        page.on("request", lambda r: r.url.endswith("/api/refine") and refines.append(r.url))
        page.fill(field, "1.5")
        page.wait_for_timeout(300)
        assert refines == [] and "whole number" in _status(page), _status(page)
        assert _banner(page) is None
        page.press(field, "Tab")
        page.wait_for_function("document.body.dataset.refined !== undefined")
        assert page.input_value(field) == "2"
        assert run.studio.config.refine.fill_holes_px2 == 2 and len(refines) == 1
        # a failure, then a change that works: the banner and the status's error both go
        page.fill("#range-end", "2.5")
        page.click("#render")
        page.wait_for_function("!document.getElementById('problem').hidden")
        assert "whole frame number" in _banner(page) and _status(page).startswith("error")
        page.fill(field, "3")
        page.wait_for_function("window.vosfx.state.refine.fill_holes_px2 === 3")
        assert _banner(page) is None and not _status(page).startswith("error"), _status(page)


def test_a_dropped_file_that_is_not_an_image_says_which_and_what(
    browser, clip, tmp_path, config_home
):
    """Dropping a text file said "not an image PIL can read: cannot identify image file
    <_io.BytesIO object at 0x...>"; now it names the file and asks for a mask image."""
    with _studio_page(browser, clip, tmp_path) as (run, page):
        data = page.evaluate_handle(
            """() => { const dt = new DataTransfer();
            dt.items.add(new File(['just notes'], 'notes.txt', {type: 'text/plain'}));
            return dt; }"""
        )
        page.dispatch_event("#viewer", "drop", {"dataTransfer": data})
        page.wait_for_function("!document.getElementById('problem').hidden")
        text = _banner(page)
        assert '"notes.txt" is not an image' in text and "mask image" in text, text
        assert "BytesIO" not in text and run.studio.edits == {}


def test_a_frame_is_named_by_the_sources_timecode_and_file(browser, tmp_path, config_home):
    """The frame label and the timeline's hover give the source's own timecode moved by the
    position (drop-frame as vosfx/io/timecode.py counts it, which the outputs carry) and a
    numbered plate's file name, gaps included; before, every clip counted from 00:00:00:00."""
    from dataclasses import replace
    from fractions import Fraction

    from vosfx.io.timecode import offset
    from vosfx.presets import resolve_config
    from vosfx.studio.state import Studio

    clip = make_clip(tmp_path / "cam.mp4", n=N, width=W, height=H, fps=Fraction(30000, 1001))

    def load():
        st = Studio(
            str(clip), engine=FakeEngine(), config=resolve_config((), {}), workdir=tmp_path / "w"
        )
        st.info = replace(st.info, timecode="00:09:59;28")  # a camera's, drop-frame
        st.add_object()
        return st

    run = Running(clip, tmp_path / "w", load=load)
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-ready='1']")
        assert page.text_content("#frame-label").endswith("00:09:59;28")
        page.keyboard.press("ArrowRight")
        page.wait_for_function("document.getElementById('frame-label').textContent.endsWith(';29')")
        page.keyboard.press("ArrowRight")  # 00:10:00;00: the tenth minute drops nothing
        page.wait_for_function(
            "document.getElementById('frame-label').textContent.endsWith('00:10:00;00')"
        )
        for tc, fps in [
            ("00:09:59;28", 30000 / 1001),
            ("23:59:59;58", 60000 / 1001),
            ("10:00:00:00", 25.0),
            ("01:00:00:00", 24000 / 1001),
        ]:
            page.evaluate(f"S.clip.timecode = {tc!r}; S.clip.fps = {fps}")
            for t in (0, 1, 2, 3, 1798, 1799, 1800, 17981, 17982, 17983, 107892, 5_000_000):
                expected = offset(tc, t, Fraction(fps).limit_denominator(1001))
                assert page.evaluate(f"timecode({t})") == expected, (tc, t)
    finally:
        page.close()
        run.close()

    plate = tmp_path / "plate"
    plate.mkdir()
    for n in [*range(1001, 1006), *range(1008, 1011)]:  # 1006-1007 missing
        Image.fromarray(np.full((H, W, 3), n % 256, np.uint8)).save(plate / f"shot.{n}.png")
    run = Running(plate / "shot.%04d.png", tmp_path / "w2")
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-ready='1']")
        label = page.text_content("#frame-label")
        assert "shot.1001.png" in label and label.endswith("00:00:41:17"), label  # 1001 at 24
        page.keyboard.press("Shift+ArrowRight")  # past the end: the last frame, position 7
        page.wait_for_function(
            "document.getElementById('frame-label').textContent.includes('shot.1010.png')"
        )
        names = page.evaluate("[0, 4, 5, 6, 7].map(fileName)")
        assert names == [
            "shot.1001.png",
            "shot.1005.png",
            "shot.1008.png",
            "shot.1009.png",
            "shot.1010.png",
        ]
    finally:
        page.close()
        run.close()


def test_the_selected_object_alone_in_the_view(browser, clip, tmp_path, config_home):
    """ "selected object only": every view shows the selected object's plane alone, and it
    follows the selection (1-9, a click on the list)."""
    run = Running(clip, tmp_path / "work")
    _x0, y0, x1, y1 = square_box(0, W, H)
    one, two = _centre(0), (min(W - 3, x1 + 15), (y0 + y1) / 2)
    run.request("/api/click", {"obj_id": 1, "frame": 0, "x": one[0], "y": one[1]})
    run.request("/api/objects", {"op": "add"})
    run.request("/api/click", {"obj_id": 2, "frame": 0, "x": two[0], "y": two[1]})
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.set_default_timeout(PAGE_TIMEOUT_MS)

    def shown(check, solo):  # the matte of frame 0 once drawn with that object alone ("": all)
        check()
        page.wait_for_function(
            "document.getElementById('canvas').dataset.view === 'matte' && "
            f"document.getElementById('canvas').dataset.solo === '{solo}'"
        )
        # beside the clicks (their markers are drawn over them)
        return _canvas_pixel(page, one[0], one[1] + 8)[0], _canvas_pixel(page, two[0], two[1] + 8)[
            0
        ]

    try:
        page.goto(run.url)
        page.wait_for_selector("body[data-ready='1']")
        a, b = shown(lambda: page.select_option("#view", "matte"), "")
        assert a > 200 and b > 200
        a, b = shown(lambda: page.check("#solo"), "1")  # object 1 selected
        assert a > 200 and b < 50
        a, b = shown(lambda: page.keyboard.press("2"), "2")
        assert a < 50 and b > 200
        a, b = shown(lambda: page.click("#objects li[data-obj='1'] .name"), "1")
        assert a > 200 and b < 50
        a, b = shown(lambda: page.uncheck("#solo"), "")
        assert a > 200 and b > 200
    finally:
        page.close()
        run.close()


def test_unsaved_changes_are_marked_and_ctrl_s_saves(browser, clip, tmp_path, config_home):
    """A change since the job was last saved puts a dot in the tab's title and on Save job;
    Ctrl+S saves the job (the browser's "Save page as" is not opened) and the dot goes; a
    finishing change brings it back."""
    with _studio_page(browser, clip, tmp_path) as (run, page):
        assert not page.title().startswith("●")
        _prompt(page, *_centre(0))
        page.wait_for_function("document.title.startsWith('● vosfx studio — clip.mp4')")
        assert "unsaved" in page.get_attribute("#save-job", "class")
        page.keyboard.press("Control+s")
        page.wait_for_function("document.body.dataset.saved !== undefined")
        saved = page.evaluate("document.body.dataset.saved")
        assert saved == str(tmp_path / "clip_vosfx_job.json") and Path(saved).is_file()
        page.wait_for_function("!document.title.startsWith('●')")
        assert "unsaved" not in (page.get_attribute("#save-job", "class") or "")
        page.fill("#finishing [data-key='fill_holes_px2']", "30")
        page.keyboard.press("Tab")  # the field left: sent
        page.wait_for_function("document.title.startsWith('●')")
        assert not run.studio.recovered_job


def test_track_to_here_from_the_page(browser, clip, tmp_path, config_home):
    with _studio_page(browser, clip, tmp_path) as (run, page):
        _prompt(page, *_centre(0))
        page.evaluate("showFrame(5)")
        page.wait_for_function("document.getElementById('canvas').dataset.frame === '5'")
        page.click("#track-here")
        page.wait_for_function("document.body.dataset.tracking === '0'")
        run.wait_idle(60)
        session = run.studio.session
        assert all(session.has_result(t) for t in range(6)) and not session.has_result(6)


def test_track_and_render_say_their_rate_and_time_left(browser, clip, tmp_path, config_home):
    """While a track or render runs the status says frames done, the rate and the time left
    (measured from its second frame)."""

    def slow(frame_index, obj_id, base):
        import time

        time.sleep(0.05)
        return base

    with _studio_page(browser, clip, tmp_path, engine=FakeEngine(logit_fn=slow)) as (_run, page):
        assert page.evaluate("progressText('tracking', 45, 289, 0.29)") == (
            "tracking 45/289 frames, 0.29 frames/s, about 14 min left"
        )
        assert page.evaluate("progressText('rendering', 10, 100, 12.5)") == (
            "rendering 10/100 frames, 12.5 frames/s, about 8 s left"
        )
        assert page.evaluate("progressText('tracking', 1, 20000, 0.25)").endswith("22.2 h left")
        _prompt(page, *_centre(0))
        page.click("#track")
        page.wait_for_function(
            "/^tracking \\d+\\/39 frames, [\\d.]+ frames\\/s, about \\d+ s left$/"
            ".test(document.getElementById('status').textContent)"
        )
        page.wait_for_function("document.body.dataset.tracking === '0'")


def test_jump_to_where_the_object_is_lost_or_found(browser, clip, tmp_path, config_home):
    """{ and }: the selected object's previous / next frame where tracking lost or found it
    again (the timeline's presence runs)."""

    def hidden(t, obj, base):  # the object absent on frames 10-14
        return -np.abs(base) - 1.0 if 10 <= t <= 14 else base

    with _studio_page(browser, clip, tmp_path, engine=FakeEngine(logit_fn=hidden)) as (run, page):
        _prompt(page, *_centre(0))
        page.click("#track")
        page.wait_for_function("document.body.dataset.tracking === '0'")
        run.wait_idle(60)
        page.wait_for_function(
            "window.vosfx.state.timeline && window.vosfx.state.timeline.objects[0].presence"
            ".length === 3"
        )
        label = "document.getElementById('canvas').dataset.frame === '{}'"
        for key, frame in (("}", 10), ("}", 15), ("{", 10)):
            page.keyboard.press(key)
            page.wait_for_function(label.format(frame))
        page.keyboard.press("{")
        page.wait_for_function(
            "document.getElementById('status').textContent === "
            "'object 1 is not lost or found before frame 10'"
        )


def test_the_page_says_the_model_download(browser, clip, tmp_path):
    """A first run's model download, as the page shows it while the studio loads."""
    import os
    import signal

    from tests.studio_helpers import start_cli

    env = dict(os.environ, VOSFX_HOME=str(tmp_path / "home"), VOSFX_FAKE_DOWNLOAD_S="4")
    proc, url = start_cli([str(clip)], env)
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(url)
        page.wait_for_function(
            "/^downloading [^:]+: [\\d.]+ \\/ 100\\.0 MiB$/"
            ".test(document.getElementById('status').textContent)"
        )
        page.wait_for_selector("body[data-ready='1']")
    finally:
        page.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_paint_the_mask_by_hand_and_apply_it(browser, clip, tmp_path, config_home):
    """Paint starts from the object's mask on the frame (as the engine gave it); a drag adds,
    a right-drag erases; Apply makes it the frame's mask prompt (a dropped mask's path), and
    Esc or Cancel leaves everything as it was."""
    with _studio_page(browser, clip, tmp_path) as (run, page):
        cx, cy = _centre(0)
        _prompt(page, cx, cy)
        before = dict(run.studio.edits)
        page.click("#paint")
        page.wait_for_selector("#paint-bar", state="visible")
        page.keyboard.press("Escape")  # nothing changes
        page.wait_for_selector("#paint-bar", state="hidden")
        assert run.studio.edits == before
        page.click("#paint")
        page.wait_for_selector("#paint-bar", state="visible")
        page.fill("#brush", "6")
        page.mouse.move(*_screen(page, 120, 100))
        page.mouse.down()
        page.mouse.move(*_screen(page, 150, 100), steps=8)
        page.mouse.up()
        page.mouse.move(*_screen(page, cx, cy))
        page.mouse.down(button="right")
        page.mouse.up(button="right")
        page.evaluate("window.vosfx.last = null")
        page.click("#paint-apply")
        page.wait_for_function("window.vosfx.last && window.vosfx.last.drawnMs !== undefined")
        mask_file = run.studio.edits[(1, 0)].mask
        assert mask_file is not None
        mask = np.asarray(Image.open(mask_file)) > 127
        assert mask.shape == (H, W)
        assert mask[100, 120:151].all() and not mask[100, 160 - 3 :].any()  # the stroke
        assert not mask[int(cy), int(cx)]  # erased where the click was
        assert mask[int(cy), int(cx) + 12]  # the rest of the engine's mask kept
        assert page.is_hidden("#paint-bar")

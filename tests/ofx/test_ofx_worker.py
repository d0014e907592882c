"""The OFX worker process spoken to directly over its channel (vosfx/ofx/protocol.py), as the
effect would: a socket pair and a memfd (the POSIX effect), or a connection to 127.0.0.1 with a
token and a shared file (the Windows effect), the real ``python -m vosfx.ofx.worker`` with the
drifting FakeEngine (ofx_fakes.py). These are the messages a host can cause that the scripted
C host (test_ofx.py) does not send: out of order, malformed, frames of another size, points
removed, the Model changed, the Mask emptied or disconnected, the channel closed mid-render.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media import moving_square_frame
from ofx_harness import HERE, H, N, W

from vosfx.ofx import protocol as P

CONFIG = {"clip": {"width": W, "height": H, "frames": N, "fps": 24}, "mask_obj": 1}
CLICK = [0, 1, 1, 8.0, 8.0]  # frame, obj, label, x, y: inside the square on frame 0


class Effect:
    """The effect's end of one worker: ``send``/``recv`` as the C side does them, frames from
    the moving-square clip (or ``frame``) answered to every NEED, its log and scratch folder
    under ``tmp``."""

    def __init__(
        self, tmp: Path, *, env: dict | None = None, transport: str = "fds", idle_s: float = 0
    ) -> None:
        self.tmp = tmp
        self.log_path = tmp / "worker.log"
        full_env = {**os.environ, "PYTHONPATH": str(HERE), "TMPDIR": str(tmp)}
        # 0: no preparation between messages (deterministic), unless a test asks for it
        full_env["VOSFX_OFX_IDLE_S"] = str(idle_s)
        engine = ("--engine", "ofx_fakes:make_engine")
        worker = [sys.executable, "-m", "vosfx.ofx.worker"]
        with self.log_path.open("wb") as log:
            if transport == "fds":
                ours, theirs = socket.socketpair()
                shm = os.memfd_create("vosfx-test-shm")
                os.ftruncate(shm, 1 << 16)
                self.proc = subprocess.Popen(
                    [*worker, "--fd", str(theirs.fileno()), "--shm-fd", str(shm), *engine],
                    pass_fds=(theirs.fileno(), shm),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env={**full_env, **(env or {})},
                )
                theirs.close()
            else:  # as vosfx_worker_win.c: a port, a token, a file in the worker's folder
                folder = tmp / "effect-folder"
                folder.mkdir()
                shm = os.open(folder / "frames.shm", os.O_RDWR | os.O_CREAT, 0o600)
                os.ftruncate(shm, 1 << 16)
                listener = socket.create_server(("127.0.0.1", 0))
                self.token = secrets.token_hex(32)
                full_env["VOSFX_OFX_TOKEN"] = self.token
                port = str(listener.getsockname()[1])
                self.proc = subprocess.Popen(
                    [*worker, "--connect", port, "--shm-file", "frames.shm", *engine],
                    cwd=folder,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env={**full_env, **(env or {})},
                )
                listener.settimeout(60)
                ours, _addr = listener.accept()
                listener.close()
                ours.settimeout(60)
                said = b""
                while len(said) < 65 and (chunk := ours.recv(65 - len(said))):
                    said += chunk
                assert said == self.token.encode() + b"\n", said
                ours.settimeout(None)
        self.ch = P.Channel(ours, shm)
        self.fetched: list[int] = []
        ready = self.ch.recv()
        assert ready.type == P.READY, ready

    def send(self, mtype: int, body: dict | str | bytes = b"", **fields) -> None:
        if isinstance(body, dict):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        header = dict.fromkeys(("frame", "a", "b", "width", "height", "format", "shm_bytes"), 0)
        header.update(fields)
        self.ch.sock.sendall(
            P.HEADER.pack(
                P.MAGIC,
                mtype,
                header["frame"],
                header["a"],
                header["b"],
                header["width"],
                header["height"],
                header["format"],
                len(data),
                0,
                header["shm_bytes"],
            )
            + data
        )

    def ask(self, mtype: int, body: dict | str | bytes = b"", **fields) -> P.Message:
        self.send(mtype, body, **fields)
        return self.ch.recv()

    def put_frame(self, k: int, rgb: np.ndarray, mask: np.ndarray | None = None) -> None:
        """FRAME k: (h, w, 3) uint8 RGB and the optional (h, w) uint8 Mask plane."""
        h, w = rgb.shape[:2]
        data = rgb.tobytes() + (b"" if mask is None else mask.astype(np.uint8).tobytes())
        if os.fstat(self.ch.shm_fd).st_size < len(data):
            os.ftruncate(self.ch.shm_fd, len(data))
        os.pwrite(self.ch.shm_fd, data, 0)
        fields = {"width": w, "height": h, "format": P.FMT_RGB8, "shm_bytes": len(data)}
        self.send(P.FRAME, frame=k, a=int(mask is not None), **fields)

    def render(self, t: int, *, width=W, height=H, obj=0, mask=None, frame=None) -> P.Message:
        """RENDER t, every NEED answered with the clip's frame at ``width`` x ``height`` (and
        ``mask(k)``'s plane); the final answer (MATTE, ERROR, CANCELLED)."""
        self.send(P.RENDER, frame=t, a=int(mask is not None), b=obj, width=width, height=height)
        return self.answer(width=width, height=height, mask=mask, frame=frame)

    def answer(self, *, width=W, height=H, mask=None, frame=None) -> P.Message:
        """Every NEED of the render under way answered (as :meth:`render`); its final answer."""
        while True:
            msg = self.ch.recv()
            if msg.type == P.PROGRESS:
                continue
            if msg.type != P.NEED:
                return msg
            self.fetched.append(msg.frame)
            rgb = moving_square_frame(msg.frame, W, H)[0] if frame is None else frame(msg.frame)
            if (width, height) != (W, H):
                import cv2

                rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            self.put_frame(msg.frame, rgb, None if mask is None else mask(msg.frame))

    def alpha(self, msg: P.Message) -> np.ndarray:
        """A MATTE's (h, w) float32 alpha."""
        assert msg.type == P.MATTE and msg.format == P.FMT_ALPHA_F32, (msg, self.log())
        buf = os.pread(self.ch.shm_fd, msg.shm_bytes, 0)
        return np.frombuffer(buf, np.float32).reshape(msg.height, msg.width).copy()

    def quit(self) -> int:
        self.send(P.QUIT)
        return self.wait()

    def wait(self) -> int:
        code = self.proc.wait(timeout=60)
        self.ch.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def scratch(self) -> list[Path]:
        return sorted(self.tmp.glob("vosfx-ofx-worker-*"))


def _started(tmp_path: Path, transport: str = "fds"):
    eff = Effect(tmp_path, transport=transport)
    yield eff
    if eff.proc.poll() is None:
        eff.proc.kill()
        eff.proc.wait()


@pytest.fixture
def effect(tmp_path):
    yield from _started(tmp_path)


@pytest.fixture(params=["fds", "tcp"])
def either(request, tmp_path):
    """An effect over the POSIX effect's channel, and one over the Windows effect's (run here
    on Linux)."""
    yield from _started(tmp_path, request.param)


def _ended_cleanly(effect: Effect, code: int, expect: int = 0) -> None:
    """The worker exited with ``expect``, logged no traceback, and left no scratch folder."""
    log = effect.log()
    assert code == expect, log
    assert "Traceback" not in log, log
    assert effect.scratch() == [], log


def test_a_render_matte_and_quit_leave_nothing(either):
    """The baseline the other tests vary: CONFIG, PROMPTS, RENDER (NEEDs answered), QUIT;
    over either channel."""
    effect = either
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    assert effect.ask(P.PROMPTS, {"points": [CLICK]}).type == P.OK
    alpha = effect.alpha(effect.render(2))
    assert alpha.shape == (H, W) and alpha.max() > 0.99 and alpha.min() < 0.01
    assert effect.fetched == [0, 1, 2]
    _ended_cleanly(effect, effect.quit())


@pytest.mark.parametrize(
    "args,env,said",
    [
        (["--connect", "1", "--shm-file", "frames.shm"], {}, "VOSFX_OFX_TOKEN: expected the 64"),
        (["--connect", "1", "--shm-file", "frames.shm"], {"VOSFX_OFX_TOKEN": "ab"}, "64 hex"),
        (["--connect", "1", "--shm-file", "gone.shm"], {"VOSFX_OFX_TOKEN": "a" * 64}, "gone.shm"),
        (["--fd", "3", "--connect", "1"], {}, "expected --fd and --shm-fd, or --connect"),
        ([], {}, "expected --fd and --shm-fd, or --connect and --shm-file"),
    ],
)
def test_a_worker_started_wrongly_says_so_and_exits_2(tmp_path, args, env, said):
    """Arguments no effect gives (a missing or malformed token, a shared file that is not
    there, the two channels mixed, none): exit 2 and one line naming what is wrong."""
    (tmp_path / "frames.shm").write_bytes(b"\0" * 4096)
    environ = {k: v for k, v in os.environ.items() if k != "VOSFX_OFX_TOKEN"}
    proc = subprocess.run(
        [sys.executable, "-m", "vosfx.ofx.worker", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "send,said",
    [
        (lambda e: e.send(P.RENDER, frame=0, width=W, height=H), "RENDER before CONFIG"),
        (lambda e: e.send(99), "unexpected message type 99"),
        (lambda e: e.ch.sock.sendall(b"\0" * P.HEADER.size), "expected magic"),
    ],
)
def test_a_message_out_of_order_ends_the_worker_cleanly(effect, send, said):
    """What the protocol does not allow (a RENDER before any CONFIG, an unknown type, a header
    without the magic): the two sides disagree, so the worker ends, with exit status 2 and
    the reason as its log's last line (what the effect shows), no traceback, no scratch."""
    send(effect)
    code = effect.wait()
    _ended_cleanly(effect, code, 2)
    assert said in effect.log().strip().splitlines()[-2], effect.log()  # then its stats


def test_the_effect_closing_the_channel_ends_the_worker_cleanly(either):
    """A host that ends without QUIT (a crash): the worker sees the channel close and ends,
    exit 0, its scratch folder removed; over either channel."""
    effect = either
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    effect.ch.sock.shutdown(socket.SHUT_WR)
    _ended_cleanly(effect, effect.wait())


def test_the_channel_closed_while_a_frame_is_needed_ends_the_worker_cleanly(effect):
    """The host goes away while the worker waits for a FRAME (a crash mid-render): no
    "worker error" traceback in the log, no scratch folder left."""
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    assert effect.ask(P.PROMPTS, {"points": [CLICK]}).type == P.OK
    effect.send(P.RENDER, frame=3, width=W, height=H)
    while effect.ch.recv().type != P.NEED:
        pass
    effect.ch.sock.shutdown(socket.SHUT_WR)
    code = effect.wait()
    _ended_cleanly(effect, code, 0)
    assert "worker error" not in effect.log()


@pytest.mark.parametrize(
    "answer,said",
    [
        (lambda e, k: e.send(P.FRAME, frame=k + 1), "expected FRAME 0, found type 4 frame 1"),
        (lambda e, k: e.send(P.OK, frame=k), "expected FRAME 0, found type 102"),
        (
            lambda e, k: e.send(P.FRAME, frame=k, width=W, height=H, format=7),
            "FRAME 0: format 7",
        ),
        (
            lambda e, k: e.send(P.FRAME, frame=k, width=W, height=H, format=P.FMT_RGB8),
            f"FRAME 0: 0 bytes for {W * H * 3}",
        ),
        (
            lambda e, k: e.send(
                P.FRAME, frame=k, width=4096, height=4096, format=P.FMT_RGB8, shm_bytes=4096**2 * 3
            ),
            "shared memory: need",
        ),
    ],
)
def test_a_wrong_answer_to_need_ends_the_worker_with_the_reason(effect, answer, said):
    """NEED k answered with another frame, another message, a pixel format it does not know,
    fewer bytes than the frame's, or more than the shared memory holds."""
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    assert effect.ask(P.PROMPTS, {"points": [CLICK]}).type == P.OK
    effect.send(P.RENDER, frame=0, width=W, height=H)
    while (msg := effect.ch.recv()).type != P.NEED:
        pass
    answer(effect, msg.frame)
    code = effect.wait()
    _ended_cleanly(effect, code, 2)
    assert said in effect.log(), effect.log()


def test_text_that_is_not_utf8_is_an_error_and_the_worker_goes_on(effect):
    reply = effect.ask(P.CONFIG, b'{"model": {"name": "sam\xff"}}')
    assert reply.type == P.ERROR and "expected UTF-8 text" in reply.text
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    _ended_cleanly(effect, effect.quit())


@pytest.mark.parametrize(
    "mtype,body,said",
    [
        (P.PROMPTS, {"points": None}, "points: expected a list of [frame, obj, label, x, y]"),
        (P.PROMPTS, {"points": 5}, "points: expected a list of [frame, obj, label, x, y]"),
        (P.PROMPTS, {"points": [{"frame": 0}]}, "points: expected [frame, obj, label, x, y]"),
        (P.CONFIG, {**CONFIG, "mask_obj": "x"}, "CONFIG mask_obj: expected an integer"),
        (P.CONFIG, {**CONFIG, "cache_mb": [1]}, "CONFIG cache_mb: expected an integer"),
        (
            P.CONFIG,
            {"clip": {**CONFIG["clip"], "fps": "0"}},
            "CONFIG clip: expected a positive fps",
        ),
        (
            P.CONFIG,
            {"clip": {**CONFIG["clip"], "fps": "-24"}},
            "CONFIG clip: expected a positive fps",
        ),
        (P.CONFIG, {"clip": {**CONFIG["clip"], "fps": "x"}}, "CONFIG clip: expected width"),
    ],
)
def test_a_malformed_message_is_an_error_that_names_the_field(effect, mtype, body, said):
    """JSON the worker cannot take is a refusal naming what was expected (no "worker error"
    with a traceback in the log), and the worker goes on."""
    reply = effect.ask(mtype, body)
    assert reply.type == P.ERROR and reply.text.startswith(said), reply.text
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    _ended_cleanly(effect, effect.quit())


def test_a_frame_outside_the_clip_is_an_error_and_the_worker_goes_on(effect):
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    assert effect.ask(P.PROMPTS, {"points": [CLICK]}).type == P.OK
    for t in (N, -1):
        reply = effect.render(t)
        assert reply.type == P.ERROR, reply
        assert reply.text == f"frame {t} is outside the clip (0..{N - 1})"
    assert effect.render(1).type == P.MATTE
    _ended_cleanly(effect, effect.quit())


def _fresh_alpha(tmp: Path, points: list, t: int, **render) -> np.ndarray:
    """Frame ``t``'s alpha from a new worker given only ``points``."""
    tmp.mkdir()
    other = Effect(tmp)
    try:
        assert other.ask(P.CONFIG, CONFIG).type == P.OK
        assert other.ask(P.PROMPTS, {"points": points}).type == P.OK
        alpha = other.alpha(other.render(t, **render))
        _ended_cleanly(other, other.quit())
    finally:
        if other.proc.poll() is None:
            other.proc.kill()
    return alpha


def test_points_removed_after_tracking_give_the_matte_of_the_points_left(effect, tmp_path):
    """Tracked with two objects and a correction on frame 4, then object 2's points and the
    correction removed (Ctrl+click): the session deletes the object and the prompt, and the
    matte is a fresh worker's for the point left, not what was tracked before."""
    two = [CLICK, [0, 2, 1, 60.0, 40.0], [4, 1, 0, 20.0, 20.0]]
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    assert effect.ask(P.PROMPTS, {"points": two}).type == P.OK
    before = effect.alpha(effect.render(6))
    assert effect.ask(P.PROMPTS, {"points": [CLICK]}).type == P.OK
    after = effect.alpha(effect.render(6))
    only_2 = effect.alpha(effect.render(6, obj=2))
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, _fresh_alpha(tmp_path / "fresh", [CLICK], 6))
    assert only_2.max() == 0  # object 2 is gone
    _ended_cleanly(effect, effect.quit())


def test_an_object_added_before_the_tracked_frames_is_tracked_alone(effect, tmp_path):
    """Tracked to frame 8, then an object added on frame 3 and frame 5 rendered: the sweep
    cannot go back, so a new one starts at frame 0 (the new object's lead-in, tracked
    backwards from frame 3, needs frames 0 to 2), and it tracks the new object alone (frames
    0 to 5: six results), not the first again; the matte is a fresh worker's."""
    second = [3, 2, 1, 60.0, 40.0]
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    assert effect.ask(P.PROMPTS, {"points": [CLICK]}).type == P.OK
    assert effect.render(8).type == P.MATTE
    assert effect.fetched == list(range(9))
    assert effect.ask(P.PROMPTS, {"points": [CLICK, second]}).type == P.OK
    alpha = effect.alpha(effect.render(5))
    assert effect.fetched[9:] == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(alpha, _fresh_alpha(tmp_path / "fresh", [CLICK, second], 5))
    assert effect.alpha(effect.render(5, obj=2)).max() > 0.99  # object 2 is there
    _ended_cleanly(effect, effect.quit())
    stats = json.loads(effect.log().split("stats: ", 1)[1].splitlines()[0])
    assert stats["tracked"] == 9 + 6, stats  # object 1 on frames 0-8, object 2 on 0-5


def test_another_model_reloads_the_engine_between_renders(effect):
    """The Model changed after a render: the engine is closed and the new one loaded (the
    effect shows "loading ..."), the matte made again."""
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    assert effect.ask(P.PROMPTS, {"points": [CLICK]}).type == P.OK
    first = effect.alpha(effect.render(2))
    assert effect.ask(P.CONFIG, {**CONFIG, "model": {"name": "sam2.1-small"}}).type == P.OK
    effect.send(P.RENDER, frame=2, width=W, height=H)
    loading = effect.ch.recv()
    assert loading.type == P.PROGRESS and loading.text == "loading sam2.1-small"
    effect.fetched.clear()
    reply = effect.answer()
    np.testing.assert_array_equal(effect.alpha(reply), first)  # the same FakeEngine
    assert effect.fetched == [0, 1, 2]  # tracked again with the new engine
    _ended_cleanly(effect, effect.quit())


def test_proxy_frames_give_a_proxy_matte_and_full_size_tracks_again(effect, tmp_path):
    """A render at half scale: frames come at half size and the matte goes back at half size;
    the full-size render after it tracks again on full-size frames (a delivery is never made
    from upscaled proxy frames) and equals a fresh worker's."""
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    assert effect.ask(P.PROMPTS, {"points": [CLICK]}).type == P.OK
    half = effect.alpha(effect.render(3, width=W // 2, height=H // 2))
    assert half.shape == (H // 2, W // 2) and half.max() > 0.99
    effect.fetched.clear()
    full = effect.alpha(effect.render(3))
    assert effect.fetched == [0, 1, 2, 3]
    np.testing.assert_array_equal(full, _fresh_alpha(tmp_path / "fresh", [CLICK], 3))
    _ended_cleanly(effect, effect.quit())


def _square_mask(k: int) -> np.ndarray:
    return moving_square_frame(k, W, H)[1].astype(np.uint8) * 255


def test_a_mask_emptied_or_disconnected_leaves_no_object(effect):
    """The Mask clip prompts on its non-empty frame; painted out (empty) on that frame, or
    disconnected, nothing is selected: an empty matte, and the effect says why."""
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    painted = effect.render(0, mask=_square_mask)
    assert effect.alpha(painted).max() > 0.99
    empty = effect.render(0, mask=lambda k: np.zeros((H, W), np.uint8))
    assert empty.type == P.MATTE and empty.format == P.FMT_NONE
    assert empty.text.startswith("no object is selected yet: click the object on the viewer")
    assert effect.alpha(effect.render(0, mask=_square_mask)).max() > 0.99
    gone = effect.render(0)  # the Mask disconnected
    assert gone.type == P.MATTE and gone.format == P.FMT_NONE and gone.text == ""
    _ended_cleanly(effect, effect.quit())


def test_abort_while_a_frame_is_needed_is_cancelled_and_the_next_render_works(effect):
    assert effect.ask(P.CONFIG, CONFIG).type == P.OK
    assert effect.ask(P.PROMPTS, {"points": [CLICK]}).type == P.OK
    effect.send(P.RENDER, frame=4, width=W, height=H)
    while (msg := effect.ch.recv()).type != P.NEED:
        pass
    effect.send(P.ABORT)
    reply = effect.ch.recv()
    assert reply.type == P.CANCELLED
    assert reply.text == f"the host cancelled the render while frame {msg.frame} was needed"
    assert effect.alpha(effect.render(4)).max() > 0.99
    _ended_cleanly(effect, effect.quit())


def test_scratch_removes_dead_workers_folders_and_nothing_else(tmp_path):
    """A new worker removes this user's dead workers' folders on this machine; a live pid's
    folder, another machine's, a file or a link of that name, and what a link points to stay.
    A folder of its own pid left by a dead worker is made afresh; its own is removed at exit."""
    import tempfile

    from vosfx.files import HOST_ID
    from vosfx.ofx.scratch import PREFIX, WorkerScratch

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        name = f"{PREFIX}{HOST_ID}-%d"
        dead = tmp_path / (name % gone.pid)
        (dead / "vosfx-session-x").mkdir(parents=True)
        kept = [tmp_path / (name % live.pid), tmp_path / f"{PREFIX}otherhost-{gone.pid}"]
        for folder in kept:
            folder.mkdir()
        target = tmp_path / "target"
        target.mkdir()
        link = tmp_path / (name % (gone.pid + 100000))
        link.symlink_to(target)
        afile = tmp_path / (name % (gone.pid + 200000))
        afile.write_text("not a folder")
        own = tmp_path / (name % os.getpid())
        own.mkdir()
        (own / "stale").write_text("a dead worker's of this pid")
        with WorkerScratch(tmp_path) as scratch:
            assert scratch.path == own and tempfile.gettempdir() == str(own)
            assert list(own.iterdir()) == []
            assert not dead.exists()
            assert all(p.is_dir() for p in kept) and link.is_symlink() and target.is_dir()
            assert afile.is_file()
        assert not own.exists() and tempfile.gettempdir() != str(own)
    finally:
        live.kill()
        live.wait()


def test_scratch_in_a_missing_temporary_folder_falls_back_to_the_default(tmp_path, caplog):
    import tempfile

    from vosfx.ofx.scratch import WorkerScratch

    before = tempfile.gettempdir()
    with WorkerScratch(tmp_path / "missing") as scratch:
        assert scratch.path is None and tempfile.gettempdir() == before
    assert "no scratch folder in" in caplog.text and "using the default" in caplog.text


@pytest.mark.parametrize(
    "case,renders,prepared",
    [
        ("kept", [4], 1),  # the frame just tracked: prepared from what the worker keeps
        ("far", [11, 2], 0),  # frame 2 again after 11: its frames are gone, nothing asked
        ("fails", [4], 0),
    ],
)
def test_the_idle_preparation_asks_nothing_and_a_failure_of_it_is_logged(
    tmp_path, case, renders, prepared
):
    """Between renders, once nothing came for VOSFX_OFX_IDLE_S, the worker prepares the frame
    shown for a point from what it keeps: it sends nothing (no NEED: the host is not
    rendering; where the frames it would need are no longer kept it prepares nothing) and the
    next render is served; a preparation that fails is a logged warning with its traceback,
    never an error to the effect or the end of the worker."""
    env = {"VOSFX_FAKE_PREPARE_FAIL": "1"} if case == "fails" else {}
    effect = Effect(tmp_path, env=env, idle_s=0.2)
    try:
        assert effect.ask(P.CONFIG, CONFIG).type == P.OK
        assert effect.ask(P.PROMPTS, {"points": [CLICK]}).type == P.OK
        for t in renders:
            assert effect.render(t).type == P.MATTE
        assert not effect.ch.waiting(1.0)  # idle: prepared (or not) without a word
        fetched = list(effect.fetched)
        alpha = effect.alpha(effect.render(renders[-1] + 1))
        assert alpha.max() > 0.99
        assert len(effect.fetched) - len(fetched) <= 1  # only what the render needs
        code = effect.quit()
    finally:
        if effect.proc.poll() is None:
            effect.proc.kill()
            effect.proc.wait()
    log = effect.log()
    assert code == 0, log
    stats = json.loads(log.split("stats: ", 1)[1].splitlines()[0])
    assert stats["prepared"] == prepared, log
    if case == "fails":
        shown = renders[-1]
        assert f"preparing frame {shown} for a point failed" in log, log
        assert "the preparation broke" in log
    else:
        assert "Traceback" not in log, log

"""A studio server on a thread for tests: FakeEngine (or a given engine), a synthetic clip."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.fakes import FakeEngine
from vosfx.presets import resolve_config
from vosfx.studio.server import Control, bind, serve
from vosfx.studio.state import Studio

FAKE_VOSFX = [sys.executable, str(Path(__file__).resolve().parent / "bin" / "vosfx_fake.py")]


class Running:
    """A studio served on a free port until :meth:`close`."""

    def __init__(
        self,
        clip: Path,
        workdir: Path,
        *,
        engine=None,
        presets=("png16",),
        done_job: Path | None = None,
        load=None,
        start=0,
        end=None,
        warm_delay_s=0.4,
    ) -> None:
        self.engine = engine or FakeEngine()
        self.config = resolve_config(presets, {})
        sock = bind(0)
        self.ctl = Control(port=sock.getsockname()[1], done_job=done_job)
        workdir.mkdir(parents=True, exist_ok=True)

        def default_load():
            st = Studio(
                str(clip),
                engine=self.engine,
                config=self.config,
                presets=presets,
                start=start,
                end=end,
                workdir=workdir,
                warm_delay_s=warm_delay_s,
            )
            st.add_object()
            return st

        self.outcome: list[str] = []
        self.thread = threading.Thread(
            target=lambda: self.outcome.append(
                serve(self.ctl, sock, load or default_load, open_browser=False)
            ),
            daemon=True,
        )
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.ctl.port}"
        self.url = self.ctl.url
        deadline = time.monotonic() + 30
        while self.ctl.studio is None and self.ctl.error is None:
            if time.monotonic() > deadline:
                raise TimeoutError("studio did not load")
            time.sleep(0.02)
        self.studio = self.ctl.studio

    def request(
        self,
        path: str,
        body=None,
        *,
        token: str | None = "ok",
        headers=None,
        method=None,
        data: bytes | None = None,
    ):
        """(status, parsed JSON or bytes)."""
        h = dict(headers or {})
        if token == "ok":
            h["X-Vosfx-Token"] = self.ctl.token
        elif token is not None:
            h["X-Vosfx-Token"] = token
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as res:
                if path.startswith("/api/events"):  # a stream: its status is the answer
                    return res.status, b""
                status, raw, ctype = res.status, res.read(), res.headers.get("Content-Type")
        except urllib.error.HTTPError as err:
            status, raw, ctype = err.code, err.read(), err.headers.get("Content-Type")
        if ctype and "json" in ctype:
            return status, json.loads(raw)
        return status, raw

    def wait_idle(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.studio.busy:
            if time.monotonic() > deadline:
                raise TimeoutError("studio still busy")
            time.sleep(0.02)

    def close(self) -> None:
        self.ctl.should_exit()
        self.thread.join(30)


# --- `vosfx studio` as a process (the test-double engine: tests/bin/vosfx_fake.py) ----------


def popen_cli(args, env) -> subprocess.Popen:
    """`vosfx studio ARGS --no-browser` running, its output piped (text)."""
    return subprocess.Popen(
        FAKE_VOSFX + ["studio", *args, "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def start_cli(args, env):
    """A studio process serving (:func:`popen_cli`) and its page's address."""
    proc = popen_cli(args, env)
    line = proc.stdout.readline()
    assert line.startswith("vosfx studio: http://127.0.0.1:"), (line, proc.stderr.read())
    return proc, line.split(": ", 1)[1].strip()


def post(url, path, body):
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    token = parts.query.split("=", 1)[1]
    req = urllib.request.Request(
        f"{parts.scheme}://{parts.netloc}{path}",
        data=json.dumps(body).encode(),
        headers={"X-Vosfx-Token": token, "Content-Type": "application/json"},
    )
    for _ in range(200):
        with urllib.request.urlopen(req, timeout=30) as res:
            data = json.loads(res.read())
        return data
    return None


def page_state(url) -> dict:
    """What the page at ``url`` (a studio process's address) loads: /api/state."""
    with urllib.request.urlopen(url.replace("/?", "/api/state?"), timeout=30) as res:
        return json.loads(res.read())


def wait_ready(url) -> dict:
    """The state of the studio at ``url`` once its model is loaded."""
    for _ in range(300):
        state = page_state(url)
        if state.get("ready"):
            return state
        time.sleep(0.05)
    raise TimeoutError("studio not ready")

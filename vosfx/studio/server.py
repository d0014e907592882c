"""The studio's web server: the page, its JSON API and server-sent events, on 127.0.0.1 only.

Starlette on uvicorn (docs/studio.md says why). Every request carries the run's token (header
``X-Vosfx-Token``, or ``?token=`` where a browser cannot set headers: the page's own URL, its
images and the event stream); its Host must be this server's and an Origin, when sent, this
page's; anything else is 403. Only the page's three files are served; images are made from
the clip's frames; files are written only where the user asked (render outputs, a saved job)
and in the studio's folder under vosfx's cache.

The model loads on a thread after the server starts, so the page comes up at once and can say
what is wrong (a model file missing offline: which file to put where).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vosfx.errors import ConfigError, VosfxError
from vosfx.signals import on_terminate

LAST_CLIENT_GRACE_S = 15.0  # a closed page (no event stream) for this long ends the studio


class Hub:
    """Fan-out of events to every open event stream (thread-safe ``emit``). A stream ends
    when its queue yields None (:meth:`close`: the server is stopping)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queues: set[asyncio.Queue] = set()
        self.on_empty: Callable[[], None] = lambda: None
        self.last_seen = time.monotonic()
        self.closed = False

    def emit(self, event: dict) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        for q in list(self.queues):
            loop.call_soon_threadsafe(q.put_nowait, event)

    def add(self) -> asyncio.Queue:
        self.loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        if self.closed:  # a stream opened while the server stops ends at once
            q.put_nowait(None)
        self.queues.add(q)
        return q

    def close(self) -> None:
        """End every open stream now (called on the loop when the server starts to stop):
        uvicorn waits for open responses up to its graceful timeout, then cancels them with
        a traceback, so an open page made every exit (Done, Ctrl-C) ~2 s late and noisy."""
        self.closed = True
        for q in list(self.queues):
            q.put_nowait({"event": "ended"})
            q.put_nowait(None)

    def remove(self, q: asyncio.Queue) -> None:
        self.queues.discard(q)
        self.last_seen = time.monotonic()
        if not self.queues:
            self.on_empty()


class Control:
    """One studio server's state: the token, the studio once its model is loaded (or the
    error that stopped it), the Done job path for editor plugins."""

    def __init__(
        self,
        *,
        port: int,
        token: str | None = None,
        done_job: Path | None = None,
        frame: int | None = None,
    ) -> None:
        self.port = port
        self.token = token or secrets.token_urlsafe(24)
        self.done_job = done_job
        self.frame = frame
        self.studio: Any = None
        self.error: dict | None = None
        # while the model loads: a first run's download ({"message", "done", "total"} bytes)
        self.loading: dict | None = None
        self.hub = Hub()
        self.should_exit: Callable[[], None] = lambda: None
        self.outcome = "running"  # "done", "closed" (page gone), "interrupted"
        self._timer: threading.Timer | None = None
        self.hub.on_empty = self._client_gone

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def allowed_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    def _client_gone(self) -> None:
        """The last page closed: stop the work now (no partial output), end the studio if no
        page comes back within the grace time (a reload reconnects in well under it)."""
        if self.studio is not None:
            threading.Thread(target=self.studio.stop, daemon=True).start()
        if self._timer is not None:
            self._timer.cancel()

        def check() -> None:
            if not self.hub.queues and self.outcome == "running":
                self.outcome = "closed"
                self.should_exit()

        self._timer = threading.Timer(LAST_CLIENT_GRACE_S, check)
        self._timer.daemon = True
        self._timer.start()


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` (0: any free port); ConfigError when taken.

    On POSIX with SO_REUSEADDR: the studio closes its connections first, so they stay in
    TIME_WAIT for ~60 s after it ends, and without it the same ``--port`` was refused for
    that long. SO_REUSEADDR still refuses a port another socket listens on (SO_REUSEPORT,
    which would share it, is not used). On Windows SO_REUSEADDR would let a second studio
    take a live one's port, so there it is SO_EXCLUSIVEADDRUSE (TIME_WAIT does not block a
    bind there)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sys.platform == "win32":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as err:
        sock.close()
        raise ConfigError(
            f"port {port} on 127.0.0.1 is not available ({err.strerror}); "
            f"choose another with --port N (or --port 0 for any free one)"
        ) from None
    sock.listen(64)
    return sock


def create_app(ctl: Control):
    """The ASGI app: the routes of :mod:`vosfx.studio.routes` behind the :class:`Guard`."""
    from starlette.applications import Starlette

    from vosfx.studio.routes import job_routes, page_routes, prompt_routes, work_routes

    routes = [*page_routes(ctl), *prompt_routes(ctl), *work_routes(ctl), *job_routes(ctl)]
    return Guard(Starlette(routes=routes), ctl)


class Guard:
    """ASGI middleware: Host, Origin and token checks on every request (HTTP and stream)."""

    def __init__(self, app, ctl: Control) -> None:
        self.app, self.ctl = app, ctl

    async def __call__(self, scope, receive, send) -> None:
        refused = self._refusal(scope) if scope["type"] == "http" else None
        if refused is not None:
            from starlette.responses import PlainTextResponse

            await PlainTextResponse(refused, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope) -> str | None:
        """None for a request the studio takes, else the 403's text."""
        from urllib.parse import parse_qs

        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        host = headers.get("host") or ""
        if host not in self.ctl.allowed_hosts():
            name, _, port = host.rpartition(":")
            if name in ("127.0.0.1", "localhost") and port.isdigit():  # an SSH tunnel's port
                p = self.ctl.port
                return (
                    f"forbidden: this vosfx studio listens on port {p} and takes requests "
                    f"addressed to it only; through an SSH tunnel, use that port on both ends "
                    f"(ssh -L {p}:127.0.0.1:{p} ...)"
                )
            return "forbidden"
        origin = headers.get("origin")
        if origin is not None and origin not in {f"http://{h}" for h in self.ctl.allowed_hosts()}:
            return "forbidden"
        token = headers.get("x-vosfx-token")
        if token is None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            token = (query.get("token") or [""])[0]
        return None if hmac.compare_digest(token.encode(), self.ctl.token.encode()) else "forbidden"


def serve(
    ctl: Control,
    sock: socket.socket,
    load: Callable[[], Any],
    *,
    open_browser: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> str:
    """Serve until Done, Ctrl-C or the page is closed for good; returns the outcome
    (``done``, ``closed``, ``interrupted``). ``load()`` builds the Studio (loads the model)
    on a thread; a VosfxError from it is shown by the page."""
    import uvicorn

    config = uvicorn.Config(
        create_app(ctl), log_level="warning", lifespan="off", timeout_graceful_shutdown=2, ws="none"
    )
    hub = ctl.hub

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            hub.close()  # the page's event stream ends now, not at the graceful timeout
            await super().shutdown(sockets=sockets)

    server = Server(config)
    ctl.should_exit = lambda: setattr(server, "should_exit", True)

    def loader() -> None:
        try:
            ctl.studio = load()
        except VosfxError as err:
            ctl.error = {"kind": err.kind, "message": str(err)}
            ctl.hub.emit({"event": "error", "kind": err.kind, "message": str(err)})
            return
        ctl.studio.emit = ctl.hub.emit
        ctl.hub.emit({"event": "ready"})

    threading.Thread(target=loader, name="vosfx-studio-load", daemon=True).start()
    if on_ready is not None:
        on_ready(ctl.url)
    if open_browser:
        import webbrowser

        webbrowser.open(ctl.url)
    # SIGTERM (an editor plugin cancelling "Pick in vosfx studio", ``kill``) and SIGHUP (the
    # terminal closed) end the studio as Ctrl-C does: the server stops, the work is cancelled,
    # a half-written render and the studio's folder are removed, exit 130. uvicorn takes
    # SIGTERM over while it serves and raises it again once stopped, which reaches this
    # handler (a second stop, harmless).
    with on_terminate(lambda _sig, _frame: ctl.should_exit()):
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            ctl.outcome = "interrupted"
        finally:
            if ctl.studio is not None:
                ctl.studio.close()  # stops a running track or render: its outputs are removed
    if ctl.outcome == "running":
        ctl.outcome = "interrupted"
    return ctl.outcome

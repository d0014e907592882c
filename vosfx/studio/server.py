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
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from vosfx.errors import ConfigError, VosfxError

STATIC_FILES = {"studio.js": "text/javascript", "studio.css": "text/css"}
LAST_CLIENT_GRACE_S = 15.0  # a closed page (no event stream) for this long ends the studio
KEEPALIVE_S = 10.0


class Hub:
    """Fan-out of events to every open event stream (thread-safe ``emit``)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queues: set[asyncio.Queue] = set()
        self.on_empty: Callable[[], None] = lambda: None
        self.last_seen = time.monotonic()

    def emit(self, event: dict) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        for q in list(self.queues):
            loop.call_soon_threadsafe(q.put_nowait, event)

    def add(self) -> asyncio.Queue:
        self.loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        self.queues.add(q)
        return q

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
        self.hub = Hub()
        self.view_lock = threading.Lock()
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
    """A listening socket on 127.0.0.1:``port`` (0: any free port); ConfigError when taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
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
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def page(request: Request) -> Response:
        html = _static("index.html").replace("{{TOKEN}}", ctl.token)
        return Response(html, media_type="text/html", headers=_no_store())

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response(_static(name), media_type=STATIC_FILES[name], headers=_no_store())

    def state(request: Request) -> Response:
        if ctl.error is not None:
            return JSONResponse({"ready": False, "error": ctl.error})
        if ctl.studio is None:
            return JSONResponse({"ready": False, "loading": True})
        return JSONResponse(
            dict(
                ctl.studio.state(), ready=True, frame=ctl.frame, done_mode=ctl.done_job is not None
            )
        )

    def timeline(request: Request) -> Response:
        return JSONResponse(_studio().timeline())

    def view(request: Request) -> Response:
        from vosfx.studio.views import render_view

        studio = _studio()
        index = _int_arg(request.path_params["frame"], "frame")
        with ctl.view_lock:  # one decoder for the viewer
            data, media = render_view(studio, index, request.query_params.get("view", "overlay"))
        return Response(data, media_type=media, headers=_no_store())

    def click(body: dict) -> dict:
        studio = _studio()
        t0 = time.perf_counter()
        obj, frame = _int_arg(body.get("obj_id"), "obj_id"), _int_arg(body.get("frame"), "frame")
        if "box" in body:
            res = studio.box(obj, frame, _nums(body["box"], 4, "box"))
        else:
            x, y = _nums([body.get("x"), body.get("y")], 2, "x, y")
            res = studio.click(obj, frame, x, y, 1 if body.get("label", 1) else 0)
        return _mask_reply(studio, res, t0)

    def objects(body: dict) -> dict:
        studio = _studio()
        op = body.get("op")
        if op == "add":
            obj = studio.add_object(body.get("name"))
            return {"obj_id": obj.obj_id}
        obj_id = _int_arg(body.get("obj_id"), "obj_id")
        if op == "rename":
            studio.rename_object(obj_id, str(body.get("name", "")))
        elif op == "delete":
            studio.delete_object(obj_id)
        else:
            raise ConfigError(f"objects: op {op!r}: expected add, rename or delete")
        return {"ok": True}

    def history(body: dict) -> dict:
        studio = _studio()
        op = body.get("op")
        if op not in ("undo", "redo"):
            raise ConfigError(f"history: op {op!r}: expected undo or redo")
        frame = studio.undo() if op == "undo" else studio.redo()
        return {"frame": frame}

    def clear(body: dict) -> dict:
        studio = _studio()
        obj, frame = _int_arg(body.get("obj_id"), "obj_id"), _int_arg(body.get("frame"), "frame")
        studio.set_prompt(obj, frame, None)
        return {"ok": True}

    def track(body: dict) -> dict:
        return {"total": _studio().track()}

    def stop(body: dict) -> dict:
        _studio().stop()
        return {"ok": True}

    def refine(body: dict) -> dict:
        cfg = _studio().set_refine(body.get("refine") or {})
        return {"refine": cfg.__dict__}

    def _job_from(body: dict):
        studio = _studio()
        out = body.get("output")
        if not isinstance(out, str) or not out.strip():
            raise ConfigError("output: expected a path")
        formats = body.get("formats") or None
        if formats is not None and (
            not isinstance(formats, list) or not all(isinstance(f, str) for f in formats)
        ):
            raise ConfigError(f"formats: expected a list of format ids, found {formats!r}")
        start = body.get("start")
        end = body.get("end")
        return studio.job(
            str(_user_path(out)),
            formats=tuple(formats) if formats else None,
            start=None if start is None else _int_arg(start, "start"),
            end=None if end is None else _int_arg(end, "end"),
            overwrite=bool(body.get("overwrite", False)),
            preset=_opt_str(body.get("preset"), "preset"),
        )

    def render(body: dict) -> dict:
        from vosfx.pipeline import plan_outputs

        job = _job_from(body)
        _studio().render(job)
        return {"outputs": [p for p, _f, _o in plan_outputs(job)]}

    def save(body: dict) -> dict:
        job = _job_from(body)
        path = body.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ConfigError("path: expected where to save the job (.json)")
        return {"path": str(_studio().save_job(job, _user_path(path)))}

    def done(body: dict) -> dict:
        if ctl.done_job is None:
            raise ConfigError("this studio was not opened by an editor plugin (no --done-job)")
        job = _job_from(body)
        path = _studio().save_job(job, ctl.done_job)
        ctl.outcome = "done"
        ctl.should_exit()
        return {"path": str(path)}

    async def events(request: Request) -> Response:
        q = ctl.hub.add()

        async def stream():
            try:
                yield "retry: 1000\n\n"
                while True:
                    try:
                        ev = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"data: {json.dumps(ev)}\n\n"
            finally:
                ctl.hub.remove(q)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=_no_store())

    def _studio():
        if ctl.studio is None:
            raise ConfigError(
                "the model is still loading" if ctl.error is None else ctl.error["message"]
            )
        return ctl.studio

    def api(fn: Callable[[dict], dict]):
        """A POST endpoint: the JSON body is read on the loop, ``fn`` runs on a worker
        thread (it may wait for the model); a VosfxError is a 400 with its message."""
        from starlette.concurrency import run_in_threadpool

        async def endpoint(request: Request) -> Response:
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                return JSONResponse({"error": "expected a JSON body"}, status_code=400)
            if not isinstance(body, dict):
                return JSONResponse({"error": "expected a JSON object"}, status_code=400)
            try:
                return JSONResponse(await run_in_threadpool(fn, body))
            except VosfxError as err:
                return JSONResponse({"error": str(err), "kind": err.kind}, status_code=400)

        return endpoint

    async def mask(request: Request) -> Response:
        data = await request.body()
        try:
            obj = _int_arg(request.query_params.get("obj_id"), "obj_id")
            frame = _int_arg(request.query_params.get("frame"), "frame")
            t0 = time.perf_counter()
            studio = _studio()
            res = await asyncio.to_thread(studio.drop_mask, obj, frame, data)
            return JSONResponse(await asyncio.to_thread(_mask_reply, studio, res, t0))
        except VosfxError as err:
            return JSONResponse({"error": str(err), "kind": err.kind}, status_code=400)

    def guarded(fn):
        def endpoint(request: Request) -> Response:
            try:
                return fn(request)
            except VosfxError as err:
                return JSONResponse({"error": str(err), "kind": err.kind}, status_code=400)

        return endpoint

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/state", state),
        Route("/api/timeline", guarded(timeline)),
        Route("/api/view/{frame}", guarded(view)),
        Route("/api/events", events),
        Route("/api/mask", mask, methods=["POST"]),
    ]
    for name, fn in [
        ("click", click),
        ("objects", objects),
        ("history", history),
        ("clear", clear),
        ("track", track),
        ("stop", stop),
        ("refine", refine),
        ("render", render),
        ("save", save),
        ("done", done),
    ]:
        routes.append(Route(f"/api/{name}", api(fn), methods=["POST"]))
    app = Starlette(routes=routes)
    return Guard(app, ctl)


class Guard:
    """ASGI middleware: Host, Origin and token checks on every request (HTTP and stream)."""

    def __init__(self, app, ctl: Control) -> None:
        self.app, self.ctl = app, ctl

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            from starlette.responses import PlainTextResponse

            await PlainTextResponse("forbidden", status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope) -> bool:
        from urllib.parse import parse_qs

        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        if headers.get("host") not in self.ctl.allowed_hosts():
            return False
        origin = headers.get("origin")
        if origin is not None and origin not in {f"http://{h}" for h in self.ctl.allowed_hosts()}:
            return False
        token = headers.get("x-vosfx-token")
        if token is None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            token = (query.get("token") or [""])[0]
        return hmac.compare_digest(token.encode(), self.ctl.token.encode())


def _static(name: str) -> str:
    return resources.files("vosfx.studio").joinpath("static").joinpath(name).read_text("utf-8")


def _no_store() -> dict[str, str]:
    return {"Cache-Control": "no-store"}


def _opt_str(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a name, found {value!r}")
    return value


def _int_arg(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected an integer, found {value!r}") from None


def _nums(value: Any, n: int, name: str) -> tuple:
    import math

    if (
        not isinstance(value, list)
        or len(value) != n
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    ):
        raise ConfigError(f"{name}: expected {n} finite numbers, found {value!r}")
    return tuple(float(v) for v in value)


def _user_path(text: str) -> Path:
    """A path the user typed for an output or a job: absolute (``~`` expanded), no NUL, no
    ``..`` component (a typed path is taken as written, never climbed out of)."""
    if "\x00" in text:
        raise ConfigError("a path cannot contain NUL")
    path = Path(text.strip()).expanduser()
    if not path.is_absolute():
        raise ConfigError(f"expected an absolute path, found {text!r}")
    if ".." in path.parts:
        raise ConfigError(f"a path may not contain '..', found {text!r}")
    return path


def _mask_reply(studio, res, t0: float) -> dict:
    """What the page needs after a prompt: per object, mask area in low-res cells, presence
    and the mask as the engine gave it (a base64 PNG layer the page draws over the frame at
    once, :func:`~vosfx.studio.views.mask_layers`); the prompts and undo state (so the page
    draws the clicks without another request); the server time of the prompt (``ms``) and
    of the layers (``layers_ms``)."""
    import base64

    from vosfx.studio.views import mask_layers

    ms = (time.perf_counter() - t0) * 1000.0
    t1 = time.perf_counter()
    layers = mask_layers(studio, res)
    objs = []
    for i, obj in enumerate(res.obj_ids):
        layer = layers[i]
        objs.append(
            {
                "obj_id": int(obj),
                "area": int((res.logits[i] > 0).sum()),
                "present": bool(res.object_score_logits[i] > 0),
                "mask": None if layer is None else base64.b64encode(layer).decode("ascii"),
            }
        )
    st = studio.prompt_state()
    return dict(
        st,
        frame=int(res.frame_index),
        objects=objs,
        ms=round(ms, 2),
        layers_ms=round((time.perf_counter() - t1) * 1000.0, 2),
    )


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
    server = uvicorn.Server(config)
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

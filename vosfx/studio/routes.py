"""The studio's HTTP routes, by what they serve: the page and what it reads (state, timeline,
views, the event stream), prompts (clicks, boxes, dropped masks, objects, undo), work (track,
stop, finishing) and the job (render, save, Done); and the argument checks they share.

A POST endpoint's JSON body is read on the event loop and its handler runs on a worker thread
(it may wait for the model); a :class:`~vosfx.errors.VosfxError` is a 400 with its message. A
body past its limit (``JSON_MAX_BYTES``, ``MASK_MAX_BYTES``) is a 413, refused from its
Content-Length or as soon as the stream passes the limit, never held whole in memory.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from vosfx.errors import ConfigError, VosfxError

STATIC_FILES = {"studio.js": "text/javascript", "studio.css": "text/css"}
KEEPALIVE_S = 10.0
JSON_MAX_BYTES = 1 << 20  # a prompt, finishing or job request is a few KiB
# a dropped mask image: an 8K 16-bit RGBA TIFF uncompressed is ~270 MiB; a clip dropped by
# mistake (GBs) is refused before it is read into memory
MASK_MAX_BYTES = 512 << 20


class BodyTooLarge(Exception):
    """A request body past its limit (a 413)."""

    def __init__(self, what: str, limit: int, found: int | None) -> None:
        size = f"{_bytes(found)}" if found is not None else f"more than {_bytes(limit)}"
        super().__init__(f"{what} is {size}; at most {_bytes(limit)} is accepted")


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The request's body, at most ``limit`` bytes, else :class:`BodyTooLarge` (``what``: the
    body in words, as the message says it): refused from the Content-Length when there is one,
    else once the stream passes the limit."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise BodyTooLarge(what, limit, int(length))
    chunks, got = [], 0
    async for chunk in request.stream():
        got += len(chunk)
        if got > limit:
            raise BodyTooLarge(what, limit, None)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(err: BodyTooLarge) -> Response:
    # the connection is closed after the answer: the rest of the body is never read
    return JSONResponse(
        {"error": str(err), "kind": "config"}, status_code=413, headers={"Connection": "close"}
    )


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def page_routes(ctl) -> list[Route]:
    """The page, its two static files, and what it reads: state, timeline, views, events."""

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
            return JSONResponse({"ready": False, "loading": True, "download": ctl.loading})
        return JSONResponse(
            dict(
                ctl.studio.state(), ready=True, frame=ctl.frame, done_mode=ctl.done_job is not None
            )
        )

    def timeline(request: Request) -> Response:
        return JSONResponse(studio_of(ctl).timeline())

    def view(request: Request) -> Response:
        from vosfx.studio.views import render_view

        studio = studio_of(ctl)
        index = int_arg(request.path_params["frame"], "frame")
        solo = request.query_params.get("obj")
        solo_id = None if solo is None else int_arg(solo, "obj")
        with studio.view_lock:  # one decoder for the viewer
            data, media = render_view(
                studio, index, request.query_params.get("view", "overlay"), solo_id
            )
        studio.viewed(index)
        return Response(data, media_type=media, headers=_no_store())

    def objmask(request: Request) -> Response:  # what Paint starts from
        from vosfx.studio.views import object_mask

        index = int_arg(request.path_params["frame"], "frame")
        png = object_mask(studio_of(ctl), index, int_arg(request.query_params.get("obj"), "obj"))
        return Response(png, media_type="image/png", headers=_no_store())

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
                    if ev is None:  # the server is stopping (Hub.close)
                        return
                    yield f"data: {json.dumps(ev)}\n\n"
            finally:
                ctl.hub.remove(q)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=_no_store())

    return [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/state", state),
        Route("/api/timeline", guarded(timeline)),
        Route("/api/view/{frame}", guarded(view)),
        Route("/api/objmask/{frame}", guarded(objmask)),
        Route("/api/events", events),
    ]


def prompt_routes(ctl) -> list[Route]:
    """Prompts: a click or box, a dropped mask image, objects, undo/redo, clearing a frame.
    A prompt answers with the frame's masks (:func:`mask_reply`)."""

    def click(body: dict) -> dict:
        studio = studio_of(ctl)
        t0 = time.perf_counter()
        obj, frame = int_arg(body.get("obj_id"), "obj_id"), int_arg(body.get("frame"), "frame")
        if "box" in body:
            res = studio.box(obj, frame, nums(body["box"], 4, "box"))
        else:
            x, y = nums([body.get("x"), body.get("y")], 2, "x, y")
            res = studio.click(obj, frame, x, y, 1 if body.get("label", 1) else 0)
        return mask_reply(studio, res, t0)

    async def mask(request: Request) -> Response:
        try:
            data = await read_body(request, MASK_MAX_BYTES, "the dropped mask file")
        except BodyTooLarge as err:
            return _too_large(err)
        try:
            obj = int_arg(request.query_params.get("obj_id"), "obj_id")
            frame = int_arg(request.query_params.get("frame"), "frame")
            t0 = time.perf_counter()
            studio = studio_of(ctl)
            name = request.query_params.get("name")
            res = await asyncio.to_thread(studio.drop_mask, obj, frame, data, name)
            return JSONResponse(await asyncio.to_thread(mask_reply, studio, res, t0))
        except VosfxError as err:
            return JSONResponse({"error": str(err), "kind": err.kind}, status_code=400)
        except Exception as err:  # noqa: BLE001 - the page shows any failure, not a bare 500
            return _unexpected(request, err)

    def objects(body: dict) -> dict:
        studio = studio_of(ctl)
        op = body.get("op")
        if op == "add":
            obj = studio.add_object(body.get("name"))
            return {"obj_id": obj.obj_id}
        obj_id = int_arg(body.get("obj_id"), "obj_id")
        if op == "rename":
            studio.rename_object(obj_id, str(body.get("name", "")))
        elif op == "delete":
            studio.delete_object(obj_id)
        else:
            raise ConfigError(f"objects: op {op!r}: expected add, rename or delete")
        return {"ok": True}

    def history(body: dict) -> dict:
        studio = studio_of(ctl)
        op = body.get("op")
        if op == "retract":  # the first press of a double-click (which fits the view)
            obj, frame = int_arg(body.get("obj_id"), "obj_id"), int_arg(body.get("frame"), "frame")
            x, y = nums([body.get("x"), body.get("y")], 2, "x, y")
            label = 1 if body.get("label", 1) else 0
            return {"frame": studio.retract_click(obj, frame, (x, y), label)}
        if op not in ("undo", "redo"):
            raise ConfigError(f"history: op {op!r}: expected undo, redo or retract")
        frame = studio.undo() if op == "undo" else studio.redo()
        return {"frame": frame}

    def clear(body: dict) -> dict:
        studio = studio_of(ctl)
        obj, frame = int_arg(body.get("obj_id"), "obj_id"), int_arg(body.get("frame"), "frame")
        studio.set_prompt(obj, frame, None)
        return {"ok": True}

    def recover(body: dict) -> dict:
        """A session kept for this clip by a studio that ended unsaved (``restore``,
        ``discard``), or the job saved beside the clip (``open``): answers the state."""
        studio = studio_of(ctl)
        op, path = body.get("op"), body.get("path")
        if op not in ("restore", "discard", "open"):
            raise ConfigError(f"recover: op {op!r}: expected restore, discard or open")
        if not isinstance(path, str) or not path:
            raise ConfigError("path: expected the job file")
        studio.recover(path, op)
        return studio.state()

    return [
        Route("/api/mask", mask, methods=["POST"]),
        *_posts(
            {
                "click": click,
                "objects": objects,
                "history": history,
                "clear": clear,
                "recover": recover,
            }
        ),
    ]


def work_routes(ctl) -> list[Route]:
    """Track, Stop, and the finishing options."""

    def track(body: dict) -> dict:
        until = body.get("until")  # "Track to here": the frame shown
        return {"total": studio_of(ctl).track(None if until is None else int_arg(until, "until"))}

    def stop(body: dict) -> dict:
        studio_of(ctl).stop()
        return {"ok": True}

    def refine(body: dict) -> dict:
        values = body.get("refine") or {}
        if not isinstance(values, dict):
            raise ConfigError(f"refine: expected an object of [refine] options, found {values!r}")
        studio = studio_of(ctl)
        cfg = studio.set_refine(values)
        return {"refine": cfg.__dict__, "unsaved": studio.unsaved}

    return _posts({"track": track, "stop": stop, "refine": refine})


def job_routes(ctl) -> list[Route]:
    """The job: render it, save it, hand it to the editor plugin that opened the page (Done)."""

    def job_from(body: dict):
        studio = studio_of(ctl)
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
        options = {}  # the panel's [output] options, in its words
        if "each_object" in body:
            if not isinstance(body["each_object"], bool):
                raise ConfigError(
                    f"each_object: expected true or false, found {body['each_object']!r}"
                )
            options["objects"] = "each" if body["each_object"] else "merged"
        if "alpha_mode" in body:
            mode = body["alpha_mode"]
            if mode not in ("straight", "premultiplied"):
                raise ConfigError(f"alpha: expected straight or premultiplied, found {mode!r}")
            options["alpha_mode"] = mode
        return studio.job(
            str(user_path(out, "output")),
            formats=tuple(formats) if formats else None,
            start=None if start is None else int_arg(start, "start"),
            end=None if end is None else int_arg(end, "end"),
            overwrite=bool(body.get("overwrite", False)),
            preset=opt_str(body.get("preset"), "preset"),
            output_options=options,
        )

    def render(body: dict) -> dict:
        from vosfx.pipeline import plan_outputs

        job = job_from(body)
        studio_of(ctl).render(job)
        return {"outputs": [p for p, _f, _o in plan_outputs(job)]}

    def save(body: dict) -> dict:
        from vosfx.pipeline import job_file_clash
        from vosfx.studio.jobfile import check_job_path

        job = job_from(body)
        path = body.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ConfigError("path: expected where to save the job (.json)")
        target = user_path(path, "path")
        check_job_path(job, target)  # before asking to replace a file it would refuse
        studio = studio_of(ctl)
        clash = job_file_clash(job, target, tuple(sorted(studio.session.obj_ids)))
        if clash is not None:  # rendering the job would replace the job file itself
            raise ConfigError(
                f"path: {target} is where rendering this job writes {clash}; give the job "
                "file another name"
            )
        if target.exists() and not body.get("replace", False):
            # the page asks before replacing a job file (as Render asks before outputs)
            return {"exists": str(target)}
        return {"path": str(studio.save_job(job, target))}

    def done(body: dict) -> dict:
        if ctl.done_job is None:
            raise ConfigError("this studio was not opened by an editor plugin (no --done-job)")
        job = job_from(body)
        path = studio_of(ctl).save_job(job, ctl.done_job)
        ctl.outcome = "done"
        ctl.should_exit()
        return {"path": str(path)}

    return _posts({"render": render, "save": save, "done": done})


# --- plumbing -------------------------------------------------------------------------------


def studio_of(ctl):
    """The loaded studio, else a ConfigError saying the model is loading or why it failed."""
    if ctl.studio is None:
        raise ConfigError(
            "the model is still loading" if ctl.error is None else ctl.error["message"]
        )
    return ctl.studio


def api(fn: Callable[[dict], dict]):
    """A POST endpoint: the JSON body is read on the loop, ``fn`` runs on a worker thread
    (it may wait for the model); a VosfxError is a 400 with its message."""
    from starlette.concurrency import run_in_threadpool

    async def endpoint(request: Request) -> Response:
        try:
            body = json.loads(await read_body(request, JSON_MAX_BYTES, "the request") or b"{}")
        except BodyTooLarge as err:
            return _too_large(err)
        except ValueError:
            return JSONResponse({"error": "expected a JSON body"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        try:
            return JSONResponse(await run_in_threadpool(fn, body))
        except VosfxError as err:
            return JSONResponse({"error": str(err), "kind": err.kind}, status_code=400)
        except Exception as err:  # noqa: BLE001 - the page shows any failure, not a bare 500
            return _unexpected(request, err)

    return endpoint


def _posts(handlers: dict[str, Callable[[dict], dict]]) -> list[Route]:
    return [Route(f"/api/{name}", api(fn), methods=["POST"]) for name, fn in handlers.items()]


def guarded(fn):
    """A GET endpoint whose VosfxError is a 400 with its message."""

    def endpoint(request: Request) -> Response:
        try:
            return fn(request)
        except VosfxError as err:
            return JSONResponse({"error": str(err), "kind": err.kind}, status_code=400)
        except Exception as err:  # noqa: BLE001 - the page shows any failure, not a bare 500
            return _unexpected(request, err)

    return endpoint


def _unexpected(request: Request, err: Exception) -> Response:
    """A 500 whose JSON names an error that is not vosfx's own (the traceback is logged)."""
    from vosfx.studio.work import log, unexpected

    log.error("%s failed", request.url.path, exc_info=err)
    return JSONResponse(
        {"error": unexpected(request.url.path, err), "kind": "error"}, status_code=500
    )


def mask_reply(studio, res, t0: float) -> dict:
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
    return dict(
        studio.prompt_state(),
        frame=int(res.frame_index),
        objects=objs,
        ms=round(ms, 2),
        layers_ms=round((time.perf_counter() - t1) * 1000.0, 2),
    )


def _static(name: str) -> str:
    return resources.files("vosfx.studio").joinpath("static").joinpath(name).read_text("utf-8")


def _no_store() -> dict[str, str]:
    return {"Cache-Control": "no-store"}


def opt_str(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a name, found {value!r}")
    return value


def int_arg(value: Any, name: str) -> int:
    try:
        # a bool is not a number here, and 1.5 is not 1 (int() truncated it)
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected an integer, found {value!r}") from None


def nums(value: Any, n: int, name: str) -> tuple:
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


def user_path(text: str, name: str) -> Path:
    """A path the user typed for an output or a job (the field ``name``, as errors say it):
    absolute (``~`` expanded), no NUL, no ``..`` component (a typed path is taken as written,
    never climbed out of)."""
    if "\x00" in text:
        raise ConfigError(f"{name}: a path cannot contain NUL")
    path = Path(text.strip()).expanduser()
    if not path.is_absolute():
        raise ConfigError(f"{name}: expected an absolute path, found {text!r}")
    if ".." in path.parts:
        raise ConfigError(f"{name}: a path may not contain '..', found {text!r}")
    return path

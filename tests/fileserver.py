"""A real HTTP file server on 127.0.0.1 (in-process, a thread) for download tests.

Serves ``files`` (name -> bytes) flat under ``server.url``, honours ``Range: bytes=N-`` with
206 replies, and records every request (path and Range header). Misbehaviours on demand:
``drop_first[name] = n`` closes the connection after ``n`` body bytes on the first request for
``name``; ``ignore_range = True`` answers every request with the whole file (200);
``no_length = True`` sends no Content-Length (the body ends when the connection closes, as
some proxies answer); ``redirect[name] = url`` answers 302 to ``url``; ``tls`` (a server-side
SSLContext) serves HTTPS.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Request:
    path: str
    range: str | None


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    drop_first: dict[str, int] = field(default_factory=dict)
    ignore_range: bool = False
    no_length: bool = False
    redirect: dict[str, str] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def __enter__(self):  # -> FileServer
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                owner._serve(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        scheme = "https" if self.tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path.lstrip("/")
        rng = h.headers.get("Range")
        self.requests.append(Request(h.path, rng))
        if name in self.redirect:
            h.send_response(302)
            h.send_header("Location", self.redirect[name])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        body = self.files.get(name)
        if body is None:
            h.send_error(404, "Not Found")
            return
        start = 0
        if rng and not self.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                h.send_error(416, "Range Not Satisfiable")
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            h.send_response(200)
        payload = body[start:]
        if self.no_length:
            h.close_connection = True
        else:
            h.send_header("Content-Length", str(len(payload)))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        cut = self.drop_first.pop(name, None)
        if cut is not None:
            # Promise the whole body, send part of it, hang up: a dropped connection.
            h.wfile.write(payload[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        h.wfile.write(payload)

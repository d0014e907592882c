"""The OFX effect ⇄ worker channel: fixed 48-byte headers over a stream socket, pixel
payloads in a shared-memory file both sides map.

The effect (plugins/ofx/vosfx_ofx_proto.h declares the same layout in C) starts the worker in
one of two ways:

- POSIX (plugins/ofx/vosfx_worker.c): two inherited descriptors, ``--fd`` (its end of
  ``socketpair(AF_UNIX, SOCK_STREAM)``) and ``--shm-fd`` (a memfd or unlinked POSIX
  shared-memory object). Nothing is reachable from outside the two processes: no name on disk,
  no port.
- Windows (plugins/ofx/vosfx_worker_win.c): ``--connect PORT``, a port the effect listens on at
  127.0.0.1, where the worker connects and first sends the token of its environment
  (``VOSFX_OFX_TOKEN``, 64 hex digits, then a line break); and ``--shm-file NAME``, a file in
  the worker's current folder (the effect's folder for it) that both map.

Header, little-endian: magic, type, frame, a, b, width, height, format, text_len, reserved
(ten 32-bit fields) then shm_bytes (64-bit). ``text_len`` UTF-8 bytes follow the header on the
socket (JSON from the effect, plain text from the worker); pixels sit at offset 0 of the shared
memory, ``shm_bytes`` long. Requests and replies alternate strictly, so one buffer serves both
directions.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import select
import socket
import struct
from dataclasses import dataclass

from vosfx.errors import VosfxError

MAGIC = 0x31584F56  # b"VOX1" read as a little-endian uint32
HEADER = struct.Struct("<IIiiiIIIIIQ")
TOKEN = re.compile(r"[0-9a-f]{64}")  # the Windows effect's, in VOSFX_OFX_TOKEN
MAX_TEXT = 1 << 24  # 16 MiB of JSON is far beyond any prompt set: a larger length is corrupt

# effect -> worker
CONFIG, PROMPTS, RENDER, FRAME, ABORT, QUIT = 1, 2, 3, 4, 5, 6
# worker -> effect
READY, OK, ERROR, NEED, PROGRESS, MATTE, CANCELLED = 101, 102, 103, 104, 105, 106, 107

# pixel formats in FRAME / MATTE
FMT_NONE, FMT_RGB8, FMT_RGB16, FMT_ALPHA_F32 = 0, 1, 2, 3

# the Source fingerprint (vosfx_ofx_proto.h): mean RGB of FP_CELLS x FP_CELLS cells, float32,
# after a FRAME's pixels and Mask plane (its ``b`` = FP_BYTES) and at offset 0 for RENDER (its
# ``shm_bytes`` = FP_BYTES). MATTE ``b`` = 1 + k: the Source's frame k had changed, tracking
# restarted (0: nothing changed). MATTE's text: the engine's warnings (how the model runs), or
# none; the effect keeps them up as a persistent warning.
FP_CELLS = 16
FP_BYTES = FP_CELLS * FP_CELLS * 3 * 4


class ProtocolError(VosfxError):
    """The effect sent something the protocol does not allow (bad magic, wrong reply): the two
    sides disagree, the worker ends."""

    kind = "protocol"


class MessageError(VosfxError):
    """A well-framed message whose text the worker cannot take (not UTF-8, not a JSON object,
    NaN in it): answered with ERROR, the worker goes on."""

    kind = "config"
    exit_code = 3


@dataclass(frozen=True)
class Message:
    type: int
    frame: int = 0
    a: int = 0
    b: int = 0
    width: int = 0
    height: int = 0
    format: int = 0
    shm_bytes: int = 0
    text: str = ""
    utf8: bool = True  # False: the text was not UTF-8 (``text`` has U+FFFD in its place)


class Channel:
    """The worker's end: blocking reads and writes on the socket, the shared memory mapped on
    demand (the effect grows it before it needs more: ftruncate, or a larger file mapping)."""

    def __init__(self, sock: socket.socket, shm_fd: int) -> None:
        self.sock = sock
        self.shm_fd = shm_fd
        self._map: mmap.mmap | None = None

    @classmethod
    def inherited(cls, fd: int, shm_fd: int) -> Channel:
        """The POSIX effect's channel: descriptors this process inherited."""
        return cls(socket.socket(fileno=fd), shm_fd)

    @classmethod
    def connect(cls, port: int, token: str, shm_file: str) -> Channel:
        """The Windows effect's channel: 127.0.0.1:``port``, ``token`` sent first, and the file
        ``shm_file`` (relative to the current folder, which the effect chose)."""
        if not TOKEN.fullmatch(token):
            raise ProtocolError("VOSFX_OFX_TOKEN: expected the 64 hex digits the effect gives")
        shm_fd = os.open(shm_file, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            os.close(shm_fd)
            raise
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small requests, no delay
        sock.sendall(token.encode("ascii") + b"\n")
        return cls(sock, shm_fd)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self.sock.close()
        os.close(self.shm_fd)

    def _read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = self.sock.recv(n - got)
            if not chunk:
                raise EOFError("the effect closed the channel")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def waiting(self, timeout: float) -> bool:
        """Whether a message arrives (or the channel closes) within ``timeout`` seconds."""
        readable, _w, _x = select.select([self.sock], [], [], max(timeout, 0.0))
        return bool(readable)

    def recv(self) -> Message:
        fields = HEADER.unpack(self._read_exact(HEADER.size))
        magic, mtype, frame, a, b, width, height, fmt, text_len, _res, shm_bytes = fields
        if magic != MAGIC:
            raise ProtocolError(f"channel: expected magic {MAGIC:#x}, found {magic:#x}")
        if text_len > MAX_TEXT:
            raise ProtocolError(f"channel: text of {text_len} bytes (at most {MAX_TEXT})")
        raw = self._read_exact(text_len) if text_len else b""
        try:
            text, utf8 = raw.decode("utf-8"), True
        except UnicodeDecodeError:  # the message is framed: read it whole, refuse its text
            text, utf8 = raw.decode("utf-8", "replace"), False
        return Message(mtype, frame, a, b, width, height, fmt, shm_bytes, text, utf8)

    def send(
        self,
        mtype: int,
        *,
        frame: int = 0,
        a: int = 0,
        b: int = 0,
        width: int = 0,
        height: int = 0,
        format: int = 0,
        shm_bytes: int = 0,
        text: str = "",
    ) -> None:
        data = text.encode("utf-8")
        self.sock.sendall(
            HEADER.pack(MAGIC, mtype, frame, a, b, width, height, format, len(data), 0, shm_bytes)
            + data
        )

    def fingerprint(self, offset: int, nbytes: int):
        """The Source fingerprint at ``offset`` of the shared memory: (FP_CELLS, FP_CELLS, 3)
        float32 mean RGB in [0, 1], or None when the effect sent none (``nbytes`` 0)."""
        import numpy as np

        if nbytes == 0:
            return None
        if nbytes != FP_BYTES:
            raise ProtocolError(f"fingerprint: expected {FP_BYTES} bytes, found {nbytes}")
        buf = self.shm(offset + nbytes)
        fp = np.frombuffer(buf[offset:], "<f4").reshape(FP_CELLS, FP_CELLS, 3).copy()
        buf.release()
        return fp

    def shm(self, nbytes: int) -> memoryview:
        """The first ``nbytes`` of the shared memory (remapped when the effect grew it)."""
        if self._map is None or len(self._map) < nbytes:
            size = os.fstat(self.shm_fd).st_size
            if size < nbytes:
                raise ProtocolError(f"shared memory: need {nbytes} bytes, the effect gave {size}")
            if self._map is not None:
                self._map.close()
            self._map = mmap.mmap(self.shm_fd, size)
        return memoryview(self._map)[:nbytes]


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError(f"{text} is out of range")
    return value


def json_body(msg: Message | str) -> dict:
    """A message's text as the JSON object it carries (CONFIG, PROMPTS); MessageError when it
    is not UTF-8, not JSON, not an object, or has NaN or Infinity in it."""
    text = msg if isinstance(msg, str) else msg.text
    if not isinstance(msg, str) and not msg.utf8:
        raise MessageError(f"expected UTF-8 text, found {text[:80]!r}")
    try:
        data = json.loads(text or "{}", parse_constant=_no_constant, parse_float=_finite)
    except ValueError as err:  # JSONDecodeError too
        raise MessageError(f"expected JSON, found {text[:80]!r}: {err}") from None
    if not isinstance(data, dict):
        raise MessageError(f"expected a JSON object, found {text[:80]!r}")
    return data

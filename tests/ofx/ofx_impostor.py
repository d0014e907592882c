"""A program that reaches the Windows effect's port before its worker does, with a wrong token
(tests only). Run by the effect in the worker's place: ``ofx_impostor.py MARKER --connect PORT
--shm-file NAME``. It writes to MARKER what the effect did with its connection ("closed" or
"open"), then becomes the real worker with the effect's arguments and token."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

marker, args = Path(sys.argv[1]), sys.argv[2:]
port = int(args[args.index("--connect") + 1])
with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
    sock.sendall(b"0" * 64 + b"\n")  # 64 hex digits, not the effect's
    try:
        closed = sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        closed = False
marker.write_text("closed" if closed else "open")
engine = ["--engine", "ofx_fakes:make_engine"]
os.execv(sys.executable, [sys.executable, "-m", "vosfx.ofx.worker", *args, *engine])

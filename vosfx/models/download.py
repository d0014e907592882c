"""One HTTP(S) download into a file: ``.part`` file, Range resume, retries with backoff,
sha256 computed while streaming, atomic rename, and a lock file so that two processes fetching
the same file at once (two first runs side by side) do not write one ``.part`` together: the
second waits and takes the first one's file. Standard library only (urllib).

The cache (:mod:`vosfx.models.cache`) decides what to fetch and where; this module only moves
bytes and refuses the ones that do not hash right.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from vosfx.errors import DownloadError
from vosfx.files import exclusive_lock

CHUNK_BYTES = 1 << 20
RETRIES = 4
"""Further attempts after a dropped connection, timeout or 5xx (not after a 4xx)."""
BACKOFF_S = 1.0
"""First wait between attempts; doubles each time (1, 2, 4, 8 s)."""
TIMEOUT_S = 30.0

Progress = Callable[[int, "int | None"], None]
log = logging.getLogger(__name__)


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` when given, else ``VOSFX_OFFLINE`` ("1", "true", "yes", "on" mean yes)."""
    if offline is not None:
        return bool(offline)
    return os.environ.get("VOSFX_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class _Retry(Exception):
    """A failure worth another attempt (the connection, not the request, went wrong)."""


class _Refused(DownloadError):
    """The server answered, but not with the file (a 4xx): no retry."""


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects to http or https only, and never from https to plain http: urllib's own
    handler follows https -> http (and ftp), which hands a file fetched without a published
    hash (``--trust-unverified``) to anyone on the network path."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        from urllib.parse import urljoin, urlsplit

        scheme = urlsplit(urljoin(req.full_url, newurl)).scheme.lower()
        if scheme not in ("http", "https") or (req.type == "https" and scheme != "https"):
            raise _Refused(
                f"{req.full_url}: redirected to {newurl}, which is refused "
                f"(a download that starts on https stays on https)"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def download_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None,
    size_bytes: int | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
    what: str = "",
    retries: int | None = None,
    backoff_s: float | None = None,
) -> str:
    """Fetch ``url`` to ``dest`` and return the file's sha256 (hex).

    Bytes go to ``dest + ".part"``; a part left by an earlier run or a dropped connection is
    resumed with a ``Range`` request (a server that ignores Range sends it all again). With
    ``sha256`` the finished file must hash to it, else the part is deleted and
    :class:`DownloadError` shows both hashes; only a good file is renamed to ``dest``.
    ``progress(done_bytes, total_bytes or None)`` is called per chunk.
    """
    dest = Path(dest)
    what = what or dest.name
    if is_offline(offline):
        raise DownloadError(
            f"offline mode (VOSFX_OFFLINE=1 or --offline): {what} is not in the cache. "
            f"{_what_next(url, dest)}"
        )
    replacing = dest.is_file()  # a forced pull fetches over the file it has
    lock = dest.with_name(dest.name + ".lock")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as err:  # a read-only or full cache: said before any byte is fetched
        raise DownloadError(
            f"cannot download {what} into the model cache {dest.parent}: "
            f"{err.strerror or err}; set VOSFX_HOME to a folder you can write, or have "
            f"{dest.name} put in {dest.parent} by whoever can write there"
        ) from None
    with exclusive_lock(
        lock,
        on_wait=lambda: log.warning(
            "another vosfx process is downloading %s; waiting for it to finish", what
        ),
    ):
        if not replacing and dest.is_file():  # another process fetched it meanwhile
            digest = _hash_existing(dest).hexdigest()
            if sha256 is not None and digest != sha256.lower():
                raise DownloadError(
                    f"{dest} (made by another vosfx process) fails its hash: expected sha256 "
                    f"{sha256.lower()}, found {digest}; delete it and run again"
                )
            return digest
        return _download(url, dest, sha256, size_bytes, progress, what, retries, backoff_s)


def _download(
    url: str,
    dest: Path,
    sha256: str | None,
    size_bytes: int | None,
    progress: Progress | None,
    what: str,
    retries: int | None,
    backoff_s: float | None,
) -> str:
    part = dest.with_name(dest.name + ".part")
    retries = RETRIES if retries is None else retries
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    hasher = _hash_existing(part)
    for attempt in range(retries + 1):
        try:
            hasher = _fetch(url, part, hasher, sha256, size_bytes, progress)
            break
        except _Refused as err:
            raise DownloadError(f"{err}. {_what_next(url, dest)}") from err
        except _Retry as err:
            if attempt == retries:
                kept = part.is_file() and part.stat().st_size > 0
                resume = (
                    f"; the partial file {part} is kept and the next try resumes it" if kept else ""
                )
                raise DownloadError(
                    f"could not download {what} from {url} after {retries + 1} attempts: "
                    f"{err}{resume}. {_what_next(url, dest)}"
                ) from err
            wait_s = backoff_s * 2**attempt
            log.warning(
                "download of %s failed (%s); retrying in %.0f s (attempt %d of %d)",
                what,
                err,
                wait_s,
                attempt + 2,
                retries + 1,
            )
            time.sleep(wait_s)
            # Hash what the part holds now: the failed attempt may have restarted it.
            hasher = _hash_existing(part)
    digest = hasher.hexdigest()
    if sha256 is not None and digest != sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"downloaded {what} from {url} fails its hash: expected sha256 {sha256.lower()}, "
            f"found {digest}; the file was deleted (a corrupt transfer or a changed file)"
        )
    with open(part, "rb+") as fh:  # flushed to disk before the rename makes it visible
        os.fsync(fh.fileno())
    os.replace(part, dest)
    return digest


def _what_next(url: str, dest: Path) -> str:
    """The same next step for every way a checkpoint fails to arrive."""
    return (
        f"Download {url} with a browser or another machine, then run "
        f"`vosfx models import FILE` (or put the file at {dest})"
    )


def _hash_existing(part: Path) -> hashlib._Hash:
    hasher = hashlib.sha256()
    if part.is_file():
        with open(part, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
                hasher.update(chunk)
    return hasher


def _whole_part(
    size: int,
    hasher: hashlib._Hash,
    sha256: str | None,
    size_bytes: int | None,
    content_range: str | None,
) -> bool:
    """Whether a part the server will not resume (416) is already the whole file: it hashes
    to ``sha256``, or (no hash to hold it to) it has the published size or the one the 416's
    ``Content-Range: bytes */N`` states. A part of the right size with other bytes is not."""
    if sha256 is not None:
        return hasher.hexdigest() == sha256.lower()
    total = content_range.rpartition("/")[2].strip() if content_range else ""
    return size in (size_bytes, int(total) if total.isdigit() else None)


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    from vosfx._version import __version__

    headers = {"User-Agent": f"vosfx/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.build_opener(_Redirects).open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            raise  # the caller restarts without the stale part
        if err.code >= 500 or err.code == 429:
            raise _Retry(f"HTTP {err.code} {err.reason}") from err
        raise _Refused(
            f"{url}: expected the checkpoint, found HTTP {err.code} {err.reason}"
        ) from err
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, socket.gaierror) and reason.errno == socket.EAI_NONAME:
            # the name server says the host does not exist (a mistyped URL): no retry; a
            # resolver that cannot be reached (EAI_AGAIN: no network yet) is retried
            host = urllib.parse.urlsplit(url).hostname
            raise _Refused(f"{url}: the host {host} does not exist ({reason.strerror})") from err
        raise _Retry(f"{type(err).__name__}: {err}") from err
    except (OSError, http.client.HTTPException) as err:
        raise _Retry(f"{type(err).__name__}: {err}") from err


def _fetch(
    url: str,
    part: Path,
    hasher: hashlib._Hash,
    sha256: str | None,
    size_bytes: int | None,
    progress: Progress | None,
) -> hashlib._Hash:
    """One attempt: continue ``part`` from its current size. Returns the hasher over the whole
    part; raises _Retry when the connection drops before the body is complete."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset)
    except urllib.error.HTTPError as err:  # 416: nothing left to send from that offset
        if _whole_part(offset, hasher, sha256, size_bytes, err.headers.get("Content-Range")):
            return hasher  # a run killed between the last byte and the rename: keep it
        part.unlink(missing_ok=True)
        raise _Retry("the server refused to resume the partial file; starting again") from None
    with response:
        if offset and response.status != 206:
            offset, hasher = 0, hashlib.sha256()  # the server sent everything again
        length = response.headers.get("Content-Length")
        body_bytes = int(length) if length is not None else None
        total = offset + body_bytes if body_bytes is not None else size_bytes
        received = 0
        with open(part, "ab" if offset else "wb") as fh:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as err:
                    raise _Retry(
                        f"connection dropped after {offset + received} bytes: "
                        f"{type(err).__name__}: {err}"
                    ) from err
                if not chunk:
                    break
                try:
                    fh.write(chunk)
                except OSError as err:
                    raise DownloadError(f"cannot write {part}: {err}") from err
                hasher.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(offset + received, total)
    # Without Content-Length (some proxies) a dropped connection looks like the body's end:
    # the published size tells a short part from a whole file.
    if total is not None and offset + received < total:
        raise _Retry(f"connection closed after {offset + received} of {total} bytes")
    return hasher

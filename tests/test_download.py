"""The byte mover: offline switch, Range resume edge cases, retry policy by status code."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest
from fileserver import FileServer

from vosfx.errors import DownloadError
from vosfx.models import download
from vosfx.models.download import download_file, is_offline

BODY = bytes(range(256)) * 1000
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.delenv("VOSFX_OFFLINE", raising=False)


@pytest.mark.parametrize(
    "env, arg, expected",
    [
        (None, None, False),
        ("1", None, True),
        ("true", None, True),
        ("YES", None, True),
        ("0", None, False),
        ("", None, False),
        ("1", False, False),  # an explicit argument wins over the environment
        (None, True, True),
    ],
)
def test_is_offline(monkeypatch, env, arg, expected):
    if env is not None:
        monkeypatch.setenv("VOSFX_OFFLINE", env)
    assert is_offline(arg) is expected


def test_part_longer_than_the_file_starts_over(tmp_path):
    dest = tmp_path / "f.pt"
    dest.with_name("f.pt.part").write_bytes(BODY + b"stale tail")
    with FileServer(files={"f.pt": BODY}) as srv:
        digest = download_file(f"{srv.url}/f.pt", dest, sha256=SHA)
        ranges = [r.range for r in srv.requests]
    assert digest == SHA and dest.read_bytes() == BODY
    assert ranges == [f"bytes={len(BODY) + 10}-", None]  # 416, then the whole file


def test_server_errors_are_retried_client_errors_are_not(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RETRIES", 2)
    calls = []

    def serve_503(h: BaseHTTPRequestHandler) -> None:
        calls.append(h.path)
        h.send_error(503, "Busy")

    with FileServer() as srv:
        srv._serve = serve_503
        with pytest.raises(DownloadError, match="after 3 attempts: HTTP 503"):
            download_file(f"{srv.url}/f.pt", tmp_path / "f.pt", sha256=SHA)
    assert len(calls) == 3
    with FileServer() as srv, pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{srv.url}/f.pt", tmp_path / "f.pt", sha256=SHA)


def test_connection_refused_is_a_download_error(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RETRIES", 0)
    with FileServer() as srv:
        url = f"{srv.url}/f.pt"
    with pytest.raises(DownloadError, match="after 1 attempts"):  # the server is gone
        download_file(url, tmp_path / "f.pt", sha256=None)
    assert not (tmp_path / "f.pt").exists()


def test_no_hash_given_returns_the_computed_one(tmp_path):
    with FileServer(files={"f.pt": BODY}) as srv:
        assert download_file(f"{srv.url}/f.pt", tmp_path / "d" / "f.pt", sha256=None) == SHA


def _next_step(err: str, url: str, dest) -> bool:
    return (
        f"Download {url} with a browser or another machine, then run `vosfx models import "
        f"FILE` (or put the file at {dest})"
    ) in err


def test_every_failure_says_what_to_do_next_as_offline_does(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(download, "RETRIES", 2)
    dest = tmp_path / "f.pt"
    with FileServer() as srv:
        url = f"{srv.url}/f.pt"
    with pytest.raises(DownloadError) as gone:  # nothing listens: retried, then given up
        download_file(url, dest, sha256=SHA)
    assert _next_step(str(gone.value), url, dest)
    assert "partial file" not in str(gone.value)  # no .part exists, so none is promised
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2 and "attempt 2 of 3" in retries[0]  # each retry is said
    with pytest.raises(DownloadError) as offline:
        download_file(url, dest, sha256=SHA, offline=True)
    assert _next_step(str(offline.value), url, dest)
    with FileServer() as srv, pytest.raises(DownloadError) as missing:
        download_file(f"{srv.url}/f.pt", dest, sha256=SHA)
    assert "HTTP 404" in str(missing.value)
    assert _next_step(str(missing.value), f"{srv.url}/f.pt", dest)


def test_a_kept_partial_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RETRIES", 0)
    dest = tmp_path / "f.pt"
    dest.with_name("f.pt.part").write_bytes(BODY[:1000])
    with FileServer() as srv:
        url = f"{srv.url}/f.pt"
    with pytest.raises(DownloadError, match=r"the partial file .*f\.pt\.part is kept"):
        download_file(url, dest, sha256=SHA)


def test_two_downloads_of_one_file_at_once_fetch_it_once(tmp_path, monkeypatch, caplog):
    """Two first runs side by side: the second waits on the lock and takes the first one's
    file (one request to the server, one .part writer, both get the verified hash)."""
    import threading
    import time

    gate = threading.Event()
    real_fetch = download._fetch

    def slow_fetch(*args, **kwargs):
        gate.set()  # the first download holds the lock from here
        time.sleep(0.3)
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(download, "_fetch", slow_fetch)
    dest = tmp_path / "f.pt"
    results: list = []
    with FileServer(files={"f.pt": BODY}) as srv:
        first = threading.Thread(
            target=lambda: results.append(download_file(f"{srv.url}/f.pt", dest, sha256=SHA))
        )
        first.start()
        assert gate.wait(10)
        with caplog.at_level("WARNING"):
            results.append(download_file(f"{srv.url}/f.pt", dest, sha256=SHA))
        first.join(10)
        requests = list(srv.requests)
    assert results == [SHA, SHA] and dest.read_bytes() == BODY
    assert len(requests) == 1
    assert "another vosfx process is downloading f.pt" in caplog.text
    assert not dest.with_name("f.pt.part").exists()


def test_a_file_made_during_the_wait_with_the_wrong_hash_is_refused(tmp_path, monkeypatch):
    dest = tmp_path / "f.pt"
    real = download.exclusive_lock

    @contextmanager
    def other_process_wrote_it(lock, on_wait=None):
        with real(lock, on_wait):
            dest.write_bytes(b"not the checkpoint")  # what the lock's holder left
            yield

    monkeypatch.setattr(download, "exclusive_lock", other_process_wrote_it)
    with pytest.raises(DownloadError, match="made by another vosfx process.*fails its hash"):
        download_file("http://127.0.0.1:9/f.pt", dest, sha256=SHA)


def test_a_drop_without_content_length_is_resumed_not_taken_for_the_whole_file(tmp_path):
    """A proxy that answers without Content-Length: a dropped connection looks like the end of
    the body. With the file's published size known, the short part is resumed (not hashed,
    refused and deleted as a corrupt download)."""
    dest = tmp_path / "f.pt"
    with FileServer(files={"f.pt": BODY}, drop_first={"f.pt": 5000}, no_length=True) as srv:
        digest = download_file(f"{srv.url}/f.pt", dest, sha256=SHA, size_bytes=len(BODY))
        ranges = [r.range for r in srv.requests]
    assert digest == SHA and dest.read_bytes() == BODY
    assert ranges == [None, "bytes=5000-"]


def test_a_complete_part_left_before_its_rename_is_kept_not_fetched_again(tmp_path):
    """A process killed after the last byte but before the rename leaves the whole file as
    ``.part``: the server answers the resume with 416. The part hashes right: it is kept
    (no second download of hundreds of MB)."""
    dest = tmp_path / "f.pt"
    dest.with_name("f.pt.part").write_bytes(BODY)
    with FileServer(files={"f.pt": BODY}) as srv:
        digest = download_file(f"{srv.url}/f.pt", dest, sha256=SHA, size_bytes=len(BODY))
        ranges = [r.range for r in srv.requests]
    assert digest == SHA and dest.read_bytes() == BODY
    assert ranges == [f"bytes={len(BODY)}-"]  # the 416, and nothing fetched again
    assert not dest.with_name("f.pt.part").exists()


def test_a_whole_size_part_with_other_bytes_is_fetched_again(tmp_path):
    dest = tmp_path / "f.pt"
    dest.with_name("f.pt.part").write_bytes(bytes(len(BODY)))  # right size, wrong bytes
    with FileServer(files={"f.pt": BODY}) as srv:
        digest = download_file(f"{srv.url}/f.pt", dest, sha256=SHA, size_bytes=len(BODY))
        ranges = [r.range for r in srv.requests]
    assert digest == SHA and dest.read_bytes() == BODY
    assert ranges == [f"bytes={len(BODY)}-", None]


@pytest.fixture
def https(tmp_path, monkeypatch):
    """(server-side SSLContext) for a FileServer's ``tls``; the client trusts its certificate
    (a self-signed one for 127.0.0.1, made by openssl), as it would a CA's."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    monkeypatch.setattr(
        ssl, "_create_default_https_context", lambda: ssl.create_default_context(cafile=cert)
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server


def test_https_is_kept_and_checked(tmp_path, https):
    with FileServer(files={"f.pt": BODY}, tls=https) as srv:
        assert srv.url.startswith("https://")
        assert download_file(f"{srv.url}/f.pt", tmp_path / "f.pt", sha256=SHA) == SHA


@pytest.mark.parametrize("sha256", [None, SHA])  # None: a --trust-unverified download
def test_a_redirect_from_https_to_plain_http_is_refused(tmp_path, https, sha256):
    dest = tmp_path / "f.pt"
    with FileServer(files={"f.pt": BODY}) as plain:
        redirect = {"f.pt": f"{plain.url}/f.pt"}
        with (
            FileServer(redirect=redirect, tls=https) as srv,
            pytest.raises(DownloadError, match=r"redirected to http://.*refused"),
        ):
            download_file(f"{srv.url}/f.pt", dest, sha256=sha256)
        assert plain.requests == []  # not one byte asked of the plain-text server
    assert not dest.exists() and not dest.with_name("f.pt.part").exists()


def test_a_redirect_to_another_scheme_is_refused(tmp_path):
    with FileServer(redirect={"f.pt": "ftp://127.0.0.1:1/f.pt"}) as srv:
        with pytest.raises(DownloadError, match=r"redirected to ftp://.*refused"):
            download_file(f"{srv.url}/f.pt", tmp_path / "f.pt", sha256=None)
        assert len(srv.requests) == 1  # refused at once, not retried


def test_a_redirect_within_https_is_followed(tmp_path, https):
    with FileServer(files={"g.pt": BODY}, tls=https) as srv:
        srv.redirect["f.pt"] = f"{srv.url}/g.pt"
        assert download_file(f"{srv.url}/f.pt", tmp_path / "f.pt", sha256=SHA) == SHA


@pytest.mark.parametrize(
    ("errno", "attempts"), [("EAI_NONAME", 1), ("EAI_AGAIN", 3)], ids=["no_such_host", "no_dns"]
)
def test_a_host_that_does_not_exist_is_not_retried(tmp_path, monkeypatch, errno, attempts):
    """A mistyped host fails at once with its name; a resolver that cannot be reached (no
    network yet) is retried like a dropped connection."""
    import socket
    import urllib.error

    monkeypatch.setattr(download, "RETRIES", 2)
    calls = []

    class Opener:
        def open(self, request, timeout=None):
            calls.append(request.full_url)
            code = getattr(socket, errno)
            raise urllib.error.URLError(socket.gaierror(code, "name lookup failed"))

    monkeypatch.setattr(download.urllib.request, "build_opener", lambda *_a: Opener())
    with pytest.raises(DownloadError) as caught:
        download_file("https://no-such-host.invalid/f.pt", tmp_path / "f.pt", sha256=SHA)
    assert len(calls) == attempts
    if errno == "EAI_NONAME":
        assert "the host no-such-host.invalid does not exist" in str(caught.value)
        assert "vosfx models import" in str(caught.value)  # the way out, as for a 404
    else:
        assert "after 3 attempts" in str(caught.value)
    assert not (tmp_path / "f.pt").exists()

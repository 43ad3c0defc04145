"""The live page's HTTP server, defects a new user found (issue 21, section 3): each test failed before its fix.

5: idle or trickling connections cannot lock the owner out (a deadline for the request head, a cap per address);
13: every refused method is a JSON 405, errors are JSON, the Server header has no trailing space, a token file
    must hold one line and a short token is warned about.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from instrument_ai.device.event_hub import EventHub
from instrument_ai.device.http_page import PageApp
from instrument_ai.device.live_state import LiveState

REPO = Path(__file__).resolve().parents[1]
TOKEN = "0123456789abcdef0123456789abcdef"


@contextlib.contextmanager
def serving(**options: object) -> Iterator[tuple[PageApp, int]]:
    app = PageApp(LiveState(EventHub()), EventHub(), token=TOKEN, **options)  # type: ignore[arg-type]
    url = app.bind("127.0.0.1", 0)
    app.start()
    try:
        yield app, int(url.rstrip("/").rsplit(":", 1)[1])
    finally:
        app.close()


def request(port: int, raw: bytes, *, source: str = "127.0.0.1", timeout: float = 3.0) -> bytes:
    """Send `raw`, return everything the server answers until it closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(raw)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def healthz(port: int, source: str = "127.0.0.1") -> bytes:
    raw = f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    try:
        return request(port, raw.encode(), source=source, timeout=2.0)
    except OSError:
        return b""


def test_trickling_idle_connections_cannot_lock_the_owner_out() -> None:
    with serving(head_seconds=1.0) as (app, port):
        crowd: list[socket.socket] = []
        for _ in range(70):  # more than the server's connection cap, all from one address
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            crowd.append(sock)
        stop = threading.Event()

        def trickle() -> None:  # a header line every 0.2 s: never a complete request head
            while not stop.is_set():
                for sock in crowd:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X-a: b\r\n")
                time.sleep(0.2)

        threading.Thread(target=trickle, daemon=True).start()
        try:
            time.sleep(0.3)
            answers = [healthz(port, source="127.0.0.2") for _ in range(3)]  # the owner, from elsewhere
            assert all(a.startswith(b"HTTP/1.1 503 ") or a.startswith(b"HTTP/1.1 200 ") for a in answers), answers
            time.sleep(2.0)  # past the head deadline: every trickler was closed
            closed = 0
            for sock in crowd:
                sock.settimeout(0.5)
                try:
                    closed += sock.recv(4096) == b""
                except ConnectionError:
                    closed += 1
                except TimeoutError:
                    pass
            assert closed == len(crowd)
            assert healthz(port).startswith(b"HTTP/1.1 "), "the address itself is served again"
        finally:
            stop.set()
            for sock in crowd:
                sock.close()
        assert app.refused_connections > 0 and app.slow_requests >= 16


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "CONNECT", "PUT", "FOO"])
def test_refused_methods_and_errors_are_json(method: str) -> None:
    with serving() as (_app, port):
        answer = request(port, f"{method} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0]
    expected = b"501" if method == "FOO" else b"405"
    assert status.split(b" ")[1] == expected, head
    assert b"Content-Type: application/json" in head and "error" in json.loads(body)
    if expected == b"405":
        assert b"Allow: GET, HEAD" in head


def test_the_server_header_has_no_trailing_space() -> None:
    with serving() as (_app, port):
        head = healthz(port).partition(b"\r\n\r\n")[0]
    servers = [line for line in head.split(b"\r\n") if line.lower().startswith(b"server:")]
    assert servers == [b"Server: instrument-ai"]


def _run_with_token_file(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    token_file = tmp_path / "token"
    token_file.write_text(text)
    token_file.chmod(0o600)
    args = ["run", "--source", "demo", "--fast", "--json", "--duration", "1"]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "instrument_ai.device.cli",
            *args,
            "--http",
            "0.0.0.0:0",
            "--http-token-file",
            str(token_file),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "PULSE_SERVER": "unix:/nonexistent/native"},
        timeout=120,
    )


def test_a_token_file_of_two_lines_is_refused(tmp_path: Path) -> None:
    done = _run_with_token_file(tmp_path, f"{TOKEN}\nsecond-line\n")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "one line" in lines[0], done.stderr


def test_a_short_token_is_warned_about(tmp_path: Path) -> None:
    done = _run_with_token_file(tmp_path, "x\n")
    assert done.returncode == 0, done.stderr
    assert "short" in done.stderr and "16" in done.stderr
    quiet = _run_with_token_file(tmp_path, TOKEN + "\n")
    assert quiet.returncode == 0 and "short" not in quiet.stderr

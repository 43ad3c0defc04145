"""Helpers of the live-output tests: a real `instrument-ai run` process whose records are read as they come,
plain HTTP requests, and an SSE reader. Nothing here fakes the daemon: every test talks to a real process."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LAUNCH = "from instrument_ai.device.cli import main; main()"


class Daemon:
    """`instrument-ai run ARGS --json` in a subprocess; stdout records and stderr lines collected by threads."""

    def __init__(self, args: list[str], *, stdin: int | None = None) -> None:
        env = {**os.environ, "PULSE_SERVER": "unix:/nonexistent/native", "PYTHONUNBUFFERED": "1"}
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=stdin,
            env=env,
            cwd=REPO,
        )
        self.records: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace")
            if line.startswith("{"):
                self.records.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None and not predicate():
                raise AssertionError(f"daemon exited ({self.process.returncode}) before {what}: {self.stderr[-5:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; stderr: {self.stderr[-5:]}")

    def start_record(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_for(lambda: next((r for r in self.records if r["type"] == "start"), None), timeout, "start")

    @property
    def url(self) -> str:
        return self.start_record()["http"]

    def hops(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] in ("hop", "change")]

    def finish(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def get(url: str, *, token: str | None = None, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET; HTTP errors are answers too."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str, **kwargs: Any) -> Any:
    code, _, body = get(url, **kwargs)
    assert code == 200, (code, body[:200])
    return json.loads(body)


class SseReader:
    """Reads /events on a raw socket in a thread: every `data:` JSON in arrival order."""

    def __init__(self, url: str, path: str = "/events?every_hop=1", *, recv_buffer: int | None = None) -> None:
        host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
        if recv_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
        self.status: int | None = None
        self.messages: list[dict[str, Any]] = []
        self.closed = threading.Event()

    def start(self) -> SseReader:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                if self.status is None and b"\r\n\r\n" in buffer:
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    self.status = int(head.split(b" ", 2)[1])
                while b"\n\n" in buffer and self.status is not None:
                    message, buffer = buffer.split(b"\n\n", 1)
                    for line in message.decode().splitlines():
                        if line.startswith("data: "):
                            self.messages.append(json.loads(line[6:]))
        except OSError:
            pass
        finally:
            self.closed.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """The first truthy value of `predicate`, polled every 50 ms; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def demo_hops(hop_seconds: float = 0.25) -> int:
    """Hops in a full pass over the shipped demo (its length changes when the demo does)."""
    import soundfile

    from instrument_ai.device.audio_io import demo_path

    return round(soundfile.info(str(demo_path())).duration / hop_seconds)


def shipped_version() -> str:
    """The version in the shipped bundle's metadata (the page, MQTT and /status report it)."""
    from instrument_ai.device.bundle import load

    return load(REPO / "models" / "default.tflite").version

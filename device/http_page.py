"""The daemon's own small web server: the live page, /events (SSE), /status, /healthz and /metrics.

Standard library only (`ThreadingHTTPServer`): one thread per connection,
none of them the audio thread. Read-only: GET and HEAD, nothing changes
state. Defences against what a network sends:

* at most `max_connections` connections at once, and `max_per_client` from
  one address (more are closed on accept), so one host cannot take every slot;
* a connection must send a complete request head (request line and headers)
  within `HEAD_SECONDS` of connecting or of its previous answer, however
  slowly it trickles bytes; idle and slow connections are closed, so they
  cannot hold the slots the owner needs (this runs before the token check);
* a stream whose socket stays unwritable `REQUEST_TIMEOUT` seconds is closed
  (a stuck reader);
* at most `EventHub.max_clients` live streams (503 beyond);
* garbage is answered 400 by the standard parser; any handler error is one
  500 for that request, never an exception out of the server; every error
  and every refused method (405: all but GET and HEAD) is answered in JSON;
* with a token, every endpoint wants it (``Authorization: Bearer T`` or
  ``?token=T``), compared in constant time; 401 otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import json
import queue
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from instrument_ai.device.errors import ConfigurationError
from instrument_ai.device.event_hub import EventHub, TooManyClients, sse_message
from instrument_ai.device.live_state import LiveState

REQUEST_TIMEOUT = 10.0
KEEPALIVE_SECONDS = 15.0
MAX_CONNECTIONS = 64
MAX_PER_CLIENT = 16
"""Connections one address may hold at once (a browser opens at most 6 per host)."""
HEAD_SECONDS = 5.0
"""Time a connection has to send a complete request head; then it is closed."""
MIN_TOKEN_CHARS = 16
"""Tokens shorter than this are warned about (`openssl rand -hex 16` gives 32 characters)."""
DEFAULT_STALL_SECONDS = 5.0
END_DRAIN_SECONDS = 1.0
"""At the end of the source, how long the server waits for the live streams to send their `end` message."""
STREAM_SEND_BUFFER = 16384
"""Kernel send buffer of a live stream (bytes): what a stuck reader can absorb before its queue fills."""


class HttpConfigError(ConfigurationError, ValueError):
    """A bad --http option, or an address that cannot be served (one line; the command exits 2)."""


def parse_bind(value: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or a bare PORT (then 127.0.0.1) -> (host, port)."""
    text = value.strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    else:
        match = re.fullmatch(r"\[([0-9A-Fa-f:.%a-z]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", text)
        if not match:
            raise HttpConfigError(f"--http {value!r}: give HOST:PORT or a PORT (e.g. 0.0.0.0:8080 or 8080)")
        host = match.group(1) or match.group(3)
        port_text = match.group(2) or match.group(4)
    port = int(port_text)
    if not 0 <= port < 65536:
        raise HttpConfigError(f"--http {value!r}: port {port} is not in 0-65535")
    return host, port


def resolve(host: str, port: int) -> tuple[int, str]:
    """(address family, numeric address) to bind; HttpConfigError for a host that does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise HttpConfigError(f"--http {host}:{port}: cannot resolve host {host!r} ({reason})") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first for a name that has both
    family, _, _, _, address = infos[0]
    return family, str(address[0])


def token_warning(token: str) -> str | None:
    """Why a token is weak (too short to resist guessing), or None. Short tokens are warned about, not refused."""
    if len(token) < MIN_TOKEN_CHARS:
        return (
            f"the token is short ({len(token)} characters): anyone on the network can guess it; use at least "
            f"{MIN_TOKEN_CHARS}, e.g. `openssl rand -hex 16`"
        )
    return None


def is_loopback(address: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted daemon rebinds at once (TIME_WAIT); a live listener still refuses
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], family: int, app: PageApp) -> None:
        self.address_family = family
        self.app = app
        self._slots = threading.BoundedSemaphore(app.max_connections)
        self._per_client: dict[str, int] = {}
        self._per_client_lock = threading.Lock()
        super().__init__(address, _Handler)

    def _take_client_slot(self, host: str) -> bool:
        with self._per_client_lock:
            held = self._per_client.get(host, 0)
            if held >= self.app.max_per_client:
                return False
            self._per_client[host] = held + 1
            return True

    def _release(self, host: str) -> None:
        with self._per_client_lock:
            held = self._per_client.get(host, 1) - 1
            if held > 0:
                self._per_client[host] = held
            else:
                self._per_client.pop(host, None)
        self._slots.release()

    def process_request(self, request: Any, client_address: Any) -> None:
        host = str(client_address[0]) if client_address else ""
        if not self._slots.acquire(blocking=False):  # too many connections: close this one, keep serving
            self.app.refused_connections += 1
            self.shutdown_request(request)
            return
        if not self._take_client_slot(host):  # one address holds its share already
            self._slots.release()
            self.app.refused_connections += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # noqa: BLE001 - no thread for it: close it, keep serving
            self._release(host)
            self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(str(client_address[0]) if client_address else "")

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.app.errors += 1  # a reset connection, a handler bug: counted, nothing printed per request


class PageApp:
    """The server's configuration and the state it shows; `serve` starts it in a thread."""

    def __init__(
        self,
        state: LiveState,
        hub: EventHub,
        *,
        token: str | None = None,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        max_per_client: int = MAX_PER_CLIENT,
        head_seconds: float = HEAD_SECONDS,
    ) -> None:
        self.state, self.hub, self.token = state, hub, token
        self.stall_seconds = stall_seconds
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.head_seconds = head_seconds
        self.slow_requests = 0
        self.page = resources.files("instrument_ai.device.assets").joinpath("page.html").read_bytes()
        self.refused_connections = 0
        self.errors = 0
        self.unauthorized = 0
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self.url = ""

    def bind(self, host: str, port: int) -> str:
        """Bind the listening socket (HttpConfigError with one line on failure); returns the URL."""
        family, address = resolve(host, port)
        try:
            server = _Server((address, port), family, self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise HttpConfigError(
                    f"--http {host}:{port}: port {port} is already in use (another instrument-ai?); pick another port"
                ) from None
            if exc.errno == errno.EACCES:
                raise HttpConfigError(
                    f"--http {host}:{port}: permission denied (ports below 1024 need root; use e.g. 8080)"
                ) from None
            raise HttpConfigError(f"--http {host}:{port}: cannot listen there ({exc.strerror or exc})") from None
        self._server = server
        bound = server.server_address[1]
        shown = f"[{address}]" if family == socket.AF_INET6 else address
        self.url = f"http://{shown}:{bound}/"
        return self.url

    def start(self) -> None:
        assert self._server is not None
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name="http"
        ).start()

    def close(self) -> None:
        if self.state.ended is not None:  # let the pages read "source ended" rather than a dropped connection
            deadline = time.monotonic() + END_DRAIN_SECONDS
            while self.hub.clients and time.monotonic() < deadline:
                time.sleep(0.02)
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def authorized(self, headers: Any, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return True
        offered = ""
        header = headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            offered = header[7:].strip()
        elif query.get("token"):
            offered = query["token"][0]
        return hmac.compare_digest(offered.encode("utf-8", "replace"), self.token.encode("utf-8"))

    def health(self) -> tuple[int, dict[str, Any]]:
        age = self.state.last_hop_age()
        ok = age <= self.stall_seconds
        body: dict[str, Any] = {
            "ok": ok,
            "last_hop_age_s": round(age, 3),
            "stall_seconds": self.stall_seconds,
            "hops": self.state.hops,
        }
        ended = self.state.ended
        if ended is not None:
            ok = body["ok"] = False
            body["error"] = f"the source ended ({ended.get('reason')})"
        elif not ok:
            body["error"] = (
                "no audio yet" if self.state.hops == 0 else f"no hop for {age:.1f} s: the microphone has stalled"
            )
        return (200 if ok else 503), body


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "instrument-ai"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # a malformed request still gets a status line with its error
    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard signature
        return  # no access log on the journal: /metrics counts what matters

    def version_string(self) -> str:
        return self.server_version  # the standard one appends " " + sys_version, a trailing space here

    # -- the request head deadline -------------------------------------------------------------------------
    def handle_one_request(self) -> None:
        """One request, whose head must be complete within `head_seconds` (else the connection is closed)."""
        self._head_timer = threading.Timer(self.server.app.head_seconds, self._head_expired)
        self._head_timer.daemon = True
        self._head_timer.start()
        try:
            super().handle_one_request()
        finally:
            self._head_timer.cancel()

    def parse_request(self) -> bool:
        ok = super().parse_request()  # reads the headers: the head is complete (or refused) here
        self._head_timer.cancel()
        return ok

    def _head_expired(self) -> None:
        self.server.app.slow_requests += 1
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)  # the blocked read returns: the thread and slot are freed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors of the standard parser (400, 414, 431, 501...) in JSON, as every other answer."""
        short = self.responses.get(code, ("error", ""))[0]
        body = (json.dumps({"error": message or short}) + "\n").encode()
        self.close_connection = True
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    # -- plumbing ----------------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        body = (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
        self._send(code, body, "application/json", extra)

    def do_HEAD(self) -> None:  # noqa: N802 - the standard name
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - the standard name
        app = self.server.app
        try:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if not app.authorized(self.headers, query):
                app.unauthorized += 1
                self._json(
                    401, {"error": "a valid token is required"}, {"WWW-Authenticate": 'Bearer realm="instrument-ai"'}
                )
                return
            route = {
                "/": self._page,
                "/index.html": self._page,
                "/events": self._events,
                "/status": self._status,
                "/healthz": self._healthz,
                "/metrics": self._metrics,
            }.get(parts.path)
            if route is None:
                self._json(404, {"error": f"no such page: {parts.path[:80]}"})
                return
            route(query)
        except (BrokenPipeError, ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - one failed request, never the server
            app.errors += 1
            self.close_connection = True
            with contextlib.suppress(Exception):
                self._json(500, {"error": f"{type(exc).__name__}"})

    def _refuse_method(self) -> None:
        self._json(405, {"error": "read-only: only GET and HEAD"}, {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_method  # noqa: N815 - the standard names
    do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method  # noqa: N815 - the standard names

    # -- routes -------------------------------------------------------------------------------------------
    def _page(self, query: dict[str, list[str]]) -> None:
        self._send(
            200,
            self.server.app.page,
            "text/html; charset=utf-8",
            {"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"},
        )

    def _status(self, query: dict[str, list[str]]) -> None:
        app = self.server.app
        status = app.state.status()
        status["http"] = {
            **status.get("http", {}),
            "url": app.url,
            "refused_connections": app.refused_connections,
            "unauthorized": app.unauthorized,
            "slow_requests": app.slow_requests,
            "errors": app.errors,
        }
        self._json(200, status)

    def _healthz(self, query: dict[str, list[str]]) -> None:
        code, body = self.server.app.health()
        self._json(code, body)

    def _metrics(self, query: dict[str, list[str]]) -> None:
        from instrument_ai.device.metrics import CONTENT_TYPE, render

        self._send(200, render(self.server.app.state).encode(), CONTENT_TYPE)

    def _events(self, query: dict[str, list[str]]) -> None:
        app = self.server.app
        every_hop = query.get("every_hop", ["0"])[0] not in ("0", "", "false", "no")
        try:
            client = app.hub.connect(every_hop)
        except TooManyClients as exc:
            self.close_connection = True
            self._json(503, {"error": str(exc)}, {"Retry-After": "10", "Connection": "close"})
            return
        with contextlib.suppress(OSError):  # a reader that stops reading fills this soon, then its queue: dropped
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self.close_connection = True
            if self.command == "HEAD":
                return
            self.wfile.write(b"retry: 2000\n\n" + sse_message(json.dumps(app.state.hello(), default=str)))
            if app.state.ended is not None:  # opened after the end: say so, and close
                self.wfile.write(app.state.end_message())
                return
            self._stream(client)
        finally:
            app.hub.disconnect(client)

    def _stream(self, client: Any) -> None:
        """Write what the audio thread queued, in batches, until the client is dropped or the server stops."""
        app = self.server.app
        while not app.stopping.is_set() and client.dropped is None:
            try:
                first = client.queue.get(timeout=KEEPALIVE_SECONDS)
            except queue.Empty:
                self.wfile.write(b": keep-alive\n\n")  # finds a reader that went away
                continue
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 64:
                    batch.append(client.queue.get_nowait())
            self.wfile.write(b"".join(batch))  # a stuck reader times out here (socket timeout), not the audio
            client.sent += len(batch)
            if client.final is not None and any(message is client.final for message in batch):
                return  # the source ended: the page knows, the stream is over
        if client.dropped is not None:
            with contextlib.suppress(OSError):
                self.wfile.write(sse_message(json.dumps({"type": "dropped", "reason": client.dropped})))

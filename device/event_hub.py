"""Fan-out of the daemon's events to live clients (the page's SSE streams), without ever making audio wait.

The audio thread calls `EventHub.publish` once per hop. It only does
`put_nowait` into each client's bounded queue: a client whose queue is full
(a phone that went to sleep, a reader that never reads) is marked dropped
and gets nothing more; its own server thread notices, closes the stream and
leaves (a browser's EventSource then reconnects and starts afresh). The list
of clients is an immutable tuple swapped under a lock by the server threads,
so the audio thread reads it without taking any lock.

The hub also keeps the last `history_seconds` of hops in a compact ring, so a
page opened mid-stream draws its timeline at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from instrument_ai.device.errors import InstrumentAIError

DEFAULT_QUEUE = 256
"""Messages a client may fall behind by (about a minute of hops at 0.25 s) before it is dropped."""
DEFAULT_MAX_CLIENTS = 8


class TooManyClients(InstrumentAIError, RuntimeError):
    """The hub already serves its maximum number of clients."""


@dataclass(eq=False)
class Client:
    """One live stream: its queue, what it wants (every hop or changes only), and why it was dropped."""

    every_hop: bool
    queue: queue.Queue[bytes] = field(default_factory=lambda: queue.Queue(maxsize=DEFAULT_QUEUE))
    dropped: str | None = None  # set by the audio thread when the client fell behind
    sent: int = 0
    final: bytes | None = None  # the last message of the stream (the source ended): close after sending it

    def offer(self, message: bytes) -> None:
        """Called by the audio thread: queue `message`, or drop this client if its queue is full."""
        if self.dropped is not None:
            return
        try:
            self.queue.put_nowait(message)
        except queue.Full:
            self.dropped = "fell behind"


class EventHub:
    """Bounded per-client queues fed by the audio thread; at most `max_clients` at a time."""

    def __init__(
        self,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        queue_size: int = DEFAULT_QUEUE,
        history_seconds: float = 60.0,
        hop_seconds: float = 0.25,
    ) -> None:
        self.max_clients = max_clients
        self.queue_size = queue_size
        self._clients: tuple[Client, ...] = ()
        self._lock = threading.Lock()
        self.history: deque[tuple[float, str, float]] = deque(maxlen=max(16, int(history_seconds / hop_seconds) + 8))
        self.dropped_clients = 0
        self.refused_clients = 0
        self.served_clients = 0

    # -- the server threads ------------------------------------------------------------------------------
    def connect(self, every_hop: bool) -> Client:
        """A new client; TooManyClients when `max_clients` are already connected."""
        with self._lock:
            if len(self._clients) >= self.max_clients:
                self.refused_clients += 1
                raise TooManyClients(f"too many live clients (at most {self.max_clients}; see --http-max-clients)")
            client = Client(every_hop=every_hop, queue=queue.Queue(maxsize=self.queue_size))
            self._clients = (*self._clients, client)
            self.served_clients += 1
        return client

    def disconnect(self, client: Client) -> None:
        with self._lock:
            if client in self._clients:
                self._clients = tuple(c for c in self._clients if c is not client)
                if client.dropped is not None:
                    self.dropped_clients += 1

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- the audio thread --------------------------------------------------------------------------------
    def wants(self, changed: bool) -> bool:
        """Whether any client would take a message of this kind (so the caller can skip encoding it)."""
        return any(changed or c.every_hop for c in self._clients)

    def publish(self, message: bytes, *, changed: bool) -> None:
        """Offer `message` to every client that wants it; never blocks."""
        for client in self._clients:  # a tuple: replaced, never mutated, by the server threads
            if changed or client.every_hop:
                client.offer(message)

    def finish(self, message: bytes) -> None:
        """The last message of every stream (the source ended): each client closes once it has sent it."""
        for client in self._clients:
            client.final = message
            client.offer(message)

    def remember(self, stream_time: float, label: str, confidence: float) -> None:
        """One hop of the timeline history (bounded)."""
        self.history.append((round(stream_time, 3), label, round(confidence, 3)))

    def timeline(self) -> list[tuple[float, str, float]]:
        return list(self.history)  # copied in C under the GIL: safe against the audio thread's appends


def sse_message(data: str, *, event: str | None = None) -> bytes:
    """One Server-Sent Events message (`data` must be one line: JSON is)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def wall_time() -> float:
    """Seconds since the epoch, for the page to measure its own delay."""
    return round(time.time(), 3)


def summary(hub: EventHub | None) -> dict[str, Any]:
    if hub is None:
        return {}
    return {
        "clients": hub.clients,
        "max_clients": hub.max_clients,
        "served_clients": hub.served_clients,
        "dropped_clients": hub.dropped_clients + sum(1 for c in hub._clients if c.dropped),
        "refused_clients": hub.refused_clients,
    }

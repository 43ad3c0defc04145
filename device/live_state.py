"""What the daemon is doing right now, for the page, /status, /healthz, /metrics and MQTT.

`LiveState` is a sink (`sinks.Sink`, as the text and JSON sinks of
`run`) fed by the audio thread. Per hop it only updates plain counters and
offers the event to the fan-outs (`EventHub`, the MQTT publisher), which never
block. The server threads read the counters: ints, floats and dict copies
taken in one C call under the GIL, so no lock is shared with the audio thread.

`HopCosts` records what the daemon's main loop spends per hop (engine +
every output), as a fixed ring for percentiles and Prometheus-style buckets.
"""

from __future__ import annotations

import json
import os
import time
from bisect import bisect_left
from typing import Any, Protocol

import numpy as np

from instrument_ai.device.event_hub import EventHub, sse_message, wall_time
from instrument_ai.device.process_stats import rss_mb

SOURCE_ENDED = ("end of source", "duration")
"""Stop reasons after which no more audio will come (a signal may be a service restart: the page reconnects)."""

COST_BUCKETS_MS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0)
"""Upper bounds of the hop-cost histogram (ms); a 0.25 s hop must stay far below the last one."""


class HopCosts:
    """Per-hop cost (ms): the newest `keep` values for mean/median/p99, and cumulative bucket counts."""

    def __init__(self, keep: int = 4096) -> None:
        self._ring = np.zeros(keep, dtype=np.float64)
        self._n = 0
        self.buckets = [0] * (len(COST_BUCKETS_MS) + 1)  # the last one is +Inf
        self.sum_ms = 0.0

    def add(self, ms: float) -> None:
        self._ring[self._n % self._ring.size] = ms
        self._n += 1
        self.buckets[bisect_left(COST_BUCKETS_MS, ms)] += 1
        self.sum_ms += ms

    @property
    def count(self) -> int:
        return self._n

    def summary(self) -> dict[str, float]:
        values = self._ring[: min(self._n, self._ring.size)].copy()
        if values.size == 0:
            return {"mean_ms": 0.0, "median_ms": 0.0, "p99_ms": 0.0}
        return {
            "mean_ms": round(float(values.mean()), 4),
            "median_ms": round(float(np.median(values)), 4),
            "p99_ms": round(float(np.percentile(values, 99)), 4),
        }


class Publisher(Protocol):
    """A fan-out that takes the daemon's records without blocking (MQTT)."""

    def start_info(self, info: dict[str, Any]) -> None: ...

    def change(self, event: dict[str, Any]) -> None: ...

    def notice(self, kind: str, data: dict[str, Any]) -> None: ...

    def status(self) -> dict[str, Any]: ...


def _compact(event: Any) -> dict[str, Any]:
    out = event.to_dict()
    out["wall"] = wall_time()
    return out


class LiveState:
    """The sink that keeps the live picture and feeds the hub and the publishers (see the module docstring)."""

    def __init__(self, hub: EventHub | None = None, publishers: list[Publisher] | None = None) -> None:
        self.hub = hub
        self.publishers = list(publishers or [])
        self.started_monotonic = time.monotonic()
        self.started_wall = time.time()
        self.info: dict[str, Any] = {}
        self.model: dict[str, Any] = {}
        self.hops = 0
        self.stream_seconds = 0.0
        self.last_hop_monotonic: float | None = None
        self.families: dict[str, int] = {}
        self.changes = 0
        self.reloads = 0
        self.refused = 0
        self.last_error: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None  # the newest hop (as its JSON fields)
        self.source_stats: dict[str, Any] = {}
        self.source: Any = None  # the audio source, for its live counters
        self.costs = HopCosts()
        self.output_lost = 0
        self.observer_errors = 0
        self.personal: dict[str, Any] | None = None  # the personal head in force: {"families": [...], "notes": N}
        self.ended: dict[str, Any] | None = None  # set when the source ended: the page stops reconnecting

    # -- sink interface (the audio thread) ------------------------------------------------------------------
    def start(self, info: dict[str, Any]) -> None:
        self.info = dict(info)
        self.model = {
            "name": info.get("model_name"),
            "version": info.get("model_version"),
            "runtime": info.get("runtime"),
            "path": info.get("model"),
            "labels": list(info.get("labels", [])),
            "decision": info.get("decision"),
        }
        self.personal = info.get("personal")
        if self.hub is not None:
            hop = float(info.get("hop_seconds") or 0.25)
            self.hub.history = type(self.hub.history)(maxlen=max(16, int(60.0 / hop) + 8))
        for publisher in self.publishers:
            publisher.start_info(self.hello())

    def hop(self, event: Any, stats: dict[str, Any]) -> None:
        self.hops += 1
        self.stream_seconds = event.time
        self.last_hop_monotonic = time.monotonic()
        self.families[event.label] = self.families.get(event.label, 0) + 1
        self.source_stats = stats
        hub = self.hub
        record: dict[str, Any] | None = None
        if event.changed:
            self.changes += 1
        if hub is not None:
            hub.remember(event.time, event.label, event.confidence)
            if hub.wants(event.changed):
                record = _compact(event)
                hub.publish(sse_message(json.dumps(record, separators=(",", ":"))), changed=event.changed)
        if event.changed or self.last is None:
            record = record or _compact(event)
            self.last = record
            for publisher in self.publishers:
                publisher.change({**record, "model_version": self.model.get("version")})
        elif record is not None:
            self.last = record
        else:
            self.last = {**self.last, "hop": event.hop, "time": round(event.time, 3), "level_db": event.level_db}

    def notice(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "swap":
            self.reloads += 1
            self.model = {
                **self.model,
                "name": data.get("new_name"),
                "version": data.get("new_version"),
                "runtime": data.get("runtime"),
                "path": data.get("path", self.model.get("path")),
                "labels": list(data.get("new_labels", self.model.get("labels", []))),
                "decision": data.get("decision", self.model.get("decision")),
            }
        elif kind == "personal":
            self.personal = {"families": list(data.get("families", [])), "notes": data.get("notes", 0)}
        elif kind in ("personal_removed", "personal_dropped"):
            self.personal = None
        elif kind == "personal_refused":
            self.last_error = {"kind": kind, "message": str(data.get("reason")), "wall": wall_time()}
        elif kind == "model_refused":
            self.refused += 1
            self.last_error = {"kind": kind, "message": str(data.get("reason")), "wall": wall_time()}
        elif kind in ("device_lost", "reconnect_waiting", "source_error"):
            self.last_error = {"kind": kind, "message": _describe(data), "wall": wall_time()}
        if self.hub is not None:
            record = {"type": kind, **data}
            if kind == "swap":
                record["model"] = self.model
            self.hub.publish(sse_message(json.dumps(record, separators=(",", ":"), default=str)), changed=True)
        for publisher in self.publishers:
            publisher.notice(kind, data)

    def stats(self, summary: dict[str, Any]) -> None:
        self.output_lost = int(summary.get("output_lost", 0))

    def close(self, summary: dict[str, Any]) -> None:
        """The stream is over; when its source ended (not a signal), the live streams get an `end` message."""
        self.stats(summary)
        reason = summary.get("reason")
        if reason not in SOURCE_ENDED:
            return
        self.ended = {"reason": reason, "stream_seconds": summary.get("stream_seconds"), "wall": wall_time()}
        if self.hub is not None:
            self.hub.finish(self.end_message())

    def end_message(self) -> bytes:
        """The SSE message that tells a page the source ended (so it shows that instead of reconnecting)."""
        return sse_message(json.dumps({"type": "end", **(self.ended or {})}, separators=(",", ":")))

    # -- readers (the server threads) ---------------------------------------------------------------------
    def last_hop_age(self) -> float:
        """Seconds since the last hop (since the start when there was none)."""
        last = self.last_hop_monotonic
        return time.monotonic() - (self.started_monotonic if last is None else last)

    def hello(self) -> dict[str, Any]:
        """The first message of a live stream: who is talking, and the state so far."""
        return {
            "type": "hello",
            "model": self.model,
            "personal": self.personal,
            "hop_seconds": self.info.get("hop_seconds"),
            "source": self.info.get("source"),
            "state": self.last,
            "history": self.hub.timeline() if self.hub is not None else [],
            "ended": self.ended,
            "wall": wall_time(),
        }

    def counters(self) -> dict[str, Any]:
        """The source's live counters (read now, not at the last hop)."""
        source = self.source
        stats = getattr(source, "stats", None)
        if stats is None:
            return dict(self.source_stats)
        return {
            "blocks": stats.blocks,
            "overflows": stats.overflows,
            "dropped": stats.dropped,
            "reconnects": stats.reconnects,
            "device_lost": getattr(stats, "lost", 0),
        }

    def status(self) -> dict[str, Any]:
        """The /status document."""
        from instrument_ai.device.event_hub import summary

        return {
            "model": self.model,
            "personal": self.personal,
            "source": self.info.get("source"),
            "ended": self.ended,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started_wall)),
            "hops": self.hops,
            "changes": self.changes,
            "stream_seconds": round(self.stream_seconds, 3),
            "last_hop_age_s": round(self.last_hop_age(), 3),
            "state": self.last,
            "families": self.families.copy(),
            **self.counters(),
            "reloads": self.reloads,
            "refused": self.refused,
            "last_error": self.last_error,
            "hop_cost": self.costs.summary(),
            "output_lost": self.output_lost,
            "http": summary(self.hub),
            "mqtt": [p.status() for p in self.publishers],
            "rss_mb": round(rss_mb(), 1),
        }


def _describe(data: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in data.items())

"""/metrics: the daemon's counters in the Prometheus text exposition format (version 0.0.4).

Written by hand rather than with prometheus_client: every figure already
exists in `LiveState` (kept by the audio thread without locks), so a scrape
only has to print them; the format is a few lines of text, and the Pi needs
no extra package for it. The tests parse the output with prometheus_client's
own parser, which is what a Prometheus server accepts.
"""

from __future__ import annotations

from typing import Any

from instrument_ai.device.live_state import COST_BUCKETS_MS, LiveState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "instrument_ai_"


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, Any], float]]) -> None:
        full = PREFIX + name + ("_total" if kind == "counter" else "")  # as prometheus_client writes counters
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            self.lines.append(f"{full}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_text: str, buckets: list[int], bounds_s: list[float], sum_s: float) -> None:
        full = PREFIX + name
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} histogram")
        running = 0
        for bound, count in zip([*bounds_s, float("inf")], buckets, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            self.lines.append(f'{full}_bucket{{le="{le}"}} {running}')
        self.lines.append(f"{full}_sum {_number(sum_s)}")
        self.lines.append(f"{full}_count {running}")


def render(state: LiveState) -> str:
    """The whole exposition, read from `state` now."""
    w = _Writer()
    model = state.model
    w.family(
        "model_info",
        "gauge",
        "The model in use (1); its name, version and runtime are labels.",
        [({k: model.get(k) or "" for k in ("name", "version", "runtime")}, 1)],
    )
    w.family("uptime_seconds", "gauge", "Seconds since the daemon started.", [({}, _up(state))])
    w.family("hops", "counter", "Hops decided since the start.", [({}, state.hops)])
    w.family(
        "family_hops",
        "counter",
        "Hops per label (a family, other, silence or unknown).",
        [({"family": label}, count) for label, count in sorted(state.families.copy().items())],
    )
    w.family("changes", "counter", "Label changes since the start.", [({}, state.changes)])
    w.family(
        "last_hop_age_seconds",
        "gauge",
        "Seconds since the last hop (the microphone stalls if it grows).",
        [({}, round(state.last_hop_age(), 3))],
    )
    costs = state.costs
    w.histogram(
        "hop_cost_seconds",
        "Main-loop time per hop: engine (frontend + interpreter) and every output.",
        list(costs.buckets),
        [b / 1000.0 for b in COST_BUCKETS_MS],
        costs.sum_ms / 1000.0,
    )
    counters = state.counters()
    w.family("audio_blocks", "counter", "Audio blocks received.", [({}, counters.get("blocks", 0))])
    w.family(
        "dropped_blocks",
        "counter",
        "Audio blocks dropped because the loop fell behind.",
        [({}, counters.get("dropped", 0))],
    )
    w.family(
        "overflowed_blocks",
        "counter",
        "Audio blocks the sound system flagged as overflowed.",
        [({}, counters.get("overflows", 0))],
    )
    w.family(
        "microphone_reconnects",
        "counter",
        "Times the microphone was reopened after it went away.",
        [({}, counters.get("reconnects", 0))],
    )
    w.family("microphone_lost", "counter", "Times the microphone went away.", [({}, counters.get("device_lost", 0))])
    w.family("model_reloads", "counter", "Models swapped in while running.", [({}, state.reloads)])
    w.family("model_refused", "counter", "New models refused (the old one kept running).", [({}, state.refused)])
    w.family("output_lost", "counter", "Records the event output could not write.", [({}, state.output_lost)])
    _live_output_families(w, state)
    return "\n".join(w.lines) + "\n"


def _up(state: LiveState) -> float:
    import time

    return round(time.monotonic() - state.started_monotonic, 3)


def _live_output_families(w: _Writer, state: LiveState) -> None:
    """The live page's clients and each MQTT publisher."""
    if state.hub is not None:
        hub = state.hub
        w.family("live_clients", "gauge", "Live page streams connected.", [({}, hub.clients)])
        w.family(
            "live_clients_dropped",
            "counter",
            "Live streams dropped because they fell behind.",
            [({}, hub.dropped_clients)],
        )
        w.family("live_clients_refused", "counter", "Live streams refused (client limit).", [({}, hub.refused_clients)])
    for publisher in state.publishers:
        status = publisher.status()
        labels = {"broker": status.get("broker", "")}
        w.family(
            "mqtt_connected", "gauge", "1 while connected to the MQTT broker.", [(labels, bool(status["connected"]))]
        )
        w.family("mqtt_published", "counter", "MQTT messages handed to the client.", [(labels, status["published"])])
        w.family(
            "mqtt_dropped",
            "counter",
            "MQTT events dropped (the oldest, beyond the queue while the broker was away) or refused by the client.",
            [(labels, status["dropped"])],
        )
        w.family(
            "mqtt_connects",
            "counter",
            "Successful MQTT connections (reconnects included).",
            [(labels, status["connects"])],
        )

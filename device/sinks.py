"""Where the daemon's records go: the `Sink` protocol and its plain sinks.

Five sinks share one interface: `JsonSink` (`run --json`: one object per line), `TextSink` (plain lines),
the terminal panel (`live_view.LiveView`), the live state behind the page and MQTT (`live_state.LiveState`),
and `TeeSink`, which feeds a primary sink and observers that must never stop the daemon.
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class LineWriter(Protocol):
    """An output of whole lines (`line_output.LineOutput`)."""

    def write_line(self, text: str) -> Any: ...


class Sink(Protocol):
    """What the daemon reports to: the start, every hop, notices (swaps, refusals), periodic stats and the stop."""

    def start(self, info: dict[str, Any]) -> None: ...

    def hop(self, event: Any, stats: dict[str, Any]) -> None: ...

    def notice(self, kind: str, data: dict[str, Any]) -> None: ...

    def stats(self, summary: dict[str, Any]) -> None: ...

    def close(self, summary: dict[str, Any]) -> None: ...


class JsonSink:
    """One JSON object per line: start, change (and hop), notices, stats, stop."""

    def __init__(self, out: LineWriter, every_hop: bool) -> None:
        self.out, self.every_hop = out, every_hop

    def _write(self, obj: dict[str, Any]) -> None:
        self.out.write_line(json.dumps(obj, separators=(",", ":")))

    def start(self, info: dict[str, Any]) -> None:
        self._write({"type": "start", **info})

    def hop(self, event: Any, stats: dict[str, Any]) -> None:
        if event.changed or self.every_hop:
            self.out.write_line(event.to_json())

    def notice(self, kind: str, data: dict[str, Any]) -> None:
        self._write({"type": kind, **data})

    def stats(self, summary: dict[str, Any]) -> None:
        self._write({"type": "stats", **summary})

    def close(self, summary: dict[str, Any]) -> None:
        self._write({"type": "stop", **summary})


class TextSink:
    """Plain lines (stdout not a terminal, or --plain): a header, one line per change (or per hop)."""

    def __init__(self, out: LineWriter, every_hop: bool) -> None:
        self.out, self.every_hop = out, every_hop

    def _line(self, text: str) -> None:
        self.out.write_line(text)

    def start(self, info: dict[str, Any]) -> None:
        self._line(
            f"instrument-ai run: model {info['model_name']} {info['model_version']} ({info['model']}), "
            f"runtime {info['runtime']}, threads {info['threads']}; source {info['source']} "
            f"{info['rate']} Hz x{info['channels']} -> {info['model_rate']} Hz, hop {info['hop_seconds']} s"
            + (f"; personal head: {', '.join(info['personal']['families'])}" if info.get("personal") else "")
        )

    def hop(self, event: Any, stats: dict[str, Any]) -> None:
        from instrument_ai.device.live_view import change_line

        if event.changed or self.every_hop:
            self._line(change_line(event))

    def notice(self, kind: str, data: dict[str, Any]) -> None:
        self._line(f"-- {kind} " + " ".join(f"{k}={v}" for k, v in data.items()))

    def stats(self, summary: dict[str, Any]) -> None:
        from instrument_ai.device.live_view import _stats_line

        self._line(_stats_line(summary))

    def close(self, summary: dict[str, Any]) -> None:
        self.stats(summary)


class TeeSink:
    """The primary sink (text, JSON or the terminal view) and observers that must never stop the daemon."""

    def __init__(self, primary: Sink, observers: list[Any], report: Any) -> None:
        self.primary, self.observers, self.report = primary, observers, report
        self._reported = False

    def _each(self, name: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, name)(*args)
            except Exception as exc:  # noqa: BLE001 - a live output's bug must not stop the classification
                observer_errors = getattr(observer, "observer_errors", None)
                if observer_errors is not None:
                    observer.observer_errors += 1
                if not self._reported:
                    self._reported = True
                    self.report({"type": "live_output_error", "error": f"{type(exc).__name__}: {exc}"})

    def start(self, info: dict[str, Any]) -> None:
        self.primary.start(info)
        self._each("start", info)

    def hop(self, event: Any, stats: dict[str, Any]) -> None:
        self.primary.hop(event, stats)
        self._each("hop", event, stats)

    def notice(self, kind: str, data: dict[str, Any]) -> None:
        self.primary.notice(kind, data)
        self._each("notice", kind, data)

    def stats(self, summary: dict[str, Any]) -> None:
        self.primary.stats(summary)
        self._each("stats", summary)

    def close(self, summary: dict[str, Any]) -> None:
        self.primary.close(summary)
        self._each("close", summary)

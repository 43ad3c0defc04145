"""The live terminal view of `instrument-ai run`: current instrument, top-k bars, timings, input level.

Shown only when stdout is a terminal and --json is not given. It uses rich when
it is installed (rich is pure Python; it is imported here, lazily, and nowhere
else on the device path) and falls back to plain lines otherwise. Label
changes are also printed as log lines above the panel, so the scroll-back keeps
the history of what was heard after the view closes.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from instrument_ai.device.engine import NOT_INSTRUMENT, Event
from instrument_ai.device.labels import SILENCE

BAR_WIDTH = 28
LEVEL_RANGE_DB = (-80.0, 0.0)


def _bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


def change_line(event: Event) -> str:
    """The one-line log of a label change (used by the live view and the plain text output)."""
    if event.label == SILENCE:
        detail = f"level {event.level_db:6.1f} dBFS"
    else:
        detail = "  ".join(f"{name} {p:.2f}" for name, p in event.top_k)
    name = event.label if event.label not in NOT_INSTRUMENT else f"({event.label})"
    return f"{event.time:8.2f} s  {name:<12s} {event.confidence:4.2f}  [{detail}]"


def describe_decision(decision: dict[str, Any] | None) -> str:
    """" · per note, floor 0.35 (bundle)": the rule in force and who chose it (`Classifier.decision_info`)."""
    if not decision:
        return ""
    rule = "per note" if decision.get("rule") == "note" else "per hop"
    return f" · {rule}, floor {decision.get('min_confidence', 0):g} ({decision.get('from', '?')})"


class LiveView:
    """Sink that redraws a panel per hop (rich.live) and logs label changes above it."""

    def __init__(self, stream: TextIO | None = None, *, top_k: int = 3) -> None:
        self.stream = stream or sys.stdout
        self.top_k = top_k
        self._header = ""
        self._live: Any = None
        self._console: Any = None
        self._rich = True
        self._last_stats: dict[str, Any] = {}
        try:
            from rich.console import Console
            from rich.live import Live
        except ImportError:  # the device extra does not require rich
            self._rich = False
            return
        self._console = Console(file=self.stream, highlight=False)
        self._live = Live(console=self._console, auto_refresh=False, transient=False)

    # -- sink interface -------------------------------------------------------------
    def start(self, info: dict[str, Any]) -> None:
        self._header = (
            f"instrument-ai · model {info.get('model_name', '?')} v{info.get('model_version', '?')}"
            f" · {info.get('runtime', '?')} · {info.get('source', '?')} "
            f"({info.get('rate', '?')} Hz → {info.get('model_rate', '?')} Hz, hop {info.get('hop_seconds', '?')} s)"
            + describe_decision(info.get("decision"))
        )
        self._print(self._header)
        if self._live is not None:
            self._live.start()

    def hop(self, event: Event, stats: dict[str, Any]) -> None:
        self._last_stats = stats
        if event.changed:
            self._print(change_line(event))
        if self._live is not None:
            self._live.update(self._render(event, stats), refresh=True)

    def notice(self, kind: str, data: dict[str, Any]) -> None:
        details = " ".join(f"{k}={v}" for k, v in data.items())
        self._print(f"-- {kind} {details}")

    def stats(self, summary: dict[str, Any]) -> None:
        self._print(_stats_line(summary))

    def close(self, summary: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.stop()
        self._print(_stats_line(summary))

    # -- drawing ----------------------------------------------------------------------
    def _print(self, line: str) -> None:
        if self._console is not None:
            self._console.print(line, markup=False)
        else:
            print(line, file=self.stream, flush=True)

    def _render(self, event: Event, stats: dict[str, Any]) -> Any:
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        table.add_column(justify="left", min_width=12)
        table.add_column()
        table.add_column(justify="right")
        style = "bold green" if event.label not in NOT_INSTRUMENT else "dim"
        # a Text with a style, not markup: nothing for a console to print literally
        table.add_row(Text(event.label.upper(), style=style), f"t = {event.time:.2f} s", f"{event.confidence:.2f}")
        names = event.top_k or [(SILENCE, 0.0)]
        for name, p in names[: self.top_k]:
            table.add_row(name, _bar(p), f"{p:.2f}")
        low, high = LEVEL_RANGE_DB
        fraction = (min(high, max(low, event.level_db)) - low) / (high - low)
        table.add_row("input level", _bar(fraction), f"{event.level_db:.1f} dBFS")
        table.add_row(
            "compute",
            f"frontend {event.frontend_ms:.2f} ms · inference {event.inference_ms:.2f} ms",
            f"hop {event.hop}",
        )
        table.add_row("input", f"overflows {stats.get('overflows', 0)} · dropped {stats.get('dropped', 0)}", "")
        return Panel(table, title="instrument-ai", expand=False)


def _stats_line(summary: dict[str, Any]) -> str:
    return (
        f"-- stats: {summary.get('hops', 0)} hops, compute mean {summary.get('mean_ms', 0.0):.2f} ms"
        f" p99 {summary.get('p99_ms', 0.0):.2f} ms, overflows {summary.get('overflows', 0)},"
        f" dropped {summary.get('dropped', 0)}"
    )

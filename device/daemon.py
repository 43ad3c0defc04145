"""The daemon's main loop: audio blocks in, decisions out, model swaps between two hops; and its signals.

`Daemon.loop` reads blocks from a source, feeds the engine, reports every hop to a `sinks.Sink`, takes a
reloaded bundle from the `ModelWatcher` between two blocks, and ends on the end of the source, a stop signal,
a duration or a closed output. `Signals` turns SIGINT/SIGTERM into a stop event and SIGHUP into a reload.
A failing source raises `sources.SourceError` (the command shell turns it into its one line).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from instrument_ai.device.lifecycle import record_running
from instrument_ai.device.line_output import LineOutput
from instrument_ai.device.process_stats import rss_mb


def set_later(event: threading.Event) -> None:
    """Set `event` from a signal handler without deadlocking.

    A handler runs in the main thread between two bytecodes, possibly while
    that thread holds the event's internal lock inside `event.wait()`;
    `event.set()` right there would wait for that lock forever (the daemon then
    ignores SIGTERM). A helper thread takes the lock once the main thread lets go.
    """
    threading.Thread(target=event.set, name="signal-set", daemon=True).start()


class Signals:
    """SIGINT/SIGTERM set `stop`, SIGHUP sets `reload`; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._on_stop)
        if hasattr(signal, "SIGHUP"):
            self._old[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: set_later(self.reload))
        return self

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name
        set_later(self.stop)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _source_stats(audio: Any) -> dict[str, Any]:
    s = audio.stats
    return {
        "blocks": s.blocks,
        "overflows": s.overflows,
        "dropped": s.dropped,
        "reconnects": s.reconnects,
        "device_lost": getattr(s, "lost", 0),
    }


def _bundle_label(bundle: Any) -> str:
    return f"{getattr(bundle, 'name', '?')} {getattr(bundle, 'version', '?')}"


class Daemon:
    """The main loop of `run`: blocks in, events out; model swaps and refusals between blocks; survives its output."""

    def __init__(
        self,
        audio: Any,
        engine: Any,
        sink: Any,
        out: LineOutput,
        signals: Signals,
        watcher: Any,
        report: Any,
        live: Any = None,
    ) -> None:
        from instrument_ai.device.live_state import HopCosts

        self.audio, self.engine, self.sink, self.out = audio, engine, sink, out
        self.signals, self.watcher, self.report = signals, watcher, report
        self.live_info = live.info if live is not None else {}
        self.costs = live.state.costs if live is not None else HopCosts()  # main-loop time per hop, outputs included
        self.swaps = 0
        self.refused = 0
        self.personal_watcher: Any = None  # a ModelWatcher of the personal file (`run` sets it), or None
        self.personal_unusable: str | None = None  # why the personal file found at start is not in force

    def summary(self) -> dict[str, Any]:
        compute = self.engine.compute_stats()
        return {
            "hops": self.engine.hops,
            "stream_seconds": round(self.engine.stream_time, 3),
            "mean_ms": round(compute["mean_ms"], 3),
            "median_ms": round(compute["median_ms"], 3),
            "p99_ms": round(compute["p99_ms"], 3),
            **{f"loop_{key}": round(value, 3) for key, value in self.costs.summary().items()},
            **_source_stats(self.audio),
            "swaps": self.swaps,
            "refused": self.refused,
            "output_lost": self.out.lost,
            "rss_mb": round(rss_mb(), 1),
        }

    def apply(self, candidate: Any) -> None:
        """Swap a loaded candidate in (between two hops), or log why it was refused and keep the old model."""
        old = self.engine.bundle
        where = {"trigger": candidate.trigger, "path": candidate.path, "load_ms": candidate.load_ms}
        if candidate.bundle is None:
            self.refused += 1
            self.sink.notice(
                "model_refused",
                {"reason": candidate.reason, "keeping": _bundle_label(old), **where, "at": self._now()},
            )
            return
        new = candidate.bundle
        try:
            kept_stream = self.engine.swap_bundle(new)
        except ValueError as exc:  # check_runnable tried the same engine options: should not happen
            self.refused += 1
            self.sink.notice("model_refused", {"reason": str(exc), "keeping": _bundle_label(old), **where})
            return
        self.swaps += 1
        record_running(Path(candidate.path), background=True)  # the audio loop never waits for the lock
        self.sink.notice(
            "swap",
            {
                "old": _bundle_label(old),
                "new": _bundle_label(new),
                "old_name": getattr(old, "name", "?"),
                "old_version": getattr(old, "version", "?"),
                "new_name": new.name,
                "new_version": new.version,
                "runtime": new.runtime,
                "new_labels": list(new.labels),  # the live page, /status and MQTT name what is running now
                "decision": self.engine.decision_info(),  # a new bundle may bring its own rule and floor
                "labels_changed": list(getattr(old, "labels", [])) != list(new.labels),
                "stream_kept": kept_stream,
                **where,
                "at": self._now(),
            },
        )
        if self.engine.personal_notice is not None:  # the head belonged to the old model: re-fit it for the new one
            self.sink.notice("personal_dropped", {"reason": self.engine.personal_notice, "at": self._now()})
            self.engine.personal_notice = None
        if self.personal_watcher is not None:
            self.personal_watcher.request("model swap")

    def apply_personal(self, candidate: Any) -> None:
        """Put a reloaded personal head in force between two hops; a refused file keeps the head in force, a
        removed file takes it away."""
        from instrument_ai.device.model_watch import fingerprint

        where = {"trigger": candidate.trigger, "path": str(self.personal_watcher.path), "load_ms": candidate.load_ms}
        if candidate.bundle is None:
            if fingerprint(self.personal_watcher.path) is None and self.engine.personal is not None:
                self.engine.set_personal(None)
                self.sink.notice("personal_removed", {**where, "at": self._now()})
            elif fingerprint(self.personal_watcher.path) is not None:
                keeping = None if self.engine.personal is None else self.engine.personal.summary()
                self.sink.notice("personal_refused", {"reason": candidate.reason, "keeping": keeping, **where})
            return
        try:
            self.engine.set_personal(candidate.bundle)
        except ValueError:  # fitted for the model before a swap that happened meanwhile: fit it again
            self.personal_watcher.request("model swap")
            return
        self.sink.notice("personal", {**candidate.bundle.summary(), **where, "at": self._now()})

    def _now(self) -> dict[str, Any]:
        return {"time": round(self.engine.stream_time, 3), "hop": self.engine.hops}

    def start_info(self, bundle: Any, model_path: Path, threads: int) -> dict[str, Any]:
        """The `start` record: model, runtime, source, rates, hop, pid and the live outputs' addresses."""
        engine = self.engine
        return {
            "model": str(model_path),
            "model_name": getattr(bundle, "name", "?"),
            "model_version": getattr(bundle, "version", "?"),
            "runtime": getattr(bundle, "runtime", "?"),
            "threads": threads,
            "labels": list(engine.labels),
            **self.audio.describe(),
            "model_rate": engine.model_rate,
            "hop_seconds": round(engine.hop_samples / engine.model_rate, 4),
            "decision": engine.decision_info(),
            "pid": os.getpid(),
            **({"personal": engine.personal.summary()} if engine.personal is not None else {}),
            **self.live_info,
        }

    def loop(
        self,
        bundle: Any,
        model_path: Path,
        threads: int,
        stats_every: float,
        duration: float | None,
        started: float,
    ) -> None:
        """Run until the source ends, a stop signal, `duration` seconds of stream or a closed output.

        A failing source raises `sources.SourceError` after the hops before it were reported.
        """
        audio, engine, sink, signals = self.audio, self.engine, self.sink, self.signals
        info = self.start_info(bundle, model_path, threads)
        sink.start(info)
        if self.personal_unusable:
            sink.notice("personal_refused", {"reason": self.personal_unusable, "keeping": None})
        first_hop_s: float | None = None
        next_stats = time.monotonic() + stats_every if stats_every else None
        ended_by = "end of source"

        costs = self.costs
        pending_s = 0.0  # main-loop time spent on blocks since the last hop

        def emit(events: list[Any]) -> None:
            nonlocal first_hop_s
            if events and first_hop_s is None:
                first_hop_s = time.perf_counter() - started
            stats = _source_stats(audio)
            for event in events:
                sink.hop(event, stats)

        for block in audio.blocks(signals.stop):
            block_started = time.perf_counter()
            events = engine.process_hops(block)
            emit(events)
            pending_s += time.perf_counter() - block_started
            if events:  # the cost of a hop: every block that built it, the engine and every output
                for _ in events:
                    costs.add(pending_s * 1e3 / len(events))
                pending_s = 0.0
            if signals.reload.is_set():
                signals.reload.clear()
                self.watcher.request("SIGHUP")
                if self.personal_watcher is not None:
                    self.personal_watcher.request("SIGHUP")
            candidate = self.watcher.take()
            if candidate is not None:
                self.apply(candidate)
            if self.personal_watcher is not None:
                personal = self.personal_watcher.take()
                if personal is not None:
                    self.apply_personal(personal)
            if next_stats is not None and time.monotonic() >= next_stats:
                sink.stats(self.summary())
                next_stats = time.monotonic() + stats_every
            if self.out.broken:
                ended_by = "output closed"
                break
            if duration is not None and engine.stream_time >= duration:
                ended_by = "duration"
                break
        if signals.stop.is_set():
            ended_by = signals.received or "stop"
        elif ended_by == "end of source":
            emit(engine.flush())
        final = self.summary()
        final.update(reason=ended_by, first_hop_seconds=round(first_hop_s, 3) if first_hop_s is not None else None)
        sink.close(final)
        if self.out.lost:  # the stop record may not have reached the output: the operator still gets the figures
            self.report({"type": "stop", "output": self.out.name, **final})

"""`instrument-ai run` (the daemon), `classify FILE...` and `devices`.

Exit codes (also in `run --help`):

* 0 - the source ended (file, stdin, demo, --duration) or SIGINT / SIGTERM stopped the stream cleanly;
* 1 - an error the user can fix: bad model, unreadable file, audio device failed;
* 2 - a usage error (bad option) - the systemd unit does not restart on it;
* 3 - no microphone / no PortAudio (plain `run` points to `--source demo` and `devices`).

Signals: SIGINT and SIGTERM stop within one hop (sources poll a stop event
every 50 ms); SIGHUP reloads the model (``--model-dir``'s ``current.tflite``
again, after `flash` or `rollback`) between two hops and reports a swap.

Only light imports at module level: this runs on the Pi with numpy, the
interpreter, sounddevice and soundfile, and must never pull tensorflow/librosa.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from instrument_ai.device.commands.live_options import LIVE_KEYS, live_options, open_live, parse_live_options
from instrument_ai.device.commands.options import FiniteFloat
from instrument_ai.device.line_output import LineOutput, OutputOpenError, report_to_stderr
from instrument_ai.device.model_watch import ModelRefused, ModelWatcher, check_runnable, fingerprint

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_AUDIO = 0, 1, 2, 3
EXIT_CODES_HELP = (
    "Exit codes: 0 source ended or stopped by SIGINT/SIGTERM; 1 error (model, file, device); "
    "2 usage error; 3 no microphone / no PortAudio."
)
MODEL_ENV = "INSTRUMENT_AI_MODEL"
CURRENT = "current.tflite"


class RunError(click.ClickException):
    """A one-line error with its documented exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click types it as a ClassVar


# -- models ---------------------------------------------------------------------------------------


def default_model_candidates() -> list[Path]:
    """Where a model is looked for when neither --model nor --model-dir is given, in order."""
    out = []
    if os.environ.get(MODEL_ENV):
        out.append(Path(os.environ[MODEL_ENV]))
    out.append(Path.cwd() / "models" / "default.tflite")
    out.append(Path(__file__).resolve().parents[2] / "models" / "default.tflite")  # a source checkout
    return out


def resolve_model(model: Path | None, model_dir: Path | None) -> Path:
    """The bundle file to load; RunError when there is none."""
    if model is not None and model_dir is not None:
        raise RunError("give either --model or --model-dir, not both", EXIT_USAGE)
    if model is not None:
        return model
    if model_dir is not None:
        from instrument_ai.device.lifecycle import repair_if_possible

        if not model_dir.is_dir():
            raise RunError(f"{model_dir}: no such model directory; give the --to DIR of `instrument-ai flash`")
        repair_if_possible(model_dir)  # finish a flash or rollback that was interrupted
        current = model_dir / CURRENT
        if not current.exists():
            raise RunError(f"{model_dir}: no model installed ({CURRENT} missing; use `instrument-ai flash`)")
        return current
    for candidate in default_model_candidates():
        if candidate.is_file():
            return candidate
    raise RunError(f"no model found: give --model FILE or --model-dir DIR (or set {MODEL_ENV})")


def load_bundle(path: Path, threads: int, trusted_key: str | None = None, require_other: bool = False) -> Any:
    """Load and self-test a bundle (and check its signature with a trusted key); any refusal is a one-line RunError.

    `require_other`: a device set up to say `other` for non-instrument sounds refuses a bundle that cannot
    (a 0.3-style 11-family model would name an instrument for every voice and door in the room).
    """
    from instrument_ai.device.bundle import BundleError, load

    if trusted_key is not None:  # a bad key is configuration (exit 2: systemd does not restart on it)
        from instrument_ai.device.ed25519 import load_public_key

        try:
            load_public_key(trusted_key)
        except (ValueError, OSError) as exc:
            raise RunError(f"--trusted-key: {exc}; give 64 hex characters or a file holding them", EXIT_USAGE) from None
    try:
        bundle = load(path, num_threads=threads, trusted_key=trusted_key)
    except BundleError as exc:
        raise RunError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - an interpreter's own error types: still one line, never a traceback
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise RunError(f"{path}: cannot load model ({type(exc).__name__}: {reason})") from None
    if require_other:
        from instrument_ai.device.openset import OpenSetError
        from instrument_ai.device.openset import require_other as check_other

        try:
            check_other(bundle.labels, str(path))
        except OpenSetError as exc:
            raise RunError(f"{exc} (--require-other)", EXIT_USAGE) from None
    return bundle


def _model_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option("--model", type=click.Path(path_type=Path), help="Bundle (.tflite) to use."),
            click.option(
                "--model-dir",
                type=click.Path(path_type=Path, file_okay=False),
                help=f"Model directory (uses its {CURRENT}, as installed by `flash`).",
            ),
            click.option(
                "--trusted-key",
                default=None,
                help="Accept only bundles signed by this ed25519 public key (hex or key file), reloads included.",
            ),
            click.option(
                "--threads", type=click.IntRange(1, 64), default=1, show_default=True, help="Interpreter threads."
            ),
            click.option(
                "--require-other",
                is_flag=True,
                help="Refuse a bundle without an 'other' output (at start and on every reload).",
            ),
            click.option(
                "--hop", type=FiniteFloat(0.01, 10.0), default=None, help="Seconds between decisions [bundle's]."
            ),
            click.option("--smooth", type=click.IntRange(1, 100), default=3, show_default=True, help="Hops averaged."),
            click.option(
                "--silence-db",
                type=FiniteFloat(-200.0, 0.0),
                default=-60.0,
                show_default=True,
                help="Hops quieter than this RMS level (dBFS) are silence.",
            ),
            click.option(
                "--min-confidence",
                type=FiniteFloat(0.0, 1.0),
                default=0.4,
                show_default=True,
                help="Below this smoothed probability the label is 'unknown'.",
            ),
            click.option("--top-k", type=click.IntRange(1, 20), default=3, show_default=True, help="Classes reported."),
            click.option(
                "--onset-align/--no-onset-align",
                default=True,
                show_default=True,
                help="Right after an onset, start the window at the note (padded) rather than in the silence before.",
            ),
        ]
    ):
        func = option(func)
    return func


def _engine(bundle: Any, rate: int, channels: int, opts: dict[str, Any], source: str = "input") -> Any:
    from instrument_ai.device.engine import Classifier, UnsupportedRate

    try:
        return Classifier(
            bundle,
            hop_seconds=opts["hop"],
            smooth=opts["smooth"],
            silence_db=opts["silence_db"],
            min_confidence=opts["min_confidence"],
            top_k=opts["top_k"],
            input_rate=rate,
            channels=channels,
            align_onsets=opts["onset_align"],
        )
    except UnsupportedRate as exc:  # a file's fault (1), but stdin's rate is the --samplerate option (2)
        if source == "stdin":
            raise RunError(f"--samplerate: {exc}; give a common rate such as 16000 or 44100", EXIT_USAGE) from None
        raise RunError(f"{source}: {exc}") from None
    except ValueError as exc:
        raise RunError(str(exc), EXIT_USAGE) from None


# -- outputs --------------------------------------------------------------------------------------


class JsonSink:
    """One JSON object per line: start, change (and hop), notices, stats, stop."""

    def __init__(self, out: Any, every_hop: bool) -> None:
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

    def __init__(self, out: Any, every_hop: bool) -> None:
        self.out, self.every_hop = out, every_hop

    def _line(self, text: str) -> None:
        self.out.write_line(text)

    def start(self, info: dict[str, Any]) -> None:
        self._line(
            f"instrument-ai run: model {info['model_name']} {info['model_version']} ({info['model']}), "
            f"runtime {info['runtime']}, threads {info['threads']}; source {info['source']} "
            f"{info['rate']} Hz x{info['channels']} -> {info['model_rate']} Hz, hop {info['hop_seconds']} s"
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


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; else the peak from getrusage)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


# -- run ------------------------------------------------------------------------------------------


def _open_source(source: str, device: str | None, samplerate: int | None, channels: int | None, fast: bool) -> Any:
    from instrument_ai.device import sources

    try:
        if source == "mic":
            return sources.MicSource(device, samplerate=samplerate, channels=channels or 1)
        if device is not None:
            raise RunError("--device applies only to --source mic", EXIT_USAGE)
        if source == "-":
            if samplerate is None:
                raise RunError("--source - (raw 16-bit PCM on stdin) needs --samplerate", EXIT_USAGE)
            return sources.StdinSource(samplerate, channels or 1)
        if samplerate is not None:
            raise RunError("--samplerate applies only to --source mic or -; a file has its own rate", EXIT_USAGE)
        if channels is not None:
            raise RunError("--channels applies only to --source mic or -; a file has its own channels", EXIT_USAGE)
        if source == "demo":
            return sources.demo_source(realtime=not fast)
        return sources.FileSource(source, realtime=not fast)
    except sources.NoMicrophoneError as exc:
        raise RunError(str(exc), EXIT_NO_AUDIO) from None
    except sources.SourceError as exc:
        raise RunError(str(exc), EXIT_NO_AUDIO if source == "mic" else EXIT_ERROR) from None


def _set_later(event: threading.Event) -> None:
    """Set `event` from a signal handler without deadlocking.

    A handler runs in the main thread between two bytecodes, possibly while
    that thread holds the event's internal lock inside `event.wait()`;
    `event.set()` right there would wait for that lock forever (the daemon then
    ignores SIGTERM). A helper thread takes the lock once the main thread lets go.
    """
    threading.Thread(target=event.set, name="signal-set", daemon=True).start()


class _Signals:
    """SIGINT/SIGTERM set `stop`, SIGHUP sets `reload`; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._on_stop)
        if hasattr(signal, "SIGHUP"):
            self._old[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: _set_later(self.reload))
        return self

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name
        _set_later(self.stop)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@click.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--source",
    default="mic",
    show_default=True,
    help="mic, demo (the shipped recording), - (raw s16le PCM on stdin) or an audio FILE.",
)
@click.option("--device", default=None, help="Input device: index or part of its name (see `instrument-ai devices`).")
@click.option(
    "--samplerate", type=click.IntRange(1000, 384000), default=None, help="Input rate [mic: its native rate]."
)
@click.option("--channels", type=click.IntRange(1, 32), default=None, help="Input channels (downmixed) [1].")
@click.option("--fast", is_flag=True, help="Read a FILE (or demo) as fast as possible instead of at real time.")
@_model_options
@click.option(
    "--reload-poll",
    type=FiniteFloat(min=0),
    default=1.0,
    show_default=True,
    help="With --model-dir: seconds between looks at current.tflite for a new model (0: only on SIGHUP).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event on stdout (or --output).")
@click.option("--every-hop", is_flag=True, help="Report every hop, not only label changes.")
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Append events to FILE, not stdout (a failing write - full disk - is counted and reported on stderr).",
)
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal (no live view).")
@click.option("--stats", "stats_every", type=FiniteFloat(min=0), default=0, help="Summary every N seconds (0: off).")
@click.option("--duration", type=FiniteFloat(min=0), default=None, help="Stop after N seconds of stream time.")
@live_options
def run(
    source: str,
    device: str | None,
    samplerate: int | None,
    channels: int | None,
    fast: bool,
    model: Path | None,
    model_dir: Path | None,
    trusted_key: str | None,
    threads: int,
    reload_poll: float,
    as_json: bool,
    every_hop: bool,
    output: Path | None,
    plain: bool,
    stats_every: float,
    duration: float | None,
    **engine_opts: Any,
) -> None:
    """Classify a live stream continuously and report each change of instrument family.

    \b
    Model: --model, --model-dir, else $INSTRUMENT_AI_MODEL, else models/default.tflite.
    Hot reload: with --model-dir a new current.tflite (from `flash` or `rollback`) is noticed
    within --reload-poll seconds, or at once on SIGHUP; it is loaded and self-tested in the
    background while the audio keeps flowing, then swapped in between two hops ("swap" event).
    A bundle that fails (digests, --trusted-key, self-test, a trial run) is refused with a
    "model_refused" event and the old model keeps running.
    Signals: SIGINT/SIGTERM stop within one hop; SIGHUP reloads the model between hops.
    Live page: --http HOST:PORT serves it with /events, /status, /healthz and /metrics (read-only);
    beyond loopback it needs --http-token-file (or --http-open). --mqtt HOST[:PORT] publishes events,
    the retained state and Home Assistant discovery (see docs/raspberry-pi.md).
    """
    started = time.perf_counter()
    require_other = bool(engine_opts.pop("require_other", False))
    live_config = parse_live_options({key: engine_opts.pop(key) for key in LIVE_KEYS})
    if fast and source in ("mic", "-"):
        raise RunError("--fast applies only to a FILE or demo source", EXIT_USAGE)
    if model is not None and model_dir is not None:
        raise RunError("give either --model or --model-dir, not both", EXIT_USAGE)
    audio = _open_source(source, device, samplerate, channels, fast)  # first: "no microphone" is the likeliest
    try:
        model_path = resolve_model(model, model_dir)
        loaded = fingerprint(model_path)  # before the load: a change during it is seen by the first poll
        bundle = load_bundle(model_path, threads, trusted_key, require_other)
        engine = _engine(bundle, audio.rate, audio.channels, engine_opts, audio.name)
        report = report_to_stderr(as_json=as_json)
        with contextlib.ExitStack() as stack:
            if output is not None:
                try:
                    out = LineOutput.open_file(output, report)
                except OutputOpenError as exc:
                    raise RunError(str(exc.strerror)) from None
                stack.callback(out.close)
            else:
                out = LineOutput.for_stream(sys.stdout, report)
            if as_json:
                sink: Any = JsonSink(out, every_hop)
            elif output is None and sys.stdout.isatty() and not plain:
                from instrument_ai.device.live_view import LiveView

                sink = LiveView(sys.stdout, top_k=engine.top_k)
            else:
                sink = TextSink(out, every_hop)
            live = stack.enter_context(open_live(live_config, audio, report))
            if live is not None:
                from instrument_ai.device.live_state import TeeSink

                sink = TeeSink(sink, [live.state], report)
            signals = stack.enter_context(_Signals())
            audio.notify = sink.notice

            def prepare(path: Path) -> Any:
                return prepare_bundle(path, threads, trusted_key, engine_opts, audio.rate, audio.channels,
                                      require_other=require_other)  # fmt: skip

            watcher = ModelWatcher(model_path, prepare, poll_seconds=reload_poll if model_dir else None, loaded=loaded)
            stack.callback(watcher.close)
            watcher.start()
            daemon = _Daemon(audio, engine, sink, out, signals, watcher, report, live)
            daemon.loop(bundle, model_path, threads, stats_every, duration, started)
    finally:
        close = getattr(audio, "close", None)
        if close is not None:
            close()


def prepare_bundle(
    path: Path,
    threads: int,
    trusted_key: str | None,
    opts: dict[str, Any],
    rate: int,
    channels: int,
    *,
    require_other: bool = False,
) -> Any:
    """A reload candidate: load, verify and self-test it, then trial-run this daemon's pipeline on it.

    Runs in the watcher's thread; ModelRefused (one line) for every reason to keep the old model.
    """
    try:
        bundle = load_bundle(path, threads, trusted_key, require_other)
    except RunError as exc:
        raise ModelRefused(exc.format_message()) from None
    trial_opts = {**opts, "silence_db": -200.0}  # the trial tests the model path, whatever the daemon's gate

    def make_engine(candidate: Any) -> Any:
        try:
            return _engine(candidate, rate, channels, trial_opts)
        except RunError as exc:
            raise ModelRefused(f"{path}: {exc.format_message()}") from None

    check_runnable(bundle, make_engine, rate, channels)
    return bundle


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


class _Daemon:
    """The main loop of `run`: blocks in, events out; model swaps and refusals between blocks; survives its output."""

    def __init__(
        self,
        audio: Any,
        engine: Any,
        sink: Any,
        out: LineOutput,
        signals: _Signals,
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
                "labels_changed": list(getattr(old, "labels", [])) != list(new.labels),
                "stream_kept": kept_stream,
                **where,
                "at": self._now(),
            },
        )

    def _now(self) -> dict[str, Any]:
        return {"time": round(self.engine.stream_time, 3), "hop": self.engine.hops}

    def loop(
        self,
        bundle: Any,
        model_path: Path,
        threads: int,
        stats_every: float,
        duration: float | None,
        started: float,
    ) -> None:
        from instrument_ai.device.sources import SourceError

        audio, engine, sink, signals = self.audio, self.engine, self.sink, self.signals
        info = {
            "model": str(model_path),
            "model_name": getattr(bundle, "name", "?"),
            "model_version": getattr(bundle, "version", "?"),
            "runtime": getattr(bundle, "runtime", "?"),
            "threads": threads,
            "labels": list(engine.labels),
            **audio.describe(),
            "model_rate": engine.model_rate,
            "hop_seconds": round(engine.hop_samples / engine.model_rate, 4),
            "pid": os.getpid(),
            **self.live_info,
        }
        sink.start(info)
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

        try:
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
                candidate = self.watcher.take()
                if candidate is not None:
                    self.apply(candidate)
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
        except SourceError as exc:
            raise RunError(str(exc)) from None
        final = self.summary()
        final.update(reason=ended_by, first_hop_seconds=round(first_hop_s, 3) if first_hop_s is not None else None)
        sink.close(final)
        if self.out.lost:  # the stop record may not have reached the output: the operator still gets the figures
            self.report({"type": "stop", "output": self.out.name, **final})


# -- classify -------------------------------------------------------------------------------------


DEFAULT_MAX_SECONDS = 3600.0


def classify_file(
    path: str, bundle: Any, opts: dict[str, Any], max_seconds: float | None = DEFAULT_MAX_SECONDS
) -> dict[str, Any]:
    """Stream a file through a Classifier; the file's answer averages the raw probabilities of its sounding hops.

    A file longer than `max_seconds` (by its header) is refused before a sample is read: one answer for an
    hour of audio means little, and a 2 GB file would take minutes.
    """
    from instrument_ai.device.file_answer import file_answer
    from instrument_ai.device.sources import FileSource, SourceError

    source = FileSource(path, realtime=False)
    seconds = source.frames / source.rate
    if max_seconds is not None and seconds > max_seconds:
        raise SourceError(
            f"{path}: {seconds:.1f} s of audio, longer than --max-seconds {max_seconds:g} s "
            "(classify names one family per file; stream long recordings with `instrument-ai run --source FILE`)"
        )
    try:
        engine = _engine(bundle, source.rate, source.channels, opts, path)
    except RunError as exc:
        if exc.exit_code == EXIT_USAGE:
            raise
        raise SourceError(exc.format_message()) from None  # this file's rate: the other files still run
    hops = []
    for block in source.blocks(threading.Event()):
        hops += engine.process_hops(block)
    hops += engine.flush()
    result: dict[str, Any] = {
        "file": path,
        "seconds": round(engine.stream_time, 3),
        "sample_rate": source.rate,
        "channels": source.channels,
        "hops": len(hops),
    }
    result.update(file_answer(hops, list(engine.labels), engine.top_k))
    result["timeline"] = hops
    return result


@click.command(epilog="Exit codes: 0 all files classified; 1 some file or the model could not be used; 2 usage error.")
@click.argument("files", nargs=-1, required=True)
@_model_options
@click.option("--timeline", is_flag=True, help="Also report every hop (time, label, confidence).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
@click.option(
    "--max-seconds",
    type=FiniteFloat(min=0, min_open=True),
    default=DEFAULT_MAX_SECONDS,
    show_default=True,
    help="Refuse files longer than this (checked from the header, before reading).",
)
def classify(
    files: tuple[str, ...],
    model: Path | None,
    model_dir: Path | None,
    trusted_key: str | None,
    threads: int,
    timeline: bool,
    as_json: bool,
    max_seconds: float,
    **engine_opts: Any,
) -> None:
    """Name the instrument family of each audio FILE (any length, rate, channels; wav/flac/ogg...).

    Any sample format libsndfile reads works (8/16/24/32-bit integer, float, double; mono or
    multichannel; any rate). Refused with one line each: empty, non-audio, truncated WAV,
    NaN/Inf samples, directories, devices, files over --max-seconds.
    """
    require_other = bool(engine_opts.pop("require_other", False))
    bundle = load_bundle(resolve_model(model, model_dir), threads, trusted_key, require_other)
    try:
        failed = _classify_all(files, bundle, engine_opts, max_seconds, timeline, as_json)
    except BrokenPipeError:  # `| head`: the reader has what it wanted; stop quietly like `run`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if failed:
        raise RunError(f"{failed} of {len(files)} file(s) could not be classified")


def _classify_all(
    files: tuple[str, ...], bundle: Any, engine_opts: dict[str, Any], max_seconds: float, timeline: bool, as_json: bool
) -> int:
    from instrument_ai.device.live_view import change_line
    from instrument_ai.device.sources import SourceError

    failed = 0
    for path in files:
        try:
            result = classify_file(path, bundle, engine_opts, max_seconds)
        except SourceError as exc:
            if len(files) == 1 and not as_json:  # one file: its reason is the one line
                raise RunError(str(exc)) from None
            failed += 1
            if as_json:
                click.echo(json.dumps({"file": path, "error": str(exc)}))
            click.echo(f"instrument-ai classify: {exc}", err=True)
            continue
        events = result.pop("timeline")
        if as_json:
            if timeline:
                result["timeline"] = [e.to_dict() for e in events]
            click.echo(json.dumps(result))
            continue
        top = "  ".join(f"{t['label']} {t['p']:.2f}" for t in result["top_k"])
        held = f", held {result['share']:.0%} of sounding hops" if result["share"] else ""
        click.echo(f"{path}: {result['label']} {result['confidence']:.2f}  [{top}]  ({result['seconds']} s{held})")
        if timeline:
            for event in events:
                click.echo("  " + change_line(event))
    return failed


# -- devices --------------------------------------------------------------------------------------


@click.command(epilog="Exit codes: 0 listed (possibly none); 3 PortAudio is not available.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input device.")
def devices(as_json: bool) -> None:
    """List audio input devices with their native sample rates (use one with `run --device`)."""
    from instrument_ai.device.sources import NoMicrophoneError, input_devices

    try:
        found = input_devices()
    except NoMicrophoneError as exc:
        raise RunError(str(exc), EXIT_NO_AUDIO) from None
    if as_json:
        for entry in found:
            click.echo(json.dumps(entry))
        return
    if not found:
        click.echo("no audio input devices found (plug in a microphone, or try `instrument-ai run --source demo`)")
        return
    click.echo(f"{'':2}{'index':>5}  {'native rate':>11}  {'ch':>3}  {'host API':<12} name")
    for entry in found:
        mark = "*" if entry["default"] else " "
        rate = f"{entry['rate']:>8} Hz"
        click.echo(
            f"{mark:2}{entry['index']:>5}  {rate}  {entry['channels']:>3}  {entry['hostapi']:<12} {entry['name']}"
        )
    click.echo("(* = default; the stream opens at the native rate and resamples to the model's rate)")

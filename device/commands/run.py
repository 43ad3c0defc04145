"""`instrument-ai run` (the daemon), `classify FILE...` and `devices`: thin shells over the library.

Exit codes (also in `run --help`):

* 0 - the source ended (file, stdin, demo, --duration) or SIGINT / SIGTERM stopped the stream cleanly;
* 1 - an error the user can fix: bad model, unreadable file, audio device failed;
* 2 - a usage error (bad option) - the systemd unit does not restart on it;
* 3 - no microphone / no PortAudio (plain `run` points to `--source demo` and `devices`).

Signals: SIGINT and SIGTERM stop within one hop (sources poll a stop event
every 50 ms); SIGHUP reloads the model (``--model-dir``'s ``current.tflite``
again, after `flash` or `rollback`) between two hops and reports a swap.

The work is in the library: `model_files` (discovery, loading, reload candidates), `daemon` (the loop and
its signals), `sinks` (JSON and text records), `files` (`classify_file`). Only light imports at module
level: this runs on the Pi with numpy, the interpreter, sounddevice and soundfile, never tensorflow/librosa.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from instrument_ai.device import model_files
from instrument_ai.device.commands.live_options import LIVE_KEYS, live_options, open_live, parse_live_options
from instrument_ai.device.commands.options import (
    ENGINE_OPTIONS,
    EXIT_ERROR,
    EXIT_NO_AUDIO,
    EXIT_OK,
    EXIT_USAGE,
    MODEL_OPTIONS,
    FiniteFloat,
    RunError,
    cli_message,
    find_model,
    library_errors,
    load_model,
    personal_head,
    settings_from_options,
)
from instrument_ai.device.daemon import Daemon, Signals
from instrument_ai.device.files import DEFAULT_MAX_SECONDS
from instrument_ai.device.lifecycle import record_running
from instrument_ai.device.line_output import LineOutput, OutputOpenError, report_to_stderr
from instrument_ai.device.model_watch import ModelWatcher, fingerprint
from instrument_ai.device.settings import EngineSettings
from instrument_ai.device.sinks import JsonSink, Sink, TeeSink, TextSink
from instrument_ai.device.sources import SourceError

__all__ = ["EXIT_ERROR", "EXIT_NO_AUDIO", "EXIT_OK", "EXIT_USAGE", "RunError", "classify", "devices", "run"]

EXIT_CODES_HELP = (
    "Exit codes: 0 source ended or stopped by SIGINT/SIGTERM; 1 error (model, file, device); "
    "2 usage error; 3 no microphone / no PortAudio."
)


def make_engine(bundle: Any, rate: int, channels: int, settings: EngineSettings, source: str) -> Any:
    """The stream's Classifier; a rate it cannot take is one line (stdin's rate is the --samplerate option)."""
    from instrument_ai.device.engine import Classifier, UnsupportedRate

    try:
        return Classifier(bundle, settings=settings, input_rate=rate, channels=channels)
    except UnsupportedRate as exc:  # a file's fault (1), but stdin's rate is the --samplerate option (2)
        if source == "stdin":
            raise RunError(f"--samplerate: {exc}; give a common rate such as 16000 or 44100", EXIT_USAGE) from None
        raise RunError(f"{source}: {exc}") from None
    except ValueError as exc:
        raise RunError(str(exc), EXIT_USAGE) from None


def _open_source(
    source: str, device: str | None, samplerate: int | None, channels: int | None, fast: bool, loop: bool = False
) -> Any:
    from instrument_ai.device import sources

    try:
        if source == "mic":
            return sources.MicSource(device, samplerate=samplerate, channels=channels or 1)
        if device is not None:
            raise RunError("--device applies only to --source mic", EXIT_USAGE)
        if source == "-":
            if samplerate is None:
                raise RunError("--source - (raw 16-bit PCM on stdin) needs --samplerate", EXIT_USAGE)
            if sys.stdin is None:  # started with `<&-`: nothing to read the audio from
                raise RunError("--source -: stdin is closed; pipe raw 16-bit PCM into it (arecord ... |)", EXIT_USAGE)
            return sources.StdinSource(samplerate, channels or 1)
        if samplerate is not None:
            raise RunError("--samplerate applies only to --source mic or -; a file has its own rate", EXIT_USAGE)
        if channels is not None:
            raise RunError("--channels applies only to --source mic or -; a file has its own channels", EXIT_USAGE)
        if source == "demo":
            return sources.demo_source(realtime=not fast, loop=loop)
        return sources.FileSource(source, realtime=not fast, loop=loop)
    except sources.NoMicrophoneError as exc:
        raise RunError(str(exc), EXIT_NO_AUDIO) from None
    except sources.SourceError as exc:
        raise RunError(str(exc), EXIT_NO_AUDIO if source == "mic" else EXIT_ERROR) from None


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
@click.option(
    "--loop", is_flag=True, help="Play a FILE (or demo) again from the start at its end, until stopped or --duration."
)
@MODEL_OPTIONS
@ENGINE_OPTIONS
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
    loop: bool,
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
    personal: Path | None,
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
    Personal head (`enrol`): --personal FILE or --model-dir's personal.bin, applied at every hop,
    reloaded like the model ("personal"; a damaged file: "personal_refused", the old head stays).
    Live page: --http HOST:PORT serves it with /events, /status, /healthz and /metrics (read-only);
    beyond loopback it needs --http-token-file (or --http-open). --mqtt HOST[:PORT] publishes events,
    the retained state and Home Assistant discovery (see docs/raspberry-pi.md).
    """
    started = time.perf_counter()
    require_other = bool(engine_opts.pop("require_other", False))
    live_config = parse_live_options({key: engine_opts.pop(key) for key in LIVE_KEYS})
    settings = settings_from_options(engine_opts)
    for flag, given in (("--fast", fast), ("--loop", loop)):
        if given and source in ("mic", "-"):
            raise RunError(f"{flag} applies only to a FILE or demo source", EXIT_USAGE)
    model_path = find_model(model, model_dir)  # --model and --model-dir, or a named model missing: exit 2 first
    audio = _open_source(source, device, samplerate, channels, fast, loop)  # then "no microphone", the likeliest
    try:
        loaded = fingerprint(model_path)  # before the load: a change during it is seen by the first poll
        bundle = load_model(model_path, threads, trusted_key, require_other)
        if loaded is not None:  # flash never prunes the version a daemon runs (issue 21, defect 4)
            record_running(Path(loaded.target))
        engine = make_engine(bundle, audio.rate, audio.channels, settings, audio.name)
        personal_setup = _personal_setup(personal, model_dir, bundle, engine)
        report = report_to_stderr(as_json=as_json)
        with contextlib.ExitStack() as stack:
            out = _open_output(stack, output, report)
            sink = _primary_sink(out, as_json, every_hop, plain or output is not None, engine.top_k)
            live = stack.enter_context(open_live(live_config, audio, report))
            if live is not None:
                sink = TeeSink(sink, [live.state], report)
            signals = stack.enter_context(Signals())
            audio.notify = sink.notice

            def prepare(path: Path) -> Any:
                return model_files.prepare_bundle(path, threads, trusted_key, settings, audio.rate, audio.channels,
                                                  require_other=require_other, describe=cli_message)  # fmt: skip

            watcher = ModelWatcher(model_path, prepare, poll_seconds=reload_poll if model_dir else None, loaded=loaded)
            stack.callback(watcher.close)
            watcher.start()
            daemon = Daemon(audio, engine, sink, out, signals, watcher, report, live)
            _watch_personal(stack, daemon, personal_setup, reload_poll if model_dir else None)
            try:
                daemon.loop(bundle, model_path, threads, stats_every, duration, started)
            except SourceError as exc:
                raise RunError(str(exc)) from None
    finally:
        close = getattr(audio, "close", None)
        if close is not None:
            close()


def _personal_setup(personal: Path | None, model_dir: Path | None, bundle: Any, engine: Any) -> tuple[Any, Any, Any]:
    """Put `--personal` (or the model directory's personal.bin) in force: (its path, fingerprint, why unusable)."""
    head, path, unusable = personal_head(personal, model_dir, bundle)
    seen = fingerprint(path) if path is not None else None  # before the daemon starts: a change is seen by a poll
    engine.set_personal(head)
    return path, seen, unusable


def _watch_personal(
    stack: contextlib.ExitStack, daemon: Daemon, setup: tuple[Any, Any, Any], poll: float | None
) -> None:
    """Reload the personal file like the model (when there is a path to watch)."""
    path, seen, unusable = setup
    if path is None:
        return
    daemon.personal_watcher = _personal_watcher(path, daemon, poll, seen)
    stack.callback(daemon.personal_watcher.close)
    daemon.personal_watcher.start()
    daemon.personal_unusable = unusable


def _personal_watcher(path: Path, daemon: Daemon, poll: float | None, seen: Any) -> ModelWatcher:
    """A watcher of the personal file: a new file is loaded and fitted for the model in force, aside."""
    from instrument_ai.device.enrol import head_for
    from instrument_ai.device.errors import InstrumentAIError
    from instrument_ai.device.model_watch import ModelRefused

    def prepare(target: Path) -> Any:
        try:
            return head_for(path, daemon.engine.bundle)
        except InstrumentAIError as exc:
            raise ModelRefused(str(exc)) from None

    return ModelWatcher(path, prepare, poll_seconds=poll, loaded=seen)


def _open_output(stack: contextlib.ExitStack, output: Path | None, report: Any) -> LineOutput:
    """`--output FILE` (appended, closed on exit) or stdout."""
    if output is None:
        if sys.stdout is None:  # started with `>&-`: the events would go nowhere
            raise RunError("stdout is closed; give --output FILE for the events (or leave stdout open)")
        return LineOutput.for_stream(sys.stdout, report)
    try:
        out = LineOutput.open_file(output, report)
    except OutputOpenError as exc:
        raise RunError(str(exc.strerror)) from None
    stack.callback(out.close)
    return out


def _primary_sink(out: LineOutput, as_json: bool, every_hop: bool, plain: bool, top_k: int) -> Sink:
    """JSON lines, the live terminal panel (stdout a terminal), or plain text lines."""
    if as_json:
        return JsonSink(out, every_hop)
    if not plain and sys.stdout.isatty():
        from instrument_ai.device.live_view import LiveView

        return LiveView(sys.stdout, top_k=top_k)
    return TextSink(out, every_hop)


@click.command(epilog="Exit codes: 0 all files classified; 1 some file or the model could not be used; 2 usage error.")
@click.argument("files", nargs=-1, required=True)
@MODEL_OPTIONS
@ENGINE_OPTIONS
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
    personal: Path | None,
    **engine_opts: Any,
) -> None:
    """Name the instrument family of each audio FILE (any length, rate, channels; wav/flac/ogg...).

    Any sample format libsndfile reads works (8/16/24/32-bit integer, float, double; mono or
    multichannel; any rate). Refused with one line each: empty, non-audio, truncated WAV,
    NaN/Inf samples, directories, devices, files over --max-seconds.
    """
    require_other = bool(engine_opts.pop("require_other", False))
    settings = settings_from_options(engine_opts)
    bundle = load_model(find_model(model, model_dir), threads, trusted_key, require_other)
    head, _, unusable = personal_head(personal, model_dir, bundle)
    if unusable:
        click.echo(f"instrument-ai classify: {unusable}; classifying without it", err=True)
    try:
        with library_errors():
            failed = _classify_all(files, bundle, settings, max_seconds, timeline, as_json, head)
    except BrokenPipeError:  # `| head`: the reader has what it wanted; stop quietly like `run`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if failed:
        raise RunError(f"{failed} of {len(files)} file(s) could not be classified")


def _classify_all(
    files: tuple[str, ...],
    bundle: Any,
    settings: EngineSettings,
    max_seconds: float,
    timeline: bool,
    as_json: bool,
    head: Any = None,
) -> int:
    from instrument_ai.device.files import classify_file
    from instrument_ai.device.live_view import change_line

    failed = 0
    for path in files:
        try:
            result = classify_file(path, bundle, settings=settings, max_seconds=max_seconds, personal=head)
        except SourceError as exc:
            message = cli_message(exc)
            if len(files) == 1 and not as_json:  # one file: its reason is the one line
                raise RunError(message) from None
            failed += 1
            if as_json:
                click.echo(json.dumps({"file": path, "error": message}))
            click.echo(f"instrument-ai classify: {message}", err=True)
            continue
        if as_json:
            click.echo(json.dumps(result.to_dict(timeline=timeline)))
            continue
        top = "  ".join(f"{label} {p:.2f}" for label, p in result.top_k)
        held = f", held {result.share:.0%} of sounding hops" if result.share else ""
        click.echo(f"{path}: {result.label} {result.confidence:.2f}  [{top}]  ({result.seconds} s{held})")
        if timeline:
            for event in result.timeline:
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

"""`instrument-ai bench`: measure what the device spends its time on (the shells; the work is in
device/bench_frontend.py, device/bench_runtime.py and device/bench_live.py).

Plain `instrument-ai bench` runs every subcommand of the group that needs no
argument; other benchmarks are added to the same group.

Conventions for a benchmark subcommand (so the group can run it):
* options ``--json`` and ``--repeats`` (use `resolve_common` so that
  ``instrument-ai bench --json --repeats 50`` reaches every subcommand);
* ``--json`` prints exactly one JSON object per benchmark, with a
  ``"benchmark": "<name>"`` key (plain `bench --json` prints JSON Lines);
* no required argument, or the group skips it when it runs everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from instrument_ai.device.bench_frontend import DEFAULT_REPEATS, format_frontend_report, run_frontend_benchmark
from instrument_ai.device.commands.options import (
    FiniteFloat,
    RunError,
    bundle_file_option,
    library_errors,
    threads_option,
)
from instrument_ai.device.settings import DECISIONS

__all__ = ["bench", "bench_frontend", "format_frontend_report", "live", "resolve_common", "run_frontend_benchmark",
           "runtime"]  # fmt: skip


# -- shared plumbing for the bench group ------------------------------------------------------


def resolve_common(ctx: click.Context, as_json: bool, repeats: int | None) -> tuple[bool, int]:
    """A subcommand's ``--json``/``--repeats``, falling back to the group's (``bench --json frontend``)."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    as_json = as_json or bool(parent.get("as_json"))
    if repeats is None:
        repeats = parent.get("repeats") or DEFAULT_REPEATS
    return as_json, int(repeats)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one JSON object per benchmark).")
@click.option(
    "--repeats", type=click.IntRange(min=5), default=None, help=f"Timed calls per figure [default: {DEFAULT_REPEATS}]."
)
@click.pass_context
def bench(ctx: click.Context, as_json: bool, repeats: int | None) -> None:
    """Measure frontend, interpreter and end-to-end cost. Without a subcommand, run all of them."""
    if ctx.invoked_subcommand is not None:
        return
    for name, command in bench.commands.items():
        needs = [p.name for p in command.params if p.required]
        if needs:
            click.echo(f"bench {name}: skipped (needs {', '.join(str(n) for n in needs)})", err=True)
            continue
        accepted = {p.name for p in command.params}
        forwarded = {key: value for key, value in ctx.params.items() if key in accepted}
        ctx.invoke(command, **forwarded)


@bench.command("frontend")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option(
    "--repeats",
    type=click.IntRange(min=5),
    default=None,
    help=f"Timed calls per candidate [default: {DEFAULT_REPEATS}].",
)
@click.option(
    "--audio",
    "audio_path",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="16 kHz audio to time on (at least 1.25 s) [default: the demo clip].",
)
@click.option(
    "--blas-threads",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Cap BLAS threads while timing, for a fair single-core comparison (0: library default).",
)
@click.pass_context
def bench_frontend(
    ctx: click.Context, as_json: bool, repeats: int | None, audio_path: str | None, blas_threads: int
) -> None:
    """Time our MFCC frontend (batch, streaming) against librosa and python_speech_features, side by side."""
    as_json, repeats = resolve_common(ctx, as_json, repeats)
    with library_errors():
        report = run_frontend_benchmark(repeats=repeats, audio_path=audio_path, blas_threads=blas_threads)
    click.echo(json.dumps(report) if as_json else format_frontend_report(report))


# The runtime benchmark (interpreter, end to end, RSS, start-up, LiteRT vs tensorflow.lite) and the
# live-outputs benchmark (page + SSE + MQTT against a plain run): their work is in device/bench_runtime.py and
# device/bench_live.py; plain `instrument-ai bench` runs them with the others.


@bench.command("runtime")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the tables.")
@click.option("--repeats", type=click.IntRange(min=5), default=None, help="Timed calls per figure [default: 200].")
@bundle_file_option("int8 bundle [models/default.tflite].")
@click.option("--float-model", type=click.Path(path_type=Path, dir_okay=False), help="Float bundle [beside --model].")
@threads_option(default=None, help="The N of '1 and N threads' [CPUs].")
@click.option(
    "--process-runs", type=click.IntRange(0, 20), default=3, show_default=True, help="`run` start-ups timed (0: skip)."
)
@click.option("--no-tensorflow", is_flag=True, help="Skip the tensorflow.lite comparison (it takes seconds).")
@click.option("--decision", type=click.Choice(DECISIONS), default=None, help="The demo's decision rule [bundle's].")
@click.option("--min-confidence", type=FiniteFloat(0.0, 1.0), default=None, help="The demo's floor [bundle's].")
@click.pass_context
def runtime(
    ctx: click.Context,
    as_json: bool,
    repeats: int | None,
    model: Path | None,
    float_model: Path | None,
    threads: int | None,
    process_runs: int,
    no_tensorflow: bool,
    decision: str | None,
    min_confidence: float | None,
) -> None:
    """Interpreter latency (int8/float, 1/N threads), end-to-end cost per hop, decision latency, RSS and start-up."""
    from instrument_ai.device.bench_runtime import format_runtime_report, run_runtime_benchmark
    from instrument_ai.device.bundle import BundleError
    from instrument_ai.device.model_files import default_model_candidates, environment_model

    as_json, repeats = resolve_common(ctx, as_json, repeats)
    if model is None:
        with library_errors():  # a $INSTRUMENT_AI_MODEL that is not there is an error, never skipped
            model = environment_model()
    if model is None:
        model = next((c for c in default_model_candidates() if c.is_file()), None)
    for path in (model, float_model):
        if path is not None and not path.is_file():
            raise RunError(f"{path}: no such bundle")
    try:
        report = run_runtime_benchmark(
            model,
            float_model,
            repeats=repeats,
            threads=threads,
            process_runs=process_runs,
            compare_tensorflow=not no_tensorflow,
            rule={"decision": decision, "min_confidence": min_confidence},
        )
    except BundleError as exc:  # a bundle the device refuses: one line, as everywhere
        raise RunError(str(exc)) from None
    click.echo(json.dumps(report) if as_json else format_runtime_report(report))


@bench.command("live")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--repeats", type=click.IntRange(min=5), default=None, help="Unused (the group's common option).")
@bundle_file_option("Bundle [models/default.tflite].")
@click.option("--runs", type=click.IntRange(1, 20), default=2, show_default=True, help="Runs per configuration.")
@click.option("--loops", type=click.IntRange(1, 100), default=8, show_default=True, help="Demo repetitions per run.")
@click.option("--mqtt", "broker", default=None, help="Broker HOST:PORT [a private mosquitto, when installed].")
@click.option("--realtime", is_flag=True, help="Feed the audio at real time (slower; the daemon's normal pace).")
@click.pass_context
def live(
    ctx: click.Context,
    as_json: bool,
    repeats: int | None,
    model: Path | None,
    runs: int,
    loops: int,
    broker: str | None,
    realtime: bool,
) -> None:
    """Hop cost with the page, two SSE clients (one stuck) and MQTT on, against a plain run; RSS with all on."""
    from instrument_ai.device.bench_live import format_live_report, run_live_benchmark

    as_json, _ = resolve_common(ctx, as_json, repeats)
    if model is not None and not model.is_file():
        raise RunError(f"{model}: no such bundle")
    report = run_live_benchmark(model, runs=runs, loops=loops, broker=broker, realtime=realtime)
    click.echo(json.dumps(report) if as_json else format_live_report(report))

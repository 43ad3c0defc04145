"""`instrument-ai soak`: the shell over `instrument_ai.device.soak` (parse, run the soak, print, exit 1 on failure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from instrument_ai.device.commands.options import (
    FiniteFloat,
    RunError,
    bundle_file_option,
    find_model,
    load_model,
    threads_option,
    trusted_key_option,
)
from instrument_ai.device.soak import GeneratedAudio, LoopedFile, format_report, run_soak
from instrument_ai.device.sources import SourceError


@click.command(
    epilog="Exit codes: 0 no error and RSS growth within the limit; 1 errors, too much growth, interrupted or a "
    "bad model/file; 2 usage error."
)
@click.option("--hours", type=FiniteFloat(min=0, min_open=True), required=True, help="Stream time to process.")
@bundle_file_option(
    "Bundle; give two to alternate them at each swap (one: it is reloaded). [$INSTRUMENT_AI_MODEL, models/]",
    dest="models",
    multiple=True,
)
@click.option(
    "--source", default="generated", show_default=True, help="generated (notes, tones, noise, silence) or a FILE."
)
@click.option(
    "--rate",
    type=click.IntRange(8000, 192000),
    default=48000,
    show_default=True,
    help="Rate of the generated source (a USB microphone's native rate: the resampler is part of the test).",
)
@click.option(
    "--swap-every",
    type=FiniteFloat(min=0),
    default=5.0,
    show_default=True,
    help="Minutes of stream time between model swaps (0: never).",
)
@click.option(
    "--warmup",
    type=FiniteFloat(min=0),
    default=None,
    help="Minutes of stream time before the start RSS is read [10 % of the stream or 1.5 swaps, at most 10].",
)
@click.option("--max-rss-growth-mb", type=FiniteFloat(min=0), default=5.0, show_default=True)
@trusted_key_option("Require bundles signed by this ed25519 public key (as run does).")
@threads_option()
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated source.")
@click.option("--progress", is_flag=True, help="A progress line on stderr every 10 % of the stream.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
def soak(
    hours: float,
    models: tuple[Path, ...],
    source: str,
    rate: int,
    swap_every: float,
    warmup: float | None,
    max_rss_growth_mb: float,
    trusted_key: str | None,
    threads: int,
    seed: int,
    progress: bool,
    as_json: bool,
) -> None:
    """Stream HOURS of audio through engine, frontend and interpreter as fast as possible; report leaks and errors."""
    if len(models) > 2:
        raise RunError("give one or two --model bundles", 2)
    paths = list(models) or [find_model(None, None)]
    bundle = load_model(paths[0], threads, trusted_key)
    try:
        audio: Any = GeneratedAudio(rate, seed) if source == "generated" else LoopedFile(source)
        report = run_soak(bundle, paths, audio, hours=hours, swap_every=swap_every, warmup=warmup, threads=threads,
                          trusted_key=trusted_key, progress=_progress if progress else None)  # fmt: skip
    except SourceError as exc:
        raise RunError(str(exc)) from None
    report["max_rss_growth_mb"] = max_rss_growth_mb
    failures = []
    if report["errors"]:
        failures.append(f"{report['errors']} error(s): {report['error_messages'][0]}")
    if report["rss_growth_mb"] > max_rss_growth_mb:
        failures.append(f"RSS grew {report['rss_growth_mb']:.1f} MB (limit {max_rss_growth_mb:g})")
    if report["interrupted"]:
        failures.append(f"interrupted by {report['interrupted']}")
    report["passed"] = not failures
    click.echo(json.dumps(report) if as_json else format_report(report))
    if failures:
        raise RunError("soak failed: " + "; ".join(failures))


def _progress(line: str) -> None:
    click.echo(line, err=True)

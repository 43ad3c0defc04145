"""`data build` in unit mode: choose the units, build and merge them, print the summary and composition.

The command shell (`data_cli.build_cmd`) parses options; this module turns them
into units (`unit_sources`), runs `units.build_units` and reports: one line per
unit, one line per problem reason (counted, fatal under --strict), the
composition table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click


def choose_units(
    options: Any,
    found: dict[str, Any],
    *,
    sources: str | None,
    from_dir: str | None,
    cache: str | None,
    catalogue: str | None,
    other: bool,
    other_clips: int | None,
    speech_clips: int | None,
    drum_clips: int | None,
    synth: int,
    seed: int,
) -> list[Any]:
    from instrument_ai.train.corpus import build as corpus
    from instrument_ai.train.corpus import unit_sources

    unknown = [n for n in options.libraries if n not in corpus.LIBRARIES]
    if unknown:
        raise click.ClickException(f"unknown library {unknown[0]!r}; known: {', '.join(corpus.LIBRARIES)}")
    absent = [n for n in options.libraries if n not in found]
    if absent:
        raise click.ClickException(f"library {absent[0]} is not installed on this machine (found: {', '.join(found)})")
    from dataclasses import replace

    try:
        corpus.validate_options(replace(options, libraries=corpus.LIBRARIES[:1]))  # the libraries are checked above
    except corpus.CorpusError as exc:
        raise click.ClickException(str(exc)) from None
    chosen = unit_sources.library_units(found, options.libraries, options)
    if sources:
        from instrument_ai.train.corpus.catalogue_units import catalogue_units

        chosen += catalogue_units(sources, options, from_dir=from_dir, cache=cache, catalogue=catalogue)
    if other:
        chosen += unit_sources.other_units(
            found,
            options.libraries,
            noise_clips=unit_sources.DEFAULT_NOISE_CLIPS if other_clips is None else other_clips,
            speech_clips=unit_sources.DEFAULT_SPEECH_CLIPS if speech_clips is None else speech_clips,
            drum_clips=unit_sources.DEFAULT_DRUM_CLIPS if drum_clips is None else drum_clips,
            seed=seed,
        )
    chosen += unit_sources.synth_units(synth, seed=seed, pitch_step=options.pitch_step)
    return chosen


def run_unit_build(out: Path, options: Any, found: dict[str, Any], *, jobs: int, strict: bool, quiet: bool,
                   **choice: Any) -> None:  # fmt: skip
    from instrument_ai.train.corpus import build as corpus
    from instrument_ai.train.corpus import units

    chosen = choose_units(options, found, **choice)

    def progress(total: int, done: int) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, initial=done, unit="note", dynamic_ncols=True, disable=quiet)

    start = time.perf_counter()
    try:
        summary = units.build_units(out, chosen, options, jobs=jobs, strict=strict, progress=progress,
                                    log=lambda msg: click.echo(msg, err=True))  # fmt: skip
    except corpus.CorpusError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or out}: {exc.strerror or exc}") from None
    elapsed = time.perf_counter() - start
    now = [u.name for u in summary.units if u.rendered_now]
    click.echo(
        f"{out}: {summary.notes} notes from {summary.instruments} instruments in {len(summary.units)} units "
        f"({len(now)} rendered now in {elapsed:.0f} s, jobs {jobs})"
    )
    if summary.problems:
        click.echo("problems (counted; --strict makes them fatal):")
        for reason, n in sorted(summary.problems.items()):
            click.echo(f"  {reason} {n}: {summary.first.get(reason, '')}")
    else:
        click.echo("problems: none")
    if not quiet:
        from instrument_ai.train.corpus.composition import composition, print_composition

        print_composition(composition(out))

"""`instrument-ai data`: build, split and inspect NSynth-format corpora.

Importing this module is light (click only); the builder, numpy, rich and tqdm
are imported inside the commands, so `instrument-ai --help` stays fast.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click


def _csv_ints(value: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=what) from None


def _shared_root(value: str | None) -> Path | None:
    from instrument_ai.train.corpus.build import default_shared_libraries

    if value is None:
        return default_shared_libraries()
    path = Path(value)
    if not path.is_dir():
        raise click.ClickException(f"--shared-libraries {value}: no such folder")
    return path


@click.group()
def data() -> None:
    """Build, split and inspect NSynth-format corpora."""


@data.command("libraries")
@click.option("--shared-libraries", "shared", default=None, help="Folder of the shared sample libraries.")
def libraries_cmd(shared: str | None) -> None:
    """List the sample libraries the builder knows and where each was found."""
    from instrument_ai.train.corpus.build import LIBRARIES, LINEAGES, locate_libraries

    found = locate_libraries(_shared_root(shared))
    for name in LIBRARIES:
        source = found.get(name)
        where = f"{source.kind:6s} {source.path}" if source else "not found"
        click.echo(f"{name:17s} lineage {LINEAGES[name]:16s} {where}")


@data.command("build")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Corpus folder.")
@click.option("--libraries", default=None, help="Comma-separated library names (default: all present).")
@click.option("--pitch-step", default=None, type=int, help="Semitones between rendered pitches [default: 3].")
@click.option("--velocities", default=None, help="Comma-separated, from 25,50,75,100,127 [default: 50,100].")
@click.option("--jobs", default=None, type=int, help="Worker processes [default: number of CPUs].")
@click.option("--limit", default=None, type=int, help="Keep only N notes, spread over every instrument (tests).")
@click.option("--shared-libraries", "shared", default=None, help="Shared sample libraries [default: ../shared/...].")
@click.option("--strict", is_flag=True, help="Make any counted problem (unreadable bank, bad file) fatal.")
@click.option("--quiet", is_flag=True, help="No progress bar and no tables.")
@click.option("--units", "use_units", is_flag=True, help="One folder per source under OUT/units (implied below).")
@click.option("--sources", default=None, help="Catalogue sources: comma-separated names, or 'all'.")
@click.option("--from", "from_dir", default=None, help="Folder of clones or bare mirrors (OWNER+NAME, OWNER/NAME).")
@click.option("--cache", default=None, help="Clone cache of `data fetch` [default: ~/.cache/instrument-ai/sources].")
@click.option("--catalogue", default=None, help="Source catalogue [default: the shipped train/sources/sources.toml].")
@click.option("--other", "other", is_flag=True, help="Add the `other` class: noise, speech and drum-kit clips.")
@click.option("--other-clips", default=None, type=int, help="numpy noise/hum/click clips [default: 3000].")
@click.option("--speech-clips", default=None, type=int, help="espeak-ng speech clips [default: 1200].")
@click.option("--drum-clips", default=None, type=int, help="Drum-kit clips per single-file SoundFont [default: 400].")
@click.option("--synth", default=0, type=int, help="Add N synthesiser instruments.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generators (other, synth).")
def build_cmd(
    out: Path,
    libraries: str | None,
    pitch_step: int | None,
    velocities: str | None,
    jobs: int | None,
    limit: int | None,
    shared: str | None,
    strict: bool,
    quiet: bool,
    use_units: bool,
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
) -> None:
    """Render notes from the sample libraries (and catalogue sources, `other` clips, synth notes) into OUT.

    With --sources, --other, --synth or --units every library and source is its own unit under OUT/units
    (a rebuild renders only new or changed units) and OUT is their merge in NSynth's layout.
    """
    from instrument_ai.train.corpus import build as corpus

    found = corpus.locate_libraries(_shared_root(shared))
    names = tuple(n.strip() for n in libraries.split(",") if n.strip()) if libraries else tuple(found)
    options = corpus.BuildOptions(
        libraries=names,
        pitch_step=corpus.DEFAULT_PITCH_STEP if pitch_step is None else pitch_step,
        velocities=corpus.DEFAULT_VELOCITIES if velocities is None else _csv_ints(velocities, "--velocities"),
        limit=limit,
    )
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    if jobs < 1:
        raise click.BadParameter(f"must be >= 1, got {jobs}", param_hint="--jobs")
    for value, hint in ((other_clips, "--other-clips"), (speech_clips, "--speech-clips"), (drum_clips, "--drum-clips"),
                        (synth, "--synth")):  # fmt: skip
        if value is not None and value < 0:
            raise click.BadParameter(f"must be >= 0, got {value}", param_hint=hint)
    missing = [n for n in corpus.LIBRARIES if n not in found]
    if not quiet and missing and libraries is None:
        click.echo(f"not found (skipped): {', '.join(missing)}", err=True)
    if use_units or sources or other or synth:
        from instrument_ai.train.corpus.unit_build import run_unit_build

        summary, elapsed = run_unit_build(
            out, options, found, jobs=jobs, strict=strict, quiet=quiet, log=lambda msg: click.echo(msg, err=True),
            sources=sources, from_dir=from_dir, cache=cache, catalogue=catalogue, other=other,
            other_clips=other_clips, speech_clips=speech_clips, drum_clips=drum_clips, synth=synth, seed=seed,
        )  # fmt: skip
        _print_unit_summary(out, summary, elapsed, jobs, quiet)
        return

    def progress(total: int, done: int) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, initial=done, unit="note", dynamic_ncols=True, disable=quiet)

    start = time.perf_counter()
    try:
        summary = corpus.build(
            out,
            options,
            found,
            jobs=jobs,
            strict=strict,
            progress=progress,
            log=lambda msg: click.echo(msg, err=True),
        )
    except OSError as exc:  # disk full, permissions: one line, not a traceback
        where = exc.filename or out
        raise click.ClickException(f"{where}: {exc.strerror or exc}") from None
    elapsed = time.perf_counter() - start
    if summary.already_complete:
        click.echo(f"{out}: already complete with these options ({summary.notes} notes); nothing to do")
    else:
        rate = summary.rendered_now / elapsed if elapsed > 0 else 0.0
        click.echo(
            f"{out}: {summary.notes} notes from {summary.instruments} instruments "
            f"({summary.rendered_now} rendered now in {elapsed:.0f} s, {rate:.1f} notes/s, jobs {jobs})"
        )
    if not quiet:
        _print_build_tables(summary.counts)
    skipped = ", ".join(f"{k} {v}" for k, v in summary.skipped.items())
    click.echo(f"skipped: {skipped}; size on disk {_folder_size(out) / 1e6:.0f} MB")


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _print_build_tables(counts: dict[str, Any]) -> None:
    """Notes per family x source (rows) per library (columns), then skipped notes per library."""
    from rich.console import Console
    from rich.table import Table

    libraries = list(counts["libraries"])
    table = Table(title="notes per family/source and library", show_footer=True)
    table.add_column("family/source", footer="total", no_wrap=True)
    for lib in libraries:
        table.add_column(lib, justify="right", footer=str(counts["libraries"][lib]["notes"]))
    table.add_column("total", justify="right", footer=str(counts["notes"]))
    for key, total in counts["family_source"].items():
        cells = [str(counts["libraries"][lib]["family_source"].get(key, "")) for lib in libraries]
        table.add_row(key, *cells, str(total))
    skipped = Table(title="instruments and skipped notes per library")
    for name in ("library", "instruments", "notes", "silent", "clipped", "unreadable"):
        skipped.add_column(name, justify="left" if name == "library" else "right")
    for lib in libraries:
        row = counts["libraries"][lib]
        skipped.add_row(
            lib,
            str(row["instruments"]),
            str(row["notes"]),
            *(str(row["skipped"].get(k, 0)) for k in ("silent", "clipped", "unreadable")),
        )
    # wide enough for every column unabridged (a pipe or a log file would otherwise get 80 columns)
    needed = 26 + sum(max(len(lib), 6) + 3 for lib in libraries) + 10
    console = Console(width=max(Console().width, needed))
    console.print(table)
    console.print(skipped)


def _print_unit_summary(out: Path, summary: Any, elapsed: float, jobs: int, quiet: bool) -> None:
    """A unit build's result: one line, one line per problem reason, then the composition table."""
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


@data.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--from", "from_dir", default=None, type=click.Path(file_okay=False), help="Existing clones/mirrors.")
@click.option("--cache", default=None, type=click.Path(file_okay=False), help="Clone cache [default: ~/.cache/...].")
@click.option("--catalogue", default=None, type=click.Path(dir_okay=False), help="Source catalogue file.")
def fetch_cmd(names: tuple[str, ...], from_dir: str | None, cache: str | None, catalogue: str | None) -> None:
    """Fetch catalogue sources at their pinned commits (all, or NAMES), one line per source."""
    from tqdm import tqdm

    from instrument_ai.train.sources import catalogue as cat
    from instrument_ai.train.sources import fetch

    try:
        sources = cat.load(catalogue)
    except cat.CatalogueError as exc:
        raise click.UsageError(str(exc)) from None
    by_name = {s.name: s for s in sources}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise click.UsageError(f"unknown source {unknown[0]!r}; known: {', '.join(by_name)}")
    chosen = [by_name[n] for n in names] if names else sources
    results = []
    for source in tqdm(chosen, desc="fetch", unit="source", disable=None):
        result = fetch.fetch_one(source, from_dir=from_dir, cache=cache)
        tqdm.write(result.line())
        results.append(result)
    failed = sum(r.status == "failed" for r in results)
    if failed:
        raise click.ClickException(f"{failed} of {len(results)} sources could not be fetched (lines above)")


@data.command("split")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scheme", type=click.Choice(["holdout", "nsynth"]), required=True, help="How to split.")
@click.option("--holdout", multiple=True, help="Library held out as test (repeatable; its lineage goes with it).")
@click.option("--valid", default=0.1, show_default=True, type=float, help="Fraction of groups for validation.")
@click.option("--test", default=0.1, show_default=True, type=float, help="Fraction of groups for test (nsynth).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False, path_type=Path), help="[default: FOLDER/splits.json]"
)
def split_cmd(
    folder: Path, scheme: str, holdout: tuple[str, ...], valid: float, test: float, seed: int, out: Path | None
) -> None:
    """Write instrument-level train/valid/test splits of the corpus in FOLDER."""
    from instrument_ai.train.corpus.splits import make_splits, write_splits

    if scheme == "nsynth" and holdout:
        raise click.UsageError("--holdout belongs to --scheme holdout")
    content = make_splits(folder, scheme=scheme, holdout=list(holdout), valid=valid, test=test, seed=seed)
    path = write_splits(folder, content, out)
    parts = ", ".join(f"{name} {len(members)}" for name, members in content["splits"].items())
    held = content["params"].get("holdout")
    click.echo(f"wrote {path}: instruments {parts}" + (f" (test = {', '.join(held)})" if held else ""))


@data.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def info_cmd(path: Path, as_json: bool) -> None:
    """Count the notes of a corpus (json/wav folder or TFRecord) per family, source, library and split."""
    from instrument_ai.train.corpus.info import describe

    counts = describe(path)  # a DataError reaches cli.main: one line, exit 1
    if as_json:
        click.echo(json.dumps(counts))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"{counts['path']} ({counts['format']}): {counts['notes']} notes, {counts['instruments']} instruments"
    )
    table = Table(title="notes per family and source")
    table.add_column("family")
    sources = ["acoustic", "electronic", "synthetic"]
    for src in [*sources, "total"]:
        table.add_column(src, justify="right")
    for fam, row in counts["family_source"].items():
        table.add_row(fam, *(str(row.get(src, "")) for src in sources), str(counts["families"][fam]))
    console.print(table)
    libs = Table(title="libraries")
    for name in ("library", "instruments", "notes"):
        libs.add_column(name, justify="left" if name == "library" else "right")
    for name, row in counts["libraries"].items():
        libs.add_row(name, str(row["instruments"]), str(row["notes"]))
    console.print(libs)
    if counts["splits"]:
        splits = Table(title=f"splits ({counts['scheme']})")
        for name in ("split", "instruments", "notes"):
            splits.add_column(name, justify="left" if name == "split" else "right")
        for name, row in counts["splits"].items():
            splits.add_row(name, str(row["instruments"]), str(row["notes"]))
        console.print(splits)
    velocities = ", ".join(f"{v}: {n}" for v, n in counts["velocities"].items())
    console.print(f"pitch range {counts['pitch_range']}; velocities {velocities}")
    console.print(counts["summary"])


@data.command("report")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--png", default=None, type=click.Path(dir_okay=False, path_type=Path), help="Also draw a PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def report_cmd(folder: Path, png: Path | None, as_json: bool) -> None:
    """Composition of a corpus: notes per family x kind x library, sounding lengths, estimated-pitch share."""
    from instrument_ai.train.corpus.composition import composition, plot_composition, print_composition
    from instrument_ai.train.corpus.nsynth import DataError

    if not (folder / "examples.json").is_file():
        raise click.ClickException(f"{folder}: no examples.json (not a corpus folder)")
    try:
        counts = composition(folder)
    except (DataError, ValueError, OSError) as exc:
        raise click.ClickException(f"{folder}: {' '.join(str(exc).split())}") from None
    if as_json:
        click.echo(json.dumps(counts))
    else:
        print_composition(counts)
    if png is not None:
        click.echo(f"wrote {plot_composition(counts, png)}")

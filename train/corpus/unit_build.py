"""`data build` in unit mode: choose the units, then build and merge them.

The command shell (`commands/data.py`) parses options and prints the summary
(one line per problem reason, counted, fatal under --strict) and the
composition table; this module turns the options into units (`unit_sources`)
and runs `units.build_units`. Every refusal is a one-line `CorpusError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
        raise corpus.CorpusError(f"unknown library {unknown[0]!r}; known: {', '.join(corpus.LIBRARIES)}")
    absent = [n for n in options.libraries if n not in found]
    if absent:
        raise corpus.CorpusError(f"library {absent[0]} is not installed on this machine (found: {', '.join(found)})")
    from dataclasses import replace

    corpus.validate_options(replace(options, libraries=corpus.LIBRARIES[:1]))  # the libraries are checked above
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
                   log: Callable[[str], None], **choice: Any) -> tuple[Any, float]:  # fmt: skip
    """Build the chosen units into `out`; returns (the build summary, seconds it took)."""
    from instrument_ai.train.corpus import build as corpus
    from instrument_ai.train.corpus import units

    chosen = choose_units(options, found, **choice)

    def progress(total: int, done: int) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, initial=done, unit="note", dynamic_ncols=True, disable=quiet)

    start = time.perf_counter()
    try:
        summary = units.build_units(out, chosen, options, jobs=jobs, strict=strict, progress=progress, log=log)
    except OSError as exc:
        raise corpus.CorpusError(f"{exc.filename or out}: {exc.strerror or exc}") from None
    return summary, time.perf_counter() - start

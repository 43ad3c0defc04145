"""Catalogue sources (train/sources/sources.toml) as build units: fetch tree -> select -> label -> import.

Per kind:

* ``notes`` / ``other``: every selected file is one note (or clip): read from the
  tree (a clone or a bare mirror, no work tree), prepared by `import_notes`
  (decoded, mono, 16 kHz, cut at the onset, 4 s, sounding length kept), its pitch
  estimated by `pitch.estimate_pitch` when the catalogue says so;
* ``sfz``: each selected .sfz instrument rendered by `sfz` over a pitch grid (every
  `pitch_step` semitones, rotated per instrument as the SoundFont path does) at
  each of its velocity layers;
* ``soundfont``: each selected .sf2/.sf3 file's GM presets rendered as the
  SoundFont path does; its drum kits (bank 128) become `other` clips.

Every skipped file is counted by reason in the unit's `Problems`; a source that
cannot be opened is one counted problem, and the rest of the build goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from instrument_ai.train.corpus.build import CorpusError
from instrument_ai.train.corpus.units import Unit
from instrument_ai.train.sources.imported import ImportedNote, Problems

IMPORTER_VERSION = {"sfz": 2}
"""Bumped when an importer renders a kind differently, so `data build` re-renders those units (SFZ 2: sources/sfz.py,
every key/layer/round robin of small instruments; corpora built before it counted SFZ files without rendering)."""
UNIT_KIND = {"notes": "notes", "sfz": "sfz", "soundfont": "soundfont", "other": "other"}
DRUM_CLIPS_PER_FONT = 200


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _load(catalogue: str | None) -> list[Any]:
    from instrument_ai.train.sources import catalogue as cat

    return list(cat.load(catalogue) if catalogue else cat.load())


def catalogue_units(
    names: str, options: Any, *, from_dir: str | None, cache: str | None, catalogue: str | None
) -> list[Unit]:
    """Units for `--sources NAMES|all`: one per catalogue source, fingerprinted by its entry and the options."""
    from instrument_ai.train.sources import catalogue as cat

    try:
        entries = _load(catalogue)
    except cat.CatalogueError as exc:
        raise CorpusError(str(exc)) from None
    by_name = {e.name: e for e in entries}
    wanted = list(by_name) if names.strip() == "all" else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise CorpusError(f"--sources: unknown source {unknown[0]!r}; known: {', '.join(by_name)}")
    out = []
    for name in wanted:
        entry = by_name[name]
        fingerprint = {
            "entry": hashlib.sha256(repr(entry).encode()).hexdigest()[:16],
            "commit": entry.commit,
            "pitch_step": options.pitch_step,
            "velocities": list(options.velocities),
            "limit": options.limit,
        }
        if entry.kind in IMPORTER_VERSION:
            fingerprint["importer"] = IMPORTER_VERSION[entry.kind]
        produce = partial(
            produce_source, name=name, catalogue=catalogue, from_dir=from_dir, cache=cache,
            pitch_step=options.pitch_step, velocities=tuple(options.velocities), limit=options.limit,
        )  # fmt: skip
        out.append(Unit(name, UNIT_KIND[entry.kind], entry.group or name, fingerprint, produce=produce))
    return out


def produce_source(
    problems: Problems,
    *,
    name: str,
    catalogue: str | None,
    from_dir: str | None,
    cache: str | None,
    pitch_step: int,
    velocities: tuple[int, ...],
    limit: int | None,
) -> Iterator[ImportedNote]:
    """The notes of one catalogue source (runs in a worker; counts every skipped file)."""
    from instrument_ai.train.sources import fetch

    entry = next(e for e in _load(catalogue) if e.name == name)
    try:
        tree = fetch.open_source(entry, from_dir=from_dir, cache=cache)
    except Exception as exc:
        problems.add("source_unavailable", f"{name}: {_one_line(exc)}")
        return
    paths = list(entry.select(tree.paths()))
    if not paths:
        problems.add("no_files", f"{name}: no file matches its include globs")
        return
    if limit is not None:
        paths = paths[:: max(1, len(paths) // limit)][:limit]
    if entry.kind in ("notes", "other"):
        yield from _recorded(problems, entry, tree, paths)
    elif entry.kind == "sfz":
        yield from _sfz(problems, entry, tree, paths, pitch_step, velocities)
    else:
        yield from _soundfonts(problems, entry, tree, paths, pitch_step, velocities)


def _recorded(problems: Problems, entry: Any, tree: Any, paths: list[str]) -> Iterator[ImportedNote]:
    """One note (or `other` clip) per selected file; a label without pitch is estimated (and marked)."""
    from instrument_ai.train.sources.catalogue import Skip
    from instrument_ai.train.sources.import_notes import import_note_file

    for path in paths:
        label = entry.label(path)
        if isinstance(label, Skip):
            problems.add(label.reason, label.message)
            continue
        note = import_note_file(
            tree.read, path, family=label.family, source=label.source, instrument=label.instrument,
            pitch=label.pitch, velocity=label.velocity, problems=problems,
        )  # fmt: skip
        if note is not None:
            note.origin = f"{entry.name}:{path}"
            yield note


def _sfz(problems: Problems, entry: Any, tree: Any, paths: list[str], step: int,
         velocities: tuple[int, ...]) -> Iterator[ImportedNote]:  # fmt: skip
    """Each selected .sfz instrument rendered by `train/sources/sfz.py` (imported here: only SFZ units need it)."""
    from instrument_ai.train.sources import sfz

    yield from sfz.render_source(problems, entry, tree, paths, step, velocities)


def _soundfonts(problems: Problems, entry: Any, tree: Any, paths: list[str], step: int,
                velocities: tuple[int, ...]) -> Iterator[ImportedNote]:  # fmt: skip
    """Each selected font's GM presets on the corpus's pitch grid; bank 128 -> `other` drum clips."""
    import tempfile

    import numpy as np

    from instrument_ai.train.corpus.build import HOLD_SECONDS, SILENT_DBFS, TOTAL_SECONDS
    from instrument_ai.train.sources import gm_programs
    from instrument_ai.train.sources.soundfont_render import PERCUSSION_BANK, SoundFontRenderer, read_presets

    position = 0
    silent = 10 ** (SILENT_DBFS / 20)
    with tempfile.TemporaryDirectory(prefix="catalogue-sf-") as tmp:
        for path in paths:
            local = Path(tmp) / Path(path).name
            try:
                local.write_bytes(tree.read(path))
                presets = read_presets(local)
                renderer = SoundFontRenderer(local)
            except Exception as exc:
                problems.add("unreadable", f"{entry.name}: {path}: {_one_line(exc)}")
                continue
            for preset in presets:
                gm = gm_programs.lookup(preset.program)
                if preset.bank >= PERCUSSION_BANK or gm is None:
                    continue
                label = entry.label(path)
                family = getattr(label, "family", None) or gm.family_str
                source = getattr(label, "source", None) or gm.source_str
                for p in gm_programs.pitches(preset.program, step, offset=position):
                    for v in velocities:
                        audio = renderer.render(preset.bank, preset.program, p, v, HOLD_SECONDS, TOTAL_SECONDS)
                        peak = float(np.max(np.abs(audio)))
                        if peak < silent or peak >= 1.0:
                            problems.add("silent" if peak < silent else "clipped", f"{entry.name}: {path} {p}/{v}")
                            continue
                        loud = np.nonzero(np.abs(audio) >= peak * 0.01)[0]  # -40 dB below the peak
                        sounding = min(TOTAL_SECONDS, (int(loud[-1]) + 1) / 16000)
                        yield ImportedNote(audio, family, source, f"{Path(path).stem}/{preset.name}", p, v,
                                           round(sounding, 3), f"{entry.name}:{path} bank {preset.bank} "
                                           f"program {preset.program}")  # fmt: skip
                position += 1
            if any(pr.bank == PERCUSSION_BANK for pr in presets):
                from instrument_ai.train.sources import other_sounds

                yield from other_sounds.drum_clips(local, entry.name, DRUM_CLIPS_PER_FONT, 0)

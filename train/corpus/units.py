"""Build the corpus one source unit at a time, then merge the units into one NSynth-format folder.

Why units: a corpus of a dozen SoundFont libraries, tens of recorded-note
repositories, SFZ libraries, `other` generators and synth patches takes long to
render, and sources are added one at a time. Each unit (one library or one
catalogue source, the `other` generators, the synth notes) is rendered into its
own folder, ``OUT/units/<name>/`` (``audio/``, ``examples.json``,
``instruments.json``, ``unit.json``), first under ``<name>.partial`` and renamed
into place when complete, so an interrupted build never leaves half a unit and a
rebuild re-renders only the units whose fingerprint (options, source commit,
files) changed or that are new.

The merge is cheap: it renumbers instruments and notes over all units and
hard-links (else copies) each unit's audio into ``OUT/audio/<note_str>.wav``,
so readers see NSynth's layout. ``instruments.json`` rows gain ``library`` =
unit name, ``lineage`` = its group, and ``kind`` (soundfont | webaudiofont |
notes | sfz | other | synth); one library name per source keeps
leave-one-source-out possible.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.train.sources.imported import ImportedNote, Problems

UNIT_KINDS = ("soundfont", "webaudiofont", "notes", "sfz", "other", "synth")
UNITS_DIR = "units"
UNIT_FORMAT = "instrument-ai corpus unit"
MERGED_LAYOUT = "units"


@dataclass(frozen=True)
class Unit:
    """One source of notes, rendered into its own folder.

    Either ``library`` (a SoundFont or WebAudioFont library, rendered by `corpus.build`)
    or ``produce`` (a picklable callable that yields `ImportedNote`s and counts its
    skipped inputs in the `Problems` it is given) is set.
    """

    name: str
    kind: str
    group: str
    fingerprint: dict[str, Any]
    """JSON-able: everything that decides this unit's content (options, commit, generator seeds)."""
    library: Any = None
    produce: Callable[[Problems], Iterable[ImportedNote]] | None = None


@dataclass
class UnitResult:
    """What one unit holds after the build (rendered now or found complete)."""

    name: str
    kind: str
    notes: int
    instruments: int
    rendered_now: bool
    problems: dict[str, int] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)


@dataclass
class UnitsSummary:
    out: Path
    units: list[UnitResult]
    notes: int
    instruments: int
    problems: dict[str, int]
    first: dict[str, str]


def _fingerprint_digest(unit: Unit) -> str:
    blob = json.dumps([unit.name, unit.kind, unit.group, unit.fingerprint], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def library_fingerprint(library: Any, options: Any) -> dict[str, Any]:
    """Options plus the names and sizes of the library's files (a changed bank re-renders its unit)."""
    path = Path(library.path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    return {"options": options.to_dict(), "files": h.hexdigest()[:16]}


def _write_json(path: Path, data: Any, indent: int | None = 1) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _complete(folder: Path, digest: str) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / "unit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and meta.get("status") == "complete" and meta.get("digest") == digest:
        return meta
    return None


# --------------------------------------------------------------------------- one unit


def _build_library_unit(tmp: Path, unit: Unit, options: Any, jobs: int, progress: Any, say: Any) -> Problems:
    """A SoundFont/WebAudioFont library: the existing builder, into the unit's partial folder (it resumes)."""
    from instrument_ai.train.corpus import build as corpus

    problems = Problems()
    opts = replace(options, libraries=(unit.name,))
    summary = corpus.build(tmp, opts, {unit.name: unit.library}, jobs=jobs, progress=progress, log=say)
    for reason, n in summary.skipped.items():
        for _ in range(n):
            problems.add(reason, f"{unit.name}: {reason} notes skipped")
    for error in summary.errors:
        problems.add("unreadable_bank", error)
    return problems


def _instrument_str(family: str, source: str, counters: Counter[tuple[str, str]]) -> str:
    key = (family, source)
    name = f"{family}_{source}_{counters[key]:03d}"
    counters[key] += 1
    return name


def write_imported(tmp: Path, unit: Unit) -> Problems:
    """Write every `ImportedNote` of a unit as a 16-bit wav plus its examples.json and instruments.json."""
    from instrument_ai.device.labels import LABELS, OTHER
    from instrument_ai.train.corpus.build import FAMILY_IDS, SOURCE_IDS, to_pcm16, write_pcm16_wav
    from instrument_ai.train.corpus.nsynth import Note, write_examples_json
    from instrument_ai.train.corpus.qualities import names_of, qualities
    from instrument_ai.train.sources.imported import NUM_SAMPLES, SAMPLE_RATE

    assert unit.produce is not None
    problems = Problems()
    audio_dir = tmp / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    counters: Counter[tuple[str, str]] = Counter()
    by_instrument: dict[tuple[str, str, str], str] = {}
    rows: dict[str, dict[str, Any]] = {}
    entries: list[Note] = []
    ids: dict[str, int] = {}
    for note in unit.produce(problems):
        audio = np.asarray(note.audio, dtype=np.float32)
        if audio.shape != (NUM_SAMPLES,) or not np.isfinite(audio).all():
            problems.add("bad_buffer", f"{note.origin}: importer returned a bad buffer {audio.shape}")
            continue
        if note.family not in LABELS:
            problems.add("unknown_family", f"{note.origin}: unknown family {note.family!r}")
            continue
        if float(np.max(np.abs(audio))) > 1.0:
            problems.add("clipped", f"{note.origin}: peak above full scale")
            continue
        key = (note.family, note.source, note.instrument)
        inst = by_instrument.get(key)
        note_str = f"{inst}-{note.pitch:03d}-{note.velocity:03d}" if inst else ""
        if inst is None or (audio_dir / f"{note_str}.wav").exists():
            # a new instrument, or a second clip at the same pitch/velocity (round robin, `other` clip):
            # its own instrument so that every note_str stays NSynth's `instrument-pitch-velocity`
            inst = _instrument_str(note.family, note.source, counters)
            if key not in by_instrument:
                by_instrument[key] = inst
            ids[inst] = len(ids)
            rows[inst] = {
                "library": unit.name,
                "lineage": unit.group,
                "kind": unit.kind,
                "family_str": note.family,
                "source_str": note.source,
                "instrument": ids[inst],
                "preset_name": note.instrument,
                "origin": note.origin,
                "pitch_estimated_notes": 0,
            }
            note_str = f"{inst}-{note.pitch:03d}-{note.velocity:03d}"
        pcm = to_pcm16(audio)
        write_pcm16_wav(audio_dir / f"{note_str}.wav", pcm, SAMPLE_RATE)
        flags = [0] * 10 if note.family == OTHER or note.pitch <= 0 else qualities(pcm / 32768.0, note.pitch)
        rows[inst]["pitch_estimated_notes"] += int(note.pitch_estimated)
        entries.append(
            Note.from_entry(
                {
                    "note": len(entries),
                    "note_str": note_str,
                    "instrument": ids[inst],
                    "instrument_str": inst,
                    "pitch": int(note.pitch),
                    "velocity": int(note.velocity),
                    "sample_rate": SAMPLE_RATE,
                    "qualities": flags,
                    "qualities_str": names_of(flags),
                    "instrument_family": FAMILY_IDS.get(note.family, LABELS.index(note.family)),
                    "instrument_family_str": note.family,
                    "instrument_source": SOURCE_IDS[note.source],
                    "instrument_source_str": note.source,
                    "sounding_seconds": round(float(note.sounding_seconds), 3),
                }
            )
        )
    write_examples_json(tmp, entries)
    _write_json(tmp / "instruments.json", rows)
    return problems


def _build_one(out: Path, unit: Unit, options: Any, jobs: int, strict: bool, progress: Any, say: Any) -> UnitResult:
    from instrument_ai.train.corpus.build import CorpusError

    units_dir = out / UNITS_DIR
    final = units_dir / unit.name
    tmp = units_dir / f"{unit.name}.partial"
    digest = _fingerprint_digest(unit)
    meta = _complete(final, digest)
    if meta is not None:
        return UnitResult(unit.name, unit.kind, meta["notes"], meta["instruments"], False, meta["problems"],
                          meta.get("first", {}))  # fmt: skip
    marker = units_dir / f"{unit.name}.partial.json"
    if tmp.exists() and (unit.library is None or _partial_digest(marker) != digest):
        shutil.rmtree(tmp)  # imported units restart; a library unit resumes only with the same fingerprint
    marker.write_text(json.dumps({"digest": digest}) + "\n", encoding="utf-8")
    if unit.library is not None:
        problems = _build_library_unit(tmp, unit, options, jobs, progress, say)
    else:
        tmp.mkdir(parents=True)
        problems = write_imported(tmp, unit)
    if strict and problems:
        raise CorpusError(f"unit {unit.name}: {problems.summary()} (--strict)")
    instruments = json.loads((tmp / "instruments.json").read_text(encoding="utf-8"))
    from instrument_ai.train.corpus.nsynth import iter_examples_json

    notes = sum(1 for _ in iter_examples_json(tmp))
    meta = {
        "format": UNIT_FORMAT,
        "name": unit.name,
        "kind": unit.kind,
        "group": unit.group,
        "digest": digest,
        "fingerprint": unit.fingerprint,
        "status": "complete",
        "notes": notes,
        "instruments": len(instruments),
        "problems": dict(problems.counts),
        "first": dict(problems.first),
    }
    _write_json(tmp / "unit.json", meta)
    if final.exists():
        old = units_dir / f"{unit.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    marker.unlink(missing_ok=True)
    return UnitResult(unit.name, unit.kind, notes, len(instruments), True, dict(problems.counts), dict(problems.first))


def _partial_digest(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("digest")
    except (OSError, ValueError, AttributeError):
        return None


def _imported_worker(args: tuple[Path, Unit, Any, bool]) -> UnitResult | str:
    from instrument_ai.train.corpus.build import CorpusError

    out, unit, options, strict = args
    try:
        return _build_one(out, unit, options, 1, strict, None, lambda _m: None)
    except CorpusError as exc:
        return str(exc)


# --------------------------------------------------------------------------- build + merge


def build_units(
    out: str | Path,
    units: list[Unit],
    options: Any,
    *,
    jobs: int = 1,
    strict: bool = False,
    progress: Any = None,
    log: Callable[[str], None] | None = None,
) -> UnitsSummary:
    """Render every unit that is missing or changed, then merge all of them into OUT. Raises CorpusError."""
    from instrument_ai.train.corpus.build import CorpusError, _exclusive

    say = log or (lambda _msg: None)
    out = Path(out)
    names = [u.name for u in units]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CorpusError(f"two units named {dup[0]!r}; every source needs its own name")
    bad = [u for u in units if u.kind not in UNIT_KINDS]
    if bad:
        raise CorpusError(f"unit {bad[0].name}: unknown kind {bad[0].kind!r}; known: {', '.join(UNIT_KINDS)}")
    if not units:
        raise CorpusError("nothing to build: no libraries, sources, --other or --synth")
    if out.exists() and not out.is_dir():
        raise CorpusError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / UNITS_DIR).is_dir():
        raise CorpusError(f"{out}: folder is not empty and holds no units/; choose an empty or new --out")
    try:
        (out / UNITS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"{out}: cannot create ({exc.strerror or exc})") from None
    results: dict[str, UnitResult] = {}
    with _exclusive(out):
        for unit in units:
            if unit.library is not None:
                say(f"unit {unit.name} ({unit.kind})")
                results[unit.name] = _build_one(out, unit, options, jobs, strict, progress, say)
        imported = [u for u in units if u.library is None]
        results.update(_run_imported(out, imported, options, jobs, strict, say))
        ordered = [results[u.name] for u in units]
        merged = merge(out, units)
    total = Problems()
    for r in ordered:
        total.counts.update(r.problems)
        for k, v in r.first.items():
            total.first.setdefault(k, v)
    return UnitsSummary(out, ordered, merged["notes"], merged["instruments"], dict(total.counts), dict(total.first))


def _run_imported(
    out: Path, units: list[Unit], options: Any, jobs: int, strict: bool, say: Callable[[str], None]
) -> dict[str, UnitResult]:
    from instrument_ai.train.corpus.build import CorpusError

    results: dict[str, UnitResult] = {}
    if not units:
        return results
    tasks = [(out, u, options, strict) for u in units]
    if jobs <= 1 or len(units) <= 1:
        outcomes: Iterator[UnitResult | str] = (_imported_worker(t) for t in tasks)
        pool = None
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(processes=jobs)
        outcomes = pool.imap(_imported_worker, tasks, chunksize=1)
    try:
        from tqdm import tqdm

        for unit, outcome in tqdm(zip(units, outcomes, strict=True), total=len(units), unit="unit", disable=None):
            if isinstance(outcome, str):
                raise CorpusError(outcome)
            results[unit.name] = outcome
            state = "rendered" if outcome.rendered_now else "up to date"
            listed = ", ".join(f"{k} {v}" for k, v in outcome.problems.items())
            extra = f"; problems: {listed}" if listed else ""
            say(f"unit {unit.name} ({unit.kind}): {outcome.notes} notes, {state}{extra}")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return results


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def merge(out: Path, units: list[Unit]) -> dict[str, Any]:
    """Write OUT's examples.json, instruments.json, corpus.json and audio/ from the complete unit folders."""
    from instrument_ai.train.corpus.build import CORPUS_FORMAT, CORPUS_VERSION
    from instrument_ai.train.corpus.nsynth import Note, iter_examples_json, write_examples_json

    counters: Counter[tuple[str, str]] = Counter()
    instruments: dict[str, dict[str, Any]] = {}
    new_audio = out / "audio.new"
    shutil.rmtree(new_audio, ignore_errors=True)
    new_audio.mkdir()
    unit_rows: dict[str, Any] = {}
    family_kind: Counter[str] = Counter()

    def entries() -> Iterator[Note]:
        note_id = 0
        for unit in units:
            folder = out / UNITS_DIR / unit.name
            meta = json.loads((folder / "unit.json").read_text(encoding="utf-8"))
            rows = json.loads((folder / "instruments.json").read_text(encoding="utf-8"))
            mapping: dict[str, str] = {}
            for key, entry in iter_examples_json(folder):
                local = entry["instrument_str"]
                name = mapping.get(local)
                if name is None:
                    name = mapping[local] = _instrument_str(
                        entry["instrument_family_str"], entry["instrument_source_str"], counters
                    )
                    row = dict(rows.get(local, {}))
                    row.update(library=unit.name, lineage=unit.group, kind=unit.kind, instrument=len(instruments))
                    row.setdefault("family_str", entry["instrument_family_str"])
                    row.setdefault("source_str", entry["instrument_source_str"])
                    instruments[name] = row
                new_key = name + key[len(local) :]
                _link(folder / "audio" / f"{key}.wav", new_audio / f"{new_key}.wav")
                entry = dict(entry, note=note_id, note_str=new_key, instrument=instruments[name]["instrument"],
                             instrument_str=name)  # fmt: skip
                family_kind[f"{entry['instrument_family_str']}/{unit.kind}"] += 1
                note_id += 1
                yield Note.from_entry(entry, key=new_key)
            unit_rows[unit.name] = {k: meta[k] for k in ("kind", "group", "notes", "instruments", "problems")}

    notes = write_examples_json(out, entries())
    _write_json(out / "instruments.json", instruments)
    old = out / "audio.old"
    shutil.rmtree(old, ignore_errors=True)
    if (out / "audio").exists():
        os.replace(out / "audio", old)
    os.replace(new_audio, out / "audio")
    shutil.rmtree(old, ignore_errors=True)
    header = {
        "format": CORPUS_FORMAT,
        "version": CORPUS_VERSION,
        "layout": MERGED_LAYOUT,
        "status": "complete",
        "units": unit_rows,
        "counts": {"notes": notes, "instruments": len(instruments), "family_kind": dict(sorted(family_kind.items()))},
    }
    _write_json(out / "corpus.json", header)
    return header["counts"]

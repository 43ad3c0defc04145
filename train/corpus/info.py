"""What a corpus folder says about itself: instruments.json, splits.json and corpus.json, and `data info`'s counts.

A real NSynth folder has none of these files; its notes are then all of library "nsynth" with no splits.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instrument_ai.device.labels import LABELS
from instrument_ai.train.corpus.nsynth import (
    DEFAULT_LIBRARY,
    SOURCES,
    DataError,
    Note,
    ReadReport,
    iter_notes,
)


@dataclass(frozen=True)
class InstrumentInfo:
    """One row of instruments.json: where an instrument of our corpus comes from."""

    library: str
    lineage: str
    program: int | None = None
    variant: int | None = None
    family_str: str | None = None
    source_str: str | None = None


@dataclass
class CorpusInfo:
    """The optional metadata of a corpus folder (instruments.json, splits.json, corpus.json).

    A real NSynth folder has none of them: every instrument is then of library
    "nsynth", and there are no splits (NSynth's official splits are separate folders).
    """

    folder: Path
    instruments: dict[str, InstrumentInfo] = field(default_factory=dict)
    splits: dict[str, list[str]] | None = None
    scheme: str | None = None
    corpus: dict[str, Any] | None = None

    def library_of(self, instrument_str: str) -> str:
        info = self.instruments.get(instrument_str)
        return info.library if info is not None else DEFAULT_LIBRARY

    def lineage_of(self, instrument_str: str) -> str:
        info = self.instruments.get(instrument_str)
        return info.lineage if info is not None else DEFAULT_LIBRARY

    def split_of(self, instrument_str: str) -> str | None:
        for name, members in (self.splits or {}).items():
            if instrument_str in members:
                return name
        return None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from None


def corpus_info(folder: str | Path) -> CorpusInfo:
    """Read a corpus folder's optional instruments.json, splits.json and corpus.json, checking their shape."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a corpus folder")
    info = CorpusInfo(folder=folder)
    inst_path = folder / "instruments.json"
    if inst_path.is_file():
        raw = _load_json(inst_path)
        if not isinstance(raw, dict):
            raise DataError(f"{inst_path}: must be an object keyed by instrument_str")
        for name, row in raw.items():
            if not isinstance(row, dict) or not isinstance(row.get("library"), str) or not row["library"]:
                raise DataError(f"{inst_path}: {name!r} needs a non-empty string 'library'")
            fam, src = row.get("family_str"), row.get("source_str")
            if fam is not None and fam not in LABELS:
                raise DataError(f"{inst_path}: {name!r} has unknown family_str {fam!r}")
            if src is not None and src not in SOURCES:
                raise DataError(f"{inst_path}: {name!r} has unknown source_str {src!r}")
            if fam is not None and not name.startswith(f"{fam}_{src + '_' if src else ''}"):
                raise DataError(f"{inst_path}: {name!r} does not match its family_str/source_str {fam}/{src}")
            info.instruments[name] = InstrumentInfo(
                library=row["library"],
                lineage=str(row.get("lineage") or row["library"]),
                program=row.get("program"),
                variant=row.get("variant"),
                family_str=fam,
                source_str=src,
            )
    splits_path = folder / "splits.json"
    if splits_path.is_file():
        raw = _load_json(splits_path)
        splits = raw.get("splits") if isinstance(raw, dict) else None
        if not isinstance(splits, dict) or not all(
            isinstance(members, list) and all(isinstance(m, str) for m in members) for members in splits.values()
        ):
            raise DataError(f"{splits_path}: expected {{'scheme': ..., 'splits': {{name: [instrument_str, ...]}}}}")
        owner: dict[str, str] = {}
        for name, members in splits.items():
            for member in members:
                if member in owner and owner[member] != name:
                    raise DataError(f"{splits_path}: instrument {member!r} is in both {owner[member]!r} and {name!r}")
                owner[member] = name
        info.splits = {name: list(members) for name, members in splits.items()}
        info.scheme = raw.get("scheme")
    corpus_path = folder / "corpus.json"
    if corpus_path.is_file():
        raw = _load_json(corpus_path)
        if not isinstance(raw, dict):
            raise DataError(f"{corpus_path}: must be a JSON object")
        info.corpus = raw
    return info


def notes_for_split(folder: str | Path, split_name: str, **kwargs: Any) -> Iterator[Note]:
    """Stream the notes of one split in splits.json (a note belongs to its instrument's split).

    Extra keyword arguments go to `iter_notes` (filters, strict, report, audio);
    `instruments` is taken by the split itself.
    """
    info = corpus_info(folder)
    if info.splits is None:
        raise DataError(f"{folder}: no splits.json (make one with `instrument-ai data split`)")
    if split_name not in info.splits:
        raise DataError(f"{folder}: no split {split_name!r} in splits.json; have {', '.join(info.splits)}")
    if "instruments" in kwargs:
        raise DataError("notes_for_split takes its instruments from splits.json; do not pass instruments")
    return iter_notes(folder, instruments=info.splits[split_name], **kwargs)


def describe(path: str | Path, *, report: ReadReport | None = None) -> dict[str, Any]:
    """Counts of a corpus for `instrument-ai data info`: per family x source, per library, per split.

    Reads labels only (json folders: no wav is opened), so it is quick even on NSynth.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    info = corpus_info(path) if path.is_dir() else CorpusInfo(folder=path)
    family_source: dict[str, Counter[str]] = {}
    libraries: dict[str, dict[str, Any]] = {}
    splits: dict[str, dict[str, Any]] = {}
    velocities: Counter[int] = Counter()
    instruments: set[str] = set()
    pitch_lo, pitch_hi = 128, -1
    for note in iter_notes(path, report=report, audio="none"):
        family_source.setdefault(note.family_str, Counter())[note.source_str] += 1
        library = info.library_of(note.instrument_str)
        lib = libraries.setdefault(library, {"notes": 0, "instruments": set(), "families": Counter()})
        lib["notes"] += 1
        lib["instruments"].add(note.instrument_str)
        lib["families"][note.family_str] += 1
        split = info.split_of(note.instrument_str) if info.splits is not None else None
        if split is not None or info.splits is not None:
            row = splits.setdefault(split or "(none)", {"notes": 0, "instruments": set()})
            row["notes"] += 1
            row["instruments"].add(note.instrument_str)
        velocities[note.velocity] += 1
        instruments.add(note.instrument_str)
        pitch_lo, pitch_hi = min(pitch_lo, note.pitch), max(pitch_hi, note.pitch)

    def family_order(name: str) -> int:
        return LABELS.index(name)

    return {
        "path": str(path),
        "format": "tfrecord" if not path.is_dir() or not (path / "examples.json").is_file() else "json",
        "notes": report.notes,
        "instruments": len(instruments),
        "family_source": {
            fam: {src: family_source[fam][src] for src in SOURCES if family_source[fam][src]}
            for fam in sorted(family_source, key=family_order)
        },
        "families": {fam: sum(family_source[fam].values()) for fam in sorted(family_source, key=family_order)},
        "libraries": {
            name: {
                "notes": lib["notes"],
                "instruments": len(lib["instruments"]),
                "families": {f: lib["families"][f] for f in sorted(lib["families"], key=family_order)},
            }
            for name, lib in sorted(libraries.items())
        },
        "splits": {name: {"notes": r["notes"], "instruments": len(r["instruments"])} for name, r in splits.items()},
        "scheme": info.scheme,
        "pitch_range": [pitch_lo, pitch_hi] if instruments else None,
        "velocities": {str(v): velocities[v] for v in sorted(velocities)},
        "skipped": dict(sorted(report.skipped.items())),
        "summary": report.summary(),
    }

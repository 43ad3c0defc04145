"""What kind of source a library is, note-length buckets, and the `other` figures (issue 14).

Kinds group the holdout's folds: the issue's targets are separate means over SoundFont/WebAudioFont folds and
over real-recording folds, and for `other` sources the share of hops named an instrument and the false
instrument events per minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.labels import OTHER, SILENCE, UNKNOWN

SOUNDFONT, REAL, OTHER_KIND, SYNTH = "soundfont", "real", "other", "synth"
KIND_OF_FIELD = {
    "soundfont": SOUNDFONT,
    "webaudiofont": SOUNDFONT,
    "notes": REAL,
    "sfz": REAL,
    "other": OTHER_KIND,
    "synth": SYNTH,
}
"""corpus.json / instruments.json `kind` -> the group a fold is averaged in."""
LENGTHS = ("short", "medium", "long")
"""Note-length buckets: sounding < 0.5 s, 0.5-1.5 s, longer (a note without sounding_seconds counts as longer)."""
NOTE_LENGTHS = ("< 0.3 s", "0.3-0.7 s", "0.7-1.5 s", "longer")
"""The finer note-length buckets every accuracy is also reported by (issue 23): seconds of sounding note (a note
without sounding_seconds counts as longer). `LENGTHS` stays for the card's "< 0.5 s" target figure."""
NOT_INSTRUMENT = frozenset({OTHER, SILENCE, UNKNOWN})


def source_kind(families: Iterable[str], sounding: Iterable[float | None], kind_field: str | None = None) -> str:
    """The group of one library: its explicit `kind` if given, else derived from its notes.

    Rule without the field: every note `other` -> "other"; any note carrying `sounding_seconds` -> "real"
    (the real-recording importers record how long a note sounds; SoundFont renders are fixed-length notes
    without it); else "soundfont".
    """
    if kind_field is not None:
        if kind_field not in KIND_OF_FIELD:
            raise ValueError(f"unknown source kind {kind_field!r}; known: {', '.join(KIND_OF_FIELD)}")
        return KIND_OF_FIELD[kind_field]
    fams = list(families)
    if fams and all(f == OTHER for f in fams):
        return OTHER_KIND
    if any(s is not None for s in sounding):
        return REAL
    return SOUNDFONT


def declared_kinds(folder: Path) -> dict[str, str]:
    """library -> `kind` as declared in corpus.json ("libraries": {name: {"kind": ...}}) or instruments.json rows."""
    kinds: dict[str, str] = {}
    for name, key in (("instruments.json", None), ("corpus.json", "libraries")):
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rows = raw.get(key) if key and isinstance(raw, dict) else raw
        if not isinstance(rows, dict):
            continue
        for row_name, row in rows.items():
            if isinstance(row, dict) and isinstance(row.get("kind"), str):
                kinds[row.get("library", row_name) if key is None else row_name] = row["kind"]
    return kinds


def length_bucket(sounding_seconds: float | None) -> str:
    if sounding_seconds is None or sounding_seconds > 1.5:
        return "long"
    return "short" if sounding_seconds < 0.5 else "medium"


def note_length_bucket(sounding_seconds: float | None) -> str:
    """The `NOTE_LENGTHS` bucket of a note: < 0.3 s, 0.3-0.7 s, 0.7-1.5 s (bounds inclusive above), longer."""
    if sounding_seconds is None or sounding_seconds > 1.5:
        return NOTE_LENGTHS[3]
    if sounding_seconds < 0.3:
        return NOTE_LENGTHS[0]
    return NOTE_LENGTHS[1] if sounding_seconds <= 0.7 else NOTE_LENGTHS[2]


def other_figures(window_labels: Sequence[str], window_clip: np.ndarray, hop_seconds: float) -> dict[str, float | int]:
    """Share of hops named an instrument and false instrument events per minute, over non-instrument clips.

    `window_labels` are the per-hop labels in time order within each clip (`window_clip` gives the clip); a
    false event is a change to an instrument label (the first hop of a clip changes from silence), as
    `Event.changed` counts it on the device.
    """
    labels = list(window_labels)
    clip = np.asarray(window_clip)
    named = np.array([lab not in NOT_INSTRUMENT for lab in labels], dtype=bool)
    events = 0
    for k in range(len(labels)):
        new_clip = k == 0 or clip[k] != clip[k - 1]
        previous = None if new_clip else labels[k - 1]
        if named[k] and labels[k] != previous:
            events += 1
    minutes = len(labels) * hop_seconds / 60.0
    return {
        "hops": len(labels),
        "minutes": round(minutes, 4),
        "hops_named_instrument": float(named.mean()) if len(labels) else 0.0,
        "false_events": events,
        "false_events_per_minute": events / minutes if minutes > 0 else 0.0,
    }


def kind_means(folds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean note accuracy per kind of held-out source, and the mean `other` figures over `other` folds."""
    out: dict[str, Any] = {}
    for kind in (SOUNDFONT, REAL, SYNTH):
        values = [f["note_accuracy"] for f in folds if f.get("kind") == kind and f.get("note_accuracy") is not None]
        out[kind] = {"folds": len(values), "mean_note_accuracy": float(np.mean(values)) if values else None}
    others = [f["other"] for f in folds if f.get("kind") == OTHER_KIND and f.get("other")]
    out[OTHER_KIND] = {
        "folds": len(others),
        "hops_named_instrument": float(np.mean([o["hops_named_instrument"] for o in others])) if others else None,
        "false_events_per_minute": float(np.mean([o["false_events_per_minute"] for o in others])) if others else None,
    }
    return out

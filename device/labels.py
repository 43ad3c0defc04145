"""The label vocabulary every part shares: NSynth's 11 families, then `other`, and the engine's words.

One home for these strings, so the trainer, the corpus, the evaluation and the daemon cannot drift.
"""

from __future__ import annotations

FAMILIES: list[str] = [
    "bass",
    "brass",
    "flute",
    "guitar",
    "keyboard",
    "mallet",
    "organ",
    "reed",
    "string",
    "synth_lead",
    "vocal",
]
"""NSynth instrument families; the index is NSynth's `instrument_family` id."""

OTHER = "other"
"""Our 12th label (id 11, after NSynth's 0-10): a sound that is no instrument (speech, noise, drums, rooms)."""

LABELS: list[str] = [*FAMILIES, OTHER]
"""Every family id a corpus entry may carry: NSynth's 11, then `other`. Real NSynth uses only the first 11."""

UNKNOWN = "unknown"
"""The engine's answer when no family is confident enough (or the open-set check rejects the hop)."""

SILENCE = "silence"
"""The engine's answer for a hop below the silence level."""

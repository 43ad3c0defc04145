"""What every importer hands the corpus builder: one finished 4 s note, and the problems it met.

Importers (one-note-per-file recordings, SFZ instruments, SoundFonts, `other`
sounds, synthesised notes) all yield `ImportedNote`s and count what they had to
skip in a `Problems`, so the builder writes every kind of source the same way and
the build summary counts every skipped file by reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16000
NUM_SAMPLES = 64000


@dataclass
class ImportedNote:
    """One note (or `other` clip) ready for the corpus: 16 kHz mono float32, exactly 4 s."""

    audio: np.ndarray
    family: str
    """One of `device.labels.LABELS` (NSynth's 11 families, or `other`)."""
    source: str
    """acoustic, electronic or synthetic."""
    instrument: str
    """The instrument within its source (a folder, an SFZ file, a patch); its notes share it."""
    pitch: int
    """MIDI 0..127; 0 for `other` clips that have none."""
    velocity: int
    """1..127."""
    sounding_seconds: float
    """How long the note really sounds before it falls silent (or the recording ends), at most 4 s."""
    origin: str
    """Where it came from (path in the repository, SFZ region, generator and seed), for provenance."""
    pitch_estimated: bool = False
    """True when the pitch came from `pitch.estimate_pitch`, not from the source's own labels."""


@dataclass
class Problems:
    """Skipped inputs by reason, with the first message of each reason (for one-line summaries)."""

    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        self.first.setdefault(reason, " ".join(message.split()))

    def merge(self, other: Problems) -> None:
        self.counts.update(other.counts)
        for reason, message in other.first.items():
            self.first.setdefault(reason, message)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        """`reason N (first message); ...`, or an empty string."""
        return "; ".join(f"{reason} {n} ({self.first[reason]})" for reason, n in sorted(self.counts.items()))

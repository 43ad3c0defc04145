"""The engine's settings: one frozen, keyword-only dataclass, so each default lives in exactly one place.

The engine (`Classifier`), the `run`/`classify` options, `soak`, the evaluation's "as the daemon decides"
figures and the tests all read `EngineSettings()`; none repeats a number. A field's name is its spelling
everywhere in the library (the CLI spells two of them differently: ``--hop`` and ``--onset-align``).

>>> EngineSettings().smooth, EngineSettings().silence_db, EngineSettings().min_confidence
(3, -60.0, 0.4)
>>> EngineSettings(smooth=5).replace(top_k=1)  # doctest: +NORMALIZE_WHITESPACE
EngineSettings(hop_seconds=None, smooth=5, silence_db=-60.0, min_confidence=0.4, top_k=1, align_onsets=True,
               decision='hops', pitched_guard=None)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

Decision = Literal["hops", "note"]
"""How a sounding hop's label is decided: `EngineSettings.decision`."""
DECISIONS: tuple[str, ...] = get_args(Decision)


def _check(name: str, value: Any, ok: bool, want: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {want}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    """How the engine turns a stream of model outputs into decisions. ValueError names a bad field."""

    hop_seconds: float | None = None
    """Seconds between two decisions; None takes the bundle's ``default_hop_seconds`` (0.25 s as shipped)."""

    smooth: int = 3
    """Non-silent hops whose probabilities are averaged before a decision (1: no smoothing)."""

    silence_db: float = -60.0
    """Hops quieter than this RMS level (dBFS) are silence: no model call, and the smoothing restarts."""

    min_confidence: float = 0.4
    """Below this smoothed top probability (with ``decision="note"``: the note's accumulated one) the label is
    ``unknown``."""

    top_k: int = 3
    """Classes reported per decision, best first (at most the bundle's label count)."""

    align_onsets: bool = True
    """Right after an onset, start the model window at the note (padded) rather than in the silence before it."""

    decision: Decision = "hops"
    """``hops``: each hop decides on the mean of the last `smooth` hops. ``note``: on the evidence since the
    note's onset (mean log-probability of its sounding hops, reset at the next onset or silence:
    `decision.decide_note_labels`), so a held note's label only firms up as it sounds."""

    pitched_guard: float | None = None
    """A hop whose pitch salience (`harmonicity.pitch_salience`, 0..1) is at least this is never labelled ``other``
    while an instrument is close (`decision.guard_pitched`); None: no guard (docs/experiments/other-guard.md)."""

    def __post_init__(self) -> None:
        hop = self.hop_seconds
        if hop is not None:
            _check("hop_seconds", hop, isinstance(hop, (int, float)) and math.isfinite(hop) and 0 < hop <= 10,
                   "in (0, 10] seconds")  # fmt: skip
        _check("smooth", self.smooth, _is_int(self.smooth) and self.smooth >= 1, "an integer >= 1")
        db = self.silence_db
        _check("silence_db", db, isinstance(db, (int, float)) and math.isfinite(db) and db <= 0, "a dBFS level <= 0")
        confidence = self.min_confidence
        _check("min_confidence", confidence, isinstance(confidence, (int, float)) and 0.0 <= confidence <= 1.0,
               "in [0, 1]")  # fmt: skip
        _check("top_k", self.top_k, _is_int(self.top_k) and self.top_k >= 1, "an integer >= 1")
        _check("decision", self.decision, self.decision in DECISIONS, f"one of {', '.join(DECISIONS)}")
        guard = self.pitched_guard
        _check("pitched_guard", guard, guard is None or (isinstance(guard, (int, float)) and 0.0 <= guard <= 1.0),
               "None or in [0, 1]")  # fmt: skip

    def replace(self, **changes: Any) -> EngineSettings:
        """A copy with some fields changed (TypeError for a name that is no field)."""
        return dataclasses.replace(self, **changes)


DEFAULT_SETTINGS = EngineSettings()
"""The shipped defaults (what `instrument-ai run` uses without options)."""

"""The engine's settings: one frozen, keyword-only dataclass, so each default lives in exactly one place.

The engine (`Classifier`), the `run`/`classify` options, `soak`, the evaluation's "as the daemon decides"
figures and the tests all read `EngineSettings()`; none repeats a number. A field's name is its spelling
everywhere in the library (the CLI spells two of them differently: ``--hop`` and ``--onset-align``).

Three fields may be left to the bundle (None): the hop, and the decision rule and floor its maker chose on
held-out phrases (`engine_defaults` in its metadata, written by ``convert --decision/--min-confidence``); a
bundle that names none gets the fallbacks, 0.4 and "hops" (0.4.0 and older). What the user sets always wins.

>>> EngineSettings().smooth, EngineSettings().silence_db, EngineSettings().min_confidence
(3, -60.0, None)
>>> EngineSettings().resolved({"decision": "note", "min_confidence": 0.35}).min_confidence
0.35
>>> EngineSettings(min_confidence=0.5).resolved({"decision": "note", "min_confidence": 0.35}).min_confidence
0.5
>>> EngineSettings().resolved({}).decision, EngineSettings().resolved({}).min_confidence
('hops', 0.4)
>>> EngineSettings(smooth=5).replace(top_k=1)  # doctest: +NORMALIZE_WHITESPACE
EngineSettings(hop_seconds=None, smooth=5, silence_db=-60.0, min_confidence=None, top_k=1, align_onsets=True,
               decision=None, first_answer_hop=None, pitched_guard=None, unpitched_floor=None)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

Decision = Literal["hops", "note"]
"""How a sounding hop's label is decided: `EngineSettings.decision`."""
DECISIONS: tuple[str, ...] = get_args(Decision)

FALLBACK_MIN_CONFIDENCE = 0.4
"""The floor for a bundle that names none (every bundle up to 0.4.0)."""
FALLBACK_DECISION: Decision = "hops"
"""The decision rule for a bundle that names none."""
FALLBACK_FIRST_ANSWER_HOP = 1
"""A note's first hop answers, for a bundle that names no `first_answer_hop`."""
ENGINE_DEFAULTS_KEY = "engine_defaults"
"""The bundle metadata field with the maker's `decision`, `min_confidence` and `first_answer_hop`
(`bundle_engine_defaults`)."""


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

    min_confidence: float | None = None
    """Below this smoothed top probability (with ``decision="note"``: the note's accumulated one) the label is
    ``unknown``; None takes the bundle's (`resolved`)."""

    top_k: int = 3
    """Classes reported per decision, best first (at most the bundle's label count)."""

    align_onsets: bool = True
    """Right after an onset, start the model window at the note (padded) rather than in the silence before it."""

    decision: Decision | None = None
    """None takes the bundle's (`resolved`). ``hops``: each hop decides on the mean of the last `smooth` hops.
    ``note``: on the evidence since the note's onset (mean log-probability of its sounding hops, reset at the
    next onset or silence: `decision.decide_note_labels`), so a held note's label only firms up as it sounds."""

    first_answer_hop: int | None = None
    """With ``decision="note"``: a note names a family from its Nth sounding hop on, and its earlier hops say
    ``unknown``. At 2 a one-hop note (a syllable, a click) never becomes an instrument event, and the first answer
    comes 0.5 s after the onset, the issue's limit (docs/experiments/levers.md, "One hop of patience"). 1: the
    first hop answers; None takes the bundle's (`resolved`), else `FALLBACK_FIRST_ANSWER_HOP`."""

    pitched_guard: float | None = None
    """A hop whose pitch salience (`harmonicity.pitch_salience`, 0..1) is at least this is never labelled ``other``
    while an instrument is close (`decision.guard_pitched`); None: no guard (docs/experiments/other-guard.md)."""

    unpitched_floor: float | None = None
    """A sounding hop whose pitch salience is under this is never named an instrument (``other`` instead):
    noise, rain and unpitched percussion have no stable period (`decision.floor_unpitched`); None: off
    (docs/experiments/other-guard.md)."""

    def __post_init__(self) -> None:
        hop = self.hop_seconds
        if hop is not None:
            _check("hop_seconds", hop, isinstance(hop, (int, float)) and math.isfinite(hop) and 0 < hop <= 10,
                   "in (0, 10] seconds")  # fmt: skip
        _check("smooth", self.smooth, _is_int(self.smooth) and self.smooth >= 1, "an integer >= 1")
        db = self.silence_db
        _check("silence_db", db, isinstance(db, (int, float)) and math.isfinite(db) and db <= 0, "a dBFS level <= 0")
        confidence = self.min_confidence
        _check("min_confidence", confidence, confidence is None or _is_fraction(confidence), "in [0, 1]")
        _check("top_k", self.top_k, _is_int(self.top_k) and self.top_k >= 1, "an integer >= 1")
        _check("decision", self.decision, self.decision is None or self.decision in DECISIONS,
               f"one of {', '.join(DECISIONS)}")  # fmt: skip
        first = self.first_answer_hop
        _check("first_answer_hop", first, first is None or _is_answer_hop(first), "an integer in [1, 8]")
        guard = self.pitched_guard
        _check("pitched_guard", guard, guard is None or (isinstance(guard, (int, float)) and 0.0 <= guard <= 1.0),
               "None or in [0, 1]")  # fmt: skip
        floor = self.unpitched_floor
        _check("unpitched_floor", floor, floor is None or _is_fraction(floor), "None or in [0, 1]")

    def replace(self, **changes: Any) -> EngineSettings:
        """A copy with some fields changed (TypeError for a name that is no field)."""
        return dataclasses.replace(self, **changes)

    @property
    def floor(self) -> float:
        """`min_confidence` as a number (the fallback where it is left to a bundle): for resolved settings."""
        return float(FALLBACK_MIN_CONFIDENCE if self.min_confidence is None else self.min_confidence)

    @property
    def answer_hop(self) -> int:
        """`first_answer_hop` as a number (the fallback where it is left to a bundle): for resolved settings."""
        return FALLBACK_FIRST_ANSWER_HOP if self.first_answer_hop is None else int(self.first_answer_hop)

    def resolved(self, bundle_defaults: Mapping[str, Any]) -> EngineSettings:
        """The settings a stream runs with: a field left None takes the bundle's default
        (`bundle_engine_defaults`), else the fallback; a field the user set stays."""
        return self.replace(
            min_confidence=_first(self.min_confidence, bundle_defaults.get("min_confidence"), FALLBACK_MIN_CONFIDENCE),
            decision=_first(self.decision, bundle_defaults.get("decision"), FALLBACK_DECISION),
            first_answer_hop=_first(self.first_answer_hop, bundle_defaults.get("first_answer_hop"),
                                    FALLBACK_FIRST_ANSWER_HOP),  # fmt: skip
        )


def _is_answer_hop(value: Any) -> bool:
    return _is_int(value) and 1 <= value <= 8


def _first(*values: Any) -> Any:
    return next(value for value in values if value is not None)


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def bundle_engine_defaults(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The decision rule and floor a bundle asks for (``{}`` when it names none). ValueError for a bad field:
    the bundle is refused rather than run with a rule its maker did not choose."""
    defaults = metadata.get(ENGINE_DEFAULTS_KEY)
    if defaults is None:
        return {}
    keys = ("decision", "min_confidence", "first_answer_hop", "chosen_on")
    if not isinstance(defaults, Mapping) or set(defaults) - set(keys):
        raise ValueError(f"{ENGINE_DEFAULTS_KEY} must be an object with 'decision', 'min_confidence' and/or "
                         "'first_answer_hop'")  # fmt: skip
    if "decision" in defaults and defaults["decision"] not in DECISIONS:
        raise ValueError(f"{ENGINE_DEFAULTS_KEY}.decision must be one of {', '.join(DECISIONS)}")
    if "min_confidence" in defaults and not _is_fraction(defaults["min_confidence"]):
        raise ValueError(f"{ENGINE_DEFAULTS_KEY}.min_confidence must be a number in [0, 1]")
    if "first_answer_hop" in defaults and not _is_answer_hop(defaults["first_answer_hop"]):
        raise ValueError(f"{ENGINE_DEFAULTS_KEY}.first_answer_hop must be an integer in [1, 8]")
    if not isinstance(defaults.get("chosen_on", ""), str):
        raise ValueError(f"{ENGINE_DEFAULTS_KEY}.chosen_on must be text (where the rule was chosen)")
    return {key: defaults[key] for key in keys if key in defaults}


def waiting_words(engine_defaults: Mapping[str, Any]) -> str:
    """How `convert` and `inspect` name a bundle's `first_answer_hop` after its floor ("" when it names none)."""
    hop = engine_defaults.get("first_answer_hop")
    return "" if hop is None else f", a note answering from its hop {hop} on"


DEFAULT_SETTINGS = EngineSettings()
"""The shipped defaults (what `instrument-ai run` uses without options)."""

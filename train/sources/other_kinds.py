"""Which corpus libraries' `other` clips hold pitched musical sounds (issue 23, item 4: `other` may never swallow
an instrument).

A model that learns `other` from tabla strokes, slit drums or birdsong learns that a clear pitch can be `other`,
and then calls a real instrument's note `other`. `train --other-kinds unpitched` (and `experiment holdout
--other-kinds unpitched`) leaves the `other` clips of the pitched libraries out of training and validation; they
stay in the corpus, so a holdout still tests them as held-out `other` sources.

The catalogue says it per source (`catalogue.Source.other_kind`, docs/sources.md); the libraries the corpus
builder makes itself are listed in `GENERATED_OTHER_KINDS` (numpy noise and hum, synthesised speech: non-musical)
and the SoundFont drum kits it renders (``NAME-drums``) are unpitched. A library known to neither counts as
unpitched (kept).
"""

from __future__ import annotations

from collections.abc import Iterable

from instrument_ai.device.errors import ConfigurationError

OTHER_KINDS = ("all", "unpitched")
"""`--other-kinds` values: every `other` clip trains (the 0.4.0 recipe), or only unpitched/non-musical ones."""
GENERATED_OTHER_KINDS = {"other-noise": "unpitched", "other-speech": "unpitched"}
"""Libraries `train/sources/other_sounds.py` generates: noise, mains hum, clicks, typing (no musical pitch) and
espeak speech (a voice's pitch, no tune)."""


class OtherKindsError(ConfigurationError, ValueError):
    """An unknown `--other-kinds` value (exit 2, one line)."""


def check_other_kinds(value: str) -> str:
    """`value` if it is one of `OTHER_KINDS`, else `OtherKindsError`."""
    if value not in OTHER_KINDS:
        raise OtherKindsError(f"unknown other kinds {value!r}; choose from {', '.join(OTHER_KINDS)}")
    return value


def catalogue_other_kinds() -> dict[str, str]:
    """Source name -> ``pitched``/``unpitched`` for every catalogue source with `other` clips."""
    from instrument_ai.train.sources import catalogue

    return {s.name: s.other_kind for s in catalogue.load() if s.other_kind is not None}


def other_kind_of(library: str, declared: dict[str, str]) -> str:
    """``pitched`` or ``unpitched`` for a library's `other` clips (see the module doc)."""
    if library in declared:
        return declared[library]
    return GENERATED_OTHER_KINDS.get(library, "unpitched")


def pitched_other_libraries(libraries: Iterable[str], declared: dict[str, str] | None = None) -> set[str]:
    """The libraries among `libraries` whose `other` clips are pitched (`declared`: the catalogue's by default)."""
    kinds = catalogue_other_kinds() if declared is None else declared
    return {lib for lib in libraries if other_kind_of(lib, kinds) == "pitched"}

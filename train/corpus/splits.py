"""Instrument-level train/valid/test splits of a corpus (``splits.json``).

A note belongs to the split of its instrument, so no instrument (and therefore
no note) is ever in two splits: the test measures instruments never heard in
training, as NSynth's official split does.

The unit that is assigned to a split is a *group*, not a single instrument:
all instruments of one lineage and one GM program (its variants usually reuse
the same samples, and FluidR3 and MuseScore General share theirs). Two schemes:

* ``holdout``: every instrument of the held-out libraries *and of their whole
  lineage* is test (holding out FluidR3 holds out MuseScoreGeneral too, and the
  other way round); `valid` is a fraction of the remaining groups.
* ``nsynth``: NSynth-style random split of groups into train/valid/test with
  the given fractions, stratified by family so every family with at least
  three groups appears in every split. Seeded, deterministic.

A real NSynth folder (no instruments.json) works with ``nsynth``: each
instrument is its own group. ``holdout`` needs library information.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.lifecycle import atomic_write_bytes

SPLITS = ("train", "valid", "test")
SCHEMES = ("holdout", "nsynth")


class SplitError(InstrumentAIError):
    """Splits cannot be made as asked; the message is one line for the CLI."""


def _instruments(folder: Path) -> dict[str, dict[str, Any]]:
    """instrument_str -> {"family", "library", "lineage", "group"} for the instruments that have notes."""
    from instrument_ai.train.corpus.info import corpus_info
    from instrument_ai.train.corpus.nsynth import DataError, iter_notes

    try:
        info = corpus_info(folder)
        present: dict[str, str] = {}
        for note in iter_notes(folder, audio="none"):
            present.setdefault(note.instrument_str, note.family_str)
    except DataError as exc:
        raise SplitError(str(exc)) from None
    rows = {}
    for name, family in sorted(present.items()):
        meta = info.instruments.get(name)
        if meta is None:
            rows[name] = {"family": family, "library": "nsynth", "lineage": "nsynth", "group": name}
        else:
            program = meta.program if meta.program is not None else name
            rows[name] = {
                "family": family,
                "library": meta.library,
                "lineage": meta.lineage,
                "group": f"{meta.lineage}/{program}",
            }
    return rows


def _groups(rows: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name, row in rows.items():
        groups[row["group"]].append(name)
    return {g: sorted(members) for g, members in sorted(groups.items())}


def _allocate(groups: list[str], fractions: dict[str, float], rng: np.random.Generator) -> dict[str, list[str]]:
    """Shuffle groups and cut them into splits by fraction (each asked-for split gets >= 1 when there are enough)."""
    order = [groups[i] for i in rng.permutation(len(groups))]
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    n = len(order)
    start = 0
    for name in ("test", "valid"):
        frac = fractions.get(name, 0.0)
        if frac <= 0:
            continue
        k = int(round(frac * n))
        if k == 0 and n >= 3:
            k = 1
        out[name] = order[start : start + k]
        start += k
    out["train"] = order[start:]
    return out


def make_splits(
    folder: str | Path,
    *,
    scheme: str,
    holdout: list[str] | None = None,
    valid: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """The splits.json content for a corpus folder (nothing is written)."""
    folder = Path(folder)
    if scheme not in SCHEMES:
        raise SplitError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    for name, value in (("valid", valid), ("test", test)):
        if not 0.0 <= value < 1.0:
            raise SplitError(f"--{name} must be a fraction in [0, 1), got {value}")
    if valid + test >= 1.0:
        raise SplitError(f"--valid + --test must leave something to train on, got {valid} + {test}")
    rows = _instruments(folder)
    if not rows:
        raise SplitError(f"{folder}: no notes to split")
    rng = np.random.default_rng(seed)
    params: dict[str, Any] = {"seed": seed, "valid": valid}
    test_groups: set[str] = set()
    if scheme == "holdout":
        if not holdout:
            raise SplitError("--scheme holdout needs --holdout LIBRARY (repeatable)")
        libraries = sorted({row["library"] for row in rows.values()})
        unknown = [lib for lib in holdout if lib not in libraries]
        if unknown:
            raise SplitError(f"library {unknown[0]!r} has no notes in {folder}; it has: {', '.join(libraries)}")
        lineages = {row["lineage"] for row in rows.values() if row["library"] in holdout}
        held = sorted({row["library"] for row in rows.values() if row["lineage"] in lineages})
        test_groups = {row["group"] for row in rows.values() if row["lineage"] in lineages}
        if len(test_groups) == len({row["group"] for row in rows.values()}):
            raise SplitError(f"holding out {', '.join(held)} leaves nothing to train on")
        params.update(holdout=held)
    else:
        params.update(test=test)
    groups = _groups(rows)
    by_family: dict[str, list[str]] = defaultdict(list)
    for group, members in groups.items():
        if group not in test_groups:
            by_family[rows[members[0]]["family"]].append(group)
    assigned: dict[str, list[str]] = {name: [] for name in SPLITS}
    assigned["test"] = sorted(test_groups)
    fractions = {"valid": valid} if scheme == "holdout" else {"valid": valid, "test": test}
    for family in sorted(by_family):
        part = _allocate(sorted(by_family[family]), fractions, rng)
        for name in SPLITS:
            assigned[name].extend(part[name])
    splits = {name: sorted(m for g in assigned[name] for m in groups[g]) for name in SPLITS}
    return {"scheme": scheme, "params": params, "splits": splits}


def check_disjoint(splits: dict[str, list[str]]) -> None:
    """Raise SplitError if an instrument is in two splits."""
    owner: dict[str, str] = {}
    for name, members in splits.items():
        for member in members:
            if member in owner:
                raise SplitError(f"instrument {member} is in both {owner[member]} and {name}")
            owner[member] = name


def write_splits(folder: str | Path, content: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write splits.json (default: in the corpus folder), atomically; returns its path."""
    check_disjoint(content["splits"])
    path = Path(out) if out is not None else Path(folder) / "splits.json"
    atomic_write_bytes(path, (json.dumps(content, indent=1) + "\n").encode("utf-8"))
    return path

"""Data preparation of a run, stage by stage: notes -> family filter -> holdout -> instrument split ->
label set -> features (one cached store per corpus) -> the record of what was used."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.frontend import FrontendSpec
from instrument_ai.device.labels import LABELS as FAMILIES  # the 11 NSynth families + `other` (id 11)
from instrument_ai.device.labels import OTHER
from instrument_ai.train.config import TrainConfig, TrainError, warn
from instrument_ai.train.features import (
    ExtractSettings,
    FeatureCache,
    FeatureError,
    FeatureSet,
    data_fingerprint,
    window_frames,
)

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """The training and validation features of a run, with their labels."""

    labels: list[str]
    family_ids: list[int]
    train: FeatureSet
    valid: FeatureSet
    train_y: np.ndarray  # label index per train note
    valid_y: np.ndarray  # label index per valid note
    info: dict[str, Any]


def _read_splits_file(path: Path) -> tuple[dict[str, list[str]], str | None]:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise TrainError(f"{path}: cannot read the split file ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise TrainError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    splits = raw.get("splits") if isinstance(raw, dict) else None
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise TrainError(f"{path}: expected {{'scheme': ..., 'splits': {{'train': [...], 'valid': [...]}}}}")
    return {k: [str(i) for i in v] for k, v in splits.items()}, raw.get("scheme")


def _auto_split(
    instruments_by_family: dict[int, list[str]], fraction: float, seed: int
) -> tuple[set[str], set[str], list[int]]:
    """Instrument-level split per family; returns (train, valid, families that could not be validated)."""
    rng = np.random.default_rng(seed)
    train: set[str] = set()
    valid: set[str] = set()
    single: list[int] = []
    for family in sorted(instruments_by_family):
        names = sorted(instruments_by_family[family])
        rng.shuffle(names)
        n_valid = max(1, int(round(fraction * len(names)))) if len(names) >= 2 else 0
        if n_valid == 0:
            single.append(family)
        valid.update(names[:n_valid])
        train.update(names[n_valid:])
    return train, valid, single


def _load_notes(config: TrainConfig, spec: FrontendSpec) -> tuple[list[Any], Any, dict[str, Any]]:
    """All usable notes of the corpus (metadata only for json/wav folders), its CorpusInfo and read report.

    Every note, whatever the split or family filter: the feature store is per corpus (see `prepare_data`).
    """
    from instrument_ai.train.corpus import nsynth
    from instrument_ai.train.corpus.info import CorpusInfo, corpus_info

    path = Path(config.data)
    report = nsynth.ReadReport()
    try:
        info = corpus_info(path) if path.is_dir() else CorpusInfo(folder=path)
        notes = list(
            nsynth.iter_notes(
                path,
                report=report,
                audio="none",
                sample_rate=spec.sample_rate,
                num_samples=None,
            )
        )
    except nsynth.DataError as exc:
        raise TrainError(str(exc)) from None
    if not notes:
        raise TrainError(f"{path}: no usable notes ({report.summary()})")
    for note in notes:  # a label that contradicts the corpus' own instrument table is a broken corpus
        row = info.instruments.get(note.instrument_str)
        if row is not None and row.family_str is not None and row.family_str != note.family_str:
            raise TrainError(
                f"{path}: note {note.note_str} is labelled {note.family_str!r} but instruments.json says "
                f"{note.instrument_str} is {row.family_str!r} (mislabeled corpus)"
            )
    return notes, info, report.to_dict()


@dataclass(frozen=True)
class InstrumentSplit:
    """Which instruments train and validate, and where that split came from."""

    train: set[str]
    valid: set[str]
    held: set[str]
    source: str
    scheme: str | None
    single: list[int]
    """Families with one instrument (trained, not validated) under an automatic split."""


def prepare_data(config: TrainConfig, *, labels: Sequence[str] | None = None) -> PreparedData:
    """Split the corpus by instrument, extract (or load cached) features, and fix the label set.

    `labels` (on resume) forces the label set of the run being continued.
    """
    spec = config.spec()
    warnings: list[str] = []
    all_notes, info, read_report = _load_notes(config, spec)
    notes = _select_families(config, all_notes)
    split = _without_pitched_other(config, notes, info, _split_instruments(config, notes, info), warnings)
    for family in split.single:
        warn(config, f"family {FAMILIES[family]} has one instrument: trained on, not validated", warnings)
    train_notes, valid_notes, family_ids = _fix_label_set(config, notes, split, labels, warnings)
    fingerprint, cache, store, timings = _extract_features(config, spec, all_notes)
    train, valid = _feature_views(config, store, train_notes, valid_notes, warnings)
    label_of = {f: i for i, f in enumerate(family_ids)}
    train_y = np.array([label_of[n["family"]] for n in train.notes], dtype=np.int64)
    valid_y = np.array([label_of[n["family"]] for n in valid.notes], dtype=np.int64)
    if train.n_notes == 0 or valid.n_notes == 0:
        which = "training" if not train.n_notes else "validation"
        raise TrainError(f"{config.data}: no audible notes left in the {which} split")
    data_info = {
        "path": str(config.data),
        "fingerprint": fingerprint,
        "libraries": sorted({info.library_of(n.instrument_str) for n in train_notes + valid_notes}),
        "counts": {"train": _counts(train), "valid": _counts(valid)},
        "split": {"source": split.source, "scheme": split.scheme, "holdout": list(config.holdout)},
        "instruments": {"train": sorted(split.train), "valid": sorted(split.valid)},
        "read_report": read_report,
        "features": {**timings, "cache": str(cache.root), "store_notes": store.n_notes, "store_bytes": store.nbytes()},
        "warnings": warnings,
    }
    return PreparedData(
        labels=[FAMILIES[f] for f in family_ids],
        family_ids=family_ids,
        train=train,
        valid=valid,
        train_y=train_y,
        valid_y=valid_y,
        info=data_info,
    )


def _select_families(config: TrainConfig, all_notes: list[Any]) -> list[Any]:
    """Stage 1: the notes of `config.families` (all notes when none are named)."""
    if not config.families:
        return all_notes
    unknown = sorted(set(config.families) - set(FAMILIES))
    if unknown:
        raise TrainError(f"unknown family {', '.join(unknown)}; known: {', '.join(FAMILIES)}")
    notes = [n for n in all_notes if n.family_str in set(config.families)]
    if not notes:
        raise TrainError(f"{config.data}: no notes of the families {', '.join(config.families)}")
    return notes


def _without_pitched_other(config: TrainConfig, notes: list[Any], info: Any, split: InstrumentSplit,
                           warnings: list[str]) -> InstrumentSplit:  # fmt: skip
    """Stage 3b: with ``other_kinds="unpitched"``, the `other` clips of pitched libraries (`other_kinds`) neither
    train nor validate (after the split, so a holdout may still name their library as its test set)."""
    if config.other_kinds == "all":
        return split
    from instrument_ai.train.sources.other_kinds import pitched_other_libraries

    other = {n.instrument_str for n in notes if n.family_str == OTHER}
    pitched = pitched_other_libraries({info.library_of(i) for i in other})
    gone = {i for i in other if info.library_of(i) in pitched}
    left = {i for i in gone if i in split.train or i in split.valid}
    if left:
        warn(config, f"--other-kinds unpitched: {len(left)} `other` instruments of {', '.join(sorted(pitched))} "
             "left out of training and validation (pitched)", warnings)  # fmt: skip
    return replace(split, train=split.train - gone, valid=split.valid - gone)


def _held_out(config: TrainConfig, notes: list[Any], info: Any) -> set[str]:
    """Stage 2: the instruments of the `--holdout` libraries (or lineages): the test set, never trained."""
    held: set[str] = set()
    if not config.holdout:
        return held
    wanted = set(config.holdout)
    for note in notes:
        if info.library_of(note.instrument_str) in wanted or info.lineage_of(note.instrument_str) in wanted:
            held.add(note.instrument_str)
    found = {info.library_of(i) for i in held} | {info.lineage_of(i) for i in held}
    missing = sorted(wanted - found)
    if missing:
        libraries = sorted({info.library_of(n.instrument_str) for n in notes})
        raise TrainError(
            f"--holdout {', '.join(missing)}: no such library in {config.data} (have: {', '.join(libraries)})"
        )
    return held


def _split_instruments(config: TrainConfig, notes: list[Any], info: Any) -> InstrumentSplit:
    """Stage 3: train and valid instruments from --split, else splits.json, else an automatic split."""
    held = _held_out(config, notes, info)
    split_source: str
    scheme: str | None = None
    splits: dict[str, list[str]] | None = None
    if config.split:
        splits, scheme = _read_splits_file(Path(config.split))
        split_source = str(config.split)
    elif info.splits is not None:
        splits, scheme = info.splits, info.scheme
        split_source = "splits.json"
    all_instruments = {n.instrument_str for n in notes} - held
    if splits is not None and splits.get("valid"):
        valid_set = set(splits["valid"]) & all_instruments
        train_set = set(splits.get("train", [])) & all_instruments
        if config.holdout:  # the held-out libraries are the test set: the old test instruments may train
            train_set |= set(splits.get("test", [])) & all_instruments
        single: list[int] = []
    else:
        by_family: dict[int, set[str]] = {}
        for note in notes:
            if note.instrument_str in all_instruments:
                by_family.setdefault(note.family, set()).add(note.instrument_str)
        candidates = set(splits["train"]) & all_instruments if splits is not None else all_instruments
        train_set, valid_set, single = _auto_split(
            {f: sorted(v & candidates) for f, v in by_family.items() if v & candidates},
            config.valid_fraction,
            config.seed,
        )
        split_source = "auto" if splits is None else f"auto (inside {split_source}'s train)"
    if not train_set:
        raise TrainError(f"{config.data}: no training instruments after the split{' and holdout' if held else ''}")
    if not valid_set:
        raise TrainError(
            f"{config.data}: cannot make a validation split (every family has a single instrument); "
            "add instruments or give --split with a 'valid' list"
        )
    return InstrumentSplit(train_set, valid_set, held, split_source, scheme, single)


def _fix_label_set(
    config: TrainConfig,
    notes: list[Any],
    split: InstrumentSplit,
    labels: Sequence[str] | None,
    warnings: list[str],
) -> tuple[list[Any], list[Any], list[int]]:
    """Stage 4: the families the model outputs; validation notes of untrained families are dropped, with a warning.

    Returns (train notes, valid notes, family ids in output order).
    """
    train_notes = [n for n in notes if n.instrument_str in split.train]
    valid_notes = [n for n in notes if n.instrument_str in split.valid]
    train_families = sorted({n.family for n in train_notes})
    valid_families = sorted({n.family for n in valid_notes})
    family_ids = [FAMILIES.index(name) for name in labels] if labels is not None else train_families
    if len(family_ids) < 2:
        raise TrainError(
            f"{config.data}: the training split has {len(family_ids)} family "
            f"({', '.join(FAMILIES[f] for f in family_ids) or 'none'}); a classifier needs at least 2"
        )
    dropped = [f for f in valid_families if f not in family_ids]
    if dropped:
        names = ", ".join(FAMILIES[f] for f in dropped)
        warn(config, f"validation notes of {names} dropped: no training example of that family", warnings)
        valid_notes = [n for n in valid_notes if n.family in family_ids]
    unvalidated = [FAMILIES[f] for f in family_ids if f not in valid_families]
    if unvalidated:
        warn(config, f"no validation notes for {', '.join(unvalidated)}: trained, not validated", warnings)
    if labels is None and FAMILIES.index(OTHER) not in family_ids:
        message = f"no '{OTHER}' notes in the training split: an {len(family_ids)}-family model, no '{OTHER}' output"
        warn(config, message, warnings)
    if labels is not None:
        train_notes = [n for n in train_notes if n.family in family_ids]
    if not valid_notes:
        raise TrainError(f"{config.data}: no validation notes left in the trained families")
    return train_notes, valid_notes, family_ids


def _extract_features(
    config: TrainConfig, spec: FrontendSpec, all_notes: list[Any]
) -> tuple[str, FeatureCache, FeatureSet, dict[str, Any]]:
    """Stage 5: the corpus' feature store (every usable note, clean + augmented renditions), built or cached.

    Keyed by the extraction settings and the corpus index, whatever the split, family filter or holdout:
    every split, fold and run over the same corpus shares one extraction. Returns (fingerprint, cache,
    store, timings).
    """
    wf = window_frames(spec, config.window_seconds)
    max_bytes = None if config.max_memory_gb is None else int(config.max_memory_gb * 2**30)
    cache = FeatureCache(config.cache)
    fingerprint = data_fingerprint(config.data)
    jobs = config.jobs or os.cpu_count() or 1
    settings = ExtractSettings(spec, config.stage, wf, config.silence_dbfs, config.audio_augment_settings())
    started = time.perf_counter()
    try:
        store = cache.get_or_build(
            all_notes,
            settings,
            data_hash=fingerprint,
            split="all",
            jobs=jobs,
            max_bytes=max_bytes,
            progress=bool(config.verbose),
        )
    except FeatureError as exc:
        raise TrainError(str(exc)) from None
    timings = {"seconds": round(time.perf_counter() - started, 2), "cache_hit": cache.last_hit, "key": cache.last_key}
    return fingerprint, cache, store, timings


def _feature_views(
    config: TrainConfig, store: FeatureSet, train_notes: list[Any], valid_notes: list[Any], warnings: list[str]
) -> tuple[FeatureSet, FeatureSet]:
    """Stage 6: the split's views of the store (validation sees rendition 0, the clean note); silent and
    unreadable notes are counted and warned about."""
    position = {n["note_str"]: i for i, n in enumerate(store.notes)}
    failed = {line.split(": ", 1)[0] for line in store.meta.get("failed", [])}
    train = store.subset([position[n.note_str] for n in train_notes if n.note_str in position])
    valid = store.subset([position[n.note_str] for n in valid_notes if n.note_str in position], renditions=(0,))
    for name, notes_of_split, features in (("training", train_notes, train), ("validation", valid_notes, valid)):
        unread = sum(n.note_str in failed for n in notes_of_split)
        silent = len(notes_of_split) - features.n_notes - unread
        features.n_silent = silent
        if silent:
            warn(config, f"{silent} {name} note(s) silent (nothing above -100 dBFS), skipped", warnings)
        if unread:
            warn(config, f"{unread} {name} note(s) could not be read, skipped (first: {min(failed)})", warnings)
    return train, valid


def _counts(fs: FeatureSet) -> dict[str, Any]:
    """What a split holds, for config.json's data.counts."""
    families = Counter(n["family_str"] for n in fs.notes)
    return {
        "notes": fs.n_notes,
        "instruments": len({n["instrument_str"] for n in fs.notes}),
        "silent_notes": fs.n_silent,
        "families": {FAMILIES[f]: families[FAMILIES[f]] for f in sorted({n["family"] for n in fs.notes})},
        "frames_stored": fs.n_frames_used,
    }



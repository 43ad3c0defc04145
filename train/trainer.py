"""Training a family classifier on an NSynth-format corpus, into a run folder.

The public API (used by `train_cli`, and by evaluation / experiments):

* `TrainConfig` - every choice of a run; saved in config.json and read back by
  `TrainConfig.from_dict` (round trip), so ``train --resume`` continues the same run.
* `train_model(config) -> Path` - prepares the data (instrument-level splits,
  cached features), trains with checkpoints each epoch and early stopping on the
  validation notes, and writes the run folder (docs/INTERFACES.md "Training run folder").
* `load_run(rundir) -> Run` - config, labels, spec, normalisation, history and
  metrics of a run, and its model on demand.

How a run sees the data, and why:

* **Instruments, not notes, are split**: a note goes where its instrument goes,
  so validation measures unseen instruments (what the product is judged by).
  The split comes from ``--split FILE``, else the corpus' splits.json, else an
  automatic instrument-level split (per family, `valid_fraction` of its
  instruments, at least one when it has two or more). splits.json's test
  instruments are never used, except with ``--holdout LIB``: then the held-out
  libraries are the test set, every other instrument not in "valid" trains.
* **A family with no example in a split is warned about and dropped**, never
  an error: valid notes of a family absent from training are removed (the
  model cannot name it); a family absent from validation is trained but not
  validated. Fewer than two trained families is an error.
* **Balanced sampling** (default): each batch draws families uniformly, then a
  note uniformly within the family, then a random rendition (clean or
  augmented) and a random window of it. Long sustained notes and crowded
  families do not dominate. ``balance="sqrt"`` or ``"none"`` soften it.
* **One feature store per corpus**: every usable note of the corpus is
  extracted once (clean + augmented renditions, features.py) and cached;
  splits, family filters and holdout folds are views of it, and validation
  uses its clean rendition. So the ten folds of leave-one-library-out and every
  rerun share one extraction.
* **One epoch = `windows_per_note` windows per training note**, all freshly
  cropped and feature-augmented (augment.py explains the split between cached
  audio renditions and per-batch feature augmentation).
* **Validation = the device's view**: every 1 s window every 0.25 s of each
  clean validation note above the silence gate; window accuracy, and note
  accuracy from the mean of a note's window probabilities. Early stopping and
  the best checkpoint follow `monitor` (default ``val_note_accuracy``).
* **Nothing written is ever half-written**: every file goes to a temporary
  name and is renamed into place. Ctrl-C keeps the last finished epoch's
  checkpoint (``checkpoints/last.keras`` + ``state.json``) and
  ``train --resume RUNDIR`` continues from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.frontend import DEFAULT_SPEC, FrontendSpec
from instrument_ai.device.lifecycle import atomic_write_bytes
from instrument_ai.train.augment import AudioAugment, FeatureAugment, augment_features, band_to_feature_matrix
from instrument_ai.train.features import (
    DEFAULT_HOP_SECONDS,
    SILENCE_DBFS,
    ExtractSettings,
    FeatureCache,
    FeatureError,
    FeatureSet,
    data_fingerprint,
    hop_frames,
    n_features,
    onset_prefix,
    silence_frame,
    window_frames,
)
from instrument_ai.train.models import PITCH_FILL, PRESETS, build_model, model_summary

log = logging.getLogger(__name__)

RUN_FORMAT = 1
BALANCES = ("balanced", "sqrt", "none")
FINAL_WINDOWS = 150_000
"""Validation windows scored at the end (all of them up to this many; ~1.4 GB of float32 at most)."""
MONITORS = {"val_note_accuracy": "max", "val_accuracy": "max", "val_loss": "min"}


class TrainError(Exception):
    """A training request that cannot run (bad data, split, option, memory); the message is one line."""


class TrainingInterrupted(TrainError):
    """Ctrl-C during training: the last finished epoch is checkpointed and the run can be resumed."""


# -- configuration ----------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every choice of a training run. None means "the preset's default" (see models.PRESETS)."""

    data: str
    out: str
    preset: str = "edge"
    epochs: int | None = None
    seed: int = 0
    batch_size: int | None = None
    learning_rate: float | None = None
    label_smoothing: float | None = None
    mixup_alpha: float | None = None
    patience: int | None = None
    monitor: str = "val_note_accuracy"
    split: str | None = None
    """A splits.json file; None: the corpus' splits.json if present, else an automatic split."""
    holdout: list[str] = field(default_factory=list)
    """Libraries (or lineages) kept out of training and validation: the test set of leave-one-library-out."""
    valid_fraction: float = 0.15
    families: list[str] | None = None
    jobs: int = 0
    """Feature-extraction processes; 0 = one per CPU."""
    cache: str | None = None
    """Feature-cache folder; None = ~/.cache/instrument-ai."""
    frontend_spec: dict[str, Any] | None = None
    """None = the device's DEFAULT_SPEC."""
    stage: str = "mfcc"
    window_seconds: float = 1.0
    hop_seconds: float = DEFAULT_HOP_SECONDS
    silence_dbfs: float = SILENCE_DBFS
    augment_copies: int | None = None
    audio_augment: dict[str, Any] = field(default_factory=dict)
    """Overrides of the preset's AudioAugment fields (copies comes from augment_copies)."""
    feature_augment: dict[str, Any] | None = None
    """FeatureAugment fields; None = enabled as the preset says, with default ranges."""
    balance: str = "balanced"
    real_weight: float = 1.0
    """Within each family, a note from a real-recording source is drawn this many times as often as a
    rendered one: real notes are few beside thousands of SoundFont renders and would otherwise barely count."""
    windows_per_note: float | None = None
    """Training windows per training note per epoch; None = the preset's."""
    onset_fraction: float | None = None
    """Share of training windows cut as the device sees a note's first second (onset, then silence frames);
    None = the preset's."""
    max_minutes: float | None = None
    """Stop after the epoch that crosses this wall-clock budget (counted from the start of training)."""
    max_valid_windows: int = 8000
    """Validation windows scored after every epoch (whole notes, a fixed random subset when there are more)."""
    calibration_windows: int = 512
    calibration_valid_windows: int = 3000
    max_memory_gb: float | None = None
    """Refuse feature sets bigger than this; None = 60 % of the available memory."""
    verbose: int = 1
    """0 silent, 1 progress (Keras bar on a terminal, a line per epoch otherwise)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise TrainError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.monitor not in MONITORS:
            raise TrainError(f"unknown monitor {self.monitor!r}; choose from {', '.join(MONITORS)}")
        if self.balance not in BALANCES:
            raise TrainError(f"unknown balance {self.balance!r}; choose from {', '.join(BALANCES)}")
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise TrainError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise TrainError(f"valid fraction must be between 0 and 1, got {self.valid_fraction}")
        if self.windows_per_note is not None and not self.windows_per_note > 0:
            raise TrainError("windows per note must be positive")
        if not self.real_weight > 0:
            raise TrainError(f"real weight must be positive, got {self.real_weight}")
        if self.onset_fraction is not None and not 0.0 <= self.onset_fraction <= 1.0:
            raise TrainError(f"onset fraction must be between 0 and 1, got {self.onset_fraction}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise TrainError("max minutes must be positive")
        if self.augment_copies is not None and not 0 <= self.augment_copies <= 16:
            raise TrainError(f"augment copies must be in 0..16, got {self.augment_copies}")
        if self.max_memory_gb is not None and not self.max_memory_gb > 0:
            raise TrainError("max memory must be a positive number of GB")
        if self.window_seconds <= 0 or self.hop_seconds <= 0:
            raise TrainError("window and hop seconds must be positive")

    # -- defaults resolved --
    @property
    def defaults(self) -> Any:
        return PRESETS[self.preset]

    def resolved(self) -> TrainConfig:
        """A copy with every None replaced by the preset's default (what the run actually uses)."""
        d = self.defaults
        return dataclasses.replace(
            self,
            epochs=self.epochs or d.epochs,
            batch_size=self.batch_size or d.batch_size,
            learning_rate=d.learning_rate if self.learning_rate is None else self.learning_rate,
            label_smoothing=d.label_smoothing if self.label_smoothing is None else self.label_smoothing,
            mixup_alpha=d.mixup_alpha if self.mixup_alpha is None else self.mixup_alpha,
            patience=self.patience or d.patience,
            windows_per_note=self.windows_per_note or d.windows_per_note,
            onset_fraction=d.onset_fraction if self.onset_fraction is None else self.onset_fraction,
            augment_copies=d.augment_copies if self.augment_copies is None else self.augment_copies,
            feature_augment=self.feature_augment_settings().to_dict(),
            frontend_spec=self.spec().to_dict(),
        )

    def spec(self) -> FrontendSpec:
        try:
            return DEFAULT_SPEC if self.frontend_spec is None else FrontendSpec.from_dict(dict(self.frontend_spec))
        except ValueError as exc:
            raise TrainError(str(exc)) from None

    def audio_augment_settings(self) -> AudioAugment:
        copies = self.defaults.augment_copies if self.augment_copies is None else self.augment_copies
        try:
            # the renditions' seed is not the run's: runs with other seeds share one cached extraction
            return AudioAugment.from_dict({**self.defaults.audio_augment, **self.audio_augment, "copies": copies})
        except (ValueError, TypeError) as exc:
            raise TrainError(f"audio augmentation: {exc}") from None

    def feature_augment_settings(self) -> FeatureAugment:
        try:
            if self.feature_augment is None:
                return FeatureAugment(enabled=self.defaults.feature_augment)
            return FeatureAugment.from_dict(self.feature_augment)
        except (ValueError, TypeError) as exc:
            raise TrainError(f"feature augmentation: {exc}") from None

    # -- serialisation --
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; refuses unknown fields (a config from a newer version)."""
        if not isinstance(data, dict):
            raise TrainError("train config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainError(f"train config: unknown field(s) {', '.join(unknown)}")
        if "onset_fraction" not in data:
            # Written before the 0.3.0 recipe: keep what that run was trained with (no onset windows, and
            # AudioAugment's own defaults where the presets now set the pitch-filling ones).
            old_audio = {k: v for k, v in AudioAugment().to_dict().items() if k in PITCH_FILL}
            data = {**data, "onset_fraction": 0.0, "audio_augment": {**old_audio, **data.get("audio_augment", {})}}
        try:
            return cls(**data)
        except TypeError as exc:
            raise TrainError(f"train config: {exc}") from None


# -- small atomic-writing helpers ---------------------------------------------------------------


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder and rename it over `path`."""
    atomic_write_bytes(path, json.dumps(data, indent=1, default=_json_default).encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_model_atomic(model: Any, path: Path) -> None:
    """model.save to a temporary .keras file, then rename (Keras insists on the suffix)."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.stem}.keras")
    model.save(tmp)
    os.replace(tmp, path)


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    tmp = _tmp_name(path)
    with tmp.open("wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


# -- data preparation ---------------------------------------------------------------------------


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


def _say(config: TrainConfig, message: str) -> None:
    if config.verbose:
        print(message, file=sys.stderr, flush=True)


def _warn(config: TrainConfig, message: str, warnings: list[str]) -> None:
    """Record a warning in the run (config.json data.warnings) and show it once."""
    warnings.append(message)
    if config.verbose:
        print(f"warning: {message}", file=sys.stderr, flush=True)
    else:
        log.warning(message)


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
    from instrument_ai.train.corpus import nsynth as data

    path = Path(config.data)
    report = data.ReadReport()
    try:
        info = data.corpus_info(path) if path.is_dir() else data.CorpusInfo(folder=path)
        notes = list(
            data.iter_notes(
                path,
                report=report,
                audio="none",
                sample_rate=spec.sample_rate,
                num_samples=None,
            )
        )
    except data.DataError as exc:
        raise TrainError(exc.message) from None
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


def prepare_data(config: TrainConfig, *, labels: Sequence[str] | None = None) -> PreparedData:
    """Split the corpus by instrument, extract (or load cached) features, and fix the label set.

    `labels` (on resume) forces the label set of the run being continued.
    """
    from instrument_ai.train.corpus.nsynth import LABELS as FAMILIES  # the 11 NSynth families + `other` (id 11)
    from instrument_ai.train.corpus.nsynth import OTHER

    spec = config.spec()
    warnings: list[str] = []
    all_notes, info, read_report = _load_notes(config, spec)
    notes = all_notes
    if config.families:
        unknown = sorted(set(config.families) - set(FAMILIES))
        if unknown:
            raise TrainError(f"unknown family {', '.join(unknown)}; known: {', '.join(FAMILIES)}")
        notes = [n for n in all_notes if n.family_str in set(config.families)]
        if not notes:
            raise TrainError(f"{config.data}: no notes of the families {', '.join(config.families)}")
    libraries = sorted({info.library_of(n.instrument_str) for n in notes})

    held: set[str] = set()
    if config.holdout:
        wanted = set(config.holdout)
        for note in notes:
            if info.library_of(note.instrument_str) in wanted or info.lineage_of(note.instrument_str) in wanted:
                held.add(note.instrument_str)
        found = {info.library_of(i) for i in held} | {info.lineage_of(i) for i in held}
        missing = sorted(wanted - found)
        if missing:
            raise TrainError(
                f"--holdout {', '.join(missing)}: no such library in {config.data} (have: {', '.join(libraries)})"
            )

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
    for family in single:
        _warn(config, f"family {FAMILIES[family]} has one instrument: trained on, not validated", warnings)

    train_notes = [n for n in notes if n.instrument_str in train_set]
    valid_notes = [n for n in notes if n.instrument_str in valid_set]
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
        _warn(config, f"validation notes of {names} dropped: no training example of that family", warnings)
        valid_notes = [n for n in valid_notes if n.family in family_ids]
    unvalidated = [FAMILIES[f] for f in family_ids if f not in valid_families]
    if unvalidated:
        _warn(config, f"no validation notes for {', '.join(unvalidated)}: trained, not validated", warnings)
    if labels is None and FAMILIES.index(OTHER) not in family_ids:
        message = f"no '{OTHER}' notes in the training split: an {len(family_ids)}-family model, no '{OTHER}' output"
        _warn(config, message, warnings)
    if labels is not None:
        train_notes = [n for n in train_notes if n.family in family_ids]
    if not valid_notes:
        raise TrainError(f"{config.data}: no validation notes left in the trained families")

    # Features: one store per corpus (every usable note, clean + augmented renditions), keyed by the
    # extraction settings and the corpus index, whatever the split, family filter or holdout. Every
    # split, fold and run over the same corpus shares one extraction; validation uses rendition 0
    # (the clean note) of the same store.
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
    position = {n["note_str"]: i for i, n in enumerate(store.notes)}
    failed = {line.split(": ", 1)[0] for line in store.meta.get("failed", [])}
    train = store.subset([position[n.note_str] for n in train_notes if n.note_str in position])
    valid = store.subset([position[n.note_str] for n in valid_notes if n.note_str in position], renditions=(0,))
    for name, notes_of_split, features in (("training", train_notes, train), ("validation", valid_notes, valid)):
        unread = sum(n.note_str in failed for n in notes_of_split)
        silent = len(notes_of_split) - features.n_notes - unread
        features.n_silent = silent
        if silent:
            _warn(config, f"{silent} {name} note(s) silent (nothing above -100 dBFS), skipped", warnings)
        if unread:
            _warn(config, f"{unread} {name} note(s) could not be read, skipped (first: {min(failed)})", warnings)
    label_of = {f: i for i, f in enumerate(family_ids)}
    train_y = np.array([label_of[n["family"]] for n in train.notes], dtype=np.int64)
    valid_y = np.array([label_of[n["family"]] for n in valid.notes], dtype=np.int64)
    if train.n_notes == 0 or valid.n_notes == 0:
        which = "training" if not train.n_notes else "validation"
        raise TrainError(f"{config.data}: no audible notes left in the {which} split")

    def counts(fs: FeatureSet) -> dict[str, Any]:
        families = Counter(n["family_str"] for n in fs.notes)
        return {
            "notes": fs.n_notes,
            "instruments": len({n["instrument_str"] for n in fs.notes}),
            "silent_notes": fs.n_silent,
            "families": {FAMILIES[f]: families[FAMILIES[f]] for f in sorted({n["family"] for n in fs.notes})},
            "frames_stored": fs.n_frames_used,
        }

    data_info = {
        "path": str(config.data),
        "fingerprint": fingerprint,
        "libraries": sorted({info.library_of(n.instrument_str) for n in train_notes + valid_notes}),
        "counts": {"train": counts(train), "valid": counts(valid)},
        "split": {"source": split_source, "scheme": scheme, "holdout": list(config.holdout)},
        "instruments": {"train": sorted(train_set), "valid": sorted(valid_set)},
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


# -- batches ----------------------------------------------------------------------------------


def note_sampling_probs(
    labels: np.ndarray, n_classes: int, balance: str, note_weights: np.ndarray | None = None
) -> np.ndarray:
    """Probability of drawing each training note: families weighted uniformly / by sqrt / by count.

    `note_weights` reweights notes inside their family (the family's share stays what `balance` says).
    """
    weights = np.ones(len(labels)) if note_weights is None else np.asarray(note_weights, dtype=np.float64)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    mass = np.bincount(labels, weights=weights, minlength=n_classes)
    if balance == "none":
        family_weight = counts
    elif balance == "sqrt":
        family_weight = np.sqrt(counts)
    else:
        family_weight = (counts > 0).astype(np.float64)
    per_note = np.where(mass[labels] > 0, family_weight[labels] * weights / np.maximum(mass[labels], 1e-12), 0.0)
    return per_note / per_note.sum()


def real_note_weights(notes: list[dict[str, Any]], data: str, real_weight: float) -> np.ndarray | None:
    """`real_weight` for notes of real-recording libraries (corpus.json/instruments.json `kind`), else 1."""
    if real_weight == 1.0:
        return None
    from instrument_ai.train.experiments.evaluate import corpus as corpus_info
    from instrument_ai.train.experiments.kinds import KIND_OF_FIELD, REAL, declared_kinds

    kinds = declared_kinds(Path(data))
    info = corpus_info(Path(data))
    weights = np.ones(len(notes))
    for i, note in enumerate(notes):
        row = info.instruments.get(note["instrument_str"])
        kind = kinds.get(row.library) if row else None
        if KIND_OF_FIELD.get(kind or "") == REAL:
            weights[i] = real_weight
    return weights


class WindowSampler:
    """Builds training batches: balanced notes -> random rendition and crop -> feature augmentation -> normalise.

    With `onset_fraction`, that share of the windows starts at a note's onset
    and keeps only its first 1..W-1 frames, the rest silence (`onset_prefix`):
    the windows the device classifies in the first second of every note.

    Deterministic per (seed, epoch, batch index), so a resumed run draws the
    same batches as an uninterrupted one would.
    """

    def __init__(
        self,
        features: FeatureSet,
        labels: np.ndarray,
        n_classes: int,
        *,
        mean: np.ndarray,
        std: np.ndarray,
        batch_size: int,
        steps: int,
        seed: int,
        balance: str,
        feature_augment: FeatureAugment,
        band_matrix: np.ndarray | None,
        mixup_alpha: float = 0.0,
        onset_fraction: float = 0.0,
        silence: np.ndarray | None = None,
        note_weights: np.ndarray | None = None,
    ) -> None:
        if onset_fraction > 0 and silence is None:
            raise ValueError("onset windows need the silence frame to pad with")
        self.onset_fraction = float(onset_fraction)
        self.silence = None if silence is None else np.asarray(silence, dtype=np.float32)
        self.features = features
        self.labels = labels
        self.n_classes = n_classes
        self.mean = mean.astype(np.float32)[None, :, None]
        self.std = std.astype(np.float32)[None, :, None]
        self.batch_size = batch_size
        self.steps = steps
        self.seed = seed
        self.probs = note_sampling_probs(labels, n_classes, balance, note_weights)
        self.feature_augment = feature_augment
        self.band_matrix = band_matrix
        self.mixup_alpha = mixup_alpha
        self.epoch = 0

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        notes = rng.choice(len(self.labels), size=self.batch_size, p=self.probs)
        starts = self.features.sample_starts(rng, notes)
        onset = choose_onsets(rng, self.features, notes, starts, self.onset_fraction)
        x = self.features.gather(starts)
        if self.band_matrix is not None:
            augment_features(x, rng, self.band_matrix, self.feature_augment)
        # after the EQ/gain: the device pads with the silence frame itself, not an augmented one
        cut_onsets(rng, x, onset, self.silence)
        x -= self.mean
        x /= self.std
        y = np.eye(self.n_classes, dtype=np.float32)[self.labels[notes]]
        if self.mixup_alpha > 0:
            lam = rng.beta(self.mixup_alpha, self.mixup_alpha, size=self.batch_size).astype(np.float32)
            lam = np.maximum(lam, 1.0 - lam)  # the first sample dominates, so its label stays the main one
            partner = rng.permutation(self.batch_size)
            x = lam[:, None, None] * x + (1.0 - lam[:, None, None]) * x[partner]
            y = lam[:, None] * y + (1.0 - lam[:, None]) * y[partner]
        return x[..., None], y


def choose_onsets(
    rng: np.random.Generator, features: FeatureSet, notes: np.ndarray, starts: np.ndarray, fraction: float
) -> np.ndarray:
    """Mark about `fraction` of the windows as onset windows and move their `starts` to the note's onset (in place).

    Returns the mask; draws nothing from `rng` when `fraction` is 0.
    """
    if fraction <= 0:
        return np.zeros(len(notes), dtype=bool)
    onset = rng.random(len(notes)) < fraction
    starts[onset] = features.onset_starts(rng, notes[onset])
    return onset


def cut_onsets(rng: np.random.Generator, x: np.ndarray, onset: np.ndarray, silence: np.ndarray | None) -> None:
    """Keep 1..W-1 random frames of the `onset` windows of `x` (B, F, W), the rest `silence` (in place)."""
    if onset.any():
        heard = rng.integers(1, x.shape[2], size=int(onset.sum()))
        x[onset] = onset_prefix(x[onset], heard, silence)


def onset_window_accuracy(
    predict: Callable[[np.ndarray], np.ndarray],
    features: FeatureSet,
    note_y: np.ndarray,
    hop: int,
    silence: np.ndarray,
    hop_seconds: float,
) -> dict[str, float]:
    """Window accuracy of the device's first three decisions after each clean note's onset (on hop boundaries).

    `predict` maps raw windows to probabilities; keys are the seconds heard ("0.25", "0.5", "0.75").
    """
    accuracy: dict[str, float] = {}
    for k in (1, 2, 3):
        x, note = features.onset_windows(k * hop, silence)
        if len(x):
            accuracy[f"{k * hop_seconds:g}"] = float(np.mean(predict(x).argmax(axis=1) == note_y[note]))
    return accuracy


def _make_dataset(sampler: WindowSampler) -> Any:
    import keras

    class _Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)

        def __len__(self) -> int:
            return sampler.steps

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            return sampler.batch(index)

    return _Batches()


# -- evaluation of windows --------------------------------------------------------------------


def predict_windows(model: Any, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Probabilities of normalised windows (N, F, W) -> (N, n_classes), in compiled batches."""
    if len(x) == 0:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    return np.asarray(model.predict(x[..., None], batch_size=batch_size, verbose=0))


def window_note_scores(probs: np.ndarray, window_note: np.ndarray, note_y: np.ndarray) -> dict[str, Any]:
    """Window accuracy, cross-entropy, note accuracy (mean probabilities per note) and per-label recall."""
    window_y = note_y[window_note]
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(probs)), window_y], eps, 1.0)))) if len(probs) else 0.0
    window_acc = float(np.mean(probs.argmax(axis=1) == window_y)) if len(probs) else 0.0
    n_notes = len(note_y)
    sums = np.zeros((n_notes, probs.shape[1]))
    np.add.at(sums, window_note, probs)
    has = np.bincount(window_note, minlength=n_notes) > 0
    note_pred = sums.argmax(axis=1)
    note_acc = float(np.mean(note_pred[has] == note_y[has])) if has.any() else 0.0
    recall = {}
    for label in range(probs.shape[1]):
        mask = has & (note_y == label)
        if mask.any():
            recall[label] = float(np.mean(note_pred[mask] == label))
    return {
        "loss": loss,
        "window_accuracy": window_acc,
        "note_accuracy": note_acc,
        "recall": recall,
        "note_pred": note_pred,
        "has": has,
    }


def macro_f1(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    scores = []
    for label in range(n_classes):
        tp = np.sum((pred == label) & (truth == label))
        fp = np.sum((pred == label) & (truth != label))
        fn = np.sum((pred != label) & (truth == label))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def _subset_windows(
    features: FeatureSet, hop: int, note_y: np.ndarray, max_windows: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Device windows of the clean renditions, of a random subset of notes when there are too many.

    Returns (raw windows, window -> kept-note index, kept note labels).
    """
    x, owner = features.device_windows(hop)
    if len(x) <= max_windows:
        return x, owner, note_y
    per_note = np.bincount(owner, minlength=features.n_notes)
    order = rng.permutation(features.n_notes)
    keep = order[np.cumsum(per_note[order]) <= max_windows]
    if keep.size == 0:
        keep = order[:1]
    keep = np.sort(keep)
    remap = np.full(features.n_notes, -1, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    mask = remap[owner] >= 0
    return x[mask], remap[owner[mask]], note_y[keep]


# -- the run ------------------------------------------------------------------------------------


def _activation_bytes(preset: str, batch_size: int, input_shape: tuple[int, int, int]) -> int:
    """Rough peak activation memory of a training step (forward + backward, float32)."""
    per_window = math.prod(input_shape) * 4
    widest = 32 if preset == "edge" else 16  # channels of the first layer
    return int(batch_size * per_window * widest * 6)


def _set_tf_threads() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # already initialised (e.g. a second run in one process)
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(2)


@contextlib.contextmanager
def _deferred_interrupt() -> Any:
    """Hold back SIGINT (Ctrl-C) for the duration of the block, then deliver it as KeyboardInterrupt."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _make_callbacks(
    keras: Any,
    run_dir: Path,
    state: dict[str, Any],
    config: TrainConfig,
    valid_x: np.ndarray,
    valid_owner: np.ndarray,
    valid_y: np.ndarray,
    sampler: WindowSampler,
) -> list[Any]:
    mode = MONITORS[config.monitor]
    checkpoints = run_dir / "checkpoints"

    class RunCallback(keras.callbacks.Callback):
        """Validation as the device sees it, history, best/last checkpoints, early stopping."""

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            sampler.epoch = epoch
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs if logs is not None else {}
            scores = window_note_scores(predict_windows(self.model, valid_x), valid_owner, valid_y)
            logs["val_loss"] = scores["loss"]
            logs["val_accuracy"] = scores["window_accuracy"]
            logs["val_note_accuracy"] = scores["note_accuracy"]
            seconds = time.perf_counter() - self._started
            with _deferred_interrupt():  # a Ctrl-C now waits until the epoch is fully on disk
                history = state["history"]
                for key, value in logs.items():
                    if isinstance(value, (int, float, np.floating)) or hasattr(value, "numpy"):
                        history.setdefault(key, []).append(float(value))
                history.setdefault("epoch_seconds", []).append(round(seconds, 2))
                state["train_seconds"] = float(state.get("train_seconds", 0.0)) + seconds
                value = float(logs[config.monitor])
                best = state.get("best")
                improved = best is None or (value > best if mode == "max" else value < best)
                if not improved and value == best and config.monitor != "val_loss":
                    # accuracies move in steps of 1/n on small validation sets: break ties on the loss
                    improved = scores["loss"] < float(state.get("best_loss", math.inf))
                if improved:
                    state.update(best=value, best_loss=scores["loss"], best_epoch=epoch + 1, wait=0)
                    save_model_atomic(self.model, run_dir / "model.keras")
                else:
                    state["wait"] = state.get("wait", 0) + 1
                state["epoch"] = epoch + 1
                if state["wait"] >= (config.patience or 1):
                    state["stopped"] = f"early stopping: no better {config.monitor} for {state['wait']} epochs"
                    self.model.stop_training = True
                elif config.max_minutes and state["train_seconds"] >= 60.0 * config.max_minutes:
                    state["stopped"] = f"time budget of {config.max_minutes:g} min reached"
                    self.model.stop_training = True
                save_model_atomic(self.model, checkpoints / "last.keras")
                write_json_atomic(run_dir / "history.json", history)
                write_json_atomic(checkpoints / "state.json", state)
            if config.verbose and not sys.stderr.isatty():
                print(
                    f"epoch {epoch + 1}/{config.epochs}: loss {logs.get('loss', float('nan')):.4f} "
                    f"val_loss {scores['loss']:.4f} val_window_acc {scores['window_accuracy']:.3f} "
                    f"val_note_acc {scores['note_accuracy']:.3f} ({seconds:.0f} s){' best' if improved else ''}",
                    file=sys.stderr,
                    flush=True,
                )
            if state.get("stopped") and config.verbose:
                print(f"stopped: {state['stopped']}", file=sys.stderr, flush=True)

    return [RunCallback()]


def _run_config(
    config: TrainConfig,
    prepared: PreparedData,
    mean: np.ndarray,
    std: np.ndarray,
    input_shape: tuple[int, int, int],
    summary: dict[str, int],
    status: str,
) -> dict[str, Any]:
    spec = config.spec()
    return {
        "format": RUN_FORMAT,
        "preset": config.preset,
        "frontend_spec": spec.to_dict(),
        "feature_stage": config.stage,
        "labels": prepared.labels,
        "input_normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "input_shape": list(input_shape),
        "window_frames": input_shape[1],
        "window_seconds": config.window_seconds,
        "default_hop_seconds": config.hop_seconds,
        "hop_frames": hop_frames(spec, config.hop_seconds),
        "silence_dbfs": config.silence_dbfs,
        "seed": config.seed,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "data": prepared.info,
        "model": summary,
        "augmentation": {
            "audio": config.audio_augment_settings().to_dict(),
            "feature": config.feature_augment_settings().to_dict(),
            "balance": config.balance,
            "mixup_alpha": config.mixup_alpha,
            "label_smoothing": config.label_smoothing,
        },
        "train_config": config.to_dict(),
        "status": status,
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise TrainError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if (out / "config.json").exists():
            raise TrainError(f"{out}: already holds a run; continue it with --resume {out} or choose another --out")
        raise TrainError(f"{out}: folder is not empty; choose a new or empty --out")


def train_model(config: TrainConfig, *, resume: bool = False, callbacks: Sequence[Any] | None = None) -> Path:
    """Train one run into `config.out` and return the run folder.

    With `resume`, `config` must be the one saved in the run (use
    `resume_config`) and training continues after the last checkpointed
    epoch. Extra Keras `callbacks` run after the run's own (so a checkpoint is
    on disk before they see the epoch). Raises `TrainError` (one-line message)
    for unusable input and `TrainingInterrupted` on Ctrl-C.
    """
    config = config.resolved()
    run_dir = Path(config.out)
    checkpoints = run_dir / "checkpoints"
    state: dict[str, Any] = {"epoch": 0, "best": None, "best_epoch": 0, "wait": 0, "history": {}}
    saved: dict[str, Any] | None = None
    if resume:
        saved = _read_json(run_dir / "config.json")
        if saved.get("status") == "complete":
            raise TrainError(f"{run_dir}: this run is complete; nothing to resume")
        if (checkpoints / "state.json").is_file():
            state = _read_json(checkpoints / "state.json")
    else:
        _check_out_dir(run_dir)
    started = time.perf_counter()
    prepared = prepare_data(config, labels=saved["labels"] if saved and saved.get("labels") else None)
    spec = config.spec()
    wf = window_frames(spec, config.window_seconds)
    input_shape = (n_features(spec, config.stage), wf, 1)
    n_classes = len(prepared.labels)
    batch_size = int(config.batch_size or 256)
    limit = int((config.max_memory_gb or 0) * 2**30) or int(0.6 * _available())
    need = _activation_bytes(config.preset, batch_size, input_shape)
    if need > limit:
        raise TrainError(
            f"batch size {batch_size} would need about {need / 2**30:.1f} GB of activations, over the "
            f"{limit / 2**30:.1f} GB limit; use a smaller --batch-size"
        )
    if saved is not None:
        mean = np.asarray(saved["input_normalization"]["mean"], dtype=np.float32)
        std = np.asarray(saved["input_normalization"]["std"], dtype=np.float32)
    else:
        mean, std = prepared.train.feature_stats()

    rng = np.random.default_rng([config.seed, 7])
    hop = hop_frames(spec, config.hop_seconds)
    valid_raw, valid_owner, valid_note_y = _subset_windows(
        prepared.valid, hop, prepared.valid_y, config.max_valid_windows, rng
    )
    if len(valid_raw) == 0:
        raise TrainError("no validation windows above the silence gate")
    valid_x = ((valid_raw - mean[None, :, None]) / std[None, :, None]).astype(np.float32)

    _set_tf_threads()
    import keras

    keras.utils.set_random_seed(config.seed + int(state.get("epoch", 0)))
    steps = max(1, math.ceil(prepared.train.n_notes * config.windows_per_note / batch_size))
    feature_aug = config.feature_augment_settings()
    band = None
    if feature_aug.enabled and config.stage in ("mfcc", "log_mel"):
        band = band_to_feature_matrix(spec, config.stage).astype(np.float32)
    sampler = WindowSampler(
        prepared.train,
        prepared.train_y,
        n_classes,
        mean=mean,
        std=std,
        batch_size=batch_size,
        steps=steps,
        seed=config.seed,
        balance=config.balance,
        feature_augment=feature_aug,
        band_matrix=band,
        mixup_alpha=float(config.mixup_alpha or 0.0),
        onset_fraction=float(config.onset_fraction or 0.0),
        silence=silence_frame(spec, config.stage).astype(np.float32),
        note_weights=real_note_weights(prepared.train.notes, config.data, config.real_weight),
    )
    last = checkpoints / "last.keras"
    if resume and last.is_file():
        try:
            model = keras.models.load_model(last)
        except Exception as exc:  # keras raises many types for a damaged file
            raise TrainError(f"{last}: cannot load the checkpoint ({str(exc).splitlines()[0]})") from None
    else:
        state = {"epoch": 0, "best": None, "best_epoch": 0, "wait": 0, "history": {}}
        model = build_model(
            config.preset,
            n_classes,
            input_shape,
            learning_rate=config.learning_rate,
            label_smoothing=config.label_smoothing,
            steps_per_epoch=steps,
            epochs=config.epochs,
        )
    summary = model_summary(model)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.mkdir(exist_ok=True)
    run_config = _run_config(config, prepared, mean, std, input_shape, summary, "running")
    write_json_atomic(run_dir / "config.json", run_config)
    _say(
        config,
        f"{config.preset}: {summary['params']} params, {summary['macs'] / 1e6:.2f} M MACs/window; "
        f"{prepared.train.n_notes} train notes, {prepared.valid.n_notes} valid notes ({len(valid_x)} windows); "
        f"{steps} steps/epoch",
    )
    initial_epoch = int(state.get("epoch", 0))
    stopped = bool(state.get("stopped")) or initial_epoch >= int(config.epochs or 1)
    if not stopped:
        run_callbacks = _make_callbacks(
            keras, run_dir, state, config, valid_x, valid_owner, valid_note_y, sampler
        ) + list(callbacks or [])
        verbose = 0 if not config.verbose else (1 if sys.stderr.isatty() else 0)
        try:
            model.fit(
                _make_dataset(sampler),
                epochs=int(config.epochs or 1),
                initial_epoch=initial_epoch,
                callbacks=run_callbacks,
                verbose=verbose,
            )
        except KeyboardInterrupt:
            for leftover in [*run_dir.glob(".tmp-*"), *checkpoints.glob(".tmp-*")]:
                leftover.unlink(missing_ok=True)
            done = int(state.get("epoch", 0))
            write_json_atomic(
                run_dir / "config.json", _run_config(config, prepared, mean, std, input_shape, summary, "interrupted")
            )
            raise TrainingInterrupted(
                f"interrupted after epoch {done}/{config.epochs}; continue with: instrument-ai train --resume {run_dir}"
            ) from None
    _finish(config, run_dir, prepared, mean, std, input_shape, summary, state)
    _say(config, f"run written to {run_dir} in {time.perf_counter() - started:.0f} s")
    return run_dir


def _finish(
    config: TrainConfig,
    run_dir: Path,
    prepared: PreparedData,
    mean: np.ndarray,
    std: np.ndarray,
    input_shape: tuple[int, int, int],
    summary: dict[str, int],
    state: dict[str, Any],
) -> None:
    """Best model -> metrics.json (all validation windows), calibration.npz, curves PNG, report.md; complete."""
    import keras

    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    norm = lambda raw: ((raw - mean[None, :, None]) / std[None, :, None]).astype(np.float32)  # noqa: E731
    rng = np.random.default_rng([config.seed, 11])
    hop = hop_frames(config.spec(), config.hop_seconds)
    valid_raw, valid_owner, valid_note_y = _subset_windows(prepared.valid, hop, prepared.valid_y, FINAL_WINDOWS, rng)
    valid_probs = predict_windows(model, norm(valid_raw))
    scores = window_note_scores(valid_probs, valid_owner, valid_note_y)
    train_raw, train_owner, train_note_y = _subset_windows(prepared.train, hop, prepared.train_y, 4000, rng)
    train_scores = window_note_scores(predict_windows(model, norm(train_raw)), train_owner, train_note_y)
    has = scores["has"]
    onset_accuracy = onset_window_accuracy(
        lambda raw: predict_windows(model, norm(raw)),
        prepared.valid,
        prepared.valid_y,
        hop,
        silence_frame(config.spec(), config.stage),
        config.hop_seconds,
    )
    metrics = {
        "split": "valid",
        "note_accuracy": scores["note_accuracy"],
        "window_accuracy": scores["window_accuracy"],
        "macro_f1": macro_f1(scores["note_pred"][has], valid_note_y[has], len(prepared.labels)),
        "loss": scores["loss"],
        "n_notes": int(has.sum()),
        "n_windows": len(valid_raw),
        "per_family": {prepared.labels[k]: {"recall": v} for k, v in scores["recall"].items()},
        "onset_window_accuracy": onset_accuracy,
        "train_note_accuracy": train_scores["note_accuracy"],
        "train_window_accuracy": train_scores["window_accuracy"],
        "chance": 1.0 / len(prepared.labels),
        "best_epoch": int(state.get("best_epoch", 0)),
        "epochs_run": int(state.get("epoch", 0)),
        "stopped": state.get("stopped") or "all epochs run",
        "train_seconds": round(float(state.get("train_seconds", 0.0)), 1),
        "monitor": config.monitor,
        "model": summary,
    }
    from instrument_ai.train.openset import calibrate

    open_set = calibrate(valid_probs, valid_owner, valid_note_y, list(prepared.labels))
    for note in open_set.notes:
        _say(config, note)
    metrics["other_output"] = "other" in prepared.labels
    if not metrics["other_output"]:
        metrics["other_note"] = f"no 'other' notes in the training corpus: {len(prepared.labels)} families trained"
    metrics["open_set"] = open_set.to_dict()
    write_json_atomic(run_dir / "metrics.json", metrics)
    _write_calibration(run_dir, config, prepared, valid_raw, valid_owner, valid_note_y)
    write_json_atomic(
        run_dir / "config.json", _run_config(config, prepared, mean, std, input_shape, summary, "complete")
    )
    try:
        from instrument_ai.train.experiments import report

        n = len(prepared.labels)
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (valid_note_y[has], scores["note_pred"][has]), 1)
        report.plot_confusion(
            matrix, prepared.labels, run_dir / "confusion_valid_notes.png", "Validation notes (unseen instruments)"
        )
        report.write_run_report(run_dir)
    except Exception as exc:  # a plotting failure must not lose a finished run
        log.warning("report: %s", exc)
        if config.verbose:
            print(f"warning: could not write the report ({str(exc).splitlines()[0]})", file=sys.stderr)


def _write_calibration(
    run_dir: Path,
    config: TrainConfig,
    prepared: PreparedData,
    valid_raw: np.ndarray,
    valid_owner: np.ndarray,
    valid_note_y: np.ndarray,
) -> None:
    """calibration.npz: raw training windows from every family (for the int8 representative dataset) and
    a subset of whole validation notes' windows with labels (to check int8 against float)."""
    rng = np.random.default_rng([config.seed, 13])
    n = config.calibration_windows
    labels = prepared.train_y
    per_family = max(1, n // max(1, len(prepared.labels)))
    chosen: list[int] = []
    for label in range(len(prepared.labels)):
        members = np.flatnonzero(labels == label)
        if members.size:
            chosen.extend(rng.choice(members, size=per_family, replace=members.size < per_family).tolist())
    chosen_notes = np.asarray(chosen, dtype=np.int64)
    starts = prepared.train.sample_starts(rng, chosen_notes)
    onset = choose_onsets(rng, prepared.train, chosen_notes, starts, float(config.onset_fraction or 0.0))
    train_x = prepared.train.gather(starts)
    # the int8 input range must cover the silence frames the device pads onset windows with
    cut_onsets(rng, train_x, onset, silence_frame(config.spec(), config.stage))
    keep_x, keep_owner, keep_y = valid_raw, valid_owner, valid_note_y
    if len(valid_raw) > config.calibration_valid_windows:
        per_note = np.bincount(valid_owner, minlength=len(valid_note_y))
        order = rng.permutation(len(valid_note_y))
        notes = np.sort(order[np.cumsum(per_note[order]) <= config.calibration_valid_windows])
        remap = np.full(len(valid_note_y), -1, dtype=np.int64)
        remap[notes] = np.arange(notes.size)
        mask = remap[valid_owner] >= 0
        keep_x, keep_owner, keep_y = valid_raw[mask], remap[valid_owner[mask]], valid_note_y[notes]
    save_npz_atomic(
        run_dir / "calibration.npz",
        train_x=train_x.astype(np.float32),
        train_y=np.asarray(labels[chosen], dtype=np.int64),
        valid_x=keep_x.astype(np.float32),
        valid_y=keep_y[keep_owner].astype(np.int64),
        valid_note=keep_owner.astype(np.int64),
    )


def _available() -> int:
    from instrument_ai.train.features import _available_memory

    return _available_memory()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainError(f"{path.parent}: not a training run (no {path.name})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise TrainError(f"{path}: expected a JSON object")
    return data


def resume_config(run_dir: str | Path, **overrides: Any) -> TrainConfig:
    """The TrainConfig saved in a run folder (for ``train --resume``), with optional overrides (e.g. jobs)."""
    run_dir = Path(run_dir)
    saved = _read_json(run_dir / "config.json")
    if "train_config" not in saved:
        raise TrainError(f"{run_dir}/config.json: no train_config (not written by instrument-ai train)")
    values = {**saved["train_config"], **{k: v for k, v in overrides.items() if v is not None}, "out": str(run_dir)}
    return TrainConfig.from_dict(values)


# -- reading a run ------------------------------------------------------------------------------


@dataclass
class Run:
    """A training run folder, read back: everything `evaluate`, `convert` and the reports need."""

    path: Path
    config: dict[str, Any]
    train_config: TrainConfig
    spec: FrontendSpec
    labels: list[str]
    mean: np.ndarray
    std: np.ndarray
    window_frames: int
    hop_frames: int
    history: dict[str, list[float]]
    metrics: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.config.get("status", "unknown"))

    def normalize(self, windows: np.ndarray) -> np.ndarray:
        """Raw windows (N, n_mfcc, window_frames) -> the model's normalised input (N, n_mfcc, window_frames)."""
        return ((windows - self.mean[None, :, None]) / self.std[None, :, None]).astype(np.float32)

    def load_model(self, *, compile: bool = False) -> Any:
        """The best checkpoint (model.keras)."""
        import keras

        return keras.models.load_model(self.path / "model.keras", compile=compile)

    def predict(self, windows: np.ndarray, model: Any | None = None) -> np.ndarray:
        """Probabilities for raw windows (N, n_mfcc, window_frames)."""
        return predict_windows(model if model is not None else self.load_model(), self.normalize(windows))

    def calibration(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "calibration.npz") as data:
            return {k: data[k] for k in data.files}


def load_run(rundir: str | Path) -> Run:
    """Read a run folder written by `train_model` (raises TrainError with one line if it is not one)."""
    path = Path(rundir)
    if not path.is_dir():
        raise TrainError(f"{path}: no such run folder")
    config = _read_json(path / "config.json")
    try:
        spec = FrontendSpec.from_dict(config["frontend_spec"])
        mean = np.asarray(config["input_normalization"]["mean"], dtype=np.float32)
        std = np.asarray(config["input_normalization"]["std"], dtype=np.float32)
        train_config = TrainConfig.from_dict(config["train_config"])
        labels = [str(x) for x in config["labels"]]
        wf = int(config["window_frames"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainError(f"{path}/config.json: unusable run config ({exc})") from None
    history = _read_json(path / "history.json") if (path / "history.json").exists() else {}
    metrics = _read_json(path / "metrics.json") if (path / "metrics.json").exists() else {}
    return Run(
        path=path,
        config=config,
        train_config=train_config,
        spec=spec,
        labels=labels,
        mean=mean,
        std=std,
        window_frames=wf,
        hop_frames=int(config.get("hop_frames", hop_frames(spec, float(config.get("default_hop_seconds", 0.25))))),
        history=history,
        metrics=metrics,
    )


__all__ = [
    "Run",
    "TrainConfig",
    "TrainError",
    "TrainingInterrupted",
    "load_run",
    "prepare_data",
    "resume_config",
    "train_model",
]

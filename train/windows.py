"""Windows of a run: the balanced training-batch sampler, onset windows, and scoring of device windows."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.frontend import normalise_windows
from instrument_ai.train.augment import FeatureAugment, augment_features
from instrument_ai.train.features import (
    FeatureSet,
    onset_prefix,
)

log = logging.getLogger(__name__)


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
    from instrument_ai.train.corpus.info import corpus_info
    from instrument_ai.train.corpus.kinds import KIND_OF_FIELD, REAL, declared_kinds

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

    With `note_targets` (n_notes, n_classes), every window of a note is trained towards its note's row (a
    distillation target, teacher.py) instead of the note's one-hot label.

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
        note_targets: np.ndarray | None = None,
    ) -> None:
        if note_targets is not None and note_targets.shape != (len(labels), n_classes):
            raise ValueError(f"note targets of shape {note_targets.shape}, expected {(len(labels), n_classes)}")
        self.targets = (
            np.eye(n_classes, dtype=np.float32)[labels] if note_targets is None else note_targets.astype(np.float32)
        )
        if onset_fraction > 0 and silence is None:
            raise ValueError("onset windows need the silence frame to pad with")
        self.onset_fraction = float(onset_fraction)
        self.silence = None if silence is None else np.asarray(silence, dtype=np.float32)
        self.features = features
        self.labels = labels
        self.n_classes = n_classes
        self.mean = mean.astype(np.float32)
        self.std = std.astype(np.float32)
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
        x = normalise_windows(x, self.mean, self.std)
        y = self.targets[notes]  # one-hot, or the note's label mixed with its teacher's soft targets
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


def make_dataset(sampler: WindowSampler) -> Any:
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


def subset_windows(
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



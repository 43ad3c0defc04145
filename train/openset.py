"""Open-set calibration on the validation split: a temperature and a rejection threshold for the bundle.

The score is the maximum probability after temperature scaling (device/openset.py says why not an energy
score). Both are fitted on the run's validation instruments only - never on a held-out test source - so a
holdout fold's test source cannot leak into its calibration (train/experiments/holdout.py runs one training per fold).

Threshold rule: among the candidate thresholds that keep instrument note recall within `max_recall_drop`
(3 points) of no rejection, take the one that names an instrument on the fewest `other` validation windows;
ties go to the smallest threshold (the least rejection). Too few validation clips: say so in one line and keep
the default (temperature 1, no rejection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_NOTES = 20  # instrument validation notes needed to fit a temperature and to measure the recall cost
MIN_OTHER_NOTES = 5  # `other` validation notes needed to measure what a threshold buys
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
THRESHOLDS = np.round(np.linspace(0.0, 0.95, 96), 4)


@dataclass
class Calibration:
    temperature: float = 1.0
    threshold: float = 0.0
    notes: list[str] = field(default_factory=list)  # one-line messages (why a default was kept)
    figures: dict[str, Any] = field(default_factory=dict)

    def bundle_field(self) -> dict[str, Any] | None:
        """The bundle's `open_set` metadata; None when nothing was calibrated (the device default)."""
        if self.temperature == 1.0 and self.threshold == 0.0:
            return None
        return {"score": "max_calibrated_probability", "temperature": self.temperature, "threshold": self.threshold}

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "threshold": self.threshold,
            "notes": self.notes,
            "figures": self.figures,
            "bundle": self.bundle_field(),
        }


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled softmax from softmax outputs (the device's `Rejection.calibrate`)."""
    logits = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature (grid over 0.25-8) minimising the validation windows' negative log-likelihood."""
    rows = np.arange(len(y))
    nll = [-np.mean(np.log(np.clip(scale(probs, t)[rows, y], 1e-12, None))) for t in TEMPERATURES]
    return float(round(TEMPERATURES[int(np.argmin(nll))], 4))


def _note_means(probs: np.ndarray, owner: np.ndarray, n_notes: int) -> tuple[np.ndarray, np.ndarray]:
    sums = np.zeros((n_notes, probs.shape[1]))
    np.add.at(sums, owner, probs)
    counts = np.bincount(owner, minlength=n_notes)
    has = counts > 0
    return sums / np.maximum(counts, 1)[:, None], has


def calibrate(
    probs: np.ndarray,
    owner: np.ndarray,
    note_y: np.ndarray,
    labels: list[str],
    *,
    max_recall_drop: float = 0.03,
) -> Calibration:
    """Temperature and threshold from validation windows `probs` (N, C), their note `owner`, the notes' labels."""
    cal = Calibration()
    other = labels.index("other") if "other" in labels else None
    window_y = note_y[owner]
    note_probs, has = _note_means(probs, owner, len(note_y))
    instrument_notes = has & (note_y != other) if other is not None else has
    other_notes = has & (note_y == other) if other is not None else np.zeros_like(has)
    n_inst, n_other = int(instrument_notes.sum()), int(other_notes.sum())
    cal.figures = {"instrument_notes": n_inst, "other_notes": n_other, "windows": len(probs)}
    if n_inst + n_other < MIN_NOTES:
        cal.notes.append(
            f"open-set calibration skipped: {n_inst + n_other} validation notes (need {MIN_NOTES}); "
            "temperature 1, no rejection"
        )
        return cal
    cal.temperature = fit_temperature(probs, window_y)
    if n_inst < MIN_NOTES or n_other < MIN_OTHER_NOTES:
        cal.notes.append(
            f"rejection threshold not calibrated: {n_inst} instrument and {n_other} 'other' validation notes "
            f"(need {MIN_NOTES} and {MIN_OTHER_NOTES}); no rejection"
        )
        return cal
    scaled_notes = scale(note_probs, cal.temperature)
    scaled_windows = scale(probs, cal.temperature)
    note_pred, note_score = scaled_notes.argmax(axis=1), scaled_notes.max(axis=1)
    win_pred, win_score = scaled_windows.argmax(axis=1), scaled_windows.max(axis=1)
    other_windows = window_y == other
    inst_ok = instrument_notes & (note_pred == note_y)
    base_recall = float(inst_ok.sum() / n_inst)
    best: tuple[float, float, float] | None = None  # (other named share, threshold, recall)
    for t in THRESHOLDS:
        recall = float((inst_ok & (note_score >= t)).sum() / n_inst)
        if base_recall - recall > max_recall_drop + 1e-12:
            break  # recall only falls as t grows
        named = other_windows & (win_pred != other) & (win_score >= t)
        share = float(named.sum() / max(1, other_windows.sum()))
        if best is None or share < best[0] - 1e-12:
            best = (share, float(t), recall)
    assert best is not None  # t = 0 always qualifies
    none_named = other_windows & (win_pred != other)
    cal.threshold = best[1]
    cal.figures.update(
        instrument_recall_without_rejection=round(base_recall, 4),
        instrument_recall=round(best[2], 4),
        other_windows_named_instrument_without_rejection=round(float(none_named.sum() / other_windows.sum()), 4),
        other_windows_named_instrument=round(best[0], 4),
    )
    return cal

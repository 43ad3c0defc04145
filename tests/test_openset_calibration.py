"""Open-set calibration (train/openset.py): the temperature fits over-confident outputs, the threshold rule
keeps instrument recall within 3 points while rejecting `other` windows named an instrument, and too few
validation clips keep the default with a one-line note."""

from __future__ import annotations

import numpy as np

from instrument_ai.device.openset import Rejection
from instrument_ai.train.openset import calibrate, fit_temperature, scale

LABELS = ["brass", "guitar", "other"]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _validation(rng: np.random.Generator, n_inst: int = 60, n_other: int = 20) -> tuple:
    """4 windows per note; instrument notes are confidently right, `other` notes are unsure instruments."""
    note_y = np.array([0, 1] * (n_inst // 2) + [2] * n_other)
    owner = np.repeat(np.arange(len(note_y)), 4)
    logits = rng.normal(0, 0.3, (len(owner), 3))
    y = note_y[owner]
    inst = y != 2
    logits[inst, y[inst]] += 4.0
    logits[~inst, rng.integers(0, 2, (~inst).sum())] += 1.0  # other windows look a little like an instrument
    return _softmax(logits), owner, note_y


def test_temperature_recovers_an_overconfident_scale() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1, (4000, 3))
    y = np.array([rng.choice(3, p=p) for p in _softmax(z)])
    overconfident = _softmax(3.0 * z)  # true logits z, reported 3 z
    assert 2.4 < fit_temperature(overconfident, y) < 3.6
    np.testing.assert_allclose(scale(overconfident, 3.0), Rejection(3.0).calibrate(overconfident), rtol=1e-9)


def test_threshold_rejects_other_windows_within_three_points_of_recall() -> None:
    probs, owner, note_y = _validation(np.random.default_rng(1))
    cal = calibrate(probs, owner, note_y, LABELS)
    f = cal.figures
    assert cal.notes == [] and 0 < cal.threshold < 1
    assert f["instrument_recall_without_rejection"] - f["instrument_recall"] <= 0.03 + 1e-9
    assert f["other_windows_named_instrument"] < f["other_windows_named_instrument_without_rejection"]
    assert cal.bundle_field() == {
        "score": "max_calibrated_probability",
        "temperature": cal.temperature,
        "threshold": cal.threshold,
    }


def test_too_few_validation_clips_keep_the_default_with_one_line() -> None:
    probs, owner, note_y = _validation(np.random.default_rng(2), n_inst=10, n_other=4)
    cal = calibrate(probs, owner, note_y, LABELS)
    assert (cal.temperature, cal.threshold, cal.bundle_field()) == (1.0, 0.0, None)
    assert len(cal.notes) == 1 and "\n" not in cal.notes[0] and "14 validation notes" in cal.notes[0]


def test_without_other_notes_the_threshold_stays_off() -> None:
    probs, owner, note_y = _validation(np.random.default_rng(3), n_other=0)
    cal = calibrate(probs[:, :2] / probs[:, :2].sum(1, keepdims=True), owner, note_y, LABELS[:2])
    assert cal.threshold == 0.0 and cal.temperature != 1.0
    assert len(cal.notes) == 1 and "rejection threshold not calibrated" in cal.notes[0]


def test_the_bundle_writer_copies_the_calibrated_field_only() -> None:
    from instrument_ai.convert.bundle_writer import _open_set

    field = {"score": "max_calibrated_probability", "temperature": 1.7, "threshold": 0.42}
    assert _open_set({"open_set": {"bundle": field, "notes": []}}) == {"open_set": field}
    assert _open_set({"open_set": {"bundle": None, "notes": ["skipped"]}}) == {}
    assert _open_set({"note_accuracy": 0.5}) == {}  # a 0.3.0 run: no field, the device default

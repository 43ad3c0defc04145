"""The one rule that turns (smoothed) probabilities into a label, shared by the engine and the evaluation.

Pure: no state, no model. The engine calls `decide_label` once per sounding hop on its smoothed
probabilities; `train/evaluate.py`'s "as the daemon decides" figures call `decide_labels` on every window,
so the figures cannot drift from the daemon.

The rule: the top class, unless its probability is under `min_confidence` (``unknown``), or the open-set
check rejects it - its temperature-calibrated maximum probability under the bundle's threshold - which turns
an instrument (never ``other``) into ``unknown``.

>>> import numpy as np
>>> from instrument_ai.device.openset import Rejection
>>> labels = ["flute", "organ", "other"]
>>> decide_label(np.array([0.7, 0.2, 0.1]), labels, min_confidence=0.4)
'flute'
>>> decide_label(np.array([0.35, 0.33, 0.32]), labels, min_confidence=0.4)
'unknown'
>>> decide_labels(np.array([[0.5, 0.4, 0.1], [0.1, 0.2, 0.7]]), labels, min_confidence=0.4,
...               rejection=Rejection(threshold=0.6))
['unknown', 'other']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from instrument_ai.device.labels import OTHER, UNKNOWN
from instrument_ai.device.openset import Rejection

NO_REJECTION = Rejection()
"""A bundle without ``open_set`` metadata: temperature 1, threshold 0."""


def decide_labels(
    probs: np.ndarray, labels: Sequence[str], *, min_confidence: float, rejection: Rejection = NO_REJECTION
) -> list[str]:
    """The label of each row of `probs` (n, len(labels)): the top class, or ``unknown`` (see the module doc)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probabilities of shape {probs.shape} do not match {len(labels)} labels")
    if probs.shape[0] == 0:
        return []
    top = probs.argmax(axis=1)  # the first of equal maxima, as a stable sort would put first
    confidence = probs.max(axis=1)
    calibrated = rejection.calibrate(probs).max(axis=1)
    out = []
    for k, index in enumerate(top):
        label = labels[int(index)]
        if confidence[k] < min_confidence or (label != OTHER and calibrated[k] < rejection.threshold):
            label = UNKNOWN
        out.append(label)
    return out


def decide_label(
    probs: np.ndarray, labels: Sequence[str], *, min_confidence: float, rejection: Rejection = NO_REJECTION
) -> str:
    """The label of one hop's probabilities (1-D), by the same rule as `decide_labels`."""
    row = np.asarray(probs, dtype=np.float64).reshape(1, -1)
    return decide_labels(row, labels, min_confidence=min_confidence, rejection=rejection)[0]

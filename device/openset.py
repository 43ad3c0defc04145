"""Open-set rejection on the device: the `other` output and the calibrated-confidence threshold.

A bundle may carry ``open_set = {"temperature": T, "threshold": t, "score": "max_calibrated_probability"}``
(docs/bundle-format.md). The score is the maximum probability after temperature scaling rather than an energy
score because the bundle's output is already a softmax: dividing its log by T and renormalising recovers the
temperature-scaled softmax exactly (softmax is shift invariant), so no logits are needed and the score stays a
probability, comparable with ``--min-confidence``. A hop whose calibrated score is below ``threshold`` is
``unknown``; a bundle without ``open_set`` behaves as T = 1, threshold 0 (no rejection), as 0.3.0 did.

numpy only (the device path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from instrument_ai.device.errors import ConfigurationError
from instrument_ai.device.labels import OTHER

SCORE = "max_calibrated_probability"


class OpenSetError(ConfigurationError, ValueError):
    """A bundle's open_set metadata is malformed, or lacks `other` where the device requires it."""


@dataclass(frozen=True)
class Rejection:
    """Temperature scaling plus a threshold on the maximum calibrated probability."""

    temperature: float = 1.0
    threshold: float = 0.0

    @property
    def active(self) -> bool:
        return self.temperature != 1.0 or self.threshold > 0.0

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """Temperature-scaled probabilities from softmax outputs (identity at T = 1)."""
        p = np.asarray(probs, dtype=np.float64)
        if self.temperature == 1.0:
            return p
        logits = np.log(np.clip(p, 1e-12, None)) / self.temperature
        logits -= logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=-1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        return {"score": SCORE, "temperature": float(self.temperature), "threshold": float(self.threshold)}


def rejection_from_metadata(metadata: dict[str, Any] | None) -> Rejection:
    """The bundle's rejection settings; the default (none) when the field is absent. Raises OpenSetError."""
    field = (metadata or {}).get("open_set")
    if field is None:
        return Rejection()
    if not isinstance(field, dict):
        raise OpenSetError("metadata field 'open_set' must be an object")
    temperature, threshold = field.get("temperature", 1.0), field.get("threshold", 0.0)
    for name, value in (("temperature", temperature), ("threshold", threshold)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise OpenSetError(f"open_set.{name} must be a finite number")
    if temperature <= 0:
        raise OpenSetError("open_set.temperature must be positive")
    if not 0.0 <= threshold <= 1.0:
        raise OpenSetError("open_set.threshold must be in [0, 1]")
    if field.get("score", SCORE) != SCORE:
        raise OpenSetError(f"open_set.score {field.get('score')!r} is not supported (only {SCORE!r})")
    return Rejection(float(temperature), float(threshold))


def require_other(labels: list[str], where: str = "the bundle") -> None:
    """One-line refusal when a device expecting `other` gets a bundle whose labels lack it."""
    if OTHER not in labels:
        raise OpenSetError(f"{where} has no '{OTHER}' label (labels: {', '.join(labels)}); it cannot say 'other'")

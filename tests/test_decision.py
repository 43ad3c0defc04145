"""One decision rule: the engine's labels and the evaluation's "as the daemon decides" labels are the same for
the same model outputs, because both call `device.decision`; and the rule itself, case by case."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from fakemic import FakeBundle, tone

from instrument_ai.device.decision import decide_label, decide_labels
from instrument_ai.device.engine import Classifier
from instrument_ai.device.openset import Rejection
from instrument_ai.device.settings import EngineSettings
from instrument_ai.train.experiments.evaluate import DEVICE_MIN_CONFIDENCE, DEVICE_SMOOTH, Predictions, hop_labels

LABELS = ["low", "high", "other"]
OPEN_SET = {"score": "max_calibrated_probability", "temperature": 1.5, "threshold": 0.5}


@dataclass
class ScriptedBundle(FakeBundle):
    """Returns the next row of `script` at every call, whatever the audio."""

    script: list[np.ndarray] = field(default_factory=list)
    metadata: dict = field(default_factory=lambda: {"open_set": OPEN_SET})

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.script[(self.calls - 1) % len(self.script)]


def _script(n: int, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)  # peaked, flat and in-between outputs, each label on top now and then
    rows = [rng.dirichlet(np.roll([rng.choice([0.5, 2.0, 8.0]), 1.0, 1.0], int(rng.integers(3)))) for _ in range(n)]
    return [row.astype(np.float32) for row in rows]


def test_the_engine_and_the_evaluation_decide_the_same_labels() -> None:
    script = _script(60)
    bundle = ScriptedBundle(labels=list(LABELS), script=script)
    settings = EngineSettings(smooth=DEVICE_SMOOTH, min_confidence=DEVICE_MIN_CONFIDENCE)
    engine = Classifier(bundle, settings=settings)
    events = engine.process_hops(tone(440.0, 60 * 0.25 - 0.01)) + engine.flush()  # loud throughout: no silence
    sounding = [e for e in events if e.probs is not None]
    assert len(sounding) == 60 and all(e.label != "silence" for e in events)
    probs = np.stack([e.probs for e in sounding]).astype(np.float32)
    np.testing.assert_array_equal(probs, np.stack(script))
    pred = Predictions(labels=list(LABELS), notes=[], probs=probs, probs_reversed=probs,
                       window_note=np.zeros(len(probs), dtype=np.int64), silent_notes=[])  # fmt: skip
    evaluated = hop_labels(pred, OPEN_SET, DEVICE_MIN_CONFIDENCE, DEVICE_SMOOTH)
    assert [e.label for e in sounding] == evaluated
    assert {"low", "high", "other", "unknown"} <= set(evaluated)  # every branch of the rule was taken
    # one decision per note: the engine's running sum and the evaluation's batch rule agree too
    engine = Classifier(ScriptedBundle(labels=list(LABELS), script=script), settings=settings.replace(decision="note"))
    events = engine.process_hops(tone(440.0, 60 * 0.25 - 0.01)) + engine.flush()
    per_note = hop_labels(pred, OPEN_SET, DEVICE_MIN_CONFIDENCE, decision="note")
    assert [e.label for e in events if e.probs is not None] == per_note
    assert per_note != evaluated and len(set(per_note)) >= 2


@pytest.mark.parametrize(
    ("probs", "min_confidence", "rejection", "label"),
    [
        ([0.6, 0.3, 0.1], 0.4, Rejection(), "low"),
        ([0.39, 0.31, 0.30], 0.4, Rejection(), "unknown"),
        ([0.4, 0.3, 0.3], 0.4, Rejection(), "low"),  # at the minimum: kept
        ([0.5, 0.5, 0.0], 0.4, Rejection(), "low"),  # a tie goes to the first label
        ([0.5, 0.45, 0.05], 0.4, Rejection(threshold=0.6), "unknown"),  # open-set rejection
        ([0.2, 0.7, 0.1], 0.4, Rejection(threshold=0.6), "high"),  # above the threshold: kept
        ([0.2, 0.7, 0.1], 0.4, Rejection(temperature=4.0, threshold=0.6), "unknown"),  # calibrated: rejected
        ([0.1, 0.2, 0.7], 0.4, Rejection(threshold=0.9), "other"),  # `other` is never rejected
        ([0.1, 0.2, 0.3], 0.4, Rejection(threshold=0.0), "unknown"),  # under min confidence, even `other`
    ],
)
def test_the_rule(probs: list[float], min_confidence: float, rejection: Rejection, label: str) -> None:
    assert decide_label(np.array(probs), LABELS, min_confidence=min_confidence, rejection=rejection) == label


def test_decide_labels_checks_the_shape_and_takes_no_rows() -> None:
    assert decide_labels(np.zeros((0, 3)), LABELS, min_confidence=0.4) == []
    with pytest.raises(ValueError, match="3 labels"):
        decide_labels(np.zeros((2, 4)), LABELS, min_confidence=0.4)

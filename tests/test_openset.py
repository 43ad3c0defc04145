"""The `other` output and open-set rejection on the device: `other` is reported like silence (no instrument
event), the calibrated threshold makes a hop unknown, a bundle without either runs unchanged, and malformed
open_set metadata or a bundle lacking `other` where it is required are refused in one line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakemic import FakeBundle, sequence

from instrument_ai.device import bundle as bundle_mod
from instrument_ai.device.engine import SILENCE, UNKNOWN, Classifier
from instrument_ai.device.live_view import change_line
from instrument_ai.device.openset import OpenSetError, Rejection, rejection_from_metadata, require_other

SCRIPT = [(None, 1.0), (200.0, 1.5), (None, 1.0), (4000.0, 1.5), (None, 1.0)]
REPO = Path(__file__).resolve().parents[1]


@dataclass
class OpenFakeBundle(FakeBundle):
    metadata: dict[str, Any] = field(default_factory=dict)


def _changes(clf: Classifier) -> list:
    return [e for e in clf.process_hops(sequence(SCRIPT)) + clf.flush() if e.changed]


def test_other_is_reported_like_silence_no_instrument_event() -> None:
    clf = Classifier(FakeBundle(labels=["low", "mid", "other"]))
    events = _changes(clf)
    assert [e.label for e in events] == [SILENCE, "low", SILENCE, "other", SILENCE]
    assert [e.is_instrument for e in events] == [False, True, False, False, False]
    other = events[3]
    assert other.to_dict()["label"] == "other" and other.confidence > 0.9
    assert "(other)" in change_line(other)  # the live view shows it dimmed, like silence


def test_threshold_rejects_low_calibrated_confidence_and_min_confidence_keeps_its_meaning() -> None:
    # the fake's confident answers are ~0.99; a temperature of 8 flattens them to ~0.5-0.6 (3 classes)
    plain = [e.label for e in _changes(Classifier(FakeBundle()))]
    assert plain == [SILENCE, "low", SILENCE, "high", SILENCE]
    strict = OpenFakeBundle(metadata={"open_set": {"temperature": 8.0, "threshold": 0.7}})
    rejected = _changes(Classifier(strict))
    assert [e.label for e in rejected] == [SILENCE, UNKNOWN, SILENCE, UNKNOWN, SILENCE]
    assert all(e.confidence > 0.9 for e in rejected if e.label == UNKNOWN)  # confidence stays uncalibrated
    lenient = OpenFakeBundle(metadata={"open_set": {"temperature": 8.0, "threshold": 0.3}})
    assert [e.label for e in _changes(Classifier(lenient))] == plain
    # --min-confidence still applies first, on the uncalibrated smoothed probability
    assert UNKNOWN in [e.label for e in _changes(Classifier(lenient, min_confidence=0.999999))]


def test_rejection_calibration_is_temperature_scaled_softmax() -> None:
    logits = np.array([2.0, 0.5, -1.0])
    probs = np.exp(logits) / np.exp(logits).sum()
    for t in (0.5, 1.0, 3.0):
        want = np.exp(logits / t) / np.exp(logits / t).sum()
        np.testing.assert_allclose(Rejection(t, 0.0).calibrate(probs), want, rtol=1e-9)
    assert not Rejection().active and Rejection(2.0, 0.0).active


@pytest.mark.parametrize(
    ("field_value", "message"),
    [
        ("x", "must be an object"),
        ({"temperature": 0}, "temperature must be positive"),
        ({"threshold": 1.5}, "threshold must be in"),
        ({"temperature": "a"}, "temperature must be a finite number"),
        ({"score": "energy"}, "not supported"),
    ],
)
def test_bad_open_set_metadata_is_refused(field_value: Any, message: str) -> None:
    with pytest.raises(OpenSetError, match=message):
        rejection_from_metadata({"open_set": field_value})


def test_a_bundle_lacking_other_on_a_device_requiring_it_is_one_line() -> None:
    with pytest.raises(OpenSetError) as info:
        require_other(["brass", "guitar"], "models/default.tflite")
    assert "\n" not in str(info.value) and "no 'other' label" in str(info.value)
    require_other(["brass", "other"])


OLD_BUNDLE = REPO / "tests" / "fixtures" / "model-0.3.0.tflite"
"""Model 0.3.0 as it shipped: 11 families, no `other`, no open_set metadata."""


def test_shipped_0_3_bundle_without_other_loads_and_runs_unchanged() -> None:
    path = OLD_BUNDLE
    bundle = bundle_mod.load(path)
    assert "other" not in bundle.labels and "open_set" not in bundle.metadata
    clf = Classifier(bundle)
    assert clf.rejection == Rejection()
    events = clf.process_hops(sequence([(None, 0.5), (440.0, 1.0)])) + clf.flush()
    assert events and all(e.label in {*bundle.labels, SILENCE, UNKNOWN} for e in events)


@pytest.mark.parametrize("command", ["run", "classify"])
def test_require_other_refuses_an_11_family_bundle_in_one_line(command: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    wav = tmp_path / "a.wav"
    import soundfile

    soundfile.write(wav, sequence([(440.0, 1.0)]), 16000)
    args = ["run", "--source", str(wav), "--fast"] if command == "run" else ["classify", str(wav)]
    out = subprocess.run([sys.executable, "-m", "instrument_ai.device.cli", *args, "--model", str(OLD_BUNDLE),
                          "--require-other"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no 'other' label" in lines[0] and "Traceback" not in out.stderr
    ok = subprocess.run([sys.executable, "-m", "instrument_ai.device.cli", *args, "--model", str(OLD_BUNDLE)],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr  # without the flag the old bundle still runs

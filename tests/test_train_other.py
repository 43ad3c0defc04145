"""Training with `other` notes end to end (issue 14): the 12th output, the open-set calibration recorded in
metrics.json, copied into the converted bundle's open_set, and honoured by the engine; a corpus without
`other` notes trains the families only and says so in config.json and metrics.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from test_train import FAST, render_tiny_corpus  # noqa: E402

SUBSET = [
    ("bass", "acoustic", 32, "libA"),
    ("bass", "electronic", 33, "libB"),
    ("flute", "acoustic", 73, "libA"),
    ("flute", "acoustic", 72, "libB"),
    ("organ", "electronic", 16, "libA"),
    ("organ", "acoustic", 19, "libB"),
]


def _add_other_notes(folder: Path, n_instruments: int = 2, per_instrument: int = 5) -> None:
    """Noise, hum and clicks as `other` instruments of their own library (an other-source)."""
    from instrument_ai.device.labels import LABELS, OTHER
    from instrument_ai.train.corpus.nsynth import (
        Note,
        format_instrument_str,
        format_note_str,
        write_examples_json,
        write_note_wav,
    )

    rate, rng = 16000, np.random.default_rng(0)
    entries = list(json.loads((folder / "examples.json").read_text()).values())
    table = json.loads((folder / "instruments.json").read_text())
    base = len(table)
    for k in range(n_instruments):
        name = format_instrument_str(OTHER, "acoustic", k)
        table[name] = {"library": "noises", "lineage": "noises", "family_str": OTHER, "source_str": "acoustic"}
        for j in range(per_instrument):
            t = np.arange(2 * rate) / rate
            audio = rng.normal(0, 0.1, t.size) if k == 0 else 0.2 * np.sign(np.sin(2 * np.pi * (50 + 10 * j) * t))
            note = Note(note_str=format_note_str(name, 60 + j, 100), instrument=base + k, instrument_str=name,
                        pitch=60 + j, velocity=100, sample_rate=rate, family=LABELS.index(OTHER), family_str=OTHER,
                        source=0, source_str="acoustic", qualities=[0] * 10, audio=audio.astype(np.float32),
                        note=len(entries), sounding_seconds=2.0)  # fmt: skip
            write_note_wav(folder, note)
            entries.append(note)
    write_examples_json(folder, entries)
    (folder / "instruments.json").write_text(json.dumps(table, indent=1))


@pytest.mark.slow  # two short trainings and a conversion: ~60 s
def test_other_output_calibration_bundle_and_engine(tmp_path: Path) -> None:
    from instrument_ai.convert.converter import convert_run
    from instrument_ai.device import bundle as bundle_mod
    from instrument_ai.device.engine import Classifier
    from instrument_ai.train.trainer import TrainConfig, train_model

    corpus = _add_other_notes_corpus(tmp_path)
    run = train_model(TrainConfig(data=str(corpus), out=str(tmp_path / "run"), preset="edge", epochs=1,
                                  cache=str(tmp_path / "cache"), **FAST))  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["labels"] == ["bass", "flute", "organ", "other"]
    assert metrics["other_output"] is True and "other_note" not in metrics
    open_set = metrics["open_set"]
    assert open_set["temperature"] > 0 and 0 <= open_set["threshold"] <= 1
    assert open_set["notes"] or open_set["figures"]["other_notes"] >= 5  # calibrated, or says why not
    bundle, _, _ = convert_run(run, tmp_path / "m.tflite", max_note_loss_points=100.0, max_disagreement=1.0)
    loaded = bundle_mod.load(tmp_path / "m.tflite")
    assert loaded.labels[-1] == "other"
    assert loaded.metadata.get("open_set") == open_set["bundle"]  # None <-> absent
    clf = Classifier(loaded)
    want = open_set["bundle"] or {"temperature": 1.0, "threshold": 0.0}
    assert (clf.rejection.temperature, clf.rejection.threshold) == (want["temperature"], want["threshold"])

    plain = render_tiny_corpus(tmp_path / "plain", instruments=SUBSET)
    run2 = train_model(TrainConfig(data=str(plain), out=str(tmp_path / "run2"), preset="edge", epochs=1,
                                   cache=str(tmp_path / "cache2"), **FAST))  # fmt: skip
    metrics2 = json.loads((run2 / "metrics.json").read_text())
    assert metrics2["other_output"] is False and "3 families trained" in metrics2["other_note"]
    warnings = json.loads((run2 / "config.json").read_text())["data"]["warnings"]
    assert any("no 'other' notes" in w for w in warnings)


def _add_other_notes_corpus(tmp_path: Path) -> Path:
    folder = render_tiny_corpus(tmp_path / "corpus", instruments=SUBSET)
    _add_other_notes(folder)
    return folder

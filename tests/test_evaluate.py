"""`instrument-ai evaluate`: scores from arrays, a real tiny run, a fake bundle, and bad input."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from clirun import run_main

from instrument_ai.train.commands.evaluate import evaluate as evaluate_cmd
from instrument_ai.train.experiments import evaluate as ev
from instrument_ai.train.experiments.report import is_png

_spec = importlib.util.spec_from_file_location("toy_eval", Path(__file__).with_name("test_evaluate_toycorpus.py"))
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
make_corpus, make_run = _module.make_corpus, _module.make_run

REQUIRED_KEYS = {"note_accuracy", "window_accuracy", "macro_f1", "per_family", "per_source", "n_notes", "reversed"}


# -- scoring from arrays --------------------------------------------------------------------------


def test_classification_scores_match_hand_computed_values() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 2])
    s = ev.classification_scores(y_true, y_pred, ["a", "b", "c", "d"])
    assert s["accuracy"] == pytest.approx(4 / 6)
    # a: P 2/3 R 2/3; b: P 1/2 R 1/2; c: 1/1; d absent from truth and predictions -> not averaged.
    assert s["per_class"]["a"]["f1"] == pytest.approx(2 / 3)
    assert s["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert "d" not in s["per_class"]
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert s["confusion"].tolist()[0] == [2, 1, 0, 0]


def test_note_probabilities_average_windows_and_decide_differently_from_majority() -> None:
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    owner = np.array([0, 0, 0, 1])
    notes = ev.note_probabilities(probs, owner, 2)
    # Two of three windows vote class 0, but the mean probability favours class 1.
    assert notes[0] == pytest.approx([0.4, 0.6])
    assert notes.argmax(axis=1).tolist() == [1, 0]


def _pred(families: list[str], sources: list[str], probs: list[list[float]], owner: list[int], labels: list[str]):
    notes = [
        ev.NoteRecord(f"n{i}", f"i{i}", f, s, "LibA") for i, (f, s) in enumerate(zip(families, sources, strict=True))
    ]
    p = np.array(probs, dtype=np.float32)
    return ev.Predictions(labels, notes, p, p[:, ::-1].copy(), np.array(owner), silent_notes=["quiet"])


def test_score_reports_unknown_families_per_source_and_reversed() -> None:
    pred = _pred(
        ["bass", "organ", "reed", "organ"],
        ["acoustic", "acoustic", "synthetic", "electronic"],
        [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]],
        [0, 1, 2, 3],
        ["bass", "organ"],
    )
    r = ev.score(pred)
    assert r["n_notes"] == 3  # the reed note is unknown to the model: reported, not scored
    assert r["note_accuracy"] == pytest.approx(2 / 3)
    assert r["unknown_labels"] == {"reed": {"n_notes": 1, "predicted_as": {"organ": 1}}}
    assert r["per_source"]["acoustic"]["note_accuracy"] == 1.0
    assert r["per_source"]["electronic"]["note_accuracy"] == 0.0
    assert "synthetic" not in r["per_source"]  # its only note was of an unknown family
    assert r["per_family"]["organ"]["recall"] == pytest.approx(0.5)
    assert r["reversed"]["note_accuracy"] == pytest.approx(1 / 3)  # reversed probs flip every decision
    assert r["n_silent_notes"] == 1


def test_window_starts_follow_the_device_hop() -> None:
    assert ev.window_starts(247, 59, 16) == list(range(0, 189, 16))
    assert ev.window_starts(30, 59, 16) == [0]


def test_check_labels_refuses_foreign_or_disjoint_labels() -> None:
    with pytest.raises(ev.EvaluationError, match="not NSynth family"):
        ev.check_labels(["cat", "dog"], ["bass"])
    with pytest.raises(ev.EvaluationError, match="model/data label mismatch"):
        ev.check_labels(["bass", "organ"], ["reed", "vocal"])
    ev.check_labels(["bass", "organ"], ["bass", "reed"])  # partial overlap is fine: reed is reported


# -- a real tiny run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_and_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    corpus = make_corpus(root / "corpus", families=("bass", "flute", "organ"), libraries=("LibA", "LibB"),
                         source_of={"organ": "electronic"})  # fmt: skip
    run = make_run(root / "run", corpus)
    return corpus, run


def test_evaluate_a_run_is_above_chance_and_writes_json_and_pngs(corpus_and_run, tmp_path: Path) -> None:
    corpus, run = corpus_and_run
    result = ev.evaluate(run, corpus, out_dir=tmp_path / "out", json_path=tmp_path / "r.json")
    assert result["n_notes"] == 3 * 2 * 4
    # 1.5 s notes, 1 s windows every 0.25 s: frames 90 -> windows at 0, 16 (2 per note).
    assert result["n_windows"] == result["n_notes"] * 2
    assert result["note_accuracy"] > result["chance"] + 0.3, result
    assert result["window_accuracy"] > result["chance"] + 0.3
    assert set(result["per_source"]) == {"acoustic", "electronic"}
    assert set(result["per_library"]) == {"LibA", "LibB"}
    assert 0.0 <= result["reversed"]["note_accuracy"] <= 1.0
    saved = json.loads((tmp_path / "r.json").read_text())
    assert set(saved) >= REQUIRED_KEYS
    assert saved["per_family"]["bass"]["support"] == 8
    for png in ("confusion.png", "confusion_windows.png", "per_source.png"):
        assert is_png(tmp_path / "out" / png), png
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert "![" in report_md and "confusion.png" in report_md and "reversed" in report_md


def test_evaluate_reports_families_the_model_never_saw(corpus_and_run, tmp_path: Path) -> None:
    corpus, run = corpus_and_run
    other = make_corpus(tmp_path / "other", families=("bass", "reed"), libraries=("LibC",), pitches=(60,))
    result = ev.evaluate(run, other)
    assert result["n_notes"] == 1
    assert result["unknown_labels"]["reed"]["n_notes"] == 1
    assert sum(result["unknown_labels"]["reed"]["predicted_as"].values()) == 1


def test_evaluate_split_restricts_to_its_instruments(tmp_path: Path, corpus_and_run) -> None:
    _, run = corpus_and_run
    splits = {"train": ["bass_acoustic_000", "flute_acoustic_000"], "test": ["bass_acoustic_001", "flute_acoustic_001"]}
    corpus = make_corpus(tmp_path / "c", families=("bass", "flute"), libraries=("LibA", "LibB"), pitches=(60, 67),
                         splits=splits)  # fmt: skip
    result = ev.evaluate(run, corpus, split="test")
    assert result["n_notes"] == 4 and set(result["per_library"]) == {"LibB"}
    with pytest.raises(ev.EvaluationError, match="no split named 'nope'"):
        ev.evaluate(run, corpus, split="nope")


def test_evaluate_reads_nsynth_tfrecords(corpus_and_run, tmp_path: Path) -> None:
    from instrument_ai.train.corpus import nsynth as data_module

    corpus, run = corpus_and_run
    notes = [n for n in data_module.iter_notes(corpus, num_samples=None) if n.family_str == "flute"]
    data_module.write_tfrecord(tmp_path / "test.tfrecord", notes)
    from_tfrecord = ev.evaluate(run, tmp_path / "test.tfrecord")
    from_folder = ev.evaluate(run, corpus, instruments=sorted({n.instrument_str for n in notes}))
    assert from_tfrecord["n_notes"] == 8
    assert from_tfrecord["note_accuracy"] == from_folder["note_accuracy"]
    assert from_tfrecord["per_library"] == {"nsynth": from_tfrecord["per_library"]["nsynth"]}


def test_cli_prints_a_summary_and_uses_a_default_out_dir(corpus_and_run, tmp_path: Path) -> None:
    corpus, run = corpus_and_run
    out = tmp_path / "cli-out"
    res = CliRunner().invoke(evaluate_cmd, ["--model", str(run), "--data", str(corpus), "--out", str(out),
                                            "--json", str(tmp_path / "e.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "note accuracy" in res.output and "reversed" in res.output and "organ" in res.output
    assert is_png(out / "confusion.png")
    assert json.loads((tmp_path / "e.json").read_text())["n_notes"] == 24
    from instrument_ai.train.commands.evaluate import default_out_dir

    assert default_out_dir(run, corpus, "test") == run / "eval-corpus-test"


# -- the bundle path (device frontend + Bundle.predict_batch) -------------------------------------------------


def test_a_tflite_path_goes_through_the_device_bundle(monkeypatch, corpus_and_run, tmp_path: Path) -> None:
    corpus, _ = corpus_and_run
    from instrument_ai.device.frontend import DEFAULT_SPEC

    seen: list[np.ndarray] = []

    class FakeBundle:
        labels = ["bass", "flute", "organ"]
        spec = DEFAULT_SPEC
        window_frames = 59
        default_hop_seconds = 0.25
        name, runtime, version = "fake", "fake-runtime", "1"

        def predict_batch(self, features: np.ndarray) -> np.ndarray:
            seen.append(features)
            out = np.zeros((len(features), 3), np.float32)
            out[:, 0] = 1.0  # always "bass"
            return out

    fake = types.ModuleType("instrument_ai.device.bundle")
    fake.load = lambda path, **kw: FakeBundle()
    monkeypatch.setitem(sys.modules, "instrument_ai.device.bundle", fake)
    import instrument_ai.device as device_pkg

    monkeypatch.setattr(device_pkg, "bundle", fake, raising=False)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    result = ev.evaluate(model, corpus)
    assert result["model"]["kind"] == "bundle"
    assert seen and seen[0].shape[1:] == (40, 59) and seen[0].dtype == np.float32
    # Raw MFCCs (not normalised): c0 of a loud tone is far from 0 in dB units.
    assert abs(float(seen[0][:, 0].mean())) > 5
    assert result["note_accuracy"] == pytest.approx(1 / 3)
    assert result["per_family"]["bass"]["recall"] == 1.0


def test_a_real_int8_bundle_scores_like_its_keras_run(corpus_and_run, tmp_path: Path) -> None:
    """Convert the run, evaluate the .tflite through the device path: int8 and float agree on the notes."""
    from instrument_ai.convert.converter import convert_run

    corpus, run = corpus_and_run
    bundle_path = tmp_path / "toy.tflite"
    convert_run(run, bundle_path, max_note_loss_points=100.0, max_disagreement=1.0)
    keras_result = ev.evaluate(run, corpus)
    bundle_result = ev.evaluate(bundle_path, corpus, out_dir=tmp_path / "eval")
    assert bundle_result["model"]["kind"] == "bundle" and bundle_result["model"]["runtime"]
    assert bundle_result["n_windows"] == keras_result["n_windows"]
    assert abs(bundle_result["note_accuracy"] - keras_result["note_accuracy"]) <= 0.1
    assert bundle_result["note_accuracy"] > bundle_result["chance"] + 0.3
    assert is_png(tmp_path / "eval" / "confusion.png")


# -- bad input ------------------------------------------------------------------------------------------------


def _one_line_error(res) -> str:
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("instrument-ai evaluate: ")
    return lines[0]


def test_bad_inputs_give_one_line_errors(corpus_and_run, tmp_path: Path) -> None:
    corpus, run = corpus_and_run

    def call(*args: str) -> str:
        return _one_line_error(run_main("evaluate", *args))

    assert "no such model" in call("--model", str(tmp_path / "nope"), "--data", str(corpus))
    assert "no model.keras" in call("--model", str(tmp_path), "--data", str(corpus))
    assert "no such data folder" in call("--model", str(run), "--data", str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "NSynth" in call("--model", str(run), "--data", str(empty))
    (tmp_path / "nonotes").mkdir()
    (tmp_path / "nonotes" / "examples.json").write_text("{}")
    assert "no notes found" in call("--model", str(run), "--data", str(tmp_path / "nonotes"))
    foreign = make_corpus(tmp_path / "foreign", families=("reed", "vocal"), libraries=("X",), pitches=(60,))
    assert "model/data label mismatch" in call("--model", str(run), "--data", str(foreign))
    assert "unknown model type" in call("--model", str(corpus / "examples.json"), "--data", str(corpus))

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.keras").write_bytes((run / "model.keras").read_bytes())
    config = json.loads((run / "config.json").read_text())
    config["labels"] = config["labels"] + ["reed"]
    (broken / "config.json").write_text(json.dumps(config))
    assert "model/label mismatch" in call("--model", str(broken), "--data", str(corpus))
    config["labels"] = config["labels"][:-1]
    config["window_frames"] = 60
    (broken / "config.json").write_text(json.dumps(config))
    assert "the model takes inputs of (40, 59)" in call("--model", str(broken), "--data", str(corpus))
    config["window_frames"] = 59
    (broken / "config.json").write_text("{not json")
    assert "unusable run config" in call("--model", str(broken), "--data", str(corpus))
    (broken / "model.keras").write_bytes(b"garbage")
    (broken / "config.json").write_text(json.dumps(config))
    assert "cannot load the Keras model" in call("--model", str(broken), "--data", str(corpus))


def test_subprocess_error_has_no_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("instrument-ai")
    proc = subprocess.run([str(exe), "evaluate", "--model", str(tmp_path / "none"), "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines() == [
        f"instrument-ai evaluate: {tmp_path / 'none'}: no such model "
        "(give a run folder, a model.keras or a .tflite bundle)"
    ]

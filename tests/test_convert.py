"""`instrument-ai convert`: the refusal rule, the float fallback, signing, and every bad run folder.

The int8 conversion itself happens once per session (`bundle_support.artifacts`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_support import FRAMES, N_MFCC, degenerate_model, normalised, write_run
from clirun import run_main

from instrument_ai.convert import bundle_writer, quantize
from instrument_ai.convert.converter import pick_golden, read_run
from instrument_ai.device import bundle as B
from instrument_ai.device import tflite_file

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list[str]) -> Any:
    return run_main("convert", *args)


def one_line_error(result: Any) -> str:
    assert result.exit_code == 1, result.output
    assert result.output.startswith("instrument-ai convert: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    return result.output


# -- the refusal rule ---------------------------------------------------------------------------------


def probs_for(top1: np.ndarray, n_labels: int = 3, confidence: float = 0.8) -> np.ndarray:
    probs = np.full((len(top1), n_labels), (1 - confidence) / (n_labels - 1), dtype=np.float32)
    probs[np.arange(len(top1)), top1] = confidence
    return probs


def test_identical_models_pass() -> None:
    y = np.arange(100) % 3
    report = quantize.check_agreement(probs_for(y), probs_for(y), y, np.arange(100) // 4)
    assert report.refusal is None and report.top1_disagreement == 0 and report.note_accuracy_loss_points == 0
    assert report.keras_note_accuracy == 1.0 and report.notes == 25


def test_two_percent_disagreement_passes_three_refused() -> None:
    top1 = np.zeros(100, dtype=int)
    truth = top1.copy()
    truth[:3] = 2  # both models are wrong on the windows that flip: accuracy is unchanged
    keras = probs_for(top1)
    for flipped, refused in ((2, False), (3, True)):
        other = top1.copy()
        other[:flipped] = 1
        report = quantize.check_agreement(keras, probs_for(other), truth)  # no notes: each window is a note
        assert report.note_accuracy_loss_points == 0
        assert report.top1_disagreement == pytest.approx(flipped / 100)
        assert (report.refusal is not None) == refused
    assert "top-1 disagrees with Keras on 3.00 % of 100 validation windows (limit 2 %)" in report.refusal


def test_note_accuracy_loss_refused_even_when_windows_agree() -> None:
    """1 window of 100 flips (1 %) but it decides a two-window note: note accuracy drops 2 points of 50 notes."""
    y = np.zeros(100, dtype=int)
    notes = np.arange(100) // 2
    keras = probs_for(y, confidence=0.5)
    bundle = keras.copy()
    bundle[0] = [0.0, 1.0, 0.0]  # outweighs the other window of note 0 (0.5 on class 0)
    report = quantize.check_agreement(keras, bundle, y, notes)
    assert report.top1_disagreement == 0.01
    assert report.note_accuracy_loss_points == pytest.approx(2.0)
    assert report.refusal is not None and "note accuracy drops by 2.00 points" in report.refusal
    assert "top-1" not in report.refusal
    loose = quantize.check_agreement(keras, bundle, y, notes, max_note_loss_points=2.5)
    assert loose.refusal is None


def test_note_accuracy_averages_window_probabilities() -> None:
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55], [0.2, 0.8]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    assert quantize.note_accuracy(probs, labels, np.array([0, 0, 1, 1])) == 1.0  # mean beats the single 0.4
    assert quantize.note_accuracy(probs, labels, None) == 0.75


def test_check_agreement_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        quantize.check_agreement(np.zeros((3, 2)), np.zeros((3, 3)), np.zeros(3, int))
    with pytest.raises(ValueError, match="no validation windows"):
        quantize.check_agreement(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, int))


def test_representative_windows_cover_every_class() -> None:
    x = np.arange(100, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    y = np.array([0] * 90 + [1] * 8 + [2] * 2)
    picked = quantize.representative_windows(x, limit=6, seed=0, train_y=y)
    classes = y[picked[:, 0, 0].astype(int)]
    assert sorted(classes.tolist()) == [0, 0, 1, 1, 2, 2]  # round-robin, the rare class included
    assert len(quantize.representative_windows(x, limit=500)) == 100


def test_pick_golden_takes_one_window_per_class_first() -> None:
    assert pick_golden(np.array([2, 2, 0, 0, 1]), 3) == [0, 2, 4]
    assert pick_golden(np.array([1, 1, 1]), 3) == [0, 1, 2]
    assert pick_golden(np.array([0]), 3) == [0]


def test_headline_metrics_keep_scalars_only() -> None:
    metrics = {"acc": 0.7, "nan": float("nan"), "cm": [[1]], "per": {"a": 1, "b": [1]}, "name": "x", "empty": {}}
    assert bundle_writer.headline_metrics(metrics) == {"acc": 0.7, "per": {"a": 1}, "name": "x"}
    assert bundle_writer.headline_metrics([1, 2]) == {}


# -- end to end -----------------------------------------------------------------------------------------


def test_cli_summary_and_written_bundle(art: dict[str, Any]) -> None:
    output = art["cli_output"]
    assert f"{art['bundle']}: int8 bundle 'tiny' 1.2.3" in output
    assert "3 labels; self-test 3 golden vectors passed on ai-edge-litert" in output
    assert "vs Keras on 100 validation windows (25 notes): top-1 agreement" in output
    assert not list(art["bundle"].parent.glob(".*.tmp"))  # the atomic write left no temp file
    loaded = B.load(art["bundle"])
    assert loaded.metadata["conversion_check"]["note_accuracy_loss_points"] <= 1.0


def test_float_fallback_signed(art: dict[str, Any], tmp_path: Path) -> None:
    from instrument_ai.convert import signing

    _, public_hex = signing.generate_keypair(tmp_path / "key.pem")
    out = tmp_path / "float.tflite"
    result = run_cli([art["run"], "--out", out, "--float", "--sign", tmp_path / "key.pem", "--golden", "2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["quantization"] == "float32" and summary["signed"] is True
    assert summary["name"] == "float"  # defaults to the file name
    loaded = B.load(out, trusted_key=public_hex)
    assert loaded.input_codec.dtype == "float32" and loaded.output_codec.dtype == "float32"
    assert loaded.metadata["golden"]["tolerance"] == B.FLOAT_GOLDEN_TOLERANCE
    assert len(loaded.metadata["golden"]["vectors"]) == 2
    largest = {}
    for path in (out, art["bundle"]):
        parsed = tflite_file.parse(path.read_bytes())
        metadata_buffers = {index for _, index in parsed.metadata}
        largest[path] = max(n for i, (_, n) in enumerate(parsed.buffers) if i not in metadata_buffers)
    assert largest[out] == 4 * largest[art["bundle"]]  # the dense kernel: float32 vs int8 weights
    keras_probs = art["model"].predict(normalised(art["run"], art["valid_x"]), verbose=0)
    np.testing.assert_allclose(loaded.predict_batch(art["valid_x"]), keras_probs, atol=1e-4)
    assert loaded.metadata["conversion_check"]["top1_disagreement"] == 0.0


def test_sign_with_a_missing_key_is_one_line(art: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "x.tflite"
    assert "no such key file" in one_line_error(run_cli([art["run"], "--out", out, "--sign", tmp_path / "nokey"]))
    assert not out.exists()


def test_int8_model_that_disagrees_is_refused(art: dict[str, Any], tmp_path: Path) -> None:
    """Near-uniform softmax: int8 outputs tie (argmax 0) where Keras' argmax varies -> refused, nothing written."""
    calibration = np.load(art["run"] / "calibration.npz")
    run = write_run(
        tmp_path / "degenerate",
        degenerate_model(),
        calibration["train_x"],
        calibration["valid_x"],
        calibration["valid_y"],
    )
    out = tmp_path / "models" / "degenerate.tflite"
    message = one_line_error(run_cli([run, "--out", out]))
    assert "refused: the int8 model top-1 disagrees with Keras on" in message and "limit 2 %" in message
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
    # the same model passes when the limits are lifted: it is the rule that refused it
    result = run_cli([run, "--out", out, "--max-disagreement", "1", "--max-note-loss", "100"])
    assert result.exit_code == 0, result.output
    assert B.load(out).metadata["conversion_check"]["top1_disagreement"] > 0.02


# -- bad run folders --------------------------------------------------------------------------------------


def copy_run(art: dict[str, Any], tmp_path: Path) -> Path:
    return Path(shutil.copytree(art["run"], tmp_path / "run"))


def edit_config(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        edit(config)
        (run / "config.json").write_text(json.dumps(config))

    return apply


def edit_calibration(**changes: Any) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        with np.load(run / "calibration.npz") as archive:
            arrays = {key: archive[key] for key in archive.files}
        arrays.update(changes)
        arrays = {key: value for key, value in arrays.items() if value is not None}
        np.savez(run / "calibration.npz", **arrays)

    return apply


BAD_RUNS: dict[str, tuple[Callable[[Path], None], str]] = {
    "no config": (lambda run: (run / "config.json").unlink(), "config.json: missing"),
    "config not json": (lambda run: (run / "config.json").write_text("{oops"), "not readable JSON"),
    "config no labels": (edit_config(lambda c: c.pop("labels")), "no 'labels'"),
    "bad spec": (edit_config(lambda c: c["frontend_spec"].update(n_mfcc=80)), "n_mfcc (80) cannot exceed"),
    "zero std": (edit_config(lambda c: c["input_normalization"].update(std=[0.0] * N_MFCC)), "std > 0"),
    "short mean": (edit_config(lambda c: c["input_normalization"].update(mean=[0.0])), "40 means and stds"),
    "no model": (lambda run: (run / "model.keras").unlink(), "model.keras: missing"),
    "model not keras": (lambda run: (run / "model.keras").write_text("nope"), "cannot load the Keras model"),
    "no calibration": (lambda run: (run / "calibration.npz").unlink(), "calibration.npz: missing"),
    "calibration not npz": (lambda run: (run / "calibration.npz").write_text("x"), "not a readable .npz"),
    "no valid_x": (edit_calibration(valid_x=None), "no valid_x"),
    "window shape": (edit_calibration(valid_x=np.zeros((4, N_MFCC, FRAMES + 1), np.float32)), "expected (N, 40, 59)"),
    "nan windows": (edit_calibration(train_x=np.full((4, N_MFCC, FRAMES), np.nan, np.float32)), "finite floats"),
    "label index": (edit_calibration(valid_y=np.full(100, 7)), "outside 0..2"),
    "labels vs model": (edit_config(lambda c: c.update(labels=["a", "b", "c", "d"])), "does not match 4 labels"),
    "window vs model": (
        lambda run: (
            edit_config(lambda c: c.update(window_frames=30))(run),
            edit_calibration(
                train_x=np.zeros((4, N_MFCC, 30), np.float32),
                valid_x=np.zeros((100, N_MFCC, 30), np.float32),
            )(run),
        ),
        "does not match the run's windows",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_run_folder_is_one_line_and_writes_nothing(art: dict[str, Any], tmp_path: Path, case: str) -> None:
    run = copy_run(art, tmp_path)
    damage, message = BAD_RUNS[case]
    damage(run)
    out = tmp_path / "out.tflite"
    assert message in one_line_error(run_cli([run, "--out", out]))
    assert not out.exists()


def test_missing_run_folder_and_directory_out(tmp_path: Path) -> None:
    assert "not a training run folder" in one_line_error(run_cli([tmp_path / "nope", "--out", tmp_path / "a.tflite"]))
    result = run_cli([tmp_path, "--out", tmp_path])  # click's own usage error (exit 2)
    assert result.exit_code == 2 and "is a directory" in result.output and "Traceback" not in result.output


def test_unreadable_metrics_is_a_warning(art: dict[str, Any], tmp_path: Path) -> None:
    run = copy_run(art, tmp_path)
    (run / "metrics.json").write_text("{broken")
    folder = read_run(run)
    assert folder.metrics is None and "no headline metrics" in folder.warnings[0]


def test_int8_needs_representative_windows(art: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="representative"):
        quantize.to_tflite(art["model"], None, int8=True)


def test_convert_modules_import_without_tensorflow() -> None:
    code = (
        "import sys\n"
        "import instrument_ai.convert.cli, instrument_ai.convert.quantize, instrument_ai.convert.bundle_writer\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'librosa', 'scipy'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

"""Two runs joined into one model (train/ensemble.py): the in-graph MFCC equals the frontend's, the output is the
softmax of the members' weighted logits, bad pairs are refused in one line and nothing is half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instrument_ai.device.cli import main
from instrument_ai.device.frontend import DEFAULT_SPEC, log_mel, mfcc, normalise_windows
from instrument_ai.train.ensemble import EnsembleError, build_ensemble, run_ensemble_holdout

LABELS = ["brass", "string", "other"]
FRAMES = 59


def _audio(seed: int, seconds: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 6))
    return (0.2 * tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _features(stage: str, audio: np.ndarray) -> np.ndarray:
    spec = DEFAULT_SPEC
    return (log_mel(audio, spec) if stage == "log_mel" else mfcc(audio, spec))[:, :FRAMES]


def _make_run(path: Path, stage: str, *, seed: int, labels: list[str] = LABELS, status: str = "complete") -> Path:
    """A run folder by the documented contract, with a small random Keras CNN (no training needed here)."""
    import keras

    n = DEFAULT_SPEC.n_mels if stage == "log_mel" else DEFAULT_SPEC.n_mfcc
    windows = np.stack([_features(stage, _audio(s)) for s in range(6)]).astype(np.float32)
    mean, std = windows.mean(axis=(0, 2)), windows.std(axis=(0, 2)) + 1e-3
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((n, FRAMES, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(len(labels), activation="softmax")])  # fmt: skip
    path.mkdir(parents=True)
    model.save(path / "model.keras")
    spec = {**DEFAULT_SPEC.to_dict(), "stage": stage}
    config = {"format": 1, "preset": f"tiny_{stage}", "frontend_spec": spec, "feature_stage": stage,
              "labels": labels, "input_normalization": {"mean": mean.tolist(), "std": std.tolist()},
              "window_frames": FRAMES, "hop_frames": 16, "default_hop_seconds": 0.25, "status": status,
              "model": {"params": 1, "macs": 1},
              "data": {"instruments": {"train": [f"t{seed}"], "valid": ["v"]}}}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.json").write_text(json.dumps({"train_seconds": 10.0 if stage == "log_mel" else 20.0,
                                                   "epochs_run": 2 if stage == "log_mel" else 3}))  # fmt: skip
    note = np.repeat(np.arange(3), 2)
    np.savez(path / "calibration.npz", train_x=windows, train_y=np.zeros(6, np.int64), valid_x=windows,
             valid_y=note % len(labels), valid_note=note)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("members")
    return _make_run(root / "mel", "log_mel", seed=1), _make_run(root / "mfcc", "mfcc", seed=2)


def test_ensemble_pools_its_members_logits_on_the_frontends_own_features(runs, tmp_path) -> None:
    import keras

    mel_run, mfcc_run = runs
    out = build_ensemble([mfcc_run, mel_run], tmp_path / "ens", weight=0.3)  # order does not matter
    config = json.loads((out / "config.json").read_text())
    assert config["feature_stage"] == "log_mel" and config["preset"] == "ensemble"
    assert config["ensemble"]["weights"] == [0.7, 0.3]
    assert config["data"]["instruments"]["train"] == ["t1", "t2"]  # the union, for the holdout's leak check
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["note_accuracy"] <= 1.0 and "open_set" in metrics
    assert metrics["model"]["macs"] > 0 and metrics["train_seconds"] == 30.0 and metrics["epochs_run"] == "2/3"

    def norm(run: Path, stage: str, audio: np.ndarray) -> np.ndarray:
        c = json.loads((run / "config.json").read_text())["input_normalization"]
        return normalise_windows(_features(stage, audio)[None], np.array(c["mean"]), np.array(c["std"]))[..., None]

    audio = _audio(7)
    joined = keras.models.load_model(out / "model.keras", compile=False)
    a = keras.models.load_model(mel_run / "model.keras", compile=False)
    b = keras.models.load_model(mfcc_run / "model.keras", compile=False)
    pa = np.asarray(a(norm(mel_run, "log_mel", audio)), np.float64)
    pb = np.asarray(b(norm(mfcc_run, "mfcc", audio)), np.float64)
    pooled = pa**0.7 * pb**0.3  # softmax of the weighted logits: the weighted geometric mean, renormalised
    got = joined(norm(mel_run, "log_mel", audio))
    np.testing.assert_allclose(np.asarray(got), pooled / pooled.sum(), atol=2e-5)
    assert abs(float(np.sum(got)) - 1.0) < 1e-5


def test_bad_pairs_are_refused_in_one_line_and_write_nothing(runs, tmp_path) -> None:
    mel_run, mfcc_run = runs
    other_labels = _make_run(tmp_path / "labels", "mfcc", seed=3, labels=["brass", "reed", "other"])
    two_mfcc = _make_run(tmp_path / "mfcc2", "mfcc", seed=4)
    unfinished = _make_run(tmp_path / "unfinished", "mfcc", seed=5, status="training")
    cases = [([mel_run, other_labels], "labels differ"), ([mfcc_run, two_mfcc], "needs a log_mel run"),
             ([mel_run, unfinished], "not a finished run"), ([mel_run], "joins two runs"),
             ([mel_run, tmp_path / "absent"], "no such directory")]  # fmt: skip
    for members, words in cases:
        with pytest.raises(EnsembleError, match=words):
            build_ensemble(members, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(EnsembleError, match="already exists"):
        build_ensemble([mel_run, mfcc_run], tmp_path / "taken")
    assert not any((tmp_path / "taken").iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-built folder left behind


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """The console entry point as a user runs it: (exit status, stdout + stderr)."""
    try:
        main(["experiment", "ensemble", *(str(a) for a in args)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_builds_a_run_and_refuses_mixed_or_mismatched_members(runs, tmp_path, capsys) -> None:
    mel_run, mfcc_run = runs
    code, output = _cli(capsys, "--member", mel_run, "--member", mfcc_run, "--out", tmp_path / "e")
    assert code == 0, output
    assert "validation notes" in output and (tmp_path / "e" / "model.keras").is_file()
    code, output = _cli(capsys, "--member", mel_run, "--member", mfcc_run, "--out", tmp_path / "e")
    assert code == 1 and "already exists" in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1
    holdout = tmp_path / "h"
    holdout.mkdir()
    (holdout / "holdout-settings.json").write_text("{}")
    code, output = _cli(capsys, "--member", mel_run, "--member", holdout, "--out", tmp_path / "m")
    assert code == 2 and "not one of each" in output
    code, output = _cli(capsys, "--member", mel_run, "--out", tmp_path / "m")
    assert code == 2 and "two --member" in output
    assert not (tmp_path / "m").exists()


def test_holdouts_of_different_protocols_are_refused(tmp_path) -> None:
    folders = []
    for name, groups in (("a", 2), ("b", 4)):
        folder = tmp_path / name
        folder.mkdir()
        settings = {"data": "/corpus", "groups": groups, "seed": 0, "max_test_notes": 400, "train_kinds": []}
        (folder / "holdout-settings.json").write_text(json.dumps(settings))
        folders.append(folder)
    with pytest.raises(EnsembleError, match="groups .* differs"):
        run_ensemble_holdout(folders, tmp_path / "out")
    with pytest.raises(EnsembleError, match="not an `experiment holdout` folder"):
        run_ensemble_holdout([folders[0], tmp_path], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_ensemble_converts_to_one_bundle_whose_embedding_holds_both_members(runs, tmp_path) -> None:
    from instrument_ai.convert.converter import convert_run
    from instrument_ai.device import bundle as device_bundle
    from instrument_ai.train.experiments.evaluate import load_predictor

    mel_run, mfcc_run = runs
    run = build_ensemble([mel_run, mfcc_run], tmp_path / "ens")
    path = tmp_path / "ens.tflite"
    convert_run(run, path, max_note_loss_points=100.0, max_disagreement=1.0)
    loaded = device_bundle.load(path)
    assert loaded.metadata["frontend_spec"]["stage"] == "log_mel"
    assert loaded.metadata["embedding"]["size"] == 8  # both members' 4 penultimate activations
    windows = np.stack([_features("log_mel", _audio(s)) for s in (8, 9)])
    keras_probs = load_predictor(run).predict(windows)
    int8_probs = load_predictor(path).predict(windows)
    assert np.array_equal(keras_probs.argmax(axis=1), int8_probs.argmax(axis=1))

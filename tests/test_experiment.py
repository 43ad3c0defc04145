"""`instrument-ai experiment study|holdout` on tiny toy corpora (a stand-in trainer for the holdout)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from clirun import run_main

from instrument_ai.train.commands.experiment import experiment
from instrument_ai.train.experiments import holdout as ho
from instrument_ai.train.experiments import study as st
from instrument_ai.train.experiments.report import is_png

_spec = importlib.util.spec_from_file_location("toy_experiment", Path(__file__).with_name("test_evaluate_toycorpus.py"))
toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy)


def _one_line_error(res) -> str:
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("instrument-ai experiment: "), res.output
    return lines[0]


# -- study ----------------------------------------------------------------------------------------------


def test_instrument_split_never_puts_an_instrument_on_both_sides(tmp_path: Path) -> None:
    pairs = [(f, i) for f in ("bass", "organ") for i in range(4)] + [("reed", 0)]
    metas = [st.Meta(f"{f}_acoustic_{i:03d}-060-100", f"{f}_acoustic_{i:03d}", f, "acoustic", 60, 100, [0] * 10)
             for f, i in pairs]  # fmt: skip
    train, test, how = st.instrument_split(metas, tmp_path, 0.25, seed=1)
    assert not train & test
    assert "reed_acoustic_000" in train  # a family with one instrument cannot be tested
    assert sum(1 for i in test if i.startswith("bass")) == 1 and sum(1 for i in test if i.startswith("organ")) == 1
    assert "seeded" in how


def test_quality_inputs_are_the_study_twelve_and_ablations_drop_columns() -> None:
    m = st.Meta("n", "i", "bass", "acoustic", 108, 127, [1, 0, 0, 0, 0, 0, 0, 1, 1, 0])
    full = st.quality_inputs([m])
    assert full.shape == (1, 12)
    assert full[0, -2:] == pytest.approx([1.0, 1.0])
    assert st.quality_inputs([m], drop=("bright", "dark")).shape == (1, 10)
    no_percussive = st.quality_inputs([m], drop=("percussive",))
    assert no_percussive.shape == (1, 11) and no_percussive[0, :9].tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 0]


@pytest.mark.slow  # about 12 s of CPU (four tiny CNNs, seven figures); longer on a busy machine
def test_study_quick_writes_its_report_beside_the_published_figures(tmp_path: Path) -> None:
    data = toy.make_corpus(tmp_path / "c", families=("bass", "flute", "organ"), libraries=("LibA", "LibB"),
                           source_of={"organ": "electronic"}, pitches=(48, 60, 72))  # fmt: skip
    res = CliRunner().invoke(experiment, ["study", "--data", str(data), "--out", str(tmp_path / "out"), "--quick",
                                          "--epochs", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "study 94%" in res.output
    out = tmp_path / "out"
    results = json.loads((out / "study.json").read_text())
    assert results["split"]["train_instruments"] == 3 and results["split"]["test_instruments"] == 3
    matrix = np.array(results["pairwise_f1"]["matrix"], dtype=float)
    assert matrix.shape == (3, 3) and np.isnan(matrix[0, 0]) and np.isfinite(matrix[0, 1])
    assert matrix[0, 1] == matrix[1, 0]
    assert set(results["quality_mlp"]) == set(st.ABLATIONS)
    assert set(results["representations"]) == {"mel", "log-mel", "mfcc"}
    mfcc = results["representations"]["mfcc"]
    # Trained on acoustic notes like the study: organ (electronic only here) is not a CNN class, and its
    # test notes are left out and counted rather than scored as certain errors.
    assert results["cnn_families"] == ["bass", "flute"] and results["cnn_test_notes_left_out"] == 3
    assert mfcc["test_electronic"] is None and mfcc["test_acoustic"]["n_notes"] == 6
    assert mfcc["test_acoustic_reversed"]["n_notes"] == 6
    assert results["note_split"]["test"]["n_notes"] >= 1
    for png in ("pairwise_f1.png", "quality_mlp.png", "representations.png", "per_source.png", "confusion_mfcc.png"):
        assert is_png(out / png), png
    report_md = (out / "report.md").read_text()
    for needle in ("pairwise_f1.png", "94", "35.6", "22.5", "27.9", "40-50", "reversed", "without percussive"):
        assert needle in report_md, needle


def test_study_bad_inputs(tmp_path: Path) -> None:
    err = _one_line_error(run_main("experiment", "study", "--data", tmp_path / "x", "--out", tmp_path))
    assert "no such data folder" in err
    one_family = toy.make_corpus(tmp_path / "one", families=("bass",), libraries=("A", "B"), pitches=(60,))
    err = _one_line_error(run_main("experiment", "study", "--data", one_family, "--out", tmp_path / "o"))
    assert "at least two families" in err


# -- holdout ----------------------------------------------------------------------------------------------


def test_fold_names_group_lineages_and_canonicalise_libraries() -> None:
    assert (
        ho.fold_name("FluidR3", "FluidR3") == ho.fold_name("MuseScoreGeneral", "FluidR3") == "FluidR3+MuseScoreGeneral"
    )
    assert ho.fold_name("MuseScore_General") == "FluidR3+MuseScoreGeneral"
    assert ho.fold_name("90s_Retro_Vintage_v1.05") == "90sRetroVintage"
    assert ho.fold_name("Airfont_380_final") == "Airfont380"
    assert ho.fold_name("Alexs_gm_v1.3") == "AlexsGM"
    assert ho.fold_name("TimGM6mb", "TimGM6mb") == "TimGM6mb"
    assert ho.fold_name("SomeNewBank") == "SomeNewBank"


class StandInTrainer:
    """Trains the toy CNN on exactly the instruments the protocol gives, and records each call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    def __call__(self, data: Path, out: Path, *, holdout, preset, epochs, seed, jobs=0, overrides=None) -> Path:
        info = toy.corpus_info(data)
        train = sorted(i for i, row in info.instruments.items() if row.library not in holdout)
        self.calls.append({"out": out, "holdout": list(holdout), "train": train, "preset": preset,
                           "overrides": overrides})  # fmt: skip
        run = toy.make_run(out, data, instruments=train, epochs=0, seed=seed)
        config = json.loads((run / "config.json").read_text())
        config["data"]["instruments"] = {"train": train, "valid": []}  # as the trainer records them
        (run / "config.json").write_text(json.dumps(config))
        return run


@pytest.fixture(scope="module")
def two_library_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("holdout")
    return toy.make_corpus(root / "c", families=("bass", "flute", "organ"), libraries=("TimGM6mb", "FluidR3"),
                           pitches=(48, 60, 72))  # fmt: skip


def test_holdout_over_two_libraries_writes_table_and_resumes(two_library_corpus: Path, tmp_path: Path) -> None:
    trainer = StandInTrainer()
    cfg = ho.HoldoutConfig(data=two_library_corpus, out=tmp_path / "h", preset="edge", epochs=30)
    summary = ho.run_holdout(cfg, train_fn=trainer)
    assert [f["name"] for f in summary["folds"]] == ["TimGM6mb", "FluidR3+MuseScoreGeneral"]
    # Each fold trains on the other library only, and tests on every note of the held-out one.
    first = trainer.calls[0]
    assert first["holdout"] == ["TimGM6mb"] and first["preset"] == "edge"
    assert all(i.endswith("_001") for i in first["train"])
    assert trainer.calls[1]["holdout"] == ["FluidR3"]
    assert all(f["n_notes"] == 9 for f in summary["folds"])
    assert summary["mean_note_accuracy"] == pytest.approx(np.mean([f["note_accuracy"] for f in summary["folds"]]))
    assert summary["mean_note_accuracy"] > 0.5  # toy timbres transfer across the two libraries
    assert set(summary["folds"][0]["per_family_recall"]) == {"bass", "flute", "organ"}
    table = (tmp_path / "h" / "holdout.md").read_text()
    assert "| TimGM6mb |" in table and "**mean**" in table and "holdout.png" in table
    assert is_png(tmp_path / "h" / "holdout.png") and is_png(tmp_path / "h" / "holdout_recall.png")
    assert (
        json.loads((tmp_path / "h" / "holdout.json").read_text())["mean_note_accuracy"] == summary["mean_note_accuracy"]
    )

    # Resumable: finished folds are not trained again; a lost fold is redone; other settings are refused.
    again = StandInTrainer()
    assert ho.run_holdout(cfg, train_fn=again)["mean_note_accuracy"] == summary["mean_note_accuracy"]
    assert again.calls == []
    (tmp_path / "h" / "folds" / "TimGM6mb" / "fold.json").unlink()
    summary2 = ho.run_holdout(cfg, train_fn=again)
    assert [c["holdout"] for c in again.calls] == [["TimGM6mb"]] and len(summary2["folds"]) == 2
    cfg2 = ho.HoldoutConfig(data=two_library_corpus, out=tmp_path / "h", preset="baseline", epochs=30)
    with pytest.raises(ho.HoldoutError, match="other settings \\(preset=edge\\)"):
        ho.run_holdout(cfg2, train_fn=again)


def test_holdout_cli_with_stand_in_trainer(monkeypatch, two_library_corpus: Path, tmp_path: Path) -> None:
    monkeypatch.setattr(ho, "train_with_trainer", StandInTrainer())
    res = CliRunner().invoke(experiment, ["holdout", "--data", str(two_library_corpus), "--out", str(tmp_path / "o"),
                                          "--libraries", "FluidR3", "--epochs", "30"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "FluidR3+MuseScoreGeneral" in res.output and "mean note accuracy" in res.output


def test_holdout_cli_overrides_reach_every_fold_and_are_part_of_the_settings(
    monkeypatch, two_library_corpus: Path, tmp_path: Path
) -> None:
    trainer = StandInTrainer()
    monkeypatch.setattr(ho, "train_with_trainer", trainer)
    out = tmp_path / "o"
    args = ["holdout", "--data", str(two_library_corpus), "--out", str(out), "--epochs", "30"]
    res = CliRunner().invoke(experiment, [*args, "--augment-copies", "0", "--no-feature-augment"])
    assert res.exit_code == 0, res.output
    want = {"augment_copies": 0, "feature_augment": {"enabled": False}}
    assert [c["overrides"] for c in trainer.calls] == [want, want]
    assert json.loads((out / "holdout-settings.json").read_text())["overrides"] == want
    assert 'augment_copies 0, feature_augment {"enabled": false}' in (out / "holdout.md").read_text()
    # Resuming without the same overrides would mix two recipes in one table: refused.
    assert "other settings (overrides=" in _one_line_error(run_main("experiment", *args))


def test_holdout_bad_inputs(two_library_corpus: Path, tmp_path: Path) -> None:

    def call(*args: str) -> str:
        return _one_line_error(run_main("experiment", "holdout", *args))

    assert "no such data folder" in call("--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert "no library named nosuchbank" in call("--data", str(two_library_corpus), "--out", str(tmp_path / "o"),
                                                 "--libraries", "NoSuchBank")  # fmt: skip
    one = toy.make_corpus(tmp_path / "one", families=("bass", "organ"), libraries=("TimGM6mb",), pitches=(60,))
    assert "at least two independent libraries" in call("--data", str(one), "--out", str(tmp_path / "o"))
    (one / "instruments.json").unlink()
    assert "no instruments.json" in call("--data", str(one), "--out", str(tmp_path / "o"))


def test_experiment_subprocess_errors_have_no_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("instrument-ai")
    for sub in ("study", "holdout"):
        proc = subprocess.run([str(exe), "experiment", sub, "--data", str(tmp_path / "none"), "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode != 0
        assert "Traceback" not in proc.stdout + proc.stderr
        expected = f"instrument-ai experiment: {tmp_path / 'none'}: no such data folder"
        assert proc.stderr.strip().splitlines() == [expected]


def test_holdout_with_the_real_trainer_runs_each_fold_in_its_own_process(tmp_path: Path) -> None:
    """The real trainer, one spawned process per fold (the memory of a fold is given back when it ends)."""
    from test_train import FAST, render_tiny_corpus

    # Two libraries with two instruments per family each, so every fold's training side has a validation split.
    instruments = [(family, "acoustic", program, library)
                   for family, programs in (("bass", (32, 33, 34, 35)), ("flute", (73, 72, 75, 74)),
                                            ("organ", (16, 19, 17, 18)))
                   for program, library in zip(programs, ("libA", "libA", "libB", "libB"), strict=True)]  # fmt: skip
    corpus = render_tiny_corpus(tmp_path / "corpus", seconds=1.5, instruments=instruments)
    overrides = {**{k: v for k, v in FAST.items() if k != "jobs"}, "cache": str(tmp_path / "cache")}
    cfg = ho.HoldoutConfig(data=corpus, out=tmp_path / "h", preset="edge", epochs=1, jobs=1, overrides=overrides)
    summary = ho.run_holdout(cfg)
    assert sorted(f["name"] for f in summary["folds"]) == ["libA", "libB"]
    for fold in summary["folds"]:
        config = json.loads((Path(fold["run_dir"]) / "config.json").read_text())
        assert config["status"] == "complete" and config["data"]["split"]["holdout"] == [fold["name"]]
        assert 0.0 <= fold["note_accuracy"] <= 1.0 and fold["n_notes"] > 0
    # An error inside the child comes back as the usual one-line HoldoutError, not a lost process.
    bad = ho.HoldoutConfig(data=corpus, out=tmp_path / "bad", preset="edge", epochs=1, jobs=1,
                           overrides={**overrides, "augment_copies": 99})  # fmt: skip
    with pytest.raises(ho.HoldoutError, match="augment copies must be in 0..16"):
        ho.run_holdout(bad)

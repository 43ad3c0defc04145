"""The distillation teacher (issue 23, item 6): gradient boosting on whole-note statistics, fitted out of fold on
the training notes only, mixed into every window's target; kept by a resumed run; a pinned pretrained teacher
file refused when its size or digest differs (tests/test_teacher_file.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from test_train import FAST, render_tiny_corpus  # noqa: E402

from instrument_ai.train import teacher as teacher_module  # noqa: E402
from instrument_ai.train.teacher import TeacherTargets, out_of_fold  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_tiny_corpus(tmp_path_factory.mktemp("teacher-corpus"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("teacher-cache")


@pytest.fixture(autouse=True)
def quick_teacher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer boosting iterations than the recipe's 200: the tiny fits here need no more, and two cores are shared."""
    monkeypatch.setitem(teacher_module.GBM_PARAMS, "max_iter", 30)


def _config(corpus: Path, cache: Path, out: Path, **overrides: object):
    from instrument_ai.train.config import TrainConfig

    values = {**FAST, "teacher": "gbm", **overrides}
    return TrainConfig(data=str(corpus), out=str(out), preset="edge", cache=str(cache), **values).resolved()


class StatisticsSpy:
    """Records the notes whose statistics the teacher computes (the only notes its fit can see)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[dict] = []
        real = teacher_module.note_statistics

        def spy(features, stage, spec):
            self.seen.extend(features.notes)
            return real(features, stage, spec)

        monkeypatch.setattr(teacher_module, "note_statistics", spy)


# -- the out-of-fold fit ------------------------------------------------------------------------------------------


def test_out_of_fold_targets_never_come_from_a_notes_own_group() -> None:
    """Relabelling every note of one group leaves that group's targets unchanged: its fit never saw it."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), 40)
    labels = rng.integers(0, 3, size=groups.size)
    stats = rng.normal(size=(groups.size, 5)) + 4 * labels[:, None]  # learnable: the label shifts every statistic
    first, covered, figures = out_of_fold(stats, labels, groups, 3, folds=3, seed=0)
    assert covered.all() and len(figures) == 3 and all(f["note_accuracy"] > 0.8 for f in figures)
    assert np.allclose(first.sum(axis=1), 1.0, atol=1e-5)
    relabelled = labels.copy()
    relabelled[groups == 2] = (labels[groups == 2] + 1) % 3  # the group's notes now carry other labels
    second, _, _ = out_of_fold(stats, relabelled, groups, 3, folds=3, seed=0)
    assert np.array_equal(first[groups == 2], second[groups == 2])
    assert not np.allclose(first[groups != 2], second[groups != 2])  # the other folds did learn from group 2


def test_a_family_missing_from_a_fold_gets_no_teacher_opinion() -> None:
    groups = np.repeat(np.arange(4), 10)
    labels = np.where(groups == 3, 2, np.arange(40) % 2)  # families 0 and 1 in groups 0-2, family 2 in group 3 only
    stats = np.random.default_rng(1).normal(size=(40, 3)) + labels[:, None]
    probs, covered, _ = out_of_fold(stats, labels, groups, 3, folds=4, seed=0)
    assert not covered[groups == 3].any() and covered[groups != 3].all()
    targets = TeacherTargets([str(i) for i in range(40)], probs, covered, {})
    mixed = targets.mixed(labels, 0.5)
    assert np.array_equal(mixed[groups == 3], np.eye(3, dtype=np.float32)[labels[groups == 3]])
    expected = 0.5 * np.eye(3)[labels[groups == 0]] + 0.5 * probs[groups == 0]
    assert np.allclose(mixed[groups == 0], expected)


def test_teacher_fits_only_the_training_notes_never_held_out_or_validation(
    corpus: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from instrument_ai.train import trainer
    from instrument_ai.train.prepare import prepare_data

    spy = StatisticsSpy(monkeypatch)
    config = _config(corpus, cache, tmp_path / "run", holdout=["libB"])
    prepared = prepare_data(config)
    targets = trainer._teacher(config, prepared, tmp_path / "run", resume=False)
    table = json.loads((corpus / "instruments.json").read_text())
    held = {name for name, row in table.items() if row["library"] == "libB"}
    seen = {n["instrument_str"] for n in spy.seen}
    assert seen == {n["instrument_str"] for n in prepared.train.notes}
    assert not seen & held and not seen & {n["instrument_str"] for n in prepared.valid.notes}
    assert targets.note_strs == [n["note_str"] for n in prepared.train.notes]
    assert prepared.info["teacher"]["notes"] == prepared.train.n_notes
    assert prepared.info["teacher"]["weight"] == 0.5 and prepared.info["teacher"]["grouped_by"] == "instrument"


# -- distillation in the batches and the loss ------------------------------------------------------------------


def test_distillation_mixes_the_teacher_into_every_windows_target_and_changes_the_loss(
    corpus: Path, cache: Path, tmp_path: Path
) -> None:
    from instrument_ai.train import trainer
    from instrument_ai.train.augment import FeatureAugment
    from instrument_ai.train.prepare import prepare_data
    from instrument_ai.train.windows import WindowSampler

    config = _config(corpus, cache, tmp_path / "run", teacher_weight=0.4)
    prepared = prepare_data(config)
    teacher = trainer._teacher(config, prepared, tmp_path / "run", resume=False)
    assert teacher.covered.sum() > prepared.train.n_notes // 2
    n_classes = len(prepared.labels)
    targets = teacher.mixed(prepared.train_y, 0.4)
    mean, std = prepared.train.feature_stats()
    common = dict(mean=mean, std=std, batch_size=64, steps=2, seed=3, balance="balanced",
                  feature_augment=FeatureAugment(enabled=False), band_matrix=None)  # fmt: skip
    plain = WindowSampler(prepared.train, prepared.train_y, n_classes, **common)
    taught = WindowSampler(prepared.train, prepared.train_y, n_classes, note_targets=targets, **common)
    x_plain, y_plain = plain.batch(0)
    x_taught, y_taught = taught.batch(0)
    assert np.array_equal(x_plain, x_taught)  # the same windows: only the targets change
    notes = np.random.default_rng([3, 0, 0]).choice(len(prepared.train_y), size=64, p=plain.probs)
    assert np.allclose(y_taught, targets[notes]) and np.allclose(y_plain, np.eye(n_classes)[prepared.train_y[notes]])
    assert not np.allclose(y_plain, y_taught)
    # cross-entropy against the mixed target = (1 - W) CE(label) + W CE(teacher): a different loss
    predicted = np.random.default_rng(4).dirichlet(np.ones(n_classes), size=64)

    def cross_entropy(y: np.ndarray) -> float:
        return float(-np.mean(np.sum(y * np.log(predicted), axis=1)))

    soft = teacher.probs[notes] * teacher.covered[notes, None] + y_plain * ~teacher.covered[notes, None]
    assert cross_entropy(y_taught) == pytest.approx(0.6 * cross_entropy(y_plain) + 0.4 * cross_entropy(soft))
    assert cross_entropy(y_taught) != pytest.approx(cross_entropy(y_plain))


@pytest.mark.slow  # two short trainings: ~30 s
def test_interrupted_teacher_run_resumes_with_the_same_teacher(
    corpus: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    from instrument_ai.train import trainer
    from instrument_ai.train.trainer import TrainConfig, TrainingInterrupted, resume_config, train_model

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            raise KeyboardInterrupt

    seen_targets: list[np.ndarray | None] = []

    class Sampler(trainer.WindowSampler):
        def __init__(self, *args, **kwargs) -> None:
            seen_targets.append(kwargs.get("note_targets"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trainer, "WindowSampler", Sampler)
    out = tmp_path / "run"
    config = TrainConfig(data=str(corpus), out=str(out), preset="edge", epochs=2, cache=str(cache), teacher="gbm",
                         teacher_weight=0.3, **FAST)  # fmt: skip
    with pytest.raises(TrainingInterrupted):
        train_model(config, callbacks=[CtrlC()])
    saved = json.loads((out / "config.json").read_text())
    assert saved["train_config"]["teacher"] == "gbm" and saved["train_config"]["teacher_weight"] == 0.3
    assert saved["data"]["teacher"]["file"] == "teacher.npz" and saved["data"]["teacher"]["folds"] >= 2
    written = (out / "teacher.npz").read_bytes()
    first = seen_targets[-1]
    assert first is not None and not np.allclose(first, np.round(first))  # soft rows, not one-hot only

    def refit(*args, **kwargs):
        raise AssertionError("a resumed run must not fit a new teacher")

    monkeypatch.setattr(trainer, "teacher_targets", refit)
    resumed_config = resume_config(out)
    assert resumed_config.teacher == "gbm" and resumed_config.teacher_weight == 0.3
    train_model(resumed_config, resume=True)
    assert np.array_equal(seen_targets[-1], first)
    assert (out / "teacher.npz").read_bytes() == written
    assert json.loads((out / "config.json").read_text())["status"] == "complete"


def test_a_saved_teacher_for_other_notes_is_refused_on_resume(corpus: Path, cache: Path, tmp_path: Path) -> None:
    from instrument_ai.train import trainer
    from instrument_ai.train.config import TrainError
    from instrument_ai.train.prepare import prepare_data

    config = _config(corpus, cache, tmp_path / "run")
    prepared = prepare_data(config)
    n = len(prepared.labels)
    TeacherTargets(["not-a-note"], np.full((1, n), 1 / n, np.float32), np.ones(1, bool), {}).save(
        tmp_path / "run" / "teacher.npz"
    )
    refused = r"^teacher: the saved teacher does not match this run.s training notes \(note .* is not in it\)$"
    with pytest.raises(TrainError, match=refused):
        trainer._teacher(config, prepared, tmp_path / "run", resume=True)


def test_teacher_options_are_checked(corpus: Path, tmp_path: Path) -> None:
    from instrument_ai.train.config import TrainConfig, TrainError

    with pytest.raises(TrainError, match="unknown teacher 'cnn'"):
        TrainConfig(data=str(corpus), out=str(tmp_path), teacher="cnn")
    with pytest.raises(TrainError, match=r"teacher weight must be in \(0, 1\]"):
        TrainConfig(data=str(corpus), out=str(tmp_path), teacher="gbm", teacher_weight=0.0)


def test_holdout_passes_the_teacher_to_every_fold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clirun import run_main

    from instrument_ai.train.experiments import holdout

    asked: list[object] = []
    monkeypatch.setattr(holdout, "run_holdout", lambda cfg, progress: asked.append(cfg) or {"folds": []})
    (tmp_path / "data").mkdir()
    result = run_main("experiment", "holdout", "--data", tmp_path / "data", "--out", tmp_path / "h", "--teacher", "gbm",
                      "--teacher-weight", "0.3")  # fmt: skip
    assert asked and asked[0].overrides == {"teacher": "gbm", "teacher_weight": 0.3}, result.output
    result = run_main("experiment", "holdout", "--data", tmp_path / "data", "--out", tmp_path / "h2",
                      "--teacher-weight", "0.3")  # fmt: skip
    assert result.exit_code == 2 and "--teacher-weight needs --teacher" in result.output
    result = run_main("experiment", "holdout", "--data", tmp_path / "data", "--out", tmp_path / "h3", "--teacher",
                      "gbm-audioset")  # fmt: skip
    assert result.exit_code == 2 and "--teacher gbm-audioset needs --teacher-file" in result.output
    (tmp_path / "w.pt").write_bytes(b"x")
    result = run_main("experiment", "holdout", "--data", tmp_path / "data", "--out", tmp_path / "h4", "--teacher",
                      "gbm-audioset", "--teacher-file", tmp_path / "w.pt")  # fmt: skip
    assert result.exit_code == 2 and "1 bytes, but mn04_as is 4066513 bytes; refused" in result.output
    assert not (tmp_path / "h4").exists() and len(asked) == 1


@pytest.mark.slow  # two folds with the real trainer, each in its own process: ~1 min
def test_each_holdout_fold_fits_its_own_teacher_without_its_held_out_source(tmp_path: Path) -> None:
    from test_train import FAST, render_tiny_corpus

    from instrument_ai.train.experiments import holdout as ho

    instruments = [(family, "acoustic", program, library)
                   for family, programs in (("bass", (32, 33, 34, 35)), ("flute", (73, 72, 75, 74)),
                                            ("organ", (16, 19, 17, 18)))
                   for program, library in zip(programs, ("libA", "libA", "libB", "libB"), strict=True)]  # fmt: skip
    corpus = render_tiny_corpus(tmp_path / "corpus", seconds=1.5, instruments=instruments)
    overrides = {**{k: v for k, v in FAST.items() if k != "jobs"}, "cache": str(tmp_path / "cache"),
                 "teacher": "gbm", "teacher_weight": 0.3}  # fmt: skip
    cfg = ho.HoldoutConfig(data=corpus, out=tmp_path / "h", preset="edge", epochs=1, jobs=1, overrides=overrides)
    summary = ho.run_holdout(cfg)
    table = json.loads((corpus / "instruments.json").read_text())
    assert sorted(f["name"] for f in summary["folds"]) == ["libA", "libB"]
    for fold in summary["folds"]:
        run = Path(fold["run_dir"])
        config = json.loads((run / "config.json").read_text())
        assert config["train_config"]["teacher"] == "gbm" and config["train_config"]["teacher_weight"] == 0.3
        taught = TeacherTargets.load(run / "teacher.npz")
        libraries = {table[name.rsplit("-", 2)[0]]["library"] for name in taught.note_strs}
        assert libraries == ({"libA", "libB"} - {fold["name"]})  # only the fold's own training source
        trained = set(config["data"]["instruments"]["train"])
        assert {name.rsplit("-", 2)[0] for name in taught.note_strs} <= trained


# -- the AudioSet teacher (gbm-audioset) -------------------------------------------------------------------------
class FakeTagger:
    """Stands in for the mn04_as tagger (torch and the weights are training-time extras): a note's 527
    probabilities from its loudness, and a count of the notes it heard."""

    heard = 0

    @classmethod
    def load(cls, path: object) -> FakeTagger:
        return cls()

    def probabilities(self, audio: np.ndarray, rate: int) -> np.ndarray:
        FakeTagger.heard += 1
        level = float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0
        return np.linspace(0.01, 0.99, 527) * min(1.0, 0.2 + level)


@pytest.fixture()
def fake_tagger(monkeypatch: pytest.MonkeyPatch) -> type[FakeTagger]:
    from instrument_ai.train import audioset_tagger, teacher_audioset
    from instrument_ai.train.teacher_file import TeacherFile

    pinned = TeacherFile(name="mn04_as", repo="r", commit="c", path="p", bytes=1, sha256="ab" * 32, licence="MIT",
                         model_code="m", model_code_commit="c")  # fmt: skip
    monkeypatch.setattr(teacher_audioset, "verified_teacher_file", lambda path: pinned)
    monkeypatch.setattr("instrument_ai.train.teacher_file.verified_teacher_file", lambda path: pinned)
    monkeypatch.setattr(audioset_tagger, "AudioSetTagger", FakeTagger)
    FakeTagger.heard = 0
    return FakeTagger


def test_the_audioset_features_are_the_music_branch_and_voice_and_noise_classes() -> None:
    from instrument_ai.train.audioset_tagger import AUDIOSET_LABELS
    from instrument_ai.train.teacher_audioset import EXTRA_CLASSES, feature_indices

    picked = [AUDIOSET_LABELS[i] for i in feature_indices(AUDIOSET_LABELS)]
    assert picked[0] == "Music" and "Flute" in picked and "Cello" in picked and "Singing bowl" in picked
    assert picked[-len(EXTRA_CLASSES):] == list(EXTRA_CLASSES) and len(set(picked)) == len(picked) == 90


def test_each_note_is_tagged_once_and_the_pass_resumes(corpus: Path, tmp_path: Path,
                                                       fake_tagger: type[FakeTagger]) -> None:  # fmt: skip
    from instrument_ai.train import teacher_audioset

    notes = sorted(json.loads((corpus / "examples.json").read_text()))[:6]
    first = teacher_audioset.note_logits(corpus, notes[:4], Path("w.pt"), tmp_path, progress=False)
    assert first.shape == (4, 527) and fake_tagger.heard == 4
    both = teacher_audioset.note_logits(corpus, notes, Path("w.pt"), tmp_path, progress=False)
    assert fake_tagger.heard == 6  # only the two new notes went through the tagger
    np.testing.assert_allclose(both[:4], first, atol=1e-2)  # kept as float16
    assert len(list((tmp_path / "audioset").glob("*.npz"))) == 1
    with pytest.raises(Exception, match="cannot be read for the AudioSet teacher"):
        teacher_audioset.note_logits(corpus, ["no_such_note"], Path("w.pt"), tmp_path, progress=False)


def test_the_audioset_teacher_adds_the_tags_to_the_statistics(corpus: Path, cache: Path, tmp_path: Path,
                                                              fake_tagger: type[FakeTagger],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from instrument_ai.train import trainer
    from instrument_ai.train.prepare import prepare_data

    widths: list[int] = []
    real = teacher_module.out_of_fold

    def spy(stats, *args, **kwargs):
        widths.append(stats.shape[1])
        return real(stats, *args, **kwargs)

    monkeypatch.setattr(teacher_module, "out_of_fold", spy)
    shutil.rmtree(cache / "teacher", ignore_errors=True)  # fit both teachers now, not from earlier tests' cache
    plain = _config(corpus, cache, tmp_path / "plain")
    tagged = _config(corpus, cache, tmp_path / "tagged", teacher="gbm-audioset", teacher_file=str(tmp_path / "w.pt"))
    for config in (plain, tagged):
        prepared = prepare_data(config)
        targets = trainer._teacher(config, prepared, tmp_path / "run", resume=False)
    assert widths[1] == widths[0] + 90  # the 90 AudioSet logits beside the statistics
    assert targets.info["kind"] == "gbm-audioset" and targets.info["audioset"]["name"] == "mn04_as"
    assert fake_tagger.heard == prepared.train.n_notes


def test_the_audioset_teacher_needs_its_pinned_file(corpus: Path, tmp_path: Path) -> None:
    from clirun import run_main

    from instrument_ai.train.config import TrainConfig, TrainError

    with pytest.raises(TrainError, match="--teacher gbm-audioset needs --teacher-file"):
        TrainConfig(data=str(corpus), out=str(tmp_path), teacher="gbm-audioset")
    (tmp_path / "w.pt").write_bytes(b"not the weights")
    result = run_main("train", "--data", corpus, "--out", tmp_path / "run", "--teacher", "gbm-audioset",
                      "--teacher-file", tmp_path / "w.pt")  # fmt: skip
    assert result.exit_code == 2 and "but mn04_as is 4066513 bytes; refused" in result.output
    assert not (tmp_path / "run").exists()

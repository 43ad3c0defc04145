"""Training end to end on a tiny rendered corpus: run folder, config round trip, cache, resume, bad input.

The corpus (4 families x 3 instruments x 5 pitches, 2 s notes) is rendered
from the TimGM6mb SoundFont that pretty_midi ships, in NSynth format, once per
module. Trainings are 1-2 short epochs: they prove the plumbing and that the
model learns something (above chance on its training notes), not accuracy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (family, source, GM program 0-based, library)
TINY_INSTRUMENTS = [
    ("bass", "acoustic", 32, "libA"),
    ("bass", "electronic", 33, "libB"),
    ("bass", "synthetic", 38, "libA"),
    ("flute", "acoustic", 73, "libA"),
    ("flute", "acoustic", 72, "libB"),
    ("flute", "acoustic", 75, "libA"),
    ("keyboard", "acoustic", 0, "libA"),
    ("keyboard", "electronic", 4, "libB"),
    ("keyboard", "acoustic", 6, "libA"),
    ("organ", "electronic", 16, "libA"),
    ("organ", "acoustic", 19, "libB"),
    ("organ", "electronic", 17, "libA"),
]
PITCHES = {"bass": [36, 41, 46, 51, 56]}
DEFAULT_PITCHES = [52, 57, 62, 67, 72]


def render_tiny_corpus(
    folder: Path, *, seconds: float = 2.0, instruments: list[tuple[str, str, int, str]] | None = None
) -> Path:
    """Render an NSynth-format corpus folder (examples.json, audio/, instruments.json) with tinysoundfont."""
    import tinysoundfont

    from instrument_ai.device.labels import FAMILIES
    from instrument_ai.train.corpus.demo_clip import timgm6mb_path
    from instrument_ai.train.corpus.nsynth import (
        SOURCES,
        Note,
        format_instrument_str,
        format_note_str,
        write_examples_json,
        write_note_wav,
    )

    rate = 16000
    synth = tinysoundfont.Synth(samplerate=rate)
    sfid = synth.sfload(str(timgm6mb_path()))
    numbers: dict[tuple[str, str], int] = {}
    notes: list[Note] = []
    table: dict[str, dict] = {}
    for index, (family, source, program, library) in enumerate(instruments or TINY_INSTRUMENTS):
        number = numbers.get((family, source), 0)
        numbers[(family, source)] = number + 1
        name = format_instrument_str(family, source, number)
        table[name] = {"library": library, "lineage": library, "program": program, "variant": 0}
        table[name].update(family_str=family, source_str=source)
        for pitch in PITCHES.get(family, DEFAULT_PITCHES):
            synth.sounds_off()
            synth.program_select(0, sfid, 0, program)
            synth.noteon(0, pitch, 100)
            held = np.frombuffer(synth.generate(int(0.75 * seconds * rate)), dtype=np.float32)
            synth.noteoff(0, pitch)
            tail = np.frombuffer(synth.generate(int(seconds * rate) - held.size // 2), dtype=np.float32)
            audio = np.concatenate([held, tail]).reshape(-1, 2).mean(axis=1)
            audio = (0.5 * audio / max(1e-6, float(np.abs(audio).max()))).astype(np.float32)
            note = Note(
                note_str=format_note_str(name, pitch, 100),
                instrument=index,
                instrument_str=name,
                pitch=pitch,
                velocity=100,
                sample_rate=rate,
                family=FAMILIES.index(family),
                family_str=family,
                source=SOURCES.index(source),
                source_str=source,
                qualities=[0] * 10,
                audio=audio,
                note=len(notes),
            )
            write_note_wav(folder, note)
            notes.append(note)
    write_examples_json(folder, notes)
    (folder / "instruments.json").write_text(json.dumps(table, indent=1))
    return folder


# -- fixtures ------------------------------------------------------------------------------------

FAST = dict(batch_size=32, windows_per_note=20, jobs=1, verbose=0)
"""Tiny-corpus settings: 25 steps per epoch, enough for BatchNorm statistics to settle."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def edge_run(corpus: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from instrument_ai.train.trainer import TrainConfig, train_model

    out = tmp_path_factory.mktemp("runs") / "edge"
    return train_model(TrainConfig(data=str(corpus), out=str(out), preset="edge", epochs=2, cache=str(cache), **FAST))


# -- a full run ----------------------------------------------------------------------------------


@pytest.mark.slow  # the module's edge run (TensorFlow import + 2 short epochs) is set up here: 20-35 s
def test_edge_run_folder_follows_the_contract(edge_run: Path) -> None:
    from instrument_ai.device.frontend import DEFAULT_SPEC
    from instrument_ai.train.experiments.report import is_png

    for name in ("config.json", "model.keras", "history.json", "metrics.json", "calibration.npz", "report.md"):
        assert (edge_run / name).is_file(), name
    assert is_png(edge_run / "training_curves.png")
    assert is_png(edge_run / "confusion_valid_notes.png")
    assert not list(edge_run.rglob(".tmp-*"))
    config = json.loads((edge_run / "config.json").read_text())
    assert config["status"] == "complete"
    assert config["preset"] == "edge"
    assert config["frontend_spec"] == DEFAULT_SPEC.to_dict()
    assert config["labels"] == ["bass", "flute", "keyboard", "organ"]  # NSynth family-id order
    assert len(config["input_normalization"]["mean"]) == len(config["input_normalization"]["std"]) == 40
    assert min(config["input_normalization"]["std"]) > 0
    assert config["window_frames"] == 59 and config["window_seconds"] == 1.0
    assert config["default_hop_seconds"] == 0.25 and config["seed"] == 0 and config["epochs"] == 2
    assert config["data"]["libraries"] == ["libA", "libB"]
    counts = config["data"]["counts"]
    assert counts["train"]["notes"] + counts["valid"]["notes"] == 60
    # instrument-level split: no instrument on both sides, every family validated
    train_inst, valid_inst = (set(config["data"]["instruments"][k]) for k in ("train", "valid"))
    assert train_inst and valid_inst and not train_inst & valid_inst
    assert set(counts["valid"]["families"]) == {"bass", "flute", "keyboard", "organ"}
    assert config["model"]["macs"] <= 5_000_000
    history = json.loads((edge_run / "history.json").read_text())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_note_accuracy"):
        assert len(history[key]) == 2, key
    report = (edge_run / "report.md").read_text()
    assert "training_curves.png" in report and "confusion_valid_notes.png" in report


def test_edge_run_learned_something(edge_run: Path) -> None:
    metrics = json.loads((edge_run / "metrics.json").read_text())
    assert metrics["chance"] == 0.25
    assert metrics["train_window_accuracy"] > 0.5  # chance is 0.25
    assert metrics["train_note_accuracy"] > 0.5
    assert 0.0 <= metrics["note_accuracy"] <= 1.0 and 0.0 <= metrics["window_accuracy"] <= 1.0
    assert metrics["n_notes"] == json.loads((edge_run / "config.json").read_text())["data"]["counts"]["valid"]["notes"]
    assert set(metrics["per_family"]) == {"bass", "flute", "keyboard", "organ"}
    # the device's first three decisions after an onset, on the validation notes
    assert set(metrics["onset_window_accuracy"]) == {"0.25", "0.5", "0.75"}
    assert all(0.0 <= v <= 1.0 for v in metrics["onset_window_accuracy"].values())


def test_calibration_and_load_run(edge_run: Path) -> None:
    from instrument_ai.train.trainer import TrainConfig, load_run

    run = load_run(edge_run)
    assert run.status == "complete" and run.labels == ["bass", "flute", "keyboard", "organ"]
    assert run.window_frames == 59 and run.hop_frames == 16
    # config round trip: the saved train config rebuilds the same TrainConfig
    saved = json.loads((edge_run / "config.json").read_text())["train_config"]
    assert TrainConfig.from_dict(saved).to_dict() == saved == run.train_config.to_dict()
    assert run.train_config.resolved().to_dict() == saved  # saved resolved: nothing left to a default
    cal = run.calibration()
    assert cal["train_x"].shape[1:] == (40, 59) and cal["train_x"].dtype == np.float32
    assert 100 <= len(cal["train_x"]) <= 600 and set(cal["train_y"].tolist()) == {0, 1, 2, 3}
    assert cal["valid_x"].shape[0] == cal["valid_y"].shape[0] == cal["valid_note"].shape[0] > 0
    # raw, un-normalised MFCCs: c0 is in dB-scaled units, far from a unit normal
    assert abs(float(cal["train_x"][:, 0].mean())) > 5
    model = run.load_model()
    probs = run.predict(cal["valid_x"], model)
    assert probs.shape == (len(cal["valid_x"]), 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # the windows of one note share its label
    for note in np.unique(cal["valid_note"]):
        assert len(set(cal["valid_y"][cal["valid_note"] == note].tolist())) == 1


# -- resume --------------------------------------------------------------------------------------


@pytest.mark.slow  # three trainings of a few steps each: ~18 s
def test_interrupted_run_resumes_from_its_checkpoint(corpus: Path, cache: Path, tmp_path: Path) -> None:
    import keras

    from instrument_ai.train.trainer import TrainConfig, TrainError, TrainingInterrupted, resume_config, train_model

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    config = TrainConfig(data=str(corpus), out=str(out), preset="baseline", epochs=2, cache=str(cache), **FAST)
    with pytest.raises(TrainingInterrupted, match=r"after epoch 1/2.*--resume"):
        train_model(config, callbacks=[CtrlC()])
    saved = json.loads((out / "config.json").read_text())
    assert saved["status"] == "interrupted"
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 1
    assert (out / "checkpoints" / "last.keras").is_file() and (out / "model.keras").is_file()
    assert not list(out.rglob(".tmp-*"))
    with pytest.raises(TrainError, match="already holds a run"):
        train_model(config)  # a fresh run never overwrites an existing one
    resumed = train_model(resume_config(out), resume=True)
    assert resumed == out
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    assert json.loads((out / "config.json").read_text())["status"] == "complete"
    with pytest.raises(TrainError, match="complete"):
        train_model(resume_config(out), resume=True)
    assert metrics["train_window_accuracy"] > 0.35  # the baseline learns too (chance 0.25)


# -- data preparation: cache, splits, missing classes ---------------------------------------------


def _config(corpus: Path, cache: Path, out: Path, **overrides: object) -> object:
    from instrument_ai.train.config import TrainConfig

    return TrainConfig(data=str(corpus), out=str(out), cache=str(cache), **{**FAST, **overrides}).resolved()


def test_feature_cache_hit_on_second_run_and_miss_on_spec_change(corpus: Path, tmp_path: Path) -> None:
    from instrument_ai.train.prepare import prepare_data

    cache = tmp_path / "cache"
    first = prepare_data(_config(corpus, cache, tmp_path / "a"))
    assert first.info["features"]["cache_hit"] is False
    second = prepare_data(_config(corpus, cache, tmp_path / "b"))
    assert second.info["features"]["cache_hit"] is True
    np.testing.assert_array_equal(
        first.train.gather(first.train.seg_offset), second.train.gather(second.train.seg_offset)
    )
    # one store per corpus: another split, holdout or family filter reuses it
    fold = prepare_data(_config(corpus, cache, tmp_path / "f", holdout=["libB"], families=["bass", "organ", "flute"]))
    assert fold.info["features"]["cache_hit"] is True
    # what decides the numbers is in the key: the frontend spec, the augmentation
    spec = {**first_spec(), "n_mfcc": 20}
    changed = prepare_data(_config(corpus, cache, tmp_path / "c", frontend_spec=spec))
    assert changed.info["features"]["cache_hit"] is False
    assert changed.train.n_features == 20
    reseeded = prepare_data(_config(corpus, cache, tmp_path / "r", audio_augment={"seed": 5}))
    assert reseeded.info["features"]["cache_hit"] is False
    # a store with more augmented copies serves a request for fewer (the baseline uses the clean rendition only)
    fewer = prepare_data(_config(corpus, cache, tmp_path / "d", augment_copies=1, seed=3))
    assert fewer.info["features"]["cache_hit"] is True
    assert set(fewer.train.seg_rendition.tolist()) == {0, 1} and set(fewer.valid.seg_rendition.tolist()) == {0}
    clean = prepare_data(_config(corpus, cache, tmp_path / "e", preset="baseline"))
    assert clean.info["features"]["cache_hit"] is True and set(clean.train.seg_rendition.tolist()) == {0}


def first_spec() -> dict:
    from instrument_ai.device.frontend import DEFAULT_SPEC

    return DEFAULT_SPEC.to_dict()


def test_split_file_holdout_and_missing_family(corpus: Path, cache: Path, tmp_path: Path) -> None:
    from instrument_ai.train.config import TrainError
    from instrument_ai.train.prepare import prepare_data

    instruments = json.loads((corpus / "instruments.json").read_text())
    by_library = {lib: sorted(n for n, row in instruments.items() if row["library"] == lib) for lib in ("libA", "libB")}
    # holdout: no instrument of the held-out library trains or validates
    held = prepare_data(_config(corpus, cache, tmp_path / "h", holdout=["libB"]))
    used = set(held.info["instruments"]["train"]) | set(held.info["instruments"]["valid"])
    assert used and not used & set(by_library["libB"])
    assert held.info["libraries"] == ["libA"]
    with pytest.raises(TrainError, match="no such library"):
        prepare_data(_config(corpus, cache, tmp_path / "x", holdout=["libZ"]))
    # a split file is followed exactly; a family with no training instrument is dropped from validation
    organs = [n for n in instruments if n.startswith("organ")]
    split = {"scheme": "test", "splits": {
        "train": [n for n in by_library["libA"] if not n.startswith("organ")],
        "valid": [n for n in by_library["libB"]] + organs,
        "test": [],
    }}  # fmt: skip
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(split))
    prepared = prepare_data(_config(corpus, cache, tmp_path / "s", split=str(path)))
    assert prepared.labels == ["bass", "flute", "keyboard"]
    assert set(prepared.info["instruments"]["train"]) == set(split["splits"]["train"])
    assert {n["family_str"] for n in prepared.valid.notes} == {"bass", "flute", "keyboard"}
    assert any("organ" in w and "dropped" in w for w in prepared.info["warnings"])


# -- bad input through the CLI: one line, non-zero exit, never a traceback --------------------------


def _cli(*args: str) -> tuple[int, str]:
    from clirun import run_main

    result = run_main("train", *args, "--quiet")
    output = result.output  # stdout and stderr, interleaved as a terminal shows them
    assert "Traceback" not in output
    if result.exit_code != 0:
        assert isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, output


def _mislabeled_copy(corpus: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "mislabeled"
    shutil.copytree(corpus, copy)
    table = json.loads((copy / "instruments.json").read_text())
    table["flute_acoustic_000"]["family_str"] = "reed"
    (copy / "instruments.json").write_text(json.dumps(table))
    return copy


def test_bad_input_gives_one_line_errors(corpus: Path, cache: Path, tmp_path: Path, edge_run: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "no-notes").mkdir()
    (tmp_path / "no-notes" / "examples.json").write_text("{}")
    out = str(tmp_path / "out")
    c = ["--cache", str(cache), "--jobs", "1"]
    cases = [
        (["--data", str(empty), "--out", out, *c], "neither an NSynth folder"),
        (["--data", str(tmp_path / "missing"), "--out", out, *c], "no such file"),
        (["--data", str(tmp_path / "no-notes"), "--out", out, *c], "no usable notes"),
        (["--data", str(_mislabeled_copy(corpus, tmp_path)), "--out", out, *c], "mislabeled"),
        (["--data", str(corpus), "--out", out, "--families", "bass", *c], "at least 2"),
        (["--data", str(corpus), "--out", out, "--max-memory", "0.000001", *c], "GB"),
        (["--data", str(corpus), "--out", out, "--batch-size", "50000000", *c], "smaller --batch-size"),
        (["--data", str(corpus), "--out", str(edge_run), *c], "already holds a run"),
        (["--resume", str(edge_run)], "complete"),
        (["--resume", str(tmp_path / "nope")], "not a training run"),
        (["--resume", str(edge_run), "--data", str(corpus)], "--resume takes"),
        (["--data", str(corpus)], "--out"),
        (["--data", str(corpus), "--out", out, "--audio-augment", "{noise", *c], "not JSON"),
        (["--data", str(corpus), "--out", out, "--audio-augment", "[1]", *c], "JSON object"),
        (["--data", str(corpus), "--out", out, "--audio-augment", '{"hiss": 1}', *c], "hiss"),
        (["--data", str(corpus), "--out", out, "--audio-augment", '{"noise_prob": 2}', *c], "probability"),
        (["--data", str(corpus), "--out", out, "--onset-fraction", "1.5", *c], "onset-fraction"),
    ]
    for args, message in cases:
        code, output = _cli(*args)
        assert code != 0, args
        assert message in output, (args, output)
        errors = [line for line in output.splitlines() if line.startswith(("Error", "instrument-ai train: "))]
        assert len(errors) == 1, output
    assert not (tmp_path / "out").exists()  # nothing was written by a refused request


# -- pieces --------------------------------------------------------------------------------------


def test_balanced_sampling_draws_families_evenly() -> None:
    from instrument_ai.train.windows import note_sampling_probs

    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    balanced = note_sampling_probs(labels, 4, "balanced")
    per_family = np.bincount(labels, weights=balanced, minlength=4)
    np.testing.assert_allclose(per_family, [1 / 3, 1 / 3, 1 / 3, 0.0])
    natural = np.bincount(labels, weights=note_sampling_probs(labels, 4, "none"), minlength=4)
    np.testing.assert_allclose(natural, [0.9, 0.09, 0.01, 0.0])
    sqrt = np.bincount(labels, weights=note_sampling_probs(labels, 4, "sqrt"), minlength=4)
    assert natural[0] > sqrt[0] > balanced[0]


def test_window_sampler_batches_are_reproducible(corpus: Path, cache: Path, tmp_path: Path) -> None:
    from instrument_ai.device.frontend import DEFAULT_SPEC
    from instrument_ai.train.augment import FeatureAugment, band_to_feature_matrix
    from instrument_ai.train.prepare import prepare_data
    from instrument_ai.train.windows import WindowSampler

    prepared = prepare_data(_config(corpus, cache, tmp_path / "s"))
    mean, std = prepared.train.feature_stats()

    def sampler(seed: int) -> WindowSampler:
        return WindowSampler(
            prepared.train,
            prepared.train_y,
            len(prepared.labels),
            mean=mean,
            std=std,
            batch_size=64,
            steps=3,
            seed=seed,
            balance="balanced",
            feature_augment=FeatureAugment(),
            band_matrix=band_to_feature_matrix(DEFAULT_SPEC).astype(np.float32),
            mixup_alpha=0.2,
        )

    a, b = sampler(0), sampler(0)
    x, y = a.batch(1)
    assert x.shape == (64, 40, 59, 1) and x.dtype == np.float32 and y.shape == (64, 4)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)  # mixup keeps labels a distribution
    assert y.max(axis=1).min() >= 0.5  # ... dominated by the window's own label
    np.testing.assert_array_equal(x, b.batch(1)[0])  # same (seed, epoch, index): same batch
    assert not np.array_equal(x, a.batch(2)[0])
    b.epoch = 1
    assert not np.array_equal(x, b.batch(1)[0])
    assert abs(float(x.mean())) < 1.0  # normalised


def test_edge_preset_renders_pitch_filling_copies_and_an_override_wins() -> None:
    from instrument_ai.train.config import TrainConfig
    from instrument_ai.train.models import PITCH_FILL

    edge = TrainConfig(data="d", out="o").audio_augment_settings()
    assert edge.copies == 2 and edge.pitch_prob == 1.0 and edge.pitch_cents == PITCH_FILL["pitch_cents"] == 150.0
    assert edge.noise_prob == edge.reverb_prob == edge.bandlimit_prob == 0.0
    mic = TrainConfig(data="d", out="o", audio_augment={"noise_prob": 0.8}, augment_copies=1).audio_augment_settings()
    assert mic.noise_prob == 0.8 and mic.pitch_cents == 150.0 and mic.copies == 1
    baseline = TrainConfig(data="d", out="o", preset="baseline").resolved()
    assert baseline.augment_copies == 0 and baseline.onset_fraction == 0.0  # the study's recipe stays the study's


def test_a_config_saved_before_the_0_3_recipe_resumes_with_what_it_was_trained_with() -> None:
    from instrument_ai.train.augment import AudioAugment
    from instrument_ai.train.config import TrainConfig

    new = TrainConfig(data="d", out="o").resolved()
    again = TrainConfig.from_dict(new.to_dict())
    assert again == new and again.onset_fraction == 0.25 and again.audio_augment_settings().pitch_cents == 150.0
    old = new.to_dict()
    del old["onset_fraction"]
    old["audio_augment"] = {}
    was = TrainConfig.from_dict(old)
    assert was.onset_fraction == 0.0
    assert was.audio_augment_settings() == AudioAugment(copies=new.augment_copies)  # the old defaults


def test_window_sampler_cuts_its_onset_share_like_the_device(corpus: Path, cache: Path, tmp_path: Path) -> None:
    from instrument_ai.device.frontend import DEFAULT_SPEC
    from instrument_ai.train.augment import FeatureAugment
    from instrument_ai.train.features import silence_frame
    from instrument_ai.train.prepare import prepare_data
    from instrument_ai.train.windows import WindowSampler

    prepared = prepare_data(_config(corpus, cache, tmp_path / "o"))
    zero, one = np.zeros(40, np.float32), np.ones(40, np.float32)  # no normalisation: raw frames come out
    pad = silence_frame(DEFAULT_SPEC).astype(np.float32)

    def batch(fraction: float) -> np.ndarray:
        sampler = WindowSampler(prepared.train, prepared.train_y, len(prepared.labels), mean=zero, std=one,
                                batch_size=400, steps=1, seed=3, balance="balanced",
                                feature_augment=FeatureAugment(enabled=False), band_matrix=None,
                                onset_fraction=fraction, silence=pad)  # fmt: skip
        return sampler.batch(0)[0][..., 0]

    def padded_frames(x: np.ndarray) -> np.ndarray:
        """Trailing silence frames of each window."""
        silent = np.all(np.isclose(x, pad[None, :, None], atol=1e-3), axis=1)  # (B, W)
        return np.cumprod(silent[:, ::-1], axis=1).sum(axis=1)

    natural = np.mean(padded_frames(batch(0.0)) > 0)  # a release that ends in digital zeros, now and then
    assert natural < 0.25
    cut = padded_frames(batch(0.5))
    assert 0.35 < np.mean(cut > 0) - natural < 0.65
    assert len(set(cut[cut > 0].tolist())) > 20  # 1..58 frames heard, widely spread
    np.testing.assert_array_equal(batch(0.5), batch(0.5))
    with pytest.raises(ValueError, match="silence frame"):
        WindowSampler(prepared.train, prepared.train_y, 4, mean=zero, std=one, batch_size=8, steps=1, seed=0,
                      balance="balanced", feature_augment=FeatureAugment(enabled=False), band_matrix=None,
                      onset_fraction=0.2)  # fmt: skip


def test_ctrl_c_is_held_back_while_a_checkpoint_is_written() -> None:
    import os
    import signal

    from instrument_ai.train.trainer import _deferred_interrupt

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal has it (nohup ignores it)
    try:
        finished = []
        with pytest.raises(KeyboardInterrupt), _deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append(True)  # still runs: the interrupt waits for the end of the block
        assert finished == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_evaluate_reads_the_run_and_scores_its_training_notes(edge_run: Path, corpus: Path) -> None:
    """The evaluation side consumes the run folder as written: sane numbers, above chance on training notes."""
    from instrument_ai.train.experiments.evaluate import evaluate

    config = json.loads((edge_run / "config.json").read_text())
    result = evaluate(edge_run, corpus, instruments=config["data"]["instruments"]["train"])
    assert result["n_notes"] == config["data"]["counts"]["train"]["notes"]
    assert 0.25 < result["note_accuracy"] <= 1.0  # 4 families: chance is 0.25
    assert 0.0 <= result["macro_f1"] <= 1.0


def test_real_weight_reweights_notes_inside_a_family_not_the_family_share() -> None:
    import numpy as np

    from instrument_ai.train.windows import note_sampling_probs

    labels = np.array([0, 0, 0, 1, 1])
    weights = np.array([1.0, 1.0, 4.0, 1.0, 1.0])  # the third note of family 0 is a real recording
    probs = note_sampling_probs(labels, 2, "balanced", weights)
    assert probs[:3].sum() == pytest.approx(0.5) and probs[3:].sum() == pytest.approx(0.5)
    assert probs[2] == pytest.approx(4 * probs[0])
    assert np.allclose(note_sampling_probs(labels, 2, "balanced"), note_sampling_probs(labels, 2, "balanced",
                                                                                      np.ones(5)))  # fmt: skip

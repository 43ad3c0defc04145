"""Holdout by source (issue 14): a real-recording library is a fold of its own with its kind, note lengths come
from sounding_seconds, a one-family fold is reported with a note, and no fold's training, validation or
calibration (the run's recorded instruments) touches its held-out source."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from instrument_ai.train.experiments import holdout as ho

_spec = importlib.util.spec_from_file_location("toy_sources", Path(__file__).with_name("test_evaluate_toycorpus.py"))
toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy)


class RecordingTrainer:
    """Trains the toy model on every instrument outside the holdout; half of them as its validation split."""

    def __init__(self) -> None:
        self.runs: list[tuple[list[str], dict[str, list[str]]]] = []

    def __call__(self, data: Path, out: Path, *, holdout, preset, epochs, seed, jobs=0, overrides=None) -> Path:
        info = toy.corpus_info(data)
        keep = sorted(i for i, row in info.instruments.items() if row.library not in holdout)
        run = toy.make_run(out, data, instruments=keep, epochs=0, seed=seed)
        config = json.loads((run / "config.json").read_text())
        config["data"]["instruments"] = {"train": keep[::2], "valid": keep[1::2]}
        (run / "config.json").write_text(json.dumps(config))
        self.runs.append((list(holdout), config["data"]["instruments"]))
        return run


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    libraries = ("TimGM6mb", "FluidR3", "OrchReal", "SoloLib")
    folder = toy.make_corpus(tmp_path_factory.mktemp("mixed") / "c", families=("bass", "flute", "organ"),
                             libraries=libraries, pitches=(48, 60, 72))  # fmt: skip
    table = json.loads((folder / "instruments.json").read_text())
    # SoloLib keeps its flute only (a one-family source); OrchReal's notes carry sounding_seconds (real recordings)
    drop = {n for n, row in table.items() if row["library"] == "SoloLib" and row["family_str"] != "flute"}
    real = {n for n, row in table.items() if row["library"] == "OrchReal"}
    examples = json.loads((folder / "examples.json").read_text())
    kept = {}
    for key, entry in examples.items():
        if entry["instrument_str"] in drop:
            continue
        if entry["instrument_str"] in real:
            entry["sounding_seconds"] = 0.3 if entry["pitch"] == 48 else 1.0
        kept[key] = entry
    (folder / "examples.json").write_text(json.dumps(kept))
    (folder / "instruments.json").write_text(json.dumps({n: r for n, r in table.items() if n not in drop}))
    return folder


def test_holdout_by_source_kinds_lengths_one_family_and_no_leak(mixed_corpus: Path, tmp_path: Path) -> None:
    folds, _ = ho.folds_of(mixed_corpus)
    kinds = {f.name: f.kind for f in folds}
    assert kinds == {"TimGM6mb": "soundfont", "FluidR3+MuseScoreGeneral": "soundfont", "OrchReal": "real",
                     "SoloLib": "soundfont"}  # fmt: skip
    trainer = RecordingTrainer()
    summary = ho.run_holdout(ho.HoldoutConfig(data=mixed_corpus, out=tmp_path / "h", epochs=1), train_fn=trainer)
    table = json.loads((mixed_corpus / "instruments.json").read_text())
    for (held, used), fold in zip(trainer.runs, folds, strict=True):
        held_instruments = {n for n, r in table.items() if r["library"] in held}
        assert held_instruments == set(fold.instruments)
        for split in ("train", "valid"):  # validation = what calibration and the threshold are fitted on
            assert not set(used[split]) & held_instruments, (fold.name, split)
    by_name = {f["name"]: f for f in summary["folds"]}
    real = by_name["OrchReal"]
    assert real["kind"] == "real" and set(real["per_length_notes"]) == {"short", "medium"}
    assert real["per_length_notes"]["short"] == 3  # the three pitch-48 notes, 0.3 s
    assert by_name["TimGM6mb"]["per_length_notes"] == {"long": 9}  # no sounding_seconds: "longer"
    solo = by_name["SoloLib"]
    assert solo["note"] and "one family only (flute)" in solo["note"] and solo["n_notes"] == 3
    assert summary["by_kind"]["soundfont"]["folds"] == 3 and summary["by_kind"]["real"]["folds"] == 1
    assert summary["by_kind"]["real"]["mean_note_accuracy"] == pytest.approx(real["note_accuracy"])
    md = (tmp_path / "h" / "holdout.md").read_text()
    assert "real-recording folds (1)" in md and "one family only" in md
    # issue 23: four note lengths (0.3 s is in 0.3-0.7 s, 1.0 s in 0.7-1.5 s), notes lost to other, phrases
    assert real["per_note_length_notes"] == {"0.3-0.7 s": 3, "0.7-1.5 s": 6}
    assert by_name["TimGM6mb"]["per_note_length_notes"] == {"longer": 9}
    lost = real["lost"]["notes"]
    assert lost["n"] == 9 and lost["lost"] == pytest.approx(lost["other"] + lost["unknown"])
    played = real["phrases"]
    assert played["notes"] >= 9 and set(played["scores"]) == {"hops", "note"}
    for scores in played["scores"].values():
        assert scores["hops"] == sum(scores[k] for k in ("right", "unknown", "other", "wrong")) > 0
    assert "phrases" not in by_name["TimGM6mb"]  # only real-recording folds are played as phrases
    assert summary["phrases"]["note"]["hops"] == played["scores"]["note"]["hops"]
    for title in ("Phrases through the daemon", "Instrument notes lost to other", "Note accuracy by note length"):
        assert title in md


def test_an_other_source_fold_reports_hops_named_and_false_events(mixed_corpus: Path, tmp_path: Path) -> None:
    import shutil

    from test_train_other import _add_other_notes

    corpus = tmp_path / "c"
    shutil.copytree(mixed_corpus, corpus)
    _add_other_notes(corpus)  # library "noises": every note `other`
    folds, _ = ho.folds_of(corpus, ["noises"])
    assert [(f.name, f.kind) for f in folds] == [("noises", "other")]
    summary = ho.run_holdout(ho.HoldoutConfig(data=corpus, out=tmp_path / "h", epochs=1, libraries=["noises"]),
                             train_fn=RecordingTrainer())  # fmt: skip
    fold = summary["folds"][0]
    assert fold["kind"] == "other" and fold["note_accuracy"] is None
    o = fold["other"]
    assert o["n_clips"] == 10 and o["hops"] > 0 and 0 <= o["hops_named_instrument"] <= 1
    assert o["false_events"] >= 1  # the toy model has no `other` output: every clip names an instrument
    assert summary["by_kind"]["other"]["false_events_per_minute"] == pytest.approx(o["false_events_per_minute"])
    assert "Held-out other sources" in (tmp_path / "h" / "holdout.md").read_text()


def test_grouped_folds_train_once_per_group_and_still_hold_every_source_out(mixed_corpus: Path,
                                                                             tmp_path: Path) -> None:  # fmt: skip
    folds, _ = ho.folds_of(mixed_corpus)
    units = ho.training_units(folds, 2)
    assert len(units) == 2 and sorted(f.name for u in units for f in u) == sorted(f.name for f in folds)
    assert all(any(f.kind == "soundfont" for f in u) for u in units)  # the big kind is spread over every group
    trainer = RecordingTrainer()
    cfg = ho.HoldoutConfig(data=mixed_corpus, out=tmp_path / "g", epochs=1, groups=2)
    summary = ho.run_holdout(cfg, train_fn=trainer)
    assert len(trainer.runs) == 2  # two trainings for four sources
    table = json.loads((mixed_corpus / "instruments.json").read_text())
    for held, used in trainer.runs:
        held_instruments = {n for n, r in table.items() if r["library"] in held}
        assert not (set(used["train"]) | set(used["valid"])) & held_instruments
    assert sorted(f["name"] for f in summary["folds"]) == sorted(f.name for f in folds)
    assert all(f["trained_as"].startswith("group-") for f in summary["folds"])
    again = RecordingTrainer()  # resumed: every fold.json is there, nothing is trained again
    ho.run_holdout(cfg, train_fn=again)
    assert again.runs == []
    with pytest.raises(ho.HoldoutError, match="other settings"):
        ho.run_holdout(ho.HoldoutConfig(data=mixed_corpus, out=tmp_path / "g", epochs=1, groups=3), train_fn=again)


def test_train_kinds_keeps_other_kinds_out_of_every_training(mixed_corpus: Path, tmp_path: Path) -> None:
    trainer = RecordingTrainer()
    cfg = ho.HoldoutConfig(data=mixed_corpus, out=tmp_path / "k", epochs=1, train_kinds=["soundfont"])
    summary = ho.run_holdout(cfg, train_fn=trainer)
    assert all("OrchReal" in held for held, _ in trainer.runs)  # the real source never trains, in any fold
    assert {f["name"] for f in summary["folds"]} >= {"OrchReal", "TimGM6mb"}  # ...yet it is still tested


def test_a_soundfont_only_recipe_also_leaves_out_a_soundfont_folds_drum_kit(tmp_path: Path) -> None:
    (tmp_path / "corpus.json").write_text(json.dumps({"libraries": {
        "FluidR3": {"kind": "soundfont"}, "FluidR3-drums": {"kind": "other"}, "tuba": {"kind": "notes"}}}))  # fmt: skip
    folds = [ho.Fold("FluidR3+MuseScoreGeneral", ["FluidR3", "FluidR3-drums"], [], "soundfont"),
             ho.Fold("tuba", ["tuba"], [], "real"), ho.Fold("Aspirin", ["Aspirin"], [], "soundfont")]  # fmt: skip
    assert ho._excluded_libraries(tmp_path, folds, ["soundfont"]) == ["FluidR3-drums", "tuba"]
    assert ho._excluded_libraries(tmp_path, folds, []) == []

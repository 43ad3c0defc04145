"""The confidence floor chosen on held-out phrases (train/experiments/floors.py): each real fold through its own
group's model at every floor, chosen on one half of the folds and reported on the other, and once on all."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from instrument_ai.train.experiments import floors
from instrument_ai.train.experiments.phrases import PredictorBundle, with_shares


def _scores(decisions: dict[str, Any], best: float) -> dict[str, Any]:
    """Phrase scores that peak (right - wrong) at floor `best`: right falls off on both sides."""
    out = {}
    for key, settings in decisions.items():
        right = int(round(100 * (0.6 - abs(settings.min_confidence - best))))
        out[key] = {**with_shares({"right": right, "wrong": 10, "unknown": 100 - right - 10, "other": 0}),
                    "per_note_length": {}}  # fmt: skip
    return out


def test_the_floor_is_chosen_on_one_half_and_reported_on_the_other(tmp_path: Path, monkeypatch) -> None:
    folds = [{"name": name, "kind": "real", "libraries": [name], "run_dir": f"runs/{name}"}
             for name in ("d-bass", "a-cello", "c-sax", "b-flute")]  # fmt: skip
    folds.append({"name": "sf", "kind": "soundfont", "libraries": ["sf"], "run_dir": "runs/sf"})
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "holdout.json").write_text(json.dumps({"settings": {"data": str(tmp_path), "seed": 3},
                                                             "folds": folds}))  # fmt: skip
    best = {"a-cello": 0.3, "b-flute": 0.3, "c-sax": 0.3, "d-bass": 0.2}
    calls: list[tuple[list[str], str, int]] = []

    def played(data, names, run_dir, *, seed, decisions):
        calls.append((names, run_dir, seed))
        return {"notes": 8, "seconds": 12.0, "scores": _scores(decisions, best[names[0].removesuffix("_1")])}

    import instrument_ai.train.experiments.evaluate as evaluate
    import instrument_ai.train.experiments.phrases as phrases

    instruments = {f"{n}_1": SimpleNamespace(library=n) for n in best} | {"sf_1": SimpleNamespace(library="sf")}
    monkeypatch.setattr(evaluate, "corpus", lambda data: SimpleNamespace(instruments=instruments))
    monkeypatch.setattr(phrases, "fold_phrase_scores", played)
    monkeypatch.setattr(phrases, "fold_other_scores", lambda *a, **k: {"skipped": "no `other` clip"})
    result = floors.measure_holdout(tmp_path / "h", say=lambda line: None)
    assert sorted(c[0][0] for c in calls) == ["a-cello_1", "b-flute_1", "c-sax_1", "d-bass_1"]  # real folds only
    assert {c[2] for c in calls} == {3} and ("runs/a-cello" in {c[1] for c in calls})  # each through its own run
    assert result["halves"] == {"folds A": ["a-cello", "c-sax"], "folds B": ["b-flute", "d-bass"]}
    a_to_b, b_to_a = result["cross"]
    assert a_to_b["hops, right - wrong"]["floor"] == 0.3  # both A folds peak at 0.3
    assert b_to_a["hops, right - wrong"]["floor"] in (0.2, 0.25, 0.3)  # B mixes 0.3 and 0.2
    assert a_to_b["reported_on"] == "folds B" and a_to_b["hops, right - wrong"]["hops"] == 200
    assert result["chosen_on_all"]["hops"]["floor"] == 0.3 and result["chosen_on_all"]["note"]["hops"] == 400
    text = floors.markdown(result, "python -m x")
    assert "its own group's model" in text and "| folds A | folds B | hops |" in text
    assert result["per_other"] == {} and floors.other_markdown(result) == ""


def test_every_setting_is_also_measured_on_the_held_out_other_sources(tmp_path: Path, monkeypatch) -> None:
    """The floor is chosen on instrument phrases alone; what it costs where no instrument plays is reported per
    setting (mean and worst `other` source), each source through its own group's run."""
    folds = [{"name": "cello", "kind": "real", "libraries": ["cello"], "run_dir": "runs/g1"},
             {"name": "flute", "kind": "real", "libraries": ["flute"], "run_dir": "runs/g2"},
             {"name": "rain", "kind": "other", "libraries": ["rain"], "run_dir": "runs/g2"},
             {"name": "speech", "kind": "other", "libraries": ["speech"], "run_dir": "runs/g1"}]  # fmt: skip
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "holdout.json").write_text(json.dumps({"settings": {"data": str(tmp_path)}, "folds": folds}))
    seen: list[tuple[list[str], str]] = []

    def other(data, names, run_dir, *, seed, decisions):
        seen.append((names, run_dir))
        rate = {"rain_1": 6.0, "speech_1": 2.0}[names[0]]  # a lower floor lets more hops through
        scores = {k: {"false_events_per_minute": rate * (1 - s.min_confidence),
                      "hops_named_instrument": 0.5 - s.min_confidence / 2} for k, s in decisions.items()}  # fmt: skip
        return {"clips": 3, "seconds": 12.0, "scores": scores}

    import instrument_ai.train.experiments.evaluate as evaluate
    import instrument_ai.train.experiments.phrases as phrases

    instruments = {f"{n}_1": SimpleNamespace(library=n) for n in ("cello", "flute", "rain", "speech")}
    monkeypatch.setattr(evaluate, "corpus", lambda data: SimpleNamespace(instruments=instruments))
    monkeypatch.setattr(phrases, "fold_phrase_scores",
                        lambda *a, decisions, **k: {"notes": 8, "seconds": 9.0, "scores": _scores(decisions, 0.3)})
    monkeypatch.setattr(phrases, "fold_other_scores", other)
    result = floors.measure_holdout(tmp_path / "h", say=lambda line: None)
    assert sorted(seen) == [(["rain_1"], "runs/g2"), (["speech_1"], "runs/g1")]
    side = result["other_side"]["note@0"]
    assert side["folds"] == 2 and side["false_events_per_minute"] == pytest.approx(4.0) and side["worst_events"] == 6.0
    assert result["other_side"]["note@0.5"]["false_events_per_minute"] == pytest.approx(2.0)
    assert result["chosen_on_all"]["hops"]["other"] == result["other_side"]["hops@0.3"]
    text = floors.other_markdown(result)
    assert "| note@0 | 4.0 / 6.0 | 50.0 % / 50.0 % |" in text and "rain, speech" in text


def test_other_clips_are_each_streamed_through_a_fresh_daemon() -> None:
    """A held-out `other` clip's hops as the engine labels them, counted by `corpus.kinds.other_figures`: a
    steady tone the stand-in model names is one false event per clip, not one per hop; silence is none."""
    from fakemic import FakeBundle, tone

    from instrument_ai.device.settings import EngineSettings
    from instrument_ai.train.experiments.phrases import other_clip_scores

    clips = [tone(1000.0, 2.0).astype(np.float32), np.zeros(32000, np.float32), tone(1000.0, 2.0).astype(np.float32)]
    got = other_clip_scores(FakeBundle(), clips, 16000, {"hops@0": EngineSettings(min_confidence=0.0)})["hops@0"]
    assert got["false_events"] == 2, got
    assert 0.4 < got["hops_named_instrument"] < 0.8 and got["minutes"] == pytest.approx(got["hops"] * 0.25 / 60)


def test_a_model_is_asked_once_per_window_however_often_a_phrase_is_replayed() -> None:
    asked: list[np.ndarray] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        asked.append(batch)
        return np.full((1, 3), batch.mean())

    spec = SimpleNamespace(sample_rate=16000)
    bundle = PredictorBundle(SimpleNamespace(labels=["a", "b", "c"], spec=spec, window_frames=59, hop_seconds=0.25,
                                             info={}, predict=predict))  # fmt: skip
    window = np.random.default_rng(0).normal(size=(40, 59, 1)).astype(np.float32)
    first = bundle.predict(window)
    first[:] = 0  # a caller writing into its answer does not change the remembered one
    again = bundle.predict(window.copy())
    assert len(asked) == 1 and again[0] == pytest.approx(window.mean())
    bundle.predict(window + 1)
    assert len(asked) == 2


def test_a_folder_without_a_finished_holdout_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no holdout.json"):
        floors.main(["--holdout", str(tmp_path), "--out", str(tmp_path / "o")])


def test_a_floor_subset_and_a_patient_note_rule_are_played_as_asked(tmp_path: Path, monkeypatch) -> None:
    folds = [{"name": n, "kind": "real", "libraries": [n], "run_dir": f"runs/{n}"} for n in ("a", "b")]
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "holdout.json").write_text(json.dumps({"settings": {"data": str(tmp_path)}, "folds": folds}))
    asked: list[dict[str, Any]] = []

    def played(data, names, run_dir, *, seed, decisions):
        asked.append(decisions)
        return {"notes": 8, "seconds": 9.0, "scores": _scores(decisions, 0.3)}

    import instrument_ai.train.experiments.evaluate as evaluate
    import instrument_ai.train.experiments.phrases as phrases

    instruments = {f"{n}_1": SimpleNamespace(library=n) for n in ("a", "b")}
    monkeypatch.setattr(evaluate, "corpus", lambda data: SimpleNamespace(instruments=instruments))
    monkeypatch.setattr(phrases, "fold_phrase_scores", played)
    result = floors.measure_holdout(tmp_path / "h", floors=[0.0, 0.3], first_answer_hop=2, say=lambda line: None)
    # the subset, and the shipped default (per hop at 0.4) that every report compares with
    assert sorted(asked[0]) == ["hops@0", "hops@0.3", "hops@0.4", "note@0", "note@0.3", "note@0.4"]
    assert {k: s.first_answer_hop for k, s in asked[0].items() if k.endswith("0.3")} == {"hops@0.3": 1, "note@0.3": 2}
    assert result["first_answer_hop"] == 2 and "from its hop 2 on" in result["model_note"]
    assert floors._floor_list("0.4,0,0.3") == [0.0, 0.3, 0.4]
    with pytest.raises(SystemExit) as stop:
        floors.main(["--holdout", str(tmp_path / "h"), "--out", str(tmp_path / "o"), "--floors", "0,2"])
    assert stop.value.code == 2 and not (tmp_path / "o").exists()

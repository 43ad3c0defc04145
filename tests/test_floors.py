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

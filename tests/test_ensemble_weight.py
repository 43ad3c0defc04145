"""Nested choice of the ensemble's member weight (train/experiments/ensemble_weight.py): a group's folds are reported
at the weight best on the other groups, never at the one best on themselves; bad folders are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instrument_ai.device.cli import main
from instrument_ai.train.experiments.ensemble_weight import WeightChoiceError, join_by_weight

# accuracy[weight][fold]: group A's folds a1, a2; group B's b1; group C's c1; `noise` is an `other` fold of A
ACCURACY = {
    0.3: {"a1": 0.9, "a2": 0.9, "b1": 0.2, "c1": 0.3},
    0.5: {"a1": 0.5, "a2": 0.5, "b1": 0.5, "c1": 0.5},
    0.7: {"a1": 0.1, "a2": 0.1, "b1": 0.6, "c1": 0.6},
}
GROUP = {"a1": "A", "a2": "A", "b1": "B", "c1": "C", "noise": "A"}


def _fold(name: str, weight: float, accuracy: dict[str, float]) -> dict:
    if name == "noise":
        return {"name": name, "kind": "other", "trained_as": "A", "note_accuracy": None, "window_accuracy": None,
                "macro_f1": None, "per_family_recall": {}, "n_notes": 0, "families_not_trained": [],
                "other": {"hops": 100, "hops_named_instrument": weight / 10, "false_events_per_minute": weight * 10},
                "run_dir": f"runs/w{weight}/groups/A"}  # fmt: skip
    acc = accuracy[name]
    return {"name": name, "kind": "real", "trained_as": GROUP[name], "note_accuracy": acc, "window_accuracy": acc,
            "macro_f1": acc, "per_family_recall": {"brass": acc}, "n_notes": 10, "families_not_trained": [],
            "per_length": {"short": acc}, "run_dir": f"runs/w{weight}/groups/{GROUP[name]}"}  # fmt: skip


def _holdout(root: Path, weight: float, *, members: tuple[str, str] = ("/m/mel", "/m/wide"), groups: int = 3,
             folds: tuple[str, ...] = ("a1", "a2", "b1", "c1", "noise"),
             accuracy: dict[str, float] | None = None) -> Path:  # fmt: skip
    from instrument_ai.train.experiments.holdout import write_summary

    folder = root / f"w{weight}-{groups}-{len(folds)}-{members[1][-4:]}"
    settings = {"preset": "ensemble", "epochs": 24, "seed": 0, "data": "/corpus", "groups": groups,
                "overrides": {"members": list(members), "weight": weight}, "train_kinds": [],
                "max_test_notes": 400}  # fmt: skip
    fold_dicts = [_fold(name, weight, accuracy or ACCURACY[weight]) for name in folds]
    for fold in fold_dicts:
        (folder / "folds" / fold["name"]).mkdir(parents=True)
        (folder / "folds" / fold["name"] / "fold.json").write_text(json.dumps(fold))
    (folder / "holdout-settings.json").write_text(json.dumps(settings))
    write_summary(fold_dicts, folder, settings)
    return folder


def test_each_group_takes_the_weight_best_on_the_other_groups(tmp_path) -> None:
    folders = [_holdout(tmp_path, w) for w in (0.3, 0.5, 0.7)]
    choice = join_by_weight(folders, tmp_path / "nested")
    # A's own folds love 0.3, but B and C prefer 0.7: A is reported at 0.7
    assert choice["chosen"] == {"A": 0.7, "B": 0.3, "C": 0.3}
    assert choice["whole_corpus"] == 0.3  # (0.9 + 0.9 + 0.2 + 0.3) / 4 is the best mean over every real fold
    summary = json.loads((tmp_path / "nested" / "holdout.json").read_text())
    got = {f["name"]: (f["note_accuracy"], f["ensemble_weight"]) for f in summary["folds"]}
    assert got == {"a1": (0.1, 0.7), "a2": (0.1, 0.7), "b1": (0.2, 0.3), "c1": (0.3, 0.3), "noise": (None, 0.7)}
    assert summary["by_kind"]["real"]["mean_note_accuracy"] == pytest.approx((0.1 + 0.1 + 0.2 + 0.3) / 4)
    assert summary["by_kind"]["other"]["false_events_per_minute"] == pytest.approx(7.0)  # the `other` fold follows A
    assert (tmp_path / "nested" / "folds" / "b1" / "fold.json").is_file()  # levers reads the folds' folders
    assert "| A | 25.0 % | 50.0 % | 60.0 % | 0.7 |" in (tmp_path / "nested" / "weights.md").read_text()


def test_a_tie_goes_to_the_weight_nearest_one_half(tmp_path) -> None:
    same = {"a1": 0.4, "a2": 0.6, "b1": 0.5, "c1": 0.7}
    folders = [_holdout(tmp_path, w, accuracy=same) for w in (0.2, 0.6)]
    choice = join_by_weight(folders, tmp_path / "n")
    assert set(choice["chosen"].values()) == {0.6} and choice["whole_corpus"] == 0.6


def test_bad_folders_are_refused_in_one_line_and_write_nothing(tmp_path, capsys) -> None:
    good = [_holdout(tmp_path, w) for w in (0.3, 0.5)]
    other_members = _holdout(tmp_path, 0.7, members=("/m/mel", "/m/edge"))
    other_groups = _holdout(tmp_path, 0.7, groups=2)
    fewer_folds = _holdout(tmp_path, 0.7, folds=("a1", "b1", "c1"))
    unfinished = _holdout(tmp_path, 0.7, folds=("a1", "a2", "b1", "c1", "noise"), members=("/m/mel", "/m/wid2"))
    (unfinished / "holdout.json").unlink()
    cases = [([good[0]], "at least two"), ([good[0], good[0]], "given twice"),
             ([good[0], other_members], "other members"), ([good[0], other_groups], "groups .* differs"),
             ([good[0], fewer_folds], "different folds"), ([good[0], unfinished], "holdout.json: missing"),
             ([good[0], tmp_path / "absent"], "not an `experiment holdout` folder")]  # fmt: skip
    for folders, words in cases:
        with pytest.raises(WeightChoiceError, match=words):
            join_by_weight(folders, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (tmp_path / "taken").mkdir()
    with pytest.raises(WeightChoiceError, match="already exists"):
        join_by_weight(good, tmp_path / "taken")
    for args, code, words in (([good[0]], 2, "at least two"), ([good[0], other_groups], 2, "differs"),
                              (good, 0, "whole corpus: weight 0.3")):  # fmt: skip
        argv = ["experiment", "ensemble-weight", *(x for f in args for x in ("--holdout", str(f))),
                "--out", str(tmp_path / "cli")]  # fmt: skip
        try:
            main(argv)
            got = 0
        except SystemExit as exc:
            got = int(exc.code or 0)
        output = capsys.readouterr()
        text = output.out + output.err
        assert got == code and words in text and "Traceback" not in text, text
    assert (tmp_path / "cli" / "weights.md").is_file()

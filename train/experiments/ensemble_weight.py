"""The ensemble's member weight, chosen without looking at the folds it is reported on (issue 23).

Why: `experiment ensemble --weight` sets the second member's share of the pooled logits, and a distilled member's
softer logits may want more than the default 0.5. Choosing it on the reported folds would be tuning on the test,
and the demo is a check, not a validation set. So several ensemble holdouts of the same two members, each at one
weight, are joined here by nested selection: the folds a group's model is tested on take the weight that scored
best on the *other* groups' real folds (each tested by its own model, which never heard it), so no fold's own
score picks the weight it is reported with. The weight for a model trained on the whole corpus is the one best
over every group's real folds, since then no fold is reported with it.

The result is a holdout folder like any other (holdout.json, holdout.md, the chosen folds' folders copied), so
`levers` and `floors` read it unchanged, plus weights.json and weights.md: each weight's score per group and
what was chosen.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.train.ensemble import PROTOCOL_KEYS
from instrument_ai.train.experiments import report

SAME_PROTOCOL = (*PROTOCOL_KEYS, "epochs")
"""holdout-settings.json fields the joined holdouts must share: the ensemble's protocol, and (one pair of member
holdouts) the same epochs; the members too, within `overrides`."""


class WeightChoiceError(InstrumentAIError):
    """Holdouts that cannot be joined by weight; one line for the user."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightChoiceError(f"{path}: missing; is this a finished `experiment ensemble` holdout?") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise WeightChoiceError(f"{path}: not readable JSON ({exc})") from None


def read_weighted_holdouts(folders: list[Path]) -> dict[float, tuple[Path, dict[str, Any]]]:
    """{weight: (folder, holdout.json)} for finished ensemble holdouts of one protocol and one pair of members."""
    from instrument_ai.train.experiments.holdout import HoldoutError, read_holdout_settings

    if len(folders) < 2:
        raise WeightChoiceError(f"choosing a weight needs at least two ensemble holdouts, got {len(folders)}")
    found: dict[float, tuple[Path, dict[str, Any]]] = {}
    first: dict[str, Any] | None = None
    for folder in folders:
        try:
            settings = read_holdout_settings(folder)
        except HoldoutError as exc:
            raise WeightChoiceError(str(exc)) from None
        overrides = settings.get("overrides")
        if settings.get("preset") != "ensemble" or not isinstance(overrides, dict) or "weight" not in overrides:
            raise WeightChoiceError(f"{folder}: not an `experiment ensemble` holdout (preset {settings.get('preset')})")
        summary = _read_json(Path(folder) / "holdout.json")
        if first is None:
            first = settings
        for key in SAME_PROTOCOL:
            if settings.get(key) != first.get(key):
                raise WeightChoiceError(f"{folder}: its {key} ({settings.get(key)}) differs from the first holdout's "
                                        f"({first.get(key)}): not the same protocol")  # fmt: skip
        if overrides.get("members") != first["overrides"].get("members"):
            raise WeightChoiceError(f"{folder}: joins other members than the first holdout; one pair at a time")
        weight = float(overrides["weight"])
        if weight in found:
            raise WeightChoiceError(f"{folder}: weight {weight} is given twice (also {found[weight][0]})")
        found[weight] = (Path(folder), summary)
    groups = [_group_of_folds(summary) for _, summary in found.values()]
    if any(g != groups[0] for g in groups[1:]):
        raise WeightChoiceError("the holdouts tested different folds or grouped them differently; finish them first")
    return dict(sorted(found.items()))


def _group(fold: dict[str, Any]) -> str:
    """The training group whose model tested the fold (a fold trained alone is its own group)."""
    return str(fold.get("trained_as", fold["name"]))


def _group_of_folds(summary: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: _group(f) for f in summary.get("folds", [])}


def _real_scores(summary: dict[str, Any]) -> dict[str, list[float]]:
    """Each group's real folds' note accuracies."""
    scores: dict[str, list[float]] = {}
    for fold in summary.get("folds", []):
        if fold.get("kind") == "real" and fold.get("note_accuracy") is not None:
            scores.setdefault(_group(fold), []).append(float(fold["note_accuracy"]))
    return scores


def _best(scores: dict[float, float]) -> float:
    """The best-scoring weight; a tie goes to the weight nearest the untuned 0.5."""
    return max(scores, key=lambda w: (round(scores[w], 9), -abs(w - 0.5)))


def choose_weights(holdouts: dict[float, tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Per group, the weight best on the other groups' real folds (mean note accuracy); and the whole-corpus one."""
    per_weight = {w: _real_scores(summary) for w, (_, summary) in holdouts.items()}
    groups = sorted(set(_group_of_folds(next(iter(holdouts.values()))[1]).values()))  # every holdout groups alike
    if len([g for g in groups if any(g in s for s in per_weight.values())]) < 2:
        raise WeightChoiceError("nested choice needs real folds in at least two groups")

    def mean_without(weight: float, group: str | None) -> float:
        values = [x for g, xs in per_weight[weight].items() if g != group for x in xs]
        return float(np.mean(values)) if values else float("nan")

    chosen = {g: _best({w: mean_without(w, g) for w in holdouts}) for g in groups}
    return {
        "weights": list(holdouts),
        "groups": groups,
        "score": "mean note accuracy over the real folds of the other groups",
        "scores_without_group": {g: {str(w): mean_without(w, g) for w in holdouts} for g in groups},
        "chosen": chosen,
        "whole_corpus": _best({w: mean_without(w, None) for w in holdouts}),
        "score_all": {str(w): mean_without(w, None) for w in holdouts},
        "holdouts": {str(w): str(folder) for w, (folder, _) in holdouts.items()},
    }


def join_by_weight(folders: list[Path], out: Path) -> dict[str, Any]:
    """Write the nested-choice holdout into `out` (which must not exist); returns weights.json's content."""
    from instrument_ai.train.experiments.holdout import write_summary

    out = Path(out)
    if out.exists():
        raise WeightChoiceError(f"{out}: already exists; choose another --out")
    holdouts = read_weighted_holdouts([Path(f) for f in folders])
    choice = choose_weights(holdouts)
    _, first_summary = next(iter(holdouts.values()))
    settings = dict(first_summary["settings"])
    settings["overrides"] = {**settings.get("overrides", {}), "weight": "nested",
                             "weights": {g: w for g, w in choice["chosen"].items()}}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        folds = []
        for fold in first_summary["folds"]:
            weight = choice["chosen"][_group(fold)]
            folder, summary = holdouts[weight]
            picked = next(f for f in summary["folds"] if f["name"] == fold["name"])
            source = folder / "folds" / fold["name"]
            if source.is_dir():
                shutil.copytree(source, staging / "folds" / fold["name"], symlinks=True)
            folds.append({**picked, "ensemble_weight": weight})
        (staging / "holdout-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        write_summary(folds, staging, settings)
        (staging / "weights.json").write_text(json.dumps(choice, indent=2) + "\n")
        report.write_markdown(staging / "weights.md", "The ensemble's member weight, chosen by nested selection",
                              _sections(choice))  # fmt: skip
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return choice


def _sections(choice: dict[str, Any]) -> list[tuple[str, str]]:
    weights = choice["weights"]
    header = ["score without group", *(f"weight {w}" for w in weights), "chosen"]
    rows = [[g, *(report.pct(choice["scores_without_group"][g][str(w)]) for w in weights), choice["chosen"][g]]
            for g in choice["groups"]]  # fmt: skip
    rows.append(["**every group** (a whole-corpus model)", *(report.pct(choice["score_all"][str(w)]) for w in weights),
                 choice["whole_corpus"]])  # fmt: skip
    body = ("The weight is the second member's share of the pooled logits. A group's folds are reported with the "
            "weight that scored best (mean note accuracy) on the real folds of the *other* groups; the last row is "
            "the weight a model trained on every source takes. Ties go to the weight nearest 0.5. Holdouts: "
            + ", ".join(f"{w}: `{p}`" for w, p in choice["holdouts"].items()) + ".")  # fmt: skip
    return [("Choice", body), ("Scores", report.markdown_table(header, rows))]

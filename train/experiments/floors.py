"""The daemon's confidence floor for a recipe, chosen on held-out phrases (issue 23: a distilled model's softer
probabilities want another floor than 0.4).

    python -m instrument_ai.train.experiments.floors --holdout runs/levers/combo4teacherweight --out runs/floors/x

Every real fold of an `experiment holdout` folder is played as phrases (`phrases.source_phrases`) through the
model that never heard it (its group's run), in both decision modes at every floor of `note_decision.FLOORS`.
The folds are dealt into two halves (alternately, in name order); the floor chosen on one half is reported on
the other, so the figure a user can expect is never tuned on itself. The floor chosen on every fold is the one
a bundle of the recipe ships with (`convert --decision --min-confidence`); it is calibrated on held-out folds, as
the open-set threshold is, and reported beside the cross-checked figures, not as one. A low floor names more
hops right and also more of what is no instrument, so every setting is also played on the held-out `other`
sources (false instrument events per minute), which never take part in the choice.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.settings import FALLBACK_MIN_CONFIDENCE, EngineSettings
from instrument_ai.train.experiments.note_decision import (
    CRITERIA,
    DECISIONS,
    FLOORS,
    best_floor,
    cross_check,
    half_scores,
    markdown,
)

HALVES = ("folds A", "folds B")


def real_folds(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The holdout's real-recording folds that were tested by a trained run, in name order."""
    folds = [f for f in summary.get("folds", []) if f.get("kind") == "real" and f.get("run_dir")]
    return sorted(folds, key=lambda f: f["name"])


def other_folds(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The holdout's `other` folds (non-instrument sources) that were tested by a trained run, in name order."""
    folds = [f for f in summary.get("folds", []) if f.get("kind") == "other" and f.get("run_dir")]
    return sorted(folds, key=lambda f: f["name"])


def other_side(per_other: dict[str, dict[str, Any]], key: str) -> dict[str, Any] | None:
    """One setting's `other` figures over the held-out `other` sources: mean and worst fold."""
    rows = [entry["scores"][key] for entry in per_other.values()]
    if not rows:
        return None
    events = [float(r["false_events_per_minute"]) for r in rows]
    named = [float(r["hops_named_instrument"]) for r in rows]
    return {"folds": len(rows), "false_events_per_minute": float(np.mean(events)), "worst_events": max(events),
            "hops_named_instrument": float(np.mean(named)), "worst_named": max(named)}  # fmt: skip


def _fold_names(instruments: dict[str, Any], fold: dict[str, Any]) -> list[str]:
    libraries = set(fold.get("libraries") or [fold["name"]])
    return [name for name, row in instruments.items() if row.library in libraries]


def measure_holdout(holdout: Path, *, floors: Sequence[float] = FLOORS, first_answer_hop: int = 1,
                    say: Any = print) -> dict[str, Any]:  # fmt: skip
    """Scores of every real fold at every (decision, floor), the cross-check between halves, the floor chosen
    on all folds per decision mode, and what each setting costs on the held-out `other` sources (never used to
    choose: the floor is chosen on instrument phrases alone)."""
    from instrument_ai.train.experiments.evaluate import corpus
    from instrument_ai.train.experiments.phrases import fold_other_scores, fold_phrase_scores

    summary = json.loads((Path(holdout) / "holdout.json").read_text(encoding="utf-8"))
    data, seed = Path(summary["settings"]["data"]), int(summary["settings"].get("seed", 0))
    instruments = corpus(data).instruments
    floors = sorted({*floors, FALLBACK_MIN_CONFIDENCE})  # the shipped default is always the reference row
    settings = {f"{d}@{f:g}": EngineSettings(decision=d, min_confidence=f,
                                              first_answer_hop=first_answer_hop if d == "note" else 1)
                for d in DECISIONS for f in floors}  # fmt: skip
    per_source: dict[str, dict[str, Any]] = {}
    for i, fold in enumerate(real_folds(summary)):
        played = fold_phrase_scores(data, _fold_names(instruments, fold), fold["run_dir"], seed=seed,
                                    decisions=settings)  # fmt: skip
        if "scores" not in played:
            say(f"{fold['name']}: skipped ({played.get('skipped')})")
            continue
        per_source[fold["name"]] = {"half": HALVES[i % 2], **played}
        say(f"{fold['name']}: " + ", ".join(f"{k} {v['share']['right']:.2f}" for k, v in played["scores"].items()))
    per_other: dict[str, dict[str, Any]] = {}
    for fold in other_folds(summary):
        got = fold_other_scores(data, _fold_names(instruments, fold), fold["run_dir"], seed=seed, decisions=settings)
        if "scores" not in got:
            say(f"{fold['name']}: skipped ({got.get('skipped')})")
            continue
        per_other[fold["name"]] = got
        say(f"{fold['name']} (other): " + ", ".join(f"{k} {v['false_events_per_minute']:.1f}/min"
                                                    for k, v in got["scores"].items()))  # fmt: skip
    halves = {h: [name for name, entry in per_source.items() if entry["half"] == h] for h in HALVES}
    chosen = {}
    for decision in DECISIONS:
        floor = best_floor(per_source, None, decision, next(iter(CRITERIA)), floors)
        key = f"{decision}@{floor:g}"
        chosen[decision] = {"floor": floor, **half_scores(per_source, None, key), "other": other_side(per_other, key)}
    return {"holdout": str(holdout), "data": str(data), "seed": seed, "floors": list(floors), "halves": halves,
            "per_source": per_source, "cross": cross_check(per_source, HALVES, floors), "chosen_on_all": chosen,
            "per_other": per_other, "other_side": {key: other_side(per_other, key) for key in settings},
            "first_answer_hop": first_answer_hop,
            "model_note": f"Each real fold of `{holdout}` through its own group's model (which never heard it); "
                          f"corpus `{data}`, seed {seed}"
                          + (f"; per note, a note names a family from its hop {first_answer_hop} on"
                             if first_answer_hop > 1 else "") + ". Reproduce with:"}  # fmt: skip


def other_markdown(result: dict[str, Any]) -> str:
    """The `other` side of every setting: held-out non-instrument sources, each clip through a fresh daemon."""
    sides = {k: v for k, v in result.get("other_side", {}).items() if v}
    if not sides:
        return ""
    names = ", ".join(result["per_other"])
    lines = ["", "## The `other` side of every setting", "",
             f"Held-out non-instrument sources ({names}), at most 48 clips each, each clip streamed through a fresh "
             "daemon by the model that never heard it. Not used to choose the floor (that is chosen on instrument "
             "phrases alone); this is what each floor costs where no instrument plays.", "",
             "| setting | false instrument events per minute (mean / worst source) | hops named an instrument "
             "(mean / worst) |", "|---|---|---|"]  # fmt: skip
    for key, side in sides.items():
        lines.append(f"| {key} | {side['false_events_per_minute']:.1f} / {side['worst_events']:.1f} | "
                     f"{100 * side['hops_named_instrument']:.1f} % / {100 * side['worst_named']:.1f} % |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _floor_list(text: str) -> list[float]:
    """`--floors`: comma-separated floors in [0, 1], in rising order."""
    try:
        values = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not comma-separated numbers") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: floors must lie in [0, 1]")
    return values


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holdout", type=Path, required=True, help="an `experiment holdout` folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--floors", type=_floor_list, default=FLOORS, help="comma-separated floors to play (default: %(default)s)"
    )
    parser.add_argument(
        "--first-answer-hop",
        type=int,
        choices=range(1, 9),
        default=1,
        metavar="N",
        help="per note, a note names a family from its Nth hop on (`run --first-answer-hop`)",
    )
    args = parser.parse_args(argv)
    if not (args.holdout / "holdout.json").is_file():
        raise SystemExit(f"{args.holdout}: no holdout.json (not a finished `experiment holdout` folder)")
    result = measure_holdout(args.holdout, floors=args.floors, first_answer_hop=args.first_answer_hop)
    command = f"python -m instrument_ai.train.experiments.floors --holdout {args.holdout} --out {args.out}"
    if list(args.floors) != list(FLOORS):
        command += " --floors " + ",".join(f"{f:g}" for f in args.floors)
    if args.first_answer_hop != 1:
        command += f" --first-answer-hop {args.first_answer_hop}"
    text = markdown(result, command)
    shares = "; ".join(f"{d}: floor {c['floor']:g}, right {100 * c['share']['right']:.1f} %, wrong "
                       f"{100 * c['share']['wrong']:.1f} %" for d, c in result["chosen_on_all"].items())  # fmt: skip
    text += f"\nChosen on every fold (calibration, not a held-out figure): {shares}.\n"
    text += "".join(f"\n{half}: {', '.join(names)}.\n" for half, names in result["halves"].items())
    text += other_markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "floors.json").write_text(json.dumps(result, indent=2))
    (args.out / "floors.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

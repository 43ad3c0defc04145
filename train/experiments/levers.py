"""The lever table (issue 23): each lever's holdout figures beside the baseline's, read from what the runs wrote.

A lever is one change to the 0.4.0 recipe, screened on one fixed cheap protocol (same corpus, seed, groups,
epochs and minutes); its row is read from the `experiment holdout` folder it wrote, never typed by hand:

    python -m instrument_ai.train.experiments.levers docs/experiments/levers.json docs/experiments/levers.md

`levers.json` lists {"name", "command", "out", "note"} per lever (the first is the baseline); rows whose
holdout has not finished are written as "running", with no figures. Its optional "confirm" list holds the
best combinations on the costlier 4-group protocol (the first: the 0.4.0 recipe on it), written as a second
table with the figures by note length and the real folds that fell below the reference.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.labels import OTHER
from instrument_ai.train.corpus.kinds import NOTE_LENGTHS


class LeverError(InstrumentAIError):
    """A lever list or holdout folder that cannot be read; one line for the user."""


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LeverError(f"{path}: cannot read ({exc})") from None


def lost_to_other(fold_dir: Path) -> float | None:
    """Share of a fold's instrument notes whose note-level answer (mean over its windows) is `other`."""
    path = fold_dir / "eval" / "evaluation.json"
    if not path.is_file():
        return None
    result = _read(path)
    labels = result.get("labels", [])
    if OTHER not in labels:
        return 0.0
    confusion = np.asarray(result["confusion_notes"], dtype=np.int64)
    rows = [i for i, name in enumerate(labels) if name != OTHER]
    notes = int(confusion[rows].sum())
    return float(confusion[rows, labels.index(OTHER)].sum() / notes) if notes else None


def _run_metrics(folds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """metrics.json of each training the folds were tested with (once per group, by the group's folder name: a
    copy of a holdout re-tested in place names the same trainings by two paths)."""
    paths: dict[str, Path] = {}
    for fold in folds:
        if fold.get("run_dir"):
            paths.setdefault(Path(fold["run_dir"]).name, Path(fold["run_dir"]) / "metrics.json")
    return [_read(path) for _, path in sorted(paths.items()) if path.is_file()]


def _macs(runs: list[dict[str, Any]]) -> int | None:
    return next((int(m["model"]["macs"]) for m in runs if m.get("model", {}).get("macs") is not None), None)


def lever_row(out: Path) -> dict[str, Any] | None:
    """The table's figures for one holdout folder, or None while its holdout.json is not written."""
    summary_path = Path(out) / "holdout.json"
    if not summary_path.is_file():
        return None
    summary = _read(summary_path)
    folds = summary.get("folds", [])
    by_kind = summary.get("by_kind", {})
    real = [f for f in folds if f.get("kind") == "real" and f.get("note_accuracy") is not None]
    short = [f["per_length"]["short"] for f in real if "short" in f.get("per_length", {})]
    lost = [x for f in real if (x := lost_to_other(Path(out) / "folds" / f["name"])) is not None]
    runs = _run_metrics(folds)
    return {
        "real": by_kind.get("real", {}).get("mean_note_accuracy"),
        "real_folds": len(real),
        "soundfont": by_kind.get("soundfont", {}).get("mean_note_accuracy"),
        "short_real": float(np.mean(short)) if short else None,
        "short_real_notes": sum(f.get("per_length_notes", {}).get("short", 0) for f in real),
        "other_events": by_kind.get("other", {}).get("false_events_per_minute"),
        "other_hops": by_kind.get("other", {}).get("hops_named_instrument"),
        "phrases_right": _phrase_right(summary, "hops"),
        "phrases_right_note": _phrase_right(summary, "note"),
        "lost_to_other": float(np.mean(lost)) if lost else None,
        "lost_to_other_worst": max(lost) if lost else None,
        "macs": _macs(runs),
        "train_minutes": sum(m.get("train_seconds", 0.0) for m in runs) / 60.0,  # the trainer's own clock
        "epochs": [m.get("epochs_run") for m in runs],
        "real_by_length": {length: _mean_of(real, length) for length in NOTE_LENGTHS},
        "real_fold_accuracy": {f["name"]: f["note_accuracy"] for f in real},
    }


def _mean_of(folds: list[dict[str, Any]], length: str) -> float | None:
    """Mean over the folds that have notes of this length of their accuracy on them."""
    values = [f["per_note_length"][length] for f in folds if length in f.get("per_note_length", {})]
    return float(np.mean(values)) if values else None


def _phrase_right(summary: dict[str, Any], mode: str) -> float | None:
    """Share of the real phrases' sounding hops the daemon named right under one decision rule (None: not played)."""
    share = summary.get("phrases", {}).get(mode, {}).get("share", {})
    return share.get("right")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _delta(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return ""
    return f" ({100 * (value - base):+.1f})"


Column = tuple[str, Callable[[dict[str, Any], dict[str, Any]], str]]
"""A table column: its header, and its cell from (the row's figures, the reference row's figures)."""


def _accuracy(key: str) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    return lambda row, base: _pct(row[key]) + _delta(row[key], base.get(key))


def _below(row: dict[str, Any], base: dict[str, Any]) -> str:
    worse, shared, worst = folds_below(row, base)
    return f"{worse} of {shared}" + ("" if worst is None else f" (-{100 * worst:.1f})")


REAL: Column = ("real folds", _accuracy("real"))
SOUNDFONT: Column = ("SoundFont folds", _accuracy("soundfont"))
SHORT: Column = ("real notes < 0.5 s", _accuracy("short_real"))
EVENTS: Column = ("`other` false events/min",
                  lambda row, base: "n/a" if row["other_events"] is None else f"{row['other_events']:.1f}")
LOST: Column = ("instrument notes lost to `other` (mean / worst real fold)",
                lambda row, base: f"{_pct(row['lost_to_other'])} / {_pct(row['lost_to_other_worst'])}")
PHRASES: Column = ("real phrases: hops named right (hops / note rule)",
                   lambda row, base: f"{_pct(row['phrases_right'])} / {_pct(row['phrases_right_note'])}")
MACS: Column = ("MACs", lambda row, base: "n/a" if row["macs"] is None else f"{row['macs'] / 1e6:.1f} M")
MINUTES: Column = ("train min (epochs)",
                   lambda row, base: f"{row['train_minutes']:.1f} ({' + '.join(str(e) for e in row['epochs'])})")
LEVER_COLUMNS: list[Column] = [REAL, SOUNDFONT, SHORT, EVENTS, LOST, PHRASES,
                               ("`other` hops named an instrument", lambda row, base: _pct(row["other_hops"])),
                               MACS, MINUTES]  # fmt: skip
CONFIRM_COLUMNS: list[Column] = [
    REAL, SOUNDFONT, SHORT,
    ("real notes < 0.3 / 0.3-0.7 / 0.7-1.5 / longer s",
     lambda row, base: " / ".join(_pct(row["real_by_length"][length]) for length in NOTE_LENGTHS)),
    EVENTS, LOST, PHRASES, ("real folds below the reference (worst)", _below), MACS, MINUTES,
]  # fmt: skip


def _render(levers: list[dict[str, Any]], first: str, columns: list[Column]) -> str:
    """One row per lever (figures read from its holdout folder), cells against the first row's, then the notes."""
    header = [first, *(name for name, _ in columns), "command"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [(lever, lever_row(Path(lever["out"]))) for lever in levers]
    base = rows[0][1] if rows and rows[0][1] else {}
    for lever, row in rows:
        command = f"`{lever['command']}`"
        if row is None:
            cells = [lever["name"], "running", *([""] * (len(columns) - 1)), command]
        else:
            cells = [lever["name"], *(cell(row, base) for _, cell in columns), command]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {lever['name']}: {lever['note']}" for lever in levers if lever.get("note")]
    return "\n".join(lines + ([""] + notes if notes else []))


def render(levers: list[dict[str, Any]]) -> str:
    """The markdown table: one row per lever, accuracy deltas against the first (the baseline) in points."""
    return _render(levers, "lever", LEVER_COLUMNS)


def folds_below(row: dict[str, Any], base: dict[str, Any]) -> tuple[int, int, float | None]:
    """Real folds the row names worse than the reference: (how many, of how many shared, the worst drop)."""
    mine, theirs = row.get("real_fold_accuracy", {}), base.get("real_fold_accuracy", {})
    drops = [theirs[name] - mine[name] for name in mine if name in theirs]
    worse = [d for d in drops if d > 0]
    return len(worse), len(drops), (max(worse) if worse else None)


def render_confirmation(levers: list[dict[str, Any]]) -> str:
    """The 4-group table: the lever table's figures, real notes by length, and real folds below the reference."""
    return _render(levers, "recipe", CONFIRM_COLUMNS)


def finished_folds(out: Path) -> dict[str, dict[str, Any]]:
    """The fold.json of every fold a holdout has tested so far (a holdout writes its holdout.json only at the end)."""
    return {p.parent.name: _read(p) for p in sorted(Path(out).glob("folds/*/fold.json"))}


def render_so_far(levers: list[dict[str, Any]]) -> str | None:
    """While a confirmation runs: every recipe's means over the folds that all recipes have tested; None when all
    are finished (their rows say everything) or no fold is shared."""
    if all((Path(lever["out"]) / "holdout.json").is_file() for lever in levers):  # lever_row's own test
        return None
    folds = {lever["name"]: finished_folds(Path(lever["out"])) for lever in levers}
    shared = set.intersection(*(set(f) for f in folds.values()))
    if not shared:
        return None
    kinds = {name: next(iter(folds.values()))[name].get("kind") for name in shared}

    def mean(recipe: str, kind: str, value: Callable[[dict[str, Any]], float | None]) -> float | None:
        values = [v for name in shared if kinds[name] == kind if (v := value(folds[recipe][name])) is not None]
        return float(np.mean(values)) if values else None

    count = {kind: sum(k == kind for k in kinds.values()) for kind in ("real", "soundfont", "other")}
    header = (f"| recipe | real folds ({count['real']}) | SoundFont folds ({count['soundfont']}) | real notes < 0.5 s "
              f"| `other` false events/min ({count['other']}) |")  # fmt: skip
    lines = [header, "|---|---|---|---|---|"]
    for lever in levers:
        name = lever["name"]
        real = mean(name, "real", lambda f: f.get("note_accuracy"))
        soundfont = mean(name, "soundfont", lambda f: f.get("note_accuracy"))
        short = mean(name, "real", lambda f: f.get("per_length", {}).get("short"))
        events = mean(name, "other", lambda f: (f.get("other") or {}).get("false_events_per_minute"))
        shown = "n/a" if events is None else f"{events:.1f}"
        lines.append(f"| {name} | {_pct(real)} | {_pct(soundfont)} | {_pct(short)} | {shown} |")
    return "\n".join(lines)


def _replace_block(text: str, marker: str, table: str) -> str:
    begin, end = f"<!-- {marker}: begin -->", f"<!-- {marker}: end -->"
    block = f"{begin}\n{table}\n{end}"
    if begin in text and end in text:
        return text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    return text + ("\n" if text else "") + block + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m instrument_ai.train.experiments.levers LEVERS.json OUT.md", file=sys.stderr)
        return 2
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    document = _read(spec_path)
    table = render(document["levers"])
    text = out_path.read_text(encoding="utf-8") if out_path.is_file() else ""
    text = _replace_block(text, "lever table", table)
    if document.get("confirm"):
        confirmation = render_confirmation(document["confirm"])
        text = _replace_block(text, "confirmation table", confirmation)
        table += "\n\n" + confirmation
        so_far = render_so_far(document["confirm"])
        if so_far is not None or "<!-- confirmation so far: begin -->" in text:
            text = _replace_block(text, "confirmation so far", so_far or "(every confirmation has finished)")
            table += "\n\n" + (so_far or "")
    out_path.write_text(text, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":  # pragma: no cover - a thin shell
    raise SystemExit(main(sys.argv[1:]))

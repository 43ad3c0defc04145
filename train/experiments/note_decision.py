"""Measure the decision rule on phrases of real recordings a model never heard: one decision per hop against one
per note, at several confidence floors, the floor chosen on one half of the sources and reported on the other.

    python -m instrument_ai.train.experiments.note_decision --data /work/corpus-v5 --model models/default.tflite \\
        --out runs/note-decision

Each source's instrument notes become phrases (`phrases.source_phrases`: legato overlaps, short gaps, repeated
notes; fixed seed) streamed through the daemon's own `Classifier`. For each half, the floor (``min_confidence``)
that names most sounding hops right on that half is chosen per decision mode, then the other half is scored with
it; the shipped default (per hop, floor 0.4) is scored alongside. Writes note-decision.json and note-decision.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instrument_ai.device.labels import OTHER
from instrument_ai.device.settings import FALLBACK_MIN_CONFIDENCE, EngineSettings
from instrument_ai.train.corpus.kinds import NOTE_LENGTHS
from instrument_ai.train.experiments.phrases import OUTCOMES, SourceNote, merge_scores, phrase_scores, source_phrases

HALVES = {
    "double basses": ("karoryfer-meatbass", "dsmolken-double-bass"),
    "sax and cellos": ("karoryfer-bear-sax", "karoryfer-string-cyborgs", "playitright-cello"),
}
"""The two halves of the sources: the double basses are one instrument (one lineage), so they stay together."""
FLOORS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)
DECISIONS = ("hops", "note")
CRITERIA = {
    "right - wrong": lambda share: share["right"] - share["wrong"],
    "most right": lambda share: share["right"],
}
"""How a floor is chosen on the tuning half. The first is the one reported: a wrong family shown to a player
costs as much as a right one is worth (with "most right" alone the lowest floor always wins, wrong answers and
all)."""


def source_notes(data: Path, library: str, rate: int) -> list[SourceNote]:
    """The instrument notes (not `other`) of one library of a corpus, as phrase material."""
    from instrument_ai.train.experiments.evaluate import corpus, iter_corpus, note_audio

    instruments = [name for name, row in corpus(data).instruments.items() if row.library == library]
    if not instruments:
        raise SystemExit(f"{data}: no instrument of library {library!r}")
    return [
        SourceNote(note_audio(n), n.family_str, n.note_str, getattr(n, "sounding_seconds", None))
        for n in iter_corpus(data, instruments=instruments, sample_rate=rate)
        if n.family_str != OTHER
    ]


def measure(data: Path, model: Path, *, seed: int = 0, floors: Sequence[float] = FLOORS) -> dict[str, Any]:
    """Scores of every source at every (decision, floor), and the chosen-floor cross-check between the halves."""
    from instrument_ai.device.model_files import load_bundle

    bundle = load_bundle(model, 1)
    settings = {f"{d}@{f:g}": EngineSettings(decision=d, min_confidence=f) for d in DECISIONS for f in floors}
    per_source: dict[str, dict[str, Any]] = {}
    for half, libraries in HALVES.items():
        for library in libraries:
            notes = source_notes(data, library, bundle.sample_rate)
            phrases = source_phrases(notes, bundle.sample_rate, seed=seed)
            per_source[library] = {"half": half, "notes": sum(len(p.notes) for p in phrases),
                                   "seconds": round(sum(p.seconds for p in phrases), 1),
                                   "scores": phrase_scores(bundle, phrases, settings)}  # fmt: skip
            print(library, {k: round(v["share"]["right"], 3) for k, v in per_source[library]["scores"].items()})

    cross = cross_check(per_source, list(HALVES), floors)
    return {"data": str(data), "model": str(model), "model_version": getattr(bundle, "version", ""), "seed": seed,
            "halves": {k: list(v) for k, v in HALVES.items()}, "floors": list(floors), "per_source": per_source,
            "cross": cross}  # fmt: skip


def half_scores(per_source: dict[str, dict[str, Any]], half: str | None, key: str) -> dict[str, Any]:
    """One setting's scores summed over the sources of a half (None: over every source), with their lengths."""
    entries = [s["scores"][key] for s in per_source.values() if half is None or s["half"] == half]
    lengths = {b: merge_scores(e["per_note_length"][b] for e in entries if b in e["per_note_length"])
               for b in NOTE_LENGTHS}  # fmt: skip
    return {**merge_scores(entries), "per_note_length": {b: v for b, v in lengths.items() if v["hops"]}}


def best_floor(per_source: dict[str, dict[str, Any]], half: str | None, decision: str, criterion: str,
               floors: Sequence[float]) -> float:  # fmt: skip
    """The floor that scores best on a half (None: on every source) by the criterion; ties go to the lowest."""
    value = CRITERIA[criterion]
    return max(floors, key=lambda f: (value(half_scores(per_source, half, f"{decision}@{f:g}")["share"]), -f))


def cross_check(per_source: dict[str, dict[str, Any]], halves: Sequence[str], floors: Sequence[float]) -> list[Any]:
    """For each order of the two halves: the shipped default and, per criterion and decision, the floor chosen
    on the first half, scored on the second."""
    cross = []
    for tune, report in ((halves[0], halves[1]), (halves[1], halves[0])):
        shipped = f"hops@{FALLBACK_MIN_CONFIDENCE:g}"
        row: dict[str, Any] = {"chosen_on": tune, "reported_on": report,
                               "default": {"setting": shipped, **half_scores(per_source, report, shipped)}}  # fmt: skip
        for criterion in CRITERIA:
            for decision in DECISIONS:
                best = best_floor(per_source, tune, decision, criterion, floors)
                key = f"{decision}@{best:g}"
                row[f"{decision}, {criterion}"] = {"setting": key, "floor": best, "criterion": criterion,
                                                   "tuning": half_scores(per_source, tune, key)["share"],
                                                   **half_scores(per_source, report, key)}  # fmt: skip
        cross.append(row)
    return cross


def markdown(result: dict[str, Any], command: str) -> str:
    """The report: the cross-checked table first, then every source at every setting."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f} %"

    lines = [
        "# One decision per note, measured on phrases of real recordings",
        "",
        result.get("model_note") or f"Model `{result['model']}` (version {result['model_version']}), which never "
        f"heard these recordings; corpus `{result['data']}`, seed {result['seed']}. Reproduce with:",
        "",
        "```",
        command,
        "```",
        "",
        "Each source's instrument notes (at most 48, fixed-seed sample) are joined into phrases of 8 (legato "
        "overlaps, short gaps, repeated notes) and streamed through the daemon's `Classifier`. A sounding hop is "
        "*right* (its note's family), *unknown* (no family: unknown or silence), *other*, or *wrong*. The floor "
        "(`--min-confidence`) of each decision mode is chosen on one half of the sources and "
        "reported on the other half; nothing is tuned on the reported half. The floor is chosen for *right - wrong* "
        "(a wrong family shown costs as much as a right one is worth); *most right* is shown too, and always "
        "picks the lowest floor.",
        "",
        "| floor chosen on | reported on | decision | floor chosen for | floor | hops | right | unknown | other "
        "| wrong |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["cross"]:
        for name, entry in row.items():
            if not isinstance(entry, dict):
                continue
            decision = "hops (shipped default)" if name == "default" else name.split(",")[0]
            floor = entry["setting"].split("@")[1]
            lines.append(f"| {row['chosen_on']} | {row['reported_on']} | {decision} | {entry.get('criterion', '-')} | "
                         f"{floor} | {entry['hops']} | " + " | ".join(pct(entry["share"][k]) for k in OUTCOMES)
                         + " |")  # fmt: skip
    lines += ["", "## By note length, on the reported half (share of its sounding hops named right / wrong)", "",
              "| reported on | decision | floor | " + " | ".join(NOTE_LENGTHS) + " |",
              "|---|---|---|" + "---|" * len(NOTE_LENGTHS)]  # fmt: skip
    for row in result["cross"]:
        for name, entry in row.items():
            if not isinstance(entry, dict) or entry.get("criterion", "right - wrong") != "right - wrong":
                continue
            decision = "hops (shipped default)" if name == "default" else name.split(",")[0]
            cells = []
            for bucket in NOTE_LENGTHS:
                got = entry["per_note_length"].get(bucket)
                share = None if got is None else got["share"]
                cells.append("-" if got is None else f"{pct(share['right'])} / {pct(share['wrong'])} ({got['hops']})")
            lines.append(f"| {row['reported_on']} | {decision} | {entry['setting'].split('@')[1]} | "
                         + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "## Each half at every setting (share of sounding hops right / unknown / other / wrong)", "",
              "| half | setting | hops | right | unknown | other | wrong |", "|---|---|---|---|---|---|---|"]
    for half in result["halves"]:
        for key in next(iter(result["per_source"].values()))["scores"]:
            scores = merge_scores(e["scores"][key] for e in result["per_source"].values() if e["half"] == half)
            lines.append(f"| {half} | {key} | {scores['hops']} | "
                         + " | ".join(pct(scores["share"][k]) for k in OUTCOMES) + " |")  # fmt: skip
    lines += ["", "## Every source, every setting (share of sounding hops right / unknown / other / wrong)", "",
              "| source | notes | setting | right | unknown | other | wrong |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for library, entry in result["per_source"].items():
        for key, scores in entry["scores"].items():
            lines.append(f"| {library} | {entry['notes']} | {key} | "
                         + " | ".join(pct(scores["share"][k]) for k in OUTCOMES) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="corpus folder holding the sources of HALVES")
    parser.add_argument("--model", type=Path, default=Path("models/default.tflite"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = measure(args.data, args.model, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    command = (f"python -m instrument_ai.train.experiments.note_decision --data {args.data} --model {args.model} "
               f"--out {args.out} --seed {args.seed}")  # fmt: skip
    (args.out / "note-decision.json").write_text(json.dumps(result, indent=2))
    (args.out / "note-decision.md").write_text(markdown(result, command))
    print(markdown(result, command))


if __name__ == "__main__":
    main()

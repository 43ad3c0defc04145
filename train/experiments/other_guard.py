"""Measure the engine's pitched guard (`EngineSettings.pitched_guard`) by replay, without retraining: instrument
notes lost to `other` on held-out real sources, and false instrument events on held-out `other` sources, with the
guard off and at several levels.

    python -m instrument_ai.train.experiments.other_guard --data /work/corpus-v5 \\
        --holdout runs/levers/baselinerepeat --model models/default.tflite --out runs/other-guard

Two kinds of replay, each through the daemon's own `Classifier` (default settings, one decision per hop):

* ``--holdout``: every real and `other` fold of an existing 2-group holdout, played through the fold's own
  group model (which never heard it). The guard's level is chosen on one group's folds and reported on the other
  group's (and back), so no level is chosen on the folds it is reported on.
* ``--model``: a bundle on `UNHEARD` (the five real sources the shipped 0.4.0 never heard, and their `other`
  clips), at the level chosen on the holdout (both groups).

Each clip is streamed once; the engine's per-hop probabilities are kept with the hop's pitch salience
(`device.harmonicity.pitch_salience` on the same samples the engine measures) and every guard level is decided
from them by the engine's rule (`decision.guard_pitched`, then `decide_label`): the guard never changes the
smoothing, so this is exact (the tests check it against the engine). Writes other-guard.json and other-guard.md.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.decision import PITCHED_GUARD_RATIO, decide_label, floor_unpitched, guard_pitched
from instrument_ai.device.harmonicity import pitch_salience
from instrument_ai.device.labels import OTHER, UNKNOWN
from instrument_ai.device.settings import DEFAULT_SETTINGS, FALLBACK_MIN_CONFIDENCE

UNHEARD = ("karoryfer-meatbass", "dsmolken-double-bass", "karoryfer-bear-sax", "karoryfer-string-cyborgs",
           "playitright-cello")  # fmt: skip
"""Real sources added after 0.4.0 was trained (issue 23, item 1): 0.4.0 never heard them, nor their `other`
clips (body slaps, knocks)."""
LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95)
"""Guard levels (`EngineSettings.pitched_guard`) replayed, besides off."""
RATIOS = (0.25, 0.5, 1.0)
"""How close the best instrument must be to `other` (`decision.guard_pitched`'s ratio; the engine's is
`decision.PITCHED_GUARD_RATIO`) for the guard to act."""
Setting = tuple[float, float] | None
"""(level, ratio), or None: no guard."""
OUTCOMES = ("right", "unknown", "other", "wrong")
FLOORS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
"""Unpitched floors (`EngineSettings.unpitched_floor`) replayed, besides off."""
MAX_LOST_RISE = 0.01
"""The unpitched floor is the one that leaves fewest false events per minute on the tuning folds' `other` sources
while their real notes lost (`other` or `unknown`, mean over folds) rise by at most this share over off."""
MAX_FALSE_EVENT_RISE = 1.0
"""The level is the one that loses fewest instrument hops to `other` or `unknown` on the tuning folds while their
`other` sources get at most this many more false events per minute than without the guard."""


@dataclass
class Replay:
    """One clip streamed once: its truth, and for each sounding hop the engine's smoothed probabilities and the
    hop's pitch salience."""

    truth: str
    smoothed: np.ndarray
    salience: np.ndarray


def replay_clip(bundle: Any, audio: np.ndarray, truth: str) -> Replay:
    """Stream `audio` (at the bundle's rate) through the `Classifier` with the default settings (guard off)."""
    from instrument_ai.device.engine import Classifier

    engine = Classifier(bundle, settings=DEFAULT_SETTINGS.replace(pitched_guard=None))
    events = engine.process_hops(audio) + engine.flush()
    hop = engine.hop_samples
    padded = np.concatenate((audio, np.zeros(hop * len(events) - audio.size))) if hop * len(events) > audio.size \
        else audio  # fmt: skip
    history: deque[np.ndarray] = deque(maxlen=engine.smooth)
    smoothed, salience = [], []
    for k, event in enumerate(events):
        if event.probs is None:
            history.clear()
            continue
        history.append(np.asarray(event.probs, dtype=np.float64))
        smoothed.append(np.mean(history, axis=0))
        salience.append(pitch_salience(padded[k * hop : (k + 1) * hop], engine.model_rate))
    width = len(engine.labels)
    return Replay(truth, np.array(smoothed).reshape(-1, width), np.array(salience))


def decide(replay: Replay, labels: Sequence[str], rejection: Any, level: float | None,
           ratio: float = PITCHED_GUARD_RATIO, unpitched: float | None = None) -> list[str]:  # fmt: skip
    """The label of each sounding hop of `replay` with the guard at `level` and the unpitched floor at `unpitched`
    (the engine's rule)."""
    return [floor_unpitched(decide_label(guard_pitched(p, labels, float(s), level, ratio=ratio), labels,
                                         min_confidence=FALLBACK_MIN_CONFIDENCE, rejection=rejection),
                            labels, float(s), unpitched)
            for p, s in zip(replay.smoothed, replay.salience, strict=True)]  # fmt: skip


def fold_figures(replays: Sequence[Replay], labels: Sequence[str], rejection: Any, setting: Setting,
                 hop_seconds: float, unpitched: float | None = None) -> dict[str, Any]:  # fmt: skip
    """An instrument fold's shares of hops and of notes right, unknown, other, wrong (lost = other + unknown; a
    note counts as what most of its sounding hops are); an `other` fold's false events per minute and hops
    named an instrument (`corpus.kinds.other_figures`)."""
    from instrument_ai.train.corpus.kinds import other_figures

    level, ratio = setting if setting is not None else (None, PITCHED_GUARD_RATIO)
    decided = [decide(r, labels, rejection, level, ratio, unpitched) for r in replays]
    if replays and replays[0].truth == OTHER:
        hops = [label for d in decided for label in d]
        clip = np.array([i for i, d in enumerate(decided) for _ in d])
        return other_figures(hops, clip, hop_seconds)
    counts: Counter[str] = Counter()
    note_outcomes: Counter[str] = Counter()
    for replay, hops in zip(replays, decided, strict=True):
        outcome = [hop_outcome(h, replay.truth) for h in hops]
        counts.update(outcome)
        if outcome:  # the note is what the daemon shows on most of its sounding hops (ties: the first seen)
            note_outcomes[Counter(outcome).most_common(1)[0][0]] += 1
    n, notes = sum(counts.values()), sum(note_outcomes.values())
    return {"notes": notes, "hops": n,
            "share": {k: counts[k] / n if n else None for k in OUTCOMES},
            "note_share": {k: note_outcomes[k] / notes if notes else None for k in OUTCOMES},
            "other_hops": counts["other"] / n if n else None,
            "other_notes": note_outcomes["other"] / notes if notes else None,
            "lost_hops": (counts["other"] + counts["unknown"]) / n if n else None,
            "lost_notes": (note_outcomes["other"] + note_outcomes["unknown"]) / notes if notes else None}  # fmt: skip


def hop_outcome(label: str, truth: str) -> str:
    """right (the note's family), other, unknown (no family), or wrong (another family)."""
    return "right" if label == truth else "other" if label == OTHER else "unknown" if label == UNKNOWN else "wrong"


def sample(items: list[Any], most: int | None) -> list[Any]:
    """At most `most` of `items`, evenly spaced (the same ones every run)."""
    if most is None or len(items) <= most:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, most).round()]


def replay_libraries(data: Path, bundle: Any, libraries: Sequence[str], most: int | None) -> dict[str, list[Replay]]:
    """The instrument notes and the `other` clips of `libraries`, each at most `most`, replayed through `bundle`:
    {"instrument": [...], "other": [...]}."""
    from instrument_ai.train.experiments.evaluate import corpus, iter_corpus, note_audio

    info = corpus(data)
    instruments = [name for name, row in info.instruments.items() if row.library in set(libraries)]
    notes = list(iter_corpus(data, instruments=instruments, audio="none")) if instruments else []
    out: dict[str, list[Replay]] = {"instrument": [], "other": []}
    for group in out:
        wanted = {n.note_str for n in sample([n for n in notes if (n.family_str == OTHER) == (group == "other")
                                              and n.family_str in bundle.labels], most)}  # fmt: skip
        if not wanted:
            continue
        chosen = [n for n in iter_corpus(data, instruments=instruments, sample_rate=bundle.sample_rate)
                  if n.note_str in wanted]  # fmt: skip
        out[group] = [replay_clip(bundle, np.asarray(note_audio(n), dtype=np.float64), n.family_str) for n in chosen]
    return out


def open_model(path: Path) -> Any:
    """A .tflite bundle (as the daemon loads it), or a run folder's Keras model seen as one."""
    if path.suffix == ".tflite":
        from instrument_ai.device.model_files import load_bundle

        return load_bundle(path, 1)
    from instrument_ai.train.experiments.evaluate import load_predictor
    from instrument_ai.train.experiments.phrases import PredictorBundle

    return PredictorBundle(load_predictor(path))


def model_terms(bundle: Any) -> dict[str, Any]:
    """What deciding a replay needs of its model: labels, open-set rejection and hop (picklable)."""
    return {"labels": list(bundle.labels), "rejection": rejection_of(bundle),
            "hop": float(bundle.default_hop_seconds)}  # fmt: skip


def rejection_of(bundle: Any) -> Any:
    from instrument_ai.device.openset import rejection_from_metadata

    metadata = getattr(bundle, "metadata", None)
    return rejection_from_metadata(metadata if isinstance(metadata, dict) else None)


def replay_holdout(data: Path, holdout: Path, most: int | None) -> dict[str, dict[str, Any]]:
    """Every real and `other` fold of a holdout folder through its own group model: {fold: {group, kind, clips}}."""
    folds = [json.loads(p.read_text()) for p in sorted((holdout / "folds").glob("*/fold.json"))]
    out: dict[str, dict[str, Any]] = {}
    for group in sorted({f["trained_as"] for f in folds}):
        bundle = open_model(holdout / "groups" / group)
        for fold in (f for f in folds if f["trained_as"] == group and f.get("kind") in ("real", "other")):
            clips = replay_libraries(data, bundle, fold["libraries"], most)
            out[fold["name"]] = {"group": group, "kind": fold["kind"], "clips": clips, **model_terms(bundle)}
            print(fold["name"], {k: len(v) for k, v in clips.items()}, flush=True)
    return out


def level_table(folds: dict[str, dict[str, Any]], names: Sequence[str], settings: Sequence[Setting]
                ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """For each setting: every fold's figures, the mean and worst shares over real folds and the false events per
    minute over the `other` folds (their hops and events summed)."""
    return {setting_name(setting): _table_row(folds, names, setting, None) for setting in settings}


def floor_table(folds: dict[str, dict[str, Any]], names: Sequence[str], floors: Sequence[float]
                ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """`level_table` for the unpitched floor (`decision.floor_unpitched`), guard off: off, then each floor."""
    return {floor_name(f): _table_row(folds, names, None, f) for f in (None, *floors)}


def floor_name(floor: float | None) -> str:
    return "off" if floor is None else f"floor {floor:g}"


def _table_row(folds: dict[str, dict[str, Any]], names: Sequence[str], setting: Setting, unpitched: float | None
               ) -> dict[str, Any]:  # fmt: skip
    per_fold: dict[str, Any] = {}
    for name in names:
        entry = folds[name]
        per_fold[name] = {g: fold_figures(c, entry["labels"], entry["rejection"], setting, entry["hop"], unpitched)
                          for g, c in entry["clips"].items() if c}  # fmt: skip
    real = [f["instrument"] for n, f in per_fold.items() if folds[n]["kind"] == "real" and "instrument" in f]
    others = [f["other"] for f in per_fold.values() if "other" in f]
    minutes = sum(o["minutes"] for o in others)
    return {
        "level": None if setting is None else setting[0], "ratio": None if setting is None else setting[1],
        "unpitched_floor": unpitched,
        "folds": per_fold,
        "real_other_notes": _mean_worst([f["other_notes"] for f in real]),
        "real_other_hops": _mean_worst([f["other_hops"] for f in real]),
        "real_lost_notes": _mean_worst([f["lost_notes"] for f in real]),
        "real_lost_hops": _mean_worst([f["lost_hops"] for f in real]),
        "real_right_hops": _mean_worst([f["share"]["right"] for f in real]),
        "real_wrong_hops": _mean_worst([f["share"]["wrong"] for f in real]),
        "other_false_events_per_minute": sum(o["false_events"] for o in others) / minutes if minutes else None,
        "other_hops_named": (sum(o["hops_named_instrument"] * o["hops"] for o in others)
                             / max(1, sum(o["hops"] for o in others))) if others else None,
    }  # fmt: skip


def all_settings(levels: Sequence[float], ratios: Sequence[float]) -> list[Setting]:
    return [None, *((level, ratio) for ratio in ratios for level in levels)]


def setting_name(setting: Setting) -> str:
    return "off" if setting is None else f"{setting[0]:g} (ratio {setting[1]:g})"


def _mean_worst(values: Sequence[float | None]) -> dict[str, float] | None:
    got = [v for v in values if v is not None]
    return {"mean": float(np.mean(got)), "worst": float(np.max(got)), "best": float(np.min(got))} if got else None


def choose_setting(table: dict[str, dict[str, Any]]) -> Setting:
    """The setting that loses fewest real hops (mean over folds) with at most `MAX_FALSE_EVENT_RISE` more false
    events per minute on the `other` folds than off; None (off) when no setting does better than off."""
    off = table["off"]
    base = off["other_false_events_per_minute"] or 0.0
    best: Setting = None
    best_lost = (off["real_lost_hops"] or {}).get("mean", 1.0)
    for row in table.values():
        lost = (row["real_lost_hops"] or {}).get("mean")
        events = row["other_false_events_per_minute"] or 0.0
        if row["level"] is not None and lost is not None and events <= base + MAX_FALSE_EVENT_RISE \
                and lost < best_lost - 1e-9:  # fmt: skip
            best, best_lost = (row["level"], row["ratio"]), lost
    return best


def choose_floor(table: dict[str, dict[str, Any]]) -> float | None:
    """The unpitched floor with the fewest false events per minute on the `other` folds whose real notes lost rise
    by at most `MAX_LOST_RISE` over off (ties: the lowest floor); None (off) when none removes an event."""
    off = table["off"]
    allowed = ((off["real_lost_notes"] or {}).get("mean") or 0.0) + MAX_LOST_RISE
    best, best_events = None, off["other_false_events_per_minute"] or 0.0
    for row in table.values():
        lost, events = (row["real_lost_notes"] or {}).get("mean"), row["other_false_events_per_minute"]
        if row["unpitched_floor"] is not None and lost is not None and events is not None and lost <= allowed \
                and events < best_events - 1e-9:  # fmt: skip
            best, best_events = row["unpitched_floor"], events
    return best


def cross_floors(folds: dict[str, dict[str, Any]], groups: dict[str, list[str]], floors: Sequence[float]
                 ) -> dict[str, Any]:  # fmt: skip
    """The unpitched floor chosen on one group's folds and reported on the other's (and back), every floor per
    group, and the floor chosen on both groups together."""
    tables = {g: floor_table(folds, names, floors) for g, names in groups.items()}
    cross = []
    for tune, report in zip(sorted(groups), reversed(sorted(groups)), strict=True):
        chosen = choose_floor(tables[tune])
        cross.append({"chosen_on": tune, "reported_on": report, "setting": floor_name(chosen),
                      "off": _summary(tables[report]["off"]),
                      "guarded": _summary(tables[report][floor_name(chosen)])})  # fmt: skip
    on_all = choose_floor(floor_table(folds, sorted(folds), floors))
    return {"per_group": tables, "cross": cross, "chosen_on_all_groups": floor_name(on_all),
            "chosen_floor": on_all, "max_lost_rise": MAX_LOST_RISE}  # fmt: skip


def measure(data: Path, holdout: Path | None, model: Path | None, *, most: int | None, cache: Path | None = None,
            levels: Sequence[float] = LEVELS, ratios: Sequence[float] = RATIOS,
            floors: Sequence[float] = ()) -> dict[str, Any]:  # fmt: skip
    """The cross-checked holdout replay (tuned on one group, reported on the other) and the unheard-source replay.

    `cache`: a pickle of the replays (written after streaming, read instead of streaming when it exists for the
    same arguments), so the settings can be re-decided without streaming again."""
    settings = all_settings(levels, ratios)
    result: dict[str, Any] = {"data": str(data), "max_clips": most, "settings": [setting_name(v) for v in settings],
                              "max_false_event_rise": MAX_FALSE_EVENT_RISE}  # fmt: skip
    replays = _load_replays(cache, (str(data), str(holdout), str(model), most))
    if replays is None:
        replays = {"holdout": replay_holdout(data, holdout, most) if holdout is not None else None,
                   "unheard": replay_unheard(data, model, most) if model is not None else None}  # fmt: skip
        _save_replays(cache, (str(data), str(holdout), str(model), most), replays)
    folds = replays["holdout"]
    if folds is not None:
        groups = sorted({f["group"] for f in folds.values()})
        result["holdout"] = str(holdout)
        result["groups"] = {g: sorted(n for n, f in folds.items() if f["group"] == g) for g in groups}
        tables = {g: level_table(folds, result["groups"][g], settings) for g in groups}
        result["per_group"] = tables
        result["cross"] = []
        for tune, report in zip(groups, reversed(groups), strict=True):
            chosen = choose_setting(tables[tune])
            result["cross"].append({"chosen_on": tune, "reported_on": report, "setting": setting_name(chosen),
                                    "off": _summary(tables[report]["off"]),
                                    "guarded": _summary(tables[report][setting_name(chosen)])})  # fmt: skip
        result["chosen_on_all_groups"] = setting_name(choose_setting(level_table(folds, sorted(folds), settings)))
        if floors:
            result["floors"] = cross_floors(folds, result["groups"], floors)
    if replays["unheard"] is not None:
        result["model"] = str(model)
        result["unheard"] = level_table(replays["unheard"], list(UNHEARD), settings)
        if floors:
            result["floors_unheard"] = floor_table(replays["unheard"], list(UNHEARD), floors)
    return result


def replay_unheard(data: Path, model: Path, most: int | None) -> dict[str, dict[str, Any]]:
    """`UNHEARD`'s notes and `other` clips through a bundle that never heard them."""
    bundle = open_model(model)
    return {name: {"kind": "real", "clips": replay_libraries(data, bundle, [name], most), **model_terms(bundle)}
            for name in UNHEARD}  # fmt: skip


def _load_replays(cache: Path | None, key: tuple[Any, ...]) -> dict[str, Any] | None:
    import pickle

    if cache is None or not cache.is_file():
        return None
    with cache.open("rb") as handle:
        saved = pickle.load(handle)  # noqa: S301 - our own file, written by _save_replays
    return saved["replays"] if saved.get("key") == key else None


def _save_replays(cache: Path | None, key: tuple[Any, ...], replays: dict[str, Any]) -> None:
    import pickle

    if cache is None:
        return
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    with partial.open("wb") as handle:
        pickle.dump({"key": key, "replays": replays}, handle)
    partial.replace(cache)


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "folds"}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _row(label: str, row: dict[str, Any]) -> str:
    def mw(key: str) -> str:
        got = row[key] or {}
        return f"{_pct(got.get('mean'))} / {_pct(got.get('worst'))}"

    events = row["other_false_events_per_minute"]
    return (f"| {label} | {mw('real_other_notes')} | {mw('real_other_hops')} | {mw('real_lost_notes')} | "
            f"{_pct((row['real_right_hops'] or {}).get('mean'))} | {_pct((row['real_wrong_hops'] or {}).get('mean'))} "
            f"| {'-' if events is None else f'{events:.1f}'} | {_pct(row['other_hops_named'])} |")


HEADER = ["| | real notes called `other` (mean / worst fold) | real hops `other` (mean / worst) | real notes lost: "
          "`other` or `unknown` (mean / worst) | real hops right | real hops wrong | `other` sources: false events/min "
          "| `other` sources: hops named an instrument |", "|---|---|---|---|---|---|---|---|"]


def markdown(result: dict[str, Any], command: str) -> str:
    """The report: the cross-checked holdout table, the unheard sources at every setting, then every fold."""
    lines = ["# The pitched guard: `other` may not swallow a pitched note (issue 23, item 4)", "",
             f"Corpus `{result['data']}`, at most {result['max_clips']} notes and {result['max_clips']} `other` "
             "clips per source (evenly spaced). Reproduce with:", "", "```", command, "```", ""]  # fmt: skip
    if "cross" in result:
        lines += _cross_lines(f"Holdout `{result['holdout']}`: each fold through its own group model. Level chosen on "
                              f"one group (fewest real hops lost, at most {result['max_false_event_rise']:g} more "
                              "false event per minute on its `other` folds), reported on the other group:",
                              result["cross"], f"Setting chosen on both groups together: "
                              f"{result['chosen_on_all_groups']}.")  # fmt: skip
        for group, table in result["per_group"].items():
            lines += [f"## Group `{group}` at every setting", "", *HEADER]
            lines += [_row(name, row) for name, row in table.items()]
            lines.append("")
    if "unheard" in result:
        lines += [f"## `{result['model']}` on the five sources it never heard, at every setting", "", *HEADER]
        lines += [_row(name, row) for name, row in result["unheard"].items()]
        lines.append("")
    lines += floor_markdown(result)
    lines += [f"## Every fold at the engine's ratio {PITCHED_GUARD_RATIO:g} (notes called `other` / hops `other`; "
              "`other` clips: false events/min)", ""]
    for title, table in ([("holdout " + g, t) for g, t in result.get("per_group", {}).items()]
                         + ([("unheard", result["unheard"])] if "unheard" in result else [])):  # fmt: skip
        names = list(next(iter(table.values()))["folds"])
        shown = {k: v for k, v in table.items() if v["ratio"] in (None, PITCHED_GUARD_RATIO)}
        lines += [f"### {title}", "", "| fold | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
        for name in names:
            cells = []
            for row in shown.values():
                figures = row["folds"][name]
                cell = []
                if "instrument" in figures:
                    got = figures["instrument"]
                    cell.append(f"{_pct(got['other_notes'])} / {_pct(got['other_hops'])}")
                if "other" in figures:
                    cell.append(f"{figures['other']['false_events_per_minute']:.1f}/min")
                cells.append(", ".join(cell))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _cross_lines(intro: str, cross: list[dict[str, Any]], chosen: str) -> list[str]:
    """A cross-checked table: for each order of the groups, off and the setting chosen on the other group."""
    lines = [intro, "", "| chosen on -> reported on | setting | " + HEADER[0][4:], "|---" + HEADER[1]]
    for row in cross:
        for name in ("off", "guarded"):
            setting = "off" if name == "off" else row["setting"]
            lines.append(_row(f"{row['chosen_on']} -> {row['reported_on']} | {setting}", row[name]))
    return [*lines, "", chosen, ""]


def floor_markdown(result: dict[str, Any]) -> list[str]:
    """The unpitched floor's sections: cross-checked on the holdout groups, then on the unheard sources."""
    lines: list[str] = []
    if "floors" in result:
        floors = result["floors"]
        lines += ["## The unpitched floor: a hop with no stable period is not named an instrument", ""]
        lines += _cross_lines("Chosen on one group (fewest false events per minute on its `other` folds, its real "
                              f"notes lost rising by at most {100 * floors['max_lost_rise']:g} point), reported on "
                              "the other group:", floors["cross"],
                              f"Floor chosen on both groups together: {floors['chosen_on_all_groups']}.")  # fmt: skip
        for group, table in floors["per_group"].items():
            lines += [f"### Group `{group}` at every floor", "", *HEADER]
            lines += [_row(name, row) for name, row in table.items()]
            lines.append("")
            other_folds = [n for n, f in next(iter(table.values()))["folds"].items() if "other" in f]
            lines += ["| `other` fold: false events/min | " + " | ".join(table) + " |", "|---|" + "---|" * len(table)]
            lines += [f"| {n} | " + " | ".join(f"{row['folds'][n]['other']['false_events_per_minute']:.1f}"
                                                for row in table.values()) + " |" for n in other_folds]  # fmt: skip
            lines.append("")
    if "floors_unheard" in result:
        lines += [f"### `{result['model']}` on the five sources it never heard, at every floor", "", *HEADER]
        lines += [_row(name, row) for name, row in result["floors_unheard"].items()]
        lines.append("")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the corpus the holdout and the sources come from")
    parser.add_argument("--holdout", type=Path, default=None, help="a 2-group holdout folder (folds/, groups/)")
    parser.add_argument("--model", type=Path, default=None, help="a bundle to replay on the sources it never heard")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-clips", type=int, default=60, help="notes (and `other` clips) per source, at most")
    parser.add_argument("--cache", type=Path, default=None, help="keep (or reuse) the streamed replays here")
    parser.add_argument("--unpitched-floors", default=None,
                        help=f"comma-separated unpitched floors to replay too (e.g. {','.join(map(str, FLOORS))})")
    args = parser.parse_args(argv)
    try:
        floors = [float(v) for v in args.unpitched_floors.split(",")] if args.unpitched_floors else []
    except ValueError:
        parser.error(f"--unpitched-floors: not a list of numbers: {args.unpitched_floors!r}")
    if any(not 0.0 <= f <= 1.0 for f in floors):
        parser.error("--unpitched-floors: each floor must be in [0, 1]")
    if args.holdout is None and args.model is None:
        parser.error("give --holdout, --model or both")
    result = measure(args.data, args.holdout, args.model, most=args.max_clips, cache=args.cache, floors=floors)
    args.out.mkdir(parents=True, exist_ok=True)
    command = ("python -m instrument_ai.train.experiments.other_guard --data " + str(args.data)
               + (f" --holdout {args.holdout}" if args.holdout else "")
               + (f" --model {args.model}" if args.model else "")
               + f" --out {args.out} --max-clips {args.max_clips}"
               + (f" --cache {args.cache}" if args.cache else "")
               + (f" --unpitched-floors {args.unpitched_floors}" if floors else ""))  # fmt: skip
    (args.out / "other-guard.json").write_text(json.dumps(result, indent=2))
    (args.out / "other-guard.md").write_text(markdown(result, command))
    print(markdown(result, command))


if __name__ == "__main__":
    main()

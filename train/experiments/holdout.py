"""Leave-one-library-out: train on every independent library but one, test on that one.

Recognising instruments from a sample library never heard in training is what
the product must do, so the mean note accuracy over these folds is the
project's headline figure. Libraries that share samples are one lineage and
are held out together (MuseScore General grew out of FluidR3), otherwise the
"unseen" library would leak into training.

Each fold's run and result live in `<out>/folds/<name>/`; a fold whose
`fold.json` matches the current settings is not trained again, so an
interrupted protocol resumes where it stopped. The trainer is a parameter
(`TrainFn`), so tests can run the protocol with a tiny stand-in.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from instrument_ai.device.labels import FAMILIES
from instrument_ai.train.corpus.kinds import declared_kinds, kind_means
from instrument_ai.train.experiments.evaluate import EvaluationError, corpus, evaluate, iter_corpus

INDEPENDENT_LIBRARIES = (
    "TimGM6mb", "GeneralUserGS", "JCLive", "Aspirin", "SoundBlasterOld", "32MbGMStereo", "90sRetroVintage",
    "Airfont380", "AlexsGM", "FluidR3+MuseScoreGeneral",
)  # fmt: skip
"""The folds of the default corpus, in the order they are run."""
SHARED_LINEAGES = {"FluidR3+MuseScoreGeneral": ("fluidr3", "musescore")}
"""Libraries that share samples: any library whose normalised name starts with one of these is one fold."""
TRAIN_ONLY = ("WAF-small",)
"""Libraries too small to hold out alone (36 single-instrument files): always in training unless asked for."""
SETTINGS_KEYS = ("preset", "epochs", "seed", "data", "overrides", "groups", "train_kinds", "max_test_notes")


class HoldoutError(EvaluationError):
    """The data or options cannot support the protocol; one line for the user."""


@dataclass(frozen=True)
class FoldTraining:
    """What one fold's training is asked for: the keywords every `TrainFn` takes (defined here once)."""

    holdout: list[str]
    """Libraries (and lineages) kept out of training: the fold's test set."""
    preset: str
    epochs: int | None
    seed: int
    jobs: int = 0
    """Feature-extraction processes (0: one per CPU); not a result-changing setting."""
    overrides: dict[str, Any] | None = None
    """TrainConfig fields set for every fold (augmentation, weights, time budget ...)."""


class TrainFn(Protocol):
    """Train on `data` without the `holdout` libraries (nor their lineage); write (or resume) a run folder at `out`.

    The keywords are the fields of `FoldTraining`.
    """

    def __call__(self, data: Path, out: Path, **fold: Any) -> Path: ...


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def fold_name(library: str, lineage: str | None = None) -> str:
    """The fold an instrument's library belongs to: a shared lineage's name, else the canonical library name."""
    for fold, prefixes in SHARED_LINEAGES.items():
        if any(_norm(library).startswith(p) or _norm(lineage or "").startswith(p) for p in prefixes):
            return fold
    for known in INDEPENDENT_LIBRARIES:
        if _norm(known) == _norm(library) or _norm(library).startswith(_norm(known)):
            return known
    if lineage and lineage != library:
        return fold_name(lineage)
    return library


@dataclass
class Fold:
    name: str
    libraries: list[str]
    instruments: list[str]
    kind: str = "soundfont"  # train/corpus/kinds.py: soundfont | real | other | synth


def _fold_kinds(data: Path, info: Any, members: dict[str, list[str]], libraries: dict[str, set[str]]) -> dict[str, str]:
    """Each fold's kind: a library's declared `kind`, else derived from its notes (train/sources.source_kind)."""
    from instrument_ai.train.corpus.kinds import source_kind

    declared = declared_kinds(data)
    fams: dict[str, list[str]] = defaultdict(list)
    sounding: dict[str, list[float | None]] = defaultdict(list)
    for note in iter_corpus(data, audio="none"):
        fams[note.instrument_str].append(note.family_str)
        sounding[note.instrument_str].append(getattr(note, "sounding_seconds", None))
    kinds = {}
    for name, instruments in members.items():
        field = next((declared[lib] for lib in sorted(libraries[name]) if lib in declared), None)
        try:
            kinds[name] = source_kind([f for i in instruments for f in fams[i]],
                                      [x for i in instruments for x in sounding[i]], field)  # fmt: skip
        except ValueError as exc:
            raise HoldoutError(f"{data}: {name}: {exc}") from None
    return kinds


def folds_of(data: Path, only: Sequence[str] | None = None) -> tuple[list[Fold], dict[str, str]]:
    """The folds present in a corpus (from instruments.json) and instrument -> family.

    Every library present is a fold (libraries of one lineage together),
    except `TRAIN_ONLY` ones, which stay in every fold's training set unless
    `only` names them. `only` picks folds by fold or library name (case and
    punctuation ignored).
    """
    info = corpus(data)
    if not info.instruments:
        raise HoldoutError(f"{data}: no instruments.json, so the sample library of each instrument is unknown")
    families: dict[str, str] = {}
    for note in iter_corpus(data, audio="none"):
        families.setdefault(note.instrument_str, note.family_str)
    if not families:
        raise HoldoutError(f"{data}: no notes found (expected NSynth examples.json + audio/)")
    members: dict[str, list[str]] = defaultdict(list)
    libraries: dict[str, set[str]] = defaultdict(set)
    for instrument in sorted(families):
        row = info.instruments.get(instrument)
        library = row.library if row else "nsynth"
        name = fold_name(library, row.lineage if row else None)
        members[name].append(instrument)
        libraries[name].add(library)
    order = {n: i for i, n in enumerate(INDEPENDENT_LIBRARIES)}
    kinds = _fold_kinds(data, info, members, libraries)
    folds = [Fold(n, sorted(libraries[n]), members[n], kinds[n])
             for n in sorted(members, key=lambda n: (order.get(n, 99), n))]  # fmt: skip
    if only:
        wanted = {_norm(x) for x in only}
        chosen = [f for f in folds if _norm(f.name) in wanted or wanted & {_norm(lib) for lib in f.libraries}]
        unknown = wanted - {_norm(f.name) for f in chosen} - {_norm(lib) for f in chosen for lib in f.libraries}
        if unknown:
            have = ", ".join(f.name for f in folds)
            raise HoldoutError(f"no library named {', '.join(sorted(unknown))} in {data} (have {have})")
        folds = chosen
    else:
        folds = [f for f in folds if f.name not in TRAIN_ONLY]
    if len(members) < 2:
        raise HoldoutError(f"{data}: holdout needs at least two independent libraries, found {len(members)}")
    return folds, families


@dataclass
class HoldoutConfig:
    data: Path
    out: Path
    preset: str = "edge"
    epochs: int | None = None
    seed: int = 0
    libraries: list[str] = field(default_factory=list)
    jobs: int = 0  # feature-extraction processes for the trainer (0: one per CPU); not a result-changing setting
    overrides: dict[str, Any] = field(default_factory=dict)
    """TrainConfig fields that differ from the preset's defaults (e.g. augment_copies), the same for every fold."""
    groups: int | None = None
    """Train once per group of held-out sources (K groups, every kind spread over them) instead of once per
    source: each source is still tested only by a model that never heard it, at a K-th of the cost."""
    train_kinds: list[str] = field(default_factory=list)
    """Train only on sources of these kinds (soundfont, real, other, synth); empty: every kind. The 0.3.0
    recipe is `["soundfont"]`."""
    max_test_notes: int | None = None
    """Test each fold on at most this many of its notes, evenly spaced in corpus order (the same notes for every
    recipe): a cheaper screen (issue 23's lever table); None: every note."""

    def settings(self) -> dict[str, Any]:
        return {"preset": self.preset, "epochs": self.epochs, "seed": self.seed, "data": str(Path(self.data).resolve()),
                "overrides": dict(sorted(self.overrides.items())), "groups": self.groups,
                "train_kinds": sorted(self.train_kinds), "max_test_notes": self.max_test_notes}  # fmt: skip


def training_units(folds: list[Fold], groups: int | None) -> list[list[Fold]]:
    """The trainings a protocol needs: one per fold, or `groups` groups of folds with every kind spread evenly.

    Within each kind the folds go round-robin, largest first, so each group holds a share of the SoundFont,
    real and `other` sources and no group's training set loses a whole kind.
    """
    if not groups or groups >= len(folds):
        return [[f] for f in folds]
    units: list[list[Fold]] = [[] for _ in range(groups)]
    turn = 0
    for kind in sorted({f.kind for f in folds}):
        for fold in sorted((f for f in folds if f.kind == kind), key=lambda f: (-len(f.instruments), f.name)):
            units[turn % groups].append(fold)
            turn += 1
    return [u for u in units if u]


def _excluded_libraries(data: Path, folds: list[Fold], train_kinds: list[str]) -> list[str]:
    """Libraries whose kind is not among `train_kinds` (by their own declared kind, else their fold's): a
    SoundFont fold's drum kit (`other`) is left out of a SoundFont-only recipe too."""
    if not train_kinds:
        return []
    from instrument_ai.train.corpus.kinds import KIND_OF_FIELD

    declared = declared_kinds(data)
    return sorted({lib for f in folds for lib in f.libraries
                   if KIND_OF_FIELD.get(declared.get(lib, ""), f.kind) not in train_kinds})  # fmt: skip


def run_holdout(
    cfg: HoldoutConfig, train_fn: TrainFn | None = None, progress: Callable[[str], None] = lambda s: None
) -> dict[str, Any]:
    """Run (or resume) every fold, then write holdout.json, holdout.md and holdout.png into cfg.out."""
    cfg.data, cfg.out = Path(cfg.data), Path(cfg.out)
    if not cfg.data.is_dir():
        raise HoldoutError(f"{cfg.data}: no such data folder")
    train_fn = train_fn or train_with_trainer
    all_folds, families = folds_of(cfg.data)
    folds = folds_of(cfg.data, cfg.libraries)[0] if cfg.libraries else all_folds
    settings = cfg.settings()
    _claim_out_dir(cfg.out, settings)
    excluded = _excluded_libraries(cfg.data, all_folds, cfg.train_kinds)
    for unit in training_units(folds, cfg.groups):
        todo = [f for f in unit if not (cfg.out / "folds" / f.name / "fold.json").is_file()]
        for fold in unit:
            if fold not in todo:
                progress(f"{fold.name}: done before, skipped")
        if not todo:
            continue
        held_libraries = sorted({lib for f in unit for lib in f.libraries})
        unit_name = unit[0].name if len(unit) == 1 else f"group-{_norm('-'.join(f.name for f in unit))[:40]}"
        run_dir_of = (cfg.out / "folds" / unit[0].name / "run") if len(unit) == 1 else (cfg.out / "groups" / unit_name)
        progress(f"{unit_name}: training without {', '.join(held_libraries)}, then testing on its "
                 f"{sum(len(f.instruments) for f in unit)} instruments")  # fmt: skip
        started = time.monotonic()
        run_dir = train_fn(cfg.data, run_dir_of, holdout=sorted({*held_libraries, *excluded}), preset=cfg.preset,
                           epochs=cfg.epochs, seed=cfg.seed, jobs=cfg.jobs, overrides=cfg.overrides)  # fmt: skip
        train_seconds = time.monotonic() - started
        used = _run_instruments(run_dir)
        if used & {i for f in unit for i in f.instruments}:
            raise HoldoutError(f"{unit_name}: the run at {run_dir} trained on held-out instruments; "
                               "delete it and rerun")
        for fold in todo:
            _evaluate_fold(cfg, fold, run_dir, used, families, settings, train_seconds, unit_name, progress)
    order = {f.name: i for i, f in enumerate(all_folds)}
    finished = [json.loads(p.read_text()) for p in (cfg.out / "folds").glob("*/fold.json")]
    finished.sort(key=lambda f: (order.get(f["name"], len(order)), f["name"]))
    return write_summary(finished, cfg.out, settings)


def _evaluate_fold(cfg: HoldoutConfig, fold: Fold, run_dir: Path, used: set[str], families: dict[str, str],
                   settings: dict[str, Any], train_seconds: float, unit_name: str,
                   progress: Callable[[str], None]) -> None:  # fmt: skip
    """Test one held-out source on the run trained without it, and write its fold.json (the resume marker)."""
    fold_dir = cfg.out / "folds" / fold.name
    done = fold_dir / "fold.json"
    trained = {families[i] for i in used if i in families}
    held_families = sorted({families[i] for i in fold.instruments})
    note = None
    if len(held_families) == 1 and fold.kind != "other":
        note = f"{fold.name}: one family only ({held_families[0]}): its note accuracy is that family's recall"
        progress(note)
    result = evaluate(run_dir, cfg.data, instruments=fold.instruments, out_dir=fold_dir / "eval",
                      title=f"Held out: {fold.name}",
                      notes_only=screen_sample(cfg.data, fold.instruments, cfg.max_test_notes))  # fmt: skip
    entry = {
        "name": fold.name,
        "libraries": fold.libraries,
        "settings": settings,
        "n_train_instruments": len(used),
        "n_test_instruments": len(fold.instruments),
        "n_notes": result["n_notes"],
        "note_accuracy": result["note_accuracy"],
        "window_accuracy": result["window_accuracy"],
        "macro_f1": result["macro_f1"],
        "reversed_note_accuracy": result.get("reversed", {}).get("note_accuracy"),
        "per_family_recall": {k: v["recall"] for k, v in result["per_family"].items() if v["support"]},
        "families_not_trained": sorted({families[i] for i in fold.instruments} - trained),
        "unknown_labels": result["unknown_labels"],
        "train_seconds": round(train_seconds, 1),
        "trained_as": unit_name,
        "run_dir": str(run_dir),
        "kind": fold.kind,
        "per_length": {k: v["note_accuracy"] for k, v in result.get("per_length", {}).items()},
        "per_length_notes": {k: v["n_notes"] for k, v in result.get("per_length", {}).items()},
        "other": result.get("other"),
        "note": note,
        "open_set": json.loads((Path(run_dir) / "metrics.json").read_text()).get("open_set", {}).get("bundle")
        if (Path(run_dir) / "metrics.json").is_file()
        else None,
    }
    entry.update(fold_note_figures(cfg, fold, run_dir, result))
    if fold.kind == "other":  # no instrument to name: its figures are the `other` ones
        entry["note_accuracy"] = entry["window_accuracy"] = entry["macro_f1"] = None
    _write_json(done, entry)
    _release_fold_memory()
    if entry["note_accuracy"] is not None:
        progress(f"{fold.name}: note accuracy {100 * entry['note_accuracy']:.1f}%")
    elif entry["other"]:
        progress(f"{fold.name}: {100 * entry['other']['hops_named_instrument']:.1f}% of hops named an instrument, "
                 f"{entry['other']['false_events_per_minute']:.1f} false events per minute")  # fmt: skip


def screen_sample(data: Path, instruments: Sequence[str], most: int | None) -> list[str] | None:
    """At most `most` note_strs of these instruments, evenly spaced in corpus order (every instrument and pitch
    range keeps its share); None (every note) when `most` is None or the fold is small enough."""
    if most is None:
        return None
    names = [note.note_str for note in iter_corpus(data, instruments=instruments, audio="none")]
    if len(names) <= most:
        return None
    return [names[i] for i in np.unique(np.linspace(0, len(names) - 1, most).round().astype(int))]


def read_holdout_settings(folder: Path) -> dict[str, Any]:
    """A holdout folder's holdout-settings.json, with the defaults of folders written before a field existed.

    The one reader of that file: resuming here, and `experiment ensemble` / `ensemble-weight` joining holdouts,
    must agree on what an old folder's missing field means.
    """
    path = Path(folder) / "holdout-settings.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HoldoutError(f"{folder}: not an `experiment holdout` folder (no holdout-settings.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HoldoutError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(settings, dict):
        raise HoldoutError(f"{path}: not a JSON object")
    settings.setdefault("overrides", {})  # folders written before overrides existed used none
    settings.setdefault("groups", None)
    settings.setdefault("train_kinds", [])
    settings.setdefault("max_test_notes", None)
    return settings


def _claim_out_dir(out: Path, settings: dict[str, Any]) -> None:
    """Record the protocol's settings in `out`, or refuse a folder that holds folds made with other settings.

    Resuming is only safe with the same settings: a finished fold of another
    preset or epoch count must never be averaged into this table.
    """
    path = out / "holdout-settings.json"
    if path.is_file():
        previous = read_holdout_settings(out)
        changed = [k for k in SETTINGS_KEYS if previous.get(k) != settings[k]]
        if changed:
            was = ", ".join(f"{k}={previous.get(k)}" for k in changed)
            raise HoldoutError(f"{out}: holds a holdout run with other settings ({was}); choose another --out")
        return
    _write_json(path, settings)


def write_summary(folds: list[dict[str, Any]], out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """holdout.json (every fold + means), holdout.md (the table) and holdout.png."""
    from instrument_ai.train.experiments import report

    instrument_folds = [f for f in folds if f.get("note_accuracy") is not None]
    notes = [f["note_accuracy"] for f in instrument_folds]
    windows = [f["window_accuracy"] for f in instrument_folds]
    family_recall: dict[str, list[float]] = defaultdict(list)
    for f in folds:
        for family, value in f["per_family_recall"].items():
            family_recall[family].append(value)
    families = [f for f in FAMILIES if f in family_recall]
    summary = {
        "settings": settings,
        "mean_note_accuracy": float(np.mean(notes)) if notes else None,
        "mean_window_accuracy": float(np.mean(windows)) if windows else None,
        "mean_macro_f1": float(np.mean([f["macro_f1"] for f in instrument_folds])) if instrument_folds else None,
        "by_kind": kind_means(folds),
        "mean_per_length": {
            k: float(np.mean(v))
            for k in ("short", "medium", "long")
            if (v := [f["per_length"][k] for f in instrument_folds if k in f.get("per_length", {})])
        },
        "mean_family_recall": {k: float(np.mean(family_recall[k])) for k in families},
        "folds": folds,
    }
    summary.update(note_summary(folds))
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "holdout.json", summary)
    figures = ""
    if instrument_folds and families:  # only `other` folds: no accuracy to plot
        png = report.plot_holdout(
            instrument_folds, out / "holdout.png", f"Leave-one-source-out, {settings['preset']} preset"
        )
        recalls = {f["name"]: f["per_family_recall"] for f in instrument_folds}
        title = "Recall per family on the held-out library"
        recall_png = report.plot_recall_table(recalls, families, out / "holdout_recall.png", title)
        figures = (
            report.image_link(png.name, out, "holdout")
            + "\n\n"
            + report.image_link(recall_png.name, out, "recall per family")
        )
    pct = report.pct
    header = ["held-out library", "notes", "note acc.", "window acc.", "macro-F1", *families]
    header.insert(1, "kind")
    rows = [
        [f["name"], f.get("kind", "soundfont"), f["n_notes"], pct(f["note_accuracy"]), pct(f["window_accuracy"]),
         pct(f["macro_f1"]), *(pct(f["per_family_recall"].get(k)) for k in families)]
        for f in instrument_folds
    ]  # fmt: skip
    rows.append(["**mean**", "", sum(f["n_notes"] for f in folds), f"**{pct(summary['mean_note_accuracy'])}**",
                 pct(summary["mean_window_accuracy"]), pct(summary["mean_macro_f1"]),
                 *(pct(summary["mean_family_recall"][k]) for k in families)])  # fmt: skip
    untrained = [f"{f['name']}: {', '.join(f['families_not_trained'])}" for f in folds if f["families_not_trained"]]
    body = (
        f"Preset `{settings['preset']}`, epochs {settings['epochs'] or 'preset default'}, seed {settings['seed']}"
        + "".join(f", {k} {json.dumps(v)}" for k, v in settings.get("overrides", {}).items())
        + f"; data `{settings['data']}`. Per-family columns are recall on the held-out library. "
        f"The headline figure is the mean note accuracy: **{pct(summary['mean_note_accuracy'])}**."
    )
    sections = [("Protocol", body), ("Folds", report.markdown_table(header, rows))]
    if figures:
        sections.append(("Figures", figures))
    by_kind = summary["by_kind"]
    sf, real, synth, oth = (by_kind[k] for k in ("soundfont", "real", "synth", "other"))
    kind_lines = [
        f"- SoundFont/WebAudioFont folds ({sf['folds']}): {pct(sf['mean_note_accuracy'])}",
        f"- real-recording folds ({real['folds']}): {pct(real['mean_note_accuracy'])}",
        f"- synthesiser folds ({synth['folds']}): {pct(synth['mean_note_accuracy'])}",
        f"- `other` folds ({oth['folds']}): {pct(oth['hops_named_instrument'])} of hops named "
        f"an instrument, {oth['false_events_per_minute'] or 0:.1f} false instrument events per minute",
        "- per note length (mean over instrument folds): "
        + ", ".join(f"{k} {pct(v)}" for k, v in summary["mean_per_length"].items()),
    ]
    sections.insert(1, ("By kind of source", "\n".join(kind_lines)))
    others = [f for f in folds if f.get("kind") == "other" and f.get("other")]
    if others:
        lines = [
            f"- {f['name']}: {pct(f['other']['hops_named_instrument'])} of {f['other']['hops']} hops named an "
            f"instrument, {f['other']['false_events_per_minute']:.1f} false events per minute"
            for f in others
        ]
        sections.append(("Held-out other sources", "\n".join(lines)))
    notes_lines = [f["note"] for f in folds if f.get("note")]
    if notes_lines:
        sections.append(("Notes", "\n".join(f"- {n}" for n in notes_lines)))
    if untrained:
        sections.append(("Families with no training instrument in a fold", "\n".join(f"- {u}" for u in untrained)))
    sections += note_sections(summary)
    report.write_markdown(out / "holdout.md", "Leave-one-library-out", sections)
    return summary


# -- issue 23: phrases through the daemon, notes lost to `other`, four note lengths -------------------------------


def fold_note_figures(cfg: HoldoutConfig, fold: Fold, run_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """A fold's issue-23 figures: accuracy by the four note lengths, instrument notes lost to ``other`` or
    rejected (from `evaluate`), and - for a real-recording fold - its notes played as phrases through the
    daemon's `Classifier` in both decision modes (`phrases.fold_phrase_scores`)."""
    from instrument_ai.train.experiments.phrases import fold_phrase_scores

    lengths = result.get("per_note_length", {})
    out: dict[str, Any] = {
        "per_note_length": {k: v["note_accuracy"] for k, v in lengths.items()},
        "per_note_length_notes": {k: v["n_notes"] for k, v in lengths.items()},
        "lost": result.get("lost"),
    }
    if fold.kind == "real":
        out["phrases"] = fold_phrase_scores(cfg.data, fold.instruments, run_dir, seed=cfg.seed)
    return out


def note_summary(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and totals of the issue-23 figures over the folds (phrases summed over the real folds)."""
    from instrument_ai.train.corpus.kinds import NOTE_LENGTHS
    from instrument_ai.train.experiments.phrases import merge_scores

    instrument_folds = [f for f in folds if f.get("note_accuracy") is not None]
    real = [f for f in folds if f.get("kind") == "real"]
    played = [f["phrases"] for f in real if isinstance(f.get("phrases"), dict) and "scores" in f["phrases"]]
    modes = sorted({m for p in played for m in p["scores"]})
    lost = [f["lost"]["notes"]["lost"] for f in real if f.get("lost") and f["lost"]["notes"]["lost"] is not None]
    return {
        "mean_per_note_length": {
            k: float(np.mean(v))
            for k in NOTE_LENGTHS
            if (v := [f["per_note_length"][k] for f in instrument_folds if k in f.get("per_note_length", {})])
        },
        "phrases": {m: merge_scores(p["scores"][m] for p in played if m in p["scores"]) for m in modes},
        "real_notes_lost": {"mean": float(np.mean(lost)), "worst": float(np.max(lost))} if lost else None,
    }


def note_sections(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """holdout.md's issue-23 sections: phrases, notes lost to `other`, accuracy by note length."""
    from instrument_ai.train.corpus.kinds import NOTE_LENGTHS
    from instrument_ai.train.experiments import report
    from instrument_ai.train.experiments.phrases import OUTCOMES

    pct = report.pct
    folds = summary["folds"]
    sections = []
    rows = []
    for f in folds:
        played = f.get("phrases")
        if not isinstance(played, dict):
            continue
        if "scores" not in played:
            rows.append([f["name"], "-", "-", played.get("skipped", ""), "", "", ""])
            continue
        for mode, s in played["scores"].items():
            rows.append([f["name"], mode, s["hops"], *(pct(s["share"][k]) for k in OUTCOMES)])
    for mode, s in summary.get("phrases", {}).items():
        rows.append(["**all real folds**", mode, s["hops"], *(pct(s["share"][k]) for k in OUTCOMES)])
    if rows:
        text = ("Each held-out real source's notes played one after another (legato overlaps, short gaps, repeated "
                "notes; fixed seed) through the daemon's `Classifier`: share of sounding hops named right, no "
                "family (`unknown` or silence), `other`, another family; `hops` decides per hop (the default), "
                "`note` on the evidence since the note's onset.\n\n")  # fmt: skip
        table = report.markdown_table(["held-out source", "decision", "hops", *OUTCOMES], rows)
        sections.append(("Phrases through the daemon", text + table))
    rows = []
    for f in folds:
        lost = f.get("lost")
        if f.get("kind") == "real" and lost:
            notes, hops = lost["notes"], lost["hops"]
            rows.append([f["name"], notes["n"], pct(notes["other"]), pct(notes["unknown"]), pct(notes["lost"]),
                         pct(hops["lost"])])  # fmt: skip
    if rows:
        worst = summary.get("real_notes_lost") or {}
        text = ("Instrument notes of each held-out real source called `other` or rejected (`unknown`), as the "
                "daemon decides (default floor and open-set threshold; per note on its mean probabilities, and "
                f"per hop). Mean {pct(worst.get('mean'))}, worst fold {pct(worst.get('worst'))}; target: at most "
                "3 % on every real fold.\n\n")  # fmt: skip
        header = ["held-out source", "notes", "called other", "rejected", "lost (notes)", "lost (hops)"]
        sections.append(("Instrument notes lost to other", text + report.markdown_table(header, rows)))
    rows = [[f["name"], f.get("kind", ""), *(pct(f.get("per_note_length", {}).get(k)) for k in NOTE_LENGTHS)]
            for f in folds if f.get("note_accuracy") is not None and f.get("per_note_length")]  # fmt: skip
    if rows:
        means = summary.get("mean_per_note_length", {})
        rows.append(["**mean**", "", *(pct(means.get(k)) for k in NOTE_LENGTHS)])
        sections.append(("Note accuracy by note length (seconds of sounding note)",
                         report.markdown_table(["held-out source", "kind", *NOTE_LENGTHS], rows)))  # fmt: skip
    return sections


def _run_instruments(run_dir: Path) -> set[str]:
    """The instruments a run trained and validated on (the trainer records them in config.json)."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    used = config.get("data", {}).get("instruments", {})
    return set(used.get("train", [])) | set(used.get("valid", []))


def train_with_trainer(data: Path, out: Path, **fold: Any) -> Path:
    """The real trainer with `--holdout` (keywords: `FoldTraining`'s fields), in a fresh process per fold; an
    unfinished run is resumed.

    One process training fold after fold grew by 1-2 GB per fold (Keras and
    TensorFlow keep references to each fold's data pipeline that
    `clear_session` does not release), and the kernel's OOM killer stopped it
    at the fourth of ten folds on a 24 GB machine. A spawned child per fold
    gives every byte back when the fold ends.
    """
    import multiprocessing

    request = FoldTraining(**fold)
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    # Not a Pool: pool workers are daemonic and may not start the feature-extraction processes.
    child = context.Process(target=_fold_child, args=(send, Path(data), Path(out), request), name="holdout fold")
    child.start()
    send.close()
    try:
        outcome = _wait_for_child(receive, child)
    except KeyboardInterrupt:
        # The child got the same Ctrl-C: let it finish its epoch and checkpoint, then stop.
        try:
            outcome = _wait_for_child(receive, child)
        except KeyboardInterrupt:
            child.terminate()
            outcome = None
        if not isinstance(outcome, HoldoutError):
            raise HoldoutError(
                f"{out}: interrupted; rerun the same experiment command to resume (finished folds are kept)"
            ) from None
    finally:
        child.join(timeout=60)
    if isinstance(outcome, HoldoutError):
        raise outcome
    if not isinstance(outcome, Path):
        raise HoldoutError(f"{out}: the training process ended without a result (exit code {child.exitcode})")
    return outcome


def _wait_for_child(receive: Any, child: Any) -> Path | HoldoutError | None:
    """The child's one message (its run folder or its error), or None if it died without sending one."""
    while not receive.poll(1.0):
        if not child.is_alive() and not receive.poll(0):
            return None
    try:
        return receive.recv()
    except EOFError:
        return None


def _fold_child(send: Any, data: Path, out: Path, request: FoldTraining) -> None:
    """Entry point of the spawned process: train one fold and send back its run folder or its one-line error."""
    try:
        result: Path | HoldoutError = _train_fold(data, out, request)
    except HoldoutError as exc:
        result = exc
    except Exception as exc:  # anything else still reaches the user as one line, not a lost child
        result = HoldoutError(f"{out}: training failed: {type(exc).__name__}: {exc}")
    send.send(result)
    send.close()


def _train_fold(data: Path, out: Path, request: FoldTraining) -> Path:
    """One fold's training (in the child process): a new run, or the resumption of an unfinished one."""
    from instrument_ai.train import trainer

    try:
        if (out / "config.json").is_file():
            status = json.loads((out / "config.json").read_text()).get("status")
            if status == "complete":
                return out
            return Path(trainer.train_model(trainer.resume_config(out, jobs=request.jobs or None), resume=True))
        config = trainer.TrainConfig(data=str(data), out=str(out), preset=request.preset, epochs=request.epochs,
                                     seed=request.seed, holdout=list(request.holdout), jobs=request.jobs,
                                     **(request.overrides or {}))  # fmt: skip
        return Path(trainer.train_model(config))
    except trainer.TrainingInterrupted as exc:
        raise HoldoutError(f"{exc} (or rerun the same experiment command: finished folds are kept)") from None
    except trainer.TrainError as exc:
        raise HoldoutError(str(exc)) from None


def _release_fold_memory() -> None:
    """Drop the evaluated fold's Keras model before the next fold (the parent only evaluates)."""
    import gc
    import sys

    keras = sys.modules.get("keras")
    if keras is not None:
        keras.backend.clear_session()
    gc.collect()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)

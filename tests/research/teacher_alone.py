"""The GBM teacher alone on the holdout protocol (issue 23, item 6): how good is the teacher the edge model distils?

For each training unit of `experiment holdout --groups K` (same folds, same grouping, same test notes as
`--max-test-notes N`), the teacher's classifier (teacher.GBM_PARAMS on teacher.note_statistics, the exact
statistics and settings of `--teacher gbm`) is fitted on every note of the store outside the unit's held-out
sources (training and validation instruments alike: there is no early stopping on validation here), and each
held-out source's test notes are named from their clean rendition's statistics. Prints one line per fold and
writes a JSON with the per-fold note accuracies, beside the CNN's figures of a holdout.json when given.

Example (from the repo root):
  nice -n 10 .venv/bin/python tests/research/teacher_alone.py --corpus /work/corpus-v5 \\
      --store 8438d769b97d131ba70b1911 --groups 2 --max-test-notes 400 \\
      --compare /work/wt-levers/runs/levers/baselinerepeat/holdout.json --out /tmp/teacher-alone.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from instrument_ai.device.frontend import FrontendSpec
from instrument_ai.device.labels import LABELS, OTHER
from instrument_ai.train.experiments import holdout as ho
from instrument_ai.train.features import FeatureSet, default_cache_dir
from instrument_ai.train.teacher import GBM_PARAMS, note_statistics


def load_store_mapped(folder: Path) -> FeatureSet:
    """A cached feature store with its frames memory-mapped (read once per note, never held whole)."""
    info = json.loads((folder / "notes.json").read_text())
    with np.load(folder / "segments.npz") as seg:
        tables = {k: seg[k] for k in ("seg_offset", "seg_length", "seg_note", "seg_rendition")}
    meta = {k: v for k, v in info.items() if k not in ("notes", "window_frames", "n_silent")}
    return FeatureSet(frames=np.load(folder / "frames.npy", mmap_mode="r"), notes=info["notes"],
                      window_frames=int(info["window_frames"]), n_silent=int(info["n_silent"]), meta=meta,
                      **tables)  # fmt: skip


def _ensemble(args: argparse.Namespace, fold: str, store: FeatureSet, rows: np.ndarray, gbm: np.ndarray,
              family: np.ndarray) -> dict[str, float]:
    """Note accuracy of the fold's CNN on the stored clean renditions, and of the mean of its and the GBM's output."""
    from instrument_ai.train.features import hop_frames
    from instrument_ai.train.trainer import load_run

    holdout = args.compare.parent
    run = load_run(args.ensemble_root / json.loads((holdout / "folds" / fold / "fold.json").read_text())["run_dir"])
    part = store.subset(rows, renditions=(0,))
    windows, owner = part.device_windows(hop_frames(run.spec, run.hop_seconds))
    sums = np.zeros((part.n_notes, len(LABELS)))
    np.add.at(sums, (owner[:, None], np.array([LABELS.index(x) for x in run.labels])[None, :]), run.predict(windows))
    cnn = sums / np.maximum(np.bincount(owner, minlength=part.n_notes), 1)[:, None]
    kept = np.unique(rows)  # subset() sorts the notes
    order = np.searchsorted(kept, rows)
    truth = family[rows]
    cnn = cnn[order]
    return {"cnn_store_note_accuracy": float(np.mean(cnn.argmax(axis=1) == truth)),
            "ensemble_note_accuracy": float(np.mean((0.5 * cnn + 0.5 * gbm).argmax(axis=1) == truth))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("--store", required=True, help="feature-store key under the cache's features/ folder")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--max-test-notes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-fit-notes", type=int, default=None,
                        help="fit on at most this many training notes, evenly spaced in store order (a cheaper probe)")
    parser.add_argument("--verbose", type=int, default=0, help="the classifier's own progress lines (1: per iteration)")
    parser.add_argument("--compare", type=Path, default=None, help="a holdout.json of the CNN under the same protocol")
    parser.add_argument("--ensemble-root", type=Path, default=None,
                        help="with --compare: the folder its fold.json run_dir paths are relative to; adds the CNN's "
                        "note probabilities (mean over the device windows of the stored clean rendition) and "
                        "their average with the GBM's")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from sklearn.ensemble import HistGradientBoostingClassifier

    store = load_store_mapped((args.cache or default_cache_dir()) / "features" / args.store)
    settings = store.meta["settings"]
    spec, stage = FrontendSpec.from_dict(settings["spec"]), settings["stage"]
    started = time.perf_counter()
    stats = note_statistics(store, stage, spec)
    print(f"statistics of {store.n_notes} notes in {time.perf_counter() - started:.0f} s", flush=True)
    family = store.note_family
    instrument = np.array([n["instrument_str"] for n in store.notes])
    position = {n["note_str"]: i for i, n in enumerate(store.notes)}
    folds, _ = ho.folds_of(args.corpus)
    cnn = {}
    if args.compare:
        cnn = {f["name"]: f.get("note_accuracy") for f in json.loads(args.compare.read_text())["folds"]}
    rows = []
    for unit in ho.training_units(folds, args.groups):
        held = {i for f in unit for i in f.instruments}
        fit = np.flatnonzero(~np.isin(instrument, sorted(held)))
        if args.max_fit_notes and fit.size > args.max_fit_notes:
            fit = fit[np.unique(np.linspace(0, fit.size - 1, args.max_fit_notes).round().astype(int))]
        started = time.perf_counter()
        model = HistGradientBoostingClassifier(**GBM_PARAMS, random_state=args.seed, verbose=args.verbose)
        model.fit(stats[fit], family[fit])
        print(f"unit of {len(unit)} folds: fitted on {fit.size} notes, {model.n_iter_} iterations, "
              f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
        for fold in unit:
            names = ho.screen_sample(args.corpus, fold.instruments, args.max_test_notes)
            if names is None:
                rows_of = np.flatnonzero(np.isin(instrument, fold.instruments))
            else:
                rows_of = np.array([position[n] for n in names if n in position], dtype=np.int64)
            gbm_probs = np.zeros((rows_of.size, len(LABELS)))
            if rows_of.size:
                gbm_probs[:, model.classes_] = model.predict_proba(stats[rows_of])
            predicted = gbm_probs.argmax(axis=1)
            right = float(np.mean(predicted == family[rows_of])) if rows_of.size else None
            called_other = float(np.mean(predicted == LABELS.index(OTHER))) if rows_of.size else None
            row = {"name": fold.name, "kind": fold.kind, "n_notes": int(rows_of.size),
                   "gbm_note_accuracy": None if fold.kind == "other" else right,
                   "gbm_called_other": called_other, "cnn_note_accuracy": cnn.get(fold.name)}  # fmt: skip
            if args.ensemble_root and fold.kind != "other" and rows_of.size:
                row.update(_ensemble(args, fold.name, store, rows_of, gbm_probs, family))
            rows.append(row)
            shown = "other share " + f"{100 * called_other:.1f}%" if fold.kind == "other" else f"{100 * right:.1f}%"
            extra = {k: round(v, 3) for k, v in row.items() if k.startswith(("cnn_store", "ensemble"))}
            print(f"{fold.name} ({fold.kind}, {rows_of.size} notes): GBM {shown}, CNN {cnn.get(fold.name)} {extra}",
                  flush=True)
    summary = {}
    for kind in sorted({r["kind"] for r in rows} - {"other"}):
        pairs = [(r["gbm_note_accuracy"], r["cnn_note_accuracy"]) for r in rows if r["kind"] == kind]
        cnn_mean = float(np.mean([c for _, c in pairs if c is not None])) if cnn else None
        summary[kind] = {"folds": len(pairs), "gbm_mean": float(np.mean([g for g, _ in pairs])), "cnn_mean": cnn_mean}
        for key in ("cnn_store_note_accuracy", "ensemble_note_accuracy"):
            values = [r[key] for r in rows if r["kind"] == kind and key in r]
            if values:
                summary[kind][key.replace("_note_accuracy", "_mean")] = float(np.mean(values))
    scored = [r for r in rows if r["gbm_note_accuracy"] is not None]
    summary["all_instrument_folds"] = {"folds": len(scored),
                                       "gbm_mean": float(np.mean([r["gbm_note_accuracy"] for r in scored])),
                                       "cnn_mean": float(np.mean([r["cnn_note_accuracy"] for r in scored
                                                                  if r["cnn_note_accuracy"] is not None]))
                                       if cnn else None}  # fmt: skip
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report = {"settings": settings, "gbm": GBM_PARAMS, "summary": summary, "folds": rows}
    args.out.write_text(json.dumps(report, indent=1))
    for kind, figures in summary.items():
        print(kind, json.dumps(figures))


if __name__ == "__main__":
    main()

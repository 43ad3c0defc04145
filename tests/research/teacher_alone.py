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
            predicted = model.classes_[model.predict_proba(stats[rows_of]).argmax(axis=1)] if rows_of.size else []
            right = float(np.mean(predicted == family[rows_of])) if rows_of.size else None
            called_other = float(np.mean(predicted == LABELS.index(OTHER))) if rows_of.size else None
            row = {"name": fold.name, "kind": fold.kind, "n_notes": int(rows_of.size),
                   "gbm_note_accuracy": None if fold.kind == "other" else right,
                   "gbm_called_other": called_other, "cnn_note_accuracy": cnn.get(fold.name)}  # fmt: skip
            rows.append(row)
            shown = "other share " + f"{100 * called_other:.1f}%" if fold.kind == "other" else f"{100 * right:.1f}%"
            print(f"{fold.name} ({fold.kind}, {rows_of.size} notes): GBM {shown}, CNN {cnn.get(fold.name)}", flush=True)
    summary = {}
    for kind in sorted({r["kind"] for r in rows} - {"other"}):
        pairs = [(r["gbm_note_accuracy"], r["cnn_note_accuracy"]) for r in rows if r["kind"] == kind]
        cnn_mean = float(np.mean([c for _, c in pairs if c is not None])) if cnn else None
        summary[kind] = {"folds": len(pairs), "gbm_mean": float(np.mean([g for g, _ in pairs])), "cnn_mean": cnn_mean}
    scored = [r for r in rows if r["gbm_note_accuracy"] is not None]
    summary["all_instrument_folds"] = {"folds": len(scored),
                                       "gbm_mean": float(np.mean([r["gbm_note_accuracy"] for r in scored])),
                                       "cnn_mean": float(np.mean([r["cnn_note_accuracy"] for r in scored
                                                                  if r["cnn_note_accuracy"] is not None]))
                                       if cnn else None}  # fmt: skip
    args.out.write_text(json.dumps({"settings": vars(args) | {"corpus": str(args.corpus), "cache": str(args.cache),
                                                              "compare": str(args.compare), "out": str(args.out)},
                                    "gbm": GBM_PARAMS, "summary": summary, "folds": rows}, indent=1))  # fmt: skip
    for kind, figures in summary.items():
        print(kind, json.dumps(figures))


if __name__ == "__main__":
    main()

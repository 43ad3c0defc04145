"""Gradient boosting on whole-note summary statistics, leave-one-library-out (issue 4 research).

A non-neural yardstick for the screens of screen_levers.py: how far does a
plain classifier on a few statistics of each whole note get on a library it
has never heard? Each note is described by its clean rendition (rendition 0)
in a feature store: per stored feature (MFCC coefficient), the mean, the
standard deviation, the mean absolute first difference, and the mean of the
first 20 frames minus the mean (4 x 40 = 160 values for a 40-MFCC store);
`--with-pitch` appends the note's MIDI pitch. For each fold, a
HistGradientBoostingClassifier (300 iterations, learning rate 0.1, balanced
class weights) is trained on the notes of every other fold and scored on the
held-out fold's notes. Prints each fold's note accuracy and their mean.

Example (from the repo root):
  .venv/bin/python tests/research/note_stats_gbm.py --corpus data/corpus --store 23ac4e3dc7f38022877f5e99 \\
      --folds Aspirin JCLive Airfont380
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screen_levers import folds_of_store, load_store  # noqa: E402

from instrument_ai.train.experiments.holdout import TRAIN_ONLY  # noqa: E402

ONSET_FRAMES = 20  # the "attack" statistic: mean of the first frames minus the note's mean


def note_statistics(store) -> np.ndarray:
    """(n_notes, 4 * n_features) summary statistics of each note's clean rendition (zeros for a note without one)."""
    clean = np.flatnonzero(store.seg_rendition == 0)
    X = np.zeros((store.n_notes, 4 * store.n_features), np.float32)
    for s in clean:
        b = store.frames[store.seg_offset[s] : store.seg_offset[s] + store.seg_length[s]].astype(np.float32)
        d = np.diff(b, axis=0) if len(b) > 1 else np.zeros_like(b)
        X[store.seg_note[s]] = np.concatenate(
            [b.mean(0), b.std(0), np.abs(d).mean(0), b[:ONSET_FRAMES].mean(0) - b.mean(0)]
        )
    return X


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Leave-one-library-out gradient boosting on whole-note MFCC statistics (issue 4 research)."
    )
    parser.add_argument("--corpus", required=True, help="corpus folder (for instruments.json: the libraries)")
    parser.add_argument(
        "--store", default=None, help="feature-store key (default: the newest store in the cache); see make_store.py"
    )
    parser.add_argument("--cache", default=None, help="cache folder (default: ~/.cache/instrument-ai)")
    parser.add_argument("--folds", nargs="+", default=None, help="held-out folds (default: all but WAF-small)")
    parser.add_argument("--with-pitch", action="store_true", help="add the note's MIDI pitch as a feature")
    parser.add_argument(
        "--seed", type=int, default=0, help="random_state of the classifier (its early-stopping split; default: 0)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from sklearn.ensemble import HistGradientBoostingClassifier

    store = load_store(args.store, args.cache)
    folds = folds_of_store(store, args.corpus)
    fam = store.note_family
    X = note_statistics(store)
    if args.with_pitch:
        pitch = np.array([n.get("pitch", 0) for n in store.notes])
        X = np.c_[X, pitch]
    present = sorted(set(folds))
    chosen = args.folds or [f for f in present if f not in TRAIN_ONLY]
    unknown = [f for f in chosen if f not in present]
    if unknown:
        raise SystemExit(f"no fold {', '.join(unknown)} in the store; folds: {', '.join(present)}")
    accs = []
    for test in chosen:
        tr = folds != test
        te = folds == test
        gb = HistGradientBoostingClassifier(
            max_iter=300, learning_rate=0.1, class_weight="balanced", random_state=args.seed
        ).fit(X[tr], fam[tr])
        a = float((gb.predict(X[te]) == fam[te]).mean())
        accs.append(a)
        print(f"{test} {a:.3f} ({int(te.sum())} notes)", flush=True)
    print(f"mean {np.mean(accs):.3f} over {len(accs)} folds")


if __name__ == "__main__":
    main()

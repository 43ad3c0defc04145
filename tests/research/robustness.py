"""Validation notes of a run at other input gains, and the device's first windows after an onset.

For each run folder: note accuracy of the validation instruments' clean notes
(windows every 0.25 s, a note's probabilities averaged) with the features of
the audio at -20, 0 and +20 dB (a dB gain adds the same constant to every
log-mel band, which the orthonormal DCT turns into a shift of c0 alone), and
window accuracy of the windows the device engine classifies 0.25, 0.5 and
0.75 s after a note's onset (the frames heard so far, then silence frames).
Uses the run's own corpus, split and feature cache.

    .venv/bin/python tests/research/robustness.py runs/edge-full-noaug runs/edge-v3
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from instrument_ai.train.features import silence_frame
from instrument_ai.train.prepare import prepare_data
from instrument_ai.train.trainer import load_run
from instrument_ai.train.windows import onset_window_accuracy, subset_windows, window_note_scores


def robustness(run_dir: str, max_windows: int = 30000) -> dict[str, float]:
    run = load_run(run_dir)
    prepared = prepare_data(run.train_config.resolved(), labels=run.labels)
    model = run.load_model()
    x, owner, note_y = subset_windows(
        prepared.valid, run.hop_frames, prepared.valid_y, max_windows, np.random.default_rng(0)
    )
    row: dict[str, float] = {}
    for gain_db in (-20, 0, 20):
        shifted = x.copy()
        shifted[:, 0] += gain_db * np.sqrt(run.spec.n_mels)
        scores = window_note_scores(run.predict(shifted, model), owner, note_y)
        row[f"note_accuracy_{gain_db:+d}dB"] = round(100 * scores["note_accuracy"], 1)
    onsets = onset_window_accuracy(
        lambda raw: run.predict(raw, model),
        prepared.valid,
        prepared.valid_y,
        run.hop_frames,
        silence_frame(run.spec, "mfcc"),
        run.train_config.hop_seconds,
    )
    row.update({f"onset_window_accuracy_{seconds}s": round(100 * value, 1) for seconds, value in onsets.items()})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    for run_dir in args.runs:
        print(json.dumps({"run": run_dir, **robustness(run_dir)}), flush=True)


if __name__ == "__main__":
    main()

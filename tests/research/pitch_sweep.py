"""Does a run know its training instruments between the pitches the corpus rendered?

The corpus renders every third semitone of each instrument. This renders the
TimGM6mb instruments of the demo (train/corpus/demo_clip.py) at every semitone of
their corpus range, velocity 100, as the corpus renders notes, and scores a
note by its first 1.5 s (the windows at 0, 0.25 and 0.5 s, averaged): the
share named right on the pitches the corpus has ("on the grid") and on the
two pitches between each pair ("off the grid").

    .venv/bin/python tests/research/pitch_sweep.py --corpus data/corpus runs/edge-full-noaug runs/edge-v3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from instrument_ai.device.frontend import mfcc
from instrument_ai.train.corpus.demo_clip import DEMO_NOTES, timgm6mb_path
from instrument_ai.train.sources.soundfont_render import SoundFontRenderer
from instrument_ai.train.trainer import load_run


def corpus_pitches(corpus: Path) -> dict[int, list[int]]:
    """GM program -> the pitches the corpus rendered for TimGM6mb's instrument of that program."""
    instruments = json.loads((corpus / "instruments.json").read_text())
    examples = json.loads((corpus / "examples.json").read_text())
    name_of = {v["program"]: k for k, v in instruments.items() if v["library"] == "TimGM6mb"}
    out: dict[int, list[int]] = {}
    for _, program, _ in DEMO_NOTES:
        name = name_of[program]
        out[program] = sorted({e["pitch"] for e in examples.values() if e["instrument_str"] == name})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    grid = corpus_pitches(args.corpus)
    renderer = SoundFontRenderer(timgm6mb_path())
    for run_dir in args.runs:
        run = load_run(run_dir)
        model = run.load_model()
        right = {"on": [], "off": []}
        per_family = {}
        for family, program, _ in DEMO_NOTES:
            pitches = grid[program]
            for pitch in range(pitches[0], pitches[-1] + 1):
                features = mfcc(renderer.render(0, program, pitch, 100), run.spec)
                windows = np.stack([features[:, k : k + run.window_frames] for k in (0, 16, 32)])
                label = run.labels[int(run.predict(windows, model).mean(axis=0).argmax())]
                where = "on" if pitch in pitches else "off"
                right[where].append(label == family)
                per_family.setdefault(family, {"on": [], "off": []})[where].append(label == family)
        summary = {k: f"{100 * np.mean(v):.1f} % of {len(v)}" for k, v in right.items()}
        families = {f: f"{100 * np.mean(v['on']):.0f}/{100 * np.mean(v['off']):.0f}" for f, v in per_family.items()}
        print(json.dumps({"run": run_dir, "on_grid": summary["on"], "off_grid": summary["off"],
                          "per_family_on_off": families}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

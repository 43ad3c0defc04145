"""How a bundle names the demo's notes through the device engine, for the demo's encodings and input gains.

The demo (`instrument_ai.train.corpus.demo_clip`) is rendered again here, so the
figures are for the render itself ("raw", what demo.flac holds to 16-bit
precision), for Ogg Vorbis at libsndfile's default quality (~22 kbit/s, what
the package shipped until model 0.3.0) and at its best quality, each at gains
of 0.25 and 1. For every note: the stream time from its onset to the first
event naming its family ("--" when none does before the next note).

    .venv/bin/python tests/research/demo_variants.py models/default.tflite [more bundles...]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import soundfile

from instrument_ai.device.bench_runtime import note_latencies
from instrument_ai.device.bundle import load
from instrument_ai.train.corpus.demo_clip import SAMPLE_RATE, render_demo


def _through(signal: np.ndarray, fmt: str, subtype: str, **options: float) -> np.ndarray:
    buffer = io.BytesIO()
    soundfile.write(buffer, signal, SAMPLE_RATE, format=fmt, subtype=subtype, **options)
    buffer.seek(0)
    return soundfile.read(buffer, dtype="float32")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    args = parser.parse_args()
    signal, notes = render_demo()
    variants = {
        "raw": signal,
        "vorbis-default": _through(signal, "OGG", "VORBIS"),
        "vorbis-best": _through(signal, "OGG", "VORBIS", compression_level=0.0),
    }
    print("bundle | encoding | gain | named | within 1 s | " + " | ".join(n["family"] for n in notes))
    for path in args.bundles:
        bundle = load(path)
        for name, audio in variants.items():
            for gain in (0.25, 1.0):
                rows = note_latencies(bundle, audio * gain, SAMPLE_RATE, notes)["notes"]
                found = [r["correct_latency_s"] for r in rows]
                named = [t for t in found if t is not None]
                cells = " | ".join("--" if t is None else f"{t:g}" for t in found)
                print(f"{path.name} | {name} | {gain:g} | {len(named)}/8 | {sum(t <= 1.0 for t in named)} | {cells}")


if __name__ == "__main__":
    main()

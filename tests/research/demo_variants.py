"""How a bundle names the demo's notes through the device engine, for the demo's encodings and input gains.

The demo (`instrument_ai.train.demo_clip`) is rendered again here, so the
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

from instrument_ai.device.bundle import load
from instrument_ai.device.engine import SILENCE, UNKNOWN, Classifier
from instrument_ai.train.demo_clip import SAMPLE_RATE, render_demo


def _through(signal: np.ndarray, fmt: str, subtype: str, **options: float) -> np.ndarray:
    buffer = io.BytesIO()
    soundfile.write(buffer, signal, SAMPLE_RATE, format=fmt, subtype=subtype, **options)
    buffer.seek(0)
    return soundfile.read(buffer, dtype="float32")[0]


def latencies(bundle: object, audio: np.ndarray, notes: list[dict]) -> list[float | None]:
    """Onset to the first event naming each note's family (None: never before the next note)."""
    engine = Classifier(bundle, input_rate=SAMPLE_RATE)
    events = engine.process(audio) + [e for e in engine.flush() if e.changed]
    out: list[float | None] = []
    for i, note in enumerate(notes):
        end = notes[i + 1]["onset"] if i + 1 < len(notes) else float("inf")
        named = [e for e in events if note["onset"] < e.time <= end and e.label not in (SILENCE, UNKNOWN)]
        right = next((e for e in named if e.label == note["family"]), None)
        out.append(None if right is None else round(right.time - note["onset"], 3))
    return out


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
                found = latencies(bundle, audio * gain, notes)
                named = [t for t in found if t is not None]
                cells = " | ".join("--" if t is None else f"{t:g}" for t in found)
                print(f"{path.name} | {name} | {gain:g} | {len(named)}/8 | {sum(t <= 1.0 for t in named)} | {cells}")


if __name__ == "__main__":
    main()

"""Render the demo recording that ships with the device package.

Notes of several families, one after another with silences between them, from
the TimGM6mb SoundFont that the PyPI package pretty_midi ships (so anyone can
rebuild it: ``python -m instrument_ai.train.corpus.demo_clip``). Stored as 16 kHz mono
16-bit FLAC (~300 KB), lossless: the demo is what the SoundFont renders. It was
Ogg Vorbis at ~22 kbit/s (66 KB) until model 0.3.0, and that codec's artefacts
changed the answers for several notes (`tests/research/README.md`), so the main
job measured the codec as much as the model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
NOTE_SECONDS = 2.0
GAP_SECONDS = 1.0
# (family, GM program 0-based, MIDI pitch)
DEMO_NOTES: list[tuple[str, int, int]] = [
    ("keyboard", 0, 60),  # acoustic grand piano
    ("flute", 73, 79),  # flute
    ("string", 40, 67),  # violin
    ("brass", 56, 65),  # trumpet
    ("guitar", 24, 55),  # nylon guitar
    ("organ", 19, 60),  # church organ
    ("reed", 65, 62),  # alto sax
    ("bass", 32, 36),  # acoustic bass
]
DEMO_ASSET = Path(__file__).resolve().parents[2] / "device" / "assets" / "demo.flac"
NOISE_TAIL: list[tuple[str, float, float]] = [("pink-noise", 2.0, 0.3), ("typing", 2.0, 0.5)]
"""After the notes, sounds that are no instrument (kind, seconds, peak): the model must say nothing (or `other`)."""
NOISE_SEED = 20261203


def timgm6mb_path() -> Path:
    """The TimGM6mb.sf2 that ships inside pretty_midi."""
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def render_demo(sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, list[dict]]:
    """Return the demo signal and the list of its notes (onset, offset seconds, family)."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(str(timgm6mb_path()))
    pieces: list[np.ndarray] = [np.zeros(int(GAP_SECONDS * sample_rate), dtype=np.float32)]
    notes: list[dict] = []
    t = GAP_SECONDS
    for family, program, pitch in DEMO_NOTES:
        synth.program_select(0, sfid, 0, program)
        synth.noteon(0, pitch, 100)
        held = np.frombuffer(synth.generate(int(NOTE_SECONDS * sample_rate)), dtype=np.float32)
        synth.noteoff(0, pitch)
        tail = np.frombuffer(synth.generate(int(GAP_SECONDS * sample_rate)), dtype=np.float32)
        synth.sounds_off()
        stereo = np.concatenate([held, tail]).reshape(-1, 2)
        mono = stereo.mean(axis=1)
        # a hard gap after the release keeps the notes apart
        mono[int((NOTE_SECONDS + 0.5) * sample_rate) :] = 0.0
        pieces.append(mono.astype(np.float32))
        notes.append({"onset": t, "offset": t + NOTE_SECONDS, "family": family, "program": program, "pitch": pitch})
        t += NOTE_SECONDS + GAP_SECONDS
    signal = np.concatenate(pieces)
    signal = 0.5 * signal / float(np.abs(signal).max())
    tail, _ = noise_tail(t, sample_rate)
    return np.concatenate([signal, tail]).astype(np.float32), notes


def noise_marks(notes: list[dict]) -> list[dict]:
    """Where the noise tail lies (onset, offset, kind), for demo.json's "no_instrument" list."""
    return noise_tail(notes[-1]["offset"] + GAP_SECONDS, SAMPLE_RATE)[1]


def noise_tail(start: float, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, list[dict]]:
    """The demo's last seconds: seeded numpy noise and typing (sources/other_sounds.py), then a second of silence."""
    from instrument_ai.train.sources.other_sounds import KINDS

    pieces, marks = [], []
    t = start
    for i, (kind, seconds, peak) in enumerate(NOISE_TAIL):
        x = KINDS[kind](np.random.default_rng([NOISE_SEED, i]))[: int(seconds * sample_rate)]
        pieces.append(peak * x / float(np.abs(x).max()))
        marks.append({"onset": t, "offset": t + seconds, "family": "other", "kind": kind})
        t += seconds
    pieces.append(np.zeros(int(GAP_SECONDS * sample_rate)))
    return np.concatenate(pieces), marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEMO_ASSET)
    args = parser.parse_args()
    import soundfile

    signal, notes = render_demo()
    soundfile.write(args.out, signal, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    meta = {"sample_rate": SAMPLE_RATE, "notes": notes, "no_instrument": noise_marks(notes)}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {args.out} ({len(signal) / SAMPLE_RATE:.1f} s, {args.out.stat().st_size // 1024} KB)")
    for note in notes:
        print(f"  {note['onset']:5.1f}-{note['offset']:5.1f} s  {note['family']}")


if __name__ == "__main__":
    main()

"""Render the demo recording that ships with the device package.

Notes of several families, one after another with silences between them, from
the TimGM6mb SoundFont that the PyPI package pretty_midi ships (so anyone can
rebuild it: ``python -m instrument_ai.train.demo_clip``). Stored as 16 kHz mono
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
DEMO_ASSET = Path(__file__).resolve().parents[1] / "device" / "assets" / "demo.flac"


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
    peak = float(np.abs(signal).max())
    return (0.5 * signal / peak).astype(np.float32), notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEMO_ASSET)
    args = parser.parse_args()
    import soundfile

    signal, notes = render_demo()
    soundfile.write(args.out, signal, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    args.out.with_suffix(".json").write_text(json.dumps({"sample_rate": SAMPLE_RATE, "notes": notes}, indent=1))
    print(f"wrote {args.out} ({len(signal) / SAMPLE_RATE:.1f} s, {args.out.stat().st_size // 1024} KB)")
    for note in notes:
        print(f"  {note['onset']:5.1f}-{note['offset']:5.1f} s  {note['family']}")


if __name__ == "__main__":
    main()

"""train/sources/import_notes.py on recordings the tests synthesise in every container format."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from instrument_ai.train.sources.import_notes import ImportProblem, import_note_file, prepare_recording
from instrument_ai.train.sources.imported import NUM_SAMPLES, Problems
from instrument_ai.train.sources.pitch import midi_to_hz


def note(rate: int, midi: float = 60.0, lead: float = 0.25, sounding: float = 0.6, channels: int = 2) -> np.ndarray:
    """Silence, then a tone that sounds `sounding` s at constant level and stops, then silence."""
    t = np.arange(int(sounding * rate)) / rate
    f = midi_to_hz(midi)
    body = 0.4 * (np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t))
    body[-int(0.003 * rate) :] *= np.linspace(1, 0, int(0.003 * rate))
    x = np.concatenate([np.zeros(int(lead * rate)), body, np.zeros(int(0.5 * rate))])
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def encode(x: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


FORMATS = [
    ("a.wav", "WAV", "PCM_16", 44100),
    ("a.flac", "FLAC", None, 48000),
    ("a.ogg", "OGG", "VORBIS", 44100),
    ("a.mp3", "MP3", "MPEG_LAYER_III", 44100),
    ("a.aiff", "AIFF", "PCM_24", 22050),
    ("a.wav", "WAV", "FLOAT", 16000),
]


@pytest.mark.parametrize(("name", "fmt", "subtype", "rate"), FORMATS, ids=[f[0] + str(f[3]) for f in FORMATS])
def test_every_format_decodes_cuts_at_onset_and_measures_length(name: str, fmt: str, subtype: str, rate: int) -> None:
    data = encode(note(rate), rate, fmt, subtype)
    audio, sounding = prepare_recording(data, name)
    assert audio.dtype == np.float32 and audio.shape == (NUM_SAMPLES,)
    level = np.abs(audio)
    first = int(np.nonzero(level > 0.05)[0][0])
    assert 40 <= first <= 160  # the 5 ms pre-roll (80 samples), give or take the codec's delay and frame
    assert 0.57 <= sounding <= 0.66  # the tone sounds 0.6 s
    assert np.max(level[int(0.75 * 16000) :]) < 0.01  # and is silent after it
    assert 0.3 < np.max(level) < 0.6  # the file's own level, not normalised


def test_pitch_is_kept_and_long_notes_are_capped_at_four_seconds() -> None:
    from instrument_ai.train.sources.pitch import estimate_pitch

    data = encode(note(44100, midi=45.0, sounding=6.0), 44100, "WAV", "PCM_16")
    audio, sounding = prepare_recording(data, "long.wav")
    assert sounding == 4.0
    est = estimate_pitch(audio, 16000)
    assert est is not None and abs(est.midi - 45.0) < 0.05


def problem_of(data: bytes) -> str:
    with pytest.raises(ImportProblem) as info:
        prepare_recording(data, "x.wav")
    assert "x.wav" in str(info.value) and "\n" not in str(info.value)
    return info.value.reason


def test_problems_by_reason() -> None:
    assert problem_of(b"") == "zero_length"
    assert problem_of(b"RIFF\x00\x00not audio at all") == "unreadable"
    assert problem_of(encode(np.zeros((0, 1)), 16000, "WAV", "PCM_16")) == "zero_length"
    assert problem_of(encode(note(16000) * 1e-4, 16000, "WAV", "FLOAT")) == "silent"
    assert problem_of(encode(np.clip(note(16000) * 4, -1, 1), 16000, "WAV", "PCM_16")) == "clipped"
    assert problem_of(encode(note(16000, sounding=0.02), 16000, "WAV", "PCM_16")) == "too_short"


def test_import_note_file_counts_and_estimates() -> None:
    files = {
        "lib/C4.wav": encode(note(44100, midi=60.0), 44100, "WAV", "PCM_16"),
        "lib/bad.wav": b"junk",
        "lib/noise.wav": encode(np.random.default_rng(0).normal(scale=0.2, size=16000), 16000, "WAV", "FLOAT"),
    }
    problems = Problems()
    kw = dict(family="keyboard", source="acoustic", instrument="lib", velocity=100, problems=problems)
    got = import_note_file(files.__getitem__, "lib/C4.wav", pitch=60, **kw)
    assert got is not None and got.pitch == 60 and not got.pitch_estimated and got.origin == "lib/C4.wav"
    est = import_note_file(files.__getitem__, "lib/C4.wav", pitch=None, **kw)
    assert est is not None and est.pitch == 60 and est.pitch_estimated
    assert import_note_file(files.__getitem__, "lib/bad.wav", pitch=60, **kw) is None
    assert import_note_file(files.__getitem__, "lib/missing.wav", pitch=60, **kw) is None
    assert import_note_file(files.__getitem__, "lib/noise.wav", pitch=None, **kw) is None
    assert problems.counts == {"unreadable": 2, "no_pitch": 1}
    assert "lib/bad.wav" in problems.summary()

"""Quality heuristics on synthetic notes whose character is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from instrument_ai.train.corpus import nsynth as data
from instrument_ai.train.corpus.qualities import MEASURED, QUALITY_NAMES, measure, midi_to_hz, names_of, qualities

SR = 16000
N = 64000
T = np.arange(N) / SR
OFF = 3 * SR


def tone(pitch: int, harmonics: int = 8, rolloff: float = 1.0) -> np.ndarray:
    """A harmonic tone: harmonic k at amplitude k**-rolloff (only those below Nyquist)."""
    f0 = midi_to_hz(pitch)
    out = np.zeros(N)
    for k in range(1, harmonics + 1):
        if k * f0 < SR / 2:
            out += k**-rolloff * np.sin(2 * np.pi * k * f0 * T)
    return 0.3 * out / np.abs(out).max()


def held(signal: np.ndarray, attack_s: float = 0.02, release_s: float = 0.05) -> np.ndarray:
    """Organ-like envelope: linear attack, flat until note-off, short linear release."""
    env = np.clip(T / attack_s, 0, 1)
    env[OFF:] = np.clip(1 - (T[OFF:] - 3.0) / release_s, 0, 1)
    return (signal * env).astype(np.float32)


def pluck(signal: np.ndarray, tau: float = 0.25) -> np.ndarray:
    """Instant attack, exponential decay (a plucked string or a struck bar)."""
    return (signal * np.exp(-T / tau)).astype(np.float32)


def flags(audio: np.ndarray, pitch: int) -> dict[str, int]:
    return dict(zip(QUALITY_NAMES, qualities(audio, pitch, SR), strict=True))


def test_names_are_nsynths() -> None:
    assert list(QUALITY_NAMES) == data.QUALITIES
    assert set(MEASURED) < set(QUALITY_NAMES)


def test_decaying_pluck_is_percussive_and_decays_fast() -> None:
    f = flags(pluck(tone(55)), 55)
    assert f["percussive"] == 1 and f["fast_decay"] == 1
    assert f["long_release"] == 0 and f["nonlinear_env"] == 0


def test_held_organ_tone_is_not_percussive() -> None:
    f = flags(held(tone(60)), 60)
    assert f["percussive"] == 0 and f["fast_decay"] == 0 and f["long_release"] == 0 and f["nonlinear_env"] == 0


def test_slow_swell_is_not_percussive() -> None:
    m = measure(held(tone(60), attack_s=0.6), 60, SR)
    assert m["attack_s"] > 0.3
    assert flags(held(tone(60), attack_s=0.6), 60)["percussive"] == 0


def test_long_release_after_note_off() -> None:
    signal = tone(67)
    env = np.ones(N)
    env[OFF:] = np.exp(-(T[OFF:] - 3.0) / 1.0)  # decays slowly after note-off
    assert flags((signal * env).astype(np.float32), 67)["long_release"] == 1
    assert flags(held(signal), 67)["long_release"] == 0


def test_bright_and_dark_by_harmonic_content() -> None:
    saw = held(tone(57, harmonics=40, rolloff=0.5))  # strong upper harmonics
    sine = held(tone(57, harmonics=1))
    assert flags(saw, 57)["bright"] == 1 and flags(saw, 57)["dark"] == 0
    assert flags(sine, 57)["dark"] == 1 and flags(sine, 57)["bright"] == 0
    # a low note is not dark for being low: its harmonics decide
    low_saw = held(tone(33, harmonics=60, rolloff=0.5))
    assert flags(low_saw, 33)["dark"] == 0


def test_tremolo_is_a_nonlinear_envelope() -> None:
    tremolo = 1.0 - 0.9 * (0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * T))  # ~20 dB swings at 2 Hz
    assert flags(held(tone(60) * tremolo), 60)["nonlinear_env"] == 1


def test_unmeasured_flags_stay_zero_and_silence_has_none() -> None:
    for audio, pitch in ((pluck(tone(55)), 55), (held(tone(60, harmonics=40, rolloff=0.3)), 60)):
        f = flags(audio, pitch)
        assert all(f[name] == 0 for name in QUALITY_NAMES if name not in MEASURED)
    assert qualities(np.zeros(N, dtype=np.float32), 60, SR) == [0] * 10


@pytest.mark.parametrize("bits", [[1, 0, 0, 1, 0, 0, 0, 1, 0, 0], [0] * 10])
def test_names_of_matches_the_data_module(bits: list[int]) -> None:
    assert names_of(bits) == data.qualities_to_str(bits)

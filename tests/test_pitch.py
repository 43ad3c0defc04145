"""train/sources/pitch.py on synthetic harmonic tones with known pitch."""

from __future__ import annotations

import numpy as np
import pytest

from instrument_ai.train.sources.pitch import cents_between, estimate_pitch, midi_to_hz

SR = 16000


def tone(midi: float, amps: list[float], seconds: float = 1.5, decay: float = 1.0) -> np.ndarray:
    f = midi_to_hz(midi)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(a * np.sin(2 * np.pi * f * (h + 1) * t + h) for h, a in enumerate(amps) if f * (h + 1) < 0.48 * SR)
    return (0.5 * x * np.exp(-decay * t)).astype(np.float32)


@pytest.mark.parametrize("midi", [28.0, 40.3, 52.0, 60.0, 69.49, 76.0, 88.2, 98.0])
@pytest.mark.parametrize(
    "amps", [[1.0], [1.0, 0.5, 0.33, 0.25], [0.05, 1.0, 0.7, 0.5, 0.3]], ids=["sine", "saw4", "weakf0"]
)
def test_harmonic_tones_within_two_cents(midi: float, amps: list[float]) -> None:
    est = estimate_pitch(tone(midi, amps), SR)
    assert est is not None
    assert abs(est.midi - midi) * 100 < 2.0
    assert abs(cents_between(est.hz, midi_to_hz(midi))) < 2.0
    assert est.confidence > 0.8


def test_attack_glide_and_noise_do_not_move_the_estimate() -> None:
    rng = np.random.default_rng(1)
    x = tone(57.0, [1.0, 0.6, 0.4])
    x[:800] += rng.normal(scale=0.3, size=800).astype(np.float32)  # a noisy 50 ms attack
    x = np.concatenate([np.zeros(3000, np.float32), x]) + rng.normal(scale=1e-3, size=len(x) + 3000).astype(np.float32)
    est = estimate_pitch(x, SR)
    assert est is not None and abs(est.midi - 57.0) < 0.05


def test_noise_and_silence_have_no_pitch() -> None:
    assert estimate_pitch(np.zeros(SR, np.float32), SR) is None
    assert estimate_pitch(np.random.default_rng(0).normal(scale=0.1, size=SR), SR) is None
    assert estimate_pitch(np.zeros(0), SR) is None


def test_stereo_and_short_input() -> None:
    x = tone(64.0, [1.0, 0.5], seconds=0.12)
    est = estimate_pitch(np.stack([x, x], axis=1), SR)
    assert est is not None and abs(est.midi - 64.0) < 0.1

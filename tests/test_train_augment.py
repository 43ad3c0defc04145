"""Augmentation: each audio effect does what it says, and feature-domain gain equals real gain."""

from __future__ import annotations

import math

import numpy as np
import pytest

from instrument_ai.device.frontend import DEFAULT_SPEC, FrontendSpec, mfcc
from instrument_ai.train.augment import (
    AudioAugment,
    FeatureAugment,
    augment_features,
    band_to_feature_matrix,
    random_eq_curves,
    render_rendition,
)

RATE = 16000
OFF = dict(noise_prob=0.0, reverb_prob=0.0, bandlimit_prob=0.0, pitch_prob=0.0, preroll_s=(0.0, 0.0))


def noisy_tone(freq: float = 440.0, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(1)
    return amp * np.sin(2 * np.pi * freq * t) + 0.05 * amp * rng.standard_normal(t.size)


def test_feature_domain_gain_equals_audio_gain() -> None:
    x = noisy_tone()
    gain_db = 9.0
    delta = mfcc(x * 10 ** (gain_db / 20), DEFAULT_SPEC) - mfcc(x, DEFAULT_SPEC)
    predicted = band_to_feature_matrix(DEFAULT_SPEC) @ np.full(DEFAULT_SPEC.n_mels, gain_db)
    np.testing.assert_allclose(delta, np.repeat(predicted[:, None], delta.shape[1], axis=1), atol=1e-3)
    # a gain moves only c0 of an orthonormal DCT
    assert abs(predicted[0]) > 10 and np.all(np.abs(predicted[1:]) < 1e-9)


def test_feature_domain_gain_for_a_natural_log_spec() -> None:
    spec = FrontendSpec(log="ln", n_mels=40, n_mfcc=13)
    x = noisy_tone()
    delta = mfcc(x * 2.0, spec) - mfcc(x, spec)
    predicted = band_to_feature_matrix(spec) @ np.full(spec.n_mels, 20 * math.log10(2.0))
    np.testing.assert_allclose(delta[:, 3], predicted, atol=1e-4)


def test_augment_features_gain_only_shifts_c0_within_range() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros((64, 40, 59), dtype=np.float32)
    config = FeatureAugment(gain_db=6.0, tilt_db=0.0, bump_db=0.0, bumps=0)
    augment_features(x, rng, band_to_feature_matrix(DEFAULT_SPEC).astype(np.float32), config)
    c0_per_db = math.sqrt(DEFAULT_SPEC.n_mels)
    assert np.all(np.abs(x[:, 0, :]) <= 6.0 * c0_per_db + 1e-3)
    assert np.abs(x[:, 1:, :]).max() < 1e-4
    assert np.all(x[:, 0, :] == x[:, 0, :1])  # constant within a window
    assert x[:, 0, 0].std() > 1.0  # each window got its own gain


def test_eq_curves_are_bounded_and_smooth() -> None:
    config = FeatureAugment(gain_db=0.0, tilt_db=6.0, bump_db=3.0, bumps=3)
    curves = random_eq_curves(np.random.default_rng(0), 200, 64, config)
    assert curves.shape == (200, 64)
    assert np.abs(curves).max() <= 3.0 + 3 * 3.0 + 1e-9
    assert np.abs(np.diff(curves, axis=1)).max() < 1.0  # no band-to-band jumps: an EQ, not noise
    disabled = np.ones((2, 40, 59), np.float32)
    out = augment_features(disabled, np.random.default_rng(0), np.eye(40, 64), FeatureAugment(enabled=False))
    assert np.all(out == 1.0)


def test_time_shift_keeps_clean_and_augmented_aligned() -> None:
    note = noisy_tone()
    config = AudioAugment(**{**OFF, "preroll_s": (0.2, 0.3)})
    augmented, clean = render_rendition(note, RATE, 256, np.random.default_rng(2), config)
    assert augmented.shape == clean.shape
    preroll = clean.size - note.size
    assert int(0.2 * RATE) <= preroll < int(0.3 * RATE) + 256
    np.testing.assert_allclose(clean[preroll:], note)
    np.testing.assert_allclose(augmented, clean)  # nothing else enabled
    assert np.all(clean[:preroll] == 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_is_added_at_the_drawn_snr(seed: int) -> None:
    note = noisy_tone()
    config = AudioAugment(**{**OFF, "noise_prob": 1.0, "snr_db": (10.0, 40.0)})
    augmented, clean = render_rendition(note, RATE, 256, np.random.default_rng(seed), config)
    noise = augmented - clean
    snr = 10 * math.log10(np.mean(clean**2) / np.mean(noise**2))
    assert 9.5 <= snr <= 40.5


def test_reverb_adds_a_decaying_tail() -> None:
    note = np.concatenate([noisy_tone(seconds=0.5), np.zeros(RATE)])
    config = AudioAugment(**{**OFF, "reverb_prob": 1.0, "rt60_s": (0.6, 0.6), "wet": (0.5, 0.5)})
    augmented, clean = render_rendition(note, RATE, 256, np.random.default_rng(0), config)
    after = slice(int(0.55 * RATE), int(0.75 * RATE))
    late = slice(int(1.3 * RATE), int(1.5 * RATE))
    assert np.all(clean[after] == 0.0)
    tail = np.mean(augmented[after] ** 2)
    assert tail > 1e-5 and np.mean(augmented[late] ** 2) < tail / 100  # rings, then dies away


def test_band_limiting_is_a_cheap_microphone() -> None:
    config = AudioAugment(**{**OFF, "bandlimit_prob": 1.0, "highpass_hz": (400, 400), "lowpass_hz": (3500, 3500)})

    def loss_db(freq: float) -> float:
        tone = np.sin(2 * np.pi * freq * np.arange(RATE) / RATE)
        out, _ = render_rendition(tone, RATE, 256, np.random.default_rng(0), config)
        middle = slice(RATE // 4, 3 * RATE // 4)
        return 10 * math.log10(np.mean(out[middle] ** 2) / np.mean(tone[middle] ** 2))

    assert loss_db(100.0) < -20.0
    assert loss_db(7000.0) < -20.0
    assert abs(loss_db(1500.0)) < 1.0


def test_pitch_shift_stays_within_its_cents() -> None:
    config = AudioAugment(**{**OFF, "pitch_prob": 1.0, "pitch_cents": 40.0})
    tone = np.sin(2 * np.pi * 1000.0 * np.arange(2 * RATE) / RATE)
    shifts = []
    for seed in range(4):
        out, _ = render_rendition(tone, RATE, 256, np.random.default_rng(seed), config)
        spectrum = np.abs(np.fft.rfft(out[:RATE] * np.hanning(RATE)))
        peak = np.argmax(spectrum)  # 1 Hz bins
        shifts.append(1200 * math.log2(peak / 1000.0))
    assert all(abs(c) <= 42 for c in shifts) and max(abs(c) for c in shifts) > 3


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="copies"):
        AudioAugment(copies=99)
    with pytest.raises(ValueError, match="probability"):
        AudioAugment(noise_prob=2.0)
    with pytest.raises(ValueError, match="unknown"):
        AudioAugment.from_dict({"snr": 3})
    assert AudioAugment.from_dict(AudioAugment(copies=3).to_dict()) == AudioAugment(copies=3)
    assert FeatureAugment.from_dict(FeatureAugment(gain_db=2).to_dict()) == FeatureAugment(gain_db=2)

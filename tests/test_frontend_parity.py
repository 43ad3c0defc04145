"""Parity of the numpy frontend with its reference oracles (librosa, python_speech_features)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from instrument_ai.device.frontend import librosa_preset, log_mel, mel_power


@pytest.mark.parametrize("seed", range(5))
def test_mel_power_and_log_mel_match_librosa(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(16000 + 37 * seed) * 10.0 ** rng.uniform(-4, 0)
    spec = librosa_preset(sample_rate=16000, n_fft=1024, hop_length=256, n_mels=64, n_mfcc=40, fmin=20.0)
    reference = librosa.feature.melspectrogram(
        y=x, sr=16000, n_fft=1024, hop_length=256, n_mels=64, fmin=20.0, fmax=8000.0, center=False, dtype=np.float64
    )
    ours = mel_power(x, spec)
    assert ours.shape == reference.shape == (64, spec.n_frames(x.size))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=0)
    np.testing.assert_allclose(log_mel(x, spec), librosa.power_to_db(reference, top_db=None), atol=1e-3, rtol=0)

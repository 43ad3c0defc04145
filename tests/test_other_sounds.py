"""other_sounds: deterministic, 4 s, labelled `other`, levels within -60..0 dBFS, speech and drums audible."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from instrument_ai.train.corpus.build import timgm6mb_path
from instrument_ai.train.sources import other_sounds


def test_noise_clips_cover_kinds_deterministic_and_levelled():
    a = list(other_sounds.noise_clips(33, seed=5))
    b = list(other_sounds.noise_clips(33, seed=5))
    c = list(other_sounds.noise_clips(33, seed=6))
    assert {n.instrument for n in a} == set(other_sounds.KINDS)
    for x, y, z in zip(a, b, c, strict=True):
        assert x.audio.shape == (64000,) and x.audio.dtype == np.float32
        assert np.array_equal(x.audio, y.audio)
        assert not np.array_equal(x.audio, z.audio)
        assert (x.family, x.pitch, x.velocity, x.source) == ("other", 0, 100, "synthetic")
        peak_db = 20 * np.log10(np.max(np.abs(x.audio)))
        assert -60.01 <= peak_db <= 0.01
        assert 0 < x.sounding_seconds <= 4


def test_noise_colours_have_their_slopes():
    clips = {n.instrument: n.audio for n in other_sounds.noise_clips(3, seed=1)}
    def low_high_ratio(x):
        s = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / 16000)
        return s[(f > 50) & (f < 200)].mean() / s[(f > 4000) & (f < 6000)].mean()
    white, pink, brown = (low_high_ratio(clips[k]) for k in ("white-noise", "pink-noise", "brown-noise"))
    assert white < 3 < pink < brown


def test_mains_hum_peaks_at_50_or_60_hz_harmonic():
    hum = [n for n in other_sounds.noise_clips(22, seed=2) if n.instrument == "mains-hum"]
    for n in hum:
        s = np.abs(np.fft.rfft(n.audio))
        f = np.fft.rfftfreq(64000, 1 / 16000)[np.argmax(s)]
        assert min(f % 50, 50 - f % 50) < 0.5 or min(f % 60, 60 - f % 60) < 0.5


def test_dc_clip_is_offset():
    dc = [n for n in other_sounds.noise_clips(11, seed=3) if n.instrument == "dc"][0]
    assert abs(np.mean(dc.audio)) > 0.5 * np.max(np.abs(dc.audio))


@pytest.mark.skipif(shutil.which("espeak-ng") is None and not os.environ.get("CI"), reason="espeak-ng not installed")
def test_speech_clips_audible_deterministic():
    a = list(other_sounds.speech_clips(3, seed=1))
    b = list(other_sounds.speech_clips(3, seed=1))
    assert len({n.instrument for n in a}) == 3
    for x, y in zip(a, b, strict=True):
        assert x.audio.shape == (64000,)
        assert np.array_equal(x.audio, y.audio)
        assert x.family == "other" and x.instrument.startswith("espeak-")
        rms = np.sqrt(np.mean(x.audio ** 2))
        assert rms > 1e-3 * np.max(np.abs(x.audio)) > 0
        assert x.sounding_seconds > 0.3


def test_speech_without_espeak_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(other_sounds.shutil, "which", lambda name: None)
    with pytest.raises(other_sounds.OtherError, match="espeak-ng"):
        next(other_sounds.speech_clips(1, seed=0))


@pytest.mark.skipif(timgm6mb_path() is None, reason="TimGM6mb (pretty_midi) not installed")
def test_drum_clips_from_timgm6mb():
    a = list(other_sounds.drum_clips(timgm6mb_path(), "timgm6mb", 4, seed=1))
    b = list(other_sounds.drum_clips(timgm6mb_path(), "timgm6mb", 4, seed=1))
    for x, y in zip(a, b, strict=True):
        assert x.audio.shape == (64000,)
        assert np.array_equal(x.audio, y.audio)
        assert x.family == "other" and x.source == "acoustic" and x.instrument.startswith("timgm6mb-drums-")
        assert np.max(np.abs(x.audio)) > 0.01
        assert np.max(np.abs(x.audio)) <= 1.0


_SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
_MELODIC = _SHARED / "sample-libraries" / "sf3" / "32MbGMStereo" / "000.sf3"


@pytest.mark.skipif(not _MELODIC.exists() and not os.environ.get("CI"), reason="../shared sample libraries absent")
def test_font_without_drum_kit_is_a_clear_error():
    with pytest.raises(other_sounds.OtherError, match="no drum kit"):
        next(other_sounds.drum_clips(_MELODIC, "32mb", 1, seed=0))

"""synth: patches deterministic, 4 s, right pitch, right family, band-limited, velocity changes level."""

import numpy as np

from instrument_ai.train.sources import synth


def _f0(x):
    w = x[:48000] * np.hanning(48000)
    s = np.abs(np.fft.rfft(w))
    return np.argmax(s) * 16000 / 48000


def test_synth_notes_deterministic_and_labelled():
    a = list(synth.synth_notes(13, seed=3, pitch_step=24))
    b = list(synth.synth_notes(13, seed=3, pitch_step=24))
    fams = {n.instrument.rsplit("-", 1)[0]: n.family for n in a}
    assert fams["fm-epiano"] == "keyboard" and fams["synth-bass"] == "bass" and fams["synth-brass"] == "brass"
    assert fams["synth-strings"] == "string" and fams["fm-bell"] == "mallet" and fams["drawbar-organ"] == "organ"
    assert fams["saw-lead"] == "synth_lead"
    for x, y in zip(a, b, strict=True):
        assert x.audio.shape == (64000,) and x.audio.dtype == np.float32
        assert np.array_equal(x.audio, y.audio)
        assert x.source == "synthetic" and x.velocity in (50, 100)
        assert 0 < x.sounding_seconds <= 4
        # note-off at 3 s: the last 0.5 s is much quieter than the held part
        assert np.abs(x.audio[-4000:]).max() < 0.5 * np.abs(x.audio[:48000]).max()


def test_patch_parameters_differ_between_instruments():
    p = synth.make_patches(26, seed=1)
    assert p[0].kind == p[13].kind and not np.array_equal(p[0].render(60, 100), p[13].render(60, 100))


def test_pitch_by_fft_peak():
    for kind in ("saw-lead", "synth-bass", "fm-epiano", "fm-bell", "square-lead"):
        patch = synth.Patch(kind, 0, seed=2)
        for pitch in (patch.range[0] + 6, patch.range[0] + 18):
            f = _f0(patch.render(pitch, 100))
            cents = 1200 * np.log2(f / synth.midi_hz(pitch))
            assert abs(cents) < 15, (kind, pitch, f)


def test_high_saw_is_band_limited():
    pitch = 100  # 2637 Hz: a naive saw would fold many harmonics back below Nyquist
    x = synth.additive(synth.midi_hz(pitch), synth.saw)
    s = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    f0 = synth.midi_hz(pitch)
    harmonic = np.abs(f / f0 - np.round(f / f0)) * f0 < 10
    assert s[~harmonic].sum() / s.sum() < 1e-3


def test_velocity_changes_level_and_brightness():
    patch = synth.Patch("saw-lead", 0, seed=4)
    soft, loud = patch.render(60, 50), patch.render(60, 100)
    assert np.max(np.abs(loud)) > 1.5 * np.max(np.abs(soft))
    def centroid(x):
        s = np.abs(np.fft.rfft(x[:32000]))
        return (s * np.arange(len(s))).sum() / s.sum()
    assert centroid(loud) > centroid(soft)

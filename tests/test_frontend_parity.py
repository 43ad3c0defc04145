"""Parity of the numpy frontend with its reference oracles, librosa and python_speech_features.

Both presets are checked over many seeded random signals (noise, sines,
chirps, silence, clipping, very quiet, int16, impulses, DC) and several
parameter sets each, and over real notes rendered from a General MIDI
SoundFont plus the demo clip that ships with the package.

The references are called the streaming-safe way the module docstring of
`instrument_ai.device.frontend` explains: librosa with ``center=False`` and
``power_to_db(..., top_db=None)``. Two tests below show why: librosa's
defaults make a frame depend on audio outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import pytest
import python_speech_features
import soundfile

from instrument_ai.device.frontend import FrontendSpec, librosa_preset, log_mel, mel_power, mfcc, psf_preset

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "device" / "assets" / "demo.flac"

LIBROSA_TOL = 1e-3  # dB-scaled absolute error, from the issue
PSF_TOL = 1e-4


# -- signals ------------------------------------------------------------------------------------------


def _noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return rng.standard_normal(n) * 10.0 ** rng.uniform(-2, 0)


def _sines(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    out = np.zeros(n)
    for _ in range(rng.integers(1, 4)):
        out += rng.uniform(0.05, 0.4) * np.sin(2 * np.pi * rng.uniform(30, sr / 2 * 0.95) * t + rng.uniform(0, 6.3))
    return out


def _chirp(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f0, f1 = rng.uniform(20, 500), rng.uniform(1000, sr / 2 * 0.9)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
    return 0.5 * np.sin(phase)


def _silence(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return np.zeros(n)


def _clipped(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return np.clip(rng.standard_normal(n) * 3.0 + _sines(rng, n, sr) * 4.0, -1.0, 1.0)


def _very_quiet(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return (rng.standard_normal(n) + _sines(rng, n, sr)) * 1e-5


def _impulses(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    out[rng.integers(0, n, size=5)] = rng.uniform(-1, 1, size=5)
    return out


def _dc_and_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return 0.3 + 0.01 * rng.standard_normal(n)


def _half_silent(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = _sines(rng, n, sr)
    out[: n // 2] = 0.0
    return out


SIGNALS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "noise": _noise,
    "sines": _sines,
    "chirp": _chirp,
    "silence": _silence,
    "clipped": _clipped,
    "very_quiet": _very_quiet,
    "impulses": _impulses,
    "dc": _dc_and_noise,
    "half_silent": _half_silent,
}


def _lengths(rng: np.random.Generator, spec: FrontendSpec, count: int = 3) -> list[int]:
    """Exactly one window, whole frames, and lengths with a partial trailing frame."""
    return [spec.win_length] + [
        spec.window_samples(int(rng.integers(2, 40))) + int(rng.integers(0, spec.hop_length)) for _ in range(count)
    ]


# -- librosa preset ------------------------------------------------------------------------------------

LIBROSA_PARAMS: list[dict] = [
    {},  # librosa's own defaults: 22050 Hz, n_fft 2048, hop 512, 128 mels, 20 MFCCs
    {"sample_rate": 16000, "n_fft": 1024, "hop_length": 256, "n_mels": 64, "n_mfcc": 40, "fmin": 20.0},
    {"sample_rate": 16000, "n_fft": 512, "hop_length": 160, "n_mels": 40, "n_mfcc": 13},
    {
        "sample_rate": 44100,
        "n_fft": 4096,
        "hop_length": 1000,
        "n_mels": 96,
        "n_mfcc": 30,
        "fmin": 30.0,
        "fmax": 16000.0,
    },
    {"sample_rate": 8000, "n_fft": 256, "hop_length": 100, "n_mels": 24, "n_mfcc": 24, "fmin": 50.0, "fmax": 3500.0},
]


def librosa_reference(y: np.ndarray, spec: FrontendSpec) -> np.ndarray:
    """librosa's MFCC with the spec's parameters, framed and floored the streaming-safe way."""
    mel = librosa_mel(y, spec)
    return librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=spec.n_mfcc)


def librosa_mel(y: np.ndarray, spec: FrontendSpec) -> np.ndarray:
    return librosa.feature.melspectrogram(
        y=np.asarray(y, dtype=np.float64),
        sr=spec.sample_rate,
        n_fft=spec.n_fft,
        hop_length=spec.hop_length,
        n_mels=spec.n_mels,
        fmin=spec.fmin,
        fmax=spec.fmax,
        center=False,
    )


@pytest.mark.parametrize(
    "params", LIBROSA_PARAMS, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()) or "default"
)
@pytest.mark.parametrize("kind", sorted(SIGNALS))
def test_librosa_preset_matches_librosa_mfcc(params: dict, kind: str) -> None:
    spec = librosa_preset(**params)
    rng = np.random.default_rng([LIBROSA_PARAMS.index(params), sorted(SIGNALS).index(kind)])
    for n in _lengths(rng, spec):
        y = SIGNALS[kind](rng, n, spec.sample_rate)
        ours = mfcc(y, spec)
        reference = librosa_reference(y, spec)
        assert ours.shape == reference.shape == (spec.n_mfcc, spec.n_frames(n))
        np.testing.assert_allclose(ours, reference, rtol=0, atol=LIBROSA_TOL, err_msg=f"{kind}, {n} samples")


@pytest.mark.parametrize("params", LIBROSA_PARAMS[:3])
def test_librosa_preset_on_float32_and_int16_input(params: dict) -> None:
    """Our float32 / int16 paths equal librosa given the same values as float64 (int16 scaled by 1/32768)."""
    spec = librosa_preset(**params)
    rng = np.random.default_rng(7)
    as_int16 = (rng.standard_normal(spec.window_samples(30)) * 4000).clip(-32768, 32767).astype(np.int16)
    np.testing.assert_allclose(mfcc(as_int16, spec), librosa_reference(as_int16 / 32768.0, spec), atol=LIBROSA_TOL)
    as_float32 = (rng.standard_normal(spec.window_samples(30)) * 0.2).astype(np.float32)
    np.testing.assert_allclose(mfcc(as_float32, spec), librosa_reference(as_float32, spec), atol=LIBROSA_TOL)


@pytest.mark.parametrize("seed", range(4))
def test_mel_power_and_log_mel_match_librosa(seed: int) -> None:
    """The two pre-DCT stages other studies use (mel vs log-mel vs MFCC inputs) equal librosa's too."""
    rng = np.random.default_rng(seed)
    spec = librosa_preset(**LIBROSA_PARAMS[seed % len(LIBROSA_PARAMS)])
    y = SIGNALS[sorted(SIGNALS)[seed * 2]](rng, spec.window_samples(25) + 17, spec.sample_rate)
    reference = librosa_mel(y, spec)
    ours = mel_power(y, spec)
    assert ours.shape == reference.shape == (spec.n_mels, 25)
    assert ours.dtype == np.float32
    # float32 output of a mel power: relative error, plus an absolute one for all-zero (silent) bands
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(log_mel(y, spec), librosa.power_to_db(reference, top_db=None), atol=LIBROSA_TOL)


def test_log_mel_is_mfcc_before_the_dct() -> None:
    """log_mel is the stage mfcc's DCT starts from: an orthonormal DCT of it gives mfcc."""
    spec = librosa_preset(sample_rate=16000, n_fft=1024, hop_length=256, n_mels=64, n_mfcc=64)
    y = _noise(np.random.default_rng(3), 16000, 16000)
    n = spec.n_mels
    basis = np.cos(np.pi * np.arange(n)[:, None] * (2 * np.arange(n)[None, :] + 1) / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    np.testing.assert_allclose(basis @ log_mel(y, spec).astype(np.float64), mfcc(y, spec), atol=2e-3)


def test_center_false_is_librosa_centring_minus_its_edge_padding() -> None:
    """With librosa's default centring, interior frames are ours shifted by n_fft / 2 / hop: only edges differ."""
    spec = librosa_preset()  # n_fft 2048, hop 512: librosa frame t is centred on sample t*512 -> ours t - 2
    y = _sines(np.random.default_rng(11), 22050 * 2, 22050)
    ours = mfcc(y, spec)
    centred = librosa.feature.mfcc(
        S=librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=22050), top_db=None), n_mfcc=20
    )
    shift = spec.n_fft // 2 // spec.hop_length
    np.testing.assert_allclose(centred[:, shift : shift + ours.shape[1]], ours, atol=LIBROSA_TOL)
    assert not np.allclose(centred[:, 0], ours[:, 0], atol=1.0)  # the padded edge frame is a different frame


def test_top_db_makes_a_frame_depend_on_the_rest_of_the_clip() -> None:
    """Why the spec uses a fixed floor: librosa's default top_db=80 changes a quiet note when a loud one follows."""
    spec = librosa_preset(sample_rate=16000, n_fft=1024, hop_length=256, n_mels=64, n_mfcc=20)
    rng = np.random.default_rng(5)
    quiet = _sines(rng, 16000, 16000) * 1e-3 + rng.standard_normal(16000) * 1e-6
    loud = np.concatenate([quiet, rng.standard_normal(16000)])
    n = spec.n_frames(quiet.size)

    def librosa_default(y: np.ndarray) -> np.ndarray:
        return librosa.feature.mfcc(y=y, sr=16000, n_fft=1024, hop_length=256, n_mels=64, n_mfcc=20, center=False)

    assert np.abs(librosa_default(loud)[:, :n] - librosa_default(quiet)).max() > 1.0
    np.testing.assert_array_equal(mfcc(loud, spec)[:, :n], mfcc(quiet, spec))


# -- python_speech_features preset -------------------------------------------------------------------

PSF_PARAMS: list[dict] = [
    {},  # psf defaults: 16 kHz, 25 ms / 10 ms, nfft 512, 26 filters, 13 ceps
    {"winlen": 0.064, "winstep": 0.016, "numcep": 40, "nfilt": 64, "nfft": 1024, "lowfreq": 20.0, "highfreq": 8000.0},
    {"sample_rate": 8000, "winlen": 0.032, "winstep": 0.016, "numcep": 12, "nfilt": 20, "nfft": 256},
    {"sample_rate": 44100, "winlen": 0.025, "winstep": 0.01, "numcep": 20, "nfilt": 40, "nfft": 2048},
    {"winlen": 0.02, "winstep": 0.0125, "numcep": 13, "nfilt": 26, "nfft": 512, "lowfreq": 300.0, "highfreq": 7000.0},
]


def _psf_kwargs(spec: FrontendSpec, params: dict) -> dict:
    return {
        "samplerate": spec.sample_rate,
        "winlen": params.get("winlen", 0.025),
        "winstep": params.get("winstep", 0.01),
        "nfilt": spec.n_mels,
        "nfft": spec.n_fft,
        "lowfreq": spec.fmin,
        "highfreq": params.get("highfreq"),
    }


def psf_reference(signal: np.ndarray, spec: FrontendSpec, params: dict) -> np.ndarray:
    """python_speech_features.mfcc with the same parameters, as (numcep, frames)."""
    signal = np.asarray(signal, dtype=np.float64)
    return python_speech_features.mfcc(signal, numcep=spec.n_mfcc, **_psf_kwargs(spec, params)).T


def psf_sub_eps_frames(signal: np.ndarray, spec: FrontendSpec, params: dict) -> np.ndarray:
    """Frames where psf takes the log of a filterbank energy in (0, eps): its log is unbounded there, ours floored.

    psf replaces only exact zeros by eps (``numpy.where(feat == 0, eps, feat)``);
    the spec's fixed floor clamps everything below it. The two differ only for
    band energies between 0 and 2.2e-16, i.e. about -156 dB, far below the
    quantisation noise of 16-bit (or 24-bit) audio: in practice the one frame
    where a synthesised float release tail fades into digital silence.
    """
    feat, energy = python_speech_features.fbank(np.asarray(signal, dtype=np.float64), **_psf_kwargs(spec, params))
    eps = np.finfo(np.float64).eps
    return ((feat > 0) & (feat < eps)).any(axis=1) | ((energy > 0) & (energy < eps))


def psf_reference_clamped(signal: np.ndarray, spec: FrontendSpec, params: dict) -> np.ndarray:
    """psf's own pipeline (fbank, log, DCT, lifter, log energy) with a clamp at eps instead of zero replacement."""
    from scipy.fftpack import dct

    feat, energy = python_speech_features.fbank(np.asarray(signal, dtype=np.float64), **_psf_kwargs(spec, params))
    eps = np.finfo(np.float64).eps
    cepstra = dct(np.log(np.maximum(feat, eps)), type=2, axis=1, norm="ortho")[:, : spec.n_mfcc]
    cepstra = python_speech_features.lifter(cepstra, spec.lifter)
    cepstra[:, 0] = np.log(np.maximum(energy, eps))
    return cepstra.T


def psf_padded_frames(n_samples: int, spec: FrontendSpec) -> int:
    """How many frames psf makes: it zero-pads a trailing partial frame (and a clip shorter than one window)."""
    if n_samples <= spec.win_length:
        return 1
    return 1 + int(np.ceil((n_samples - spec.win_length) / spec.hop_length))


def assert_psf_parity(signal: np.ndarray, spec: FrontendSpec, params: dict, ours: np.ndarray | None = None) -> int:
    """Equal on every frame we make, bar psf's unbounded log below eps; returns how many frames were sub-eps.

    psf's only extra frame is the zero-padded trailing one, and only when the
    clip ends in a partial frame. Frames where psf logs an energy in (0, eps)
    are compared with psf's pipeline clamped at eps instead, which proves the
    floor is the only difference there.
    """
    n_samples = signal.shape[0]
    ours = mfcc(signal, spec) if ours is None else ours
    reference = psf_reference(signal, spec, params)
    assert ours.shape == (spec.n_mfcc, spec.n_frames(n_samples))
    assert reference.shape[1] == psf_padded_frames(n_samples, spec)
    partial_tail = (n_samples - spec.win_length) % spec.hop_length != 0
    assert reference.shape[1] - ours.shape[1] == (1 if partial_tail else 0)
    n = ours.shape[1]
    sub_eps = psf_sub_eps_frames(signal, spec, params)[:n]
    np.testing.assert_allclose(ours[:, ~sub_eps], reference[:, :n][:, ~sub_eps], rtol=0, atol=PSF_TOL)
    if sub_eps.any():
        clamped = psf_reference_clamped(signal, spec, params)[:, :n]
        np.testing.assert_allclose(ours, clamped, rtol=0, atol=PSF_TOL)
    return int(sub_eps.sum())


@pytest.mark.parametrize("params", PSF_PARAMS, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()) or "default")
@pytest.mark.parametrize("kind", sorted(SIGNALS))
def test_psf_preset_matches_python_speech_features(params: dict, kind: str) -> None:
    spec = psf_preset(**params)
    rng = np.random.default_rng([100 + PSF_PARAMS.index(params), sorted(SIGNALS).index(kind)])
    for n in _lengths(rng, spec):
        y = SIGNALS[kind](rng, n, spec.sample_rate)
        assert assert_psf_parity(y, spec, params) == 0  # random signals never reach psf's sub-eps logs


def test_psf_trailing_padded_frame_is_the_only_difference() -> None:
    """psf's extra frame is made of zeros past the end of the clip: it changes when the clip goes on, ours never."""
    spec = psf_preset()
    y = _sines(np.random.default_rng(2), 16000, 16000)
    n = spec.window_samples(20) + 37  # a partial trailing frame of 37 samples
    short, longer = psf_reference(y[:n], spec, {}), psf_reference(y, spec, {})
    assert short.shape[1] == 21 and mfcc(y[:n], spec).shape[1] == 20
    np.testing.assert_allclose(short[:, :20], longer[:, :20], atol=PSF_TOL)  # complete frames: fixed
    assert np.abs(short[:, 20] - longer[:, 20]).max() > 0.1  # the padded frame: depends on the future
    np.testing.assert_allclose(mfcc(y, spec)[:, :20], mfcc(y[:n], spec), atol=0)


def test_psf_int16_and_float32_inputs() -> None:
    spec = psf_preset()
    rng = np.random.default_rng(9)
    as_int16 = (rng.standard_normal(8000) * 3000).astype(np.int16)
    assert_psf_parity(as_int16 / 32768.0, spec, {}, ours=mfcc(as_int16, spec))
    as_float32 = (rng.standard_normal(8000) * 0.1).astype(np.float32)
    assert_psf_parity(as_float32, spec, {})


def test_psf_preset_rounds_window_lengths_half_up_like_psf() -> None:
    """psf rounds winlen * rate half up on the exact value (Decimal); 0.0125 s at 44.1 kHz is 551.25 -> 551."""
    assert psf_preset(sample_rate=44100, winlen=0.025, winstep=0.0125, nfft=2048).hop_length == 551
    assert psf_preset(sample_rate=44100, winlen=0.025, nfft=2048).win_length == 1103  # 1102.5 -> 1103
    assert psf_preset(sample_rate=16000, winlen=0.0250625, nfft=512).win_length == 401  # 400.999... -> 401


def test_short_clips_give_no_frames() -> None:
    """A clip shorter than one window has no complete frame (psf would invent a zero-padded one)."""
    for spec in (librosa_preset(), psf_preset(), FrontendSpec()):
        assert mfcc(np.zeros(spec.win_length - 1), spec).shape == (spec.n_mfcc, 0)
        assert mfcc(np.zeros(spec.win_length), spec).shape == (spec.n_mfcc, 1)


# -- real notes --------------------------------------------------------------------------------------

NOTES = [(0, 60), (73, 79), (40, 55), (32, 36), (56, 70), (11, 84)]  # piano, flute, violin, bass, trumpet, vibraphone


@pytest.fixture(scope="module")
def rendered_notes() -> dict[int, list[np.ndarray]]:
    """A few General MIDI notes from the TimGM6mb SoundFont inside pretty_midi, at 16 and 22.05 kHz."""
    import tinysoundfont

    from instrument_ai.train.corpus.demo_clip import timgm6mb_path

    sf2 = timgm6mb_path()
    assert sf2.exists(), f"{sf2} missing: pretty_midi ships it"
    notes: dict[int, list[np.ndarray]] = {}
    for rate in (16000, 22050):
        synth = tinysoundfont.Synth(samplerate=rate)
        sfid = synth.sfload(str(sf2))
        notes[rate] = []
        for program, pitch in NOTES:
            synth.program_select(0, sfid, 0, program)
            synth.noteon(0, pitch, 100)
            held = np.frombuffer(synth.generate(int(0.8 * rate)), dtype=np.float32)
            synth.noteoff(0, pitch)
            tail = np.frombuffer(synth.generate(int(0.4 * rate)), dtype=np.float32)
            synth.sounds_off()
            mono = np.concatenate([held, tail]).reshape(-1, 2).mean(axis=1)
            assert np.abs(mono).max() > 1e-3, f"program {program} rendered silence"
            notes[rate].append(mono.astype(np.float32))
    return notes


def test_rendered_notes_librosa_parity(rendered_notes: dict[int, list[np.ndarray]]) -> None:
    for params in LIBROSA_PARAMS[:3]:
        spec = librosa_preset(**params)
        for note in rendered_notes[spec.sample_rate]:
            np.testing.assert_allclose(mfcc(note, spec), librosa_reference(note, spec), atol=LIBROSA_TOL)


def test_rendered_notes_psf_parity(rendered_notes: dict[int, list[np.ndarray]]) -> None:
    frames = sub_eps = 0
    for params in PSF_PARAMS[:2] + PSF_PARAMS[4:]:
        spec = psf_preset(**params)
        for note in rendered_notes[16000]:
            sub_eps += assert_psf_parity(note, spec, params)
            frames += spec.n_frames(note.size)
    assert sub_eps <= frames // 100, f"{sub_eps} of {frames} frames below psf's eps"


def test_psf_sub_eps_difference_is_only_the_floor() -> None:
    """A frame whose only sound is one sample of 1e-9: psf logs ~1e-19, we floor at eps (psf clamped agrees)."""
    spec = psf_preset()
    y = np.zeros(spec.window_samples(5))
    y[spec.window_samples(3) - 50] = 1e-9
    assert psf_sub_eps_frames(y, spec, {}).any()
    assert np.abs(mfcc(y, spec) - psf_reference(y, spec, {})).max() > 1.0
    assert assert_psf_parity(y, spec, {}) > 0


def test_demo_clip_parity() -> None:
    assert DEMO.exists(), f"{DEMO} missing"
    audio, rate = soundfile.read(DEMO, dtype="float32")
    assert rate == 16000 and audio.ndim == 1 and audio.size > 10 * rate
    spec = librosa_preset(sample_rate=16000, n_fft=1024, hop_length=256, n_mels=64, n_mfcc=40, fmin=20.0)
    np.testing.assert_allclose(mfcc(audio, spec), librosa_reference(audio, spec), atol=LIBROSA_TOL)
    spec = psf_preset()
    sub_eps = assert_psf_parity(audio, spec, {})  # a few frames where Vorbis fades into digital silence
    assert sub_eps <= spec.n_frames(audio.size) // 100

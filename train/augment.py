"""Augmentation against what a microphone does to a note, split by where it is cheap.

Feature extraction is the cost of training (an MFCC of a 4 s note costs ~15 ms,
the CNN step for its windows far less), so augmentation is split in two:

* **Audio domain, once per note, cached** (`AudioAugment`, `render_rendition`):
  what is *not* linear in the log-mel domain and so cannot be faked on
  features: added noise at 10-40 dB SNR (white or pink), a synthetic room
  (exponentially decaying noise impulse response, RT60 0.1-0.8 s, mixed with
  the dry note), band-limiting like a cheap microphone (high-pass 60-400 Hz,
  low-pass 3.5-7.5 kHz), a small pitch shift (+-40 cents, by resampling), and
  a time shift (silence before the onset, so windows that hold the attack
  start at every position, plus a sub-hop shift so frames do not always align
  with the onset), and short notes (`short_prob`: the note cut 0.1-0.6 s after
  its onset with a raised-cosine release of 30-150 ms, then a room's tail, as
  a staccato or a quick passage sounds: the corpus renders mostly long notes,
  and real notes under 0.5 s are where the models fail most). K such
  renditions per note are extracted once and cached on disk beside the clean
  note (`FeatureCache` in features.py).
* **Feature domain, per batch, free** (`FeatureAugment`, `augment_features`):
  what *is* linear in the log-mel domain. A gain of g dB adds g to every log-mel
  band, which after the DCT is a shift of c0 only; a smooth EQ curve e(m) over
  the mel bands (a spectral tilt plus a few low-order cosine bumps) adds
  ``DCT @ e`` to the MFCCs. Exact except where a band sits on the log floor.
  The random crop of a window from anywhere in the note is also per batch.

The clean note is always kept as rendition 0. Every random choice comes from a
`numpy.random.Generator` the caller seeds, so a cache is reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from instrument_ai.device.frontend import FrontendSpec, dct_matrix


def _from_dict(cls: type, data: dict[str, Any] | None) -> Any:
    """Build a config dataclass from a dict, refusing unknown keys (a typo must not silently do nothing)."""
    if data is None:
        return cls()
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


@dataclass(frozen=True)
class AudioAugment:
    """Settings of the cached audio-domain renditions (part of the feature-cache key)."""

    copies: int = 2
    """Augmented renditions per note, beside the clean one (0 = clean only)."""
    noise_prob: float = 0.8
    snr_db: tuple[float, float] = (10.0, 40.0)
    pink_prob: float = 0.5
    reverb_prob: float = 0.5
    rt60_s: tuple[float, float] = (0.1, 0.8)
    wet: tuple[float, float] = (0.1, 0.5)
    bandlimit_prob: float = 0.5
    highpass_hz: tuple[float, float] = (60.0, 400.0)
    lowpass_hz: tuple[float, float] = (3500.0, 7500.0)
    pitch_prob: float = 0.5
    pitch_cents: float = 40.0
    preroll_s: tuple[float, float] = (0.0, 0.5)
    seed: int = 0
    short_prob: float = 0.0
    """Share of renditions cut to a short note (0: off, the renditions of every recipe before 0.5)."""
    short_s: tuple[float, float] = (0.1, 0.6)
    """How long a short note is held after its onset, before its release begins (seconds)."""
    release_s: tuple[float, float] = (0.03, 0.15)
    """The release: a raised-cosine fade to zero over this long (no click at the cut)."""
    short_reverb_prob: float = 0.5
    """Chance that a short note gets a room (RT60 `rt60_s`) even where `reverb_prob` says none: its tail."""
    vibrato_prob: float = 0.0
    """Share of (long) renditions given a vibrato: a sinusoidal pitch swing, as a player sustains a note."""
    vibrato_cents: tuple[float, float] = (10.0, 40.0)
    vibrato_hz: tuple[float, float] = (4.0, 7.0)
    tremolo_prob: float = 0.0
    """Share of (long) renditions given a tremolo: a sinusoidal swing of the level."""
    tremolo_depth: tuple[float, float] = (0.1, 0.4)
    tremolo_hz: tuple[float, float] = (3.0, 8.0)

    def __post_init__(self) -> None:
        if not 0 <= self.copies <= 16:
            raise ValueError(f"audio augmentation: copies must be in 0..16, got {self.copies}")
        probabilities = ("noise_prob", "pink_prob", "reverb_prob", "bandlimit_prob", "pitch_prob")
        for name in (*probabilities, "short_prob", "short_reverb_prob", "vibrato_prob", "tremolo_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"audio augmentation: {name} must be a probability")
        ranges = ("snr_db", "rt60_s", "wet", "highpass_hz", "lowpass_hz", "preroll_s", "short_s", "release_s")
        for name in (*ranges, "vibrato_cents", "vibrato_hz", "tremolo_depth", "tremolo_hz"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"audio augmentation: {name} must be (low, high), got {(lo, hi)}")
        if self.short_s[0] <= 0 or self.release_s[0] <= 0:
            raise ValueError("audio augmentation: short_s and release_s must be positive")
        if self.tremolo_depth[0] < 0.0 or self.tremolo_depth[1] > 1.0:
            raise ValueError("audio augmentation: tremolo_depth must be within 0..1")

    def to_dict(self) -> dict[str, Any]:
        """The fields (the feature-cache key); the short-note, vibrato and tremolo ones only when they are on,
        so the renditions and caches of earlier recipes keep their key."""
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        for switch, names in ((self.short_prob, SHORT_NOTE_FIELDS), (self.vibrato_prob, VIBRATO_FIELDS),
                              (self.tremolo_prob, TREMOLO_FIELDS)):  # fmt: skip
            if not switch:
                for name in names:
                    data.pop(name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AudioAugment:
        return _from_dict(cls, data)


SHORT_NOTE_FIELDS = ("short_prob", "short_s", "release_s", "short_reverb_prob")
VIBRATO_FIELDS = ("vibrato_prob", "vibrato_cents", "vibrato_hz")
TREMOLO_FIELDS = ("tremolo_prob", "tremolo_depth", "tremolo_hz")


@dataclass(frozen=True)
class FeatureAugment:
    """Settings of the per-batch feature-domain augmentation (not part of the cache key)."""

    enabled: bool = True
    gain_db: float = 12.0
    """Uniform gain in +-gain_db (a c0 shift)."""
    tilt_db: float = 6.0
    """Spectral tilt: the EQ curve rises or falls linearly by up to tilt_db across the mel range."""
    bump_db: float = 3.0
    """Amplitude bound of each of `bumps` random low-order cosine EQ bumps."""
    bumps: int = 3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FeatureAugment:
        return _from_dict(cls, data)


# -- audio domain ---------------------------------------------------------------------------


def _pitch_shift(audio: np.ndarray, cents: float) -> np.ndarray:
    """Resample by 2**(cents/1200) with linear interpolation: pitch and formants move together, like a varispeed."""
    if cents == 0.0 or audio.size < 2:
        return audio
    ratio = 2.0 ** (cents / 1200.0)
    n_out = max(2, int(round(audio.size / ratio)))
    positions = np.arange(n_out) * ratio
    return np.interp(positions, np.arange(audio.size), audio, right=0.0)


def _room_ir(rng: np.random.Generator, sample_rate: int, rt60: float) -> np.ndarray:
    """Exponentially decaying Gaussian noise: -60 dB after rt60 seconds; unit energy."""
    n = max(1, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    ir = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: amplitude -60 dB at rt60
    return ir / math.sqrt(float(np.sum(ir**2)) + 1e-12)


def _magnitude_response(
    rng: np.random.Generator, freqs: np.ndarray, config: AudioAugment, sample_rate: int
) -> np.ndarray | None:
    """Zero-phase band-limiting (2nd-order-like high-pass and 4th-order-like low-pass magnitudes), or None."""
    if rng.random() >= config.bandlimit_prob:
        return None
    hp = rng.uniform(*config.highpass_hz)
    lp = min(rng.uniform(*config.lowpass_hz), 0.49 * sample_rate)
    f = np.maximum(freqs, 1e-3)
    ratio_hp = np.square(hp / f)  # multiplications, not **: np.power is slow on 40k+ bins
    ratio_lp = np.square(np.square(f / lp))
    denominator = (1.0 + np.square(ratio_hp)) * (1.0 + np.square(ratio_lp))
    return 1.0 / np.sqrt(denominator)


def fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFT sizes that pocketfft does fast (a power of two can be ~50 % longer)."""
    n = max(1, int(n))
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _noise(rng: np.random.Generator, n: int, pink: bool) -> np.ndarray:
    """White or pink (1/f power) Gaussian noise of unit RMS.

    Pink noise is shaped in the frequency domain at a 5-smooth length and cut
    to `n`: an FFT of an arbitrary (possibly prime) length is ~10x slower.
    """
    if not pink:
        noise = rng.standard_normal(n)
    else:
        size = fast_length(max(n, 2))
        spectrum = np.fft.rfft(rng.standard_normal(size))
        spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1.0))
        noise = np.fft.irfft(spectrum, n=size)[:n]
    return noise / (math.sqrt(float(np.mean(noise**2))) + 1e-12)


ONSET_FRACTION = 0.05
"""A note's onset, for cutting it short: its first sample above this fraction of its peak."""


def cut_short(audio: np.ndarray, sample_rate: int, held_s: float, release_s: float) -> np.ndarray:
    """The note held `held_s` after its onset, then a raised-cosine release over `release_s`, then silence.

    The fade's slope is zero at both ends, so the cut adds no click; a note that has already ended by then is
    returned unchanged. The length is kept (the rest is zeros), so a room can ring into it.
    """
    note = np.asarray(audio, dtype=np.float64)
    peak = float(np.max(np.abs(note))) if note.size else 0.0
    if peak == 0.0:
        return note
    onset = int(np.argmax(np.abs(note) >= ONSET_FRACTION * peak))
    start = onset + int(round(held_s * sample_rate))
    length = max(1, int(round(release_s * sample_rate)))
    if start >= note.size:
        return note
    out = note.copy()
    stop = min(note.size, start + length)
    fade = 0.5 * (1.0 + np.cos(np.pi * np.arange(1, length + 1) / length))  # 1 -> 0, flat at both ends
    out[start:stop] *= fade[: stop - start]
    out[stop:] = 0.0
    return out


def vibrato(audio: np.ndarray, sample_rate: int, cents: float, hz: float, phase: float = 0.0) -> np.ndarray:
    """The note read at a rate that swings +-`cents` around 1, `hz` times a second: its pitch swings with it."""
    note = np.asarray(audio, dtype=np.float64)
    if note.size < 2 or cents == 0.0:
        return note
    t = np.arange(note.size) / sample_rate
    rate = 2.0 ** (cents * np.sin(2 * np.pi * hz * t + phase) / 1200.0)
    positions = np.concatenate([[0.0], np.cumsum(rate[:-1])])
    return np.interp(positions, np.arange(note.size), note, right=0.0)


def tremolo(audio: np.ndarray, sample_rate: int, depth: float, hz: float, phase: float = 0.0) -> np.ndarray:
    """The note's level swung between 1 and 1 - `depth`, `hz` times a second."""
    note = np.asarray(audio, dtype=np.float64)
    t = np.arange(note.size) / sample_rate
    return note * (1.0 - depth * 0.5 * (1.0 - np.cos(2 * np.pi * hz * t + phase)))


def render_rendition(
    audio: np.ndarray, sample_rate: int, hop_length: int, rng: np.random.Generator, config: AudioAugment
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented rendition of a note: returns (augmented, clean_aligned), both float64, equal length.

    `clean_aligned` is the note with the same time and pitch shift but no noise,
    room or filter: the caller gates windows on its energy, so a window of pure
    added noise before the onset is never labelled as the instrument.
    """
    note = np.asarray(audio, dtype=np.float64)
    if rng.random() < config.pitch_prob:
        note = _pitch_shift(note, rng.uniform(-config.pitch_cents, config.pitch_cents))
    short = False
    if config.short_prob and rng.random() < config.short_prob:  # no draw when off: earlier renditions unchanged
        held, release = rng.uniform(*config.short_s), rng.uniform(*config.release_s)
        tail = int((release + config.rt60_s[1]) * sample_rate)
        note = cut_short(np.concatenate([note, np.zeros(tail)]), sample_rate, held, release)
        last = int(np.flatnonzero(note)[-1]) + 1 if np.any(note) else 0
        note = note[: min(note.size, last + tail)]  # room for the tail, no long silence after it
        short = True
    if not short and config.vibrato_prob and rng.random() < config.vibrato_prob:
        phase = rng.uniform(0, 2 * np.pi)
        note = vibrato(note, sample_rate, rng.uniform(*config.vibrato_cents), rng.uniform(*config.vibrato_hz), phase)
    if not short and config.tremolo_prob and rng.random() < config.tremolo_prob:
        phase = rng.uniform(0, 2 * np.pi)
        note = tremolo(note, sample_rate, rng.uniform(*config.tremolo_depth), rng.uniform(*config.tremolo_hz), phase)
    # time shift: whole hops of silence (the crop covers the rest) plus a sub-hop offset
    preroll = int(rng.uniform(*config.preroll_s) * sample_rate) + int(rng.integers(0, max(1, hop_length)))
    clean = np.concatenate([np.zeros(preroll), note])
    n = clean.size
    wet_signal = clean
    reverb = rng.random() < config.reverb_prob
    if short and not reverb:
        reverb = rng.random() < config.short_reverb_prob
    n_fft = fast_length(n + int(config.rt60_s[1] * sample_rate) + 1)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    response = _magnitude_response(rng, freqs, config, sample_rate)
    if reverb or response is not None:
        spectrum = np.fft.rfft(clean, n_fft)
        if reverb:
            ir = _room_ir(rng, sample_rate, rng.uniform(*config.rt60_s))
            wet = rng.uniform(*config.wet)
            room = np.fft.rfft(ir, n_fft)
            spectrum = spectrum * ((1.0 - wet) + wet * room)
        if response is not None:
            spectrum = spectrum * response
        wet_signal = np.fft.irfft(spectrum, n_fft)[:n]
    if rng.random() < config.noise_prob:
        active = clean[np.abs(clean) > 1e-4]
        level = math.sqrt(float(np.mean(active**2))) if active.size else 0.0
        if level > 0.0:
            snr = rng.uniform(*config.snr_db)
            noise = _noise(rng, n, pink=rng.random() < config.pink_prob)
            wet_signal = wet_signal + noise * level * 10.0 ** (-snr / 20.0)
    peak = float(np.max(np.abs(wet_signal))) if n else 0.0
    if peak > 1.0:  # keep a valid [-1, 1] signal; the gain is restored per batch anyway
        wet_signal = wet_signal / peak
    return wet_signal, clean


# -- feature domain -------------------------------------------------------------------------


def band_to_feature_matrix(spec: FrontendSpec, stage: str = "mfcc") -> np.ndarray:
    """(n_features, n_mels) map from a per-mel-band dB change to the change of the features.

    For MFCCs it is the spec's DCT (lifter included) scaled to the spec's log
    unit; for log-mel it is the identity (scaled). With ``energy_c0`` the c0 row
    becomes the band mean, an approximation of the energy change.
    """
    unit = 1.0 if spec.log == "db" else math.log(10.0) / 10.0
    if stage == "log_mel":
        return np.eye(spec.n_mels) * unit
    if stage != "mfcc":
        raise ValueError(f"feature-domain EQ is defined for mfcc and log_mel, not {stage!r}")
    matrix = dct_matrix(spec) * unit
    if spec.energy_c0:
        matrix[0] = unit / spec.n_mels
    return matrix


def random_eq_curves(rng: np.random.Generator, n: int, n_mels: int, config: FeatureAugment) -> np.ndarray:
    """(n, n_mels) smooth random EQ curves in dB: gain + tilt + low-order cosine bumps."""
    position = np.linspace(0.0, 1.0, n_mels)
    gain = rng.uniform(-config.gain_db, config.gain_db, size=(n, 1))
    tilt = rng.uniform(-config.tilt_db, config.tilt_db, size=(n, 1)) * (position[None, :] - 0.5)
    curves = gain + tilt
    if config.bumps > 0 and config.bump_db > 0:
        orders = np.arange(1, config.bumps + 1)
        phases = rng.uniform(0.0, 2.0 * np.pi, size=(n, config.bumps))
        amplitudes = rng.uniform(-config.bump_db, config.bump_db, size=(n, config.bumps))
        waves = np.cos(np.pi * orders[None, :, None] * position[None, None, :] + phases[:, :, None])
        curves = curves + np.einsum("nb,nbm->nm", amplitudes, waves)
    return curves


def augment_features(
    x: np.ndarray, rng: np.random.Generator, band_matrix: np.ndarray, config: FeatureAugment
) -> np.ndarray:
    """Add a random gain + EQ to raw features x (B, n_features, frames), in place and returned.

    `band_matrix` comes from `band_to_feature_matrix`; each window gets its own
    curve, constant over its frames (a microphone's response does not change
    within a second).
    """
    if not config.enabled or x.shape[0] == 0:
        return x
    curves = random_eq_curves(rng, x.shape[0], band_matrix.shape[1], config).astype(x.dtype)
    x += (curves @ band_matrix.T.astype(x.dtype))[:, :, None]
    return x

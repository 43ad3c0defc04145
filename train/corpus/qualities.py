"""NSynth's ten note-quality flags, filled by simple audio heuristics.

NSynth's qualities were tagged by people listening; ours are measured, so they
are approximations meant for the note-qualities experiments of the original
study, not ground truth. Numpy only; every threshold is a named constant so
the corpus stays deterministic and the rules can be read and argued with.

The notes are NSynth notes: 4 s, note-on at 0, note-off at 3 s.

Measured (from a 20 ms RMS envelope in dB and a spectrum of the held part):

* ``bright``: the spectral centroid of the sustained part (50 ms - 1 s) lies at
  least ``BRIGHT_HARMONIC`` times the fundamental *and* above
  ``BRIGHT_MIN_HZ``: strong upper harmonics.
* ``dark``: the centroid lies below ``DARK_HARMONIC`` times the fundamental or
  below ``DARK_MAX_HZ``: little energy above the first harmonics. Centroid in
  harmonic numbers rather than Hz, because a bass note is not "dark" merely for
  being low. Bright and dark are exclusive by construction.
* ``fast_decay``: just before the note-off (2.8 - 3.0 s) the level is more than
  ``FAST_DECAY_DB`` below the peak: the sound has died away while the key is
  still held (plucks, mallets, pianos).
* ``long_release``: 0.5 s after the note-off (3.5 - 3.7 s) the level is within
  ``LONG_RELEASE_DB`` of the level before the note-off and still audible
  (above ``SILENCE_DB`` relative to the peak): the sound lingers after release.
* ``percussive``: the attack (from the onset, the first frame within
  ``ONSET_DB`` of the peak, to the first frame within ``ATTACK_DB`` of the
  peak) takes at most ``PERCUSSIVE_ATTACK_S``, and ``PERCUSSIVE_WINDOW_S``
  later the level is at least ``PERCUSSIVE_DROP_DB`` lower: a struck or
  plucked onset followed by a decay. A held organ tone has a fast attack but
  no drop, a bowed or blown swell has a slow attack: neither is percussive.
* ``nonlinear_env``: during the hold, after the peak, the envelope rises again
  by more than ``NONLINEAR_RISE_DB`` above its running minimum (levels more
  than ``NONLINEAR_FLOOR_DB`` below the peak are ignored): swells, tremolo and
  filter envelopes rather than a monotonic decay.

Share of notes flagged in the default corpus (37,805 notes, 12 libraries):
bright 15 %, dark 14 %, fast_decay 15 %, long_release 4 %, nonlinear_env
11 %, percussive 27 % (mallets 75 %, keyboards and guitars ~45 %, brass and
reeds ~0 % on a 600-note sample).

Always 0, because no sound heuristic exists or the corpus cannot have it:

* ``distortion`` (telling intended distortion from a bright timbre needs a
  listener), ``multiphonic`` (needs robust multi-pitch detection),
  ``reverb`` (notes are rendered dry: tinysoundfont has no effects and the
  builder sets CC91/CC93 to 0; room sound baked into a sample is not detected),
  ``tempo-synced`` (no tempo exists for a single note).
"""

from __future__ import annotations

import numpy as np

from instrument_ai.train.corpus.nsynth import QUALITIES

QUALITY_NAMES: tuple[str, ...] = tuple(QUALITIES)
"""NSynth's quality names, in NSynth's index order."""

MEASURED: tuple[str, ...] = ("bright", "dark", "fast_decay", "long_release", "nonlinear_env", "percussive")
"""The qualities this module measures; the other four are always 0."""

FRAME_SECONDS = 0.02
FLOOR_DB = -120.0
SILENCE_DB = -60.0
BRIGHT_HARMONIC = 6.0
BRIGHT_MIN_HZ = 1500.0
DARK_HARMONIC = 1.6
DARK_MAX_HZ = 250.0
FAST_DECAY_DB = 30.0
LONG_RELEASE_DB = 20.0
ONSET_DB = 40.0
ATTACK_DB = 3.0
PERCUSSIVE_ATTACK_S = 0.05
PERCUSSIVE_WINDOW_S = 0.5
PERCUSSIVE_DROP_DB = 6.0
NONLINEAR_RISE_DB = 10.0
NONLINEAR_FLOOR_DB = 40.0
NOTE_OFF_SECONDS = 3.0


def midi_to_hz(pitch: float) -> float:
    """Equal-tempered frequency of a MIDI note (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((pitch - 69) / 12.0)


def envelope_db(audio: np.ndarray, sample_rate: int, frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """RMS level per non-overlapping frame, in dB full scale, floored at FLOOR_DB."""
    frame = max(1, int(round(frame_seconds * sample_rate)))
    n = len(audio) // frame
    if n == 0:
        return np.full(1, FLOOR_DB)
    blocks = np.asarray(audio[: n * frame], dtype=np.float64).reshape(n, frame)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    return np.maximum(20.0 * np.log10(np.maximum(rms, 1e-12)), FLOOR_DB)


def spectral_centroid(audio: np.ndarray, sample_rate: int, start_s: float = 0.05, stop_s: float = 1.0) -> float:
    """Magnitude-weighted mean frequency (Hz) of a Hann-windowed stretch of the note; 0 for silence."""
    segment = np.asarray(audio[int(start_s * sample_rate) : int(stop_s * sample_rate)], dtype=np.float64)
    if len(segment) < 16:
        return 0.0
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
    total = float(spectrum.sum())
    if total <= 0.0:
        return 0.0
    freqs = np.fft.rfftfreq(len(segment), 1.0 / sample_rate)
    return float((freqs * spectrum).sum() / total)


def _level(env: np.ndarray, start_s: float, stop_s: float) -> float:
    """Mean power (as dB) of the envelope frames between two times."""
    a = int(start_s / FRAME_SECONDS)
    b = max(a + 1, int(stop_s / FRAME_SECONDS))
    part = env[a:b]
    if part.size == 0:
        return FLOOR_DB
    return float(10.0 * np.log10(np.mean(10.0 ** (part / 10.0))))


def measure(audio: np.ndarray, pitch: int, sample_rate: int = 16000) -> dict[str, float]:
    """The numbers the flags are decided from (useful to inspect and to tune the thresholds)."""
    env = envelope_db(audio, sample_rate)
    peak_index = int(np.argmax(env))
    peak_db = float(env[peak_index])
    off = NOTE_OFF_SECONDS
    hold_end = max(1, min(len(env), int(off / FRAME_SECONDS)))
    onset = int(np.argmax(env > peak_db - ONSET_DB))
    attack_end = int(np.argmax(env >= peak_db - ATTACK_DB))
    attack_s = (attack_end - onset) * FRAME_SECONDS
    drop_at = attack_end * FRAME_SECONDS + PERCUSSIVE_WINDOW_S
    drop_db = peak_db - _level(env, min(drop_at, off - 0.1), min(drop_at + 0.1, off))
    # levels far below the peak are the sample's noise floor: their wobble is not an envelope
    after_peak = np.maximum(env[peak_index:hold_end], peak_db - NONLINEAR_FLOOR_DB)
    if after_peak.size > 1:
        running_min = np.minimum.accumulate(after_peak)
        max_rise = float(np.max(after_peak - running_min))
    else:
        max_rise = 0.0
    centroid = spectral_centroid(audio, sample_rate)
    return {
        "peak_db": peak_db,
        "attack_s": attack_s,
        "drop_after_attack_db": drop_db,
        "before_off_db": _level(env, off - 0.2, off),
        "after_off_db": _level(env, off + 0.5, off + 0.7),
        "max_rise_db": max_rise,
        "centroid_hz": centroid,
        "centroid_harmonic": centroid / midi_to_hz(pitch),
    }


def qualities(audio: np.ndarray, pitch: int, sample_rate: int = 16000) -> list[int]:
    """The ten NSynth quality flags (0/1, NSynth order) of one note."""
    m = measure(audio, pitch, sample_rate)
    flags = dict.fromkeys(QUALITY_NAMES, 0)
    peak = m["peak_db"]
    if peak <= FLOOR_DB + 1.0:
        return [0] * len(QUALITY_NAMES)
    flags["bright"] = int(m["centroid_harmonic"] >= BRIGHT_HARMONIC and m["centroid_hz"] >= BRIGHT_MIN_HZ)
    flags["dark"] = int(
        not flags["bright"] and (m["centroid_harmonic"] < DARK_HARMONIC or m["centroid_hz"] < DARK_MAX_HZ)
    )
    flags["fast_decay"] = int(peak - m["before_off_db"] > FAST_DECAY_DB)
    audible_after = m["after_off_db"] > peak + SILENCE_DB
    flags["long_release"] = int(audible_after and m["before_off_db"] - m["after_off_db"] < LONG_RELEASE_DB)
    flags["percussive"] = int(m["attack_s"] <= PERCUSSIVE_ATTACK_S and m["drop_after_attack_db"] >= PERCUSSIVE_DROP_DB)
    flags["nonlinear_env"] = int(m["max_rise_db"] > NONLINEAR_RISE_DB)
    return [flags[name] for name in QUALITY_NAMES]


def names_of(flags: list[int]) -> list[str]:
    """NSynth's ``qualities_str``: the names of the flags that are set, in NSynth order."""
    return [name for name, flag in zip(QUALITY_NAMES, flags, strict=True) if flag]

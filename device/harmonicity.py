"""Pitch salience of a hop: how clearly its audio repeats at one period (issue 23, item 4).

`other` must never swallow an instrument. A played or sung note is periodic (harmonic); speech noise, clicks,
rain and most drums are not. The engine's pitched guard (`decision.guard_pitched`) uses this number to keep
`other` from winning a hop that is clearly pitched.

The measure is the peak of the normalised autocorrelation (Boersma 1993, the core of Praat's pitch tracker):
each frame is Hann-windowed, its autocorrelation (by FFT) is divided by the window's own autocorrelation, and
the highest value at a lag between the periods of `SALIENCE_FMAX` and `SALIENCE_FMIN` is taken - but only past
the first zero crossing, so the slow decay of low-passed noise (brown noise, rumble) is not taken for a period.
1 is a perfectly periodic frame, about 0-0.3 noise or a click; the hop's value is the median over its frames.
numpy only, two FFTs of 4096 points per 0.25 s hop (well under 0.1 ms).

>>> import numpy as np
>>> rate = 16000
>>> t = np.arange(4000) / rate
>>> tone = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 6))
>>> pitch_salience(tone, rate) > 0.9
True
>>> pitch_salience(np.random.default_rng(0).standard_normal(4000), rate) < 0.3
True
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SALIENCE_FMIN = 40.0
"""Lowest fundamental looked for (Hz): a double bass's low E is 41 Hz."""
SALIENCE_FMAX = 1600.0
"""Highest fundamental looked for (Hz): above a piccolo's usual range."""
SALIENCE_FRAME_SECONDS = 0.128
"""Frame length: at least three periods of `SALIENCE_FMIN` fit in half of it (the lags searched)."""


@lru_cache(maxsize=8)
def _window_terms(frame: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The Hann window of `frame` samples, its normalised autocorrelation and the FFT size (cached per size)."""
    window = np.hanning(frame)
    n_fft = 1 << int(np.ceil(np.log2(2 * frame)))
    spectrum = np.fft.rfft(window, n_fft)
    auto = np.fft.irfft(spectrum * np.conj(spectrum), n_fft)[:frame]
    return window, auto / auto[0], n_fft


def frame_salience(frame: np.ndarray, rate: int, *, fmin: float = SALIENCE_FMIN, fmax: float = SALIENCE_FMAX) -> float:
    """The normalised-autocorrelation peak (0..1) of one frame (see the module doc); 0 for a silent frame."""
    return float(_rows_salience(np.asarray(frame, dtype=np.float64).reshape(1, -1), rate, fmin, fmax)[0])


def _rows_salience(frames: np.ndarray, rate: int, fmin: float, fmax: float) -> np.ndarray:
    """`frame_salience` of every row of `frames` (k, n), in one batch of FFTs."""
    x = frames - frames.mean(axis=1, keepdims=True)
    size = x.shape[1]
    window, window_auto, n_fft = _window_terms(size)
    spectrum = np.fft.rfft(x * window, n_fft, axis=1)
    auto = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, n_fft, axis=1)[:, :size]
    low = max(1, int(rate / fmax))
    high = min(size // 2, int(np.ceil(rate / fmin)))
    out = np.zeros(x.shape[0])
    if high <= low:
        return out
    energy = auto[:, :1]
    normalised = (auto[:, : high + 1] / np.where(energy > 0, energy, 1.0)) / np.maximum(window_auto[: high + 1], 1e-9)
    for k, row in enumerate(normalised):
        negative = np.flatnonzero(row < 0.0)
        if energy[k, 0] <= 0.0 or negative.size == 0:  # silent, or never decorrelates: rumble or DC, no pitch
            continue
        out[k] = np.clip(row[max(low, int(negative[0])) :].max(), 0.0, 1.0)
    return out


def pitch_salience(samples: np.ndarray, rate: int, *, frame_seconds: float = SALIENCE_FRAME_SECONDS) -> float:
    """The median `frame_salience` over a hop's frames (half-overlapping; one frame when the hop is short)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    frame = min(x.size, int(round(frame_seconds * rate)))
    if frame < 2 * max(1, int(rate / SALIENCE_FMAX)) + 2:
        return 0.0
    step = max(1, frame // 2)
    frames = np.stack([x[s : s + frame] for s in range(0, x.size - frame + 1, step)])
    return float(np.median(_rows_salience(frames, rate, SALIENCE_FMIN, SALIENCE_FMAX)))

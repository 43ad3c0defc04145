"""The signal side of the SFZ renderer: decode a sample, play it at a pitch ratio (with loops), shape it.

Kept apart from the SFZ text parser (`sfz`) so each stays small. Pitch accuracy matters more than speed
here (the corpus labels pitch from the key mapping), so playback is windowed-sinc interpolation at exact
fractional source positions, low-passed by the playback step so downward resampling does not alias; loops
wrap both the read position and the interpolation taps, so a seamless loop stays click-free.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

RATE = 16000
ZEROS = 12
"""Zero crossings on each side of the interpolation kernel (its quality)."""
_BLOCK = 4096


@dataclass(frozen=True)
class Sample:
    """A decoded sample: mono float32 audio, its rate, and the loop its file names (inclusive frames)."""

    audio: np.ndarray
    rate: int
    loop: tuple[int, int] | None = None


def wav_loop(data: bytes) -> tuple[int, int] | None:
    """The first loop of a WAV file's `smpl` chunk (start, end inclusive), or None."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk == b"smpl" and size >= 36 + 24 and body + 36 + 24 <= len(data):
            count = struct.unpack_from("<I", data, body + 28)[0]
            if count:
                start, end = struct.unpack_from("<II", data, body + 36 + 8)
                return (int(start), int(end)) if end > start else None
            return None
        pos = body + size + (size & 1)
    return None


def decode(data: bytes) -> Sample:
    """Decode WAV/FLAC/OGG/AIFF bytes to mono float32 (raises on unreadable data)."""
    import soundfile

    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1).astype(np.float32) if audio.shape[1] > 1 else audio[:, 0].copy()
    return Sample(mono, int(rate), wav_loop(data))


def _kernel(d: np.ndarray, fc: float, half: int) -> np.ndarray:
    """Blackman-windowed sinc with cutoff `fc` (of the source Nyquist) at tap distances `d`."""
    u = np.clip(d / half, -1.0, 1.0)
    window = 0.42 + 0.5 * np.cos(np.pi * u) + 0.08 * np.cos(2 * np.pi * u)
    return fc * np.sinc(fc * d) * window


def play(
    sample: Sample,
    step: float,
    n_out: int,
    *,
    offset: int = 0,
    loop: tuple[int, int] | None = None,
    loop_until: int | None = None,
) -> np.ndarray:
    """`n_out` output samples reading `sample` from `offset` every `step` source frames.

    With `loop` (inclusive frames), reading wraps inside it: forever, or for the first `loop_until`
    output samples (loop_sustain: after release the read goes on past the loop end to the sample end).
    """
    x = sample.audio
    n_src = len(x)
    fc = min(1.0, 0.95 / step) if step > 0 else 1.0
    half = int(np.ceil(ZEROS / fc))
    taps = np.arange(-half + 1, half + 1)
    t = offset + step * np.arange(n_out, dtype=np.float64)
    looping = np.zeros(n_out, dtype=bool)
    if loop is not None:
        start, end = loop
        length = end - start + 1
        if 0 <= start < end < n_src and length > 1:
            limit = n_out if loop_until is None else max(0, min(n_out, loop_until))
            looping[:limit] = True
            wrapped = np.where(t >= start, start + np.mod(t - start, length), t)
            if limit < n_out:  # after release: go on from where the loop was, past its end
                at = wrapped[limit - 1] + step if limit > 0 else t[0]
                wrapped[limit:] = at + step * np.arange(n_out - limit)
            passes = np.where(looping, np.floor((t - start) / length), 0)
            t = wrapped
        else:
            loop = None
    out = np.zeros(n_out, dtype=np.float64)
    for lo in range(0, n_out, _BLOCK):
        hi = min(n_out, lo + _BLOCK)
        base = np.floor(t[lo:hi]).astype(np.int64)
        frac = t[lo:hi] - base
        idx = base[:, None] + taps[None, :]
        if loop is not None:
            start, end = loop
            length = end - start + 1
            on = looping[lo:hi, None]
            idx = np.where(on & (idx > end), start + np.mod(idx - start, length), idx)
            again = on & (passes[lo:hi, None] >= 1) & (idx < start)
            idx = np.where(again, idx + length, idx)
        h = _kernel(frac[:, None] - taps[None, :], fc, half)
        h /= np.maximum(h.sum(axis=1, keepdims=True), 1e-9)
        valid = (idx >= 0) & (idx < n_src)
        values = np.where(valid, x[np.clip(idx, 0, max(n_src - 1, 0))], 0.0) if n_src else np.zeros(idx.shape)
        out[lo:hi] = (values * h).sum(axis=1)
    return out


def envelope(
    n: int,
    *,
    delay: float = 0.0,
    attack: float = 0.0,
    hold: float = 0.0,
    decay: float = 0.0,
    sustain: float = 1.0,
    release: float = 0.001,
    release_at: int | None = None,
) -> np.ndarray:
    """The SFZ amplitude envelope (DAHDSR), `n` samples at 16 kHz, released at sample `release_at`.

    Attack is linear; decay and release fall exponentially (-60 dB over their time, then exactly to their
    target), so the curve has no steps.
    """
    t = np.arange(n, dtype=np.float64) / RATE - max(0.0, delay)
    env = np.zeros(n)
    attack, hold, decay = max(0.0, attack), max(0.0, hold), max(0.0, decay)
    sustain = float(np.clip(sustain, 0.0, 1.0))
    on = t >= 0
    env[on] = 1.0
    if attack > 0:
        rising = on & (t < attack)
        env[rising] = t[rising] / attack
    d0 = attack + hold
    falling = t >= d0
    if decay > 0:
        u = (t[falling] - d0) / decay
        env[falling] = sustain + (1 - sustain) * np.clip((10 ** (-3 * u) - 1e-3) / (1 - 1e-3), 0, 1)
    else:
        env[falling] = sustain
    if release_at is not None and 0 <= release_at < n:
        level = env[release_at]
        u = np.arange(n - release_at) / RATE / max(release, 1e-4)
        env[release_at:] = level * np.clip((10 ** (-3 * u) - 1e-3) / (1 - 1e-3), 0, 1)
    return env

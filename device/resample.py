"""Streaming sample-rate conversion in numpy: a polyphase windowed-sinc (Kaiser) resampler.

Why it exists: many USB microphones offer only 44.1 or 48 kHz, and asking
PortAudio for the model's 16 kHz fails with "Invalid sample rate [-9997]" (the
most common failure of the Raspberry Pi audio examples). So the device opens a
microphone at its native rate and converts here, in the consumer thread, with
no scipy (the device path may import only numpy).

Design, and why:

* **Rational ratio L/M** (``L = out/g``, ``M = in/g``, ``g = gcd``): output
  sample ``n`` sits at ``n*M`` on the grid of the ``L``-times upsampled signal,
  so every output is an exact dot product of input samples with one of ``L``
  phases of one prototype low-pass filter. No drift, no interpolation error.
* **Kaiser-windowed sinc**, passband flat to ``rolloff`` x the lower Nyquist and
  the stopband starting *at* the lower Nyquist, so a tone above the new Nyquist
  is removed rather than folded back into the band (anti-aliasing), with
  ``attenuation_db`` of rejection. Length follows Kaiser's formula.
* **Delay-compensated**: output sample ``n`` is aligned with input time
  ``n / out_rate`` (the filter's group delay is subtracted), so stream
  timestamps stay true. The cost is a look-ahead of half the filter
  (about 3 ms at 48 kHz); `flush` pads zeros to release it at the end.
* **Block-size independent**: the state is the input history and a sample
  counter, so the output depends only on the samples, never on how they were
  split into blocks (a property the tests check).
* Per block, outputs sharing a phase are a strided sliding window of the input
  times one filter phase: ``L`` small matrix-vector products, no Python loop
  over samples.
"""

from __future__ import annotations

import functools
import math

import numpy as np

DEFAULT_ROLLOFF = 0.9
"""Passband edge as a fraction of the lower Nyquist frequency (7.2 kHz when converting to 16 kHz)."""
DEFAULT_ATTENUATION_DB = 80.0
"""Stopband rejection: a full-scale tone above the new Nyquist leaves less than -80 dBFS."""
MAX_CONVOLVE_CALLS = 24
"""Use the np.convolve form when the ratio needs at most this many convolutions per block."""


def _kaiser_beta(attenuation_db: float) -> float:
    """Kaiser's empirical window parameter for a given stopband attenuation."""
    if attenuation_db > 50:
        return 0.1102 * (attenuation_db - 8.7)
    if attenuation_db >= 21:
        return 0.5842 * (attenuation_db - 21) ** 0.4 + 0.07886 * (attenuation_db - 21)
    return 0.0


@functools.lru_cache(maxsize=16)
def design_filter(
    up: int, down: int, rolloff: float = DEFAULT_ROLLOFF, attenuation_db: float = DEFAULT_ATTENUATION_DB
) -> tuple[np.ndarray, int]:
    """The polyphase bank ``(up, taps)`` and the delay (in upsampled samples) of the prototype.

    ``bank[p, j] = h[p + j*up]``; the prototype ``h`` has odd length and gain
    ``up`` (interpolation by ``up`` needs it to keep unit passband gain).
    """
    # Frequencies relative to the upsampled rate (in_rate * up), where Nyquist is 0.5.
    nyquist = 0.5 / max(up, down)
    transition = (1.0 - rolloff) * nyquist
    cutoff = nyquist - transition / 2
    length = math.ceil((attenuation_db - 7.95) / (2.285 * 2 * math.pi * transition)) + 1
    length += 1 - length % 2  # odd: integer group delay
    centre = (length - 1) // 2
    m = np.arange(length) - centre
    h = 2 * cutoff * np.sinc(2 * cutoff * m) * np.kaiser(length, _kaiser_beta(attenuation_db)) * up
    taps = math.ceil(length / up)
    padded = np.zeros(taps * up)
    padded[:length] = h
    bank = np.ascontiguousarray(padded.reshape(taps, up).T)
    bank.setflags(write=False)
    return bank, centre


def as_float_frames(block: np.ndarray, channels: int) -> np.ndarray:
    """Check a block and return it as float64 ``(n, channels)`` in [-1, 1] (int16 is scaled by 1/32768).

    Raises ValueError with a one-line reason for anything else.
    """
    if not isinstance(block, np.ndarray):
        raise ValueError(f"audio block must be a numpy array, got {type(block).__name__}")
    if block.ndim == 1:
        block = block[:, None]
    if block.ndim != 2 or block.shape[1] != channels:
        raise ValueError(f"audio block must have shape (n, {channels}) (or (n,) for mono), got {block.shape}")
    if block.dtype == np.int16:
        return block.astype(np.float64) / 32768.0
    if block.dtype == np.int32:
        return block.astype(np.float64) / 2147483648.0
    if block.dtype in (np.float32, np.float64):
        out = block.astype(np.float64, copy=False)
        if not np.isfinite(out).all():
            raise ValueError("audio block contains NaN or Inf samples")
        return out
    raise ValueError(f"audio dtype must be float32, float64, int16 or int32, got {block.dtype}")


class StreamResampler:
    """Convert a mono stream from ``in_rate`` to ``out_rate``, block by block.

    >>> rs = StreamResampler(48000, 16000)
    >>> out = rs.process(block)   # float64, any number of samples (0 at the very start)
    >>> tail = rs.flush()         # the last samples, at the end of the stream
    """

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        *,
        rolloff: float = DEFAULT_ROLLOFF,
        attenuation_db: float = DEFAULT_ATTENUATION_DB,
    ) -> None:
        for name, rate in (("input", in_rate), ("output", out_rate)):
            if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
                raise ValueError(f"{name} sample rate must be a positive integer, got {rate!r}")
        if not 0.5 <= rolloff < 1.0:
            raise ValueError(f"rolloff must be in [0.5, 1), got {rolloff}")
        if not 20.0 <= attenuation_db <= 200.0:
            raise ValueError(f"attenuation_db must be in [20, 200], got {attenuation_db}")
        g = math.gcd(int(in_rate), int(out_rate))
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.up, self.down = self.out_rate // g, self.in_rate // g
        self.passthrough = self.up == self.down
        if self.passthrough:
            self.bank, self.delay = np.ones((1, 1)), 0
        else:
            self.bank, self.delay = design_filter(self.up, self.down, rolloff, attenuation_db)
        # Small ratios (48k->16k, 8k->16k, 96k->16k...) run as `up * down` short np.convolve calls,
        # the fastest numpy form; large ones (44.1k->16k: 160/441) as `up` strided matrix-vector products.
        self._convolve = not self.passthrough and self.up * self.down <= MAX_CONVOLVE_CALLS
        if self._convolve:
            width = -(-self.bank.shape[1] // self.down) * self.down  # whole sub-filters of `down` taps
            self.bank = np.pad(self.bank, ((0, 0), (0, width - self.bank.shape[1])))
            self._sub = [
                [np.ascontiguousarray(self.bank[p, q :: self.down]) for q in range(self.down)] for p in range(self.up)
            ]
        self.taps = self.bank.shape[1]
        # Each phase reversed, so that a window of increasing input indices dots with it directly.
        self._bank_rev = np.ascontiguousarray(self.bank[:, ::-1])
        self.reset()

    @property
    def latency_samples(self) -> int:
        """Input samples the resampler holds back (look-ahead of half the filter)."""
        return 0 if self.passthrough else math.ceil(self.delay / self.up)

    @property
    def samples_in(self) -> int:
        """Input samples consumed so far."""
        return self._seen

    def input_needed(self, n_out: int) -> int:
        """Input samples the stream must have consumed before `process` has returned `n_out` outputs in total.

        Lets a caller gather small blocks and resample once per decision
        instead of once per audio callback (the per-call cost dominates for
        20 ms blocks at 44.1 kHz), without waiting any longer than needed.
        """
        if n_out <= 0:
            return 0
        if self.passthrough:
            return n_out
        # output n is computable once input floor((n*down + delay)/up) has arrived
        return ((n_out - 1) * self.down + self.delay) // self.up + 1

    def reset(self) -> None:
        """Forget the stream: the next sample is input sample 0 again."""
        self._buffer = np.zeros(self.taps - 1, dtype=np.float64)  # zeros before the start
        self._base = -(self.taps - 1)  # input index of _buffer[0]
        self._seen = 0  # input samples consumed
        self._next_out = 0  # index of the next output sample

    def process(self, block: np.ndarray) -> np.ndarray:
        """Consume mono samples (1-D float); return every output sample they make computable."""
        samples = np.asarray(block, dtype=np.float64).reshape(-1)
        if self.passthrough:
            self._seen += samples.size
            self._next_out += samples.size
            return samples.copy()
        if samples.size:
            self._buffer = np.concatenate((self._buffer, samples))
            self._seen += samples.size
        return self._emit()

    def flush(self) -> np.ndarray:
        """Pad the stream with zeros to release the outputs still held back; the stream then ends."""
        if self.passthrough:
            return np.zeros(0)
        # Outputs up to the last input instant: n*down <= (seen-1)*up, i.e. n < ceil(seen*up/down).
        wanted = -(-self._seen * self.up // self.down)
        out = [self._emit()]
        missing = wanted - self._next_out
        if missing > 0:
            pad = self.latency_samples + self.taps + 1
            self._buffer = np.concatenate((self._buffer, np.zeros(pad)))
            self._seen += pad
            out.append(self._emit(limit=missing))
        return np.concatenate(out)

    def _emit(self, limit: int | None = None) -> np.ndarray:
        up, down, delay = self.up, self.down, self.delay
        # Largest n whose newest input index floor((n*down + delay)/up) has arrived (< seen).
        last = (self._seen * up - 1 - delay) // down
        count = last - self._next_out + 1
        if limit is not None:
            count = min(count, limit)
        if count <= 0:
            return np.zeros(0)
        start = self._next_out
        out = np.empty(count, dtype=np.float64)
        windows = None if self._convolve else np.lib.stride_tricks.sliding_window_view(self._buffer, self.taps)
        for r in range(min(up, count)):
            # Outputs start+r, start+r+up, ... share one filter phase; their newest input steps by `down`.
            newest, phase = divmod((start + r) * down + delay, up)
            n_phase = len(range(r, count, up))
            first = newest - (self.taps - 1) - self._base  # oldest input of the first window, in _buffer
            if windows is not None:
                out[r::up] = windows[first : first + down * (n_phase - 1) + 1 : down] @ self._bank_rev[phase]
                continue
            # y[m] = sum_q sum_i c[down*i + q] * x[newest + down*(m - i) - q]: one convolution per q.
            width = self.taps // down
            acc = np.zeros(n_phase)
            for q, sub in enumerate(self._sub[phase]):
                begin = newest - q - down * (width - 1) - self._base
                segment = self._buffer[begin : begin + down * (n_phase + width - 2) + 1 : down]
                acc += np.convolve(segment, sub, "valid")
            out[r::up] = acc
        self._next_out += count
        # Keep only the history the next output needs.
        u_next = self._next_out * down + delay
        keep_from = u_next // up - (self.taps - 1)
        drop = keep_from - self._base
        if drop > 0:
            self._buffer = self._buffer[drop:].copy()
            self._base = keep_from
        return out


def resample(signal: np.ndarray, in_rate: int, out_rate: int, **kwargs: float) -> np.ndarray:
    """Resample a whole mono clip (the same filter as the stream; length ``ceil(n*out/in)``)."""
    rs = StreamResampler(in_rate, out_rate, **kwargs)
    return np.concatenate((rs.process(signal), rs.flush()))

"""The one MFCC frontend: numpy only, batch and streaming, driven by a frozen spec.

Training computes its features with this module and the exact `FrontendSpec`
that a model bundle later carries to the device, so the numbers a model was
trained on are the numbers it sees on a Raspberry Pi ("features differ between
training and device" is the most common failure of embedded audio projects).
librosa and python_speech_features are reference oracles in the tests, never a
second implementation.

Design choices, and why:

* **No centring** (``center=False`` framing). librosa pads half a window on both
  sides of the *whole clip*, which a stream cannot do: a frame would depend on
  where the recording started. Frame ``k`` covers samples
  ``[k*hop, k*hop + win_length)``; the clip is never padded.
* **A fixed log floor** instead of librosa's ``top_db`` clip. ``top_db`` clips
  every value to 80 dB below the loudest value of the array it is given, so a
  frame's features would depend on the rest of the clip. A fixed absolute floor
  (``log_floor``) keeps each frame a function of its own samples only.
* **float64 inside, float32 out.** Batch and streaming run the same per-frame
  arithmetic, so they agree to ~1e-12; the model consumes float32.
* **Frames shorter than the FFT are zero-padded at the end**, as numpy's and
  python_speech_features' ``rfft(frame, n_fft)`` do. librosa instead centres a
  short window inside an ``n_fft`` frame; the librosa preset therefore uses
  ``win_length == n_fft``, where the two conventions are identical.
* **Lifter** follows HTK / python_speech_features: ``1 + L/2 * sin(pi * n / L)``
  for ``n = 0 .. n_mfcc-1``.
* **No trailing partial frame.** python_speech_features zero-pads the last,
  incomplete frame; that frame would change once more audio arrives, so a
  stream cannot emit it. Every other psf frame is matched.
* **The floor clamps** (``log(max(x, log_floor))``). psf only replaces exact
  zeros by eps, so for band energies in (0, 2.2e-16) - about -156 dB, below the
  quantisation noise of 16- or 24-bit audio, e.g. where a synthesised float
  release fades into digital silence - its log is unbounded and ours is not.
  The parity tests show this is the only other difference.

Entry points: `mfcc` (whole clip), `MfccStream` (blocks of any size, same
numbers), and the two earlier stages of the same code path, `mel_power` and
`log_mel`, for models that take mel or log-mel inputs.

Speed (see ``instrument-ai bench frontend``): the mel filterbank is applied as a
banded sum over two non-overlapping layers of triangles (`_MelLayers`) rather
than a dense matmul; the dB scale and reference are folded into the DCT table;
frames are strided views of the signal, processed in chunks of `CHUNK_FRAMES`
through buffers reused per thread (`_Workspace`); and numpy's rfft gufunc is
called directly when it is there and verified (`_direct_rfft`). Every frame is
still computed on its own, so none of this changes a number.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np

SPEC_VERSION = 1
"""Bumped whenever the meaning of a spec field changes; a device refuses specs it does not know."""

Window = Literal["hann", "hamming", "rect"]
MelScale = Literal["slaney", "htk"]
MelTriangles = Literal["exact", "bin_floor"]
MelNorm = Literal["slaney", "none"]
LogKind = Literal["db", "ln"]
PowerScale = Literal["none", "1/n_fft"]
DctNorm = Literal["ortho", "none"]
InputStage = Literal["mfcc", "log_mel"]
"""What the model takes: MFCCs, or the log-mel bands the MFCCs' DCT starts from (a 2-D spectrogram CNN)."""

_DB_PER_NEPER = 10.0 / math.log(10.0)
"""10*log10(x) == _DB_PER_NEPER * ln(x); numpy's natural log is about twice as fast as its log10."""

_INT_FIELDS = ("sample_rate", "win_length", "hop_length", "n_fft", "n_mels", "n_mfcc", "dct_type", "lifter", "version")
_FLOAT_FIELDS = ("preemphasis", "fmin", "fmax", "log_floor", "db_ref")


@dataclass(frozen=True)
class FrontendSpec:
    """Every parameter that decides the numbers an MFCC frontend produces.

    Frozen and hashable (so tables are cached per spec) and JSON-serialisable
    (so it travels inside every model bundle). Lengths are in samples.
    """

    sample_rate: int = 16000
    """Samples per second the frontend expects; a source at another rate is resampled to it first."""
    win_length: int = 1024
    """Samples in one analysis frame (the window); at most `n_fft`, shorter frames are zero-padded to it."""
    hop_length: int = 256
    """Samples between the starts of consecutive frames: the time resolution of the features."""
    n_fft: int = 1024
    """FFT size; `n_fft // 2 + 1` frequency bins of `sample_rate / n_fft` Hz each."""
    window: Window = "hann"
    """Taper applied to each frame before the FFT (periodic Hann or Hamming, or none: "rect")."""
    preemphasis: float = 0.0
    """Coefficient `a` of the first-order filter `y[n] = x[n] - a * x[n-1]` that lifts the highs (0: off)."""
    power_scale: PowerScale = "none"
    """Whether the power spectrum is divided by `n_fft` (python_speech_features does, librosa does not)."""
    mel_scale: MelScale = "slaney"
    """Hz-to-mel formula that spaces the bands: Slaney (linear below 1 kHz, as librosa) or HTK."""
    mel_triangles: MelTriangles = "exact"
    """Band triangles evaluated at the exact bin frequencies (librosa), or with corners floored to bins (psf)."""
    n_mels: int = 64
    """Number of mel bands the power spectrum is summed into."""
    fmin: float = 20.0
    """Lower edge of the lowest mel band, in Hz."""
    fmax: float = 8000.0
    """Upper edge of the highest mel band, in Hz; at most the Nyquist frequency `sample_rate / 2`."""
    mel_norm: MelNorm = "slaney"
    """Slaney: each triangle scaled to equal area (wide high bands do not dominate); none: each peaks at 1."""
    log: LogKind = "db"
    """Compression of the band energies: decibels (10 log10, minus `db_ref`) or the natural log."""
    log_floor: float = 1e-10
    """Fixed floor under every energy before the log: keeps silence finite and each frame independent of the clip."""
    db_ref: float = 1.0
    """Power that maps to 0 dB (used only when `log` is "db")."""
    n_mfcc: int = 40
    """Cepstral coefficients kept from the DCT of the log-mel bands: the model's input rows; at most `n_mels`."""
    dct_type: int = 2
    """DCT variant; only type 2 is supported (the field exists so a later type is refused, not misread)."""
    dct_norm: DctNorm = "ortho"
    """DCT scaling: orthonormal (librosa's and psf's) or unnormalised (2x the cosine sum)."""
    lifter: int = 0
    """Cepstral lifter `L`: coefficient `n` is scaled by `1 + L/2 sin(pi n / L)` (HTK, psf); 0: off."""
    energy_c0: bool = False
    """Replace c0 by the log of the frame's total power (python_speech_features' `appendEnergy`)."""
    stage: InputStage = "mfcc"
    """The model's input rows: "mfcc" or "log_mel" (`n_mels` bands); in `to_dict` only when not "mfcc", so MFCC
    specs read as before and an older device refuses a log-mel bundle instead of feeding it MFCCs."""
    version: int = SPEC_VERSION
    """Meaning of the fields above; a device refuses a spec whose version it does not know."""

    def __post_init__(self) -> None:
        self._normalise_types()
        self.validate()
        _tables(self)  # a filterbank with an empty band is refused here, not on the first audio block

    def _normalise_types(self) -> None:
        """Refuse wrongly typed fields; store numpy scalars and integral floats as plain int/float.

        So that ``FrontendSpec(fmin=20)`` equals ``FrontendSpec(fmin=20.0)`` and
        `to_json` never meets a numpy scalar it cannot serialise.
        """
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"frontend spec: {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"frontend spec: {name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.energy_c0, (bool, np.bool_)):
            raise ValueError(f"frontend spec: energy_c0 must be true or false, got {self.energy_c0!r}")
        object.__setattr__(self, "energy_c0", bool(self.energy_c0))

    # -- validation -----------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first field that a frontend cannot run."""
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"frontend spec: {name}={value!r} is not one of {', '.join(choices)}")
        if self.version != SPEC_VERSION:
            raise ValueError(
                f"frontend spec: version {self.version} is not supported (this device runs {SPEC_VERSION})"
            )
        if self.sample_rate <= 0:
            raise ValueError("frontend spec: sample_rate must be positive")
        if not 1 <= self.win_length <= self.n_fft:
            raise ValueError(f"frontend spec: win_length must be in 1..n_fft ({self.n_fft}), got {self.win_length}")
        if not 1 <= self.hop_length <= self.win_length:
            raise ValueError(f"frontend spec: hop_length must be in 1..win_length, got {self.hop_length}")
        if self.n_mels < 1 or self.n_mfcc < 1:
            raise ValueError("frontend spec: n_mels and n_mfcc must be at least 1")
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"frontend spec: n_mfcc ({self.n_mfcc}) cannot exceed n_mels ({self.n_mels})")
        nyquist = self.sample_rate / 2
        if not (math.isfinite(self.fmin) and math.isfinite(self.fmax)) or not 0 <= self.fmin < self.fmax:
            raise ValueError(f"frontend spec: need 0 <= fmin < fmax, got fmin={self.fmin} fmax={self.fmax}")
        if self.fmax > nyquist + 1e-9:
            raise ValueError(f"frontend spec: fmax {self.fmax} Hz is above the Nyquist frequency {nyquist} Hz")
        if not 0.0 <= self.preemphasis < 1.0:
            raise ValueError(f"frontend spec: preemphasis must be in [0, 1), got {self.preemphasis}")
        if not (self.log_floor > 0 and math.isfinite(self.log_floor)):
            raise ValueError(
                "frontend spec: log_floor must be a positive number (a fixed floor keeps frames streamable)"
            )
        if not (self.db_ref > 0 and math.isfinite(self.db_ref)):
            raise ValueError("frontend spec: db_ref must be positive")
        if self.dct_type != 2:
            raise ValueError(f"frontend spec: only DCT type 2 is supported, got {self.dct_type}")
        if self.lifter < 0:
            raise ValueError("frontend spec: lifter must be >= 0")

    # -- derived --------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Rows of one frame of the model's input: `n_mfcc` cepstra or `n_mels` log-mel bands."""
        return self.n_mfcc if self.stage == "mfcc" else self.n_mels

    @property
    def n_bins(self) -> int:
        """Number of rfft bins."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Frames a clip of `n_samples` yields (no centring, no padding)."""
        if n_samples < self.win_length:
            return 0
        return 1 + (n_samples - self.win_length) // self.hop_length

    def window_samples(self, n_frames: int) -> int:
        """Samples needed for exactly `n_frames` frames."""
        return self.win_length + (n_frames - 1) * self.hop_length

    # -- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["stage"] == "mfcc":
            del data["stage"]  # the field's default, left out: MFCC specs keep their earlier form
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendSpec:
        """Build a spec from a dict, refusing unknown or missing fields (a device must never guess)."""
        if not isinstance(data, dict):
            raise ValueError("frontend spec must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"frontend spec: unknown field(s) {', '.join(unknown)} (made by a newer version?)")
        missing = sorted(known - set(data) - {"stage"})
        if missing:
            raise ValueError(f"frontend spec: missing field(s) {', '.join(missing)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> FrontendSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"frontend spec is not valid JSON: {exc}") from None
        return cls.from_dict(data)


_CHOICES: dict[str, tuple[str, ...]] = {
    name: get_args(hint) for name, hint in get_type_hints(FrontendSpec).items() if get_origin(hint) is Literal
}
"""The allowed values of each string field, read from its `Literal` type (so they are written once)."""


def librosa_preset(
    sample_rate: int = 22050,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    n_mfcc: int = 20,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> FrontendSpec:
    """The spec equal to `librosa.feature.mfcc` (Slaney mel, periodic Hann, power, `power_to_db`).

    Equality holds against librosa called with ``center=False`` and
    ``power_to_db(mel, top_db=None)``: see the module docstring for why.
    """
    return FrontendSpec(
        sample_rate=sample_rate,
        win_length=n_fft,
        hop_length=hop_length,
        n_fft=n_fft,
        window="hann",
        preemphasis=0.0,
        power_scale="none",
        mel_scale="slaney",
        mel_triangles="exact",
        n_mels=n_mels,
        fmin=fmin,
        fmax=float(sample_rate / 2 if fmax is None else fmax),
        mel_norm="slaney",
        log="db",
        log_floor=1e-10,
        db_ref=1.0,
        n_mfcc=n_mfcc,
        dct_norm="ortho",
        lifter=0,
        energy_c0=False,
    )


def psf_preset(
    sample_rate: int = 16000,
    winlen: float = 0.025,
    winstep: float = 0.01,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    lowfreq: float = 0.0,
    highfreq: float | None = None,
) -> FrontendSpec:
    """The spec equal to `python_speech_features.mfcc` with its defaults.

    Pre-emphasis 0.97, rectangular window, power spectrum / nfft, HTK mel with
    edges floored to FFT bins and peak 1, natural log, lifter 22 and the log
    frame energy as c0. psf rounds window lengths half up; so do we.
    """
    return FrontendSpec(
        sample_rate=sample_rate,
        win_length=_round_half_up(winlen * sample_rate),
        hop_length=_round_half_up(winstep * sample_rate),
        n_fft=nfft,
        window="rect",
        preemphasis=0.97,
        power_scale="1/n_fft",
        mel_scale="htk",
        mel_triangles="bin_floor",
        n_mels=nfilt,
        fmin=lowfreq,
        fmax=float(sample_rate / 2 if highfreq is None else highfreq),
        mel_norm="none",
        log="ln",
        log_floor=float(np.finfo(np.float64).eps),
        db_ref=1.0,
        n_mfcc=numcep,
        dct_norm="ortho",
        lifter=22,
        energy_c0=True,
    )


def _round_half_up(x: float) -> int:
    """Round .5 up on the exact binary value, as python_speech_features does (via Decimal), not to even."""
    return int(decimal.Decimal(x).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


# -- tables (built once per spec) -------------------------------------------------------


def hz_to_mel(hz: np.ndarray | float, scale: MelScale) -> np.ndarray:
    """Hz to mel on the Slaney (linear below 1 kHz, log above) or HTK scale."""
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = hz / f_sp
    with np.errstate(divide="ignore"):
        log_part = min_log_mel + np.log(np.maximum(hz, 1e-300) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, linear)


def mel_to_hz(mel: np.ndarray | float, scale: MelScale) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(spec: FrontendSpec) -> np.ndarray:
    """The (n_mels, n_bins) triangular filterbank of a spec.

    ``exact``: triangles evaluated on the exact FFT bin frequencies (librosa).
    ``bin_floor``: triangle corners floored to FFT bins, peak 1 (python_speech_features).
    """
    mel_points = np.linspace(
        hz_to_mel(spec.fmin, spec.mel_scale), hz_to_mel(spec.fmax, spec.mel_scale), spec.n_mels + 2
    )
    hz_points = mel_to_hz(mel_points, spec.mel_scale)
    weights = np.zeros((spec.n_mels, spec.n_bins), dtype=np.float64)
    if spec.mel_triangles == "exact":
        fft_freqs = np.linspace(0.0, spec.sample_rate / 2, spec.n_bins)
        widths = np.diff(hz_points)
        ramps = hz_points[:, None] - fft_freqs[None, :]
        for i in range(spec.n_mels):
            lower = -ramps[i] / widths[i]
            upper = ramps[i + 2] / widths[i + 1]
            weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    else:
        bins = np.floor((spec.n_fft + 1) * hz_points / spec.sample_rate).astype(int)
        for j in range(spec.n_mels):
            left, centre, right = bins[j], bins[j + 1], bins[j + 2]
            for i in range(left, centre):
                weights[j, i] = (i - left) / (centre - left)
            for i in range(centre, right):
                weights[j, i] = (right - i) / (right - centre)
    if spec.mel_norm == "slaney":
        weights *= (2.0 / (hz_points[2 : spec.n_mels + 2] - hz_points[: spec.n_mels]))[:, None]
    empty = np.flatnonzero(weights.max(axis=1) <= 0)
    if empty.size:
        raise ValueError(
            f"frontend spec: mel band(s) {empty.tolist()} contain no FFT bin "
            f"(too many mels ({spec.n_mels}) for n_fft={spec.n_fft}, or fmin too low); "
            "use fewer mels or a larger n_fft"
        )
    return weights


def dct_matrix(spec: FrontendSpec) -> np.ndarray:
    """The (n_mfcc, n_mels) DCT-II matrix, orthonormal or unnormalised, with the lifter folded in."""
    n = spec.n_mels
    k = np.arange(spec.n_mfcc)[:, None]
    m = np.arange(n)[None, :]
    basis = np.cos(np.pi * k * (2 * m + 1) / (2 * n))
    if spec.dct_norm == "ortho":
        basis *= math.sqrt(2.0 / n)
        basis[0] /= math.sqrt(2.0)
    else:
        basis *= 2.0
    if spec.lifter > 0:
        lift = 1.0 + (spec.lifter / 2.0) * np.sin(np.pi * np.arange(spec.n_mfcc) / spec.lifter)
        basis *= lift[:, None]
    return basis


def window_function(spec: FrontendSpec) -> np.ndarray:
    """Periodic (DFT-even) window of `win_length` samples, as librosa's `get_window(..., fftbins=True)`."""
    n = spec.win_length
    phase = 2.0 * np.pi * np.arange(n) / n
    if spec.window == "hann":
        return 0.5 - 0.5 * np.cos(phase)
    if spec.window == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    return np.ones(n)


@dataclass(frozen=True)
class _MelLayers:
    """The filterbank as two non-overlapping layers, for a sum over contiguous bins instead of a dense matmul.

    Neighbouring triangles overlap, but the even-numbered bands never overlap
    each other, nor do the odd ones. So each layer is one weight per FFT bin,
    and a band is the sum of ``power * layer`` over the bins from its first
    non-zero bin to the next band's first one: one multiply and one
    `np.add.reduceat` over ``2 * n_bins`` values per frame, instead of
    ``n_bins * n_mels`` multiply-adds. No BLAS call either, so no BLAS thread
    pool waking up on a busy Raspberry Pi for a 16-frame hop.
    """

    weights: np.ndarray  # (n_layers, n_bins): layer l holds the weights of bands l, l + 2, l + 4, ...
    starts: np.ndarray  # reduceat indices into the flattened (n_layers * n_bins) product, layer by layer
    bands: np.ndarray  # band of each reduceat output (0, 2, 4, ..., 1, 3, ...)
    order: np.ndarray  # argsort(bands): permutation from layer-major output back to band order


def _mel_layers(weights: np.ndarray, scale: float) -> _MelLayers | None:
    """Split a filterbank into non-overlapping layers, or None if its bands do not allow it (then use matmul)."""
    n_mels, n_bins = weights.shape
    support = weights != 0
    layer_weights, starts, bands = [], [], []
    for parity in range(min(2, n_mels)):
        rows = support[parity::2]
        if (rows.sum(axis=0) > 1).any():
            return None
        first = rows.argmax(axis=1)
        last = n_bins - rows[:, ::-1].argmax(axis=1)
        if (np.diff(first) <= 0).any() or (last[:-1] > first[1:]).any():
            return None
        layer_weights.append(weights[parity::2].sum(axis=0) * scale)
        starts.append(first + parity * n_bins)
        bands.append(np.arange(parity, n_mels, 2))
    band_of_output = np.concatenate(bands)
    return _MelLayers(np.stack(layer_weights), np.concatenate(starts), band_of_output, np.argsort(band_of_output))


@dataclass(frozen=True)
class _Tables:
    window: np.ndarray  # (win_length,)
    mel_t: np.ndarray  # (n_bins, n_mels), power scale folded in; used when `layers` is None
    layers: _MelLayers | None
    dct_t: np.ndarray  # (n_mels, n_mfcc), applied to the log-mel in the spec's unit
    # What the MFCC path really multiplies: for dB, dct_t * 10 / ln(10), applied straight to ln(mel) (numpy's
    # natural log is about twice as fast as log10); rows in the mel sum's layer order, so that the mel bands
    # are never permuted back on the hot path.
    dct_fast_t: np.ndarray
    dct_bias: np.ndarray | None  # (n_mfcc,): -10*log10(db_ref) pushed through the DCT, None when zero
    power_scale: float
    log_offset: float  # 10*log10(db_ref) for dB
    rfft: Callable[..., np.ndarray] | None  # numpy's rfft gufunc called directly, when available and verified


def _direct_rfft(n_fft: int) -> Callable[..., np.ndarray] | None:
    """numpy's rfft gufunc for `n_fft`, called as ``f(frames, 1.0, out=spectrum)``, or None to use `np.fft.rfft`.

    `np.fft.rfft` spends ~10 us per call in Python (axis and norm handling)
    before the same gufunc runs: as much as the FFT of a whole frame, on every
    streaming hop. The gufunc lives in a private numpy module, so it is only
    used if it exists and gives bit-identical results to the public function
    on a probe signal; any other numpy takes the public path.
    """
    try:
        from numpy.fft import _pocketfft_umath  # type: ignore[attr-defined]

        ufunc = _pocketfft_umath.rfft_n_even if n_fft % 2 == 0 else _pocketfft_umath.rfft_n_odd
        probe = np.sin(0.37 * np.arange(2 * n_fft)).reshape(2, n_fft) + np.cos(0.011 * np.arange(n_fft) ** 2)
        out = np.empty((2, n_fft // 2 + 1), dtype=np.complex128)
        result = ufunc(probe, 1.0, out=out)
        if result is out and np.array_equal(out, np.fft.rfft(probe, axis=-1)):
            return ufunc
    except Exception:  # any surprise (another numpy) means: use the public function
        pass
    return None


@functools.lru_cache(maxsize=32)
def _tables(spec: FrontendSpec) -> _Tables:
    """Window, filterbank and DCT of a spec, built once (specs are hashable) and read-only."""
    power_scale = 1.0 / spec.n_fft if spec.power_scale == "1/n_fft" else 1.0
    log_offset = 10.0 * math.log10(spec.db_ref) if spec.log == "db" else 0.0
    weights = mel_filterbank(spec)
    dct_t = np.ascontiguousarray(dct_matrix(spec).T)
    layers = _mel_layers(weights, power_scale)
    dct_fast_t = dct_t * _DB_PER_NEPER if spec.log == "db" else dct_t.copy()
    if layers is not None:
        dct_fast_t = np.ascontiguousarray(dct_fast_t[layers.bands])
    tables = _Tables(
        window=window_function(spec),
        mel_t=np.ascontiguousarray(weights.T * power_scale),
        layers=layers,
        dct_t=dct_t,
        dct_fast_t=dct_fast_t,
        dct_bias=-log_offset * dct_t.sum(axis=0) if log_offset != 0.0 else None,
        power_scale=power_scale,
        log_offset=log_offset,
        rfft=_direct_rfft(spec.n_fft),
    )
    arrays = [tables.window, tables.mel_t, tables.dct_t, tables.dct_fast_t, tables.dct_bias]
    if tables.layers is not None:
        arrays += [tables.layers.weights, tables.layers.starts, tables.layers.bands, tables.layers.order]
    for array in arrays:
        if array is not None:
            array.setflags(write=False)
    return tables


# The spec the shipped models use. 16 kHz keeps the whole pitch range of the 11
# families (the highest fundamentals, piccolo ~4.2 kHz, plus a few harmonics)
# at a quarter of the cost of 44.1 kHz. n_fft = win = 1024 (64 ms) resolves
# 15.6 Hz bins, which separates the low bass notes (E1 = 41 Hz) that a 512-point
# FFT smears; hop 256 (16 ms) keeps the attack transients that distinguish
# plucked and struck families while a 1 s model window is only 59 frames, so
# the edge CNN stays under 5 M multiply-adds. 64 Slaney mel bands from 20 Hz
# give the 40-coefficient DCT room; 40 MFCCs as in the study.
DEFAULT_SPEC = FrontendSpec()

DEFAULT_WINDOW_SECONDS = 1.0
"""Audio fed to the model per decision: a note is named within about a second."""


# -- input checking -----------------------------------------------------------------------


def _checked_mono(signal: Any, *, allow_empty: bool = False) -> np.ndarray:
    """The 1-D float32/float64/int16 samples of `signal`, unconverted, or ValueError (see `as_mono_float`)."""
    if not isinstance(signal, np.ndarray):
        raise ValueError(f"audio must be a numpy array, got {type(signal).__name__}")
    if signal.ndim == 2 and signal.shape[1] == 1:
        signal = signal[:, 0]
    if signal.ndim != 1:
        raise ValueError(
            f"audio must be mono (1-D), got shape {signal.shape}; downmix first (e.g. signal.mean(axis=1))"
        )
    kind = signal.dtype.char
    if kind in "fd":
        # One reduction instead of isfinite + all: NaN and Inf always reach the sum. A non-finite sum of finite
        # samples (an overflow, only for absurd levels) falls through to the exact test.
        if not math.isfinite(np.add.reduce(signal)) and not np.isfinite(signal).all():
            raise ValueError("audio contains NaN or Inf samples")
    elif kind != "h":
        raise ValueError(f"audio dtype must be float32, float64 or int16, got {signal.dtype}")
    if signal.shape[0] == 0 and not allow_empty:
        raise ValueError("audio is empty")
    return signal


def as_mono_float(signal: Any, *, allow_empty: bool = False) -> np.ndarray:
    """Check and convert audio to a 1-D float64 array in [-1, 1] (int16 is scaled by 1/32768).

    Raises ValueError for a non-array, a dtype other than float32/float64/int16,
    more than one channel, NaN or Inf, or (unless `allow_empty`) no samples.
    """
    signal = _checked_mono(signal, allow_empty=allow_empty)
    if signal.dtype == np.int16:
        return signal * (1.0 / 32768.0)
    return signal.astype(np.float64, copy=False)


# -- the computation ------------------------------------------------------------------------


def _preemphasise(samples: np.ndarray, coefficient: float, previous: float) -> np.ndarray:
    if coefficient == 0.0 or samples.size == 0:
        return samples
    shifted = np.empty_like(samples)
    shifted[0] = previous
    shifted[1:] = samples[:-1]
    return samples - coefficient * shifted


def _write_samples(dest: np.ndarray, raw: np.ndarray, coefficient: float, previous: float) -> float:
    """Write checked samples into float64 `dest`: int16 scaled, pre-emphasised from `previous`; return the last.

    The streaming path's `as_mono_float` + `_preemphasise` without the
    intermediate arrays: the conversion happens in the copy into the stream's buffer.
    """
    if raw.dtype == np.int16:
        np.multiply(raw, 1.0 / 32768.0, out=dest)
    else:
        np.copyto(dest, raw)
    last = float(dest[-1])
    if coefficient != 0.0:
        shifted = np.empty_like(dest)
        shifted[0] = previous
        shifted[1:] = dest[:-1]
        shifted *= coefficient
        dest -= shifted
    return last


Stage = Literal["mel_power", "log_mel", "mfcc"]


def _frame(samples: np.ndarray, spec: FrontendSpec) -> np.ndarray:
    """A read-only (n_frames, win_length) view: frame k is samples[k*hop : k*hop + win_length]."""
    n_frames = spec.n_frames(samples.size)
    if n_frames == 0:
        return np.zeros((0, spec.win_length), dtype=np.float64)
    samples = np.ascontiguousarray(samples)
    step = samples.itemsize
    # The ndarray constructor over the same buffer is `as_strided` without its ~10 us of Python per call.
    frames = np.ndarray(
        (n_frames, spec.win_length), dtype=samples.dtype, buffer=samples, strides=(step * spec.hop_length, step)
    )
    frames.flags.writeable = False
    return frames


CHUNK_FRAMES = 32
"""Frames computed per pass: long clips are processed in chunks whose buffers stay in cache and are reused."""

_RFFT_HAS_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


class _Workspace:
    """Preallocated buffers for up to CHUNK_FRAMES frames of one spec, reused by every call on one thread.

    Allocating the windowed frames, spectrum, power and weighted power afresh
    on each call cost as much as the arithmetic (buffers of 128 kB and more
    come as fresh pages that fault on first touch); reusing them, in chunks
    that stay in cache, made a 1 s batch window about twice as fast. One
    workspace per thread (see `_workspace`), so concurrent callers never share buffers.
    """

    def __init__(self, spec: FrontendSpec, tables: _Tables) -> None:
        n = CHUNK_FRAMES
        self.windowed = np.zeros((n, spec.n_fft), dtype=np.float64)  # columns past win_length stay zero
        self.spectrum = np.empty((n, spec.n_bins), dtype=np.complex128)
        self.power = np.empty((n, spec.n_bins), dtype=np.float64)
        self.scratch = np.empty((n, spec.n_bins), dtype=np.float64)
        n_layers = 0 if tables.layers is None else tables.layers.weights.shape[0]
        self.weighted = np.empty((n, n_layers, spec.n_bins), dtype=np.float64)


_local = threading.local()


def _workspace(spec: FrontendSpec, tables: _Tables) -> _Workspace:
    """This thread's workspace for `spec` (a few specs are kept; a study cycling through many rebuilds them)."""
    spaces: dict[FrontendSpec, _Workspace] | None = getattr(_local, "spaces", None)
    if spaces is None:
        spaces = _local.spaces = {}
    space = spaces.get(spec)
    if space is None:
        if len(spaces) >= 4:
            spaces.clear()
        space = spaces[spec] = _Workspace(spec, tables)
    return space


def _chunk_mel_power(
    spec: FrontendSpec, tables: _Tables, space: _Workspace, frames: np.ndarray, *, band_order: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """At most CHUNK_FRAMES frames (n, win_length) -> mel power (n, n_mels) float64, and frame energies for c0.

    With ``band_order=False`` the mel columns stay in the banded sum's layer
    order (the MFCC path's DCT table is permuted to match).
    """
    n = frames.shape[0]
    windowed = space.windowed[:n]
    np.multiply(frames, tables.window, out=windowed[:, : spec.win_length])  # the tail stays zero: FFT padding
    if tables.rfft is not None:
        spectrum = tables.rfft(windowed, 1.0, out=space.spectrum[:n])
    elif _RFFT_HAS_OUT:
        spectrum = np.fft.rfft(windowed, axis=-1, out=space.spectrum[:n])
    else:  # numpy 1.x: no `out`
        spectrum = np.fft.rfft(windowed, axis=-1)
    power, scratch = space.power[:n], space.scratch[:n]
    np.square(spectrum.real, out=power)
    np.square(spectrum.imag, out=scratch)
    np.add(power, scratch, out=power)
    energy = power.sum(axis=1) * tables.power_scale if spec.energy_c0 else None
    layers = tables.layers
    if layers is None:
        return power @ tables.mel_t, energy
    weighted = space.weighted[:n]
    np.multiply(power[:, None, :], layers.weights, out=weighted)
    mel = np.add.reduceat(weighted.reshape(n, -1), layers.starts, axis=1)
    return (mel[:, layers.order] if band_order else mel), energy


def _apply_log(spec: FrontendSpec, values: np.ndarray) -> np.ndarray:
    """The spec's log with its fixed floor: dB (10*log10, minus the reference) or natural log. Overwrites `values`."""
    np.maximum(values, spec.log_floor, out=values)
    np.log(values, out=values)
    if spec.log == "db":
        values *= _DB_PER_NEPER  # 10*log10(x) == 10/ln(10) * ln(x)
        offset = _tables(spec).log_offset
        if offset != 0.0:
            values -= offset
    return values


def _chunk_features(
    spec: FrontendSpec, tables: _Tables, space: _Workspace, frames: np.ndarray, stage: Stage
) -> np.ndarray:
    """At most CHUNK_FRAMES frames -> features (n, n_features) float64 for one stage."""
    mel, energy = _chunk_mel_power(spec, tables, space, frames, band_order=stage != "mfcc")
    if stage == "mel_power":
        return mel
    if stage == "log_mel":
        return _apply_log(spec, mel)
    # MFCC: the dB scale (10 / ln 10) and reference offset are folded into the DCT table, saving two passes.
    np.maximum(mel, spec.log_floor, out=mel)
    np.log(mel, out=mel)
    cepstra = mel @ tables.dct_fast_t
    if tables.dct_bias is not None:
        cepstra += tables.dct_bias
    if energy is not None:
        cepstra[:, 0] = _apply_log(spec, energy)
    return cepstra


def _frames_to(
    spec: FrontendSpec,
    frames: np.ndarray,
    stage: Stage,
    tables: _Tables | None = None,
    space: _Workspace | None = None,
) -> np.ndarray:
    """Framed, pre-emphasised samples (n_frames, win_length) -> features (n_features, n_frames) float32.

    The one code path behind `mfcc`, `mel_power`, `log_mel` and `MfccStream`: each
    stage stops at a different step of the same arithmetic, so a mel or log-mel
    model sees exactly the bands the MFCC model's DCT starts from. Every frame
    is computed on its own (chunking never changes a number), which is why a
    stream and a batch call agree.
    """
    n_out = {"mel_power": spec.n_mels, "log_mel": spec.n_mels, "mfcc": spec.n_mfcc}[stage]
    n_frames = frames.shape[0]
    if n_frames == 0:
        return np.zeros((n_out, 0), dtype=np.float32)
    tables = _tables(spec) if tables is None else tables
    space = _workspace(spec, tables) if space is None else space
    if n_frames <= CHUNK_FRAMES:
        return np.ascontiguousarray(_chunk_features(spec, tables, space, frames, stage).T, dtype=np.float32)
    out = np.empty((n_out, n_frames), dtype=np.float32)
    for start in range(0, n_frames, CHUNK_FRAMES):
        stop = min(start + CHUNK_FRAMES, n_frames)
        out[:, start:stop] = _chunk_features(spec, tables, space, frames[start:stop], stage).T
    return out


def _batch(signal: np.ndarray, spec: FrontendSpec, stage: Stage) -> np.ndarray:
    samples = as_mono_float(signal)
    samples = _preemphasise(samples, spec.preemphasis, 0.0)
    return _frames_to(spec, _frame(samples, spec), stage)


def mfcc(signal: np.ndarray, spec: FrontendSpec = DEFAULT_SPEC) -> np.ndarray:
    """MFCCs of a whole clip: (n_mfcc, n_frames) float32.

    Frame k covers samples [k*hop, k*hop + win_length); a clip shorter than one
    window gives zero frames. Equal to the concatenated output of `MfccStream`
    fed the same samples in any block sizes.
    """
    return _batch(signal, spec, "mfcc")


def mel_power(signal: np.ndarray, spec: FrontendSpec = DEFAULT_SPEC) -> np.ndarray:
    """Mel power spectrogram of a whole clip: (n_mels, n_frames) float32, same frames as `mfcc`.

    The spec's pre-emphasis, window, power scaling and filterbank are applied;
    no log, no DCT. For studies that compare MFCC inputs with mel inputs: the
    bands are exactly the ones `mfcc` takes the log and DCT of. With the librosa
    preset this equals ``librosa.feature.melspectrogram(..., center=False)``.
    """
    return _batch(signal, spec, "mel_power")


def log_mel(signal: np.ndarray, spec: FrontendSpec = DEFAULT_SPEC) -> np.ndarray:
    """Log-mel spectrogram of a whole clip: (n_mels, n_frames) float32, the spec's log and fixed floor applied.

    This is `mfcc` stopped just before the DCT (and before the energy-as-c0
    substitution), so a log-mel model and an MFCC model share every step up to
    there. With the librosa preset it equals ``librosa.power_to_db(mel, top_db=None)``.
    """
    return _batch(signal, spec, "log_mel")


def model_input(signal: np.ndarray, spec: FrontendSpec = DEFAULT_SPEC) -> np.ndarray:
    """What the spec's model takes (`spec.stage`) of a whole clip: (n_features, n_frames) float32."""
    return _batch(signal, spec, spec.stage)


class MfccStream:
    """Streaming model input (MFCCs, or log-mel bands when `spec.stage` says so): feed blocks of any size,
    get only the frames they complete.

    Keeps the overlap between frames (at most ``win_length - 1`` samples) and
    the last raw sample for pre-emphasis, so that the concatenation of all
    outputs equals `mfcc` of the concatenated input. One stream belongs to one
    audio source and is used by one thread at a time (it has its own buffers).

    >>> stream = MfccStream(DEFAULT_SPEC)
    >>> new_frames = stream.process(block)   # (n_features, k), k >= 0
    """

    def __init__(self, spec: FrontendSpec = DEFAULT_SPEC) -> None:
        self.spec = spec
        self._tables = _tables(spec)  # built (and validated) now, not on the first audio block
        self._space = _Workspace(spec, self._tables)
        self.reset()

    def reset(self) -> None:
        """Forget all audio seen so far (e.g. after a gap in the input)."""
        # Samples not yet consumed by a frame sit at the start of _buffer; new blocks are written after them.
        self._allocate(self.spec.win_length + 4096)
        self._pending = 0
        self._previous_sample = 0.0
        self.frames_emitted = 0
        self.samples_seen = 0

    def _allocate(self, size: int) -> None:
        """A sample buffer of `size`, and the strided view of every frame it can hold (sliced, never rebuilt)."""
        self._buffer = np.zeros(size, dtype=np.float64)
        self._frames = _frame(self._buffer, self.spec)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Consume one block of audio; return the features (`spec.stage`) of the frames it completed."""
        spec = self.spec
        raw = _checked_mono(block, allow_empty=True)
        n = raw.shape[0]
        if n == 0:
            return np.zeros((spec.n_features, 0), dtype=np.float32)
        total = self._pending + n
        if total > self._buffer.shape[0]:
            kept = self._buffer[: self._pending].copy()
            self._allocate(max(total, 2 * self._buffer.shape[0]))
            self._buffer[: self._pending] = kept
        dest = self._buffer[self._pending : total]
        self._previous_sample = _write_samples(dest, raw, spec.preemphasis, self._previous_sample)
        self.samples_seen += n
        n_frames = spec.n_frames(total)
        self._pending = total
        if n_frames == 0:
            return np.zeros((spec.n_features, 0), dtype=np.float32)
        out = _frames_to(spec, self._frames[:n_frames], spec.stage, self._tables, self._space)
        consumed = n_frames * spec.hop_length
        self._pending = total - consumed
        self._buffer[: self._pending] = self._buffer[consumed:total]  # numpy copes with the overlap
        self.frames_emitted += n_frames
        return out


def normalise_windows(windows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Raw feature windows (..., n_coefficients, frames) -> `(x - mean) / std` per coefficient, float32.

    The one home of the model's input normalisation: the bundle, the trainer, the evaluation and the
    converter all call it, so training and the device cannot disagree by a rounding order.
    """
    mean32 = np.asarray(mean, dtype=np.float32)[:, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None]
    return (np.asarray(windows).astype(np.float32, copy=False) - mean32) / std32

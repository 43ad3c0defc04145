"""Import one-note-per-file recordings (wav, flac, ogg, mp3, aif/aiff) as finished 4 s corpus notes.

API:

* ``decode_audio(data, name) -> (samples float64 [frames, channels], rate)``: raises ``ImportProblem``.
* ``prepare_recording(data, name) -> (audio float32[64000], sounding_seconds)``: raises ``ImportProblem``.
* ``import_note_file(read_bytes, path, *, family, source, instrument, pitch, velocity, problems)
  -> ImportedNote | None``: ``pitch=None`` estimates it with `pitch.estimate_pitch` (marked estimated);
  a skipped file is counted in ``problems`` (one line, the reason) and gives None.

Decoding is libsndfile through soundfile on the bytes (no work tree needed), which reads all six formats
here, mp3 included (libsndfile >= 1.1). Downmix: the mean of the channels. Resampling to 16 kHz:
``scipy.signal.resample_poly`` (Kaiser windowed sinc, the rational ratio of the two rates).

Onset: the first 5 ms frame whose energy is within ``ONSET_DB`` (35 dB) of the file's loudest frame, minus
``PREROLL_SECONDS`` (5 ms), so leading silence or room noise before the note is cut but the attack is kept.
Then zeros are padded or the tail is cut to exactly 64000 samples. The level is the file's own (no
normalisation), as in the SoundFont path.

Sounding length: from the onset to the end of the last 5 ms frame whose energy is within ``DECAY_DB``
(45 dB) of the peak frame, capped at 4 s (a recording that ends while still sounding counts up to its end).
45 dB is below what a listener hears over a quiet room and above the noise floor of most close-miked
samples, so a 0.3 s staccato reads ~0.3 s, not the length of its reverb-free file.

Problems (reason: why): ``unreadable`` (not decodable), ``zero_length`` (no samples), ``silent`` (peak below
-60 dBFS, the corpus rule), ``clipped`` (a run of at least 3 samples at full scale in the file: the note is
distorted), ``too_short`` (sounds less than 50 ms: a click, not a note), ``no_pitch`` (pitch estimation
asked for and none found).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from math import gcd

import numpy as np

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.train.sources.imported import NUM_SAMPLES, SAMPLE_RATE, ImportedNote, Problems

ONSET_DB = 35.0
DECAY_DB = 45.0
PREROLL_SECONDS = 0.005
FRAME_SECONDS = 0.005
SILENT_DBFS = -60.0
MIN_SOUNDING_SECONDS = 0.05
CLIP_LEVEL = 0.999
CLIP_RUN = 3
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")

ReadBytes = Callable[[str], bytes]


class ImportProblem(InstrumentAIError):
    """A recording that cannot become a note: ``reason`` (a Problems key) and a one-line message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode_audio(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Samples as float64 ``[frames, channels]`` and the rate; ImportProblem if unreadable or empty."""
    import soundfile as sf

    if not data:
        raise ImportProblem("zero_length", f"{name}: empty file")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError ...
        raise ImportProblem("unreadable", f"{name}: cannot decode ({' '.join(str(exc).split())})") from None
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise ImportProblem("zero_length", f"{name}: no samples")
    if not np.all(np.isfinite(samples)):
        raise ImportProblem("unreadable", f"{name}: samples that are not finite numbers")
    return samples, int(rate)


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Mono audio from ``rate`` to ``target`` Hz (polyphase, exact rational ratio)."""
    if rate == target:
        return audio
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(audio, target // g, int(rate) // g)


def _frame_energy_db(x: np.ndarray, frame: int) -> np.ndarray:
    n = int(math.ceil(len(x) / frame))
    padded = np.zeros(n * frame)
    padded[: len(x)] = x
    energy = np.mean(padded.reshape(n, frame) ** 2, axis=1)
    return 10.0 * np.log10(energy + 1e-30)


def _has_clipping(samples: np.ndarray) -> bool:
    hot = np.any(np.abs(samples) >= CLIP_LEVEL, axis=1)
    if not hot.any():
        return False
    run = np.convolve(hot.astype(np.int32), np.ones(CLIP_RUN, dtype=np.int32), mode="valid")
    return bool(np.any(run >= CLIP_RUN))


def onset_and_length(x: np.ndarray, sr: int = SAMPLE_RATE) -> tuple[int, float]:
    """(onset sample, sounding seconds) of a mono note by the rules in the module docstring."""
    frame = max(1, int(round(FRAME_SECONDS * sr)))
    db = _frame_energy_db(x, frame)
    peak = float(db.max())
    first = int(np.nonzero(db >= peak - ONSET_DB)[0][0])
    last = int(np.nonzero(db >= peak - DECAY_DB)[0][-1])
    onset = max(0, first * frame - int(round(PREROLL_SECONDS * sr)))
    end = min(len(x), (last + 1) * frame)
    return onset, min((end - onset) / sr, NUM_SAMPLES / SAMPLE_RATE)


def finish_note(x: np.ndarray, name: str, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """Cut a mono 16 kHz note at its onset, pad or cut to 4 s; (audio, sounding seconds). ImportProblem."""
    if len(x) == 0:
        raise ImportProblem("zero_length", f"{name}: no samples")
    peak = float(np.max(np.abs(x)))
    if peak < 10.0 ** (SILENT_DBFS / 20.0):
        raise ImportProblem("silent", f"{name}: peak {20 * math.log10(peak + 1e-30):.0f} dBFS, below {SILENT_DBFS:.0f}")
    onset, sounding = onset_and_length(x, sr)
    if sounding < MIN_SOUNDING_SECONDS:
        raise ImportProblem(
            "too_short", f"{name}: sounds {sounding * 1000:.0f} ms, under {MIN_SOUNDING_SECONDS * 1000:.0f}"
        )
    out = np.zeros(NUM_SAMPLES, dtype=np.float32)
    piece = x[onset : onset + NUM_SAMPLES]
    out[: len(piece)] = piece
    top = float(np.max(np.abs(out)))
    if top > CLIP_LEVEL:  # resampling overshoot of a file that was not clipped itself
        out *= CLIP_LEVEL / top
    return out, round(float(sounding), 4)


def prepare_recording(data: bytes, name: str) -> tuple[np.ndarray, float]:
    """A recording's bytes -> (16 kHz mono float32 of exactly 64000 samples, sounding seconds); ImportProblem."""
    samples, rate = decode_audio(data, name)
    if _has_clipping(samples):
        raise ImportProblem("clipped", f"{name}: {CLIP_RUN}+ samples in a row at full scale")
    mono = samples.mean(axis=1)
    return finish_note(resample(mono, rate), name)


def import_note_file(
    read_bytes: ReadBytes,
    path: str,
    *,
    family: str,
    source: str,
    instrument: str,
    pitch: int | None,
    velocity: int,
    problems: Problems,
) -> ImportedNote | None:
    """One recording as an ImportedNote, or None with the reason counted in ``problems``."""
    try:
        data = read_bytes(path)
    except Exception as exc:
        problems.add("unreadable", f"{path}: cannot read ({' '.join(str(exc).split())})")
        return None
    try:
        audio, sounding = prepare_recording(data, path)
    except ImportProblem as exc:
        problems.add(exc.reason, str(exc))
        return None
    estimated = pitch is None
    if pitch is None:
        from instrument_ai.train.sources.pitch import estimate_pitch

        found = estimate_pitch(audio, SAMPLE_RATE)
        if found is None or not 0 <= round(found.midi) <= 127:
            problems.add("no_pitch", f"{path}: no pitch found to estimate")
            return None
        pitch = int(round(found.midi))
    return ImportedNote(
        audio=audio,
        family=family,
        source=source,
        instrument=instrument,
        pitch=int(pitch),
        velocity=int(velocity),
        sounding_seconds=sounding,
        origin=path,
        pitch_estimated=estimated,
    )

"""An AudioSet tagger (527 classes) from the pinned EfficientAT ``mn04_as`` weights: a teacher if the rest stalls.

Issue 23, item 6. The weights (train/teachers.toml, verified by `load_teacher_state`) come with model code we do
not take: the network (`instrument_ai.train.audioset_network`) and this front end are our own implementations of
EfficientAT (Florian Schmid, https://github.com/fschmid56/EfficientAT, MIT licence, read at commit a425fdce9257:
models/preprocess.py, models/mn/*.py, inference.py), without torchvision or torchaudio.

The front end is EfficientAT's `AugmentMelSTFT` in eval mode (no augmentation), because the weights only mean
something on the spectrograms they were trained on:

* **32 kHz mono.** Our 16 kHz notes are upsampled 2x with the device's polyphase resampler
  (`instrument_ai.device.resample`), so the top octave (8-16 kHz, mel bands from about band 105 up) is empty: the
  model hears a low-passed clip, as it would a band-limited recording. Any other rate is resampled the same way.
* **Pre-emphasis** ``y[n] = x[n+1] - 0.97 x[n]`` (their conv1d with kernel ``[-0.97, 1]``, one sample shorter).
* **STFT** n_fft 1024, hop 320 (10 ms), a symmetric 800-point Hann window, centred with reflect padding; power.
* **Kaldi mel banks** (`kaldi_mel_banks`: torchaudio's ``get_mel_banks`` without VTLN, written here in numpy):
  128 triangles, equally spaced on mel = 1127 ln(1 + f / 700) from fmin 0 to fmax 15 kHz (EfficientAT's
  ``fmax=None`` default: sr/2 - fmax_aug_range/2 with a range of 2000), over FFT bins 0..511, plus the zero column
  EfficientAT pads for bin 512 (Nyquist).
* **log(mel + 1e-5)**, then **(x + 4.5) / 5**, their fixed normalisation.

Outputs are clip-level, as the model gives them: the last feature map is averaged over frequency and time, and
the classifier turns that into 527 logits; probabilities are sigmoids (multi-label: several classes can be
likely at once). The label names are in train/audioset_labels.txt (EfficientAT's metadata/class_labels_indices.csv;
the AudioSet ontology, CC BY-SA 4.0).
train/audioset_mn04_manifest.json records every tensor name and shape of the pinned file (`state_manifest`), so the
tests check the network's layout without the weights. Checked once against EfficientAT's own code at that commit
(with small stand-ins for the torchvision/torchaudio helpers): the same logits to the last bit from their
``get_model(width_mult=0.4)`` with these weights, and log-mels within 3e-5 of their ``AugmentMelSTFT``.

Torch is not a dependency of the project: this module imports without it, and anything that needs it raises
`TeacherFileError` with one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from instrument_ai.device.resample import resample
from instrument_ai.train.teacher_file import TeacherFileError, load_teacher_state

SAMPLE_RATE = 32_000
N_FFT = 1024
HOP = 320
WINDOW = 800
N_MELS = 128
FMIN = 0.0
FMAX = SAMPLE_RATE / 2 - 2000 / 2
PREEMPHASIS = 0.97
LOG_OFFSET = 1e-5
NORM_SHIFT = 4.5
NORM_SCALE = 5.0
MIN_SECONDS = WINDOW / SAMPLE_RATE  # shorter clips cannot be reflect-padded for the first frame

LABELS_FILE = Path(__file__).with_name("audioset_labels.txt")
MANIFEST_FILE = Path(__file__).with_name("audioset_mn04_manifest.json")
TEACHER_NAME = "mn04_as"


def _read_labels(path: Path = LABELS_FILE) -> tuple[str, ...]:
    """The class names of the labels file, comments (``#``) skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line for line in lines if line and not line.startswith("#"))


AUDIOSET_LABELS: tuple[str, ...] = _read_labels()


def _torch() -> ModuleType:
    """The torch module, or one line saying the tagger needs it."""
    try:
        import torch  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise TeacherFileError(f"{TEACHER_NAME}: the AudioSet tagger needs torch (not installed)") from None
    return torch


def kaldi_mel(freq: np.ndarray | float) -> np.ndarray:
    """Kaldi's mel scale, 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, fmin: float, fmax: float) -> np.ndarray:
    """Kaldi's triangular mel filters ``(n_mels, n_fft // 2)`` over FFT bins 0..n_fft/2 - 1 (VTLN off).

    Filter m rises linearly in mel from edge m to its centre m + 1 and falls to edge m + 2, the n_mels + 2 edges
    equally spaced in mel from fmin to fmax; the Nyquist bin is not covered (Kaldi's convention).
    """
    if not 0.0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"mel range {fmin}-{fmax} Hz does not fit below Nyquist {sample_rate / 2} Hz")
    mel_low, mel_high = float(kaldi_mel(fmin)), float(kaldi_mel(fmax))
    step = (mel_high - mel_low) / (n_mels + 1)
    left = mel_low + step * np.arange(n_mels)[:, None]
    centre, right = left + step, left + 2 * step
    bin_mel = kaldi_mel(np.arange(n_fft // 2) * sample_rate / n_fft)[None, :]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


@cache
def efficientat_mel_matrix() -> np.ndarray:
    """The ``(128, 513)`` float32 matrix EfficientAT applies to the power spectrum (zero column for Nyquist)."""
    banks = kaldi_mel_banks(N_MELS, N_FFT, SAMPLE_RATE, FMIN, FMAX)
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


def model_rate_audio(audio: np.ndarray, rate: int) -> np.ndarray:
    """The clip as float32 mono at 32 kHz; ValueError (one line) for anything not a long-enough mono clip."""
    if not isinstance(audio, np.ndarray) or audio.ndim != 1:
        raise ValueError(f"audio must be a 1-D numpy array, got {getattr(audio, 'shape', type(audio).__name__)}")
    if audio.size < math.ceil(MIN_SECONDS * rate):
        raise ValueError(f"audio of {audio.size} samples at {rate} Hz is shorter than {MIN_SECONDS * 1000:.0f} ms")
    return resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def log_mel(waveforms: Any) -> Any:
    """EfficientAT's eval-mode front end: ``(batch, samples)`` at 32 kHz -> ``(batch, 1, 128, frames)`` tensor."""
    torch = _torch()
    emphasised = waveforms[:, 1:] - PREEMPHASIS * waveforms[:, :-1]
    window = torch.hann_window(WINDOW, periodic=False, dtype=emphasised.dtype)
    spectrum = torch.stft(
        emphasised, N_FFT, hop_length=HOP, win_length=WINDOW, window=window, center=True, return_complex=True
    )
    power = spectrum.real**2 + spectrum.imag**2
    mel = torch.matmul(torch.from_numpy(efficientat_mel_matrix()), power)
    return ((torch.log(mel + LOG_OFFSET) + NORM_SHIFT) / NORM_SCALE).unsqueeze(1)


def build_network() -> Any:
    """A randomly initialised mn04_as network (`AudioMobileNet`), in eval mode."""
    _torch()
    from instrument_ai.train.audioset_network import AudioMobileNet

    return AudioMobileNet().eval()


def state_manifest(state: Mapping[str, Any]) -> dict[str, list[int]]:
    """Every tensor name of a state dict with its shape, in order (what the committed manifest holds)."""
    return {name: [int(size) for size in value.shape] for name, value in state.items()}


def committed_manifest(path: Path = MANIFEST_FILE) -> dict[str, list[int]]:
    """The tensor names and shapes of the pinned mn04_as file, as committed."""
    tensors: dict[str, list[int]] = json.loads(path.read_text())["tensors"]
    return tensors


def top_labels(probabilities: np.ndarray, count: int = 5) -> list[tuple[str, float]]:
    """The `count` most likely AudioSet classes with their probabilities, most likely first."""
    order = np.argsort(probabilities)[::-1][:count]
    return [(AUDIOSET_LABELS[i], float(probabilities[i])) for i in order]


class AudioSetTagger:
    """The pinned mn04_as weights in our network: clip-level AudioSet probabilities (and embeddings) for a clip."""

    def __init__(self, network: Any) -> None:
        self.network = network

    @classmethod
    def load(cls, path: str | Path) -> AudioSetTagger:
        """The tagger with the pinned file's weights (size and SHA-256 verified; every tensor must fit).

        Sets torch to one thread: the tagger runs beside other work, and one note is small.
        """
        torch = _torch()
        state = load_teacher_state(path, TEACHER_NAME)
        network = build_network()
        network.load_state_dict(state, strict=True)
        torch.set_num_threads(1)
        return cls(network.eval())

    def _run(self, audio: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``(527,)`` and pooled features ``(384,)`` of one clip."""
        torch = _torch()
        waveform = torch.from_numpy(model_rate_audio(audio, rate))[None, :]
        with torch.inference_mode():
            logits, pooled = self.network(log_mel(waveform))
        return logits[0].numpy(), pooled[0].numpy()

    def probabilities(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """The 527 class probabilities (sigmoid of the clip's logits; independent, multi-label) of a mono clip."""
        torch = _torch()
        logits, _ = self._run(audio, rate)
        return torch.sigmoid(torch.from_numpy(logits)).numpy()

    def embedding(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """The 384 pooled features the classifier reads (mean of the last feature map over frequency and time)."""
        return self._run(audio, rate)[1]


__all__ = [
    "AUDIOSET_LABELS",
    "AudioSetTagger",
    "TeacherFileError",
    "build_network",
    "efficientat_mel_matrix",
    "kaldi_mel_banks",
    "log_mel",
    "model_rate_audio",
    "state_manifest",
    "top_labels",
]

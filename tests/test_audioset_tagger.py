"""The mn04_as AudioSet tagger (issue 23, item 6) without its weights file: the numpy Kaldi mel banks, the
network's tensor layout against the pinned file's committed manifest, the front end, a forward pass, and the one
line a machine without torch gets. (The sanity check on real notes needs the weights and is not a test.)"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instrument_ai.train import audioset_tagger as tagger

SR, N_FFT = 32_000, 1024


def _mel(freq: float) -> float:
    return 1127.0 * math.log(1.0 + freq / 700.0)


def _kaldi_weight(band: int, fft_bin: int, fmin: float = 0.0, fmax: float = 15_000.0, n_mels: int = 128) -> float:
    """Kaldi's formula for one filter at one FFT bin, written out in scalars."""
    step = (_mel(fmax) - _mel(fmin)) / (n_mels + 1)
    left = _mel(fmin) + band * step
    centre, right = left + step, left + 2 * step
    mel = _mel(fft_bin * SR / N_FFT)
    return max(0.0, min((mel - left) / (centre - left), (right - mel) / (right - centre)))


def test_the_mel_matrix_is_kaldis_formula_at_sample_points() -> None:
    matrix = tagger.efficientat_mel_matrix()
    assert matrix.shape == (128, 513) and matrix.dtype == np.float32
    for band in (0, 1, 40, 64, 100, 127):  # whole rows, so both slopes and the zeros around them are checked
        expected = [_kaldi_weight(band, fft_bin) for fft_bin in range(512)]
        assert matrix[band, :512] == pytest.approx(expected, abs=1e-6)
        assert np.count_nonzero(expected) >= 1


def test_each_mel_row_is_one_triangle_peaking_at_its_centre_frequency() -> None:
    matrix = tagger.efficientat_mel_matrix()
    assert (matrix >= 0).all() and (matrix <= 1).all()
    assert not matrix[:, 512].any()  # EfficientAT's padded Nyquist column
    fmax_bin = 15_000 * N_FFT // SR  # 480, exactly at fmax: zero up to rounding
    assert not matrix[:, fmax_bin + 1 :].any() and matrix[:, fmax_bin].max() < 1e-6
    step = _mel(15_000.0) / 129
    for band, row in enumerate(matrix):
        support = np.flatnonzero(row)
        assert support.size and (np.diff(support) == 1).all(), f"band {band}: support not contiguous"
        peak = int(np.argmax(row))
        assert (np.diff(row[support[0] : peak + 1]) >= 0).all() and (np.diff(row[peak : support[-1] + 1]) <= 0).all()
        centre_hz = 700.0 * (math.exp((band + 1) * step / 1127.0) - 1.0)
        assert abs(peak * SR / N_FFT - centre_hz) <= SR / N_FFT, f"band {band} peaks away from {centre_hz:.0f} Hz"


def test_mel_banks_refuse_a_range_beyond_nyquist() -> None:
    with pytest.raises(ValueError, match="below Nyquist"):
        tagger.kaldi_mel_banks(128, 1024, 32_000, 0.0, 17_000.0)


def test_the_labels_are_the_527_audioset_classes_in_output_order() -> None:
    labels = tagger.AUDIOSET_LABELS
    assert len(labels) == 527 and len(set(labels)) == 527
    assert labels[0] == "Speech" and labels[137] == "Music" and labels[196] == "Flute"
    assert labels[526] == "Field recording"
    probabilities = np.zeros(527, dtype=np.float32)
    probabilities[[196, 0]] = [0.9, 0.4]
    assert tagger.top_labels(probabilities, 2) == [("Flute", pytest.approx(0.9)), ("Speech", pytest.approx(0.4))]


def test_state_manifest_lists_every_tensor_shape_in_order() -> None:
    state = {"a.weight": np.zeros((2, 3)), "a.num_batches_tracked": np.zeros(()), "b.bias": np.zeros(4)}
    manifest = tagger.state_manifest(state)
    assert manifest == {"a.weight": [2, 3], "a.num_batches_tracked": [], "b.bias": [4]}
    assert list(manifest) == list(state)
    committed = json.loads(tagger.MANIFEST_FILE.read_text())
    assert committed["sha256"].startswith("899a8c62") and len(committed["tensors"]) == 312


def test_a_clip_too_short_or_not_mono_is_refused_with_one_line() -> None:
    with pytest.raises(ValueError, match="shorter than 25 ms"):
        tagger.model_rate_audio(np.zeros(100, dtype=np.float32), 16_000)
    with pytest.raises(ValueError, match="1-D"):
        tagger.model_rate_audio(np.zeros((16_000, 2), dtype=np.float32), 16_000)
    assert tagger.model_rate_audio(np.zeros(16_000, dtype=np.float32), 16_000).shape == (32_000,)


def test_the_network_has_exactly_the_pinned_files_tensor_names_and_shapes() -> None:
    torch = pytest.importorskip("torch")
    network = tagger.build_network()
    assert list(tagger.state_manifest(network.state_dict()).items()) == list(tagger.committed_manifest().items())
    # not in the state dict, so a wrong value would load silently: EfficientAT normalises with eps 0.001
    assert {m.eps for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}


def test_a_random_network_gives_527_probabilities_for_two_seconds() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    audio = np.random.default_rng(0).normal(0.0, 0.1, 2 * 16_000).astype(np.float32)
    probabilities = tagger.AudioSetTagger(tagger.build_network()).probabilities(audio, 16_000)
    assert probabilities.shape == (527,) and probabilities.dtype == np.float32
    assert ((probabilities > 0) & (probabilities < 1)).all() and probabilities.std() > 0
    embedding = tagger.AudioSetTagger(tagger.build_network()).embedding(audio, 16_000)
    assert embedding.shape == (384,) and np.isfinite(embedding).all()


def test_the_front_end_puts_a_tone_in_its_mel_band_and_leaves_the_empty_octave_at_the_floor() -> None:
    torch = pytest.importorskip("torch")
    seconds = np.arange(2 * 16_000) / 16_000
    audio = (0.5 * np.sin(2 * np.pi * 1000.0 * seconds)).astype(np.float32)
    mel = tagger.log_mel(torch.from_numpy(tagger.model_rate_audio(audio, 16_000))[None, :])
    assert tuple(mel.shape) == (1, 1, 128, 200)  # 64,000 samples, one fewer after pre-emphasis, 10 ms hops, centred
    spectrum = mel[0, 0, :, 20:-20].mean(dim=1).numpy()
    centres = 700.0 * (np.exp(np.arange(1, 129) * _mel(15_000.0) / 129 / 1127.0) - 1.0)
    assert abs(int(np.argmax(spectrum)) - int(np.argmin(np.abs(centres - 1000.0)))) <= 1
    floor = (math.log(1e-5) + 4.5) / 5  # an empty band: log(0 + 1e-5), normalised
    assert spectrum[centres > 9_000].max() < floor + 0.5 < spectrum.max()


def test_without_torch_the_module_imports_and_the_tagger_says_it_needs_torch_in_one_line(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from instrument_ai.train.audioset_tagger import AUDIOSET_LABELS, AudioSetTagger, efficientat_mel_matrix\n"
        "from instrument_ai.train.teacher_file import TeacherFileError\n"
        "assert len(AUDIOSET_LABELS) == 527 and efficientat_mel_matrix().shape == (128, 513)\n"
        "try:\n"
        f"    AudioSetTagger.load({str(tmp_path / 'absent.pt')!r})\n"
        "except TeacherFileError as exc:\n"
        "    print(exc.exit_code, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2 mn04_as: the AudioSet tagger needs torch (not installed)\n"

"""Training features: device windows, the silence gate, exact equality with the device frontend, the cache."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from instrument_ai.device.frontend import DEFAULT_SPEC, FrontendSpec, mfcc
from instrument_ai.train.augment import AudioAugment
from instrument_ai.train.features import (
    ExtractSettings,
    FeatureCache,
    FeatureError,
    FeatureSet,
    extract_features,
    extract_note,
    hop_frames,
    note_windows,
    onset_prefix,
    silence_frame,
    window_frames,
    window_levels_dbfs,
)

RATE = 16000


def tone(seconds: float, freq: float = 440.0, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * amp * rng.standard_normal(t.size)).astype(np.float32)


@dataclass
class FakeNote:
    """The attributes of data.Note that extraction reads."""

    note_str: str
    audio: np.ndarray
    family: int = 0
    family_str: str = "bass"
    instrument_str: str = "bass_acoustic_000"
    source: int = 0
    pitch: int = 60
    velocity: int = 100
    sample_rate: int = RATE

    def load_audio(self) -> np.ndarray:
        return self.audio


def test_window_geometry_of_the_default_spec() -> None:
    assert window_frames(DEFAULT_SPEC, 1.0) == 59
    assert hop_frames(DEFAULT_SPEC, 0.25) == 16  # 0.25 s = 15.6 frames, rounded


def test_note_windows_are_the_device_windows() -> None:
    features = np.arange(40 * 100, dtype=np.float32).reshape(40, 100)
    windows = note_windows(features, 59, 16)
    starts = list(range(0, 100 - 59 + 1, 16))
    assert windows.shape == (len(starts), 40, 59)
    for k, start in enumerate(starts):
        np.testing.assert_array_equal(windows[k], features[:, start : start + 59])


def test_note_windows_pads_a_short_note_and_handles_empty() -> None:
    features = np.ones((40, 10), dtype=np.float32)
    pad = np.full(40, -7.0, dtype=np.float32)
    windows = note_windows(features, 59, 16, pad=pad)
    assert windows.shape == (1, 40, 59)
    assert np.all(windows[0, :, :10] == 1.0) and np.all(windows[0, :, 10:] == -7.0)
    assert note_windows(np.zeros((40, 0), np.float32), 59, 16).shape == (0, 40, 59)
    with pytest.raises(ValueError):
        note_windows(np.zeros(5), 59, 16)


def test_silence_frame_is_the_mfcc_of_zeros() -> None:
    np.testing.assert_allclose(silence_frame(DEFAULT_SPEC), mfcc(np.zeros(1024), DEFAULT_SPEC)[:, 0])


def test_window_levels_match_a_direct_rms() -> None:
    signal = np.concatenate([np.zeros(8000), tone(2.0)]).astype(np.float64)
    levels = window_levels_dbfs(signal, DEFAULT_SPEC, 59)
    n = DEFAULT_SPEC.window_samples(59)
    for k in (0, 5, 40, len(levels) - 1):
        chunk = signal[k * 256 : k * 256 + n]
        expected = 10 * np.log10(max(np.mean(chunk**2), 1e-20))
        assert levels[k] == pytest.approx(expected, abs=1e-6)
    assert len(levels) == DEFAULT_SPEC.n_frames(signal.size) - 59 + 1


def test_extract_note_trims_to_audible_windows_and_equals_the_device_frontend() -> None:
    # 1.5 s digital silence, 2 s tone, 1.5 s digital silence
    audio = np.concatenate([np.zeros(24000), tone(2.0), np.zeros(24000)]).astype(np.float32)
    settings = ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=0))
    blocks = extract_note(audio, "n", settings)
    assert [r for r, _ in blocks] == [0]
    block = blocks[0][1]
    levels = window_levels_dbfs(audio.astype(np.float64), DEFAULT_SPEC, 59)
    valid = np.flatnonzero(levels >= -60.0)
    assert block.shape == (valid[-1] - valid[0] + 59, 40)
    assert block.dtype == np.float16
    # the stored frames are the device frontend's frames of the whole note, at the same positions
    full = mfcc(audio, DEFAULT_SPEC).T
    np.testing.assert_allclose(block.astype(np.float32), full[valid[0] : valid[-1] + 59], rtol=2e-3, atol=0.3)
    # windows of pure silence (at both ends) are never stored
    assert valid[0] > 0 and valid[-1] < len(levels) - 1


def test_silent_and_quiet_notes() -> None:
    settings = ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=1))
    assert extract_note(np.zeros(32000, np.float32), "silent", settings) == []
    quiet = tone(2.0, amp=10 ** (-70 / 20))  # about -73 dBFS: under the gate, far above digital silence
    blocks = extract_note(quiet, "quiet", dataclasses.replace(settings, augment=AudioAugment(copies=0)))
    assert len(blocks) == 1 and blocks[0][1].shape[0] == 59  # only the loudest window


def test_a_note_shorter_than_a_window_gives_one_window() -> None:
    settings = ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=0))
    blocks = extract_note(tone(0.4), "short", settings)
    assert len(blocks) == 1 and blocks[0][1].shape == (59, 40)


def test_augmented_renditions_are_deterministic_per_note() -> None:
    audio = tone(2.0)
    settings = ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=2, seed=3))
    first = extract_note(audio, "a", settings)
    again = extract_note(audio, "a", settings)
    other = extract_note(audio, "b", settings)
    assert [r for r, _ in first] == [0, 1, 2]
    for (_, x), (_, y) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(first[0][1], other[0][1])  # the clean rendition does not depend on the name
    assert not np.array_equal(first[1][1], other[1][1])


def _notes(n: int) -> list[FakeNote]:
    return [FakeNote(f"bass_acoustic_000-{60 + i:03d}-100", tone(1.5, 110.0 * (1 + i), seed=i)) for i in range(n)]


def test_feature_set_sampling_and_device_windows() -> None:
    notes = _notes(3)
    settings = ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=1))
    features = extract_features(notes, settings, progress=False)
    assert features.n_notes == 3 and set(features.seg_rendition.tolist()) == {0, 1}
    rng = np.random.default_rng(0)
    starts = features.sample_starts(rng, np.array([0, 1, 2, 2, 1]))
    x = features.gather(starts)
    assert x.shape == (5, 40, 59) and x.dtype == np.float32
    # every sampled window lies inside one segment
    seg = np.searchsorted(features.seg_offset, starts, side="right") - 1
    assert np.all(starts + 59 <= features.seg_offset[seg] + features.seg_length[seg])
    windows, owner = features.device_windows(16)
    assert windows.shape[1:] == (40, 59) and set(owner.tolist()) == {0, 1, 2}
    mean, std = features.feature_stats()
    frames = features.frames.astype(np.float64)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(std, np.maximum(frames.std(axis=0), 1e-3), rtol=1e-3, atol=1e-3)


def test_onset_windows_are_the_engines_first_windows_of_a_note() -> None:
    """After an onset the device classifies the frames heard so far, then silence frames (Classifier._window)."""
    notes = _notes(2)
    features = extract_features(notes, ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=1)), progress=False)
    pad = silence_frame(DEFAULT_SPEC)
    x, owner = features.onset_windows(16, pad)
    assert x.shape == (2, 40, 59) and owner.tolist() == [0, 1]  # one per note: its clean rendition only
    clean = np.flatnonzero(features.seg_rendition == 0)
    for row, seg in enumerate(clean):
        block = features.frames[features.seg_offset[seg] : features.seg_offset[seg] + 16].T.astype(np.float32)
        np.testing.assert_array_equal(x[row, :, :16], block)  # the note's first 16 frames ...
        np.testing.assert_array_equal(x[row, :, 16:], np.repeat(pad[:, None].astype(np.float32), 43, axis=1))
    starts = features.onset_starts(np.random.default_rng(0), np.array([0, 0, 1, 1, 1, 0]))
    assert set(starts.tolist()) <= set(features.seg_offset.tolist())  # every draw is a segment's first frame
    windows = np.ones((3, 2, 4), np.float32)
    onset_prefix(windows, np.array([1, 4, 3]), np.array([-5.0, -6.0]))
    assert windows[0].tolist() == [[1, -5, -5, -5], [1, -6, -6, -6]]
    assert windows[1].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]] and windows[2, :, 3].tolist() == [-5, -6]


def test_unreadable_notes_are_counted_not_fatal() -> None:
    class Broken(FakeNote):
        def load_audio(self) -> np.ndarray:
            raise OSError("disk on fire")

    notes = [*_notes(2), Broken("bass_acoustic_000-099-100", np.zeros(0, np.float32))]
    notes[2].audio = None  # type: ignore[assignment]
    features = extract_features(notes, ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=0)), progress=False)
    assert features.n_notes == 2
    assert len(features.meta["failed"]) == 1 and "disk on fire" in features.meta["failed"][0]


def test_oversized_request_is_refused_before_allocating() -> None:
    settings = ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=2))
    with pytest.raises(FeatureError, match="GB"):
        extract_features(_notes(2), settings, max_bytes=1000, progress=False)


def test_parallel_extraction_equals_serial() -> None:
    notes = _notes(4)
    settings = ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=1))
    serial = extract_features(notes, settings, jobs=1, progress=False)
    parallel = extract_features(notes, settings, jobs=2, progress=False)
    np.testing.assert_array_equal(serial.frames, parallel.frames)
    np.testing.assert_array_equal(serial.seg_length, parallel.seg_length)


def test_cache_hit_and_invalidation(tmp_path: Path) -> None:
    notes = _notes(2)
    settings = ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=1))
    cache = FeatureCache(tmp_path)
    first = cache.get_or_build(notes, settings, data_hash="d1", split="train", progress=False)
    assert cache.last_hit is False
    second = cache.get_or_build(notes, settings, data_hash="d1", split="train", progress=False)
    assert cache.last_hit is True
    np.testing.assert_array_equal(first.frames, second.frames)
    assert second.notes == first.notes
    key = cache.last_key
    # any change of spec, augmentation, data or split is a different entry
    other_spec = dataclasses.replace(settings, spec=FrontendSpec(n_mfcc=20))
    changed = cache.get_or_build(notes, other_spec, data_hash="d1", split="train", progress=False)
    assert cache.last_hit is False and changed.n_features == 20 and cache.last_key != key
    for variant in (
        dict(data_hash="d2", split="train"),
        dict(data_hash="d1", split="valid"),
    ):
        cache.get_or_build(notes, settings, progress=False, **variant)
        assert cache.last_hit is False
    more = dataclasses.replace(settings, augment=AudioAugment(copies=2))
    cache.get_or_build(notes, more, data_hash="d1", split="train", progress=False)
    assert cache.last_hit is False and cache.last_key == key  # more copies than stored: rebuilt in place
    fewer = cache.get_or_build(notes, settings, data_hash="d1", split="train", progress=False)
    assert cache.last_hit is True and set(fewer.seg_rendition.tolist()) == {0, 1}
    np.testing.assert_array_equal(fewer.gather(fewer.seg_offset), first.gather(first.seg_offset))
    reseeded = dataclasses.replace(settings, augment=AudioAugment(copies=1, seed=9))
    cache.get_or_build(notes, reseeded, data_hash="d1", split="train", progress=False)
    assert cache.last_hit is False
    # no temporary folder is left behind, and a damaged entry is rebuilt, not trusted
    entries = list((tmp_path / "features").iterdir())
    assert all(not p.name.startswith(".tmp") for p in entries)
    (cache.folder(key) / "notes.json").write_text("{broken")
    cache.get_or_build(notes, settings, data_hash="d1", split="train", progress=False)
    assert cache.last_hit is False
    assert json.loads((cache.folder(key) / "notes.json").read_text())["window_frames"] == 59


def test_feature_set_round_trip(tmp_path: Path) -> None:
    features = extract_features(_notes(2), ExtractSettings(DEFAULT_SPEC), progress=False)
    features.save(tmp_path / "set")
    loaded = FeatureSet.load(tmp_path / "set")
    np.testing.assert_array_equal(loaded.frames, features.frames)
    np.testing.assert_array_equal(loaded.seg_note, features.seg_note)
    assert loaded.window_frames == 59 and loaded.notes == features.notes


def test_subset_is_a_view_with_its_own_tables() -> None:
    features = extract_features(
        _notes(4), ExtractSettings(DEFAULT_SPEC, augment=AudioAugment(copies=1)), progress=False
    )
    part = features.subset([3, 1], renditions=(0,))
    assert part.frames is features.frames  # no copy of the frames
    assert [n["note_str"] for n in part.notes] == [features.notes[1]["note_str"], features.notes[3]["note_str"]]
    assert part.seg_note.tolist() == [0, 1] and set(part.seg_rendition.tolist()) == {0}
    own = np.concatenate([features.frames[o : o + n] for o, n in zip(part.seg_offset, part.seg_length, strict=True)])
    assert part.n_frames_used == own.shape[0]
    mean, std = part.feature_stats()
    np.testing.assert_allclose(mean, own.astype(np.float64).mean(axis=0), rtol=1e-4, atol=1e-3)
    windows, owner = part.device_windows(16)
    assert set(owner.tolist()) == {0, 1}
    starts = part.sample_starts(np.random.default_rng(0), np.array([0, 1, 1]))
    inside = [
        any(o <= s and s + 59 <= o + n for o, n in zip(part.seg_offset, part.seg_length, strict=True)) for s in starts
    ]
    assert all(inside)

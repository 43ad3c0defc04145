"""The personal head (issue 22): descriptor, note extraction, fitting, the gated blend and the personal file.

Uses the shipped model and synthetic notes made with numpy: an odd-harmonic timbre and a bright one that the
general model names organ/mallet and brass; enrolled as reed and string, the held-out notes must be named so,
while a sound far from both keeps the general model's output unchanged.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from fakemic import PREVIOUS_MODEL

from instrument_ai.device import bundle as bundle_module
from instrument_ai.device import personal, personal_file
from instrument_ai.device.engine import Classifier
from instrument_ai.device.errors import ConfigurationError
from instrument_ai.device.file_answer import file_answer
from instrument_ai.device.labels import LABELS

SR = 16000
PITCHES = (196.0, 330.0, 262.0, 220.0, 392.0, 247.0)  # enrolled: the first four; held out: the last two


@pytest.fixture(scope="module")
def bundle() -> bundle_module.Bundle:
    return bundle_module.load(PREVIOUS_MODEL)


def synth_note(kind: str, f0: float, seed: int, seconds: float = 1.5) -> np.ndarray:
    """A note with silence before and after: 'odd' (odd harmonics, slow attack), 'bright' (all, fast decay),
    'beep' (an appliance's sine beeps), 'hiss' (a burst of white noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    if kind == "odd":
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 16, 2) if f0 * h < 7000)
        env = np.minimum(1, t / 0.05) * np.exp(-t * 0.5)
    elif kind == "bright":
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) * 0.9**h for h in range(1, 25) if f0 * h < 7000)
        env = np.minimum(1, t / 0.01) * np.exp(-t * 2.5)
    elif kind == "beep":
        x = np.sin(2 * np.pi * (8 * f0) * t)
        env = ((t % 0.4) < 0.2).astype(float)
    else:  # hiss
        x = rng.standard_normal(t.size)
        env = np.ones(t.size)
    x = x * env
    x = 0.3 * x / np.max(np.abs(x))
    return np.concatenate((np.zeros(1600), x, np.zeros(4000))).astype(np.float32)


def answer(bundle: object, audio: np.ndarray, head: personal.PersonalHead | None = None) -> tuple[str, int]:
    """The file answer and the number of instrument events, as `classify` and `run` give them (with `head`)."""
    engine = Classifier(bundle)
    engine.set_personal(head)
    hops = engine.process_hops(audio) + engine.flush()
    events = sum(1 for e in hops if e.changed and e.is_instrument)
    return file_answer(hops, list(engine.labels), 3)["label"], events


def enrol(bundle: bundle_module.Bundle, kind: str, family: str, seeds: range) -> list[personal.Note]:
    notes = []
    for seed in seeds:
        notes += personal.extract_notes(synth_note(kind, PITCHES[seed], seed), SR, bundle, family)
    return notes


# -- descriptor ---------------------------------------------------------------------------------------------------


def test_descriptor_shape_determinism_and_padding(bundle: bundle_module.Bundle) -> None:
    silent = personal.silent_frame(bundle.spec)
    rng = np.random.default_rng(0)
    window = (bundle.mean[:, None] + bundle.std[:, None] * rng.standard_normal((40, 59))).astype(np.float32)
    first = personal.describe_window(window, silent)
    assert first is not None and first.shape == (80,) and first.dtype == np.float32
    assert np.array_equal(first, personal.describe_window(window.copy(), silent))
    assert np.allclose(first[:40], window.mean(axis=1), atol=1e-4)
    padded = window.copy()
    padded[:, 20:] = silent[:, None]  # the engine's padding after an onset: left out of the statistics
    assert np.allclose(personal.describe_window(padded, silent), personal.describe_window(window[:, :20], silent))
    assert personal.describe_window(np.repeat(silent[:, None], 59, axis=1), silent) is None


def test_extract_notes_one_per_onset_and_no_note_is_an_error(bundle: bundle_module.Bundle) -> None:
    two = np.concatenate((synth_note("odd", 220, 0), np.zeros(SR), synth_note("odd", 330, 1)))
    notes = personal.extract_notes(two, SR, bundle, "reed")
    assert len(notes) == 2
    assert notes[1].onset > notes[0].onset + 1.0
    for note in notes:
        assert note.descriptors.shape[1] == 80 and 1 <= note.descriptors.shape[0] <= personal.MAX_NOTE_HOPS
        assert note.probs is not None and note.probs.shape == (note.descriptors.shape[0], len(bundle.labels))
        assert note.clip is not None and note.clip.dtype == np.int16
        assert note.clip.size <= personal.CLIP_SECONDS * SR
    with pytest.raises(personal.NoNoteError, match="no note found") as caught:
        personal.extract_notes(np.zeros(2 * SR, dtype=np.float32), SR, bundle, "reed", source="quiet.wav")
    assert caught.value.exit_code == 2 and "quiet.wav" in str(caught.value)
    with pytest.raises(personal.PersonalError, match="unknown family 'kazoo'"):
        personal.extract_notes(two, SR, bundle, "kazoo")
    # another input rate goes through the engine's resampler: the same note is found
    at_44k = np.repeat(synth_note("odd", 220, 0), 3)  # crude 48 kHz copy: one note, one onset
    assert len(personal.extract_notes(at_44k, 48000, bundle, "reed")) == 1


# -- the head ---------------------------------------------------------------------------------------------------


def test_enrolling_two_confused_timbres_makes_them_recognised(bundle: bundle_module.Bundle) -> None:
    held_out = [("odd", seed, "reed") for seed in (4, 5)] + [("bright", seed, "string") for seed in (4, 5)]
    before = [answer(bundle, synth_note(kind, PITCHES[seed], seed))[0] for kind, seed, _ in held_out]
    assert not any(got == want for got, (_, _, want) in zip(before, held_out, strict=True))  # the model confuses them
    notes = enrol(bundle, "odd", "reed", range(4)) + enrol(bundle, "bright", "string", range(4))
    head = personal.fit_head(notes, bundle.labels, bundle.spec, bundle.mean, bundle.std)
    assert head.families == ["reed", "string"]
    after = [answer(bundle, synth_note(kind, PITCHES[seed], seed), head)[0] for kind, seed, _ in held_out]
    assert after == [want for _, _, want in held_out]


def test_a_sound_far_from_every_enrolled_family_is_untouched(bundle: bundle_module.Bundle) -> None:
    notes = enrol(bundle, "odd", "reed", range(3))
    head = personal.fit_head(notes, bundle.labels, bundle.spec, bundle.mean, bundle.std)
    far = synth_note("hiss", 220, 0)
    plain, tapped = Classifier(bundle), Classifier(bundle)
    tapped.set_personal(head)
    hops = plain.process_hops(far) + plain.flush()
    with_head = tapped.process_hops(far) + tapped.flush()
    assert [e.label for e in hops] == [e.label for e in with_head]
    for a, b in zip(hops, with_head, strict=True):
        assert (a.probs is None and b.probs is None) or np.array_equal(a.probs, b.probs)
    # the head hands back the very array it was given when it stands back
    window = np.repeat(personal.silent_frame(bundle.spec)[:, None], 59, axis=1)
    probs = np.full(len(bundle.labels), 1 / 12, dtype=np.float32)
    assert head.adjust(window, probs) is probs


def test_a_background_sound_of_another_family_is_left_alone(bundle: bundle_module.Bundle) -> None:
    """Enrolled from three notes, 'reed' is wide enough to take an appliance's beeps; a background of known sounds
    (here: beeps, as the general model names them) keeps them out, while held-out reed notes still come in."""
    notes = enrol(bundle, "odd", "reed", range(3))
    beep = synth_note("beep", 220, 0)
    wide = personal.fit_head(notes, bundle.labels, bundle.spec, bundle.mean, bundle.std)
    assert answer(bundle, beep, wide)[0] == "reed"  # without a background: captured
    known = [
        personal.Note(answer(bundle, b)[0], n.descriptors, probs=n.probs)
        for b in [synth_note("beep", f, i) for i, f in enumerate((200.0, 240.0, 230.0))]
        for n in personal.extract_notes(b, SR, bundle, "other")
    ]
    assert {n.family for n in known} == {"mallet"}
    head = personal.fit_head(notes, bundle.labels, bundle.spec, bundle.mean, bundle.std, background=known)
    assert head.background is not None and head.background.shape[0] == sum(n.descriptors.shape[0] for n in known)
    assert answer(bundle, beep, head) == answer(bundle, beep)
    assert answer(bundle, synth_note("odd", PITCHES[3], 3), head)[0] == "reed"


def test_enrolled_other_suppresses_instrument_events(bundle: bundle_module.Bundle) -> None:
    beeps = [synth_note("beep", f, i) for i, f in enumerate((250.0, 260.0, 255.0, 252.0, 258.0))]
    before = sum(answer(bundle, b)[1] for b in beeps[3:])
    assert before > 0  # the general model names the appliance's beeps as an instrument
    notes = [n for b in beeps[:3] for n in personal.extract_notes(b, SR, bundle, "other")]
    head = personal.fit_head(notes, bundle.labels, bundle.spec, bundle.mean, bundle.std)
    after = sum(answer(bundle, b, head)[1] for b in beeps[3:])
    assert after == 0
    # and the instrument timbres are still what the general model said
    odd = synth_note("odd", 220, 1)
    assert answer(bundle, odd, head) == answer(bundle, odd)


def test_fit_of_100_notes_is_fast_and_a_family_needs_two_notes(bundle: bundle_module.Bundle) -> None:
    rng = np.random.default_rng(1)
    notes = []
    for i in range(100):
        family = LABELS[i % 4]
        centre = bundle.mean if i % 4 else bundle.mean + bundle.std
        mean = centre[:, None] + 0.3 * bundle.std[:, None] * rng.standard_normal((40, 8))
        descriptors = np.concatenate((mean, np.abs(rng.standard_normal((40, 8))))).T.astype(np.float32)
        probs = rng.dirichlet(np.ones(12), size=8).astype(np.float32)
        notes.append(personal.Note(family, descriptors, probs=probs))
    started = time.perf_counter()
    head = personal.fit_head(notes, bundle.labels, bundle.spec, bundle.mean, bundle.std)
    assert time.perf_counter() - started < 2.0
    assert head.families == LABELS[:4] and head.prototypes.shape == (800, 92)
    lonely = personal.fit_head(notes[:1] + notes[4:5] + notes[1:2], bundle.labels, bundle.spec, bundle.mean, bundle.std)
    assert lonely.families == ["bass"]  # brass has one note: no radius can be learnt from it


# -- the personal file ------------------------------------------------------------------------------------------


class OtherBundle:
    """The shipped bundle under another identity (digests), as a newly flashed model would be."""

    def __init__(self, bundle: bundle_module.Bundle) -> None:
        self._bundle = bundle
        self.metadata = dict(bundle.metadata, integrity={"model_sha256": "1" * 64, "metadata_sha256": "2" * 64})
        self.metadata["version"] = "9.9.9"
        for name in ("labels", "spec", "window_frames", "sample_rate", "default_hop_seconds", "mean", "std"):
            setattr(self, name, getattr(bundle, name))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self._bundle.predict(features)


def test_save_load_round_trip_is_atomic(bundle: bundle_module.Bundle, tmp_path: Path) -> None:
    data = personal.PersonalFile.new(bundle)
    data.add(enrol(bundle, "odd", "reed", range(3)))
    path = tmp_path / "personal.bin"
    data.save(path)
    assert sorted(os.listdir(tmp_path)) == ["personal.bin"]  # no temporary file left behind
    loaded = personal.PersonalFile.load(path)
    assert loaded.families() == {"reed": 3} and loaded.bundle == data.bundle and loaded.spec == data.spec
    for a, b in zip(data.notes, loaded.notes, strict=True):
        assert np.array_equal(a.descriptors, b.descriptors) and np.array_equal(a.probs, b.probs)
        assert np.array_equal(a.clip, b.clip) and a.family == b.family
    head = loaded.head(bundle)
    assert head.families == ["reed"]
    assert loaded.forget("reed") == 3 and loaded.families() == {}


def test_a_failed_save_keeps_the_previous_file(
    bundle: bundle_module.Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "personal.bin"
    first = personal.PersonalFile.new(bundle)
    first.add(enrol(bundle, "odd", "reed", range(2)))
    first.save(path)
    before = path.read_bytes()
    second = personal.PersonalFile.new(bundle)
    second.add(enrol(bundle, "bright", "string", range(3)))

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(personal_file.os, "fsync", full_disk)
    with pytest.raises(personal.PersonalSaveError, match=r"\(No space left on device\); the previous file is kept"):
        second.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["personal.bin"]


def test_another_bundle_is_refused_unless_refitted(bundle: bundle_module.Bundle, tmp_path: Path) -> None:
    data = personal.PersonalFile.new(bundle)
    data.add(enrol(bundle, "odd", "reed", range(3)))
    other = OtherBundle(bundle)
    with pytest.raises(personal.PersonalError, match="made for model default 0.4.0 .* not for default 9.9.9") as caught:
        data.head(other)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    refitted = data.refit(other)  # heard again from the stored clips, through the new model
    assert refitted.families() == {"reed": 3}
    assert refitted.head(other).families == ["reed"]
    # without clips the descriptors are kept (same frontend) and the model-dependent outputs dropped
    for note in data.notes:
        note.clip = None
    bare = data.refit(other)
    assert all(n.probs is None for n in bare.notes)
    assert bare.head(other).prob_weight == 0.0


def test_truncated_edited_or_foreign_files_are_refused(bundle: bundle_module.Bundle, tmp_path: Path) -> None:
    data = personal.PersonalFile.new(bundle)
    data.add(enrol(bundle, "odd", "reed", range(2)))
    raw = data.to_bytes()
    path = tmp_path / "p.bin"
    for damaged, reason in (
        (raw[:-100], "damaged"),
        (raw[: len(raw) // 2], "damaged"),
        (raw[:200] + bytes([raw[200] ^ 1]) + raw[201:], "damaged"),
        (b"RIFF" + raw[4:], "not a personal file"),
        (b"", "not a personal file"),
    ):
        path.write_bytes(damaged)
        with pytest.raises(ConfigurationError, match=reason) as caught:
            personal.PersonalFile.load(path)
        assert "\n" not in str(caught.value)
    with pytest.raises(personal.PersonalError, match="no such personal file"):
        personal.PersonalFile.load(tmp_path / "missing.bin")


def test_a_log_mel_models_windows_are_described_with_its_own_silence_frame() -> None:
    """A log-mel bundle (0.5.0) pads its windows with log-mel silence: the descriptor must drop those frames too."""
    import dataclasses

    from instrument_ai.device.frontend import DEFAULT_SPEC, log_mel

    spec = dataclasses.replace(DEFAULT_SPEC, stage="log_mel")
    silent = personal.silent_frame(spec)
    assert silent.shape == (spec.n_mels,)
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(spec.sample_rate // 2) / spec.sample_rate)
    sounding = log_mel(tone, spec)[:, :20].astype(np.float32)
    padded = np.concatenate([np.repeat(silent[:, None], 39, axis=1), sounding], axis=1)
    described = personal.describe_window(padded, silent)
    assert described is not None and described.shape == (2 * spec.n_mels,)
    np.testing.assert_allclose(described, personal.describe_window(sounding, silent), atol=0.05)  # float32 std

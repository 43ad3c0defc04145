"""Reading NSynth: json/wav folders and TFRecords written by the tests themselves, every field, filters,
streaming, and every kind of bad input (counted when skipping, one-line DataError under strict)."""

from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from instrument_ai.device.labels import FAMILIES
from instrument_ai.train.corpus import nsynth as data
from instrument_ai.train.corpus import tfrecord
from instrument_ai.train.corpus.info import corpus_info, describe, notes_for_split
from instrument_ai.train.corpus.nsynth import (
    FIELDS,
    QUALITIES,
    SOURCES,
    DataError,
    Note,
    ReadReport,
    iter_notes,
    write_examples_json,
    write_note_wav,
    write_tfrecord,
)

# (family, source, instrument number, global instrument id, pitch, velocity, qualities set)
SPECS = [
    ("guitar", "acoustic", 10, 7, 60, 100, {"bright"}),
    ("guitar", "acoustic", 10, 7, 62, 50, set()),
    ("bass", "synthetic", 33, 417, 22, 50, {"dark", "percussive"}),
    ("synth_lead", "synthetic", 0, 900, 72, 127, {"distortion", "tempo-synced"}),
    ("keyboard", "electronic", 1, 12, 48, 25, {"long_release"}),
    ("vocal", "acoustic", 2, 55, 67, 75, set()),
]


def tone(pitch: int, seed: int, n: int = data.NUM_SAMPLES, rate: int = data.SAMPLE_RATE) -> np.ndarray:
    """A deterministic, note-specific signal well inside 16-bit range."""
    t = np.arange(n) / rate
    freq = 440.0 * 2 ** ((pitch - 69) / 12)
    noise = np.random.default_rng(seed).standard_normal(n) * 0.01
    return (0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-t) + noise).astype(np.float32)


def make_note(i: int, spec: tuple = SPECS[0], *, with_audio: bool = True, **changes: object) -> Note:
    family, source, number, instrument, pitch, velocity, quals = spec
    inst = data.format_instrument_str(family, source, number)
    note = Note(
        note_str=data.format_note_str(inst, pitch, velocity),
        instrument=instrument,
        instrument_str=inst,
        pitch=pitch,
        velocity=velocity,
        sample_rate=16000,
        family=FAMILIES.index(family),
        family_str=family,
        source=SOURCES.index(source),
        source_str=source,
        qualities=[int(q in quals) for q in QUALITIES],
        audio=tone(pitch, i) if with_audio else None,
        note=1000 + i,
    )
    for key, value in changes.items():
        setattr(note, key, value)
    return note


def all_notes() -> list[Note]:
    return [make_note(i, spec) for i, spec in enumerate(SPECS)]


def write_folder(folder: Path, notes: list[Note]) -> Path:
    for note in notes:
        write_note_wav(folder, note)
    write_examples_json(folder, notes)
    return folder


@pytest.fixture()
def nsynth_folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "nsynth", all_notes())


@pytest.fixture()
def tfrecord_file(tmp_path: Path) -> Path:
    path = tmp_path / "nsynth-test.tfrecord"
    assert write_tfrecord(path, all_notes()) == len(SPECS)
    return path


def check_same(read: Note, want: Note, *, exact_audio: bool) -> None:
    for name in (
        "note_str",
        "instrument",
        "instrument_str",
        "pitch",
        "velocity",
        "sample_rate",
        "family",
        "family_str",
        "source",
        "source_str",
        "qualities",
        "note",
    ):
        assert getattr(read, name) == getattr(want, name), name
    assert read.qualities_str == [q for q in QUALITIES if q in set(want.qualities_str)]
    audio = read.load_audio()
    assert audio.dtype == np.float32 and audio.shape == (data.NUM_SAMPLES,)
    if exact_audio:
        np.testing.assert_array_equal(audio, want.audio)
    else:  # 16-bit PCM wav: within one quantisation step
        np.testing.assert_allclose(audio, want.audio, atol=1.5 / 32768)


# --------------------------------------------------------------------------- names and constants


def test_constants_follow_nsynth() -> None:
    ids = {"bass": 0, "brass": 1, "flute": 2, "guitar": 3, "keyboard": 4, "mallet": 5, "organ": 6, "reed": 7}
    ids |= {"string": 8, "synth_lead": 9, "vocal": 10}
    assert {name: FAMILIES.index(name) for name in FAMILIES} == ids and len(FAMILIES) == 11
    assert SOURCES == ["acoustic", "electronic", "synthetic"]
    assert QUALITIES == [
        "bright",
        "dark",
        "distortion",
        "fast_decay",
        "long_release",
        "multiphonic",
        "nonlinear_env",
        "percussive",
        "reverb",
        "tempo-synced",
    ]


def test_note_and_instrument_names() -> None:
    assert data.format_instrument_str("guitar", "acoustic", 10) == "guitar_acoustic_010"
    assert data.format_note_str("guitar_acoustic_010", 60, 100) == "guitar_acoustic_010-060-100"
    assert data.format_note_str("bass_synthetic_033", 22, 50) == "bass_synthetic_033-022-050"
    assert data.parse_note_str("synth_lead_synthetic_007-072-127") == ("synth_lead", "synthetic", 7, 72, 127)
    assert data.parse_note_str("guitar_acoustic_010-060-100") == ("guitar", "acoustic", 10, 60, 100)
    for bad in ("piano_acoustic_001-060-100", "guitar_wooden_001-060-100", "guitar_acoustic_001-60-100"):
        with pytest.raises(DataError):
            data.parse_note_str(bad)
    with pytest.raises(DataError, match="unknown family"):
        data.format_instrument_str("piano", "acoustic", 1)


# --------------------------------------------------------------------------- json/wav folders


def test_json_folder_reads_every_field(nsynth_folder: Path) -> None:
    report = ReadReport()
    notes = list(iter_notes(nsynth_folder, report=report))
    want = all_notes()
    assert [n.note_str for n in notes] == [n.note_str for n in want]  # file order kept
    for read, expected in zip(notes, want, strict=True):
        check_same(read, expected, exact_audio=False)
        assert read.path == nsynth_folder / "audio" / f"{read.note_str}.wav"
    assert (report.notes, report.filtered, report.total_skipped) == (6, 0, 0)
    assert report.summary() == "read 6 notes, skipped 0"


def test_examples_json_has_exactly_nsynth_fields(nsynth_folder: Path) -> None:
    raw = json.loads((nsynth_folder / "examples.json").read_text())
    assert list(raw) == [n.note_str for n in all_notes()]
    entry = raw["bass_synthetic_033-022-050"]
    assert set(entry) == set(FIELDS) and len(FIELDS) == 13
    assert entry == {
        "note": 1002,
        "note_str": "bass_synthetic_033-022-050",
        "instrument": 417,
        "instrument_str": "bass_synthetic_033",
        "pitch": 22,
        "velocity": 50,
        "sample_rate": 16000,
        "qualities": [0, 1, 0, 0, 0, 0, 0, 1, 0, 0],
        "qualities_str": ["dark", "percussive"],
        "instrument_family": 0,
        "instrument_family_str": "bass",
        "instrument_source": 2,
        "instrument_source_str": "synthetic",
    }
    assert data.read_examples_json(nsynth_folder) == raw
    info = soundfile.info(str(nsynth_folder / "audio" / "bass_synthetic_033-022-050.wav"))
    assert (info.samplerate, info.frames, info.channels, info.subtype) == (16000, 64000, 1, "PCM_16")


def test_write_examples_json_is_deterministic_and_refuses_bad_labels(tmp_path: Path) -> None:
    a = write_folder(tmp_path / "a", all_notes())
    b = write_folder(tmp_path / "b", all_notes())
    assert (a / "examples.json").read_bytes() == (b / "examples.json").read_bytes()
    with pytest.raises(DataError, match="duplicate note_str"):
        write_examples_json(tmp_path / "c", [make_note(0), make_note(0)])
    with pytest.raises(DataError, match="means 'bass'"):
        write_examples_json(tmp_path / "d", [make_note(0, family=0)])  # guitar labelled with bass's id
    assert not (tmp_path / "d" / "examples.json").exists()  # nothing half-written is left behind


def test_streaming_json_parser_matches_json_load_at_any_chunk_size(nsynth_folder: Path) -> None:
    raw = json.loads((nsynth_folder / "examples.json").read_text())
    for chunk in (1, 7, 64, 1 << 20):
        assert dict(data.iter_examples_json(nsynth_folder, chunk_chars=chunk)) == raw
    (nsynth_folder / "examples.json").write_text(' {"a-1": {"x": [1, 2.5e3, null, true]} ,"b": 12345 }\n')
    assert list(data.iter_examples_json(nsynth_folder, chunk_chars=3)) == [
        ("a-1", {"x": [1, 2500.0, None, True]}),
        ("b", 12345),
    ]
    (nsynth_folder / "examples.json").write_text("{}")
    assert list(iter_notes(nsynth_folder)) == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"a": {}, "b": {', "malformed JSON after 1 entries"),
        ('{"a": {} "b": {}}', "expected ','"),
        ('{"a": {}} trailing', "unexpected data"),
        ("", "must be a JSON object"),
    ],
)
def test_malformed_examples_json_is_one_line_error(nsynth_folder: Path, text: str, match: str) -> None:
    (nsynth_folder / "examples.json").write_text(text)
    with pytest.raises(DataError, match=match) as info:
        list(iter_notes(nsynth_folder))
    assert "\n" not in str(info.value)


def test_iter_notes_streams_json_and_audio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first note comes out of a big examples.json with only its wav present and a broken tail."""
    folder = tmp_path / "big"
    first = make_note(0)
    write_note_wav(folder, first)
    entries = [first.to_entry()]
    for i in range(1, 3000):  # 3000 entries whose wavs do not exist
        spec = ("organ", "electronic", i, i, 21 + i % 88, 25, set())
        entries.append(make_note(i, spec, with_audio=False).to_entry())
    text = "{" + ",\n".join(f"{json.dumps(e['note_str'])}: {json.dumps(e)}" for e in entries)
    (folder / "examples.json").write_text(text + ",\n THIS IS NOT JSON")  # json.load would fail at once

    reads: list[str] = []
    real_read = soundfile.read
    monkeypatch.setattr(soundfile, "read", lambda path, *a, **k: reads.append(path) or real_read(path, *a, **k))
    notes = iter_notes(folder)
    assert isinstance(notes, Iterator) and reads == []  # nothing read before the first next()
    note = next(notes)
    assert note.note_str == first.note_str and note.audio is not None
    assert reads == [str(folder / "audio" / f"{first.note_str}.wav")]
    notes.close()

    # Labels only: the 3000 missing wavs are never touched; the damage at the end is still reported.
    report = ReadReport()
    with pytest.raises(DataError, match="malformed JSON after 3000 entries"):
        for _ in iter_notes(folder, audio="none", report=report):
            pass
    assert report.notes == 3000 and report.total_skipped == 0 and len(reads) == 1


def test_audio_modes(nsynth_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notes = list(iter_notes(nsynth_folder, audio="header"))
    assert len(notes) == 6 and all(n.audio is None for n in notes)
    check_same(notes[2], all_notes()[2], exact_audio=False)  # load_audio reads it on demand
    assert notes[2].audio is None  # not cached: a list of notes stays small
    (nsynth_folder / BASS_WAV).write_bytes(b"not a wav")
    with pytest.raises(DataError, match="cannot decode"):
        notes[2].load_audio()

    for wav in (nsynth_folder / "audio").iterdir():
        wav.unlink()
    report = ReadReport()
    assert len(list(iter_notes(nsynth_folder, audio="none", report=report))) == 6
    assert report.total_skipped == 0
    report = ReadReport()
    assert list(iter_notes(nsynth_folder, audio="header", report=report)) == []
    assert report.skipped == {"missing_wav": 6}
    with pytest.raises(DataError, match="audio must be"):
        iter_notes(nsynth_folder, audio="lazy")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize("kind", ["json", "tfrecord"])
def test_filters(kind: str, nsynth_folder: Path, tfrecord_file: Path) -> None:
    path = nsynth_folder if kind == "json" else tfrecord_file

    def names(**filters: object) -> list[str]:
        report = ReadReport()
        out = [n.note_str for n in iter_notes(path, report=report, **filters)]  # type: ignore[arg-type]
        assert report.notes == len(out) and report.notes + report.filtered == 6
        return out

    assert names(families=["guitar"]) == ["guitar_acoustic_010-060-100", "guitar_acoustic_010-062-050"]
    assert names(families=[0, "synth_lead"]) == ["bass_synthetic_033-022-050", "synth_lead_synthetic_000-072-127"]
    assert names(sources=["electronic"]) == ["keyboard_electronic_001-048-025"]
    assert names(sources=[2], families=["bass"]) == ["bass_synthetic_033-022-050"]
    assert names(pitch_range=(48, 62)) == [
        "guitar_acoustic_010-060-100",
        "guitar_acoustic_010-062-050",
        "keyboard_electronic_001-048-025",
    ]
    assert names(velocities=[50, 127]) == [
        "guitar_acoustic_010-062-050",
        "bass_synthetic_033-022-050",
        "synth_lead_synthetic_000-072-127",
    ]
    assert names(instruments=["vocal_acoustic_002", 417]) == [
        "bass_synthetic_033-022-050",
        "vocal_acoustic_002-067-075",
    ]
    assert names(instruments=[]) == []


def test_filtered_notes_need_no_wav(nsynth_folder: Path) -> None:
    (nsynth_folder / "audio" / "bass_synthetic_033-022-050.wav").unlink()
    report = ReadReport()
    assert len(list(iter_notes(nsynth_folder, families=["guitar"], report=report, strict=True))) == 2
    assert report.total_skipped == 0 and report.filtered == 4


@pytest.mark.parametrize(
    ("filters", "match"),
    [
        ({"families": ["piano"]}, "unknown family 'piano'"),
        ({"families": [12]}, "unknown family 12"),
        ({"sources": ["wooden"]}, "unknown source"),
        ({"pitch_range": (80, 20)}, "low <= high"),
        ({"pitch_range": (0, 128)}, "<= 127"),
        ({"velocities": [0]}, "velocities"),
        ({"instruments": [1.5]}, "instruments"),
    ],
)
def test_bad_filters_fail_at_call_time(nsynth_folder: Path, filters: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        iter_notes(nsynth_folder, **filters)


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        iter_notes(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither an NSynth folder"):
        iter_notes(tmp_path / "empty")


# --------------------------------------------------------------------------- bad json/wav input


def _wav(path: Path, audio: np.ndarray, rate: int = 16000) -> None:
    soundfile.write(str(path), audio, rate, subtype="PCM_16")


def _edit_entry(folder: Path, key: str, edit) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads((folder / "examples.json").read_text())
    edit(raw[key])
    (folder / "examples.json").write_text(json.dumps(raw))


BASS = "bass_synthetic_033-022-050"
BASS_WAV = f"audio/{BASS}.wav"


def _break_missing_wav(f: Path) -> None:
    (f / BASS_WAV).unlink()


def _break_rate(f: Path) -> None:
    _wav(f / BASS_WAV, tone(22, 0, 88200, 22050), 22050)


def _break_length(f: Path) -> None:
    _wav(f / BASS_WAV, tone(22, 0, 63999))


def _break_corrupt(f: Path) -> None:
    (f / BASS_WAV).write_bytes(b"RIFF\x00\x01\x00\x00WAVEjunk" + os.urandom(300))


def _break_stereo(f: Path) -> None:
    _wav(f / BASS_WAV, np.stack([tone(22, 0)] * 2, axis=1))


def _break_json_rate(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(sample_rate=44100))


def _break_unknown_family(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(instrument_family_str="piano"))


def _break_unknown_family_id(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(instrument_family=12))


def _break_unknown_source(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(instrument_source_str="wooden"))


def _break_family_mismatch(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(instrument_family=3))  # guitar's id on a bass


def _break_source_mismatch(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(instrument_source=0))


def _break_missing_field(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.pop("pitch"))


def _break_note_str(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(pitch=23))  # note_str says 022


def _break_instrument_str(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(instrument_str="guitar_acoustic_033"))


def _break_qualities_str(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(qualities_str=["bright"]))


def _break_qualities(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(qualities=[0, 1, 0]))


def _break_pitch_type(f: Path) -> None:
    _edit_entry(f, BASS, lambda e: e.update(pitch="22"))


def _break_key(f: Path) -> None:
    raw = json.loads((f / "examples.json").read_text())
    raw["bass_synthetic_033-022-051"] = raw.pop(BASS)
    (f / "examples.json").write_text(json.dumps(raw))


def _break_duplicate(f: Path) -> None:
    text = (f / "examples.json").read_text().rstrip().removesuffix("}")
    entry = json.dumps(make_note(2, SPECS[2]).to_entry())
    (f / "examples.json").write_text(f'{text}, "{BASS}": {entry}}}')


BREAKS = {
    "missing_wav": (_break_missing_wav, "missing_wav", "missing wav"),
    "wrong_rate": (_break_rate, "bad_rate", "22050 Hz"),
    "wrong_length": (_break_length, "bad_length", "63999 samples"),
    "corrupt_wav": (_break_corrupt, "corrupt_wav", "cannot decode"),
    "stereo_wav": (_break_stereo, "bad_audio", "2 channels"),
    "json_rate": (_break_json_rate, "bad_rate", "sample_rate 44100"),
    "unknown_family": (_break_unknown_family, "unknown_label", "'piano'"),
    "unknown_family_id": (_break_unknown_family_id, "unknown_label", "instrument_family 12"),
    "unknown_source": (_break_unknown_source, "unknown_label", "'wooden'"),
    "family_id_vs_str": (_break_family_mismatch, "inconsistent_label", "means 'guitar'"),
    "source_id_vs_str": (_break_source_mismatch, "inconsistent_label", "means 'acoustic'"),
    "missing_field": (_break_missing_field, "missing_field", "pitch"),
    "note_str_vs_pitch": (_break_note_str, "inconsistent_label", "note_str should be"),
    "instrument_str_vs_family": (_break_instrument_str, "inconsistent_label", "does not start with"),
    "qualities_str_vs_flags": (_break_qualities_str, "inconsistent_label", "qualities_str"),
    "qualities_length": (_break_qualities, "bad_field", "qualities must be"),
    "pitch_type": (_break_pitch_type, "bad_field", "pitch must be an integer"),
    "key_vs_note_str": (_break_key, "inconsistent_label", "keyed"),
    "duplicate": (_break_duplicate, "duplicate_note", "twice"),
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_bad_json_input_is_skipped_and_counted_or_strict_error(
    case: str, nsynth_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    breaker, reason, match = BREAKS[case]
    breaker(nsynth_folder)
    report = ReadReport()
    with caplog.at_level(logging.WARNING, logger="instrument_ai.train.corpus.nsynth"):
        notes = list(iter_notes(nsynth_folder, report=report))
    expected = 6 if case == "duplicate" else 5  # the duplicate's first copy is fine
    assert len(notes) == expected and report.notes == expected
    assert report.skipped == {reason: 1}
    assert match in report.examples[reason]
    if case != "duplicate":
        assert all(n.note_str != BASS for n in notes)  # never a silently wrong label
    assert f"skipped 1 ({reason} 1)" in report.summary()
    summaries = [r for r in caplog.records if "skipped 1" in r.getMessage()]
    assert len(summaries) == 1  # the summary is logged once, at the end

    with pytest.raises(DataError, match=match) as info:
        list(iter_notes(nsynth_folder, strict=True))
    assert "\n" not in str(info.value) and reason in str(info.value)


def test_report_adds_up_over_runs(nsynth_folder: Path, tfrecord_file: Path) -> None:
    _break_missing_wav(nsynth_folder)
    report = ReadReport()
    list(iter_notes(nsynth_folder, report=report, families=["bass", "guitar"]))
    list(iter_notes(tfrecord_file, report=report, families=["vocal"]))
    assert report.summary() == "read 3 notes, 8 filtered out, skipped 1 (missing_wav 1)"
    assert report.to_dict()["sources"] == [str(nsynth_folder), str(tfrecord_file)]


def test_strict_error_in_a_cli_is_one_line_not_a_traceback(nsynth_folder: Path, monkeypatch: Any) -> None:
    """A strict read's DataError is an InstrumentAIError: `cli.main` prints one line and exits 1."""
    from clirun import run_main

    from instrument_ai.train.corpus import info as info_module

    _break_family_mismatch(nsynth_folder)
    monkeypatch.setattr(info_module, "iter_notes", functools.partial(iter_notes, strict=True))
    result = run_main("data", "info", nsynth_folder)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("instrument-ai data: ") and "inconsistent_label" in lines[0]


# --------------------------------------------------------------------------- TFRecord


def test_crc32c() -> None:
    assert tfrecord.crc32c(b"") == 0
    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert tfrecord.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 test vector
    assert tfrecord.crc32c(bytes(range(32))) == 0x46DD794E  # RFC 3720 test vector
    big = np.random.default_rng(0).integers(0, 256, 256 * 1024 + 37, dtype=np.uint8).tobytes()
    assert tfrecord.crc32c(big) == tfrecord._crc_update_py(0xFFFFFFFF, big) ^ 0xFFFFFFFF  # numpy lanes vs byte loop


def test_example_codec_roundtrip() -> None:
    payload = tfrecord.encode_example(
        {"i": [3, -1, 2**62], "s": ["ab", b"\xff"], "f": np.array([0.5, -2.0], np.float32), "e": []}
    )
    feats = tfrecord.decode_example(payload)
    assert feats["i"] == tfrecord.Feature("int64", [3, -1, 2**62])
    assert feats["s"].kind == "bytes" and feats["s"].values == [b"ab", b"\xff"]
    assert feats["f"].kind == "float" and feats["f"].values.tolist() == [0.5, -2.0]
    assert feats["e"].values == []
    # Unpacked floats (wire type 5) and unpacked int64s (wire type 0) are valid protobuf too.
    float_list = b"".join(b"\x0d" + struct.pack("<f", v) for v in (1.0, 2.0))
    int_list = b"\x08\x07\x08\x09"
    entry_f = tfrecord._len_field(1, b"f") + tfrecord._len_field(2, tfrecord._len_field(2, float_list))
    entry_i = tfrecord._len_field(1, b"i") + tfrecord._len_field(2, tfrecord._len_field(3, int_list))
    feats = tfrecord.decode_example(
        tfrecord._len_field(1, tfrecord._len_field(1, entry_f) + tfrecord._len_field(1, entry_i))
    )
    assert feats["f"].values.tolist() == [1.0, 2.0] and feats["i"].values == [7, 9]
    with pytest.raises(ValueError):
        tfrecord.decode_example(payload[:-3])


def test_tfrecord_reads_every_field(tfrecord_file: Path) -> None:
    report = ReadReport()
    notes = list(iter_notes(tfrecord_file, report=report))
    for read, want in zip(notes, all_notes(), strict=True):
        check_same(read, want, exact_audio=True)
        assert read.path is None
    assert report.summary() == "read 6 notes, skipped 0"


def test_tfrecord_features_follow_nsynth(tfrecord_file: Path) -> None:
    payload = next(tfrecord.iter_records(tfrecord_file))
    assert isinstance(payload, bytes)
    feats = tfrecord.decode_example(payload)
    assert set(feats) == {*FIELDS, "audio"}
    assert feats["note_str"] == tfrecord.Feature("bytes", [b"guitar_acoustic_010-060-100"])
    assert feats["pitch"] == tfrecord.Feature("int64", [60])
    assert feats["qualities"].kind == "int64" and len(feats["qualities"].values) == 10
    assert feats["qualities_str"].values == [b"bright"]
    assert feats["audio"].kind == "float" and feats["audio"].values.shape == (64000,)


def test_tfrecord_shards_and_gzip(tmp_path: Path) -> None:
    notes = all_notes()
    shards = tmp_path / "shards"
    shards.mkdir()
    write_tfrecord(shards / "nsynth-train.tfrecord-00000-of-00002", notes[:4])
    write_tfrecord(shards / "nsynth-train.tfrecord-00001-of-00002", notes[4:])
    assert [n.note_str for n in iter_notes(shards)] == [n.note_str for n in notes]
    plain = tmp_path / "x.tfrecord"
    write_tfrecord(plain, notes)
    zipped = tmp_path / "x.tfrecord.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    assert [n.note_str for n in iter_notes(zipped)] == [n.note_str for n in notes]


def _record_offsets(path: Path) -> list[int]:
    raw = path.read_bytes()
    offsets, pos = [], 0
    while pos < len(raw):
        offsets.append(pos)
        pos += 16 + struct.unpack("<Q", raw[pos : pos + 8])[0]
    return offsets


def _rewrite_record(path: Path, index: int, payload: bytes) -> None:
    raw = path.read_bytes()
    offsets = _record_offsets(path) + [len(raw)]
    path.write_bytes(raw[: offsets[index]] + tfrecord.frame_record(payload) + raw[offsets[index + 1] :])


def _features_of(i: int) -> dict:
    return data.note_to_features(make_note(i, SPECS[i]))


TF_BREAKS = {
    # case: (breaker(path), reason, count, notes still read, message part)
    "truncated_payload": (lambda p: p.write_bytes(p.read_bytes()[:-1000]), "truncated_record", 1, 5, "truncated"),
    "truncated_header": (
        lambda p: p.write_bytes(p.read_bytes()[: _record_offsets(p)[3] + 5]),
        "truncated_record",
        1,
        3,
        "record header",
    ),
    "bad_payload_crc": (
        lambda p: p.write_bytes(_flip(p.read_bytes(), _record_offsets(p)[1] + 5000)),
        "bad_crc",
        1,
        5,
        "payload CRC",
    ),
    "bad_length_crc": (
        lambda p: p.write_bytes(_flip(p.read_bytes(), _record_offsets(p)[2] + 9)),
        "bad_crc",
        1,
        2,
        "length CRC",
    ),
    "not_an_example": (lambda p: _rewrite_record(p, 2, b"\x0a\xff\xff"), "bad_record", 1, 5, "tf.train.Example"),
    "missing_feature": (
        lambda p: _rewrite_record(
            p, 2, tfrecord.encode_example({k: v for k, v in _features_of(2).items() if k != "audio"})
        ),
        "missing_field",
        1,
        5,
        "audio",
    ),
    "wrong_length": (
        lambda p: _rewrite_record(
            p, 2, tfrecord.encode_example({**_features_of(2), "audio": np.zeros(16000, np.float32)})
        ),
        "bad_length",
        1,
        5,
        "16000 samples",
    ),
    "wrong_rate": (
        lambda p: _rewrite_record(p, 2, tfrecord.encode_example({**_features_of(2), "sample_rate": 8000})),
        "bad_rate",
        1,
        5,
        "sample_rate 8000",
    ),
    "family_mismatch": (
        lambda p: _rewrite_record(p, 2, tfrecord.encode_example({**_features_of(2), "instrument_family": 4})),
        "inconsistent_label",
        1,
        5,
        "means 'keyboard'",
    ),
    "unknown_family": (
        lambda p: _rewrite_record(p, 2, tfrecord.encode_example({**_features_of(2), "instrument_family_str": "piano"})),
        "unknown_label",
        1,
        5,
        "'piano'",
    ),
    "pitch_as_float": (
        lambda p: _rewrite_record(p, 2, tfrecord.encode_example({**_features_of(2), "pitch": 22.0})),
        "bad_field",
        1,
        5,
        "pitch must be one int64",
    ),
}


def _flip(raw: bytes, pos: int) -> bytes:
    return raw[:pos] + bytes([raw[pos] ^ 0x40]) + raw[pos + 1 :]


@pytest.mark.parametrize("case", list(TF_BREAKS))
def test_bad_tfrecord_is_skipped_and_counted_or_strict_error(case: str, tfrecord_file: Path) -> None:
    breaker, reason, count, kept, match = TF_BREAKS[case]
    breaker(tfrecord_file)
    report = ReadReport()
    notes = list(iter_notes(tfrecord_file, report=report))
    assert len(notes) == kept and report.skipped == {reason: count}
    assert match in report.examples[reason]
    good = {n.note_str: n for n in all_notes()}
    for note in notes:  # whatever is read is exactly what was written
        check_same(note, good[note.note_str], exact_audio=True)
    with pytest.raises(DataError, match=match) as info:
        list(iter_notes(tfrecord_file, strict=True))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- corpus metadata


def _add_metadata(folder: Path) -> None:
    instruments = {
        "guitar_acoustic_010": {"library": "TimGM6mb", "lineage": "TimGM6mb", "program": 24, "variant": 0},
        "bass_synthetic_033": {"library": "FluidR3_GM", "lineage": "fluid", "program": 38, "variant": 0},
        "synth_lead_synthetic_000": {"library": "MuseScore_General", "lineage": "fluid", "program": 80, "variant": 0},
        "keyboard_electronic_001": {"library": "TimGM6mb", "lineage": "TimGM6mb", "program": 4, "variant": 0},
        "vocal_acoustic_002": {
            "library": "TimGM6mb",
            "lineage": "TimGM6mb",
            "program": 52,
            "variant": 0,
            "family_str": "vocal",
            "source_str": "acoustic",
        },
    }
    (folder / "instruments.json").write_text(json.dumps(instruments))
    splits = {
        "scheme": "by_library",
        "splits": {
            "train": ["guitar_acoustic_010", "keyboard_electronic_001", "vocal_acoustic_002"],
            "test": ["bass_synthetic_033", "synth_lead_synthetic_000"],
        },
    }
    (folder / "splits.json").write_text(json.dumps(splits))
    (folder / "corpus.json").write_text(json.dumps({"notes": 6}))


def test_corpus_info_without_metadata_is_nsynth(nsynth_folder: Path) -> None:
    info = corpus_info(nsynth_folder)
    assert info.instruments == {} and info.splits is None and info.corpus is None
    assert info.library_of("guitar_acoustic_010") == "nsynth" == info.lineage_of("guitar_acoustic_010")
    with pytest.raises(DataError, match="no splits.json"):
        notes_for_split(nsynth_folder, "train")


def test_corpus_info_and_splits(nsynth_folder: Path) -> None:
    _add_metadata(nsynth_folder)
    info = corpus_info(nsynth_folder)
    assert info.library_of("bass_synthetic_033") == "FluidR3_GM" and info.lineage_of("bass_synthetic_033") == "fluid"
    assert info.instruments["vocal_acoustic_002"].program == 52
    assert info.library_of("flute_acoustic_000") == "nsynth"  # not listed: the fallback
    assert info.scheme == "by_library" and info.corpus == {"notes": 6}
    train = [n.note_str for n in notes_for_split(nsynth_folder, "train")]
    test = [n.note_str for n in notes_for_split(nsynth_folder, "test", families=["bass"])]
    assert train == [
        "guitar_acoustic_010-060-100",
        "guitar_acoustic_010-062-050",
        "keyboard_electronic_001-048-025",
        "vocal_acoustic_002-067-075",
    ]
    assert test == ["bass_synthetic_033-022-050"]
    with pytest.raises(DataError, match="no split 'valid'.*have train, test"):
        notes_for_split(nsynth_folder, "valid")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("splits.json", {"splits": {"train": ["a_x"], "test": ["a_x"]}}, "in both 'train' and 'test'"),
        ("splits.json", {"splits": ["train"]}, "expected"),
        ("splits.json", "{not json", "malformed JSON"),
        ("instruments.json", {"guitar_acoustic_010": {"lineage": "x"}}, "library"),
        ("instruments.json", {"guitar_acoustic_010": {"library": "x", "family_str": "bass"}}, "does not match"),
        ("instruments.json", [1], "keyed by instrument_str"),
        ("corpus.json", [1], "JSON object"),
    ],
)
def test_bad_corpus_metadata(nsynth_folder: Path, name: str, content: object, match: str) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    (nsynth_folder / name).write_text(text)
    with pytest.raises(DataError, match=match):
        corpus_info(nsynth_folder)


def test_describe(nsynth_folder: Path, tfrecord_file: Path) -> None:
    _add_metadata(nsynth_folder)
    (nsynth_folder / BASS_WAV).unlink()  # describe reads labels only: a missing wav does not matter
    info = describe(nsynth_folder)
    assert info["format"] == "json" and info["notes"] == 6 and info["instruments"] == 5
    assert info["family_source"] == {
        "bass": {"synthetic": 1},
        "guitar": {"acoustic": 2},
        "keyboard": {"electronic": 1},
        "synth_lead": {"synthetic": 1},
        "vocal": {"acoustic": 1},
    }
    assert info["libraries"]["TimGM6mb"] == {
        "notes": 4,
        "instruments": 3,
        "families": {"guitar": 2, "keyboard": 1, "vocal": 1},
    }
    assert info["libraries"]["FluidR3_GM"]["notes"] == 1
    assert info["splits"] == {"train": {"notes": 4, "instruments": 3}, "test": {"notes": 2, "instruments": 2}}
    assert info["pitch_range"] == [22, 72]
    assert info["velocities"] == {"25": 1, "50": 2, "75": 1, "100": 1, "127": 1}
    assert info["summary"] == "read 6 notes, skipped 0"
    json.dumps(info)  # JSON-serialisable for `data info --json`

    tf_info = describe(tfrecord_file)
    assert tf_info["format"] == "tfrecord" and list(tf_info["libraries"]) == ["nsynth"]
    assert tf_info["family_source"] == info["family_source"] and tf_info["splits"] == {}


def test_importing_data_stays_light() -> None:
    code = (
        "import sys, instrument_ai.train.corpus.nsynth, instrument_ai.train.corpus.tfrecord;"
        "print([m for m in ('tensorflow', 'librosa', 'scipy', 'numba', 'soundfile') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- tensorflow agrees


@pytest.mark.slow
def test_tensorflow_reads_our_tfrecord_and_we_read_tensorflows(tfrecord_file: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    spec = {
        "note_str": tf.io.FixedLenFeature([], tf.string),
        "pitch": tf.io.FixedLenFeature([], tf.int64),
        "velocity": tf.io.FixedLenFeature([], tf.int64),
        "instrument_family": tf.io.FixedLenFeature([], tf.int64),
        "instrument_source_str": tf.io.FixedLenFeature([], tf.string),
        "qualities": tf.io.FixedLenFeature([10], tf.int64),
        "qualities_str": tf.io.VarLenFeature(tf.string),
        "audio": tf.io.FixedLenFeature([64000], tf.float32),
    }
    want = all_notes()
    records = list(tf.data.TFRecordDataset(str(tfrecord_file)))  # TF checks our CRCs
    assert len(records) == len(want)
    for record, note in zip(records, want, strict=True):
        ex = tf.io.parse_single_example(record, spec)
        assert ex["note_str"].numpy().decode() == note.note_str
        assert int(ex["pitch"]) == note.pitch and int(ex["velocity"]) == note.velocity
        assert int(ex["instrument_family"]) == note.family
        assert ex["instrument_source_str"].numpy().decode() == note.source_str
        assert ex["qualities"].numpy().tolist() == note.qualities
        assert [s.decode() for s in tf.sparse.to_dense(ex["qualities_str"]).numpy()] == note.qualities_str
        np.testing.assert_array_equal(ex["audio"].numpy(), note.audio)

    # And the other way: a file written by TensorFlow's own protobuf and TFRecordWriter.
    theirs = tmp_path / "tf-written.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for note in want:
            feats = {}
            for name, value in data.note_to_features(note).items():
                if isinstance(value, np.ndarray):
                    feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=value))
                elif isinstance(value, int):
                    feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
                elif isinstance(value, str):
                    feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
                elif name == "qualities":
                    feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=value))
                else:
                    feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=value))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    for read, note in zip(iter_notes(theirs, strict=True), want, strict=True):
        check_same(read, note, exact_audio=True)

"""Reading NSynth-format notes: the json/wav folder layout and NSynth's TFRecord files.

Everything downstream (training, evaluation, the corpus builder's checks) sees
notes only through `iter_notes`, so a user with the real NSynth and a user with
our self-built corpus run the same commands. Three rules shape this module:

* **Stream.** NSynth's train split has ~300k notes and a ~100 MB
  `examples.json`; `iter_notes` parses the json incrementally, applies filters
  before touching any wav, and reads audio one note at a time.
* **Never a silently wrong label.** Every entry is checked field by field
  (family id against family name, note_str against instrument/pitch/velocity,
  qualities against qualities_str, ...). A bad entry is skipped and counted in
  a `ReadReport` (reason -> count, one summary line logged at the end), or,
  under ``strict=True``, stops the run with a one-line `DataError`.
* **No tensorflow.** TFRecords are framed, CRC-checked and decoded by
  `instrument_ai.train.corpus.tfrecord` (numpy only), so a truncated download is a
  counted reason rather than a crash, and reading data costs no 5 s import.

`DataError` is an `InstrumentAIError`: the CLI that lets it escape prints one
``instrument-ai CMD: <line>`` and exits 1, never a traceback.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.labels import LABELS
from instrument_ai.train.corpus import tfrecord

log = logging.getLogger(__name__)

# The family vocabulary (FAMILIES: NSynth's 11, index = `instrument_family` id; OTHER: id 11; LABELS: both)
# lives in device/labels.py, shared with the daemon.

SOURCES: list[str] = ["acoustic", "electronic", "synthetic"]
"""NSynth instrument sources; the index is NSynth's `instrument_source` id."""

QUALITIES: list[str] = [
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
"""NSynth's note qualities in NSynth order (the order of the `qualities` flags)."""

SAMPLE_RATE = 16000
"""NSynth audio: 16 kHz mono."""
NUM_SAMPLES = 64000
"""NSynth audio: exactly 4 s."""
DEFAULT_LIBRARY = "nsynth"
"""The library of an instrument when the folder has no instruments.json (the real NSynth)."""

FIELDS: tuple[str, ...] = (
    "note",
    "note_str",
    "instrument",
    "instrument_str",
    "pitch",
    "velocity",
    "sample_rate",
    "qualities",
    "qualities_str",
    "instrument_family",
    "instrument_family_str",
    "instrument_source",
    "instrument_source_str",
)
"""The fields of an NSynth examples.json entry, in the order we write them. TFRecords add `audio`."""

REASONS: dict[str, str] = {
    "missing_field": "an entry lacks a required field",
    "bad_field": "a field has the wrong type or an impossible value",
    "unknown_label": "an unknown family or source (name or id)",
    "inconsistent_label": "fields of one entry contradict each other",
    "duplicate_note": "a note_str seen before in the same file",
    "missing_wav": "audio/<note_str>.wav does not exist",
    "corrupt_wav": "the wav cannot be decoded",
    "bad_rate": "sample rate is not the expected one",
    "bad_length": "number of samples is not the expected one",
    "bad_audio": "audio is not mono or holds NaN/Inf",
    "truncated_record": "a TFRecord file ends inside a record (the rest of the file is lost)",
    "bad_crc": "a TFRecord CRC does not match",
    "bad_record": "a TFRecord payload is not a valid tf.train.Example",
}
"""Every reason a note can be skipped for, with what it means."""

AudioMode = Literal["load", "header", "none"]

_NOTE_STR = re.compile(
    r"^(?P<family>[a-z_]+?)_(?P<source>acoustic|electronic|synthetic)_(?P<number>\d{3,})"
    r"-(?P<pitch>\d{3})-(?P<velocity>\d{3})$"
)


class DataError(InstrumentAIError):
    """Unusable data or arguments; the message is one line (CLIs print it, never a traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class _Skip(Exception):
    """Internal: one note is unusable for `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- names


def format_instrument_str(family_str: str, source_str: str, number: int) -> str:
    """NSynth instrument name, e.g. ("guitar", "acoustic", 10) -> "guitar_acoustic_010".

    `number` counts instruments within one family+source, as in NSynth.
    """
    if family_str not in LABELS:
        raise DataError(f"unknown family {family_str!r}; known: {', '.join(LABELS)}")
    if source_str not in SOURCES:
        raise DataError(f"unknown source {source_str!r}; known: {', '.join(SOURCES)}")
    if number < 0:
        raise DataError(f"instrument number must be >= 0, got {number}")
    return f"{family_str}_{source_str}_{number:03d}"


def format_note_str(instrument_str: str, pitch: int, velocity: int) -> str:
    """NSynth note name, e.g. ("guitar_acoustic_010", 60, 100) -> "guitar_acoustic_010-060-100"."""
    return f"{instrument_str}-{pitch:03d}-{velocity:03d}"


def parse_note_str(note_str: str) -> tuple[str, str, int, int, int]:
    """(family_str, source_str, instrument number, pitch, velocity) of an NSynth note_str."""
    match = _NOTE_STR.match(note_str)
    if not match or match["family"] not in LABELS:
        raise DataError(f"not an NSynth note_str: {note_str!r} (expected <family>_<source>_<NNN>-<pitch>-<velocity>)")
    return match["family"], match["source"], int(match["number"]), int(match["pitch"]), int(match["velocity"])


def qualities_to_str(qualities: Sequence[int]) -> list[str]:
    """Names of the set quality flags, in NSynth order."""
    return [name for name, flag in zip(QUALITIES, qualities, strict=True) if flag]


# --------------------------------------------------------------------------- Note


@dataclass
class Note:
    """One NSynth note: its labels, and its audio (given, or read lazily from `path`)."""

    note_str: str
    instrument: int
    instrument_str: str
    pitch: int
    velocity: int
    sample_rate: int
    family: int
    family_str: str
    source: int
    source_str: str
    qualities: list[int]
    audio: np.ndarray | None = field(default=None, repr=False)
    note: int = 0
    """NSynth's running note id (the `note` field)."""
    path: Path | None = None
    """The wav this note's audio comes from (json/wav folders), for `load_audio`."""
    sounding_seconds: float | None = None
    """How long the note really sounds (our extra `sounding_seconds` field: real recordings are often 0.25-1 s);
    None where the corpus does not say (real NSynth: every note is held 3 s)."""

    @property
    def qualities_str(self) -> list[str]:
        return qualities_to_str(self.qualities)

    def load_audio(self) -> np.ndarray:
        """The float32 mono samples: the given `audio`, else read from `path` (not cached, to keep memory flat)."""
        if self.audio is not None:
            return self.audio
        if self.path is None:
            raise DataError(f"{self.note_str}: no audio and no wav path")
        try:
            return _read_wav(self.path, self.sample_rate, None)
        except _Skip as skip:
            raise DataError(str(skip)) from None

    def to_entry(self) -> dict[str, Any]:
        """The examples.json entry (NSynth's fields, in NSynth's meaning)."""
        return {
            "note": self.note,
            "note_str": self.note_str,
            "instrument": self.instrument,
            "instrument_str": self.instrument_str,
            "pitch": self.pitch,
            "velocity": self.velocity,
            "sample_rate": self.sample_rate,
            "qualities": list(self.qualities),
            "qualities_str": self.qualities_str,
            "instrument_family": self.family,
            "instrument_family_str": self.family_str,
            "instrument_source": self.source,
            "instrument_source_str": self.source_str,
        } | ({} if self.sounding_seconds is None else {"sounding_seconds": self.sounding_seconds})

    @classmethod
    def from_entry(cls, entry: Any, *, key: str | None = None) -> Note:
        """Build a note from an examples.json entry (or decoded TFRecord), checking every field.

        Raises `DataError` naming the first problem.
        """
        try:
            return _note_from_entry(entry, key)
        except _Skip as skip:
            raise DataError(str(skip)) from None


def _int_field(entry: dict[str, Any], name: str, where: str, lo: int, hi: int | None) -> int:
    value = entry[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _Skip("bad_field", f"{where}: {name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise _Skip("bad_field", f"{where}: {name}={value} is outside {lo}..{'' if hi is None else hi}")
    return value


def _str_field(entry: dict[str, Any], name: str, where: str) -> str:
    value = entry[name]
    if not isinstance(value, str) or not value:
        raise _Skip("bad_field", f"{where}: {name} must be a non-empty string, got {value!r}")
    return value


def _label(entry: dict[str, Any], kind: str, names: list[str], where: str) -> tuple[int, str]:
    """A consistent (id, name) pair for family or source, or _Skip."""
    id_name, str_name = f"instrument_{kind}", f"instrument_{kind}_str"
    ident, name = entry[id_name], entry[str_name]
    if isinstance(ident, bool) or not isinstance(ident, (int, np.integer)):
        raise _Skip("bad_field", f"{where}: {id_name} must be an integer, got {ident!r}")
    if not isinstance(name, str):
        raise _Skip("bad_field", f"{where}: {str_name} must be a string, got {name!r}")
    if not 0 <= ident < len(names):
        raise _Skip("unknown_label", f"{where}: unknown {id_name} {ident} (known 0..{len(names) - 1})")
    if name not in names:
        raise _Skip("unknown_label", f"{where}: unknown {str_name} {name!r}")
    if names[ident] != name:
        raise _Skip(
            "inconsistent_label",
            f"{where}: {id_name}={ident} means {names[ident]!r} but {str_name} is {name!r}",
        )
    return int(ident), name


def _note_from_entry(entry: Any, key: str | None) -> Note:
    where = key if key is not None else (entry.get("note_str", "?") if isinstance(entry, dict) else "?")
    if not isinstance(entry, dict):
        raise _Skip("bad_field", f"{where}: entry must be a JSON object, got {type(entry).__name__}")
    missing = [name for name in FIELDS if name not in entry]
    if missing:
        raise _Skip("missing_field", f"{where}: missing field(s) {', '.join(missing)}")
    family, family_str = _label(entry, "family", LABELS, where)
    source, source_str = _label(entry, "source", SOURCES, where)
    note_str = _str_field(entry, "note_str", where)
    instrument_str = _str_field(entry, "instrument_str", where)
    pitch = _int_field(entry, "pitch", where, 0, 127)
    velocity = _int_field(entry, "velocity", where, 1, 127)
    sample_rate = _int_field(entry, "sample_rate", where, 1, None)
    instrument = _int_field(entry, "instrument", where, 0, None)
    note_id = _int_field(entry, "note", where, 0, None)
    qualities = entry["qualities"]
    if (
        not isinstance(qualities, list)
        or len(qualities) != len(QUALITIES)
        or any(isinstance(q, bool) or q not in (0, 1) for q in qualities)
    ):
        raise _Skip("bad_field", f"{where}: qualities must be a list of {len(QUALITIES)} flags 0/1, got {qualities!r}")
    qualities = [int(q) for q in qualities]
    qualities_str = entry["qualities_str"]
    if not isinstance(qualities_str, list) or not all(isinstance(q, str) for q in qualities_str):
        raise _Skip("bad_field", f"{where}: qualities_str must be a list of names, got {qualities_str!r}")
    if set(qualities_str) != set(qualities_to_str(qualities)):
        raise _Skip(
            "inconsistent_label", f"{where}: qualities_str {qualities_str} does not match the flags {qualities}"
        )
    if key is not None and key != note_str:
        raise _Skip("inconsistent_label", f"{where}: entry is keyed {key!r} but its note_str is {note_str!r}")
    sounding = entry.get("sounding_seconds")
    if sounding is not None and (
        isinstance(sounding, bool) or not isinstance(sounding, (int, float)) or not 0 <= sounding <= 3600
    ):
        raise _Skip("bad_field", f"{where}: sounding_seconds must be a number of seconds, got {sounding!r}")
    prefix = f"{family_str}_{source_str}_"
    if not instrument_str.startswith(prefix) or len(instrument_str) == len(prefix):
        raise _Skip(
            "inconsistent_label",
            f"{where}: instrument_str {instrument_str!r} does not start with its family and source ({prefix!r})",
        )
    expected = format_note_str(instrument_str, pitch, velocity)
    if note_str != expected:
        raise _Skip(
            "inconsistent_label", f"{where}: note_str should be {expected!r} from its instrument/pitch/velocity"
        )
    return Note(
        note_str=note_str,
        instrument=instrument,
        instrument_str=instrument_str,
        pitch=pitch,
        velocity=velocity,
        sample_rate=sample_rate,
        family=family,
        family_str=family_str,
        source=source,
        source_str=source_str,
        qualities=qualities,
        note=note_id,
        sounding_seconds=None if sounding is None else float(sounding),
    )


# --------------------------------------------------------------------------- report


@dataclass
class ReadReport:
    """What one or more `iter_notes` runs read, filtered out and skipped (reason -> count).

    Pass the same report to several runs to add them up. `examples` keeps the
    first message per reason, so a summary can show what went wrong.
    """

    notes: int = 0
    filtered: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str, message: str) -> None:
        """Count one skipped note; the first of each reason is logged as a warning, the rest at debug level."""
        first = reason not in self.skipped
        self.skipped[reason] += 1
        if first:
            self.examples[reason] = message
        log.log(logging.WARNING if first else logging.DEBUG, "skipped (%s): %s", reason, message)

    def summary(self) -> str:
        """One line, e.g. 'read 120 notes, 40 filtered out, skipped 3 (missing_wav 2, bad_rate 1)'."""
        line = f"read {self.notes} note{'s' if self.notes != 1 else ''}"
        if self.filtered:
            line += f", {self.filtered} filtered out"
        if self.skipped:
            parts = ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items()))
            line += f", skipped {self.total_skipped} ({parts})"
        else:
            line += ", skipped 0"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "notes": self.notes,
            "filtered": self.filtered,
            "skipped": dict(sorted(self.skipped.items())),
            "examples": dict(sorted(self.examples.items())),
            "sources": list(self.sources),
        }


# --------------------------------------------------------------------------- examples.json


def _examples_path(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder / "examples.json" if folder.is_dir() else folder


def iter_examples_json(folder: str | Path, *, chunk_chars: int = 1 << 20) -> Iterator[tuple[str, Any]]:
    """Stream (key, entry) pairs of an NSynth examples.json without loading the whole file.

    NSynth's file is one JSON object keyed by note_str; it is read in chunks and
    each entry decoded on its own, so memory stays at one chunk. A malformed
    file raises `DataError` when the parser reaches the damage.
    """
    path = _examples_path(folder)
    if not path.is_file():
        raise DataError(f"{path}: no such file (an NSynth folder holds examples.json and audio/)")
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as fh:
        buf = ""
        pos = 0
        eof = False
        count = 0

        def fill() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            try:
                chunk = fh.read(chunk_chars)
            except UnicodeDecodeError:
                raise DataError(f"{path}: not UTF-8 text") from None
            eof = not chunk
            buf = buf[pos:] + chunk
            pos = 0
            return bool(chunk)

        def skip_ws() -> str:
            """The next non-space character ('' at end of file), without consuming it."""
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf):
                    return buf[pos]
                if not fill():
                    return ""

        def value() -> Any:
            nonlocal pos
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if fill():
                        continue
                    raise DataError(f"{path}: malformed JSON after {count} entries ({exc.msg})") from None
                if end == len(buf) and fill():  # a number may continue in the next chunk
                    continue
                pos = end
                return obj

        def expect(char: str) -> None:
            nonlocal pos
            found = skip_ws()
            if found != char:
                got = repr(found) if found else "end of file"
                raise DataError(f"{path}: malformed JSON after {count} entries (expected {char!r}, got {got})")
            pos += 1

        if skip_ws() != "{":
            raise DataError(f"{path}: examples.json must be a JSON object keyed by note_str")
        pos += 1
        if skip_ws() == "}":
            pos += 1
        else:
            while True:
                if skip_ws() != '"':
                    expect('"')
                key = value()
                expect(":")
                skip_ws()
                entry = value()
                count += 1
                yield key, entry
                nxt = skip_ws()
                if nxt == "}":
                    pos += 1
                    break
                expect(",")
        if skip_ws() != "":
            raise DataError(f"{path}: unexpected data after the examples.json object")


def read_examples_json(folder: str | Path) -> dict[str, Any]:
    """All raw entries of an examples.json, keyed by note_str (for small corpora; big ones: iterate)."""
    out: dict[str, Any] = {}
    for key, entry in iter_examples_json(folder):
        if key in out:
            raise DataError(f"{_examples_path(folder)}: duplicate note_str {key!r}")
        out[key] = entry
    return out


def write_examples_json(folder: str | Path, notes: Iterable[Note | dict[str, Any]]) -> int:
    """Write examples.json (NSynth layout: one object keyed by note_str) from notes or entries; returns the count.

    Streams, one entry per line, in the given order, so the same notes give
    byte-identical files. Each entry is validated; a duplicate note_str is refused.
    The file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "examples.json"
    tmp = folder / "examples.json.tmp"
    seen: set[str] = set()
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("{")
            for item in notes:
                entry = item.to_entry() if isinstance(item, Note) else {name: item.get(name) for name in FIELDS}
                Note.from_entry(entry)  # refuse to write a label we would not read back
                key = entry["note_str"]
                if key in seen:
                    raise DataError(f"{path}: duplicate note_str {key!r}")
                seen.add(key)
                fh.write(("\n" if count == 0 else ",\n") + json.dumps(key) + ": " + json.dumps(entry))
                count += 1
            fh.write("\n}\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM wav (NSynth's format); values are clipped to [-1, 1]."""
    import soundfile

    audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio, sample_rate, subtype="PCM_16", format="WAV")


def write_note_wav(folder: str | Path, note: Note) -> Path:
    """Write `note.audio` to `<folder>/audio/<note_str>.wav`; returns the path."""
    if note.audio is None:
        raise DataError(f"{note.note_str}: has no audio to write")
    path = Path(folder) / "audio" / f"{note.note_str}.wav"
    write_wav(path, note.audio, note.sample_rate)
    return path


def _read_wav(path: Path, sample_rate: int | None, num_samples: int | None) -> np.ndarray:
    """Mono float32 samples of a wav, or _Skip with the reason it cannot be used."""
    import soundfile

    if not path.is_file():
        raise _Skip("missing_wav", f"{path}: missing wav")
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for undecodable files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Skip("corrupt_wav", f"{path}: cannot decode ({reason})") from None
    if sample_rate is not None and rate != sample_rate:
        raise _Skip("bad_rate", f"{path}: sample rate {rate} Hz, expected {sample_rate}")
    if audio.shape[1] != 1:
        raise _Skip("bad_audio", f"{path}: {audio.shape[1]} channels, expected mono")
    if num_samples is not None and audio.shape[0] != num_samples:
        raise _Skip("bad_length", f"{path}: {audio.shape[0]} samples, expected {num_samples}")
    if not np.isfinite(audio).all():
        raise _Skip("bad_audio", f"{path}: NaN or Inf samples")
    return np.ascontiguousarray(audio[:, 0])


def _check_wav_header(path: Path, sample_rate: int | None, num_samples: int | None) -> None:
    """The cheap part of `_read_wav`: existence, decodable header, rate, channels, length."""
    import soundfile

    if not path.is_file():
        raise _Skip("missing_wav", f"{path}: missing wav")
    try:
        info = soundfile.info(str(path))
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Skip("corrupt_wav", f"{path}: cannot decode ({reason})") from None
    if sample_rate is not None and info.samplerate != sample_rate:
        raise _Skip("bad_rate", f"{path}: sample rate {info.samplerate} Hz, expected {sample_rate}")
    if info.channels != 1:
        raise _Skip("bad_audio", f"{path}: {info.channels} channels, expected mono")
    if num_samples is not None and info.frames != num_samples:
        raise _Skip("bad_length", f"{path}: {info.frames} samples, expected {num_samples}")


# --------------------------------------------------------------------------- TFRecord


_SCALAR_INT = ("note", "instrument", "pitch", "velocity", "sample_rate", "instrument_family", "instrument_source")
_SCALAR_STR = ("note_str", "instrument_str", "instrument_family_str", "instrument_source_str")


def _entry_from_features(features: dict[str, tfrecord.Feature], where: str) -> dict[str, Any]:
    """An examples.json-style entry from decoded Example features (audio left out)."""
    missing = [name for name in (*FIELDS, "audio") if name not in features]
    if missing:
        raise _Skip("missing_field", f"{where}: missing feature(s) {', '.join(missing)}")
    entry: dict[str, Any] = {}
    for name in _SCALAR_INT:
        feat = features[name]
        if feat.kind != "int64" or len(feat.values) != 1:
            raise _Skip("bad_field", f"{where}: feature {name} must be one int64")
        entry[name] = feat.values[0]
    for name in _SCALAR_STR:
        feat = features[name]
        if feat.kind != "bytes" or len(feat.values) != 1:
            raise _Skip("bad_field", f"{where}: feature {name} must be one string")
        try:
            entry[name] = feat.values[0].decode("utf-8")  # type: ignore[union-attr]
        except UnicodeDecodeError:
            raise _Skip("bad_field", f"{where}: feature {name} is not UTF-8") from None
    if features["qualities"].kind != "int64":
        raise _Skip("bad_field", f"{where}: feature qualities must be int64 flags")
    entry["qualities"] = list(features["qualities"].values)
    if features["qualities_str"].kind != "bytes":
        raise _Skip("bad_field", f"{where}: feature qualities_str must be strings")
    try:
        entry["qualities_str"] = [v.decode("utf-8") for v in features["qualities_str"].values]  # type: ignore[union-attr]
    except UnicodeDecodeError:
        raise _Skip("bad_field", f"{where}: feature qualities_str is not UTF-8") from None
    return entry


def note_to_features(note: Note) -> dict[str, Any]:
    """The NSynth TFRecord features of a note (its audio must be given or loadable)."""
    audio = np.asarray(note.load_audio(), dtype=np.float32)
    entry = note.to_entry()
    features: dict[str, Any] = {name: entry[name] for name in FIELDS}
    features["qualities_str"] = [q.encode("utf-8") for q in entry["qualities_str"]]
    features["audio"] = audio
    return features


def write_tfrecord(path: str | Path, notes: Iterable[Note]) -> int:
    """Write notes as an NSynth-style TFRecord file (readable by tf.data.TFRecordDataset); returns the count."""
    return tfrecord.write_records(path, (tfrecord.encode_example(note_to_features(note)) for note in notes))


# --------------------------------------------------------------------------- iter_notes


@dataclass(frozen=True)
class _Filters:
    families: frozenset[int] | None
    sources: frozenset[int] | None
    pitch_range: tuple[int, int] | None
    velocities: frozenset[int] | None
    instrument_strs: frozenset[str] | None
    instrument_ids: frozenset[int] | None

    def keep(self, note: Note) -> bool:
        if self.families is not None and note.family not in self.families:
            return False
        if self.sources is not None and note.source not in self.sources:
            return False
        if self.pitch_range is not None and not self.pitch_range[0] <= note.pitch <= self.pitch_range[1]:
            return False
        if self.velocities is not None and note.velocity not in self.velocities:
            return False
        if self.instrument_strs is None and self.instrument_ids is None:
            return True
        return note.instrument_str in (self.instrument_strs or ()) or note.instrument in (self.instrument_ids or ())


def _label_ids(values: Iterable[str | int] | None, names: list[str], what: str) -> frozenset[int] | None:
    if values is None:
        return None
    if isinstance(values, (str, int)):
        values = [values]
    ids: set[int] = set()
    for value in values:
        if isinstance(value, str) and value in names:
            ids.add(names.index(value))
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            ids.add(value)
        else:
            raise DataError(f"unknown {what} {value!r}; known: {', '.join(names)}")
    return frozenset(ids)


def _make_filters(
    families: Iterable[str | int] | None,
    sources: Iterable[str | int] | None,
    pitch_range: tuple[int, int] | None,
    velocities: Iterable[int] | None,
    instruments: Iterable[str | int] | None,
) -> _Filters:
    if pitch_range is not None:
        try:
            lo, hi = (int(v) for v in pitch_range)
        except (TypeError, ValueError):
            raise DataError(f"pitch range must be two MIDI numbers (low, high), got {pitch_range!r}") from None
        if not 0 <= lo <= hi <= 127:
            raise DataError(f"pitch range must satisfy 0 <= low <= high <= 127, got {lo}..{hi}")
        pitch_range = (lo, hi)
    vel: frozenset[int] | None = None
    if velocities is not None:
        vel = frozenset([velocities] if isinstance(velocities, int) else velocities)
        if not all(isinstance(v, int) and 1 <= v <= 127 for v in vel):
            raise DataError(f"velocities must be MIDI velocities 1..127, got {sorted(vel, key=str)}")
    strs: frozenset[str] | None = None
    ids: frozenset[int] | None = None
    if instruments is not None:
        items = [instruments] if isinstance(instruments, (str, int)) else list(instruments)
        strs = frozenset(i for i in items if isinstance(i, str))
        ids = frozenset(i for i in items if isinstance(i, int) and not isinstance(i, bool))
        if len(strs) + len(ids) != len(set(items)):
            raise DataError("instruments must be instrument_str names or integer instrument ids")
    return _Filters(
        families=_label_ids(families, LABELS, "family"),
        sources=_label_ids(sources, SOURCES, "source"),
        pitch_range=pitch_range,
        velocities=vel,
        instrument_strs=strs,
        instrument_ids=ids,
    )


def _is_tfrecord(path: Path) -> bool:
    return path.is_file() and ".tfrecord" in path.name


def iter_notes(
    path: str | Path,
    *,
    families: Iterable[str | int] | None = None,
    sources: Iterable[str | int] | None = None,
    pitch_range: tuple[int, int] | None = None,
    velocities: Iterable[int] | None = None,
    instruments: Iterable[str | int] | None = None,
    strict: bool = False,
    report: ReadReport | None = None,
    audio: AudioMode = "load",
    sample_rate: int | None = SAMPLE_RATE,
    num_samples: int | None = NUM_SAMPLES,
) -> Iterator[Note]:
    """Stream the notes of an NSynth json/wav folder, a `.tfrecord` file, or a folder of `.tfrecord*` files.

    Filters (None = all): `families`/`sources` by name or id, `pitch_range`
    (low, high) inclusive, `velocities`, `instruments` by instrument_str or id.
    Filters are applied before any audio is touched.

    `audio` (json/wav folders): "load" reads and checks each kept note's wav as
    it is yielded; "header" checks only the wav header (rate, length) and
    leaves `note.audio` None for `note.load_audio()`; "none" trusts the json and
    never opens a wav (label statistics). TFRecords always carry their audio.
    `sample_rate`/`num_samples` are the required audio format (None: any).

    Bad notes are skipped and counted in `report` (the summary line is logged
    when the iteration ends), or raise `DataError` if `strict`. Argument errors
    (missing path, unknown family name) raise `DataError` at once, not at the first `next()`.
    """
    path = Path(path)
    filters = _make_filters(families, sources, pitch_range, velocities, instruments)
    if audio not in ("load", "header", "none"):
        raise DataError(f"audio must be 'load', 'header' or 'none', got {audio!r}")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "examples.json").is_file():
        inner = _iter_json_folder(path, filters, audio, sample_rate, num_samples)
    elif _is_tfrecord(path):
        inner = _iter_tfrecord_files([path], filters, sample_rate, num_samples)
    elif path.is_dir() and (files := sorted(p for p in path.iterdir() if _is_tfrecord(p))):
        inner = _iter_tfrecord_files(files, filters, sample_rate, num_samples)
    else:
        raise DataError(f"{path}: neither an NSynth folder (examples.json + audio/) nor a .tfrecord file")
    return _run(inner, path, report if report is not None else ReadReport(), strict)


def _run(inner: Iterator[Note | _Skip | None], path: Path, report: ReadReport, strict: bool) -> Iterator[Note]:
    """Drive a reader: count notes, filtered (None) and skips; raise under strict; log the summary at the end."""
    report.sources.append(str(path))
    try:
        for item in inner:
            if item is None:
                report.filtered += 1
            elif isinstance(item, _Skip):
                if strict:
                    raise DataError(f"{item} [{item.reason}]")
                report.skip(item.reason, str(item))
            else:
                report.notes += 1
                yield item
    finally:
        inner.close()  # type: ignore[attr-defined]
        level = logging.WARNING if report.skipped else logging.INFO
        log.log(level, "%s: %s", path, report.summary())


def _iter_json_folder(
    folder: Path, filters: _Filters, audio: AudioMode, sample_rate: int | None, num_samples: int | None
) -> Iterator[Note | _Skip | None]:
    seen: set[str] = set()
    for key, entry in iter_examples_json(folder):
        try:
            note = _note_from_entry(entry, key)
            if key in seen:
                raise _Skip("duplicate_note", f"{key}: appears twice in {folder / 'examples.json'}")
            seen.add(key)
            if sample_rate is not None and note.sample_rate != sample_rate:
                raise _Skip(
                    "bad_rate", f"{key}: sample_rate {note.sample_rate} in examples.json, expected {sample_rate}"
                )
            if not filters.keep(note):
                yield None
                continue
            note.path = folder / "audio" / f"{key}.wav"
            if audio == "load":
                note.audio = _read_wav(note.path, note.sample_rate, num_samples)
            elif audio == "header":
                _check_wav_header(note.path, note.sample_rate, num_samples)
        except _Skip as skip:
            yield skip
            continue
        yield note


def _iter_tfrecord_files(
    files: list[Path], filters: _Filters, sample_rate: int | None, num_samples: int | None
) -> Iterator[Note | _Skip | None]:
    seen: set[str] = set()
    for path in files:
        index = -1
        for record in tfrecord.iter_records(path):
            index += 1
            where = f"{path}: record {index}"
            if isinstance(record, tfrecord.TFRecordError):
                yield _Skip(record.reason, str(record))
                continue
            try:
                try:
                    features = tfrecord.decode_example(record)
                except ValueError as exc:
                    raise _Skip("bad_record", f"{where}: not a tf.train.Example ({exc})") from None
                note = _note_from_entry(_entry_from_features(features, where), None)
                where = f"{where} ({note.note_str})"
                if note.note_str in seen:
                    raise _Skip("duplicate_note", f"{where}: note_str seen before")
                seen.add(note.note_str)
                if not filters.keep(note):
                    yield None
                    continue
                samples = features["audio"]
                if samples.kind != "float":
                    raise _Skip("bad_field", f"{where}: feature audio must be a float list")
                if sample_rate is not None and note.sample_rate != sample_rate:
                    raise _Skip("bad_rate", f"{where}: sample_rate {note.sample_rate}, expected {sample_rate}")
                values = np.asarray(samples.values, dtype=np.float32)
                if num_samples is not None and values.shape[0] != num_samples:
                    raise _Skip("bad_length", f"{where}: {values.shape[0]} samples, expected {num_samples}")
                if not np.isfinite(values).all():
                    raise _Skip("bad_audio", f"{where}: NaN or Inf samples")
                note.audio = values
            except _Skip as skip:
                yield skip
                continue
            yield note

"""Enrolment as the command and the daemon use it: the personal file of a model directory, read-modify-write under
a lock, notes from files or the microphone, and the head for the bundle in force (re-fitted for a new one).

`device/personal.py` holds the head and the file format; this module decides *where* the file is, keeps two
enrolments from losing each other's notes (an advisory lock around read-modify-write; the file itself is
replaced atomically, so the daemon reading it at any moment sees the old file or the new one), and turns a
personal file made for another bundle into one for the bundle in force (`head_for`: re-fitted from its stored
clips and saved, or refused with one line).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.personal import (
    MFCC,
    MIN_NOTES,
    NoNoteError,
    Note,
    PersonalError,
    PersonalHead,
    check_family,
    extract_notes,
)
from instrument_ai.device.personal_file import PersonalFile
from instrument_ai.device.settings import DEFAULT_SETTINGS, EngineSettings

PERSONAL_NAME = "personal.bin"
"""The personal file's name in a model directory, beside ``current.tflite``."""
MAX_RECORD_SECONDS = 600.0


def personal_path(model_dir: Path) -> Path:
    """Where a model directory keeps its personal file."""
    return Path(model_dir) / PERSONAL_NAME


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an advisory lock for a read-modify-write of `path` (two `enrol`s at once keep both their notes)."""
    lock_path = path.parent / f".{path.name}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise PersonalError(f"{path.parent}: cannot write there ({exc.strerror or exc})") from None
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not a POSIX system: the atomic rename still protects readers
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


def load_or_new(path: Path, bundle: Any) -> PersonalFile:
    """The personal file at `path` tied to `bundle` (re-fitted when it was made for another), or a new one."""
    if not path.exists():
        return PersonalFile.new(bundle)
    data = PersonalFile.load(path)
    try:
        data.check_bundle(bundle, str(path))
    except PersonalError:
        data = data.refit(bundle)
    return data


@dataclass
class EnrolReport:
    """What one `enrol` did: notes kept per input, and the families the file holds now."""

    family: str
    kept: dict[str, int]  # input (file or "microphone") -> notes kept
    families: dict[str, int]
    path: Path
    descriptor: str = MFCC  # what the personal file's notes are described by (the model's embedding, or MFCC)

    @property
    def added(self) -> int:
        return sum(self.kept.values())

    def inactive(self) -> list[str]:
        """Families with too few notes to be used yet (`MIN_NOTES`)."""
        return [family for family, n in self.families.items() if n < MIN_NOTES]


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A whole audio file as (frames, channels) float32 and its rate; SourceError (one line) if unreadable."""
    from instrument_ai.device.sources import FileSource

    source = FileSource(path, realtime=False)
    blocks = list(source.blocks(threading.Event()))
    audio = np.concatenate(blocks) if blocks else np.zeros((0, source.channels), dtype=np.float32)
    return audio, source.rate


def notes_from_files(
    family: str, files: Sequence[str | Path], bundle: Any, settings: EngineSettings = DEFAULT_SETTINGS
) -> dict[str, list[Note]]:
    """The notes of each file (one per onset, the daemon's onset detection); a file with none is one line."""
    check_family(family)
    found: dict[str, list[Note]] = {}
    for file in files:
        audio, rate = read_audio(file)
        found[str(file)] = extract_notes(
            audio, rate, bundle, family, silence_db=settings.silence_db, hop_seconds=settings.hop_seconds,
            source=Path(file).name,
        )  # fmt: skip
    return found


def record(source: Any, seconds: float, stop: threading.Event | None = None) -> np.ndarray:
    """`seconds` of audio from a `sources.Source` (the microphone), (frames, channels) float32."""
    if not 0 < seconds <= MAX_RECORD_SECONDS:
        raise PersonalError(f"record length {seconds:g} s: give 0 < SECONDS <= {MAX_RECORD_SECONDS:g}")
    wanted = int(round(seconds * source.rate))
    blocks, have = [], 0
    for block in source.blocks(stop or threading.Event()):
        blocks.append(np.asarray(block, dtype=np.float32))
        have += block.shape[0]
        if have >= wanted:
            break
    if not blocks:
        return np.zeros((0, source.channels), dtype=np.float32)
    return np.concatenate(blocks)[:wanted]


def enrol(path: Path, bundle: Any, family: str, found: dict[str, list[Note]]) -> EnrolReport:
    """Add the notes to the personal file at `path` (created if missing), under the lock, written atomically."""
    check_family(family)
    with locked(path):
        data = load_or_new(path, bundle)
        for notes in found.values():
            data.add(notes)
        data.save(path)
    kept = {name: len(notes) for name, notes in found.items()}
    return EnrolReport(family, kept, data.families(), path, data.descriptor)


def forget(path: Path, family: str) -> tuple[int, dict[str, int]]:
    """Drop a family's notes; returns (notes dropped, families left). The file stays (possibly empty)."""
    check_family(family)
    with locked(path):
        data = PersonalFile.load(path)
        dropped = data.forget(family)
        if dropped == 0:
            held = ", ".join(data.families()) or "none"
            raise PersonalError(f"{path}: no notes of {family!r} enrolled (families enrolled: {held})")
        data.save(path)
    return dropped, data.families()


def describe(path: Path) -> dict[str, Any]:
    """`enrol --list`: the families, notes, clips and the model the file was fitted for."""
    data = PersonalFile.load(path)
    clips = sum(1 for n in data.notes if n.clip is not None)
    return {
        "path": str(path),
        "families": data.families(),
        "notes": len(data.notes),
        "clips": clips,
        "descriptor": data.descriptor,
        "model": f"{data.bundle.get('name', '?')} {data.bundle.get('version', '?')}",
        "model_sha256": data.bundle.get("model_sha256", ""),
        "bytes": path.stat().st_size,
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data.created)),
    }


def head_for(path: Path, bundle: Any, *, refit: bool = True) -> PersonalHead:
    """The head of the personal file at `path` for `bundle`.

    A file made for another bundle is re-fitted from its stored notes and saved (atomically, under the lock)
    when `refit`, else refused with one line (`PersonalError`); a file none of whose families has
    `MIN_NOTES` notes is refused too (the head would do nothing).
    """
    data = PersonalFile.load(path)
    if not _made_for(data, bundle, path):
        if not refit:
            data.check_bundle(bundle, str(path))  # raises its one line
        with locked(path):
            data = PersonalFile.load(path)  # again, under the lock: an enrol may have just written it
            if not _made_for(data, bundle, path):
                data = data.refit(bundle)
                data.save(path)
    return _fitted(data, bundle, path)


def _made_for(data: PersonalFile, bundle: Any, path: Path) -> bool:
    try:
        data.check_bundle(bundle, str(path))
    except PersonalError:
        return False
    return True


def _fitted(data: PersonalFile, bundle: Any, path: Path) -> PersonalHead:
    head = data.head(bundle, str(path))
    if not head.families:
        held = ", ".join(f"{f} {n}" for f, n in data.families().items()) or "no notes"
        raise PersonalError(f"{path}: no family has {MIN_NOTES} enrolled notes yet ({held}); enrol more")
    return head


__all__ = [
    "PERSONAL_NAME",
    "EnrolReport",
    "NoNoteError",
    "describe",
    "enrol",
    "forget",
    "head_for",
    "load_or_new",
    "locked",
    "notes_from_files",
    "personal_path",
    "record",
]

"""The personal file: the enrolled notes of `instrument-ai enrol`, tied to one bundle (split from personal.py).

One small binary file, written atomically, that holds every enrolled note's hop descriptors, family, the general
model's outputs at those hops and an optional clip, plus the digests of the bundle it was fitted for and the kind
of descriptor it holds (`personal.MFCC`: MFCC statistics, any bundle; `personal.EMBEDDING`: the bundle's
penultimate activations), closed by a SHA-256 of everything before it. A truncated or edited file, or one made
for another bundle or descriptor, is refused with one line (`PersonalError`, exit 2); `refit` re-describes the
notes for a new bundle from their stored clips without asking the user again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.frontend import FrontendSpec
from instrument_ai.device.labels import LABELS
from instrument_ai.device.personal import (
    DESCRIPTORS,
    MAX_CLIPS_PER_FAMILY,
    MFCC,
    NoNoteError,
    Note,
    PersonalError,
    PersonalHead,
    PersonalSaveError,
    bundle_background,
    bundle_identity,
    check_family,
    descriptor_kind,
    descriptor_width,
    extract_notes,
    fit_head,
)

FORMAT = "instrument_ai.personal"
FORMAT_VERSION = 2
"""2: the header names the descriptor and its width (embedding files); version 1 files (MFCC) are still read."""
_MAGIC = b"IAPERSONAL1\n"
_DIGEST_BYTES = 32


@dataclass
class PersonalFile:
    """The enrolled notes and the bundle they were fitted for; `head()` fits the head for that bundle."""

    bundle: dict[str, str]
    spec: FrontendSpec
    notes: list[Note] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    descriptor: str = MFCC  # what the notes' descriptors are (`personal.DESCRIPTORS`)
    width: int = 0  # values per hop descriptor; 0: the MFCC width of `spec`

    def __post_init__(self) -> None:
        if self.descriptor not in DESCRIPTORS:
            raise PersonalError(f"descriptor {self.descriptor!r} is not one of {', '.join(DESCRIPTORS)}")
        if self.width <= 0:
            self.width = 2 * self.spec.n_features if self.descriptor == MFCC else 0
        if self.width <= 0:
            raise PersonalError(f"a personal file of {self.descriptor} descriptors needs their width")

    @classmethod
    def new(cls, bundle: Any) -> PersonalFile:
        """An empty file for `bundle`, holding the best descriptor it offers (its embedding when it has one)."""
        kind = descriptor_kind(bundle)
        return cls(bundle_identity(bundle), bundle.spec, descriptor=kind, width=descriptor_width(kind, bundle))

    def families(self) -> dict[str, int]:
        """Enrolled notes per family, in label order."""
        counts: dict[str, int] = {}
        for note in self.notes:
            counts[note.family] = counts.get(note.family, 0) + 1
        return {f: counts[f] for f in LABELS if f in counts}

    def add(self, notes: Iterable[Note]) -> None:
        """Add notes, keeping at most MAX_CLIPS_PER_FAMILY clips per family (descriptors are always kept)."""
        for note in notes:
            check_family(note.family)
            if note.descriptors.ndim != 2 or note.descriptors.shape[1] != self.width:
                raise PersonalError(
                    f"a note's descriptors have shape {note.descriptors.shape}, expected (hops, {self.width}) "
                    f"{self.descriptor} values"
                )
            clips = sum(1 for n in self.notes if n.family == note.family and n.clip is not None)
            if note.clip is not None and clips >= MAX_CLIPS_PER_FAMILY:
                note = Note(note.family, note.descriptors, None, note.onset, note.source, note.probs)
            self.notes.append(note)

    def forget(self, family: str) -> int:
        """Drop every note of a family; returns how many went."""
        check_family(family)
        before = len(self.notes)
        self.notes = [n for n in self.notes if n.family != family]
        return before - len(self.notes)

    def check_bundle(self, bundle: Any, path: str = "personal file") -> None:
        """PersonalError unless this file was fitted for `bundle` (same digests, the descriptor it offers)."""
        mine, theirs = self.bundle, bundle_identity(bundle)
        same = all(mine[k] == theirs[k] for k in ("model_sha256", "metadata_sha256"))
        if not same:
            raise PersonalError(
                f"{path}: made for model {mine['name']} {mine['version']} ({mine['model_sha256'][:12]}), not for "
                f"{theirs['name']} {theirs['version']} ({theirs['model_sha256'][:12]}); re-fit it for this model"
            )
        kind = descriptor_kind(bundle)
        if (kind, descriptor_width(kind, bundle)) != (self.descriptor, self.width):
            raise PersonalError(
                f"{path}: holds {self.width} {self.descriptor} values per hop, but this model offers "
                f"{descriptor_width(kind, bundle)} {kind} values; re-fit it for this model"
            )

    def head(self, bundle: Any, path: str = "personal file", background: Sequence[Note] | None = None) -> PersonalHead:
        """The head for `bundle`, refusing a bundle the file was not fitted for. `background` (see `fit_head`)
        defaults to the known sounds the bundle ships (`bundle_background`), if any."""
        self.check_bundle(bundle, path)
        if background is None:
            background = bundle_background(bundle, self.descriptor)
        head = fit_head(self.notes, bundle.labels, bundle.spec, bundle.mean, bundle.std, background=background,
                        descriptor=self.descriptor)  # fmt: skip
        head.bundle = dict(self.bundle)
        return head

    def refit(self, bundle: Any) -> PersonalFile:
        """The same enrolment tied to another bundle, without asking the user again.

        A note with a clip is heard again through the new bundle (new descriptors of the kind that bundle offers,
        new general outputs). A note without one keeps its MFCC descriptors when the frontend is the same and the
        new bundle is described by MFCC too, but loses its general outputs (they belong to the old model), so the
        head then fits on the descriptors alone; otherwise (another frontend, embedding descriptors, which belong
        to the old network) it is dropped. PersonalError when nothing is left.
        """
        kind = descriptor_kind(bundle)
        notes: list[Note] = []
        for note in self.notes:
            if note.clip is None:
                if bundle.spec == self.spec and kind == self.descriptor == MFCC:
                    notes.append(Note(note.family, note.descriptors, None, note.onset, note.source, None))
                continue
            try:
                found = extract_notes(note.clip, int(self.spec.sample_rate), bundle, note.family, source=note.source)
            except NoNoteError:
                continue
            notes.append(found[0])
        if not notes:
            raise PersonalError(
                "the new model needs the notes described again and no enrolled note kept its audio; enrol again"
            )
        refitted = PersonalFile(bundle_identity(bundle), bundle.spec, [], self.created, kind,
                                descriptor_width(kind, bundle))  # fmt: skip
        refitted.add(notes)
        return refitted

    # -- bytes ---------------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Magic line, header length, JSON header, the arrays (little-endian), then SHA-256 of all of it."""
        descriptors = [n.descriptors.astype("<f4") for n in self.notes]
        probs = [n.probs.astype("<f4") if n.probs is not None else np.zeros((0,), "<f4") for n in self.notes]
        clips = [n.clip.astype("<i2") if n.clip is not None else np.zeros(0, "<i2") for n in self.notes]
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION if self.descriptor != MFCC else 1,
            "bundle": self.bundle,
            "frontend_spec": self.spec.to_dict(),
            "descriptor": self.descriptor,
            **({"descriptor_width": self.width} if self.descriptor != MFCC else {}),
            "created": self.created,
            "notes": [
                {
                    "family": n.family,
                    "hops": int(d.shape[0]),
                    "outputs": int(p.shape[1]) if p.ndim == 2 else 0,
                    "clip_samples": int(c.size),
                    "onset": round(float(n.onset), 4),
                    "source": n.source,
                }
                for n, d, p, c in zip(self.notes, descriptors, probs, clips, strict=True)
            ],
        }
        head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        body = b"".join(a.tobytes() for a in (*descriptors, *probs, *clips))
        payload = _MAGIC + len(head).to_bytes(4, "little") + head + body
        return payload + hashlib.sha256(payload).digest()

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "personal file") -> PersonalFile:
        """Parse and verify; PersonalError (one line) for a foreign, truncated, edited or malformed file."""
        if not data.startswith(_MAGIC):
            raise PersonalError(f"{path}: not a personal file of instrument-ai")
        payload, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
        if len(data) < len(_MAGIC) + 4 + _DIGEST_BYTES or hashlib.sha256(payload).digest() != digest:
            raise PersonalError(f"{path}: damaged (truncated or edited: its checksum does not match); enrol again")
        try:
            size = int.from_bytes(payload[len(_MAGIC) : len(_MAGIC) + 4], "little")
            start = len(_MAGIC) + 4
            header = json.loads(payload[start : start + size])
            if header.get("format") != FORMAT or header.get("version") not in (1, FORMAT_VERSION):
                raise ValueError(f"format {header.get('format')} version {header.get('version')} is not supported")
            spec = FrontendSpec.from_dict(header["frontend_spec"])
            kind = str(header.get("descriptor", MFCC))
            if kind not in DESCRIPTORS:
                raise ValueError(f"descriptor {kind!r} is not one this version knows ({', '.join(DESCRIPTORS)})")
            width = 2 * spec.n_features if kind == MFCC else int(header["descriptor_width"])
            if width <= 0:
                raise ValueError(f"descriptor width {width}")
            reader = _Reader(payload, start + size)
            entries = header["notes"]
            notes = [
                Note(
                    str(e["family"]),
                    reader.take("<f4", int(e["hops"]) * width).reshape(-1, width),
                    None,
                    float(e["onset"]),
                    str(e["source"]),
                )
                for e in entries
            ]
            for note, entry in zip(notes, entries, strict=True):
                outputs = int(entry["outputs"])
                values = reader.take("<f4", note.descriptors.shape[0] * outputs)
                note.probs = values.reshape(-1, outputs) if outputs else None
            for note, entry in zip(notes, entries, strict=True):
                clip = reader.take("<i2", int(entry["clip_samples"]))
                note.clip = clip if clip.size else None
            if reader.offset != len(payload):
                raise ValueError(f"{len(payload) - reader.offset} bytes left over")
            for note in notes:
                check_family(note.family)
            return cls(dict(header["bundle"]), spec, notes, float(header["created"]), kind, width)
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise PersonalError(f"{path}: not a valid personal file ({exc})") from None

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync, rename, fsync the folder.

        A failure (a full disk) leaves the previous file as it was and raises PersonalSaveError.
        """
        save_atomically(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> PersonalFile:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PersonalError(f"{path}: no such personal file") from None
        except OSError as exc:
            raise PersonalError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        return cls.from_bytes(data, str(path))


class _Reader:
    """Consecutive typed arrays out of one payload; ValueError when it runs short."""

    def __init__(self, payload: bytes, offset: int) -> None:
        self.payload, self.offset = payload, offset

    def take(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if count < 0 or self.offset + size > len(self.payload):
            raise ValueError("the arrays are shorter than the header says")
        out = np.frombuffer(self.payload, dtype, count, self.offset).astype(dtype[1:] if dtype[0] == "<" else dtype)
        self.offset += size
        return out


def save_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` so that a reader sees the old file or the new one, never a part."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = -1, ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
        tmp = ""
        _fsync_folder(folder)
    except OSError as exc:
        reason = exc.strerror or exc
        raise PersonalSaveError(f"{path}: could not be saved ({reason}); the previous file is kept") from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some systems cannot open a folder; the rename itself is atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

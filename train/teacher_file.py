"""Pretrained teacher files (train/teachers.toml): a file is used only when its size and SHA-256 are the pinned ones.

A teacher file is read at training time only. Anything else under its name (a truncated download, another
release, a tampered copy) would silently teach the model something else, so it is refused with one line
(`TeacherFileError`, exit 2) before anything is written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from instrument_ai.device.errors import ConfigurationError

CATALOGUE = Path(__file__).with_name("teachers.toml")
_FIELDS = ("name", "repo", "commit", "path", "bytes", "sha256", "licence", "model_code", "model_code_commit")


class TeacherFileError(ConfigurationError):
    """A teacher file or catalogue entry that cannot be used as given (wrong size or digest, unknown name)."""


@dataclass(frozen=True)
class TeacherFile:
    """One catalogue entry: where the file comes from, and the size and digest it must have."""

    name: str
    repo: str
    commit: str
    path: str
    bytes: int
    sha256: str
    licence: str
    model_code: str
    model_code_commit: str
    description: str = ""
    note: str = ""


def teacher_catalogue(path: Path = CATALOGUE) -> dict[str, TeacherFile]:
    """The pinned teacher files of the catalogue, by name."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TeacherFileError(f"{path}: unreadable teacher catalogue ({exc})") from None
    entries: dict[str, TeacherFile] = {}
    for row in raw.get("teacher", []):
        missing = [f for f in _FIELDS if f not in row]
        if missing:
            raise TeacherFileError(f"{path}: teacher entry {row.get('name', '?')!r} lacks {', '.join(missing)}")
        known = {k: v for k, v in row.items() if k in TeacherFile.__dataclass_fields__}
        entries[row["name"]] = TeacherFile(**known)
    return entries


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_teacher_file(path: str | Path, name: str = "mn04_as", *, catalogue: Path = CATALOGUE) -> TeacherFile:
    """The catalogue entry `name` when `path` is exactly its pinned file; raises TeacherFileError (exit 2) otherwise.

    Reads the file only: nothing is written, whatever the outcome.
    """
    entries = teacher_catalogue(catalogue)
    if name not in entries:
        raise TeacherFileError(f"unknown teacher file {name!r}; the catalogue has {', '.join(sorted(entries))}")
    entry = entries[name]
    file = Path(path)
    if not file.is_file():
        raise TeacherFileError(f"{file}: no such teacher file")
    size = file.stat().st_size
    if size != entry.bytes:
        raise TeacherFileError(f"{file}: {size} bytes, but {name} is {entry.bytes} bytes; refused")
    digest = file_digest(file)
    if digest != entry.sha256:
        raise TeacherFileError(f"{file}: sha256 {digest[:12]}..., but {name} is {entry.sha256[:12]}...; refused")
    return entry


def load_teacher_state(path: str | Path, name: str = "mn04_as") -> Any:
    """The verified file's torch state dict (CPU). Needs torch, which is not a dependency of this project."""
    verified_teacher_file(path, name)
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        raise TeacherFileError(f"{name}: loading a pretrained teacher needs torch (not installed)") from None
    return torch.load(Path(path), map_location="cpu", weights_only=True)


__all__ = ["TeacherFile", "TeacherFileError", "load_teacher_state", "teacher_catalogue", "verified_teacher_file"]

"""A pinned pretrained teacher file (issue 23, item 6; train/teachers.toml): refused with one line and exit 2 when
its size or SHA-256 differs from the catalogue's, and nothing is written either way."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


def _catalogue(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / "teachers.toml"
    path.write_text(
        'schema = 1\n[[teacher]]\nname = "tiny"\nrepo = "https://example.org/r"\ncommit = "0" \npath = "t.pt"\n'
        f'bytes = {len(payload)}\nsha256 = "{hashlib.sha256(payload).hexdigest()}"\nlicence = "MIT"\n'
        'model_code = "https://example.org/m"\nmodel_code_commit = "1"\n'
    )
    return path


def test_a_teacher_file_whose_size_or_digest_differs_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    from instrument_ai.train.teacher_file import TeacherFileError, verified_teacher_file

    payload = b"pretend weights " * 64
    catalogue = _catalogue(tmp_path, payload)
    folder = tmp_path / "files"
    folder.mkdir()
    good, tampered, short = folder / "good.pt", folder / "tampered.pt", folder / "short.pt"
    good.write_bytes(payload)
    tampered.write_bytes(payload[:-1] + b"!")  # same size, another digest
    short.write_bytes(payload[:-1])
    assert verified_teacher_file(good, "tiny", catalogue=catalogue).bytes == len(payload)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for bad, what in ((tampered, "sha256"), (short, "bytes")):
        with pytest.raises(TeacherFileError) as caught:
            verified_teacher_file(bad, "tiny", catalogue=catalogue)
        assert caught.value.exit_code == 2
        message = str(caught.value)
        assert "\n" not in message and what in message and message.endswith("refused")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written, nothing changed
    with pytest.raises(TeacherFileError, match="unknown teacher file 'nope'"):
        verified_teacher_file(good, "nope", catalogue=catalogue)


def test_the_catalogue_pins_efficientat_mn04_as() -> None:
    from instrument_ai.train.teacher_file import teacher_catalogue

    entry = teacher_catalogue()["mn04_as"]
    assert entry.repo.endswith("nikih94/swch-audio-classification") and entry.commit.startswith("2b362d975446")
    assert entry.path == "resources/mn04_as_mAP_432.pt" and entry.bytes == 4_066_513
    assert entry.sha256.startswith("899a8c62") and entry.sha256.endswith("321c") and len(entry.sha256) == 64
    assert entry.licence == "MIT" and entry.model_code_commit == "a425fdce9257"

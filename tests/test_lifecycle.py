"""Model directory lifecycle: atomic install, history, pruning, rollback, remote targets.

These tests use a stand-in verifier (a "bundle" is any file starting with b"OK")
so that they exercise the directory logic alone; tests/test_lifecycle_bundles.py
runs the same commands on real bundles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from instrument_ai.device import lifecycle
from instrument_ai.device.remote import parse_target, read_hosts_file


def fake_verifier(path: Path) -> dict:
    data = Path(path).read_bytes()
    if not data.startswith(b"OK"):
        raise lifecycle.LifecycleError(f"{path}: refused: not a bundle")
    name, version = data[2:].decode().split(":")[:2]
    return {"name": name, "version": version}


def make_bundle(tmp_path: Path, name: str, version: str, payload: str = "") -> Path:
    path = tmp_path / f"{name}-{version}.tflite"
    path.write_bytes(f"OK{name}:{version}:{payload}".encode())
    return path


def current_text(directory: Path) -> str:
    return (directory / lifecycle.CURRENT).read_bytes().decode()


def test_install_makes_current_and_keeps_history(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for version in ("1", "2"):
        lifecycle.install(make_bundle(tmp_path, "m", version), models, verifier=fake_verifier)
    assert current_text(models).startswith("OKm:2")
    assert (models / lifecycle.CURRENT).is_symlink()
    assert not os.path.isabs(os.readlink(models / lifecycle.CURRENT)), "relative link survives moving the dir"
    rows = lifecycle.list_installed(models)
    assert [r["version"] for r in rows] == ["1", "2"]
    assert [r["current"] for r in rows] == [False, True]


def test_refused_bundle_changes_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    lifecycle.install(make_bundle(tmp_path, "m", "1"), models, verifier=fake_verifier)
    before = sorted(p.name for p in (models / lifecycle.VERSIONS).iterdir())
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a bundle")
    with pytest.raises(lifecycle.LifecycleError, match="refused"):
        lifecycle.install(bad, models, verifier=fake_verifier)
    assert current_text(models).startswith("OKm:1")
    assert sorted(p.name for p in (models / lifecycle.VERSIONS).iterdir()) == before


def test_keep_prunes_oldest_but_never_current(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for version in "12345":
        lifecycle.install(make_bundle(tmp_path, "m", version), models, keep=3, verifier=fake_verifier)
    rows = lifecycle.list_installed(models)
    assert [r["version"] for r in rows] == ["3", "4", "5"]
    assert len(list((models / lifecycle.VERSIONS).iterdir())) == 3


def test_rollback_walks_back_and_refuses_at_the_start(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for version in "123":
        lifecycle.install(make_bundle(tmp_path, "m", version), models, verifier=fake_verifier)
    old, new = lifecycle.rollback(models, verifier=fake_verifier)
    assert (old.version, new.version) == ("3", "2")
    assert current_text(models).startswith("OKm:2")
    lifecycle.rollback(models, verifier=fake_verifier)
    assert current_text(models).startswith("OKm:1")
    with pytest.raises(lifecycle.LifecycleError, match="no earlier version"):
        lifecycle.rollback(models, verifier=fake_verifier)
    # a new flash after rollbacks becomes current and keeps the history order
    lifecycle.install(make_bundle(tmp_path, "m", "4"), models, verifier=fake_verifier)
    assert current_text(models).startswith("OKm:4")


def test_reinstalling_same_bundle_is_idempotent(tmp_path: Path) -> None:
    models = tmp_path / "models"
    bundle = make_bundle(tmp_path, "m", "1")
    lifecycle.install(bundle, models, verifier=fake_verifier)
    lifecycle.install(bundle, models, verifier=fake_verifier)
    assert len(lifecycle.list_installed(models)) == 1


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    entry = lifecycle.install(make_bundle(tmp_path, "m", "1"), models, verifier=fake_verifier, dry_run=True)
    assert entry.version == "1"
    assert not models.exists()


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    lifecycle.atomic_write_bytes(target, b"abc")
    lifecycle.atomic_write_bytes(target, b"defg")
    assert target.read_bytes() == b"defg"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
    assert target.stat().st_mode & 0o044, "readable by the daemon's user, not 0600 like mkstemp's files"


def test_corrupt_history_is_a_clear_error(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / lifecycle.HISTORY).write_text("{not json")
    with pytest.raises(lifecycle.LifecycleError, match="unreadable install history"):
        lifecycle.list_installed(models)


@pytest.mark.parametrize(
    ("spec", "host", "directory"),
    [
        ("pi@kitchen:/var/lib/instrument-ai", "pi@kitchen", "/var/lib/instrument-ai"),
        ("kitchen:models", "kitchen", "models"),
        ("/var/lib/instrument-ai", None, "/var/lib/instrument-ai"),
        ("./models", None, "./models"),
    ],
)
def test_parse_target(spec: str, host: str | None, directory: str) -> None:
    target = parse_target(spec)
    assert (target.host, target.directory) == (host, directory)


def test_hosts_file_ignores_comments(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# pis\npi@a:/m\n\n  pi@b:/m  # second\n")
    assert read_hosts_file(hosts) == ["pi@a:/m", "pi@b:/m"]
    with pytest.raises(ValueError, match="cannot read"):
        read_hosts_file(tmp_path / "missing")


def test_history_file_is_valid_json_after_many_installs(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for version in range(6):
        lifecycle.install(make_bundle(tmp_path, "m", str(version)), models, keep=2, verifier=fake_verifier)
    history = json.loads((models / lifecycle.HISTORY).read_text())
    assert [h["version"] for h in history] == ["4", "5"]

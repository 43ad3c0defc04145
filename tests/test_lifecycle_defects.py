"""Model directory defects found by a new user (issue 21, section 3): each test failed before its fix.

1: entries of installed.json that name files outside versions/ are ignored, never deleted;
2: concurrent flashes, rollbacks and starting daemons on one directory (real processes) all succeed;
4: the version a daemon runs is never pruned;
9: misleading messages (a FIFO, a device, --to a file, a full disk);
10: a hand-copied current.tflite is adopted into the history, never discarded.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from instrument_ai.device import lifecycle
from tests.test_lifecycle import current_text, fake_verifier, make_bundle

REPO = Path(__file__).resolve().parents[1]


def _install(tmp_path: Path, models: Path, version: str, keep: int = lifecycle.DEFAULT_KEEP) -> None:
    lifecycle.install(make_bundle(tmp_path, "m", version), models, keep=keep, verifier=fake_verifier)


# -- 1: deletes stay inside versions/ ----------------------------------------------------------------------


def test_entries_outside_versions_are_ignored_and_never_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    _install(tmp_path, models, "1")
    beside = tmp_path / "victim.txt"
    beside.write_text("keep me")
    absolute = tmp_path / "elsewhere" / "passwd"
    absolute.parent.mkdir()
    absolute.write_text("root:x:0:0")
    inside = models / "notes.txt"
    inside.write_text("not a version")
    rows = json.loads((models / lifecycle.HISTORY).read_text())
    bad = [
        {"file": "../victim.txt", "name": "x", "version": "0", "sha256": "0", "installed_at": 0.0},
        {"file": str(absolute), "name": "x", "version": "0", "sha256": "0", "installed_at": 0.0},
        {"file": "versions/../../victim.txt", "name": "x", "version": "0", "sha256": "0", "installed_at": 0.0},
        {"file": "notes.txt", "name": "x", "version": "0", "sha256": "0", "installed_at": 0.0},
    ]
    (models / lifecycle.HISTORY).write_text(json.dumps(bad + rows))
    for version in "234":
        _install(tmp_path, models, version, keep=1)
    assert beside.read_text() == "keep me" and absolute.read_text() == "root:x:0:0" and inside.exists()
    err = capsys.readouterr().err
    assert "../victim.txt" in err and "ignored" in err and "versions/" in err
    assert [r["version"] for r in lifecycle.list_installed(models)] == ["4"]

    # rollback may not point current.tflite at a file named by a bad entry either
    _install(tmp_path, models, "5", keep=3)
    (models / lifecycle.HISTORY).write_text(json.dumps(bad + json.loads((models / lifecycle.HISTORY).read_text())))
    old, new = lifecycle.rollback(models, verifier=fake_verifier)
    assert (old.version, new.version) == ("5", "4")
    with pytest.raises(lifecycle.LifecycleError, match="no earlier version"):
        lifecycle.rollback(models, verifier=fake_verifier)
    assert beside.exists() and absolute.exists() and inside.exists()
    assert (models / lifecycle.CURRENT).resolve().parent == (models / lifecycle.VERSIONS).resolve()


def test_a_versions_folder_that_links_elsewhere_is_never_pruned(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _install(tmp_path, models, "1")
    outside = tmp_path / "outside"
    (models / lifecycle.VERSIONS).rename(outside)
    (models / lifecycle.VERSIONS).symlink_to(outside)
    for version in "23":
        _install(tmp_path, models, version, keep=1)
    assert len(list(outside.glob("m-1-*.tflite"))) == 1, "a file reached through a linked versions/ is kept"


# -- 2: one directory, several processes -------------------------------------------------------------------

_WORKER = """
import os, sys, time
from pathlib import Path
from instrument_ai.device import lifecycle
lifecycle.LOCK_SECONDS = float(os.environ.get("LOCK_SECONDS", "30"))
from tests.test_lifecycle import fake_verifier, make_bundle
action, models, start = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
bundle = make_bundle(Path(sys.argv[4]), "m", sys.argv[5]) if action == "flash" else None
while time.time() < start:
    pass
if action == "flash":
    lifecycle.install(bundle, models, keep=10, verifier=fake_verifier)
elif action == "rollback":
    lifecycle.rollback(models, verifier=fake_verifier)
else:
    lifecycle.repair(models)  # what a starting daemon does
"""


def _together(jobs: list[list[str]], models: Path, work: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run the workers so that they start their lifecycle step within the same millisecond."""
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, job[0], str(models), repr(start), str(work), *job[1:]],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job in jobs
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def test_concurrent_flashes_rollbacks_and_daemon_starts_all_succeed(tmp_path: Path) -> None:
    for round_ in range(10):
        work = tmp_path / f"r{round_}"
        work.mkdir()
        models = work / "models"
        _install(work, models, "0")
        _install(work, models, "base")
        results = _together([["flash", "a"], ["flash", "b"], ["repair"]], models, work)
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        versions = [r["version"] for r in lifecycle.list_installed(models)]
        assert sorted(versions[-2:]) == ["a", "b"], versions
        assert current_text(models).startswith(f"OKm:{versions[-1]}")
        results = _together([["flash", "c"], ["rollback"]], models, work)
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        rows = lifecycle.list_installed(models)
        assert "c" in [r["version"] for r in rows] and sum(r["current"] for r in rows) == 1
        assert not [p for p in models.rglob(".*.tmp")], "no temp file left behind"


def test_a_held_lock_is_waited_for_then_refused_in_one_line(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _install(tmp_path, models, "1")
    with lifecycle.directory_lock(models):
        holder = subprocess.run(
            [sys.executable, "-c", _WORKER, "flash", str(models), "0", str(tmp_path), "2"],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "LOCK_SECONDS": "0.5"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert holder.returncode != 0 and "another flash or rollback" in holder.stderr
    _install(tmp_path, models, "2")  # released: the next one goes ahead
    assert current_text(models).startswith("OKm:2")


# -- 4: the running version survives pruning ---------------------------------------------------------------


def test_the_version_a_daemon_runs_is_never_pruned(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _install(tmp_path, models, "1")
    lifecycle.record_running(models / lifecycle.CURRENT)  # the daemon loaded version 1
    for version in "234":  # all refused by that daemon (say, unsigned): it keeps running 1
        _install(tmp_path, models, version, keep=3)
    rows = lifecycle.list_installed(models)
    assert [r["version"] for r in rows] == ["1", "2", "3", "4"]
    assert [r.get("running", False) for r in rows] == [True, False, False, False]
    for expected in "321":
        lifecycle.rollback(models, verifier=fake_verifier)
        assert current_text(models).startswith(f"OKm:{expected}")
    lifecycle.record_running(models / lifecycle.CURRENT)
    _install(tmp_path, models, "5", keep=1)
    assert [r["version"] for r in lifecycle.list_installed(models)] == ["1", "5"]
    lifecycle.record_running(models / lifecycle.CURRENT)
    _install(tmp_path, models, "6", keep=1)
    assert [r["version"] for r in lifecycle.list_installed(models)] == ["5", "6"], "1 no longer runs: pruned"


def test_record_running_ignores_files_outside_a_model_directory(tmp_path: Path) -> None:
    loose = make_bundle(tmp_path, "m", "1")
    lifecycle.record_running(loose)  # a --model FILE: nothing to record, nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == [loose.name]


# -- 9: messages that say what is wrong --------------------------------------------------------------------


def test_a_fifo_or_a_device_is_named_for_what_it_is(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.tflite"
    os.mkfifo(fifo)
    with pytest.raises(lifecycle.LifecycleError, match="named pipe"):
        lifecycle.check_bundle_file(fifo)
    zero = tmp_path / "zero.tflite"
    zero.symlink_to("/dev/zero")
    with pytest.raises(lifecycle.LifecycleError, match="character device"):
        lifecycle.check_bundle_file(zero)
    with pytest.raises(lifecycle.LifecycleError, match="no such bundle file"):
        lifecycle.check_bundle_file(tmp_path / "missing.tflite")
    with pytest.raises(lifecycle.LifecycleError, match="directory"):
        lifecycle.check_bundle_file(tmp_path)


def test_to_a_regular_file_says_it_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("x")
    with pytest.raises(lifecycle.LifecycleError, match="is a file, not a directory"):
        _install(tmp_path, target, "1")


def test_a_full_disk_names_the_file_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    _install(tmp_path, models, "1")
    real = os.fdopen

    def fdopen(fd: int, *args: object, **kwargs: object) -> object:
        handle = real(fd, *args, **kwargs)

        def write(_data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        handle.write = write  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(lifecycle.LifecycleError, match=r"no space left on device while writing .*versions/m-2-") as e:
        _install(tmp_path, models, "2")
    assert "Errno" not in str(e.value)
    monkeypatch.undo()
    assert current_text(models).startswith("OKm:1")


# -- 10: a hand-copied current.tflite ----------------------------------------------------------------------


def test_a_hand_copied_current_model_is_adopted_not_discarded(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / lifecycle.CURRENT).write_bytes(b"OKhand:7:")
    lifecycle.repair(models)
    rows = lifecycle.list_installed(models)
    assert len(rows) == 1 and rows[0]["current"] and rows[0]["file"].startswith("versions/")
    assert (models / lifecycle.CURRENT).is_symlink() and current_text(models) == "OKhand:7:"
    # a flash straight after a hand copy (no repair first) keeps it as the version to roll back to
    other = tmp_path / "other"
    other.mkdir()
    (other / lifecycle.CURRENT).write_bytes(b"OKhand:8:")
    _install(tmp_path, other, "9")
    assert current_text(other).startswith("OKm:9")
    lifecycle.rollback(other, verifier=fake_verifier)
    assert current_text(other) == "OKhand:8:"

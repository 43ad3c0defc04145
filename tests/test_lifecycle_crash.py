"""Crash consistency of flash and rollback: a fault at every write, fsync, rename and symlink step.

Each step of a transaction is made to fail in turn (an OSError, ENOSPC for a
full disk, or a simulated kill that stops the process there); afterwards the
directory must be coherent: repair() leaves current.tflite loadable and named
current by the history, rollback works and a second flash succeeds.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from instrument_ai.device import lifecycle
from tests.test_lifecycle import fake_verifier, make_bundle


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the faulting step runs, no cleanup handler catches it."""


class Faults:
    """Counts the filesystem steps and fails the k-th one."""

    NAMES = ("replace", "fsync", "symlink", "unlink", "write")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int, kind: str) -> None:
        self.count, self.fail_at, self.kind = 0, fail_at, kind
        for name in ("replace", "fsync", "symlink", "unlink"):
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))
        real_fdopen = os.fdopen

        def fdopen(fd: int, *args: object, **kwargs: object) -> object:
            handle = real_fdopen(fd, *args, **kwargs)
            real_write = handle.write

            def write(data: bytes) -> int:
                self._step()
                return real_write(data)

            handle.write = write  # type: ignore[method-assign]
            return handle

        monkeypatch.setattr(os, "fdopen", fdopen)

    def _step(self) -> None:
        self.count += 1
        if self.count == self.fail_at:
            if self.kind == "kill":
                raise Killed
            if self.kind == "enospc":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise OSError(errno.EIO, "Input/output error")

    def _wrap(self, real):  # noqa: ANN001, ANN202
        def wrapped(*args: object, **kwargs: object) -> object:
            self._step()
            return real(*args, **kwargs)

        return wrapped


def check_coherent(models: Path, tmp_path: Path) -> None:
    history, current = lifecycle.repair(models)
    assert current is not None
    assert (models / lifecycle.CURRENT).resolve() == (models / current).resolve()
    fake_verifier(models / lifecycle.CURRENT)  # loads and self-tests
    assert any(h.file == current for h in history)
    rows = lifecycle.list_installed(models)
    assert sum(r["current"] for r in rows) == 1
    assert not [p for p in models.rglob(".*.tmp")], "stale temp files removed"
    lifecycle.install(make_bundle(tmp_path, "m", "after"), models, verifier=fake_verifier)
    assert current_version(models) == "after"
    lifecycle.rollback(models, verifier=fake_verifier)
    assert current_version(models) != "after"


def current_version(models: Path) -> str:
    return fake_verifier(models / lifecycle.CURRENT)["version"]


def _prepared(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    models = tmp_path / "models"
    for version in ("1", "2"):
        lifecycle.install(make_bundle(tmp_path, "m", version), models, keep=2, verifier=fake_verifier)
    return models


def _steps(tmp_path: Path, action: str) -> int:
    """How many faultable steps the action takes when nothing fails."""
    with pytest.MonkeyPatch.context() as mp:
        models = _prepared(tmp_path / "count")
        faults = Faults(mp, 10**9, "kill")
        _act(action, models, tmp_path / "count")
        return faults.count


def _act(action: str, models: Path, tmp_path: Path) -> None:
    if action == "flash":
        lifecycle.install(make_bundle(tmp_path, "m", "3"), models, keep=2, verifier=fake_verifier)
    else:
        lifecycle.rollback(models, verifier=fake_verifier)


@pytest.mark.parametrize("action", ["flash", "rollback"])
@pytest.mark.parametrize("kind", ["kill", "enospc", "eio"])
def test_fault_at_every_step_leaves_a_coherent_directory(tmp_path: Path, action: str, kind: str) -> None:
    total = _steps(tmp_path, action)
    assert total >= 4, "the fault injection sees the writes, fsyncs and renames"
    for k in range(1, total + 1):
        case = tmp_path / f"{k}"
        models = _prepared(case)
        before = current_version(models)
        with pytest.MonkeyPatch.context() as mp:
            Faults(mp, k, kind)
            try:
                _act(action, models, case)
                done = True
            except (Killed, OSError, lifecycle.LifecycleError):
                done = False
        after_repair = (lifecycle.repair(models), current_version(models))[1]
        expected_new = "3" if action == "flash" else "1"
        assert after_repair in (before, expected_new), f"step {k}: {after_repair}"
        if kind != "kill" and not done:
            # a refused (errored) transaction either changed nothing or was committed before the fault
            assert after_repair in (before, expected_new)
        check_coherent(models, case)


def test_corrupt_history_is_rebuilt_and_refusal_changes_nothing(tmp_path: Path) -> None:
    models = _prepared(tmp_path)
    (models / lifecycle.HISTORY).write_text('[{"file": "versions/x')
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.install(tmp_path / "nothing.tflite", models, verifier=fake_verifier)
    assert current_version(models) == "2"
    assert (models / lifecycle.HISTORY).read_text().startswith('[{"file": "versions/x'), "a refusal writes nothing"
    rows = [r for r in (lifecycle.repair(models), lifecycle.list_installed(models))[1]]
    assert [r["version"] for r in rows] == ["1", "2"] and rows[1]["current"]
    check_coherent(models, tmp_path)


def test_rollback_skips_a_missing_current(tmp_path: Path) -> None:
    models = _prepared(tmp_path)
    for path in (models / lifecycle.VERSIONS).glob("m-2-*"):
        path.unlink()
    old, new = lifecycle.rollback(models, verifier=fake_verifier)
    assert (old.version, new.version) == ("2", "1")
    assert current_version(models) == "1"


def test_rollback_skips_a_version_that_does_not_load(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for version in ("1", "2", "3"):
        lifecycle.install(make_bundle(tmp_path, "m", version), models, verifier=fake_verifier)
    (next((models / lifecycle.VERSIONS).glob("m-2-*"))).write_bytes(b"broken")
    old, new = lifecycle.rollback(models, verifier=fake_verifier)
    assert (old.version, new.version) == ("3", "1")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_is_refused_unchanged(tmp_path: Path) -> None:
    models = _prepared(tmp_path)
    models.chmod(0o555)
    try:
        with pytest.raises(lifecycle.LifecycleError, match="not writable"):
            lifecycle.install(make_bundle(tmp_path, "m", "3"), models, verifier=fake_verifier)
        assert current_version(models) == "2"
    finally:
        models.chmod(0o755)


def test_read_only_directory_refused_through_os_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, permissions do not stop writes: EROFS from every write stands for a read-only mount."""
    models = _prepared(tmp_path)
    faults = Faults(monkeypatch, 1, "eio")
    faults.kind = "erofs"

    def always(*_a: object, **_k: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(faults, "_step", always)
    with pytest.raises(OSError):
        lifecycle.install(make_bundle(tmp_path, "m", "3"), models, verifier=fake_verifier)
    monkeypatch.undo()
    assert current_version(models) == "2"
    check_coherent(models, tmp_path)


_CHILD = """
import os, signal, sys
from pathlib import Path
from instrument_ai.device import lifecycle
from tests.test_lifecycle import fake_verifier, make_bundle
k = int(sys.argv[2]); count = [0]
real = os.replace
def replace(*a):
    count[0] += 1
    if count[0] == k:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a)
os.replace = replace
models = Path(sys.argv[1])
if sys.argv[3] == "flash":
    lifecycle.install(make_bundle(models.parent, "m", "3"), models, keep=2, verifier=fake_verifier)
else:
    lifecycle.rollback(models, verifier=fake_verifier)
"""


@pytest.mark.parametrize("action", ["flash", "rollback"])
def test_sigkill_at_every_rename(tmp_path: Path, action: str) -> None:
    """A real SIGKILL (sent by the process to itself at the k-th rename): no Python cleanup runs."""
    repo = Path(__file__).resolve().parents[1]
    for k in range(1, 4):
        case = tmp_path / f"{k}"
        models = _prepared(case)
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(models), str(k), action],
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
            capture_output=True,
            timeout=60,
        )
        assert done.returncode in (0, -signal.SIGKILL), done.stderr
        check_coherent(models, case)

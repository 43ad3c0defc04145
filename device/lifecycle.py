"""Installing model bundles on a device safely: verify, write atomically, keep history, roll back.

A device's model directory looks like::

    DIR/
      versions/<name>-<version>-<sha12>.tflite   installed bundles (at most --keep of them)
      current.tflite -> versions/...              symlink the daemon loads
      installed.json                              install history, newest last
      .lock                                       flock()ed by every command that changes the directory

Every step that changes the directory is atomic: a bundle is written to a temp
file in the same directory, fsynced and renamed into place; `current.tflite` is
replaced by renaming a freshly made temp symlink over it; `installed.json` is
rewritten through a temp file. A flash killed at any point (even SIGKILL)
therefore leaves either the old or the new current model, never a broken one.

Every read-modify-write of the directory holds an exclusive `fcntl.flock` on
`.lock` (flash, rollback, repair, a starting daemon recording what it runs),
so two commands on one directory take turns instead of deleting each other's
temp files. Only files under `versions/` are ever deleted: a history entry
naming anything else (`../x`, an absolute path) is ignored and reported.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from instrument_ai.device.errors import ConfigurationError, InstrumentAIError

CURRENT = "current.tflite"
VERSIONS = "versions"
HISTORY = "installed.json"
LOCK = ".lock"
DEFAULT_KEEP = 3
LOCK_SECONDS = 30.0
"""How long a command waits for another one working on the same directory before it gives up."""
_VERSION_FILE = re.compile(r"versions/(?!\.)[^/\\\x00]+\.tflite")
"""The only form an entry's file may take: a bundle directly inside versions/ (no '..', no absolute path)."""


class LifecycleError(InstrumentAIError, RuntimeError):
    """A model directory operation that was refused; the message is one line for the user."""


@dataclass(frozen=True)
class InstalledModel:
    file: str  # path relative to the model directory, e.g. versions/default-1-abc.tflite
    name: str
    version: str
    sha256: str
    installed_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Verifier = Callable[[Path], dict[str, Any]]


def verify_bundle(path: Path, trusted_key: str | None = None) -> dict[str, Any]:
    """Load a bundle with its self-test (and signature check if a key is given); return its metadata."""
    from instrument_ai.device import bundle

    try:
        loaded = bundle.load(path, self_test=True, trusted_key=trusted_key)
    except bundle.BundleError as exc:
        reason = str(exc).removeprefix(f"{path}: ")  # the bundle reader names the file too: say it once
        raise LifecycleError(f"{path}: refused: {reason}") from None
    return dict(loaded.metadata)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write `data` to `target` so that readers see the old file or the whole new one, never a part."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes 0600 files; a bundle must stay readable by the daemon's own user
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(target)) from exc  # say which file did not fit
        raise
    _fsync_dir(target.parent)


def atomic_symlink(target: Path, link: Path) -> None:
    """Point `link` at `target` (relative) by renaming a new temp symlink over it."""
    tmp = link.parent / f".{link.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    os.symlink(os.path.relpath(target, link.parent), tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(link.parent)


def _warn(message: str) -> None:
    """A warning on stderr: something in the directory was ignored, and the command went on."""
    with contextlib.suppress(OSError, ValueError):
        print(f"warning: {message}", file=sys.stderr, flush=True)


# -- the directory lock ---------------------------------------------------------------------------------------

_held = threading.local()


def _open_lock(directory: Path) -> int | None:
    """A descriptor of the directory's lock file; None when it can be neither created nor opened."""
    path = directory / LOCK
    with contextlib.suppress(OSError):
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    with contextlib.suppress(OSError):  # made by another user: flock needs no write access
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    return None


@contextlib.contextmanager
def directory_lock(directory: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the directory's exclusive lock (re-entrant within a thread); LifecycleError after `timeout` seconds.

    The kernel drops an flock when its holder dies, even by SIGKILL, so a killed
    flash never leaves the directory locked. A directory where the lock file can
    be neither made nor opened is not locked: this caller cannot change it either.
    """
    key = os.path.realpath(directory)
    held: set[str] = _held.__dict__.setdefault("dirs", set())
    if key in held:
        yield
        return
    fd = _open_lock(Path(directory))
    if fd is None:
        yield
        return
    try:
        wait = LOCK_SECONDS if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LifecycleError(
                        f"{directory}: another flash or rollback is working on this directory (waited {wait:g} s "
                        f"for {LOCK}); try again when it is done"
                    ) from None
                time.sleep(0.02)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        os.close(fd)


# -- reading and writing the state ----------------------------------------------------------------------------


@dataclass
class _State:
    """installed.json as read: the entries, the current and the running one, and the entries ignored."""

    history: list[InstalledModel]
    current: str | None
    running: str | None = None
    rejected: list[str] = field(default_factory=list)


def _is_version_file(file: object) -> bool:
    return isinstance(file, str) and _VERSION_FILE.fullmatch(file) is not None


def _stale_temps(directory: Path) -> list[Path]:
    """Temp files a killed flash or rollback left behind (ours all start with '.' and end in '.tmp').

    Called only under the directory lock: every live writer holds it, so what is found here is a dead one's.
    """
    found: list[Path] = []
    for folder in (directory, directory / VERSIONS):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    return found


def _parse_history(path: Path) -> _State:
    """The state recorded in installed.json; LifecycleError when it is damaged.

    Entries that name anything but a file directly inside versions/ are left out
    (in `rejected`): they were not written by us, and nothing they name is ever
    deleted or made current.
    """
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
            raise ValueError("not a list of entries")
        fields = ("file", "name", "version", "sha256", "installed_at")
        entries = [InstalledModel(**{k: e[k] for k in fields}) for e in raw]
        current = next((e["file"] for e in raw if e.get("current")), None)
        running = next((e["file"] for e in raw if e.get("running")), None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
        raise LifecycleError(f"{path}: unreadable install history ({reason})") from None
    valid = [e for e in entries if _is_version_file(e.file)]
    files = {e.file for e in valid}
    rejected = [str(e.file) for e in entries if not _is_version_file(e.file)]
    return _State(valid, current if current in files else None, running if running in files else None, rejected)


def _rebuild_history(directory: Path) -> tuple[list[InstalledModel], str | None]:
    """A history made from the files in versions/ (oldest first by mtime) when installed.json is damaged."""
    folder = directory / VERSIONS
    files = (
        sorted(
            (p for p in folder.glob("*.tflite") if _is_version_file(f"{VERSIONS}/{p.name}") and p.is_file()),
            key=lambda p: p.stat().st_mtime,
        )
        if folder.is_dir()
        else []
    )
    entries = []
    for path in files:
        parts = path.stem.rsplit("-", 2)
        name, version = (parts[0], parts[1]) if len(parts) == 3 else (path.stem, "?")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entries.append(InstalledModel(f"{VERSIONS}/{path.name}", name, version, digest, path.stat().st_mtime))
    linked = _link_target(directory)
    current = linked if any(e.file == linked for e in entries) else (entries[-1].file if entries else None)
    return entries, current


def _link_target(directory: Path) -> str | None:
    """What current.tflite names (relative to the directory), or None."""
    link = directory / CURRENT
    if not link.is_symlink():
        return None
    return os.path.normpath(os.readlink(link))


def _load(directory: Path) -> _State:
    path = directory / HISTORY
    if not path.exists():
        if not (directory / VERSIONS).is_dir():
            return _State([], None)
        return _State(*_rebuild_history(directory))
    state = _parse_history(path)
    if state.current is None:
        linked = _link_target(directory)
        state.current = linked if any(e.file == linked for e in state.history) else None
    return state


def load_state(directory: Path) -> tuple[list[InstalledModel], str | None]:
    """(history, current file) as recorded, without changing anything.

    installed.json is the single source of truth; a directory from before it
    recorded the current entry takes current.tflite's target instead.
    """
    state = _load(directory)
    return state.history, state.current


def _write_state(
    directory: Path, history: list[InstalledModel], current: str | None, running: str | None = None
) -> None:
    rows = []
    for h in history:
        row: dict[str, Any] = dict(h.to_dict(), current=h.file == current)
        if h.file == running:
            row["running"] = True
        rows.append(row)
    atomic_write_bytes(directory / HISTORY, json.dumps(rows, indent=1).encode())


def read_history(directory: Path) -> list[InstalledModel]:
    return load_state(directory)[0]


def write_history(directory: Path, history: list[InstalledModel]) -> None:
    with directory_lock(directory):
        _write_state(directory, history, history[-1].file if history else None, _load_running(directory))


def _load_running(directory: Path) -> str | None:
    with contextlib.suppress(LifecycleError):
        return _load(directory).running
    return None


def _delete_version(directory: Path, file: str) -> None:
    """Delete a pruned version: only a file directly inside a real (not linked) versions/ folder."""
    folder = directory / VERSIONS
    if not _is_version_file(file) or folder.is_symlink() or not folder.is_dir():
        _warn(f"{directory}: not deleting {file!r}: only files inside the directory's own {VERSIONS}/ are deleted")
        return
    with contextlib.suppress(OSError):
        (directory / file).unlink()


# -- repair, adoption -----------------------------------------------------------------------------------------


def _describe(path: Path) -> tuple[str, str]:
    """(name, version) of a bundle from its metadata, without loading the model; ("adopted", "0") if unreadable."""
    try:
        from instrument_ai.device import bundle

        metadata = bundle.read_metadata(path)
        return _safe_name(str(metadata.get("name", "adopted"))), _safe_name(str(metadata.get("version", "0")))
    except Exception:  # noqa: BLE001 - any unreadable file is still adopted: it was the model in use
        return "adopted", "0"


def _adopt_plain_current(directory: Path, state: _State) -> bool:
    """A current.tflite that is a plain file (a hand copy) joins the history as its current version.

    Copied into versions/ (atomically) and recorded; the caller then writes the
    history and replaces the plain file by the usual symlink. Interrupted, the
    next command finds the plain file again and finishes the same way.
    """
    link = directory / CURRENT
    if link.is_symlink() or not link.is_file():
        return False
    data = link.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    name, version = _describe(link)
    relative = f"{VERSIONS}/{name}-{version}-{digest[:12]}.tflite"
    target = directory / relative
    if not (target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == digest):
        atomic_write_bytes(target, data)
    if not any(h.file == relative for h in state.history):
        state.history.append(InstalledModel(relative, name, version, digest, link.stat().st_mtime))
        _warn(f"{link}: a plain file, not a link: adopted into the history as {relative}")
    state.current = relative
    return True


def _repair(directory: Path) -> _State:
    """repair() with the lock already held."""
    for stale in _stale_temps(directory):
        with contextlib.suppress(OSError):
            stale.unlink()
    try:
        state = _load(directory)
        damaged = False
    except LifecycleError:
        state = _State(*_rebuild_history(directory))
        damaged = True
    for file in state.rejected:
        _warn(
            f"{directory / HISTORY}: ignored entry {file!r}: only files inside {VERSIONS}/ belong to the history "
            "(nothing else is ever deleted or made current)"
        )
    adopted = _adopt_plain_current(directory, state)
    present = [h for h in state.history if (directory / h.file).is_file()]
    if state.current is None or not (directory / state.current).is_file():
        state.current = present[-1].file if present else None
    rewrite = damaged or adopted or bool(state.rejected)
    if rewrite or not (directory / HISTORY).exists() and state.history:
        _write_state(directory, state.history, state.current, state.running)
        state.rejected = []
    if state.current is not None and _link_target(directory) != os.path.normpath(state.current):
        atomic_symlink(directory / state.current, directory / CURRENT)
    return state


def repair(directory: Path) -> tuple[list[InstalledModel], str | None]:
    """Finish or undo an interrupted flash/rollback; return the (history, current) that now holds.

    The history wins: current.tflite is re-pointed at its current entry, stale
    temp files go, and a damaged installed.json is rebuilt from versions/. A
    current entry whose file is gone falls back to the newest present version.
    A plain-file current.tflite (a hand copy) is adopted into the history.
    """
    if not directory.is_dir():
        return [], None
    with directory_lock(directory), _disk_full_named(directory):
        state = _repair(directory)
    return state.history, state.current


def repair_if_possible(directory: Path) -> None:
    """repair() for commands that only read: a read-only or damaged directory is left as it is."""
    with contextlib.suppress(OSError, LifecycleError):
        repair(directory)


def current_file(directory: Path) -> Path | None:
    """The bundle `current.tflite` points at, or None when nothing is installed."""
    link = directory / CURRENT
    if not link.is_symlink() and not link.exists():
        return None
    return link.resolve()


def record_running(model_file: Path, *, background: bool = False) -> None:
    """Record in its model directory that a daemon loaded `model_file`, so that no flash prunes it.

    Best effort and silent: a file outside a model directory (a plain --model
    FILE), a read-only directory or a busy lock leave everything as it was.
    `background`: do it in a thread, for a caller (the audio loop) that must
    not wait for the lock or an fsync.
    """
    if background:
        threading.Thread(target=record_running, args=(model_file,), name="record-running", daemon=True).start()
        return
    resolved = Path(os.path.realpath(model_file))
    directory = resolved.parent.parent
    relative = f"{VERSIONS}/{resolved.name}"
    if resolved.parent.name != VERSIONS or not _is_version_file(relative) or not (directory / HISTORY).is_file():
        return
    with contextlib.suppress(OSError, LifecycleError), directory_lock(directory, timeout=5.0):
        state = _load(directory)
        if state.running != relative and any(h.file == relative for h in state.history):
            _write_state(directory, state.history, state.current, relative)


# -- the commands ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _disk_full_named(directory: Path) -> Iterator[None]:
    """A full disk as one LifecycleError naming the file being written, not a bare `[Errno 28]`."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        raise LifecycleError(f"no space left on device while writing {exc.filename or directory}") from None


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:40] or "model"


_KINDS = (
    (stat.S_ISDIR, "is a directory, not a bundle file; give the .tflite file"),
    (stat.S_ISFIFO, "a named pipe (FIFO), not a bundle file"),
    (stat.S_ISCHR, "a character device, not a bundle file"),
    (stat.S_ISBLK, "a block device, not a bundle file"),
    (stat.S_ISSOCK, "a socket, not a bundle file"),
)


def check_bundle_file(path: Path) -> None:
    """LifecycleError saying what `path` is when it is not a regular file (a FIFO would block the reader)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        dangling = " (a link to a missing file)" if os.path.islink(path) else ""
        raise LifecycleError(f"{path}: no such bundle file{dangling}") from None
    except OSError as exc:
        raise LifecycleError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISREG(mode):
        return
    what = next((text for test, text in _KINDS if test(mode)), "not a regular file, not a bundle file")
    if stat.S_ISDIR(mode):
        raise LifecycleError(f"{path}: {what}")
    if os.path.islink(path):
        raise LifecycleError(f"{path}: a link to {os.path.realpath(path)}, {what}")
    raise LifecycleError(f"{path}: is {what}")


def trusted_key_hex(text_or_path: str) -> str:
    """A trusted ed25519 key (64 hex characters, or a file holding them) as its hex value; ConfigurationError."""
    from instrument_ai.device.ed25519 import load_public_key

    try:
        return load_public_key(text_or_path).hex()
    except OSError as exc:
        raise ConfigurationError(f"trusted key {text_or_path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _check_writable(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        kind = "a file" if directory.is_file() else "not a regular directory"
        raise LifecycleError(f"{directory}: is {kind}, not a directory; give the model directory")
    if directory.exists() and not os.access(directory, os.W_OK | os.X_OK):
        raise LifecycleError(f"{directory}: model directory is not writable; run as its owner or fix its permissions")


def install(
    bundle_path: Path,
    directory: Path,
    *,
    keep: int = DEFAULT_KEEP,
    verifier: Verifier | None = None,
    dry_run: bool = False,
) -> InstalledModel:
    """Verify `bundle_path`, copy it into `directory` and make it current, as one transaction.

    Order, under the directory lock: repair any interrupted transaction; write
    the version file (temp, fsync, rename); write the new history naming it
    current (temp, fsync, rename: the commit point); re-point current.tflite;
    delete pruned files. A crash before the commit leaves the old state, after
    it the next command's repair() finishes the job. Nothing in `directory`
    changes if verification fails. Pruning keeps the `keep` newest versions and
    always the one a daemon runs (see `record_running`).
    """
    if keep < 1:
        raise LifecycleError("--keep must be at least 1")
    bundle_path = Path(bundle_path)
    check_bundle_file(bundle_path)
    metadata = (verifier or verify_bundle)(bundle_path)
    data = bundle_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    name = _safe_name(str(metadata.get("name", "model")))
    version = _safe_name(str(metadata.get("version", "0")))
    relative = f"{VERSIONS}/{name}-{version}-{digest[:12]}.tflite"
    entry = InstalledModel(relative, name, version, digest, time.time())
    if dry_run:
        return entry
    _check_writable(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with directory_lock(directory), _disk_full_named(directory):
        state = _repair(directory)
        target = directory / relative
        if not (target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest):
            atomic_write_bytes(target, data)
        history = [h for h in state.history if h.file != relative and (directory / h.file).is_file()] + [entry]
        pruned = [h for h in history[:-keep] if h.file != state.running]
        kept = [h for h in history if h not in pruned]
        _write_state(directory, kept, relative, state.running)  # the commit point
        atomic_symlink(target, directory / CURRENT)
        for dropped in pruned:
            _delete_version(directory, dropped.file)
    return entry


def rollback(directory: Path, *, verifier: Verifier | None = None) -> tuple[InstalledModel, InstalledModel]:
    """Make current the newest version installed before the current one that is present and loads.

    The history keeps its install order; only its current mark (and the
    symlink) moves, so repeated rollbacks walk further back and the next
    flash appends as usual. Returns (old, new).
    """
    _check_writable(directory)
    with directory_lock(directory), _disk_full_named(directory):
        # what the history recorded, before repair() moves a vanished current to the newest present one
        try:
            recorded = _load(directory).current
        except LifecycleError:
            recorded = None
        state = _repair(directory)
        history, current = state.history, state.current
        if current is None or not history:
            raise LifecycleError(
                f"{directory}: no model installed; install one with `instrument-ai flash BUNDLE --to DIR`"
            )
        files = [h.file for h in history]
        start = files.index(recorded) if recorded in files else files.index(current)
        old = history[start]
        verify = verifier or verify_bundle
        for candidate in reversed(history[:start]):
            if candidate.file == current and recorded == current:
                continue
            if not (directory / candidate.file).is_file():
                continue
            try:
                verify(directory / candidate.file)
            except LifecycleError:
                continue
            _write_state(directory, history, candidate.file, state.running)
            atomic_symlink(directory / candidate.file, directory / CURRENT)
            return old, candidate
    raise LifecycleError(f"{directory}: no earlier version to roll back to (none present that loads)")


def list_installed(directory: Path) -> list[dict[str, Any]]:
    """Installed versions, oldest first, with flags for the current one and the one a daemon runs, and presence."""
    state = _load(directory)
    current = (directory / state.current).resolve() if state.current else None
    rows = []
    for entry in state.history:
        path = directory / entry.file
        row = entry.to_dict()
        row["present"] = path.exists()
        row["current"] = bool(current is not None and path.exists() and path.resolve() == current)
        row["running"] = entry.file == state.running
        row["size"] = path.stat().st_size if path.exists() else None
        rows.append(row)
    return rows

"""Installing model bundles on a device safely: verify, write atomically, keep history, roll back.

A device's model directory looks like::

    DIR/
      versions/<name>-<version>-<sha12>.tflite   installed bundles (at most --keep of them)
      current.tflite -> versions/...              symlink the daemon loads
      installed.json                              install history, newest last

Every step that changes the directory is atomic: a bundle is written to a temp
file in the same directory, fsynced and renamed into place; `current.tflite` is
replaced by renaming a freshly made temp symlink over it; `installed.json` is
rewritten through a temp file. A flash killed at any point (even SIGKILL)
therefore leaves either the old or the new current model, never a broken one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from instrument_ai.device.errors import InstrumentAIError

CURRENT = "current.tflite"
VERSIONS = "versions"
HISTORY = "installed.json"
DEFAULT_KEEP = 3


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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
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


def _stale_temps(directory: Path) -> list[Path]:
    """Temp files a killed flash or rollback left behind (ours all start with '.' and end in '.tmp')."""
    found: list[Path] = []
    for folder in (directory, directory / VERSIONS):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    return found


def _parse_history(path: Path) -> tuple[list[InstalledModel], str | None]:
    """(entries, current file) from installed.json; LifecycleError when it is damaged."""
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
            raise ValueError("not a list of entries")
        current = next((e["file"] for e in raw if e.get("current")), None)
        fields = ("file", "name", "version", "sha256", "installed_at")
        entries = [InstalledModel(**{k: e[k] for k in fields}) for e in raw]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
        raise LifecycleError(f"{path}: unreadable install history ({reason})") from None
    return entries, current


def _rebuild_history(directory: Path) -> tuple[list[InstalledModel], str | None]:
    """A history made from the files in versions/ (oldest first by mtime) when installed.json is damaged."""
    folder = directory / VERSIONS
    files = (
        sorted((p for p in folder.glob("*.tflite") if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
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


def load_state(directory: Path) -> tuple[list[InstalledModel], str | None]:
    """(history, current file) as recorded, without changing anything.

    installed.json is the single source of truth; a directory from before it
    recorded the current entry takes current.tflite's target instead.
    """
    path = directory / HISTORY
    if not path.exists():
        return _rebuild_history(directory) if (directory / VERSIONS).is_dir() else ([], None)
    entries, current = _parse_history(path)
    if current is None:
        linked = _link_target(directory)
        current = linked if any(e.file == linked for e in entries) else None
    return entries, current


def _write_state(directory: Path, history: list[InstalledModel], current: str | None) -> None:
    rows = [dict(h.to_dict(), current=h.file == current) for h in history]
    atomic_write_bytes(directory / HISTORY, json.dumps(rows, indent=1).encode())


def read_history(directory: Path) -> list[InstalledModel]:
    return load_state(directory)[0]


def write_history(directory: Path, history: list[InstalledModel]) -> None:
    _write_state(directory, history, history[-1].file if history else None)


def repair(directory: Path) -> tuple[list[InstalledModel], str | None]:
    """Finish or undo an interrupted flash/rollback; return the (history, current) that now holds.

    The history wins: current.tflite is re-pointed at its current entry, stale
    temp files go, and a damaged installed.json is rebuilt from versions/. A
    current entry whose file is gone falls back to the newest present version.
    """
    if not directory.is_dir():
        return [], None
    for stale in _stale_temps(directory):
        with contextlib.suppress(OSError):
            stale.unlink()
    try:
        history, current = load_state(directory)
        damaged = False
    except LifecycleError:
        history, current = _rebuild_history(directory)
        damaged = True
    present = [h for h in history if (directory / h.file).is_file()]
    if current is None or not (directory / current).is_file():
        current = present[-1].file if present else None
    if damaged or not (directory / HISTORY).exists() and history:
        _write_state(directory, history, current)
    if current is not None and _link_target(directory) != os.path.normpath(current):
        atomic_symlink(directory / current, directory / CURRENT)
    return history, current


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


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:40] or "model"


def _check_writable(directory: Path) -> None:
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

    Order: repair any interrupted transaction; write the version file (temp,
    fsync, rename); write the new history naming it current (temp, fsync,
    rename: the commit point); re-point current.tflite; delete pruned files. A
    crash before the commit leaves the old state, after it the next command's
    repair() finishes the job. Nothing in `directory` changes if verification fails.
    """
    if keep < 1:
        raise LifecycleError("--keep must be at least 1")
    bundle_path = Path(bundle_path)
    if bundle_path.is_dir():
        raise LifecycleError(f"{bundle_path}: is a directory, not a bundle file; give the .tflite file")
    if not bundle_path.is_file():
        raise LifecycleError(f"{bundle_path}: no such bundle file")
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
    history, _current = repair(directory)
    target = directory / relative
    if not (target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest):
        atomic_write_bytes(target, data)
    history = [h for h in history if h.file != relative and (directory / h.file).is_file()] + [entry]
    kept = history[-keep:]
    _write_state(directory, kept, relative)  # the commit point
    atomic_symlink(target, directory / CURRENT)
    for dropped in history[:-keep]:
        with contextlib.suppress(OSError):
            (directory / dropped.file).unlink()
    return entry


def rollback(directory: Path, *, verifier: Verifier | None = None) -> tuple[InstalledModel, InstalledModel]:
    """Make current the newest version installed before the current one that is present and loads.

    The history keeps its install order; only its current mark (and the
    symlink) moves, so repeated rollbacks walk further back and the next
    flash appends as usual. Returns (old, new).
    """
    _check_writable(directory)
    # what the history recorded, before repair() moves a vanished current to the newest present one
    try:
        recorded = load_state(directory)[1]
    except LifecycleError:
        recorded = None
    history, current = repair(directory)
    if current is None or not history:
        raise LifecycleError(f"{directory}: no model installed; install one with `instrument-ai flash BUNDLE --to DIR`")
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
        _write_state(directory, history, candidate.file)
        atomic_symlink(directory / candidate.file, directory / CURRENT)
        return old, candidate
    raise LifecycleError(f"{directory}: no earlier version to roll back to (none present that loads)")


def list_installed(directory: Path) -> list[dict[str, Any]]:
    """Installed versions, oldest first, with a flag for the current one and whether the file is present."""
    history, current_entry = load_state(directory)
    current = (directory / current_entry).resolve() if current_entry else None
    rows = []
    for entry in history:
        path = directory / entry.file
        row = entry.to_dict()
        row["present"] = path.exists()
        row["current"] = bool(current is not None and path.exists() and path.resolve() == current)
        row["size"] = path.stat().st_size if path.exists() else None
        rows.append(row)
    return rows

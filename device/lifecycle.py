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

CURRENT = "current.tflite"
VERSIONS = "versions"
HISTORY = "installed.json"
DEFAULT_KEEP = 3


class LifecycleError(RuntimeError):
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
        raise LifecycleError(f"{path}: refused: {exc}") from None
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


def read_history(directory: Path) -> list[InstalledModel]:
    path = directory / HISTORY
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text())
        return [InstalledModel(**entry) for entry in entries]
    except (json.JSONDecodeError, TypeError) as exc:
        raise LifecycleError(f"{path}: unreadable install history ({exc})") from None


def write_history(directory: Path, history: list[InstalledModel]) -> None:
    atomic_write_bytes(directory / HISTORY, json.dumps([h.to_dict() for h in history], indent=1).encode())


def current_file(directory: Path) -> Path | None:
    """The bundle `current.tflite` points at, or None when nothing is installed."""
    link = directory / CURRENT
    if not link.is_symlink() and not link.exists():
        return None
    return link.resolve()


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:40] or "model"


def install(
    bundle_path: Path,
    directory: Path,
    *,
    keep: int = DEFAULT_KEEP,
    verifier: Verifier | None = None,
    dry_run: bool = False,
) -> InstalledModel:
    """Verify `bundle_path`, copy it into `directory` atomically and make it current.

    The previous versions stay (at most `keep` in total, the current one always
    among them). Nothing in `directory` changes if verification fails.
    """
    if keep < 1:
        raise LifecycleError("--keep must be at least 1")
    bundle_path = Path(bundle_path)
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
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / relative
    if not (target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest):
        atomic_write_bytes(target, data)
    atomic_symlink(target, directory / CURRENT)
    history = [h for h in read_history(directory) if h.file != relative] + [entry]
    history = _prune(directory, history, keep)
    write_history(directory, history)
    return entry


def _prune(directory: Path, history: list[InstalledModel], keep: int) -> list[InstalledModel]:
    """Drop the oldest versions beyond `keep`, never the current one."""
    current = current_file(directory)
    kept: list[InstalledModel] = []
    for entry in reversed(history):
        path = directory / entry.file
        if not path.exists():
            continue
        if len(kept) < keep or (current is not None and path.resolve() == current):
            kept.append(entry)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return list(reversed(kept))


def rollback(directory: Path, *, verifier: Verifier | None = None) -> tuple[InstalledModel, InstalledModel]:
    """Point `current.tflite` at the version installed before the current one; return (old, new).

    The history keeps its install order; only the symlink moves, so repeated
    rollbacks walk further back and the next flash appends as usual.
    """
    history = [h for h in read_history(directory) if (directory / h.file).exists()]
    current = current_file(directory)
    if current is None or not history:
        raise LifecycleError(f"{directory}: no model installed")
    positions = [i for i, h in enumerate(history) if (directory / h.file).resolve() == current]
    if not positions or positions[0] == 0:
        raise LifecycleError(f"{directory}: no earlier version to roll back to")
    old, new = history[positions[0]], history[positions[0] - 1]
    (verifier or verify_bundle)(directory / new.file)
    atomic_symlink(directory / new.file, directory / CURRENT)
    return old, new


def list_installed(directory: Path) -> list[dict[str, Any]]:
    """Installed versions, oldest first, with a flag for the current one and whether the file is present."""
    current = current_file(directory)
    rows = []
    for entry in read_history(directory):
        path = directory / entry.file
        row = entry.to_dict()
        row["present"] = path.exists()
        row["current"] = bool(current is not None and path.exists() and path.resolve() == current)
        row["size"] = path.stat().st_size if path.exists() else None
        rows.append(row)
    return rows

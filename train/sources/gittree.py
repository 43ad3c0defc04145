"""Read a repository's files at one commit without a work tree (a clone or a bare mirror), or a plain folder.

The corpus builder reads thousands of samples per source: one long-lived ``git cat-file --batch`` process
serves them all, instead of a process per file. Mirrors may lack blobs over a few MiB: reading one raises
`MissingBlob`, which the builder counts, and the rest goes on.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from instrument_ai.device.errors import InstrumentAIError


class TreeError(InstrumentAIError, OSError):
    """A repository or folder that cannot be read; one line."""


class MissingBlob(TreeError):
    """A file listed at the commit whose content is not in this (partial) mirror."""


def find_git_dir(folder: str | Path) -> Path | None:
    """The git directory in `folder` (itself, `.git`, or one level down, as mirrors keep it), or None."""
    folder = Path(folder)
    for candidate in (folder, folder / ".git", *sorted(p for p in folder.glob("*") if p.is_dir())):
        if (candidate / "objects").is_dir() and (candidate / "HEAD").is_file():
            return candidate
    return None


class GitTree:
    """The files of `commit` in the git directory `git_dir`: `paths()`, `read(path)`."""

    def __init__(self, git_dir: str | Path, commit: str) -> None:
        self.git_dir = Path(git_dir)
        self.commit = commit
        self._batch: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _git(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", "-C", str(self.git_dir), *args], capture_output=True, check=False)

    def has_commit(self) -> bool:
        return self._git("cat-file", "-e", f"{self.commit}^{{commit}}").returncode == 0

    def paths(self) -> list[str]:
        done = self._git("ls-tree", "-r", "-z", "--name-only", "--full-tree", self.commit)
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            raise TreeError(f"{self.git_dir}: cannot list commit {self.commit[:12]}: {message[-1] if message else '?'}")
        return [p for p in done.stdout.decode("utf-8", errors="surrogateescape").split("\0") if p]

    def read(self, path: str) -> bytes:
        with self._lock:
            if self._batch is None:
                self._batch = subprocess.Popen(
                    ["git", "-C", str(self.git_dir), "cat-file", "--batch"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            assert self._batch.stdin is not None and self._batch.stdout is not None
            self._batch.stdin.write(f"{self.commit}:{path}\n".encode("utf-8", errors="surrogateescape"))
            self._batch.stdin.flush()
            header = self._batch.stdout.readline().decode(errors="replace").split()
            if len(header) < 2 or header[-1] == "missing":
                raise MissingBlob(f"{path}: not in this mirror (missing blob)")
            size = int(header[2])
            data = self._batch.stdout.read(size)
            self._batch.stdout.read(1)  # the newline after the content
            return data

    def close(self) -> None:
        if self._batch is not None:
            self._batch.kill()
            self._batch.wait()
            self._batch = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        self.close()


class FolderTree:
    """The same interface over a plain folder (a user's own checkout or download)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def has_commit(self) -> bool:
        return self.root.is_dir()

    def paths(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def read(self, path: str) -> bytes:
        try:
            return (self.root / path).read_bytes()
        except FileNotFoundError:
            raise MissingBlob(f"{path}: no such file in {self.root}") from None

    def close(self) -> None:
        pass

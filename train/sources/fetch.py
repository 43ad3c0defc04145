"""Bring catalogue sources onto this machine at their pinned commits, and open them for the builder.

On a user's machine each source is fetched (only its pinned commit, depth 1) into a bare repository in the
cache, under a temporary name that is renamed into place once the commit is verified, so an interrupted fetch
leaves nothing half-made and the next run starts that source again. ``--from DIR`` uses clones or bare mirrors
already there (``DIR/OWNER+NAME`` or ``DIR/OWNER/NAME``), read with git, no work tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from instrument_ai.train.sources.catalogue import Source
from instrument_ai.train.sources.gittree import GitTree, MissingBlob, TreeError, find_git_dir


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "instrument-ai" / "sources"


class FetchError(TreeError):
    """A source that cannot be had at its commit; one line."""


def local_copy(source: Source, folder: str | Path) -> Path | None:
    """The git dir of `source` under `folder` (`OWNER+NAME` or `OWNER/NAME`), or None."""
    owner, name = source.slug.split("+", 1)
    for candidate in (Path(folder) / source.slug, Path(folder) / owner / name):
        if candidate.is_dir() and (found := find_git_dir(candidate)) is not None:
            return found
    return None


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, env=env, check=False)


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("fatal: ") if lines else f"git exited {done.returncode}"


def clone_into_cache(source: Source, cache: str | Path) -> Path:
    """A bare repository holding `source.commit`, fetched into `cache` if not there yet (FetchError if not)."""
    cache = Path(cache)
    target = cache / source.slug
    if target.is_dir() and GitTree(target, source.commit).has_commit():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{source.slug}.", dir=cache))
    try:
        if (done := _git("init", "-q", "--bare", str(work))).returncode != 0:
            raise FetchError(f"{source.name}: git init failed: {_last_line(done)}")
        done = _git("fetch", "-q", "--depth", "1", source.repo, source.commit, cwd=work)
        if done.returncode != 0:  # servers that refuse fetching a commit by hash: take everything
            done = _git("fetch", "-q", source.repo, "+refs/heads/*:refs/heads/*", cwd=work)
            if done.returncode != 0:
                raise FetchError(f"{source.name}: cannot fetch {source.repo}: {_last_line(done)}")
        if not GitTree(work, source.commit).has_commit():
            raise FetchError(f"{source.name}: {source.repo} has no commit {source.commit[:12]}")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
        return target
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def open_source(source: Source, *, from_dir: str | Path | None = None, cache: str | Path | None = None) -> GitTree:
    """A tree of `source` at its commit: from `from_dir` if given, else the cache (fetched when absent)."""
    if from_dir is not None:
        git_dir = local_copy(source, from_dir)
        if git_dir is None:
            raise FetchError(f"{source.name}: no clone or mirror {source.slug} under {from_dir}")
    else:
        git_dir = clone_into_cache(source, cache or default_cache())
    tree = GitTree(git_dir, source.commit)
    if not tree.has_commit():
        raise FetchError(f"{source.name}: {git_dir} has no commit {source.commit[:12]}")
    return tree


@dataclass
class FetchResult:
    source: str
    status: str
    """ok, missing, or failed."""
    detail: str = ""
    missing_blobs: int = 0

    def line(self) -> str:
        if self.status == "ok":
            return f"{self.source}: ok"
        if self.status == "missing":
            return f"{self.source}: missing blobs {self.missing_blobs} (first: {self.detail})"
        return f"{self.source}: failed: {self.detail}"


def missing_blobs(source: Source, tree: GitTree) -> tuple[int, str]:
    """How many of the files the source selects are absent from this copy, and the first of them."""
    listed = subprocess.run(
        ["git", "-C", str(tree.git_dir), "ls-tree", "-r", "-z", "--full-tree", source.commit],
        capture_output=True,
        check=False,
    ).stdout.decode("utf-8", errors="surrogateescape")
    objects = {}
    for entry in listed.split("\0"):
        if "\t" in entry:
            meta, path = entry.split("\t", 1)
            objects[path] = meta.split()[2]
    wanted = [objects[p] for p in source.select(list(objects))]
    if not wanted:
        return 0, ""
    check = subprocess.run(
        ["git", "-C", str(tree.git_dir), "cat-file", "--batch-check"],
        input="\n".join(wanted) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    absent = [line.split()[0] for line in check.stdout.splitlines() if line.endswith(" missing")]
    first = next((p for p, o in objects.items() if absent and o == absent[0]), "")
    return len(absent), first


def fetch_one(source: Source, *, from_dir: str | Path | None, cache: str | Path | None) -> FetchResult:
    try:
        tree = open_source(source, from_dir=from_dir, cache=cache)
        count, first = missing_blobs(source, tree)
    except (TreeError, OSError) as exc:
        return FetchResult(source.name, "failed", " ".join(str(exc).split()).removeprefix(f"{source.name}: "))
    if count:
        return FetchResult(source.name, "missing", first, count)
    return FetchResult(source.name, "ok")


__all__ = ["FetchError", "FetchResult", "MissingBlob", "default_cache", "fetch_one", "open_source"]

"""Unpack the held-out real-recording sources of the enrolment measurement (issue 22) into a folder.

Each source is a bare mirror (`/work/.mirror/OWNER+NAME/repo`, as `fetch` brings them) pinned to the commit
named in /work/shared/real-sources.md; its audio is read with ``git show COMMIT:PATH`` (no work tree) and
written as ``OUT/SOURCE/FAMILY/NAME.wav``. Which files count as which family follows real-sources.md:
bowed double bass and cello -> string, pizzicato double bass -> bass (GM program 32 "Acoustic Bass", as the GM
map decides), the baritone sax's plain notes -> reed, the basses' hits and noises -> other. Files are drawn at
random (fixed seed) up to `--per-family` per source and family, to keep the measurement affordable.

Example (from the repo root; nothing is written inside the repo):
  nice -n 10 .venv/bin/python tests/research/enrol_sources.py --mirrors /work/.mirror --out /tmp/enrol-data
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    name: str
    mirror: str  # OWNER+NAME
    commit: str  # prefix as in real-sources.md
    rules: tuple[tuple[str, str], ...]  # (regex on the path, family); the first match wins


SOURCES: tuple[Source, ...] = (
    Source(
        "meatbass",
        "sfzinstruments+karoryfer.meatbass",
        "ac9e859564bd",
        (
            (r"^Samples/pizz/perc\d*_", "other"),
            (r"^Samples/arco/[a-g]b?\d_", "string"),
            (r"^Samples/pizz/[a-g]b?\d_", "bass"),
        ),
    ),
    Source(
        "dsmolken",
        "sfzinstruments+dsmolken.double-bass",
        "c2985eb64710",
        (
            (r"/noises/", "other"),
            (r"^arco/arco_[a-g]b?\d_", "string"),
            (r"^pizz/pizz_[a-g]b?\d_", "bass"),
        ),
    ),
    Source(
        "bearsax",
        "sfzinstruments+karoryfer.bear-sax",
        "7abb3c652525",
        ((r"^Samples/[a-g]b?\d_(vl\d|open|close)_rr\d+\.wav$", "reed"),),
    ),
    Source(
        "cyborgs",
        "sfzinstruments+karoryfer.string-cyborgs",
        "f2238b3e36ae",
        ((r"^Samples/blackheart/[A-G]b?\d\.wav$", "string"),),
    ),
    Source(
        "playitright",
        "daniel-andersen+PlayItRight",
        "c8bbd4058073",
        ((r"^sounds/cello/.*\.wav$", "string"),),
    ),
)


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def unpack(source: Source, mirrors: Path, out: Path, per_family: int, seed: int) -> dict[str, int]:
    repo = mirrors / source.mirror / "repo"
    commit = _git(repo, "rev-parse", f"{source.commit}^{{commit}}").decode().strip()
    paths = _git(repo, "ls-tree", "-r", "--name-only", commit).decode().splitlines()
    by_family: dict[str, list[str]] = {}
    for path in paths:
        if not path.lower().endswith(".wav"):
            continue
        for pattern, family in source.rules:
            if re.search(pattern, path):
                by_family.setdefault(family, []).append(path)
                break
    counts = {}
    for family, found in sorted(by_family.items()):
        chosen = sorted(random.Random(f"{seed}:{source.name}:{family}").sample(found, min(per_family, len(found))))
        folder = out / source.name / family
        folder.mkdir(parents=True, exist_ok=True)
        for path in chosen:
            target = folder / path.replace("/", "__")
            if not target.exists():
                target.write_bytes(_git(repo, "show", f"{commit}:{path}"))
        counts[family] = len(chosen)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/enrol-data"))
    parser.add_argument("--per-family", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for source in SOURCES:
        print(source.name, unpack(source, args.mirrors, args.out, args.per_family, args.seed), flush=True)


if __name__ == "__main__":
    main()

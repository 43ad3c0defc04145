"""Check train/sources/sources.toml against local bare mirrors: selected files, rule and pitch-pattern coverage.

Why: a catalogue regex that silently misses names drops notes from the corpus; this counts them per source.
Usage: python tests/research/check_catalogue.py MIRROR_DIR [train/sources/sources.toml] [-v]
MIRROR_DIR holds OWNER+NAME/repo bare git directories (the layout of the shared mirror); sources without one
are listed as not checked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib

NOTE = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


def glob_re(glob: str) -> re.Pattern[str]:
    """Translate a catalogue glob (`**/` = zero or more folders, `*` within one name) to a regex."""
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        elif glob[i] == "[" and (end := glob.find("]", i + 1)) > i:
            out, i = out + "[" + glob[i + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out + r"\Z")


def midi_of(m: re.Match[str], offset: int) -> int | None:
    """The MIDI number a pitch match names (C4 = 60), or None."""
    g = m.groupdict()
    if g.get("midi"):
        return int(g["midi"])
    if g.get("hz"):
        import math

        return round(69 + 12 * math.log2(float(g["hz"]) / 440.0))
    if g.get("note") and g.get("octave") is not None:
        n = g["note"]
        semi = NOTE[n[0].lower()] + (1 if "#" in n[1:] else -1 if "b" in n[1:] else 0)
        return 12 * (int(g["octave"]) + offset + 1) + semi
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: check_catalogue.py MIRROR_DIR [sources.toml] [-v]", file=sys.stderr)
        return 2
    mirror = Path(argv[1])
    cat = Path(argv[2]) if len(argv) > 2 and not argv[2].startswith("-") else Path("train/sources/sources.toml")
    verbose = "-v" in argv
    data = tomllib.loads(cat.read_text())
    bad = 0
    skipped = []
    for src in data["source"]:
        owner, name = src["repo"].rstrip("/").split("/")[-2:]
        git = mirror / f"{owner}+{name}" / "repo"
        if not git.is_dir():
            skipped.append(src["name"])
            continue
        files = subprocess.run(["git", "-C", str(git), "ls-tree", "-r", "--name-only", src["commit"]],
                               capture_output=True, text=True, check=True).stdout.splitlines()
        inc = [glob_re(g) for g in src["include"]]
        exc = [glob_re(g) for g in src.get("exclude", [])]
        sel = [f for f in files if any(r.match(f) for r in inc) and not any(r.match(f) for r in exc)]
        rules = [(glob_re(r["glob"]), r) for r in src.get("rule", [])]
        fams: dict[str, int] = {}
        fails: list[str] = []
        norule = 0
        lo, hi = 999, -1
        for f in sel:
            rule = next((r for rx, r in rules if rx.match(f)), None)
            if rule is None:
                norule += 1
                continue
            fams[rule["family"]] = fams.get(rule["family"], 0) + 1
            pitch = rule.get("pitch", src.get("pitch", {}))
            if pitch.get("from") == "name":
                m = re.search(pitch["pattern"], f)
                midi = midi_of(m, int(pitch.get("octave_offset", 0))) if m else None
                if midi is None or not 0 <= midi <= 127:
                    fails.append(f)
                else:
                    lo, hi = min(lo, midi), max(hi, midi)
        rng = f" midi {lo}-{hi}" if hi >= 0 else ""
        print(f"{src['name']}: {src['kind']} selected={len(sel)} no_rule={norule} pitch_fail={len(fails)}{rng} {fams}")
        for f in fails[: (50 if verbose else 3)]:
            print(f"    pitch fail: {f}")
        # a SoundFont program without a GM label is skipped on purpose (gm_programs.py leaves it out)
        bad += len(fails) + (norule if src["kind"] != "soundfont" else 0) + (len(sel) == 0)
    if skipped:
        print(f"no mirror in {mirror}, not checked: {', '.join(skipped)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

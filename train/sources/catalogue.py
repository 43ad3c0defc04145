"""The catalogue of public sources (`train/sources/sources.toml`): where each comes from and how its files get labels.

One data file names every source's repository, pinned commit, licence and kind, and the rules that turn a
repository path into a label (family, source, pitch, velocity, instrument). This module reads and checks it;
`fetch` brings the repositories, `catalogue_units` imports them. Schema 1:

* a source: ``name repo commit licence kind [group source include exclude pitch velocity note]`` and ordered
  ``[[source.rule]]`` tables ``glob family [source pitch instrument]``: the first rule whose glob matches a
  path gives its family; a path that matches none is skipped (reason ``no_rule``);
* globs match the whole posix path: ``**/`` is zero or more folders, ``*`` and ``?`` stay inside one;
* pitch ``from``: ``name`` (a regex with groups note+octave, midi or hz; note letters in either case, ``#``/``s``
  sharp, ``b`` flat, C4 = 60 shifted by ``octave_offset``), ``estimate`` (`pitch.estimate_pitch` later), ``sfz``
  (the SFZ mapping or SoundFont preset gives it), ``none`` (`other` clips: pitch 0);
* velocity: a fixed 1..127, or ``{pattern, map, default}`` looking the pattern's first group up in ``map``;
* ``other_kind`` (required of, and only allowed on, a source that yields `other` clips: kind ``other`` or a rule
  with family ``other``): ``pitched`` when its `other` clips hold pitched musical sounds (tuned percussion such
  as tabla or slit drums, sung or played phrases), ``unpitched`` when they are unpitched or non-musical (drums,
  noises, speech). `train --other-kinds unpitched` leaves the pitched ones out of training (`other_kinds`).

Every mistake is a `CatalogueError` with one line naming the source and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from instrument_ai.device.errors import ConfigurationError
from instrument_ai.device.labels import LABELS, OTHER
from instrument_ai.train.corpus.nsynth import SOURCES

CATALOGUE = Path(__file__).with_name("sources.toml")
KINDS = ("notes", "sfz", "soundfont", "other")
OTHER_SOUND_KINDS = ("pitched", "unpitched")
"""What a source's `other` clips hold (`Source.other_kind`)."""
PITCH_MODES = ("name", "estimate", "sfz", "none")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_STEPS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


class CatalogueError(ConfigurationError, ValueError):
    """A catalogue that cannot be used; the message is one line naming the source and field."""


@dataclass(frozen=True)
class PitchSpec:
    mode: str
    pattern: re.Pattern[str] | None = None
    octave_offset: int = 0

    def pitch_of(self, path: str) -> int | None | str:
        """The MIDI pitch named in `path`; None for `estimate`; 0 for `none`/`sfz`; a reason string on failure."""
        if self.mode == "estimate":
            return None
        if self.mode != "name":
            return 0
        assert self.pattern is not None
        match = self.pattern.search(path)
        if not match:
            return "no_pitch"
        groups = match.groupdict()
        if groups.get("midi") is not None:
            midi = int(groups["midi"])
        elif groups.get("hz") is not None:
            hz = float(groups["hz"])
            if hz <= 0:
                return "bad_pitch"
            midi = round(69 + 12 * _log2(hz / 440.0))
        else:
            midi = note_to_midi(groups.get("note") or "", groups.get("octave") or "", self.octave_offset)
            if midi is None:
                return "bad_pitch"
        return midi if 0 <= midi <= 127 else "bad_pitch"


def _log2(x: float) -> float:
    import math

    return math.log2(x)


def note_to_midi(note: str, octave: str, octave_offset: int = 0) -> int | None:
    """`C#4` -> 61 (C4 = 60); letters in either case, `#`/`s` sharp, `b` flat; None if it is no note name."""
    if not note or note[0].lower() not in _STEPS:
        return None
    try:
        octave_number = int(octave)
    except ValueError:
        return None
    accidental = note[1:].lower()
    shift = {"": 0, "#": 1, "s": 1, "b": -1}.get(accidental)
    if shift is None:
        return None
    return 12 * (octave_number + 1 + octave_offset) + _STEPS[note[0].lower()] + shift


@dataclass(frozen=True)
class VelocitySpec:
    fixed: int | None = None
    pattern: re.Pattern[str] | None = None
    mapping: dict[str, int] = field(default_factory=dict)
    default: int = 100

    def velocity_of(self, path: str) -> int:
        if self.fixed is not None:
            return self.fixed
        assert self.pattern is not None
        match = self.pattern.search(path)
        if not match or not match.groups():
            return self.default
        return self.mapping.get(match.group(1), self.default)


@dataclass(frozen=True)
class Rule:
    glob: str
    regex: re.Pattern[str]
    family: str
    source: str | None = None
    pitch: PitchSpec | None = None
    instrument: re.Pattern[str] | None = None


@dataclass(frozen=True)
class FileLabel:
    """What a repository path is: its labels, and where its pitch comes from."""

    family: str
    source: str
    pitch: int | None
    """MIDI, or None when it is to be estimated."""
    pitch_from: str
    velocity: int
    instrument: str


@dataclass(frozen=True)
class Skip:
    """Why a path gets no label (a Problems reason and a one-line message)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Source:
    name: str
    repo: str
    commit: str
    licence: str
    kind: str
    group: str
    source: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    pitch: PitchSpec
    velocity: VelocitySpec
    rules: tuple[Rule, ...]
    note: str = ""
    other_kind: str | None = None
    """``pitched`` or ``unpitched`` (`OTHER_SOUND_KINDS`) for a source that yields `other` clips; else None."""

    @property
    def slug(self) -> str:
        """`OWNER+NAME`, the name of its clone or mirror folder."""
        owner, repo = self.repo.rstrip("/").removesuffix(".git").split("/")[-2:]
        return f"{owner}+{repo}"

    def select(self, paths: list[str] | tuple[str, ...]) -> list[str]:
        """The paths its include globs take and its exclude globs leave, in sorted order."""
        include = [glob_regex(g) for g in self.include] or [glob_regex("**")]
        exclude = [glob_regex(g) for g in self.exclude]
        return sorted(
            p for p in paths if any(r.match(p) for r in include) and not any(r.match(p) for r in exclude)
        )

    def label(self, path: str) -> FileLabel | Skip:
        rule = next((r for r in self.rules if r.regex.match(path)), None)
        if rule is None:
            return Skip("no_rule", f"{self.name}: {path}: matches no rule")
        spec = rule.pitch or self.pitch
        pitch = spec.pitch_of(path)
        if isinstance(pitch, str):
            return Skip(pitch, f"{self.name}: {path}: no pitch in its name for pattern {spec.pattern.pattern!r}")
        instrument = path.rsplit("/", 1)[0] if "/" in path else self.name
        if rule.instrument is not None and (found := rule.instrument.search(path)):
            instrument = found.groupdict().get("instrument") or found.group(0)
        return FileLabel(
            family=rule.family,
            source=rule.source or self.source,
            pitch=pitch,
            pitch_from=spec.mode,
            velocity=self.velocity.velocity_of(path),
            instrument=instrument,
        )


def glob_regex(glob: str) -> re.Pattern[str]:
    """A glob over whole posix paths: `**/` zero or more folders, `**` anything, `*`/`?` within one folder."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and (end := glob.find("]", i + 1)) > i:
            out.append("[" + glob[i + 1 : end].replace("!", "^", 1) + "]")
            i = end + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _where(name: str, what: str) -> str:
    return f"source {name}: {what}"


def _regex(text: Any, name: str, what: str) -> re.Pattern[str]:
    if not isinstance(text, str):
        raise CatalogueError(_where(name, f"{what} must be a regex string"))
    try:
        return re.compile(text)
    except re.error as exc:
        raise CatalogueError(_where(name, f"{what} {text!r} is not a valid regex ({exc})")) from None


def _pitch(raw: Any, name: str, default_mode: str | None) -> PitchSpec:
    if raw is None:
        if default_mode is None:
            raise CatalogueError(_where(name, "pitch is required for kind notes"))
        return PitchSpec(default_mode)
    if not isinstance(raw, dict) or raw.get("from") not in PITCH_MODES:
        raise CatalogueError(_where(name, f"pitch.from must be one of {', '.join(PITCH_MODES)}, got {raw!r}"))
    mode = raw["from"]
    pattern = _regex(raw.get("pattern"), name, "pitch.pattern") if mode == "name" else None
    if pattern is not None and not ({"midi", "hz"} & set(pattern.groupindex) or "note" in pattern.groupindex):
        raise CatalogueError(_where(name, "pitch.pattern needs a group note (+octave), midi or hz"))
    offset = raw.get("octave_offset", 0)
    if not isinstance(offset, int):
        raise CatalogueError(_where(name, "pitch.octave_offset must be an integer"))
    return PitchSpec(mode, pattern, offset)


def _velocity(raw: Any, name: str) -> VelocitySpec:
    if raw is None:
        return VelocitySpec(fixed=100)
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 1 <= raw <= 127:
            raise CatalogueError(_where(name, f"velocity {raw} is outside 1..127"))
        return VelocitySpec(fixed=raw)
    if not isinstance(raw, dict) or "pattern" not in raw:
        raise CatalogueError(_where(name, "velocity must be 1..127 or {pattern, map, default}"))
    mapping = raw.get("map", {})
    default = raw.get("default", 100)
    values = [*mapping.values(), default] if isinstance(mapping, dict) else [None]
    if not all(isinstance(v, int) and 1 <= v <= 127 for v in values):
        raise CatalogueError(_where(name, "velocity.map and velocity.default must hold velocities 1..127"))
    return VelocitySpec(None, _regex(raw["pattern"], name, "velocity.pattern"), dict(mapping), default)


def _source_label(value: Any, name: str, what: str) -> str:
    if value not in SOURCES:
        raise CatalogueError(_where(name, f"{what} {value!r} is not one of {', '.join(SOURCES)}"))
    return value


def _rule(raw: Any, name: str, i: int) -> Rule:
    if not isinstance(raw, dict) or not isinstance(raw.get("glob"), str):
        raise CatalogueError(_where(name, f"rule {i + 1} needs a glob"))
    family = raw.get("family")
    if family not in LABELS:
        raise CatalogueError(_where(name, f"rule {i + 1}: unknown family {family!r} (known: {', '.join(LABELS)})"))
    source = _source_label(raw["source"], name, f"rule {i + 1} source") if "source" in raw else None
    pitch = _pitch(raw["pitch"], name, None) if "pitch" in raw else None
    instrument = _regex(raw["instrument"], name, f"rule {i + 1} instrument") if "instrument" in raw else None
    return Rule(raw["glob"], glob_regex(raw["glob"]), family, source, pitch, instrument)


def _globs(raw: Any, name: str, what: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(g, str) and g for g in raw):
        raise CatalogueError(_where(name, f"{what} must be a list of glob strings"))
    return tuple(raw)


def parse_source(raw: Any) -> Source:
    """One checked `[[source]]` table."""
    if not isinstance(raw, dict):
        raise CatalogueError("a [[source]] entry is not a table")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise CatalogueError(f"source {name!r}: name must match [a-z0-9][a-z0-9-]*")
    for key in ("repo", "licence"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise CatalogueError(_where(name, f"{key} is required"))
    if raw["repo"].rstrip("/").count("/") < 2 and not raw["repo"].startswith("file://"):
        raise CatalogueError(_where(name, f"repo {raw['repo']!r} is not a clone URL ending in OWNER/NAME"))
    commit = raw.get("commit")
    if not isinstance(commit, str) or not _COMMIT.match(commit):
        raise CatalogueError(_where(name, f"commit must be a full 40-hex commit, got {commit!r}"))
    kind = raw.get("kind")
    if kind not in KINDS:
        raise CatalogueError(_where(name, f"kind must be one of {', '.join(KINDS)}, got {kind!r}"))
    default_pitch = {"notes": None, "sfz": "sfz", "soundfont": "sfz", "other": "none"}[kind]
    rules = raw.get("rule", [])
    if not isinstance(rules, list):
        raise CatalogueError(_where(name, "rule must be an array of tables ([[source.rule]])"))
    parsed_rules = tuple(_rule(r, name, i) for i, r in enumerate(rules)) or (
        (Rule("**", glob_regex("**"), "other"),) if kind == "other" else ()
    )
    return Source(
        name=name,
        repo=raw["repo"],
        commit=commit,
        licence=raw["licence"],
        kind=kind,
        group=str(raw.get("group") or name),
        source=_source_label(raw.get("source", "acoustic"), name, "source"),
        include=_globs(raw.get("include"), name, "include"),
        exclude=_globs(raw.get("exclude"), name, "exclude"),
        pitch=_pitch(raw.get("pitch"), name, default_pitch),
        velocity=_velocity(raw.get("velocity"), name),
        rules=parsed_rules,
        note=str(raw.get("note", "")),
        other_kind=_other_kind(raw.get("other_kind"), name, any(r.family == OTHER for r in parsed_rules)),
    )


def _other_kind(value: Any, name: str, yields_other: bool) -> str | None:
    """A source's `other_kind`: required when it yields `other` clips, refused when it yields none."""
    if not yields_other:
        if value is not None:
            raise CatalogueError(_where(name, "other_kind applies only to a source with `other` clips"))
        return None
    if value not in OTHER_SOUND_KINDS:
        raise CatalogueError(_where(name, f"other_kind must be one of {', '.join(OTHER_SOUND_KINDS)} (it yields "
                                          f"`other` clips), got {value!r}"))  # fmt: skip
    return str(value)


def parse(text: str, where: str = "catalogue") -> list[Source]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{where}: not valid TOML ({exc})") from None
    if raw.get("schema") != 1:
        raise CatalogueError(f"{where}: schema must be 1, got {raw.get('schema')!r}")
    sources = [parse_source(entry) for entry in raw.get("source", [])]
    seen: set[str] = set()
    for source in sources:
        if source.name in seen:
            raise CatalogueError(f"{where}: source {source.name} is listed twice")
        seen.add(source.name)
    return sources


def load(path: str | Path | None = None) -> list[Source]:
    """The checked sources of a catalogue file (default: the project's `train/sources/sources.toml`)."""
    path = Path(path) if path is not None else CATALOGUE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read the catalogue ({exc.strerror or exc})") from None
    return parse(text, str(path))

"""SFZ instruments: parse the text format and render notes for the corpus (numpy + soundfile only).

The SFZ sources (sfzinstruments repositories) give pitch only through their key mapping, so a note's label
is the key it was rendered at. What is read: headers ``<control> <global> <master> <group> <region>``
(each level inherits the ones above), ``#include`` (relative to the instrument's folder; loops counted),
``#define $VAR``, ``default_path``, ``//`` and ``/* */`` comments, and the opcodes that shape a plain note:
mapping (key ranges with note names, velocity ranges, round robins ``seq_length/seq_position``, random
ranges, CC and key-switch conditions at their default values), pitch (``pitch_keycenter tune transpose
pitch_keytrack``), level (``volume amplitude amp_veltrack amp_velcurve_N``), playback (``offset end
loop_*``) and the amplitude envelope (``ampeg_*``). Release, legato and other non-attack triggers are left
out. Modulation (filters, LFOs, CC curves, panning) is ignored: it changes colour, not pitch or family.
Every unknown opcode, missing sample and include loop is counted in `Problems`; nothing here raises on bad
input.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.train.sources.imported import ImportedNote, Problems
from instrument_ai.train.sources.sfz_dsp import RATE, Sample, decode, envelope, play

ReadBytes = Callable[[str], bytes]
HEADERS = ("control", "global", "master", "group", "region")
_IGNORED_HEADERS = ("curve", "effect", "midi", "sample")
_MAX_INCLUDE_DEPTH = 32
_CACHE_BYTES = 256 * 1024 * 1024
_STEPS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_NOTE = re.compile(r"^([a-g])(#|b|s)?(-?\d+)$", re.IGNORECASE)
_TOKEN = re.compile(r"<(\w+)>|([A-Za-z0-9_]+)=")
_KNOWN = {
    "sample", "lokey", "hikey", "key", "pitch_keycenter", "lovel", "hivel", "tune", "pitch", "transpose",
    "pitch_keytrack", "volume", "group_volume", "master_volume", "global_volume", "amplitude", "amp_veltrack",
    "offset", "end", "loop_mode", "loopmode", "loop_start", "loop_end", "loopstart", "loopend", "trigger",
    "seq_length", "seq_position", "lorand", "hirand", "default_path", "sw_last", "sw_default",
    "ampeg_delay", "ampeg_attack", "ampeg_hold", "ampeg_decay", "ampeg_sustain", "ampeg_release",
}  # fmt: skip
_IGNORED = {
    "pan", "position", "width", "group", "off_by", "off_mode", "off_time", "off_shape", "polyphony",
    "note_polyphony", "polyphony_group", "region_label", "group_label", "master_label", "global_label",
    "output", "count", "rt_decay", "pitch_random", "amp_random", "offset_random", "delay_random",
    "sustain_sw", "sostenuto_sw", "sustain_cc", "sustain_lo", "sostenuto_cc", "ampeg_dynamic",
    "pan_keycenter", "pan_keytrack", "pan_veltrack", "amp_keycenter", "amp_keytrack", "note_selfmask",
    "curve_index", "hint_ram_based", "octave_offset", "note_offset", "delay", "sw_lokey", "sw_hikey",
    "sw_label", "sw_down", "sw_up", "sw_previous", "sw_vel", "xfin_lovel", "xfin_hivel", "xfout_lovel",
    "xfout_hivel", "xf_velcurve", "xf_keycurve", "xfin_lokey", "xfin_hikey", "xfout_lokey", "xfout_hikey",
    "cutoff", "resonance", "fil_type", "fil_keytrack", "fil_keycenter", "fil_veltrack", "bend_up", "bend_down",
    "direction", "loop_crossfade", "image", "md5",
}  # fmt: skip
_IGNORED_PREFIXES = ("label_cc", "set_cc", "set_hdcc", "amp_velcurve_", "fil", "pitchlfo", "amplfo",
                     "fillfo", "lfo", "cutoff", "resonance",
                     "pitcheg", "fileg", "eq", "v", "ampeg_vel", "ampeg_release_",
                     "ampeg_attack_", "ampeg_decay_", "ampeg_hold_", "ampeg_sustain_", "ampeg_delay_",
                     "locc", "hicc", "start_locc", "start_hicc", "on_locc", "on_hicc", "xf", "pitch_",
                     "amp_veltrack_", "amplitude_", "volume_", "pan_", "offset_", "tune_", "gain_")  # fmt: skip


def note_number(value: str) -> int | None:
    """A key: a MIDI number or an SFZ note name (`c#4` = 61, C4 = 60); None if it is neither."""
    value = value.strip()
    try:
        return int(float(value))
    except ValueError:
        pass
    match = _NOTE.match(value)
    if not match:
        return None
    shift = {None: 0, "#": 1, "s": 1, "b": -1}[match.group(2) and match.group(2).lower()]
    return 12 * (int(match.group(3)) + 1) + _STEPS[match.group(1).lower()] + shift


@dataclass
class Region:
    """One playable region with every inherited opcode resolved."""

    sample: str
    lokey: int = 0
    hikey: int = 127
    keycenter: int = 60
    lovel: int = 1
    hivel: int = 127
    tune: float = 0.0
    transpose: int = 0
    keytrack: float = 100.0
    volume: float = 0.0
    amplitude: float = 100.0
    veltrack: float = 100.0
    velcurve: dict[int, float] = field(default_factory=dict)
    offset: int = 0
    end: int | None = None
    loop_mode: str | None = None
    loop_start: int | None = None
    loop_end: int | None = None
    seq_length: int = 1
    seq_position: int = 1
    lorand: float = 0.0
    hirand: float = 1.0
    ampeg: dict[str, float] = field(default_factory=dict)
    origin: str = ""

    def plays(self, pitch: int, velocity: int, variant: int, rand: float) -> bool:
        seq_ok = self.seq_length <= 1 or (variant - 1) % self.seq_length + 1 == self.seq_position
        return (self.lokey <= pitch <= self.hikey and self.lovel <= velocity <= self.hivel and seq_ok
                and self.lorand <= rand < self.hirand)  # fmt: skip

    def gain(self, velocity: int) -> float:
        """Volume (dB), amplitude (%) and the velocity curve (default (vel/127)^2) scaled by amp_veltrack."""
        if self.velcurve:
            points = {0: 0.0, 127: 1.0, **self.velcurve}
            keys = sorted(points)
            curve = float(np.interp(velocity, keys, [points[k] for k in keys]))
        else:
            curve = (velocity / 127) ** 2
        track = max(-100.0, min(100.0, self.veltrack)) / 100
        vel_gain = 1 - abs(track) + abs(track) * (curve if track >= 0 else 1 - curve)
        return float(10 ** (self.volume / 20) * self.amplitude / 100 * vel_gain)


def _float(ops: dict[str, str], name: str, default: float) -> float:
    try:
        return float(ops[name]) if name in ops else default
    except ValueError:
        return default


def _int(ops: dict[str, str], name: str, default: int) -> int:
    return int(_float(ops, name, default))


def _key(ops: dict[str, str], name: str, default: int) -> int:
    if name not in ops:
        return default
    number = note_number(ops[name])
    return default if number is None else number


class _Parser:
    """Expands includes and defines in order, and folds the header levels into regions."""

    def __init__(self, path: str, read_bytes: ReadBytes, problems: Problems) -> None:
        self.path, self.read_bytes, self.problems = path, read_bytes, problems
        self.root = posixpath.dirname(path)
        self.defines: dict[str, str] = {}
        self.levels: dict[str, dict[str, str]] = {h: {} for h in HEADERS}
        self.group_volumes: dict[str, float] = {}
        self.current: str | None = "global"
        self.in_region = False
        self.raw_regions: list[tuple[dict[str, str], str]] = []
        self.cc: dict[int, float] = {}
        self.unknown: set[tuple[str, str]] = set()

    def run(self) -> None:
        self._file(self.path, [])
        self._close_region()

    def _file(self, path: str, stack: list[str]) -> None:
        if path in stack:
            self.problems.add("sfz_include_loop", f"{self.path}: {path} includes itself (via {' -> '.join(stack)})")
            return
        if len(stack) >= _MAX_INCLUDE_DEPTH:
            self.problems.add("sfz_include_loop", f"{self.path}: includes nested deeper than {_MAX_INCLUDE_DEPTH}")
            return
        try:
            text = self.read_bytes(path).decode("utf-8", errors="replace")
        except Exception as exc:
            what = "sfz_missing_include" if stack else "unreadable"
            self.problems.add(what, f"{self.path}: cannot read {path} ({' '.join(str(exc).split()) or 'error'})")
            return
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
        for line in text.splitlines():
            line = line.split("//", 1)[0].strip()
            if not line:
                continue
            if line.startswith("#define"):
                parts = line.split(None, 2)
                if len(parts) == 3 and parts[1].startswith("$"):
                    self.defines[parts[1][1:]] = parts[2].strip()
                continue
            if line.startswith("#include"):
                match = re.match(r'#include\s+"([^"]*)"', line)
                if match:
                    self._include(self._substitute(match.group(1)), path, stack)
                continue
            self._line(self._substitute(line), path)

    def _include(self, name: str, parent: str, stack: list[str]) -> None:
        name = name.replace("\\", "/")
        candidates = [posixpath.normpath(posixpath.join(self.root, name)),
                      posixpath.normpath(posixpath.join(posixpath.dirname(parent), name))]  # fmt: skip
        chosen = candidates[0]
        if candidates[1] != candidates[0]:
            try:
                self.read_bytes(candidates[0])
            except Exception:
                chosen = candidates[1]
        self._file(chosen, [*stack, parent])

    def _substitute(self, text: str) -> str:
        if "$" not in text or not self.defines:
            return text
        names = sorted(self.defines, key=len, reverse=True)

        def one(match: re.Match[str]) -> str:
            word = match.group(1)
            for name in names:
                if word.startswith(name):
                    return self.defines[name] + word[len(name) :]
            return match.group(0)

        return re.sub(r"\$([A-Za-z0-9_]+)", one, text)

    def _line(self, line: str, path: str) -> None:
        matches = list(_TOKEN.finditer(line))
        for i, match in enumerate(matches):
            if match.group(1) is not None:
                self._header(match.group(1).lower())
                continue
            stop = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            value = line[match.end() : stop].strip()
            name = match.group(2).lower()  # some files write Sample=, as players accept
            if name not in ("sample", "default_path"):
                value = value.split()[0] if value.split() else ""
            self._opcode(name, value, path)

    def _header(self, name: str) -> None:
        self._close_region()
        if name not in HEADERS:
            self.current = None  # <curve>, <effect>, ...: their opcodes shape no plain note
            if name not in _IGNORED_HEADERS:
                self._count(f"<{name}>", self.path)
            return
        self.current = name
        start = HEADERS.index(name)
        for level in HEADERS[max(start, 1) :]:
            self.levels[level] = {}
        self.in_region = name == "region"

    def _count(self, name: str, path: str) -> None:
        if (path, name) not in self.unknown:
            self.unknown.add((path, name))
            self.problems.add("sfz_unknown_opcode", f"{path}: {name}")

    def _opcode(self, name: str, value: str, path: str) -> None:
        if self.current is None:
            return
        if self.current == "control" and (match := re.fullmatch(r"set_(hd)?cc(\d+)", name)):
            try:
                number = float(value)
            except ValueError:
                return
            self.cc[int(match.group(2))] = number * 127 if match.group(1) else number
            return
        known = (name in _KNOWN or name in _IGNORED or re.search(r"cc\d+$", name)
                 or name.startswith(_IGNORED_PREFIXES))  # fmt: skip
        if not known:
            self._count(name, path)
            return
        if name == "key":
            self.levels[self.current].update(lokey=value, hikey=value, pitch_keycenter=value)
        self.levels[self.current][name] = value

    def _close_region(self) -> None:
        if not self.in_region:
            return
        self.in_region = False
        merged: dict[str, str] = {}
        for level in HEADERS:
            merged.update(self.levels[level])
        volume = sum(_float(self.levels[lv], f"{lv}_volume", 0.0) for lv in ("global", "master", "group"))
        merged["_extra_volume"] = str(volume)
        self.raw_regions.append((merged, self.path))
        self.levels["region"] = {}


def _cc_ok(ops: dict[str, str], cc: dict[int, float]) -> bool:
    for name, value in ops.items():
        if match := re.fullmatch(r"(lo|hi)cc(\d+)", name):
            try:
                bound = float(value)
            except ValueError:
                continue
            have = cc.get(int(match.group(2)), 0.0)
            if (match.group(1) == "lo" and have < bound) or (match.group(1) == "hi" and have > bound):
                return False
    return True


def _switch(raw: list[tuple[dict[str, str], str]], ops: dict[str, str]) -> int | None:
    """The key switch in force at note-on: `sw_default`, else the lowest `sw_last` the file uses."""
    if "sw_default" in ops:
        return note_number(ops["sw_default"])
    keys = [note_number(o["sw_last"]) for o, _ in raw if "sw_last" in o]
    return min((k for k in keys if k is not None), default=None)


def _region(ops: dict[str, str], sample_path: str) -> Region:
    keycenter = _key(ops, "pitch_keycenter", 60) if ops.get("pitch_keycenter") != "sample" else 60
    velcurve = {}
    for name, value in ops.items():
        if match := re.fullmatch(r"amp_velcurve_(\d+)", name):
            with contextlib.suppress(ValueError):
                velcurve[int(match.group(1))] = float(value)
    loop_start = ops.get("loop_start", ops.get("loopstart"))
    loop_end = ops.get("loop_end", ops.get("loopend"))
    return Region(
        sample=sample_path,
        lokey=_key(ops, "lokey", 0), hikey=_key(ops, "hikey", 127), keycenter=keycenter,
        lovel=_int(ops, "lovel", 1), hivel=_int(ops, "hivel", 127),
        tune=_float(ops, "tune", _float(ops, "pitch", 0.0)), transpose=_int(ops, "transpose", 0),
        keytrack=_float(ops, "pitch_keytrack", 100.0),
        volume=_float(ops, "volume", 0.0) + _float(ops, "_extra_volume", 0.0),
        amplitude=_float(ops, "amplitude", 100.0), veltrack=_float(ops, "amp_veltrack", 100.0),
        velcurve=velcurve, offset=max(0, _int(ops, "offset", 0)),
        end=_int(ops, "end", 0) if "end" in ops else None,
        loop_mode=ops.get("loop_mode", ops.get("loopmode")),
        loop_start=int(_float({"v": loop_start}, "v", 0)) if loop_start is not None else None,
        loop_end=int(_float({"v": loop_end}, "v", 0)) if loop_end is not None else None,
        seq_length=max(1, _int(ops, "seq_length", 1)), seq_position=max(1, _int(ops, "seq_position", 1)),
        lorand=_float(ops, "lorand", 0.0), hirand=_float(ops, "hirand", 1.0),
        ampeg={k[6:]: _float(ops, k, 0.0) for k in ops if k in (
            "ampeg_delay", "ampeg_attack", "ampeg_hold", "ampeg_decay", "ampeg_sustain", "ampeg_release")},
    )  # fmt: skip


@dataclass
class SfzInstrument:
    """The playable regions of one .sfz file, and the samples they read (decoded lazily, cached)."""

    path: str
    regions: list[Region]
    _cache: OrderedDict[str, Sample] = field(default_factory=OrderedDict, repr=False)
    _bad: set[str] = field(default_factory=set, repr=False)

    @property
    def variants(self) -> int:
        """Round robins: the longest `seq_length` of the regions on its pitched keys."""
        keys = self.key_range()
        if not keys:
            return 1
        return max((r.seq_length for r in self.regions if r.lokey <= keys[-1] and r.hikey >= keys[0]), default=1)

    def key_range(self) -> list[int]:
        """The pitched keys: the longest unbroken run of mapped keys (isolated noise/switch keys left out)."""
        mapped = sorted({k for r in self.regions for k in range(max(0, r.lokey), min(127, r.hikey) + 1)})
        best: list[int] = []
        run: list[int] = []
        for k in mapped:
            run = [*run, k] if run and k == run[-1] + 1 else [k]
            if len(run) > len(best):
                best = run
        return best

    def velocity_layers(self) -> list[tuple[int, int]]:
        """Velocity ranges (low, high) over which the set of playing regions stays the same."""
        cuts = sorted({max(1, r.lovel) for r in self.regions} | {min(127, r.hivel) + 1 for r in self.regions}
                      | {1, 128})  # fmt: skip
        layers = []
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            if any(r.lovel <= lo and hi - 1 <= r.hivel for r in self.regions):
                layers.append((lo, hi - 1))
        return layers

    def points(self) -> list[tuple[int, int, int]]:
        """Every (pitch, velocity, variant) that sounds: each pitched key, velocity layer (its top), round robin."""
        out = []
        for pitch in self.key_range():
            for _, top in self.velocity_layers():
                for variant in range(1, self.variants + 1):
                    if any(r.plays(pitch, top, variant, _rand(variant)) for r in self.regions):
                        out.append((pitch, top, variant))
        return out

    def _sample(self, path: str, read_bytes: ReadBytes, problems: Problems) -> Sample | None:
        if path in self._bad:
            return None
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        try:
            sample = decode(read_bytes(path))
        except Exception as exc:
            self._bad.add(path)
            problems.add("missing_sample", f"{self.path}: {path} ({' '.join(str(exc).split()) or 'unreadable'})")
            return None
        self._cache[path] = sample
        while sum(s.audio.nbytes for s in self._cache.values()) > _CACHE_BYTES and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return sample

    def render(self, pitch: int, velocity: int, variant: int, read_bytes: ReadBytes, problems: Problems,
               hold_s: float, total_s: float) -> np.ndarray | None:  # fmt: skip
        """The note at 16 kHz mono float32, exactly `total_s` long, released after `hold_s`; None if nothing plays."""
        n = int(round(total_s * RATE))
        release_at = int(round(hold_s * RATE))
        out = np.zeros(n, dtype=np.float64)
        played = False
        for region in self.regions:
            if not region.plays(pitch, velocity, variant, _rand(variant)):
                continue
            sample = self._sample(region.sample, read_bytes, problems)
            if sample is None:
                continue
            out += _voice(region, sample, pitch, velocity, n, release_at)
            played = True
        return out.astype(np.float32) if played else None


def _rand(variant: int) -> float:
    """A fixed `lorand/hirand` value per variant, so random layers are chosen reproducibly."""
    return (0.5 + 0.618034 * (variant - 1)) % 1.0


def _voice(region: Region, sample: Sample, pitch: int, velocity: int, n: int, release_at: int) -> np.ndarray:
    """One region's contribution: played at its pitch ratio, looped as it says, enveloped and scaled."""
    if region.end is not None and region.end <= 0:
        return np.zeros(n)
    if region.end is not None and region.end + 1 < len(sample.audio):
        sample = Sample(sample.audio[: region.end + 1], sample.rate, sample.loop)
    semitones = (pitch - region.keycenter) * region.keytrack / 100 + region.transpose + region.tune / 100
    step = 2 ** (semitones / 12) * sample.rate / RATE
    loop = sample.loop
    if region.loop_start is not None or region.loop_end is not None:
        loop = (region.loop_start or 0, region.loop_end if region.loop_end is not None else len(sample.audio) - 1)
    mode = region.loop_mode or ("loop_continuous" if sample.loop is not None else "no_loop")
    if mode in ("loop_continuous", "loop_sustain") and loop is None:
        loop = (0, len(sample.audio) - 1)  # a loop mode with no loop points loops the whole sample
    looping = mode in ("loop_continuous", "loop_sustain")
    audio = play(sample, step, n, offset=region.offset, loop=loop if looping else None,
                 loop_until=release_at if mode == "loop_sustain" else None)  # fmt: skip
    ampeg = region.ampeg
    env = envelope(
        n, delay=ampeg.get("delay", 0.0), attack=ampeg.get("attack", 0.0), hold=ampeg.get("hold", 0.0),
        decay=ampeg.get("decay", 0.0), sustain=ampeg.get("sustain", 100.0) / 100,
        release=ampeg.get("release", 0.001), release_at=None if mode == "one_shot" else release_at,
    )  # fmt: skip
    return audio * env * region.gain(velocity)


def parse(path: str, read_bytes: ReadBytes, problems: Problems) -> SfzInstrument:
    """The instrument in the .sfz file `path` (read through `read_bytes`); problems counted, never raised."""
    parser = _Parser(path, read_bytes, problems)
    try:
        parser.run()
    except RecursionError:
        problems.add("sfz_include_loop", f"{path}: includes nested too deep")
    control = parser.levels["control"]
    default_path = control.get("default_path", "").replace("\\", "/")
    regions = []
    checked: dict[str, bool] = {}
    for ops, _origin in parser.raw_regions:
        sample = ops.get("sample", "").strip().replace("\\", "/")
        if not sample or sample.startswith("*"):
            if sample and sample != "*silence":
                problems.add("sfz_generator", f"{path}: sample={sample} (generators are not rendered)")
            continue
        if ops.get("trigger", "attack") not in ("attack", "first"):
            continue
        if not _cc_ok(ops, parser.cc):
            continue
        if "sw_last" in ops and note_number(ops["sw_last"]) != _switch(parser.raw_regions, ops):
            continue
        full = posixpath.normpath(posixpath.join(parser.root, default_path, sample))
        if full not in checked:
            try:
                read_bytes(full)
                checked[full] = True
            except Exception as exc:
                checked[full] = False
                problems.add("missing_sample", f"{path}: {full} ({' '.join(str(exc).split()) or 'unreadable'})")
        if not checked[full]:
            continue
        region = _region(ops, full)
        if region.lokey < 0 or region.hikey < 0 or region.lokey > region.hikey or region.lovel > region.hivel:
            continue
        regions.append(region)
    return SfzInstrument(path, regions)


def choose_velocities(layers: list[tuple[int, int]], wanted: tuple[int, ...] | list[int]) -> list[int]:
    """The requested velocities spread over the instrument's layers by rank, each moved into its layer.

    Two requested velocities on a two-layer instrument play one each; on a one-layer instrument both play
    as asked. Duplicates are dropped.
    """
    if not layers or not wanted:
        return list(dict.fromkeys(wanted))
    ordered = sorted(wanted)
    out = []
    for i, v in enumerate(ordered):
        q = i / (len(ordered) - 1) if len(ordered) > 1 else 1.0
        lo, hi = layers[round(q * (len(layers) - 1))] if len(ordered) > 1 else _layer_of(layers, v)
        out.append(min(hi, max(lo, v)))
    return list(dict.fromkeys(out))


def _layer_of(layers: list[tuple[int, int]], v: int) -> tuple[int, int]:
    return next((layer for layer in layers if layer[0] <= v <= layer[1]), layers[-1])


MAX_POINTS = 1500
"""An instrument with at most this many (key, velocity layer, round robin) points renders all of them: each is a
recorded sample played at most a few keys from where it was recorded, so every real note it holds counts. Bigger
instruments (or a catalogue typo mapping thousands) render the corpus grid instead."""


def render_source(problems: Problems, entry: Any, tree: Any, paths: list[str], step: int,
                  velocities: tuple[int, ...]) -> Iterator[ImportedNote]:  # fmt: skip
    """Each selected .sfz instrument on the pitch grid (every `step` keys, rotated per instrument) and layers."""
    from instrument_ai.train.corpus.build import HOLD_SECONDS, SILENT_DBFS, TOTAL_SECONDS
    from instrument_ai.train.sources.catalogue import Skip

    silent = 10 ** (SILENT_DBFS / 20)
    position = 0
    for path in paths:
        if not path.lower().endswith(".sfz"):
            continue
        label = entry.label(path)
        if isinstance(label, Skip):
            problems.add(label.reason, label.message)
            continue
        instrument = parse(path, tree.read, problems)
        keys = instrument.key_range()
        if not keys:
            problems.add("sfz_no_regions", f"{entry.name}: {path}: no playable region")
            continue
        grid = [k for k in keys if (k - position) % max(1, step) == 0]
        position += 1
        chosen = choose_velocities(instrument.velocity_layers(), velocities)
        every = instrument.points()
        plan = every if len(every) <= MAX_POINTS else [
            (pitch, velocity, i % instrument.variants + 1) for i, pitch in enumerate(grid) for velocity in chosen]
        for pitch, velocity, variant in plan:
            audio = instrument.render(pitch, velocity, variant, tree.read, problems, HOLD_SECONDS, TOTAL_SECONDS)
            if audio is None:
                problems.add("silent", f"{entry.name}: {path} key {pitch} vel {velocity}: no region plays")
                continue
            peak = float(np.max(np.abs(audio)))
            if peak < silent or peak >= 1.0:
                problems.add("silent" if peak < silent else "clipped",
                             f"{entry.name}: {path} key {pitch} vel {velocity}")  # fmt: skip
                continue
            loud = np.nonzero(np.abs(audio) >= peak * 0.01)[0]  # -40 dB below the peak
            sounding = min(TOTAL_SECONDS, (int(loud[-1]) + 1) / RATE)
            yield ImportedNote(audio, label.family, label.source, Path(path).stem, pitch, velocity,
                               round(sounding, 3), f"{entry.name}:{path} key {pitch} vel {velocity}")  # fmt: skip

"""Build an NSynth-format corpus by playing single notes through sampled-instrument libraries.

This is how NSynth itself was made, so a model trained here can later be
trained on the real NSynth with no other change. Output layout (beside
NSynth's own ``examples.json`` + ``audio/<note_str>.wav``):

* ``instruments.json``: where every instrument comes from (library, lineage,
  GM program, variant, labels, preset name, bank file name);
* ``corpus.json``: the build options, a digest of the plan, and the counts
  (notes, skipped notes per reason, per library). No timestamps and no
  absolute paths, so the same options give byte-identical folders.

Instruments. Each (library, GM program, preset variant) is one instrument; its
labels come from `gm_programs` (programs not in the table are never rendered).
Variants:

* single-file SoundFonts (TimGM6mb, FluidR3, MuseScoreGeneral): variant 0 is
  the GM preset at bank 0; variants 1, 2, ... are the presets of the same
  program in banks 1-127 (GS-style variation banks: FluidR3's "Ukulele",
  "12 String Guitar", "Slow Violin", MuseScore's string-section banks ...), in
  bank order. MuseScore's "Expr." presets are left out: they replay the bank-0
  samples with a controller-driven dynamic, i.e. duplicates of variant 0 in
  different clothes. Bank 128 (drum kits) is never used.
* per-program sf3 folders (32MbGMStereo, 90sRetroVintage, Airfont380,
  AlexsGM): one file per program, bank 0, variant 0.
* WebAudioFont banks: the file-name variant digit. The small single-instrument
  banks (LesPaul, Stratocaster, Gibson_Les_Paul, Acoustic_Guitar, SBAWE32,
  Soul_Ahhs) form one library, ``WAF-small``: 36 files are too few to hold out
  alone, and together they are one "everything else" library for the holdout
  experiment. Their variants are numbered 0, 1, ... per program in (bank name,
  file variant) order, and the bank name is kept in instruments.json.

Lineage groups libraries that share samples: FluidR3 and MuseScoreGeneral
(MuseScore General grew out of FluidR3) are lineage ``FluidR3``; every other
library is its own lineage. Splits never separate a lineage.

Notes. For each instrument, the pitches of its program's playable range on a
grid of ``pitch_step`` semitones, the grid rotated by the instrument's index so
that the corpus as a whole covers every pitch class; every pitch at each of the
chosen velocities. Each note is 16 kHz mono 16-bit, exactly 64000 samples,
note-on at 0, note-off at 3 s, dry, at the synthesiser's own level (no
normalisation: velocity changes loudness as in NSynth). A note whose peak is
below ``SILENT_DBFS`` is skipped as *silent*, one whose peak reaches full scale
as *clipped*; both are counted per library. A bank file that cannot be read
skips its instrument (counted as *unreadable*), or stops the build under
``strict``. ``limit`` keeps that many notes spread evenly over the whole plan
(a small corpus with every library and family, for tests).

Defaults (every library present, pitch step 3, velocities 50 and 100): 1,227
instruments, 37,805 notes (116 silent and 13 clipped notes skipped), 4.9 GB,
built in 10 min 20 s with ``--jobs 2`` on the shared 2-core development machine
(61 notes/s).

Resume. The build first writes corpus.json with ``"status": "building"``, then
one record per finished instrument under ``.partial/``; a re-run with the same
options and the same library files skips finished instruments. Different
options (or changed library files) are refused with one line, so two
configurations never mix in one folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.labels import FAMILIES
from instrument_ai.train.corpus.nsynth import SOURCES
from instrument_ai.train.sources import gm_programs

SAMPLE_RATE = 16000
HOLD_SECONDS = 3.0
TOTAL_SECONDS = 4.0
NUM_SAMPLES = int(SAMPLE_RATE * TOTAL_SECONDS)
NSYNTH_VELOCITIES = (25, 50, 75, 100, 127)
DEFAULT_VELOCITIES = (50, 100)
DEFAULT_PITCH_STEP = 3
SILENT_DBFS = -60.0
CORPUS_FORMAT = "instrument-ai corpus"
CORPUS_VERSION = 1
SKIP_REASONS = ("silent", "clipped", "unreadable")
PARTIAL_DIR = ".partial"

FLUIDR3_PATHS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2")
MUSESCORE_PATHS = ("/usr/share/sounds/sf3/MuseScore_General_Full.sf3",)
SF3_FOLDERS = {
    "32MbGMStereo": "32MbGMStereo",
    "90sRetroVintage": "90s_Retro_Vintage_v1.05",
    "Airfont380": "Airfont_380_final",
    "AlexsGM": "Alexs_gm_v1.3",
}
WAF_BANKS = {
    "GeneralUserGS": ("GeneralUserGS",),
    "JCLive": ("JCLive",),
    "Aspirin": ("Aspirin",),
    "SoundBlasterOld": ("SoundBlasterOld",),
    "WAF-small": ("Acoustic_Guitar", "Gibson_Les_Paul", "LesPaul", "SBAWE32", "Soul_Ahhs", "Stratocaster"),
}
LIBRARIES: tuple[str, ...] = (
    "TimGM6mb",
    "FluidR3",
    "MuseScoreGeneral",
    "GeneralUserGS",
    "JCLive",
    "Aspirin",
    "SoundBlasterOld",
    "WAF-small",
    "32MbGMStereo",
    "90sRetroVintage",
    "Airfont380",
    "AlexsGM",
)
"""Every library the builder knows, in build (and instrument numbering) order."""

LINEAGES: dict[str, str] = {name: name for name in LIBRARIES} | {"MuseScoreGeneral": "FluidR3"}
"""Library -> lineage: libraries of one lineage share samples and stay on one side of every split."""

_EXPR_PRESET = re.compile(r"\bexpr\.?$", re.IGNORECASE)


class CorpusError(InstrumentAIError):
    """A build that cannot proceed; the message is one line for the CLI."""


# --------------------------------------------------------------------------- libraries


@dataclass(frozen=True)
class LibrarySource:
    """Where a library lives on this machine: ``kind`` is "font", "sf3dir" or "waf"."""

    name: str
    kind: str
    path: Path

    @property
    def lineage(self) -> str:
        return LINEAGES[self.name]


def timgm6mb_path() -> Path | None:
    """The TimGM6mb.sf2 shipped inside the PyPI package pretty_midi (None if pretty_midi is missing)."""
    import importlib.util

    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "TimGM6mb.sf2"
    return path if path.is_file() else None


def default_shared_libraries() -> Path | None:
    """``../shared/sample-libraries`` relative to the current directory, else to the repository, if it exists."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "sample-libraries"
        if candidate.is_dir():
            return candidate
    return None


def locate_libraries(shared: Path | None) -> dict[str, LibrarySource]:
    """The libraries present on this machine (name -> source), in `LIBRARIES` order."""
    found: dict[str, LibrarySource] = {}
    tim = timgm6mb_path()
    if tim is not None:
        found["TimGM6mb"] = LibrarySource("TimGM6mb", "font", tim)
    for name, candidates in (("FluidR3", FLUIDR3_PATHS), ("MuseScoreGeneral", MUSESCORE_PATHS)):
        for candidate in candidates:
            if Path(candidate).is_file():
                found[name] = LibrarySource(name, "font", Path(candidate))
                break
    if shared is not None:
        waf = shared / "webaudiofont"
        if waf.is_dir():
            names = {p.name for p in waf.glob("*.js")}
            for name, banks in WAF_BANKS.items():
                if any(f"_{bank}_sf2" in file for file in names for bank in banks):
                    found[name] = LibrarySource(name, "waf", waf)
        for name, folder in SF3_FOLDERS.items():
            if (shared / "sf3" / folder).is_dir():
                found[name] = LibrarySource(name, "sf3dir", shared / "sf3" / folder)
    return {name: found[name] for name in LIBRARIES if name in found}


# --------------------------------------------------------------------------- plan


@dataclass
class InstrumentPlan:
    """One instrument to render and the notes (pitch, velocity) it gets."""

    library: str
    kind: str
    program: int
    variant: int
    bank: int
    """SoundFont bank of the preset (0 for sf3 folders and WebAudioFont)."""
    preset_name: str
    file: str
    """Absolute path of the font or bank file (never written to the corpus)."""
    bank_name: str = ""
    """WebAudioFont bank (file name part); empty for SoundFonts."""
    notes: list[tuple[int, int]] = field(default_factory=list)
    index: int = -1
    instrument_str: str = ""

    @property
    def family_str(self) -> str:
        return gm_programs.GM_PROGRAMS[self.program].family_str

    @property
    def source_str(self) -> str:
        return gm_programs.GM_PROGRAMS[self.program].source_str

    @property
    def lineage(self) -> str:
        return LINEAGES[self.library]

    def info(self) -> dict[str, Any]:
        """The instruments.json row (no absolute paths)."""
        row: dict[str, Any] = {
            "library": self.library,
            "lineage": self.lineage,
            "program": self.program,
            "variant": self.variant,
            "family_str": self.family_str,
            "source_str": self.source_str,
            "instrument": self.index,
            "preset_name": self.preset_name,
            "bank": self.bank,
            "file": Path(self.file).name,
        }
        if self.bank_name:
            row["bank_name"] = self.bank_name
        return row


def _font_instruments(source: LibrarySource) -> list[InstrumentPlan]:
    from instrument_ai.train.sources.soundfont_render import PERCUSSION_BANK, read_presets

    out: list[InstrumentPlan] = []
    variants: Counter[int] = Counter()
    for preset in read_presets(source.path):  # sorted by (bank, program)
        if preset.bank >= PERCUSSION_BANK or preset.program not in gm_programs.GM_PROGRAMS:
            continue
        if preset.bank > 0 and _EXPR_PRESET.search(preset.name):
            continue
        if preset.bank == 0 and variants[preset.program] > 0:
            continue  # a duplicated bank-0 header: keep the first
        variant = variants[preset.program]
        variants[preset.program] += 1
        out.append(
            InstrumentPlan(source.name, "font", preset.program, variant, preset.bank, preset.name, str(source.path))
        )
    return out


def _sf3dir_instruments(source: LibrarySource) -> list[InstrumentPlan]:
    from instrument_ai.train.sources.soundfont_render import read_presets

    out = []
    for program in gm_programs.GM_PROGRAMS:
        path = source.path / f"{program:03d}.sf3"
        if not path.is_file():
            continue
        try:
            presets = [p for p in read_presets(path) if p.bank == 0 and p.program == program]
        except Exception:  # unreadable: planned anyway, counted as unreadable when rendered
            presets = []
        name = presets[0].name if presets else ""
        out.append(InstrumentPlan(source.name, "sf3dir", program, 0, 0, name, str(path)))
    return out


def _waf_instruments(source: LibrarySource) -> list[InstrumentPlan]:
    from instrument_ai.train.sources.webaudiofont import list_bank_files

    banks = WAF_BANKS[source.name]
    files = [b for b in list_bank_files(source.path) if b.library in banks and b.program in gm_programs.GM_PROGRAMS]
    files.sort(key=lambda b: (b.program, b.library, b.variant))
    out = []
    variants: Counter[int] = Counter()
    for bank in files:
        variant = bank.variant if len(banks) == 1 else variants[bank.program]
        variants[bank.program] += 1
        out.append(
            InstrumentPlan(
                source.name, "waf", bank.program, variant, 0, bank.name, str(bank.path), bank_name=bank.library
            )
        )
    return out


def plan_instruments(sources: list[LibrarySource]) -> list[InstrumentPlan]:
    """Every instrument of the given libraries, in deterministic order (library order, program, variant)."""
    planners: dict[str, Callable[[LibrarySource], list[InstrumentPlan]]] = {
        "font": _font_instruments,
        "sf3dir": _sf3dir_instruments,
        "waf": _waf_instruments,
    }
    out: list[InstrumentPlan] = []
    for source in sources:
        try:
            found = planners[source.kind](source)
        except Exception as exc:
            raise CorpusError(f"library {source.name}: cannot list its instruments ({_one_line(exc)})") from None
        out.extend(sorted(found, key=lambda p: (p.program, p.variant)))
    return out


@dataclass(frozen=True)
class BuildOptions:
    """Everything that decides the content of a corpus (and nothing else: not jobs, not paths)."""

    libraries: tuple[str, ...]
    pitch_step: int = DEFAULT_PITCH_STEP
    velocities: tuple[int, ...] = DEFAULT_VELOCITIES
    limit: int | None = None
    sample_rate: int = SAMPLE_RATE
    hold_seconds: float = HOLD_SECONDS
    total_seconds: float = TOTAL_SECONDS

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["libraries"] = list(self.libraries)
        data["velocities"] = list(self.velocities)
        return data


def validate_options(options: BuildOptions) -> None:
    """Refuse impossible options with one line."""
    if options.pitch_step < 1 or options.pitch_step > 12:
        raise CorpusError(f"--pitch-step must be 1-12, got {options.pitch_step}")
    if not options.velocities:
        raise CorpusError("--velocities needs at least one velocity")
    bad = [v for v in options.velocities if v not in NSYNTH_VELOCITIES]
    if bad:
        raise CorpusError(f"velocities must be from NSynth's set {list(NSYNTH_VELOCITIES)}, got {bad}")
    if len(set(options.velocities)) != len(options.velocities):
        raise CorpusError(f"duplicate velocities in {list(options.velocities)}")
    if options.limit is not None and options.limit < 1:
        raise CorpusError(f"--limit must be >= 1, got {options.limit}")
    unknown = [name for name in options.libraries if name not in LIBRARIES]
    if unknown:
        raise CorpusError(f"unknown library {unknown[0]!r}; known: {', '.join(LIBRARIES)}")
    if not options.libraries:
        raise CorpusError("no libraries to build from")


def make_plan(sources: list[LibrarySource], options: BuildOptions) -> list[InstrumentPlan]:
    """The instruments and their notes for these options, numbered; instruments left without notes are dropped."""
    instruments = plan_instruments(sources)
    velocities = sorted(options.velocities)
    for position, inst in enumerate(instruments):
        pitches = gm_programs.pitches(inst.program, options.pitch_step, offset=position)
        inst.notes = [(p, v) for p in pitches for v in velocities]
    if options.limit is not None:
        flat = [(i, note) for i, inst in enumerate(instruments) for note in inst.notes]
        if options.limit < len(flat):
            keep = [flat[(k * len(flat)) // options.limit] for k in range(options.limit)]
            for inst in instruments:
                inst.notes = []
            for i, note in keep:
                instruments[i].notes.append(note)
    instruments = [inst for inst in instruments if inst.notes]
    counters: Counter[tuple[str, str]] = Counter()
    for index, inst in enumerate(instruments):
        key = (inst.family_str, inst.source_str)
        inst.index = index
        inst.instrument_str = f"{inst.family_str}_{inst.source_str}_{counters[key]:03d}"
        counters[key] += 1
    return instruments


def plan_digest(plan: list[InstrumentPlan]) -> str:
    """A short hash of what the plan renders, to detect library files that changed between runs."""
    h = hashlib.sha256()
    for inst in plan:
        h.update(
            json.dumps(
                [inst.instrument_str, inst.library, inst.program, inst.variant, inst.bank, Path(inst.file).name]
            ).encode()
        )
        h.update(json.dumps(inst.notes).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- rendering (worker side)


@dataclass
class InstrumentResult:
    """What rendering one instrument produced: kept notes and skip counts."""

    index: int
    instrument_str: str
    notes: list[dict[str, Any]] = field(default_factory=list)
    """Kept notes in plan order: ``{"pitch", "velocity", "qualities"}``."""
    skipped: dict[str, int] = field(default_factory=dict)
    error: str | None = None


_FONT_CACHE: dict[str, Any] = {}
"""Per-process cache of loaded single-file SoundFonts: each worker loads a font once."""


def _note_renderer(inst: InstrumentPlan, sample_rate: int) -> Callable[[int, int, float, float], np.ndarray]:
    """A function (pitch, velocity, hold, total) -> float32 mono for this instrument."""
    if inst.kind in ("font", "sf3dir"):
        from instrument_ai.train.sources.soundfont_render import SoundFontRenderer

        if inst.kind == "font":
            renderer = _FONT_CACHE.get(inst.file)
            if renderer is None:
                renderer = _FONT_CACHE[inst.file] = SoundFontRenderer(inst.file, sample_rate)
        else:
            renderer = SoundFontRenderer(inst.file, sample_rate)

        def render_sf(pitch: int, velocity: int, hold: float, total: float) -> np.ndarray:
            return renderer.render(inst.bank, inst.program, pitch, velocity, hold, total)

        return render_sf
    from instrument_ai.train.sources import webaudiofont

    preset = webaudiofont.parse_bank_file(inst.file)  # zones decode on first use: one bad zone costs its notes only

    def render_waf(pitch: int, velocity: int, hold: float, total: float) -> np.ndarray:
        return webaudiofont.render_note(
            preset, pitch, velocity, sample_rate=sample_rate, hold_seconds=hold, total_seconds=total
        )

    return render_waf


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float [-1, 1) -> int16 by rounding (values at or beyond full scale are saturated)."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_pcm16_wav(path: Path, pcm: np.ndarray, sample_rate: int) -> None:
    """Write int16 mono samples as a canonical 44-byte-header PCM wav, atomically (tmp + rename)."""
    import wave

    tmp = path.with_name(path.name + ".tmp")
    with wave.open(str(tmp), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.astype("<i2").tobytes())
    os.replace(tmp, path)


def render_instrument(inst: InstrumentPlan, options: BuildOptions, audio_dir: str) -> InstrumentResult:
    """Render, check, measure and write every note of one instrument (runs in a worker process)."""
    from instrument_ai.train.corpus.qualities import qualities

    result = InstrumentResult(inst.index, inst.instrument_str, skipped=dict.fromkeys(SKIP_REASONS, 0))
    try:
        render = _note_renderer(inst, options.sample_rate)
    except Exception as exc:
        result.skipped["unreadable"] = len(inst.notes)
        result.error = f"{Path(inst.file).name}: {_one_line(exc)}"
        return result
    silent_peak = 10.0 ** (SILENT_DBFS / 20.0)
    expected = int(round(options.total_seconds * options.sample_rate))
    for pitch, velocity in inst.notes:
        try:
            audio = render(pitch, velocity, options.hold_seconds, options.total_seconds)
        except Exception as exc:
            result.skipped["unreadable"] += 1
            result.error = result.error or f"{Path(inst.file).name}: {_one_line(exc)}"
            continue
        if audio.shape != (expected,) or not np.isfinite(audio).all():
            result.skipped["unreadable"] += 1
            result.error = result.error or f"{Path(inst.file).name}: renderer returned a bad buffer {audio.shape}"
            continue
        peak = float(np.max(np.abs(audio)))
        if peak < silent_peak:
            result.skipped["silent"] += 1
            continue
        if peak >= 1.0:
            result.skipped["clipped"] += 1
            continue
        pcm = to_pcm16(audio)
        note_str = f"{inst.instrument_str}-{pitch:03d}-{velocity:03d}"
        write_pcm16_wav(Path(audio_dir) / f"{note_str}.wav", pcm, options.sample_rate)
        flags = qualities(pcm.astype(np.float32) / 32768.0, pitch, options.sample_rate)
        result.notes.append({"pitch": pitch, "velocity": velocity, "qualities": flags})
    return result


def _worker(args: tuple[InstrumentPlan, BuildOptions, str]) -> InstrumentResult:
    return render_instrument(*args)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------- the build


@dataclass
class BuildSummary:
    """What a build did, for the CLI's tables."""

    out: Path
    options: BuildOptions
    notes: int
    instruments: int
    planned: int
    rendered_now: int
    resumed_instruments: int
    skipped: dict[str, int]
    counts: dict[str, Any]
    errors: list[str]
    already_complete: bool = False


def _write_json(path: Path, data: Any, *, indent: int | None = 1) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_corpus_json(out: Path) -> dict[str, Any] | None:
    path = out / "corpus.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{path}: unreadable ({_one_line(exc)}); remove the folder or choose another --out") from None
    if not isinstance(data, dict) or data.get("format") != CORPUS_FORMAT:
        raise CorpusError(f"{path}: not written by `instrument-ai data build`; choose another --out")
    return data


def _check_out_folder(out: Path, options: BuildOptions, digest: str) -> dict[str, Any] | None:
    """Refuse a folder built with other options or holding something else; return its corpus.json if any."""
    if out.exists() and not out.is_dir():
        raise CorpusError(f"{out}: exists and is not a folder")
    existing = _read_corpus_json(out) if out.is_dir() else None
    if existing is None:
        if out.is_dir() and any(out.iterdir()):
            raise CorpusError(f"{out}: folder is not empty and holds no corpus.json; choose an empty or new --out")
        return None
    if existing.get("version") != CORPUS_VERSION:
        raise CorpusError(
            f"{out}: corpus format version {existing.get('version')}, this builder writes {CORPUS_VERSION}"
        )
    before = existing.get("options")
    if before != options.to_dict():
        diff = sorted(
            k for k in options.to_dict() if not isinstance(before, dict) or before.get(k) != getattr(options, k)
        )
        changed = ", ".join(
            f"{k} {_show(before.get(k) if isinstance(before, dict) else None)} -> {_show(options.to_dict()[k])}"
            for k in diff
        )
        raise CorpusError(f"{out} was built with other options ({changed}); use another --out or the same options")
    if existing.get("plan_digest") != digest:
        raise CorpusError(
            f"{out}: the library files differ from those it was built from (plan digest "
            f"{existing.get('plan_digest')} != {digest}); use another --out"
        )
    return existing


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _load_partial(out: Path, plan: list[InstrumentPlan]) -> dict[int, InstrumentResult]:
    """Finished-instrument records of an interrupted build (records that do not match the plan are ignored)."""
    done: dict[int, InstrumentResult] = {}
    folder = out / PARTIAL_DIR
    if not folder.is_dir():
        return done
    by_str = {inst.instrument_str: inst for inst in plan}
    for path in sorted(folder.glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            inst = by_str[raw["instrument_str"]]
            result = InstrumentResult(
                inst.index,
                inst.instrument_str,
                raw["notes"],
                {k: int(v) for k, v in raw["skipped"].items()},
                raw.get("error"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        audio = out / "audio"
        if all(
            (audio / f"{inst.instrument_str}-{n['pitch']:03d}-{n['velocity']:03d}.wav").is_file() for n in result.notes
        ):
            done[inst.index] = result
    return done


def _entries(plan: list[InstrumentPlan], results: dict[int, InstrumentResult], sample_rate: int) -> Iterator[dict]:
    """examples.json entries in plan order with running note ids (NSynth's ``note``)."""
    from instrument_ai.train.corpus.qualities import names_of

    note_id = 0
    for inst in plan:
        result = results[inst.index]
        family = gm_programs.GM_PROGRAMS[inst.program]
        for n in result.notes:
            note_str = f"{inst.instrument_str}-{n['pitch']:03d}-{n['velocity']:03d}"
            yield {
                "note": note_id,
                "note_str": note_str,
                "instrument": inst.index,
                "instrument_str": inst.instrument_str,
                "pitch": n["pitch"],
                "velocity": n["velocity"],
                "sample_rate": sample_rate,
                "qualities": list(n["qualities"]),
                "qualities_str": names_of(n["qualities"]),
                "instrument_family": FAMILY_IDS[family.family_str],
                "instrument_family_str": family.family_str,
                "instrument_source": SOURCE_IDS[family.source_str],
                "instrument_source_str": family.source_str,
            }
            note_id += 1


FAMILY_IDS = {name: i for i, name in enumerate(FAMILIES)}
SOURCE_IDS = {name: i for i, name in enumerate(SOURCES)}


def _counts(plan: list[InstrumentPlan], results: dict[int, InstrumentResult]) -> dict[str, Any]:
    """Notes per library x family_source, skipped per library and reason, instrument counts."""
    by_library: dict[str, dict[str, Any]] = {}
    family_source: Counter[str] = Counter()
    skipped_total: Counter[str] = Counter({k: 0 for k in SKIP_REASONS})
    for inst in plan:
        result = results[inst.index]
        lib = by_library.setdefault(
            inst.library,
            {"notes": 0, "instruments": 0, "skipped": dict.fromkeys(SKIP_REASONS, 0), "family_source": Counter()},
        )
        kept = len(result.notes)
        lib["notes"] += kept
        lib["instruments"] += int(kept > 0)
        key = f"{inst.family_str}_{inst.source_str}"
        lib["family_source"][key] += kept
        family_source[key] += kept
        for reason, count in result.skipped.items():
            lib["skipped"][reason] = lib["skipped"].get(reason, 0) + count
            skipped_total[reason] += count
    order = _family_source_order()
    for lib in by_library.values():
        lib["family_source"] = {k: lib["family_source"][k] for k in order if lib["family_source"][k]}
    return {
        "notes": sum(len(r.notes) for r in results.values()),
        "instruments": sum(1 for r in results.values() if r.notes),
        "skipped": dict(skipped_total),
        "family_source": {k: family_source[k] for k in order if family_source[k]},
        "libraries": by_library,
    }


def _family_source_order() -> list[str]:
    return [f"{f}_{s}" for f in FAMILIES for s in SOURCES]


ProgressFactory = Callable[[int, int], Any]
"""(total notes, notes already done) -> an object with ``update(n)`` and ``close()`` (e.g. tqdm)."""


def build(
    out: str | Path,
    options: BuildOptions,
    sources: dict[str, LibrarySource],
    *,
    jobs: int = 1,
    strict: bool = False,
    progress: ProgressFactory | None = None,
    log: Callable[[str], None] | None = None,
) -> BuildSummary:
    """Build (or resume) the corpus in `out`. Raises CorpusError with a one-line message when it cannot."""
    validate_options(options)
    missing = [name for name in options.libraries if name not in sources]
    if missing:
        raise CorpusError(
            f"library {missing[0]} is not installed on this machine (found: {', '.join(sources) or 'none'})"
        )
    say = log or (lambda _msg: None)
    out = Path(out)
    chosen = [sources[name] for name in options.libraries]
    plan = make_plan(chosen, options)
    if not plan:
        raise CorpusError("the chosen libraries hold no program of the GM table: nothing to build")
    digest = plan_digest(plan)
    if out.exists() and not out.is_dir():
        raise CorpusError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"{out}: cannot create ({exc.strerror or exc})") from None
    with _exclusive(out):
        return _build_in(out, options, plan, digest, chosen, jobs=jobs, strict=strict, progress=progress, say=say)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the corpus folder, so two builds never write into one folder at once.

    flock on the folder itself: no lock file is left in the corpus, and the
    kernel releases the lock when a build dies. (No-op where fcntl is missing.)
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CorpusError(
                f"{out}: another build is writing into this folder; wait for it or use another --out"
            ) from None
        yield
    finally:
        os.close(fd)


def _build_in(
    out: Path,
    options: BuildOptions,
    plan: list[InstrumentPlan],
    digest: str,
    chosen: list[LibrarySource],
    *,
    jobs: int,
    strict: bool,
    progress: ProgressFactory | None,
    say: Callable[[str], None],
) -> BuildSummary:
    """The build proper, in a folder this process holds the lock of."""
    existing = _check_out_folder(out, options, digest)
    total_notes = sum(len(inst.notes) for inst in plan)
    if existing is not None and existing.get("status") == "complete":
        return BuildSummary(
            out, options, existing["counts"]["notes"], existing["counts"]["instruments"], total_notes, 0, 0,
            existing["counts"]["skipped"], existing["counts"], [], already_complete=True,
        )  # fmt: skip
    audio_dir = out / "audio"
    audio_dir.mkdir(exist_ok=True)
    (out / PARTIAL_DIR).mkdir(exist_ok=True)
    header = {
        "format": CORPUS_FORMAT,
        "version": CORPUS_VERSION,
        "status": "building",
        "options": options.to_dict(),
        "plan_digest": digest,
    }
    _write_json(out / "corpus.json", header)
    results = _load_partial(out, plan)
    if results:
        say(f"resuming: {len(results)} of {len(plan)} instruments already rendered")
    todo = [inst for inst in plan if inst.index not in results]
    done_notes = sum(len(inst.notes) for inst in plan if inst.index in results)
    bar = progress(total_notes, done_notes) if progress else None
    errors: list[str] = []
    rendered_now = 0
    try:
        for result in _run_tasks(todo, options, str(audio_dir), jobs):
            inst = plan[result.index]
            if result.error:
                errors.append(f"{inst.library} {inst.instrument_str}: {result.error}")
                if strict:
                    raise CorpusError(f"{inst.library} {inst.instrument_str}: {result.error} (--strict)")
                say(f"warning: {inst.library} {inst.instrument_str}: {result.error}")
            record = {
                "instrument_str": result.instrument_str,
                "notes": result.notes,
                "skipped": result.skipped,
                "error": result.error,
            }
            _write_json(out / PARTIAL_DIR / f"{result.index:05d}.json", record, indent=None)
            results[result.index] = result
            rendered_now += len(result.notes)
            if bar is not None:
                bar.update(len(inst.notes))
    finally:
        if bar is not None:
            bar.close()
    from instrument_ai.train.corpus.nsynth import write_examples_json

    write_examples_json(out, _entries(plan, results, options.sample_rate))
    instruments = {inst.instrument_str: inst.info() for inst in plan if results[inst.index].notes}
    _write_json(out / "instruments.json", instruments)
    counts = _counts(plan, results)
    header.update(status="complete", counts=counts, libraries=_library_rows(chosen, plan))
    _write_json(out / "corpus.json", header)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    for leftover in [*out.glob("*.tmp"), *audio_dir.glob("*.tmp")]:  # from a build killed mid-write
        leftover.unlink(missing_ok=True)
    return BuildSummary(
        out, options, counts["notes"], counts["instruments"], total_notes, rendered_now,
        len(plan) - len(todo), counts["skipped"], counts, errors,
    )  # fmt: skip


def _library_rows(chosen: list[LibrarySource], plan: list[InstrumentPlan]) -> dict[str, Any]:
    """Per library: lineage, kind and the number of planned instruments (no paths: they differ per machine)."""
    planned = Counter(inst.library for inst in plan)
    return {s.name: {"lineage": s.lineage, "kind": s.kind, "planned_instruments": planned[s.name]} for s in chosen}


def _run_tasks(
    todo: list[InstrumentPlan], options: BuildOptions, audio_dir: str, jobs: int
) -> Iterator[InstrumentResult]:
    """Render instruments in order, in this process (jobs=1) or in a pool whose workers keep their fonts loaded."""
    if jobs <= 1 or len(todo) <= 1:
        for inst in todo:
            yield render_instrument(inst, options, audio_dir)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no inherited threads or state; workers import lightly
    with context.Pool(processes=jobs) as pool:
        yield from pool.imap(_worker, [(inst, options, audio_dir) for inst in todo], chunksize=1)

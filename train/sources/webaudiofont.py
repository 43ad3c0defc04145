"""A small numpy sampler that plays WebAudioFont presets the way the reference player does.

Why our own: the WebAudioFont banks in ``../shared/sample-libraries/webaudiofont/``
are JavaScript files meant for a browser (``WebAudioFontPlayer.js`` on the Web
Audio API), and no SoundFont renderer reads them. The corpus builder needs each
one as NSynth-style notes: 16 kHz mono, note-on at 0, held, released, no reverb.

File format (one preset per file, ``PPPV_<Library>_sf2[_file].js``)::

    var _tone_0000_X_sf2_file = { zones: [ { midi: 0, originalPitch: 2600, keyRangeLow: 0,
        keyRangeHigh: 27, loopStart: 35640, loopEnd: 70786, coarseTune: 0, fineTune: 1,
        sampleRate: 31000, ahdsr: true, file: '<base64 MP3>' }, ... ] };

It is a JavaScript object literal, not JSON (unquoted keys, single quotes,
``//`` comments, leading commas), so `parse_js_literal` is a small tolerant
recursive-descent reader; nothing is ever evaluated.

How a note is played, following the reference player (``npm/dist/WebAudioFontPlayer.js``
of ``surikov/webaudiofont``, v2.82) and where we deliberately differ:

* **Zone choice** (`zone_for_pitch`): the zone whose ``keyRangeLow..keyRangeHigh``
  holds the pitch; when several do (stereo or layered pairs), the *last* one in
  the file, because the reference searches from the end. The reference also
  rewrites every zone's ``keyRangeLow`` to the previous zone's ``keyRangeHigh``
  and accepts ``high + 1``, which makes it play each zone's top key with the next
  zone's sample, and when no zone matches it silently uses the *first* zone
  however far away. We keep the plain contract ("the zone whose key range holds
  the pitch", as the library author mapped it) and, for a pitch outside every
  zone, the *nearest* zone by key distance (ties: the higher zone, then the later
  one, as for overlaps).
* **Pitch**: playback rate ``2 ** ((100*pitch - (originalPitch - 100*coarseTune - fineTune)) / 1200)``.
  The rate applies to the buffer's own time axis in seconds: a ``file`` zone's
  MP3 is often stored at another rate than the zone's ``sampleRate`` (e.g. a
  31000 Hz sample in a 32000 Hz MP3 of the same duration), so loop points are
  converted with ``loopStart / sampleRate`` seconds, as the browser does.
* **Loop**: when ``1 <= loopStart < loopEnd`` the source loops between the two
  points for as long as it sounds (also during the release, as the reference's
  buffer source stays looped until it is stopped). Fractional loop points (after
  the MP3 rate change) are handled exactly in the position domain.
* **Length**: a looped note sounds for ``hold + release``; a non-looped one at
  most until its sample ends (then silence), and its envelope is shortened so
  that the release ramp ends exactly there, as the reference does. A non-looped
  sample shorter than the release ramp (a few tiny percussive samples, e.g.
  SoundBlasterOld's 72-sample glockenspiel) therefore comes out silent, as it
  does in the reference; the corpus builder skips silent notes.
* **Undecodable audio**: one real zone (JCLive 011, zone 3, a 225-byte MP3) is
  refused by libsndfile. Rendering a pitch that needs it raises `WafError`
  naming the file and zone; the preset's other keys still play, so a caller can
  skip just those notes (`WafPreset.decode_all` checks every zone up front).
* **Envelope**: ``ahdsr: true`` uses the reference's default points (volume 1 at
  0 s, 1 after 0.5 s, 0.5 after 1.5 s more, 0 after 3 s more; durations are
  increments), an array uses its own ``{duration, volume}`` points, ``false`` is
  flat. Points are cut at note-off by linear interpolation (including the
  reference's quirk of interpolating the first cut segment from volume 0), then
  a linear ramp to zero over ``release_seconds`` (the reference's ``afterTime``,
  0.05 s). The reference has no other release stage, so none is added here.
* **Velocity**: the reference takes a linear ``volume`` (default 0.5) and no
  velocity; we use ``volume * velocity / 127``, the linear velocity gain that
  tinysoundfont applies on the SoundFont path, so both paths scale alike.
* **Levels**: a ``sample`` zone's int16 PCM is read as ``n / 32768`` (full
  scale, like the decoded MP3s); the reference divides by 65536, which would
  play the raw-PCM banks 6 dB quieter than the MP3 ones for no musical reason.

Resampling: the reference lets the browser resample; we compute each output
sample's fractional source position (exact, in float64, wrapped into the loop)
and interpolate with a 4-point Catmull-Rom cubic. Decimating is the common case
here (a 44.1 kHz source read into 16 kHz output is a step of 2.76 source
samples per output sample even at the root key), so the source is first
band-limited with one FFT: low-passed to the output's Nyquist frequency (flat
to 90 % of it, raised-cosine to zero at it) whenever the step exceeds 1, and
inverse-transformed at a length that resamples it so that the cubic reads at
a step just above 2, where the cubic's own images stay 40-60 dB down (at a
step near 1 they reach -17 dB close to Nyquist). Aliasing from pitching up is
removed at the source, pitching down gets a band-limited interpolation, and
the cost grows with the length of source read (a loop is read once), not with
the note length times the pitch ratio. A test pitches 1 kHz + 6 kHz up an
octave and finds the 12 kHz partial's alias at 4 kHz more than 60 dB down.

Speed: the velocity only scales the output, so each preset keeps a small cache
of unit-gain renderings; rendering the other velocities of a pitch is then a
multiply. Zone audio is decoded on first use and kept with its preset.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import io
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.errors import InstrumentAIError

LIBRARIES: tuple[str, ...] = (
    "GeneralUserGS",
    "Aspirin",
    "SoundBlasterOld",
    "JCLive",
    "LesPaul",
    "Stratocaster",
    "Gibson_Les_Paul",
    "Acoustic_Guitar",
    "SBAWE32",
    "Soul_Ahhs",
)
"""The library names found in the shared WebAudioFont folder (file name part)."""

REFERENCE_RELEASE_SECONDS = 0.05
"""The reference player's ``afterTime``: the linear ramp to silence after note-off."""

REFERENCE_VOLUME = 0.5
"""The reference player's default ``volume`` (gain at full velocity)."""

DEFAULT_AHDSR: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.5, 1.0), (1.5, 0.5), (3.0, 0.0))
"""The reference player's envelope for ``ahdsr: true`` as (duration increment s, volume) points."""

_BANK_NAME = re.compile(r"^(?P<program>\d{3})(?P<variant>\d)_(?P<library>.+?)_sf2(?P<file>_file)?\.js$")
_UNIT_CACHE_SIZE = 8


class WafError(InstrumentAIError, ValueError):
    """A WebAudioFont bank or request that cannot be played; the message is one line."""


# --------------------------------------------------------------------------- JS object literal reader


class _JsReader:
    """Recursive-descent reader for a JavaScript object literal (a tolerant superset of JSON).

    Accepts unquoted and quoted keys, single- or double-quoted strings, ``//`` and
    ``/* */`` comments, trailing, leading and doubled commas, ``true/false/null/
    undefined``, ``NaN``/``Infinity``, hex and signed numbers, and constant arithmetic
    on numbers (``4200-140``), computed here, never evaluated as code. Strings of megabytes
    (the base64 audio) are sliced out with ``str.find``, not walked char by char.
    """

    _IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
    _NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Infinity|NaN")
    _DIGITS = re.compile(r"\d+")
    _KEYWORDS: dict[str, Any] = {"true": True, "false": False, "null": None, "undefined": None}
    _ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}

    def __init__(self, text: str, pos: int = 0) -> None:
        self.text = text
        self.pos = pos

    def fail(self, message: str) -> WafError:
        line = self.text.count("\n", 0, self.pos) + 1
        column = self.pos - (self.text.rfind("\n", 0, self.pos) + 1) + 1
        return WafError(f"line {line}, column {column}: {message}")

    def skip(self) -> None:
        """Skip whitespace and comments."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch in " \t\r\n\ufeff\u00a0":
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("unterminated /* comment")
                self.pos = end + 2
            else:
                return

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def value(self) -> Any:
        ch = self.peek()
        if ch == "":
            raise self.fail("unexpected end of input")
        if ch == "{":
            return self.obj()
        if ch == "[":
            return self.array()
        if ch in "'\"":
            return self.string()
        if ch in "+-.(0123456789" or self.text.startswith(("Infinity", "NaN"), self.pos):
            return self.arithmetic()
        match = self._IDENT.match(self.text, self.pos)
        if match and match.group() in self._KEYWORDS:
            self.pos = match.end()
            return self._KEYWORDS[match.group()]
        found = match.group() if match else repr(ch)
        raise self.fail(f"unexpected {found} (only literal values are allowed)")

    def arithmetic(self) -> int | float:
        """A number, or constant arithmetic on numbers (``4200-140`` occurs in a real bank): + - * / ( )."""
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.text[self.pos]
            self.pos += 1
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> int | float:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op = self.text[self.pos]
            self.pos += 1
            rhs = self.factor()
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise self.fail("division by zero")
            else:
                value = value / rhs
        return value

    def factor(self) -> int | float:
        ch = self.peek()
        if ch in ("+", "-"):
            self.pos += 1
            inner = self.factor()
            return -inner if ch == "-" else inner
        if ch == "(":
            self.pos += 1
            inner = self.arithmetic()
            if self.peek() != ")":
                raise self.fail("expected ')'")
            self.pos += 1
            return inner
        match = self._NUMBER.match(self.text, self.pos)
        if not match:
            raise self.fail(f"expected a number, found {ch!r}" if ch else "unexpected end of input")
        self.pos = match.end()
        body = match.group()
        if body[:2] in ("0x", "0X"):
            return int(body, 16)
        if body == "Infinity":
            return math.inf
        if body == "NaN":
            return math.nan
        return int(body) if body.isdigit() else float(body)

    def string(self) -> str:
        quote = self.text[self.pos]
        start = self.pos + 1
        end = self.text.find(quote, start)
        if end < 0:
            raise self.fail("unterminated string")
        if self.text.find("\\", start, end) < 0 and self.text.find("\n", start, end) < 0:
            self.pos = end + 1
            return self.text[start:end]
        out: list[str] = []
        i, text, n = start, self.text, len(self.text)
        while i < n:
            ch = text[i]
            if ch == quote:
                self.pos = i + 1
                return "".join(out)
            if ch == "\n":
                self.pos = i
                raise self.fail("newline inside a string")
            if ch == "\\" and i + 1 < n:
                nxt = text[i + 1]
                if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
                    out.append(chr(int(text[i + 2 : i + 6], 16)))
                    i += 6
                elif nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2 : i + 4]):
                    out.append(chr(int(text[i + 2 : i + 4], 16)))
                    i += 4
                elif nxt == "\n":  # line continuation
                    i += 2
                else:
                    out.append(self._ESCAPES.get(nxt, nxt))
                    i += 2
                continue
            out.append(ch)
            i += 1
        self.pos = start - 1
        raise self.fail("unterminated string")

    def key(self) -> str:
        ch = self.peek()
        if ch and ch in "'\"":
            return self.string()
        match = self._IDENT.match(self.text, self.pos) or self._DIGITS.match(self.text, self.pos)
        if not match:
            raise self.fail(f"expected a key, found {ch!r}" if ch else "unexpected end of input in an object")
        self.pos = match.end()
        return match.group()

    def obj(self) -> dict[str, Any]:
        self.pos += 1  # "{"
        out: dict[str, Any] = {}
        while True:
            ch = self.peek()
            if ch == "}":
                self.pos += 1
                return out
            if ch == ",":  # trailing, leading or doubled commas are tolerated
                self.pos += 1
                continue
            if not ch:
                raise self.fail("unexpected end of input in an object (missing '}')")
            name = self.key()
            if self.peek() != ":":
                raise self.fail(f"expected ':' after key {name!r}")
            self.pos += 1
            out[name] = self.value()
            if self.peek() not in ",}":
                raise self.fail(f"expected ',' or '}}' after the value of {name!r}")

    def array(self) -> list[Any]:
        self.pos += 1  # "["
        out: list[Any] = []
        while True:
            ch = self.peek()
            if ch == "]":
                self.pos += 1
                return out
            if ch == ",":  # holes and trailing commas are skipped
                self.pos += 1
                continue
            if not ch:
                raise self.fail("unexpected end of input in an array (missing ']')")
            out.append(self.value())
            if self.peek() not in ",]":
                raise self.fail("expected ',' or ']' in an array")


def parse_js_literal(text: str) -> Any:
    """Read the first object literal assigned in `text` (``var x = {...};``) or the first ``{`` found.

    Raises `WafError` with the line and column of the first problem.
    """
    match = re.search(r"=\s*\{", text)
    start = match.end() - 1 if match else text.find("{")
    if start < 0:
        raise WafError("no object literal found")
    reader = _JsReader(text, start)
    return reader.value()


# --------------------------------------------------------------------------- data model


@dataclass
class WafZone:
    """One sample of a preset with the keys it covers, its tuning, loop and envelope.

    Numbers default as in the reference player when absent. ``ahdsr`` is True (the
    default envelope), False (flat) or a tuple of (duration increment s, volume) points.
    """

    index: int
    key_low: int
    key_high: int
    original_pitch: float  # cents, 6000 = MIDI 60
    coarse_tune: float  # semitones
    fine_tune: float  # cents
    sample_rate: float
    loop_start: float  # samples at sample_rate
    loop_end: float
    ahdsr: bool | tuple[tuple[float, float], ...]
    encoding: str  # "file" (base64 of a compressed file) or "sample" (base64 of int16 LE PCM)
    payload: str = field(repr=False)
    source: str = ""  # the bank file, for error messages
    _audio: tuple[np.ndarray, float] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def looped(self) -> bool:
        """The reference's rule: loop while sounding when ``1 <= loopStart < loopEnd``."""
        return 1 <= self.loop_start < self.loop_end

    def playback_rate(self, pitch: float) -> float:
        """Source seconds played per output second for `pitch` (MIDI)."""
        base = self.original_pitch - 100.0 * self.coarse_tune - self.fine_tune
        return float(2.0 ** ((100.0 * pitch - base) / 1200.0))

    def audio(self) -> tuple[np.ndarray, float]:
        """The decoded mono float32 buffer (full scale +-1) and its own sample rate; decoded once."""
        if self._audio is None:
            self._audio = _decode_zone(self)
        return self._audio

    def clear_audio(self) -> None:
        """Drop the decoded buffer (the corpus builder frees memory between presets)."""
        self._audio = None


@dataclass
class WafPreset:
    """One WebAudioFont preset: an instrument of a library (GM program 0-based, variant)."""

    library: str
    program: int
    variant: int
    zones: list[WafZone]
    path: Path | None = None
    _unit_cache: OrderedDict[tuple[Any, ...], np.ndarray] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )

    @property
    def name(self) -> str:
        """A stable instrument name: ``<library>_<program:03d>_<variant>``."""
        return f"{self.library}_{self.program:03d}_{self.variant}"

    def decode_all(self) -> None:
        """Decode every zone now, so a corrupt bank fails here rather than at its first note."""
        for zone in self.zones:
            zone.audio()

    def clear_cache(self) -> None:
        """Free decoded audio and cached renderings."""
        for zone in self.zones:
            zone.clear_audio()
        self._unit_cache.clear()


@dataclass(frozen=True)
class BankFile:
    """A bank file and what its name says: ``PPPV_<Library>_sf2[_file].js``."""

    path: Path
    library: str
    program: int  # General MIDI program, 0-based
    variant: int  # preset variant within the library
    encoding: str  # "file" (compressed audio, ``_sf2_file``) or "sample" (raw PCM, ``_sf2``)

    @property
    def name(self) -> str:
        return f"{self.library}_{self.program:03d}_{self.variant}"


def _bank_name_parts(path: Path) -> tuple[str, int, int, str] | None:
    match = _BANK_NAME.match(path.name)
    if not match:
        return None
    encoding = "file" if match.group("file") else "sample"
    return match.group("library"), int(match.group("program")), int(match.group("variant")), encoding


def list_bank_files(root: str | Path) -> list[BankFile]:
    """Every bank file under `root`, one per (library, program, variant), sorted by library, program, variant.

    A library shipped in both encodings (LesPaul has ``_sf2`` raw PCM and ``_sf2_file``
    MP3 copies of the same presets) is listed once, preferring the lossless raw PCM,
    so the same instrument never appears twice in a corpus.
    """
    root = Path(root)
    if not root.is_dir():
        raise WafError(f"WebAudioFont folder not found: {root}")
    chosen: dict[tuple[str, int, int], BankFile] = {}
    for path in sorted(root.glob("*.js")):
        parts = _bank_name_parts(path)
        if parts is None:
            continue
        library, program, variant, encoding = parts
        bank = BankFile(path=path, library=library, program=program, variant=variant, encoding=encoding)
        key = (library, program, variant)
        if key not in chosen or (encoding == "sample" and chosen[key].encoding == "file"):
            chosen[key] = bank
    if not chosen:
        raise WafError(f"no WebAudioFont bank files (PPPV_<Library>_sf2[_file].js) in {root}")
    return sorted(chosen.values(), key=lambda b: (b.library, b.program, b.variant))


def _num(zone: dict[str, Any], key: str, default: float, where: str) -> float:
    value = zone.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WafError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def _ahdsr(value: Any, where: str) -> bool | tuple[tuple[float, float], ...]:
    if isinstance(value, list):
        if not value:  # the reference treats an empty array like `true`
            return True
        points = []
        for point in value:
            if not isinstance(point, dict):
                raise WafError(f"{where}: ahdsr points must be objects with duration and volume")
            duration, volume = _num(point, "duration", 0.0, where), _num(point, "volume", 0.0, where)
            if duration < 0:
                raise WafError(f"{where}: ahdsr duration must be >= 0, got {duration}")
            points.append((duration, volume))
        return tuple(points)
    return bool(value)


def _zone_from_dict(raw: Any, index: int, source: str) -> WafZone | None:
    where = f"{source}: zone {index}"
    if not isinstance(raw, dict):
        raise WafError(f"{where}: a zone must be an object")
    if isinstance(raw.get("sample"), str) and raw["sample"]:
        encoding, payload = "sample", raw["sample"]
    elif isinstance(raw.get("file"), str) and raw["file"]:
        encoding, payload = "file", raw["file"]
    else:
        return None  # the reference skips a zone without audio ("empty buffer")
    key_low, key_high = _num(raw, "keyRangeLow", 0, where), _num(raw, "keyRangeHigh", 127, where)
    if key_low > key_high:
        return None  # dropped by the reference too ("pathological case")
    sample_rate = _num(raw, "sampleRate", 44100, where)
    if sample_rate <= 0:
        raise WafError(f"{where}: sampleRate must be > 0, got {sample_rate}")
    return WafZone(
        index=index,
        key_low=int(key_low),
        key_high=int(key_high),
        original_pitch=_num(raw, "originalPitch", 6000, where),
        coarse_tune=_num(raw, "coarseTune", 0, where),
        fine_tune=_num(raw, "fineTune", 0, where),
        sample_rate=sample_rate,
        loop_start=_num(raw, "loopStart", 0, where),
        loop_end=_num(raw, "loopEnd", 0, where),
        ahdsr=_ahdsr(raw.get("ahdsr", False), where),
        encoding=encoding,
        payload=payload,
        source=source,
    )


def parse_bank_file(path: str | Path) -> WafPreset:
    """Read one bank file into a `WafPreset` (audio is decoded later, on first use).

    Library, program and variant come from the file name when it follows the
    ``PPPV_<Library>_sf2[_file].js`` pattern, else library = file stem, program =
    the zones' ``midi`` and variant 0. Raises `WafError` (one line, with the file
    name) for an unreadable file, a malformed literal or a preset without audio.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise WafError(f"{path.name}: cannot read: {exc}") from None
    try:
        data = parse_js_literal(text)
    except WafError as exc:
        raise WafError(f"{path.name}: not a WebAudioFont preset: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("zones"), list):
        raise WafError(f"{path.name}: not a WebAudioFont preset: no 'zones' array")
    zones = [z for i, raw in enumerate(data["zones"]) if (z := _zone_from_dict(raw, i, path.name)) is not None]
    if not zones:
        raise WafError(f"{path.name}: preset has no playable zone")
    parts = _bank_name_parts(path)
    if parts is not None:
        library, program, variant, _ = parts
    else:
        midi = data["zones"][0].get("midi", 0) if isinstance(data["zones"][0], dict) else 0
        library, program, variant = path.stem, int(midi) if isinstance(midi, (int, float)) else 0, 0
    return WafPreset(library=library, program=program, variant=variant, zones=zones, path=path)


def _audio_kind(raw: bytes) -> str:
    """A name for the compressed format, for error messages only."""
    if raw[:3] == b"ID3" or (len(raw) > 1 and raw[0] == 0xFF and raw[1] & 0xE0 == 0xE0):
        return "MP3"
    return {b"RIFF": "WAV", b"OggS": "Ogg", b"fLaC": "FLAC"}.get(raw[:4], "unknown")


def _decode_zone(zone: WafZone) -> tuple[np.ndarray, float]:
    where = f"{zone.source}: zone {zone.index}"
    try:
        raw = base64.b64decode(zone.payload, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise WafError(f"{where}: bad base64 audio: {exc}") from None
    if zone.encoding == "sample":
        if len(raw) < 4:
            raise WafError(f"{where}: raw sample is empty")
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")
        return (pcm.astype(np.float32) / np.float32(32768.0)), float(zone.sample_rate)
    import soundfile  # only the sampler needs it; keeps `import` of this module light

    try:
        audio, rate = soundfile.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises its own error types; all mean "cannot decode"
        reason = re.sub(r"^Error opening <[^>]*>: ", "", (str(exc) or type(exc).__name__).splitlines()[0])
        raise WafError(
            f"{where}: cannot decode the {len(raw)}-byte {_audio_kind(raw)} audio file (libsndfile: {reason})"
        ) from None
    if audio.shape[0] < 2:
        raise WafError(f"{where}: decoded audio is empty")
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    return np.ascontiguousarray(mono), float(rate)


# --------------------------------------------------------------------------- playing


def zone_for_pitch(preset: WafPreset, pitch: int) -> WafZone:
    """The zone that plays `pitch`: the last zone whose key range holds it, else the nearest zone.

    See the module docstring for how the reference player differs at zone edges and gaps.
    """
    if not preset.zones:
        raise WafError(f"{preset.name}: preset has no zones")
    for zone in reversed(preset.zones):
        if zone.key_low <= pitch <= zone.key_high:
            return zone

    def distance(zone: WafZone) -> tuple[float, int, int]:
        gap = zone.key_low - pitch if pitch < zone.key_low else pitch - zone.key_high
        return gap, -zone.key_high, -zone.index  # ties: the higher zone, then the later one

    return min(preset.zones, key=distance)


def _envelope_points(
    ahdsr: bool | tuple[tuple[float, float], ...], duration: float, release: float
) -> tuple[list[float], list[float]]:
    """Breakpoints (times, gains) of the reference's piecewise-linear envelope for a note of `duration`."""
    if ahdsr is True:
        points: tuple[tuple[float, float], ...] = DEFAULT_AHDSR
    elif ahdsr is False:
        points = ((0.0, 1.0), (duration, 1.0))
    else:
        points = ahdsr
    times, gains = [0.0], [points[0][1]]
    last_time, last_gain = 0.0, 0.0  # the reference starts its cut interpolation from 0
    for step, gain in points:
        if step <= 0:
            continue
        if last_time + step > duration:
            r = 1.0 - (step + last_time - duration) / step
            times.append(duration)
            gains.append(last_gain - r * (last_gain - gain))
            break
        last_time += step
        last_gain = gain
        times.append(last_time)
        gains.append(gain)
    times.append(max(duration, times[-1]) + release)
    gains.append(0.0)
    return times, gains


@functools.cache
def _smooth_sizes() -> list[int]:
    """Sorted 2^a 3^b 5^c numbers up to 2^25: FFT sizes numpy transforms fastest."""
    out, limit = [], 1 << 25
    p2 = 1
    while p2 <= limit:
        p3 = p2
        while p3 <= limit:
            p5 = p3
            while p5 <= limit:
                out.append(p5)
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return sorted(out)


def _smooth_at_least(n: int) -> int:
    sizes = _smooth_sizes()
    i = bisect.bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else n


def _played_source(buf: np.ndarray, loop: tuple[float, float] | None, length: int) -> np.ndarray:
    """The buffer as the player reads it, index by index, for `length` samples (loop unrolled past its end)."""
    out = np.zeros(length, dtype=np.float64)
    if loop is None:
        n = min(length, len(buf))
        out[:n] = buf[:n]
        return out
    start, end = loop
    head = min(length, math.ceil(end))
    out[:head] = buf[:head]
    if length > head:
        pos = np.arange(head, length, dtype=np.float64)
        pos = start + np.mod(pos - start, end - start)
        out[head:] = np.interp(pos, np.arange(len(buf), dtype=np.float64), buf)
    return out


def _band_limited(x: np.ndarray, step: float) -> tuple[np.ndarray, float]:
    """Band-limit `x` to the output's Nyquist and resample it so the cubic then reads at a step of 2 to ~2.2.

    One forward FFT of the source (zero-padded to a fast size), a raised-cosine low-pass
    flat to 90 % of the output Nyquist frequency (0.5/step cycles per source sample) when
    decimating, and one inverse FFT of a different length m, which is the same band-limited
    signal sampled every nfft/m source samples. Positions must be multiplied by the
    returned scale m/nfft. Reading at a step of at least 2 keeps the cubic's own images
    40-60 dB down (the cubic alone at a step near 1 leaves them at -17 dB near Nyquist).
    """
    pad = int(80 * max(step, 1.0)) + 64  # room for the filter's ringing: the FFT is circular
    nfft = _smooth_at_least(len(x) + pad)
    m = _smooth_at_least(math.ceil(2.0 * nfft / step))
    spectrum = np.fft.rfft(x, n=nfft)  # float64: numpy's float32 transform is slower here
    keep = min(len(spectrum), m // 2 + 1)
    if step > 1.0:
        cutoff = 0.5 * nfft / step  # output Nyquist, in bins
        stop = min(keep, math.ceil(cutoff))
        flat = min(stop, math.floor(0.9 * cutoff) + 1)
        keep = stop
        ramp = (cutoff - np.arange(flat, stop, dtype=np.float64)) / (0.1 * cutoff)
        spectrum[flat:stop] *= 0.5 - 0.5 * np.cos(np.pi * ramp)
    # irfft zero-fills the bins above `keep`, and divides by m where the forward transform's
    # inverse would divide by nfft.
    y = np.fft.irfft(spectrum[:keep], n=m)
    y *= m / nfft
    return y.astype(np.float32), m / nfft


def _unit_note(
    preset: WafPreset, pitch: int, sample_rate: int, hold_seconds: float, total_seconds: float, release: float
) -> np.ndarray:
    """The note at gain 1: the zone's audio at the note's pitch, looped, enveloped; velocity not applied."""
    zone = zone_for_pitch(preset, pitch)
    buf, buf_rate = zone.audio()
    rate = zone.playback_rate(pitch)
    step = rate * buf_rate / sample_rate  # source samples per output sample
    n_out = int(round(total_seconds * sample_rate))

    loop: tuple[float, float] | None = None
    if zone.looped:
        start = zone.loop_start / zone.sample_rate * buf_rate
        end = min(zone.loop_end / zone.sample_rate * buf_rate, float(len(buf)))
        if end - start >= 1.0:
            loop = (start, end)

    wave_seconds = hold_seconds + release
    if loop is None:
        wave_seconds = min(wave_seconds, len(buf) / buf_rate / rate)
    env_seconds = hold_seconds
    if wave_seconds < hold_seconds + release:
        env_seconds = max(0.0, wave_seconds - release)
    n_wave = min(n_out, math.ceil(wave_seconds * sample_rate - 1e-9))
    out = np.zeros(n_out, dtype=np.float32)
    if n_wave <= 0:
        return out

    pos = np.arange(n_wave, dtype=np.float64)
    pos *= step
    context = int(80 * max(step, 1.0)) + 8  # what the low-pass sees past the last sample read
    if loop is not None:
        start, end = loop
        first_wrap = min(n_wave, math.ceil(end / step))
        while first_wrap > 0 and pos[first_wrap - 1] >= end:
            first_wrap -= 1
        pos[first_wrap:] = start + np.mod(pos[first_wrap:] - start, end - start)
        needed = math.ceil(end) + context
    else:
        needed = min(len(buf), math.ceil(pos[-1]) + context)
    source, scale = _band_limited(_played_source(buf, loop, needed), step)
    pos *= scale

    # 4-point Catmull-Rom cubic; one zero of padding in front, three behind. In-place
    # arithmetic: every temporary here is as long as the note.
    padded = np.concatenate((np.zeros(1, np.float32), source.astype(np.float32, copy=False), np.zeros(3, np.float32)))
    index = pos.astype(np.int64)  # positions are >= 0, so truncation is floor
    frac = (pos - index).astype(np.float32)
    xm1, x0, x1, x2 = padded[index], padded[index + 1], padded[index + 2], padded[index + 3]
    c3 = x2 - xm1
    c3 *= 0.5
    x2 *= 0.5
    c2 = xm1 - x2  # xm1 - 2.5 x0 + 2 x1 - 0.5 x2
    c1 = x1 - xm1
    c1 *= 0.5
    x1 -= x0  # x1 is now x1 - x0
    c2 += x1 * 2.0
    c2 -= x0 * 0.5
    c3 -= x1 * 1.5  # 0.5 (x2 - xm1) + 1.5 (x0 - x1)
    c3 *= frac
    c3 += c2
    c3 *= frac
    c3 += c1
    c3 *= frac
    c3 += x0
    wave = c3

    times, gains = _envelope_points(zone.ahdsr, env_seconds, release)
    wave *= _envelope(times, gains, n_wave, sample_rate)
    out[:n_wave] = wave
    return out


def _envelope(times: list[float], gains: list[float], n: int, sample_rate: int) -> np.ndarray:
    """The piecewise-linear envelope through (times, gains) at ``t = i / sample_rate``, float32.

    Same values as ``np.interp`` (flat outside the points), built segment by segment so
    the flat stretches cost a fill, not an interpolation.
    """
    env = np.empty(n, dtype=np.float32)
    edges = [min(n, max(0, math.ceil(t * sample_rate - 1e-9))) for t in times]
    env[: edges[0]] = gains[0]
    for i in range(len(times) - 1):
        lo, hi = edges[i], edges[i + 1]
        if hi <= lo:
            continue
        g0, g1, t0, t1 = gains[i], gains[i + 1], times[i], times[i + 1]
        if g0 == g1 or t1 <= t0:
            env[lo:hi] = g1 if t1 <= t0 else g0
        else:
            t = np.arange(lo, hi, dtype=np.float64) / sample_rate
            env[lo:hi] = g0 + (g1 - g0) * (t - t0) / (t1 - t0)
    env[edges[-1] :] = gains[-1]
    return env


def render_note(
    preset: WafPreset,
    pitch: int,
    velocity: int,
    *,
    sample_rate: int = 16000,
    hold_seconds: float = 3.0,
    total_seconds: float = 4.0,
    release_seconds: float = REFERENCE_RELEASE_SECONDS,
    volume: float = REFERENCE_VOLUME,
) -> np.ndarray:
    """Play one note: float32 mono, exactly ``round(total_seconds * sample_rate)`` samples, no reverb.

    Note-on at 0, note-off at `hold_seconds`, then the reference's release ramp.
    Gain is ``volume * velocity / 127``. Deterministic. Raises `WafError` for a bad
    argument or a bank whose audio cannot be decoded.
    """
    if isinstance(pitch, bool) or not isinstance(pitch, (int, np.integer)) or not 0 <= pitch <= 127:
        raise WafError(f"pitch must be a MIDI key 0-127, got {pitch!r}")
    if isinstance(velocity, bool) or not isinstance(velocity, (int, np.integer)) or not 1 <= velocity <= 127:
        raise WafError(f"velocity must be 1-127, got {velocity!r}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1000:
        raise WafError(f"sample_rate must be an integer >= 1000 Hz, got {sample_rate!r}")
    if not (math.isfinite(total_seconds) and total_seconds > 0):
        raise WafError(f"total_seconds must be > 0, got {total_seconds!r}")
    if not (math.isfinite(hold_seconds) and 0 <= hold_seconds <= total_seconds):
        raise WafError(f"hold_seconds must be between 0 and total_seconds, got {hold_seconds!r}")
    if not (math.isfinite(release_seconds) and release_seconds >= 0):
        raise WafError(f"release_seconds must be >= 0, got {release_seconds!r}")
    if not (math.isfinite(volume) and volume >= 0):
        raise WafError(f"volume must be >= 0, got {volume!r}")

    key = (int(pitch), int(sample_rate), float(hold_seconds), float(total_seconds), float(release_seconds))
    cache = preset._unit_cache
    if key in cache:
        cache.move_to_end(key)
        unit = cache[key]
    else:
        unit = _unit_note(preset, int(pitch), int(sample_rate), hold_seconds, total_seconds, release_seconds)
        cache[key] = unit
        while len(cache) > _UNIT_CACHE_SIZE:
            cache.popitem(last=False)
    return unit * np.float32(volume * int(velocity) / 127.0)

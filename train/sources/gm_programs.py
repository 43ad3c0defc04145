"""General MIDI programs -> NSynth family/source labels and playable pitch ranges.

The label table is the project's contract (issue 3) and is used exactly: a GM
program that is not listed is left out of every corpus. Plucked "strings"
(pizzicato, harp, sitar, shamisen, koto), the distorted "charang" lead and the
whistle are left out on purpose because their sound contradicts their GM family;
pads, effects and percussion are left out because NSynth has no family for them.

Pitch ranges are *instrument* ranges, not all 88 keys: a contrabass note at
C8 exists in a SoundFont only as a resampled artefact, and training on such
notes teaches the model sounds no real instrument makes. Source of the ranges:

* orchestral and band instruments: sounding (concert) ranges from standard
  orchestration references (S. Adler, *The Study of Orchestration*, 3rd ed.,
  and the instrument tables of Wikipedia's "Range (music)"), professional
  upper limits trimmed to what a sampled library covers well;
* keyboards, organs, mallets: the instrument's keyboard compass (piano A0-C8,
  Rhodes/CP-70 73 keys E1-E7, harpsichord F1-F6, 61-key organ manual C2-C7,
  glockenspiel G5-C8, xylophone F4-C8, 5-octave marimba C2-C7, ...);
* guitars and basses: standard tuning, open low string to the 19th-24th fret;
* electronic/synthetic programs (synth bass, synth strings, synth brass,
  leads): a practical playing range chosen by us, since a synthesiser has none.

All ranges lie within NSynth's 21-108 and are inclusive MIDI note numbers.
"""

from __future__ import annotations

from typing import NamedTuple

NSYNTH_PITCH_MIN = 21
NSYNTH_PITCH_MAX = 108


class GmProgram(NamedTuple):
    """One GM program (0-based) with its NSynth labels and playable range."""

    program: int
    name: str
    family_str: str
    source_str: str
    low: int
    high: int


def _p(program: int, name: str, family: str, source: str, low: int, high: int) -> GmProgram:
    return GmProgram(program, name, family, source, low, high)


# fmt: off
_TABLE: tuple[GmProgram, ...] = (
    # keyboard/acoustic: 0, 1, 3, 6, 8
    _p(0, "Acoustic Grand Piano", "keyboard", "acoustic", 21, 108),
    _p(1, "Bright Acoustic Piano", "keyboard", "acoustic", 21, 108),
    _p(3, "Honky-tonk Piano", "keyboard", "acoustic", 21, 108),
    _p(6, "Harpsichord", "keyboard", "acoustic", 29, 89),
    _p(8, "Celesta", "keyboard", "acoustic", 60, 108),
    # keyboard/electronic: 2, 4, 5, 7
    _p(2, "Electric Grand Piano", "keyboard", "electronic", 28, 100),
    _p(4, "Electric Piano 1", "keyboard", "electronic", 28, 100),
    _p(5, "Electric Piano 2", "keyboard", "electronic", 28, 100),
    _p(7, "Clavinet", "keyboard", "electronic", 29, 88),
    # mallet/acoustic: 9-14, 108
    _p(9, "Glockenspiel", "mallet", "acoustic", 79, 108),
    _p(10, "Music Box", "mallet", "acoustic", 60, 96),
    _p(11, "Vibraphone", "mallet", "acoustic", 53, 89),
    _p(12, "Marimba", "mallet", "acoustic", 36, 96),
    _p(13, "Xylophone", "mallet", "acoustic", 65, 108),
    _p(14, "Tubular Bells", "mallet", "acoustic", 60, 77),
    _p(108, "Kalimba", "mallet", "acoustic", 60, 88),
    # organ/electronic: 16, 17, 18; organ/acoustic: 19, 20
    _p(16, "Drawbar Organ", "organ", "electronic", 36, 96),
    _p(17, "Percussive Organ", "organ", "electronic", 36, 96),
    _p(18, "Rock Organ", "organ", "electronic", 36, 96),
    _p(19, "Church Organ", "organ", "acoustic", 24, 96),
    _p(20, "Reed Organ", "organ", "acoustic", 41, 89),
    # reed/acoustic: 21, 22, 23, 64-71, 109, 111
    _p(21, "Accordion", "reed", "acoustic", 53, 93),
    _p(22, "Harmonica", "reed", "acoustic", 60, 96),
    _p(23, "Tango Accordion", "reed", "acoustic", 41, 93),
    _p(64, "Soprano Sax", "reed", "acoustic", 56, 87),
    _p(65, "Alto Sax", "reed", "acoustic", 49, 81),
    _p(66, "Tenor Sax", "reed", "acoustic", 44, 76),
    _p(67, "Baritone Sax", "reed", "acoustic", 37, 69),
    _p(68, "Oboe", "reed", "acoustic", 58, 91),
    _p(69, "English Horn", "reed", "acoustic", 52, 81),
    _p(70, "Bassoon", "reed", "acoustic", 34, 75),
    _p(71, "Clarinet", "reed", "acoustic", 50, 94),
    _p(109, "Bagpipe", "reed", "acoustic", 67, 81),
    _p(111, "Shanai", "reed", "acoustic", 60, 84),
    # guitar/acoustic: 24, 25, 105; guitar/electronic: 26-31
    _p(24, "Acoustic Guitar (nylon)", "guitar", "acoustic", 40, 83),
    _p(25, "Acoustic Guitar (steel)", "guitar", "acoustic", 40, 86),
    _p(105, "Banjo", "guitar", "acoustic", 50, 81),
    _p(26, "Electric Guitar (jazz)", "guitar", "electronic", 40, 86),
    _p(27, "Electric Guitar (clean)", "guitar", "electronic", 40, 88),
    _p(28, "Electric Guitar (muted)", "guitar", "electronic", 40, 76),
    _p(29, "Overdriven Guitar", "guitar", "electronic", 40, 88),
    _p(30, "Distortion Guitar", "guitar", "electronic", 40, 88),
    _p(31, "Guitar Harmonics", "guitar", "electronic", 52, 88),
    # bass/acoustic: 32; bass/electronic: 33-37; bass/synthetic: 38, 39
    _p(32, "Acoustic Bass", "bass", "acoustic", 28, 67),
    _p(33, "Electric Bass (finger)", "bass", "electronic", 28, 67),
    _p(34, "Electric Bass (pick)", "bass", "electronic", 28, 67),
    _p(35, "Fretless Bass", "bass", "electronic", 28, 67),
    _p(36, "Slap Bass 1", "bass", "electronic", 28, 67),
    _p(37, "Slap Bass 2", "bass", "electronic", 28, 67),
    _p(38, "Synth Bass 1", "bass", "synthetic", 24, 60),
    _p(39, "Synth Bass 2", "bass", "synthetic", 24, 60),
    # string/acoustic: 40-44, 48, 49, 110; string/synthetic: 50, 51
    _p(40, "Violin", "string", "acoustic", 55, 100),
    _p(41, "Viola", "string", "acoustic", 48, 88),
    _p(42, "Cello", "string", "acoustic", 36, 76),
    _p(43, "Contrabass", "string", "acoustic", 28, 60),
    _p(44, "Tremolo Strings", "string", "acoustic", 36, 96),
    _p(48, "String Ensemble 1", "string", "acoustic", 36, 96),
    _p(49, "String Ensemble 2", "string", "acoustic", 36, 96),
    _p(110, "Fiddle", "string", "acoustic", 55, 96),
    _p(50, "Synth Strings 1", "string", "synthetic", 36, 96),
    _p(51, "Synth Strings 2", "string", "synthetic", 36, 96),
    # vocal/acoustic: 52, 53; vocal/synthetic: 54
    _p(52, "Choir Aahs", "vocal", "acoustic", 40, 81),
    _p(53, "Voice Oohs", "vocal", "acoustic", 48, 79),
    _p(54, "Synth Voice", "vocal", "synthetic", 48, 84),
    # brass/acoustic: 56-61; brass/synthetic: 62, 63
    _p(56, "Trumpet", "brass", "acoustic", 54, 84),
    _p(57, "Trombone", "brass", "acoustic", 40, 72),
    _p(58, "Tuba", "brass", "acoustic", 28, 58),
    _p(59, "Muted Trumpet", "brass", "acoustic", 54, 82),
    _p(60, "French Horn", "brass", "acoustic", 34, 77),
    _p(61, "Brass Section", "brass", "acoustic", 36, 84),
    _p(62, "Synth Brass 1", "brass", "synthetic", 36, 84),
    _p(63, "Synth Brass 2", "brass", "synthetic", 36, 84),
    # flute/acoustic: 72-77, 79
    _p(72, "Piccolo", "flute", "acoustic", 74, 108),
    _p(73, "Flute", "flute", "acoustic", 60, 96),
    _p(74, "Recorder", "flute", "acoustic", 65, 98),
    _p(75, "Pan Flute", "flute", "acoustic", 60, 96),
    _p(76, "Blown Bottle", "flute", "acoustic", 60, 84),
    _p(77, "Shakuhachi", "flute", "acoustic", 62, 86),
    _p(79, "Ocarina", "flute", "acoustic", 64, 89),
    # synth_lead/synthetic: 80-83, 85-87
    _p(80, "Lead 1 (square)", "synth_lead", "synthetic", 36, 96),
    _p(81, "Lead 2 (sawtooth)", "synth_lead", "synthetic", 36, 96),
    _p(82, "Lead 3 (calliope)", "synth_lead", "synthetic", 48, 96),
    _p(83, "Lead 4 (chiff)", "synth_lead", "synthetic", 48, 96),
    _p(85, "Lead 6 (voice)", "synth_lead", "synthetic", 48, 84),
    _p(86, "Lead 7 (fifths)", "synth_lead", "synthetic", 36, 84),
    _p(87, "Lead 8 (bass + lead)", "synth_lead", "synthetic", 28, 72),
)
# fmt: on

GM_PROGRAMS: dict[int, GmProgram] = {entry.program: entry for entry in sorted(_TABLE)}
"""Program (0-based) -> labels and range, in program order. Programs not here are never rendered."""


def lookup(program: int) -> GmProgram | None:
    """The table entry of a GM program, or None when the program is left out of the corpus."""
    return GM_PROGRAMS.get(program)


def pitches(program: int, step: int = 1, offset: int = 0) -> list[int]:
    """The MIDI pitches rendered for a program: its range, every `step`-th semitone.

    `offset` rotates the grid (pitches with ``pitch % step == offset % step``) so
    that different instruments cover different pitch classes at a coarse step.
    """
    entry = GM_PROGRAMS[program]
    if step < 1:
        raise ValueError(f"pitch step must be >= 1, got {step}")
    return [p for p in range(entry.low, entry.high + 1) if (p - offset) % step == 0]

"""The units of a corpus build: libraries, catalogue sources, `other` generators, synth notes.

Each function returns `units.Unit`s whose ``produce`` is a module-level function
bound with `functools.partial`, so units can be rendered in worker processes.
The fingerprint holds everything that decides a unit's notes, so that a rebuild
re-renders exactly the units that changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from instrument_ai.train.corpus.units import Unit, library_fingerprint
from instrument_ai.train.sources.imported import ImportedNote, Problems

LIBRARY_KINDS = {"font": "soundfont", "sf3dir": "soundfont", "waf": "webaudiofont"}
DEFAULT_NOISE_CLIPS = 3000
DEFAULT_SPEECH_CLIPS = 1200
DEFAULT_DRUM_CLIPS = 400
DEFAULT_SEED = 0


def library_units(found: dict[str, Any], names: tuple[str, ...], options: Any) -> list[Unit]:
    """One unit per SoundFont / WebAudioFont library, rendered by the existing builder."""
    from dataclasses import replace

    out = []
    for name in names:
        lib = found[name]
        opts = replace(options, libraries=(name,))
        out.append(Unit(name, LIBRARY_KINDS[lib.kind], lib.lineage, library_fingerprint(lib, opts), library=lib))
    return out


def _guarded(problems: Problems, reason: str, what: str, notes: Iterator[ImportedNote]) -> Iterator[ImportedNote]:
    """Yield from a generator; a generator that fails is counted (one line), not fatal for the build."""
    try:
        yield from notes
    except Exception as exc:  # the generator's own error types are one-line messages
        problems.add(reason, f"{what}: {' '.join(str(exc).split()) or type(exc).__name__}")


def _noise(problems: Problems, *, n: int, seed: int) -> Iterator[ImportedNote]:
    from instrument_ai.train.sources import other_sounds

    return _guarded(problems, "generator_failed", "noise", other_sounds.noise_clips(n, seed))


def _speech(problems: Problems, *, n: int, seed: int) -> Iterator[ImportedNote]:
    from instrument_ai.train.sources import other_sounds

    return _guarded(problems, "speech_unavailable", "espeak-ng", other_sounds.speech_clips(n, seed))


def _drums(problems: Problems, *, path: str, library: str, n: int, seed: int) -> Iterator[ImportedNote]:
    from instrument_ai.train.sources import other_sounds

    return _guarded(problems, "no_drum_kit", path, other_sounds.drum_clips(path, library, n, seed))


def _synth(problems: Problems, *, n: int, seed: int, pitch_step: int) -> Iterator[ImportedNote]:
    from instrument_ai.train.sources import synth

    return _guarded(problems, "generator_failed", "synth", synth.synth_notes(n, seed, pitch_step))


def other_units(
    found: dict[str, Any],
    names: tuple[str, ...],
    *,
    noise_clips: int = DEFAULT_NOISE_CLIPS,
    speech_clips: int = DEFAULT_SPEECH_CLIPS,
    drum_clips: int = DEFAULT_DRUM_CLIPS,
    seed: int = DEFAULT_SEED,
) -> list[Unit]:
    """numpy noise, espeak-ng speech, and the drum kits (bank 128) of every single-file SoundFont chosen.

    A font's drum unit is in the font's lineage, so leave-one-source-out holds its kits out with its notes.
    """
    out = []
    if noise_clips > 0:
        out.append(Unit("other-noise", "other", "other-noise", {"n": noise_clips, "seed": seed},
                        produce=partial(_noise, n=noise_clips, seed=seed)))  # fmt: skip
    if speech_clips > 0:
        out.append(Unit("other-speech", "other", "other-speech", {"n": speech_clips, "seed": seed},
                        produce=partial(_speech, n=speech_clips, seed=seed)))  # fmt: skip
    if drum_clips > 0:
        for name in names:
            lib = found[name]
            if lib.kind != "font":
                continue
            fp = {"n": drum_clips, "seed": seed, "file": lib.path.name, "size": lib.path.stat().st_size}
            produce = partial(_drums, path=str(lib.path), library=name, n=drum_clips, seed=seed)
            out.append(Unit(f"{name}-drums", "other", lib.lineage, fp, produce=produce))
    return out


def synth_units(n: int, *, seed: int = DEFAULT_SEED, pitch_step: int = 3) -> list[Unit]:
    """N synthesiser patches (subtractive, FM, wavetable, PWM) as one unit."""
    if n <= 0:
        return []
    return [Unit("synth", "synth", "synth", {"n": n, "seed": seed, "pitch_step": pitch_step},
                 produce=partial(_synth, n=n, seed=seed, pitch_step=pitch_step))]  # fmt: skip

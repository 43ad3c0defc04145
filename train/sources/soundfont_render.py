"""Render single NSynth-style notes from SoundFonts (sf2/sf3) with tinysoundfont.

Two pieces:

* `read_presets(path)` lists a font's presets (name, bank, program) by reading
  the ``pdta/phdr`` chunk of the RIFF file directly. Planning a corpus needs the
  preset list of every font, and loading MuseScore General in a synthesiser
  takes ~10 s and ~1 GB (its Ogg samples are decoded on load); reading the
  header takes milliseconds.
* `SoundFontRenderer` loads one font once and renders notes: note-on at 0,
  note-off after ``hold_seconds``, ``total_seconds`` in all, mono (mean of the
  two channels), float32. tinysoundfont has no reverb or chorus; CC91 and CC93
  are still set to 0 so the intent is explicit should the synthesiser change.
  Every note starts from silence (`sounds_off` and a flush) on a freshly selected channel,
  so a note does not depend on the notes rendered before it (parallel workers
  render in different orders and must produce the same bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instrument_ai.device.errors import InstrumentAIError

PERCUSSION_BANK = 128
FLUSH_SAMPLES = 4096
"""Samples rendered and discarded after `sounds_off` (256 ms at 16 kHz, far beyond the 10 ms fade)."""


class SoundFontError(InstrumentAIError):
    """A SoundFont file cannot be read or a preset cannot be played (one-line message)."""


@dataclass(frozen=True)
class Preset:
    """One preset header of a SoundFont."""

    name: str
    bank: int
    program: int


def _chunks(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(id, payload start, payload size) of the RIFF chunks in data[start:end]."""
    out = []
    pos = start
    while pos + 8 <= end:
        cid, size = struct.unpack_from("<4sI", data, pos)
        out.append((cid, pos + 8, size))
        pos += 8 + size + (size & 1)
    return out


def read_presets(path: str | Path) -> list[Preset]:
    """The presets of a sf2/sf3 file, sorted by (bank, program); raises SoundFontError if unreadable."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            header = fh.read(12)
            if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"sfbk":
                raise SoundFontError(f"{path}: not a SoundFont (no RIFF sfbk header)")
            # walk the top-level LIST chunks, seeking over the (large) sample data
            odd = False
            while True:
                head = fh.read(8)
                if odd and head[:4] != b"LIST":
                    # some split sf3 files omit the pad byte after an odd-sized chunk
                    fh.seek(-len(head) - 1, 1)
                    head = fh.read(8)
                if len(head) < 8:
                    raise SoundFontError(f"{path}: no preset data (pdta) chunk")
                cid, size = struct.unpack("<4sI", head)
                odd = bool(size & 1)
                skip = size + odd
                if cid == b"LIST":
                    kind = fh.read(4)
                    if kind == b"pdta":
                        pdta = fh.read(size - 4)
                        break
                    skip -= 4
                fh.seek(skip, 1)
    except OSError as exc:
        raise SoundFontError(f"{path}: {exc.strerror or exc}") from None
    for cid, start, size in _chunks(pdta, 0, len(pdta)):
        if cid == b"phdr":
            if size % 38 != 0 or start + size > len(pdta):
                raise SoundFontError(f"{path}: corrupt preset header chunk")
            presets = []
            for i in range(size // 38 - 1):  # the last record is the terminal "EOP"
                name, program, bank = struct.unpack_from("<20sHH", pdta, start + 38 * i)
                presets.append(Preset(name.split(b"\0", 1)[0].decode("latin-1").strip(), bank, program))
            return sorted(presets, key=lambda p: (p.bank, p.program, p.name))
    raise SoundFontError(f"{path}: no preset header (phdr) chunk")


class SoundFontRenderer:
    """One loaded SoundFont that renders isolated notes; load once, render many."""

    def __init__(self, path: str | Path, sample_rate: int = 16000) -> None:
        import tinysoundfont

        self.path = Path(path)
        self.sample_rate = sample_rate
        self._synth = tinysoundfont.Synth(samplerate=sample_rate)
        try:
            self._sfid = self._synth.sfload(str(self.path))
        except Exception as exc:  # tinysoundfont raises its own exception types
            raise SoundFontError(f"{self.path}: cannot load ({exc})") from None

    def _silence(self) -> None:
        """Stop every voice and run the synthesiser until they are gone.

        `sounds_off` does not cut a voice: tinysoundfont fades it out over
        10 ms (TSF_FASTRELEASETIME), and without this flush the fade of a note
        still sounding at 4 s leaks into the first samples of the next note,
        so a note's bytes would depend on which note was rendered before it.
        """
        self._synth.sounds_off()
        self._synth.generate(FLUSH_SAMPLES)

    def render(
        self,
        bank: int,
        program: int,
        pitch: int,
        velocity: int,
        hold_seconds: float = 3.0,
        total_seconds: float = 4.0,
    ) -> np.ndarray:
        """A mono float32 note of exactly ``round(total_seconds * sample_rate)`` samples."""
        synth = self._synth
        self._silence()
        if synth.sfpreset_name(self._sfid, bank, program) is None:
            # tinysoundfont would silently fall back to another preset
            raise SoundFontError(f"{self.path}: no preset at bank {bank} program {program}")
        try:
            synth.program_select(0, self._sfid, bank, program)
        except Exception as exc:
            raise SoundFontError(f"{self.path}: bank {bank} program {program}: {exc}") from None
        synth.control_change(0, 91, 0)  # reverb send
        synth.control_change(0, 93, 0)  # chorus send
        n_hold = int(round(hold_seconds * self.sample_rate))
        n_total = int(round(total_seconds * self.sample_rate))
        synth.noteon(0, pitch, velocity)
        held = np.frombuffer(synth.generate(n_hold), dtype=np.float32)
        synth.noteoff(0, pitch)
        tail = np.frombuffer(synth.generate(n_total - n_hold), dtype=np.float32)
        self._silence()
        stereo = np.concatenate([held, tail]).reshape(-1, 2)
        return stereo.mean(axis=1, dtype=np.float32)

"""SoundFont reading and rendering for the corpus builder (tinysoundfont, TimGM6mb and the shared sf3 files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instrument_ai.train.corpus import build as corpus
from instrument_ai.train.sources import soundfont_render
from instrument_ai.train.sources.soundfont_render import SoundFontError, SoundFontRenderer, read_presets

SHARED = Path(__file__).resolve().parents[2] / "shared" / "sample-libraries"


@pytest.fixture(scope="module")
def tim() -> Path:
    path = corpus.timgm6mb_path()
    assert path is not None, "pretty_midi's TimGM6mb.sf2 is missing"
    return path


def test_read_presets_of_timgm6mb(tim: Path) -> None:
    presets = read_presets(tim)
    melodic = [p for p in presets if p.bank == 0]
    assert [p.program for p in melodic] == list(range(128))
    assert melodic[0].name == "Piano 1"
    assert all(p.bank in (0, 128) for p in presets)
    assert presets == sorted(presets, key=lambda p: (p.bank, p.program, p.name))


@pytest.mark.needs_shared
def test_read_presets_tolerates_missing_pad_byte() -> None:
    # marmooo's split sf3 files omit the RIFF pad byte after an odd-sized sample chunk
    path = SHARED / "sf3" / "32MbGMStereo" / "002.sf3"
    assert path.is_file(), f"missing {path}"
    data = path.read_bytes()
    assert int.from_bytes(data[262 + 4 : 262 + 8], "little") % 2 == 1  # the odd-sized sdta LIST
    presets = read_presets(path)
    assert [(p.bank, p.program) for p in presets] == [(0, 2)]


@pytest.mark.parametrize(
    "content", [b"", b"RIFF\x04\x00\x00\x00WAVE", b"RIFF\x10\x00\x00\x00sfbkLIST\x04\x00\x00\x00INFO"]
)
def test_read_presets_refuses_non_soundfonts(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.sf2"
    path.write_bytes(content)
    with pytest.raises(SoundFontError, match="bad.sf2"):
        read_presets(path)
    with pytest.raises(SoundFontError, match="bad.sf2"):
        read_presets(tmp_path / "bad.sf2.missing")


def test_render_shape_and_silence_outside(tim: Path) -> None:
    renderer = SoundFontRenderer(tim)
    note = renderer.render(0, 0, 60, 100)
    assert note.shape == (64000,) and note.dtype == np.float32
    assert np.abs(note[:800]).max() > 0.01  # sounds at once
    loud = renderer.render(0, 0, 60, 127)
    soft = renderer.render(0, 0, 60, 25)
    assert np.abs(loud).max() > 2 * np.abs(soft).max()  # velocity changes the level


def test_render_does_not_depend_on_the_previous_note(tim: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # String Ensemble 1 still sounds at 4 s; its quick fade after sounds_off must not leak into the next note
    reference = SoundFontRenderer(tim).render(0, 0, 60, 100)
    renderer = SoundFontRenderer(tim)
    assert np.abs(renderer.render(0, 48, 60, 127)[-100:]).max() > 1e-4
    assert np.array_equal(renderer.render(0, 0, 60, 100), reference)
    # and the check has teeth: without the flush the piano note differs
    monkeypatch.setattr(soundfont_render, "FLUSH_SAMPLES", 0)
    renderer.render(0, 48, 60, 127)
    assert not np.array_equal(renderer.render(0, 0, 60, 100), reference)


def test_render_unknown_preset_is_one_line_error(tim: Path) -> None:
    with pytest.raises(SoundFontError, match="bank 5 program 3"):
        SoundFontRenderer(tim).render(5, 3, 60, 100)


def test_unloadable_font_is_a_soundfont_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.sf2"
    path.write_bytes(b"RIFF\x00\x00\x00\x00nope")
    with pytest.raises(SoundFontError, match="broken.sf2"):
        SoundFontRenderer(path)

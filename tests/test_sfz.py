"""The SFZ parser and renderer (train/sources/sfz.py) on instruments the tests write, and on a real mirrored one."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile

from instrument_ai.train.sources import sfz
from instrument_ai.train.sources.imported import Problems
from instrument_ai.train.sources.sfz_dsp import decode, wav_loop

RATE = 16000


def sine(hz: float, seconds: float, rate: int = 44100, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int = 44100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, rate, subtype="FLOAT")


def instrument(tmp_path: Path, files: dict[str, str]) -> tuple[sfz.SfzInstrument, Problems, object]:
    """Write the text files, parse the first one, and return it with its problems and reader."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    problems = Problems()

    def read(path: str) -> bytes:
        return (tmp_path / path).read_bytes()

    return sfz.parse(next(iter(files)), read, problems), problems, read


def hz_near(audio: np.ndarray, expect: float, start: int = 1600) -> float:
    """The spectral peak within a semitone of `expect` (zero-padded FFT, parabolic on log magnitude)."""
    seg = audio[start : start + 16000]
    seg = seg * np.hanning(len(seg))
    n = 1 << 20
    spec = np.abs(np.fft.rfft(seg, n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    band = np.nonzero((freqs > expect * 2 ** (-1 / 12)) & (freqs < expect * 2 ** (1 / 12)))[0]
    i = int(band[np.argmax(spec[band])])
    y0, y1, y2 = np.log(spec[i - 1 : i + 2] + 1e-12)
    return (i + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) * RATE / n


def cents(hz: float, midi: float) -> float:
    return float(1200 * np.log2(hz / (440 * 2 ** ((midi - 69) / 12))))


def test_note_names() -> None:
    assert [sfz.note_number(v) for v in ("c4", "C#4", "db4", "a4", "c-1", "b9", "60", "x4", "")] == [
        60, 61, 61, 69, 0, 131, 60, None, None]  # fmt: skip


def test_inheritance_includes_defines_comments_and_paths(tmp_path: Path) -> None:
    write_wav(tmp_path / "inst/samples/sine a4.wav", sine(440, 0.2))
    write_wav(tmp_path / "inst/samples/sub/sine a4.wav", sine(440, 0.2))
    inst, problems, _ = instrument(tmp_path, {
        "inst/a.sfz": "#define $EXT wav\n<control> default_path=samples\\\n"
                      "<global> volume=-6 ampeg_release=0.3 // a comment\n"
                      "<group> lovel=1 hivel=63 tune=10\n"
                      "<region> sample=sine a4.$EXT lokey=c#4 hikey=a4 pitch_keycenter=a4\n"
                      "<region> sample=sub\\sine a4.$EXT key=72 volume=-3 tune=-5 /* block\n lokey=1 */\n"
                      "<group> lovel=64\n#include \"parts/loud.txt\"\n",
        "inst/parts/loud.txt": "<region> Sample=sine a4.$EXT lokey=57 hikey=69 pitch_keycenter=69 pan=20\n",
    })  # fmt: skip
    assert not problems, problems.summary()
    first, second, third = inst.regions
    assert (first.sample, second.sample) == ("inst/samples/sine a4.wav", "inst/samples/sub/sine a4.wav")
    assert (first.lokey, first.hikey, first.keycenter, first.lovel, first.hivel) == (61, 69, 69, 1, 63)
    assert (first.volume, first.tune, first.ampeg["release"]) == (-6.0, 10.0, 0.3)
    assert (second.lokey, second.hikey, second.keycenter, second.volume, second.tune) == (72, 72, 72, -3.0, -5.0)
    assert (third.lovel, third.hivel, third.tune, third.volume, third.lokey) == (64, 127, 0.0, -6.0, 57)


def test_include_loop_unknown_opcode_and_missing_sample_are_counted(tmp_path: Path) -> None:
    write_wav(tmp_path / "ok.wav", sine(440, 0.2))
    inst, problems, _ = instrument(tmp_path, {
        "a.sfz": '<region> sample=ok.wav key=69 foo_bar=1\n<region> sample=gone.wav key=70 foo_bar=2\n'
                 '#include "b.txt"\n',
        "b.txt": '<region> sample=ok.wav key=71 foo_bar=3 lorand=0 hirand=1\n#include "a.sfz"\n',
    })  # fmt: skip
    assert problems.counts["sfz_include_loop"] == 1
    assert problems.counts["missing_sample"] == 1 and "gone.wav" in problems.first["missing_sample"]
    assert problems.counts["sfz_unknown_opcode"] == 2  # once per file: a.sfz and b.txt
    assert "foo_bar" in problems.first["sfz_unknown_opcode"]
    assert sorted(r.lokey for r in inst.regions) == [69, 71]


def test_bad_input_never_raises(tmp_path: Path) -> None:
    problems = Problems()
    inst = sfz.parse("nope.sfz", lambda p: (tmp_path / p).read_bytes(), problems)
    assert inst.regions == [] and problems.counts["unreadable"] == 1
    inst, problems, read = instrument(tmp_path, {"junk.sfz": "<region sample= lokey=zz hikey=\x00 <group>\n=="})
    assert inst.regions == [] and inst.render(60, 100, 1, read, problems, 1.0, 2.0) is None


def test_release_triggers_are_left_out_and_round_robins_are_variants(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", sine(440, 1.0))
    write_wav(tmp_path / "b.wav", sine(466.16, 1.0))
    write_wav(tmp_path / "r.wav", sine(1000, 1.0))
    inst, problems, read = instrument(tmp_path, {
        "rr.sfz": "<group> seq_length=2 lokey=60 hikey=62 pitch_keycenter=69\n"
                  "<region> seq_position=1 sample=a.wav\n<region> seq_position=2 sample=b.wav\n"
                  "<group> trigger=release\n<region> sample=r.wav lokey=60 hikey=62\n",
    })  # fmt: skip
    assert not problems and len(inst.regions) == 2 and inst.variants == 2
    assert inst.points() == [(k, 127, v) for k in (60, 61, 62) for v in (1, 2)]
    one = inst.render(69 - 9, 100, 1, read, problems, 0.5, 1.5)
    two = inst.render(69 - 9, 100, 2, read, problems, 0.5, 1.5)
    assert one is not None and two is not None
    assert abs(cents(hz_near(one, 261.63), 60)) < 10
    assert abs(cents(hz_near(two, 277.18), 61)) < 10  # the second variant is the semitone-higher sample
    spectrum = np.abs(np.fft.rfft(one[:8000] * np.hanning(8000)))  # 2 Hz bins
    assert spectrum[500] < 1e-3 * spectrum.max()  # the release sample (1 kHz at key 60) is not heard


def test_velocity_layers_pick_regions_and_gain(tmp_path: Path) -> None:
    write_wav(tmp_path / "soft.wav", sine(440, 1.0))
    write_wav(tmp_path / "loud.wav", sine(880, 1.0))
    inst, problems, read = instrument(tmp_path, {
        "v.sfz": "<global> pitch_keycenter=69 lokey=60 hikey=72\n<region> hivel=64 sample=soft.wav\n"
                 "<region> lovel=65 sample=loud.wav\n",
    })  # fmt: skip
    assert inst.velocity_layers() == [(1, 64), (65, 127)]
    for velocity in (1, 30, 64, 65, 100, 127):
        audio = inst.render(69, velocity, 1, read, problems, 0.5, 1.0)
        assert audio is not None
        spec = np.abs(np.fft.rfft(audio[:16000]))
        assert (spec[880] > spec[440]) == (velocity >= 65)  # 1 Hz bins: the loud sample is an octave up
    quiet, loud = (float(np.abs(inst.render(69, v, 1, read, problems, 0.5, 1.0)).max()) for v in (32, 64))
    assert loud / quiet == pytest.approx((64 / 32) ** 2, rel=0.02)  # amp_veltrack 100: (vel/127)^2
    assert sfz.choose_velocities(inst.velocity_layers(), (50, 100)) == [50, 100]
    assert sfz.choose_velocities(inst.velocity_layers(), (25, 50)) == [25, 65]
    assert sfz.choose_velocities([(1, 127)], (50, 100)) == [50, 100]
    assert sfz.choose_velocities([(1, 127)], (75,)) == [75]


@pytest.mark.parametrize("rate", [44100, 22050, 48000])
def test_rendered_pitch_within_10_cents_away_from_the_keycenter(tmp_path: Path, rate: int) -> None:
    write_wav(tmp_path / "s.wav", sine(440, 2.0, rate), rate)
    inst, problems, read = instrument(tmp_path, {"p.sfz": "<region> sample=s.wav pitch_keycenter=69\n"
                                                 "<region> sample=s.wav pitch_keycenter=69 tune=30 transpose=-12 "
                                                 "lokey=120 hikey=127\n"})  # fmt: skip
    for pitch in (45, 57, 62, 69, 76, 81, 90):
        audio = inst.render(pitch, 100, 1, read, problems, 1.5, 2.0)
        assert audio is not None
        assert abs(cents(hz_near(audio, 440 * 2 ** ((pitch - 69) / 12)), pitch)) < 10, pitch
    audio = inst.render(124, 100, 1, read, problems, 1.5, 2.0)  # transpose -12 and tune +30 cents
    assert audio is not None and abs(cents(hz_near(audio, 440 * 2 ** ((124 - 81) / 12)), 124 - 12 + 0.3)) < 10
    assert not problems


def test_loops_are_click_free_and_sustain(tmp_path: Path) -> None:
    """A 0.1 s sine looped over whole periods, held for 3.5 s: no step larger than its own unlooped steps."""
    write_wav(tmp_path / "l.wav", sine(441, 0.1))  # 100 samples a period at 44.1 kHz
    inst, problems, read = instrument(tmp_path, {
        "l.sfz": "<region> sample=l.wav pitch_keycenter=69 loop_mode=loop_continuous loop_start=1000 "
                 "loop_end=3999 ampeg_release=0.2\n",
    })  # fmt: skip
    for pitch in (69, 72, 64):
        audio = inst.render(pitch, 127, 1, read, problems, 3.5, 4.0)
        assert audio is not None and len(audio) == 4 * RATE
        step = 441 * 2 ** ((pitch - 69) / 12) / 441 * 44100 / RATE
        first_pass = int(3900 / step)  # output samples read before the loop first wraps
        own = np.abs(np.diff(audio[200:first_pass])).max()
        assert np.abs(np.diff(audio[200 : int(3.5 * RATE)])).max() <= own * 1.01 + 1e-4, pitch
        held = audio[int(3.3 * RATE) : int(3.4 * RATE)]
        assert np.sqrt(np.mean(held**2)) > 0.3  # still sounding 33x past the sample's length
    broken, _, read2 = instrument(tmp_path, {"b.sfz": "<region> sample=l.wav pitch_keycenter=69 "
                                             "loop_mode=loop_continuous loop_start=1000 loop_end=3949\n"})  # fmt: skip
    audio = broken.render(69, 127, 1, read2, problems, 3.5, 4.0)
    assert audio is not None and np.abs(np.diff(audio[200:])).max() > 1.2 * own  # a bad loop does click
    assert not problems


def test_loop_points_from_the_wav_smpl_chunk(tmp_path: Path) -> None:
    buf = io.BytesIO()
    soundfile.write(buf, sine(441, 0.1), 44100, format="WAV", subtype="FLOAT")
    data = buf.getvalue()
    smpl = struct.pack("<9I", 0, 0, 22676, 60, 0, 0, 0, 1, 0) + struct.pack("<6I", 0, 0, 1000, 3999, 0, 0)
    data = data + b"smpl" + struct.pack("<I", len(smpl)) + smpl
    data = data[:4] + struct.pack("<I", len(data) - 8) + data[8:]
    assert wav_loop(data) == (1000, 3999) and decode(data).loop == (1000, 3999)
    (tmp_path / "w.wav").write_bytes(data)
    inst, problems, read = instrument(tmp_path, {"w.sfz": "<region> sample=w.wav pitch_keycenter=69\n"})
    audio = inst.render(69, 127, 1, read, problems, 3.0, 3.5)
    assert audio is not None and np.sqrt(np.mean(audio[2 * RATE : 2 * RATE + 1600] ** 2)) > 0.3


def test_release_envelope_decays_and_length_is_exact(tmp_path: Path) -> None:
    write_wav(tmp_path / "l.wav", sine(441, 0.1))
    inst, problems, read = instrument(tmp_path, {
        "r.sfz": "<region> sample=l.wav hikey=69 pitch_keycenter=69 loop_mode=loop_continuous loop_start=1000 "
                 "loop_end=3999 ampeg_attack=0.01 ampeg_release=0.5\n"
                 "<region> sample=l.wav key=70 pitch_keycenter=70 loop_mode=loop_sustain loop_start=1000 "
                 "loop_end=3999 ampeg_release=0.5\n",
    })  # fmt: skip
    sustained = inst.render(70, 127, 1, read, problems, 2.0, 3.0)  # loop_sustain: the sample runs out on release
    assert sustained is not None and np.abs(sustained[int(1.9 * RATE) : 2 * RATE]).max() > 0.4
    assert np.abs(sustained[int(2.1 * RATE) :]).max() == 0.0  # at most the 3410 frames past loop_start remain
    audio = inst.render(69, 127, 1, read, problems, 2.0, 3.0)
    assert audio is not None
    rms = [float(np.sqrt(np.mean(audio[i : i + 800] ** 2))) for i in range(0, len(audio), 800)]
    before, after = rms[: 2 * 20], rms[2 * 20 : 2 * 20 + 9]  # 50 ms windows; release at 2 s
    assert min(before[1:]) > 0.3
    assert all(b < a for a, b in zip(after, after[1:], strict=False))  # falls window by window
    assert after[0] > 0.1 and max(rms[int(2.55 * 20) :]) < 1e-3
    for total in (1.0, 2.5, 4.0, 0.3):
        out = inst.render(69, 100, 1, read, problems, min(total, 3.0), total)
        assert out is not None and out.dtype == np.float32 and out.shape == (round(total * RATE),)
    assert inst.render(20, 100, 1, read, problems, 1.0, 1.0) is not None  # lokey 0 by default
    assert inst.render(71, 100, 1, read, problems, 1.0, 1.0) is None
    assert not problems


def test_the_pitched_key_range_leaves_out_isolated_keys(tmp_path: Path) -> None:
    write_wav(tmp_path / "s.wav", sine(440, 0.3))
    inst, _, _ = instrument(tmp_path, {
        "k.sfz": "<control> set_cc80=64\n<region> sample=s.wav key=40\n<region> sample=s.wav lokey=50 hikey=60\n"
                 "<region> sample=s.wav lokey=61 hikey=62 locc80=100\n<region> sample=s.wav lokey=61 hikey=63 "
                 "locc80=10 hicc80=70\n",
    })  # fmt: skip
    assert inst.key_range() == list(range(50, 64))  # the locc80=100 region is off at the default CC
    assert len(inst.regions) == 3


def _tree(tmp_path: Path) -> tuple[SimpleNamespace, dict[str, bytes]]:
    files: dict[str, bytes] = {}
    for name, hz in (("flute/s.wav", 440.0), ("organ/s.wav", 440.0)):
        buf = io.BytesIO()
        soundfile.write(buf, sine(hz, 1.0), 44100, format="WAV")
        files[name] = buf.getvalue()
    files["flute/Flute One.sfz"] = (
        b"<region> sample=s.wav lokey=60 hikey=72 pitch_keycenter=69 hivel=80\n"
        b"<region> sample=s.wav lokey=60 hikey=72 pitch_keycenter=69 lovel=81\n"
    )
    files["organ/Organ.sfz"] = b"<region> sample=s.wav lokey=48 hikey=60 pitch_keycenter=69\n"
    files["other/Skip me.sfz"] = b"<region> sample=nothing.wav\n"
    files["flute/readme.txt"] = b"not an instrument"
    return SimpleNamespace(read=files.__getitem__, paths=lambda: list(files)), files


def test_render_source_through_the_catalogue_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from instrument_ai.train.corpus import catalogue_units
    from instrument_ai.train.sources.catalogue import Skip

    tree, files = _tree(tmp_path)

    def label(path: str) -> SimpleNamespace | Skip:
        if path.startswith("other/"):
            return Skip("no_rule", f"toy: {path}: matches no rule")
        family = "flute" if path.startswith("flute/") else "organ"
        return SimpleNamespace(family=family, source="acoustic", instrument="x", pitch=0, velocity=100)

    entry = SimpleNamespace(name="toy", label=label)
    every = list(catalogue_units._sfz(Problems(), entry, tree, sorted(files), 3, (50, 100)))
    flute_points = sfz.parse("flute/Flute One.sfz", tree.read, Problems()).points()
    assert len(flute_points) <= sfz.MAX_POINTS  # a small instrument: every key, layer and round robin is rendered
    assert sorted((n.pitch, n.velocity) for n in every if n.family == "flute") == sorted(
        (p, v) for p, v, _ in flute_points)  # fmt: skip
    monkeypatch.setattr(sfz, "MAX_POINTS", 1)  # a big one: the corpus grid
    problems = Problems()
    notes = list(catalogue_units._sfz(problems, entry, tree, sorted(files), 3, (50, 100)))
    assert problems.counts == {"no_rule": 1}
    flutes = [n for n in notes if n.family == "flute"]
    organs = [n for n in notes if n.family == "organ"]
    assert {n.instrument for n in flutes} == {"Flute One"} and {n.instrument for n in organs} == {"Organ"}
    assert sorted({n.pitch for n in flutes}) == [60, 63, 66, 69, 72]  # offset 0 for the first instrument
    assert sorted({n.pitch for n in organs}) == [49, 52, 55, 58]  # rotated by one for the second
    assert sorted({n.velocity for n in flutes}) == [50, 100] and len(flutes) == 10
    for note in notes:
        assert note.audio.dtype == np.float32 and note.audio.shape == (64000,) and note.source == "acoustic"
        assert abs(cents(hz_near(note.audio, 440 * 2 ** ((note.pitch - 69) / 12)), note.pitch)) < 10
        assert (
            note.origin == f"toy:{'flute/Flute One.sfz' if note.family == 'flute' else 'organ/Organ.sfz'} "
            f"key {note.pitch} vel {note.velocity}"
        )
        played = 2 ** ((69 - note.pitch) / 12)  # the one-second sample, unlooped, read slower below its key
        assert note.sounding_seconds == pytest.approx(min(played, 3.0), abs=0.05)  # released at 3 s


def _mirror(slug: str) -> Path | None:
    root = Path(os.environ.get("INSTRUMENT_AI_SOURCES", "/work/.mirror"))
    for candidate in (root / slug / "repo", root / slug):
        if (candidate / "objects").is_dir() or (candidate / ".git").is_dir():
            return candidate
    return None


@pytest.mark.needs_sources
@pytest.mark.parametrize(("slug", "commit", "path", "keys"), [
    ("sfzinstruments+MTG.SoloSax", "b494d256549b3d088fdec176ce82867f8a1f58b2",
     "MTG Solo Saxophones/MTG Alto Sax.sfz", (53, 61, 69, 77)),
    ("sfzinstruments+SplendidGrandPiano", "1c595d827b7fd7f0be3134aaed0f90b3662a09cf",
     "Splendid Grand Piano.sfz", (45, 60, 72)),
])  # fmt: skip
def test_real_instrument_pitch_within_10_cents(slug: str, commit: str, path: str, keys: tuple[int, ...]) -> None:
    from instrument_ai.train.sources.gittree import GitTree, find_git_dir

    folder = _mirror(slug)
    if folder is None or (git_dir := find_git_dir(folder)) is None:
        pytest.skip(f"no mirror of {slug}")
    tree = GitTree(git_dir, commit)
    try:
        if not tree.has_commit():
            pytest.skip(f"{slug} mirror lacks commit {commit[:12]}")
        problems = Problems()
        inst = sfz.parse(path, tree.read, problems)
        assert "missing_sample" not in problems.counts and len(inst.regions) > 50
        for key in keys:
            audio = inst.render(key, 100, 1, tree.read, problems, 3.0, 4.0)
            assert audio is not None and audio.shape == (64000,)
            assert abs(cents(hz_near(audio, 440 * 2 ** ((key - 69) / 12), 3200), key)) < 10, key
    finally:
        tree.close()


def test_sfz_units_carry_the_renderer_version_so_a_new_renderer_rebuilds_them() -> None:
    """A corpus built before sources/sfz.py existed holds 0 notes per SFZ source; its units are not 'up to date'."""
    from instrument_ai.train.corpus import catalogue_units

    options = SimpleNamespace(pitch_step=3, velocities=(50, 100), limit=None)
    units = {u.name: u for u in catalogue_units.catalogue_units("all", options, from_dir=None, cache=None,
                                                                catalogue=None)}  # fmt: skip
    assert units["mtg-solosax"].fingerprint["importer"] == catalogue_units.IMPORTER_VERSION["sfz"] == 2
    assert "importer" not in units["karoryfer-war-tuba"].fingerprint  # other kinds keep their fingerprints

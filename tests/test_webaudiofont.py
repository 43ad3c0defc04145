"""The WebAudioFont sampler: parsing real and hand-made banks, zone choice, pitch, loops, envelope, errors.

Real banks come from ../shared/sample-libraries/webaudiofont (present here and in
CI; a missing folder fails, it does not skip). Pitch is measured on the rendered
audio with an FFT peak search, so a wrong ratio, sample rate or loop shows up as
cents, not as a passing test.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from instrument_ai.train.sources import webaudiofont as waf

SR = 16000
BANKS = Path(__file__).resolve().parents[2] / "shared" / "sample-libraries" / "webaudiofont"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "webaudiofont" / "0730_Tolerant_sf2.js"


@pytest.fixture(scope="module")
def banks() -> Path:
    assert BANKS.is_dir(), f"shared WebAudioFont banks missing at {BANKS} (they exist in CI)"
    return BANKS


@pytest.fixture(scope="module")
def presets(banks: Path) -> dict[str, waf.WafPreset]:
    """Parsed once per module: decoding is cached on the preset, so the tests stay fast."""
    names = [
        "0000_GeneralUserGS_sf2_file",  # piano, MP3, many zones, MP3 rate != zone sampleRate
        "0730_JCLive_sf2_file",  # flute, MP3
        "0400_GeneralUserGS_sf2_file",  # violin, MP3
        "0190_SoundBlasterOld_sf2",  # church organ, raw int16 `sample`, one zone for all keys
        "0280_LesPaul_sf2",  # guitar, raw int16, not looped
    ]
    return {name: waf.parse_bank_file(banks / f"{name}.js") for name in names}


def midi_hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12)


def peak_hz(x: np.ndarray, sr: int, near_hz: float, start: float = 0.3, stop: float = 1.3) -> float:
    """Frequency of the strongest spectral peak within 1.5 semitones of `near_hz` (parabolic interpolation)."""
    seg = x[int(start * sr) : int(stop * sr)].astype(np.float64)
    seg = (seg - seg.mean()) * np.hanning(len(seg))
    n_fft = 1 << 19
    mag = np.abs(np.fft.rfft(seg, n_fft))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    band = np.flatnonzero((freqs > near_hz * 2 ** (-1.5 / 12)) & (freqs < near_hz * 2 ** (1.5 / 12)))
    i = band[np.argmax(mag[band])]
    assert mag[i] > 0.05 * mag.max(), "no real partial near the expected fundamental"
    a, b, c = np.log(mag[i - 1 : i + 2])
    return (i + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n_fft


def cents_off(x: np.ndarray, sr: int, pitch: float, **kw: float) -> float:
    return 1200.0 * np.log2(peak_hz(x, sr, midi_hz(pitch), **kw) / midi_hz(pitch))


def rms(x: np.ndarray, start: float, stop: float, sr: int = SR) -> float:
    seg = x[int(start * sr) : int(stop * sr)].astype(np.float64)
    return float(np.sqrt(np.mean(seg**2)))


def write_bank(path: Path, zones: list[dict[str, object]]) -> Path:
    """Write zones as a WebAudioFont-style JS file (unquoted keys, leading commas, like the real ones)."""
    parts = []
    for zone in zones:
        fields = []
        for key, value in zone.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = f"'{value}'"
            else:
                text = repr(int(value)) if float(value).is_integer() else repr(float(value))
            fields.append(f"\t\t\t{key}:{text}")
        parts.append("\t\t{\n" + "\n\t\t\t,".join(f.strip() for f in fields) + "\n\t\t}")
    path.write_text(f"console.log('load');\nvar _tone_x={{\n\tzones:[\n{','.join(parts)}\n\t]\n}};\n")
    return path


def pcm_b64(signal: np.ndarray) -> str:
    return base64.b64encode(np.round(signal * 32767).astype("<i2").tobytes()).decode()


def sine_zone(freq: float, rate: int, periods: int, root: int, **extra: object) -> dict[str, object]:
    """A looped sine zone whose loop holds exactly `periods` periods (freq must divide rate)."""
    period = rate // int(freq)
    assert period * int(freq) == rate
    n = np.arange(period * (periods + 1))
    zone: dict[str, object] = {
        "midi": 0,
        "originalPitch": root * 100,
        "keyRangeLow": 0,
        "keyRangeHigh": 127,
        "loopStart": period,
        "loopEnd": period * (periods + 1),
        "coarseTune": 0,
        "fineTune": 0,
        "sampleRate": rate,
        "ahdsr": False,
        "sample": pcm_b64(0.5 * np.sin(2 * np.pi * n / period)),
    }
    zone.update(extra)
    return zone


# --------------------------------------------------------------------------- listing and parsing real banks


@pytest.mark.needs_shared
def test_list_bank_files_names_libraries_programs_and_dedupes(banks: Path) -> None:
    files = waf.list_bank_files(banks)
    libraries = {f.library for f in files}
    assert libraries == set(waf.LIBRARIES)
    assert all(0 <= f.program <= 127 and 0 <= f.variant <= 9 for f in files)
    keys = [(f.library, f.program, f.variant) for f in files]
    assert len(keys) == len(set(keys)), "an instrument is listed twice"
    # LesPaul ships every preset twice (raw `_sf2` and MP3 `_sf2_file`): listed once, the lossless copy.
    les_paul = [f for f in files if f.library == "LesPaul"]
    assert len(les_paul) == 7 and all(f.encoding == "sample" and f.path.name.endswith("_sf2.js") for f in les_paul)
    assert sum(f.library == "GeneralUserGS" for f in files) == 333
    first = next(f for f in files if f.path.name == "0983_GeneralUserGS_sf2_file.js")
    assert (first.program, first.variant, first.encoding) == (98, 3, "file")


@pytest.mark.needs_shared
def test_real_banks_parse_with_both_audio_encodings(presets: dict[str, waf.WafPreset]) -> None:
    piano = presets["0000_GeneralUserGS_sf2_file"]
    assert (piano.library, piano.program, piano.variant) == ("GeneralUserGS", 0, 0)
    assert len(piano.zones) > 10 and all(z.encoding == "file" for z in piano.zones)
    first = piano.zones[0]
    assert (first.key_low, first.key_high, first.original_pitch, first.sample_rate) == (0, 27, 2600, 31000)
    assert (first.loop_start, first.loop_end, first.fine_tune, first.ahdsr) == (35640, 70786, 1, True)
    audio, rate = first.audio()
    # the MP3 is stored at 32 kHz for a 31 kHz sample: same duration, other rate
    assert rate == 32000 and audio.dtype == np.float32
    assert abs(len(audio) / rate - first.loop_end / first.sample_rate) < 0.01
    organ = presets["0190_SoundBlasterOld_sf2"]
    assert organ.library == "SoundBlasterOld" and all(z.encoding == "sample" for z in organ.zones)
    audio, rate = organ.zones[0].audio()
    assert rate == organ.zones[0].sample_rate and 0.05 < np.abs(audio).max() <= 1.0


def test_soundfile_decodes_mp3() -> None:
    assert "MP3" in soundfile.available_formats(), "libsndfile without MP3: the `file` banks cannot be decoded"


@pytest.mark.needs_shared
def test_arithmetic_in_a_real_bank_is_computed(banks: Path) -> None:
    preset = waf.parse_bank_file(banks / "0253_Acoustic_Guitar_sf2_file.js")  # originalPitch:4200-140
    assert preset.zones[0].original_pitch == 4060


# --------------------------------------------------------------------------- zone choice


@pytest.mark.needs_shared
def test_zone_for_pitch_holds_the_pitch_and_spans_zones(presets: dict[str, waf.WafPreset]) -> None:
    piano = presets["0000_GeneralUserGS_sf2_file"]
    used = set()
    for pitch in range(21, 109):
        zone = waf.zone_for_pitch(piano, pitch)
        assert zone.key_low <= pitch <= zone.key_high
        used.add(zone.index)
    assert len(used) == len(piano.zones)


def test_zone_for_pitch_overlap_takes_last_and_gap_takes_nearest(tmp_path: Path) -> None:
    zones = [
        sine_zone(100, 16000, 4, 40, keyRangeLow=30, keyRangeHigh=50),
        sine_zone(100, 16000, 4, 45, keyRangeLow=40, keyRangeHigh=50),  # overlaps 40-50: the reference takes the last
        sine_zone(100, 16000, 4, 70, keyRangeLow=66, keyRangeHigh=80),
    ]
    preset = waf.parse_bank_file(write_bank(tmp_path / "x.js", zones))
    assert waf.zone_for_pitch(preset, 35).index == 0
    assert waf.zone_for_pitch(preset, 45).index == 1
    assert waf.zone_for_pitch(preset, 20).index == 0  # below every zone: nearest
    assert waf.zone_for_pitch(preset, 55).index == 1  # gap 51-65: 5 keys from zone 1, 11 from zone 2
    assert waf.zone_for_pitch(preset, 62).index == 2
    assert waf.zone_for_pitch(preset, 127).index == 2
    assert np.abs(waf.render_note(preset, 60, 100)).max() > 0.01  # a gap key still plays


# --------------------------------------------------------------------------- pitch


@pytest.mark.needs_shared
@pytest.mark.parametrize(
    ("name", "pitches"),
    [
        ("0000_GeneralUserGS_sf2_file", (44, 52, 60, 68, 76)),  # piano: five zones
        ("0730_JCLive_sf2_file", (64, 76, 88, 96)),  # flute
        ("0400_GeneralUserGS_sf2_file", (63, 67, 71)),  # violin
        ("0190_SoundBlasterOld_sf2", (36, 60, 84)),  # organ: one zone pitched 4 octaves apart
        ("0280_LesPaul_sf2", (48, 52, 56)),  # guitar: not looped
    ],
)
def test_fundamental_matches_midi_pitch(presets: dict[str, waf.WafPreset], name: str, pitches: tuple[int]) -> None:
    preset = presets[name]
    zones = set()
    for pitch in pitches:
        audio = waf.render_note(preset, pitch, 100)
        off = cents_off(audio, SR, pitch)
        assert abs(off) < 20, f"{name} pitch {pitch}: {off:+.1f} cents"
        zones.add(waf.zone_for_pitch(preset, pitch).index)
    if name != "0190_SoundBlasterOld_sf2":
        assert len(zones) >= 2


def test_synthetic_sine_is_in_tune_to_a_cent_across_ratios(tmp_path: Path) -> None:
    # 441 Hz at 44100 Hz declared as MIDI 69 + 3.93 cents, so key 69 must sound 440 Hz exactly.
    zone = sine_zone(441, 44100, 50, 69, fineTune=-1200 * np.log2(441 / 440))
    preset = waf.parse_bank_file(write_bank(tmp_path / "sine.js", [zone]))
    for pitch in (33, 45, 57, 69, 81, 93):  # steps from 0.35 to 11 source samples per output sample
        audio = waf.render_note(preset, pitch, 127)
        assert abs(cents_off(audio, SR, pitch)) < 1.0, pitch


def test_coarse_tune_and_fine_tune_shift_the_pitch(tmp_path: Path) -> None:
    base = sine_zone(400, 16000, 20, 67)
    up = sine_zone(400, 16000, 20, 67, coarseTune=2, fineTune=50)
    preset_base = waf.parse_bank_file(write_bank(tmp_path / "a.js", [base]))
    preset_up = waf.parse_bank_file(write_bank(tmp_path / "b.js", [up]))
    f_base = peak_hz(waf.render_note(preset_base, 67, 100), SR, 400)
    f_up = peak_hz(waf.render_note(preset_up, 67, 100), SR, 400 * 2 ** (250 / 1200))
    assert abs(1200 * np.log2(f_up / f_base) - 250) < 1.0


def test_pitching_up_does_not_alias(tmp_path: Path) -> None:
    # 1 kHz + 6 kHz at 48 kHz, played an octave up: 2 kHz stays, 12 kHz is above the
    # 8 kHz output Nyquist and must vanish instead of folding down to 16 - 12 = 4 kHz.
    rate, period = 48000, 48
    n = np.arange(period * 200)
    signal = 0.3 * np.sin(2 * np.pi * n / period) + 0.3 * np.sin(2 * np.pi * 6 * n / period)
    zone = sine_zone(1000, rate, 199, 60)
    zone["sample"] = pcm_b64(signal)
    preset = waf.parse_bank_file(write_bank(tmp_path / "two.js", [zone]))
    audio = waf.render_note(preset, 72, 127)[SR // 2 : SR * 5 // 2].astype(np.float64)
    mag = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / SR)

    def level(hz: float) -> float:
        return float(mag[np.abs(freqs - hz) < 30].max())

    assert 20 * np.log10(level(4000) / level(2000)) < -60
    # the wanted partial keeps its amplitude: 0.3 * gain 0.5, times N/2 * 0.5 for the Hann window
    assert level(2000) == pytest.approx(0.15 * len(audio) / 4, rel=0.05)


# --------------------------------------------------------------------------- loop, length, envelope, release


@pytest.mark.needs_shared
def test_looped_note_is_held_and_released(presets: dict[str, waf.WafPreset]) -> None:
    organ = presets["0190_SoundBlasterOld_sf2"]
    zone = waf.zone_for_pitch(organ, 60)
    assert zone.looped
    audio = waf.render_note(organ, 60, 100)
    # the sample is 0.4 s long, yet the note still sounds at 2.9 s ...
    buf, rate = zone.audio()
    assert len(buf) / rate / zone.playback_rate(60) < 1.0
    assert rms(audio, 2.85, 2.95) > 0.1 * rms(audio, 0.2, 0.3)
    # ... decays after note-off at 3.0 s (the reference's 50 ms ramp) and is silent after it
    assert rms(audio, 3.0, 3.05) < rms(audio, 2.95, 3.0)
    assert not np.any(audio[int(3.05 * SR) + 1 :])


@pytest.mark.needs_shared
def test_non_looped_sample_is_silent_after_it_ends(presets: dict[str, waf.WafPreset]) -> None:
    guitar = presets["0280_LesPaul_sf2"]
    pitch = 64
    zone = waf.zone_for_pitch(guitar, pitch)
    assert not zone.looped
    buf, rate = zone.audio()
    ends = len(buf) / rate / zone.playback_rate(pitch)
    assert ends < 2.5
    audio = waf.render_note(guitar, pitch, 100)
    assert rms(audio, 0.0, 0.2) > 0.01
    assert not np.any(audio[int(np.ceil(ends * SR)) :])


@pytest.mark.needs_shared
def test_release_seconds_lengthens_the_tail(presets: dict[str, waf.WafPreset]) -> None:
    flute = presets["0730_JCLive_sf2_file"]
    audio = waf.render_note(flute, 72, 100, release_seconds=0.5)
    assert rms(audio, 3.2, 3.3) > 0.01
    assert rms(audio, 3.4, 3.5) < rms(audio, 3.1, 3.2)
    assert not np.any(audio[int(3.5 * SR) + 1 :])


def test_default_ahdsr_envelope_follows_the_reference_points(tmp_path: Path) -> None:
    preset = waf.parse_bank_file(write_bank(tmp_path / "s.js", [sine_zone(400, 16000, 20, 67, ahdsr=True)]))
    audio = waf.render_note(preset, 67, 127, volume=1.0)

    def amp(t: float) -> float:  # peak over one period of the 400 Hz sine starting at t
        return float(np.abs(audio[int(t * SR) : int(t * SR) + 40]).max())

    # 1 until 0.5 s, linear to 0.5 at 2.0 s, toward 0 at 5.0 s, cut at note-off (1/3), 0 at 3.05 s
    for t, expected in ((0.25, 1.0), (1.25, 0.75), (2.0, 0.5), (2.9, 0.35), (3.025, 1 / 6)):
        assert amp(t) == pytest.approx(0.5 * expected, abs=0.01), t


def test_explicit_envelope_points(tmp_path: Path) -> None:
    points = "[{duration:0,volume:0.2},{duration:1,volume:1},]"
    zone = sine_zone(400, 16000, 20, 67)
    path = write_bank(tmp_path / "e.js", [zone])
    path.write_text(path.read_text().replace("ahdsr:false", f"ahdsr:{points}"))
    preset = waf.parse_bank_file(path)
    assert preset.zones[0].ahdsr == ((0.0, 0.2), (1.0, 1.0))
    audio = waf.render_note(preset, 67, 127, volume=1.0)
    assert np.abs(audio[:160]).max() == pytest.approx(0.5 * 0.2, abs=0.01)
    assert np.abs(audio[int(0.5 * SR) : int(0.51 * SR)]).max() == pytest.approx(0.5 * 0.6, abs=0.01)
    # after its last point the reference ramps from it to zero at note-off + release
    assert np.abs(audio[int(2.0 * SR) : int(2.01 * SR)]).max() == pytest.approx(0.5 * (1 - 1 / 2.05), abs=0.01)


@pytest.mark.needs_shared
@pytest.mark.parametrize(("total", "hold", "sr"), [(4.0, 3.0, 16000), (1.5, 1.0, 22050), (0.3, 0.0, 16000)])
def test_exact_length_and_dtype(presets: dict[str, waf.WafPreset], total: float, hold: float, sr: int) -> None:
    audio = waf.render_note(
        presets["0000_GeneralUserGS_sf2_file"], 60, 100, sample_rate=sr, hold_seconds=hold, total_seconds=total
    )
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) == round(total * sr)
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() < 1.0


@pytest.mark.needs_shared
def test_deterministic_across_parses_and_cache(banks: Path) -> None:
    path = banks / "0400_GeneralUserGS_sf2_file.js"
    a = waf.parse_bank_file(path)
    first = [waf.render_note(a, p, v) for p in (60, 72) for v in (50, 127)]
    again = [waf.render_note(a, p, v) for p in (60, 72) for v in (50, 127)]  # from the preset's cache
    fresh = [waf.render_note(waf.parse_bank_file(path), p, v) for p in (60, 72) for v in (50, 127)]
    for x, y, z in zip(first, again, fresh, strict=True):
        assert x.tobytes() == y.tobytes() == z.tobytes()


@pytest.mark.needs_shared
def test_louder_at_higher_velocity(presets: dict[str, waf.WafPreset]) -> None:
    piano = presets["0000_GeneralUserGS_sf2_file"]
    loud, soft = waf.render_note(piano, 60, 127), waf.render_note(piano, 60, 25)
    assert rms(loud, 0, 3) > rms(soft, 0, 3) * 4
    assert rms(loud, 0, 3) / rms(soft, 0, 3) == pytest.approx(127 / 25, rel=1e-4)


# --------------------------------------------------------------------------- tolerant reader and bad input


def test_tolerant_parser_on_the_handmade_fixture() -> None:
    preset = waf.parse_bank_file(FIXTURE)
    assert (preset.library, preset.program, preset.variant) == ("Tolerant", 73, 0)
    assert [b.library for b in waf.list_bank_files(FIXTURE.parent)] == ["Tolerant"]
    assert len(preset.zones) == 2  # the reversed key range and the zone without audio are dropped
    raw, wav = preset.zones
    assert (raw.original_pitch, raw.key_low, raw.key_high, raw.encoding) == (6900, 0, 75, "sample")
    assert (wav.encoding, wav.sample_rate, wav.ahdsr) == ("file", 22000, ((0.0, 0.25), (0.5, 1.0)))
    assert abs(cents_off(waf.render_note(preset, 69, 100), SR, 69)) < 1.0  # int16 sample, looped
    assert abs(cents_off(waf.render_note(preset, 81, 100), SR, 81)) < 1.0  # WAV `file`, looped


def test_parse_js_literal_edge_cases() -> None:
    text = """// leading comment
    var x = { a: [1, , 2,], 'b': "q\\"uote\\n", c: -0x10, d: .5, e: 1e3, f: -(2*3)+1, g: null, h: undefined,
              /* block */ i: {nested: [true, false,],}, 42: 'n', };"""
    assert waf.parse_js_literal(text) == {
        "a": [1, 2],
        "b": 'q"uote\n',
        "c": -16,
        "d": 0.5,
        "e": 1000.0,
        "f": -5,
        "g": None,
        "h": None,
        "i": {"nested": [True, False]},
        "42": "n",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("var x = {zones:[{midi:0, sample:'AAAA'", "missing"),
        ("var x = {zones:[{midi:0 originalPitch:1}]}", "expected ','"),
        ("var x = {zones: window.foo}", "only literal values"),
        ("var x = {zones:[{sample:'unterminated}]}", "unterminated string"),
        ("hello, world", "no object literal"),
        ("var x = {tones:[]}", "no 'zones' array"),
        ("var x = {zones:[{midi:0}]}", "no playable zone"),
    ],
)
def test_corrupt_bank_files_fail_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "0001_Broken_sf2.js"
    path.write_text(text)
    with pytest.raises(waf.WafError) as err:
        waf.parse_bank_file(path)
    assert message in str(err.value) and path.name in str(err.value) and "\n" not in str(err.value)


def test_damaged_fixture_never_escapes_as_another_exception(tmp_path: Path) -> None:
    """Cut or scramble the fixture anywhere: the reader either parses it or raises WafError, nothing else."""
    text = FIXTURE.read_text()
    rng = np.random.default_rng(0)
    path = tmp_path / "0730_Damaged_sf2.js"
    cuts = [text[:i] for i in rng.integers(0, len(text), 150)]
    flips = []
    for i in rng.integers(0, len(text), 150):
        flips.append(text[:i] + rng.choice(list("{}[]:,'\"/*-+.x0 \n\\")) + text[i + 1 :])
    for damaged in cuts + flips:
        path.write_text(damaged)
        try:
            waf.parse_bank_file(path)
        except waf.WafError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(path.name)


@pytest.mark.needs_shared
def test_truncated_real_bank_fails_clearly(banks: Path, tmp_path: Path) -> None:
    data = (banks / "0730_JCLive_sf2_file.js").read_text()
    path = tmp_path / "0730_JCLive_sf2_file.js"
    path.write_text(data[: len(data) // 2])
    with pytest.raises(waf.WafError, match="0730_JCLive_sf2_file.js: not a WebAudioFont preset"):
        waf.parse_bank_file(path)


def test_undecodable_audio_fails_at_decode_with_one_line(tmp_path: Path) -> None:
    junk = base64.b64encode(b"ID3" + bytes(range(256)) * 8).decode()
    zone = sine_zone(400, 16000, 20, 67)
    del zone["sample"]
    zone["file"] = junk
    preset = waf.parse_bank_file(write_bank(tmp_path / "0001_Junk_sf2_file.js", [zone]))
    with pytest.raises(waf.WafError, match=r"0001_Junk_sf2_file.js: zone 0: cannot decode the 2051-byte MP3") as err:
        waf.render_note(preset, 67, 100)
    assert "\n" not in str(err.value) and "BytesIO" not in str(err.value)


@pytest.mark.needs_shared
def test_the_one_undecodable_real_zone_fails_only_its_keys(banks: Path) -> None:
    preset = waf.parse_bank_file(banks / "0110_JCLive_sf2_file.js")  # zone 3 is a 225-byte MP3
    assert np.abs(waf.render_note(preset, 60, 100)).max() > 0.01
    with pytest.raises(waf.WafError, match=r"0110_JCLive_sf2_file.js: zone 3: cannot decode the 225-byte MP3"):
        waf.render_note(preset, 84, 100)
    with pytest.raises(waf.WafError, match="zone 3"):
        preset.decode_all()


def test_wav_file_payload_is_decoded(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.5 * np.sin(2 * np.pi * np.arange(8000) / 40), 16000, format="WAV")
    zone = sine_zone(400, 16000, 20, 67)
    del zone["sample"]
    zone["file"] = base64.b64encode(buffer.getvalue()).decode()
    preset = waf.parse_bank_file(write_bank(tmp_path / "w.js", [zone]))
    assert preset.zones[0].encoding == "file"
    played = peak_hz(waf.render_note(preset, 67, 100), SR, 400)  # the root key plays the sample's own 400 Hz
    assert abs(1200 * np.log2(played / 400)) < 1.0


def test_loop_points_are_seconds_when_the_file_rate_differs(tmp_path: Path) -> None:
    # As in the real MP3 banks, the file's rate (32 kHz) is not the zone's sampleRate (16 kHz):
    # loop points count zone samples, so 40..320 is 2.5..20 ms, i.e. buffer 80..640 = 7 whole
    # periods of 400 Hz. Read as buffer indices they would be 3.5 periods: a phase flip per wrap.
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.5 * np.sin(2 * np.pi * np.arange(960) / 80), 32000, format="WAV")
    zone = sine_zone(400, 16000, 20, 67, loopStart=40, loopEnd=320)
    del zone["sample"]
    zone["file"] = base64.b64encode(buffer.getvalue()).decode()
    preset = waf.parse_bank_file(write_bank(tmp_path / "w.js", [zone]))
    audio = waf.render_note(preset, 67, 127)[SR // 2 : SR * 5 // 2].astype(np.float64)
    mag2 = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / SR)
    assert mag2[np.abs(freqs - 400) < 20].sum() / mag2.sum() > 0.999  # a clean, click-free 400 Hz


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pitch": 128}, "pitch"),
        ({"pitch": 60.5}, "pitch"),
        ({"velocity": 0}, "velocity"),
        ({"velocity": 128}, "velocity"),
        ({"hold_seconds": 5.0}, "hold_seconds"),
        ({"total_seconds": 0.0}, "total_seconds"),
        ({"sample_rate": 100}, "sample_rate"),
        ({"release_seconds": -1.0}, "release_seconds"),
    ],
)
def test_bad_arguments_raise_waf_error(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    preset = waf.parse_bank_file(write_bank(tmp_path / "s.js", [sine_zone(400, 16000, 20, 67)]))
    args: dict[str, object] = {"pitch": 60, "velocity": 100, **kwargs}
    with pytest.raises(waf.WafError, match=message):
        waf.render_note(preset, **args)  # type: ignore[arg-type]


def test_missing_or_empty_bank_folder(tmp_path: Path) -> None:
    with pytest.raises(waf.WafError, match="not found"):
        waf.list_bank_files(tmp_path / "nope")
    with pytest.raises(waf.WafError, match="no WebAudioFont bank files"):
        waf.list_bank_files(tmp_path)

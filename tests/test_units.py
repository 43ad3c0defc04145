"""The per-source unit builder: each unit in its own folder, merged into one NSynth-layout corpus."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from instrument_ai.train.corpus import build as corpus
from instrument_ai.train.corpus import units
from instrument_ai.train.corpus.nsynth import iter_notes
from instrument_ai.train.corpus.nsynth import read_examples_json as read_examples
from instrument_ai.train.sources.imported import NUM_SAMPLES, ImportedNote, Problems


def toy_notes(problems: Problems, *, family: str, count: int, seed: int) -> list[ImportedNote]:
    """Decaying sines (or noise for `other`), plus one bad buffer the builder must count."""
    rng = np.random.default_rng(seed)
    t = np.arange(NUM_SAMPLES) / 16000
    out = []
    for k in range(count):
        pitch = 0 if family == "other" else 48 + 3 * k
        if family == "other":
            audio = 0.1 * rng.standard_normal(NUM_SAMPLES)
        else:
            audio = 0.5 * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t) * np.exp(-3 * t)
        out.append(ImportedNote(audio.astype(np.float32), family, "acoustic", "inst-a", pitch, 100, 0.5 + k / 10,
                                f"toy/{k}.wav", pitch_estimated=k == 0))  # fmt: skip
    out.append(ImportedNote(np.zeros(10, np.float32), family, "acoustic", "inst-a", 60, 100, 1.0, "toy/short.wav"))
    problems.add("unreadable", "toy/missing.wav: no such file")
    return out


def toy_unit(name: str, family: str, count: int, kind: str = "notes") -> units.Unit:
    return units.Unit(name, kind, name, {"count": count, "family": family},
                      produce=partial(toy_notes, family=family, count=count, seed=len(name)))  # fmt: skip


def tim_unit(options: corpus.BuildOptions) -> units.Unit:
    lib = corpus.locate_libraries(None)["TimGM6mb"]
    return units.Unit("TimGM6mb", "soundfont", "TimGM6mb", units.library_fingerprint(lib, options), library=lib)


def test_units_build_merge_and_rebuild_only_the_new_source(tmp_path: Path) -> None:
    options = corpus.BuildOptions(libraries=(), limit=4)
    out = tmp_path / "c"
    first = [tim_unit(options), toy_unit("reeds", "reed", 3)]
    summary = units.build_units(out, first, options)
    assert [u.rendered_now for u in summary.units] == [True, True]
    assert summary.notes == 4 + 3
    assert summary.problems == {"bad_buffer": 1, "unreadable": 1}
    examples = read_examples(out)
    assert len(examples) == 7
    for key in examples:  # NSynth's layout for readers
        assert (out / "audio" / f"{key}.wav").is_file()
    instruments = json.loads((out / "instruments.json").read_text())
    kinds = {row["library"]: (row["kind"], row["lineage"]) for row in instruments.values()}
    assert kinds == {"TimGM6mb": ("soundfont", "TimGM6mb"), "reeds": ("notes", "reeds")}
    lib = {name: row["library"] for name, row in instruments.items()}
    reed_notes = [n for n in iter_notes(out, audio="none") if lib[n.instrument_str] == "reeds"]
    assert sorted(n.sounding_seconds for n in reed_notes) == pytest.approx([0.5, 0.6, 0.7])
    assert all(n.sounding_seconds is None for n in iter_notes(out, audio="none") if lib[n.instrument_str] != "reeds")
    tim_wav = out / UNITS / "TimGM6mb" / "audio"
    stamp = {p.name: p.stat().st_mtime_ns for p in tim_wav.iterdir()}

    second = [*first, toy_unit("noise", "other", 4, kind="other")]
    summary = units.build_units(out, second, options)
    assert [u.rendered_now for u in summary.units] == [False, False, True]
    assert {p.name: p.stat().st_mtime_ns for p in tim_wav.iterdir()} == stamp  # not re-rendered
    assert len(read_examples(out)) == 11
    others = [n for n in iter_notes(out, audio="none") if n.family_str == "other"]
    assert len(others) == 4 and len({n.instrument_str for n in others}) == 4  # pitch 0 clips: one instrument each
    merged = json.loads((out / "corpus.json").read_text())
    assert merged["status"] == "complete" and set(merged["units"]) == {"TimGM6mb", "reeds", "noise"}
    assert not list((out / UNITS).glob("*.partial*"))
    # a changed fingerprint re-renders that unit only
    summary = units.build_units(out, [*first[:1], toy_unit("reeds", "reed", 2), second[2]], options)
    assert [u.rendered_now for u in summary.units] == [False, True, False]
    assert len(read_examples(out)) == 4 + 2 + 4
    assert os.stat(out / "audio" / f"{next(iter(read_examples(out)))}.wav").st_nlink >= 2  # hard-linked


UNITS = units.UNITS_DIR


def test_strict_makes_a_counted_problem_fatal_and_leaves_no_unit(tmp_path: Path) -> None:
    out = tmp_path / "c"
    with pytest.raises(corpus.CorpusError, match=r"unit reeds: .*bad_buffer 1.*--strict"):
        units.build_units(out, [toy_unit("reeds", "reed", 2)], corpus.BuildOptions(libraries=()), strict=True)
    assert not (out / UNITS / "reeds").exists() and not (out / "examples.json").exists()


def test_bad_units_are_refused_with_one_line(tmp_path: Path) -> None:
    options = corpus.BuildOptions(libraries=())
    with pytest.raises(corpus.CorpusError, match="two units named 'a'"):
        units.build_units(tmp_path / "x", [toy_unit("a", "reed", 1), toy_unit("a", "reed", 1)], options)
    with pytest.raises(corpus.CorpusError, match="unknown kind"):
        units.build_units(tmp_path / "x", [toy_unit("a", "reed", 1, kind="bogus")], options)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(corpus.CorpusError, match="not empty"):
        units.build_units(tmp_path / "full", [toy_unit("a", "reed", 1)], options)


def test_cli_unit_build_and_report(tmp_path: Path) -> None:
    from clirun import run_main

    out = tmp_path / "c"
    args = ["data", "build", "--out", str(out), "--units", "--libraries", "TimGM6mb", "--limit", "5", "--jobs", "1"]
    result = run_main(*args)
    assert result.exit_code == 0, result.output
    assert "5 notes" in result.output and "1 rendered now" in result.output and "problems: none" in result.output
    again = run_main(*args)
    assert again.exit_code == 0 and "0 rendered now" in again.output
    png = tmp_path / "composition.png"
    report = run_main(*["data", "report", str(out), "--png", str(png), "--json"])
    assert report.exit_code == 0, report.output
    counts = json.loads(report.output.splitlines()[0])
    assert counts["notes"] == 5 and counts["kinds"] == {"soundfont": 5}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_main(*["data", "report", str(tmp_path / "nope")])
    assert bad.exit_code != 0 and len(bad.output.strip().splitlines()) == 1


def test_recorded_catalogue_files_become_notes_and_problems_are_counted() -> None:
    """The notes/other path of catalogue_units on an in-memory tree: labelled, estimated, unlabelled, broken."""
    import io
    from types import SimpleNamespace

    import soundfile

    from instrument_ai.train.corpus import catalogue_units

    t = np.arange(22050) / 44100
    files = {}
    for name, hz in (("flute/A4.wav", 440.0), ("flute/x.wav", 261.63)):
        buf = io.BytesIO()
        soundfile.write(buf, (0.5 * np.sin(2 * np.pi * hz * t) * np.exp(-4 * t)).astype(np.float32), 44100,
                        format="WAV")  # fmt: skip
        files[name] = buf.getvalue()
    files["flute/broken.wav"] = b"RIFF0000WAVEjunk"
    files["README.txt"] = b"no note"

    from instrument_ai.train.sources.catalogue import Skip

    def label(path: str) -> SimpleNamespace | Skip:
        if not path.startswith("flute/"):
            return Skip("no_rule", f"toyflute: {path}: matches no rule")
        pitch = 69 if path.endswith("A4.wav") else None  # None: estimate it
        return SimpleNamespace(family="flute", source="acoustic", instrument="flute", pitch=pitch, velocity=100)

    entry = SimpleNamespace(name="toyflute", label=label)
    tree = SimpleNamespace(read=files.__getitem__)
    problems = Problems()
    notes = list(catalogue_units._recorded(problems, entry, tree, sorted(files)))
    assert [(n.pitch, n.pitch_estimated) for n in notes] == [(69, False), (60, True)]
    assert all(n.origin.startswith("toyflute:flute/") and 0.2 < n.sounding_seconds <= 0.5 for n in notes)
    assert problems.counts == {"no_rule": 1, "unreadable": 1}


def test_composition_counts_recorded_instrument_notes_apart_from_renders_and_other(tmp_path: Path) -> None:
    from instrument_ai.train.corpus.composition import composition

    rows = {"tuba_0": {"library": "war-tuba", "lineage": "war-tuba", "kind": "notes"},
            "sax_0": {"library": "solosax", "lineage": "solosax", "kind": "sfz"},
            "gm_0": {"library": "TimGM6mb", "lineage": "TimGM6mb", "kind": "soundfont"},
            "fx_0": {"library": "war-tuba", "lineage": "war-tuba", "kind": "notes"}}  # fmt: skip
    examples = {}
    for i, (inst, fam) in enumerate([("tuba_0", "brass"), ("tuba_0", "brass"), ("sax_0", "reed"), ("gm_0", "reed"),
                                     ("fx_0", "other")]):  # fmt: skip
        examples[f"{inst}-{i}"] = {"instrument_str": inst, "instrument_family_str": fam, "note_str": f"{inst}-{i}"}
    (tmp_path / "instruments.json").write_text(json.dumps(rows))
    (tmp_path / "examples.json").write_text(json.dumps(examples))
    counts = composition(tmp_path)
    assert counts["recorded_instrument_notes"] == 3 and counts["recorded_instrument_sources"] == 2
    assert counts["recorded_instrument_families"] == {"brass": 2, "reed": 1}
    assert counts["other_clips"] == 1 and counts["other_sources"] == 1

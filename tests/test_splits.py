"""`instrument-ai data split`: instrument-level splits, lineage kept together, no note in two splits.

The corpus here is labels only (examples.json + instruments.json, no audio):
splitting never opens a wav, and a fixture of 100+ instruments costs nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from clirun import run_main

from instrument_ai.device.labels import FAMILIES
from instrument_ai.train.corpus import info as info_module
from instrument_ai.train.corpus import nsynth as data
from instrument_ai.train.corpus.splits import SplitError, check_disjoint, make_splits, write_splits
from instrument_ai.train.sources import gm_programs

LIBRARIES = ("TimGM6mb", "FluidR3", "MuseScoreGeneral", "GeneralUserGS", "AlexsGM")
PROGRAMS = (0, 4, 11, 19, 24, 33, 40, 48, 56, 65, 73, 81, 52)


def make_corpus(folder: Path, *, with_instruments: bool = True) -> None:
    """Every library x program (FluidR3 and GeneralUserGS with a second variant), 3 notes each."""
    entries, instruments = [], {}
    counters: Counter[tuple[str, str]] = Counter()
    index = 0
    for library in LIBRARIES:
        for program in PROGRAMS:
            for variant in range(2 if library in ("FluidR3", "GeneralUserGS") else 1):
                gm = gm_programs.GM_PROGRAMS[program]
                key = (gm.family_str, gm.source_str)
                name = data.format_instrument_str(gm.family_str, gm.source_str, counters[key])
                counters[key] += 1
                instruments[name] = {
                    "library": library,
                    "lineage": "FluidR3" if library == "MuseScoreGeneral" else library,
                    "program": program, "variant": variant,
                    "family_str": gm.family_str, "source_str": gm.source_str,
                }  # fmt: skip
                for pitch in (gm.low, gm.low + 3, gm.low + 6):
                    entries.append(
                        data.Note(
                            note_str=data.format_note_str(name, pitch, 100),
                            instrument=index,
                            instrument_str=name,
                            pitch=pitch,
                            velocity=100,
                            sample_rate=16000,
                            family=FAMILIES.index(gm.family_str),
                            family_str=gm.family_str,
                            source=data.SOURCES.index(gm.source_str),
                            source_str=gm.source_str,
                            qualities=[0] * 10,
                            note=len(entries),
                        )  # fmt: skip
                    )
                index += 1
    data.write_examples_json(folder, entries)
    if with_instruments:
        (folder / "instruments.json").write_text(json.dumps(instruments))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    make_corpus(tmp_path)
    return tmp_path


def owners(splits: dict[str, list[str]]) -> dict[str, str]:
    return {member: name for name, members in splits.items() for member in members}


def notes_by_split(folder: Path, splits: dict[str, list[str]]) -> dict[str, set[str]]:
    owner = owners(splits)
    out: dict[str, set[str]] = {name: set() for name in splits}
    for note in data.iter_notes(folder, audio="none"):
        out[owner[note.instrument_str]].add(note.note_str)
    return out


def assert_partition(folder: Path, splits: dict[str, list[str]]) -> None:
    instruments = json.loads((folder / "instruments.json").read_text())
    check_disjoint(splits)
    every = [m for members in splits.values() for m in members]
    assert len(every) == len(set(every)) and set(every) == set(instruments)  # each instrument in exactly one split
    notes = notes_by_split(folder, splits)
    all_notes = [n for ns in notes.values() for n in ns]
    assert len(all_notes) == len(set(all_notes)) == sum(1 for _ in data.iter_notes(folder, audio="none"))
    # a group (lineage, program) never straddles two splits
    side: dict[tuple[str, int], str] = {}
    owner = owners(splits)
    for name, row in instruments.items():
        group = (row["lineage"], row["program"])
        assert side.setdefault(group, owner[name]) == owner[name], group


def test_nsynth_scheme_is_a_partition(folder: Path) -> None:
    content = make_splits(folder, scheme="nsynth", valid=0.15, test=0.15, seed=3)
    assert content["scheme"] == "nsynth" and set(content["splits"]) == {"train", "valid", "test"}
    assert_partition(folder, content["splits"])
    assert all(content["splits"][name] for name in ("train", "valid", "test"))
    # FluidR3 and MuseScore General instruments of one program are always on the same side
    instruments = json.loads((folder / "instruments.json").read_text())
    owner = owners(content["splits"])
    for program in PROGRAMS:
        sides = {owner[n] for n, r in instruments.items() if r["lineage"] == "FluidR3" and r["program"] == program}
        assert len(sides) == 1, program


def test_nsynth_scheme_is_seeded(folder: Path) -> None:
    a = make_splits(folder, scheme="nsynth", seed=1)
    assert a == make_splits(folder, scheme="nsynth", seed=1)
    assert a["splits"] != make_splits(folder, scheme="nsynth", seed=2)["splits"]


@pytest.mark.parametrize("held", ["FluidR3", "MuseScoreGeneral"])
def test_holdout_takes_the_whole_lineage(folder: Path, held: str) -> None:
    content = make_splits(folder, scheme="holdout", holdout=[held], valid=0.1, seed=0)
    assert content["params"]["holdout"] == ["FluidR3", "MuseScoreGeneral"]
    assert_partition(folder, content["splits"])
    instruments = json.loads((folder / "instruments.json").read_text())
    test = set(content["splits"]["test"])
    assert test == {n for n, r in instruments.items() if r["lineage"] == "FluidR3"}
    assert content["splits"]["valid"]


def test_holdout_of_an_independent_library(folder: Path) -> None:
    content = make_splits(folder, scheme="holdout", holdout=["AlexsGM"])
    instruments = json.loads((folder / "instruments.json").read_text())
    assert {instruments[n]["library"] for n in content["splits"]["test"]} == {"AlexsGM"}
    assert "AlexsGM" not in {instruments[n]["library"] for n in content["splits"]["train"] + content["splits"]["valid"]}


def test_cli_writes_splits_json_the_data_module_reads(folder: Path) -> None:
    result = run_main(*["data", "split", str(folder), "--scheme", "holdout", "--holdout", "TimGM6mb"])
    assert result.exit_code == 0, result.output
    assert "test = TimGM6mb" in result.output
    info = info_module.corpus_info(folder)
    assert info.scheme == "holdout" and info.splits is not None
    assert {info.library_of(n) for n in info.splits["test"]} == {"TimGM6mb"}
    train_notes = list(info_module.notes_for_split(folder, "train", audio="none"))
    assert train_notes and all(info.library_of(n.instrument_str) != "TimGM6mb" for n in train_notes)
    raw = json.loads((folder / "splits.json").read_text())
    assert set(raw) >= {"scheme", "splits"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheme", "holdout", "--holdout", "NoSuchLib"], "has no notes"),
        (["--scheme", "holdout"], "needs --holdout"),
        (["--scheme", "nsynth", "--valid", "0.6", "--test", "0.5"], "leave something to train on"),
        (["--scheme", "nsynth", "--holdout", "FluidR3"], "--holdout belongs"),
        (["--scheme", "magic"], "magic"),
    ],
)
def test_cli_bad_input_is_one_line(folder: Path, args: list[str], message: str) -> None:
    result = run_main(*["data", "split", str(folder), *args])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert message in result.output


def test_holding_out_everything_is_refused(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    with pytest.raises(SplitError, match="nothing to train on"):
        make_splits(tmp_path, scheme="holdout", holdout=list(LIBRARIES))


def test_real_nsynth_folder_without_instruments_json(tmp_path: Path) -> None:
    make_corpus(tmp_path, with_instruments=False)
    content = make_splits(tmp_path, scheme="nsynth", seed=0)
    every = [m for members in content["splits"].values() for m in members]
    assert len(every) == len(set(every)) == len({n.instrument_str for n in data.iter_notes(tmp_path, audio="none")})
    with pytest.raises(SplitError, match="nsynth"):
        make_splits(tmp_path, scheme="holdout", holdout=["FluidR3"])
    path = write_splits(tmp_path, content, tmp_path / "other.json")
    assert json.loads(path.read_text())["splits"] == content["splits"]


def test_missing_folder_is_one_line() -> None:
    result = run_main(*["data", "split", "/no/such/corpus", "--scheme", "nsynth"])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1

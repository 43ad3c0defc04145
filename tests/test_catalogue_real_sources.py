"""The issue-23 catalogue entries (double basses, baritone sax, cellos): their pitch, family and grouping rules.

The plain tests check the rules on path names; the `needs_sources` ones read the pinned commits from the mirrors
in INSTRUMENT_AI_SOURCES and check what each entry selects, so a glob that drifts from the listing fails here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from instrument_ai.train.experiments.holdout import fold_name
from instrument_ai.train.sources import catalogue as cat
from instrument_ai.train.sources import gm_programs
from instrument_ai.train.sources.gittree import GitTree, find_git_dir

NEW = (
    "karoryfer-meatbass",
    "dsmolken-double-bass",
    "karoryfer-bear-sax",
    "karoryfer-string-cyborgs",
    "playitright-cello",
)


def source(name: str) -> cat.Source:
    return next(s for s in cat.load() if s.name == name)


def label(name: str, path: str) -> cat.FileLabel:
    found = source(name).label(path)
    assert isinstance(found, cat.FileLabel), found
    return found


def test_bear_sax_names_run_an_octave_below_standard() -> None:
    assert label("karoryfer-bear-sax", "Samples/db1_vl1_rr1.wav").pitch == 37  # the SFZ's key for db1
    assert label("karoryfer-bear-sax", "Samples/d1_vl3_rr2.wav").pitch == 38
    assert label("karoryfer-bear-sax", "Samples/ab3_vl4_rr4.wav").pitch == 68
    assert label("karoryfer-bear-sax", "Samples/subtone_eb1_rr2.wav").pitch == 39
    looped = label("karoryfer-bear-sax", "Samples/a1_looped_f.wav")
    assert (looped.pitch, looped.velocity, looped.family) == (45, 110, "reed")
    layers = [label("karoryfer-bear-sax", f"Samples/c2_vl{i}_rr1.wav").velocity for i in (1, 2, 3, 4)]
    assert layers == [40, 70, 100, 127]
    names = [
        "Samples/c2_single_cycle.wav",
        "Samples/c2_open_rr1.wav",
        "Samples/growl3_rr1.wav",
        "Samples/c2_vl1_rr1.wav",
    ]
    assert source("karoryfer-bear-sax").select(names) == ["Samples/c2_vl1_rr1.wav"]


def test_pizzicato_is_left_out_as_the_gm_map_leaves_it_out() -> None:
    assert gm_programs.lookup(45) is None  # GM 46 "Pizzicato Strings" (0-based 45): not in the family map
    meat = ["Samples/pizz/a1_vl2_rr3.wav", "Samples/pizz/perc1_rr1.wav", "Samples/pizz/perc4_rr2.wav",
            "Samples/arco/a1_vl2_up.wav", "Samples/arco_looped/c2_vl3_down.wav"]  # fmt: skip
    assert source("karoryfer-meatbass").select(meat) == [
        "Samples/arco/a1_vl2_up.wav", "Samples/arco_looped/c2_vl3_down.wav", "Samples/pizz/perc4_rr2.wav"]  # fmt: skip
    dsm = ["pizz/pizz_a2_fa.wav", "pizz/noises/pizz_noise_strum_1.wav", "pizz/noises/pizz_noise_mute_g.wav",
           "arco/noises/arco_noise_harmonics_1.wav", "arco/extra/super_c_ffp.wav", "pizz/noises/pizz_noise_click.wav",
           "arco/arco_c1_pp_down.wav"]  # fmt: skip
    assert source("dsmolken-double-bass").select(dsm) == [
        "arco/arco_c1_pp_down.wav",
        "pizz/noises/pizz_noise_click.wav",
    ]


def test_double_bass_labels() -> None:
    bowed = label("karoryfer-meatbass", "Samples/arco/a0_vl5_down.wav")
    assert (bowed.family, bowed.pitch, bowed.velocity) == ("string", 21, 127)  # the SFZ maps a0 to key 21
    hit = label("karoryfer-meatbass", "Samples/pizz/perc5_rr3.wav")
    assert (hit.family, hit.pitch) == ("other", 0)
    arco = label("dsmolken-double-bass", "arco/arco_eb1_pp_up.wav")
    assert (arco.family, arco.pitch, arco.velocity) == ("string", 27, 25)
    assert label("dsmolken-double-bass", "arco/arco_c4_ff_down.wav").velocity == 127


def test_the_two_double_basses_are_one_holdout_fold() -> None:
    meat, dsm = source("karoryfer-meatbass"), source("dsmolken-double-bass")
    assert meat.group == dsm.group
    assert fold_name(meat.name, meat.group) == fold_name(dsm.name, dsm.group) == meat.group
    others = [source(n) for n in NEW[2:]]
    assert len({s.group for s in others} | {meat.group}) == 4  # every other new source is its own fold


def test_cello_pitches() -> None:
    assert label("karoryfer-string-cyborgs", "Samples/blackheart/C1.wav").pitch == 36  # SFZ: C1 -> key 36
    assert label("karoryfer-string-cyborgs", "Samples/blackheart/Eb3.wav").pitch == 63
    assert source("karoryfer-string-cyborgs").select(["Samples/blackheart/singlecycle_A1.wav",
                                                      "Samples/blackheart/noise_osc1.wav"]) == []  # fmt: skip
    assert label("playitright-cello", "sounds/cello/357902__mtg__cello-c2.wav").pitch == 36
    # the copy dropped the sharp: 357903 is the pack's cello-c-2 (C#2), so its pitch is estimated, not read as C2
    sharp = label("playitright-cello", "sounds/cello/357903__mtg__cello-c2.wav")
    assert sharp.pitch is None and sharp.pitch_from == "estimate"


# ---------------------------------------------------------------------------- at the pinned commits


def tree_of(entry: cat.Source) -> GitTree:
    """The entry's pinned commit in the INSTRUMENT_AI_SOURCES mirror (skips when that mirror or commit is absent)."""
    from conftest import sources_folder

    root = sources_folder()
    assert root is not None
    git_dir = find_git_dir(Path(root) / entry.slug)
    if git_dir is None:
        pytest.skip(f"no mirror of {entry.slug} in {root}")
    tree = GitTree(git_dir, entry.commit)
    if not tree.has_commit():
        tree.close()
        pytest.skip(f"{entry.slug} mirror lacks commit {entry.commit[:12]}")
    return tree


@pytest.mark.needs_sources
@pytest.mark.parametrize(("name", "families"), [
    ("karoryfer-meatbass", {"string": 272, "other": 30}),
    ("dsmolken-double-bass", {"string": 159, "other": 32}),
    ("karoryfer-bear-sax", {"reed": 540}),
    ("karoryfer-string-cyborgs", {"string": 17}),
    ("playitright-cello", {"string": 33}),
])  # fmt: skip
def test_selected_files_per_family_at_the_pinned_commit(name: str, families: dict[str, int]) -> None:
    entry = source(name)
    tree = tree_of(entry)
    try:
        labels = [entry.label(p) for p in entry.select(tree.paths())]
    finally:
        tree.close()
    assert all(isinstance(x, cat.FileLabel) for x in labels), [x for x in labels if isinstance(x, cat.Skip)][:3]
    assert dict(Counter(x.family for x in labels if isinstance(x, cat.FileLabel))) == families


@pytest.mark.needs_sources
def test_playitright_sharps_are_estimated_as_the_pack_readme_names_them() -> None:
    from instrument_ai.train.sources.import_notes import prepare_recording
    from instrument_ai.train.sources.pitch import estimate_pitch

    entry = source("playitright-cello")
    tree = tree_of(entry)
    try:
        readme = tree.read("sounds/cello/_readme_and_license.txt").decode()
        estimated = {}
        for path in entry.select(tree.paths()):
            found_label = entry.label(path)
            if isinstance(found_label, cat.FileLabel) and found_label.pitch is None:
                audio, _ = prepare_recording(tree.read(path), path)
                found = estimate_pitch(audio)
                assert found is not None
                estimated[path.rsplit("/", 1)[1].split("__")[0]] = round(found.midi)
    finally:
        tree.close()
    assert len(estimated) == 14
    for sound_id, midi in estimated.items():  # the readme spells C#2 as `cello-c-2`
        spelt = readme.split(f"{sound_id}__mtg__cello-", 1)[1].split(".wav", 1)[0]
        letter, octave = spelt.split("-")
        assert midi == cat.note_to_midi(letter + "#", octave), (sound_id, spelt, midi)

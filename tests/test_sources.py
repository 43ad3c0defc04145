"""Source kinds (train/corpus/kinds.py): the grouping rule, note-length buckets and the `other` figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instrument_ai.train.corpus.kinds import declared_kinds, kind_means, length_bucket, other_figures, source_kind


def test_kind_field_wins_else_it_is_derived_from_the_notes() -> None:
    assert source_kind(["brass"], [None], "webaudiofont") == "soundfont"
    assert source_kind(["other"], [None], "sfz") == "real"
    assert source_kind(["other", "other"], [None, 0.3]) == "other"  # all other: an other-source
    assert source_kind(["brass", "other"], [None, 0.3]) == "real"  # sounding_seconds: a real recording
    assert source_kind(["brass", "reed"], [None, None]) == "soundfont"
    with pytest.raises(ValueError, match="unknown source kind"):
        source_kind(["brass"], [None], "tape")


def test_declared_kinds_from_corpus_json_and_instrument_rows(tmp_path: Path) -> None:
    (tmp_path / "corpus.json").write_text(json.dumps({"libraries": {"orch": {"kind": "notes"}}}))
    (tmp_path / "instruments.json").write_text(json.dumps({"x": {"library": "rain", "kind": "other"}}))
    assert declared_kinds(tmp_path) == {"orch": "notes", "rain": "other"}


def test_length_buckets() -> None:
    assert [length_bucket(s) for s in (0.25, 0.5, 1.5, 1.51, None)] == ["short", "medium", "medium", "long", "long"]


def test_other_figures_count_changes_to_an_instrument_per_minute() -> None:
    # two clips of 8 hops (0.25 s): 2 s each, 4 s in all
    labels = ["other", "brass", "brass", "other", "guitar", "unknown", "other", "other"] + ["brass"] + ["other"] * 7
    clip = np.repeat([0, 1], 8)
    f = other_figures(labels, clip, 0.25)
    assert f["hops"] == 16 and f["hops_named_instrument"] == pytest.approx(4 / 16)
    assert f["false_events"] == 3 and f["false_events_per_minute"] == pytest.approx(3 / (4 / 60))


def test_kind_means_separate_the_groups() -> None:
    folds = [
        {"kind": "soundfont", "note_accuracy": 0.5},
        {"kind": "soundfont", "note_accuracy": 0.7},
        {"kind": "real", "note_accuracy": 0.2},
        {"kind": "other", "note_accuracy": None, "other": {"hops_named_instrument": 0.1, "false_events_per_minute": 2}},
    ]
    means = kind_means(folds)
    assert means["soundfont"] == {"folds": 2, "mean_note_accuracy": pytest.approx(0.6)}
    assert means["real"]["mean_note_accuracy"] == pytest.approx(0.2) and means["synth"]["folds"] == 0
    assert means["other"]["false_events_per_minute"] == 2

"""Phrases (train/experiments/phrases.py): a source's notes joined with legato overlaps, short gaps and repeats by
a fixed seed, each sounding hop scored against the note sounding in it, played through the daemon's engine."""

from __future__ import annotations

import numpy as np
import pytest
from fakemic import FakeBundle, tone

from instrument_ai.device.settings import EngineSettings
from instrument_ai.train.experiments.phrases import (
    LEAD_SECONDS,
    SourceNote,
    build_phrase,
    hop_truth,
    merge_scores,
    phrase_scores,
    score_hops,
    sounding_part,
    source_phrases,
)

RATE = 16000
FAMILY_OF_FREQ = {200.0: "low", 1000.0: "mid", 4000.0: "high"}


def toy_notes(n: int = 12, seconds: float = 1.0) -> list[SourceNote]:
    freqs = list(FAMILY_OF_FREQ)
    return [SourceNote(tone(freqs[k % 3], seconds).astype(np.float32), FAMILY_OF_FREQ[freqs[k % 3]], f"n{k}")
            for k in range(n)]  # fmt: skip


def test_a_phrase_is_its_notes_in_order_joined_every_way_and_the_same_for_a_seed() -> None:
    notes = toy_notes(12)
    phrase = build_phrase(notes, RATE, seed=3)
    assert build_phrase(notes, RATE, seed=3).audio.tobytes() == phrase.audio.tobytes()
    assert build_phrase(notes, RATE, seed=4).audio.tobytes() != phrase.audio.tobytes()
    played = [n for n in phrase.notes if n.join != "repeat"]
    assert [n.name for n in played] == [n.name for n in notes]
    assert {n.join for n in phrase.notes} == {"first", "legato", "gap", "repeat"}
    assert phrase.notes[0].start == round(LEAD_SECONDS * RATE)
    for before, after in zip(phrase.notes, phrase.notes[1:], strict=False):
        if after.join == "legato":
            assert before.stop - round(0.12 * RATE) <= after.start < before.stop  # overlapping, by 30-120 ms
        elif after.join == "repeat":
            assert after.name == before.name and after.stop - after.start <= 0.6 * RATE
            assert 0.02 * RATE <= after.start - before.stop <= 0.1 * RATE  # a gap shorter than a hop
        else:
            assert 0.04 * RATE <= after.start - before.stop <= 0.3 * RATE
    assert phrase.audio.size == phrase.notes[-1].stop + round(0.5 * RATE)


def test_a_note_sounds_for_its_sounding_seconds_at_most_and_is_faded_when_cut() -> None:
    note = SourceNote(np.ones(4 * RATE, np.float32), "reed", "x", sounding_seconds=0.4)
    part = sounding_part(note, RATE)
    assert part.size == round(0.4 * RATE) and part[0] == 1.0 and part[-1] == 0.0
    assert sounding_part(SourceNote(np.ones(4 * RATE, np.float32), "reed", "x"), RATE).size == round(2.5 * RATE)


def test_hops_are_scored_against_the_note_sounding_most_of_them() -> None:
    notes = [SourceNote(np.ones(RATE, np.float32), "low", "a"), SourceNote(np.ones(RATE, np.float32), "high", "b")]
    phrase = build_phrase(notes, RATE, seed=0)
    truth = hop_truth(phrase, 0.25)
    assert truth[0] is None and truth[-1] is None  # the lead-in and the tail are silence
    assert truth.count("low") >= 3 and "high" in truth
    labels = ["silence" if t is None else t for t in truth]
    labels[truth.index("low")] = "unknown"
    labels[truth.index("high")] = "other"
    labels[len(labels) - 1 - truth[::-1].index("high")] = "low"
    scores = score_hops(labels, truth)
    sounding = sum(t is not None for t in truth)
    assert (scores["unknown"], scores["other"], scores["wrong"]) == (1, 1, 1)
    assert scores["hops"] == sounding and scores["right"] == sounding - 3
    assert scores["share"]["right"] == pytest.approx((sounding - 3) / sounding)
    both = merge_scores([scores, scores])
    assert both["hops"] == 2 * sounding and both["share"] == scores["share"]


def test_phrases_through_the_engine_in_both_decision_modes() -> None:
    notes = toy_notes(12, seconds=1.5)
    phrases = source_phrases(notes, RATE, seed=0, max_notes=9, per_phrase=4)
    assert [len([n for n in p.notes if n.join != "repeat"]) for p in phrases] == [4, 4, 1]
    decisions = {"hops": EngineSettings(), "note": EngineSettings(decision="note")}
    scores = phrase_scores(FakeBundle(), phrases, decisions)
    truth_hops = sum(sum(t is not None for t in hop_truth(p, 0.25)) for p in phrases)
    for name, s in scores.items():
        assert s["hops"] == truth_hops
        assert s["per_note_length"]["0.7-1.5 s"]["hops"] > 0  # the 1.5 s notes (repeats are 0.2-0.6 s)
        assert sum(v["hops"] for v in s["per_note_length"].values()) == truth_hops
        # pure tones, a model that names them: most hops right; a window straddling two notes may be wrong
        assert s["share"]["right"] > 0.6, (name, s)
    # One decision per note restarts the evidence and the window at each attack, so a new tone is not judged
    # with the previous one still in view: fewer hops straddle two notes.
    assert scores["note"]["share"]["right"] > scores["hops"]["share"]["right"]


def test_a_log_mel_model_plays_phrases_through_the_engine_too() -> None:
    """The engine streams what the spec's stage says, so a log-mel model (presets mel2d, mel_ds) is scored on
    phrases as an MFCC model is."""
    import dataclasses

    from instrument_ai.device.frontend import DEFAULT_SPEC, dct_matrix

    class LogMelBundle(FakeBundle):
        def predict(self, features: np.ndarray) -> np.ndarray:  # the centroid straight from the mel bands
            assert features.shape[0] == self.spec.n_mels
            return super().predict((dct_matrix(DEFAULT_SPEC) @ features.astype(np.float64)).astype(np.float32))

    bundle = LogMelBundle(spec=dataclasses.replace(DEFAULT_SPEC, stage="log_mel"))
    phrases = source_phrases(toy_notes(8, seconds=1.5), RATE, seed=0, max_notes=8, per_phrase=4)
    scores = phrase_scores(bundle, phrases, {"hops": EngineSettings()})
    assert scores["hops"]["share"]["right"] > 0.6, scores

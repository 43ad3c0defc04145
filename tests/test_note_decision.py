"""One decision per note (`EngineSettings.decision="note"`): the engine keeps a running sum of log-probabilities
since the note's onset, reset at silence and at a level jump within sound, and decides by the pure rule of
`device.decision.decide_note_labels`; the default (`"hops"`) is unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile
from fakemic import FakeBundle, silence, tone

from instrument_ai.device.decision import chunk_levels_db, decide_note_labels, find_onset
from instrument_ai.device.engine import SILENCE, UNKNOWN, Classifier, Event
from instrument_ai.device.settings import EngineSettings

RATE = 16000


def hops_of(x: np.ndarray, bundle: FakeBundle | None = None, sizes: list[int] | None = None, **settings: object
            ) -> tuple[Classifier, list[Event]]:  # fmt: skip
    clf = Classifier(bundle or FakeBundle(), **settings)
    events: list[Event] = []
    if sizes is None:
        events += clf.process_hops(x)
    else:
        i, j = 0, 0
        while i < x.size:
            events += clf.process_hops(x[i : i + sizes[j % len(sizes)]])
            i, j = i + sizes[j % len(sizes)], j + 1
    return clf, events + clf.flush()


def labels(events: list[Event]) -> list[str]:
    return [e.label for e in events]


# 0.5 s silence, a quiet low tone (2 s), then straight on (no gap) a loud high tone (2 s), 0.5 s silence:
# the level jumps by 20 dB at 2.5 s, so the high tone is a new note.
JUMP = np.concatenate([silence(0.5), tone(200.0, 2.0, amplitude=0.05), tone(4000.0, 2.0), silence(0.5)])
# The same two tones at one level: no onset between them, so they are one note to the rule.
LEGATO = np.concatenate([silence(0.5), tone(200.0, 2.0), tone(4000.0, 2.0), silence(0.5)])


def test_the_default_is_one_decision_per_hop_and_a_bad_decision_is_refused() -> None:
    assert EngineSettings().decision is None  # the bundle's, else the fallback
    assert EngineSettings().resolved({}).decision == "hops"
    with pytest.raises(ValueError, match="decision must be one of hops, note"):
        EngineSettings(decision="notes")  # type: ignore[arg-type]


def test_a_new_note_at_a_level_jump_is_named_from_its_first_hop() -> None:
    _, per_hop = hops_of(JUMP)
    _, per_note = hops_of(JUMP, decision="note")
    silent, low, high = [SILENCE] * 2, ["low"] * 8, ["high"] * 8
    # One decision per note: the evidence restarts at the jump and the window starts there (onset alignment),
    # so every hop of the loud tone is "high", the first one ending 0.25 s after its onset.
    assert labels(per_note) == silent + low + high + silent
    # Per hop, the 0.94 s window still holds the quiet tone for a while after the jump: "low", "mid", then "high".
    assert labels(per_hop) == silent + low + ["low", "low", "mid", "high"] + ["high"] * 4 + silent


def test_legato_at_an_even_level_stays_one_note() -> None:
    _, per_note = hops_of(LEGATO, decision="note")
    # Without a level jump the second tone adds to the first note's evidence: the label stays "low" while its
    # confidence falls, hop after hop.
    assert labels(per_note) == [SILENCE] * 2 + ["low"] * 16 + [SILENCE] * 2
    falling = [e.confidence for e in per_note[10:18]]
    assert falling == sorted(falling, reverse=True) and falling[-1] < 0.7


def test_the_evidence_restarts_at_silence_and_at_an_onset() -> None:
    x = np.concatenate([silence(0.5), tone(200.0, 1.0, amplitude=0.05), tone(200.0, 1.0), silence(0.5),
                        tone(200.0, 1.0), silence(0.5)])  # fmt: skip
    clf = Classifier(FakeBundle(), decision="note")
    counts = []
    for k in range(x.size // 4000):
        clf.process_hops(x[k * 4000 : (k + 1) * 4000])
        counts.append(clf.note_hops)
    # Hops: 2 silent, 4 quiet (1..4), the re-attack restarts (1..4), 2 silent (0), 4 (1..4), 2 silent.
    assert counts == [0, 0, 1, 2, 3, 4, 1, 2, 3, 4, 0, 0, 1, 2, 3, 4, 0, 0]
    assert Classifier(FakeBundle()).note_hops == 0  # decision "hops" keeps no note


def test_streaming_equals_the_batch_rule_with_onsets_found_offline() -> None:
    x = np.concatenate([silence(0.3), tone(200.0, 1.2, amplitude=0.05), tone(1000.0, 0.9), silence(0.05),
                        tone(1000.0, 0.6, amplitude=0.3), silence(0.6), tone(4000.0, 1.1), silence(0.4)])  # fmt: skip
    bundle = FakeBundle(sharpness=0.08)  # soft outputs: the mean of log-probabilities matters
    settings = EngineSettings(decision="note", min_confidence=0.7)
    _, events = hops_of(x.astype(np.float32), bundle, settings=settings)
    levels = chunk_levels_db(x.astype(np.float32), 256)
    sounding = [e for e in events if e.label != SILENCE]
    starts = []
    for e in sounding:
        first = e.hop * 4000 // 256  # the first chunk that the hop completes
        last = (e.hop + 1) * 4000 // 256
        after_silence = e.hop == 0 or events[e.hop - 1].label == SILENCE
        starts.append(after_silence or find_onset(levels[:last], first, floor_db=settings.silence_db) is not None)
    probs = np.stack([e.probs for e in sounding])
    batch = decide_note_labels(probs, starts, bundle.labels, min_confidence=0.7)
    assert [e.label for e in sounding] == batch
    # two onsets after silence, the jump and the re-attack; mid (0.65) is under the floor
    assert sum(starts) == 4 and UNKNOWN in batch
    # ... and the same hops whatever the block sizes.
    for sizes in ([1, 333, 4096], [160]):
        _, other = hops_of(x.astype(np.float32), FakeBundle(sharpness=0.08), sizes, settings=settings)
        assert labels(other) == labels(events)
        np.testing.assert_allclose([e.confidence for e in other], [e.confidence for e in events], atol=1e-6)


@dataclass
class ScriptedBundle(FakeBundle):
    """Returns the next row of `script` at every call, whatever the audio."""

    script: list[list[float]] = field(default_factory=list)

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.array(self.script[(self.calls - 1) % len(self.script)], dtype=np.float32)


def test_the_note_label_only_firms_up_where_single_hops_waver() -> None:
    # One held note whose hops waver: low, then two ambiguous hops, then a hop leaning to mid.
    script = [[0.7, 0.2, 0.1], [0.38, 0.35, 0.27], [0.36, 0.37, 0.27], [0.3, 0.45, 0.25]]
    x = np.concatenate([tone(200.0, 1.0), silence(0.25)])
    _, per_hop = hops_of(x, ScriptedBundle(script=script), smooth=1)
    _, per_note = hops_of(x, ScriptedBundle(script=script), decision="note")
    assert labels(per_hop) == ["low", UNKNOWN, UNKNOWN, "mid", SILENCE]
    assert labels(per_note) == ["low", "low", "low", "low", SILENCE]
    # the note's probability is exp(mean log p) renormalised: hop 2 = sqrt(.7*.38) / sum over classes
    second = np.sqrt(np.array(script[0]) * np.array(script[1]))
    assert per_note[1].confidence == pytest.approx(second[0] / second.sum(), rel=1e-5)


def test_first_answer_within_half_a_second_of_each_onset() -> None:
    onsets = {0.5: "low", 2.5: "high", 4.55: "low"}
    x = np.concatenate([silence(0.5), tone(200.0, 2.0, amplitude=0.05), tone(4000.0, 2.0), silence(0.05),
                        tone(200.0, 1.0), silence(0.5)])  # fmt: skip
    _, events = hops_of(x, decision="note")
    for onset, name in onsets.items():
        first = next(e for e in events if e.time > onset)
        assert first.label == name and first.time - onset <= 0.5, (onset, first)


def test_classify_takes_the_decision_option(tiny_bundle_path: Path, tmp_path: Path) -> None:
    from clirun import run_main

    from instrument_ai.device.files import classify_file

    clip = tmp_path / "jump.wav"
    soundfile.write(clip, JUMP.astype(np.float32), RATE)
    timelines = {}
    for decision in ("hops", "note"):
        result = run_main("classify", clip, "--timeline", "--json", "--decision", decision, "--model", tiny_bundle_path)
        assert result.exit_code == 0, result.output
        timeline = json.loads(result.output.strip().splitlines()[-1])["timeline"]
        library = classify_file(clip, str(tiny_bundle_path), decision=decision).timeline
        assert [h["label"] for h in timeline] == [e.label for e in library]
        assert [h["confidence"] for h in timeline] == [round(e.confidence, 4) for e in library]
        timelines[decision] = [h["confidence"] for h in timeline]
    assert timelines["hops"] != timelines["note"]
    bad = run_main("classify", clip, "--decision", "notes", "--model", tiny_bundle_path)
    assert bad.exit_code == 2 and "'notes' is not one of 'hops', 'note'" in bad.output


def test_a_note_can_wait_one_hop_before_it_names_a_family() -> None:
    """`first_answer_hop=2`: each note's first sounding hop says unknown (a one-hop sound is never an event), the
    rest as before, and the first answer still comes within 0.5 s of each onset; per hop it changes nothing."""
    _, plain = hops_of(JUMP, decision="note")
    _, patient = hops_of(JUMP, decision="note", first_answer_hop=2)
    silent = [SILENCE] * 2
    assert labels(patient) == silent + [UNKNOWN] + ["low"] * 7 + [UNKNOWN] + ["high"] * 7 + silent
    assert [e.confidence for e in patient] == [e.confidence for e in plain]  # only the label waits
    click = np.concatenate([silence(0.5), tone(4000.0, 0.2), silence(0.5)])
    _, one_hop = hops_of(click, decision="note", first_answer_hop=2)
    assert not any(e.is_instrument for e in one_hop)
    assert any(e.is_instrument for e in hops_of(click, decision="note")[1])
    for onset in (0.5, 2.5):
        first = next(e for e in patient if e.time > onset and e.is_instrument)
        assert first.time - onset <= 0.5
    _, per_hop = hops_of(JUMP)
    assert labels(hops_of(JUMP, first_answer_hop=2)[1]) == labels(per_hop)


@pytest.mark.parametrize("bad", [0, 9, 1.5, True])
def test_a_bad_first_answer_hop_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="first_answer_hop"):
        EngineSettings(first_answer_hop=bad)  # type: ignore[arg-type]


def test_run_and_classify_take_the_first_answer_hop(tiny_bundle_path: Path, tmp_path: Path) -> None:
    from clirun import run_main

    from instrument_ai.device.commands.options import ENGINE_KEYS, settings_from_options
    from instrument_ai.device.files import classify_file

    clip = tmp_path / "jump.wav"
    soundfile.write(clip, JUMP.astype(np.float32), RATE)
    result = run_main("classify", clip, "--timeline", "--json", "--decision", "note", "--first-answer-hop", "2",
                      "--model", tiny_bundle_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    timeline = json.loads(result.output.strip().splitlines()[-1])["timeline"]
    library = classify_file(clip, str(tiny_bundle_path), decision="note", first_answer_hop=2).timeline
    assert [h["label"] for h in timeline] == [e.label for e in library]
    options = dict.fromkeys(ENGINE_KEYS) | {"smooth": 3, "silence_db": -60.0, "top_k": 3, "onset_align": True,
                                            "first_answer_hop": 2, "other": "kept"}  # fmt: skip
    assert settings_from_options(options).first_answer_hop == 2 and options == {"other": "kept"}
    bad = run_main("classify", clip, "--first-answer-hop", "0", "--model", tiny_bundle_path)
    assert bad.exit_code == 2 and "--first-answer-hop" in bad.output

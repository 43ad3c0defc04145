"""A bundle carries the decision rule and floor its maker chose (issue 23): `convert --decision/--min-confidence`
writes them, the engine uses them unless the user sets their own, a swap brings the new bundle's, and the start
record, /status and `inspect` say which rule is in force and who chose it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clirun import run_main
from fakemic import FakeBundle, sequence

from instrument_ai.device import bundle as B
from instrument_ai.device.engine import Classifier
from instrument_ai.device.settings import EngineSettings, bundle_engine_defaults


@dataclass
class RuleBundle(FakeBundle):
    """The fake bundle with the decision rule of its maker."""

    engine_defaults: dict[str, Any] = field(default_factory=dict)


NOTE_035 = {"decision": "note", "min_confidence": 0.35}


def test_the_user_wins_then_the_bundle_then_the_fallback() -> None:
    assert EngineSettings().resolved(NOTE_035).decision == "note"
    assert EngineSettings(decision="hops").resolved(NOTE_035).decision == "hops"
    assert EngineSettings(min_confidence=0.5).resolved(NOTE_035).min_confidence == 0.5
    both = EngineSettings().resolved({"min_confidence": 0.2})  # a bundle may name only its floor
    assert (both.decision, both.min_confidence) == ("hops", 0.2)


@pytest.mark.parametrize(
    "defaults, message",
    [
        ({"decision": "notes"}, "decision must be one of hops, note"),
        ({"min_confidence": 1.5}, "min_confidence must be a number in [0, 1]"),
        ({"min_confidence": True}, "min_confidence must be a number in [0, 1]"),
        ({"smooth": 5}, "must be an object with 'decision', 'min_confidence' and/or 'first_answer_hop'"),
        (["note"], "must be an object"),
        ({"decision": "note", "chosen_on": 3}, "chosen_on must be text"),
        ({"first_answer_hop": 0}, "first_answer_hop must be an integer in [1, 8]"),
        ({"first_answer_hop": 2.0}, "first_answer_hop must be an integer in [1, 8]"),
    ],
)
def test_a_bad_rule_in_a_bundle_is_named(defaults: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        bundle_engine_defaults({"engine_defaults": defaults})
    assert bundle_engine_defaults({}) == {}


def test_the_engine_decides_with_the_bundles_rule_unless_told_otherwise() -> None:
    chosen = Classifier(RuleBundle(engine_defaults=NOTE_035))
    assert (chosen.per_note, chosen.min_confidence) == (True, 0.35)
    assert chosen.decision_info() == {"rule": "note", "min_confidence": 0.35, "from": "bundle"}
    told = Classifier(RuleBundle(engine_defaults=NOTE_035), min_confidence=0.6)
    assert (told.per_note, told.min_confidence) == (True, 0.6)
    assert told.decision_info()["from"] == "bundle+options"
    plain = Classifier(FakeBundle())
    assert plain.decision_info() == {"rule": "hops", "min_confidence": 0.4, "from": "fallback"}


def test_a_bundle_may_ask_a_note_to_wait_before_it_answers() -> None:
    """`first_answer_hop` travels as the rest of the rule: the bundle's unless the user says, then 1; the engine
    shows it (only where a note waits) and acts on it."""
    from fakemic import silence, tone

    patient = {**NOTE_035, "first_answer_hop": 2}
    assert EngineSettings().resolved(patient).first_answer_hop == 2
    assert EngineSettings(first_answer_hop=1).resolved(patient).first_answer_hop == 1
    assert EngineSettings().resolved(NOTE_035).first_answer_hop == 1
    engine = Classifier(RuleBundle(engine_defaults=patient))
    assert engine.decision_info() == {"rule": "note", "min_confidence": 0.35, "first_answer_hop": 2, "from": "bundle"}
    note = np.concatenate([silence(0.5), tone(1000.0, 1.0), silence(0.5)])
    sounding = [e.label for e in engine.process_hops(note) + engine.flush() if e.label != "silence"]
    assert sounding[0] == "unknown" and sounding[1] == "mid"
    told = Classifier(RuleBundle(engine_defaults=patient), first_answer_hop=1)
    assert "first_answer_hop" not in told.decision_info()
    assert [e.label for e in told.process_hops(note) + told.flush() if e.label != "silence"][0] == "mid"


def test_the_floor_changes_what_is_unknown() -> None:
    """A blunt fake model (uniform-ish probabilities): under the bundle's floor 0.35 its notes are named, under the
    fallback's 0.4 they are unknown - the rule really is the bundle's."""
    audio = sequence([(None, 0.5), (1000.0, 1.5), (None, 0.5)])
    named = Classifier(RuleBundle(sharpness=0.01, engine_defaults={"min_confidence": 0.35}))
    fallback = Classifier(RuleBundle(sharpness=0.01))  # top probability 0.38
    sounding = [e for e in named.process_hops(audio) if e.label != "silence"]
    assert sounding and all(e.label == "mid" for e in sounding)
    assert {e.label for e in fallback.process_hops(audio)} == {"silence", "unknown"}


def test_a_swap_brings_the_new_bundles_rule() -> None:
    engine = Classifier(FakeBundle())
    engine.process_hops(sequence([(1000.0, 1.0)]))
    assert engine.swap_bundle(RuleBundle(engine_defaults={"min_confidence": 0.3})) is True  # same rule: stream kept
    assert (engine.per_note, engine.min_confidence) == (False, 0.3)
    assert engine.swap_bundle(RuleBundle(engine_defaults=NOTE_035)) is False  # another rule: the note restarts
    assert (engine.per_note, engine.min_confidence) == (True, 0.35)
    events = engine.process_hops(sequence([(1000.0, 1.0)]))
    assert events[-1].label == "mid"
    told = Classifier(FakeBundle(), decision="hops", min_confidence=0.5)
    told.swap_bundle(RuleBundle(engine_defaults=NOTE_035))
    assert (told.per_note, told.min_confidence) == (False, 0.5)  # the user's rule stays


def test_a_refused_swap_keeps_the_rule_in_force() -> None:
    engine = Classifier(FakeBundle())
    with pytest.raises(ValueError):
        engine.swap_bundle(_Mismatched(engine_defaults=NOTE_035))
    assert (engine.per_note, engine.min_confidence) == (False, 0.4)


@dataclass
class _Mismatched(RuleBundle):
    """A bundle the engine refuses: its sample rate differs from its frontend's."""

    @property
    def sample_rate(self) -> int:
        return 8000


# -- convert, inspect, run ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ruled_bundle(art: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ruled") / "ruled.tflite"
    result = run_main("convert", art["run"], "--out", out, "--golden", "1", "--decision", "note",
                      "--min-confidence", "0.35", "--decided-on", "held-out phrases")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "the device decides note at floor 0.35 unless told otherwise (chosen on held-out phrases)" in result.output
    return out


def test_convert_writes_the_rule_and_inspect_shows_it(ruled_bundle: Path, art: dict[str, Any]) -> None:
    loaded = B.load(ruled_bundle)
    assert loaded.engine_defaults == {"decision": "note", "min_confidence": 0.35, "chosen_on": "held-out phrases"}
    shown = run_main("inspect", ruled_bundle)
    assert "decision: note, floor 0.35 unless `run` is told otherwise (chosen on held-out phrases)" in shown.output
    plain = run_main("inspect", art["bundle"])
    assert "decision: none (the fallback: hops, floor 0.4)" in plain.output
    assert B.load(art["bundle"]).engine_defaults == {}


def test_convert_writes_a_patient_note_rule_and_inspect_shows_it(art: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "patient.tflite"
    result = run_main("convert", art["run"], "--out", out, "--golden", "1", "--decision", "note",
                      "--first-answer-hop", "2", "--decided-on", "held-out phrases")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "a note answering from its hop 2 on unless told otherwise" in result.output
    assert B.load(out).engine_defaults == {"decision": "note", "first_answer_hop": 2, "chosen_on": "held-out phrases"}
    shown = run_main("inspect", out).output
    assert "decision: note, floor 0.4, a note answering from its hop 2 on unless `run` is told otherwise" in shown


def test_run_reports_the_rule_in_force(ruled_bundle: Path) -> None:
    def start(*options: str) -> dict[str, Any]:
        result = run_main("run", "--source", "demo", "--fast", "--json", "--model", ruled_bundle, "--duration", "1",
                          *options)  # fmt: skip
        assert result.exit_code == 0, result.output
        return next(json.loads(line) for line in result.output.splitlines() if line.startswith('{"type": "start"')
                    or line.startswith('{"type":"start"'))  # fmt: skip

    assert start()["decision"] == {"rule": "note", "min_confidence": 0.35, "from": "bundle"}
    assert start("--decision", "hops", "--min-confidence", "0.5")["decision"] == {
        "rule": "hops", "min_confidence": 0.5, "from": "options"}  # fmt: skip


@pytest.mark.parametrize(
    "options, message",
    [
        (["--decided-on", "somewhere"], "--decided-on says where --decision/--min-confidence/--first-answer-hop were"),
        (["--first-answer-hop", "9"], "--first-answer-hop"),
        (["--min-confidence", "1.5"], "--min-confidence"),
        (["--decision", "notes"], "--decision"),
    ],
)
def test_convert_refuses_a_bad_rule_in_one_line(art: dict[str, Any], tmp_path: Path, options: list[str],
                                                message: str) -> None:  # fmt: skip
    out = tmp_path / "bad.tflite"
    result = run_main("convert", art["run"], "--out", out, *options)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_bundle_with_a_bad_rule_is_refused(ruled_bundle: Path, tmp_path: Path) -> None:
    from bundle_support import rewrite

    bad = rewrite(ruled_bundle, tmp_path / "bad.tflite", lambda m: m.update(engine_defaults={"decision": "sometimes"}))
    with pytest.raises(B.BundleError, match="engine_defaults.decision must be one of hops, note"):
        B.load(bad)
    result = run_main("run", "--source", "demo", "--fast", "--json", "--model", bad)
    assert result.exit_code != 0 and "engine_defaults.decision must be one of hops, note" in result.output
    assert "Traceback" not in result.output


def test_status_and_the_page_follow_the_rule_across_a_swap() -> None:
    from instrument_ai.device.live_state import LiveState
    from instrument_ai.device.live_view import describe_decision

    state = LiveState()
    bundle_rule = {"rule": "note", "min_confidence": 0.35, "from": "bundle"}
    state.start({"model_name": "default", "model_version": "0.5.0", "decision": bundle_rule})
    assert state.status()["model"]["decision"] == bundle_rule
    fallback = {"rule": "hops", "min_confidence": 0.4, "from": "fallback"}
    state.notice("swap", {"new_name": "default", "new_version": "0.4.0", "decision": fallback})
    assert state.status()["model"]["decision"] == fallback and state.hello()["model"]["decision"] == fallback
    assert describe_decision(bundle_rule) == " · per note, floor 0.35 (bundle)"
    page = (Path(__file__).resolve().parents[1] / "device" / "assets" / "page.html").read_text()
    assert 'id="decision"' in page and "m.decision" in page


def test_the_demo_latency_is_measured_at_the_rule_asked_for(ruled_bundle: Path) -> None:
    from instrument_ai.device.bench_runtime import _latency_lines, decision_latency

    own = decision_latency(ruled_bundle)
    assert own["decided_as"] == {"rule": "note", "min_confidence": 0.35, "from": "bundle"}
    told = decision_latency(ruled_bundle, decision="hops", min_confidence=0.6)
    assert told["decided_as"] == {"rule": "hops", "min_confidence": 0.6, "from": "options"}
    printed = "\n".join(_latency_lines({"decision_latency": told}))
    assert "onset-aligned, per hop at floor 0.6" in printed
    first = told["notes"][0]  # each note with the hops that named its family, of its sounding hops
    assert f"{first['family']} " in printed and f"({first['right_hops']}/{first['sounding_hops']} hops)" in printed


def test_classify_says_which_rule_named_the_file(ruled_bundle: Path) -> None:
    from instrument_ai.device.audio_io import demo_path

    result = run_main("classify", "--json", "--model", ruled_bundle, "--max-seconds", "60", demo_path())
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["decided_as"] == {"rule": "note", "min_confidence": 0.35, "from": "bundle"}


def test_evaluate_scores_a_bundle_with_its_own_rule(ruled_bundle: Path, art: dict[str, Any]) -> None:
    from instrument_ai.train.experiments import evaluate as ev

    ruled = ev._bundle_predictor(ruled_bundle).info
    assert ev.device_rule(ruled.get("engine_defaults"))["min_confidence"] == 0.35
    assert "engine_defaults" not in ev._bundle_predictor(art["bundle"]).info


def test_evaluate_waits_as_the_engine_does_for_a_patient_bundle() -> None:
    import instrument_ai.train.experiments.evaluate as ev

    rule = ev.device_rule({"decision": "note", "first_answer_hop": 2})
    assert rule["first_answer_hop"] == 2 and "first_answer_hop" not in ev.device_rule()
    names = ["reed", "string", "flute", "other"]
    labels = ["reed", "reed", "reed", "string", "other", "flute"]
    probs = np.eye(4)[[names.index(x) for x in labels]] * 0.9 + 0.025  # three notes: hops 0-2, 3, 4-5
    pred = ev.Predictions(labels=names, notes=[], probs=probs, probs_reversed=probs,
                          window_note=np.array([0, 0, 0, 1, 2, 2]), silent_notes=[])  # fmt: skip
    assert ev.hop_labels(pred, decision="note", first_answer_hop=2) == ["unknown", "reed", "reed", "unknown",
                                                                        "other", "flute"]  # fmt: skip
    assert ev.hop_labels(pred, decision="note", first_answer_hop=3)[:3] == ["unknown", "unknown", "reed"]
    assert ev.hop_labels(pred, decision="note", first_answer_hop=1) == labels

"""The model card is generated from JSON (issue 14): its figures are the files' figures, targets say met/missed,
the credits come from the catalogue, and a missing input is one line, with the old card left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clirun import run_main

from instrument_ai.train.experiments import holdout as ho

REPO = Path(__file__).resolve().parents[1]


def _fold(name: str, kind: str, acc: float | None, short: float | None = None, other: dict | None = None) -> dict:
    per_length = {"long": acc} if acc is not None else {}
    if short is not None:
        per_length["short"] = short
    return {"name": name, "libraries": [name], "kind": kind, "n_notes": 40, "note_accuracy": acc,
            "window_accuracy": acc, "macro_f1": acc, "per_family_recall": {"brass": acc or 0.0},
            "families_not_trained": [], "per_length": per_length, "other": other}  # fmt: skip


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    folds = [
        _fold("AlexsGM", "soundfont", 0.612),
        _fold("karoryfer-war-tuba", "real", 0.734, short=0.41),
        _fold("fsdd", "other", None, other={"hops": 1200, "hops_named_instrument": 0.031,
                                            "false_events_per_minute": 2.4}),  # fmt: skip
    ]
    ho.write_summary(folds, tmp_path / "holdout", {"preset": "edge", "epochs": 24, "seed": 0, "data": "/data/c",
                                                  "overrides": {"real_weight": 3}})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({
        "window_seconds": 1.0, "default_hop_seconds": 0.25, "model": {"params": 123456, "macs": 7_890_000},
        "data": {"path": "/data/c", "libraries": ["AlexsGM", "karoryfer-war-tuba", "fsdd"],
                 "counts": {"train": {"notes": 5000, "instruments": 300, "families": {"brass": 5000}},
                            "valid": {"notes": 700, "instruments": 40}}},
        "train_config": {"preset": "edge", "real_weight": 3.0, "epochs": 24}}))  # fmt: skip
    (run / "metrics.json").write_text(json.dumps({"note_accuracy": 0.8, "epochs_run": 20, "best_epoch": 17,
                                                  "train_seconds": 1500, "other_output": True,
                                                  "open_set": {"bundle": {"threshold": 0.42}}}))  # fmt: skip
    old = tmp_path / "README.md"
    old.write_text("the previous card\n")
    return {"holdout": tmp_path / "holdout", "run": run, "out": old}


def test_the_card_carries_the_json_figures_and_says_which_targets_are_missed(inputs: dict[str, Path]) -> None:
    result = run_main(*["experiment", "model-card", "--bundle", str(REPO / "models" / "default.tflite"),
                                      "--run", str(inputs["run"]), "--holdout", str(inputs["holdout"]),
                                      "--compare", f"0.3.0 recipe={inputs['holdout']}",
                                      "--command", "train=instrument-ai train --data X --out Y",
                                      "--out", str(inputs["out"])])  # fmt: skip
    assert result.exit_code == 0, result.output
    card = inputs["out"].read_text()
    assert "61.2 %" in card and "73.4 %" in card and "41.0 %" in card  # SoundFont mean, real mean, short real notes
    assert "2.4" in card and "3.1 %" in card  # the `other` figures
    assert card.count("**missed**") >= 3  # 61.2 < 75, 41 < 60, 2.4 > 1 false events per minute
    assert "threshold 0.42" in card and "123,456 parameters" in card and "7.89 M multiply-adds" in card
    assert "instrument-ai train --data X --out Y" in card
    assert "0.3.0 recipe" in card  # the recipe table
    assert "https://github.com/sfzinstruments/karoryfer.war-tuba" in card and "CC0" in card  # credits, catalogue
    assert "labels, in output order" in card and "bass, brass" in card  # read from the bundle itself


def test_the_card_adds_the_phrase_lost_and_note_length_sections_when_the_holdout_has_them(
        inputs: dict[str, Path], tmp_path: Path) -> None:  # fmt: skip
    from instrument_ai.train.experiments.phrases import with_shares

    real = _fold("karoryfer-war-tuba", "real", 0.734, short=0.41)
    hops = with_shares({"right": 30, "unknown": 50, "other": 5, "wrong": 15})
    note = with_shares({"right": 45, "unknown": 30, "other": 5, "wrong": 20})
    real.update(per_note_length={"< 0.3 s": 0.25, "longer": 0.8}, per_note_length_notes={"< 0.3 s": 4, "longer": 9},
                lost={"notes": {"n": 40, "other": 0.05, "unknown": 0.125, "lost": 0.175},
                      "hops": {"n": 300, "other": 0.02, "unknown": 0.3, "lost": 0.32}},
                phrases={"notes": 40, "seconds": 80.0, "scores": {"hops": hops, "note": note}})  # fmt: skip
    ho.write_summary([_fold("AlexsGM", "soundfont", 0.612), real], tmp_path / "h23",
                     {"preset": "edge", "epochs": 24, "seed": 0, "data": "/data/c", "overrides": {}})  # fmt: skip
    args = ["experiment", "model-card", "--bundle", str(REPO / "models" / "default.tflite"), "--run",
            str(inputs["run"]), "--out"]  # fmt: skip
    old = run_main(*args, str(tmp_path / "old.md"), "--holdout", str(inputs["holdout"]))
    new = run_main(*args, str(tmp_path / "new.md"), "--holdout", str(tmp_path / "h23"))
    assert old.exit_code == 0 and new.exit_code == 0, new.output
    old_card, card = (tmp_path / "old.md").read_text(), (tmp_path / "new.md").read_text()
    assert "Phrases through the daemon" not in old_card  # a holdout without the figures: the card as before
    assert "| karoryfer-war-tuba | note | 100 | 45.0 % | 30.0 % | 5.0 % | 20.0 % |" in card
    assert "| karoryfer-war-tuba | 40 | 5.0 % | 12.5 % | 17.5 % | 32.0 % |" in card
    assert "| karoryfer-war-tuba | real | 25.0 % | n/a | n/a | 80.0 % |" in card


def test_a_missing_input_is_one_line_and_the_old_card_stays(inputs: dict[str, Path]) -> None:
    result = run_main(*["experiment", "model-card", "--bundle", str(REPO / "models" / "default.tflite"),
                                      "--run", str(inputs["run"]), "--holdout", str(inputs["run"] / "nothing"),
                                      "--out", str(inputs["out"])])  # fmt: skip
    assert result.exit_code == 1
    assert "nothing: no such file (the holdout summary)" in result.output and "Traceback" not in result.output
    assert inputs["out"].read_text() == "the previous card\n"
    bad = run_main(*["experiment", "model-card", "--bundle", "x", "--run", "y", "--holdout", "z",
                                   "--compare", "no-equals-sign"])  # fmt: skip
    assert bad.exit_code == 2 and "LABEL=VALUE" in bad.output


def test_the_enrolment_table_joins_the_card_only_when_given(inputs: dict[str, Path], tmp_path: Path) -> None:
    args = ["experiment", "model-card", "--bundle", str(REPO / "models" / "default.tflite"), "--run",
            str(inputs["run"]), "--holdout", str(inputs["holdout"]), "--out", str(inputs["out"])]  # fmt: skip
    assert run_main(*args).exit_code == 0
    plain = inputs["out"].read_text()
    assert "Enrolled notes" not in plain
    settings = {"radius_quantile": 0.5, "radius_scale": 0.75, "prob_weight": 3.0, "tuned_on": ["b", "c"]}
    row = {"source": "cello-x", "families": ["string"], "shots": 10, "notes_scored": 23, "before": 0.87,
           "after": 0.965, "after_min": 0.91, "after_max": 1.0, "unseen_notes": 600, "unseen_before": 0.46,
           "unseen_after": 0.45, "known_notes": 120, "known_before": 0.7, "known_after": 0.69, "settings": settings}
    enrol = {"instruments": [row], "other": [], "repeats": 5, "settings_note": "chosen elsewhere",
             "timing": {"fit_100_notes_ms": 98.0, "notes": 100, "hops": 480, "per_hop_median_ms": 0.03,
                        "per_hop_p99_ms": 0.2}}  # fmt: skip
    (tmp_path / "enrol.json").write_text(json.dumps(enrol))
    command = "enrol=instrument-ai experiment enrol --data D --holdout cello-x"
    assert run_main(*args, "--enrol", str(tmp_path / "enrol.json"), "--command", command).exit_code == 0
    card = inputs["out"].read_text()
    assert "## Enrolled notes on held-out sources" in card and "instrument-ai experiment enrol --data D" in card
    assert "| cello-x | string | 10 | 23 | 87.0 % | **96.5 %** (91.0-100.0) |" in card
    assert card.replace(card[card.index("\n## Enrolled notes"):card.index("\n## Sources and licences")], "") == plain


def test_the_lever_screen_joins_the_card_read_from_its_holdout_folders(inputs: dict[str, Path], tmp_path: Path) -> None:
    args = ["experiment", "model-card", "--bundle", str(REPO / "models" / "default.tflite"), "--run",
            str(inputs["run"]), "--holdout", str(inputs["holdout"]), "--out", str(inputs["out"])]  # fmt: skip
    assert run_main(*args).exit_code == 0
    assert "## Lever screen" not in inputs["out"].read_text()
    listing = {"levers": [{"name": "reference", "command": "holdout A", "out": str(inputs["holdout"])},
                          {"name": "unfinished", "command": "holdout B", "out": str(tmp_path / "none")}],
               "confirm": [{"name": "reference4", "command": "holdout C", "out": str(inputs["holdout"])}]}  # fmt: skip
    (tmp_path / "levers.json").write_text(json.dumps(listing))
    assert run_main(*args, "--levers", str(tmp_path / "levers.json")).exit_code == 0
    card = inputs["out"].read_text()
    assert "## Lever screen (docs/experiments/levers.md)" in card
    assert "| reference | 73.4 % (+0.0) | 61.2 % (+0.0) | 41.0 % (+0.0) |" in card  # read from the holdout
    assert "| unfinished | running |" in card and "| reference4 | 73.4 % (+0.0) |" in card
    broken = run_main(*args, "--levers", str(tmp_path / "missing.json"))
    assert broken.exit_code == 1 and "missing.json: no such file (the lever list)" in broken.output


def test_an_ensemble_card_names_its_members_and_why_no_float_twin_ships(
        inputs: dict[str, Path], tmp_path: Path) -> None:  # fmt: skip
    import shutil

    inner = tmp_path / "v5ens"
    inner.mkdir()
    (inner / "config.json").write_text(json.dumps({"ensemble": {"members": ["/r/v5mel2d", "/r/v5wide"],
                                                                 "presets": ["mel2d", "edge_wide"],
                                                                 "weights": [0.5, 0.5]}}))  # fmt: skip
    config = json.loads((inputs["run"] / "config.json").read_text())
    config["ensemble"] = {"members": [str(inner), "/r/v5edge"], "presets": ["ensemble", "edge"],
                          "weights": [0.667, 0.333]}  # fmt: skip
    config["model"]["params"] = 507_604
    (inputs["run"] / "config.json").write_text(json.dumps(config))
    alone = tmp_path / "default.tflite"  # no default-float.tflite beside it
    shutil.copy(REPO / "models" / "default.tflite", alone)
    result = run_main("experiment", "model-card", "--bundle", alone, "--run", inputs["run"], "--holdout",
                      inputs["holdout"], "--out", inputs["out"])  # fmt: skip
    assert result.exit_code == 0, result.output
    card = inputs["out"].read_text()
    assert ("`v5ens` (ensemble, weight 0.667) (`v5mel2d` (mel2d, weight 0.5), `v5wide` (edge_wide, weight 0.5)), "
            "`v5edge` (edge, weight 0.333)") in card  # fmt: skip
    assert "Settings: preset edge" not in card  # the first member's settings would not describe the ensemble
    assert "| float twin | none shipped: its 507,604 float32 weights alone are 2.0 MB, over the 1 MB" in card


def test_the_card_names_the_models_input_stage_and_the_rule_it_carries() -> None:
    from instrument_ai.device.frontend import DEFAULT_SPEC
    from instrument_ai.train.experiments import model_card

    spec = DEFAULT_SPEC.to_dict()
    assert model_card._frontend_line(spec).endswith("40 MFCCs (numpy, `device/frontend.py`)")
    assert "their log (db): the model's input" in model_card._frontend_line({**spec, "stage": "log_mel"})
    assert model_card._rule_line(None) == "none: the device's fallback, per hop at 0.4"
    rule = {"decision": "note", "min_confidence": 0.3, "first_answer_hop": 2, "chosen_on": "held-out phrases"}
    assert model_card._rule_line(rule) == ("one decision per note, floor 0.3; first answer at hop 2; chosen on "
                                           "held-out phrases")  # fmt: skip


def test_the_cards_demo_line_says_how_many_hops_named_each_note() -> None:
    from instrument_ai.train.experiments import model_card

    bench = {"decision_latency": {"named_correctly": 1, "notes": [
        {"family": "brass", "correct_latency_s": 1.0, "right_hops": 1, "sounding_hops": 9},
        {"family": "string", "correct_latency_s": None}]}}  # fmt: skip
    inputs = model_card.CardInputs(bundle={}, run_config={}, run_metrics={}, holdout={}, bench=bench)
    line = model_card._latency_section(inputs)[-1]
    assert line == "Demo: 1 of 2 notes named (brass 1.00 s (1/9 hops); string missed)."

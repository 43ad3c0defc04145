"""`evaluate`'s `other` figures: on `other` notes of a corpus, per note length, and on a folder of
non-instrument audio (`--other-folder`), with the model's open-set threshold applied as on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from fakemic import FakeBundle

from instrument_ai.train.experiments import evaluate as ev


def _pred(families: list[str], sounding: list[float | None], probs: list[list[float]], owner: list[int]):
    pairs = enumerate(zip(families, sounding, strict=True))
    notes = [ev.NoteRecord(f"n{i}", f"i{i}", f, "acoustic", "L", s) for i, (f, s) in pairs]
    p = np.array(probs, dtype=np.float32)
    return ev.Predictions(["brass", "guitar", "other"], notes, p, p.copy(), np.array(owner), silent_notes=[])


def test_score_reports_other_hops_false_events_and_note_lengths() -> None:
    pred = _pred(
        ["brass", "guitar", "other", "other"],
        [0.3, 1.0, None, None],
        [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.5, 0.45, 0.05]],
        [0, 1, 2, 2, 2, 3],
    )
    r = ev.score(pred, hop_seconds=0.25)
    o = r["other"]["raw"]  # each window alone
    assert o["hops"] == 4 and r["other"]["n_clips"] == 2
    assert o["hops_named_instrument"] == pytest.approx(2 / 4)  # one brass hop in clip 2, one in clip 3
    assert o["false_events"] == 2 and o["false_events_per_minute"] == pytest.approx(2 / (1.0 / 60))
    # as the daemon decides (3 hops averaged, min confidence 0.4): clip 2's one-hop brass blip averages away
    d = r["other"]
    assert d["decided_as"] == {"smooth": 3, "min_confidence": 0.4, "decision": "hops"} and d["hops"] == 4
    assert d["hops_named_instrument"] == pytest.approx(1 / 4) and d["false_events"] == 1
    assert r["per_length"]["short"]["n_notes"] == 1 and r["per_length"]["medium"]["note_accuracy"] == 1.0
    # a threshold of 0.7 on the (T = 1) probability rejects both uncertain brass hops: nothing named
    strict = ev.score(pred, open_set={"temperature": 1.0, "threshold": 0.7}, hop_seconds=0.25)["other"]
    assert strict["hops_named_instrument"] == 0.0 and strict["false_events"] == 0


def _fake_predictor() -> ev.Predictor:
    fake = FakeBundle(labels=["low", "mid", "other"])
    return ev.Predictor(name="fake", kind="bundle", labels=fake.labels, spec=fake.spec, window_frames=59,
                        hop_seconds=0.25, predict=fake.predict_batch)  # fmt: skip


def test_other_folder_figures_on_noise_and_a_tone(tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(2 * rate) / rate
    soundfile.write(tmp_path / "hiss.wav", (0.2 * np.sin(2 * np.pi * 4000 * t)).astype(np.float32), rate)  # 'other'
    soundfile.write(tmp_path / "hum.flac", (0.3 * np.sin(2 * np.pi * 200 * t[: rate * 3 // 2])).astype(np.float32),
                    44100 // 2)  # fmt: skip
    f = ev.evaluate_other_folder(_fake_predictor(), tmp_path)
    assert f["n_clips"] == 2 and f["hops"] > 0
    assert 0 < f["hops_named_instrument"] < 1  # the hum is named 'low', the hiss 'other'
    assert f["false_events"] >= 1 and f["false_events_per_minute"] > 0


def test_other_folder_bad_input_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ev.EvaluationError, match="no audio files"):
        ev.evaluate_other_folder(_fake_predictor(), tmp_path)
    with pytest.raises(ev.EvaluationError, match="no such folder"):
        ev.evaluate_other_folder(_fake_predictor(), tmp_path / "missing")
    from instrument_ai.train.commands.evaluate import evaluate as evaluate_cmd

    res = CliRunner().invoke(evaluate_cmd, ["--model", str(tmp_path / "x.tflite"), "--data", str(tmp_path),
                                            "--other-folder", str(tmp_path / "missing")])  # fmt: skip
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_a_bundles_own_rule_decides_the_device_figures() -> None:
    """A bundle that carries its rule (`convert --decision/--min-confidence`) is scored as the daemon runs it."""
    assert ev.device_rule(None) == {"smooth": 3, "min_confidence": 0.4, "decision": "hops"}
    rule = ev.device_rule({"decision": "note", "min_confidence": 0.35})
    assert rule == {"smooth": 3, "min_confidence": 0.35, "decision": "note"}
    pred = _pred(["brass", "guitar"], [1.0, 1.0], [[0.38, 0.31, 0.31], [0.36, 0.34, 0.3], [0.3, 0.38, 0.32]],
                 [0, 0, 1])  # fmt: skip
    fallback = ev.score(pred, hop_seconds=0.25)["lost"]
    own = ev.score(pred, hop_seconds=0.25, rule=rule)["lost"]
    assert fallback["decided_as"]["min_confidence"] == 0.4 and own["decided_as"] == rule
    assert fallback["notes"]["lost"] == 1.0 and own["notes"]["lost"] == 0.0  # 0.37 / 0.38: under 0.4, over 0.35

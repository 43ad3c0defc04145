"""The main job with the shipped model: how many of the demo's notes it names, and how fast.

Issue 6 wants every demo note's family reported within 1.0 s of its onset. The
shipped model 0.2.0 names 6 of the 8 notes (5 of them within 1.0 s; it misses
flute and brass, see models/README.md). This test is the floor that a new
shipped model must not fall below, checked on the real bundle and recording
through the device engine, in stream time (so a loaded machine does not change
it). The demo is rendered from TimGM6mb, which is in the model's training data:
generalisation to unseen libraries is `instrument-ai experiment holdout`'s job.
"""

from __future__ import annotations

import json

from fakemic import REPO

from instrument_ai.device.bench_runtime import decision_latency

DEFAULT_MODEL = REPO / "models" / "default.tflite"
FLOOR_NAMED = 6
FLOOR_WITHIN_A_SECOND = 5


def test_shipped_model_names_the_demo_notes_it_named_at_release() -> None:
    demo = json.loads((REPO / "device" / "assets" / "demo.json").read_text())
    rows = decision_latency(DEFAULT_MODEL)["notes"]
    assert [r["family"] for r in rows] == [n["family"] for n in demo["notes"]]
    named = [r for r in rows if r["correct_latency_s"] is not None]
    assert len(named) >= FLOOR_NAMED, f"named {len(named)} of {len(rows)} demo notes: {rows}"
    prompt = [r for r in named if r["correct_latency_s"] <= 1.0]
    assert len(prompt) >= FLOOR_WITHIN_A_SECOND, f"only {len(prompt)} named within 1.0 s: {rows}"

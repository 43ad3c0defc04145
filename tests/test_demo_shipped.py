"""The main job with the shipped model: how many of the demo's notes it names, and how fast.

Issue 6 wants every demo note's family reported within 1.0 s of its onset. Model
0.4.0 named all 8 notes, the slowest after 0.75 s (issue 14 asked 0.5 s: missed
for the flute and the guitar), labelled 77 % of the notes' sounding hops with the
right family, and said `other` for the noise and typing at the demo's end
(`instrument-ai bench runtime`, "decision latency"; 0.3.0 named all 8 within
0.5 s with 75 % but called the typing synth_lead and flute). The shipped 0.5.0
names all 8, the slowest (the trumpet) after 1.0 s, with 71 %. This
test is the floor that a new shipped model must not fall below, checked on
the real bundle and recording through the device engine, in stream time (so
a loaded machine does not change it). The demo is rendered from TimGM6mb,
which is in the model's training data, at pitches between the ones the
corpus renders: generalisation to unseen libraries is `instrument-ai
experiment holdout`'s job.
"""

from __future__ import annotations

import json

from fakemic import REPO

from instrument_ai.device.bench_runtime import decision_latency

DEFAULT_MODEL = REPO / "models" / "default.tflite"
FLOOR_NAMED = 8
FLOOR_WITHIN_A_SECOND = 8
FLOOR_RIGHT_HOP_SHARE = 0.70


def test_shipped_model_names_the_demo_notes_it_named_at_release() -> None:
    demo = json.loads((REPO / "device" / "assets" / "demo.json").read_text())
    report = decision_latency(DEFAULT_MODEL)
    rows = report["notes"]
    assert [r["family"] for r in rows] == [n["family"] for n in demo["notes"]]
    named = [r for r in rows if r["correct_latency_s"] is not None]
    assert len(named) >= FLOOR_NAMED, f"named {len(named)} of {len(rows)} demo notes: {rows}"
    prompt = [r for r in named if r["correct_latency_s"] <= 1.0]
    assert len(prompt) >= FLOOR_WITHIN_A_SECOND, f"only {len(prompt)} named within 1.0 s: {rows}"
    assert report["right_hop_share"] >= FLOOR_RIGHT_HOP_SHARE, rows


def test_the_demo_recording_is_the_lossless_render_of_its_notes() -> None:
    """demo.flac is what `python -m instrument_ai.train.corpus.demo_clip` renders, to 16-bit precision (no codec)."""
    import numpy as np
    import soundfile

    from instrument_ai.train.corpus.demo_clip import DEMO_ASSET, render_demo

    signal, notes = render_demo()
    audio, rate = soundfile.read(str(DEMO_ASSET), dtype="float32")
    assert rate == 16000 and audio.shape == signal.shape
    assert float(np.abs(audio - signal).max()) <= 1.0 / 32768 + 1e-7
    assert json.loads(DEMO_ASSET.with_suffix(".json").read_text())["notes"] == notes


def test_make_demo_says_other_or_nothing_for_the_noise_at_the_demo_end() -> None:
    """`make demo`'s command on the shipped model: no instrument event during the demo's noise and typing tail."""
    import re
    import subprocess
    import sys

    demo = json.loads((REPO / "device" / "assets" / "demo.json").read_text())
    tail = demo["no_instrument"]
    assert tail, "the demo lost its noise tail"
    out = subprocess.run([sys.executable, "-m", "instrument_ai.device.cli", "run", "--source", "demo", "--plain",
                          "--fast"], capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    events = [(float(m[1]), m[2]) for m in re.finditer(r"^\s*([\d.]+) s\s+(\S+)", out.stdout, re.M)]
    assert any(label == "keyboard" for _, label in events)  # the notes are still named
    start, end = tail[0]["onset"], tail[-1]["offset"] + 1.0
    during = [(t, label) for t, label in events if start < t <= end]
    named = [(t, label) for t, label in during if label.strip("()") not in ("silence", "unknown", "other")]
    assert not named, f"instrument events during the noise tail: {named}"

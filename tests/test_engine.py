"""The streaming engine with a deterministic fake bundle (see tests/fakemic.py): silence, unknown,
smoothing, change events, timing, one interpreter call per hop, and independence of block sizes and
input format (rate, channels, dtype)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakemic import FakeBundle, sequence, tone

from instrument_ai.device.engine import SILENCE, UNKNOWN, Classifier, Event, FeatureRing

# 1 s silence, 1.5 s low tone, 1 s silence, 1.5 s high tone, 1 s silence
SCRIPT = [(None, 1.0), (200.0, 1.5), (None, 1.0), (4000.0, 1.5), (None, 1.0)]
ONSETS = {"low": 1.0, "high": 3.5}


def run_blocks(clf: Classifier, x: np.ndarray, sizes: list[int] | None = None, hops: bool = False) -> list[Event]:
    events: list[Event] = []
    step = clf.process_hops if hops else clf.process
    if sizes is None:
        events += step(x)
    else:
        i, j = 0, 0
        while i < x.shape[0]:
            k = sizes[j % len(sizes)]
            events += step(x[i : i + k])
            i, j = i + k, j + 1
    flushed = clf.flush()
    return events + (flushed if hops else [e for e in flushed if e.changed])


def summary(events: list[Event]) -> list[tuple[float, str]]:
    return [(round(e.time, 4), e.label) for e in events]


def test_change_events_name_each_tone_soon_after_its_onset_and_report_silence() -> None:
    clf = Classifier(FakeBundle())
    events = run_blocks(clf, sequence(SCRIPT))
    assert [e.label for e in events] == [SILENCE, "low", SILENCE, "high", SILENCE]
    for event in events:
        if event.label in ONSETS:
            assert 0 < event.time - ONSETS[event.label] <= 0.5  # first hop after the onset
            assert event.confidence > 0.9 and event.top_k[0] == (event.label, event.confidence)
            assert event.previous == SILENCE and event.kind == "change"
    offsets = [e.time for e in events if e.label == SILENCE][1:]
    assert 0 < offsets[0] - 2.5 <= 0.25 and 0 < offsets[1] - 5.0 <= 0.25  # back to silence within one hop


def test_events_do_not_depend_on_block_sizes() -> None:
    x = sequence(SCRIPT).astype(np.float32)
    reference = run_blocks(Classifier(FakeBundle()), x, hops=True)
    for sizes in ([1, 7, 160, 4000, 333], [4096], [16000 * 3], [128, 64, 32]):
        other = run_blocks(Classifier(FakeBundle()), x, sizes, hops=True)
        assert summary(other) == summary(reference)
        np.testing.assert_allclose([e.confidence for e in other], [e.confidence for e in reference], atol=1e-6)
        np.testing.assert_allclose([e.level_db for e in other], [e.level_db for e in reference], atol=1e-6)


def test_any_input_rate_and_channel_layout_gives_the_same_decisions() -> None:
    reference = summary(run_blocks(Classifier(FakeBundle()), sequence(SCRIPT)))
    for rate, channels, dtype in ((48000, 2, np.int16), (44100, 1, np.float32), (11025, 3, np.float64)):
        mono = sequence(SCRIPT, rate=rate)
        block = np.repeat(mono[:, None], channels, axis=1)
        if dtype == np.int16:
            block = np.round(block * 32767).astype(np.int16)
        clf = Classifier(FakeBundle(), input_rate=rate, channels=channels)
        assert summary(run_blocks(clf, block.astype(dtype), [1024])) == reference, (rate, channels)


def test_frontend_computes_only_new_frames_and_the_model_runs_once_per_sounding_hop() -> None:
    bundle = FakeBundle()
    clf = Classifier(bundle)
    x = sequence(SCRIPT)
    hops = run_blocks(clf, x, [700], hops=True)
    assert len(hops) == x.size // 4000 == clf.hops
    sounding = [e for e in hops if e.label != SILENCE]
    assert bundle.calls == len(sounding) and all(e.inference_ms > 0 for e in sounding)
    assert all(e.inference_ms == 0 for e in hops if e.label == SILENCE)
    assert set(bundle.shapes) == {(40, 59)}
    assert clf._stream.frames_emitted == clf.spec.n_frames(x.size)  # each frame computed exactly once
    assert all(e.frontend_ms > 0 for e in hops)
    assert [e.hop for e in hops] == list(range(len(hops)))
    np.testing.assert_allclose([e.time for e in hops], 0.25 * np.arange(1, len(hops) + 1))


def test_silence_gate_threshold() -> None:
    quiet = sequence([(None, 0.5), (1000.0, 1.0)]) * 10 ** (-70 / 20) / 0.5  # a -73 dBFS RMS tone
    assert [e.label for e in run_blocks(Classifier(FakeBundle()), quiet)] == [SILENCE]
    labels = [e.label for e in run_blocks(Classifier(FakeBundle(), silence_db=-80.0), quiet)]
    assert labels == [SILENCE, "mid"]
    digital_silence = run_blocks(Classifier(FakeBundle(), silence_db=-120.0), np.zeros(8000), hops=True)
    assert {e.label for e in digital_silence} == {SILENCE}  # even the lowest gate never calls zeros an instrument


def test_low_confidence_is_unknown() -> None:
    flat = FakeBundle(sharpness=0.0)  # uniform 1/3 probabilities
    events = run_blocks(Classifier(flat), sequence(SCRIPT))
    assert [e.label for e in events] == [SILENCE, UNKNOWN, SILENCE, UNKNOWN, SILENCE]
    assert all(e.confidence == pytest.approx(1 / 3, abs=1e-6) for e in events if e.label == UNKNOWN)
    lenient = run_blocks(Classifier(flat, min_confidence=0.3), sequence(SCRIPT))
    assert UNKNOWN not in [e.label for e in lenient]


def test_smoothing_delays_a_change_between_instruments_by_the_expected_hops() -> None:
    # low tone straight into a mid tone (no silence between): the change needs a majority of the window.
    x = sequence([(None, 0.5), (200.0, 2.0), (1000.0, 2.0)])
    times = {}
    for smooth in (1, 3, 6):
        events = run_blocks(Classifier(FakeBundle(), smooth=smooth), x)
        assert [e.label for e in events] == [SILENCE, "low", "mid"], smooth
        times[smooth] = events[-1].time
    assert times[1] < times[3] < times[6]
    assert times[6] - times[1] <= 6 * 0.25
    # smoothing never bridges silence: after a gap the new note starts fresh
    gap = sequence([(None, 0.5), (200.0, 2.0), (None, 1.0), (4000.0, 1.0)])
    events = run_blocks(Classifier(FakeBundle(), smooth=8), gap)
    assert [e.label for e in events] == [SILENCE, "low", SILENCE, "high"]
    assert 0 < events[-1].time - 3.5 <= 0.25


def test_top_k_is_sorted_and_capped_by_the_labels() -> None:
    event = run_blocks(Classifier(FakeBundle(), top_k=2), sequence(SCRIPT))[1]
    assert len(event.top_k) == 2 and event.top_k[0][1] >= event.top_k[1][1]
    event = run_blocks(Classifier(FakeBundle(), top_k=10), sequence(SCRIPT))[1]
    assert [name for name, _ in event.top_k][0] == "low" and len(event.top_k) == 3
    assert sum(p for _, p in event.top_k) == pytest.approx(1.0, abs=1e-5)


def test_hop_option_changes_the_decision_grid() -> None:
    hops = run_blocks(Classifier(FakeBundle(), hop_seconds=0.1), tone(1000.0, 1.0), hops=True)
    np.testing.assert_allclose([e.time for e in hops], 0.1 * np.arange(1, 11))


def test_flush_finishes_a_short_clip() -> None:
    events = run_blocks(Classifier(FakeBundle()), tone(4000.0, 0.1), hops=True)  # shorter than a hop
    assert [e.label for e in events] == ["high"]
    assert events[0].level_db == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.5)  # padding not counted


def test_event_json_is_one_line_with_the_documented_fields() -> None:
    event = run_blocks(Classifier(FakeBundle()), sequence(SCRIPT))[1]
    line = event.to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert data["type"] == "change" and data["label"] == "low" and data["previous"] == SILENCE
    assert set(data) >= {"time", "confidence", "top_k", "level_db", "frontend_ms", "inference_ms", "hop"}
    assert data["top_k"][0] == {"label": "low", "p": round(event.confidence, 4)}


def test_swap_bundle_keeps_the_clock() -> None:
    clf = Classifier(FakeBundle())
    first = clf.process_hops(tone(200.0, 1.0))
    new = FakeBundle(labels=["a", "b", "c"])
    clf.swap_bundle(new)
    after = clf.process_hops(tone(200.0, 1.0))
    assert [e.hop for e in first + after] == list(range(8))
    np.testing.assert_allclose([e.time for e in after], 1.0 + 0.25 * np.arange(1, 5))
    assert after[0].label == "a" and after[0].previous == "low" and new.calls == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hop_seconds": 0.0}, "hop_seconds"),
        ({"smooth": 0}, "smooth"),
        ({"silence_db": 3.0}, "silence_db"),
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"top_k": 0}, "top_k"),
        ({"input_rate": 0}, "input_rate"),
        ({"channels": 0}, "channels"),
    ],
)
def test_bad_options_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Classifier(FakeBundle(), **kwargs)


def test_bad_blocks_are_refused_with_a_reason() -> None:
    clf = Classifier(FakeBundle(), channels=2)
    with pytest.raises(ValueError, match="shape"):
        clf.process(np.zeros((100, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        clf.process(np.full((100, 2), np.nan, dtype=np.float32))


def test_a_model_with_the_wrong_output_size_is_reported() -> None:
    class Broken(FakeBundle):
        def predict(self, features: np.ndarray) -> np.ndarray:
            return np.ones(5, dtype=np.float32) / 5

    with pytest.raises(ValueError, match="5 probabilities for 3 labels"):
        Classifier(Broken()).process(tone(1000.0, 1.0))


def test_feature_ring_keeps_the_newest_frames_in_order() -> None:
    ring = FeatureRing(2, 5, np.array([-1.0, -1.0]))
    np.testing.assert_array_equal(ring.latest(3), -np.ones((2, 3)))
    ring.push(np.arange(6, dtype=np.float32).reshape(2, 3))
    ring.push(np.arange(100, 108, dtype=np.float32).reshape(2, 4))
    np.testing.assert_array_equal(ring.latest(5)[0], [2, 100, 101, 102, 103])
    ring.push(np.arange(14, dtype=np.float32).reshape(2, 7))  # more than the capacity
    np.testing.assert_array_equal(ring.latest(5)[1], [9, 10, 11, 12, 13])


def test_compute_stats() -> None:
    clf = Classifier(FakeBundle())
    assert clf.compute_stats()["hops"] == 0
    clf.process(tone(1000.0, 2.0))
    stats = clf.compute_stats(clear=True)
    assert stats["hops"] == 8 and 0 < stats["median_ms"] <= stats["p99_ms"]
    assert clf.compute_stats()["hops"] == 0


def _silent_column() -> np.ndarray:
    from instrument_ai.device.frontend import DEFAULT_SPEC, mfcc

    return mfcc(np.zeros(1024), DEFAULT_SPEC)[:, 0]


def test_after_an_onset_the_window_starts_at_the_note_and_is_padded_with_silence() -> None:
    silent = _silent_column()
    bundle = FakeBundle()
    clf = Classifier(bundle)
    x = sequence([(None, 1.1), (1000.0, 2.0)])  # onset at 1.1 s: frame 68.75, inside the hop ending at 1.25 s
    clf.process(x)
    first = bundle.windows[0]
    sounding = ~np.isclose(first, silent[:, None], atol=1e-3).all(axis=0)
    assert sounding[0] and sounding[:5].all()  # starts with the note, not with the silence before it
    heard = int(np.flatnonzero(sounding)[-1]) + 1
    assert 6 <= heard <= 7  # at 1.25 s frames 0..74 are complete; the onset is frame 68 (or 69)
    assert np.allclose(first[:, heard:], silent[:, None], atol=1e-3)  # padded at the end, as a short note
    # once a whole window has passed since the onset, the window is simply the newest 59 frames
    np.testing.assert_array_equal(bundle.windows[-1], clf._ring.latest(59))
    assert clf._onset_frame is None


def test_without_onset_alignment_the_window_starts_with_the_silence() -> None:
    silent = _silent_column()
    bundle = FakeBundle()
    Classifier(bundle, align_onsets=False).process(sequence([(None, 1.1), (1000.0, 0.5)]))
    first = bundle.windows[0]
    assert np.allclose(first[:, :40], silent[:, None], atol=1e-3)  # 0.85 s of silence lead the window
    assert not np.allclose(first[:, -3:], silent[:, None], atol=1e-3)


@pytest.mark.parametrize("onset", [1.0, 1.1, 1.2375])
def test_onset_is_located_to_a_frame(onset: float) -> None:
    bundle = FakeBundle()
    clf = Classifier(bundle)
    clf.process(sequence([(None, onset), (1000.0, 0.6)]))
    expected = onset * 16000 / 256
    assert clf._onset_frame is not None and expected - 1 <= clf._onset_frame <= expected + 0.5

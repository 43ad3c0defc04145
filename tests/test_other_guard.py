"""`other` may never swallow an instrument (issue 23, item 4): the pitch-salience feature, the engine's pitched
guard, the catalogue's `other_kind` flag and `--other-kinds unpitched`, and the replay of `experiment other_guard`
against the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from clirun import run_main
from fakemic import FakeBundle

from instrument_ai.device.decision import PITCHED_GUARD_RATIO, guard_pitched
from instrument_ai.device.engine import Classifier
from instrument_ai.device.harmonicity import frame_salience, pitch_salience
from instrument_ai.device.settings import EngineSettings

RATE = 16000
HOP = 4000


def harmonic(f0: float, seconds: float = HOP / RATE, partials: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k
               for k in range(1, partials + 1) if f0 * k < RATE / 2)  # type: ignore[return-value]  # fmt: skip


def noises() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    white = rng.standard_normal(HOP)
    pink = np.fft.irfft(np.fft.rfft(white) / np.sqrt(np.arange(1, HOP // 2 + 2)), HOP)
    brown = np.cumsum(rng.standard_normal(HOP))
    clicks = np.zeros(HOP)
    clicks[[300, 1700, 3100]] = 1.0  # a few sparse clicks (typing, knocks)
    return {"white": white, "pink": pink, "brown": brown - brown.mean(), "clicks": clicks}


# -- the feature -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("f0", [41.2, 110.0, 440.0, 1000.0])
def test_salience_is_high_for_a_harmonic_tone(f0: float) -> None:
    assert pitch_salience(harmonic(f0), RATE) > 0.9
    noisy = harmonic(f0) + 0.3 * np.random.default_rng(2).standard_normal(HOP)  # a played note in a room
    assert pitch_salience(noisy, RATE) > 0.6


@pytest.mark.parametrize("name", ["white", "pink", "brown", "clicks"])
def test_salience_is_low_for_noise_and_clicks(name: str) -> None:
    assert pitch_salience(noises()[name], RATE) < 0.35


def test_salience_is_zero_for_silence_and_too_short_input() -> None:
    assert pitch_salience(np.zeros(HOP), RATE) == 0.0
    assert pitch_salience(np.ones(10), RATE) == 0.0


def _direct_salience(frame: np.ndarray, fmin: float = 40.0, fmax: float = 1600.0) -> float:
    """Oracle: the same normalised autocorrelation computed in the time domain (np.correlate), O(n^2)."""
    x = frame - frame.mean()
    w = np.hanning(x.size)
    r = np.correlate(x * w, x * w, mode="full")[x.size - 1 :]
    rw = np.correlate(w, w, mode="full")[x.size - 1 :]
    low, high = max(1, int(RATE / fmax)), min(x.size // 2, int(np.ceil(RATE / fmin)))
    n = (r[: high + 1] / r[0]) / np.maximum(rw[: high + 1] / rw[0], 1e-9)
    start = max(low, int(np.flatnonzero(n < 0)[0]))
    return float(np.clip(n[start : high + 1].max(), 0, 1))


@pytest.mark.parametrize("signal", ["tone", "white", "pink"])
def test_frame_salience_matches_a_time_domain_oracle(signal: str) -> None:
    frame = (harmonic(196.0) if signal == "tone" else noises()[signal])[:2048]
    assert frame_salience(frame, RATE) == pytest.approx(_direct_salience(frame), abs=1e-6)


# -- the guard ---------------------------------------------------------------------------------------------------
LABELS = ["flute", "organ", "other"]


def test_guard_changes_a_label_only_when_it_should() -> None:
    swallowed = np.array([0.25, 0.05, 0.7])
    np.testing.assert_array_equal(guard_pitched(swallowed, LABELS, 0.95, None), swallowed)  # no guard
    np.testing.assert_array_equal(guard_pitched(swallowed, LABELS, 0.5, 0.8), swallowed)  # not pitched enough
    far = np.array([0.1, 0.05, 0.85])  # best instrument under PITCHED_GUARD_RATIO of `other`: stays `other`
    assert far[0] < PITCHED_GUARD_RATIO * far[2]
    np.testing.assert_array_equal(guard_pitched(far, LABELS, 0.99, 0.8), far)
    guarded = guard_pitched(swallowed, LABELS, 0.95, 0.8)
    assert guarded[2] == 0.0 and guarded.sum() == pytest.approx(1.0) and guarded[0] == pytest.approx(0.25 / 0.3)
    np.testing.assert_array_equal(guard_pitched(swallowed, ["flute", "organ", "bass"], 0.95, 0.8), swallowed)


@dataclass
class FixedBundle(FakeBundle):
    """Says `other` (an instrument close behind) whatever it hears: what the guard is for."""

    row: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.05, 0.65], dtype=np.float32))

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.row


def _decided(bundle: FakeBundle, audio: np.ndarray, **settings: object) -> list[str]:
    """The engine's label of every sounding hop of `audio`."""
    engine = Classifier(bundle, settings=EngineSettings(**settings))  # type: ignore[arg-type]
    return [e.label for e in engine.process_hops(audio.astype(np.float32)) + engine.flush() if e.probs is not None]


def _labels(audio: np.ndarray, guard: float | None) -> list[str]:
    return _decided(FixedBundle(labels=list(LABELS)), audio, pitched_guard=guard)


def test_the_engine_keeps_other_off_a_pitched_note_and_on_noise() -> None:
    tone = 0.3 * harmonic(330.0, seconds=1.5)
    noise = 0.3 * np.random.default_rng(3).standard_normal(tone.size)
    assert set(_labels(tone, None)) == {"other"}  # no guard: the model's answer
    assert set(_labels(tone, 0.8)) == {"flute"}  # pitched: `other` may not swallow it
    assert set(_labels(noise, 0.8)) == {"other"}  # noise stays `other`


def test_pitched_guard_setting_and_option_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="pitched_guard"):
        EngineSettings(pitched_guard=1.5)
    result = run_main("classify", "--pitched-guard", "2", "nothing.wav")
    assert result.exit_code == 2 and "--pitched-guard" in result.output


# -- the catalogue flag and --other-kinds -----------------------------------------------------------------------
def test_the_catalogue_marks_exactly_the_pitched_other_sources() -> None:
    from instrument_ai.train.sources.other_kinds import catalogue_other_kinds, pitched_other_libraries

    declared = catalogue_other_kinds()
    assert {n for n, k in declared.items() if k == "pitched"} == {"ethanwiner", "dirt-samples", "sonic-pi"}
    corpus_libraries = {*declared, "other-noise", "other-speech", "TimGM6mb-drums", "FluidR3-drums"}
    assert pitched_other_libraries(corpus_libraries) == {"ethanwiner", "dirt-samples", "sonic-pi"}


def _source(extra: str, rule_family: str = "other", kind: str = "other") -> str:
    return (f'schema = 1\n[[source]]\nname = "x"\nrepo = "https://github.com/o/x"\ncommit = "{"a" * 40}"\n'
            f'licence = "CC0"\nkind = "{kind}"\n{extra}\npitch = {{ from = "none" }}\n'
            f'[[source.rule]]\nglob = "**"\nfamily = "{rule_family}"\n')  # fmt: skip


def test_other_kind_is_required_of_other_sources_and_refused_elsewhere() -> None:
    from instrument_ai.train.sources.catalogue import CatalogueError, parse

    assert parse(_source('other_kind = "pitched"'))[0].other_kind == "pitched"
    with pytest.raises(CatalogueError, match="other_kind must be one of pitched, unpitched"):
        parse(_source(""))
    with pytest.raises(CatalogueError, match="other_kind must be one of"):
        parse(_source('other_kind = "tuned"'))
    with pytest.raises(CatalogueError, match="only to a source with `other` clips"):
        parse(_source('other_kind = "unpitched"', rule_family="flute", kind="sfz"))


def test_unpitched_leaves_exactly_the_pitched_other_clips_out_of_training() -> None:
    from instrument_ai.train.config import TrainConfig
    from instrument_ai.train.prepare import InstrumentSplit, _without_pitched_other

    library = {"tabla": "dirt-samples", "slit": "ethanwiner", "marimba": "ethanwiner", "snare": "gtown-church",
               "hum": "other-noise", "held": "sonic-pi"}  # fmt: skip
    family = {"marimba": "mallet"}
    notes = [SimpleNamespace(instrument_str=i, family_str=family.get(i, "other")) for i in library]
    info = SimpleNamespace(library_of=library.__getitem__)
    split = InstrumentSplit({"tabla", "marimba", "snare"}, {"slit", "hum"}, {"held"}, "auto", None, [])
    same = _without_pitched_other(TrainConfig(data="d", out="o"), notes, info, split, [])
    assert same == split
    warnings: list[str] = []
    config = TrainConfig(data="d", out="o", other_kinds="unpitched", verbose=0)
    got = _without_pitched_other(config, notes, info, split, warnings)
    assert (got.train, got.valid, got.held) == ({"marimba", "snare"}, {"hum"}, {"held"})
    assert warnings and "dirt-samples, ethanwiner" in warnings[0]


@pytest.mark.parametrize("command", [["train", "--data", "d", "--out", "o"],
                                     ["experiment", "holdout", "--data", "d", "--out", "o"]])  # fmt: skip
def test_an_unknown_other_kinds_value_exits_2_with_one_line(command: list[str], tmp_path: Path) -> None:
    result = run_main(*command, "--other-kinds", "pitched")
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "unknown other kinds 'pitched'; choose from all, unpitched" in result.output


# -- the replay equals the engine -------------------------------------------------------------------------------
def test_the_replay_decides_every_level_as_the_engine_does() -> None:
    from instrument_ai.train.experiments.other_guard import decide, rejection_of, replay_clip

    rng = np.random.default_rng(5)
    rows = [rng.dirichlet([2.0, 1.0, 3.0]).astype(np.float32) for _ in range(40)]

    @dataclass
    class Scripted(FakeBundle):
        def predict(self, features: np.ndarray) -> np.ndarray:
            self.calls += 1
            return rows[(self.calls - 1) % len(rows)]

    audio = np.concatenate([0.3 * harmonic(220.0, 1.3), np.zeros(RATE // 2), 0.2 * rng.standard_normal(RATE),
                            0.3 * harmonic(523.0, 0.8)]).astype(np.float32)  # fmt: skip
    replay = replay_clip(Scripted(labels=list(LABELS)), audio.astype(np.float64), "flute")
    changed = False
    for level in (None, 0.3, 0.6, 0.9):
        engine = Classifier(Scripted(labels=list(LABELS)), settings=EngineSettings(pitched_guard=level))
        want = [e.label for e in engine.process_hops(audio) + engine.flush() if e.probs is not None]
        got = decide(replay, LABELS, rejection_of(Scripted(labels=list(LABELS))), level)
        assert got == want
        changed |= got != decide(replay, LABELS, rejection_of(Scripted(labels=list(LABELS))), None)
    assert changed  # the guard acted somewhere, so the comparison is not vacuous


# -- the reverse lever: the unpitched floor ----------------------------------------------------------------------
@dataclass
class FluteBundle(FakeBundle):
    """Says flute (clearly) whatever it hears: what the unpitched floor is for, on noise."""

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.array([0.8, 0.15, 0.05], dtype=np.float32)


def _floored(audio: np.ndarray, floor: float | None, labels: list[str] = LABELS) -> list[str]:
    return _decided(FluteBundle(labels=list(labels)), audio, unpitched_floor=floor)


def test_the_unpitched_floor_keeps_instruments_off_noise_and_on_notes() -> None:
    tone = 0.3 * harmonic(330.0, seconds=1.5)
    noise = 0.3 * np.random.default_rng(4).standard_normal(tone.size)
    assert set(_floored(noise, None)) == {"flute"}  # no floor: the model's answer
    assert set(_floored(noise, 0.35)) == {"other"}  # no period: not an instrument
    assert set(_floored(tone, 0.35)) == {"flute"}  # a played note keeps its family
    assert set(_floored(noise, 0.35, ["flute", "organ", "bass"])) == {"unknown"}  # no `other` output
    with pytest.raises(ValueError, match="unpitched_floor"):
        EngineSettings(unpitched_floor=-0.1)
    result = run_main("classify", "--unpitched-floor", "2", "nothing.wav")
    assert result.exit_code == 2 and "--unpitched-floor" in result.output


def test_the_replay_decides_every_unpitched_floor_as_the_engine_does() -> None:
    from instrument_ai.train.experiments.other_guard import decide, rejection_of, replay_clip

    rng = np.random.default_rng(6)
    audio = np.concatenate([0.3 * harmonic(220.0, 1.3), np.zeros(RATE // 2), 0.2 * rng.standard_normal(RATE),
                            0.3 * harmonic(523.0, 0.8)]).astype(np.float32)  # fmt: skip
    replay = replay_clip(FluteBundle(labels=list(LABELS)), audio.astype(np.float64), "flute")
    rejection = rejection_of(FluteBundle(labels=list(LABELS)))
    for floor in (None, 0.2, 0.35, 0.6):
        assert decide(replay, LABELS, rejection, None, unpitched=floor) == _floored(audio, floor)
    assert "other" in decide(replay, LABELS, rejection, None, unpitched=0.35)  # the floor acted on the noise


def test_the_floor_is_chosen_for_fewest_false_events_within_the_lost_bound() -> None:
    from instrument_ai.train.experiments.other_guard import choose_floor

    def row(floor: float | None, lost: float, events: float) -> dict:
        return {"unpitched_floor": floor, "real_lost_notes": {"mean": lost}, "other_false_events_per_minute": events}

    table = {"off": row(None, 0.30, 10.0), "floor 0.2": row(0.2, 0.305, 8.0), "floor 0.3": row(0.3, 0.309, 8.0),
             "floor 0.5": row(0.5, 0.35, 2.0)}  # fmt: skip
    assert choose_floor(table) == 0.2  # 0.5 loses 5 points of notes; 0.3 removes no more events than 0.2
    assert choose_floor({"off": row(None, 0.3, 10.0), "floor 0.2": row(0.2, 0.3, 11.0)}) is None

"""`instrument-ai soak`: a short soak (3 minutes of stream time, 5 model swaps) passes with zero errors and bounded
RSS; two bundles alternate; a file source loops; every broken invariant, exception or refused swap is an error,
and errors or RSS growth make the command fail with one line after its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from fakemic import REPO, FakeBundle, sequence, tiny_bundle_bytes

from instrument_ai.device import soak as soak_lib
from instrument_ai.device.cli import cli
from instrument_ai.device.engine import Event


def soak(*args: Any) -> tuple[Any, dict]:
    result = CliRunner().invoke(cli, ["soak", *map(str, args), "--json"])
    report = json.loads(result.stdout.splitlines()[0]) if result.stdout.startswith("{") else {}
    return result, report


def test_short_soak_passes_with_swaps_and_bounded_rss(tiny_bundle_path: Path) -> None:
    """In its own process, as it is run: the RSS and thread counts are the soak's alone."""
    args = ["soak", "--hours", "0.05", "--model", str(tiny_bundle_path), "--swap-every", "0.5", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "instrument_ai.device.cli", *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    r = json.loads(result.stdout)
    assert r["passed"] is True and r["errors"] == 0 and r["error_messages"] == []
    assert r["stream_seconds"] == pytest.approx(180.0, abs=0.2) and r["source"].startswith("generated (48000 Hz")
    assert r["hops"] in (720, 721) and 0.3 * r["hops"] < r["sounding_hops"] < 0.95 * r["hops"]
    assert {"low", "mid", "high", "silence"} <= set(r["labels"])  # the mixture reaches every class
    assert r["swaps"] == 5 and r["swaps_refused"] == 0 and r["swapped_in"] == {"tiny-test 1": 5}
    assert r["rss_start_after_seconds"] >= 30.0  # the warm-up includes the first swap
    assert 10 < r["rss_start_mb"] < 1000 and abs(r["rss_growth_mb"]) < r["max_rss_growth_mb"] == 5.0
    assert r["threads_end"] == r["threads_start"] and r["fds_end"] == r["fds_start"]
    assert r["wall_seconds"] > 0 and r["speed_x_realtime"] > 1 and r["hop_mean_ms"] > 0


def test_two_bundles_alternate_and_a_file_source_loops(tiny_bundle_path: Path, tmp_path: Path) -> None:
    second = tmp_path / "v2.tflite"
    second.write_bytes(tiny_bundle_bytes(version="2"))
    clip = tmp_path / "clip.wav"
    soundfile.write(
        str(clip), np.repeat(sequence([(200.0, 0.7), (None, 0.3), (4000.0, 1.0)], 22050)[:, None], 2, 1), 22050
    )
    result, r = soak(
        "--hours", 0.01, "--model", tiny_bundle_path, "--model", second, "--swap-every", 0.1, "--source", clip
    )
    assert result.exit_code == 0, result.output
    assert r["swapped_in"] == {"tiny-test 2": 3, "tiny-test 1": 2} and r["models"] == [
        str(tiny_bundle_path),
        str(second),
    ]
    assert r["source"] == f"{clip} (22050 Hz x2, looped)" and r["hops"] in (144, 145)
    assert set(r["labels"]) == {"low", "high", "silence"}


def test_text_report_and_failure_on_rss_growth(tiny_bundle_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rss = iter([50.0, 51.0, 58.0])
    monkeypatch.setattr(soak_lib, "process_figures", lambda: {"rss_mb": next(rss), "threads": 1, "fds": 5})
    result = CliRunner().invoke(
        cli, ["soak", "--hours", "0.002", "--model", str(tiny_bundle_path), "--swap-every", "0"]
    )
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("soak FAIL: 0.00 h of generated") and "growth +7.00 MB (limit 5)" in result.output
    assert lines[-1] == "Error: soak failed: RSS grew 7.0 MB (limit 5)"


def test_a_refused_swap_is_an_error(tiny_bundle_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(tiny_bundle_bytes()[:-100])
    result, r = soak("--hours", 0.005, "--model", tiny_bundle_path, "--model", broken, "--swap-every", 0.1)
    assert result.exit_code == 1 and r["swaps_refused"] >= 1 and r["errors"] == r["swaps_refused"]
    assert "swap refused" in r["error_messages"][0] and str(broken) in r["error_messages"][0]
    assert result.stderr.startswith("Error: soak failed: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--hours", "0"], "--hours"),
        (["--hours", "1", "--model", "a", "--model", "b", "--model", "c"], "one or two --model"),
        (["--hours", "1", "--model", "missing.tflite"], "missing.tflite"),
        (["--hours", "1", "--source", "missing.wav"], "no such file"),
    ],
)
def test_bad_soak_arguments_are_one_line(tiny_bundle_path: Path, args: list[str], fragment: str) -> None:
    if "--model" not in args:
        args = [*args, "--model", str(tiny_bundle_path)]
    result = CliRunner().invoke(cli, ["soak", *args])
    assert result.exit_code in (1, 2) and fragment in result.output and "Traceback" not in result.output


class FailingBundle(FakeBundle):
    def predict(self, features: np.ndarray) -> np.ndarray:
        out = super().predict(features)
        if self.calls % 50 == 0:
            raise RuntimeError(f"interpreter failed at call {self.calls}")
        return out


def test_exceptions_in_the_pipeline_are_counted_and_the_soak_goes_on() -> None:
    bundle = FailingBundle()
    audio = soak_lib.GeneratedAudio(16000, seed=3)
    report = soak_lib.run_soak(bundle, [Path("unused.tflite")], audio, hours=0.01, swap_every=0, warmup=0)
    assert report["errors"] == bundle.calls // 50 >= 2 and report["hops"] > 100
    assert "RuntimeError: interpreter failed at call 50" in report["error_messages"][0]


def _event(hop: int, time: float, label: str = "low", probs: Any = None) -> Event:
    return Event(
        time=time,
        label=label,
        confidence=0.5,
        top_k=[],
        level_db=-20.0,
        frontend_ms=0.1,
        inference_ms=0.1,
        hop=hop,
        probs=probs,
    )


def test_checker_finds_every_broken_invariant() -> None:
    checker = soak_lib.Checker()
    labels = ["low", "mid", "high"]
    checker.check([_event(0, 0.25, probs=np.array([0.2, 0.3, 0.5])), _event(1, 0.5, "silence")], labels)
    assert checker.errors == 0 and checker.sounding == 1
    checker.check([_event(3, 1.0)], labels)  # hop 2 missing
    checker.check([_event(4, 1.0)], labels)  # time stands still
    checker.check([_event(5, 1.25, "tuba")], labels)
    checker.check([_event(6, 1.5, probs=np.array([np.nan, 0.5, 0.5]))], labels)
    checker.check([_event(7, 1.75, probs=np.array([0.5, 0.5]))], labels)
    assert checker.errors == 5
    assert [m.split(":")[0] for m in checker.messages] == ["hop 3 follows hop 1", "hop 4", "hop 5", "hop 6", "hop 7"]


def test_generated_audio_is_seeded_varied_and_in_range() -> None:
    def take(seed: int, n: int = 300) -> list[np.ndarray]:
        blocks = soak_lib.GeneratedAudio(48000, seed).blocks()
        return [next(blocks) for _ in range(n)]

    first, again, other = take(1), take(1), take(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    audio = np.concatenate(first)
    sizes = {b.shape[0] for b in first}
    assert audio.dtype == np.float32 and audio.shape[1] == 1 and np.isfinite(audio).all()
    assert np.abs(audio).max() <= 1.0 and min(sizes) >= 240 and max(sizes) < 5760 and len(sizes) > 100
    source = soak_lib.GeneratedAudio(16000, 0)
    blocks = source.blocks()
    for _ in range(3000):
        next(blocks)
    assert all(count > 10 for count in source.counts.values())  # notes, tones, noise and silence all occur

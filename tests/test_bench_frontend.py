"""`instrument-ai bench frontend`: the table, the JSON form, the group, and one-line errors.

Structure only, never speed: a benchmark is not a timed test. The figures
themselves are in the README's performance section with the command that
reproduces them.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from instrument_ai.device import bench_frontend as bench_lib
from instrument_ai.device.commands.bench import bench, bench_frontend, format_frontend_report, run_frontend_benchmark

ROWS = ("ours_batch", "ours_stream", "librosa", "python_speech_features")


@pytest.fixture(scope="module")
def report() -> dict:
    return run_frontend_benchmark(repeats=5)


def test_report_has_every_candidate_with_consistent_ratios(report: dict) -> None:
    assert report["benchmark"] == "frontend"
    assert tuple(report["results"]) == ROWS  # librosa and psf are installed by `make test`
    assert report["unavailable"] == {}
    assert report["window_samples"] == 15872 and report["hop_seconds"] == 0.25
    batch, stream = report["results"]["ours_batch"], report["results"]["ours_stream"]
    for name, entry in report["results"].items():
        for column in ("window_ms", "hop_ms"):
            assert 0 < entry[column]["median"] <= entry[column]["p90"], (name, column)
        assert entry["window_ratio_to_ours_batch"] == pytest.approx(
            entry["window_ms"]["median"] / batch["window_ms"]["median"]
        )
        assert entry["hop_ratio_to_ours_stream"] == pytest.approx(
            entry["hop_ms"]["median"] / stream["hop_ms"]["median"]
        )
    # batch frontends recompute the window every hop; the stream's window is 4 hops
    assert report["results"]["librosa"]["hop_ms"] == report["results"]["librosa"]["window_ms"]
    assert stream["window_ms"]["median"] == pytest.approx(4 * stream["hop_ms"]["median"])
    assert set(report["targets"]) == {"stream_hop_vs_librosa", "batch_vs_librosa"}
    for target in report["targets"].values():
        assert isinstance(target["met"], bool) and target["met"] == (target["ratio"] >= target["required"])
    assert report["spec"]["n_mfcc"] == 40 and "librosa" in report["versions"]
    assert 0 <= report["max_abs_diff_vs_ours"]["librosa"] < 1e-3  # like for like: librosa computes our numbers
    json.dumps(report)  # machine-readable as is


def test_text_table(report: dict) -> None:
    text = format_frontend_report(report)
    lines = text.splitlines()
    assert lines[1].split()[:4] == ["frontend", "1", "s", "window"]
    for label in ("ours, batch (mfcc)", "ours, streaming (MfccStream)", "librosa.feature.mfcc"):
        assert sum(line.startswith(label) for line in lines) == 1
    assert "target streaming hop vs librosa" in text and "target batch window vs librosa" in text


def test_cli_json_and_group_level_options() -> None:
    runner = CliRunner()
    own = runner.invoke(bench, ["frontend", "--json", "--repeats", "5"])
    assert own.exit_code == 0, own.output
    assert json.loads(own.output)["repeats"] == 5
    inherited = runner.invoke(bench, ["--json", "--repeats", "6", "frontend"])
    assert inherited.exit_code == 0, inherited.output
    data = json.loads(inherited.output)
    assert data["repeats"] == 6 and all(len(e) for e in data["results"].values())


def test_plain_bench_runs_every_runnable_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command("needs-model")
    @click.argument("model")
    def needs_model(model: str) -> None:
        raise AssertionError("must be skipped")

    monkeypatch.setattr(bench, "commands", {"frontend": bench_frontend, "needs-model": needs_model})
    result = CliRunner().invoke(bench, ["--repeats", "5"])
    assert result.exit_code == 0, result.output
    assert "ours, streaming (MfccStream)" in result.output
    assert "bench needs-model: skipped (needs model)" in result.output


def test_without_reference_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The device install has neither librosa nor psf: only our rows, no target lines, no crash."""
    monkeypatch.setattr(bench_lib, "_installed", lambda module: False)
    report = run_frontend_benchmark(repeats=5)
    assert tuple(report["results"]) == ROWS[:2]
    assert report["unavailable"] == {"librosa": "not installed", "python_speech_features": "not installed"}
    assert report["targets"] == {}
    assert report["blas_threads"].startswith("library default")
    text = format_frontend_report(report)
    assert "librosa: not installed, skipped" in text and "target" not in text
    assert report["max_abs_diff_vs_ours"] == {} and "same framing" not in text


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing.wav", "no such file"),
        (lambda d: _write(d / "cd.wav", 44100, 44100), "sample rate 44100 Hz"),
        (lambda d: _write(d / "short.wav", 8000, 16000), "needs at least 19872 samples"),
    ],
)
def test_bad_audio_is_a_one_line_error(tmp_path: Path, setup, message: str) -> None:
    result = CliRunner().invoke(bench, ["frontend", "--repeats", "5", "--audio", str(setup(tmp_path))])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error:") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not isinstance(result.exception, (AssertionError, TypeError, KeyError))


def test_repeats_below_five_is_a_usage_error() -> None:
    result = CliRunner().invoke(bench, ["frontend", "--repeats", "2"])
    assert result.exit_code == 2 and "--repeats" in result.output


def _write(path: Path, n: int, rate: int) -> Path:
    soundfile.write(path, np.zeros(n, dtype=np.float32), rate)
    return path

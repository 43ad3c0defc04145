"""The `instrument-ai` entry point and `features`: help, version, the demo, and one-line errors.

Run through the installed console script in a subprocess, as a user would, so
that "no traceback, exit code != 0, one line" is checked on the real output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import soundfile

from instrument_ai.device.frontend import DEFAULT_SPEC

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "instrument-ai"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"{SCRIPT}: console script not installed (pip install -e .)"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "Usage: instrument-ai" in result.stdout
    for name in ("features", "bench"):
        assert f"  {name} " in result.stdout
    assert run("-h").stdout == result.stdout


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"instrument-ai, version {metadata.version('instrument-ai')}"


def test_unknown_command_is_a_usage_error() -> None:
    result = run("no-such-command")
    assert result.returncode == 2 and "No such command" in result.stderr and "Traceback" not in result.stderr


def test_features_demo_text() -> None:
    result = run("features", "--demo")
    assert result.returncode == 0, result.stderr
    assert "demo.flac" in result.stdout and "-> MFCC 40 x" in result.stdout
    assert "c0" in result.stdout


def test_features_demo_json() -> None:
    result = run("features", "--demo", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    n_samples = soundfile.info(str(REPO / "device" / "assets" / "demo.flac")).frames
    assert summary["shape"] == [40, DEFAULT_SPEC.n_frames(n_samples)]
    assert summary["preset"] == "default"
    assert len(summary["mean"]) == len(summary["std"]) == 40
    assert summary["seconds"] == pytest.approx(n_samples / 16000, abs=1e-3)


def test_features_on_a_stereo_file_downmixes(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    rng = np.random.default_rng(0)
    soundfile.write(path, rng.standard_normal((16000, 2)).astype(np.float32) * 0.1, 16000)
    result = run("features", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["shape"] == [40, 59]


def test_features_psf_preset_on_the_demo() -> None:
    result = run("features", "--demo", "--preset", "psf", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["shape"][0] == 13


def test_nonexistent_file(tmp_path: Path) -> None:
    assert_one_line_error(run("features", str(tmp_path / "missing.wav")), "missing.wav", "no such file")


def test_directory(tmp_path: Path) -> None:
    assert_one_line_error(run("features", str(tmp_path)), "is a directory")


def test_non_audio_bytes(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not a recording\n" * 50)
    assert_one_line_error(run("features", str(path)), "notes.wav", "not a readable audio file")


def test_random_binary_bytes(tmp_path: Path) -> None:
    """Random bytes can look like an MP3 frame to libsndfile's mpg123, which then warns on stderr by itself
    (C code, outside Python's control); our own message is still exactly one line, with no traceback."""
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    result = run("features", str(path))
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("instrument-ai features: ")]
    assert len(errors) == 1 and "noise.wav: not a readable audio file" in errors[0]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert_one_line_error(run("features", str(path)), "empty")


def test_wrong_sample_rate(tmp_path: Path) -> None:
    path = tmp_path / "cd.wav"
    soundfile.write(path, np.zeros(44100, dtype=np.float32), 44100)
    assert_one_line_error(run("features", str(path)), "44100 Hz", "16000 Hz")


def test_path_and_demo_together_is_a_usage_error(tmp_path: Path) -> None:
    result = run("features", "--demo", str(tmp_path / "x.wav"))
    assert result.returncode == 2 and "exactly one of PATH or --demo" in result.stderr
    assert "Traceback" not in result.stderr
    assert run("features").returncode == 2

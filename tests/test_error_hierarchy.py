"""Every error the device library raises derives from the one root and keeps the exit status the CLI uses."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from instrument_ai.device import (
    audio_io,
    bundle,
    event_hub,
    http_page,
    interpreter,
    lifecycle,
    line_output,
    model_watch,
    mqtt_out,
    openset,
    sources,
    tflite_file,
)
from instrument_ai.device.errors import ConfigurationError, InstrumentAIError

# (class, the built-in base existing `except` clauses rely on, exit status)
LIBRARY_ERRORS = [
    (tflite_file.FlatbufferError, ValueError, 1),
    (openset.OpenSetError, ValueError, 2),
    (mqtt_out.MqttConfigError, ValueError, 2),
    (audio_io.AudioFileError, ValueError, 1),
    (interpreter.RuntimeUnavailable, RuntimeError, 1),
    (sources.SourceError, RuntimeError, 1),
    (sources.NoMicrophoneError, RuntimeError, 3),
    (lifecycle.LifecycleError, RuntimeError, 1),
    (model_watch.ModelRefused, Exception, 1),
    (event_hub.TooManyClients, RuntimeError, 1),
    (bundle.BundleError, Exception, 1),
    (http_page.HttpConfigError, ValueError, 2),
]


@pytest.mark.parametrize(("error", "builtin", "exit_code"), LIBRARY_ERRORS, ids=lambda v: getattr(v, "__name__", v))
def test_library_error_has_one_root_and_its_exit_status(error: type, builtin: type, exit_code: int) -> None:
    exc = error("a one-line reason")
    assert isinstance(exc, InstrumentAIError)
    assert isinstance(exc, builtin)
    assert isinstance(exc, ConfigurationError) == (exit_code == 2)
    assert exc.exit_code == exit_code


def test_output_open_error_keeps_os_error_fields() -> None:
    exc = line_output.OutputOpenError(errno.EACCES, "out.jsonl: cannot write (Permission denied)")
    assert exc.errno == errno.EACCES
    assert exc.strerror == "out.jsonl: cannot write (Permission denied)"
    assert isinstance(exc, InstrumentAIError) and not isinstance(exc, ConfigurationError)
    assert exc.exit_code == 1


def test_a_library_error_is_translated_once_by_the_cli_group(tmp_path: Path) -> None:
    """No command wraps a library error itself: the group turns it into one line with the error's own status."""
    from click.testing import CliRunner

    from instrument_ai.device.cli import cli

    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio\n")
    runner = CliRunner().invoke(cli, ["features", str(not_audio)])
    assert runner.exit_code == 1
    assert runner.output.count("\n") == 1 and str(not_audio) in runner.output and "Traceback" not in runner.output
    done = subprocess.run(
        [sys.executable, "-m", "instrument_ai.device.cli", "models", "--dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    (tmp_path / "installed.json").write_text("{not json")
    broken = subprocess.run(
        [sys.executable, "-m", "instrument_ai.device.cli", "rollback", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0
    assert broken.returncode == 1 and broken.stderr.startswith("instrument-ai rollback: ")
    assert broken.stderr.count("\n") == 1 and "Traceback" not in broken.stderr

"""Every error the device library raises derives from the one root and keeps the exit status the CLI uses."""

from __future__ import annotations

import errno

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

"""The one fd-2 silencer: native code's stderr is dropped and fd 2 restored; --verbose keeps the runtime's lines."""

from __future__ import annotations

import os

import pytest

from instrument_ai.device import interpreter, sources
from instrument_ai.device.native_stderr import VERBOSE_ENV, quiet_native_stderr

NATIVE_LINE = b"Expression 'ret' failed in 'src/hostapi/alsa/pa_linux_alsa.c'\n"


def test_drops_what_native_code_writes_and_restores_fd_2(capfd: pytest.CaptureFixture) -> None:
    os.write(2, b"before\n")
    with quiet_native_stderr():
        os.write(2, NATIVE_LINE)
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


def test_restores_fd_2_when_the_body_raises(capfd: pytest.CaptureFixture) -> None:
    with pytest.raises(RuntimeError, match="boom"), quiet_native_stderr():
        os.write(2, NATIVE_LINE)
        raise RuntimeError("boom")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_verbose_keeps_the_lines_only_where_asked(
    capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with quiet_native_stderr(keep_if_verbose=True):
        os.write(2, b"INFO: kept\n")
    with quiet_native_stderr():  # PortAudio's reconnect chatter: --verbose is about the TFLite runtime only
        os.write(2, NATIVE_LINE)
    assert capfd.readouterr().err == "INFO: kept\n"


def test_without_verbose_keep_if_verbose_still_silences(
    capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with quiet_native_stderr(keep_if_verbose=True):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert capfd.readouterr().err == ""


def test_the_interpreter_and_the_microphone_share_it() -> None:
    assert interpreter.quiet_native_stderr is quiet_native_stderr
    assert sources.quiet_native_stderr is quiet_native_stderr

"""Where the daemon's records go: whole lines, and a write that fails never stops the classification.

A daemon that logs to a file must outlive a full disk (ENOSPC), a flaky
network mount (EIO) or a reader that went away (EPIPE): the audio keeps coming
whether or not it can be logged. So a failed write is counted as a lost
record, reported on stderr (which systemd sends to the journal, a different
disk), and the next record is tried again; once writes succeed again one
``output_recovered`` report says how many records were lost. A reminder is
repeated at most every `REMIND_SECONDS` while the output keeps failing.

Lines go through `os.write` on a file descriptor, unbuffered: a failed write
leaves nothing queued in a Python buffer to fail again at exit, and what was
written is on its way to the disk at once (a crash loses no buffered record).
A record that was only partly written is ended with a newline before the next
one, so every later line is still one valid JSON object.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from instrument_ai.device.errors import InstrumentAIError

REMIND_SECONDS = 60.0

Report = Callable[[dict[str, Any]], None]


class OutputOpenError(OSError, InstrumentAIError):
    """The output file cannot be opened at all (a usage problem, reported before the stream starts)."""

    def __init__(self, code: int | None, strerror: str) -> None:
        OSError.__init__(self, code, strerror)  # an OSError first: `errno` and `strerror` as callers expect


class LineOutput:
    """Writes lines to a file descriptor (or a text stream without one); never raises on a failed write."""

    def __init__(
        self,
        name: str,
        *,
        fd: int | None = None,
        stream: TextIO | None = None,
        report: Report | None = None,
        close_fd: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (fd is None) == (stream is None):
            raise ValueError("give exactly one of fd or stream")
        self.name = name
        self._fd, self._stream, self._close_fd = fd, stream, close_fd
        self._report = report or report_to_stderr(as_json=True)
        self._clock = clock
        self.written = 0  # records written whole
        self.lost = 0  # records not written (or only partly)
        self.failing = False
        self.broken = False  # the reader went away (EPIPE): no later write can succeed
        self._partial = False  # the last record was cut mid-line
        self._remind_at = 0.0

    # -- opening ---------------------------------------------------------------------------------------
    @classmethod
    def open_file(cls, path: Path, report: Report | None = None) -> LineOutput:
        """Append to `path` (created if missing); OutputOpenError with a one-line reason if it cannot be opened."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise OutputOpenError(exc.errno, f"{path}: cannot write ({exc.strerror})") from None
        return cls(str(path), fd=fd, report=report, close_fd=True)

    @classmethod
    def for_stream(cls, stream: TextIO, report: Report | None = None) -> LineOutput:
        """Standard output (or any text stream): by its file descriptor when it has one, else through `write`."""
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # a test runner's in-memory stream
            return cls(getattr(stream, "name", "stdout"), stream=stream, report=report)
        with contextlib.suppress(OSError, ValueError):
            stream.flush()  # anything already written through the text layer goes first
        return cls(getattr(stream, "name", "stdout"), fd=fd, report=report)

    # -- writing ---------------------------------------------------------------------------------------
    def write_line(self, text: str) -> bool:
        """Write one record (a newline is added); False, counted and reported, when it could not be written."""
        if self.broken:
            self.lost += 1
            return False
        data = (("\n" if self._partial else "") + text + "\n").encode("utf-8", "replace")
        try:
            self._write_all(data)
        except OSError as exc:
            self._partial = getattr(exc, "sent", 0) > 0 or self._partial  # a fragment (or an unended one) is there
            self._failed(exc)
            return False
        self._partial = False
        self.written += 1
        if self.failing:
            self.failing = False
            self._emit({"type": "output_recovered", "output": self.name, "lost": self.lost})
        return True

    def _write_all(self, data: bytes) -> int:
        if self._stream is not None:
            self._stream.write(data.decode("utf-8"))
            self._stream.flush()
            return len(data)
        assert self._fd is not None
        view, sent = memoryview(data), 0
        while sent < len(data):
            try:
                n = os.write(self._fd, view[sent:])
            except InterruptedError:
                continue
            except OSError as exc:
                exc.sent = sent  # type: ignore[attr-defined]
                raise
            if n == 0:
                raise OSError(errno.EIO, "short write")
            sent += n
        return sent

    def _failed(self, exc: OSError) -> None:
        self.lost += 1
        if exc.errno == errno.EPIPE:
            self.broken = True
        now = self._clock()
        if not self.failing or now >= self._remind_at or self.broken:
            code = errno.errorcode.get(exc.errno or 0, "EIO")
            self._emit(
                {
                    "type": "output_error",
                    "output": self.name,
                    "errno": code,
                    "error": exc.strerror or str(exc),
                    "lost": self.lost,
                    "action": "stopping: the reader went away" if self.broken else "still classifying",
                }
            )
            self._remind_at = now + REMIND_SECONDS
        self.failing = True

    def _emit(self, record: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # stderr itself may be gone; the counts still reach the stats
            self._report(record)

    def close(self) -> None:
        if self._close_fd and self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def report_to_stderr(*, as_json: bool) -> Report:
    """Reports for the operator on stderr: one JSON object per line, or one readable line."""

    def report(record: dict[str, Any]) -> None:
        if as_json:
            line = json.dumps(record, separators=(",", ":"))
        else:
            rest = " ".join(f"{k}={v}" for k, v in record.items() if k != "type")
            line = f"instrument-ai run: {record['type']}: {rest}"
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return report

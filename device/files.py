"""One answer per audio file: stream it through a `Classifier` and summarise its hops (`file_answer`)."""

from __future__ import annotations

import threading
from typing import Any

from instrument_ai.device.errors import ConfigurationError
from instrument_ai.device.settings import DEFAULT_SETTINGS, EngineSettings
from instrument_ai.device.sources import SourceError

DEFAULT_MAX_SECONDS = 3600.0
"""Longest file `classify_file` accepts by default (one answer for an hour of audio already means little)."""


class FileTooLong(SourceError):
    """A file longer than the limit, found from its header before a sample is read."""

    def __init__(self, path: str, seconds: float, limit: float) -> None:
        super().__init__(f"{path}: {seconds:.1f} s of audio, longer than the limit of {limit:g} s")
        self.path, self.seconds, self.limit = path, seconds, limit


def classify_file(
    path: str,
    bundle: Any,
    settings: EngineSettings = DEFAULT_SETTINGS,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> dict[str, Any]:
    """Stream a file through a Classifier; the file's answer is the family its timeline holds longest.

    A file longer than `max_seconds` (by its header) is refused with `FileTooLong` before a sample is read:
    a 2 GB file would take minutes. An unreadable file, or a rate the engine cannot convert, is a
    `SourceError` (this file's fault: the other files of a batch still run).
    """
    from instrument_ai.device.engine import Classifier, UnsupportedRate
    from instrument_ai.device.file_answer import file_answer
    from instrument_ai.device.sources import FileSource

    source = FileSource(path, realtime=False)
    seconds = source.frames / source.rate
    if max_seconds is not None and seconds > max_seconds:
        raise FileTooLong(path, seconds, max_seconds)
    try:
        engine = Classifier(bundle, settings=settings, input_rate=source.rate, channels=source.channels)
    except UnsupportedRate as exc:
        raise SourceError(f"{path}: {exc}") from None
    except ValueError as exc:  # the settings against this bundle (its default hop): no file would do better
        raise ConfigurationError(str(exc)) from None
    hops = []
    for block in source.blocks(threading.Event()):
        hops += engine.process_hops(block)
    hops += engine.flush()
    result: dict[str, Any] = {
        "file": path,
        "seconds": round(engine.stream_time, 3),
        "sample_rate": source.rate,
        "channels": source.channels,
        "hops": len(hops),
    }
    result.update(file_answer(hops, list(engine.labels), engine.top_k))
    result["timeline"] = hops
    return result

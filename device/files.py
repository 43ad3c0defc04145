"""One answer per audio file: stream it through a `Classifier` and summarise its hops (`file_answer`).

>>> from instrument_ai.device import classify_file
>>> from instrument_ai.device.audio_io import demo_path
>>> result = classify_file(demo_path())  # the shipped model, the shipped 30 s demo recording
>>> result.seconds, result.sample_rate, len(result.timeline)
(30.0, 16000, 120)
>>> result.label in result.labels and 0.0 <= result.confidence <= 1.0
True
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instrument_ai.device.errors import ConfigurationError
from instrument_ai.device.settings import DEFAULT_SETTINGS, EngineSettings
from instrument_ai.device.sources import SourceError

if TYPE_CHECKING:
    from instrument_ai.device.engine import Event

DEFAULT_MAX_SECONDS = 3600.0
"""Longest file `classify_file` accepts by default (one answer for an hour of audio already means little)."""


class FileTooLong(SourceError):
    """A file longer than the limit, found from its header before a sample is read."""

    def __init__(self, path: str, seconds: float, limit: float) -> None:
        super().__init__(f"{path}: {seconds:.1f} s of audio, longer than the limit of {limit:g} s")
        self.path, self.seconds, self.limit = path, seconds, limit


@dataclass(frozen=True)
class FileResult:
    """A file's answer: the family its timeline holds longest, with the hops behind it."""

    file: str
    """The path as given."""
    label: str
    """A family, ``other``, ``unknown`` (nothing held, or too short to name) or ``silence``."""
    confidence: float
    """Mean probability of `label` over the sounding hops (0 for silence)."""
    share: float
    """Share of the sounding hops that said `label`."""
    top_k: list[tuple[str, float]]
    """The most probable classes by mean probability over the sounding hops, best first."""
    seconds: float
    """Length of the audio (s)."""
    sample_rate: int
    """The file's own rate (Hz)."""
    channels: int
    """The file's channels (downmixed for the model)."""
    labels: list[str]
    """The model's labels."""
    timeline: list[Event]
    """Every hop's decision, in order."""
    personal: dict[str, Any] | None = None
    """The personal head applied (``{"families": [...], "notes": N}``), None without one."""
    decided_as: dict[str, Any] | None = None
    """The decision rule in force and who chose it (`engine.Classifier.decision_info`)."""

    def to_dict(self, *, timeline: bool = False) -> dict[str, Any]:
        """The fields `instrument-ai classify --json` prints (with the hops when `timeline`)."""
        out: dict[str, Any] = {
            "file": self.file,
            "seconds": self.seconds,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "hops": len(self.timeline),
            "label": self.label,
            "confidence": self.confidence,
            "share": self.share,
            "top_k": [{"label": name, "p": p} for name, p in self.top_k],
        }
        if self.personal is not None:
            out["personal"] = self.personal
        if self.decided_as is not None:
            out["decided_as"] = self.decided_as
        if timeline:
            out["timeline"] = [event.to_dict() for event in self.timeline]
        return out


def classify_file(
    path: str | Path,
    model: Any = None,
    *,
    settings: EngineSettings | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    threads: int = 1,
    personal: Any = None,
    **overrides: Any,
) -> FileResult:
    """Name the instrument family of one audio file (any length, rate and channels libsndfile reads).

    `model`: a loaded bundle (to classify many files with one load), a bundle path, or None for the default
    model (`model_files.find_model`). `settings` / `overrides`: `EngineSettings` fields (``smooth=1``).
    A file longer than `max_seconds` (by its header) is refused with `FileTooLong` before a sample is read:
    a 2 GB file would take minutes. An unreadable file, or a rate the engine cannot convert, is a
    `SourceError` (this file's fault: the other files of a batch still run). `personal`: a head from
    `enrol.head_for` (`instrument-ai enrol`), applied at every sounding hop as in the daemon.
    """
    from instrument_ai.device.engine import Classifier, UnsupportedRate
    from instrument_ai.device.file_answer import file_answer
    from instrument_ai.device.sources import FileSource

    bundle = _bundle(model, threads)
    settings = (settings or DEFAULT_SETTINGS).replace(**overrides)
    path = str(path)
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
    try:
        engine.set_personal(personal)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    hops = []
    for block in source.blocks(threading.Event()):
        hops += engine.process_hops(block)
    hops += engine.flush()
    labels = list(engine.labels)
    answer = file_answer(hops, labels, engine.top_k)
    return FileResult(
        file=path,
        label=answer["label"],
        confidence=answer["confidence"],
        share=answer["share"],
        top_k=[(entry["label"], entry["p"]) for entry in answer["top_k"]],
        seconds=round(engine.stream_time, 3),
        sample_rate=source.rate,
        channels=source.channels,
        labels=labels,
        timeline=hops,
        personal=None if personal is None else personal.summary(),
        decided_as=engine.decision_info(),
    )


def _bundle(model: Any, threads: int) -> Any:
    """A loaded bundle from a bundle, a path or None (the default model)."""
    if model is not None and hasattr(model, "predict"):
        return model
    from instrument_ai.device.model_files import find_model, load_bundle

    return load_bundle(find_model(None if model is None else Path(model)), threads)

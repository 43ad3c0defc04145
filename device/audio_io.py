"""Reading audio files on the device path (soundfile only), with one-line errors."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from instrument_ai.device.errors import InstrumentAIError


class AudioFileError(InstrumentAIError, ValueError):
    """An audio file that cannot be used; the message is one line for the user."""


def demo_path() -> Path:
    """The demo recording that ships with the package."""
    return Path(str(resources.files("instrument_ai.device") / "assets" / "demo.flac"))


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a file as float32 (frames, channels) and its sample rate, or raise AudioFileError."""
    import soundfile

    path = Path(path)
    if path.is_dir():
        raise AudioFileError(f"{path}: is a directory, not an audio file")
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path}: file is empty")
    from instrument_ai.device.sources import SourceError, check_wav_header  # the one file check classify/run use

    try:
        check_wav_header(path, path.stat().st_size)
    except SourceError as exc:
        raise AudioFileError(str(exc)) from None
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for unreadable input
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioFileError(f"{path}: not a readable audio file ({reason})") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: contains no audio frames")
    if not np.isfinite(data).all():
        raise AudioFileError(f"{path}: contains NaN or Inf samples")
    return data, int(rate)

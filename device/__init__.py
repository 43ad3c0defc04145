"""Device side of instrument-ai: the numpy MFCC frontend, the bundle reader and the streaming runtime.

Everything under this package imports only numpy, the TFLite interpreter
(ai-edge-litert, else tflite-runtime, else tensorflow.lite), flatbuffers,
sounddevice and soundfile, so that a Raspberry Pi installs it in seconds.

The library in three lines (the default model when none is named)::

    from instrument_ai.device import classify_file
    result = classify_file("note.wav")
    print(result.label, result.confidence)

and for a stream, ``Classifier.open().process(block)`` returns the label changes. The names below are
imported on first use, so ``import instrument_ai.device`` stays cheap (the CLI's ``--help`` needs nothing else).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Classifier": "instrument_ai.device.engine",
    "Event": "instrument_ai.device.engine",
    "EngineSettings": "instrument_ai.device.settings",
    "FileResult": "instrument_ai.device.files",
    "classify_file": "instrument_ai.device.files",
    "decide_label": "instrument_ai.device.decision",
    "load_bundle": "instrument_ai.device.model_files",
    "InstrumentAIError": "instrument_ai.device.errors",
}

__all__ = [
    "Classifier",
    "EngineSettings",
    "Event",
    "FileResult",
    "InstrumentAIError",
    "__version__",
    "classify_file",
    "decide_label",
    "load_bundle",
]

if TYPE_CHECKING:
    from instrument_ai.device.decision import decide_label
    from instrument_ai.device.engine import Classifier, Event
    from instrument_ai.device.errors import InstrumentAIError
    from instrument_ai.device.files import FileResult, classify_file
    from instrument_ai.device.model_files import load_bundle
    from instrument_ai.device.settings import EngineSettings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'instrument_ai.device' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

"""Pick the TFLite interpreter a device has: ai-edge-litert, else tflite-runtime, else tensorflow.lite.

ai-edge-litert is the maintained runtime (wheels for aarch64, XNNPACK on by
default, imports in milliseconds); tflite-runtime is what older Raspberry Pi
images carry; tensorflow.lite is a last resort that costs seconds of import
time and hundreds of MB, so it is used only when nothing lighter is installed.
The choice is reported in `Bundle.runtime` (e.g. "ai-edge-litert 2.3.0") so a
benchmark or a log line always says which runtime produced a number.

`INSTRUMENT_AI_RUNTIME=ai-edge-litert|tflite-runtime|tensorflow` (or the
`runtime=` argument) forces one, for benchmarks that compare them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from typing import Any

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.native_stderr import quiet_native_stderr

RUNTIMES: dict[str, tuple[str, str]] = {
    # name -> (module holding Interpreter, distribution that reports the version)
    "ai-edge-litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    # `tensorflow.lite` itself is a lazy alias without `Interpreter` as a module attribute in TF 2.21
    "tensorflow": ("tensorflow.lite.python.interpreter", "tensorflow-cpu"),
}
"""In order of preference."""

RUNTIME_ENV = "INSTRUMENT_AI_RUNTIME"


class RuntimeUnavailable(InstrumentAIError, RuntimeError):
    """No TFLite interpreter is installed (or the one asked for is not)."""


def _version(distribution: str, module: Any) -> str:
    for name in (distribution, "tensorflow", "tf-nightly"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return str(getattr(module, "__version__", "?"))


def interpreter_class(runtime: str | None = None) -> tuple[type, str]:
    """(Interpreter class, "name version") of the preferred installed runtime, or of `runtime` if given."""
    wanted = runtime or os.environ.get(RUNTIME_ENV) or None
    if wanted is not None and wanted not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown TFLite runtime {wanted!r} (choose from {', '.join(RUNTIMES)})")
    for name in [wanted] if wanted else list(RUNTIMES):
        module_name, distribution = RUNTIMES[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return module.Interpreter, f"{name} {_version(distribution, module)}"
    if wanted:
        raise RuntimeUnavailable(f"the TFLite runtime {wanted!r} is not installed")
    raise RuntimeUnavailable(
        "no TFLite interpreter is installed: pip install ai-edge-litert (or tflite-runtime on older systems)"
    )


def make_interpreter(model_content: bytes, *, num_threads: int = 1, runtime: str | None = None) -> tuple[Any, str]:
    """A ready (tensors allocated) interpreter for the model bytes, and the runtime's "name version".

    The model is passed as bytes, not as a path: the bytes the bundle reader has
    just hashed are exactly the bytes that run (no second read of the file).
    Raises RuntimeUnavailable, or ValueError with the interpreter's message
    (first line only) when it refuses the model.
    """
    if num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    cls, label = interpreter_class(runtime)
    try:
        with quiet_native_stderr(keep_if_verbose=True):  # its INFO lines fill the journal; --verbose keeps them
            interpreter = cls(model_content=model_content, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ValueError(f"{label} refused the model: {first}") from None
    return interpreter, label

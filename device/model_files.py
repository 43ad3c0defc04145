"""Where a model comes from and how it is loaded: discovery, the bundle load with its checks, reload candidates.

A model is a bundle file given directly, the ``current.tflite`` of a model directory (as `flash` installs it),
``$INSTRUMENT_AI_MODEL``, ``models/default.tflite`` under the working directory, or the default that ships with
the package. A model that is named (a file given, ``$INSTRUMENT_AI_MODEL``, a model directory) must be there:
it is never replaced by a default (`NamedModelMissing`). Every refusal is one line: `ModelNotFound` /
`ModelLoadError` (exit 1) or, for what a service restart cannot fix, exit 2: a `ConfigurationError` (a bad
trusted key, a bundle the key refuses, a bundle without ``other`` where one is required), a named model that
is missing, or a model directory that is missing or holds no model yet. Messages name values, not flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instrument_ai.device.errors import ConfigurationError, InstrumentAIError
from instrument_ai.device.settings import EngineSettings

MODEL_ENV = "INSTRUMENT_AI_MODEL"
CURRENT = "current.tflite"
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "default.tflite"
"""The default bundle: repo/models in a source checkout, instrument_ai/models in an installed wheel."""


class ModelNotFound(InstrumentAIError):
    """No bundle where one was looked for (exit 1)."""


class NoModelDirectory(ModelNotFound):
    """The model directory named does not exist (exit 2: configuration)."""

    exit_code = 2


class NoModelFound(ModelNotFound):
    """Nothing given, and none of the default places holds a bundle."""


class NamedModelMissing(ModelNotFound):
    """A bundle file named by the caller or by ``$INSTRUMENT_AI_MODEL`` is not there (exit 2: configuration).

    `named_by` says where it was named: ``"model"`` (the caller's argument) or ``"$INSTRUMENT_AI_MODEL"``.
    """

    exit_code = 2

    def __init__(self, path: Path, named_by: str, reason: str) -> None:
        where = "" if named_by == "model" else f" (named by {named_by})"
        super().__init__(f"{path}: {reason}{where}")
        self.path, self.named_by, self.reason = path, named_by, reason


class NoModelInstalled(ModelNotFound):
    """A model directory with no current model yet (exit 2: a service restart cannot fix it, a flash can)."""

    exit_code = 2


class ModelLoadError(InstrumentAIError):
    """The bundle was found but refused: digests, fields, interpreter or self-test (exit 1)."""


class UntrustedModel(ConfigurationError):
    """The device's trusted key refuses the bundle (exit 2: the key or the bundle must change, not the process)."""


class TrustedKeyError(ConfigurationError):
    """The trusted key is not a usable ed25519 public key (exit 2); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"trusted key: {reason}; give 64 hex characters or a file holding them")
        self.reason = reason


class OtherRequiredError(ConfigurationError):
    """The bundle has no `other` output and the caller requires one (exit 2)."""


def default_model_candidates() -> list[Path]:
    """Where a model is looked for when none is named, in order (``$INSTRUMENT_AI_MODEL`` first, when set)."""
    out = []
    if os.environ.get(MODEL_ENV):
        out.append(Path(os.environ[MODEL_ENV]))
    out.append(Path.cwd() / "models" / "default.tflite")
    out.append(SHIPPED_MODEL)
    return out


def environment_model() -> Path | None:
    """The bundle ``$INSTRUMENT_AI_MODEL`` names (NamedModelMissing when it is not there), or None when unset."""
    value = os.environ.get(MODEL_ENV)
    if not value:
        return None
    return named_model(Path(value), f"${MODEL_ENV}")


def named_model(path: Path, named_by: str = "model") -> Path:
    """`path`, checked to exist: a named model is never silently replaced by a default.

    Only existence: a directory or a bad file is the bundle loader's refusal (exit 1), as for `inspect`.
    """
    if not path.exists():
        raise NamedModelMissing(path, named_by, "no such model file")
    return path


def find_model(model: Path | None = None, model_dir: Path | None = None) -> Path:
    """The bundle file to load: `model`, else `model_dir`'s current one, else ``$INSTRUMENT_AI_MODEL``, else the
    first default that exists. A model that is named and missing is an error (exit 2), never a fall-back."""
    if model is not None and model_dir is not None:
        raise ConfigurationError("give either a model file or a model directory, not both")
    if model is not None:
        return named_model(Path(model))
    if model_dir is not None:
        return installed_model(Path(model_dir))
    from_environment = environment_model()
    if from_environment is not None:
        return from_environment
    for candidate in default_model_candidates():
        if candidate.is_file():
            return candidate
    raise NoModelFound(f"no model found (looked for ${MODEL_ENV}, models/default.tflite and {SHIPPED_MODEL})")


def installed_model(model_dir: Path) -> Path:
    """A model directory's current bundle, after finishing a flash or rollback that was interrupted."""
    from instrument_ai.device.lifecycle import repair_if_possible

    if not model_dir.is_dir():
        raise NoModelDirectory(f"{model_dir}: no such model directory")
    repair_if_possible(model_dir)
    current = model_dir / CURRENT
    if not current.exists():
        raise NoModelInstalled(f"{model_dir}: no model installed ({CURRENT} missing; use `instrument-ai flash`)")
    return current


def load_bundle(path: Path, threads: int = 1, trusted_key: str | None = None, require_other: bool = False) -> Any:
    """Load and self-test a bundle (and check its signature with a trusted key); any refusal is one line.

    `require_other`: a device set up to say `other` for non-instrument sounds refuses a bundle that cannot
    (a 0.3-style 11-family model would name an instrument for every voice and door in the room).
    """
    from instrument_ai.device.bundle import BundleError, UntrustedBundle, load

    if trusted_key is not None:  # a bad key is configuration (exit 2: systemd does not restart on it)
        from instrument_ai.device.ed25519 import load_public_key

        try:
            load_public_key(trusted_key)
        except (ValueError, OSError) as exc:
            raise TrustedKeyError(str(exc)) from None
    try:
        bundle = load(path, num_threads=threads, trusted_key=trusted_key)
    except UntrustedBundle as exc:
        raise UntrustedModel(str(exc)) from None
    except BundleError as exc:
        raise ModelLoadError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - an interpreter's own error types: still one line, never a traceback
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelLoadError(f"{path}: cannot load model ({type(exc).__name__}: {reason})") from None
    if require_other:
        from instrument_ai.device.openset import OpenSetError
        from instrument_ai.device.openset import require_other as check_other

        try:
            check_other(bundle.labels, str(path))
        except OpenSetError as exc:
            raise OtherRequiredError(str(exc)) from None
    return bundle


def prepare_bundle(
    path: Path,
    threads: int,
    trusted_key: str | None,
    settings: EngineSettings,
    rate: int,
    channels: int,
    *,
    require_other: bool = False,
    describe: Callable[[InstrumentAIError], str] = str,
) -> Any:
    """A reload candidate: load, verify and self-test it, then trial-run a stream's pipeline on it.

    Runs in the watcher's thread; ModelRefused (one line, `describe` of the load error) for every reason to
    keep the old model.
    """
    from instrument_ai.device.engine import Classifier, UnsupportedRate
    from instrument_ai.device.model_watch import ModelRefused, check_runnable

    try:
        bundle = load_bundle(path, threads, trusted_key, require_other)
    except InstrumentAIError as exc:
        raise ModelRefused(describe(exc)) from None
    trial = settings.replace(silence_db=-200.0)  # the trial tests the model path, whatever the daemon's gate

    def make_engine(candidate: Any) -> Any:
        try:
            return Classifier(candidate, settings=trial, input_rate=rate, channels=channels)
        except UnsupportedRate as exc:
            raise ModelRefused(f"{path}: input: {exc}") from None
        except ValueError as exc:
            raise ModelRefused(f"{path}: {exc}") from None

    check_runnable(bundle, make_engine, rate, channels)
    return bundle

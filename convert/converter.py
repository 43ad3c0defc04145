"""A training run -> one verified bundle (the library behind `instrument-ai convert`).

Reads the run folder (config.json, model.keras, calibration.npz, metrics.json
when present; see docs/INTERFACES.md), quantises the model (int8, or float32
with --float), builds the bundle with golden vectors, checks it against the
Keras model on the validation windows through the device code path, and writes
it only when the check passes. A refused or failed conversion writes nothing.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instrument_ai.train.run_folder import RunFolder, RunFolderError, read_calibration, read_run_folder


@dataclass
class ConvertRun:
    """What `convert` reads from a training run folder: the checked config, the calibration windows, metrics."""

    folder: RunFolder
    calibration: dict[str, Any]
    metrics: Any = None
    warnings: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def config(self) -> dict[str, Any]:
        return self.folder.config

    @property
    def model_path(self) -> Path:
        return self.folder.model_path

    @property
    def labels(self) -> list[str]:
        return list(self.folder.labels)


def read_run(rundir: Path) -> ConvertRun:
    """Read and cross-check a run folder for conversion; RunFolderError names the first problem.

    Beyond `read_run_folder`: a model on a stage the device computes (MFCC or log-mel, named in the spec),
    finite stds above zero, model.keras and calibration.npz present and consistent; metrics.json is optional
    (a warning when unreadable).
    """
    import numpy as np

    folder = read_run_folder(rundir)
    spec, config_path = folder.spec, folder.config_path
    if folder.stage != spec.stage:
        raise RunFolderError(
            config_path,
            f"feature_stage {folder.stage} but the frontend spec's stage is "
            f"{spec.stage}: a device computes mfcc or log_mel, named in the spec (retrain the run)",
        )
    per = "MFCC" if spec.stage == "mfcc" else "mel band"
    if folder.mean.shape != (spec.n_features,) or folder.std.shape != (spec.n_features,):
        raise RunFolderError(config_path, f"input_normalization needs {spec.n_features} means and stds (one per {per})")
    if not (np.isfinite(folder.mean).all() and np.isfinite(folder.std).all() and (folder.std > 0).all()):
        raise RunFolderError(config_path, "input_normalization must be finite with std > 0")
    if not folder.model_path.is_file():
        raise RunFolderError(folder.model_path, "missing (the run's trained model)")
    calibration = read_calibration(
        folder.path / "calibration.npz", (spec.n_features, folder.window_frames), len(folder.labels)
    )
    run = ConvertRun(folder=folder, calibration=calibration)
    try:
        run.metrics = folder.read_json("metrics.json")
    except RunFolderError as exc:
        run.warnings.append(f"{exc}; the bundle carries no headline metrics")
    return run


def pick_golden(valid_y: Any, count: int) -> list[int]:
    """Indices of golden windows: the first window of each class in turn, then the next ones."""
    chosen: list[int] = []
    seen: set[int] = set()
    for i, y in enumerate(valid_y.tolist()):
        if len(chosen) == count:
            return chosen
        if y not in seen:
            seen.add(y)
            chosen.append(i)
    rest = [i for i in range(len(valid_y)) if i not in set(chosen)]
    return chosen + rest[: count - len(chosen)]


def convert_run(
    rundir: Path,
    out: Path,
    *,
    int8: bool = True,
    name: str | None = None,
    version: str | None = None,
    golden: int = 3,
    calibration_windows: int = 500,
    max_disagreement: float = 0.02,
    max_note_loss_points: float = 1.0,
    signer: Callable[[bytes], tuple[bytes, bytes]] | None = None,
    background: Path | None = None,
    background_notes: int = 10,
    engine_defaults: dict[str, Any] | None = None,
) -> tuple[Any, Any, ConvertRun]:
    """Convert a run; returns (the written Bundle, the AgreementReport, the ConvertRun).

    Raises RunFolderError / ConvertError (one line) and writes nothing when the
    run folder is unusable or the converted model fails the agreement check.
    `engine_defaults` (``decision``, ``min_confidence``, ``chosen_on``): the rule the device uses with this
    bundle unless its user sets one (`device.settings.EngineSettings.resolved`).
    """
    import numpy as np

    from instrument_ai.convert import bundle_writer, quantize
    from instrument_ai.device import bundle as device_bundle
    from instrument_ai.device.settings import ENGINE_DEFAULTS_KEY, bundle_engine_defaults

    try:
        decision_rule = bundle_engine_defaults({ENGINE_DEFAULTS_KEY: engine_defaults or None})
    except ValueError as exc:
        raise bundle_writer.ConvertError(str(exc)) from None
    run = read_run(rundir)
    labels = run.labels
    cal = run.calibration
    norm = run.config["input_normalization"]
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    window = cal["valid_x"].shape[1:]

    try:
        model = quantize.load_keras(str(run.model_path))
    except Exception as exc:  # keras raises many types for a bad file
        raise bundle_writer.ConvertError(f"{run.model_path}: cannot load the Keras model ({exc})") from None
    in_shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if in_shape != (*window, 1):
        raise bundle_writer.ConvertError(
            f"{run.model_path}: input shape {model.input_shape} does not match the run's windows (None, {window[0]}, "
            f"{window[1]}, 1)"
        )
    if tuple(model.output_shape[1:]) != (len(labels),):
        raise bundle_writer.ConvertError(
            f"{run.model_path}: output shape {model.output_shape} does not match {len(labels)} labels"
        )

    representative = None
    if int8:
        windows = quantize.representative_windows(
            cal["train_x"], limit=calibration_windows, seed=int(run.config.get("seed", 0)), train_y=cal.get("train_y")
        )
        representative = quantize.normalise(windows, mean, std)
    try:
        model_bytes = quantize.to_tflite(model, representative, int8=int8)
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise bundle_writer.ConvertError(f"the TFLite converter failed: {first}") from None

    from instrument_ai.convert.embedding import EmbeddingError, add_embedding_output

    try:
        model_bytes = add_embedding_output(model_bytes)  # the penultimate activations, for personal heads
    except EmbeddingError as exc:
        raise bundle_writer.ConvertError(f"{run.model_path}: {exc}") from None

    metadata = bundle_writer.base_metadata(
        name=name or out.stem,
        version=version or _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d.%H%M%S"),
        config=run.config,
        run_name=rundir.resolve().name,
        metrics=run.metrics,
        quantization="int8" if int8 else "float32",
    )
    if decision_rule:
        metadata[ENGINE_DEFAULTS_KEY] = decision_rule
    valid_y = cal["valid_y"].astype(np.int64)
    golden_idx = pick_golden(valid_y, golden)
    golden_x = cal["valid_x"][golden_idx]
    golden_labels = [labels[int(valid_y[i])] for i in golden_idx]
    try:
        _, candidate = bundle_writer.build_bundle(model_bytes, metadata, golden_x, golden_labels, signer=signer)
    except device_bundle.BundleError as exc:
        raise bundle_writer.ConvertError(f"the converted model fails the device's checks: {exc}") from None

    keras_probs = quantize.keras_probabilities(model, quantize.normalise(cal["valid_x"], mean, std))
    bundle_probs = candidate.predict_batch(cal["valid_x"])
    report = quantize.check_agreement(
        keras_probs,
        bundle_probs,
        valid_y,
        cal.get("valid_note"),
        max_disagreement=max_disagreement,
        max_note_loss_points=max_note_loss_points,
    )
    if report.refusal:
        kind = "int8" if int8 else "float"
        raise bundle_writer.ConvertError(f"refused: the {kind} model {report.refusal}; nothing written to {out}")

    metadata["conversion_check"] = {"reference": "keras float model, validation windows", **report.to_dict()}
    data, _ = bundle_writer.build_bundle(model_bytes, metadata, golden_x, golden_labels, signer=signer)
    if background is not None:  # known sounds for personal heads, heard through this very bundle
        from instrument_ai.convert.background import with_background

        data = with_background(data, background, background_notes, signer=signer, name=str(out))
    bundle_writer.write_atomic(out, data)
    return device_bundle.load(out), report, run

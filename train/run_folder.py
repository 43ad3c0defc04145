"""The training run folder (docs/INTERFACES.md "Training run folder"), read in one place.

`train` writes config.json, model.keras, calibration.npz, history.json and metrics.json; `evaluate`,
`convert`, `train`'s own `load_run` and the reports read them through `read_run_folder`, so they cannot
disagree on what a field means or how the model's input is normalised. Each reader adds only the checks
its job needs (`convert` wants MFCC runs with finite, positive stds and the calibration windows).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.frontend import FrontendSpec, normalise_windows
from instrument_ai.train.features import hop_frames as frames_per_hop

STAGES = ("mfcc", "log_mel", "mel_power")
"""Frontend outputs a run may be trained on (config.json `feature_stage`; absent: "mfcc")."""
DEFAULT_HOP_SECONDS = 0.25
"""config.json `default_hop_seconds` when a run does not record it."""
CALIBRATION_KEYS = ("train_x", "valid_x", "valid_y")
"""The calibration.npz arrays every run holds (valid_note and train_y are optional)."""


class RunFolderError(InstrumentAIError):
    """A run folder that is missing or holds unusable data; `detail` is the problem without the path."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


@dataclass(frozen=True, eq=False)
class RunFolder:
    """A run folder's config.json, parsed and checked; the model and the other files load on demand."""

    path: Path
    config: dict[str, Any]
    """config.json as written (for the fields only one reader needs: preset, silence_dbfs, data ...)."""
    spec: FrontendSpec
    stage: str
    """The frontend output the model takes (one of `STAGES`)."""
    labels: list[str]
    mean: np.ndarray
    """Input normalisation mean per feature (float32)."""
    std: np.ndarray
    """Input normalisation std per feature (float32), as saved (a reader that divides checks it is > 0)."""
    window_frames: int
    hop_seconds: float
    hop_frames: int
    """Frames between window starts, as the run recorded it (else derived from `hop_seconds`)."""

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def status(self) -> str:
        return str(self.config.get("status", "unknown"))

    @property
    def n_features(self) -> int:
        return self.spec.n_mfcc if self.stage == "mfcc" else self.spec.n_mels

    def normalize(self, windows: np.ndarray) -> np.ndarray:
        """Raw windows (N, n_features, window_frames) -> the model's normalised float32 input."""
        return normalise_windows(windows, self.mean, self.std)

    def load_model(self, *, compile: bool = False) -> Any:
        """The best checkpoint (model.keras)."""
        import keras

        return keras.models.load_model(self.model_path, compile=compile)

    def read_json(self, name: str) -> dict[str, Any] | None:
        """An optional JSON object beside config.json (history.json, metrics.json); None when absent."""
        path = self.path / name
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunFolderError(path, f"not readable JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RunFolderError(path, "expected a JSON object")
        return data

    def calibration(self) -> dict[str, np.ndarray]:
        """calibration.npz's arrays as saved."""
        with np.load(self.path / "calibration.npz") as data:
            return {k: data[k] for k in data.files}


def read_run_folder(rundir: str | Path) -> RunFolder:
    """Read and check a run folder's config.json; RunFolderError names the first problem."""
    path = Path(rundir)
    if not path.is_dir():
        raise RunFolderError(path, "not a training run folder (no such directory)")
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise RunFolderError(config_path, "missing (the run's config)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(config_path, f"not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise RunFolderError(config_path, "not a JSON object")
    for key in ("frontend_spec", "labels", "input_normalization", "window_frames"):
        if key not in config:
            raise RunFolderError(config_path, f"no {key!r}")
    try:
        spec = FrontendSpec.from_dict(config["frontend_spec"])
    except (TypeError, ValueError) as exc:
        raise RunFolderError(config_path, str(exc)) from None
    stage = config.get("feature_stage", "mfcc")
    if stage not in STAGES:
        raise RunFolderError(config_path, f"unknown feature_stage {stage!r} (known: {', '.join(STAGES)})")
    labels = config["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise RunFolderError(config_path, "labels must be a non-empty list of names")
    if len(set(labels)) != len(labels):
        raise RunFolderError(config_path, "labels repeat a name")
    frames = config["window_frames"]
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise RunFolderError(config_path, "window_frames must be a positive integer")
    mean, std = _normalisation(config, config_path)
    n_features = spec.n_mfcc if stage == "mfcc" else spec.n_mels
    if mean.shape != (n_features,) or std.shape != (n_features,):
        per = "MFCC" if stage == "mfcc" else "mel band"
        raise RunFolderError(config_path, f"input_normalization needs {n_features} means and stds (one per {per})")
    hop = config.get("default_hop_seconds", DEFAULT_HOP_SECONDS)
    if not isinstance(hop, (int, float)) or isinstance(hop, bool) or not math.isfinite(hop) or hop <= 0:
        raise RunFolderError(config_path, "default_hop_seconds must be positive")
    hop_frames = config.get("hop_frames")
    if not isinstance(hop_frames, int) or isinstance(hop_frames, bool) or hop_frames < 1:
        hop_frames = frames_per_hop(spec, float(hop))
    return RunFolder(
        path=path,
        config=config,
        spec=spec,
        stage=str(stage),
        labels=list(labels),
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        window_frames=frames,
        hop_seconds=float(hop),
        hop_frames=hop_frames,
    )


def _normalisation(config: dict[str, Any], config_path: Path) -> tuple[np.ndarray, np.ndarray]:
    norm = config["input_normalization"]
    try:
        mean = np.asarray(norm["mean"], dtype=np.float64)
        std = np.asarray(norm["std"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise RunFolderError(config_path, "input_normalization needs numeric mean and std") from None
    return mean, std


def read_calibration(path: Path, window: tuple[int, int], n_labels: int) -> dict[str, np.ndarray]:
    """calibration.npz checked against the run: window shapes, finite floats, label indices in range."""
    if not path.is_file():
        raise RunFolderError(path, "missing (calibration windows written by `instrument-ai train`)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: np.asarray(archive[key]) for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise RunFolderError(path, f"not a readable .npz ({exc})") from None
    missing = [key for key in CALIBRATION_KEYS if key not in arrays]
    if missing:
        raise RunFolderError(path, f"no {', '.join(missing)}")
    for key in ("train_x", "valid_x"):
        x = arrays[key]
        if x.ndim != 3 or x.shape[1:] != window:
            raise RunFolderError(path, f"{key} has shape {x.shape}, expected (N, {window[0]}, {window[1]})")
        if x.shape[0] == 0:
            raise RunFolderError(path, f"{key} holds no windows")
        if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
            raise RunFolderError(path, f"{key} must be finite floats")
        arrays[key] = x.astype(np.float32)
    n_valid = arrays["valid_x"].shape[0]
    for key in ("valid_y", "valid_note", "train_y"):
        if key not in arrays:
            continue
        values = arrays[key]
        expected = arrays["train_x" if key == "train_y" else "valid_x"].shape[0]
        if values.shape != (expected,) or not np.issubdtype(values.dtype, np.integer):
            raise RunFolderError(path, f"{key} must be {expected} integers")
    y = arrays["valid_y"]
    if n_valid and (y.min() < 0 or y.max() >= n_labels):
        raise RunFolderError(path, f"valid_y has label indices outside 0..{n_labels - 1}")
    return arrays

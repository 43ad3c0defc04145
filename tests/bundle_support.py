"""Helpers of the bundle and convert tests: a tiny trained run and its conversion, and bundle edits.

Training, the TF import and each conversion cost seconds, so `artifacts` runs
once per test session (the session fixture ``art`` in conftest.py) and every
test file reuses the same artifacts. The run folder has the layout of
docs/INTERFACES.md "Training run folder": config.json, model.keras,
calibration.npz, metrics.json.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from instrument_ai.device import bundle as device_bundle
from instrument_ai.device.frontend import DEFAULT_SPEC

LABELS = ["bass", "brass", "flute"]
N_MFCC, FRAMES = DEFAULT_SPEC.n_mfcc, 59


def synthetic_windows(rng: np.random.Generator, n: int, n_labels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Raw-MFCC-like windows (dB scale, c0 around -300) whose class shows as a raised band of coefficients.

    Windows come in notes of 4 (as `write_run` numbers them), all four of one class.
    """
    y = np.repeat(rng.integers(0, n_labels, (n + 3) // 4), 4)[:n]
    x = rng.normal(size=(n, N_MFCC, FRAMES)).astype(np.float32) * 8.0
    x[:, 0] += -300.0
    for c in range(n_labels):
        x[y == c, 2 + 6 * c : 8 + 6 * c] += 30.0
    return x, y


def write_run(
    folder: Path,
    model: Any,
    train_x: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    *,
    labels: list[str] = LABELS,
    metrics: Any = None,
) -> Path:
    """A run folder as `instrument-ai train` writes it (windows of 4 share a note)."""
    folder.mkdir(parents=True, exist_ok=True)
    mean = train_x.mean(axis=(0, 2))
    std = train_x.std(axis=(0, 2))
    config = {
        "preset": "edge",
        "frontend_spec": DEFAULT_SPEC.to_dict(),
        "labels": labels,
        "input_normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "window_frames": FRAMES,
        "window_seconds": 1.0,
        "default_hop_seconds": 0.25,
        "seed": 7,
        "data": {"path": "/corpora/fake", "libraries": ["fake-gm", "fake-sfz"], "counts": {"train": len(train_x)}},
        "epochs": 4,
    }
    (folder / "config.json").write_text(json.dumps(config))
    model.save(folder / "model.keras")
    np.savez(
        folder / "calibration.npz",
        train_x=train_x,
        valid_x=valid_x,
        valid_y=valid_y,
        valid_note=np.arange(len(valid_y)) // 4,
    )
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def normalised(run: Path, x: np.ndarray) -> np.ndarray:
    norm = json.loads((run / "config.json").read_text())["input_normalization"]
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    return ((x - mean[:, None]) / std[:, None])[..., None]


def tiny_model(n_labels: int = 3) -> Any:
    import keras

    inputs = keras.Input((N_MFCC, FRAMES, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    h = keras.layers.AveragePooling2D(pool_size=(1, 29))(h)  # over time only: which coefficients are high
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(n_labels, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    return model


def degenerate_model(n_labels: int = 3) -> Any:
    """A model whose softmax is uniform up to ~1e-4: its int8 output (step 1/256) cannot keep Keras' argmax."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((N_MFCC, FRAMES, 1))
    h = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(n_labels, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.random.default_rng(3).normal(size=kernel.shape) * 1e-5, bias])
    return model


def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The trained tiny run, its int8 bundle (via the CLI) and the Keras model (conftest's ``art`` calls it once)."""
    import keras
    from click.testing import CliRunner

    from instrument_ai.convert.cli import convert

    keras.utils.set_random_seed(1)
    root = tmp_path_factory.mktemp("bundle_session")
    rng = np.random.default_rng(1)
    train_x, train_y = synthetic_windows(rng, 240)
    valid_x, valid_y = synthetic_windows(rng, 100)
    model = tiny_model()
    mean, std = train_x.mean(axis=(0, 2)), train_x.std(axis=(0, 2))
    model.fit(((train_x - mean[:, None]) / std[:, None])[..., None], train_y, epochs=4, batch_size=32, verbose=0)
    metrics = {"note_accuracy": 0.97, "per_family": {"bass": 1.0, "brass": 0.9}, "confusion": [[1, 0], [0, 1]]}
    run = write_run(root / "run", model, train_x, valid_x, valid_y, metrics=metrics)
    out = root / "models" / "tiny.tflite"
    result = CliRunner().invoke(convert, [str(run), "--out", str(out), "--name", "tiny", "--version", "1.2.3"])
    assert result.exit_code == 0, result.output
    return {
        "run": run,
        "bundle": out,
        "cli_output": result.output,
        "model": model,
        "valid_x": valid_x,
        "valid_y": valid_y,
        "root": root,
    }


def rewrite(source: Path, target: Path, mutate: Callable[[dict[str, Any]], None], **kwargs: Any) -> Path:
    """Write `source` again with edited metadata and fresh, valid digests (a consistent but wrong bundle)."""
    from instrument_ai.convert.bundle_writer import attach_metadata

    data = source.read_bytes()
    metadata = copy.deepcopy(device_bundle.read_metadata(source))
    mutate(metadata)
    target.write_bytes(attach_metadata(data, metadata, **kwargs))
    return target


def strip_metadata(data: bytes) -> bytes:
    """The bundle as a plain converter output: the instrument_ai entry removed, via the schema object API."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    model.metadata = [m for m in model.metadata if m.name not in (b"instrument_ai", "instrument_ai")]
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())

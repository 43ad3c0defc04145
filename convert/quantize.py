"""Post-training quantisation of a Keras model, and the rule that decides whether the int8 model may ship.

Full-integer quantisation (int8 weights, activations, input and output) makes
the model four times smaller and lets XNNPACK / the Pi's NEON kernels run it in
integer arithmetic; its risk is a model that quietly answers differently. So
every conversion is checked against the Keras model on the run's validation
windows, through the device code path, and refused when

* top-1 disagrees on more than `max_disagreement` (2 %) of the windows, or
* note accuracy (window probabilities averaged per note, then argmax) drops by
  more than `max_note_loss_points` (1 percentage point).

tensorflow is imported inside the functions only (this module is imported by
the `convert` command, whose `--help` must stay instant).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from instrument_ai.device.frontend import normalise_windows
from instrument_ai.device.native_stderr import quiet_native_stderr

MAX_DISAGREEMENT = 0.02
MAX_NOTE_LOSS_POINTS = 1.0


def normalise(windows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Raw MFCC windows (N, n_mfcc, frames) -> the model's float input (N, n_mfcc, frames, 1)."""
    return normalise_windows(windows, mean, std)[..., None]


def representative_windows(
    train_x: np.ndarray, *, limit: int = 500, seed: int = 0, train_y: np.ndarray | None = None
) -> np.ndarray:
    """Up to `limit` training windows for calibration, spread over the families when labels are known.

    With `train_y`, windows are taken round-robin over the classes (so a rare
    family still sets the activation ranges); otherwise a seeded shuffle.
    """
    rng = np.random.default_rng(seed)
    n = train_x.shape[0]
    if train_y is None or len(train_y) != n:
        order = rng.permutation(n)
    else:
        per_class = [rng.permutation(np.flatnonzero(train_y == c)) for c in np.unique(train_y)]
        order = np.array(
            [idx[i] for i in range(max(len(p) for p in per_class)) for idx in per_class if i < len(idx)], dtype=np.int64
        )
    return train_x[order[:limit]]


def _quiet_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def load_keras(path: str) -> Any:
    """The Keras model of a run (compile=False: only inference is needed)."""
    _quiet_tensorflow()
    import keras

    return keras.models.load_model(path, compile=False)


def to_tflite(model: Any, representative: np.ndarray | None, *, int8: bool = True) -> bytes:
    """Convert a Keras model: full-integer int8 (needs `representative`, normalised (N, ..., 1)) or float32."""
    tf = _quiet_tensorflow()
    import keras

    # A fixed batch of 1 (the device feeds one window per invoke): with a dynamic batch the converter
    # keeps SHAPE/STRIDED_SLICE/PACK ops to rebuild every Flatten/Reshape at run time.
    single = keras.Input(tuple(model.input_shape[1:]), batch_size=1)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(single, model(single)))
    if int8:
        if representative is None or len(representative) == 0:
            raise ValueError("int8 conversion needs representative windows")
        samples = representative.astype(np.float32)

        def dataset() -> Any:
            for i in range(samples.shape[0]):
                yield [samples[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # Keras' export prints every captured tensor to stdout and the converter's C++ core logs to
    # stderr: the CLI output stays ours (a failure still raises, with its message).
    with contextlib.redirect_stdout(io.StringIO()), quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(converter.convert())


def keras_probabilities(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float probabilities of a Keras model on normalised inputs (N, n_mfcc, frames, 1)."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


# -- the refusal rule (numpy only) -------------------------------------------------------------------


def note_accuracy(probs: np.ndarray, labels: np.ndarray, notes: np.ndarray | None) -> float:
    """Accuracy per note: window probabilities averaged over each note, argmax against the note's label."""
    if probs.shape[0] == 0:
        return float("nan")
    if notes is None:
        return float(np.mean(np.argmax(probs, axis=1) == labels))
    unique, inverse = np.unique(notes, return_inverse=True)
    sums = np.zeros((unique.size, probs.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, probs)
    note_labels = np.zeros(unique.size, dtype=np.int64)
    note_labels[inverse] = labels  # windows of one note share its label
    return float(np.mean(np.argmax(sums, axis=1) == note_labels))


@dataclass(frozen=True)
class AgreementReport:
    """How the converted model compares with the Keras model on the validation windows."""

    windows: int
    notes: int
    top1_disagreement: float
    keras_window_accuracy: float
    bundle_window_accuracy: float
    keras_note_accuracy: float
    bundle_note_accuracy: float
    note_accuracy_loss_points: float
    max_disagreement: float
    max_note_loss_points: float

    @property
    def refusal(self) -> str | None:
        """Why the model must not ship (one line), or None when it passes."""
        reasons = []
        if self.top1_disagreement > self.max_disagreement:
            reasons.append(
                f"top-1 disagrees with Keras on {100 * self.top1_disagreement:.2f} % of {self.windows} validation "
                f"windows (limit {100 * self.max_disagreement:g} %)"
            )
        if self.note_accuracy_loss_points > self.max_note_loss_points:
            reasons.append(
                f"note accuracy drops by {self.note_accuracy_loss_points:.2f} points "
                f"({100 * self.keras_note_accuracy:.2f} % -> {100 * self.bundle_note_accuracy:.2f} %, "
                f"limit {self.max_note_loss_points:g})"
            )
        return "; ".join(reasons) or None

    def to_dict(self) -> dict[str, Any]:
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in asdict(self).items()}


def check_agreement(
    keras_probs: np.ndarray,
    bundle_probs: np.ndarray,
    labels: np.ndarray,
    notes: np.ndarray | None = None,
    *,
    max_disagreement: float = MAX_DISAGREEMENT,
    max_note_loss_points: float = MAX_NOTE_LOSS_POINTS,
) -> AgreementReport:
    """Compare the two models' probabilities (N, n_labels) on the same windows."""
    if keras_probs.shape != bundle_probs.shape or keras_probs.shape[0] != len(labels):
        raise ValueError(f"shapes differ: keras {keras_probs.shape}, bundle {bundle_probs.shape}, {len(labels)} labels")
    if keras_probs.shape[0] == 0:
        raise ValueError("no validation windows to compare the models on")
    labels = np.asarray(labels, dtype=np.int64)
    notes = None if notes is None else np.asarray(notes)
    keras_top1 = np.argmax(keras_probs, axis=1)
    bundle_top1 = np.argmax(bundle_probs, axis=1)
    keras_notes = note_accuracy(keras_probs, labels, notes)
    bundle_notes = note_accuracy(bundle_probs, labels, notes)
    return AgreementReport(
        windows=int(keras_probs.shape[0]),
        notes=int(np.unique(notes).size if notes is not None else keras_probs.shape[0]),
        top1_disagreement=float(np.mean(keras_top1 != bundle_top1)),
        keras_window_accuracy=float(np.mean(keras_top1 == labels)),
        bundle_window_accuracy=float(np.mean(bundle_top1 == labels)),
        keras_note_accuracy=keras_notes,
        bundle_note_accuracy=bundle_notes,
        note_accuracy_loss_points=100.0 * (keras_notes - bundle_notes),
        max_disagreement=max_disagreement,
        max_note_loss_points=max_note_loss_points,
    )

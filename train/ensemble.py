"""Two trained runs as one model: their logits averaged, in one graph the device runs as any bundle.

Why: on the 4-group holdout the 2-D log-mel CNN and the wider edge fail on different sources (the log-mel CNN
loses the keyboards the edge names, the edge loses the brass and reeds the log-mel CNN names), and together they
fit the device budget (25.9 + 6.3 M multiply-adds of 40 M; about 560 KB int8 of 600). The device computes one
frontend output: the log-mel member takes it as it is, and an MFCC member gets its input inside the graph, as
the frontend's own DCT of the same log-mel (`frontend.dct_matrix`) folded with both members' input
normalisations into one fixed Dense layer. So `convert`, `evaluate` and the daemon need no change.

The result is a run folder (config.json, model.keras, metrics.json, calibration.npz) whose open-set temperature
and threshold are fitted again, on the log-mel member's validation windows (train/openset.py's rule); both
members must have been trained without the same sources (`experiment holdout`'s leak check reads the union).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.frontend import dct_matrix
from instrument_ai.train.run_folder import RunFolder, RunFolderError, read_run_folder

BASE_STAGE = "log_mel"
"""The frontend output the ensemble takes: the one every member's input can be computed from in the graph."""


class EnsembleError(InstrumentAIError):
    """Runs that cannot be joined (one line)."""


def _members(paths: list[Path]) -> list[RunFolder]:
    if len(paths) != 2:
        raise EnsembleError(f"an ensemble joins two runs, got {len(paths)}")
    runs = []
    for path in paths:
        try:
            run = read_run_folder(path)
        except RunFolderError as exc:
            raise EnsembleError(str(exc)) from None
        if run.status != "complete" or not run.model_path.is_file():
            raise EnsembleError(f"{path}: not a finished run (status {run.status}); finish or resume it first")
        runs.append(run)
    return runs


def check_members(runs: list[RunFolder]) -> tuple[RunFolder, RunFolder]:
    """(the log-mel member, the other one) when the two can share one frontend output; else EnsembleError."""
    a, b = runs
    if a.labels != b.labels:
        raise EnsembleError(f"{b.path}: its labels differ from {a.path}'s ({b.labels} against {a.labels})")
    for name in ("window_frames", "hop_frames"):
        if getattr(a, name) != getattr(b, name):
            raise EnsembleError(f"{b.path}: {name} {getattr(b, name)} differs from {a.path}'s {getattr(a, name)}")
    spec_a = {k: v for k, v in a.spec.to_dict().items() if k != "stage"}
    spec_b = {k: v for k, v in b.spec.to_dict().items() if k != "stage"}
    if spec_a != spec_b:
        differ = sorted(k for k in spec_a if spec_a[k] != spec_b.get(k))
        raise EnsembleError(f"{b.path}: its frontend differs from {a.path}'s ({', '.join(differ)})")
    if a.stage != BASE_STAGE:
        a, b = b, a
    if a.stage != BASE_STAGE or b.stage not in (BASE_STAGE, "mfcc"):
        raise EnsembleError(f"an ensemble needs a {BASE_STAGE} run and a {BASE_STAGE} or mfcc run, got "
                            f"{a.stage} and {b.stage}")  # fmt: skip
    return a, b


def input_transform(base: RunFolder, other: RunFolder) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (n_mels, n_out), bias (n_out,)) taking the base's normalised log-mel to the other's normalised input.

    log-mel = x * std + mean; the MFCC member's raw input is D @ log-mel (the frontend's DCT, the log-mel in its
    dB unit); then its own (raw - mean) / std. All linear, so one Dense layer per frame.
    """
    std_a = np.where(base.std > 0, base.std, 1.0).astype(np.float64)
    std_b = np.where(other.std > 0, other.std, 1.0).astype(np.float64)
    mean_a, mean_b = base.mean.astype(np.float64), other.mean.astype(np.float64)
    d = dct_matrix(other.spec).astype(np.float64) if other.stage == "mfcc" else np.eye(len(mean_a))
    kernel = (d * std_a[None, :]).T / std_b[None, :]
    bias = (d @ mean_a - mean_b) / std_b
    return kernel.astype(np.float32), bias.astype(np.float32)


def _head(model: Any, path: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """(the model up to its penultimate activations, final kernel, final bias); it must end in a softmax Dense."""
    import keras

    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if not isinstance(last, keras.layers.Dense) or activation != "softmax":
        raise EnsembleError(f"{path}: the model does not end in a softmax Dense layer; cannot join its logits")
    kernel, bias = last.get_weights()
    return keras.Model(model.inputs, last.input), kernel, bias


def combined_model(base: RunFolder, other: RunFolder, weight: float = 0.5) -> Any:
    """The Keras model: base's input -> softmax((1 - weight) * base's logits + weight * other's logits).

    Log-linear pooling (the weighted geometric mean of the probabilities, renormalised), written as one softmax
    Dense on both members' penultimate activations side by side (their final kernels stacked, scaled by the
    weights), so the bundle's embedding output (the input of its final dense layer) holds both members' views.
    """
    import importlib

    import keras

    importlib.import_module("instrument_ai.train.models")  # registers the trainer's custom layers
    layers = keras.layers
    body_a, kernel_a, bias_a = _head(base.load_model(), base.path)
    body_b, kernel_b, bias_b = _head(other.load_model(), other.path)
    body_a.name, body_b.name = "member_base", "member_other"  # nested model names must differ
    n_in, frames = len(base.mean), base.window_frames
    kernel, bias = input_transform(base, other)
    inputs = keras.Input((n_in, frames, 1), name="features")
    x = layers.Reshape((n_in, frames))(inputs)
    x = layers.Permute((2, 1))(x)
    to_other = layers.Dense(kernel.shape[1], trainable=False, name="member_input")
    x = to_other(x)
    to_other.set_weights([kernel, bias])
    x = layers.Permute((2, 1))(x)
    x = layers.Reshape((kernel.shape[1], frames, 1))(x)
    joined = layers.Concatenate(name="embedding")([body_a(inputs), body_b(x)])
    family = layers.Dense(kernel_a.shape[1], activation="softmax", name="family")
    out = family(joined)
    family.set_weights([np.concatenate([(1.0 - weight) * kernel_a, weight * kernel_b]).astype(np.float32),
                        ((1.0 - weight) * bias_a + weight * bias_b).astype(np.float32)])  # fmt: skip
    return keras.Model(inputs, out, name="ensemble")


def _validation(base: RunFolder, model: Any) -> dict[str, Any]:
    """Validation figures and a fresh open-set calibration on the base member's saved validation windows."""
    from instrument_ai.train.openset import calibrate
    from instrument_ai.train.windows import predict_windows, window_note_scores

    cal = base.calibration()
    if "valid_note" not in cal:
        raise EnsembleError(f"{base.path}/calibration.npz: no valid_note array (retrain with this version)")
    owner = cal["valid_note"].astype(np.int64)
    n_notes = int(owner.max()) + 1 if owner.size else 0
    note_y = np.zeros(n_notes, dtype=np.int64)
    note_y[owner] = cal["valid_y"]
    probs = predict_windows(model, base.normalize(cal["valid_x"]))
    scores = window_note_scores(probs, owner, note_y)
    open_set = calibrate(probs, owner, note_y, list(base.labels))
    return {"split": "valid (the log-mel member's calibration windows)", "note_accuracy": scores["note_accuracy"],
            "window_accuracy": scores["window_accuracy"], "n_notes": int(scores["has"].sum()),
            "n_windows": len(probs), "open_set": open_set.to_dict(),
            "other_output": "other" in base.labels}  # fmt: skip


def _config(base: RunFolder, other: RunFolder, summary: dict[str, int], weight: float) -> dict[str, Any]:
    config = json.loads(json.dumps(base.config))
    used = [r.config.get("data", {}).get("instruments", {}) for r in (base, other)]
    config["data"]["instruments"] = {
        part: sorted({i for u in used for i in u.get(part, [])}) for part in ("train", "valid")
    }
    config["preset"] = "ensemble"
    config["model"] = summary
    config["ensemble"] = {"members": [str(base.path.resolve()), str(other.path.resolve())],
                          "presets": [base.config.get("preset"), other.config.get("preset")],
                          "weights": [1.0 - weight, weight]}  # fmt: skip
    return config


def build_ensemble(paths: list[Path], out: Path, *, weight: float = 0.5) -> Path:
    """Write the ensemble run folder OUT (all or nothing: built beside it, then renamed into place)."""
    if not 0.0 < weight < 1.0:
        raise EnsembleError(f"the other member's weight must be in (0, 1), got {weight}")
    out = Path(out)
    if out.exists():
        raise EnsembleError(f"{out}: already exists (choose a new folder; a run folder is never overwritten)")
    base, other = check_members(_members(paths))
    from instrument_ai.train.models import model_summary
    from instrument_ai.train.trainer import write_json_atomic

    model = combined_model(base, other, weight)
    summary = model_summary(model)
    metrics = _validation(base, model)
    metrics["model"] = summary
    members = [r.read_json("metrics.json") or {} for r in (base, other)]
    # What it cost: both trainings (the lever table's minutes and epochs columns read these two fields).
    metrics["train_seconds"] = round(sum(float(m.get("train_seconds", 0.0)) for m in members), 1)
    metrics["epochs_run"] = "/".join(str(m.get("epochs_run", "?")) for m in members)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save(work / "model.keras")
        shutil.copyfile(base.path / "calibration.npz", work / "calibration.npz")
        write_json_atomic(work / "metrics.json", metrics)
        write_json_atomic(work / "config.json", _config(base, other, summary, weight))
        work.chmod(0o755)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


PROTOCOL_KEYS = ("data", "groups", "seed", "max_test_notes", "train_kinds")
"""holdout-settings.json fields two holdouts must share for their group runs to be joined."""


def _holdout_settings(folder: Path) -> dict[str, Any]:
    from instrument_ai.train.experiments.holdout import HoldoutError, read_holdout_settings

    try:
        return read_holdout_settings(folder)
    except HoldoutError as exc:
        raise EnsembleError(str(exc)) from None


def run_ensemble_holdout(members: list[Path], out: Path, *, weight: float = 0.5,
                         progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:  # fmt: skip
    """Join two holdouts of the same protocol group by group and test every fold on the joined model.

    Each group's ensemble is built from the two runs trained without that group's sources (the same relative
    folder in both holdouts), so every source is still tested only by models that never heard it; the folds
    are tested by `experiment holdout`'s own code, so every figure means what it means there. Resumes.
    """
    from instrument_ai.train.experiments.holdout import HoldoutConfig, HoldoutError, run_holdout

    if len(members) != 2:
        raise EnsembleError(f"an ensemble joins two holdouts, got {len(members)}")
    settings = [_holdout_settings(m) for m in members]
    for key in PROTOCOL_KEYS:
        if settings[0].get(key) != settings[1].get(key):
            raise EnsembleError(f"{members[1]}: its {key} ({settings[1].get(key)}) differs from {members[0]}'s "
                                f"({settings[0].get(key)}): not the same protocol")  # fmt: skip
    first = settings[0]
    cfg = HoldoutConfig(data=Path(first["data"]), out=Path(out), preset="ensemble", epochs=first.get("epochs"),
                        seed=int(first.get("seed", 0)), groups=first.get("groups"),
                        train_kinds=list(first.get("train_kinds") or []), max_test_notes=first.get("max_test_notes"),
                        overrides={"members": [str(Path(m).resolve()) for m in members], "weight": weight})  # fmt: skip

    def join(data: Path, run_dir: Path, **_: Any) -> Path:
        if (run_dir / "config.json").is_file():
            return run_dir  # built before (a folder appears only whole)
        relative = Path(run_dir).relative_to(cfg.out)
        try:
            return build_ensemble([Path(m) / relative for m in members], run_dir, weight=weight)
        except EnsembleError as exc:
            raise HoldoutError(str(exc)) from None

    return run_holdout(cfg, train_fn=join, progress=progress)

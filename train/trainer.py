"""Training a family classifier on an NSynth-format corpus, into a run folder.

The public API (used by `commands/train.py`, and by evaluation / experiments):

* `TrainConfig` (config.py) - every choice of a run; saved in config.json and read back by
  `TrainConfig.from_dict` (round trip), so ``train --resume`` continues the same run.
* `train_model(config) -> Path` - prepares the data (prepare.py: instrument-level splits,
  cached features), samples windows (windows.py), trains with checkpoints each epoch and early
  stopping on the validation notes, and writes the run folder (docs/INTERFACES.md "Training run folder").
* `load_run(rundir) -> Run` - config, labels, spec, normalisation, history and
  metrics of a run (read through run_folder.py), and its model on demand.

How a run sees the data, and why:

* **Instruments, not notes, are split**: a note goes where its instrument goes,
  so validation measures unseen instruments (what the product is judged by).
  The split comes from ``--split FILE``, else the corpus' splits.json, else an
  automatic instrument-level split (per family, `valid_fraction` of its
  instruments, at least one when it has two or more). splits.json's test
  instruments are never used, except with ``--holdout LIB``: then the held-out
  libraries are the test set, every other instrument not in "valid" trains.
* **A family with no example in a split is warned about and dropped**, never
  an error: valid notes of a family absent from training are removed (the
  model cannot name it); a family absent from validation is trained but not
  validated. Fewer than two trained families is an error.
* **Balanced sampling** (default): each batch draws families uniformly, then a
  note uniformly within the family, then a random rendition (clean or
  augmented) and a random window of it. Long sustained notes and crowded
  families do not dominate. ``balance="sqrt"`` or ``"none"`` soften it.
* **One feature store per corpus**: every usable note of the corpus is
  extracted once (clean + augmented renditions, features.py) and cached;
  splits, family filters and holdout folds are views of it, and validation
  uses its clean rendition. So the ten folds of leave-one-library-out and every
  rerun share one extraction.
* **One epoch = `windows_per_note` windows per training note**, all freshly
  cropped and feature-augmented (augment.py explains the split between cached
  audio renditions and per-batch feature augmentation).
* **Validation = the device's view**: every 1 s window every 0.25 s of each
  clean validation note above the silence gate; window accuracy, and note
  accuracy from the mean of a note's window probabilities. Early stopping and
  the best checkpoint follow `monitor` (default ``val_note_accuracy``).
* **Nothing written is ever half-written**: every file goes to a temporary
  name and is renamed into place. Ctrl-C keeps the last finished epoch's
  checkpoint (``checkpoints/last.keras`` + ``state.json``) and
  ``train --resume RUNDIR`` continues from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.frontend import normalise_windows
from instrument_ai.device.lifecycle import atomic_write_bytes
from instrument_ai.train.augment import band_to_feature_matrix
from instrument_ai.train.config import MONITORS, TrainConfig, TrainError, TrainingInterrupted, say
from instrument_ai.train.features import (
    FeatureCache,
    hop_frames,
    n_features,
    silence_frame,
    window_frames,
)
from instrument_ai.train.models import build_model, model_summary
from instrument_ai.train.prepare import PreparedData, prepare_data
from instrument_ai.train.run_folder import RunFolder, RunFolderError, read_run_folder
from instrument_ai.train.teacher import TeacherError, TeacherTargets, teacher_targets
from instrument_ai.train.windows import (
    WindowSampler,
    choose_onsets,
    cut_onsets,
    macro_f1,
    make_dataset,
    onset_window_accuracy,
    predict_windows,
    real_note_weights,
    subset_windows,
    window_note_scores,
)

log = logging.getLogger(__name__)

RUN_FORMAT = 1
TEACHER_FILE = "teacher.npz"
"""The distillation teacher's per-note targets, kept in the run folder so a resumed run keeps its teacher."""
FINAL_WINDOWS = 150_000
"""Validation windows scored at the end (all of them up to this many; ~1.4 GB of float32 at most)."""


# -- small atomic-writing helpers ---------------------------------------------------------------


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder and rename it over `path`."""
    atomic_write_bytes(path, json.dumps(data, indent=1, default=_json_default).encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_model_atomic(model: Any, path: Path) -> None:
    """model.save to a temporary .keras file, then rename (Keras insists on the suffix)."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.stem}.keras")
    model.save(tmp)
    os.replace(tmp, path)


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    tmp = _tmp_name(path)
    with tmp.open("wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


# -- the run ------------------------------------------------------------------------------------


def _activation_bytes(preset: str, batch_size: int, input_shape: tuple[int, int, int]) -> int:
    """Rough peak activation memory of a training step (forward + backward, float32)."""
    per_window = math.prod(input_shape) * 4
    widest = 32 if preset == "edge" else 16  # channels of the first layer
    return int(batch_size * per_window * widest * 6)


def _set_tf_threads() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # already initialised (e.g. a second run in one process)
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(2)


@contextlib.contextmanager
def _deferred_interrupt() -> Any:
    """Hold back SIGINT (Ctrl-C) for the duration of the block, then deliver it as KeyboardInterrupt."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _make_callbacks(
    keras: Any,
    run_dir: Path,
    state: dict[str, Any],
    config: TrainConfig,
    valid_x: np.ndarray,
    valid_owner: np.ndarray,
    valid_y: np.ndarray,
    sampler: WindowSampler,
) -> list[Any]:
    mode = MONITORS[config.monitor]
    checkpoints = run_dir / "checkpoints"

    class RunCallback(keras.callbacks.Callback):
        """Validation as the device sees it, history, best/last checkpoints, early stopping."""

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            sampler.epoch = epoch
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs if logs is not None else {}
            scores = window_note_scores(predict_windows(self.model, valid_x), valid_owner, valid_y)
            logs["val_loss"] = scores["loss"]
            logs["val_accuracy"] = scores["window_accuracy"]
            logs["val_note_accuracy"] = scores["note_accuracy"]
            seconds = time.perf_counter() - self._started
            with _deferred_interrupt():  # a Ctrl-C now waits until the epoch is fully on disk
                history = state["history"]
                for key, value in logs.items():
                    if isinstance(value, (int, float, np.floating)) or hasattr(value, "numpy"):
                        history.setdefault(key, []).append(float(value))
                history.setdefault("epoch_seconds", []).append(round(seconds, 2))
                state["train_seconds"] = float(state.get("train_seconds", 0.0)) + seconds
                value = float(logs[config.monitor])
                best = state.get("best")
                improved = best is None or (value > best if mode == "max" else value < best)
                if not improved and value == best and config.monitor != "val_loss":
                    # accuracies move in steps of 1/n on small validation sets: break ties on the loss
                    improved = scores["loss"] < float(state.get("best_loss", math.inf))
                if improved:
                    state.update(best=value, best_loss=scores["loss"], best_epoch=epoch + 1, wait=0)
                    save_model_atomic(self.model, run_dir / "model.keras")
                else:
                    state["wait"] = state.get("wait", 0) + 1
                state["epoch"] = epoch + 1
                if state["wait"] >= (config.patience or 1):
                    state["stopped"] = f"early stopping: no better {config.monitor} for {state['wait']} epochs"
                    self.model.stop_training = True
                elif config.max_minutes and state["train_seconds"] >= 60.0 * config.max_minutes:
                    state["stopped"] = f"time budget of {config.max_minutes:g} min reached"
                    self.model.stop_training = True
                save_model_atomic(self.model, checkpoints / "last.keras")
                write_json_atomic(run_dir / "history.json", history)
                write_json_atomic(checkpoints / "state.json", state)
            if config.verbose and not sys.stderr.isatty():
                print(
                    f"epoch {epoch + 1}/{config.epochs}: loss {logs.get('loss', float('nan')):.4f} "
                    f"val_loss {scores['loss']:.4f} val_window_acc {scores['window_accuracy']:.3f} "
                    f"val_note_acc {scores['note_accuracy']:.3f} ({seconds:.0f} s){' best' if improved else ''}",
                    file=sys.stderr,
                    flush=True,
                )
            if state.get("stopped") and config.verbose:
                print(f"stopped: {state['stopped']}", file=sys.stderr, flush=True)

    return [RunCallback()]


def _run_config(
    config: TrainConfig,
    prepared: PreparedData,
    mean: np.ndarray,
    std: np.ndarray,
    input_shape: tuple[int, int, int],
    summary: dict[str, int],
    status: str,
) -> dict[str, Any]:
    spec = config.spec()
    return {
        "format": RUN_FORMAT,
        "preset": config.preset,
        "frontend_spec": spec.to_dict(),
        "feature_stage": config.stage,
        "labels": prepared.labels,
        "input_normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "input_shape": list(input_shape),
        "window_frames": input_shape[1],
        "window_seconds": config.window_seconds,
        "default_hop_seconds": config.hop_seconds,
        "hop_frames": hop_frames(spec, config.hop_seconds),
        "silence_dbfs": config.silence_dbfs,
        "seed": config.seed,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "data": prepared.info,
        "model": summary,
        "augmentation": {
            "audio": config.audio_augment_settings().to_dict(),
            "feature": config.feature_augment_settings().to_dict(),
            "balance": config.balance,
            "mixup_alpha": config.mixup_alpha,
            "label_smoothing": config.label_smoothing,
        },
        "train_config": config.to_dict(),
        "status": status,
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise TrainError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if (out / "config.json").exists():
            raise TrainError(f"{out}: already holds a run; continue it with --resume {out} or choose another --out")
        raise TrainError(f"{out}: folder is not empty; choose a new or empty --out")


def train_model(config: TrainConfig, *, resume: bool = False, callbacks: Sequence[Any] | None = None) -> Path:
    """Train one run into `config.out` and return the run folder.

    With `resume`, `config` must be the one saved in the run (use
    `resume_config`) and training continues after the last checkpointed
    epoch. Extra Keras `callbacks` run after the run's own (so a checkpoint is
    on disk before they see the epoch). Raises `TrainError` (one-line message)
    for unusable input and `TrainingInterrupted` on Ctrl-C.
    """
    config = config.resolved()
    run_dir = Path(config.out)
    checkpoints = run_dir / "checkpoints"
    state: dict[str, Any] = {"epoch": 0, "best": None, "best_epoch": 0, "wait": 0, "history": {}}
    saved: dict[str, Any] | None = None
    if resume:
        saved = _read_json(run_dir / "config.json")
        if saved.get("status") == "complete":
            raise TrainError(f"{run_dir}: this run is complete; nothing to resume")
        if (checkpoints / "state.json").is_file():
            state = _read_json(checkpoints / "state.json")
    else:
        _check_out_dir(run_dir)
    started = time.perf_counter()
    prepared = prepare_data(config, labels=saved["labels"] if saved and saved.get("labels") else None)
    teacher = _teacher(config, prepared, run_dir, resume=resume)
    spec = config.spec()
    wf = window_frames(spec, config.window_seconds)
    input_shape = (n_features(spec, config.stage), wf, 1)
    n_classes = len(prepared.labels)
    batch_size = int(config.batch_size or 256)
    limit = int((config.max_memory_gb or 0) * 2**30) or int(0.6 * _available())
    need = _activation_bytes(config.preset, batch_size, input_shape)
    if need > limit:
        raise TrainError(
            f"batch size {batch_size} would need about {need / 2**30:.1f} GB of activations, over the "
            f"{limit / 2**30:.1f} GB limit; use a smaller --batch-size"
        )
    if saved is not None:
        mean = np.asarray(saved["input_normalization"]["mean"], dtype=np.float32)
        std = np.asarray(saved["input_normalization"]["std"], dtype=np.float32)
    else:
        mean, std = prepared.train.feature_stats()

    rng = np.random.default_rng([config.seed, 7])
    hop = hop_frames(spec, config.hop_seconds)
    valid_raw, valid_owner, valid_note_y = subset_windows(
        prepared.valid, hop, prepared.valid_y, config.max_valid_windows, rng
    )
    if len(valid_raw) == 0:
        raise TrainError("no validation windows above the silence gate")
    valid_x = normalise_windows(valid_raw, mean, std)

    _set_tf_threads()
    import keras

    keras.utils.set_random_seed(config.seed + int(state.get("epoch", 0)))
    steps = max(1, math.ceil(prepared.train.n_notes * config.windows_per_note / batch_size))
    feature_aug = config.feature_augment_settings()
    band = None
    if feature_aug.enabled and config.stage in ("mfcc", "log_mel"):
        band = band_to_feature_matrix(spec, config.stage).astype(np.float32)
    sampler = WindowSampler(
        prepared.train,
        prepared.train_y,
        n_classes,
        mean=mean,
        std=std,
        batch_size=batch_size,
        steps=steps,
        seed=config.seed,
        balance=config.balance,
        feature_augment=feature_aug,
        band_matrix=band,
        mixup_alpha=float(config.mixup_alpha or 0.0),
        onset_fraction=float(config.onset_fraction or 0.0),
        silence=silence_frame(spec, config.stage).astype(np.float32),
        note_weights=real_note_weights(prepared.train.notes, config.data, config.real_weight),
        note_targets=None if teacher is None else teacher.mixed(prepared.train_y, config.teacher_weight),
    )
    last = checkpoints / "last.keras"
    if resume and last.is_file():
        try:
            model = keras.models.load_model(last)
        except Exception as exc:  # keras raises many types for a damaged file
            raise TrainError(f"{last}: cannot load the checkpoint ({str(exc).splitlines()[0]})") from None
    else:
        state = {"epoch": 0, "best": None, "best_epoch": 0, "wait": 0, "history": {}}
        model = build_model(
            config.preset,
            n_classes,
            input_shape,
            learning_rate=config.learning_rate,
            label_smoothing=config.label_smoothing,
            steps_per_epoch=steps,
            epochs=config.epochs,
        )
    summary = model_summary(model)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.mkdir(exist_ok=True)
    if teacher is not None and not (run_dir / TEACHER_FILE).is_file():
        teacher.save(run_dir / TEACHER_FILE)
    run_config = _run_config(config, prepared, mean, std, input_shape, summary, "running")
    write_json_atomic(run_dir / "config.json", run_config)
    say(
        config,
        f"{config.preset}: {summary['params']} params, {summary['macs'] / 1e6:.2f} M MACs/window; "
        f"{prepared.train.n_notes} train notes, {prepared.valid.n_notes} valid notes ({len(valid_x)} windows); "
        f"{steps} steps/epoch",
    )
    initial_epoch = int(state.get("epoch", 0))
    stopped = bool(state.get("stopped")) or initial_epoch >= int(config.epochs or 1)
    if not stopped:
        run_callbacks = _make_callbacks(
            keras, run_dir, state, config, valid_x, valid_owner, valid_note_y, sampler
        ) + list(callbacks or [])
        verbose = 0 if not config.verbose else (1 if sys.stderr.isatty() else 0)
        try:
            model.fit(
                make_dataset(sampler),
                epochs=int(config.epochs or 1),
                initial_epoch=initial_epoch,
                callbacks=run_callbacks,
                verbose=verbose,
            )
        except KeyboardInterrupt:
            for leftover in [*run_dir.glob(".tmp-*"), *checkpoints.glob(".tmp-*")]:
                leftover.unlink(missing_ok=True)
            done = int(state.get("epoch", 0))
            write_json_atomic(
                run_dir / "config.json", _run_config(config, prepared, mean, std, input_shape, summary, "interrupted")
            )
            raise TrainingInterrupted(
                f"interrupted after epoch {done}/{config.epochs}; continue with: instrument-ai train --resume {run_dir}"
            ) from None
    _finish(config, run_dir, prepared, mean, std, input_shape, summary, state)
    say(config, f"run written to {run_dir} in {time.perf_counter() - started:.0f} s")
    return run_dir


def _teacher(config: TrainConfig, prepared: PreparedData, run_dir: Path, *, resume: bool) -> TeacherTargets | None:
    """The run's distillation teacher: the one saved in the run folder when resuming, else fitted out of fold
    on the training notes (only them: validation and held-out notes never reach it). None without a teacher."""
    if config.teacher is None:
        return None
    names = [n["note_str"] for n in prepared.train.notes]
    saved = run_dir / TEACHER_FILE
    try:
        if resume and saved.is_file():
            teacher = TeacherTargets.load(saved).aligned(names, len(prepared.labels))
        else:
            what = "" if config.teacher_file is None else " and AudioSet tags"
            say(config, f"teacher: gradient boosting on whole-note statistics{what} of {len(names)} training notes")
            teacher = teacher_targets(
                prepared.train,
                prepared.train_y,
                len(prepared.labels),
                stage=str(config.stage),
                spec=config.spec(),
                data=config.data,
                seed=config.seed,
                cache_root=FeatureCache(config.cache).root,
                audioset_file=None if config.teacher_file is None else Path(config.teacher_file),
            )
    except TeacherError as exc:
        raise TrainError(f"teacher: {exc}") from None
    prepared.info["teacher"] = {**teacher.info, "weight": config.teacher_weight, "file": TEACHER_FILE}
    accuracy = teacher.info.get("out_of_fold_note_accuracy")
    if accuracy is not None:
        say(config, f"teacher: out-of-fold note accuracy {100 * accuracy:.1f} % over {teacher.info['folds']} folds")
    return teacher


def _finish(
    config: TrainConfig,
    run_dir: Path,
    prepared: PreparedData,
    mean: np.ndarray,
    std: np.ndarray,
    input_shape: tuple[int, int, int],
    summary: dict[str, int],
    state: dict[str, Any],
) -> None:
    """Best model -> metrics.json (all validation windows), calibration.npz, curves PNG, report.md; complete."""
    import keras

    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    norm = functools.partial(normalise_windows, mean=mean, std=std)
    rng = np.random.default_rng([config.seed, 11])
    hop = hop_frames(config.spec(), config.hop_seconds)
    valid_raw, valid_owner, valid_note_y = subset_windows(prepared.valid, hop, prepared.valid_y, FINAL_WINDOWS, rng)
    valid_probs = predict_windows(model, norm(valid_raw))
    scores = window_note_scores(valid_probs, valid_owner, valid_note_y)
    train_raw, train_owner, train_note_y = subset_windows(prepared.train, hop, prepared.train_y, 4000, rng)
    train_scores = window_note_scores(predict_windows(model, norm(train_raw)), train_owner, train_note_y)
    has = scores["has"]
    onset_accuracy = onset_window_accuracy(
        lambda raw: predict_windows(model, norm(raw)),
        prepared.valid,
        prepared.valid_y,
        hop,
        silence_frame(config.spec(), config.stage),
        config.hop_seconds,
    )
    metrics = {
        "split": "valid",
        "note_accuracy": scores["note_accuracy"],
        "window_accuracy": scores["window_accuracy"],
        "macro_f1": macro_f1(scores["note_pred"][has], valid_note_y[has], len(prepared.labels)),
        "loss": scores["loss"],
        "n_notes": int(has.sum()),
        "n_windows": len(valid_raw),
        "per_family": {prepared.labels[k]: {"recall": v} for k, v in scores["recall"].items()},
        "onset_window_accuracy": onset_accuracy,
        "train_note_accuracy": train_scores["note_accuracy"],
        "train_window_accuracy": train_scores["window_accuracy"],
        "chance": 1.0 / len(prepared.labels),
        "best_epoch": int(state.get("best_epoch", 0)),
        "epochs_run": int(state.get("epoch", 0)),
        "stopped": state.get("stopped") or "all epochs run",
        "train_seconds": round(float(state.get("train_seconds", 0.0)), 1),
        "monitor": config.monitor,
        "model": summary,
    }
    from instrument_ai.train.openset import calibrate

    open_set = calibrate(valid_probs, valid_owner, valid_note_y, list(prepared.labels))
    for note in open_set.notes:
        say(config, note)
    metrics["other_output"] = "other" in prepared.labels
    if not metrics["other_output"]:
        metrics["other_note"] = f"no 'other' notes in the training corpus: {len(prepared.labels)} families trained"
    metrics["open_set"] = open_set.to_dict()
    write_json_atomic(run_dir / "metrics.json", metrics)
    _write_calibration(run_dir, config, prepared, valid_raw, valid_owner, valid_note_y)
    write_json_atomic(
        run_dir / "config.json", _run_config(config, prepared, mean, std, input_shape, summary, "complete")
    )
    try:
        from instrument_ai.train.experiments import report

        n = len(prepared.labels)
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (valid_note_y[has], scores["note_pred"][has]), 1)
        report.plot_confusion(
            matrix, prepared.labels, run_dir / "confusion_valid_notes.png", "Validation notes (unseen instruments)"
        )
        report.write_run_report(run_dir)
    except Exception as exc:  # a plotting failure must not lose a finished run
        log.warning("report: %s", exc)
        if config.verbose:
            print(f"warning: could not write the report ({str(exc).splitlines()[0]})", file=sys.stderr)


def _write_calibration(
    run_dir: Path,
    config: TrainConfig,
    prepared: PreparedData,
    valid_raw: np.ndarray,
    valid_owner: np.ndarray,
    valid_note_y: np.ndarray,
) -> None:
    """calibration.npz: raw training windows from every family (for the int8 representative dataset) and
    a subset of whole validation notes' windows with labels (to check int8 against float)."""
    rng = np.random.default_rng([config.seed, 13])
    n = config.calibration_windows
    labels = prepared.train_y
    per_family = max(1, n // max(1, len(prepared.labels)))
    chosen: list[int] = []
    for label in range(len(prepared.labels)):
        members = np.flatnonzero(labels == label)
        if members.size:
            chosen.extend(rng.choice(members, size=per_family, replace=members.size < per_family).tolist())
    chosen_notes = np.asarray(chosen, dtype=np.int64)
    starts = prepared.train.sample_starts(rng, chosen_notes)
    onset = choose_onsets(rng, prepared.train, chosen_notes, starts, float(config.onset_fraction or 0.0))
    train_x = prepared.train.gather(starts)
    # the int8 input range must cover the silence frames the device pads onset windows with
    cut_onsets(rng, train_x, onset, silence_frame(config.spec(), config.stage))
    keep_x, keep_owner, keep_y = valid_raw, valid_owner, valid_note_y
    if len(valid_raw) > config.calibration_valid_windows:
        per_note = np.bincount(valid_owner, minlength=len(valid_note_y))
        order = rng.permutation(len(valid_note_y))
        notes = np.sort(order[np.cumsum(per_note[order]) <= config.calibration_valid_windows])
        remap = np.full(len(valid_note_y), -1, dtype=np.int64)
        remap[notes] = np.arange(notes.size)
        mask = remap[valid_owner] >= 0
        keep_x, keep_owner, keep_y = valid_raw[mask], remap[valid_owner[mask]], valid_note_y[notes]
    save_npz_atomic(
        run_dir / "calibration.npz",
        train_x=train_x.astype(np.float32),
        train_y=np.asarray(labels[chosen], dtype=np.int64),
        valid_x=keep_x.astype(np.float32),
        valid_y=keep_y[keep_owner].astype(np.int64),
        valid_note=keep_owner.astype(np.int64),
    )


def _available() -> int:
    from instrument_ai.train.features import _available_memory

    return _available_memory()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainError(f"{path.parent}: not a training run (no {path.name})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise TrainError(f"{path}: expected a JSON object")
    return data


def resume_config(run_dir: str | Path, **overrides: Any) -> TrainConfig:
    """The TrainConfig saved in a run folder (for ``train --resume``), with optional overrides (e.g. jobs)."""
    run_dir = Path(run_dir)
    saved = _read_json(run_dir / "config.json")
    if "train_config" not in saved:
        raise TrainError(f"{run_dir}/config.json: no train_config (not written by instrument-ai train)")
    values = {**saved["train_config"], **{k: v for k, v in overrides.items() if v is not None}, "out": str(run_dir)}
    return TrainConfig.from_dict(values)


# -- reading a run ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Run(RunFolder):
    """A training run folder, read back: the checked config (`RunFolder`), its TrainConfig, history and metrics."""

    train_config: TrainConfig
    history: dict[str, list[float]]
    metrics: dict[str, Any]

    def predict(self, windows: np.ndarray, model: Any | None = None) -> np.ndarray:
        """Probabilities for raw windows (N, n_mfcc, window_frames)."""
        return predict_windows(model if model is not None else self.load_model(), self.normalize(windows))


def load_run(rundir: str | Path) -> Run:
    """Read a run folder written by `train_model` (raises TrainError with one line if it is not one)."""
    path = Path(rundir)
    if not path.is_dir():
        raise TrainError(f"{path}: no such run folder")
    config_path = path / "config.json"
    if not config_path.exists():
        raise TrainError(f"{path}: not a training run (no config.json)")
    try:
        folder = read_run_folder(path)
        history = folder.read_json("history.json") or {}
        metrics = folder.read_json("metrics.json") or {}
    except RunFolderError as exc:
        if exc.path == config_path:
            raise TrainError(f"{config_path}: unusable run config ({exc.detail})") from None
        raise TrainError(f"{exc.path}: unreadable ({exc.detail})") from None
    try:
        train_config = TrainConfig.from_dict(folder.config["train_config"])
    except KeyError as exc:
        raise TrainError(f"{config_path}: unusable run config ({exc})") from None
    parts = {f.name: getattr(folder, f.name) for f in dataclasses.fields(RunFolder)}
    return Run(**parts, train_config=train_config, history=history, metrics=metrics)


__all__ = [
    "Run",
    "TrainConfig",
    "TrainError",
    "TrainingInterrupted",
    "load_run",
    "prepare_data",
    "resume_config",
    "train_model",
]

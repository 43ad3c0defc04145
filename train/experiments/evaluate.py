"""Evaluate a Keras run or an int8 bundle on any NSynth-format folder.

A note is cut into model windows every `default_hop_seconds` (0.25 s), like
the device does while a note rings, windows below the device's silence gate
are dropped, and a note's prediction is the mean of its windows'
probabilities. A `.tflite` bundle is evaluated through the device code path
(the device frontend + `Bundle.predict_batch`, which normalises and quantises
inside), so the desktop figure is the figure a Raspberry Pi would give.

The scores are computed by `score` from plain arrays, so they are testable
without any model, and the same numbers feed `report.py`'s plots.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.frontend import FrontendSpec, log_mel, mel_power, mfcc, normalise_windows
from instrument_ai.device.labels import FAMILIES, OTHER, UNKNOWN
from instrument_ai.device.settings import DEFAULT_SETTINGS, FALLBACK_MIN_CONFIDENCE
from instrument_ai.train.run_folder import RunFolder, RunFolderError, read_run_folder

NSYNTH_SOURCES = ("acoustic", "electronic", "synthetic")
DEFAULT_SILENCE_DB = DEFAULT_SETTINGS.silence_db
"""Windows quieter than this (RMS, dBFS) are not classified, as on the device."""
STAGES: dict[str, Callable[[np.ndarray, FrontendSpec], np.ndarray]] = {
    "mfcc": mfcc,
    "log_mel": log_mel,
    "mel_power": mel_power,
}
"""Frontend outputs a run may be trained on (the trainer's `feature_stage`); a bundle's spec names its stage
(mfcc or log_mel)."""


class EvaluationError(InstrumentAIError):
    """A bad model, data folder or option; the message is one line for the user."""


# -- models -------------------------------------------------------------------------------------


@dataclass
class Predictor:
    """Anything that turns raw MFCC windows into label probabilities, plus what it was trained with."""

    name: str
    kind: str  # "keras" or "bundle"
    labels: list[str]
    spec: FrontendSpec
    window_frames: int
    hop_seconds: float
    predict: Callable[[np.ndarray], np.ndarray]  # (N, n_features, window_frames) raw -> (N, n_labels)
    info: dict[str, Any] = field(default_factory=dict)
    stage: str = "mfcc"
    silence_db: float | None = None  # the run's own silence gate, if it recorded one

    @property
    def hop_frames(self) -> int:
        """Frames between window starts (0.25 s -> 16 frames at 16 kHz / hop 256)."""
        return max(1, round(self.hop_seconds * self.spec.sample_rate / self.spec.hop_length))

    @property
    def window_samples(self) -> int:
        return self.spec.window_samples(self.window_frames)


def load_predictor(path: str | Path, *, batch_size: int = 256, personal: str | Path | None = None) -> Predictor:
    """A run folder, a model.keras (with config.json beside it) or a .tflite bundle -> Predictor.

    `personal`: a personal file (`instrument-ai enrol`) whose head is applied to a bundle's every window, as the
    device applies it at every sounding hop; a bundle only.
    """
    path = Path(path)
    if personal is not None and path.suffix != ".tflite":
        raise EvaluationError(f"--personal applies to a .tflite bundle, not to {path}")
    if not path.exists():
        raise EvaluationError(f"{path}: no such model (give a run folder, a model.keras or a .tflite bundle)")
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise EvaluationError(f"{path}: not a training run folder (no model.keras inside)")
        return _keras_predictor(path / "model.keras", batch_size)
    if path.suffix == ".keras":
        return _keras_predictor(path, batch_size)
    if path.suffix == ".tflite":
        return _bundle_predictor(path, None if personal is None else Path(personal))
    raise EvaluationError(f"{path}: unknown model type (expected a run folder, a .keras file or a .tflite bundle)")


def _read_run(run_dir: Path) -> RunFolder:
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise EvaluationError(f"{run_dir}: no config.json beside the model (it holds the frontend spec and labels)")
    try:
        return read_run_folder(run_dir)
    except RunFolderError as exc:
        raise EvaluationError(f"{config_path}: unusable run config ({exc.detail})") from None


def _keras_predictor(model_path: Path, batch_size: int) -> Predictor:
    run = _read_run(model_path.parent)
    config, spec, labels, window_frames, stage = run.config, run.spec, run.labels, run.window_frames, run.stage
    mean, std = run.mean, np.where(run.std > 0, run.std, 1.0).astype(np.float32)
    import importlib

    import keras

    # The trainer's custom layers (if any) register themselves when its module is imported.
    with contextlib.suppress(ImportError):
        importlib.import_module("instrument_ai.train.models")
    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # keras raises many types for a bad file
        raise EvaluationError(f"{model_path}: cannot load the Keras model ({_one_line(exc)})") from None
    want = (spec.n_mfcc if stage == "mfcc" else spec.n_mels, window_frames)
    got = tuple(model.input_shape[1:3]) if not isinstance(model.input_shape, list) else None
    if got != want:
        raise EvaluationError(f"{model_path}: the model takes inputs of {got}, config.json describes {want} windows")
    n_out = int(model.output_shape[-1])
    if n_out != len(labels):
        raise EvaluationError(
            f"{model_path}: model/label mismatch: the model has {n_out} outputs, config.json names {len(labels)} labels"
        )

    def predict(windows: np.ndarray) -> np.ndarray:
        x = normalise_windows(windows, mean, std)
        batches = (x[i : i + batch_size, ..., None] for i in range(0, len(x), batch_size))
        out = [keras.ops.convert_to_numpy(model(batch, training=False)) for batch in batches]
        return np.concatenate(out, axis=0) if out else np.zeros((0, len(labels)), np.float32)

    return Predictor(
        name=_run_name(model_path),
        kind="keras",
        labels=labels,
        spec=spec,
        window_frames=window_frames,
        hop_seconds=float(config.get("default_hop_seconds", 0.25)),
        predict=predict,
        info={"path": str(model_path), "preset": config.get("preset"), "stage": stage,
              **_run_open_set(model_path.parent)},  # fmt: skip
        stage=stage,
        silence_db=float(config["silence_dbfs"]) if "silence_dbfs" in config else None,
    )


def _bundle_open_set(bundle: Any) -> dict[str, Any]:
    meta = getattr(bundle, "metadata", None)
    return {"open_set": meta["open_set"]} if isinstance(meta, dict) and "open_set" in meta else {}


def _run_open_set(run_dir: Path) -> dict[str, Any]:
    """{"open_set": ...} from the run's metrics.json when its calibration set a rejection (train/openset.py)."""
    try:
        field = json.loads((run_dir / "metrics.json").read_text()).get("open_set", {}).get("bundle")
    except (OSError, ValueError, AttributeError):
        return {}
    return {"open_set": field} if isinstance(field, dict) else {}


def _run_name(model_path: Path) -> str:
    """A readable name for figures: the run folder, with its parent when the folder is just "run" (holdout folds)."""
    if model_path.name != "model.keras":
        return model_path.name
    run = model_path.resolve().parent
    return f"{run.parent.name}/{run.name}" if run.name == "run" else run.name


def _bundle_predictor(path: Path, personal: Path | None = None) -> Predictor:
    try:
        from instrument_ai.device import bundle as bundle_module
    except ImportError:
        raise EvaluationError("evaluating a .tflite bundle needs instrument_ai.device.bundle, not installed") from None
    try:
        bundle = bundle_module.load(path)
    except Exception as exc:  # BundleError carries a one-line message; anything else is made one
        raise EvaluationError(f"{path}: {_one_line(exc)}") from None
    info: dict[str, Any] = {}

    def predict(windows: np.ndarray) -> np.ndarray:
        return np.asarray(bundle.predict_batch(np.ascontiguousarray(windows, dtype=np.float32)))

    if personal is not None:
        from instrument_ai.device.enrol import head_for

        head = head_for(personal, bundle)  # a damaged or foreign file: its one line, exit 2
        info["personal"] = {**head.summary(), "path": str(personal)}
        plain = predict

        def predict(windows: np.ndarray) -> np.ndarray:  # the head at every window, as the device at every hop
            if head.descriptor == "embedding":  # one window at a time: the head needs each window's embedding
                adjusted = []
                for window in windows:
                    probs = bundle.predict(np.ascontiguousarray(window, dtype=np.float32))
                    adjusted.append(head.adjust(window, probs, bundle.last_embedding()))
                return np.stack(adjusted) if adjusted else plain(windows)
            probs = plain(windows)
            return np.stack([head.adjust(w, p) for w, p in zip(windows, probs, strict=True)]) if len(probs) else probs

    return Predictor(
        name=str(getattr(bundle, "name", path.stem)),
        kind="bundle",
        labels=list(bundle.labels),
        spec=bundle.spec,
        window_frames=int(bundle.window_frames),
        hop_seconds=float(bundle.default_hop_seconds),
        stage=bundle.spec.stage,  # what the bundle's model takes: MFCCs or log-mel bands
        predict=predict,
        info={"path": str(path), "runtime": getattr(bundle, "runtime", ""), "version": getattr(bundle, "version", ""),
              **_bundle_open_set(bundle), **info, **_bundle_rule(bundle)},  # fmt: skip
    )


def _bundle_rule(bundle: Any) -> dict[str, Any]:
    """The decision rule the bundle carries (`convert --decision/--min-confidence`), for `device_rule`."""
    rule = getattr(bundle, "engine_defaults", None)
    return {"engine_defaults": dict(rule)} if rule else {}


# -- data ---------------------------------------------------------------------------------------


@dataclass
class NoteRecord:
    """What scoring needs of a note (no audio)."""

    note_str: str
    instrument_str: str
    family_str: str
    source_str: str
    library: str = "nsynth"
    sounding_seconds: float | None = None  # how long the note sounds, when the corpus says (note-length buckets)


def split_instruments(data: str | Path, split: str) -> list[str]:
    """The instruments of one split from the corpus' splits.json (instrument-level splits)."""
    info = corpus(data)
    if info.splits is None:
        raise EvaluationError(
            f"{data}: no splits.json, so --split {split} cannot be used (run `instrument-ai data split`)"
        )
    if split not in info.splits:
        raise EvaluationError(f"{data}: no split named {split!r} in splits.json (has {', '.join(sorted(info.splits))})")
    return list(info.splits[split])


def corpus(data: str | Path) -> Any:
    """The corpus' CorpusInfo (instruments.json, splits.json) with errors made one-line."""
    from instrument_ai.train.corpus.info import corpus_info
    from instrument_ai.train.corpus.nsynth import DataError

    try:
        return corpus_info(data)
    except DataError as exc:
        raise EvaluationError(str(exc)) from None


def instrument_libraries(data: str | Path) -> dict[str, str]:
    """instrument_str -> library from the corpus' instruments.json ({} for plain NSynth)."""
    return {name: row.library for name, row in corpus(data).instruments.items()}


def iter_corpus(
    data: str | Path,
    *,
    instruments: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    limit: int | None = None,
    audio: str = "load",
    sample_rate: int | None = None,
    report: Any = None,
) -> Iterator[Any]:
    """Notes of an NSynth-format folder through the data module, with data errors made one-line.

    Any note length is accepted (`evaluate` reads any NSynth-format folder);
    with `sample_rate`, notes at another rate are skipped and counted in `report`.
    """
    from instrument_ai.train.corpus import nsynth as data_module

    path = Path(data)
    if not path.exists():
        raise EvaluationError(f"{path}: no such data folder")
    kwargs: dict[str, Any] = {"audio": audio, "sample_rate": sample_rate, "num_samples": None}
    if instruments is not None:
        kwargs["instruments"] = list(instruments)
    if families is not None:
        kwargs["families"] = list(families)
    if report is not None:
        kwargs["report"] = report
    count = 0
    try:
        for note in data_module.iter_notes(path, **kwargs):
            yield note
            count += 1
            if limit is not None and count >= limit:
                return
    except data_module.DataError as exc:
        raise EvaluationError(str(exc)) from None


def note_audio(note: Any) -> np.ndarray:
    """A note's samples (Note.audio if given, else loaded)."""
    audio = getattr(note, "audio", None)
    if audio is None:
        audio = note.load_audio()
    return np.asarray(audio, dtype=np.float32)


# -- features -----------------------------------------------------------------------------------


def window_starts(n_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """First frame of each model window in a note of `n_frames` frames (at least one window)."""
    if n_frames <= window_frames:
        return [0]
    return list(range(0, n_frames - window_frames + 1, hop_frames))


def note_features(
    audio: np.ndarray, predictor: Predictor, silence_db: float = DEFAULT_SILENCE_DB
) -> tuple[np.ndarray, np.ndarray]:
    """Raw MFCC windows of one note (N, n_mfcc, window_frames) and a mask of those above the silence gate.

    A note shorter than one window is zero-padded at the end (the device hears
    silence after it).
    """
    spec = predictor.spec
    need = predictor.window_samples
    if audio.size < need:
        audio = np.concatenate([audio, np.zeros(need - audio.size, dtype=audio.dtype)])
    coefficients = STAGES[predictor.stage](audio, spec)
    starts = window_starts(coefficients.shape[1], predictor.window_frames, predictor.hop_frames)
    windows = np.stack([coefficients[:, s : s + predictor.window_frames] for s in starts]).astype(np.float32)
    loud = np.empty(len(starts), dtype=bool)
    for i, s in enumerate(starts):
        chunk = audio[s * spec.hop_length : s * spec.hop_length + need].astype(np.float64)
        rms = math.sqrt(float(np.mean(chunk * chunk))) if chunk.size else 0.0
        loud[i] = 20 * math.log10(max(rms, 1e-12)) >= silence_db
    return windows, loud


@dataclass
class Predictions:
    """Window probabilities of a set of notes, forward and time-reversed."""

    labels: list[str]
    notes: list[NoteRecord]
    probs: np.ndarray  # (N, n_labels)
    probs_reversed: np.ndarray  # (N, n_labels)
    window_note: np.ndarray  # (N,) index into notes
    silent_notes: list[str]


def predict_notes(
    predictor: Predictor,
    notes: Iterable[Any],
    *,
    libraries: dict[str, str] | None = None,
    silence_db: float = DEFAULT_SILENCE_DB,
    reversed_test: bool = True,
    chunk_notes: int = 128,
    progress: Callable[[int], None] | None = None,
) -> Predictions:
    """Run the predictor over every window of every note, in chunks so memory stays bounded."""
    libraries = libraries or {}
    records: list[NoteRecord] = []
    silent: list[str] = []
    probs: list[np.ndarray] = []
    probs_rev: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    pending_owner: list[int] = []

    def flush() -> None:
        if not pending:
            return
        batch = np.concatenate(pending, axis=0)
        probs.append(_check_probs(predictor.predict(batch), len(batch), predictor))
        if reversed_test:
            probs_rev.append(
                _check_probs(predictor.predict(np.ascontiguousarray(batch[:, :, ::-1])), len(batch), predictor)
            )
        owners.append(np.asarray(pending_owner, dtype=np.int64))
        pending.clear()
        pending_owner.clear()

    n_seen = 0
    for note in notes:
        rate = int(getattr(note, "sample_rate", predictor.spec.sample_rate))
        if rate != predictor.spec.sample_rate:
            raise EvaluationError(
                f"note {note.note_str}: {rate} Hz audio, the model's frontend expects {predictor.spec.sample_rate} Hz"
            )
        windows, loud = note_features(note_audio(note), predictor, silence_db)
        n_seen += 1
        if progress:
            progress(n_seen)
        if not loud.any():
            silent.append(note.note_str)
            continue
        index = len(records)
        records.append(
            NoteRecord(
                note.note_str,
                note.instrument_str,
                note.family_str,
                note.source_str,
                libraries.get(note.instrument_str, "nsynth"),
                getattr(note, "sounding_seconds", None),
            )  # fmt: skip
        )
        pending.append(windows[loud])
        pending_owner.extend([index] * int(loud.sum()))
        if len(pending) >= chunk_notes:
            flush()
    flush()
    n_labels = len(predictor.labels)
    empty = np.zeros((0, n_labels), np.float32)
    return Predictions(
        labels=list(predictor.labels),
        notes=records,
        probs=np.concatenate(probs) if probs else empty,
        probs_reversed=np.concatenate(probs_rev) if probs_rev else empty,
        window_note=np.concatenate(owners) if owners else np.zeros(0, np.int64),
        silent_notes=silent,
    )


def _check_probs(out: np.ndarray, n: int, predictor: Predictor) -> np.ndarray:
    out = np.asarray(out, dtype=np.float32)
    if out.shape != (n, len(predictor.labels)):
        raise EvaluationError(
            f"model/label mismatch: model returned shape {out.shape}, expected ({n}, {len(predictor.labels)})"
        )
    return out


# -- scoring ------------------------------------------------------------------------------------


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1 for integer labels.

    Macro-F1 averages over the classes present in `y_true`: a family missing
    from the evaluated data has no recall to measure (sklearn would count it as
    F1 = 0 whenever the model predicts it).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = len(labels)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / max(1, len(y_true))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            labels[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }  # fmt: skip
            for i in range(n)
            if support[i] > 0 or predicted[i] > 0
        },
        "confusion": cm,
    }


def note_probabilities(probs: np.ndarray, window_note: np.ndarray, n_notes: int) -> np.ndarray:
    """Mean window probabilities per note: (n_notes, n_labels)."""
    sums = np.zeros((n_notes, probs.shape[1]), dtype=np.float64)
    np.add.at(sums, window_note, probs)
    counts = np.bincount(window_note, minlength=n_notes).astype(np.float64)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


DEVICE_SMOOTH = DEFAULT_SETTINGS.smooth
DEVICE_MIN_CONFIDENCE = FALLBACK_MIN_CONFIDENCE
"""`instrument-ai run`'s defaults (--smooth, --min-confidence) for a model that names no rule of its own."""


def device_rule(engine_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """How the daemon decides with this model: a bundle's own rule (`engine_defaults`), else the fallbacks - so
    the "as the daemon decides" figures are the daemon's for every bundle."""
    resolved = DEFAULT_SETTINGS.resolved(engine_defaults or {})
    rule: dict[str, Any] = {"smooth": DEVICE_SMOOTH, "min_confidence": resolved.floor,
                            "decision": str(resolved.decision)}  # fmt: skip
    if resolved.answer_hop > 1:  # named only where a note waits, as `Classifier.decision_info` does
        rule["first_answer_hop"] = resolved.answer_hop
    return rule


def _rule_labels(pred: Predictions, open_set: dict[str, Any] | None, rule: dict[str, Any]) -> list[str]:
    return hop_labels(pred, open_set, rule["min_confidence"], rule["smooth"], rule["decision"],
                      rule.get("first_answer_hop", 1))  # fmt: skip


def hop_labels(pred: Predictions, open_set: dict[str, Any] | None = None, min_confidence: float = 0.0,
               smooth: int = 1, decision: str = "hops", first_answer_hop: int = 1) -> list[str]:  # fmt: skip
    """The label the device would give each window (`device.decision.decide_labels`, the engine's rule).

    With `smooth` > 1 each window's probabilities are averaged with the previous ones of its note (at most
    `smooth`), and `min_confidence` applies to that average, as the engine does per hop. With `decision`
    ``"note"``, each window is decided on its note's windows so far (`decide_note_labels`; a note is one onset).
    """
    from instrument_ai.device.decision import decide_labels, decide_note_labels
    from instrument_ai.device.openset import rejection_from_metadata

    rejection = rejection_from_metadata({"open_set": open_set} if open_set else None)
    if not len(pred.probs):
        return []
    if decision == "note":
        starts = np.concatenate(([True], pred.window_note[1:] != pred.window_note[:-1]))
        return decide_note_labels(pred.probs, starts, pred.labels, min_confidence=min_confidence, rejection=rejection,
                                  first_answer_hop=first_answer_hop)  # fmt: skip
    probs = pred.probs
    if smooth > 1:
        probs = np.empty_like(pred.probs)
        for k in range(len(pred.probs)):
            first = k
            while first > 0 and k - first + 1 < smooth and pred.window_note[first - 1] == pred.window_note[k]:
                first -= 1
            probs[k] = pred.probs[first : k + 1].mean(axis=0)
    return decide_labels(probs, pred.labels, min_confidence=min_confidence, rejection=rejection)


def device_other_figures(pred: Predictions, chosen: np.ndarray, open_set: dict[str, Any] | None,
                         hop_seconds: float, rule: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The `other` figures two ways: as the daemon decides (smoothing, min confidence; the headline) and per
    raw window (`raw`: top class of each window alone, only the open-set threshold)."""
    from instrument_ai.train.corpus.kinds import other_figures

    def figures(hops: list[str]) -> dict[str, Any]:
        return other_figures([h for h, c in zip(hops, chosen, strict=True) if c], pred.window_note[chosen],
                             hop_seconds)  # fmt: skip

    rule = rule or device_rule()
    device = figures(_rule_labels(pred, open_set, rule))
    device["decided_as"] = dict(rule)
    device["raw"] = figures(hop_labels(pred, open_set))
    return device


def note_length_and_lost_figures(pred: Predictions, note_probs: np.ndarray, group_scores: Callable[[list[str]], Any],
                                 open_set: dict[str, Any] | None, rule: dict[str, Any] | None = None
                                 ) -> dict[str, Any]:  # fmt: skip
    """Issue 23's reporting: accuracy by the four note lengths (`per_note_length`), and the instrument notes lost
    to ``other`` or rejected (``unknown``) as the daemon decides (`lost`): per note (its mean probabilities) and
    per hop (smoothing and floor of `EngineSettings()`)."""
    from instrument_ai.device.decision import decide_labels
    from instrument_ai.device.openset import rejection_from_metadata
    from instrument_ai.train.corpus.kinds import note_length_bucket

    lengths = [note_length_bucket(r.sounding_seconds) for r in pred.notes]
    out: dict[str, Any] = {"per_note_length": group_scores(lengths)}
    instrument = np.array([r.family_str in pred.labels and r.family_str != OTHER for r in pred.notes], dtype=bool)
    if not instrument.any():
        return out
    rule = rule or device_rule()
    rejection = rejection_from_metadata({"open_set": open_set} if open_set else None)
    notes = decide_labels(note_probs[instrument], pred.labels, min_confidence=rule["min_confidence"],
                          rejection=rejection)  # fmt: skip
    window_chosen = instrument[pred.window_note] if len(pred.window_note) else np.zeros(0, bool)
    hops = [h for h, c in zip(_rule_labels(pred, open_set, rule), window_chosen, strict=True) if c]

    def shares(labels: list[str]) -> dict[str, Any]:
        n = len(labels)
        other, unknown = labels.count(OTHER), labels.count(UNKNOWN)
        return {"n": n, "other": other / n if n else None, "unknown": unknown / n if n else None,
                "lost": (other + unknown) / n if n else None}  # fmt: skip

    out["lost"] = {"notes": shares(notes), "hops": shares(hops), "decided_as": dict(rule)}
    return out


def score(pred: Predictions, *, open_set: dict[str, Any] | None = None, hop_seconds: float = 0.25,
          rule: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every figure `evaluate` reports, from predictions (no model needed).

    Notes of family `other` (or of no instrument the model knows, when it has no `other` output and
    `other_clips` asks for it) also give the `other` figures: share of hops named an instrument and false
    instrument events per minute, with the model's open-set threshold applied as on the device.
    """
    labels = pred.labels
    index = {name: i for i, name in enumerate(labels)}
    n_notes_all = len(pred.notes)
    note_probs = note_probabilities(pred.probs, pred.window_note, n_notes_all)
    note_pred = note_probs.argmax(axis=1) if n_notes_all else np.zeros(0, np.int64)
    known = np.array([r.family_str in index for r in pred.notes], dtype=bool)
    note_true = np.array([index.get(r.family_str, -1) for r in pred.notes], dtype=np.int64)
    win_known = known[pred.window_note] if len(pred.window_note) else np.zeros(0, bool)
    win_true = note_true[pred.window_note] if len(pred.window_note) else np.zeros(0, np.int64)
    win_pred = pred.probs.argmax(axis=1) if len(pred.probs) else np.zeros(0, np.int64)

    notes_s = classification_scores(note_true[known], note_pred[known], labels)
    windows_s = classification_scores(win_true[win_known], win_pred[win_known], labels)
    result: dict[str, Any] = {
        "labels": list(labels),
        "n_notes": int(known.sum()),
        "n_windows": int(win_known.sum()),
        "chance": 1.0 / max(1, len(labels)),
        "note_accuracy": notes_s["accuracy"],
        "window_accuracy": windows_s["accuracy"],
        "macro_f1": notes_s["macro_f1"],
        "note_macro_f1": notes_s["macro_f1"],
        "window_macro_f1": windows_s["macro_f1"],
        "per_family": {},
        "per_source": {},
        "per_library": {},
        "unknown_labels": {},
        "n_silent_notes": len(pred.silent_notes),
        "confusion_notes": notes_s["confusion"].tolist(),
        "confusion_windows": windows_s["confusion"].tolist(),
    }
    for name, entry in notes_s["per_class"].items():
        window_entry = windows_s["per_class"].get(name, {})
        result["per_family"][name] = {**entry, "window_recall": window_entry.get("recall", 0.0)}

    def group_scores(keys: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        keys_arr = np.array(keys, dtype=object)
        for key in sorted(set(keys)):
            m = known & (keys_arr == key)
            if not m.any():
                continue
            wm = win_known & m[pred.window_note]
            out[key] = {
                "n_notes": int(m.sum()),
                "note_accuracy": float((note_pred[m] == note_true[m]).mean()),
                "window_accuracy": float((win_pred[wm] == win_true[wm]).mean()) if wm.any() else None,
                "macro_f1": classification_scores(note_true[m], note_pred[m], labels)["macro_f1"],
            }
        return out

    result["per_source"] = group_scores([r.source_str for r in pred.notes])
    result["per_library"] = group_scores([r.library for r in pred.notes])
    from instrument_ai.train.corpus.kinds import length_bucket

    result["per_length"] = group_scores([length_bucket(r.sounding_seconds) for r in pred.notes])
    result.update(note_length_and_lost_figures(pred, note_probs, group_scores, open_set, rule))
    other_notes = np.array([r.family_str == OTHER for r in pred.notes], dtype=bool)
    if other_notes.any() and len(pred.window_note):
        chosen = other_notes[pred.window_note]
        result["other"] = device_other_figures(pred, chosen, open_set, hop_seconds, rule)
        result["other"]["n_clips"] = int(other_notes.sum())
        result["other"]["open_set"] = open_set

    for family in sorted({r.family_str for r in pred.notes if r.family_str not in index}):
        mask = np.array([r.family_str == family for r in pred.notes])
        counts = Counter(labels[i] for i in note_pred[mask])
        result["unknown_labels"][family] = {"n_notes": int(mask.sum()), "predicted_as": dict(counts.most_common())}

    if len(pred.probs_reversed):
        rev_note = note_probabilities(pred.probs_reversed, pred.window_note, n_notes_all).argmax(axis=1)
        rev_win = pred.probs_reversed.argmax(axis=1)
        rev_notes_s = classification_scores(note_true[known], rev_note[known], labels)
        result["reversed"] = {
            "note_accuracy": rev_notes_s["accuracy"],
            "window_accuracy": float((rev_win[win_known] == win_true[win_known]).mean()) if win_known.any() else 0.0,
            "macro_f1": rev_notes_s["macro_f1"],
        }
    return result


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


@dataclass
class _Clip:
    note_str: str
    instrument_str: str
    audio: np.ndarray
    sample_rate: int
    family_str: str = OTHER
    source_str: str = "acoustic"
    sounding_seconds: float | None = None


def other_folder_clips(folder: str | Path, sample_rate: int) -> list[_Clip]:
    """Every audio file under `folder` as an `other` clip (mono, resampled to the model's rate)."""
    import soundfile

    from instrument_ai.device.resample import resample

    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: no such folder of non-instrument audio")
    clips = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        try:
            audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as exc:
            raise EvaluationError(f"{path}: cannot read ({_one_line(exc)})") from None
        mono = audio.mean(axis=1)
        if rate != sample_rate:
            mono = resample(mono, int(rate), sample_rate).astype(np.float32)
        name = str(path.relative_to(folder))
        clips.append(_Clip(note_str=name, instrument_str=f"other-folder:{name}", audio=mono, sample_rate=sample_rate))
    if not clips:
        raise EvaluationError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return clips


def evaluate_other_folder(predictor: Predictor, folder: str | Path, silence_db: float | None = None) -> dict[str, Any]:
    """The `other` figures (hops named an instrument, false events per minute) on a folder of non-instrument audio.

    Silent hops (below the gate) count as hops that name nothing, as on the device.
    """
    gate = DEFAULT_SILENCE_DB if silence_db is None else silence_db
    clips = other_folder_clips(folder, predictor.spec.sample_rate)
    pred = predict_notes(predictor, clips, silence_db=gate, reversed_test=False)
    from instrument_ai.train.corpus.kinds import other_figures

    if len(pred.probs):
        everything = np.ones(len(pred.window_note), dtype=bool)
        figures = device_other_figures(pred, everything, predictor.info.get("open_set"), predictor.hop_seconds,
                                       device_rule(predictor.info.get("engine_defaults")))
    else:
        figures = other_figures([], [], 1)
    figures.update(n_clips=len(clips), n_silent_clips=len(pred.silent_notes), folder=str(folder),
                   open_set=predictor.info.get("open_set"))  # fmt: skip
    return figures


def check_labels(predictor_labels: Sequence[str], data_families: Iterable[str]) -> None:
    """Refuse a model whose labels are not NSynth families, or that shares no family with the data."""
    foreign = [x for x in predictor_labels if x not in (*FAMILIES, OTHER)]
    if foreign:
        raise EvaluationError(
            f"model/data label mismatch: the model's labels {', '.join(foreign)} are not NSynth family names"
        )
    families = sorted(set(data_families) - {OTHER})  # `other` audio is scored by its own figures, by any model
    if families and not set(families) & set(predictor_labels):
        raise EvaluationError(
            f"model/data label mismatch: the model knows {', '.join(predictor_labels)}; "
            f"the data has only {', '.join(families)}"
        )


# -- the whole evaluation ---------------------------------------------------------------------------


def evaluate(
    model: str | Path | Predictor,
    data: str | Path,
    *,
    split: str | None = None,
    instruments: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    limit: int | None = None,
    notes_only: Collection[str] | None = None,
    silence_db: float | None = None,
    title: str | None = None,
    progress: Callable[[int], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a model on an NSynth json/wav folder, a .tfrecord file or a folder of them.

    Writes figures, evaluation.json and report.md into `out_dir` (if given). `notes_only`: score only the
    notes of these note_strs (a fixed sample, e.g. the lever screen's).
    """
    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    check_labels(predictor.labels, [])
    if silence_db is None:
        silence_db = DEFAULT_SILENCE_DB if predictor.silence_db is None else predictor.silence_db
    data = Path(data)
    if not data.exists():
        raise EvaluationError(f"{data}: no such data folder")
    if instruments is None and split:
        if not data.is_dir():
            raise EvaluationError(f"{data}: --split needs a corpus folder with splits.json, not a single file")
        instruments = split_instruments(data, split)
    from instrument_ai.train.corpus.nsynth import ReadReport

    read_report = ReadReport()
    notes = iter_corpus(data, instruments=instruments, limit=limit, sample_rate=predictor.spec.sample_rate,
                        report=read_report)  # fmt: skip
    if notes_only is not None:
        wanted = set(notes_only)
        notes = (note for note in notes if note.note_str in wanted)
    first = next(notes, None)
    if first is None:
        where = f" in split {split!r}" if split else " for those instruments" if instruments is not None else ""
        raise EvaluationError(f"{data}: no notes found{where} ({read_report.summary()})")

    def chained() -> Iterator[Any]:
        yield first
        yield from notes

    libraries = instrument_libraries(data) if data.is_dir() else {}  # a .tfrecord file has no instruments.json
    pred = predict_notes(predictor, chained(), libraries=libraries, silence_db=silence_db,
                         progress=progress)  # fmt: skip
    check_labels(predictor.labels, [r.family_str for r in pred.notes])
    if not pred.notes:
        raise EvaluationError(f"{data}: every note is below the silence gate ({silence_db} dBFS)")
    result = score(pred, open_set=predictor.info.get("open_set"), hop_seconds=predictor.hop_seconds,
                   rule=device_rule(predictor.info.get("engine_defaults")))
    result.update(
        model={"name": predictor.name, "kind": predictor.kind, **predictor.info},
        data=str(data),
        split=split,
        read=read_report.to_dict(),
        hop_frames=predictor.hop_frames,
        window_frames=predictor.window_frames,
        silence_db=silence_db,
        **(extra or {}),
    )
    if out_dir is not None:
        write_outputs(result, out_dir, title=title or f"Evaluation of {predictor.name} on {data.name}")
    if json_path is not None:
        _write_json(json_path, result)
    return result


def write_outputs(result: dict[str, Any], out_dir: str | Path, title: str) -> None:
    """Confusion matrices, per-source chart, evaluation.json and report.md."""
    from instrument_ai.train.experiments import report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = result["labels"]
    figures = [
        report.plot_confusion(np.asarray(result["confusion_notes"]), labels, out / "confusion.png",
                              f"{title}\nper note (row-normalised, %)"),
        report.plot_confusion(np.asarray(result["confusion_windows"]), labels, out / "confusion_windows.png",
                              f"{title}\nper window (row-normalised, %)"),
    ]  # fmt: skip
    if result["per_source"]:
        figures.append(report.plot_per_source(result["per_source"], out / "per_source.png"))
    result["figures"] = [f.name for f in figures]
    _write_json(out / "evaluation.json", result)
    report.write_markdown(out / "report.md", title, report.evaluation_sections(result, out))


def _write_json(path: str | Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

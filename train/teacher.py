"""A teacher for distillation: gradient boosting on whole-note statistics, out of fold over training sources.

Why it looks like this:

* **Whole notes, not windows.** On held-out sources a HistGradientBoostingClassifier on a few statistics of
  each whole note beat the edge CNN by 6-17 points on two folds (issue 23): it decides on the whole note, the
  CNN on 1 s windows. Distillation hands that whole-note view to every window of the note.
* **The device frontend's numbers, from the run's own feature store.** A note's statistics are computed from
  its clean rendition (rendition 0) in the cached store the trainer already built with the device frontend:
  per MFCC coefficient the mean, the standard deviation, the mean absolute frame-to-frame change and the
  attack (mean of the first `ATTACK_FRAMES` frames minus the mean), plus the log of the note's gated length.
  A log-mel store gives the MFCCs through the frontend's own DCT table (`dct_matrix`, as the frontend's MFCC
  stage computes them when c0 is not the frame energy) and adds the mean and std of each log-mel band.
* **Out of fold, over training sources.** The soft target of a note comes from a model fitted on the other
  training sources only (`GroupKFold` by library; by instrument when there are too few libraries), so it says
  how the note looks to a model that never heard its source: not the teacher's memory of the note. A note whose
  family is missing from its fold's training gets no teacher opinion (its target stays the hard label).
* **Only the training notes.** `teacher_targets` sees the run's training split and nothing else: validation
  instruments and `--holdout` libraries (the held-out sources of `experiment holdout`) never reach the fit.
* **The ensemble teacher** is the average, weighted by `teacher_weight`, of the GBM's out-of-fold probabilities
  and the hard label: target = (1 - W) one-hot + W teacher. Cross-entropy is linear in its target, so this is
  exactly the mix (1 - W) CE(label) + W CE(teacher) of the two losses.
* **Cached and kept with the run.** The out-of-fold probabilities are cached under the feature cache
  (``teacher/<key>.npz``, keyed by the store, the training notes and the teacher settings), and saved into the
  run folder (``teacher.npz``) so a resumed run continues with exactly the teacher it started with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.frontend import FrontendSpec, dct_matrix
from instrument_ai.device.lifecycle import atomic_write_bytes
from instrument_ai.train.features import FeatureSet

log = logging.getLogger(__name__)

TEACHERS = ("gbm", "gbm-audioset")
"""Teachers `--teacher` accepts: ``gbm-audioset`` adds a pretrained AudioSet tagger's view of each note to the
statistics (`teacher_audioset`; training time only, needs torch and the pinned file, `--teacher-file`)."""
DEFAULT_TEACHER_WEIGHT = 0.5
TEACHER_FOLDS = 5
"""Folds of the out-of-fold fit (over training sources)."""
ATTACK_FRAMES = 20
"""Frames of the attack statistic (0.32 s at hop 256, 16 kHz)."""
FIT_THREADS = 1
"""OpenMP threads of a fit: the trainer (and the lever screen beside it) share two cores, where two spinning
OpenMP threads ran a fit ~10x slower than one thread."""
STATS_VERSION = 1
"""Bumped when the statistics or the fit change (old cached teachers become misses)."""
GBM_PARAMS: dict[str, Any] = {"max_iter": 200, "learning_rate": 0.1, "class_weight": "balanced"}
"""The HistGradientBoostingClassifier of the research probe (tests/research/note_stats_gbm.py), 200 iterations
with sklearn's automatic early stopping (on for more than 10,000 notes)."""


class TeacherError(ValueError):
    """A teacher that cannot be fitted or restored as asked; the trainer turns it into a one-line TrainError."""


@dataclass(frozen=True)
class TeacherTargets:
    """Out-of-fold teacher probabilities of a run's training notes, in the order of those notes."""

    note_strs: list[str]
    probs: np.ndarray
    """(n_notes, n_classes) float32; a row of zeros where the teacher has no opinion (see `covered`)."""
    covered: np.ndarray
    """(n_notes,) bool: the note's fold had training notes of its family."""
    info: dict[str, Any]

    def mixed(self, labels: np.ndarray, weight: float) -> np.ndarray:
        """Per-note targets (1 - weight) one-hot + weight teacher; the one-hot alone where not `covered`."""
        n_classes = self.probs.shape[1]
        hard = np.eye(n_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
        mix = (1.0 - weight) * hard + weight * self.probs
        return np.where(self.covered[:, None], mix, hard).astype(np.float32)

    def save(self, path: Path) -> None:
        """Atomically write the targets (``teacher.npz`` of a run folder, or a cache entry)."""
        import io

        buffer = io.BytesIO()
        np.savez(
            buffer,
            note_strs=np.asarray(self.note_strs),
            probs=self.probs.astype(np.float32),
            covered=self.covered,
            info=np.asarray(json.dumps(self.info)),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> TeacherTargets:
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    note_strs=[str(s) for s in data["note_strs"]],
                    probs=np.asarray(data["probs"], dtype=np.float32),
                    covered=np.asarray(data["covered"], dtype=bool),
                    info=json.loads(str(data["info"])),
                )
        except (OSError, ValueError, KeyError) as exc:
            raise TeacherError(f"{path}: unreadable teacher targets ({exc})") from None

    def aligned(self, note_strs: Sequence[str], n_classes: int) -> TeacherTargets:
        """These targets in the order of `note_strs`; refused when a note or the class count differs."""
        position = {name: i for i, name in enumerate(self.note_strs)}
        missing = [name for name in note_strs if name not in position]
        if missing or self.probs.shape[1] != n_classes:
            what = f"note {missing[0]} is not in it" if missing else f"{self.probs.shape[1]} classes, not {n_classes}"
            raise TeacherError(f"the saved teacher does not match this run's training notes ({what})")
        order = np.array([position[name] for name in note_strs], dtype=np.int64)
        return TeacherTargets(list(note_strs), self.probs[order], self.covered[order], self.info)


# -- whole-note statistics -----------------------------------------------------------------------------------


def note_statistics(features: FeatureSet, stage: str, spec: FrontendSpec) -> np.ndarray:
    """(n_notes, n_stats) float32 whole-note statistics of each note's clean rendition (zeros without one).

    MFCC mean, std, mean |frame difference| and attack, the log of the gated length in frames; for a log-mel
    store the MFCCs come from the frontend's DCT table and the bands' mean and std are appended.
    """
    if stage not in ("mfcc", "log_mel"):
        raise TeacherError(f"the teacher needs an mfcc or log_mel feature store, not {stage!r}")
    dct_t = dct_matrix(spec).T.astype(np.float32) if stage == "log_mel" else None
    n_mfcc = spec.n_mfcc if stage == "log_mel" else features.n_features
    width = 4 * n_mfcc + 1 + (2 * features.n_features if stage == "log_mel" else 0)
    out = np.zeros((features.n_notes, width), np.float32)
    for segment in np.flatnonzero(features.seg_rendition == 0):
        offset, length = int(features.seg_offset[segment]), int(features.seg_length[segment])
        block = np.asarray(features.frames[offset : offset + length], dtype=np.float32)
        cepstra = block @ dct_t if dct_t is not None else block
        out[features.seg_note[segment]] = _block_statistics(cepstra, block if dct_t is not None else None)
    return out


def _block_statistics(cepstra: np.ndarray, bands: np.ndarray | None) -> np.ndarray:
    """Statistics of one note's (frames, n_mfcc) MFCCs, and of its (frames, n_mels) log-mel bands if given."""
    mean = cepstra.mean(axis=0)
    change = np.abs(np.diff(cepstra, axis=0)).mean(axis=0) if len(cepstra) > 1 else np.zeros_like(mean)
    parts = [mean, cepstra.std(axis=0), change, cepstra[:ATTACK_FRAMES].mean(axis=0) - mean, [np.log(len(cepstra))]]
    if bands is not None:
        parts += [bands.mean(axis=0), bands.std(axis=0)]
    return np.concatenate(parts).astype(np.float32)


# -- the out-of-fold fit -------------------------------------------------------------------------------------


def fold_groups(notes: Sequence[dict[str, Any]], data: str | Path, folds: int) -> tuple[np.ndarray, str]:
    """Group of each note for the out-of-fold split: its library when there are `folds` or more, else its
    instrument. Returns (group ids, "library" or "instrument")."""
    from instrument_ai.train.corpus.info import CorpusInfo, corpus_info

    path = Path(data)
    info = corpus_info(path) if path.is_dir() else CorpusInfo(folder=path)
    libraries = [info.library_of(n["instrument_str"]) for n in notes]
    if len(set(libraries)) >= folds:
        return np.unique(libraries, return_inverse=True)[1], "library"
    return np.unique([n["instrument_str"] for n in notes], return_inverse=True)[1], "instrument"


def out_of_fold(
    stats: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_classes: int, *, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Out-of-fold GBM probabilities (n, n_classes), the covered mask and per-fold figures.

    Each note is predicted by a model fitted on the notes of the other groups only.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GroupKFold
    from threadpoolctl import threadpool_limits

    n_splits = min(folds, len(np.unique(groups)))
    if n_splits < 2:
        raise TeacherError("the teacher needs training notes from at least two instruments")
    probs = np.zeros((len(labels), n_classes), np.float32)
    covered = np.zeros(len(labels), dtype=bool)
    figures: list[dict[str, Any]] = []
    for fit_rows, predict_rows in GroupKFold(n_splits=n_splits).split(stats, labels, groups):
        started = time.perf_counter()
        known = np.unique(labels[fit_rows])
        if known.size < 2:  # one family left to learn from: no opinion on this fold
            figures.append({"notes": int(predict_rows.size), "fitted": False})
            continue
        model = HistGradientBoostingClassifier(**GBM_PARAMS, random_state=seed)
        with threadpool_limits(limits=FIT_THREADS, user_api="openmp"):
            model.fit(stats[fit_rows], labels[fit_rows])
        probs[np.ix_(predict_rows, model.classes_)] = model.predict_proba(stats[predict_rows])
        covered[predict_rows] = np.isin(labels[predict_rows], model.classes_)
        right = probs[predict_rows].argmax(axis=1) == labels[predict_rows]
        figures.append({
            "notes": int(predict_rows.size),
            "note_accuracy": round(float(right.mean()), 4),
            "iterations": int(model.n_iter_),
            "seconds": round(time.perf_counter() - started, 1),
        })  # fmt: skip
    return probs, covered, figures


def teacher_targets(
    features: FeatureSet,
    labels: np.ndarray,
    n_classes: int,
    *,
    stage: str,
    spec: FrontendSpec,
    data: str | Path,
    seed: int,
    cache_root: Path | None = None,
    folds: int = TEACHER_FOLDS,
    audioset_file: Path | None = None,
) -> TeacherTargets:
    """The GBM teacher's out-of-fold targets for `features` (a run's training notes and nothing else).

    Cached under ``cache_root/teacher/`` when a cache folder is given (keyed by the store, the notes, their
    labels, the statistics version, the fit's settings and the seed). With `audioset_file` (the pinned mn04_as
    weights) the statistics gain the AudioSet tagger's logits of each note (`teacher_audioset.teacher_features`).
    """
    note_strs = [n["note_str"] for n in features.notes]
    audioset = None if audioset_file is None else _audioset_digest(audioset_file)
    key = _cache_key(features, note_strs, labels, stage, spec, seed, folds, audioset)
    store = features.meta.get("parent") or features.meta.get("key")
    cached = cache_root / "teacher" / f"{key}.npz" if cache_root is not None and store else None
    if cached is not None and cached.is_file():
        try:
            return TeacherTargets.load(cached).aligned(note_strs, n_classes)
        except TeacherError as exc:  # a damaged entry is refitted
            log.warning("%s", exc)
    started = time.perf_counter()
    stats = note_statistics(features, stage, spec)
    if audioset_file is not None:
        from instrument_ai.train.features import default_cache_dir
        from instrument_ai.train.teacher_audioset import teacher_features

        tagged = teacher_features(Path(data), note_strs, audioset_file, cache_root or default_cache_dir())
        stats = np.hstack([stats, tagged.astype(stats.dtype)])
    groups, grouped_by = fold_groups(features.notes, data, folds)
    probs, covered, figures = out_of_fold(stats, labels, groups, n_classes, folds=folds, seed=seed)
    scored = covered & probs.any(axis=1)
    info = {
        "kind": "gbm" if audioset_file is None else "gbm-audioset",
        "statistics": {"stage": stage, "values": int(stats.shape[1]), "version": STATS_VERSION},
        **({} if audioset is None else {"audioset": audioset}),
        "params": dict(GBM_PARAMS),
        "folds": len(figures),
        "grouped_by": grouped_by,
        "notes": len(note_strs),
        "covered_notes": int(covered.sum()),
        "out_of_fold_note_accuracy": round(float((probs[scored].argmax(axis=1) == labels[scored]).mean()), 4)
        if scored.any()
        else None,
        "per_fold": figures,
        "seconds": round(time.perf_counter() - started, 1),
        "key": key,
    }
    targets = TeacherTargets(note_strs, probs, covered, info)
    if cached is not None:
        targets.save(cached)
    return targets


def _cache_key(
    features: FeatureSet,
    note_strs: Sequence[str],
    labels: np.ndarray,
    stage: str,
    spec: FrontendSpec,
    seed: int,
    folds: int,
    audioset: dict[str, str] | None = None,
) -> str:
    material = {
        "store": features.meta.get("parent") or features.meta.get("key"),
        "notes": hashlib.sha256("\n".join(note_strs).encode()).hexdigest(),
        "labels": hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes()).hexdigest(),
        "stage": stage,
        "spec": spec.to_dict(),
        "version": STATS_VERSION,
        "params": GBM_PARAMS,
        "folds": folds,
        "seed": seed,
        **({} if audioset is None else {"audioset": audioset}),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def _audioset_digest(path: Path) -> dict[str, str]:
    """The pinned tagger file (refused unless its size and digest are the catalogue's) and its features."""
    from instrument_ai.train.teacher_audioset import EXTRA_CLASSES, FIRST_MUSIC_CLASS, LAST_MUSIC_CLASS
    from instrument_ai.train.teacher_file import TeacherFileError, verified_teacher_file

    try:
        entry = verified_teacher_file(path)
    except TeacherFileError as exc:
        raise TeacherError(str(exc)) from None
    classes = f"{FIRST_MUSIC_CLASS}..{LAST_MUSIC_CLASS}+{'|'.join(EXTRA_CLASSES)}"
    return {"name": entry.name, "sha256": entry.sha256, "classes": classes}


__all__ = [
    "DEFAULT_TEACHER_WEIGHT",
    "TEACHERS",
    "TeacherError",
    "TeacherTargets",
    "note_statistics",
    "out_of_fold",
    "teacher_targets",
]

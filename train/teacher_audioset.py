"""What a pretrained AudioSet tagger hears in each note, as extra whole-note features for the GBM teacher.

Issue 23, item 6: the GBM teacher on MFCC statistics (teacher.py) gained 2-4 points; a model trained on two
million YouTube clips (EfficientAT ``mn04_as``, `audioset_tagger`) has heard far more real instruments than our
corpus holds. It is used at training time only and never reaches a device: the teacher ``gbm-audioset`` fits the
same out-of-fold gradient boosting on the MFCC statistics *plus* the tagger's logits for the classes that can tell
our families apart (`feature_indices`: the AudioSet "Music" branch - instruments by name - and voice and noise
classes), so the student learns what the tagger's view adds, where it adds anything.

* **One pass over a corpus, cached.** Each note's clean rendition (its ``audio/<note_str>.wav``) goes through the
  tagger once: 18 ms a 4 s note on one core here, 20-30 minutes for 64,000 notes. All 527 logits are kept
  (float16) in ``<cache>/audioset/<corpus key>-<tagger sha>.npz``, so a holdout's groups share one pass; the cache
  is written every `SAVE_EVERY` notes (atomically), so an interrupted pass resumes.
* **Logits, not probabilities:** the sigmoid's tails (0.001 vs 0.01) are where the evidence for a rare class is.

    python -m instrument_ai.train.teacher_audioset --data /work/corpus-v5 --teacher-file mn04_as_mAP_432.pt
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from instrument_ai.device.lifecycle import atomic_write_bytes
from instrument_ai.train.teacher_file import TeacherFileError, verified_teacher_file

FIRST_MUSIC_CLASS, LAST_MUSIC_CLASS = "Music", "Singing bowl"
"""The AudioSet ontology's contiguous "Music" branch in output order: instruments by name, Music to Singing bowl."""
EXTRA_CLASSES = ("Speech", "Singing", "Choir", "Male singing", "Female singing", "Humming", "Whistling",
                 "Noise", "White noise", "Pink noise", "Silence", "Sine wave")  # fmt: skip
"""Voice and noise classes: what tells `vocal` and `other` apart from the instruments."""
SAVE_EVERY = 2000
"""Notes between two saves of the cache (an interrupted pass loses at most this many)."""


def feature_indices(labels: Sequence[str]) -> np.ndarray:
    """The output positions of the teacher's classes (the Music branch, then `EXTRA_CLASSES`) in the tagger's order."""
    names = list(labels)
    music = range(names.index(FIRST_MUSIC_CLASS), names.index(LAST_MUSIC_CLASS) + 1)
    return np.array([*music, *(names.index(name) for name in EXTRA_CLASSES)], dtype=np.int64)


def corpus_key(data: Path) -> str:
    """A short digest of the corpus's examples.json: a rebuilt corpus gets a new cache."""
    return hashlib.sha256((data / "examples.json").read_bytes()).hexdigest()[:16]


def cache_path(cache_root: Path, data: Path, teacher_file: Path) -> Path:
    entry = verified_teacher_file(teacher_file)
    return cache_root / "audioset" / f"{corpus_key(data)}-{entry.name}-{entry.sha256[:12]}.npz"


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as saved:
            return dict(zip((str(s) for s in saved["note_strs"]), saved["logits"], strict=True))
    except (OSError, ValueError, KeyError):
        return {}  # a damaged cache is computed again


def _save(path: Path, logits: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    names = sorted(logits)
    np.savez(buffer, note_strs=np.asarray(names), logits=np.stack([logits[n] for n in names]).astype(np.float16))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def note_logits(data: Path, note_strs: Sequence[str], teacher_file: Path, cache_root: Path,
                progress: bool = True) -> np.ndarray:  # fmt: skip
    """(n, 527) AudioSet logits of each note's clean rendition, from the cache or computed (and cached) now."""
    import soundfile

    from instrument_ai.train.audioset_tagger import AudioSetTagger

    path = cache_path(cache_root, data, teacher_file)
    known = _load(path)
    missing = [n for n in dict.fromkeys(note_strs) if n not in known]
    if missing:
        tagger = AudioSetTagger.load(teacher_file)
        for count, name in enumerate(_progress(missing, progress), start=1):
            try:
                audio, rate = soundfile.read(str(data / "audio" / f"{name}.wav"), dtype="float32", always_2d=True)
            except (OSError, RuntimeError) as exc:
                raise TeacherFileError(f"{data}: note {name} cannot be read for the AudioSet teacher ({exc})") from None
            probs = np.clip(tagger.probabilities(audio.mean(axis=1), int(rate)), 1e-6, 1 - 1e-6)
            known[name] = np.log(probs / (1 - probs)).astype(np.float32)
            if count % SAVE_EVERY == 0:
                _save(path, known)
        _save(path, known)
    return np.stack([np.asarray(known[n], dtype=np.float32) for n in note_strs])


def teacher_features(data: Path, note_strs: Sequence[str], teacher_file: Path, cache_root: Path) -> np.ndarray:
    """The teacher's extra whole-note features: the logits of `feature_indices`' classes."""
    from instrument_ai.train.audioset_tagger import AUDIOSET_LABELS

    return note_logits(data, note_strs, teacher_file, cache_root)[:, feature_indices(AUDIOSET_LABELS)]


def _progress(items: list[str], shown: bool) -> Sequence[str]:
    if not shown:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="AudioSet teacher", unit="note", mininterval=5.0)  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> None:
    """Compute (or complete) a corpus's AudioSet logits ahead of the trainings that use them."""
    from instrument_ai.train.features import default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an NSynth-layout corpus")
    parser.add_argument("--teacher-file", type=Path, required=True, help="the pinned mn04_as weights")
    parser.add_argument("--cache", type=Path, default=None, help="feature-cache folder [~/.cache/instrument-ai]")
    args = parser.parse_args(argv)
    try:
        notes = [e["note_str"] if isinstance(e, dict) else k
                 for k, e in json.loads((args.data / "examples.json").read_text()).items()]  # fmt: skip
        cache_root = args.cache or default_cache_dir()
        logits = note_logits(args.data, notes, args.teacher_file, cache_root)
    except (OSError, ValueError, TeacherFileError) as exc:
        raise SystemExit(f"teacher_audioset: {exc}") from None
    print(f"{len(notes)} notes, {logits.shape[1]} logits each: {cache_path(cache_root, args.data, args.teacher_file)}")


if __name__ == "__main__":
    main()

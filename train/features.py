"""Training features: device-frontend MFCCs of every note, cached on disk, cropped into model windows.

Why it looks like this:

* **One frontend.** Every number comes from `instrument_ai.device.frontend`
  with the spec the run saves, so a model is trained on what the device computes.
* **Whole notes, windows cropped later.** A note's features are stored once as
  a (frames, n_features) block; a model window (1 s = 59 frames) is a slice of
  it. Random crops per batch are free, overlapping windows cost no memory, and
  validation uses exactly the device's windows (`note_windows`: 1 s every
  0.25 s, i.e. every 16 frames at hop 256).
* **No windows of silence.** A window is used only when the clean note's RMS
  over the window's samples reaches `silence_dbfs` (default -60 dBFS, the
  device engine's default silence gate: it never classifies quieter audio, so a
  model need not learn to). Each stored note block is trimmed to the span of
  such windows (attack, sustain and the audible part of the release). A note
  with no window above the gate keeps its loudest window unless that is digital
  silence (below -100 dBFS): such notes are dropped and counted.
* **Cached, keyed by what decides the numbers.** `FeatureCache` keys a feature
  set by the frontend spec, the feature stage, the window length, the gate, the
  audio augmentation settings, a hash of the corpus index (examples.json) and
  the exact list of notes; a change of any of them is a miss and a new
  extraction. (The trainer asks for every note of a corpus and takes splits as
  `FeatureSet.subset` views, so all splits and folds share one entry.) Audio files are assumed immutable beside
  their index. Sets are written to a temporary folder and renamed into place,
  so an interrupted extraction never leaves a half-written cache entry.
* **float16 storage** for MFCC/log-mel (resolution 0.5 at |c0| ~ 600, far below
  the augmentation noise): half the memory. Mel power needs float32.
* **Memory is estimated before anything is allocated**, and an oversized request
  is refused with the numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device import frontend
from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.frontend import DEFAULT_WINDOW_SECONDS, FrontendSpec
from instrument_ai.train.augment import AudioAugment, render_rendition

CACHE_FORMAT = 1
"""Bumped when the stored layout or the extraction arithmetic changes (old entries become misses)."""
DEFAULT_HOP_SECONDS = 0.25
"""The device classifies a 1 s window every 0.25 s."""
SILENCE_DBFS = -60.0
DIGITAL_SILENCE_DBFS = -100.0
STAGES = ("mfcc", "log_mel", "mel_power")


class FeatureError(InstrumentAIError, ValueError):
    """A feature request that cannot be served (oversized, empty, wrong rate); one line for the user."""


# -- windows --------------------------------------------------------------------------------


def window_frames(spec: FrontendSpec, seconds: float = DEFAULT_WINDOW_SECONDS) -> int:
    """Frames in a model window of `seconds` (59 for 1 s at the default spec)."""
    frames = spec.n_frames(int(round(seconds * spec.sample_rate)))
    if frames < 1:
        raise FeatureError(f"a {seconds} s window is shorter than one frontend frame")
    return frames


def hop_frames(spec: FrontendSpec, seconds: float = DEFAULT_HOP_SECONDS) -> int:
    """Frames between two device windows (0.25 s -> 16 frames at hop 256; rounded, at least 1)."""
    return max(1, int(round(seconds * spec.sample_rate / spec.hop_length)))


def note_windows(
    features: np.ndarray, window_frames: int, hop_frames: int, *, pad: np.ndarray | None = None
) -> np.ndarray:
    """Windows over one note as the device sees them: (N, n_features, window_frames) float32.

    `features` is (n_features, n_frames) as `frontend.mfcc` returns it. Windows
    start at frame 0, hop, 2*hop, ... while they fit (1 s every 0.25 s is
    ``window_frames=59, hop_frames=16`` at the default spec). A note shorter than
    one window gives one window, padded at the end with `pad` (n_features,)
    (e.g. `silence_frame(spec)`, what follows a note that stops) or, by default,
    with its last frame repeated.
    """
    if features.ndim != 2:
        raise ValueError(f"note_windows expects (n_features, n_frames), got shape {features.shape}")
    if window_frames < 1 or hop_frames < 1:
        raise ValueError("window_frames and hop_frames must be at least 1")
    n_features, n_frames = features.shape
    if n_frames < window_frames:
        if n_frames == 0:
            return np.zeros((0, n_features, window_frames), dtype=np.float32)
        column = features[:, -1:] if pad is None else np.asarray(pad, dtype=features.dtype).reshape(n_features, 1)
        padded = np.concatenate([features, np.repeat(column, window_frames - n_frames, axis=1)], axis=1)
        return padded[None].astype(np.float32)
    starts = np.arange(0, n_frames - window_frames + 1, hop_frames)
    view = np.lib.stride_tricks.sliding_window_view(features, window_frames, axis=1)  # (F, n_win, W)
    return np.ascontiguousarray(view[:, starts, :].transpose(1, 0, 2), dtype=np.float32)


def silence_frame(spec: FrontendSpec, stage: str = "mfcc") -> np.ndarray:
    """The features of one frame of digital silence, (n_features,)."""
    return _stage_fn(stage)(np.zeros(spec.win_length), spec)[:, 0]


def onset_prefix(windows: np.ndarray, heard: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """Cut windows that start at a note's onset to their first `heard` frames, the rest `pad` (in place).

    This is the device engine's window right after an onset (`Classifier._window`):
    until a whole window has passed, it holds the frames heard since the onset
    followed by silence frames. A model that never saw such windows in training
    answers the first hops of every note from inputs unlike any it learned
    from, which is what delays the first decision. `windows` is (B, F, W),
    `heard` (B,) in 1..W, `pad` the silence frame (F,).
    """
    width = windows.shape[2]
    cut = np.arange(width)[None, :] >= np.asarray(heard)[:, None]  # (B, W)
    mask = np.broadcast_to(cut[:, None, :], windows.shape)
    windows[mask] = np.broadcast_to(np.asarray(pad, dtype=windows.dtype)[None, :, None], windows.shape)[mask]
    return windows


def window_levels_dbfs(signal: np.ndarray, spec: FrontendSpec, window_frames: int) -> np.ndarray:
    """RMS level in dBFS of every window start k (samples [k*hop, k*hop + window_samples)), via a cumulative sum."""
    n_samples = spec.window_samples(window_frames)
    n_windows = spec.n_frames(signal.size) - window_frames + 1
    if n_windows < 1:
        return np.zeros(0)
    energy = np.concatenate([[0.0], np.cumsum(np.asarray(signal, dtype=np.float64) ** 2)])
    starts = np.arange(n_windows) * spec.hop_length
    mean_square = (energy[starts + n_samples] - energy[starts]) / n_samples
    return 10.0 * np.log10(np.maximum(mean_square, 1e-20))


def _stage_fn(stage: str) -> Callable[[np.ndarray, FrontendSpec], np.ndarray]:
    if stage not in STAGES:
        raise FeatureError(f"unknown feature stage {stage!r} (choose from {', '.join(STAGES)})")
    return getattr(frontend, stage)


def n_features(spec: FrontendSpec, stage: str = "mfcc") -> int:
    """Feature rows per frame: n_mfcc for MFCCs, n_mels for the mel stages."""
    _stage_fn(stage)
    return spec.n_mfcc if stage == "mfcc" else spec.n_mels


def storage_dtype(stage: str) -> np.dtype:
    return np.dtype(np.float32 if stage == "mel_power" else np.float16)


# -- extraction of one note -----------------------------------------------------------------


@dataclass(frozen=True)
class ExtractSettings:
    """Everything that decides the stored numbers of a note (all of it goes into the cache key)."""

    spec: FrontendSpec
    stage: str = "mfcc"
    window_frames: int = 59
    silence_dbfs: float = SILENCE_DBFS
    augment: AudioAugment = field(default_factory=AudioAugment)

    def key_material(self) -> dict[str, Any]:
        """What the cache key hashes. Not the number of copies: rendition r of a note depends only on
        (seed, note, r) and the other settings, so a store with more copies serves a request for fewer."""
        augment = self.augment.to_dict()
        augment.pop("copies")
        return {
            "format": CACHE_FORMAT,
            "spec": self.spec.to_dict(),
            "stage": self.stage,
            "window_frames": self.window_frames,
            "silence_dbfs": self.silence_dbfs,
            "augment": augment,
        }


def _stable_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _gated_span(levels: np.ndarray, silence_dbfs: float) -> tuple[int, int] | None:
    """First and last window start above the gate (or the loudest one, unless digital silence)."""
    if levels.size == 0:
        return None
    above = np.flatnonzero(levels >= silence_dbfs)
    if above.size:
        return int(above[0]), int(above[-1])
    best = int(np.argmax(levels))
    if levels[best] < DIGITAL_SILENCE_DBFS:
        return None
    return best, best


def extract_note(audio: np.ndarray, note_str: str, settings: ExtractSettings) -> list[tuple[int, np.ndarray]]:
    """Feature blocks of one note: [(rendition, (n_frames, n_features) stored dtype)], clean first.

    Each block covers exactly the window starts that pass the gate: block frame
    0 is the first valid window start, and every start 0..len-window_frames is a
    valid window. Renditions whose clean signal is silent are left out; an empty
    list means the note is silent.
    """
    spec = settings.spec
    stage_fn = _stage_fn(settings.stage)
    dtype = storage_dtype(settings.stage)
    needed = spec.window_samples(settings.window_frames)
    clean = np.asarray(audio, dtype=np.float64)
    out: list[tuple[int, np.ndarray]] = []
    for rendition in range(settings.augment.copies + 1):
        if rendition == 0:
            signal, reference = clean, clean
        else:
            rng = np.random.default_rng([settings.augment.seed, _stable_seed(note_str), rendition])
            signal, reference = render_rendition(clean, spec.sample_rate, spec.hop_length, rng, settings.augment)
        if reference.size < needed:  # a note shorter than a window is followed by silence, as on the device
            signal = np.concatenate([signal, np.zeros(needed - signal.size)])
            reference = np.concatenate([reference, np.zeros(needed - reference.size)])
        span = _gated_span(window_levels_dbfs(reference, spec, settings.window_frames), settings.silence_dbfs)
        if span is None:
            if rendition == 0:
                return []
            continue
        first, last = span
        begin = first * spec.hop_length
        end = last * spec.hop_length + needed
        block = stage_fn(signal[begin:end], spec)  # (F, frames)
        expected = last - first + settings.window_frames
        if block.shape[1] != expected:  # pragma: no cover - an arithmetic invariant
            raise AssertionError(f"{note_str}: {block.shape[1]} frames, expected {expected}")
        out.append((rendition, np.ascontiguousarray(block.T, dtype=dtype)))
    return out


# -- a feature set (one split, all renditions) ----------------------------------------------


@dataclass
class FeatureSet:
    """Feature blocks of the notes of one split, concatenated, with the tables to find windows.

    ``frames`` (total, F) holds every block back to back; segment s is rows
    ``seg_offset[s] : seg_offset[s] + seg_length[s]`` of note ``seg_note[s]``,
    rendition ``seg_rendition[s]`` (0 = clean). A note's segments are
    contiguous: ``note_seg_lo[n] .. + note_seg_count[n]``. Every start in
    ``0 .. seg_length - window_frames`` of a segment is a valid window.
    """

    frames: np.ndarray
    seg_offset: np.ndarray
    seg_length: np.ndarray
    seg_note: np.ndarray
    seg_rendition: np.ndarray
    notes: list[dict[str, Any]]
    window_frames: int
    n_silent: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_notes(self) -> int:
        return len(self.notes)

    @property
    def n_features(self) -> int:
        return int(self.frames.shape[1])

    @functools.cached_property
    def note_family(self) -> np.ndarray:
        return np.array([n["family"] for n in self.notes], dtype=np.int64)

    @functools.cached_property
    def note_seg_count(self) -> np.ndarray:
        """Segments (renditions) per note."""
        return np.bincount(self.seg_note, minlength=self.n_notes).astype(np.int64)

    @functools.cached_property
    def note_seg_lo(self) -> np.ndarray:
        """Index of each note's first segment (segments are stored grouped by note, in note order)."""
        return (np.cumsum(self.note_seg_count) - self.note_seg_count).astype(np.int64)

    def nbytes(self) -> int:
        return int(self.frames.nbytes)

    def gather(self, starts: np.ndarray) -> np.ndarray:
        """Windows at global frame indices `starts`: (B, F, window_frames) float32."""
        index = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(self.window_frames)[None, :]
        windows = self.frames[index].astype(np.float32)  # (B, W, F): convert while contiguous
        return np.ascontiguousarray(windows.transpose(0, 2, 1))

    def sample_starts(self, rng: np.random.Generator, note_ids: np.ndarray) -> np.ndarray:
        """For each note id, a random rendition and a random valid window in it: global frame starts."""
        lo, count = self.note_seg_lo, self.note_seg_count
        segments = lo[note_ids] + rng.integers(0, count[note_ids])
        room = self.seg_length[segments].astype(np.int64) - self.window_frames + 1
        return self.seg_offset[segments] + rng.integers(0, room)

    def onset_starts(self, rng: np.random.Generator, note_ids: np.ndarray) -> np.ndarray:
        """For each note id, a random rendition's first frame (the note's onset): global frame starts."""
        lo, count = self.note_seg_lo, self.note_seg_count
        segments = lo[note_ids] + rng.integers(0, count[note_ids])
        return self.seg_offset[segments].astype(np.int64)

    def onset_windows(self, heard: int, pad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each clean note's window `heard` frames after its onset, padded as the device pads it: (x, note)."""
        segments = np.flatnonzero(self.seg_rendition == 0)
        x = self.gather(self.seg_offset[segments])
        onset_prefix(x, np.full(segments.size, min(heard, self.window_frames)), pad)
        return x, self.seg_note[segments].astype(np.int64)

    def device_windows(self, hop: int, renditions: Sequence[int] = (0,)) -> tuple[np.ndarray, np.ndarray]:
        """All device-like windows (every `hop` frames) of the given renditions: (x, note index)."""
        xs: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        for s in np.flatnonzero(np.isin(self.seg_rendition, renditions)):
            block = self.frames[self.seg_offset[s] : self.seg_offset[s] + self.seg_length[s]].T.astype(np.float32)
            windows = note_windows(block, self.window_frames, hop)
            xs.append(windows)
            owners.append(np.full(len(windows), self.seg_note[s], dtype=np.int64))
        if not xs:
            return np.zeros((0, self.n_features, self.window_frames), np.float32), np.zeros(0, np.int64)
        return np.concatenate(xs), np.concatenate(owners)

    def feature_stats(self, group: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and std over the frames of this set's segments (float64 sums, std floored at 1e-3)."""
        total = np.zeros(self.n_features)
        square = np.zeros(self.n_features)
        count = 0
        for first in range(0, len(self.seg_offset), group):
            part = slice(first, first + group)
            pieces = [self.frames[o : o + n] for o, n in zip(self.seg_offset[part], self.seg_length[part], strict=True)]
            block = np.concatenate(pieces).astype(np.float64) if pieces else np.zeros((0, self.n_features))
            total += block.sum(axis=0)
            square += np.einsum("ij,ij->j", block, block)
            count += block.shape[0]
        if count == 0:
            raise FeatureError("no feature frames to compute a normalisation from")
        mean = total / count
        std = np.sqrt(np.maximum(square / count - mean**2, 0.0))
        return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)

    @property
    def n_frames_used(self) -> int:
        """Frames of this set's own segments (a subset shares the frames array of its whole set)."""
        return int(self.seg_length.sum())

    def subset(self, note_indices: Sequence[int] | np.ndarray, renditions: Sequence[int] | None = None) -> FeatureSet:
        """The notes `note_indices` (in increasing order), optionally only some renditions, without copying frames.

        Note i of the subset is the i-th selected note; notes left with no
        segment (e.g. only rendition 0 asked and none stored) are dropped.
        """
        chosen = np.unique(np.asarray(note_indices, dtype=np.int64))
        keep = np.isin(self.seg_note, chosen)
        if renditions is not None:
            keep &= np.isin(self.seg_rendition, np.asarray(renditions))
        kept_notes = np.unique(self.seg_note[keep])
        remap = np.full(self.n_notes, -1, dtype=np.int64)
        remap[kept_notes] = np.arange(kept_notes.size)
        return FeatureSet(
            frames=self.frames,
            seg_offset=self.seg_offset[keep],
            seg_length=self.seg_length[keep],
            seg_note=remap[self.seg_note[keep]],
            seg_rendition=self.seg_rendition[keep],
            notes=[self.notes[i] for i in kept_notes],
            window_frames=self.window_frames,
            n_silent=0,
            meta={"parent": self.meta.get("key")},
        )

    # -- storage --
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "frames.npy", self.frames)
        np.savez(
            folder / "segments.npz",
            seg_offset=self.seg_offset,
            seg_length=self.seg_length,
            seg_note=self.seg_note,
            seg_rendition=self.seg_rendition,
        )
        info = {"notes": self.notes, "window_frames": self.window_frames, "n_silent": self.n_silent, **self.meta}
        (folder / "notes.json").write_text(json.dumps(info))

    @classmethod
    def load(cls, folder: Path) -> FeatureSet:
        info = json.loads((folder / "notes.json").read_text())
        with np.load(folder / "segments.npz") as seg:
            tables = {k: seg[k] for k in ("seg_offset", "seg_length", "seg_note", "seg_rendition")}
        meta = {k: v for k, v in info.items() if k not in ("notes", "window_frames", "n_silent")}
        return cls(
            frames=np.load(folder / "frames.npy"),
            notes=info["notes"],
            window_frames=int(info["window_frames"]),
            n_silent=int(info["n_silent"]),
            meta=meta,
            **tables,
        )


# -- parallel extraction --------------------------------------------------------------------


def note_record(note: Any) -> dict[str, Any]:
    """The metadata a feature set keeps per note (JSON-safe)."""
    return {
        "note_str": note.note_str,
        "instrument_str": note.instrument_str,
        "family": int(note.family),
        "family_str": note.family_str,
        "source": int(note.source),
        "pitch": int(note.pitch),
        "velocity": int(note.velocity),
    }


def _note_audio(note: Any) -> np.ndarray:
    audio = getattr(note, "audio", None)
    if audio is None:
        audio = note.load_audio()
    return np.asarray(audio)


def _extract_job(args: tuple[Any, ExtractSettings]) -> list[tuple[int, np.ndarray]] | str:
    """Worker entry (module level so that spawned processes can import it): blocks, or an error line."""
    note, settings = args
    if int(note.sample_rate) != settings.spec.sample_rate:
        return (
            f"{note.note_str}: sample rate {note.sample_rate} Hz, the frontend spec expects "
            f"{settings.spec.sample_rate} Hz"
        )
    try:
        audio = _note_audio(note)
        return extract_note(audio, note.note_str, settings)
    except Exception as exc:  # one unreadable note must not stop an hour of extraction
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{note.note_str}: {message}"


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo, or 8 GB when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def estimate_bytes(n_notes: int, note_samples: int, settings: ExtractSettings) -> int:
    """Upper bound of the stored features of `n_notes` notes of `note_samples` samples."""
    spec = settings.spec
    extra = int(settings.augment.preroll_s[1] * spec.sample_rate) + spec.hop_length if settings.augment.copies else 0
    frames = spec.n_frames(max(note_samples + extra, spec.window_samples(settings.window_frames)))
    per_note = frames * n_features(spec, settings.stage) * storage_dtype(settings.stage).itemsize
    return n_notes * (settings.augment.copies + 1) * per_note


def extract_features(
    notes: Sequence[Any],
    settings: ExtractSettings,
    *,
    jobs: int = 1,
    max_bytes: int | None = None,
    progress: bool = True,
    description: str = "features",
) -> FeatureSet:
    """Extract the feature set of `notes` (clean + augmented renditions), in `jobs` processes.

    Refuses (FeatureError) before allocating when the estimate exceeds
    `max_bytes` (default: 60 % of the available memory).
    """
    if not notes:
        raise FeatureError("no notes to extract features from")
    limit = int(0.6 * _available_memory()) if max_bytes is None else int(max_bytes)
    probe = _note_audio(notes[0]).size
    estimate = estimate_bytes(len(notes), probe, settings)
    if estimate > limit:
        raise FeatureError(
            f"features of {len(notes)} notes x {settings.augment.copies + 1} renditions would need about "
            f"{estimate / 2**30:.1f} GB, over the {limit / 2**30:.1f} GB limit; use fewer augmented copies, "
            "fewer notes, or raise --max-memory"
        )
    jobs = max(1, int(jobs))
    work = [(note, settings) for note in notes]
    results: Iterable[list[tuple[int, np.ndarray]] | str]
    bar = _progress(len(work), description, progress)
    if jobs == 1 or len(work) < 4:
        results = (_extract_job(w) for w in work)
        blocks = [_tick(bar, r) for r in results]
    else:
        import concurrent.futures
        import multiprocessing
        from concurrent.futures.process import BrokenProcessPool

        # fork is quick and needs no importable __main__; once TensorFlow (and its threads) is in the
        # process, spawn fresh interpreters instead (forking a threaded process is asking for deadlocks)
        method = "spawn" if "tensorflow" in sys.modules else "fork"
        context = multiprocessing.get_context(method)
        try:
            with (
                _single_threaded_children(),
                concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool,
            ):
                chunk = max(1, min(64, len(work) // (jobs * 8)))
                blocks = [_tick(bar, r) for r in pool.map(_extract_job, work, chunksize=chunk)]
        except BrokenProcessPool:
            raise FeatureError(
                f"a feature-extraction process died ({method}); out of memory? try fewer --jobs, or --jobs 1"
            ) from None
    if bar is not None:
        bar.close()
    return _assemble(notes, blocks, settings)


@contextlib.contextmanager
def _single_threaded_children() -> Any:
    """One BLAS/OpenMP thread per worker process: `jobs` processes already use the cores (set while they spawn)."""
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _progress(total: int, description: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="note", file=sys.stderr, dynamic_ncols=True)


def _tick(bar: Any, value: Any) -> Any:
    if bar is not None:
        bar.update(1)
    return value


def _assemble(
    notes: Sequence[Any], blocks: list[list[tuple[int, np.ndarray]] | str], settings: ExtractSettings
) -> FeatureSet:
    kept_notes: list[dict[str, Any]] = []
    kept_blocks: list[np.ndarray] = []
    seg_note: list[int] = []
    renditions: list[int] = []
    failed: list[str] = []
    n_silent = 0
    for note, note_blocks in zip(notes, blocks, strict=True):
        if isinstance(note_blocks, str):
            failed.append(note_blocks)
            continue
        if not note_blocks:
            n_silent += 1
            continue
        index = len(kept_notes)
        kept_notes.append(note_record(note))
        for rendition, block in note_blocks:
            kept_blocks.append(block)
            seg_note.append(index)
            renditions.append(rendition)
    width = n_features(settings.spec, settings.stage)
    if kept_blocks:
        frames = np.concatenate(kept_blocks, axis=0)
    else:
        frames = np.zeros((0, width), dtype=storage_dtype(settings.stage))
    seg_length = np.asarray([b.shape[0] for b in kept_blocks], dtype=np.int64)
    seg_offset = (np.cumsum(seg_length) - seg_length).astype(np.int64)
    return FeatureSet(
        frames=frames,
        seg_offset=seg_offset,
        seg_length=seg_length,
        seg_note=np.asarray(seg_note, dtype=np.int64),
        seg_rendition=np.asarray(renditions, dtype=np.int8),
        notes=kept_notes,
        window_frames=settings.window_frames,
        n_silent=n_silent,
        meta={"failed": failed} if failed else {},
    )


# -- the on-disk cache ----------------------------------------------------------------------


def default_cache_dir() -> Path:
    """~/.cache/instrument-ai (or $XDG_CACHE_HOME/instrument-ai)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "instrument-ai"


def data_fingerprint(path: str | Path) -> str:
    """A hash of a corpus index: examples.json's bytes for a folder; size, mtime and head for a tfrecord."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        index = path / "examples.json"
        if not index.is_file():
            raise FeatureError(f"{path}: no examples.json (not an NSynth-format folder)")
        with index.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    else:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()


class FeatureCache:
    """Feature sets on disk under ``<root>/features/<key>/``, one per (settings, data, split, notes).

    >>> cache = FeatureCache("~/.cache/instrument-ai")
    >>> features = cache.get_or_build(notes, settings, data_hash=data_fingerprint(path), split="train")
    >>> cache.last_hit   # True when nothing had to be extracted

    The key is a sha256 of `ExtractSettings.key_material()` + the corpus
    fingerprint + the split name + the sorted note names: change the spec, the
    augmentation, the corpus or the split and it is a different entry. Entries
    are written to a temporary folder and renamed, so a crash or Ctrl-C during
    extraction leaves no partial entry.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.last_hit: bool | None = None
        self.last_key: str | None = None

    def key(self, notes: Sequence[Any], settings: ExtractSettings, data_hash: str, split: str) -> str:
        names = hashlib.sha256("\n".join(sorted(n.note_str for n in notes)).encode()).hexdigest()
        material = {**settings.key_material(), "data": data_hash, "split": split, "notes": names}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]

    def folder(self, key: str) -> Path:
        return self.root / "features" / key

    def get_or_build(
        self,
        notes: Sequence[Any],
        settings: ExtractSettings,
        *,
        data_hash: str,
        split: str,
        jobs: int = 1,
        max_bytes: int | None = None,
        progress: bool = True,
    ) -> FeatureSet:
        key = self.key(notes, settings, data_hash, split)
        self.last_key = key
        folder = self.folder(key)
        wanted = settings.augment.copies
        if (folder / "notes.json").is_file():
            try:
                stored = FeatureSet.load(folder)
            except (OSError, ValueError, KeyError):  # a damaged entry: rebuild it
                stored = None
            if stored is not None and int(stored.meta.get("copies", -1)) >= wanted:
                self.last_hit = True
                return _keep_renditions(stored, wanted)
        self.last_hit = False
        started = time.perf_counter()
        features = extract_features(
            notes, settings, jobs=jobs, max_bytes=max_bytes, progress=progress, description=f"features {split}"
        )
        features.meta = {
            **features.meta,
            "key": key,
            "split": split,
            "data": data_hash,
            "copies": wanted,
            "settings": settings.key_material(),
            "seconds": round(time.perf_counter() - started, 2),
        }
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=folder.parent))
        old = folder.parent / f".old-{key}-{os.getpid()}"
        try:
            features.save(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; a cache entry is readable like any cache file
            if folder.exists():  # damaged, or fewer copies than now wanted: set it aside, then swap
                os.replace(folder, old)
            with contextlib.suppress(OSError):  # another process finished the same entry first: keep theirs
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return features


def _keep_renditions(features: FeatureSet, copies: int) -> FeatureSet:
    """The set with renditions 0..copies only (a view; the set itself when nothing is dropped)."""
    if int(features.seg_rendition.max(initial=0)) <= copies:
        return features
    part = features.subset(np.arange(features.n_notes), renditions=list(range(copies + 1)))
    part.n_silent = features.n_silent
    part.meta = {**features.meta, "copies": copies}
    return part


def settings_dict(settings: ExtractSettings) -> dict[str, Any]:
    """JSON form of the extraction settings (for run configs)."""
    out = dataclasses.asdict(settings)
    out["spec"] = settings.spec.to_dict()
    out["augment"] = settings.augment.to_dict()
    return out


def bytes_human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


__all__ = [
    "DEFAULT_HOP_SECONDS",
    "ExtractSettings",
    "FeatureCache",
    "FeatureError",
    "FeatureSet",
    "data_fingerprint",
    "extract_features",
    "extract_note",
    "hop_frames",
    "note_windows",
    "silence_frame",
    "window_frames",
    "window_levels_dbfs",
]

"""The personal head: a few enrolled notes teach the device an instrument (or a room's noises) it never heard.

numpy only (the device path). Four parts, each usable alone:

* **Note descriptor** (`describe_window`): what the head learns on, computed from the very window of MFCC frames
  the general model sees at a hop (bundles up to 0.4.0 have no embedding output): the mean and the standard
  deviation of each coefficient over the window's frames, leaving out the padding/silence frames (exact copies of
  the frontend's frame of digital silence). Raw MFCC units, so a descriptor depends on the frontend spec only,
  not on the model; the general outputs stored beside it do depend on the model, so a newly flashed model is
  re-fitted from the stored clips (or, without clips and with the same spec, from the descriptors alone).
* **Note extraction** (`extract_notes`): one note per onset, found by the engine itself. The samples go through a
  `Classifier` whose bundle is a tap (`_WindowTap`): every window the engine would give the model is recorded,
  so silence gating, onset location and onset alignment are exactly the daemon's. A note is the run of sounding
  hops after a silent one (the engine's own "first sounding hop after silence" condition); its first
  `MAX_NOTE_HOPS` windows are described, and its first `CLIP_SECONDS` kept as int16 audio for re-fitting.
* **The head** (`PersonalHead`): every enrolled hop is a prototype in a space made of the standardised
  descriptor (each coefficient divided by the bundle's input standard deviation; c0's mean, the loudness, left
  out) and the square root of the general model's output at that hop (`PROB_WEIGHT`): a hop must sound like
  the enrolled notes *and* puzzle the general model the way they did. Each enrolled family gets a radius from
  its notes' leave-one-note-out nearest-hop distances. A hop within the radius of its nearest prototype's
  family is blended toward that family (`BLEND`), unless the general model is surer of another label than it
  ever was on that family's notes (the envelope) or the hop lies nearer to a known sound of another family (an
  optional background of hops from training-like sounds); anywhere else the general output is returned
  untouched, so families nobody enrolled keep the general model's answers. Enrolling ``other`` (the dog, the
  dishwasher) pulls hops that sound like them to ``other``: no instrument event. Nearest prototypes rather than
  a logistic regression: as accurate on the real-recording sources (within a point), 2-10x faster to fit,
  and defined for the commonest case, one enrolled family (tests/research/enrol_measure.py).
* **The personal file** (`PersonalFile`): one small binary file, written atomically, that holds every enrolled
  note's hop descriptors, family and optional clip, plus the digests of the bundle it was fitted for, closed by a
  SHA-256 of everything before it. A truncated or edited file, or one made for another bundle, is refused with
  one line (`PersonalError`, exit 2); `refit` ties it to a new bundle without asking the user again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.errors import ConfigurationError, InstrumentAIError
from instrument_ai.device.frontend import FrontendSpec, mfcc
from instrument_ai.device.labels import LABELS

MAX_NOTE_HOPS = 8
"""Hops of a note that are described (2 s at the default 0.25 s hop): the attack, the body, the start of the decay."""
CLIP_SECONDS = 2.0
"""Audio kept per enrolled note for re-fitting a model with another frontend (64 kB of int16 at 16 kHz)."""
MAX_CLIPS_PER_FAMILY = 30
"""Clips kept per family (about 2 MB in all at 16 kHz); the descriptors of every note are kept regardless."""
MIN_NOTES = 2
"""Notes a family needs before it is active: its radius comes from leave-one-note-out distances."""
RADIUS_QUANTILE = 0.75
"""Leave-one-note-out distances below this quantile of a family's lie inside its radius (before `RADIUS_SCALE`)."""
RADIUS_SCALE = 1.0
"""The radius is RADIUS_SCALE x that quantile (measured in tests/research/enrol_measure.py)."""
PROB_WEIGHT = 3.0
"""Weight of the general model's output (its square root) beside the MFCC descriptor in the head's space: a hop
must sound like the enrolled notes *and* puzzle the general model the way they did. Measured on the real-recording
sources: hops of other families inside a radius fell from 65 % to 24 % while those of the enrolled family rose from
81 % to 86 % (0.9 quantile radius; tests/research/enrol_measure.py)."""
BLEND = 0.8
"""Weight moved to the matched family at a hop well inside its radius (the general output keeps the rest)."""
ENVELOPE_MARGIN = 0.05
"""How much surer than on any enrolled note the general model may be of another label before the head stands back."""
BACKGROUND_RATIO = 1.0
"""A hop joins an enrolled family only if it is nearer to it than BACKGROUND_RATIO x its nearest known sound of
another family (when the head has a background: hops of sounds the general model was trained on)."""
SOFT_EDGE = 0.25
"""Between radius and (1 + SOFT_EDGE) x radius the weight falls linearly to 0: no jump at the border."""

FORMAT = "instrument_ai.personal"
FORMAT_VERSION = 1
_MAGIC = b"IAPERSONAL1\n"
_DIGEST_BYTES = 32


class PersonalError(ConfigurationError):
    """A personal file, note or family the device cannot use as given; one line, exit 2."""


class NoNoteError(PersonalError):
    """Audio in which the engine's onset detection found no note (silence, or too quiet for the gate)."""


class PersonalSaveError(InstrumentAIError):
    """Writing the personal file failed (a full disk, a read-only folder); the previous file is untouched."""


# -- the descriptor ----------------------------------------------------------------------------------------------


def silent_frame(spec: FrontendSpec) -> np.ndarray:
    """The frontend's frame of digital silence, float32 (n_mfcc,): what the engine pads windows with."""
    return mfcc(np.zeros(spec.win_length), spec)[:, 0].astype(np.float32)


def describe_window(window: np.ndarray, silent: np.ndarray) -> np.ndarray | None:
    """Mean and standard deviation of each coefficient over a window's sounding frames: (2 * n_mfcc,) float32.

    `window` is the raw MFCC window the model sees (n_mfcc, frames); frames equal to `silent` (the engine's
    padding, digital silence) are left out. None when no frame is left.
    """
    sounding = ~np.all(window == silent[:, None], axis=0)
    frames = window[:, sounding] if not sounding.all() else window
    if frames.shape[1] == 0:
        return None
    mean = frames.mean(axis=1)
    std = np.sqrt(np.maximum((frames * frames).mean(axis=1) - mean * mean, 0.0))
    return np.concatenate((mean, std)).astype(np.float32)


# -- note extraction ---------------------------------------------------------------------------------------------


@dataclass
class Note:
    """One enrolled (or enrollable) note: its hop descriptors, family and a short clip at the model's rate."""

    family: str
    descriptors: np.ndarray  # (hops, 2 * n_mfcc) float32, the note's first hops
    clip: np.ndarray | None = None  # int16 at the model's rate, at most CLIP_SECONDS
    onset: float = 0.0  # seconds from the start of the audio it came from
    source: str = ""
    probs: np.ndarray | None = None  # (hops, n_labels) the general model's output at those hops (model-dependent)


class _WindowTap:
    """A bundle stand-in for the engine: records each window it is asked about and the bundle's answer.

    The engine calls `predict` exactly at the hops the daemon would call the model, with the window the model
    would see, so extraction reuses the engine's silence gate and onset alignment without touching its insides.
    """

    def __init__(self, bundle: Any) -> None:
        self.labels = list(bundle.labels)
        self.spec = bundle.spec
        self.window_frames = int(bundle.window_frames)
        self.sample_rate = int(bundle.sample_rate)
        self.default_hop_seconds = float(bundle.default_hop_seconds)
        self.metadata = getattr(bundle, "metadata", None)
        self.windows: list[tuple[np.ndarray, np.ndarray]] = []
        self._bundle = bundle

    def predict(self, features: np.ndarray) -> np.ndarray:
        probs = np.asarray(self._bundle.predict(features), dtype=np.float32)
        self.windows.append((features, probs))
        return probs


def extract_notes(
    samples: np.ndarray,
    rate: int,
    bundle: Any,
    family: str,
    *,
    silence_db: float = -60.0,
    hop_seconds: float | None = None,
    source: str = "",
    keep_clip: bool = True,
) -> list[Note]:
    """The notes of a recording, one per onset as the engine finds them; NoNoteError when there is none.

    `samples` is mono or (frames, channels) float/int16 audio at `rate`; `bundle` gives the frontend, window
    and hop (anything `engine.BundleLike`). The engine settings that decide onsets (`silence_db`, the hop) should
    be the daemon's.
    """
    from instrument_ai.device.engine import Classifier
    from instrument_ai.device.resample import as_float_frames, resample

    check_family(family)
    audio = as_float_frames(np.asarray(samples), np.asarray(samples).shape[1] if np.ndim(samples) == 2 else 1)
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    model_rate = int(bundle.sample_rate)
    mono = resample(mono, int(rate), model_rate) if int(rate) != model_rate else mono.astype(np.float64)
    tap = _WindowTap(bundle)
    engine = Classifier(tap, hop_seconds=hop_seconds, silence_db=silence_db, smooth=1, input_rate=model_rate)
    hops = engine.process_hops(mono) + engine.flush()
    silent = silent_frame(bundle.spec)
    clip_samples = int(round(CLIP_SECONDS * model_rate))
    notes: list[Note] = []
    current: list[tuple[np.ndarray, np.ndarray]] = []
    windows = iter(tap.windows)
    start = 0
    previous_sounding = False
    for event in hops:
        sounding = event.probs is not None
        if sounding:
            window, probs = next(windows)
            if not previous_sounding:  # the engine's onset: the first sounding hop after silence
                _close_note(notes, current, family, mono, start, clip_samples, model_rate, source, keep_clip)
                current = []
                start = max(0, int(round((event.time - engine.hop_seconds) * model_rate)))
            if len(current) < MAX_NOTE_HOPS:
                descriptor = describe_window(window, silent)
                if descriptor is not None:
                    current.append((descriptor, probs))
        previous_sounding = sounding
    _close_note(notes, current, family, mono, start, clip_samples, model_rate, source, keep_clip)
    if not notes:
        raise NoNoteError(
            f"{source or 'the recording'}: no note found (nothing above the silence level of {silence_db:g} dBFS)"
        )
    return notes


def _close_note(
    notes: list[Note],
    hops: list[tuple[np.ndarray, np.ndarray]],
    family: str,
    mono: np.ndarray,
    start: int,
    clip_samples: int,
    rate: int,
    source: str,
    keep_clip: bool,
) -> None:
    if not hops:
        return
    clip = None
    if keep_clip:
        piece = np.clip(mono[start : start + clip_samples], -1.0, 1.0)
        clip = np.round(piece * 32767.0).astype(np.int16)
    descriptors = np.stack([d for d, _ in hops])
    probs = np.stack([p for _, p in hops]).astype(np.float32)
    notes.append(Note(family, descriptors, clip, onset=start / rate, source=source, probs=probs))


def check_family(family: str) -> None:
    if family not in LABELS:
        raise PersonalError(f"unknown family {family!r} (one of: {', '.join(LABELS)})")


# -- the head ----------------------------------------------------------------------------------------------------


def descriptor_scale(
    bundle_mean: np.ndarray, bundle_std: np.ndarray, *, use_level: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) that standardise a descriptor: (d - offset) * scale, per coefficient of the bundle's input.

    The means are centred and scaled like the model's input, the standard deviations scaled by the same std;
    c0's mean (the loudness) gets weight 0 unless `use_level`, so a note played softer is the same instrument.
    """
    std = np.asarray(bundle_std, dtype=np.float64)
    mean = np.asarray(bundle_mean, dtype=np.float64)
    offset = np.concatenate((mean, np.zeros_like(mean)))
    scale = np.concatenate((1.0 / std, 1.0 / std))
    if not use_level:
        scale[0] = 0.0
    return offset, scale / np.sqrt(scale.size)


def _point(
    descriptor: np.ndarray, probs: np.ndarray | None, offset: np.ndarray, scale: np.ndarray, prob_weight: float
) -> np.ndarray:
    """A hop in the head's space: the standardised descriptor, then prob_weight x sqrt of the general output."""
    z = (np.asarray(descriptor, dtype=np.float64) - offset) * scale
    if prob_weight <= 0.0 or probs is None:
        return z
    return np.concatenate((z, prob_weight * np.sqrt(np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0))))


def _squared_distances(points: np.ndarray, norms: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Squared distances of each row of `points` to `z`, as |p|^2 - 2 p.z + |z|^2 with the row norms given: one
    matrix-vector product per hop and no (N, D) temporary; clipped at 0 against rounding."""
    return np.maximum(norms - 2.0 * (points @ z) + float(z @ z), 0.0)


@dataclass
class PersonalHead:
    """A fitted head: the enrolled hops as prototypes, and one radius per enrolled family.

    A hop matches the family of its nearest prototype; inside that family's radius the general output is
    blended toward it (weight `blend`, falling to 0 over `soft_edge` beyond the radius), elsewhere untouched.
    """

    families: list[str]  # enrolled, active families
    label_index: np.ndarray  # (C,) index of each family in the bundle's labels
    prototypes: np.ndarray  # (N, D) enrolled hops in the head's space
    prototype_family: np.ndarray  # (N,) index into `families`
    radii: np.ndarray  # (C,)
    offset: np.ndarray  # (2 * n_mfcc,)
    scale: np.ndarray  # (2 * n_mfcc,)
    silent: np.ndarray  # (n_mfcc,) the frontend's silence frame
    prob_weight: float = 0.0
    envelopes: np.ndarray | None = None  # (C, n_labels) the most the general model gave each label on a family's notes
    background: np.ndarray | None = None  # (M, D) hops of known sounds of every family, in the head's space
    background_label: np.ndarray | None = None  # (M,) their label index in the bundle's labels
    background_ratio: float = BACKGROUND_RATIO
    bundle: dict[str, str] = field(default_factory=dict)  # `bundle_identity` of the bundle it was fitted for
    labels: list[str] = field(default_factory=list)  # that bundle's labels
    notes: int = 0  # enrolled notes it was fitted on
    _norms: np.ndarray = field(init=False, repr=False)
    _background_norms: np.ndarray | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._norms = np.einsum("ij,ij->i", self.prototypes, self.prototypes)
        self._background_norms = (
            None if self.background is None else np.einsum("ij,ij->i", self.background, self.background)
        )

    blend: float = BLEND
    soft_edge: float = SOFT_EDGE

    def fits(self, bundle: Any) -> bool:
        """True when `bundle` is the one the head was fitted for (same digests and labels): the engine keeps
        a head across a model swap only then."""
        theirs = bundle_identity(bundle)
        keys = ("model_sha256", "metadata_sha256")
        same = not self.bundle or all(self.bundle.get(k, "") == theirs[k] for k in keys)  # {}: fitted untied
        return same and (not self.labels or list(bundle.labels) == self.labels)

    def summary(self) -> dict[str, Any]:
        """What the daemon's records say about the head: ``{"families": [...], "notes": N}``."""
        return {"families": list(self.families), "notes": int(self.notes)}

    def match(self, descriptor: np.ndarray, probs: np.ndarray | None = None) -> tuple[int, float, float]:
        """(family index, distance, weight) of the nearest enrolled hop; weight 0 outside its family's radius."""
        z = _point(descriptor, probs, self.offset, self.scale, self.prob_weight)
        distances = _squared_distances(self.prototypes, self._norms, z)
        nearest = int(np.argmin(distances))
        best = int(self.prototype_family[nearest])
        distance = float(np.sqrt(distances[nearest]))
        ratio = distance / float(self.radii[best])
        if self.background is not None and self.background_label is not None and self._background_norms is not None:
            # closer to a known sound of another family than to the enrolled notes: not one of them
            known = _squared_distances(self.background, self._background_norms, z)
            rivals = known[self.background_label != self.label_index[best]]
            if rivals.size:
                rival = float(np.sqrt(rivals.min()))
                ratio = max(ratio, distance / max(self.background_ratio * rival, 1e-12))
        weight = self.blend * min(1.0, max(0.0, (1.0 + self.soft_edge - ratio) / self.soft_edge))
        return best, distance, weight

    def outside_envelope(self, family: int, probs: np.ndarray) -> bool:
        """True when the general model is surer of its top label than it ever was on the family's enrolled notes.

        A hop the model names with more confidence than any enrolled note of the matched family earned is not
        one of them (a pizzicato bass the model knows well, near an enrolled bowed cello): it is left alone.
        """
        if self.envelopes is None:
            return False
        top = int(np.argmax(probs))
        surer = float(probs[top]) > self.envelopes[family, top] + ENVELOPE_MARGIN
        return top != int(self.label_index[family]) and surer

    def adjust(self, window: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """The general model's probabilities for a hop, moved toward an enrolled family when the hop sounds like it.

        Returns `probs` itself (untouched) when the hop is outside every enrolled family's radius.
        """
        if not self.families:
            return probs
        descriptor = describe_window(window, self.silent)
        if descriptor is None:
            return probs
        best, _, weight = self.match(descriptor, probs)
        if weight <= 0.0 or self.outside_envelope(best, probs):
            return probs
        out = np.asarray(probs, dtype=np.float32) * (1.0 - weight)
        out[self.label_index[best]] += weight
        return out


def _note_points(note: Note, offset: np.ndarray, scale: np.ndarray, prob_weight: float) -> np.ndarray:
    """A note's hops in the head's space (the model's outputs only when `prob_weight` > 0)."""
    outputs = note.probs if prob_weight > 0 else None
    return np.stack(
        [
            _point(descriptor, None if outputs is None else outputs[i], offset, scale, prob_weight)
            for i, descriptor in enumerate(note.descriptors)
        ]
    )


def _leave_one_note_out(per_note: list[np.ndarray], quantile: float) -> float:
    """The `quantile` of each hop's distance to the nearest hop of *another* note of the same family."""
    loo = []
    for i, points in enumerate(per_note):
        others = np.concatenate([p for j, p in enumerate(per_note) if j != i])
        squared = ((points[:, None, :] - others[None, :, :]) ** 2).sum(axis=2)
        loo.append(np.sqrt(squared.min(axis=1)))
    return float(np.quantile(np.concatenate(loo), quantile))


def fit_head(
    notes: Sequence[Note],
    labels: Sequence[str],
    spec: FrontendSpec,
    bundle_mean: np.ndarray,
    bundle_std: np.ndarray,
    *,
    prob_weight: float = PROB_WEIGHT,
    radius_quantile: float = RADIUS_QUANTILE,
    radius_scale: float = RADIUS_SCALE,
    use_level: bool = False,
    use_envelope: bool = True,
    background: Sequence[Note] = (),
    background_ratio: float = BACKGROUND_RATIO,
) -> PersonalHead:
    """Fit the head: prototypes and leave-one-note-out radii; a family with fewer than MIN_NOTES notes is left out.

    A family's radius is `radius_scale` x the `radius_quantile` of its enrolled hops' distances to the nearest
    hop of *another* note of the family: how far an unseen note of it may be expected to lie. The general
    model's output joins the space (`prob_weight`) only when every note carries it (see `Note.probs`).
    """
    offset, scale = descriptor_scale(bundle_mean, bundle_std, use_level=use_level)
    labels = list(labels)
    if any(note.probs is None for note in notes):
        prob_weight = 0.0
    by_family: dict[str, list[np.ndarray]] = {}
    for note in notes:
        if note.family not in labels:
            raise PersonalError(f"enrolled family {note.family!r} is not a label of this model ({', '.join(labels)})")
        by_family.setdefault(note.family, []).append(_note_points(note, offset, scale, prob_weight))
    families: list[str] = []
    prototypes, owners, radii, envelopes = [], [], [], []
    family_probs: dict[str, list[np.ndarray]] = {}
    for note in notes:
        if note.probs is not None:
            family_probs.setdefault(note.family, []).append(note.probs)
    for family in sorted(by_family, key=labels.index):
        per_note = by_family[family]
        if len(per_note) < MIN_NOTES:
            continue
        spread = _leave_one_note_out(per_note, radius_quantile)
        stacked = np.concatenate(per_note)
        prototypes.append(stacked)
        owners.append(np.full(stacked.shape[0], len(families)))
        families.append(family)
        radii.append(max(spread * radius_scale, 1e-6))
        if prob_weight > 0:
            envelopes.append(np.concatenate(family_probs[family]).max(axis=0))
    width = offset.size + (len(labels) if prob_weight > 0 else 0)
    known = [
        (_note_points(note, offset, scale, prob_weight), labels.index(note.family))
        for note in background
        if note.family in labels and (note.probs is not None or prob_weight == 0)
    ]
    return PersonalHead(
        families=families,
        label_index=np.array([labels.index(f) for f in families], dtype=np.int64),
        prototypes=np.concatenate(prototypes) if prototypes else np.zeros((0, width)),
        prototype_family=np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64),
        radii=np.array(radii, dtype=np.float64),
        offset=offset,
        scale=scale,
        silent=silent_frame(spec),
        prob_weight=prob_weight,
        envelopes=np.array(envelopes, dtype=np.float64) if prob_weight > 0 and use_envelope else None,
        background=np.concatenate([p for p, _ in known]) if known else None,
        background_label=np.concatenate([np.full(p.shape[0], i) for p, i in known]) if known else None,
        background_ratio=background_ratio,
        labels=labels,
        notes=sum(1 for note in notes if note.family in families),
    )


# -- the personal file -------------------------------------------------------------------------------------------


def bundle_identity(bundle: Any) -> dict[str, str]:
    """What ties a personal file to one bundle: its two integrity digests (docs/bundle-format.md), name, version."""
    metadata = getattr(bundle, "metadata", None) or {}
    integrity = metadata.get("integrity") or {}
    return {
        "model_sha256": str(integrity.get("model_sha256", "")),
        "metadata_sha256": str(integrity.get("metadata_sha256", "")),
        "name": str(metadata.get("name", getattr(bundle, "name", ""))),
        "version": str(metadata.get("version", getattr(bundle, "version", ""))),
    }


@dataclass
class PersonalFile:
    """The enrolled notes and the bundle they were fitted for; `head()` fits the head for that bundle."""

    bundle: dict[str, str]
    spec: FrontendSpec
    notes: list[Note] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @classmethod
    def new(cls, bundle: Any) -> PersonalFile:
        return cls(bundle_identity(bundle), bundle.spec)

    def families(self) -> dict[str, int]:
        """Enrolled notes per family, in label order."""
        counts: dict[str, int] = {}
        for note in self.notes:
            counts[note.family] = counts.get(note.family, 0) + 1
        return {f: counts[f] for f in LABELS if f in counts}

    def add(self, notes: Iterable[Note]) -> None:
        """Add notes, keeping at most MAX_CLIPS_PER_FAMILY clips per family (descriptors are always kept)."""
        for note in notes:
            check_family(note.family)
            if note.descriptors.ndim != 2 or note.descriptors.shape[1] != 2 * self.spec.n_mfcc:
                raise PersonalError(
                    f"a note's descriptors have shape {note.descriptors.shape}, expected (hops, {2 * self.spec.n_mfcc})"
                )
            clips = sum(1 for n in self.notes if n.family == note.family and n.clip is not None)
            if note.clip is not None and clips >= MAX_CLIPS_PER_FAMILY:
                note = Note(note.family, note.descriptors, None, note.onset, note.source, note.probs)
            self.notes.append(note)

    def forget(self, family: str) -> int:
        """Drop every note of a family; returns how many went."""
        check_family(family)
        before = len(self.notes)
        self.notes = [n for n in self.notes if n.family != family]
        return before - len(self.notes)

    def check_bundle(self, bundle: Any, path: str = "personal file") -> None:
        """PersonalError unless this file was fitted for `bundle` (same digests)."""
        mine, theirs = self.bundle, bundle_identity(bundle)
        same = all(mine[k] == theirs[k] for k in ("model_sha256", "metadata_sha256"))
        if not same:
            raise PersonalError(
                f"{path}: made for model {mine['name']} {mine['version']} ({mine['model_sha256'][:12]}), not for "
                f"{theirs['name']} {theirs['version']} ({theirs['model_sha256'][:12]}); re-fit it for this model"
            )

    def head(self, bundle: Any, path: str = "personal file", background: Sequence[Note] = ()) -> PersonalHead:
        """The head for `bundle`, refusing a bundle the file was not fitted for (see `fit_head` for `background`)."""
        self.check_bundle(bundle, path)
        head = fit_head(self.notes, bundle.labels, bundle.spec, bundle.mean, bundle.std, background=background)
        head.bundle = dict(self.bundle)
        return head

    def refit(self, bundle: Any) -> PersonalFile:
        """The same enrolment tied to another bundle, without asking the user again.

        A note with a clip is heard again through the new bundle (new descriptors and general outputs). A note
        without one keeps its descriptors when the frontend is the same, but loses its general outputs (they
        belong to the old model), so the head then fits on the descriptors alone; with another frontend it is
        dropped. PersonalError when nothing is left.
        """
        notes: list[Note] = []
        for note in self.notes:
            if note.clip is None:
                if bundle.spec == self.spec:
                    notes.append(Note(note.family, note.descriptors, None, note.onset, note.source, None))
                continue
            try:
                found = extract_notes(note.clip, int(self.spec.sample_rate), bundle, note.family, source=note.source)
            except NoNoteError:
                continue
            notes.append(found[0])
        if not notes:
            raise PersonalError("the new model uses another frontend and no enrolled note kept its audio; enrol again")
        refitted = PersonalFile(bundle_identity(bundle), bundle.spec, [], self.created)
        refitted.add(notes)
        return refitted

    # -- bytes ---------------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Magic line, header length, JSON header, the arrays (little-endian), then SHA-256 of all of it."""
        descriptors = [n.descriptors.astype("<f4") for n in self.notes]
        probs = [n.probs.astype("<f4") if n.probs is not None else np.zeros((0,), "<f4") for n in self.notes]
        clips = [n.clip.astype("<i2") if n.clip is not None else np.zeros(0, "<i2") for n in self.notes]
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "bundle": self.bundle,
            "frontend_spec": self.spec.to_dict(),
            "descriptor": "mfcc_mean_std",
            "created": self.created,
            "notes": [
                {
                    "family": n.family,
                    "hops": int(d.shape[0]),
                    "outputs": int(p.shape[1]) if p.ndim == 2 else 0,
                    "clip_samples": int(c.size),
                    "onset": round(float(n.onset), 4),
                    "source": n.source,
                }
                for n, d, p, c in zip(self.notes, descriptors, probs, clips, strict=True)
            ],
        }
        head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        body = b"".join(a.tobytes() for a in (*descriptors, *probs, *clips))
        payload = _MAGIC + len(head).to_bytes(4, "little") + head + body
        return payload + hashlib.sha256(payload).digest()

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "personal file") -> PersonalFile:
        """Parse and verify; PersonalError (one line) for a foreign, truncated, edited or malformed file."""
        if not data.startswith(_MAGIC):
            raise PersonalError(f"{path}: not a personal file of instrument-ai")
        payload, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
        if len(data) < len(_MAGIC) + 4 + _DIGEST_BYTES or hashlib.sha256(payload).digest() != digest:
            raise PersonalError(f"{path}: damaged (truncated or edited: its checksum does not match); enrol again")
        try:
            size = int.from_bytes(payload[len(_MAGIC) : len(_MAGIC) + 4], "little")
            start = len(_MAGIC) + 4
            header = json.loads(payload[start : start + size])
            if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
                raise ValueError(f"format {header.get('format')} version {header.get('version')} is not supported")
            spec = FrontendSpec.from_dict(header["frontend_spec"])
            reader = _Reader(payload, start + size)
            entries = header["notes"]
            width = 2 * spec.n_mfcc
            notes = [
                Note(
                    str(e["family"]),
                    reader.take("<f4", int(e["hops"]) * width).reshape(-1, width),
                    None,
                    float(e["onset"]),
                    str(e["source"]),
                )
                for e in entries
            ]
            for note, entry in zip(notes, entries, strict=True):
                outputs = int(entry["outputs"])
                values = reader.take("<f4", note.descriptors.shape[0] * outputs)
                note.probs = values.reshape(-1, outputs) if outputs else None
            for note, entry in zip(notes, entries, strict=True):
                clip = reader.take("<i2", int(entry["clip_samples"]))
                note.clip = clip if clip.size else None
            if reader.offset != len(payload):
                raise ValueError(f"{len(payload) - reader.offset} bytes left over")
            for note in notes:
                check_family(note.family)
            return cls(dict(header["bundle"]), spec, notes, float(header["created"]))
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise PersonalError(f"{path}: not a valid personal file ({exc})") from None

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync, rename, fsync the folder.

        A failure (a full disk) leaves the previous file as it was and raises PersonalSaveError.
        """
        save_atomically(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> PersonalFile:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PersonalError(f"{path}: no such personal file") from None
        except OSError as exc:
            raise PersonalError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        return cls.from_bytes(data, str(path))


class _Reader:
    """Consecutive typed arrays out of one payload; ValueError when it runs short."""

    def __init__(self, payload: bytes, offset: int) -> None:
        self.payload, self.offset = payload, offset

    def take(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if count < 0 or self.offset + size > len(self.payload):
            raise ValueError("the arrays are shorter than the header says")
        out = np.frombuffer(self.payload, dtype, count, self.offset).astype(dtype[1:] if dtype[0] == "<" else dtype)
        self.offset += size
        return out


def save_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` so that a reader sees the old file or the new one, never a part."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = -1, ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
        tmp = ""
        _fsync_folder(folder)
    except OSError as exc:
        reason = exc.strerror or exc
        raise PersonalSaveError(f"{path}: could not be saved ({reason}); the previous file is kept") from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some systems cannot open a folder; the rename itself is atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

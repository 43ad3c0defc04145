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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instrument_ai.device.errors import ConfigurationError, InstrumentAIError
from instrument_ai.device.frontend import FrontendSpec, model_input
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
RADIUS_RULES = ("nearest", "pairwise")
"""Which leave-one-note-out distances the radius is a quantile of: each hop's distance to the nearest hop of any
other note ("nearest"; shrinks as notes are added, more so with near-duplicates such as one pitch at two
velocities), or to the nearest hop of each other note in turn ("pairwise"; about the same for 3 notes or 10)."""
RADIUS_RULE = "nearest"
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

MFCC = "mfcc_mean_std"
"""Descriptor of a hop from the window's MFCCs (`describe_window`): any bundle, what bundles up to 0.4.0 allow."""
EMBEDDING = "embedding"
"""Descriptor of a hop from the bundle's embedding output (the network's penultimate activations), L2-normalised."""
DESCRIPTORS = (MFCC, EMBEDDING)
_LAZY = ("PersonalFile", "FORMAT", "FORMAT_VERSION", "save_atomically")


class PersonalError(ConfigurationError):
    """A personal file, note or family the device cannot use as given; one line, exit 2."""


class NoNoteError(PersonalError):
    """Audio in which the engine's onset detection found no note (silence, or too quiet for the gate)."""


class PersonalSaveError(InstrumentAIError):
    """Writing the personal file failed (a full disk, a read-only folder); the previous file is untouched."""


# -- the descriptor ----------------------------------------------------------------------------------------------


def descriptor_kind(bundle: Any) -> str:
    """The descriptor a bundle offers: its embedding output when it has one, else MFCC statistics."""
    return EMBEDDING if int(getattr(bundle, "embedding_size", 0) or 0) > 0 else MFCC


def descriptor_width(kind: str, bundle: Any) -> int:
    """Values per hop descriptor of `kind` for `bundle` (PersonalError when the bundle cannot give that kind)."""
    if kind == MFCC:
        return 2 * int(bundle.spec.n_features)
    width = int(getattr(bundle, "embedding_size", 0) or 0)
    if kind != EMBEDDING or width <= 0:
        raise PersonalError(f"the model offers no {kind} descriptor (it has no embedding output)")
    return width


def describe_hop(kind: str, window: np.ndarray, silent: np.ndarray, embedding: np.ndarray | None) -> np.ndarray | None:
    """A hop's descriptor of `kind`: MFCC statistics of its window, or the model's embedding for it (float32)."""
    if kind == MFCC:
        return describe_window(window, silent)
    return None if embedding is None else np.asarray(embedding, dtype=np.float32).reshape(-1).copy()


def silent_frame(spec: FrontendSpec) -> np.ndarray:
    """The frontend's frame of digital silence, float32 (n_features,): what the engine pads windows with.

    The model's own input stage (MFCC or log-mel), as the engine computes its padding: a log-mel bundle's
    windows have n_mels rows, not n_mfcc.
    """
    return model_input(np.zeros(spec.win_length), spec)[:, 0].astype(np.float32)


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
        self.windows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._bundle = bundle
        self._embedding = getattr(bundle, "last_embedding", None)

    def predict(self, features: np.ndarray) -> np.ndarray:
        probs = np.asarray(self._bundle.predict(features), dtype=np.float32)
        self.windows.append((features, probs, None if self._embedding is None else self._embedding()))
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
    descriptor: str | None = None,
) -> list[Note]:
    """The notes of a recording, one per onset as the engine finds them; NoNoteError when there is none.

    `samples` is mono or (frames, channels) float/int16 audio at `rate`; `bundle` gives the frontend, window
    and hop (anything `engine.BundleLike`). The engine settings that decide onsets (`silence_db`, the hop) should
    be the daemon's. `descriptor`: the kind of hop descriptor (default: the best the bundle offers).
    """
    from instrument_ai.device.engine import Classifier
    from instrument_ai.device.resample import as_float_frames, resample

    check_family(family)
    kind = descriptor or descriptor_kind(bundle)
    descriptor_width(kind, bundle)  # PersonalError when the bundle cannot give it
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
            window, probs, embedding = next(windows)
            if not previous_sounding:  # the engine's onset: the first sounding hop after silence
                _close_note(notes, current, family, mono, start, clip_samples, model_rate, source, keep_clip)
                current = []
                start = max(0, int(round((event.time - engine.hop_seconds) * model_rate)))
            if len(current) < MAX_NOTE_HOPS:
                described = describe_hop(kind, window, silent, embedding)
                if described is not None:
                    current.append((described, probs))
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
    descriptor: np.ndarray,
    probs: np.ndarray | None,
    offset: np.ndarray,
    scale: np.ndarray,
    prob_weight: float,
    unit: bool = False,
) -> np.ndarray:
    """A hop in the head's space: the standardised descriptor (of length 1 when `unit`: an embedding, whose
    direction, not its size, says what sounds), then prob_weight x sqrt of the general output."""
    z = (np.asarray(descriptor, dtype=np.float64) - offset) * scale
    if unit:
        z = z / max(float(np.sqrt(z @ z)), 1e-12)
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
    descriptor: str = MFCC  # the kind of hop descriptor its prototypes are made of
    unit: bool = False  # descriptors scaled to length 1 (embeddings)

    def fits(self, bundle: Any) -> bool:
        """True when `bundle` is the one the head was fitted for (same digests and labels): the engine keeps
        a head across a model swap only then."""
        theirs = bundle_identity(bundle)
        keys = ("model_sha256", "metadata_sha256")
        same = not self.bundle or all(self.bundle.get(k, "") == theirs[k] for k in keys)  # {}: fitted untied
        if self.descriptor == EMBEDDING and int(getattr(bundle, "embedding_size", 0) or 0) != self.offset.size:
            return False  # an embedding head needs the embedding it was fitted on
        return same and (not self.labels or list(bundle.labels) == self.labels)

    def summary(self) -> dict[str, Any]:
        """What the daemon's records say about the head: ``{"families": [...], "notes": N, "descriptor": ...}``."""
        known = {} if self.background is None else {"background": int(self.background.shape[0])}
        return {"families": list(self.families), "notes": int(self.notes), "descriptor": self.descriptor, **known}

    def match(self, descriptor: np.ndarray, probs: np.ndarray | None = None) -> tuple[int, float, float]:
        """(family index, distance, weight) of the nearest enrolled hop; weight 0 outside its family's radius."""
        z = _point(descriptor, probs, self.offset, self.scale, self.prob_weight, self.unit)
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

    def adjust_batch(self, descriptors: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """`adjust` for many described hops at once, (N, n_labels) float32: the same decisions as hop by hop
        (`match` and `outside_envelope`), as matrix products; for offline scoring (`experiment enrol`)."""
        probs = np.asarray(probs, dtype=np.float32)
        if not self.families or len(probs) == 0:
            return probs.copy()
        z = (np.asarray(descriptors, dtype=np.float64) - self.offset) * self.scale
        if self.unit:
            z /= np.maximum(np.sqrt(np.einsum("ij,ij->i", z, z)), 1e-12)[:, None]
        if self.prob_weight > 0:
            z = np.concatenate((z, self.prob_weight * np.sqrt(np.clip(probs.astype(np.float64), 0.0, 1.0))), axis=1)
        own = np.einsum("ij,ij->i", z, z)[:, None]
        squared = np.maximum(self._norms[None, :] - 2.0 * (z @ self.prototypes.T) + own, 0.0)
        nearest = np.argmin(squared, axis=1)
        rows = np.arange(len(z))
        best = self.prototype_family[nearest]
        distance = np.sqrt(squared[rows, nearest])
        ratio = distance / self.radii[best]
        if self.background is not None and self.background_label is not None and self._background_norms is not None:
            known = np.maximum(self._background_norms[None, :] - 2.0 * (z @ self.background.T) + own, 0.0)
            rivals = np.where(self.background_label[None, :] != self.label_index[best][:, None], known, np.inf)
            rival = np.sqrt(rivals.min(axis=1))
            has = np.isfinite(rival)
            ratio[has] = np.maximum(ratio[has], distance[has] / np.maximum(self.background_ratio * rival[has], 1e-12))
        weight = self.blend * np.clip((1.0 + self.soft_edge - ratio) / self.soft_edge, 0.0, 1.0)
        if self.envelopes is not None:
            top = np.argmax(probs, axis=1)
            surer = probs[rows, top] > self.envelopes[best, top] + ENVELOPE_MARGIN
            weight[(top != self.label_index[best]) & surer] = 0.0
        out = probs * (1.0 - weight[:, None]).astype(np.float32)
        out[rows, self.label_index[best]] += weight.astype(np.float32)
        return out

    def adjust(self, window: np.ndarray, probs: np.ndarray, embedding: np.ndarray | None = None) -> np.ndarray:
        """The general model's probabilities for a hop, moved toward an enrolled family when the hop sounds like it.

        `embedding`: the model's embedding output for this window (needed by an embedding head). Returns `probs`
        itself (untouched) when the hop is outside every enrolled family's radius.
        """
        if not self.families:
            return probs
        descriptor = describe_hop(self.descriptor, window, self.silent, embedding)
        if descriptor is None:
            return probs
        best, _, weight = self.match(descriptor, probs)
        if weight <= 0.0 or self.outside_envelope(best, probs):
            return probs
        out = np.asarray(probs, dtype=np.float32) * (1.0 - weight)
        out[self.label_index[best]] += weight
        return out


def _note_points(
    note: Note, offset: np.ndarray, scale: np.ndarray, prob_weight: float, unit: bool = False
) -> np.ndarray:
    """A note's hops in the head's space (the model's outputs only when `prob_weight` > 0)."""
    outputs = note.probs if prob_weight > 0 else None
    return np.stack(
        [
            _point(descriptor, None if outputs is None else outputs[i], offset, scale, prob_weight, unit)
            for i, descriptor in enumerate(note.descriptors)
        ]
    )


def _space(
    descriptor: str, notes: Sequence[Note], bundle_mean: np.ndarray, bundle_std: np.ndarray, use_level: bool
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(offset, scale, unit) of the head's space for `descriptor`: MFCC statistics standardised by the bundle's
    input statistics (`descriptor_scale`); embeddings as they are, scaled to length 1."""
    if descriptor == MFCC:
        return (*descriptor_scale(bundle_mean, bundle_std, use_level=use_level), False)
    if descriptor != EMBEDDING:
        raise PersonalError(f"descriptor {descriptor!r} is not one of {', '.join(DESCRIPTORS)}")
    widths = {int(note.descriptors.shape[1]) for note in notes}
    if len(widths) > 1:
        raise PersonalError(f"the notes' embeddings have different sizes ({sorted(widths)})")
    width = widths.pop() if widths else 0
    return np.zeros(width), np.ones(width), True


def _leave_one_note_out(per_note: list[np.ndarray], quantile: float, rule: str = RADIUS_RULE) -> float:
    """The `quantile` of each hop's distance to the nearest hop of *another* note of the same family ("nearest"),
    or to the nearest hop of each other note in turn ("pairwise"; see `RADIUS_RULES`)."""
    if rule not in RADIUS_RULES:
        raise ValueError(f"radius rule {rule!r} is not one of {', '.join(RADIUS_RULES)}")
    loo = []
    for i, points in enumerate(per_note):
        nearest = [
            np.sqrt(((points[:, None, :] - other[None, :, :]) ** 2).sum(axis=2).min(axis=1))
            for j, other in enumerate(per_note)
            if j != i
        ]
        loo.append(np.min(nearest, axis=0) if rule == "nearest" else np.concatenate(nearest))
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
    radius_rule: str = RADIUS_RULE,
    use_level: bool = False,
    use_envelope: bool = True,
    background: Sequence[Note] = (),
    background_ratio: float = BACKGROUND_RATIO,
    descriptor: str = MFCC,
) -> PersonalHead:
    """Fit the head: prototypes and leave-one-note-out radii; a family with fewer than MIN_NOTES notes is left out.

    A family's radius is `radius_scale` x the `radius_quantile` of its enrolled hops' distances to the nearest
    hop of *another* note of the family: how far an unseen note of it may be expected to lie. The general
    model's output joins the space (`prob_weight`) only when every note carries it (see `Note.probs`).
    `descriptor` names what the notes' (and the background's) descriptors are (`MFCC` or `EMBEDDING`).
    """
    offset, scale, unit = _space(descriptor, [*notes, *background], bundle_mean, bundle_std, use_level)
    labels = list(labels)
    if any(note.probs is None for note in notes):
        prob_weight = 0.0
    by_family: dict[str, list[np.ndarray]] = {}
    for note in notes:
        if note.family not in labels:
            raise PersonalError(f"enrolled family {note.family!r} is not a label of this model ({', '.join(labels)})")
        by_family.setdefault(note.family, []).append(_note_points(note, offset, scale, prob_weight, unit))
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
        spread = _leave_one_note_out(per_note, radius_quantile, radius_rule)
        stacked = np.concatenate(per_note)
        prototypes.append(stacked)
        owners.append(np.full(stacked.shape[0], len(families)))
        families.append(family)
        radii.append(max(spread * radius_scale, 1e-6))
        if prob_weight > 0:
            envelopes.append(np.concatenate(family_probs[family]).max(axis=0))
    width = offset.size + (len(labels) if prob_weight > 0 else 0)
    known = [
        (_note_points(note, offset, scale, prob_weight, unit), labels.index(note.family))
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
        descriptor=descriptor,
        unit=unit,
    )


# -- the personal file -------------------------------------------------------------------------------------------


BACKGROUND_FIELD = "personal_background"
"""Bundle metadata field of the known sounds a head keeps apart from (`convert --background CORPUS` writes it)."""


def bundle_background(bundle: Any, descriptor: str) -> list[Note]:
    """The bundle's background of known sounds as one-hop notes, when it holds `descriptor` descriptors; [] when
    it has none (or of another kind). PersonalError (one line) for a malformed field.

    The field (docs/bundle-format.md): ``descriptor``, ``width``, ``labels`` (one label per point),
    ``descriptors_f16`` (base64 little-endian float16, points x width) and ``probs_u8`` (base64 uint8, the general
    model's output x 255, points x labels): per point the mean over a training-like note's hops.
    """
    import base64
    import binascii

    field_ = (getattr(bundle, "metadata", None) or {}).get(BACKGROUND_FIELD)
    if not isinstance(field_, dict) or field_.get("descriptor") != descriptor:
        return []
    labels = list(bundle.labels)
    try:
        width, owners = int(field_["width"]), [str(v) for v in field_["labels"]]
        if width <= 0 or any(label not in labels for label in owners):
            raise ValueError("labels or width")
        points = np.frombuffer(base64.b64decode(field_["descriptors_f16"], validate=True), "<f2").astype(np.float32)
        probs = np.frombuffer(base64.b64decode(field_["probs_u8"], validate=True), np.uint8).astype(np.float32)
        points, probs = points.reshape(len(owners), width), probs.reshape(len(owners), len(labels)) / 255.0
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise PersonalError(f"the model's {BACKGROUND_FIELD} metadata is malformed ({exc})") from None
    return [Note(owner, points[i : i + 1], probs=probs[i : i + 1]) for i, owner in enumerate(owners)]


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


def __getattr__(name: str) -> Any:
    """The personal file lives in `personal_file` (split for size); its names stay reachable from here."""
    if name in _LAZY:
        from instrument_ai.device import personal_file

        return getattr(personal_file, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

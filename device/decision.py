"""The one rule that turns (smoothed) probabilities into a label, shared by the engine and the evaluation.

Pure: no state, no model. The engine calls `decide_label` once per sounding hop on its smoothed
probabilities; `train/evaluate.py`'s "as the daemon decides" figures call `decide_labels` on every window,
so the figures cannot drift from the daemon.

The rule: the top class, unless its probability is under `min_confidence` (``unknown``), or the open-set
check rejects it - its temperature-calibrated maximum probability under the bundle's threshold - which turns
an instrument (never ``other``) into ``unknown``.

One decision per note (`EngineSettings.decision` ``"note"``): a hop is decided on the evidence of its whole
note so far - the mean log-probability over the note's sounding hops, turned back into probabilities
(`note_distribution`) - by the same rule. A note starts at an onset: the first sounding hop after silence, or
a hop in which the level jumps (`find_onset`: a re-attack, a repeated note, a gap shorter than a hop).

>>> import numpy as np
>>> from instrument_ai.device.openset import Rejection
>>> labels = ["flute", "organ", "other"]
>>> decide_label(np.array([0.7, 0.2, 0.1]), labels, min_confidence=0.4)
'flute'
>>> decide_label(np.array([0.35, 0.33, 0.32]), labels, min_confidence=0.4)
'unknown'
>>> decide_labels(np.array([[0.5, 0.4, 0.1], [0.1, 0.2, 0.7]]), labels, min_confidence=0.4,
...               rejection=Rejection(threshold=0.6))
['unknown', 'other']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from instrument_ai.device.labels import OTHER, SILENCE, UNKNOWN
from instrument_ai.device.openset import Rejection

ONSET_RISE_DB = 9.0
"""A frame-hop chunk this many dB above the quietest of the `ONSET_LOOKBACK` chunks before it starts a new note."""
ONSET_LOOKBACK = 6
"""Chunks (frame hops, 16 ms as shipped) before a chunk that `onset_within` compares it with (~0.1 s)."""
LOG_FLOOR = 1e-12
"""Probabilities are clipped to this before the logarithm (a model's exact 0 would veto a class forever)."""

NO_REJECTION = Rejection()
"""A bundle without ``open_set`` metadata: temperature 1, threshold 0."""


def decide_labels(
    probs: np.ndarray, labels: Sequence[str], *, min_confidence: float, rejection: Rejection = NO_REJECTION
) -> list[str]:
    """The label of each row of `probs` (n, len(labels)): the top class, or ``unknown`` (see the module doc)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probabilities of shape {probs.shape} do not match {len(labels)} labels")
    if probs.shape[0] == 0:
        return []
    top = probs.argmax(axis=1)  # the first of equal maxima, as a stable sort would put first
    confidence = probs.max(axis=1)
    calibrated = rejection.calibrate(probs).max(axis=1)
    out = []
    for k, index in enumerate(top):
        label = labels[int(index)]
        if confidence[k] < min_confidence or (label != OTHER and calibrated[k] < rejection.threshold):
            label = UNKNOWN
        out.append(label)
    return out


def decide_label(
    probs: np.ndarray, labels: Sequence[str], *, min_confidence: float, rejection: Rejection = NO_REJECTION
) -> str:
    """The label of one hop's probabilities (1-D), by the same rule as `decide_labels`."""
    row = np.asarray(probs, dtype=np.float64).reshape(1, -1)
    return decide_labels(row, labels, min_confidence=min_confidence, rejection=rejection)[0]


PITCHED_GUARD_RATIO = 0.25
"""`guard_pitched` acts only when the best instrument holds at least this share of `other`'s probability: an
instrument is "close". A pitched hop the model is sure is `other` (a hum, a whistle) stays `other`."""


def guard_pitched(
    probs: np.ndarray, labels: Sequence[str], salience: float, threshold: float | None, *,
    ratio: float = PITCHED_GUARD_RATIO,
) -> np.ndarray:
    """`other` may not swallow (nor help reject) a clearly pitched hop: when `salience` >= `threshold` and the best
    instrument is close (`ratio` of `other`'s probability, or above it), `other`'s probability is
    removed and the rest renormalised, so the usual rule (`decide_label`: floor, open set) decides among the
    instruments. Otherwise (no guard, no `other` output, not pitched, no instrument close) `probs` is returned
    unchanged.

    >>> labels = ["flute", "organ", "other"]
    >>> guard_pitched(np.array([0.2, 0.1, 0.7]), labels, 0.9, 0.6).round(3).tolist()
    [0.667, 0.333, 0.0]
    >>> guard_pitched(np.array([0.2, 0.1, 0.7]), labels, 0.5, 0.6).tolist()  # not pitched enough
    [0.2, 0.1, 0.7]
    >>> guard_pitched(np.array([0.05, 0.05, 0.9]), labels, 0.9, 0.6).tolist()  # no instrument close
    [0.05, 0.05, 0.9]
    >>> guard_pitched(np.array([0.35, 0.3, 0.35]), labels, 0.9, 0.6).round(3).tolist()  # under the floor before
    [0.538, 0.462, 0.0]
    """
    probs = np.asarray(probs, dtype=np.float64)
    if threshold is None or salience < threshold or OTHER not in labels:
        return probs
    other = list(labels).index(OTHER)
    instruments = np.delete(probs, other)
    if instruments.max() < ratio * probs[other] or instruments.sum() <= 0:
        return probs
    guarded = probs.copy()
    guarded[other] = 0.0
    return guarded / guarded.sum()


def floor_unpitched(label: str, labels: Sequence[str], salience: float, floor: float | None) -> str:
    """A hop with no stable period (`salience` under `floor`: noise, rain, sea, a slap, a cabasa) is not named an
    instrument: every family here is pitched, so an instrument label there is a false event. It becomes ``other``
    (``unknown`` for a bundle without that output); any other label, or no floor, is kept.

    >>> floor_unpitched("bass", ["bass", "other"], 0.12, 0.35), floor_unpitched("bass", ["bass", "other"], 0.8, 0.35)
    ('other', 'bass')
    >>> floor_unpitched("bass", ["bass", "flute"], 0.12, 0.35), floor_unpitched("bass", ["bass"], 0.12, None)
    ('unknown', 'bass')
    """
    if floor is None or salience >= floor or label in (OTHER, UNKNOWN, SILENCE):
        return label
    return OTHER if OTHER in labels else UNKNOWN


def note_distribution(log_sum: np.ndarray, hops: int) -> np.ndarray:
    """The note's probabilities from the sum of its hops' log-probabilities: exp(mean), renormalised to 1."""
    mean = np.asarray(log_sum, dtype=np.float64) / max(1, hops)
    weights = np.exp(mean - mean.max())
    return weights / weights.sum()


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """One hop's (or rows of hops') log-probabilities, clipped at `LOG_FLOOR`: what a note accumulates."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), LOG_FLOOR, None))


def decide_note_labels(
    probs: np.ndarray,
    note_starts: Sequence[bool] | np.ndarray,
    labels: Sequence[str],
    *,
    min_confidence: float,
    rejection: Rejection = NO_REJECTION,
    first_answer_hop: int = 1,
) -> list[str]:
    """The label of each sounding hop under one decision per note (batch form of the engine's running sum).

    `probs` (n, len(labels)) are the hops' raw model outputs in time order; `note_starts[k]` is True where hop
    k starts a new note (silence between hops, or an onset). Hop k is decided on `note_distribution` of its
    note's hops up to and including k, by the rule of `decide_labels`, then `wait_for_answer`.

    >>> labels = ["flute", "organ", "other"]
    >>> hops = np.array([[0.45, 0.35, 0.2], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    >>> decide_note_labels(hops, [True, False, False], labels, min_confidence=0.4)
    ['flute', 'flute', 'flute']
    >>> decide_note_labels(hops, [True, False, True], labels, min_confidence=0.4)
    ['flute', 'flute', 'organ']
    """
    probs = np.asarray(probs, dtype=np.float64)
    starts = np.asarray(note_starts, dtype=bool)
    if probs.ndim != 2 or probs.shape[1] != len(labels) or starts.shape != (probs.shape[0],):
        raise ValueError(f"probabilities of shape {probs.shape} and {starts.shape} note starts do not match "
                         f"{len(labels)} labels")  # fmt: skip
    if probs.shape[0] == 0:
        return []
    logs = log_probabilities(probs)
    rows = np.empty_like(probs)
    total = np.zeros(len(labels))
    counts = np.zeros(probs.shape[0], dtype=np.int64)
    count = 0
    for k in range(probs.shape[0]):
        if starts[k] or k == 0:
            total[:] = 0.0
            count = 0
        total += logs[k]
        count += 1
        counts[k] = count
        rows[k] = note_distribution(total, count)
    decided = decide_labels(rows, labels, min_confidence=min_confidence, rejection=rejection)
    return [wait_for_answer(label, int(n), first_answer_hop) for label, n in zip(decided, counts, strict=True)]


def wait_for_answer(label: str, note_hop: int, first_answer_hop: int) -> str:
    """``unknown`` instead of a family on a note's hops before its `first_answer_hop`-th (`note_hop` 1 is its
    first; `EngineSettings.first_answer_hop`): a one-hop sound then never becomes an instrument event.

    >>> [wait_for_answer(label, n, 2) for label, n in (("reed", 1), ("reed", 2), ("other", 1))]
    ['unknown', 'reed', 'other']
    """
    return UNKNOWN if note_hop < first_answer_hop and label not in (OTHER, SILENCE, UNKNOWN) else label


def chunk_levels_db(samples: np.ndarray, chunk: int) -> np.ndarray:
    """The RMS level (dBFS) of each whole `chunk` of `samples` (-inf for digital silence)."""
    whole = (samples.size // chunk) * chunk
    chunks = np.asarray(samples[:whole], dtype=np.float64).reshape(-1, chunk)
    energy = np.einsum("ij,ij->i", chunks, chunks) / chunk
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(energy)


def find_onset(
    levels_db: np.ndarray,
    since: int,
    *,
    floor_db: float,
    rise_db: float = ONSET_RISE_DB,
    lookback: int = ONSET_LOOKBACK,
) -> int | None:
    """The first chunk at index >= `since` that rises at least `rise_db` above the quietest of the `lookback`
    chunks before it, above `floor_db` (the silence gate), where the chunk before it did not: a new attack
    within sound (counted once, not again while the quiet chunk is still in view); None when there is none.

    Only level jumps count: a legato change of pitch at an even level stays one note to this rule.

    >>> find_onset(np.array([-20.0, -21, -22, -10, -10]), 3, floor_db=-60)
    3
    >>> find_onset(np.array([-20.0, -21, -22, -18, -19]), 3, floor_db=-60) is None
    True
    >>> find_onset(np.array([-20.0, -21, -22, -10, -10]), 4, floor_db=-60) is None  # found in the hop before
    True
    """
    levels = np.asarray(levels_db, dtype=np.float64)

    def rises(k: int) -> bool:
        return k >= 1 and bool(levels[k] >= floor_db and levels[k] - levels[max(0, k - lookback) : k].min() >= rise_db)

    for k in range(max(1, since), levels.size):
        if rises(k) and not rises(k - 1):
            return k
    return None

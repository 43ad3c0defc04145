"""Phrases: a source's notes played one after another through the daemon's own decision path.

A held-out note scored alone says little about what a user playing sees: the daemon decides every hop, from
a window that may still hold the previous note, with smoothing, a confidence floor and open-set rejection. So
`experiment holdout` also joins each held-out real source's notes into phrases - legato overlaps, short gaps,
repeated notes, chosen by a fixed seed - streams them through `device.engine.Classifier` with the given
`EngineSettings` (one decision per hop, or per note), and counts each sounding hop as named right, `unknown`
(or silence: no family named), `other`, or wrong.

>>> rate = 1000
>>> notes = [SourceNote(np.ones(800, np.float32), "string", "a"), SourceNote(np.ones(600, np.float32), "reed", "b")]
>>> phrase = build_phrase(notes, rate, seed=0)
>>> [(n.family, n.join) for n in phrase.notes]
[('string', 'first'), ('string', 'repeat'), ('reed', 'gap')]
>>> truth = hop_truth(phrase, 0.25)
>>> score_hops(["unknown"] + ["string"] * (len(truth) - 1), truth)["right"] > 0
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.labels import OTHER, SILENCE, UNKNOWN
from instrument_ai.device.settings import DEFAULT_SETTINGS

JOINS = ("legato", "gap", "repeat")
"""How a note follows the previous one: overlapping it (the previous one fades out under the new attack), after
a short silence, or after the previous note played once more (a short repeat after a gap shorter than a hop)."""
NOTES_PER_PHRASE = 8
MAX_NOTES = 48
"""Notes of a source played at most (a fixed-seed sample): the phrases of a fold stay a few minutes long."""
MAX_NOTE_SECONDS = 2.5
"""A note sounds at most this long in a phrase (a 4 s sustained sample is cut, with a fade)."""
LEAD_SECONDS, TAIL_SECONDS = 0.3, 0.5
"""Silence before a phrase and after it."""
LEGATO_OVERLAP = (0.03, 0.12)
GAP = (0.04, 0.3)
REPEAT_GAP = (0.02, 0.1)
REPEAT_SECONDS = (0.2, 0.6)
FADE_SECONDS = 0.02
OUTCOMES = ("right", "unknown", "other", "wrong")
"""What a sounding hop can be: its note's family, no family (``unknown`` or silence), ``other``, another family."""


@dataclass(frozen=True)
class SourceNote:
    """One note of a source: mono samples at the phrase rate, its family and name."""

    audio: np.ndarray
    family: str
    name: str
    sounding_seconds: float | None = None


@dataclass(frozen=True)
class PhraseNote:
    """Where a note sounds in a phrase (samples ``start .. stop-1``) and how it follows the previous one."""

    start: int
    stop: int
    family: str
    name: str
    join: str


@dataclass(frozen=True)
class Phrase:
    audio: np.ndarray
    sample_rate: int
    notes: list[PhraseNote]

    @property
    def seconds(self) -> float:
        return self.audio.size / self.sample_rate


def sounding_part(note: SourceNote, rate: int, max_seconds: float = MAX_NOTE_SECONDS) -> np.ndarray:
    """The note's sounding samples (its `sounding_seconds` when known), at most `max_seconds`, faded out if cut."""
    audio = np.asarray(note.audio, dtype=np.float32)
    keep = audio.size if note.sounding_seconds is None else min(audio.size, round(note.sounding_seconds * rate))
    keep = max(1, min(keep, round(max_seconds * rate)))
    part = audio[:keep].copy()
    if keep < audio.size:
        _fade_out(part, round(FADE_SECONDS * rate))
    return part


def _fade_out(audio: np.ndarray, samples: int) -> None:
    samples = min(samples, audio.size)
    if samples > 0:
        audio[audio.size - samples :] *= np.linspace(1.0, 0.0, samples, dtype=np.float32)


def build_phrase(notes: Sequence[SourceNote], rate: int, *, seed: int) -> Phrase:
    """The notes one after another, each joined to the previous one as a fixed-seed draw of `JOINS` decides."""
    if not notes:
        raise ValueError("a phrase needs at least one note")
    rng = np.random.default_rng(seed)
    placed: list[tuple[int, np.ndarray, SourceNote, str]] = []

    def seconds(bounds: tuple[float, float]) -> int:
        return round(rng.uniform(*bounds) * rate)

    def place(after: int, audio: np.ndarray, note: SourceNote, join: str) -> None:
        placed.append((after, audio, note, join))

    for k, note in enumerate(notes):
        part = sounding_part(note, rate)
        if k == 0:
            place(round(LEAD_SECONDS * rate), part, note, "first")
            continue
        start, previous, before, _ = placed[-1]
        stop = start + previous.size
        join = JOINS[int(rng.integers(len(JOINS)))]
        if join == "legato":
            overlap = min(seconds(LEGATO_OVERLAP), previous.size // 2)
            faded = previous.copy()
            _fade_out(faded, overlap)
            placed[-1] = (start, faded, before, placed[-1][3])
            place(stop - overlap, part, note, join)
        elif join == "gap":
            place(stop + seconds(GAP), part, note, join)
        else:  # the previous note once more, short, then this one after a gap
            again = previous[: max(1, min(previous.size, seconds(REPEAT_SECONDS)))].copy()
            _fade_out(again, round(FADE_SECONDS * rate))
            place(stop + seconds(REPEAT_GAP), again, before, join)
            again_stop = placed[-1][0] + again.size
            place(again_stop + seconds(GAP), part, note, "gap")
    total = placed[-1][0] + placed[-1][1].size + round(TAIL_SECONDS * rate)
    audio = np.zeros(total, dtype=np.float32)
    for start, part, _, _ in placed:
        audio[start : start + part.size] += part
    spans = [PhraseNote(start, start + part.size, note.family, note.name, join) for start, part, note, join in placed]
    return Phrase(audio=audio, sample_rate=rate, notes=spans)


def source_phrases(notes: Sequence[SourceNote], rate: int, *, seed: int, max_notes: int = MAX_NOTES,
                   per_phrase: int = NOTES_PER_PHRASE) -> list[Phrase]:  # fmt: skip
    """Phrases of up to `per_phrase` notes from a fixed-seed sample of at most `max_notes` of a source's notes."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(notes))[:max_notes]
    chosen = [notes[int(i)] for i in order]
    return [build_phrase(chosen[i : i + per_phrase], rate, seed=seed + i) for i in range(0, len(chosen), per_phrase)]


def hop_notes(phrase: Phrase, hop_seconds: float) -> list[PhraseNote | None]:
    """Each hop's note: the one sounding longest in it, if it sounds for at least half the hop; None for a hop
    that is mostly silence (not scored)."""
    hop = max(1, round(hop_seconds * phrase.sample_rate))
    n_hops = -(-phrase.audio.size // hop)
    out: list[PhraseNote | None] = []
    for k in range(n_hops):
        lo, hi = k * hop, (k + 1) * hop
        best, note = max(((min(hi, n.stop) - max(lo, n.start), n) for n in phrase.notes), key=lambda pair: pair[0])
        out.append(note if best * 2 >= hop else None)
    return out


def hop_truth(phrase: Phrase, hop_seconds: float) -> list[str | None]:
    """Each hop's family (that of `hop_notes`), None where no note sounds for half the hop."""
    return [None if note is None else note.family for note in hop_notes(phrase, hop_seconds)]


def score_hops(labels: Sequence[str], truth: Sequence[str | None]) -> dict[str, Any]:
    """Counts and shares of the sounding hops (truth not None) named right, `unknown`, `other` and wrong."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for label, family in zip(labels, truth, strict=False):
        if family is None:
            continue
        if label == family:
            counts["right"] += 1
        elif label in (UNKNOWN, SILENCE):
            counts["unknown"] += 1
        elif label == OTHER:
            counts["other"] += 1
        else:
            counts["wrong"] += 1
    return with_shares(counts)


def with_shares(counts: Mapping[str, int]) -> dict[str, Any]:
    """`counts` of the `OUTCOMES`, with `hops` (their sum) and `share` of each."""
    hops = sum(int(counts.get(k, 0)) for k in OUTCOMES)
    out: dict[str, Any] = {k: int(counts.get(k, 0)) for k in OUTCOMES}
    out["hops"] = hops
    out["share"] = {k: (out[k] / hops if hops else None) for k in OUTCOMES}
    return out


def merge_scores(scores: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of several `score_hops` results (shares recomputed over all their hops)."""
    total = dict.fromkeys(OUTCOMES, 0)
    for entry in scores:
        for k in OUTCOMES:
            total[k] += int(entry.get(k, 0))
    return with_shares(total)


def play_phrase(bundle: Any, phrase: Phrase, settings: Any) -> list[str]:
    """The label the daemon gives each hop of the phrase (`Classifier.process_hops`, then `flush`)."""
    return play_audio(bundle, phrase.audio, phrase.sample_rate, settings)


def play_audio(bundle: Any, audio: np.ndarray, rate: int, settings: Any) -> list[str]:
    """The label the daemon, started afresh, gives each hop of `audio`."""
    from instrument_ai.device.engine import Classifier

    engine = Classifier(bundle, settings=settings, input_rate=rate)
    events = engine.process_hops(audio) + engine.flush()
    return [event.label for event in events]


def other_clip_scores(bundle: Any, clips: Sequence[np.ndarray], rate: int,
                      decisions: Mapping[str, Any]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """For each named `EngineSettings`: the `other` figures (hops named an instrument, false instrument events per
    minute, `corpus.kinds.other_figures`) of non-instrument clips, each streamed through a fresh daemon - the
    cost of a low floor that phrases of instruments cannot show."""
    from instrument_ai.train.corpus.kinds import other_figures

    out = {}
    for name, settings in decisions.items():
        hop = bundle.default_hop_seconds if settings.hop_seconds is None else settings.hop_seconds
        labels: list[str] = []
        clip_of_hop: list[int] = []
        for k, clip in enumerate(clips):
            got = play_audio(bundle, clip, rate, settings)
            labels += got
            clip_of_hop += [k] * len(got)
        out[name] = other_figures(labels, np.array(clip_of_hop, dtype=np.int64), hop)
    return out


def phrase_scores(bundle: Any, phrases: Sequence[Phrase], decisions: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """For each named `EngineSettings` in `decisions`: the scores of every phrase's hops, summed, with
    ``per_note_length`` (the same by the note-length bucket of the note each hop belongs to)."""
    from instrument_ai.train.corpus.kinds import NOTE_LENGTHS, note_length_bucket

    out = {}
    for name, settings in decisions.items():
        hop = bundle.default_hop_seconds if settings.hop_seconds is None else settings.hop_seconds
        total: list[dict[str, Any]] = []
        by_length: dict[str, list[dict[str, Any]]] = {k: [] for k in NOTE_LENGTHS}
        for phrase in phrases:
            labels = play_phrase(bundle, phrase, settings)
            notes = hop_notes(phrase, hop)
            total.append(score_hops(labels, [None if n is None else n.family for n in notes]))
            for bucket in NOTE_LENGTHS:
                truth = [None if n is None or note_length_bucket((n.stop - n.start) / phrase.sample_rate) != bucket
                         else n.family for n in notes]  # fmt: skip
                by_length[bucket].append(score_hops(labels, truth))
        merged = {k: merge_scores(v) for k, v in by_length.items()}
        out[name] = {**merge_scores(total), "per_note_length": {k: v for k, v in merged.items() if v["hops"]}}
    return out


@dataclass
class PredictorBundle:
    """A `train.experiments.evaluate.Predictor` (a run folder's Keras model) seen as the engine's bundle.

    Its answers are remembered by window: the same phrase played again in another decision mode or at another
    floor feeds the model the same windows, and a Keras call per window is most of the cost."""

    predictor: Any
    _seen: dict[bytes, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        p = self.predictor
        self.labels: list[str] = list(p.labels)
        self.spec = p.spec
        self.window_frames = int(p.window_frames)
        self.sample_rate = int(p.spec.sample_rate)
        self.default_hop_seconds = float(p.hop_seconds)
        open_set = p.info.get("open_set")
        self.metadata: dict[str, Any] = {"open_set": open_set} if isinstance(open_set, dict) else {}

    def predict(self, features: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(features).tobytes(), digest_size=16).digest()
        if key not in self._seen:
            self._seen[key] = np.asarray(self.predictor.predict(features[None]))[0]
        return self._seen[key].copy()


HOLDOUT_DECISIONS = {
    "hops": DEFAULT_SETTINGS.resolved({}),
    "note": DEFAULT_SETTINGS.resolved({}).replace(decision="note"),
}
"""The decision modes `experiment holdout` plays phrases with: the default of a bundle that names none, and one
decision per note at the same floor (docs/experiments/note-decision.md: the floor that suits depends on the model)."""


def fold_phrase_scores(data: Path, instruments: Sequence[str], model: str | Path, *, seed: int,
                       decisions: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """A held-out source's instrument notes as phrases through `model` (a run folder or bundle) in each decision
    mode: {"notes", "seconds", "scores": {mode: score}}, or {"skipped": why} when they cannot be played."""
    from instrument_ai.train.experiments.evaluate import iter_corpus, load_predictor, note_audio

    predictor = load_predictor(model)  # MFCCs or log-mel bands: the engine streams what the spec's stage says
    rate = predictor.spec.sample_rate
    notes = [SourceNote(note_audio(n), n.family_str, n.note_str, getattr(n, "sounding_seconds", None))
             for n in iter_corpus(data, instruments=list(instruments), sample_rate=rate)
             if n.family_str in predictor.labels and n.family_str != OTHER]  # fmt: skip
    if not notes:
        return {"skipped": "no instrument note the model can name"}
    phrases = source_phrases(notes, rate, seed=seed)
    return {"notes": sum(len(p.notes) for p in phrases), "seconds": round(sum(p.seconds for p in phrases), 1),
            "scores": phrase_scores(PredictorBundle(predictor), phrases, decisions or HOLDOUT_DECISIONS)}  # fmt: skip


def fold_other_scores(data: Path, instruments: Sequence[str], model: str | Path, *, seed: int,
                      decisions: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """A held-out `other` source's clips (at most `MAX_NOTES`, a fixed-seed sample) through `model` in each
    setting: {"clips", "seconds", "scores": {setting: other figures}}, or {"skipped": why}."""
    from instrument_ai.train.experiments.evaluate import iter_corpus, load_predictor, note_audio

    predictor = load_predictor(model)
    rate = predictor.spec.sample_rate
    listed = [n for n in iter_corpus(data, instruments=list(instruments), sample_rate=rate, audio="header")
              if n.family_str == OTHER]  # fmt: skip
    if not listed:
        return {"skipped": "no `other` clip"}
    order = np.random.default_rng(seed).permutation(len(listed))[:MAX_NOTES]
    chosen = [note_audio(listed[int(i)]) for i in sorted(order)]
    return {"clips": len(chosen), "seconds": round(sum(c.size for c in chosen) / rate, 1),
            "scores": other_clip_scores(PredictorBundle(predictor), chosen, rate, decisions)}  # fmt: skip

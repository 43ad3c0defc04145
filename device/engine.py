"""The streaming engine: audio blocks in, instrument-family events out.

``Classifier(bundle).process(block) -> list[Event]`` is the library API (in the
spirit of openWakeWord's ``Model.predict``); ``instrument-ai run`` and
``classify`` are thin shells around it. Everything here is deterministic in the
*samples*: the events of a stream do not depend on how it was cut into blocks
(callback sizes differ between machines, files and microphones), which the
tests check.

Per block: downmix; gather blocks until the next hop boundary can be computed
(a microphone delivers 20 ms blocks, and resampling or framing each one alone
costs ten times more per hop than doing the hop at once); resample to the
model's rate (`resample.StreamResampler`), then cut at hop boundaries. Each piece goes through the streaming frontend
(`MfccStream`: only the frames it completes are computed) into a ring of
feature frames. At every hop boundary (hop ``h`` ends at model-rate sample
``(h+1) * hop_samples``) the engine

1. measures the hop's level (RMS, dBFS); below ``silence_db`` the hop is
   "silence": no interpreter call, and the smoothing history is cleared so the
   next note starts fresh rather than averaged with the previous one;
2. otherwise calls the interpreter once on the newest ``window_frames`` frames
   (frames before the stream began count as digital silence, so the first
   decision comes after one hop, not after a whole window);
3. averages the probabilities of the last ``smooth`` non-silent hops (with
   ``decision="note"``: of every hop since the note's onset, as a mean
   log-probability - `decision.decide_note_labels`; a note also ends where
   the level jumps within sound, `decision.find_onset`, and with
   ``align_onsets`` its window then starts at that jump); the
   label (`decision.decide_label`) is the top class, or "unknown" under ``min_confidence`` or under the
   bundle's open-set threshold on the temperature-calibrated maximum
   probability (`openset.Rejection`; none in a bundle without ``open_set``).
   With ``pitched_guard``, a hop whose pitch salience (`harmonicity`) reaches it loses its ``other``
   probability first when an instrument is close (`decision.guard_pitched`).
   A bundle with an ``other`` output reports it like silence: the hop's label
   is ``other`` and no instrument is named (`Event.is_instrument`);
4. emits an `Event` when the label changes (and, from `process_hops`, every hop).
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from instrument_ai.device.decision import (
    ONSET_LOOKBACK,
    chunk_levels_db,
    decide_label,
    find_onset,
    floor_unpitched,
    guard_pitched,
    log_probabilities,
    note_distribution,
    wait_for_answer,
)
from instrument_ai.device.frontend import FrontendSpec, MfccStream, model_input
from instrument_ai.device.harmonicity import pitch_salience
from instrument_ai.device.labels import OTHER, SILENCE, UNKNOWN
from instrument_ai.device.openset import Rejection, rejection_from_metadata
from instrument_ai.device.resample import StreamResampler, as_float_frames
from instrument_ai.device.settings import DEFAULT_SETTINGS, EngineSettings

MIN_SOUND_SECONDS = 0.05
"""A whole stream shorter than this is named by no family: its one hop would be almost all padding."""
# Labels that name no instrument: `other` (a bundle's 12th output) is reported like silence - no instrument event.
NOT_INSTRUMENT = frozenset({SILENCE, UNKNOWN, OTHER})
LEVEL_FLOOR_DB = -120.0
INPUT_RATE_RANGE = (1000, 384000)
"""Input rates the engine accepts (the range of `run --samplerate`)."""
MAX_RESAMPLE_PHASES = 1024
"""Largest upsampling factor L of the rational resampler (L = model rate / gcd). Standard rates need at most 640
(11025 Hz -> 16 kHz); a rate sharing no factor with the model's (44101 Hz: L = 16000) would build a polyphase bank
of hundreds of MB - on a Pi, the out-of-memory killer - so it is refused."""


class UnsupportedRate(ValueError):
    """An input rate the engine will not convert (absurd, or needing a huge filter bank); one line."""


def _no_label(event: Event) -> Event:
    if event.label == SILENCE:
        return event
    return replace(event, label=UNKNOWN, confidence=0.0, top_k=[], probs=None)


def check_input_rate(input_rate: int, model_rate: int) -> None:
    """UnsupportedRate unless `input_rate` is in range and converts to `model_rate` with a small filter bank."""
    low, high = INPUT_RATE_RANGE
    if not low <= input_rate <= high:
        raise UnsupportedRate(f"sample rate {input_rate} Hz is outside {low}-{high} Hz")
    phases = model_rate // math.gcd(input_rate, model_rate)
    if phases > MAX_RESAMPLE_PHASES:
        raise UnsupportedRate(
            f"sample rate {input_rate} Hz shares too small a factor with the model's {model_rate} Hz to be converted "
            f"exactly ({phases} filter phases, limit {MAX_RESAMPLE_PHASES}); resample it to a standard rate "
            "(e.g. 44100 or 48000 Hz)"
        )


class PersonalStage(Protocol):
    """A per-hop stage between the model's output and the smoothing (`personal.PersonalHead` is one)."""

    def fits(self, bundle: Any) -> bool: ...

    def adjust(self, window: np.ndarray, probs: np.ndarray, embedding: np.ndarray | None = None) -> np.ndarray: ...

    def summary(self) -> dict[str, Any]: ...


class BundleLike(Protocol):
    """What the engine needs of a model bundle (`instrument_ai.device.bundle.Bundle` has it)."""

    labels: list[str]
    spec: FrontendSpec
    window_frames: int
    sample_rate: int
    default_hop_seconds: float

    def predict(self, features: np.ndarray) -> np.ndarray: ...


@dataclass
class Event:
    """One decision of the engine: the state of the stream at the end of a hop."""

    time: float  # stream time (s) at the end of the hop: input samples / input rate
    label: str  # a family, "other", "silence" or "unknown"
    confidence: float  # smoothed probability of the top class (0 for silence)
    top_k: list[tuple[str, float]]  # the k most probable classes, smoothed, best first
    level_db: float  # RMS level of the hop, dBFS
    frontend_ms: float  # resampling + MFCC time spent on this hop's audio
    inference_ms: float  # interpreter time (0 when the hop was silence)
    hop: int  # hop index from the start of the stream
    changed: bool = True  # the label differs from the previous hop's
    previous: str | None = None  # the label before this hop
    kind: str = "change"  # "change", or "hop" for an unchanged hop
    probs: np.ndarray | None = field(default=None, repr=False, compare=False)  # this hop's model output (+ head)
    personal: dict[str, Any] | None = field(default=None, repr=False, compare=False)  # the head in force, if any
    # the hop's place in its note under one decision per note (1: the note's first hop, where its evidence
    # restarts); 0 in silence and with the per-hop rule. So a replay of `probs` can cut the notes as the engine did.
    note_hop: int = field(default=0, repr=False, compare=False)

    @property
    def is_instrument(self) -> bool:
        """True when the hop names an instrument family (not silence, unknown or other)."""
        return self.label not in NOT_INSTRUMENT

    @property
    def compute_ms(self) -> float:
        return self.frontend_ms + self.inference_ms

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields (the raw `probs` are left out: `top_k` carries the smoothed answer)."""
        return {
            "type": self.kind,
            "time": round(self.time, 3),
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "top_k": [{"label": name, "p": round(float(p), 4)} for name, p in self.top_k],
            "level_db": round(self.level_db, 2),
            "frontend_ms": round(self.frontend_ms, 3),
            "inference_ms": round(self.inference_ms, 3),
            "hop": self.hop,
            "previous": self.previous,
            **({"personal": self.personal} if self.personal is not None else {}),
        }

    def to_json(self) -> str:
        """One line of JSON (what `run --json` prints)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))


class FeatureRing:
    """The newest feature frames of a stream, in a fixed array (no per-hop allocation but the window copy)."""

    def __init__(self, n_rows: int, capacity: int, fill: np.ndarray) -> None:
        self._data = np.repeat(fill.reshape(n_rows, 1).astype(np.float32), capacity, axis=1)
        self.capacity = capacity
        self._end = 0  # total frames written (virtual silence frames come before index 0)

    def push(self, frames: np.ndarray) -> None:
        total = frames.shape[1]
        if total > self.capacity:
            frames = frames[:, -self.capacity :]
        k = frames.shape[1]
        start = (self._end + total - k) % self.capacity
        first = min(k, self.capacity - start)
        self._data[:, start : start + first] = frames[:, :first]
        self._data[:, : k - first] = frames[:, first:]
        self._end += total

    @property
    def end(self) -> int:
        """Frames pushed so far (the absolute index of the next frame)."""
        return self._end

    def span(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start .. stop-1`` (absolute indices; the newest `capacity` only), as a contiguous array."""
        if stop - start > self.capacity or stop > self._end:
            raise IndexError(f"frames {start}..{stop} are not in the ring (end {self._end}, capacity {self.capacity})")
        idx = np.arange(start, stop) % self.capacity
        return np.ascontiguousarray(self._data[:, idx])

    def latest(self, n: int) -> np.ndarray:
        """The newest `n` frames, oldest first, as a contiguous (n_rows, n) float32 array."""
        idx = (np.arange(self._end - n, self._end)) % self.capacity
        return np.ascontiguousarray(self._data[:, idx])


def _rejection(bundle: BundleLike) -> Rejection:
    """The bundle's open-set settings (none for a bundle without them, e.g. 0.3.0, or a test double)."""
    metadata = getattr(bundle, "metadata", None)
    return rejection_from_metadata(metadata if isinstance(metadata, dict) else None)


def _check(name: str, value: Any, ok: bool, want: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {want}, got {value!r}")


class Classifier:
    """Continuous classification of one audio stream with one bundle (see the module docstring)."""

    def __init__(
        self,
        bundle: BundleLike,
        *,
        settings: EngineSettings | None = None,
        input_rate: int | None = None,
        channels: int = 1,
        **overrides: Any,
    ) -> None:
        """`settings` (default: `EngineSettings()`), with any of its fields overridden by keyword
        (``Classifier(bundle, smooth=1)``); `input_rate` (default: the model's) and `channels` describe the
        stream. ValueError names a bad value; TypeError a keyword that is no setting."""
        settings = settings or DEFAULT_SETTINGS
        if overrides:
            settings = settings.replace(**overrides)
        hop = float(bundle.default_hop_seconds if settings.hop_seconds is None else settings.hop_seconds)
        _check("hop_seconds", hop, math.isfinite(hop) and 0 < hop <= 10, "in (0, 10] seconds")
        _check("channels", channels, isinstance(channels, int) and channels >= 1, "an integer >= 1")
        rate = bundle.sample_rate if input_rate is None else input_rate
        _check("input_rate", rate, isinstance(rate, int) and not isinstance(rate, bool) and rate > 0, "a positive int")
        self.requested = settings
        """The settings as given: fields left None follow each bundle (`_resolve`, again on every swap)."""
        self._resolve(bundle)
        self.smooth = settings.smooth
        self.silence_db = float(settings.silence_db)
        self.input_rate, self.channels = int(rate), channels
        self.hop_seconds = hop
        self.align_onsets = bool(settings.align_onsets)
        self._top_k_wanted = settings.top_k
        self._hop_times: deque[float] = deque(maxlen=8192)
        self.personal: PersonalStage | None = None
        self.personal_notice: str | None = None
        self._personal_info: dict[str, Any] | None = None
        self._set_bundle(bundle)

    @classmethod
    def open(
        cls,
        model: str | Path | None = None,
        *,
        input_rate: int | None = None,
        channels: int = 1,
        threads: int = 1,
        trusted_key: str | None = None,
        **settings: Any,
    ) -> Classifier:
        """Load a bundle (verified and self-tested) and stream with it: the one-call start.

        `model`: a bundle path, or None for the default model (``$INSTRUMENT_AI_MODEL``, ``models/default.tflite``,
        else the one shipped with the package). `settings`: `EngineSettings` fields. A refused bundle raises a
        one-line `model_files.ModelLoadError`; a named bundle (`model`, ``$INSTRUMENT_AI_MODEL``) that is not
        there raises `model_files.NamedModelMissing` (never a fall-back to the default).

        >>> import numpy as np
        >>> from instrument_ai.device import Classifier
        >>> clf = Classifier.open(smooth=1)
        >>> [event.label for event in clf.process(np.zeros(16000, dtype=np.float32))]  # 1 s of digital silence
        ['silence']
        >>> clf.labels[-1], clf.hop_seconds
        ('other', 0.25)
        """
        from instrument_ai.device.model_files import find_model, load_bundle

        chosen = EngineSettings(**settings)  # a bad setting is refused before the model is loaded
        bundle = load_bundle(find_model(None if model is None else Path(model)), threads, trusted_key)
        return cls(bundle, settings=chosen, input_rate=input_rate, channels=channels)

    # -- set-up -----------------------------------------------------------------------
    def _resolve(self, bundle: BundleLike) -> None:
        """Settle the decision rule and floor for `bundle` (`EngineSettings.resolved`)."""
        self.settings = self.requested.resolved(getattr(bundle, "engine_defaults", None) or {})
        self.min_confidence = self.settings.floor
        self.per_note = self.settings.decision == "note"

    def decision_info(self) -> dict[str, Any]:
        """The decision rule in force and who chose it: ``options`` (the user), ``bundle`` (its maker, on held-out
        phrases) or ``fallback`` (a bundle that names none) - the start record, /status, the page show it."""
        defaults = getattr(self.bundle, "engine_defaults", None) or {}
        requested = self.requested

        def source(field: str) -> str:
            if getattr(requested, field) is not None:
                return "options"
            return "bundle" if field in defaults else "fallback"

        waits = self.settings.answer_hop > 1  # the first answer hop is shown only where a note waits
        fields = ("decision", "min_confidence", "first_answer_hop") if waits else ("decision", "min_confidence")
        sources = {source(field) for field in fields}
        info: dict[str, Any] = {"rule": self.settings.decision, "min_confidence": self.min_confidence}
        if waits:
            info["first_answer_hop"] = self.settings.answer_hop
        return {**info, "from": sources.pop() if len(sources) == 1 else "+".join(sorted(sources))}

    def _set_bundle(self, bundle: BundleLike) -> None:
        if bundle.spec.sample_rate != int(bundle.sample_rate):  # checked first: a refused bundle changes nothing
            raise ValueError(
                f"bundle sample_rate {bundle.sample_rate} differs from its frontend's {bundle.spec.sample_rate}"
            )
        check_input_rate(self.input_rate, int(bundle.sample_rate))
        self.bundle = bundle
        self.labels = list(bundle.labels)
        self.rejection = _rejection(bundle)
        self.top_k = min(self._top_k_wanted, len(self.labels))
        self.spec = bundle.spec
        self.model_rate = int(bundle.sample_rate)
        self.window_frames = int(bundle.window_frames)
        self.hop_samples = max(1, round(self.hop_seconds * self.model_rate))
        self.reset()

    def reset(self) -> None:
        """Start a new stream (time 0, empty history), keeping the bundle and the options."""
        self._resampler = StreamResampler(self.input_rate, self.model_rate)
        self._stream = MfccStream(self.spec)
        silent_frame = model_input(np.zeros(self.spec.win_length), self.spec)[:, 0]
        frames_per_hop = math.ceil(self.hop_samples / self.spec.hop_length) + 1
        capacity = self.window_frames + frames_per_hop + 1
        self._silent_frame = silent_frame.astype(np.float32)
        self._ring = FeatureRing(self.spec.n_features, capacity, silent_frame)
        # The newest samples (a hop and a little more), kept to locate an onset only when one happens.
        self._recent = np.zeros(0)
        self._onset_keep = self.hop_samples + 2 * self.spec.hop_length  # what `_locate_onset` looks at
        # With one decision per note, also the chunks before the hop that `onset_within` compares it with.
        self._recent_keep = self._onset_keep + (ONSET_LOOKBACK * self.spec.hop_length if self.per_note else 0)
        self._keep_recent = (self.align_onsets or self.per_note or self.settings.pitched_guard is not None
                             or self.settings.unpitched_floor is not None)  # fmt: skip
        self._onset_frame: int | None = None
        self._history: deque[np.ndarray] = deque(maxlen=self.smooth)
        self._note_log_sum = np.zeros(0)  # decision "note": sum of the note's log-probabilities so far
        self._note_hops = 0  # ... over this many sounding hops (0: no note sounding)
        self._pending: list[np.ndarray] = []  # mono input not yet resampled (less than the next hop needs)
        self._pending_count = 0
        self._samples = 0  # model-rate samples consumed since the time base
        self._hop_energy = 0.0
        self._hop_frontend_s = 0.0
        self._hop_index = 0  # hops completed since the time base
        self._time_base = 0.0  # stream time (s) of model-rate sample 0
        self._hop_base = 0  # global index of hop 0 since the time base
        self.input_samples = 0  # input samples (per channel) consumed since the stream began
        self.label: str | None = None
        self.last_event: Event | None = None

    @property
    def stream_time(self) -> float:
        """Seconds of input consumed since the stream began."""
        return self.input_samples / self.input_rate

    def can_keep_stream(self, bundle: BundleLike) -> bool:
        """True when `bundle` reads the same features (spec, window, rate): a swap then keeps every sample."""
        return (
            bundle.spec == self.spec
            and int(bundle.sample_rate) == self.model_rate
            and int(bundle.window_frames) == self.window_frames
        )

    def swap_bundle(self, bundle: BundleLike) -> bool:
        """Use a new bundle (a model update) from now on, keeping the stream's clock and its current label.

        The usual update (a retrained model on the same frontend) keeps the
        whole stream state - resampler, frontend, feature ring, the hop in
        progress - so not one sample goes unclassified: the next decision is
        the new model's, on the same window the old one would have seen. The
        smoothing history is kept too when the labels are the same (the
        models answer the same question), else it restarts.

        A bundle with another frontend (spec, window or rate) cannot reuse the
        features: the frontend restarts, so the audio of the hop in progress is
        not classified; hop numbers and times continue. So does a bundle whose
        own decision rule (`EngineSettings.resolved`) differs from the one in
        force: its floor takes over at once. Returns True when the stream was
        kept.
        """
        rule_in_force = self.settings.decision
        self._resolve(bundle)
        if self.can_keep_stream(bundle) and self.settings.decision == rule_in_force:
            self._keep_personal(bundle)
            same_labels = list(bundle.labels) == self.labels
            self.bundle = bundle
            self.labels = list(bundle.labels)
            self.rejection = _rejection(bundle)
            self.top_k = min(self._top_k_wanted, len(self.labels))
            if not same_labels:
                self._history.clear()
                self._note_hops = 0
            return True
        now, input_samples, label, hop = (
            self.stream_time,
            self.input_samples,
            self.label,
            self._hop_base + self._hop_index,
        )
        try:
            self._set_bundle(bundle)
        except ValueError:  # refused: the rule in force stays with the bundle in force
            self._resolve(self.bundle)
            raise
        self._keep_personal(bundle)
        self._time_base, self._hop_base, self.input_samples, self.label = now, hop, input_samples, label
        return False

    # -- the personal head (issue 22) ------------------------------------------------------
    def set_personal(self, head: PersonalStage | None) -> None:
        """Apply a personal head to every sounding hop from the next one on (None: stop); it sits between the
        model's output and the smoothing, so the decision rule is the same with or without it. ValueError
        for a head fitted for another bundle."""
        if head is not None and not head.fits(self.bundle):
            raise ValueError("the personal head was fitted for another model; re-fit it for this one")
        self.personal, self.personal_notice = head, None
        self._personal_info = None if head is None else head.summary()

    def _embedding(self) -> np.ndarray | None:
        """The bundle's embedding for the window just predicted, when the head in force learns on embeddings."""
        if getattr(self.personal, "descriptor", None) != "embedding":
            return None
        last = getattr(self.bundle, "last_embedding", None)
        return None if last is None else last()

    def _keep_personal(self, bundle: BundleLike) -> None:
        """On a model swap: keep the head when it fits the new bundle, else drop it and say so."""
        if self.personal is not None and not self.personal.fits(bundle):
            self.personal, self.personal_notice = None, "personal head dropped: it was fitted for the previous model"
            self._personal_info = None

    # -- the stream ------------------------------------------------------------------
    def process(self, block: np.ndarray) -> list[Event]:
        """Consume a block (``(n,)`` or ``(n, channels)``, float or int16); return the label-change events."""
        return [event for event in self.process_hops(block) if event.changed]

    def process_hops(self, block: np.ndarray) -> list[Event]:
        """Like `process`, but return one event per completed hop (``kind`` "hop" when unchanged)."""
        started = time.perf_counter()
        frames = as_float_frames(block, self.channels)
        self.input_samples += frames.shape[0]
        if frames.shape[0] == 0:
            return []
        self._pending.append(frames[:, 0] if self.channels == 1 else frames.mean(axis=1))
        self._pending_count += frames.shape[0]
        # Small callback blocks are gathered until the next hop boundary is computable, then resampled and
        # framed in one go: the same samples either way, at a fraction of the per-call cost.
        boundary = (self._hop_index + 1) * self.hop_samples
        if self._resampler.samples_in + self._pending_count < self._resampler.input_needed(boundary):
            self._hop_frontend_s += time.perf_counter() - started
            return []
        mono = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending.clear()
        self._pending_count = 0
        samples = self._resampler.process(mono)
        self._hop_frontend_s += time.perf_counter() - started
        return self._consume(samples)

    def flush(self) -> list[Event]:
        """End of stream: pad with silence to finish the hop in progress; return its events (every hop)."""
        started = time.perf_counter()
        tail = self._resampler.process(np.concatenate(self._pending)) if self._pending else np.zeros(0)
        self._pending.clear()
        self._pending_count = 0
        tail = np.concatenate((tail, self._resampler.flush()))
        self._hop_frontend_s += time.perf_counter() - started
        events = self._consume(tail)
        pending = self._samples - self._hop_index * self.hop_samples
        if pending > 0:  # the padding is silence: the level is that of the `pending` real samples
            only_padding = self._hop_index == 0 and pending < MIN_SOUND_SECONDS * self.model_rate
            padded = self._consume(np.zeros(self.hop_samples - pending), level_samples=pending)
            if only_padding:  # a stream of a few samples: the window is padding, no family to name
                padded = [_no_label(e) for e in padded]
                self.label = UNKNOWN if padded else self.label
            events += padded
        return events

    def _consume(self, samples: np.ndarray, *, level_samples: int | None = None) -> list[Event]:
        events: list[Event] = []
        offset = 0
        while offset < samples.size:
            boundary = (self._hop_index + 1) * self.hop_samples
            take = min(samples.size - offset, boundary - self._samples)
            piece = samples[offset : offset + take]
            started = time.perf_counter()
            new_frames = self._stream.process(piece)
            if new_frames.shape[1]:
                self._ring.push(new_frames)
            self._hop_energy += float(piece @ piece)
            if self._keep_recent:
                kept = self._recent[max(0, self._recent.size - (self._recent_keep - take)) :]
                self._recent = np.concatenate((kept, piece))[-self._recent_keep :]
            self._hop_frontend_s += time.perf_counter() - started
            self._samples += take
            offset += take
            if self._samples == boundary:
                events.append(self._decide(level_samples or self.hop_samples))
        return events

    def _locate_onset(self) -> int:
        """The frame where the sound that ended the silence begins: its first frame-hop chunk above the gate.

        Chunk k is the frame hop of samples where frame k starts; the newest
        samples (`_recent`) cover the last hop and a bit more.
        """
        first, levels = self._recent_chunk_levels(self._onset_keep)
        if levels.size == 0:
            return max(0, first - 1)
        above = np.flatnonzero(levels >= self.silence_db)
        return first + int(above[0]) if above.size else first

    def _recent_chunk_levels(self, keep: int) -> tuple[int, np.ndarray]:
        """The levels (dBFS) of the whole frame-hop chunks within the newest `keep` samples, and the index of the
        first (empty when none is complete: the index is then that of the chunk in progress)."""
        chunk = self.spec.hop_length
        recent = self._recent[-keep:]
        start = self._samples - recent.size  # sample index of recent[0]
        first = -(-start // chunk)  # first whole chunk inside recent
        last = self._samples // chunk  # chunks first .. last-1 are complete
        if last <= first:
            return last, np.zeros(0)
        offset = first * chunk - start
        return first, chunk_levels_db(recent[offset : offset + (last - first) * chunk], chunk)

    def _onset_in_hop(self) -> int | None:
        """The frame where the level jumps within this hop (`decision.find_onset`): a new note without silence."""
        first, levels = self._recent_chunk_levels(self._recent_keep)
        newly_complete = (self._samples - self.hop_samples) // self.spec.hop_length  # first chunk completed now
        found = find_onset(levels, newly_complete - first, floor_db=self.silence_db)
        return None if found is None else first + found

    def _window(self) -> np.ndarray:
        """The model's input: the newest frames, or - right after an onset - frames from the onset on.

        A model trained on notes sees windows that start with the attack (a
        note's first window) and never digital silence followed by an attack.
        So until a whole window has passed since the onset, the window starts at
        the onset and is padded at the end with silence frames (as a note
        shorter than the window is), instead of starting with the silence
        that preceded the note.
        """
        end = self._ring.end
        if self._onset_frame is not None and end - self._onset_frame < self.window_frames:
            start = min(self._onset_frame, end - 1)
            heard = self._ring.span(start, end)
            pad = np.repeat(self._silent_frame[:, None], self.window_frames - heard.shape[1], axis=1)
            return np.ascontiguousarray(np.concatenate((heard, pad), axis=1))
        self._onset_frame = None
        return self._ring.latest(self.window_frames)

    def _decide(self, level_samples: int) -> Event:
        mean_square = self._hop_energy / max(1, level_samples)
        level_db = max(LEVEL_FLOOR_DB, 10.0 * math.log10(mean_square)) if mean_square > 0 else LEVEL_FLOOR_DB
        inference_ms = 0.0
        probs = None
        if mean_square == 0.0 or level_db < self.silence_db:  # digital zeros are silence at any gate
            self._history.clear()
            self._note_hops = 0
            self._onset_frame = None
            label, confidence, top = SILENCE, 0.0, []
        else:
            new_note = not self._history  # first sounding hop after silence (or at the start)
            if self.per_note and not new_note:
                onset = self._onset_in_hop()
                if onset is not None:
                    new_note = True
                    self._note_hops = 0
                    if self.align_onsets:
                        self._onset_frame = onset
            elif self.align_onsets and new_note:
                self._onset_frame = self._locate_onset()
            window = self._window()
            started = time.perf_counter()
            probs = np.asarray(self.bundle.predict(window), dtype=np.float64).reshape(-1)
            if self.personal is not None and probs.size == len(self.labels):
                probs = np.asarray(self.personal.adjust(window, probs, self._embedding()), dtype=np.float64)
            inference_ms = (time.perf_counter() - started) * 1e3
            if probs.size != len(self.labels):
                raise ValueError(f"the model returned {probs.size} probabilities for {len(self.labels)} labels")
            self._history.append(probs)
            smoothed = self._note_evidence(probs) if self.per_note else np.mean(self._history, axis=0)
            salience = 1.0
            if self.settings.pitched_guard is not None or self.settings.unpitched_floor is not None:
                salience = pitch_salience(self._recent[-self.hop_samples :], self.model_rate)
            if self.settings.pitched_guard is not None:  # `other` may not swallow a clearly pitched hop
                smoothed = guard_pitched(smoothed, self.labels, salience, self.settings.pitched_guard)
            order = np.argsort(-smoothed, kind="stable")[: self.top_k]
            top = [(self.labels[i], float(smoothed[i])) for i in order]
            confidence = top[0][1]
            label = decide_label(smoothed, self.labels, min_confidence=self.min_confidence, rejection=self.rejection)
            label = floor_unpitched(label, self.labels, salience, self.settings.unpitched_floor)
            if self.per_note:
                label = wait_for_answer(label, self._note_hops, self.settings.answer_hop)
        frontend_ms = self._hop_frontend_s * 1e3
        self._hop_times.append(frontend_ms + inference_ms)
        event = Event(
            time=self._time_base + (self._hop_index + 1) * self.hop_samples / self.model_rate,
            label=label,
            confidence=confidence,
            top_k=top,
            level_db=level_db,
            frontend_ms=frontend_ms,
            inference_ms=inference_ms,
            hop=self._hop_base + self._hop_index,
            changed=label != self.label,
            previous=self.label,
            kind="change" if label != self.label else "hop",
            probs=probs,
            personal=self._personal_info,
            note_hop=self._note_hops,  # 0 in silence (reset above) and under the per-hop rule
        )
        self.label = label
        self.last_event = event
        self._hop_index += 1
        self._hop_energy = 0.0
        self._hop_frontend_s = 0.0
        return event

    def _note_evidence(self, probs: np.ndarray) -> np.ndarray:
        """Add this hop to its note (a new one after silence or an onset: `_note_hops` 0) and return the note's
        probabilities."""
        if self._note_hops == 0 or self._note_log_sum.shape != probs.shape:
            self._note_log_sum = np.zeros_like(probs)
            self._note_hops = 0
        self._note_log_sum += log_probabilities(probs)
        self._note_hops += 1
        return note_distribution(self._note_log_sum, self._note_hops)

    @property
    def note_hops(self) -> int:
        """Sounding hops in the note so far (decision "note"; 0 in silence, and always with decision "hops")."""
        return self._note_hops

    @property
    def hops(self) -> int:
        """Hops decided since the stream began."""
        return self._hop_base + self._hop_index

    # -- statistics ------------------------------------------------------------------
    def compute_stats(self, *, clear: bool = False) -> dict[str, float]:
        """Mean, median and p99 of the per-hop compute (ms) over the recent hops."""
        times = np.fromiter(self._hop_times, dtype=np.float64)
        if clear:
            self._hop_times.clear()
        if times.size == 0:
            return {"hops": 0, "mean_ms": 0.0, "median_ms": 0.0, "p99_ms": 0.0}
        return {
            "hops": int(times.size),
            "mean_ms": float(times.mean()),
            "median_ms": float(np.median(times)),
            "p99_ms": float(np.percentile(times, 99)),
        }

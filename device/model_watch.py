"""Hot reload for the daemon: notice a new bundle, load and test it aside, hand it over between two hops.

`instrument-ai flash` installs a bundle and points ``current.tflite`` at it (an
atomic symlink swap). The daemon must pick it up without a restart and without
a gap in the audio, and must never trade a working model for a broken one:

* `ModelWatcher` polls the *resolved* target of the model path (its inode,
  size and mtime) every `poll_seconds`, and reloads at once on `request`
  (SIGHUP). The load - digests, signature, interpreter, golden self-test - and
  a trial run of the daemon's own pipeline (`check_runnable`) happen in a
  background thread while the main loop keeps classifying the audio queue.
* The outcome is a `Candidate`: a bundle ready to swap in, or the one-line
  reason it was refused. The main loop `take`s it between two hops: it swaps
  the bundle into the engine (which keeps the stream when the frontend is the
  same, so no sample is lost) or logs the refusal and keeps the old model.
* A refused file is not retried every poll; it is tried again when it changes
  (or on the next SIGHUP).

Light imports only: this runs on the Pi.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.labels import SILENCE, UNKNOWN

SETTLE_SECONDS = 0.3
"""A target modified more recently than this is left for the next poll (someone may still be writing it)."""
PROBE_SECONDS = 1.5
"""Length of the trial signal `check_runnable` streams through a candidate bundle."""
RESERVED_LABELS = (SILENCE, UNKNOWN)
"""Labels the engine itself reports; a model class with one of these names would be ambiguous in every event."""


class ModelRefused(InstrumentAIError):
    """A candidate bundle the daemon will not swap in; the message is one line naming the reason."""


@dataclass(frozen=True)
class Fingerprint:
    """What identifies one installed bundle file: a new file (or a rewrite) changes at least one field."""

    target: str
    inode: int
    size: int
    mtime_ns: int


def fingerprint(path: Path | str) -> Fingerprint | None:
    """The fingerprint of the file `path` resolves to (following symlinks); None when there is none."""
    try:
        target = os.path.realpath(path)
        info = os.stat(target)
    except (OSError, ValueError):
        return None
    return Fingerprint(target, info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass
class Candidate:
    """The outcome of one background load."""

    path: str  # the resolved file that was loaded
    trigger: str  # "poll", "SIGHUP", or what `request` was given
    bundle: Any | None  # ready to swap in; None when refused
    reason: str | None  # why it was refused
    load_ms: float


Prepare = Callable[[Path], Any]
"""Load, self-test and trial-run the bundle at a path; raise ModelRefused with a one-line reason."""


class ModelWatcher:
    """Background reloader of one model path; `take()` its results from the main loop (see the module doc)."""

    def __init__(
        self,
        path: Path | str,
        prepare: Prepare,
        *,
        poll_seconds: float | None = 1.0,
        settle_seconds: float = SETTLE_SECONDS,
        loaded: Fingerprint | None = None,
    ) -> None:
        self.path = Path(path)
        self.prepare = prepare
        self.poll_seconds = poll_seconds if poll_seconds else None
        self.settle_seconds = settle_seconds
        self._seen = loaded
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._forced: tuple[str, Path | None] | None = None
        self._result: Candidate | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self.loads = 0

    def start(self) -> ModelWatcher:
        self._thread = threading.Thread(target=self._run, name="model-watch", daemon=True)
        self._thread.start()
        return self

    def request(self, trigger: str = "SIGHUP", path: Path | str | None = None) -> None:
        """Load now (even an unchanged file): SIGHUP, or `soak` asking for a swap to `path`."""
        with self._lock:
            self._forced = (trigger, Path(path) if path is not None else None)
        self._wake.set()

    def take(self) -> Candidate | None:
        """The newest finished load, once; None when nothing new is ready (cheap: call it after every block)."""
        if self._result is None:
            return None
        with self._lock:
            result, self._result = self._result, None
        return result

    @property
    def busy(self) -> bool:
        """A load is running or requested."""
        return not self._idle.is_set() or self._wake.is_set()

    @property
    def settled(self) -> bool:
        """No load running or requested and no finished load waiting to be taken (a quiet point to measure at)."""
        return not self.busy and self._result is None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no load is running or requested; True when that happened within `timeout`."""
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            self._idle.wait(0.01)
        return not self.busy

    def close(self, timeout: float = 2.0) -> bool:
        """Stop watching; wait up to `timeout` for a load in progress (a daemon thread: exit never hangs on it)."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.poll_seconds)
            if self._closed:
                return
            with self._lock:
                forced, self._forced = self._forced, None
                self._wake.clear()
                self._idle.clear()
            try:
                self._check(forced)
            finally:
                self._idle.set()

    def _check(self, forced: tuple[str, Path | None] | None) -> None:
        path = forced[1] if forced is not None and forced[1] is not None else self.path
        current = fingerprint(path)
        if forced is None:
            if current == self._seen:
                return
            if current is not None and 0 <= time.time() - current.mtime_ns / 1e9 < self.settle_seconds:
                return  # still being written? look again at the next poll
        trigger = forced[0] if forced is not None else "poll"
        if path == self.path:
            self._seen = current
        started = time.perf_counter()
        if current is None:
            candidate = Candidate(str(path), trigger, None, f"{path}: no such file", 0.0)
        else:
            try:
                bundle = self.prepare(Path(current.target))
                candidate = Candidate(current.target, trigger, bundle, None, _ms(started))
            except ModelRefused as exc:
                candidate = Candidate(current.target, trigger, None, str(exc), _ms(started))
            except Exception as exc:  # noqa: BLE001 - whatever a broken file raises, the old model keeps running
                reason = f"{current.target}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                candidate = Candidate(current.target, trigger, None, reason, _ms(started))
        self.loads += 1
        with self._lock:
            self._result = candidate


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1e3, 2)


def probe_signal(rate: int, channels: int, seconds: float = PROBE_SECONDS) -> Any:
    """A short trial input at the daemon's own rate and channels: silence, then a harmonic note, then silence."""
    import numpy as np

    n = max(1, round(seconds * rate))
    t = np.arange(n) / rate
    note = sum(0.3 / (k + 1) * np.sin(2 * np.pi * 440.0 * (k + 1) * t) for k in range(4))
    envelope = ((t >= 0.25 * seconds) & (t < 0.85 * seconds)).astype(np.float64)
    mono = (note * envelope).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def check_runnable(bundle: Any, make_engine: Callable[[Any], Any], rate: int, channels: int) -> None:
    """Run the daemon's pipeline (same options, rate and channels) on a trial signal; ModelRefused if it cannot.

    `bundle.load` has checked the file; this checks that *this daemon* can use
    it: labels that do not clash with the engine's own ("silence",
    "unknown"), an engine that accepts it with the daemon's options, and a
    trial stream whose decisions are probabilities over the bundle's labels.
    """
    import numpy as np

    name = getattr(bundle, "path", "bundle")
    clash = sorted(set(bundle.labels) & set(RESERVED_LABELS))
    if clash:
        raise ModelRefused(f"{name}: label(s) {', '.join(clash)} clash with the daemon's own reports")
    try:
        engine = make_engine(bundle)
        events = engine.process_hops(probe_signal(rate, channels)) + engine.flush()
    except ModelRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the trial is a reason to refuse, never to crash
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelRefused(f"{name}: the daemon cannot run this bundle ({reason})") from None
    decided = [e.probs for e in events if e.probs is not None]
    if not decided:
        raise ModelRefused(f"{name}: the trial note was never classified (every hop was silence)")
    for probs in decided:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(bundle.labels),) or not np.isfinite(probs).all():
            raise ModelRefused(f"{name}: the model's output is not {len(bundle.labels)} finite probabilities")
        if probs.min() < -1e-3 or not math.isclose(float(probs.sum()), 1.0, abs_tol=0.1):
            raise ModelRefused(f"{name}: the model's output does not sum to 1 (sum {probs.sum():.3f})")

"""The soak behind `instrument-ai soak`: hours of audio through the daemon's pipeline, as fast as it goes,
to find leaks and crashes.

A daemon on a Pi runs for months; a leak of a few bytes per hop or a crash
once in 100 000 hops never shows in a test of seconds. The soak streams
``--hours`` of audio (generated, or a file looped) through exactly what `run`
uses - the engine (downmix, resampling, streaming MFCC, feature ring, onset
alignment, smoothing) and the bundle's interpreter - in blocks of random
sizes, and every ``--swap-every`` minutes of stream time asks the same
background `ModelWatcher` as `run --model-dir` for a model swap (alternating
two bundles, or reloading the one), which loads and self-tests it while the
stream goes on.

Every decision is checked (hop numbers contiguous, times increasing, labels
known, probabilities finite and of the right size); any exception or broken
invariant is an error. RSS (``VmRSS``) is read after a warm-up (the first
allocations of the interpreter, the resampler tables, the first swap) and at
the end, both after a garbage collection and a `malloc_trim`. Exit 1 when errors > 0 or RSS grew
more than ``--max-rss-growth-mb``.
"""

from __future__ import annotations

import gc
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from instrument_ai.device.daemon import Signals
from instrument_ai.device.labels import SILENCE, UNKNOWN
from instrument_ai.device.process_stats import rss_mb
from instrument_ai.device.settings import DEFAULT_SETTINGS

MAX_ERRORS_KEPT = 10


# -- sources ----------------------------------------------------------------------------------------


class GeneratedAudio:
    """An endless, seeded mixture of what a microphone hears: notes, pure tones, noise, silence, at random levels.

    Segments of 0.1-3 s: harmonic notes with an attack/decay envelope (f0 40 Hz
    - 2 kHz, 1-8 partials), pure tones (80 Hz - 7 kHz), white or low-passed
    noise, digital silence or a faint noise floor; levels from -50 to -1 dBFS,
    a few clipped at full scale. Cut into blocks of 5-120 ms (callback sizes
    differ between machines).
    """

    KINDS = ("note", "tone", "noise", "silence")

    def __init__(self, rate: int, seed: int = 0) -> None:
        import numpy as np

        self.rate, self.channels = rate, 1
        self.rng = np.random.default_rng(seed)
        self.counts = dict.fromkeys(self.KINDS, 0)

    def _segment(self) -> Any:
        import numpy as np

        rng, rate = self.rng, self.rate
        kind = self.KINDS[int(rng.choice(4, p=[0.4, 0.2, 0.15, 0.25]))]
        self.counts[kind] += 1
        n = int(rng.uniform(0.1, 3.0) * rate)
        t = np.arange(n) / rate
        level = 10 ** (rng.uniform(-50, -1) / 20)
        if kind == "note":
            f0 = float(np.exp(rng.uniform(np.log(40), np.log(2000))))
            partials = [k for k in range(1, int(rng.integers(1, 9)) + 1) if f0 * k < 0.45 * rate]
            x = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) for k in partials)
            attack = max(1, int(rng.uniform(0.002, 0.08) * rate))
            envelope = np.exp(-t * rng.uniform(0.2, 4.0))
            envelope[:attack] *= np.linspace(0, 1, min(attack, n))
            x = x * envelope
        elif kind == "tone":
            x = np.sin(2 * np.pi * float(rng.uniform(80, min(7000, 0.45 * rate))) * t)
        elif kind == "noise":
            x = rng.standard_normal(n)
            if rng.random() < 0.5:  # a crude low-pass: "rumble" rather than hiss
                x = np.convolve(x, np.ones(16) / 4, mode="same")
        else:
            x = np.zeros(n) if rng.random() < 0.5 else rng.standard_normal(n) * 10 ** (rng.uniform(-90, -70) / 20)
        peak = float(np.max(np.abs(x))) if n else 0.0
        x = x * (level / peak) if peak > 0 and kind != "silence" else x
        if kind != "silence" and rng.random() < 0.03:
            x = np.clip(x * 20, -1.0, 1.0)  # clipping, as a mic driven too hard
        return x.astype(np.float32)

    def blocks(self) -> Iterator[Any]:
        import numpy as np

        pending = np.zeros(0, dtype=np.float32)
        while True:
            size = int(self.rng.integers(max(1, self.rate // 200), self.rate * 12 // 100))
            while pending.size < size:
                pending = np.concatenate((pending, self._segment()))
            block, pending = pending[:size], pending[size:]
            yield block[:, None]

    def describe(self) -> str:
        return f"generated ({self.rate} Hz mono: notes, tones, noise, silence)"


class LoopedFile:
    """An audio file played again and again (decoded each time round, as `run --source FILE --fast` reads it)."""

    def __init__(self, path: str) -> None:
        from instrument_ai.device.sources import FileSource

        self._source = FileSource(path, realtime=False)  # SourceError: one line
        self.rate, self.channels, self.path = self._source.rate, self._source.channels, path
        self.loops = 0

    def blocks(self) -> Iterator[Any]:
        never = threading.Event()
        while True:
            self.loops += 1
            yield from self._source.blocks(never)

    def describe(self) -> str:
        return f"{self.path} ({self.rate} Hz x{self.channels}, looped)"


# -- checks ------------------------------------------------------------------------------------------


class Checker:
    """The invariants every decision of a long stream must keep; each violation is an error."""

    def __init__(self) -> None:
        self.next_hop = 0
        self.last_time = -math.inf
        self.errors = 0
        self.messages: list[str] = []
        self.sounding = 0
        self.labels_seen: dict[str, int] = {}

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.messages) < MAX_ERRORS_KEPT:
            self.messages.append(message)

    def check(self, events: list[Any], labels: list[str]) -> None:
        import numpy as np

        for event in events:
            if event.hop != self.next_hop:
                self.error(f"hop {event.hop} follows hop {self.next_hop - 1}")
            self.next_hop = event.hop + 1
            if not event.time > self.last_time:
                self.error(f"hop {event.hop}: time {event.time} does not increase")
            self.last_time = event.time
            if event.label not in labels and event.label not in (SILENCE, UNKNOWN):
                self.error(f"hop {event.hop}: unknown label {event.label!r}")
            self.labels_seen[event.label] = self.labels_seen.get(event.label, 0) + 1
            if not (0.0 <= event.confidence <= 1.0 + 1e-6) or not math.isfinite(event.level_db):
                self.error(f"hop {event.hop}: confidence {event.confidence} or level {event.level_db} out of range")
            if event.probs is not None:
                self.sounding += 1
                probs = np.asarray(event.probs)
                if probs.shape != (len(labels),) or not np.isfinite(probs).all():
                    self.error(f"hop {event.hop}: probabilities {probs.shape} not finite over {len(labels)} labels")


# -- process figures -----------------------------------------------------------------------------------


def _count_dir(path: str) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return -1


def _malloc_trim() -> bool:
    """Hand the C heap's free pages back to the system (glibc), so RSS shows live memory, not allocator cache."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): RSS includes the allocator's cache
        return False
    trim.argtypes = [ctypes.c_size_t]
    return bool(trim(0))


def process_figures() -> dict[str, Any]:
    """RSS (after a garbage collection and a malloc_trim), threads and open file descriptors of this process.

    Freed interpreters and numpy buffers leave pages in glibc's arenas (one
    per thread that allocated, the loader's included) that RSS still counts;
    they are reused, not leaked, but they move RSS by a few MB from one swap to
    the next. Trimming first makes start and end comparable: what grows then
    is memory still referenced.
    """
    gc.collect()
    _malloc_trim()
    return {"rss_mb": round(rss_mb(), 2), "threads": threading.active_count(), "fds": _count_dir("/proc/self/fd")}


def run_soak(
    bundle: Any,
    paths: list[Path],
    audio: Any,
    *,
    hours: float,
    swap_every: float,
    warmup: float | None,
    threads: int = 1,
    trusted_key: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The soak loop (see the module doc); returns the report. `progress` gets a line every 10 % of the stream."""
    from instrument_ai.device.engine import Classifier
    from instrument_ai.device.model_files import prepare_bundle
    from instrument_ai.device.model_watch import ModelWatcher

    engine = Classifier(bundle, settings=DEFAULT_SETTINGS, input_rate=audio.rate, channels=audio.channels)

    def prepare(path: Path) -> Any:
        return prepare_bundle(path, threads, trusted_key, DEFAULT_SETTINGS, audio.rate, audio.channels)

    if warmup is None:  # long enough for the first swap (a second interpreter), short of half the stream
        warmup = min(10.0, max(hours * 6, 1.5 * swap_every), hours * 30)
    watcher = ModelWatcher(paths[0], prepare, poll_seconds=None).start()
    soak = _Soak(engine, watcher, paths, audio.rate, hours=hours, swap_every=swap_every, warmup=warmup)
    try:
        with Signals() as signals:
            soak.stream(audio.blocks(), signals, progress)
        wall = time.perf_counter() - soak.started
        # measure at a quiet point, as at the start: a load in flight holds the file and interpreter open
        watcher.wait_idle()
        watcher.take()
        end = process_figures()  # with the watcher's thread still there, as at the start
    finally:
        watcher.close()
    return soak.report(bundle, audio.describe(), wall, end)


class _Soak:
    """The state of one soak: the engine, its checker, the swaps asked for and taken, the figures."""

    def __init__(self, engine: Any, watcher: Any, paths: list[Path], rate: int, *, hours: float, swap_every: float,
                 warmup: float) -> None:  # fmt: skip
        self.engine, self.watcher, self.paths, self.rate = engine, watcher, paths, rate
        self.total = round(hours * 3600 * rate)
        self.swap_samples = round(swap_every * 60 * rate) if swap_every > 0 else None
        self.next_swap = self.swap_samples
        self.warm_samples = round(warmup * 60 * rate)
        self.checker = Checker()
        self.swaps, self.refused, self.requested = 0, 0, 0
        self.swap_ms: list[float] = []
        self.swapped_in: dict[str, int] = {}
        self.next_progress = self.total // 10
        self.start_figures: dict[str, Any] | None = None
        self.interrupted: str | None = None
        self.first = process_figures()
        self.started = time.perf_counter()

    def stream(self, blocks: Iterator[Any], signals: Signals, progress: Callable[[str], None] | None) -> None:
        """Blocks through the engine until the stream time is reached or a signal stops it."""
        engine, checker = self.engine, self.checker
        for block in blocks:
            if engine.input_samples >= self.total or signals.stop.is_set():
                self.interrupted = signals.received if signals.stop.is_set() else None
                break
            try:
                checker.check(engine.process_hops(block), engine.labels)
            except Exception as exc:  # noqa: BLE001 - counted: the soak reports every failure, then fails
                checker.error(f"at {engine.stream_time:.2f} s: {type(exc).__name__}: {exc}")
            self._swap()
            done = engine.input_samples
            if self.start_figures is None and done >= self.warm_samples and self.watcher.settled:
                self.start_figures = {**process_figures(), "stream_seconds": round(done / self.rate, 1)}
            if progress is not None and done >= self.next_progress:
                progress(
                    f"soak: {100 * done / self.total:3.0f} %  {done / self.rate / 3600:.2f} h  hops {engine.hops}  "
                    f"swaps {self.swaps}  errors {checker.errors}  RSS {rss_mb():.1f} MB  "
                    f"{time.perf_counter() - self.started:.0f} s"
                )
                self.next_progress += self.total // 10
        if self.interrupted is None:
            checker.check(engine.flush(), engine.labels)

    def _swap(self) -> None:
        """Ask for the next swap when it is due; take a loaded (or refused) one."""
        watcher = self.watcher
        if self.next_swap is not None and self.engine.input_samples >= self.next_swap and not watcher.busy:
            self.requested += 1
            watcher.request("soak", self.paths[self.requested % len(self.paths)])
            self.next_swap += self.swap_samples or 0
        candidate = watcher.take()
        if candidate is None:
            return
        if candidate.bundle is None:
            self.refused += 1
            self.checker.error(f"swap refused: {candidate.reason}")
            return
        self.engine.swap_bundle(candidate.bundle)
        self.swaps += 1
        self.swap_ms.append(candidate.load_ms)
        name = f"{candidate.bundle.name} {candidate.bundle.version}"
        self.swapped_in[name] = self.swapped_in.get(name, 0) + 1

    def report(self, bundle: Any, source: str, wall: float, end: dict[str, Any]) -> dict[str, Any]:
        """The soak's figures, as `soak --json` prints them."""
        engine, checker, first, swap_ms = self.engine, self.checker, self.first, self.swap_ms
        start_figures = self.start_figures or {**first, "stream_seconds": 0.0}
        compute = engine.compute_stats()
        stream_seconds = engine.stream_time
        return {
            "hours": round(stream_seconds / 3600, 4),
            "stream_seconds": round(stream_seconds, 1),
            "source": source,
            "models": [str(p) for p in self.paths],
            "model": f"{bundle.name} {bundle.version}",
            "runtime": getattr(bundle, "runtime", "?"),
            "hops": engine.hops,
            "sounding_hops": checker.sounding,
            "labels": checker.labels_seen,
            "errors": checker.errors,
            "error_messages": checker.messages,
            "swaps": self.swaps,
            "swaps_refused": self.refused,
            "swapped_in": self.swapped_in,
            "swap_load_ms_median": round(sorted(swap_ms)[len(swap_ms) // 2], 1) if swap_ms else None,
            "wall_seconds": round(wall, 1),
            "speed_x_realtime": round(stream_seconds / wall, 1) if wall > 0 else None,
            "hop_mean_ms": round(compute["mean_ms"], 3),
            "hop_p99_ms": round(compute["p99_ms"], 3),
            "rss_first_mb": first["rss_mb"],
            "rss_start_mb": start_figures["rss_mb"],
            "rss_start_after_seconds": start_figures["stream_seconds"],
            "rss_end_mb": end["rss_mb"],
            "rss_growth_mb": round(end["rss_mb"] - start_figures["rss_mb"], 2),
            "threads_start": start_figures["threads"],
            "threads_end": end["threads"],
            "fds_start": start_figures["fds"],
            "fds_end": end["fds"],
            "interrupted": self.interrupted,
        }


def format_report(r: dict[str, Any]) -> str:
    """The report as four lines (and one per error kept)."""
    verdict = "PASS" if r["passed"] else "FAIL"
    lines = [
        f"soak {verdict}: {r['hours']:.2f} h of {r['source']} through {r['model']} ({r['runtime']}) "
        f"in {r['wall_seconds']:.1f} s wall ({r['speed_x_realtime']}x real time)",
        f"  hops {r['hops']} ({r['sounding_hops']} sounding), errors {r['errors']}, swaps {r['swaps']} "
        f"(refused {r['swaps_refused']}, median load {r['swap_load_ms_median']} ms)",
        f"  RSS {r['rss_start_mb']:.1f} MB after {r['rss_start_after_seconds']:.0f} s warm-up -> {r['rss_end_mb']:.1f} "
        f"MB at the end: growth {r['rss_growth_mb']:+.2f} MB (limit {r['max_rss_growth_mb']:g}); first "
        f"{r['rss_first_mb']:.1f} MB",
        f"  per hop mean {r['hop_mean_ms']:.2f} ms, p99 {r['hop_p99_ms']:.2f} ms; threads {r['threads_start']} -> "
        f"{r['threads_end']}, open files {r['fds_start']} -> {r['fds_end']}",
    ]
    lines += [f"  error: {m}" for m in r["error_messages"]]
    return "\n".join(lines)

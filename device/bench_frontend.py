"""The frontend benchmark behind `instrument-ai bench frontend`: our MFCCs (batch and streaming) timed against
librosa and python_speech_features, side by side.

A benchmark, not a timed test: it prints medians and 90th percentiles measured
in one run, side by side, so that the comparison survives a noisy machine.
The reference libraries (librosa, python_speech_features) are imported inside
the functions and only when installed: the device install has neither, and
this module must stay importable there.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import platform
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instrument_ai.device.errors import InstrumentAIError

DEFAULT_REPEATS = 200
HOP_SECONDS = 0.25
"""The engine's default decision hop: a new model window every quarter second."""


class BenchAudioError(InstrumentAIError):
    """The audio to time on cannot be used (unreadable, another rate, too short): one line, exit 1."""


# -- timing ------------------------------------------------------------------------------------


@dataclass
class _Candidate:
    """One way of computing features, timed per call."""

    name: str
    label: str
    call: Callable[[], Any]
    samples_ns: list[int] = field(default_factory=list)


def _interleaved(candidates: list[_Candidate], repeats: int, warmup: int, burst: int = 4, seed: int = 0) -> None:
    """Time `repeats` calls of every candidate, in short bursts taken in a shuffled order, after warm-up calls.

    Interleaving spreads a noisy neighbour's load over all candidates instead
    of penalising whichever happened to run during it. Bursts of a few calls
    (4 hops = 1 s of audio for the stream) let each candidate run with its own
    data in cache, as in a steady pipeline, rather than measuring how much
    librosa's large temporaries evicted of ours. Warm-up takes one-off costs
    (numba compilation, table building, page faults) out of the timing.
    """
    for candidate in candidates:
        for _ in range(warmup):
            candidate.call()
    order = list(candidates)
    shuffle = random.Random(seed).shuffle
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(-(-repeats // burst)):
            shuffle(order)
            for candidate in order:
                for _ in range(burst):
                    start = time.perf_counter_ns()
                    candidate.call()
                    candidate.samples_ns.append(time.perf_counter_ns() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    for candidate in candidates:
        del candidate.samples_ns[repeats:]


@contextlib.contextmanager
def _blas_threads(limit: int) -> Iterator[str]:
    """Cap BLAS threads while timing (threadpoolctl, when installed); yields what was applied.

    librosa and python_speech_features multiply their filterbank with a BLAS
    call that OpenBLAS spreads over every core; on a shared or busy machine the
    waking thread pool dominates and their medians swing by 10x, which would
    flatter us. One thread for everyone (our banded mel sum uses no BLAS) is
    the fair, repeatable comparison; ``--blas-threads 0`` keeps the library default.
    """
    if limit <= 0:
        yield "library default"
        return
    if not _installed("threadpoolctl"):
        yield "library default (threadpoolctl not installed)"
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=limit, user_api="blas"):
        yield str(limit)


def _stats_ms(samples_ns: list[int]) -> dict[str, float]:
    values = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90))}


# -- the frontend benchmark --------------------------------------------------------------------


def _load_audio(path: str | None, sample_rate: int, min_samples: int) -> tuple[np.ndarray, str]:
    from instrument_ai.device.audio_io import AudioFileError, demo_path, read_audio

    source = str(demo_path()) if path is None else path
    try:
        data, rate = read_audio(source)
    except AudioFileError as exc:
        raise BenchAudioError(str(exc)) from None
    if rate != sample_rate:
        raise BenchAudioError(f"{source}: sample rate {rate} Hz, the default frontend expects {sample_rate} Hz")
    mono = np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
    if mono.size < min_samples:
        raise BenchAudioError(
            f"{source}: needs at least {min_samples} samples ({min_samples / sample_rate:.2f} s) of audio, "
            f"has {mono.size}"
        )
    return mono, source


def _windows(audio: np.ndarray, window: int, hop: int) -> Callable[[], np.ndarray]:
    """Successive 1 s windows of the clip, one hop apart, wrapping around (different data every call)."""
    starts = list(range(0, audio.size - window + 1, hop))
    index = 0

    def next_window() -> np.ndarray:
        nonlocal index
        start = starts[index % len(starts)]
        index += 1
        return audio[start : start + window]

    return next_window


def _hop_blocks(audio: np.ndarray, hop: int) -> Callable[[], np.ndarray]:
    """Successive hop-sized blocks of the clip, wrapping around, as a live stream would deliver them."""
    blocks = [audio[i : i + hop] for i in range(0, audio.size - hop + 1, hop)]
    index = 0

    def next_block() -> np.ndarray:
        nonlocal index
        block = blocks[index % len(blocks)]
        index += 1
        return block

    return next_block


def _installed(module: str) -> bool:
    """Whether a reference library can be imported here (the device install has none of them)."""
    return importlib.util.find_spec(module) is not None


Reference = tuple[_Candidate, str, Callable[[np.ndarray], np.ndarray]]
"""A reference frontend: its timed candidate, its version, and the function it times (for the agreement check)."""


def _librosa_candidate(spec: Any, window_fn: Callable[[], np.ndarray]) -> Reference | None:
    """librosa with the spec's parameters, called the streaming-safe way (center=False, no top_db clip)."""
    if not _installed("librosa"):
        return None
    import librosa

    def compute(window: np.ndarray) -> np.ndarray:
        mel = librosa.feature.melspectrogram(
            y=window,
            sr=spec.sample_rate,
            n_fft=spec.n_fft,
            hop_length=spec.hop_length,
            win_length=spec.win_length,
            window="hann",
            center=False,
            power=2.0,
            n_mels=spec.n_mels,
            fmin=spec.fmin,
            fmax=spec.fmax,
            htk=spec.mel_scale == "htk",
            norm="slaney",
        )
        return librosa.feature.mfcc(S=librosa.power_to_db(mel, amin=spec.log_floor, top_db=None), n_mfcc=spec.n_mfcc)

    candidate = _Candidate("librosa", "librosa.feature.mfcc", lambda: compute(window_fn()))
    return candidate, str(getattr(librosa, "__version__", "unknown")), compute


def _psf_candidate(spec: Any, window_fn: Callable[[], np.ndarray]) -> Reference | None:
    """python_speech_features with the same framing and sizes (its own HTK mel, log and lifter conventions)."""
    if not _installed("python_speech_features"):
        return None
    import python_speech_features

    from instrument_ai.device.frontend import window_function

    hann = window_function(spec)

    def compute(window: np.ndarray) -> np.ndarray:
        return python_speech_features.mfcc(
            window,
            samplerate=spec.sample_rate,
            winlen=spec.win_length / spec.sample_rate,
            winstep=spec.hop_length / spec.sample_rate,
            numcep=spec.n_mfcc,
            nfilt=spec.n_mels,
            nfft=spec.n_fft,
            lowfreq=spec.fmin,
            highfreq=spec.fmax,
            winfunc=lambda n: hann,
        )

    version = _distribution_version("python_speech_features")
    candidate = _Candidate("python_speech_features", "python_speech_features.mfcc", lambda: compute(window_fn()))
    return candidate, version, compute


def _distribution_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def run_frontend_benchmark(
    repeats: int = DEFAULT_REPEATS, audio_path: str | None = None, blas_threads: int = 1
) -> dict[str, Any]:
    """Time the device frontend (batch and streaming) against librosa and python_speech_features.

    Every candidate computes DEFAULT_SPEC's MFCCs (1 s window = 59 frames of
    1024 samples, hop 256, 64 mels 20-8000 Hz, 40 coefficients) on the same
    audio. Batch candidates recompute the whole window at every hop, which is
    what an application without a streaming frontend does; the stream only
    computes the frames the new hop completes.
    """
    from instrument_ai.device.frontend import DEFAULT_SPEC, DEFAULT_WINDOW_SECONDS, MfccStream, mfcc

    spec = DEFAULT_SPEC
    window = spec.window_samples(spec.n_frames(int(DEFAULT_WINDOW_SECONDS * spec.sample_rate)))
    hop = int(HOP_SECONDS * spec.sample_rate)
    hops_per_window = int(round(DEFAULT_WINDOW_SECONDS / HOP_SECONDS))
    audio, source = _load_audio(audio_path, spec.sample_rate, window + hop)
    window_fn = _windows(audio, window, hop)
    block_fn = _hop_blocks(audio, hop)
    stream = MfccStream(spec)

    candidates = [
        _Candidate("ours_batch", "ours, batch (mfcc)", lambda: mfcc(window_fn(), spec)),
        _Candidate("ours_stream", "ours, streaming (MfccStream)", lambda: stream.process(block_fn())),
    ]
    versions: dict[str, str] = {"numpy": np.__version__}
    unavailable: dict[str, str] = {}
    agreement: dict[str, float] = {}
    for name, make in (("librosa", _librosa_candidate), ("python_speech_features", _psf_candidate)):
        made = make(spec, window_fn)
        if made is None:
            unavailable[name] = "not installed"
            continue
        candidates.append(made[0])
        versions[name] = made[1]
        if name == "librosa":  # the same numbers, not just the same sizes: proof the comparison is like for like
            probe = audio[:window]
            agreement[name] = float(np.abs(made[2](probe) - mfcc(probe, spec)).max())
    with _blas_threads(blas_threads) as blas:
        _interleaved(candidates, repeats, warmup=5)

    results: dict[str, Any] = {}
    for candidate in candidates:
        per_call = _stats_ms(candidate.samples_ns)
        if candidate.name == "ours_stream":
            hop_ms = per_call
            window_ms = {key: value * hops_per_window for key, value in per_call.items()}
        else:  # a batch frontend recomputes the window at every hop
            hop_ms = window_ms = per_call
        results[candidate.name] = {"label": candidate.label, "window_ms": window_ms, "hop_ms": hop_ms}
    ours_batch = results["ours_batch"]["window_ms"]["median"]
    ours_hop = results["ours_stream"]["hop_ms"]["median"]
    for entry in results.values():
        entry["window_ratio_to_ours_batch"] = entry["window_ms"]["median"] / ours_batch
        entry["hop_ratio_to_ours_stream"] = entry["hop_ms"]["median"] / ours_hop
    targets: dict[str, Any] = {}
    if "librosa" in results:
        targets["stream_hop_vs_librosa"] = _target(results["librosa"]["hop_ratio_to_ours_stream"], 10.0)
        targets["batch_vs_librosa"] = _target(results["librosa"]["window_ratio_to_ours_batch"], 2.0)
    return {
        "benchmark": "frontend",
        "audio": source,
        "repeats": repeats,
        "window_seconds": DEFAULT_WINDOW_SECONDS,
        "window_samples": window,
        "hop_seconds": HOP_SECONDS,
        "spec": spec.to_dict(),
        "results": results,
        "unavailable": unavailable,
        "targets": targets,
        "max_abs_diff_vs_ours": agreement,
        "blas_threads": blas,
        "versions": versions,
        "machine": {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()},
    }


def _target(ratio: float, required: float) -> dict[str, Any]:
    return {"ratio": ratio, "required": required, "met": ratio >= required}


def format_frontend_report(report: dict[str, Any]) -> str:
    """The plain-text table (no rich: the device install does not have it)."""
    header = ("frontend", "1 s window median", "p90", "x ours", "0.25 s hop median", "p90", "x ours")
    rows = [header]
    for entry in report["results"].values():
        rows.append(
            (
                entry["label"],
                f"{entry['window_ms']['median']:.3f} ms",
                f"{entry['window_ms']['p90']:.3f} ms",
                f"{entry['window_ratio_to_ours_batch']:.1f}",
                f"{entry['hop_ms']['median']:.3f} ms",
                f"{entry['hop_ms']['p90']:.3f} ms",
                f"{entry['hop_ratio_to_ours_stream']:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    hops = round(report["window_seconds"] / report["hop_seconds"])
    lines = [
        f"frontend benchmark: {report['audio']}, {report['repeats']} calls each (interleaved), "
        f"{report['window_seconds']:g} s window ({report['window_samples']} samples), {report['hop_seconds']:g} s hop, "
        f"BLAS threads: {report['blas_threads']}",
    ]
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append(
        "x ours: window column vs ours batch, hop column vs ours streaming. Batch frontends recompute the whole "
        f"window at every hop; the stream computes only the new frames (its window figure = {hops} hops)."
    )
    for name, diff in report["max_abs_diff_vs_ours"].items():
        lines.append(f"{name} computes the same MFCCs as ours here: max abs difference {diff:.1e} (float32 input)")
    if "python_speech_features" in report["results"]:
        lines.append("python_speech_features: same framing and sizes, its own mel/log conventions (cost only)")
    for name, reason in report["unavailable"].items():
        lines.append(f"{name}: {reason}, skipped")
    names = {"stream_hop_vs_librosa": "streaming hop vs librosa", "batch_vs_librosa": "batch window vs librosa"}
    for key, target in report["targets"].items():
        verdict = "met" if target["met"] else "MISSED"
        lines.append(f"target {names[key]}: {target['ratio']:.1f}x faster (need >= {target['required']:g}x) {verdict}")
    return "\n".join(lines)

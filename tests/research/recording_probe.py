"""Does a set of note samples look recorded or synthesised? Signal cues per file, medians per set.

Why: a source is catalogued as real recordings only if its samples show what a microphone leaves and an
oscillator does not (issue 23: Ixox.Flute's origin is not stated). Cues, each on the note's steady part:

* ``floor_db``: the quietest 50 ms of the file (dBFS); digital silence (-inf) means generated or gated audio;
* ``floor_flat``: spectral flatness of that quietest stretch (a room/preamp floor is coloured, < 1; 0 if silent);
* ``hnr_db``: harmonic-to-noise ratio of 1 s in the middle (breath and bow noise between the harmonics);
* ``f0_sd_c``: frame-to-frame f0 spread in cents after removing a linear trend (players drift, oscillators don't);
* ``rms_sd_db``: spread of 20 ms levels (bow and breath pressure vary);
* ``cyc_corr``: mean correlation of successive periods (1.0 = a repeated single cycle).

Usage: python tests/research/recording_probe.py LABEL=FILE,FILE,... [LABEL=...] [--synthetic]
(``--synthetic`` adds two numpy flutes as a reference: plain additive, and additive + vibrato + breath noise).

``--intonation SAMPLE_DIR REGIONS.txt...`` instead measures each SFZ region's sample against its
``pitch_keycenter`` (and prints the region's ``tune=``): a player's intonation moves with the dynamics and the
mapper corrects the worst notes, where an oscillator is in tune. Ixox.Flute: extract ``Samples/`` and
``Data/region/*.txt`` from the mirror (``git cat-file blob COMMIT:PATH``) and pass both.
"""

from __future__ import annotations

import sys

import numpy as np
import soundfile as sf

SR = 16000


def load(path: str) -> np.ndarray:
    from instrument_ai.train.sources.import_notes import resample  # the corpus' own resampler

    x, sr = sf.read(path, always_2d=True, dtype="float64")
    return resample(x.mean(axis=1), sr, SR)


def synthetic(kind: str, midi: float = 72.0, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    rng = np.random.default_rng(seed)
    vib = 1 + (0.004 * np.sin(2 * np.pi * 5.2 * t) if kind == "rich" else 0 * t)
    phase = 2 * np.pi * np.cumsum(f0 * vib) / SR
    x = sum(np.sin(k * phase) / k**2 for k in range(1, 9))
    if kind == "rich":
        noise = np.convolve(rng.standard_normal(len(t)), np.ones(8) / 8, "same")
        x = x + 0.05 * noise
    env = np.minimum(1, t / 0.08) * np.minimum(1, (seconds - t) / 0.2)
    return 0.5 * x * env


def _steady(x: np.ndarray) -> np.ndarray:
    """1 s around the middle of the part within 12 dB of the loudest 20 ms."""
    hop = SR // 50
    rms = np.sqrt(np.convolve(x**2, np.ones(hop) / hop, "valid")[::hop] + 1e-20)
    loud = np.nonzero(rms > rms.max() / 4)[0]
    a, b = loud[0] * hop + SR // 10, (loud[-1] + 1) * hop
    mid = (a + b) // 2
    return x[max(a, mid - SR // 2) : min(b, mid + SR // 2)]


def probe(x: np.ndarray) -> dict[str, float]:
    from instrument_ai.train.sources.pitch import estimate_pitch

    win = SR // 20
    power = np.convolve(x**2, np.ones(win) / win, "valid")
    quiet = int(np.argmin(power))
    floor = float(power[quiet])
    floor_db = 10 * np.log10(floor) if floor > 0 else -np.inf
    seg = x[quiet : quiet + win]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2 + 1e-30
    flat = float(np.exp(np.mean(np.log(spec))) / np.mean(spec)) if floor > 0 else 0.0
    steady = _steady(x)
    est = estimate_pitch(steady, SR)
    out = {"floor_db": round(floor_db, 1), "floor_flat": round(flat, 3)}
    if est is None or len(steady) < SR // 4:
        return out | {"hnr_db": np.nan, "f0_sd_c": np.nan, "rms_sd_db": np.nan, "cyc_corr": np.nan}
    f0 = est.hz
    spec = np.abs(np.fft.rfft(steady * np.hanning(len(steady)))) ** 2
    freqs = np.fft.rfftfreq(len(steady), 1 / SR)
    band = (freqs > f0 * 0.5) & (freqs < min(7000.0, SR / 2 - 100))
    harmonic = band & (np.abs(freqs / f0 - np.round(freqs / f0)) < 0.06)
    hnr = 10 * np.log10(spec[harmonic].sum() / max(spec[band & ~harmonic].sum(), 1e-30))
    period = SR / f0
    frame = int(max(4 * period, 0.03 * SR))
    f0s = []
    for s in range(0, len(steady) - frame - int(2 * period), frame // 2):
        e = estimate_pitch(steady[s : s + frame + int(2 * period) + 2048], SR)
        if e is not None:
            f0s.append(1200 * np.log2(e.hz / f0))
    f0s_arr = np.asarray(f0s)
    f0_sd = (
        float(np.std(f0s_arr - np.polyval(np.polyfit(np.arange(len(f0s_arr)), f0s_arr, 1), np.arange(len(f0s_arr)))))
        if len(f0s_arr) > 3
        else np.nan
    )
    hop = SR // 50
    rms = 10 * np.log10(np.convolve(steady**2, np.ones(hop) / hop, "valid")[::hop] + 1e-20)
    p = int(round(period))
    cycles = [steady[i : i + p] for i in range(0, len(steady) - 2 * p, p)]
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(cycles, cycles[1:], strict=False) if a.std() > 0 and b.std() > 0]
    return out | {
        "hnr_db": round(float(hnr), 1),
        "f0_sd_c": round(f0_sd, 2),
        "rms_sd_db": round(float(np.std(rms)), 2),
        "cyc_corr": round(float(np.mean(corr)), 4),
    }


def intonation(sample_dir: str, region_files: list[str]) -> None:
    """Cents of every region's sample from its key, per sample-name prefix (articulation + dynamic)."""
    import re
    from pathlib import Path

    from instrument_ai.train.sources.pitch import estimate_pitch

    groups: dict[str, list[float]] = {}
    for text in (Path(f).read_text() for f in region_files):
        for m in re.finditer(r"pitch_keycenter=(\d+) sample=([\w]+)\.\$EXT([^\n]*)", text):
            key, name, rest = int(m[1]), m[2], m[3]
            tune = re.search(r"tune=(-?\d+)", rest)
            path = next(Path(sample_dir).glob(f"{name}.*"), None)
            found = None if path is None else estimate_pitch(*sf.read(path, dtype="float64"))
            if found is None:
                continue
            cents = 100 * (found.midi - key)
            groups.setdefault(name.rsplit("_", 2)[0], []).append(cents)
            if tune:
                print(f"{name}: tune={tune[1]} in the SFZ, measured {cents:+.1f} cents")
    for prefix, cents_list in groups.items():
        c = np.asarray(cents_list)
        print(f"{prefix:8s} n={len(c):2d} median {np.median(c):+.1f} cents, range {c.min():+.1f}..{c.max():+.1f}")


def main(argv: list[str]) -> int:
    if len(argv) > 2 and argv[1] == "--intonation":
        intonation(argv[2], argv[3:])
        return 0
    sets: dict[str, list[np.ndarray]] = {}
    for arg in argv[1:]:
        if arg == "--synthetic":
            sets["synth-plain"] = [synthetic("plain", m) for m in (64, 72, 80)]
            sets["synth-breath-vibrato"] = [synthetic("rich", m, seed=m) for m in (64, 72, 80)]
        elif "=" in arg:
            label, files = arg.split("=", 1)
            sets[label] = [load(f) for f in files.split(",") if f]
    for label, clips in sets.items():
        rows = [probe(x) for x in clips]
        keys = list(rows[0])
        med = {k: float(np.nanmedian([r[k] for r in rows])) for k in keys}
        print(f"{label:22s} n={len(rows):3d} " + " ".join(f"{k}={med[k]:.4g}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

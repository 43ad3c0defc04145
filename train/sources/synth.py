"""Synthesised notes (issue 13 part 5): numpy patches with parameters randomised per instrument.

Public API: `synth_notes(n_instruments, seed, pitch_step=3) -> Iterator[ImportedNote]`, and `PATCH_KINDS`
(kind -> family). Each instrument is one patch `<kind>-<index:03d>` (e.g. `fm-epiano-007`); its notes follow
the corpus conventions: 16 kHz, note-on at 0, note-off at 3 s, 4 s total, pitches on a `pitch_step` grid over
the patch's range, velocities 50 and 100 (level and brightness), `sounding_seconds` measured, source
`synthetic`. Oscillators are additive (harmonics below Nyquist only), so high notes do not alias.
Families: `synth_lead` by default; patches imitating another family carry that family (FM e-piano ->
keyboard, synth bass -> bass, synth brass -> brass, saw-pad strings -> string, FM bells -> mallet,
drawbar organ -> organ).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .imported import NUM_SAMPLES, SAMPLE_RATE, ImportedNote

SR = SAMPLE_RATE
HOLD = 3.0
VELOCITIES = (50, 100)
PATCH_KINDS: dict[str, tuple[str, tuple[int, int]]] = {
    "saw-lead": ("synth_lead", (48, 96)),
    "square-lead": ("synth_lead", (48, 96)),
    "pwm-lead": ("synth_lead", (48, 96)),
    "wavetable": ("synth_lead", (40, 96)),
    "fm-lead": ("synth_lead", (48, 96)),
    "fm-epiano": ("keyboard", (36, 96)),
    "synth-bass": ("bass", (28, 60)),
    "fm-bass": ("bass", (28, 60)),
    "synth-brass": ("brass", (40, 84)),
    "fm-brass": ("brass", (40, 84)),
    "synth-strings": ("string", (36, 96)),
    "fm-bell": ("mallet", (60, 108)),
    "drawbar-organ": ("organ", (36, 96)),
}


def _t() -> np.ndarray:
    return np.arange(NUM_SAMPLES) / SR


def midi_hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def adsr(a: float, d: float, s: float, r: float, hold: float = HOLD) -> np.ndarray:
    """Linear attack, exponential decay to s, held until `hold`, exponential release (time constant r/5)."""
    t = _t()
    env = np.where(t < a, t / max(a, 1e-4), s + (1 - s) * np.exp(-(t - a) / max(d, 1e-4) * 3))
    at_off = env[min(int(hold * SR), NUM_SAMPLES - 1)]
    rel = at_off * np.exp(-(t - hold) / max(r, 1e-3) * 5)
    return np.where(t < hold, env, rel)


def additive(f0: float, amps, phase_mod: np.ndarray | None = None, detune_cents: float = 0.0) -> np.ndarray:
    """Sum of harmonics k*f0 with amplitude amps(k), only those below Nyquist (band-limited by construction)."""
    t = _t()
    f = f0 * 2 ** (detune_cents / 1200)
    out = np.zeros(NUM_SAMPLES)
    k = 1
    while k * f < SR / 2 * 0.95:
        a = amps(k)
        if a:
            ph = 2 * np.pi * k * f * t
            if phase_mod is not None:
                ph = ph + k * phase_mod
            out += a * np.sin(ph)
        k += 1
    return out


def saw(k: int) -> float:
    return 1.0 / k


def square(k: int) -> float:
    return 1.0 / k if k % 2 else 0.0


def pulse(width: float):
    return lambda k: 2 * np.sin(np.pi * k * width) / (np.pi * k)


def lowpass(x: np.ndarray, cutoff: np.ndarray, q: float) -> np.ndarray:
    """Resonant state-variable low-pass with a time-varying cutoff (Hz per sample); the filter envelope."""
    f = 2 * np.sin(np.pi * np.clip(cutoff, 20, SR / 6) / SR)
    damp = 1 / max(q, 0.5)
    low = band = 0.0
    out = np.empty_like(x)
    # a python loop at 64000 samples is ~40 ms; fine for a few hundred notes per instrument
    fl = f.tolist()
    for i, v in enumerate(x.tolist()):
        fi = fl[i]
        low += fi * band
        high = v - low - damp * band
        band += fi * high
        out[i] = low
    return out


def fm(f0: float, ratios, indices, envs, feedback: float = 0.0) -> np.ndarray:
    """A serial FM stack: operator j modulates j-1 (carrier 0), index envelopes per modulator."""
    t = _t()
    mod = np.zeros(NUM_SAMPLES)
    for ratio, index, env in reversed(list(zip(ratios[1:], indices, envs, strict=True))):
        ph = 2 * np.pi * f0 * ratio * t + mod
        if feedback:
            ph = ph + feedback * np.sin(ph)
        # keep modulator sidebands mostly below Nyquist: drop the index where they would fold
        lim = max(0.0, 1 - (f0 * ratio * (1 + index)) / (SR / 2))
        mod = index * env * np.sin(ph) * min(1.0, lim * 4)
    return np.sin(2 * np.pi * f0 * ratios[0] * t + mod)


def _sounding(x: np.ndarray, floor_db: float = -40.0) -> float:
    peak = float(np.max(np.abs(x)))
    if peak <= 0:
        return 0.0
    idx = np.nonzero(np.abs(x) >= peak * 10 ** (floor_db / 20))[0]
    return float(min(4.0, (idx[-1] + 1) / SR))


class Patch:
    """One instrument: a kind and its parameters, drawn once from the patch's own generator."""

    def __init__(self, kind: str, index: int, seed: int) -> None:
        self.kind, self.index = kind, index
        self.family, self.range = PATCH_KINDS[kind]
        self.name = f"{kind}-{index:03d}"
        r = np.random.default_rng([seed, index, 13])
        self.p = {
            "detune": float(r.uniform(3, 15)), "voices": int(r.integers(1, 4)), "q": float(r.uniform(0.7, 4)),
            "cut": float(r.uniform(2, 8)), "envamt": float(r.uniform(2, 12)), "fdec": float(r.uniform(0.1, 1.0)),
            "a": float(r.uniform(0.002, 0.03)), "d": float(r.uniform(0.1, 1.0)), "s": float(r.uniform(0.4, 0.9)),
            "r": float(r.uniform(0.1, 0.6)), "width": float(r.uniform(0.1, 0.45)), "pwmrate": float(r.uniform(0.3, 5)),
            "ratio": float(r.choice([1, 2, 3, 14])), "index": float(r.uniform(0.5, 4)),
            "bell": float(r.choice([1.4, 2.76, 3.5, 5.19])), "fb": float(r.uniform(0, 0.6)),
            "draw": r.choice([0, 0.25, 0.5, 0.75, 1.0], size=9), "morph": float(r.uniform(0.2, 2)),
            "vib": float(r.uniform(0, 10)),
        }

    def pitches(self, step: int) -> list[int]:
        return list(range(self.range[0], self.range[1] + 1, step))

    def render(self, pitch: int, velocity: int) -> np.ndarray:
        p, f0, k = self.p, midi_hz(pitch), self.kind
        bright = 0.6 + 0.4 * velocity / 100  # velocity 100 is brighter than 50
        t = _t()
        if k in ("saw-lead", "square-lead", "synth-bass", "synth-brass", "synth-strings", "pwm-lead"):
            if k == "pwm-lead":
                w = 0.5 + (p["width"] - 0.5) * np.sin(2 * np.pi * p["pwmrate"] * t)
                # PWM as the difference of two saws, one phase-shifted by the moving width
                x = additive(f0, saw) - additive(f0, saw, phase_mod=2 * np.pi * w)
            else:
                shape = square if k == "square-lead" else saw
                voices = 3 if k == "synth-strings" else p["voices"]
                x = sum(additive(f0, shape, detune_cents=p["detune"] * (v - (voices - 1) / 2)) for v in range(voices))
            a = {"synth-strings": 0.3 + p["a"] * 10, "synth-brass": 0.05 + p["a"] * 3}.get(k, p["a"])
            env = adsr(a, p["d"], p["s"], p["r"] * (3 if k == "synth-strings" else 1))
            fenv = adsr(a, p["fdec"], 0.2, p["r"])
            cutoff = f0 * (p["cut"] + p["envamt"] * fenv) * bright
            x = lowpass(x, cutoff, p["q"]) * env
        elif k == "wavetable":
            m = 0.5 + 0.5 * np.sin(2 * np.pi * t / (p["morph"] * 4))  # morph between a saw and a square table
            x = (1 - m) * additive(f0, saw) + m * additive(f0, square)
            x *= adsr(p["a"], p["d"], p["s"], p["r"])
        elif k == "drawbar-organ":
            ratios = [0.5, 1.5, 1, 2, 3, 4, 5, 6, 8]
            x = np.zeros(NUM_SAMPLES)
            for ratio, level in zip(ratios, p["draw"], strict=True):
                if level and f0 * ratio < SR / 2 * 0.95:
                    x += level * np.sin(2 * np.pi * f0 * ratio * t)
            x[: int(0.005 * SR)] *= np.linspace(0, 1, int(0.005 * SR))
            x *= adsr(0.005, 0.1, 1.0, 0.05)
        else:  # FM kinds
            idx_env = adsr(0.001, p["d"], 0.1, p["r"])
            if k == "fm-epiano":  # 1:1 body plus a 14:1 tine that dies fast
                body = fm(f0, [1, 1], [p["index"] * bright], [idx_env])
                tine = fm(f0, [1, 14], [1.5 * bright], [adsr(0.001, 0.05, 0.0, 0.05)])
                x = (body + 0.3 * tine) * adsr(0.002, 1.5, 0.0, 0.3)
                x *= np.exp(-t * 0.3)
            elif k == "fm-bass":
                x = fm(f0, [1, 1, p["ratio"] if p["ratio"] < 4 else 2], [p["index"] * bright, 1.0],
                       [idx_env, idx_env]) * adsr(0.002, 0.4, 0.5, 0.1)
            elif k == "fm-brass":  # slow attack, index follows amplitude, feedback on the modulator
                env = adsr(0.08 + p["a"] * 3, 0.3, 0.8, 0.15)
                x = fm(f0, [1, 1], [3.0 * bright], [env], feedback=p["fb"]) * env
            elif k == "fm-bell":  # inharmonic ratio, long exponential decay
                x = fm(f0, [1, p["bell"]], [p["index"] * bright], [np.exp(-t * 1.5)]) * np.exp(-t * 1.2)
                x *= adsr(0.001, 1, 1.0, 0.8)
            else:  # fm-lead: 3 operators with vibrato
                vib = np.sin(2 * np.pi * 5.5 * t) * p["vib"] / 1200 * 2 * np.pi * f0 / 5.5
                x = np.sin(2 * np.pi * f0 * t + vib + fm(f0, [1, p["ratio"] if p["ratio"] < 4 else 2],
                                                            [p["index"] * bright], [idx_env]) * 0.8)
                x *= adsr(p["a"], p["d"], p["s"], p["r"])
        peak = float(np.max(np.abs(x))) or 1.0
        level = 0.8 * (velocity / 127) ** 1.5 / (100 / 127) ** 1.5
        return (x / peak * min(0.95, level)).astype(np.float32)


def make_patches(n_instruments: int, seed: int) -> list[Patch]:
    """n patches, round-robin over `PATCH_KINDS`, each with its own parameters."""
    kinds = list(PATCH_KINDS)
    return [Patch(kinds[i % len(kinds)], i, seed) for i in range(n_instruments)]


def synth_notes(n_instruments: int, seed: int, pitch_step: int = 3) -> Iterator[ImportedNote]:
    """Every note of n patches: pitches on the grid x velocities 50/100."""
    for patch in make_patches(n_instruments, seed):
        for pitch in patch.pitches(pitch_step):
            for vel in VELOCITIES:
                x = patch.render(pitch, vel)
                yield ImportedNote(x, patch.family, "synthetic", patch.name, pitch, vel, _sounding(x),
                                   f"synth.synth_notes seed={seed} patch={patch.name} pitch={pitch} vel={vel}")

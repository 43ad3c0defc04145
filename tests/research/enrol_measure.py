"""Measure enrolment (issue 22): does a personal head, fitted on K notes of a source, name the rest of it?

Protocol, per held-out real-recording source (unpacked by enrol_sources.py; the shipped model never heard any):

1. **collect** (cached): every file goes through the engine exactly as `classify` would (default settings:
   bundle hop, smooth 3, silence -60 dBFS, min confidence 0.4, onset alignment), with a tap on the bundle that
   records, at each sounding hop, the general model's probabilities and the descriptor of the window the model saw
   (`personal.describe_window`). Also collected: SoundFont renders of every family (a library the model trained
   on, so its answers there are good: the set on which "families not enrolled must not lose" is sharpest).
2. **enrol**: draw K files of each instrument family of the source (seeded, `--repeats` draws), fit the head on
   their notes (the first `MAX_NOTE_HOPS` sounding hops, as `extract_notes` keeps them), and score
   * the source's remaining notes: the file answer (`file_answer`: the label held longest) before and after;
   * notes of families the source does not hold (the other sources and the SoundFont renders): before and after.
   The engine's decision is replayed from the recorded hops (`replay`), checked against the engine's own labels
   for every file (`--check`), so a draw costs milliseconds instead of a pass through the model.
3. **other**: enrol about 30 s of a source's non-instrument sounds (the basses' hits and noises) as `other`; score
   instrument events per minute on the held-out sounds of that kind before and after, and the instrument notes
   of every source before and after.

Heads compared (`--heads`): `ncm` (device/personal.py: nearest class mean, leave-one-note-out radius, gated
blend) and `lr` (the same gate, the family chosen by an L2-regularised multinomial logistic regression on the
enrolled hops when two or more families are enrolled).

Example (from the repo root; the cache and results go to /tmp):
  nice -n 10 .venv/bin/python tests/research/enrol_measure.py --data /tmp/enrol-data --shots 3,10 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device import bundle as bundle_module
from instrument_ai.device import personal
from instrument_ai.device.engine import OTHER
from instrument_ai.device.openset import rejection_from_metadata
from instrument_ai.device.settings import DEFAULT_SETTINGS
from instrument_ai.train.experiments.enrol import Recording, answer, hear, instrument_events
from instrument_ai.train.experiments.enrol import notes_of as enrolled_notes
from instrument_ai.train.experiments.enrol import replay as enrol_replay

INSTRUMENT_SOURCES = ("meatbass", "dsmolken", "bearsax", "cyborgs", "playitright")
OTHER_SOURCES = ("dsmolken", "meatbass")
SOUNDFONT_PROGRAMS = (0, 4, 11, 19, 24, 27, 33, 40, 52, 56, 57, 71, 73, 80)
SOUNDFONT_LIBRARIES = ("Alexs_gm_v1.3", "Airfont_380_final")
BACKGROUND_LIBRARIES = ("32MbGMStereo", "90s_Retro_Vintage_v1.05")
"""Libraries the background bank is rendered from: not the ones scored as 'foreign' notes."""
BACKGROUND_PROGRAMS = (
    0,
    2,
    4,
    6,
    8,
    11,
    13,
    16,
    19,
    21,
    24,
    26,
    27,
    32,
    33,
    38,
    40,
    42,
    48,
    52,
    56,
    57,
    60,
    61,
    64,
    66,
    68,
    71,
    73,
    75,
    80,
    81,
)


def collect(bundle: Any, data: Path, cache: Path) -> list[Recording]:
    import soundfile

    if cache.exists():
        return pickle.loads(cache.read_bytes())
    recordings = []
    started = time.perf_counter()
    for path in sorted(data.glob("*/*/*.wav")):
        source, family = path.parent.parent.name, path.parent.name
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        recordings.append(hear(bundle, audio.mean(axis=1), rate, source, family, path.name))
    print(f"collected {len(recordings)} recordings in {time.perf_counter() - started:.0f} s", flush=True)
    recordings += collect_soundfont(bundle)
    cache.write_bytes(pickle.dumps(recordings))
    return recordings


def collect_background(bundle: Any, cache: Path) -> list[personal.Note]:
    """The background bank: hops of SoundFont notes (other libraries than the scored ones) and numpy noises."""
    from instrument_ai.train.other_sounds import noise_clips

    if cache.exists():
        recordings = pickle.loads(cache.read_bytes())
    else:
        recordings = collect_soundfont(bundle, BACKGROUND_LIBRARIES, BACKGROUND_PROGRAMS, pitches=3)
        for i, clip in enumerate(noise_clips(48, 7)):
            recordings.append(hear(bundle, clip.audio, 16000, "noise", OTHER, f"noise-{i}"))
        cache.write_bytes(pickle.dumps(recordings))
    notes = [n for r in recordings for n in enrolled_notes(r)]
    for note in notes:  # every other hop: half the per-hop cost, neighbouring hops are much alike
        note.descriptors = note.descriptors[::2]
        note.probs = None if note.probs is None else note.probs[::2]
    return notes


def collect_soundfont(
    bundle: Any,
    libraries: tuple[str, ...] = SOUNDFONT_LIBRARIES,
    programs: tuple[int, ...] = SOUNDFONT_PROGRAMS,
    pitches: int = 4,
) -> list[Recording]:
    from instrument_ai.train.gm_programs import GM_PROGRAMS
    from instrument_ai.train.soundfont_render import SoundFontRenderer

    root = Path("/work/shared/sample-libraries/sf3")
    recordings = []
    for library in libraries:
        for program in programs:
            path = root / library / f"{program:03d}.sf3"
            entry = GM_PROGRAMS.get(program)
            if entry is None or not path.exists():
                continue
            renderer = SoundFontRenderer(path)
            for pitch in np.linspace(entry.low + 5, entry.high - 5, pitches).round().astype(int):
                note = renderer.render(0, program, int(pitch), 100)
                name = f"{library}-{program:03d}-{pitch}"
                recordings.append(hear(bundle, note, 16000, "soundfont", entry.family_str, name))
    return recordings


# -- the engine's decision, replayed ------------------------------------------------------------------------------


def replay(probs: list[np.ndarray | None], labels: list[str], rejection: Any) -> list[str]:
    """The engine's per-hop labels at its default settings (`train/experiments/enrol.replay`, `decide_label`)."""
    return enrol_replay(probs, labels, rejection, DEFAULT_SETTINGS)


class Adjuster:
    """Applies a head to recorded hops (descriptor + general output), as `PersonalHead.adjust` does in the engine."""

    def __init__(self, head: personal.PersonalHead, chooser: Any = None) -> None:
        self.head, self.chooser = head, chooser

    def __call__(self, descriptor: np.ndarray | None, probs: np.ndarray) -> np.ndarray:
        head = self.head
        if descriptor is None or not head.families:
            return probs
        best, _, weight = head.match(descriptor, probs)
        if self.chooser is not None:  # lr: the gate is the chosen family's radius, the family is the classifier's
            z = personal._point(descriptor, probs, head.offset, head.scale, head.prob_weight)
            best = int(np.argmax(self.chooser(z)))
            mine = head.prototypes[head.prototype_family == best]
            ratio = float(np.sqrt(((mine - z) ** 2).sum(axis=1).min())) / head.radii[best]
            weight = head.blend * min(1.0, max(0.0, (1.0 + head.soft_edge - ratio) / head.soft_edge))
        if weight <= 0.0 or head.outside_envelope(best, probs):
            return probs
        out = probs * (1.0 - weight)
        out[head.label_index[best]] += weight
        return out


def fit_lr(head: personal.PersonalHead, *, steps: int = 300, l2: float = 1e-2, rate: float = 0.5) -> Any:
    """Multinomial logistic regression on the head's prototypes (full-batch gradient descent)."""
    if len(head.families) < 2:
        return None
    x = head.prototypes
    y = np.eye(len(head.families))[head.prototype_family]
    x1 = np.hstack((x, np.ones((x.shape[0], 1))))
    w = np.zeros((x1.shape[1], y.shape[1]))
    for _ in range(steps):
        logits = x1 @ w
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = x1.T @ (p - y) / x.shape[0] + l2 * np.vstack((w[:-1], np.zeros((1, w.shape[1]))))
        w -= rate * grad
    return lambda z: np.append(z, 1.0) @ w


def fit(kind: str, notes: list[personal.Note], bundle: Any, **kwargs: Any) -> Adjuster:
    head = personal.fit_head(notes, bundle.labels, bundle.spec, bundle.mean, bundle.std, **kwargs)
    return Adjuster(head, fit_lr(head) if kind == "lr" else None)


def score(recordings: list[Recording], adjuster: Adjuster | None, labels: list[str], rejection: Any) -> list[str]:
    answers = []
    for r in recordings:
        probs = (
            r.probs
            if adjuster is None
            else [None if p is None else adjuster(d, p.copy()) for p, d in zip(r.probs, r.descriptors, strict=True)]
        )
        answers.append(answer(probs, replay(probs, labels, rejection), labels))
    return answers


def events_per_minute(
    recordings: list[Recording], adjuster: Adjuster | None, labels: list[str], rejection: Any
) -> float:
    events, seconds = 0, 0.0
    for r in recordings:
        probs = (
            r.probs
            if adjuster is None
            else [None if p is None else adjuster(d, p.copy()) for p, d in zip(r.probs, r.descriptors, strict=True)]
        )
        events += instrument_events(replay(probs, labels, rejection))
        seconds += r.seconds
    return 60.0 * events / max(seconds, 1e-9)


def accuracy(recordings: list[Recording], answers: list[str]) -> float:
    if not recordings:
        return float("nan")
    return float(np.mean([a == r.family for r, a in zip(recordings, answers, strict=True)]))


# -- the experiments ------------------------------------------------------------------------------------------------


def enrol_instruments(
    recordings: list[Recording], bundle: Any, shots: list[int], repeats: int, heads: list[str], **kwargs: Any
) -> list[dict[str, Any]]:
    labels, rejection = list(bundle.labels), rejection_from_metadata(bundle.metadata)
    rows = []
    for source in INSTRUMENT_SOURCES:
        mine = [r for r in recordings if r.source == source and r.family != OTHER]
        families = sorted({r.family for r in mine})
        foreign = [r for r in recordings if r.family not in families and r.family != OTHER]
        for k in shots:
            for kind in heads:
                before, after, f_before, f_after, fits = [], [], [], [], []
                s_before, s_after = [], []
                synthetic = [r for r in foreign if r.source == "soundfont"]
                for rep in range(repeats):
                    rng = random.Random(f"{rep}:{source}:{k}")
                    enrolled: set[int] = set()
                    for family in families:
                        ids = [i for i, r in enumerate(mine) if r.family == family]
                        enrolled.update(rng.sample(ids, min(k, len(ids) - 1)))
                    notes = [n for i in sorted(enrolled) for n in enrolled_notes(mine[i])]
                    started = time.perf_counter()
                    adjuster = fit(kind, notes, bundle, **kwargs)
                    fits.append(time.perf_counter() - started)
                    rest = [r for i, r in enumerate(mine) if i not in enrolled]
                    before.append(accuracy(rest, score(rest, None, labels, rejection)))
                    after.append(accuracy(rest, score(rest, adjuster, labels, rejection)))
                    f_before.append(accuracy(foreign, score(foreign, None, labels, rejection)))
                    f_after.append(accuracy(foreign, score(foreign, adjuster, labels, rejection)))
                    s_before.append(accuracy(synthetic, score(synthetic, None, labels, rejection)))
                    s_after.append(accuracy(synthetic, score(synthetic, adjuster, labels, rejection)))
                row = {
                    "source": source,
                    "families": families,
                    "shots": k,
                    "head": kind,
                    "notes_scored": len(rest),
                    "before": float(np.mean(before)),
                    "after": float(np.mean(after)),
                    "after_min": float(np.min(after)),
                    "after_max": float(np.max(after)),
                    "foreign_notes": len(foreign),
                    "foreign_before": float(np.mean(f_before)),
                    "foreign_after": float(np.mean(f_after)),
                    "soundfont_notes": len(synthetic),
                    "soundfont_before": float(np.mean(s_before)),
                    "soundfont_after": float(np.mean(s_after)),
                    "fit_ms": 1e3 * float(np.mean(fits)),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def enrol_other(
    recordings: list[Recording], bundle: Any, repeats: int, seconds: float, **kwargs: Any
) -> list[dict[str, Any]]:
    labels, rejection = list(bundle.labels), rejection_from_metadata(bundle.metadata)
    rows = []
    instruments = [r for r in recordings if r.family != OTHER]
    for source in OTHER_SOURCES:
        sounds = [r for r in recordings if r.source == source and r.family == OTHER]
        before, after, inst_before, inst_after, enrolled_s = [], [], [], [], []
        for rep in range(repeats):
            order = list(range(len(sounds)))
            random.Random(f"{rep}:{source}:other").shuffle(order)
            chosen, total = [], 0.0
            for i in order:
                if total >= seconds:
                    break
                chosen.append(i)
                total += sounds[i].seconds
            notes = [n for i in chosen for n in enrolled_notes(sounds[i])]
            for n in notes:
                n.family = OTHER
            adjuster = fit("ncm", notes, bundle, **kwargs)
            held_out = [s for i, s in enumerate(sounds) if i not in set(chosen)]
            before.append(events_per_minute(held_out, None, labels, rejection))
            after.append(events_per_minute(held_out, adjuster, labels, rejection))
            inst_before.append(accuracy(instruments, score(instruments, None, labels, rejection)))
            inst_after.append(accuracy(instruments, score(instruments, adjuster, labels, rejection)))
            enrolled_s.append(total)
        row = {
            "source": source,
            "other_files": len(sounds),
            "enrolled_seconds": float(np.mean(enrolled_s)),
            "events_per_min_before": float(np.mean(before)),
            "events_per_min_after": float(np.mean(after)),
            "instrument_notes": len(instruments),
            "instrument_acc_before": float(np.mean(inst_before)),
            "instrument_acc_after": float(np.mean(inst_after)),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def check_replay(recordings: list[Recording], bundle: Any) -> None:
    """The replayed labels and answers equal the engine's for every recording, or the measurement is wrong."""
    labels, rejection = list(bundle.labels), rejection_from_metadata(bundle.metadata)
    bad = 0
    for r in recordings:
        hop_labels = replay(r.probs, labels, rejection)
        if hop_labels != r.engine_labels or answer(r.probs, hop_labels, labels) != r.engine_answer:
            bad += 1
    print(f"replay check: {len(recordings) - bad}/{len(recordings)} recordings replayed exactly", flush=True)
    if bad:
        sys.exit(1)


def timings(bundle: Any, recordings: list[Recording], **kwargs: Any) -> dict[str, float]:
    """Fit time for 100 notes (ncm and lr) and the per-hop cost of applying the head to a model window."""
    pool = [r for r in recordings if r.source in ("meatbass", "dsmolken")]  # string, bass and other notes
    random.Random(0).shuffle(pool)
    notes = [n for r in pool[:100] for n in enrolled_notes(r)]
    out = {}
    for kind in ("ncm", "lr"):
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            fit(kind, notes[:100], bundle, **kwargs)
            runs.append(time.perf_counter() - started)
        out[f"fit_100_notes_{kind}_ms"] = 1e3 * float(np.median(runs))
    head = personal.fit_head(notes[:100], bundle.labels, bundle.spec, bundle.mean, bundle.std, **kwargs)
    out["background"] = 0 if head.background is None else int(head.background.shape[0])
    out["prototypes"] = int(head.prototypes.shape[0])
    rng = np.random.default_rng(0)
    window = (
        bundle.mean[:, None] + bundle.std[:, None] * rng.standard_normal((bundle.n_mfcc, bundle.window_frames))
    ).astype(np.float32)
    probs = np.full(len(bundle.labels), 1.0 / len(bundle.labels), dtype=np.float32)
    runs = []
    for _ in range(2000):
        started = time.perf_counter()
        head.adjust(window, probs)
        runs.append(time.perf_counter() - started)
    out["adjust_per_hop_median_ms"] = 1e3 * float(np.median(runs))
    out["adjust_per_hop_p99_ms"] = 1e3 * float(np.percentile(runs, 99))
    out["families"] = len(head.families)
    out["notes"] = len(notes[:100])
    out["hops"] = int(sum(n.descriptors.shape[0] for n in notes[:100]))
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/default.tflite"))
    parser.add_argument("--data", type=Path, default=Path("/tmp/enrol-data"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/enrol-cache.pkl"))
    parser.add_argument("--shots", default="3,10")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--heads", default="ncm,lr")
    parser.add_argument("--other-seconds", type=float, default=30.0)
    parser.add_argument("--radius-quantile", type=float, default=personal.RADIUS_QUANTILE)
    parser.add_argument("--radius-scale", type=float, default=personal.RADIUS_SCALE)
    parser.add_argument("--prob-weight", type=float, default=personal.PROB_WEIGHT)
    parser.add_argument("--use-level", action="store_true")
    parser.add_argument("--no-envelope", action="store_true")
    parser.add_argument("--background", action="store_true", help="fit with the background bank")
    parser.add_argument("--background-ratio", type=float, default=personal.BACKGROUND_RATIO)
    parser.add_argument("--background-cache", type=Path, default=Path("/tmp/enrol-background.pkl"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/enrol-results.json"))
    parser.add_argument("--skip", default="", help="comma list of parts to skip: instruments,other,timing")
    args = parser.parse_args()
    bundle = bundle_module.load(args.model)
    recordings = collect(bundle, args.data, args.cache)
    check_replay(recordings, bundle)
    kwargs = {
        "radius_quantile": args.radius_quantile,
        "radius_scale": args.radius_scale,
        "use_level": args.use_level,
        "prob_weight": args.prob_weight,
        "use_envelope": not args.no_envelope,
    }
    if args.background:
        kwargs["background"] = collect_background(bundle, args.background_cache)
        kwargs["background_ratio"] = args.background_ratio
        print(f"background: {len(kwargs['background'])} notes", flush=True)
    skip = set(args.skip.split(","))
    result: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    if "timing" not in skip:
        result["timing"] = timings(bundle, recordings, **kwargs)
    if "instruments" not in skip:
        shots = [int(s) for s in args.shots.split(",")]
        result["instruments"] = enrol_instruments(
            recordings, bundle, shots, args.repeats, args.heads.split(","), **kwargs
        )
    if "other" not in skip:
        result["other"] = enrol_other(recordings, bundle, args.repeats, args.other_seconds, **kwargs)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

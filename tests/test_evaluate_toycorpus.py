"""A tiny synthetic NSynth-format corpus for the evaluation, study and holdout tests.

Each family gets its own timbre (harmonic slope, odd-only harmonics, percussive
or held envelope), each instrument a small variation of it, so a model can
learn the families from MFCC windows in a few epochs while the corpus stays
small enough (a few hundred KB) to build in well under a second. Other test
files load this module by path (importlib), so it works whether or not tests/
is a package.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from instrument_ai.device.labels import FAMILIES
from instrument_ai.train.corpus import nsynth as data_module
from instrument_ai.train.corpus.info import corpus_info

RATE = 16000
# family -> (harmonic slope, odd harmonics only, percussive)
TIMBRES = {
    "bass": (2.5, False, True),
    "brass": (0.6, False, False),
    "flute": (3.0, True, False),
    "guitar": (1.2, False, True),
    "keyboard": (1.8, False, True),
    "mallet": (0.8, True, True),
    "organ": (0.3, True, False),
    "reed": (1.0, True, False),
    "string": (1.5, False, False),
    "synth_lead": (0.2, False, False),
    "vocal": (2.0, True, False),
}


def tone(family: str, pitch: int, velocity: int, variant: int, seconds: float, seed: int) -> np.ndarray:
    """One note: a harmonic tone with the family's spectrum and envelope, a little noise."""
    slope, odd, percussive = TIMBRES[family]
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    out = np.zeros_like(t)
    for h in range(1, 16):
        if odd and h % 2 == 0:
            continue
        if h * f0 > RATE / 2 - 200:
            break
        amp = h ** (-slope) * (1 + 0.1 * variant * ((h % 3) - 1))
        out += amp * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
    envelope = np.exp(-t * 3.0) if percussive else np.minimum(1.0, t / 0.05) * np.where(t < seconds * 0.8, 1.0, 0.3)
    out = out * envelope / max(1e-9, np.abs(out).max())
    out += 0.002 * rng.standard_normal(t.size)
    return (0.8 * velocity / 127 * out).astype(np.float32)


def make_corpus(
    folder: Path,
    families: tuple[str, ...] = ("bass", "flute", "organ"),
    libraries: tuple[str, ...] = ("LibA", "LibB"),
    *,
    instruments_per_library: int = 1,
    pitches: tuple[int, ...] = (48, 55, 60, 67),
    velocities: tuple[int, ...] = (100,),
    seconds: float = 1.5,
    source_of: dict[str, str] | None = None,
    qualities: bool = True,
    splits: dict[str, list[str]] | None = None,
) -> Path:
    """Write examples.json, audio/*.wav and instruments.json; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    notes: list[data_module.Note] = []
    table: dict[str, dict[str, object]] = {}
    counters: dict[tuple[str, str], int] = {}
    instrument_id = 0
    for lib_index, library in enumerate(libraries):
        for family in families:
            for k in range(instruments_per_library):
                source = (source_of or {}).get(family, "acoustic")
                number = counters.get((family, source), 0)
                counters[(family, source)] = number + 1
                name = data_module.format_instrument_str(family, source, number)
                table[name] = {"library": library, "lineage": library, "program": 0, "variant": k,
                               "family_str": family, "source_str": source}  # fmt: skip
                for pitch in pitches:
                    for velocity in velocities:
                        audio = tone(
                            family, pitch, velocity, lib_index + k, seconds, seed=zlib.crc32(f"{name}-{pitch}".encode())
                        )
                        flags = [0] * 10
                        if qualities:
                            flags[7] = int(TIMBRES[family][2])  # percussive
                            flags[0] = int(TIMBRES[family][0] < 1.0)  # bright
                        notes.append(
                            data_module.Note(
                                note_str=data_module.format_note_str(name, pitch, velocity),
                                instrument=instrument_id, instrument_str=name, pitch=pitch, velocity=velocity,
                                sample_rate=RATE, family=FAMILIES.index(family), family_str=family,
                                source=data_module.SOURCES.index(source), source_str=source, qualities=flags,
                                audio=audio,
                            )
                        )  # fmt: skip
                instrument_id += 1
    for note in notes:
        data_module.write_note_wav(folder, note)
    data_module.write_examples_json(folder, notes)
    (folder / "instruments.json").write_text(json.dumps(table))
    if splits is not None:
        (folder / "splits.json").write_text(json.dumps({"scheme": "test", "splits": splits}))
    return folder


def make_run(
    run_dir: Path, corpus: Path, *, instruments: list[str] | None = None, epochs: int = 0, seed: int = 0
) -> Path:
    """A training run folder by the documented contract (config.json + model.keras), from a tiny Keras CNN.

    Stands in for the trainer where a test needs a real Keras model but not the
    real training recipe: windows of 59 frames every 16, per-coefficient
    normalisation, a nearest-centroid classifier on the mean spectral envelope
    (plus `epochs` of Adam if asked).
    """
    import keras

    from instrument_ai.device.frontend import DEFAULT_SPEC, mfcc

    spec, window_frames = DEFAULT_SPEC, 59
    notes = list(data_module.iter_notes(corpus, num_samples=None, instruments=instruments))
    labels = [f for f in FAMILIES if any(n.family_str == f for n in notes)]
    xs, ys, per_note = [], [], []
    for note in notes:
        m = mfcc(note.load_audio(), spec)
        starts = range(0, m.shape[1] - window_frames + 1, 16)
        for start in starts:
            xs.append(m[:, start : start + window_frames])
            ys.append(labels.index(note.family_str))
        per_note.append(len(starts))
    x = np.stack(xs).astype(np.float32)
    mean, std = x.mean(axis=(0, 2)), x.std(axis=(0, 2)) + 1e-6
    xn = ((x - mean[None, :, None]) / std[None, :, None])[..., None]
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((spec.n_mfcc, window_frames, 1)),
            keras.layers.AveragePooling2D(pool_size=(1, window_frames)),  # mean spectral envelope
            keras.layers.Flatten(),
            keras.layers.Dense(len(labels), activation="softmax"),
        ]
    )
    # Nearest class centroid of the mean envelopes, written as the Dense layer's weights:
    # logits = 2 x.mu_c - |mu_c|^2 = |x|^2 - |x - mu_c|^2. No training steps, so it costs well under a second.
    envelopes = xn[..., 0].mean(axis=2)
    y = np.array(ys)
    centroids = np.stack([envelopes[y == k].mean(axis=0) for k in range(len(labels))])
    model.layers[-1].set_weights([(2 * centroids.T).astype(np.float32), -(centroids**2).sum(axis=1).astype(np.float32)])
    history: dict[str, list[float]] = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.9]}
    if epochs:
        model.compile(
            optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        history = model.fit(xn, y, epochs=epochs, batch_size=16, verbose=0).history
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.keras")
    config = {
        "preset": "toy", "frontend_spec": spec.to_dict(), "labels": labels,
        "input_normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "window_frames": window_frames, "window_seconds": 1.0, "default_hop_seconds": 0.25, "seed": seed,
        "data": {"path": str(corpus), "libraries": [], "counts": {}}, "epochs": epochs,
    }  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps(config))
    owners = np.concatenate([[i] * n for i, n in enumerate(per_note)]).astype(np.int64)
    np.savez(run_dir / "calibration.npz", train_x=x, valid_x=x, valid_y=np.array(ys, dtype=np.int64), valid_note=owners)
    (run_dir / "history.json").write_text(json.dumps({k: [float(v) for v in vals] for k, vals in history.items()}))
    return run_dir


def test_toy_corpus_reads_back_through_the_data_module(tmp_path: Path) -> None:
    folder = make_corpus(tmp_path / "c", families=("bass", "organ"), libraries=("LibA",), pitches=(60,))
    notes = list(data_module.iter_notes(folder, num_samples=None))
    assert sorted(n.family_str for n in notes) == ["bass", "organ"]
    assert notes[0].load_audio().shape == (int(1.5 * RATE),)
    assert corpus_info(folder).library_of(notes[0].instrument_str) == "LibA"

"""Screen training levers for issue 4 on one held-out library (a research tool, not the product trainer).

Issue 4 is about how well a model generalises to a sample library it has never
heard. `instrument-ai experiment holdout` answers that for the product trainer
over every fold, which takes hours; this harness answers a narrower question
fast: does one change to the recipe (a "lever": an architecture, a
normalisation, an augmentation, a loss, a schedule length...) move the
accuracy on one held-out library?

One run trains one variant, given as a JSON dict of options, on a cached
feature store (see make_store.py, or the store `instrument-ai train` builds):

* train on the notes of every leave-one-library-out fold but one (`--fold`),
  all stored renditions unless the variant says otherwise;
* test on that held-out library's clean rendition only (rendition 0), cut into
  windows every 16 frames as the device sees a held note, a note's prediction
  being the mean of its window probabilities. The clean rendition keeps the
  test free of the augmentation under study, and a fixed hop makes every run
  score the same windows, so runs differ only by the lever;
* append one JSON line (note and window accuracy, per-family accuracy, the
  evaluation log, parameters, seconds) to `--results`, and optionally save the
  test probabilities to `--preds-dir`.

It is not `instrument-ai train`: no validation split, no early stopping, no
export; numbers from here are for comparing variants with each other.

Variant options (all optional; defaults in brackets):
  arch              model: {"kind": "tc"|"stats"|"cnn2d", ...} (tc; see `build`)
  norm              "global" | "cmn" | "cmn1" | "cmn_concat" (global)
  input             "mfcc" | "imel": MFCCs back to mel bands by the DCT (mfcc)
  n_mfcc            keep the first n features of the store (all)
  feature_augment   FeatureAugment fields, e.g. {"enabled": false} (defaults)
  stage             "log_mel" when the store holds log-mel bands (for the EQ augmentation)
  melshift          random shift of the feature axis by up to +-n rows (0)
  specaug           {"nF", "F", "nT", "T"}: masks of up to F rows / T frames (off)
  mixup             beta(a, a) mixup of windows and labels (0 = off)
  fine, fine_weight second head on the GM program, and its loss weight (off, 1.0)
  renditions        training renditions, e.g. [0] (all stored)
  epochs, eval_every  epochs (24) and test every n epochs (epochs // 4)
  lr, ls, adamw     peak learning rate (3e-3), label smoothing (0.1), AdamW weight decay (Adam)
  batch, windows_per_note, balance   256, 1.0 windows per note per epoch, "balanced"
  store             feature-store key (newest store in the cache); --store overrides it
  seed              seed of Keras and of the batches (0)
  save              path to save the trained Keras model to (not saved)

Example (from the repo root):
  .venv/bin/python tests/research/screen_levers.py --corpus data/corpus --fold Aspirin \\
      --variant '{"epochs": 24}' --tag ref24 --store 23ac4e3dc7f38022877f5e99
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.frontend import DEFAULT_SPEC, dct_matrix
from instrument_ai.device.labels import FAMILIES
from instrument_ai.train.augment import FeatureAugment, augment_features, band_to_feature_matrix
from instrument_ai.train.experiments.holdout import fold_name
from instrument_ai.train.features import FeatureSet, default_cache_dir
from instrument_ai.train.windows import note_sampling_probs, window_note_scores

TEST_HOP = 16  # frames between the starts of two test windows


# ---------------------------------------------------------------- store and folds
def store_root(cache: str | Path | None = None) -> Path:
    """The folder holding the feature stores: <cache>/features (the package's cache by default)."""
    root = Path(cache).expanduser() if cache is not None else default_cache_dir()
    return root / "features"


def resolve_store_key(key: str | None = None, cache: str | Path | None = None) -> str:
    """`key`, or when None the most recently modified store of the cache (as the scratch harness did)."""
    if key is not None:
        return key
    stores = [p for p in store_root(cache).iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not stores:
        raise SystemExit(f"no feature store in {store_root(cache)}: build one with make_store.py")
    newest = sorted(stores, key=lambda p: p.stat().st_mtime)[-1].name
    print(f"no store given: using the newest one, {newest}", file=sys.stderr)
    return newest


def load_store(key: str | None = None, cache: str | Path | None = None) -> FeatureSet:
    """The feature store `key` of the cache (the newest store when `key` is None)."""
    return FeatureSet.load(store_root(cache) / resolve_store_key(key, cache))


def instrument_info(corpus: str | Path) -> dict[str, dict[str, Any]]:
    """The corpus' instruments.json: instrument_str -> library, lineage, GM program, ..."""
    return json.loads((Path(corpus) / "instruments.json").read_text())


def folds_of_store(store: FeatureSet, corpus: str | Path) -> np.ndarray:
    """The leave-one-library-out fold of every note of the store (an array of fold names)."""
    info = instrument_info(corpus)
    return np.array(
        [fold_name(info[n["instrument_str"]]["library"], info[n["instrument_str"]]["lineage"]) for n in store.notes]
    )


# ---------------------------------------------------------------- models
def build(keras, arch: dict, n_classes: int, input_shape, n_fine: int = 0):
    """The Keras model of `arch`: kind "tc" (a first convolution spanning the whole feature axis, then residual
    time convolutions), "stats" (an MLP on per-feature summary statistics) or "cnn2d" (a small 2-D CNN)."""
    L = keras.layers
    kind = arch.get("kind", "tc")
    inp = keras.Input(shape=input_shape)
    x = inp
    if kind == "tc":
        stem = arch.get("stem", 64)
        layout = arch.get("layout", [64, "pool", 96, 96, "pool", 128])
        k = arch.get("k", 3)
        x = L.Conv2D(stem, (input_shape[0], arch.get("stem_k", 3)), use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.9)(x)
        x = L.ReLU()(x)
        ch = stem
        for item in layout:
            if item == "pool":
                x = L.MaxPooling2D((1, 2))(x)
                continue
            f = int(item)
            y = L.Conv2D(f, (1, k), padding="same", use_bias=False)(x)
            y = L.BatchNormalization(momentum=0.9)(y)
            if f == ch:
                y = L.Add()([y, x])
            x = L.ReLU()(y)
            ch = f
        if arch.get("pool", "avg") == "avgmax":
            a = L.GlobalAveragePooling2D()(x)
            m = L.GlobalMaxPooling2D()(x)
            x = L.Concatenate()([a, m])
        else:
            x = L.GlobalAveragePooling2D()(x)
        if arch.get("hidden"):
            x = L.Dense(arch["hidden"], activation="relu")(x)
        x = L.Dropout(arch.get("dropout", 0.3))(x)
    elif kind == "stats":
        t = L.Reshape((input_shape[0], input_shape[1]))(x)
        m = L.Lambda(lambda a: keras.ops.mean(a, axis=2))(t)
        sd = L.Lambda(lambda a: keras.ops.sqrt(keras.ops.var(a, axis=2) + 1e-4))(t)
        d = L.Lambda(lambda a: keras.ops.mean(keras.ops.abs(a[:, :, 1:] - a[:, :, :-1]), axis=2))(t)
        h = L.Lambda(lambda a: keras.ops.mean(a[:, :, :10], axis=2) - keras.ops.mean(a, axis=2))(t)
        x = L.Concatenate()([m, sd, d, h])
        for u in arch.get("hidden_layers", [256, 256]):
            x = L.Dense(u, use_bias=False)(x)
            x = L.BatchNormalization(momentum=0.9)(x)
            x = L.ReLU()(x)
            x = L.Dropout(arch.get("dropout", 0.3))(x)
    elif kind == "cnn2d":
        for f in arch.get("filters", [32, 64, 128, 256]):
            for _ in range(arch.get("per_block", 2)):
                x = L.Conv2D(f, 3, padding="same", use_bias=False)(x)
                x = L.BatchNormalization(momentum=0.9)(x)
                x = L.ReLU()(x)
            x = L.MaxPooling2D(2)(x)
        if arch.get("freq_pool") == "max_then_avg":
            x = L.Lambda(lambda t: keras.ops.mean(keras.ops.max(t, axis=1), axis=1))(x)
        else:
            x = L.GlobalAveragePooling2D()(x)
        x = L.Dropout(arch.get("dropout", 0.3))(x)
    out = L.Dense(n_classes, activation="softmax", name="family")(x)
    if n_fine:
        fine = L.Dense(n_fine, activation="softmax", name="fine")(x)
        return keras.Model(inp, [out, fine])
    return keras.Model(inp, out)


# ---------------------------------------------------------------- inputs
def make_normalizer(v: dict, train: FeatureSet, n_mfcc: int) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """The window normalisation of the variant (fitted on the training set) and the model's feature rows."""
    mean, std = train.feature_stats()
    norm_mode = v.get("norm", "global")
    D = dct_matrix(DEFAULT_SPEC).astype(np.float32)  # (40, 64)
    input_mode = v.get("input", "mfcc")
    if input_mode == "imel":
        sample = train.gather(train.sample_starts(np.random.default_rng(1), np.arange(0, train.n_notes, 7)))
        mel = np.einsum("km,bkt->bmt", D, sample)
        mmean, mstd = mel.mean(axis=(0, 2)), mel.std(axis=(0, 2)) + 1e-3

    def normalize(x):
        if input_mode == "imel":
            x = np.einsum("km,bkt->bmt", D, x)
            x = (x - mmean[None, :, None]) / mstd[None, :, None]
            if norm_mode == "cmn":
                x = x - x.mean(axis=2, keepdims=True)
            return x.astype(np.float32)
        x = x[:, :n_mfcc]
        x = (x - mean[None, :n_mfcc, None]) / std[None, :n_mfcc, None]
        if norm_mode == "cmn":
            x = x - x.mean(axis=2, keepdims=True)
        elif norm_mode == "cmn1":  # keep c0 (loudness) relative, others per-window mean removed
            x[:, 1:] = x[:, 1:] - x[:, 1:].mean(axis=2, keepdims=True)
        elif norm_mode == "cmn_concat":
            m = x.mean(axis=2, keepdims=True)
            x = x - m
        return x.astype(np.float32)

    return normalize, (n_mfcc if input_mode == "mfcc" else D.shape[1])


class BatchMaker:
    """Training batches: balanced notes -> random rendition and window -> feature augmentation -> melshift ->
    normalise -> SpecAugment masks -> one-hot labels -> mixup. Batch i of epoch e depends only on (seed, e, i)."""

    def __init__(self, v, train, ty, n_classes, tprog, n_fine, normalize, seed, store_features):
        self.v = v
        self.train = train
        self.ty = ty
        self.n_classes = n_classes
        self.tprog = tprog
        self.n_fine = n_fine
        self.normalize = normalize
        self.seed = seed
        self.fa = FeatureAugment(**v.get("feature_augment", {}))
        self.band = band_to_feature_matrix(DEFAULT_SPEC, "mfcc").astype(np.float32)
        if v.get("stage") == "log_mel":
            self.band = np.eye(store_features, dtype=np.float32)
        self.probs_note = note_sampling_probs(ty, n_classes, v.get("balance", "balanced"))
        self.bs = v.get("batch", 256)
        wpn = v.get("windows_per_note", 1.0)
        self.steps = math.ceil(train.n_notes * wpn / self.bs)
        self.mix = v.get("mixup", 0.0)

    def batch(self, epoch: int, i: int):
        """Batch `i` of `epoch`: (x (B, F, T, 1), y) with y = family targets, or (family, fine) targets."""
        v, bs, n_fine, mix = self.v, self.bs, self.n_fine, self.mix
        rng = np.random.default_rng([self.seed, epoch, i])
        notes = rng.choice(len(self.ty), size=bs, p=self.probs_note)
        x = self.train.gather(self.train.sample_starts(rng, notes))
        if self.fa.enabled:
            augment_features(x, rng, self.band, self.fa)
        ms = v.get("melshift", 0)
        if ms:
            shifts = rng.integers(-ms, ms + 1, size=bs)
            F = x.shape[1]
            idx = np.clip(np.arange(F)[None, :] - shifts[:, None], 0, F - 1)
            x = np.take_along_axis(x, idx[:, :, None], axis=1)
        x = self.normalize(x)
        sa = v.get("specaug")
        if sa:
            B, F, T = x.shape
            for _ in range(sa.get("nF", 2)):
                w = rng.integers(0, sa.get("F", 16) + 1, size=B)
                f0 = rng.integers(0, F, size=B)
                m = (np.arange(F)[None] >= f0[:, None]) & (np.arange(F)[None] < (f0 + w)[:, None])
                x[m] = 0.0
            for _ in range(sa.get("nT", 2)):
                w = rng.integers(0, sa.get("T", 10) + 1, size=B)
                start = rng.integers(0, T, size=B)
                m = (np.arange(T)[None] >= start[:, None]) & (np.arange(T)[None] < (start + w)[:, None])
                x.transpose(0, 2, 1)[m] = 0.0
        y = np.eye(self.n_classes, dtype=np.float32)[self.ty[notes]]
        if n_fine:
            yf = np.eye(n_fine, dtype=np.float32)[self.tprog[notes]]
        if mix > 0:
            lam = rng.beta(mix, mix, size=bs).astype(np.float32)
            lam = np.maximum(lam, 1 - lam)
            p = rng.permutation(bs)
            x = lam[:, None, None] * x + (1 - lam[:, None, None]) * x[p]
            y = lam[:, None] * y + (1 - lam[:, None]) * y[p]
        if n_fine:
            if mix > 0:
                yf = lam[:, None] * yf + (1 - lam[:, None]) * yf[p]
            return x[..., None], (y, yf)
        return x[..., None], y


def keras_dataset(keras, maker: BatchMaker):
    """A Keras PyDataset over `maker`, one epoch = maker.steps batches, counting epochs itself."""

    class DS(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0

        def __len__(self):
            return maker.steps

        def __getitem__(self, i):
            return maker.batch(self.epoch, i)

        def on_epoch_end(self):
            self.epoch += 1

    return DS()


def compile_model(keras, model, v: dict, steps: int, epochs: int, n_fine: int) -> None:
    """Adam (or AdamW) on a cosine decay to 2% over the run, label-smoothed cross-entropy."""
    lr = v.get("lr", 3e-3)
    sched = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps * epochs, alpha=0.02, warmup_target=None)
    opt = keras.optimizers.AdamW(sched, weight_decay=v["adamw"]) if v.get("adamw") else keras.optimizers.Adam(sched)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=v.get("ls", 0.1))
    if n_fine:
        model.compile(
            opt,
            [loss, keras.losses.CategoricalCrossentropy(label_smoothing=v.get("ls", 0.1))],
            loss_weights=[1.0, v.get("fine_weight", 1.0)],
        )
    else:
        model.compile(opt, loss, metrics=["accuracy"])


# ---------------------------------------------------------------- run
def import_keras():
    """TensorFlow limited to 2 threads (as all screening runs were), then Keras."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    import keras

    return keras


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and test one variant; append its result line; return the result."""
    v = json.loads(args.variant)
    if not isinstance(v, dict):
        raise SystemExit("--variant must be a JSON object")
    test_fold = args.fold
    tag = args.tag if args.tag is not None else json.dumps(v, sort_keys=True)
    seed = v.get("seed", 0)
    keras = import_keras()

    keras.utils.set_random_seed(seed)
    t0 = time.time()
    key = resolve_store_key(args.store or v.get("store"), args.cache)
    store = load_store(key, args.cache)
    stored_stage = store.meta.get("settings", {}).get("stage")
    if stored_stage is not None and stored_stage != v.get("stage", "mfcc"):
        print(
            f"warning: store {key} holds {stored_stage} features but the variant's stage is "
            f"{v.get('stage', 'mfcc')!r}: the feature augmentation assumes the variant's stage",
            file=sys.stderr,
        )
    folds = folds_of_store(store, args.corpus)
    fam = store.note_family
    held = folds == test_fold
    if not held.any():
        raise SystemExit(f"no fold {test_fold!r} in the store; folds: {', '.join(sorted(set(folds)))}")
    train_idx = np.flatnonzero(~held)
    train = store.subset(train_idx, renditions=v.get("renditions"))
    test = store.subset(np.flatnonzero(held), renditions=(0,))
    labels = sorted(set(fam[train_idx]))
    label_of = {f: i for i, f in enumerate(labels)}
    ty = np.array([label_of[n["family"]] for n in train.notes])
    sy = np.array([label_of.get(n["family"], -1) for n in test.notes])
    n_mfcc = v.get("n_mfcc", store.n_features)
    normalize, n_rows = make_normalizer(v, train, n_mfcc)
    n_cls = len(labels)
    epochs = v.get("epochs", 24)

    info = instrument_info(args.corpus)
    progs = np.array([info[n["instrument_str"]]["program"] for n in train.notes])
    uprog = sorted(set(progs.tolist()))
    tprog = np.array([uprog.index(p) for p in progs])
    n_fine = len(uprog) if v.get("fine") else 0
    maker = BatchMaker(v, train, ty, n_cls, tprog, n_fine, normalize, seed, store.n_features)

    shape = (n_rows, store.window_frames, 1)
    model = build(keras, v.get("arch", {}), n_cls, shape, n_fine)
    compile_model(keras, model, v, maker.steps, epochs, n_fine)
    fam_model = keras.Model(model.input, model.outputs[0]) if n_fine else model
    tx, towner = test.device_windows(TEST_HOP)
    keep = sy[towner] >= 0
    tx_n = normalize(tx)[..., None]
    ds = keras_dataset(keras, maker)
    log = []
    eval_every = v.get("eval_every", max(1, epochs // 4))

    class CB(keras.callbacks.Callback):
        """Score the held-out library every `eval_every` epochs and at the end."""

        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
                p = fam_model.predict(tx_n, batch_size=1024, verbose=0)
                scores = window_note_scores(p[keep], towner[keep], sy)
                na, wa = scores["note_accuracy"], scores["window_accuracy"]
                log.append((epoch + 1, round(logs["loss"], 4), round(na, 4), round(wa, 4)))
                print(
                    f"[{tag}] {test_fold} ep {epoch + 1} loss {logs['loss']:.3f} note {na:.3f} win {wa:.3f} "
                    f"({time.time() - t0:.0f}s)",
                    flush=True,
                )

    model.fit(ds, epochs=epochs, verbose=0, callbacks=[CB()])
    p = fam_model.predict(tx_n, batch_size=1024, verbose=0)
    scores = window_note_scores(p[keep], towner[keep], sy)
    na, wa = scores["note_accuracy"], scores["window_accuracy"]
    per_fam = {FAMILIES[labels[k]]: round(recall, 3) for k, recall in scores["recall"].items()}
    res = {
        "tag": tag,
        "fold": test_fold,
        "variant": v,
        "store": key,
        "note": na,
        "window": wa,
        "per_family": per_fam,
        "params": model.count_params(),
        "seconds": round(time.time() - t0),
        "log": log,
    }
    if args.preds_dir:
        preds = Path(args.preds_dir)
        preds.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            preds / f"{tag}_{test_fold}.npz",
            probs=p[keep].astype(np.float16),
            owner=towner[keep],
            y=sy,
            labels=np.array(labels),
        )
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as fh:
        fh.write(json.dumps(res) + "\n")
    if v.get("save"):
        model.save(v["save"])
    print(json.dumps({k: res[k] for k in ("tag", "fold", "note", "window", "params", "seconds")}))
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Screen one training variant on one held-out library (issue 4 research; not `instrument-ai "
        "train`). Appends a JSON line of results.",
    )
    parser.add_argument("--corpus", required=True, help="corpus folder (for instruments.json: libraries, programs)")
    parser.add_argument("--fold", required=True, help="the held-out library (fold name), e.g. Aspirin")
    parser.add_argument("--variant", default="{}", help="JSON dict of options (see this file's docstring; default: {})")
    parser.add_argument("--tag", default=None, help="name of the run (default: the variant JSON)")
    parser.add_argument(
        "--store",
        default=None,
        help="feature-store key: what make_store.py printed, or data.features.key in the config.json of an "
        "`instrument-ai train` run (overrides the variant's 'store'; default: the newest store in the cache)",
    )
    parser.add_argument(
        "--cache",
        default=None,
        help="cache folder holding features/<key> (default: ~/.cache/instrument-ai, or $XDG_CACHE_HOME/instrument-ai)",
    )
    parser.add_argument(
        "--results", default="runs/research-results.jsonl", help="JSON-lines file to append to (default: %(default)s)"
    )
    parser.add_argument("--preds-dir", default=None, help="save the test probabilities to DIR/<tag>_<fold>.npz")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()

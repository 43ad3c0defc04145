"""Build a feature store for a variant of the frontend spec, for screen_levers.py and note_stats_gbm.py.

A research tool for issue 4, not part of the product. It extracts every note
of the corpus (split "all", as `instrument-ai train` does) with the default
frontend spec changed in `n_mels` / `n_mfcc`, at the feature stage `--stage`,
with `--copies` audio-augmented renditions beside the clean one, into the
feature cache (<cache>/features/<key>/), and prints the cache key to pass as
`--store KEY`. An existing entry is reused. The key depends on the corpus
(its examples.json) and on every setting, so it differs between machines and
corpora: use the key your own run prints.

Example (from the repo root): the 128-band log-mel store of the issue 4 screens
  .venv/bin/python tests/research/make_store.py --corpus data/corpus --n-mels 128 --stage log_mel --copies 1
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from instrument_ai.device.frontend import DEFAULT_SPEC
from instrument_ai.train.augment import AudioAugment
from instrument_ai.train.corpus import nsynth as data
from instrument_ai.train.features import ExtractSettings, FeatureCache, data_fingerprint

WINDOW_FRAMES = 59  # frames per window: the product's 1 s window at hop 256, 16 kHz
SILENCE_DBFS = -60.0  # windows quieter than this are not stored (the product's gate)
SAMPLE_RATE = 16000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Build (or find) a feature store in the cache and print its key (issue 4 research).",
    )
    parser.add_argument("--corpus", required=True, help="corpus folder (NSynth layout: examples.json + audio/)")
    parser.add_argument(
        "--n-mels", type=int, default=DEFAULT_SPEC.n_mels, help="mel bands of the spec (default: %(default)s)"
    )
    parser.add_argument(
        "--stage", choices=("mfcc", "log_mel"), default="mfcc", help="stored feature stage (default: %(default)s)"
    )
    parser.add_argument(
        "--copies",
        type=int,
        default=2,
        help="augmented renditions per note beside the clean one (default: %(default)s)",
    )
    parser.add_argument("--n-mfcc", type=int, default=None, help="MFCCs of the spec (default: min(40, n-mels))")
    parser.add_argument(
        "--cache", default=None, help="cache folder (default: ~/.cache/instrument-ai, or $XDG_CACHE_HOME/instrument-ai)"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="extraction processes; does not change the store (default: %(default)s)"
    )
    return parser.parse_args(argv)


def make_store(args: argparse.Namespace) -> str:
    """Build or find the store of `args`; return its cache key."""
    n_mfcc = args.n_mfcc if args.n_mfcc is not None else min(40, args.n_mels)
    spec = dataclasses.replace(DEFAULT_SPEC, n_mels=args.n_mels, n_mfcc=n_mfcc)
    notes = list(
        data.iter_notes(args.corpus, report=data.ReadReport(), audio="none", sample_rate=SAMPLE_RATE, num_samples=None)
    )
    settings = ExtractSettings(spec, args.stage, WINDOW_FRAMES, SILENCE_DBFS, AudioAugment(copies=args.copies))
    cache = FeatureCache(args.cache)
    features = cache.get_or_build(
        notes, settings, data_hash=data_fingerprint(args.corpus), split="all", jobs=args.jobs, progress=True
    )
    print(f"frames {features.frames.shape}, {features.n_notes} notes, cache hit: {cache.last_hit}", file=sys.stderr)
    return cache.last_key


def main(argv: list[str] | None = None) -> None:
    print(make_store(parse_args(argv)))


if __name__ == "__main__":
    main()

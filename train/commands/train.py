"""`instrument-ai train`: train a family classifier on an NSynth-format corpus into a run folder.

Only click is imported at module level: TensorFlow (seconds to import) is
loaded by the trainer once the data is ready, so `--help` and every refusal of
bad input are instant.
"""

from __future__ import annotations

import os
from pathlib import Path

import click


def parse_audio_augment(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> dict | None:
    """--audio-augment: a JSON object of AudioAugment fields (e.g. '{"noise_prob": 0.8}'), checked by the trainer."""
    import json

    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg})") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("want a JSON object such as '{\"noise_prob\": 0.8}'")
    return parsed


PRESET_NAMES = ["baseline", "edge", "edge_wide", "mel2d", "mel_ds"]
"""train/models.PRESETS (a test checks they agree); written out so `--help` needs no import of the models."""
PRESET_HELP = "edge: MFCC temporal CNN (shipped); edge_wide: 1.5x its channels; mel2d, mel_ds: 2-D log-mel CNNs."

AUDIO_AUGMENT_HELP = (
    "JSON object of audio-augmentation fields over the preset's (noise_prob, snr_db, reverb_prob, pitch_prob, "
    "pitch_cents, ...; see train/augment.py AudioAugment)."
)


def _families(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


@click.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="NSynth-format folder or .tfrecord file.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="New (or empty) run folder to write.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    help="Continue an interrupted run from its last checkpoint (takes the run's own settings).",
)
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="edge", show_default=True, help=PRESET_HELP)
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the preset's: baseline 72, edge 48).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--split", "split_file", type=click.Path(path_type=Path), help="A splits.json to use instead of DIR's.")
@click.option(
    "--holdout",
    multiple=True,
    metavar="LIB",
    help="Keep library LIB (or lineage) out of training and validation; repeatable.",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Default: the preset's (256).")
@click.option("--jobs", type=click.IntRange(min=0), default=0, show_default=True, help="Feature processes (0: CPUs).")
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(path_type=Path),
    help="Feature-cache folder [default: ~/.cache/instrument-ai].",
)
@click.option("--families", help="Comma-separated families to train on (default: all in the data).")
@click.option("--other-kinds", default="all", show_default=True, metavar="all|unpitched",
              help="unpitched: leave out the `other` clips of sources the catalogue marks pitched (tabla, slit "
              "drums, birdsong).")  # fmt: skip
@click.option("--augment-copies", type=click.IntRange(0, 16), help="Augmented renditions per note (edge: 2).")
@click.option("--windows-per-note", type=click.FloatRange(min=0, min_open=True), help="Windows per note per epoch.")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True))
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True))
@click.option("--mixup", "mixup_alpha", type=click.FloatRange(min=0), help="Mixup alpha (0: off).")
@click.option("--balance", type=click.Choice(["balanced", "sqrt", "none"]), default="balanced", show_default=True)
@click.option("--real-weight", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Within a family, draw real-recording notes this many times as often as rendered ones.")
@click.option(
    "--monitor",
    type=click.Choice(["val_note_accuracy", "val_accuracy", "val_loss"]),
    default="val_note_accuracy",
    show_default=True,
    help="What early stopping and the best checkpoint follow.",
)
@click.option("--patience", type=click.IntRange(min=1), help="Epochs without improvement before stopping.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), help="Stop after this much training.")
@click.option("--max-memory", "max_memory_gb", type=click.FloatRange(min=0, min_open=True), help="GB for features.")
@click.option("--no-feature-augment", is_flag=True, help="Turn off the per-batch gain/EQ augmentation.")
@click.option("--audio-augment", callback=parse_audio_augment, metavar="JSON", help=AUDIO_AUGMENT_HELP)
@click.option("--onset-fraction", type=click.FloatRange(0, 1),
              help="Share of windows cut to a note's first frames then silence, as the device's first hops see them "
              "[default: the preset's].")  # fmt: skip
@click.option("--teacher", type=click.Choice(["gbm", "gbm-audioset"]), default=None,
              help="Distil a teacher: gbm = gradient boosting on whole-note statistics, fitted out of fold on the "
              "training sources only; gbm-audioset adds a pretrained AudioSet tagger's view "
              "(--teacher-file).")  # fmt: skip
@click.option("--teacher-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The pinned mn04_as weights for --teacher gbm-audioset (train/teachers.toml; needs torch).")
@click.option("--teacher-weight", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Share of the teacher's soft targets in each window's target (the rest: the hard label).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def train(
    data_dir: Path | None,
    out_dir: Path | None,
    resume_dir: Path | None,
    preset: str,
    epochs: int | None,
    seed: int,
    split_file: Path | None,
    holdout: tuple[str, ...],
    batch_size: int | None,
    jobs: int,
    cache_dir: Path | None,
    families: str | None,
    other_kinds: str,
    augment_copies: int | None,
    windows_per_note: float | None,
    learning_rate: float | None,
    label_smoothing: float | None,
    mixup_alpha: float | None,
    balance: str,
    real_weight: float,
    monitor: str,
    patience: int | None,
    max_minutes: float | None,
    max_memory_gb: float | None,
    no_feature_augment: bool,
    audio_augment: dict | None,
    onset_fraction: float | None,
    teacher: str | None,
    teacher_file: Path | None,
    teacher_weight: float,
    quiet: bool,
) -> None:
    """Train the PRESET model on DIR's training instruments and write RUNDIR.

    RUNDIR gets config.json (frontend spec, labels, normalisation), model.keras
    (best epoch on the validation instruments), history.json, training_curves.png,
    metrics.json, calibration.npz and report.md. Ctrl-C keeps the last finished
    epoch; `instrument-ai train --resume RUNDIR` continues it.
    """
    from instrument_ai.train.sources.other_kinds import check_other_kinds

    check_other_kinds(other_kinds)  # a bad value is refused before TensorFlow loads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    from instrument_ai.train.trainer import TrainConfig, TrainingInterrupted, resume_config, train_model

    try:
        if resume_dir is not None:
            if data_dir is not None or out_dir is not None:
                raise click.UsageError("--resume takes the run's saved settings; do not give --data or --out")
            config = resume_config(
                resume_dir,
                jobs=jobs or None,
                cache=str(cache_dir) if cache_dir else None,
                epochs=epochs,
                max_minutes=max_minutes,
                verbose=0 if quiet else 1,
            )
            resume = True
        else:
            if data_dir is None or out_dir is None:
                raise click.UsageError("give --data DIR and --out RUNDIR (or --resume RUNDIR)")
            config = TrainConfig(
                data=str(data_dir),
                out=str(out_dir),
                preset=preset,
                epochs=epochs,
                seed=seed,
                batch_size=batch_size,
                learning_rate=learning_rate,
                label_smoothing=label_smoothing,
                mixup_alpha=mixup_alpha,
                patience=patience,
                monitor=monitor,
                split=str(split_file) if split_file else None,
                holdout=list(holdout),
                families=_families(families),
                other_kinds=other_kinds,
                jobs=jobs,
                cache=str(cache_dir) if cache_dir else None,
                augment_copies=augment_copies,
                audio_augment=audio_augment or {},
                feature_augment={"enabled": False} if no_feature_augment else None,
                balance=balance,
                real_weight=real_weight,
                windows_per_note=windows_per_note,
                onset_fraction=onset_fraction,
                max_minutes=max_minutes,
                max_memory_gb=max_memory_gb,
                teacher=teacher,
                teacher_weight=teacher_weight,
                teacher_file=None if teacher_file is None else str(teacher_file),
                verbose=0 if quiet else 1,
            )
            resume = False
        run_dir = train_model(config, resume=resume)
    except TrainingInterrupted as exc:
        message = str(exc)
        click.echo(message[:1].upper() + message[1:], err=True)
        raise click.exceptions.Exit(130) from None
    except KeyboardInterrupt:
        click.echo(
            "Interrupted before the first epoch finished; rerun the same command "
            "(the feature cache keeps no partial entry)",
            err=True,
        )
        raise click.exceptions.Exit(130) from None
    if not quiet:
        click.echo(str(run_dir))

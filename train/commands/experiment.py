"""`instrument-ai experiment study|holdout`: the original study rerun, and leave-one-library-out.

Both write a report folder (JSON + markdown + PNGs). Heavy imports happen
inside the commands.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from instrument_ai.train.commands.train import AUDIO_AUGMENT_HELP, PRESET_HELP, PRESET_NAMES, parse_audio_augment


def _say(message: str) -> None:
    click.echo(message, err=True)


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up chatter off the terminal (set before it is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group()
def experiment() -> None:
    """Rerun the original study, or the leave-one-library-out protocol (the headline figure)."""


@experiment.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path), help="An NSynth-format folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Report folder.")
@click.option("--epochs", type=click.IntRange(min=1), default=72, show_default=True, help="CNN epochs (the study: 72).")
@click.option("--mlp-epochs", type=click.IntRange(min=1), default=200, show_default=True,
              help="Maximum epochs of the quality-flag MLPs.")  # fmt: skip
@click.option("--max-train-notes", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Cap on the CNNs' training notes (spread over families).")  # fmt: skip
@click.option("--max-test-notes", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--train-sources", type=click.Choice(["acoustic", "all"]), default="acoustic", show_default=True,
              help="Train the CNNs on acoustic notes as the study did, or on every source.")  # fmt: skip
@click.option("--no-note-split", is_flag=True, help="Skip the extra run on the study's random note split.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="A smoke run: few notes, 1 s crops, at most 2 CNN epochs.")
def study(data_dir: Path, out_dir: Path, epochs: int, mlp_epochs: int, max_train_notes: int, max_test_notes: int,
          train_sources: str, no_note_split: bool, seed: int, quick: bool) -> None:  # fmt: skip
    """Rerun the study on DATA with instrument-level splits; write OUT/report.md beside the published figures."""
    from instrument_ai.train.experiments.study import StudyConfig, run_study

    _quiet_tensorflow()
    cfg = StudyConfig(data=data_dir, out=out_dir, epochs=epochs, mlp_epochs=mlp_epochs, max_train_notes=max_train_notes,
                      max_test_notes=max_test_notes, train_sources=train_sources, note_split=not no_note_split,
                      seed=seed, quick=quick)  # fmt: skip
    results = run_study(cfg, progress=_say)
    mfcc = results["representations"]["mfcc"]
    acc = (mfcc.get("test_acoustic") or {}).get("accuracy")
    mlp = results["quality_mlp"]["all 12 inputs"]["accuracy"]
    click.echo(
        f"quality MLP {100 * mlp:.1f}% (study 40-50%); MFCC CNN on unseen acoustic instruments "
        + ("n/a" if acc is None else f"{100 * acc:.1f}%")
        + f" (study 94%); report: {out_dir / 'report.md'}"
    )


@experiment.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="A corpus folder with instruments.json (the library of each instrument).")  # fmt: skip
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Results folder (finished folds in it are not trained again).")  # fmt: skip
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="edge", show_default=True, help=PRESET_HELP)
@click.option("--libraries", multiple=True, metavar="NAME",
              help="Hold out only these libraries (repeat or comma-separate); default: every one present.")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs [default: the preset's].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Feature-extraction processes per training (0: one per CPU).")  # fmt: skip
@click.option("--augment-copies", type=click.IntRange(0, 16), default=None,
              help="Augmented renditions per note [default: the preset's].")  # fmt: skip
@click.option("--no-feature-augment", is_flag=True, help="Turn off the per-batch gain/EQ augmentation.")
@click.option("--audio-augment", callback=parse_audio_augment, metavar="JSON", help=AUDIO_AUGMENT_HELP)
@click.option("--onset-fraction", type=click.FloatRange(0, 1), default=None,
              help="Share of training windows cut as a note's first second [default: the preset's].")  # fmt: skip
@click.option("--groups", type=click.IntRange(min=2), default=None,
              help="Train once per group of K source groups (every kind spread over them) instead of once per "
              "source; each source is still tested by a model that never heard it.")  # fmt: skip
@click.option("--train-kinds", default=None, metavar="KINDS",
              help="Train only on these kinds of source (comma-separated: soundfont, real, other, synth); "
              "the 0.3.0 recipe is `soundfont`.")  # fmt: skip
@click.option("--other-kinds", default="all", show_default=True, metavar="all|unpitched",
              help="unpitched: train without the `other` clips of sources the catalogue marks pitched (they "
              "stay held-out test folds).")  # fmt: skip
@click.option("--real-weight", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Draw real-recording notes this many times as often as rendered ones within a family.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Training budget per fold in minutes.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=None)
@click.option("--mixup", "mixup_alpha", type=click.FloatRange(min=0), default=None, help="Mixup alpha (0: off).")
@click.option("--max-test-notes", type=click.IntRange(min=1), default=None,
              help="Test each source on at most this many notes, evenly spaced (a cheaper screen).")
@click.option("--teacher", type=click.Choice(["gbm", "gbm-audioset"]), default=None,
              help="Distil a teacher into each fold's model: gbm = gradient boosting on whole-note statistics, "
              "fitted out of fold on that fold's training sources only; gbm-audioset adds a pretrained AudioSet "
              "tagger's view (--teacher-file).")  # fmt: skip
@click.option("--teacher-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The pinned mn04_as weights for --teacher gbm-audioset (train/teachers.toml; needs torch).")
@click.option("--teacher-weight", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Share of the teacher's soft targets in each window's target [default: 0.5].")  # fmt: skip
def holdout(data_dir: Path, out_dir: Path, preset: str, libraries: tuple[str, ...], epochs: int | None,
            seed: int, jobs: int, augment_copies: int | None, no_feature_augment: bool,
            audio_augment: dict | None, onset_fraction: float | None, groups: int | None,
            train_kinds: str | None, other_kinds: str, real_weight: float | None, max_minutes: float | None,
            label_smoothing: float | None, mixup_alpha: float | None, max_test_notes: int | None,
            teacher: str | None, teacher_file: Path | None, teacher_weight: float | None) -> None:  # fmt: skip
    """Leave-one-library-out: train on all libraries but one, test on it; the mean note accuracy is the headline."""
    from instrument_ai.train.experiments.holdout import HoldoutConfig, run_holdout
    from instrument_ai.train.sources.other_kinds import check_other_kinds

    check_other_kinds(other_kinds)
    _quiet_tensorflow()
    names = [n.strip() for item in libraries for n in item.split(",") if n.strip()]
    overrides: dict[str, object] = {}
    if augment_copies is not None:
        overrides["augment_copies"] = augment_copies
    if no_feature_augment:
        overrides["feature_augment"] = {"enabled": False}
    if onset_fraction is not None:
        overrides["onset_fraction"] = onset_fraction
    if audio_augment:
        overrides["audio_augment"] = audio_augment
    if other_kinds != "all":  # the 0.4.0 recipe's settings stay as they were (a holdout resumes on them)
        overrides["other_kinds"] = other_kinds
    for key, value in (("real_weight", real_weight), ("max_minutes", max_minutes),
                       ("label_smoothing", label_smoothing), ("mixup_alpha", mixup_alpha),
                       ("teacher", teacher), ("teacher_file", None if teacher_file is None else str(teacher_file))):
        if value is not None:
            overrides[key] = value
    if (teacher == "gbm-audioset") != (teacher_file is not None):
        raise click.UsageError("--teacher gbm-audioset needs --teacher-file, and --teacher-file needs it")
    if teacher_file is not None:  # refused now (exit 2), not in every fold's training
        from instrument_ai.train.teacher_file import verified_teacher_file

        verified_teacher_file(teacher_file)
    if teacher_weight is not None:
        if teacher is None:
            raise click.UsageError("--teacher-weight needs --teacher")
        overrides["teacher_weight"] = teacher_weight
    kinds = [k.strip() for k in (train_kinds or "").split(",") if k.strip()]
    unknown = sorted(set(kinds) - {"soundfont", "real", "other", "synth"})
    if unknown:
        raise click.UsageError(f"unknown source kind {', '.join(unknown)}; choose from soundfont, real, other, synth")
    cfg = HoldoutConfig(data=data_dir, out=out_dir, preset=preset, epochs=epochs, seed=seed, libraries=names,
                        jobs=jobs, overrides=overrides, groups=groups, train_kinds=kinds,
                        max_test_notes=max_test_notes)  # fmt: skip
    _print_holdout(run_holdout(cfg, progress=_say), out_dir)


def _print_holdout(summary: dict, out_dir: Path) -> None:
    """One line per fold, the means per kind and the overall mean of a finished holdout."""
    for fold in summary["folds"]:
        if fold["note_accuracy"] is None:  # an `other` source: its figures are hops named and false events
            o = fold.get("other") or {}
            click.echo(f"{fold['name']:<26} other: {100 * o.get('hops_named_instrument', 0):5.1f}% of hops named an "
                       f"instrument, {o.get('false_events_per_minute', 0):.1f} false events/min")  # fmt: skip
            continue
        click.echo(f"{fold['name']:<26} note {100 * fold['note_accuracy']:5.1f}%  window "
                   f"{100 * fold['window_accuracy']:5.1f}%  ({fold['n_notes']} notes, {fold.get('kind')})")  # fmt: skip
    for kind, entry in summary.get("by_kind", {}).items():
        if entry.get("folds") and entry.get("mean_note_accuracy") is not None:
            click.echo(f"mean over {kind} folds ({entry['folds']}): {100 * entry['mean_note_accuracy']:.1f}%")
    mean = summary["mean_note_accuracy"]
    shown = "n/a" if mean is None else f"{100 * mean:.1f}%"
    click.echo(f"mean note accuracy {shown}; table: {out_dir / 'holdout.md'}")


@experiment.command()
@click.option("--member", "members", multiple=True, required=True, type=click.Path(path_type=Path),
              help="A training run folder, or an `experiment holdout` folder; give two of the same kind.")  # fmt: skip
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="The ensemble's run folder (two runs), or its holdout folder (two holdouts; resumes).")  # fmt: skip
@click.option("--weight", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True,
              help="The second member's share of the averaged logits (the log-mel member is the first).")
def ensemble(members: tuple[Path, ...], out_dir: Path, weight: float) -> None:
    """Join two models (a log-mel run and a log-mel or MFCC run) into one: the softmax of their averaged logits.

    Two run folders give one run folder that `convert` turns into one bundle; two holdout folders of the same
    protocol give the joined recipe's holdout, every source tested by the two models that never heard it.
    """
    from instrument_ai.train import ensemble as ens

    _quiet_tensorflow()
    if len(members) != 2:
        raise click.UsageError(f"give two --member folders, got {len(members)}")
    holdouts = [(m / "holdout-settings.json").is_file() for m in members]
    if any(holdouts) and not all(holdouts):
        raise click.UsageError("give two run folders or two holdout folders, not one of each")
    if all(holdouts):
        _print_holdout(ens.run_ensemble_holdout(list(members), out_dir, weight=weight, progress=_say),
                       out_dir)  # fmt: skip
        return
    out = ens.build_ensemble(list(members), out_dir, weight=weight)
    metrics = json.loads((out / "metrics.json").read_text())
    macs = metrics["model"]["macs"] / 1e6
    click.echo(f"{out}: validation notes {100 * metrics['note_accuracy']:.1f}% ({metrics['n_notes']} notes), "
               f"{macs:.1f} M MACs/window; convert it with `instrument-ai convert {out}`")  # fmt: skip


@experiment.command("ensemble-weight")
@click.option("--holdout", "holdouts", multiple=True, required=True, type=click.Path(path_type=Path),
              help="A finished `experiment ensemble` holdout of the same two members at one --weight; repeat.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="The joined holdout folder (must not exist).")
def ensemble_weight(holdouts: tuple[Path, ...], out_dir: Path) -> None:
    """Join ensemble holdouts at several weights, each group's folds at the weight best on the other groups.

    No fold's own score picks the weight it is reported with; weights.md also names the weight a model trained
    on every source should take.
    """
    from instrument_ai.train.experiments.ensemble_weight import WeightChoiceError, join_by_weight

    if len(holdouts) < 2:
        raise click.UsageError(f"give at least two --holdout folders, got {len(holdouts)}")
    try:
        choice = join_by_weight(list(holdouts), out_dir)
    except WeightChoiceError as exc:
        raise click.UsageError(str(exc)) from None
    for group, weight in choice["chosen"].items():
        click.echo(f"{group}: weight {weight}")
    click.echo(f"whole corpus: weight {choice['whole_corpus']}")
    _print_holdout(json.loads((out_dir / "holdout.json").read_text()), out_dir)


@experiment.command("model-card")
@click.option("--bundle", required=True, type=click.Path(path_type=Path),
              help="The int8 bundle (its -float twin beside it is described too).")  # fmt: skip
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="The run it was converted from.")
@click.option("--holdout", "holdout_dir", required=True, type=click.Path(path_type=Path),
              help="The holdout folder (or holdout.json) of the same recipe.")  # fmt: skip
@click.option("--compare", multiple=True, metavar="LABEL=DIR",
              help="Another recipe's holdout under the same protocol, for the recipe table; repeatable.")
@click.option("--bench", "bench_file", type=click.Path(path_type=Path),
              help="`instrument-ai bench runtime --json` output for the cost section.")  # fmt: skip
@click.option("--command", "commands", multiple=True, metavar="WHAT=COMMAND",
              help="The command that made an input (train, convert, holdout), printed in the card; repeatable.")
@click.option("--out", "out_file", type=click.Path(path_type=Path), default=Path("models/README.md"), show_default=True)
@click.option("--enrol", "enrol_file", type=click.Path(path_type=Path),
              help="`instrument-ai experiment enrol`'s enrol.json, for the enrolment section.")  # fmt: skip
@click.option("--levers", "levers_file", type=click.Path(path_type=Path),
              help="The lever screen's levers.json (docs/experiments/): its tables, read from the holdout folders "
                   "it names (relative to the working directory).")  # fmt: skip
def model_card(bundle: Path, run_dir: Path, holdout_dir: Path, compare: tuple[str, ...], bench_file: Path | None,
               commands: tuple[str, ...], out_file: Path, enrol_file: Path | None,
               levers_file: Path | None) -> None:  # fmt: skip
    """Write the model card (models/README.md) from the run's, the holdout's, the bundle's and the bench's JSON."""
    from instrument_ai.train.experiments.model_card import load_inputs, write_card

    def pairs(items: tuple[str, ...], option: str) -> list[tuple[str, str]]:
        out = []
        for item in items:
            label, sep, value = item.partition("=")
            if not sep or not label.strip() or not value.strip():
                raise click.UsageError(f"{option} takes LABEL=VALUE, got {item!r}")
            out.append((label.strip(), value.strip()))
        return out

    comparisons = [(label, Path(p)) for label, p in pairs(compare, "--compare")]
    inputs = load_inputs(bundle, run_dir, holdout_dir, comparisons=comparisons, bench=bench_file, enrol=enrol_file,
                         levers=levers_file)  # fmt: skip
    inputs.commands = dict(pairs(commands, "--command"))
    written = write_card(inputs, out_file)
    click.echo(f"wrote {written}")


@experiment.command("enrol")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="A corpus folder with instruments.json (the library of each instrument).")  # fmt: skip
@click.option("--holdout", required=True, multiple=True, metavar="SOURCE",
              help="A library the model never heard (repeat or comma-separate).")  # fmt: skip
@click.option("--shots", default="3,10", show_default=True, help="Notes enrolled per family, comma-separated.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="The bundle [the shipped one]; it must never have heard the held-out sources.")  # fmt: skip
@click.option("--repeats", type=click.IntRange(1, 100), default=5, show_default=True, help="Seeded draws per row.")
@click.option("--other-seconds", type=click.FloatRange(1, 600), default=30.0, show_default=True,
              help="Seconds of a source's non-instrument sounds enrolled as 'other'.")  # fmt: skip
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Report folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--descriptor", "descriptors", default=None, metavar="KIND[,KIND]",
              help="What the head learns on: mfcc, embedding or both, comma-separated [the model's embedding if it "
              "has one, else mfcc].")  # fmt: skip
@click.option("--background", type=click.IntRange(0, 200), default=0, show_default=True,
              help="Known sounds per family from the other libraries as the head's background (0: none); with N > "
              "0 the last descriptor is measured with it as well.")  # fmt: skip
def enrol(data_dir: Path, holdout: tuple[str, ...], shots: str, model_path: Path | None, repeats: int,
          other_seconds: float, out_dir: Path, seed: int, descriptors: str | None,
          background: int) -> None:  # fmt: skip
    """Enrol K notes per instrument of held-out sources, score the rest before and after (OUT/enrol.md, .json)."""
    from instrument_ai.device.model_files import SHIPPED_MODEL
    from instrument_ai.train.experiments.enrol import EnrolConfig, run_enrol_experiment

    try:
        shot_list = sorted({int(s) for s in shots.split(",") if s.strip()})
    except ValueError:
        raise click.UsageError(f"--shots takes comma-separated integers, got {shots!r}") from None
    if not shot_list or min(shot_list) < 1:
        raise click.UsageError("--shots needs at least one count of 1 or more")
    sources = [s.strip() for item in holdout for s in item.split(",") if s.strip()]
    names = {"mfcc": "mfcc_mean_std", "mfcc_mean_std": "mfcc_mean_std", "embedding": "embedding"}
    kinds = [k.strip() for k in (descriptors or "").split(",") if k.strip()]
    if any(k not in names for k in kinds):
        raise click.UsageError(f"--descriptor takes mfcc and/or embedding, got {descriptors!r}")
    cfg = EnrolConfig(data=data_dir, holdout=sources, shots=shot_list, model=model_path or SHIPPED_MODEL,
                      out=out_dir, repeats=repeats, other_seconds=other_seconds, seed=seed,
                      descriptors=list(dict.fromkeys(names[k] for k in kinds)), background=background)  # fmt: skip
    run_enrol_experiment(cfg, say=_say)
    click.echo(f"report: {out_dir / 'enrol.md'}; json: {out_dir / 'enrol.json'}")

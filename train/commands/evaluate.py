"""`instrument-ai evaluate`: score a run or a bundle on any NSynth-format folder.

Heavy imports (keras, matplotlib) happen inside the command, so listing the
CLI's commands never pays for them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click


@click.command()
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(path_type=Path),
    help="A training run folder, its model.keras, or a .tflite bundle (evaluated as the device runs it).",
)
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="An NSynth-format folder (examples.json + audio/), a .tfrecord file or a folder of them.",
)
@click.option("--split", default=None, help="Only the instruments of this split of the folder's splits.json.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the figures as JSON to this file.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the confusion matrices, per-source chart, evaluation.json and report.md "
    "[default: a run's <run>/eval-<data name>[-<split>]; a bundle's "
    "runs/evaluate-<bundle>-<data name>[-<split>]-<time>].",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate at most this many notes.")
@click.option(
    "--silence-db",
    type=float,
    default=None,
    help="Windows quieter than this (dBFS RMS) are not classified, as on the device [default: the run's, else -60].",
)
@click.option(
    "--other-folder",
    "other_folder",
    type=click.Path(path_type=Path),
    default=None,
    help="A folder of non-instrument audio (speech, rain, noise...): also report the share of its hops named an "
    "instrument and the false instrument events per minute.",
)
@click.option("--quiet", is_flag=True, help="Print only the one-line summary.")
@click.option(
    "--personal",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A personal file (`instrument-ai enrol`) applied to the bundle's every window, as on the device.",
)
def evaluate(model_path: Path, data_dir: Path, split: str | None, json_path: Path | None, out_dir: Path | None,
             limit: int | None, silence_db: float | None, other_folder: Path | None,
             quiet: bool, personal: Path | None) -> None:  # fmt: skip
    """Accuracy and macro-F1 per note and per window, per family, per source, and the time-reversed test."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal
    from instrument_ai.train.experiments.evaluate import evaluate as run_evaluation
    from instrument_ai.train.experiments.evaluate import evaluate_other_folder, load_predictor

    if out_dir is None:
        out_dir = default_out_dir(model_path, data_dir, split)
    predictor = load_predictor(model_path, personal=personal)
    other = evaluate_other_folder(predictor, other_folder, silence_db) if other_folder is not None else None
    result = run_evaluation(predictor, data_dir, split=split, out_dir=out_dir, json_path=json_path, limit=limit,
                            silence_db=silence_db, progress=None if quiet else _progress,
                            extra={"other_folder": other} if other else None)  # fmt: skip
    click.echo(summary_text(result, verbose=not quiet))
    click.echo(f"report: {Path(out_dir) / 'report.md'}" + (f"; json: {json_path}" if json_path else ""))


def _progress(n_notes: int) -> None:
    if n_notes % 500 == 0:
        click.echo(f"{n_notes} notes...", err=True)


def default_out_dir(model_path: Path, data_dir: Path, split: str | None) -> Path:
    """A run's <run>/eval-<data>[-<split>] (the user's own folder); a bundle's runs/evaluate-<stem>-<data>...-<time>.

    A bundle's folder is never beside it: that may be the shipped models/ folder (issue 21, defect 15). It is a
    new folder under ./runs each time, so an earlier evaluation is never overwritten.
    """
    data = data_dir.resolve().name + (f"-{split}" if split else "")
    if model_path.is_dir():
        return model_path / f"eval-{data}"
    if model_path.name == "model.keras":
        return model_path.parent / f"eval-{data}"
    base = Path("runs") / f"evaluate-{model_path.stem}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():  # two evaluations in one second
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def summary_text(result: dict[str, Any], verbose: bool = True) -> str:
    """Human summary of an evaluation result."""

    def pct(v: float | None) -> str:
        return "  n/a" if v is None else f"{100 * v:5.1f}%"

    rev = result.get("reversed", {})
    lines = [
        f"{result['n_notes']} notes, {result['n_windows']} windows: note accuracy {pct(result['note_accuracy'])}, "
        f"window accuracy {pct(result['window_accuracy'])}, macro-F1 {pct(result['macro_f1'])}, "
        f"reversed {pct(rev.get('note_accuracy'))} (chance {pct(result['chance'])})"
    ]
    if not verbose:
        return lines[0]
    lines.append(f"{'family':<12} {'notes':>6} {'prec':>6} {'recall':>6} {'F1':>6}")
    for name, e in result["per_family"].items():
        lines.append(f"{name:<12} {e['support']:>6} {pct(e['precision'])} {pct(e['recall'])} {pct(e['f1'])}")
    lines.append(f"{'source':<12} {'notes':>6} {'note':>6} {'window':>6}")
    for name, e in result["per_source"].items():
        lines.append(f"{name:<12} {e['n_notes']:>6} {pct(e['note_accuracy'])} {pct(e['window_accuracy'])}")
    for name, e in result.get("unknown_labels", {}).items():
        top = ", ".join(f"{k} {v}" for k, v in list(e["predicted_as"].items())[:3])
        lines.append(f"not known to the model: {name} ({e['n_notes']} notes, predicted as {top})")
    for key, what in (("other", "'other' notes of the corpus"), ("other_folder", "--other-folder")):
        o = result.get(key)
        if o:
            lines.append(f"{what}: {pct(o['hops_named_instrument'])} of {o['hops']} hops named an instrument, "
                         f"{o['false_events_per_minute']:.1f} false instrument events per minute")  # fmt: skip
    for name, e in result.get("per_length", {}).items():
        lines.append(f"notes {name:<7} {e['n_notes']:>6} {pct(e['note_accuracy'])}")
    if result.get("n_silent_notes"):
        lines.append(f"{result['n_silent_notes']} notes below the silence gate were skipped")
    return "\n".join(lines)

"""`instrument-ai enrol`: teach the device an instrument (or a room's noises) from a few notes.

A thin shell over `device/enrol.py` (where the personal file lives, the lock, the re-fit) and
`device/personal.py` (notes, head, file format). Exit codes: 0 done; 1 the model, the microphone or the disk
failed; 2 usage (unknown family, no note found, a damaged personal file, a bad option).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from instrument_ai.device import enrol as library
from instrument_ai.device.commands.options import (
    EXIT_NO_AUDIO,
    EXIT_USAGE,
    FiniteFloat,
    RunError,
    find_model,
    library_errors,
    load_model,
    threads_option,
    trusted_key_option,
)
from instrument_ai.device.labels import LABELS
from instrument_ai.device.settings import DEFAULT_SETTINGS, EngineSettings

EPILOG = "Exit codes: 0 done; 1 model, microphone or disk failed; 2 usage (unknown family, no note found...)."


@click.command(epilog=EPILOG)
@click.argument("family", required=False)
@click.argument("files", nargs=-1)
@click.option("--model", type=click.Path(path_type=Path), help="Bundle (.tflite) the notes are heard through.")
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help=f"Model directory: its current.tflite, and its {library.PERSONAL_NAME} (the daemon reloads it).",
)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Personal file to create or extend.")
@click.option(
    "--record", "record_seconds", type=FiniteFloat(0, library.MAX_RECORD_SECONDS, min_open=True), default=None,
    help="Record SECONDS from the microphone instead of reading FILEs (one note per onset).",
)  # fmt: skip
@click.option("--device", default=None, help="With --record: input device, index or part of its name.")
@click.option("--list", "list_", is_flag=True, help="List the enrolled families.")
@click.option("--forget", default=None, metavar="FAMILY", help="Drop every enrolled note of FAMILY.")
@click.option(
    "--silence-db", type=FiniteFloat(-200.0, 0.0), default=DEFAULT_SETTINGS.silence_db, show_default=True,
    help="Onset detection: hops quieter than this (dBFS) are silence (use the daemon's value).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@trusted_key_option("Accept only a bundle signed by this ed25519 public key (hex or key file).")
@threads_option()
def enrol(
    family: str | None,
    files: tuple[str, ...],
    model: Path | None,
    model_dir: Path | None,
    out: Path | None,
    record_seconds: float | None,
    device: str | None,
    list_: bool,
    forget: str | None,
    silence_db: float,
    as_json: bool,
    trusted_key: str | None,
    threads: int,
) -> None:
    """Enrol notes of FAMILY from FILEs (or --record) so the device recognises that instrument from then on.

    \b
    instrument-ai enrol keyboard piano-*.wav --model-dir /var/lib/instrument-ai/models
    instrument-ai enrol other --record 30 --model-dir DIR    (the dishwasher, the dog, the door)
    instrument-ai enrol --list --model-dir DIR
    instrument-ai enrol --forget keyboard --model-dir DIR
    With --model-dir the notes go to DIR/personal.bin, which a running daemon reloads by
    itself (the previous head stays in force until the new file is complete). --out names
    another file. A family needs 2 notes to take effect; 10 are better.
    """
    path = _personal_path(out, model_dir)
    if list_ or forget is not None:
        if family is not None or files or record_seconds is not None:
            raise RunError("--list and --forget take no FAMILY, FILE or --record", EXIT_USAGE)
        if list_ and forget is not None:
            raise RunError("give --list or --forget, not both", EXIT_USAGE)
        with library_errors():
            if list_:
                _print_list(path, as_json)
            else:
                _forget(path, str(forget), as_json)
        return
    if family is None:
        raise RunError(f"give a FAMILY ({', '.join(LABELS)}) and FILEs or --record SECONDS", EXIT_USAGE)
    if family not in LABELS:
        raise RunError(f"unknown family {family!r} (one of: {', '.join(LABELS)})", EXIT_USAGE)
    if bool(files) == (record_seconds is not None):
        raise RunError("give FILEs or --record SECONDS (one of them)", EXIT_USAGE)
    if device is not None and record_seconds is None:
        raise RunError("--device applies only to --record", EXIT_USAGE)
    bundle = load_model(find_model(model, model_dir), threads, trusted_key)
    settings = EngineSettings(silence_db=silence_db)
    with library_errors():
        if record_seconds is not None:
            found = {"microphone": _record(family, record_seconds, device, bundle, settings)}
        else:
            found = library.notes_from_files(family, files, bundle, settings)
        report = library.enrol(path, bundle, family, found)
    _print_report(report, as_json)


def _personal_path(out: Path | None, model_dir: Path | None) -> Path:
    if out is not None and model_dir is not None:
        raise RunError(f"give --out or --model-dir (whose {library.PERSONAL_NAME} is used), not both", EXIT_USAGE)
    if out is not None:
        return out
    if model_dir is not None:
        if not model_dir.is_dir():
            raise RunError(f"{model_dir}: no such model directory", EXIT_USAGE)
        return library.personal_path(model_dir)
    raise RunError("give --out PERSONAL or --model-dir DIR: where the enrolled notes are kept", EXIT_USAGE)


def _record(family: str, seconds: float, device: str | None, bundle: Any, settings: EngineSettings) -> list[Any]:
    from instrument_ai.device import sources
    from instrument_ai.device.personal import extract_notes

    try:
        mic = sources.MicSource(device, reconnect=False)
    except sources.NoMicrophoneError as exc:
        raise RunError(str(exc), EXIT_NO_AUDIO) from None
    except sources.SourceError as exc:
        raise RunError(str(exc)) from None
    click.echo(f"recording {seconds:g} s from {mic.name}: play single notes of {family}, a gap between them", err=True)
    try:
        audio = library.record(mic, seconds)
    except sources.SourceError as exc:
        raise RunError(str(exc)) from None
    finally:
        mic.close()
    return extract_notes(audio, mic.rate, bundle, family, silence_db=settings.silence_db, source="microphone")


def _print_report(report: library.EnrolReport, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({
            "family": report.family, "kept": report.kept, "added": report.added, "families": report.families,
            "personal": str(report.path), "inactive": report.inactive(), "descriptor": report.descriptor,
        }))  # fmt: skip
        return
    for name, n in report.kept.items():
        click.echo(f"{name}: kept {n} note{'s' if n != 1 else ''}")
    held = ", ".join(f"{f} {n}" for f, n in report.families.items())
    click.echo(f"{report.path}: {report.added} note(s) of {report.family} added; enrolled: {held}")
    for family in report.inactive():
        click.echo(f"note: {family} needs at least 2 notes to take effect")
    if report.descriptor != "embedding":
        click.echo("note: this model has no embedding output; the head falls back to the notes' MFCC statistics "
                   "(`instrument-ai convert --add-embedding` gives a bundle one)")  # fmt: skip


def _print_list(path: Path, as_json: bool) -> None:
    info = library.describe(path)
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{info['path']}: fitted for {info['model']}; {info['notes']} notes, {info['clips']} with audio "
               f"({info['bytes'] / 1024:.0f} kB), {info['descriptor']} descriptors")  # fmt: skip
    if not info["families"]:
        click.echo("  (no family enrolled)")
    for family, n in info["families"].items():
        click.echo(f"  {family:<12} {n:>3} note{'s' if n != 1 else ''}")


def _forget(path: Path, family: str, as_json: bool) -> None:
    if family not in LABELS:
        raise RunError(f"unknown family {family!r} (one of: {', '.join(LABELS)})", EXIT_USAGE)
    dropped, left = library.forget(path, family)
    if as_json:
        click.echo(json.dumps({"forgot": family, "notes": dropped, "families": left}))
        return
    held = ", ".join(f"{f} {n}" for f, n in left.items()) or "none"
    click.echo(f"{path}: forgot {dropped} note(s) of {family}; enrolled: {held}")

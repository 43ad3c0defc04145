"""The options and errors the command shells share, each defined once.

`--model/--model-dir/--trusted-key/--threads/--require-other` and the engine options (`--hop`, `--smooth`,
`--silence-db`, `--min-confidence`, `--top-k`, `--onset-align`, `--decision`, `--first-answer-hop`, `--pitched-guard`,
`--unpitched-floor`) are declared
here and used by `run`, `classify`, `soak`, `inspect` and `bench`; the engine defaults come from
`EngineSettings`, never a literal.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from instrument_ai.device import model_files
from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.settings import (
    DECISIONS,
    DEFAULT_SETTINGS,
    FALLBACK_DECISION,
    FALLBACK_FIRST_ANSWER_HOP,
    FALLBACK_MIN_CONFIDENCE,
    EngineSettings,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_AUDIO = 0, 1, 2, 3
Decorator = Callable[[Any], Any]


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (a nan poll interval would spin a core; nan passes every bound)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx) if not isinstance(value, float) else value
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


class GuardLevel(FiniteFloat):
    """A pitch-salience level in [0, 1], or ``off`` (None): `--pitched-guard`."""

    name = "level"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() == "off"):
            return None
        return super().convert(value, param, ctx)


class RunError(InstrumentAIError, click.ClickException):
    """A one-line error of a command shell with its documented exit code (the message may name a flag).

    Also a ClickException, so click's own runner (the tests' `CliRunner`) prints it as `cli.main` does.
    """

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message, exit_code=exit_code)


def threads_option(*, default: int | None = 1, help: str = "Interpreter threads.") -> Decorator:
    """`--threads N`: the interpreter's threads."""
    return click.option(
        "--threads", type=click.IntRange(1, 64), default=default, show_default=default is not None, help=help
    )


def trusted_key_option(help: str) -> Decorator:
    """`--trusted-key KEY`: accept only bundles signed by this ed25519 public key (hex or key file)."""
    return click.option("--trusted-key", default=None, help=help)


def bundle_file_option(help: str, *, dest: str = "model", multiple: bool = False) -> Decorator:
    """`--model FILE`: one bundle file (or several, with `multiple`)."""
    return click.option(
        "--model", dest, multiple=multiple, type=click.Path(path_type=Path, dir_okay=False), help=help
    )


def _stack(options: list[Decorator]) -> Decorator:
    def apply(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


MODEL_OPTIONS = _stack(
    [
        click.option("--model", type=click.Path(path_type=Path), help="Bundle (.tflite) to use."),
        click.option(
            "--model-dir",
            type=click.Path(path_type=Path, file_okay=False),
            help=f"Model directory (uses its {model_files.CURRENT}, as installed by `flash`).",
        ),
        trusted_key_option(
            "Accept only bundles signed by this ed25519 public key (hex or key file), reloads included."
        ),
        threads_option(),
        click.option(
            "--require-other",
            is_flag=True,
            help="Refuse a bundle without an 'other' output (at start and on every reload).",
        ),
        click.option(
            "--personal",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Personal file from `instrument-ai enrol` [with --model-dir: its personal.bin, if there is one].",
        ),
    ]
)
"""Where the model comes from and how it is checked (`run`, `classify`)."""

def _salience_option(flag: str, default: float | None, help_text: str) -> Decorator:
    """A pitch-salience level option (`GuardLevel`: 0-1 or ``off``)."""
    return click.option(flag, type=GuardLevel(0.0, 1.0), default="off" if default is None else default,
                        show_default=True, help=help_text)  # fmt: skip


ENGINE_OPTIONS = _stack(
    [
        click.option(
            "--hop", type=FiniteFloat(0.01, 10.0), default=None, help="Seconds between decisions [bundle's]."
        ),
        click.option(
            "--smooth", type=click.IntRange(1, 100), default=DEFAULT_SETTINGS.smooth, show_default=True,
            help="Hops averaged.",
        ),  # fmt: skip
        click.option(
            "--silence-db",
            type=FiniteFloat(-200.0, 0.0),
            default=DEFAULT_SETTINGS.silence_db,
            show_default=True,
            help="Hops quieter than this RMS level (dBFS) are silence.",
        ),
        click.option(
            "--min-confidence",
            type=FiniteFloat(0.0, 1.0),
            default=None,
            help="Below this smoothed probability the label is 'unknown' [the bundle's, else "
            f"{FALLBACK_MIN_CONFIDENCE:g}].",
        ),
        click.option(
            "--top-k", type=click.IntRange(1, 20), default=DEFAULT_SETTINGS.top_k, show_default=True,
            help="Classes reported.",
        ),  # fmt: skip
        click.option(
            "--onset-align/--no-onset-align",
            default=DEFAULT_SETTINGS.align_onsets,
            show_default=True,
            help="Right after an onset, start the window at the note (padded) rather than in the silence before.",
        ),
        click.option(
            "--decision",
            type=click.Choice(DECISIONS),
            default=None,
            help="hops: decide each hop on the last --smooth hops; note: on all the evidence since the note's onset "
            f"(reset at the next onset or silence) [the bundle's, else {FALLBACK_DECISION}].",
        ),
        click.option(
            "--first-answer-hop",
            type=click.IntRange(1, 8),
            default=None,
            help="With --decision note: a note names a family from its Nth hop on (2: a one-hop sound, such as a "
            f"syllable, names none) [the bundle's, else {FALLBACK_FIRST_ANSWER_HOP}].",
        ),
        _salience_option(
            "--pitched-guard",
            DEFAULT_SETTINGS.pitched_guard,
            "A hop at least this clearly pitched (0-1, autocorrelation peak) is not called 'other' while an "
            "instrument is close; off: no guard.",
        ),
        _salience_option(
            "--unpitched-floor",
            DEFAULT_SETTINGS.unpitched_floor,
            "A hop less clearly pitched than this (0-1, autocorrelation peak: noise, rain, slaps) is never "
            "named an instrument; off: no floor.",
        ),
    ]
)
"""The `EngineSettings` fields as options (`run`, `classify`)."""

ENGINE_KEYS = ("hop", "smooth", "silence_db", "min_confidence", "top_k", "onset_align", "decision",
               "first_answer_hop", "pitched_guard", "unpitched_floor")  # fmt: skip


def settings_from_options(opts: dict[str, Any]) -> EngineSettings:
    """Take the engine options out of a command's keyword arguments (they are removed from `opts`)."""
    values = {key: opts.pop(key) for key in ENGINE_KEYS}
    try:
        return EngineSettings(
            hop_seconds=values["hop"],
            smooth=values["smooth"],
            silence_db=values["silence_db"],
            min_confidence=values["min_confidence"],
            top_k=values["top_k"],
            align_onsets=values["onset_align"],
            decision=values["decision"],
            first_answer_hop=values["first_answer_hop"],
            pitched_guard=values["pitched_guard"],
            unpitched_floor=values["unpitched_floor"],
        )
    except ValueError as exc:
        raise RunError(str(exc), EXIT_USAGE) from None


def cli_message(exc: Exception) -> str:
    """A library error's one line, with the flag that would fix it where the library cannot know it."""
    from instrument_ai.device.files import FileTooLong

    if isinstance(exc, model_files.NoModelFound):
        return f"no model found: give --model FILE or --model-dir DIR (or set {model_files.MODEL_ENV})"
    if isinstance(exc, model_files.NamedModelMissing) and exc.named_by == "model":
        return f"--model {exc}"
    if isinstance(exc, model_files.NoModelDirectory):
        return f"--model-dir {exc}; give the --to DIR of `instrument-ai flash`"
    if isinstance(exc, model_files.TrustedKeyError):
        return f"--trusted-key: {exc.reason}; give 64 hex characters or a file holding them"
    if isinstance(exc, model_files.OtherRequiredError):
        return f"{exc} (--require-other)"
    if isinstance(exc, FileTooLong):
        return (
            f"{exc.path}: {exc.seconds:.1f} s of audio, longer than --max-seconds {exc.limit:g} s "
            "(classify names one family per file; stream long recordings with `instrument-ai run --source FILE`)"
        )
    return str(exc)


@contextlib.contextmanager
def library_errors() -> Iterator[None]:
    """Turn a library error into the command's one line (`RunError`, same exit status)."""
    try:
        yield
    except RunError:
        raise
    except InstrumentAIError as exc:
        raise RunError(cli_message(exc), exc.exit_code) from None


def find_model(model: Path | None, model_dir: Path | None) -> Path:
    """The bundle `--model` / `--model-dir` / the defaults name; RunError when there is none."""
    if model is not None and model_dir is not None:
        raise RunError("give either --model or --model-dir, not both", EXIT_USAGE)
    with library_errors():
        return model_files.find_model(model, model_dir)


def personal_head(personal: Path | None, model_dir: Path | None, bundle: Any) -> tuple[Any, Path | None, str | None]:
    """(head, its file, why none) for `--personal FILE` or a model directory's personal.bin.

    `--personal` must load (one line, exit 2: damaged, for another model without stored notes...); a model
    directory's own file that cannot be used is reported (the third value) and the device runs without it.
    A file made for another bundle is re-fitted from its stored notes and saved first.
    """
    from instrument_ai.device import enrol

    if personal is not None:
        with library_errors():
            return enrol.head_for(personal, bundle), personal, None
    if model_dir is None:
        return None, None, None
    path = enrol.personal_path(model_dir)
    if not path.exists():
        return None, path, None
    try:
        return enrol.head_for(path, bundle), path, None
    except InstrumentAIError as exc:
        return None, path, str(exc)


def load_model(path: Path, threads: int, trusted_key: str | None = None, require_other: bool = False) -> Any:
    """`model_files.load_bundle` with the command's one-line errors."""
    with library_errors():
        return model_files.load_bundle(path, threads, trusted_key, require_other)

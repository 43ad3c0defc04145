"""The one `instrument-ai` command.

Subcommands live in the modules that own them and are imported only when they
run: `instrument-ai --help` and every device subcommand must work with only the
`device` extra installed and must never pull tensorflow, librosa, scipy or numba.
A test runs the CLI in a subprocess and inspects `sys.modules` to prove it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from instrument_ai.device import __version__
from instrument_ai.device.errors import InstrumentAIError

# name -> ("module:attribute", one-line help). The help is kept here so that
# listing the commands does not import any of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("instrument_ai.device.commands.bench:bench", "Measure frontend, interpreter and end-to-end cost."),
    "data": ("instrument_ai.train.commands.data:data", "Build, split and inspect NSynth-format corpora."),
    "train": ("instrument_ai.train.commands.train:train", "Train a model on an NSynth-format corpus."),
    "evaluate": ("instrument_ai.train.commands.evaluate:evaluate", "Evaluate a Keras model or a bundle on a corpus."),
    "experiment": ("instrument_ai.train.commands.experiment:experiment", "Rerun the study and the holdout protocol."),
    "convert": ("instrument_ai.convert.cli:convert", "Convert a training run into an int8 TFLite bundle."),
    "inspect": ("instrument_ai.device.commands.inspect:inspect_bundle", "Print a bundle's metadata and self-test."),
    "enrol": ("instrument_ai.device.commands.enrol:enrol", "Teach it an instrument from a few of your notes."),
    "classify": ("instrument_ai.device.commands.run:classify", "Name the instrument family of audio files."),
    "run": ("instrument_ai.device.commands.run:run", "Classify a live stream continuously (the daemon)."),
    "devices": ("instrument_ai.device.commands.run:devices", "List audio input devices and their native rates."),
    "flash": ("instrument_ai.device.commands.lifecycle:flash", "Install a verified bundle on devices (dir or ssh)."),
    "models": ("instrument_ai.device.commands.lifecycle:models", "List the bundles installed in a model directory."),
    "rollback": ("instrument_ai.device.commands.lifecycle:rollback", "Point a model directory back one version."),
    "keygen": ("instrument_ai.convert.signing_cli:keygen", "Make an ed25519 key pair for signing bundles."),
    "service": ("instrument_ai.device.commands.service:service", "Install or print the systemd unit for the daemon."),
    "soak": ("instrument_ai.device.commands.soak:soak", "Stream hours of audio through the pipeline, report leaks."),
    "features": (
        "instrument_ai.device.commands.features:features",
        "Compute MFCC features of a file and summarise them.",
    ),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (target, _) in COMMANDS.items() if _module_exists(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or "a dependency"
            raise click.ClickException(
                f"'{cmd_name}' needs {missing}, which is not installed "
                f"(install the extra that provides it, e.g. pip install 'instrument-ai[train]')"
            ) from None
        return getattr(module, attr)

    def invoke(self, ctx: click.Context) -> object:
        """Run the subcommand; a library error becomes click's, so every runner prints the same one line."""
        try:
            return super().invoke(ctx)
        except InstrumentAIError as exc:
            raise as_click_error(exc) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def as_click_error(exc: InstrumentAIError) -> click.ClickException:
    """The one translation of a library error for click: its message on one line, its own exit status."""
    error = click.ClickException(" ".join(str(exc).split()))
    error.exit_code = exc.exit_code  # type: ignore[misc]  # click reads it per instance
    return error


def _module_exists(target: str) -> bool:
    """True when the module behind a command is part of this installation (no import)."""
    module_name = target.split(":")[0]
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="instrument-ai")
@click.option("--verbose", is_flag=True, help="Keep the TFLite runtime's own INFO lines on stderr.")
def cli(verbose: bool) -> None:
    """instrument-ai: hear a note, name the instrument family, on a Raspberry Pi."""
    if verbose:
        os.environ["INSTRUMENT_AI_VERBOSE"] = "1"  # read by interpreter.quiet_native_stderr


def command_name(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is one), for the error prefix."""
    return next((word for word in argv if word in COMMANDS), None)


def error_line(command: str | None, message: str) -> str:
    """The one wording of every runtime error: `instrument-ai CMD: PATH: what is wrong; what to do`."""
    return f"instrument-ai {command}: {message}" if command else f"instrument-ai: {message}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Errors the user can fix exit non-zero with one line, never a traceback.

    Usage errors keep click's usage text (exit 2); every other error the commands raise is printed as
    one `instrument-ai CMD: ...` line with its own exit status (1 runtime, 2 configuration).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = cli.main(args=args, prog_name="instrument-ai", standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(error_line(command_name(args), exc.format_message()), err=True)
        sys.exit(exc.exit_code)
    except InstrumentAIError as exc:
        click.echo(error_line(command_name(args), " ".join(str(exc).split())), err=True)
        sys.exit(exc.exit_code)
    except click.Abort:  # pragma: no cover - interactive (Ctrl-C inside a prompt)
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()

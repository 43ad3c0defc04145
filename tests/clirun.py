"""Run `instrument-ai ARGS` in-process through `cli.main`, where errors become one line and an exit status.

Invoking a subcommand's click object directly skips `cli.main`, so an `InstrumentAIError` would escape as an
exception; the tests that check what a user sees go through here instead.
"""

from __future__ import annotations

from typing import Any

import click
from click.testing import CliRunner, Result


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def _instrument_ai(ctx: click.Context) -> None:
    from instrument_ai.device.cli import main

    main(list(ctx.args))


def run_main(*args: Any) -> Result:
    """CliRunner's Result of `instrument-ai ARGS`: `exit_code`, and stdout and stderr interleaved in `output`."""
    return CliRunner().invoke(_instrument_ai, [str(a) for a in args])

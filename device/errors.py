"""The one error root of instrument-ai.

Every error a user can fix derives from `InstrumentAIError` and carries its exit status, so the CLI
catches one class in one place (`cli.main`) and prints one line: 1 for a runtime failure, 2 for
usage or configuration. Library code never imports click and its messages name values, not flags.
"""

from __future__ import annotations


class InstrumentAIError(Exception):
    """Base of every user-facing error; `exit_code` is what the CLI exits with (1: runtime)."""

    exit_code: int = 1

    def __init__(self, message: object = "", *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigurationError(InstrumentAIError):
    """A setting, option value or file the user named cannot be used as given (exit 2)."""

    exit_code = 2

"""The one fd-2 silencer: native code (the TFLite runtime, PortAudio, ALSA, TensorFlow's converter) writes
straight to file descriptor 2, past `sys.stderr`, so only pointing fd 2 at /dev/null keeps its chatter out of
the CLI's output and the journal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

VERBOSE_ENV = "INSTRUMENT_AI_VERBOSE"
"""Set (by `instrument-ai --verbose`) to keep the TFLite runtime's own INFO lines."""


@contextlib.contextmanager
def quiet_native_stderr(*, keep_if_verbose: bool = False) -> Iterator[None]:
    """Point fd 2 at /dev/null for the duration, then restore it; a no-op where there is no fd 2.

    With `keep_if_verbose`, nothing is silenced while INSTRUMENT_AI_VERBOSE is set: the interpreter
    passes it so `--verbose` shows the runtime's log lines. Single-threaded use only: fd 2 is
    process-wide, so another thread's native output is silenced too for the duration.

    >>> with quiet_native_stderr():
    ...     _ = os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")  # dropped
    """
    if keep_if_verbose and os.environ.get(VERBOSE_ENV):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (a detached daemon) or no sys.stderr: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

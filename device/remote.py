"""Flashing a bundle onto remote devices over OpenSSH (`ssh`/`scp` subprocesses).

Using the system's OpenSSH honours `~/.ssh/config` (host aliases, keys, jump
hosts) for free. The remote side runs its own `instrument-ai flash --to DIR`,
so the bundle is verified again with the runtime that will execute it and
installed with the same atomic steps as a local flash.

ssh runs a non-login shell whose PATH rarely holds a venv, so the default
command `instrument-ai` is looked for, in one remote shell command, on the
PATH and then where the guide installs it (`REMOTE_LOCATIONS`). A trusted key
travels as its 64 hex characters: the Pi has no copy of a local key file.
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

SSH_UNREACHABLE = 255  # OpenSSH's exit status for connection failures
DEFAULT_REMOTE_COMMAND = "instrument-ai"
REMOTE_LOCATIONS = (
    "/opt/instrument-ai/bin/instrument-ai",
    "$HOME/.local/bin/instrument-ai",
    "$HOME/.venv/bin/instrument-ai",
    "/usr/local/bin/instrument-ai",
)
"""Where the device's CLI is looked for when `instrument-ai` is not on the ssh PATH (docs/raspberry-pi.md)."""
_REMOTE = re.compile(r"^(?P<host>(?:[^@/:\s]+@)?[^@/:\s]+):(?P<dir>.+)$")


@dataclass(frozen=True)
class Target:
    """One `--to` destination: a local directory, or `[user@]host:DIR`."""

    spec: str
    host: str | None
    directory: str

    @property
    def is_remote(self) -> bool:
        return self.host is not None


@dataclass
class FlashResult:
    target: str
    status: str  # ok | refused | unreachable | dry-run
    detail: str


def parse_target(spec: str) -> Target:
    """`user@host:/var/lib/instrument-ai` is remote; `/path` or `./dir` is local."""
    if not spec.strip():
        raise ValueError("an empty --to target; give a directory or [user@]host:DIR")
    local = spec.startswith(("/", ".", "~"))
    match = _REMOTE.match(spec)
    if match and not local:
        return Target(spec, match["host"], match["dir"])
    if ":" in spec and not local:  # `host:` (no DIR), `:DIR` (no host): a typo, not a folder name
        raise ValueError(
            f"{spec!r} is not a valid target; give a directory or [user@]host:DIR (./NAME for a local one)"
        )
    return Target(spec, None, spec)


def read_hosts_file(path: Path) -> list[str]:
    """One target per line; blank lines and `#` comments are ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read hosts file ({exc.strerror})") from None
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _last_line(text: str) -> str:
    """The last meaningful line, skipping the interpreter's INFO/WARNING chatter on stderr."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("INFO:", "WARNING:"))]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or [""])[-1]


def remote_shell_command(remote_command: str, args: list[str]) -> str:
    """The shell command that runs the device's CLI with `args`.

    The default name is searched on the PATH, then in `REMOTE_LOCATIONS`; a
    command the user named (`--remote-command PATH`) is run as given.
    """
    if remote_command != DEFAULT_REMOTE_COMMAND:
        return shlex.join([remote_command, *args])
    candidates = " ".join([DEFAULT_REMOTE_COMMAND, *(f'"{place}"' for place in REMOTE_LOCATIONS)])
    looked = ", ".join(["the PATH", *(place.replace("$HOME", "~") for place in REMOTE_LOCATIONS)])
    return (
        f'for c in {candidates}; do if command -v "$c" >/dev/null 2>&1; then exec "$c" {shlex.join(args)}; fi; done; '
        f"echo {shlex.quote(f'Error: instrument-ai not found on the device ({looked}); give --remote-command PATH')}"
        " >&2; exit 127"
    )


def _key_value(trusted_key: str) -> str:
    """The key's 64 hex characters (a local key file is read here: the device has no copy of it)."""
    from instrument_ai.device.lifecycle import trusted_key_hex

    return trusted_key_hex(trusted_key)


def _run_step(step: list[str], timeout: float) -> subprocess.CompletedProcess[str] | str:
    """The finished step, or why it could not run (one line)."""
    try:
        return subprocess.run(step, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return f"{step[0]} is not installed"
    except subprocess.TimeoutExpired:
        return f"{step[0]} timed out after {timeout:.0f} s"


def flash_remote(
    bundle: Path,
    target: Target,
    *,
    keep: int,
    remote_command: str = DEFAULT_REMOTE_COMMAND,
    trusted_key: str | None = None,
    dry_run: bool = False,
    timeout: float = 120.0,
) -> FlashResult:
    """Copy the bundle to the host's model directory and install it there with the host's own CLI.

    The upload is a dot file (`.incoming-RANDOM-NAME`) that the device's install
    removes whatever its outcome; when the install cannot run at all (no CLI
    found, a lost connection) it is removed here.
    """
    assert target.host is not None
    incoming = f"{target.directory.rstrip('/')}/.incoming-{secrets.token_hex(4)}-{bundle.name}"
    install = ["flash", "--to", target.directory, "--keep", str(keep), "--remove-source"]
    if trusted_key:
        install += ["--trusted-key", _key_value(trusted_key)]
    install.append(incoming)
    ssh = ["ssh", "-o", "BatchMode=yes", target.host]
    steps = [
        [*ssh, f"mkdir -p {shlex.quote(target.directory)}"],
        ["scp", "-q", "-o", "BatchMode=yes", str(bundle), f"{target.host}:{incoming}"],
        [*ssh, remote_shell_command(remote_command, install)],
    ]
    if dry_run:
        return FlashResult(target.spec, "dry-run", " && ".join(shlex.join(step) for step in steps))
    done: subprocess.CompletedProcess[str] | str = ""
    for index, step in enumerate(steps):
        done = _run_step(step, timeout)
        if isinstance(done, str):
            if index > 0:
                _remove_upload(ssh, incoming)
            return FlashResult(target.spec, "unreachable", done)
        if done.returncode == 0:
            continue
        reason = _last_line(done.stderr + "\n" + done.stdout) or f"exit status {done.returncode}"
        if index > 0:
            _remove_upload(ssh, incoming)
        if done.returncode == SSH_UNREACHABLE or index < 2:
            return FlashResult(target.spec, "unreachable", reason)
        return FlashResult(target.spec, "refused", reason)
    assert not isinstance(done, str)
    return FlashResult(target.spec, "ok", _last_line(done.stdout))


def _remove_upload(ssh: list[str], incoming: str) -> None:
    """Best effort: delete the uploaded copy after a failed install (the host may be gone by now)."""
    _run_step([*ssh, f"rm -f -- {shlex.quote(incoming)}"], timeout=15.0)

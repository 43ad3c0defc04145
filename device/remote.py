"""Flashing a bundle onto remote devices over OpenSSH (`ssh`/`scp` subprocesses).

Using the system's OpenSSH honours `~/.ssh/config` (host aliases, keys, jump
hosts) for free. The remote side runs its own `instrument-ai flash --to DIR`,
so the bundle is verified again with the runtime that will execute it and
installed with the same atomic steps as a local flash.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

SSH_UNREACHABLE = 255  # OpenSSH's exit status for connection failures
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


def flash_remote(
    bundle: Path,
    target: Target,
    *,
    keep: int,
    remote_command: str = "instrument-ai",
    trusted_key: str | None = None,
    dry_run: bool = False,
    timeout: float = 120.0,
) -> FlashResult:
    """Copy the bundle to the host's model directory and install it there with the host's own CLI."""
    assert target.host is not None
    incoming = f"{target.directory.rstrip('/')}/.incoming-{bundle.name}"
    install = [remote_command, "flash", "--to", target.directory, "--keep", str(keep), "--remove-source"]
    if trusted_key:
        install += ["--trusted-key", trusted_key]
    install.append(incoming)
    steps = [
        ["ssh", "-o", "BatchMode=yes", target.host, f"mkdir -p {shlex.quote(target.directory)}"],
        ["scp", "-q", "-o", "BatchMode=yes", str(bundle), f"{target.host}:{incoming}"],
        ["ssh", "-o", "BatchMode=yes", target.host, shlex.join(install)],
    ]
    if dry_run:
        return FlashResult(target.spec, "dry-run", " && ".join(shlex.join(step) for step in steps))
    for index, step in enumerate(steps):
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError:
            return FlashResult(target.spec, "unreachable", f"{step[0]} is not installed")
        except subprocess.TimeoutExpired:
            return FlashResult(target.spec, "unreachable", f"{step[0]} timed out after {timeout:.0f} s")
        if done.returncode == 0:
            continue
        reason = _last_line(done.stderr + "\n" + done.stdout) or f"exit status {done.returncode}"
        if done.returncode == SSH_UNREACHABLE or index < 2:
            return FlashResult(target.spec, "unreachable", reason)
        return FlashResult(target.spec, "refused", reason)
    return FlashResult(target.spec, "ok", _last_line(done.stdout))

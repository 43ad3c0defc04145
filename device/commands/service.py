"""`instrument-ai service install`: the systemd unit that runs the daemon on a Raspberry Pi.

The unit is generated rather than copied so that it points at the venv the
command runs from. It runs as a dedicated `instrument-ai` user in the `audio`
group, restarts on failure, logs to the journal and reads its models from
/var/lib/instrument-ai (see docs/raspberry-pi.md).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from instrument_ai.device.lifecycle import atomic_write_bytes

UNIT_NAME = "instrument-ai.service"
DEFAULT_MODEL_DIR = "/var/lib/instrument-ai"


HIDDEN = {
    "/tmp": "PrivateTmp=yes",
    "/var/tmp": "PrivateTmp=yes",
    "/home": "ProtectHome=yes",
    "/root": "ProtectHome=yes",
    "/run/user": "ProtectHome=yes",
}
"""Where the unit's sandbox hides files, and the setting that hides them."""


def quote(path: str) -> str:
    """A path as one systemd word: double-quoted (backslash and quote escaped) when it holds spaces or quotes."""
    if not any(c in path for c in " \t\"'\\"):
        return path
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_escape(text: str, *, dollar: bool = True) -> str:
    """`text` as systemd reads it back unchanged: `%` specifiers (and, in ExecStart=, `$` variables) doubled."""
    text = text.replace("%", "%%")
    return text.replace("$", "$$") if dollar else text


def check_install_options(executable: str, model_dir: str, http: str | None, token_file: str | None, args: str) -> None:
    """Refuse (exit 2) what would make a unit that can only fail to start: relative paths, an open page."""
    import shlex

    from instrument_ai.device.http_page import HttpConfigError, is_loopback, parse_bind

    for label, path in (("--executable", executable), ("--model-dir", model_dir)):
        if not os.path.isabs(path):
            raise click.UsageError(f"{label} {path}: give an absolute path (systemd does not start the unit here)")
    if not http:
        return
    try:
        host, _port = parse_bind(http)
        words = {word.split("=", 1)[0] for word in shlex.split(args)}
    except (HttpConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    secured = token_file or words & {"--http-open", "--http-token", "--http-token-file"}
    if not secured and not (host == "localhost" or is_loopback(host)):
        raise click.UsageError(
            f"--http {http}: reachable from the network, and the daemon refuses that without a token; "
            "give --http-token-file FILE (or --args --http-open for a trusted network)"
        )


def sandbox_warnings(executable: str, model_dir: str) -> list[str]:
    """One line per path the service could not see (the daemon would fail to start with a puzzling error)."""
    out = []
    for label, path in (("executable", executable), ("--model-dir", model_dir)):
        resolved = os.path.abspath(path)
        for prefix, setting in HIDDEN.items():
            if resolved == prefix or resolved.startswith(prefix + "/"):
                out.append(
                    f"instrument-ai service install: {path}: the {label} is under {prefix}, which the unit's "
                    f"{setting} hides; install the venv (or the models) elsewhere, e.g. /opt/instrument-ai"
                )
    return out


def _documentation() -> str:
    """A Documentation= line naming a file that exists (the source checkout's Pi guide), else the man page."""
    guide = Path(__file__).resolve().parents[2] / "docs" / "raspberry-pi.md"
    link = f"file://{guide}" if guide.is_file() else ""
    return " ".join(x for x in (link, "man:systemd.exec(5)") if x)


LIVE_HELP = """\
# Live page, /status, /healthz, /metrics (docs/raspberry-pi.md): `service install --http 0.0.0.0:8080
# --http-token-file /etc/instrument-ai/http-token` adds them; a phone on the same network opens
# http://<pi>.local:8080/?token=<token>. MQTT + Home Assistant discovery: `--mqtt broker.local`
# (and --args "--mqtt-user U --mqtt-password-file /etc/instrument-ai/mqtt-password").
"""


def live_args(http: str | None, token_file: str | None, mqtt: str | None) -> str:
    """The `run` arguments of the live outputs asked of `service install`."""
    words = []
    if http:
        words += ["--http", http]
    if token_file:
        words += ["--http-token-file", quote(token_file)]
    if mqtt:
        words += ["--mqtt", mqtt]
    return " ".join(words)


def render_unit(executable: str, model_dir: str, user: str, extra_args: str) -> str:
    """The text of the systemd unit."""
    args = f" {systemd_escape(extra_args.strip())}" if extra_args.strip() else ""
    exe, models = systemd_escape(quote(executable)), systemd_escape(quote(model_dir))
    models_path = systemd_escape(quote(model_dir), dollar=False)
    return f"""[Unit]
Description=instrument-ai: name the instrument family heard by the microphone
Documentation={_documentation()}
After=sound.target network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
SupplementaryGroups=audio
{LIVE_HELP}ExecStart={exe} run --source mic --model-dir {models} --json --stats 60{args}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
# exit status 2 is a usage/configuration error: restarting would not fix it
RestartPreventExitStatus=2
StateDirectory=instrument-ai
# systemd resets the directory to this mode at every start: keep it group-writable (setgid) for `flash`
StateDirectoryMode=2775
WorkingDirectory={systemd_escape(model_dir, dollar=False)}
Environment=PYTHONUNBUFFERED=1
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
ReadWritePaths={models_path}
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def _default_executable() -> str:
    found = shutil.which("instrument-ai")
    if found:
        return os.path.abspath(found)
    return str(Path(sys.executable).with_name("instrument-ai"))


@click.group()
def service() -> None:
    """Run the daemon as a systemd service (Raspberry Pi OS Bookworm)."""


@service.command()
@click.option("--print", "print_only", is_flag=True, help="Print the unit for review instead of installing it.")
@click.option("--model-dir", default=DEFAULT_MODEL_DIR, show_default=True)
@click.option("--user", default="instrument-ai", show_default=True)
@click.option("--executable", default=None, help="Path of instrument-ai in the device venv (default: this one).")
@click.option("--args", "extra_args", default="", help="Extra arguments for `instrument-ai run`.")
@click.option("--http", default=None, metavar="HOST:PORT", help="Serve the live page (e.g. 0.0.0.0:8080 for phones).")
@click.option("--http-token-file", default=None, help="Token file the page requires (chmod 600, owned by --user).")
@click.option("--mqtt", default=None, metavar="HOST[:PORT]", help="Publish to this MQTT broker (Home Assistant).")
@click.option("--unit-dir", type=click.Path(path_type=Path), default=Path("/etc/systemd/system"), show_default=True)
def install(
    print_only: bool,
    model_dir: str,
    user: str,
    executable: str | None,
    extra_args: str,
    http: str | None,
    http_token_file: str | None,
    mqtt: str | None,
    unit_dir: Path,
) -> None:
    """Write the systemd unit (or print it with --print); see docs/raspberry-pi.md for the rest."""
    executable = executable or _default_executable()
    check_install_options(executable, model_dir, http, http_token_file, extra_args)
    for line in sandbox_warnings(executable, model_dir):
        click.echo(f"warning: {line}", err=True)
    if http_token_file and not http:
        raise click.UsageError("--http-token-file applies only with --http")
    live = live_args(http, http_token_file, mqtt)
    text = render_unit(executable, model_dir, user, f"{live} {extra_args}".strip())
    if print_only:
        click.echo(text, nl=False)
        return
    target = unit_dir / UNIT_NAME
    try:
        atomic_write_bytes(target, text.encode())
    except PermissionError:
        raise click.ClickException(f"{target}: permission denied (run as root, or use --print)") from None
    click.echo(f"wrote {target}")
    click.echo(f"next: sudo useradd --system --groups audio --home-dir {model_dir} {user} (once)")
    click.echo(f"      sudo install -d -o {user} -g {user} {model_dir}")
    click.echo(f"      instrument-ai flash models/default.tflite --to {model_dir}")
    click.echo("      sudo systemctl daemon-reload && sudo systemctl enable --now instrument-ai")
    if http_token_file:
        click.echo(f"      openssl rand -hex 16 | sudo install -m 600 -o {user} /dev/stdin {http_token_file}")

"""The options of `run` for the live page (--http...) and MQTT (--mqtt...), checked before anything starts.

Every mistake here is configuration: one line, exit 2 (the systemd unit does
not restart on it). A token file that others can read is only a warning.
"""

from __future__ import annotations

import contextlib
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from instrument_ai.device.commands.options import FiniteFloat
from instrument_ai.device.errors import ConfigurationError

TOKEN_ENV = "INSTRUMENT_AI_HTTP_TOKEN"
MQTT_PASSWORD_ENV = "INSTRUMENT_AI_MQTT_PASSWORD"


def live_options(func: Any) -> Any:
    """The --http and --mqtt options of `run`."""
    options = [
        click.option(
            "--http",
            "http_bind",
            metavar="HOST:PORT",
            default=None,
            help="Serve the live page, /events, /status, /healthz and /metrics here (a bare PORT: 127.0.0.1).",
        ),
        click.option(
            "--http-token",
            envvar=TOKEN_ENV,
            default=None,
            help=f"Require this token (Authorization: Bearer, or ?token=) [${TOKEN_ENV}].",
        ),
        click.option(
            "--http-token-file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Read the token from this file (keep it chmod 600).",
        ),
        click.option("--http-open", is_flag=True, help="Serve beyond loopback without a token (a trusted network)."),
        click.option(
            "--http-max-clients",
            type=click.IntRange(1, 256),
            default=8,
            show_default=True,
            help="Live streams (/events) served at once.",
        ),
        click.option(
            "--http-stall-seconds",
            type=FiniteFloat(0.1, 3600.0),
            default=5.0,
            show_default=True,
            help="/healthz answers 503 when no hop came for this long.",
        ),
        click.option("--mqtt", "mqtt_broker", metavar="HOST[:PORT]", default=None, help="Publish to this MQTT broker."),
        click.option("--mqtt-device", default=None, help="Device name in the topics [host name]."),
        click.option("--mqtt-user", default=None, help="MQTT user name."),
        click.option(
            "--mqtt-password", envvar=MQTT_PASSWORD_ENV, default=None, help=f"MQTT password [${MQTT_PASSWORD_ENV}]."
        ),
        click.option(
            "--mqtt-password-file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Read the MQTT password from this file.",
        ),
        click.option("--mqtt-tls", is_flag=True, help="Connect with TLS (port 8883 unless given)."),
        click.option(
            "--mqtt-ca",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="CA certificate file for --mqtt-tls [the system's].",
        ),
        click.option(
            "--mqtt-discovery-prefix",
            default="homeassistant",
            show_default=True,
            help="Home Assistant discovery prefix.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


LIVE_KEYS = (
    "http_bind",
    "http_token",
    "http_token_file",
    "http_open",
    "http_max_clients",
    "http_stall_seconds",
    "mqtt_broker",
    "mqtt_device",
    "mqtt_user",
    "mqtt_password",
    "mqtt_password_file",
    "mqtt_tls",
    "mqtt_ca",
    "mqtt_discovery_prefix",
)


class LiveOptionError(ConfigurationError, click.ClickException):
    """A bad live option: one line, exit 2 (a ClickException too, for click's own runner)."""


@dataclass
class LiveConfig:
    http: tuple[str, int] | None = None
    http_text: str = ""
    token: str | None = None
    max_clients: int = 8
    stall_seconds: float = 5.0
    mqtt: Any = None  # an MqttConfig


def _warn(message: str) -> None:
    sys.stderr.write(f"instrument-ai run: warning: {message}\n")
    sys.stderr.flush()


def read_secret(path: Path, option: str) -> str:
    """The first line of a secret file; LiveOptionError if missing, unreadable or empty; a warning if world-readable."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LiveOptionError(f"{option} {path}: no such file") from None
    except OSError as exc:
        raise LiveOptionError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise LiveOptionError(f"{option} {path}: not a text file") from None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise LiveOptionError(f"{option} {path}: the file is empty")
    if len(lines) > 1:  # which line is the secret? never guess
        raise LiveOptionError(f"{option} {path}: {len(lines)} lines; the file must hold the secret alone on one line")
    secret = lines[0]
    if info.st_mode & stat.S_IROTH:
        _warn(f"{option} {path} is readable by every user on this machine; chmod 600 {path}")
    return secret


def parse_live_options(opts: dict[str, Any]) -> LiveConfig:
    """Check the --http/--mqtt options together; LiveOptionError (exit 2) with one line for any mistake."""
    from instrument_ai.device.http_page import HttpConfigError, is_loopback, parse_bind, resolve, token_warning

    config = LiveConfig(max_clients=opts["http_max_clients"], stall_seconds=opts["http_stall_seconds"])
    bind = opts.get("http_bind")
    if bind is None:
        given = [name for name in ("http_token", "http_token_file") if opts.get(name)]
        if opts.get("http_open"):
            given.append("http_open")
        if given:
            raise LiveOptionError(f"--{given[0].replace('_', '-')} applies only with --http HOST:PORT")
    else:
        if opts.get("http_token") and opts.get("http_token_file"):
            raise LiveOptionError("give --http-token or --http-token-file, not both")
        token = opts.get("http_token")
        if opts.get("http_token_file"):
            token = read_secret(opts["http_token_file"], "--http-token-file")
        if token is not None and not token.strip():
            raise LiveOptionError("--http-token: the token is empty")
        if token is not None and opts.get("http_open"):
            raise LiveOptionError("give a token or --http-open, not both")
        if token is not None and (weak := token_warning(token)):
            _warn(f"--http-token: {weak}")
        try:
            host, port = parse_bind(bind)
            _, address = resolve(host, port)
        except HttpConfigError as exc:
            raise LiveOptionError(str(exc)) from None
        if token is None and not opts.get("http_open") and not is_loopback(address):
            raise LiveOptionError(
                f"--http {bind}: reachable from the network; give --http-token-file FILE (or --http-token), "
                "or --http-open to serve it without a token"
            )
        config.http, config.http_text, config.token = (host, port), bind, token
    config.mqtt = _mqtt_config(opts)
    return config


def _mqtt_config(opts: dict[str, Any]) -> Any:
    from instrument_ai.device.mqtt_out import MqttConfig, MqttConfigError, device_name, parse_broker

    broker = opts.get("mqtt_broker")
    if broker is None:
        extra = [k for k in LIVE_KEYS if k.startswith("mqtt_") and k not in ("mqtt_broker", "mqtt_discovery_prefix")]
        given = [k for k in extra if opts.get(k)]
        if given:
            raise LiveOptionError(f"--{given[0].replace('_', '-')} applies only with --mqtt HOST[:PORT]")
        return None
    if opts.get("mqtt_password") and opts.get("mqtt_password_file"):
        raise LiveOptionError("give --mqtt-password or --mqtt-password-file, not both")
    password = opts.get("mqtt_password")
    if opts.get("mqtt_password_file"):
        password = read_secret(opts["mqtt_password_file"], "--mqtt-password-file")
    if password is not None and opts.get("mqtt_user") is None:
        raise LiveOptionError("--mqtt-password needs --mqtt-user")
    ca = opts.get("mqtt_ca")
    if ca is not None:
        if not opts.get("mqtt_tls"):
            raise LiveOptionError("--mqtt-ca applies only with --mqtt-tls")
        if not ca.is_file():
            raise LiveOptionError(f"--mqtt-ca {ca}: no such file")
    prefix = (opts.get("mqtt_discovery_prefix") or "").strip("/")
    if not prefix or any(c in prefix for c in "#+ "):
        raise LiveOptionError(f"--mqtt-discovery-prefix {opts.get('mqtt_discovery_prefix')!r}: not a topic prefix")
    try:
        host, port = parse_broker(broker, bool(opts.get("mqtt_tls")))
        device = device_name(opts.get("mqtt_device"))
    except MqttConfigError as exc:
        raise LiveOptionError(str(exc)) from None
    try:
        import paho.mqtt.client  # noqa: F401 - only to say now, not at the first event, that it is missing
    except ImportError:
        raise LiveOptionError("--mqtt needs paho-mqtt: pip install 'instrument-ai[mqtt]'") from None
    return MqttConfig(
        host=host,
        port=port,
        device=device,
        username=opts.get("mqtt_user"),
        password=password,
        tls=bool(opts.get("mqtt_tls")),
        ca_file=str(ca) if ca is not None else None,
        discovery_prefix=prefix,
    )


@dataclass
class Live:
    """The started live outputs: the observer sink for the daemon, and what the start record says."""

    state: Any
    info: dict[str, Any]


@contextlib.contextmanager
def open_live(config: LiveConfig, audio: Any, report: Any) -> Iterator[Live | None]:
    """Start the page server and the MQTT publisher (each only if asked); stop them on exit."""
    if config.http is None and config.mqtt is None:
        yield None
        return
    from instrument_ai.device.event_hub import EventHub
    from instrument_ai.device.live_state import LiveState

    hub = EventHub(max_clients=config.max_clients) if config.http is not None else None
    publishers: list[Any] = []
    info: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if config.mqtt is not None:
            from instrument_ai.device.mqtt_out import MqttConfigError, MqttOut

            mqtt = MqttOut(config.mqtt, report)
            try:
                mqtt.start()
            except MqttConfigError as exc:
                raise LiveOptionError(str(exc)) from None
            stack.callback(mqtt.close)
            publishers.append(mqtt)
            info["mqtt"] = {"broker": config.mqtt.broker, "device": config.mqtt.device, "topic": config.mqtt.base}
        state = LiveState(hub, publishers)
        state.source = audio
        if config.http is not None:
            from instrument_ai.device.http_page import HttpConfigError, PageApp

            assert hub is not None
            app = PageApp(state, hub, token=config.token, stall_seconds=config.stall_seconds)
            try:
                url = app.bind(*config.http)
            except HttpConfigError as exc:
                raise LiveOptionError(str(exc)) from None
            app.start()
            stack.callback(app.close)
            info["http"] = url
            info["http_token"] = config.token is not None
        yield Live(state=state, info=info)

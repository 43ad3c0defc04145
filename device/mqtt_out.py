"""MQTT output: events, the retained current state, and Home Assistant discovery (paho-mqtt, extra `mqtt`).

Topics, for a device named D:

* ``instrument-ai/D/event`` - every label change (JSON, QoS 1, not retained);
* ``instrument-ai/D/state`` - the current state (retained): family, confidence, top_3, model_version...;
* ``instrument-ai/D/availability`` - ``online`` (retained), ``offline`` by the last will or at a clean stop;
* ``homeassistant/sensor/D/family/config`` - the discovery document of a sensor whose state is the family
  and whose attributes are confidence, top-3 and model version (retained).

The audio thread only does `put_nowait` into a bounded queue; a publisher
thread hands the messages to paho, whose own network thread (`loop_start`)
connects, reconnects with exponential backoff (`reconnect_delay_set`) and
keeps QoS-1 messages queued (bounded) while the broker is away. On every
(re)connect the discovery document, ``online`` and the latest state are
published again, so a broker restarted without persistence is whole again.
A broker that is down, refuses or drops the connection is reported on
stderr, once per outage (and every `REMIND_SECONDS`); the daemon goes on.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from instrument_ai.device.errors import ConfigurationError

TOPIC_ROOT = "instrument-ai"
QUEUE_MESSAGES = 1000
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30
REMIND_SECONDS = 60.0
Report = Callable[[dict[str, Any]], None]


class MqttConfigError(ConfigurationError, ValueError):
    """A bad --mqtt option (one line); the command exits 2."""


@dataclass
class MqttConfig:
    host: str
    port: int = 1883
    device: str = "instrument-ai"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    discovery_prefix: str = "homeassistant"
    keepalive: int = 30
    reconnect_max_s: int = RECONNECT_MAX_S

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def base(self) -> str:
        return f"{TOPIC_ROOT}/{self.device}"


def device_name(raw: str | None) -> str:
    """A topic-safe device name: the given name or the host name, lower case, [a-z0-9_-] only."""
    name = re.sub(r"[^a-z0-9_-]+", "-", (raw or socket.gethostname() or "instrument-ai").lower()).strip("-")
    if not name:
        raise MqttConfigError(f"--mqtt-device {raw!r}: give a name made of letters, digits, '-' or '_'")
    return name


def parse_broker(value: str, tls: bool) -> tuple[str, int]:
    """HOST[:PORT] (IPv6 in brackets) -> (host, port); the port defaults to 1883, or 8883 with TLS."""
    default = 8883 if tls else 1883
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\s\[\]]+)(?::(\d+))?", value.strip())
    if not match:
        raise MqttConfigError(f"--mqtt {value!r}: give HOST or HOST:PORT (e.g. 192.168.1.10:1883)")
    host = match.group(1) or match.group(3)
    port_text = match.group(2) or match.group(4)
    port = int(port_text) if port_text else default
    if not 0 < port < 65536:
        raise MqttConfigError(f"--mqtt {value!r}: port {port} is not in 1-65535")
    return host, port


def discovery_config(config: MqttConfig, model: dict[str, Any]) -> dict[str, Any]:
    """The Home Assistant MQTT discovery document of the family sensor."""
    from importlib import metadata

    try:
        version = metadata.version("instrument-ai")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        version = "unknown"
    return {
        "name": "Instrument family",
        "unique_id": f"instrument_ai_{config.device}_family",
        "object_id": f"instrument_ai_{config.device}_family",
        "state_topic": f"{config.base}/state",
        "value_template": "{{ value_json.family }}",
        "json_attributes_topic": f"{config.base}/state",
        "json_attributes_template": (
            "{{ {'confidence': value_json.confidence, 'top_3': value_json.top_3, "
            "'model_version': value_json.model_version} | tojson }}"
        ),
        "availability_topic": f"{config.base}/availability",
        "payload_available": "online",
        "payload_not_available": "offline",
        "icon": "mdi:music-clef-treble",
        "device": {
            "identifiers": [f"instrument_ai_{config.device}"],
            "name": f"instrument-ai {config.device}",
            "manufacturer": "instrument-ai",
            "model": f"{model.get('name', '?')} {model.get('version', '?')}",
            "sw_version": version,
        },
        "origin": {"name": "instrument-ai", "sw_version": version},
    }


def state_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The retained state document from a change event."""
    return {
        "family": event.get("label"),
        "confidence": event.get("confidence"),
        "top_3": [{"family": t["label"], "p": t["p"]} for t in event.get("top_k", [])[:3]],
        "model_version": event.get("model_version"),
        "level_db": event.get("level_db"),
        "time": event.get("time"),
        "hop": event.get("hop"),
        "wall": event.get("wall"),
    }


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


class MqttOut:
    """The MQTT publisher (see the module docstring). `start` returns at once; nothing here blocks the caller."""

    def __init__(self, config: MqttConfig, report: Report, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.report = report
        self._clock = clock
        self._queue: queue.Queue[tuple[str, str, bool] | None] = queue.Queue(maxsize=QUEUE_MESSAGES)
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._model: dict[str, Any] = {}
        self._state: str | None = None  # the newest retained state payload
        self.connected = False
        self.connects = 0
        self.published = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._down_since: float | None = None
        self._remind_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the paho client, start its network thread and the publisher thread (returns at once)."""
        client = _make_client(self.config)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self._client = client
        client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        client.loop_start()
        self._thread = threading.Thread(target=self._publish_loop, name="mqtt-publish", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 3.0) -> None:
        """Say ``offline`` (if connected), disconnect and stop the threads, within about `timeout` seconds."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(timeout)
        client = self._client
        if client is None:
            return

        def stop() -> None:
            with contextlib.suppress(Exception):
                if self.connected:
                    info = client.publish(f"{self.config.base}/availability", "offline", qos=1, retain=True)
                    info.wait_for_publish(timeout=1.0)
                client.disconnect()
                client.loop_stop()

        stopper = threading.Thread(target=stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)

    # -- fed by the daemon (the audio thread): never blocks -------------------------------------------------
    def start_info(self, hello: dict[str, Any]) -> None:
        self._model = dict(hello.get("model") or {})
        self._offer(f"{self.config.discovery_prefix}/sensor/{self.config.device}/family/config", "discovery", True)

    def change(self, event: dict[str, Any]) -> None:
        self._offer(f"{self.config.base}/event", _dumps(event), False)
        state = _dumps(state_payload(event))
        self._state = state
        self._offer(f"{self.config.base}/state", state, True)

    def notice(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "swap":
            self._model = {**self._model, "name": data.get("new_name"), "version": data.get("new_version")}
            self._offer(f"{self.config.discovery_prefix}/sensor/{self.config.device}/family/config", "discovery", True)
        self._offer(f"{self.config.base}/event", _dumps({"type": kind, **data}), False)

    def _offer(self, topic: str, payload: str, retain: bool) -> None:
        try:
            self._queue.put_nowait((topic, payload, retain))
        except queue.Full:
            self.dropped += 1

    def status(self) -> dict[str, Any]:
        return {
            "broker": self.config.broker,
            "device": self.config.device,
            "connected": self.connected,
            "connects": self.connects,
            "published": self.published,
            "dropped": self.dropped,
            "queued": self._queue.qsize(),
            "last_error": self.last_error,
        }

    # -- the publisher thread ------------------------------------------------------------------------------
    def _publish_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, payload, retain = item
            if payload == "discovery":
                payload = _dumps(discovery_config(self.config, self._model))
            self._publish(topic, payload, retain)

    def _publish(self, topic: str, payload: str, retain: bool) -> None:
        try:
            info = self._client.publish(topic, payload, qos=1, retain=retain)
        except Exception as exc:  # noqa: BLE001 - a client error is counted, never raised into the daemon
            self.dropped += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        if info.rc in (0, 4):  # success, or queued until the broker is back (MQTT_ERR_NO_CONN)
            self.published += 1
        else:
            self.dropped += 1

    # -- paho's network thread ------------------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self._down(f"refused by the broker ({reason})")
            return
        self.connected = True
        self.connects += 1
        was_down = self._down_since
        self._down_since = None
        base = self.config.base
        discovery = f"{self.config.discovery_prefix}/sensor/{self.config.device}/family/config"
        with contextlib.suppress(Exception):
            client.publish(discovery, _dumps(discovery_config(self.config, self._model)), qos=1, retain=True)
            client.publish(f"{base}/availability", "online", qos=1, retain=True)
            if self._state is not None:
                client.publish(f"{base}/state", self._state, qos=1, retain=True)
        record: dict[str, Any] = {"type": "mqtt_connected", "broker": self.config.broker, "device": self.config.device}
        if was_down is not None:
            record["down_seconds"] = round(self._clock() - was_down, 1)
        self._emit(record)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        self.connected = False
        if getattr(reason, "value", reason) == 0:  # our own disconnect at stop
            return
        self._down(f"connection lost ({reason})")

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        error = getattr(client, "last_connect_error", None)
        reason = f"{error.strerror or error}" if isinstance(error, OSError) else "connection failed"
        self._down(f"cannot connect ({reason})")

    def _down(self, reason: str) -> None:
        self.connected = False
        self.last_error = reason
        now = self._clock()
        first = self._down_since is None
        if first:
            self._down_since = now
        if first or now >= self._remind_at:
            self._remind_at = now + REMIND_SECONDS
            self._emit(
                {
                    "type": "mqtt_unavailable",
                    "broker": self.config.broker,
                    "error": reason,
                    "action": f"retrying with backoff (up to {self.config.reconnect_max_s} s); still classifying",
                }
            )

    def _emit(self, record: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            self.report(record)


def _make_client(config: MqttConfig) -> Any:
    """A paho client with the last will, credentials, TLS, backoff and queue bounds of `config`."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise MqttConfigError("--mqtt needs paho-mqtt: pip install 'instrument-ai[mqtt]'") from None

    class _Client(mqtt.Client):  # type: ignore[misc,name-defined,unused-ignore]
        """Remembers why the last connection attempt failed (paho's on_connect_fail does not say)."""

        last_connect_error: BaseException | None = None

        def reconnect(self) -> Any:
            try:
                return super().reconnect()
            except OSError as exc:
                self.last_connect_error = exc
                raise

    client = _Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"instrument-ai-{config.device}", clean_session=True)
    client.will_set(f"{config.base}/availability", "offline", qos=1, retain=True)
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.tls:
        try:
            client.tls_set(ca_certs=config.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise MqttConfigError(f"--mqtt-ca {config.ca_file}: cannot use it for TLS ({exc})") from None
    client.reconnect_delay_set(RECONNECT_MIN_S, config.reconnect_max_s)
    client.max_queued_messages_set(QUEUE_MESSAGES)
    return client

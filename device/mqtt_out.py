"""MQTT output: events, the retained current state, and Home Assistant discovery (paho-mqtt, extra `mqtt`).

Topics, for a device named D:

* ``instrument-ai/D/event`` - every label change (JSON, QoS 1, not retained);
* ``instrument-ai/D/state`` - the current state (retained): family, confidence, top_3, model_version...;
* ``instrument-ai/D/availability`` - ``online`` (retained), ``offline`` by the last will or at a clean stop;
* ``homeassistant/sensor/D/family/config`` - the discovery document of a sensor whose state is the family
  and whose attributes are confidence, top-3 and model version (retained).

The audio thread only appends to a bounded deque of events and replaces the
latest state; a publisher thread hands them to paho while it is connected,
and paho's own network thread (`loop_start`) connects and reconnects with
exponential backoff (`reconnect_delay_set`). While the broker is away
nothing is handed to paho: events wait in the deque (the oldest dropped
beyond `QUEUE_MESSAGES`, counted as `dropped`) and only the newest state is
kept, since a state is worth nothing once a newer one exists. On every
(re)connect the publisher sends the discovery document, ``online``
(retained), the waiting events, then the current state last; states paho
still held from before the outage are discarded, so the retained state
never goes back in time and a broker restarted without persistence is whole.
A broker that is down, refuses or drops the connection is reported on
stderr, once per outage (and every `REMIND_SECONDS`); the daemon goes on.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from instrument_ai.device.errors import ConfigurationError

TOPIC_ROOT = "instrument-ai"
QUEUE_MESSAGES = 1000
WINDOW_MESSAGES = 100
"""Messages handed to paho and not yet acknowledged, at most: more would fill paho's own queue, which refuses."""
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
        "personal": event.get("personal"),
    }


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


class MqttOut:
    """The MQTT publisher (see the module docstring). `start` returns at once; nothing here blocks the caller."""

    def __init__(self, config: MqttConfig, report: Report, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.report = report
        self._clock = clock
        self._events: deque[str] = deque(maxlen=QUEUE_MESSAGES)  # event payloads waiting, oldest first
        self._wake = threading.Event()
        self._closing = False
        self._resync = False  # set on (re)connect: discovery, online, events, state
        self._discovery_due = False
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._model: dict[str, Any] = {}
        self._state: str | None = None  # the newest retained state payload
        self._state_sent: str | None = None  # the state payload last handed to paho
        self._unacked: deque[Any] = deque()  # paho's MQTTMessageInfo of messages not yet acknowledged
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
        self._closing = True
        self._wake.set()
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
        self._discovery_due = True
        self._wake.set()

    def change(self, event: dict[str, Any]) -> None:
        self._offer(_dumps(event))
        self._state = _dumps(state_payload(event))  # replaces any state not yet sent: only the newest matters
        self._wake.set()

    def notice(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "swap":
            self._model = {**self._model, "name": data.get("new_name"), "version": data.get("new_version")}
            self._discovery_due = True
        self._offer(_dumps({"type": kind, **data}))
        self._wake.set()

    def _offer(self, payload: str) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1  # the deque drops its oldest event to take this one
        self._events.append(payload)

    def status(self) -> dict[str, Any]:
        return {
            "broker": self.config.broker,
            "device": self.config.device,
            "connected": self.connected,
            "connects": self.connects,
            "published": self.published,
            "dropped": self.dropped,
            "queued": len(self._events) + int(self._state is not None and self._state is not self._state_sent),
            "last_error": self.last_error,
        }

    # -- the publisher thread ------------------------------------------------------------------------------
    def _publish_loop(self) -> None:
        while True:
            self._wake.wait(1.0)
            self._wake.clear()
            if self.connected:
                self._publish_pending()
            if self._closing:
                return

    def _publish_pending(self) -> None:
        """Hand what waits to paho, in order: (discovery, online after a connect,) events, the newest state."""
        base = self.config.base
        resync, self._resync = self._resync, False
        if resync:
            self._unacked.clear()  # what paho held from before is resent by paho or was forgotten on purpose
            self._discovery_due = True
            self._state_sent = None  # the broker may have forgotten it: send the current state again
        if self._discovery_due:
            self._discovery_due = False
            self._publish(self._discovery_topic, _dumps(discovery_config(self.config, self._model)), True)
        if resync:
            self._publish(f"{base}/availability", "online", True)
        while self._events and self.connected:
            if not self._room():
                self._wake.set()  # the broker is slow to acknowledge: go on at the next pass
                return
            self._publish(f"{base}/event", self._events.popleft(), False)
        state = self._state
        if state is not None and state is not self._state_sent and self.connected:
            if not self._room():
                self._wake.set()
                return
            self._publish(f"{base}/state", state, True)
            self._state_sent = state

    def _room(self, wait_s: float = 0.5) -> bool:
        """Whether fewer than `WINDOW_MESSAGES` are unacknowledged (waiting up to `wait_s` for acknowledgements)."""
        deadline = self._clock() + wait_s
        while True:
            while self._unacked and _acknowledged(self._unacked[0]):
                self._unacked.popleft()
            if len(self._unacked) < WINDOW_MESSAGES:
                return True
            if self._clock() >= deadline or not self.connected:
                return False
            time.sleep(0.005)

    @property
    def _discovery_topic(self) -> str:
        return f"{self.config.discovery_prefix}/sensor/{self.config.device}/family/config"

    def _publish(self, topic: str, payload: str, retain: bool) -> None:
        try:
            info = self._client.publish(topic, payload, qos=1, retain=retain)
        except Exception as exc:  # noqa: BLE001 - a client error is counted, never raised into the daemon
            self.dropped += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        if info.rc in (0, 4):  # success, or queued until the broker is back (MQTT_ERR_NO_CONN)
            self.published += 1
            if info.rc == 0:
                self._unacked.append(info)
        else:
            self.dropped += 1

    # -- paho's network thread ------------------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self._down(f"refused by the broker ({reason})")
            return
        # paho resends what it still holds right after this callback: retained messages from before the
        # outage would land after the fresh ones and take the broker back in time, so they go now
        _forget_held(client, {self._discovery_topic, f"{self.config.base}/availability", f"{self.config.base}/state"})
        self._resync = True  # before `connected`: the publisher's next pass starts with discovery and online
        self.connected = True
        self.connects += 1
        was_down = self._down_since
        self._down_since = None
        self._wake.set()
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


def _acknowledged(info: Any) -> bool:
    try:
        return bool(info.is_published())
    except (RuntimeError, ValueError):  # never queued, or lost with its connection: nothing to wait for
        return True


def _forget_held(client: Any, topics: set[str]) -> None:
    """Drop the messages for `topics` that paho holds for resending (its queue has no public API for this)."""
    mutex = getattr(client, "_out_message_mutex", None)
    held: Any = getattr(client, "_out_messages", None)
    if mutex is None or not hasattr(held, "items"):
        return
    with contextlib.suppress(Exception), mutex:
        for mid, message in list(held.items()):
            if getattr(message, "topic", None) in topics:
                del held[mid]


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

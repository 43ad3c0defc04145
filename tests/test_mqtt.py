"""`run --mqtt` against a real mosquitto broker (apt) started on a free port by the test: Home Assistant
discovery, events, the retained state and availability; the broker is stopped mid-stream and restarted
(without persistence), and the daemon reconnects, publishes everything again and never loses a hop.
A refusing or unresolvable broker only costs a one-line report. No timed assertions."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import find_program
from livehelp import Daemon, demo_hops, free_port, get_json, shipped_version, wait_until

DEVICE = "testpi"
BASE = f"instrument-ai/{DEVICE}"
DISCOVERY = f"homeassistant/sensor/{DEVICE}/family/config"


class Broker:
    """mosquitto on 127.0.0.1:PORT with a temporary configuration (no persistence: a restart forgets all)."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.port = port
        self.config = tmp / "mosquitto.conf"
        self.config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = find_program("mosquitto")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self._accepts, 10, "mosquitto to listen")

    def _accepts(self) -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Subscriber:
    """A paho subscriber that records (topic, payload, retained, wall time) and resubscribes after reconnects."""

    def __init__(self, port: int, name: str) -> None:
        self.messages: list[tuple[str, str, bool, float]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe([(f"{BASE}/#", 1), (DISCOVERY, 1)])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain), time.time()))

    def on(self, topic: str) -> list[tuple[str, bool]]:
        with self.lock:
            return [(payload, retained) for t, payload, retained, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _connected(daemon: Daemon, url: str) -> bool:
    return bool(get_json(url + "status")["mqtt"][0]["connected"])


@pytest.mark.needs_apt("mosquitto")
def test_discovery_events_state_and_a_broker_restart_lose_no_hop(tmp_path: Path) -> None:
    port = free_port()
    broker = Broker(tmp_path, port)
    broker.start()
    watcher = Subscriber(port, "watcher")
    daemon = Daemon(
        ["--source", "demo", "--json", "--every-hop", "--http", "127.0.0.1:0"]
        + ["--mqtt", f"127.0.0.1:{port}", "--mqtt-device", DEVICE]
    )
    try:
        url = daemon.url
        assert daemon.start_record()["mqtt"] == {"broker": f"127.0.0.1:{port}", "device": DEVICE, "topic": BASE}
        wait_until(lambda: watcher.on(DISCOVERY) and len(watcher.on(f"{BASE}/event")) >= 2, 20, "discovery, events")
        config = json.loads(watcher.on(DISCOVERY)[-1][0])
        assert config["state_topic"] == f"{BASE}/state" and config["json_attributes_topic"] == f"{BASE}/state"
        assert config["availability_topic"] == f"{BASE}/availability" and config["payload_not_available"] == "offline"
        assert config["value_template"] == "{{ value_json.family }}" and "top_3" in config["json_attributes_template"]
        assert config["unique_id"] == f"instrument_ai_{DEVICE}_family"
        assert config["device"]["model"] == f"default {shipped_version()}"
        assert ("online", False) in watcher.on(f"{BASE}/availability")
        event = json.loads(watcher.on(f"{BASE}/event")[-1][0])
        assert event["type"] == "change" and event["model_version"] == shipped_version()
        state = json.loads(watcher.on(f"{BASE}/state")[-1][0])
        assert set(state) >= {"family", "confidence", "top_3", "model_version"}

        daemon.wait_for(lambda: len(daemon.hops()) >= 24, 30, "six seconds of demo")
        broker.stop()  # mid-stream
        down_at = len(daemon.hops())
        wait_until(lambda: not _connected(daemon, url), 15, "the daemon to notice the broker is gone")
        daemon.wait_for(lambda: len(daemon.hops()) >= down_at + 8, 15, "classification to go on while it is down")
        assert any('"mqtt_unavailable"' in line for line in daemon.stderr)
        broker.start()  # a new broker: no retained messages, no sessions
        wait_until(lambda: _connected(daemon, url), 40, "the daemon to reconnect")
        back_at = len(daemon.hops())
        fresh = Subscriber(port, "fresh")  # only retained messages reach a new subscriber at once
        wait_until(lambda: fresh.on(DISCOVERY) and fresh.on(f"{BASE}/state"), 15, "the retained messages again")
        assert fresh.on(DISCOVERY)[0][1] is True and fresh.on(f"{BASE}/state")[0][1] is True
        assert ("online", True) in fresh.on(f"{BASE}/availability")
        fresh.close()
        assert daemon.finish(timeout=60) == 0
        wait_until(lambda: ("offline", False) in watcher.on(f"{BASE}/availability"), 10, "offline at the stop")
        wait_until(
            lambda: any(json.loads(p).get("hop", -1) > back_at for p, _ in watcher.on(f"{BASE}/event")),
            10,
            "events after the restart",
        )
    finally:
        daemon.stop()
        watcher.close()
        broker.stop()
    hops = [r["hop"] for r in daemon.hops()]
    stop = daemon.records[-1]
    assert hops == list(range(demo_hops())) and stop["hops"] == demo_hops() and stop["reason"] == "end of source"
    reconnected = [json.loads(line) for line in daemon.stderr if '"mqtt_connected"' in line]
    assert len(reconnected) >= 2 and reconnected[-1]["down_seconds"] > 0
    status_lines = [line for line in daemon.stderr if '"mqtt_unavailable"' in line]
    assert len(status_lines) == 1  # once per outage: the refused retries while it was down add no line


@pytest.mark.parametrize(
    ("broker", "fragment"),
    [("127.0.0.1:{closed}", "Connection refused"), ("no-such-broker.invalid", "cannot connect")],
)
def test_a_refusing_or_unknown_broker_is_one_report_and_the_daemon_goes_on(broker: str, fragment: str) -> None:
    daemon = Daemon(["--source", "demo", "--json", "--duration", "2.5", "--mqtt", broker.format(closed=free_port())])
    try:
        assert daemon.finish(timeout=60) == 0
    finally:
        daemon.stop()
    assert daemon.records[-1]["hops"] == 10 and daemon.records[-1]["reason"] == "duration"
    reports = [json.loads(line) for line in daemon.stderr if line.startswith("{")]
    down = [r for r in reports if r["type"] == "mqtt_unavailable"]
    assert len(down) == 1 and fragment in down[0]["error"] and "still classifying" in down[0]["action"]
    assert not any("Traceback" in line for line in daemon.stderr)


def test_bad_mqtt_options_exit_2_with_one_line(tmp_path: Path) -> None:
    from livehelp import REPO

    cases = [
        (["--mqtt", "host:99999"], "port 99999 is not in 1-65535"),
        (["--mqtt", "a:b:c"], "give HOST or HOST:PORT"),
        (["--mqtt", "localhost", "--mqtt-password", "x"], "--mqtt-password needs --mqtt-user"),
        (["--mqtt-user", "me"], "applies only with --mqtt"),
        (["--mqtt", "localhost", "--mqtt-ca", str(tmp_path / "ca.pem")], "applies only with --mqtt-tls"),
        (["--mqtt", "localhost", "--mqtt-tls", "--mqtt-ca", str(tmp_path / "ca.pem")], "no such file"),
        (["--mqtt", "localhost", "--mqtt-user", "u", "--mqtt-password-file", str(tmp_path / "pw")], "no such file"),
    ]
    import sys

    for args, fragment in cases:
        result = subprocess.run(
            [sys.executable, "-c", "from instrument_ai.device.cli import main; main()", "run", "--source", "demo"]
            + ["--fast", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("instrument-ai run: ") and fragment in lines[0], lines


@pytest.mark.needs_apt("mosquitto", "mosquitto_passwd", "openssl")
def test_tls_and_a_password_and_a_broker_that_refuses_the_login(tmp_path: Path) -> None:
    """A TLS listener with a self-signed certificate and a password file: the right login connects, a wrong
    one is refused by the broker - one report, and the daemon classifies on."""
    import os

    cert, key, passwords = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "passwords"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )
    subprocess.run([find_program("mosquitto_passwd"), "-b", "-c", str(passwords), "pi", "s3cret"], check=True)
    port = free_port()
    broker = Broker(tmp_path, port)
    broker.config.write_text(
        f"listener {port} 127.0.0.1\ncafile {cert}\ncertfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {passwords}\npersistence false\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    broker.start()
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("s3cret\n")
    password_file.chmod(0o600)
    common = ["--source", "demo", "--json", "--duration", "2.5", "--mqtt", f"127.0.0.1:{port}", "--mqtt-tls"]
    common += ["--mqtt-ca", str(cert), "--mqtt-user", "pi", "--mqtt-device", DEVICE]
    try:
        good = Daemon([*common, "--mqtt-password-file", str(password_file)])
        bad = Daemon([*common, "--mqtt-password", "wrong"])
        assert good.finish(timeout=60) == 0 and bad.finish(timeout=60) == 0
    finally:
        broker.stop()
    assert good.records[-1]["hops"] == 10 and bad.records[-1]["hops"] == 10
    good_reports = [json.loads(line)["type"] for line in good.stderr if line.startswith("{")]
    assert good_reports == ["mqtt_connected"], good.stderr
    refused = [json.loads(line) for line in bad.stderr if line.startswith("{")]
    assert [r["type"] for r in refused] == ["mqtt_unavailable"], bad.stderr
    assert "refused by the broker" in refused[0]["error"] and "still classifying" in refused[0]["action"]


def _change(hop: int) -> dict[str, Any]:
    return {
        "type": "change",
        "label": ("strings", "brass")[hop % 2],
        "confidence": 0.9,
        "top_k": [{"label": "strings", "p": 0.9}],
        "model_version": "1",
        "hop": hop,
        "time": hop * 0.25,
    }


@pytest.mark.needs_apt("mosquitto")
def test_an_outage_with_a_thousand_changes_ends_with_online_and_the_newest_state(tmp_path: Path) -> None:
    """Issue 21, defect 3: after a broker outage with many queued changes the broker holds `online` (retained)
    and the newest state, which is published after discovery and availability; stale states are never replayed
    and events beyond the bound are dropped oldest first, counted in /metrics."""
    from instrument_ai.device.live_state import LiveState
    from instrument_ai.device.metrics import render
    from instrument_ai.device.mqtt_out import QUEUE_MESSAGES, MqttConfig, MqttOut

    port = free_port()
    broker = Broker(tmp_path, port)
    broker.start()
    out = MqttOut(MqttConfig("127.0.0.1", port, device=DEVICE, reconnect_max_s=1), lambda record: None)
    out.start()
    try:
        out.start_info({"model": {"name": "m", "version": "1"}})
        wait_until(lambda: out.connected, 15, "the first connection")
        out.change(_change(0))
        wait_until(lambda: out.status()["queued"] == 0, 10, "the first state to go out")
        broker.stop()
        wait_until(lambda: not out.connected, 15, "the publisher to notice the outage")
        last = 1500
        for hop in range(1, last + 1):
            out.change(_change(hop))
        broker.start()
        early = Subscriber(port, "early")  # subscribed before the publisher is back: sees the order
        wait_until(lambda: out.connected, 30, "the reconnect")
        wait_until(lambda: early.on(f"{BASE}/state"), 15, "a state after the reconnect")
        time.sleep(1.5)  # anything stale replayed late would arrive (and overwrite the retained state) now
        fresh = Subscriber(port, "fresh")  # only retained messages reach it
        wait_until(
            lambda: fresh.on(DISCOVERY) and fresh.on(f"{BASE}/state") and fresh.on(f"{BASE}/availability"),
            15,
            "the retained messages",
        )
        assert fresh.on(f"{BASE}/availability") == [("online", True)]
        assert [json.loads(p)["hop"] for p, _ in fresh.on(f"{BASE}/state")] == [last]
        states = [json.loads(p)["hop"] for p, _ in early.on(f"{BASE}/state")]
        assert states[-1] == last and states.count(last) == 1 and all(h == last for h in states), states
        with early.lock:  # what reached it live (not as retained messages on subscribing), in order
            live = [t for t, _, retained, _ in early.messages if not retained]
        order = [t for t in live if t in (DISCOVERY, f"{BASE}/availability", f"{BASE}/state")]
        if DISCOVERY in order:  # subscribed before the reconnect: discovery, online, then the state
            assert order == [DISCOVERY, f"{BASE}/availability", f"{BASE}/state"], order
        events = [json.loads(p)["hop"] for p, _ in early.on(f"{BASE}/event")]
        assert events == sorted(events) and (not events or events[-1] == last)
        dropped = out.status()["dropped"]
        assert dropped == last - QUEUE_MESSAGES, dropped  # the oldest events of the outage
        state = LiveState()
        state.publishers.append(out)
        assert f'instrument_ai_mqtt_dropped_total{{broker="127.0.0.1:{port}"}} {dropped}' in render(state)
        early.close()
        fresh.close()
    finally:
        out.close()
        broker.stop()

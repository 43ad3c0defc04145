"""`run --http`: the page, /status, /healthz, /metrics and /events of a real daemon playing the demo (or reading
stdin), tokens beyond loopback, the client limit, a stuck client, garbage and hundreds of connections, and
one-line errors for bad options. Real processes and sockets throughout; no timed assertions."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from livehelp import REPO, Daemon, SseReader, demo_hops, get, get_json, wait_until
from prometheus_client.parser import text_string_to_metric_families

from instrument_ai.device.event_hub import EventHub, TooManyClients


def test_hub_drops_a_full_client_and_never_blocks() -> None:
    hub = EventHub(max_clients=2, queue_size=4)
    stuck = hub.connect(every_hop=True)
    changes_only = hub.connect(every_hop=False)
    with pytest.raises(TooManyClients, match="at most 2"):
        hub.connect(every_hop=True)
    for i in range(10):  # nobody reads: the stuck client is dropped once its 4 slots are full
        hub.publish(f"hop {i}".encode(), changed=i % 5 == 0)
    assert stuck.dropped == "fell behind" and stuck.queue.qsize() == 4
    assert changes_only.dropped is None and [changes_only.queue.get_nowait() for _ in range(2)] == [b"hop 0", b"hop 5"]
    hub.disconnect(stuck)
    assert hub.clients == 1 and hub.dropped_clients == 1
    hub.connect(every_hop=True)  # a slot is free again


def _metrics(url: str, token: str | None = None) -> dict[str, list]:
    code, headers, body = get(url + "metrics", token=token)
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(body.decode())}


def test_status_health_metrics_and_streams_while_the_demo_plays() -> None:
    daemon = Daemon(
        [
            "--source",
            "demo",
            "--json",
            "--every-hop",
            "--duration",
            "7",
            "--http",
            "127.0.0.1:0",
            "--http-max-clients",
            "2",
        ]
    )
    try:
        url = daemon.url
        assert url.startswith("http://127.0.0.1:")
        reader = SseReader(url).start()
        stuck = SseReader(url, recv_buffer=4096)  # asks for every hop and never reads a byte
        wait_until(lambda: get_json(url + "status")["http"]["clients"] == 2, 10, "two live clients")
        third = SseReader(url).start()  # over --http-max-clients 2
        assert third.closed.wait(10) and third.status == 503
        daemon.wait_for(lambda: len(daemon.hops()) >= 8, 20, "eight hops")

        code, headers, page = get(url)
        assert code == 200 and headers["Content-Type"].startswith("text/html")
        assert b'id="family"' in page and b'id="timeline"' in page and b"EventSource" in page
        assert b"http://" not in page and b"https://" not in page  # no external assets
        status = get_json(url + "status")
        assert (
            status["model"]["name"] == "default"
            and status["model"]["version"] == daemon.start_record()["model_version"]
        )
        assert status["hops"] >= 8 and sum(status["families"].values()) == status["hops"]
        assert status["dropped"] == 0 and status["reloads"] == 0 and status["last_error"] is None
        assert status["hop_cost"]["median_ms"] > 0 and status["http"]["refused_clients"] == 1
        code, _, body = get(url + "healthz")
        assert code == 200 and json.loads(body)["ok"] is True
        metrics = _metrics(url)
        hops = metrics["instrument_ai_hops"][0].value
        families = {s.labels["family"]: s.value for s in metrics["instrument_ai_family_hops"]}
        assert hops >= 8 and sum(families.values()) == hops and families["silence"] >= 1
        info = metrics["instrument_ai_model_info"][0]
        assert info.labels["version"] == status["model"]["version"] and info.value == 1
        buckets = [s for s in metrics["instrument_ai_hop_cost_seconds"] if s.name.endswith("_bucket")]
        assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value >= hops - 1
        assert metrics["instrument_ai_dropped_blocks"][0].value == 0
        assert metrics["instrument_ai_microphone_reconnects"][0].value == 0
        later = get_json(url + "status")["hops"]
        daemon.wait_for(lambda: get_json(url + "status")["hops"] > later, 10, "hops to go on")
        code, _, _ = get(url + "nothing-here")
        assert code == 404
        assert daemon.finish() == 0
    finally:
        daemon.stop()
    assert reader.closed.wait(10)
    stop = daemon.records[-1]
    assert stop["type"] == "stop" and stop["hops"] == 28 and stop["loop_median_ms"] > 0
    # the reading client saw the hello, then every hop from where it joined, in order, despite the stuck one
    assert reader.status == 200 and reader.messages[0]["type"] == "hello"
    assert reader.messages[0]["model"]["name"] == "default"
    streamed = [m["hop"] for m in reader.messages[1:] if m["type"] in ("hop", "change")]
    assert streamed and streamed == list(range(streamed[0], 28))
    by_hop = {r["hop"]: r for r in daemon.hops()}
    assert all(by_hop[m["hop"]]["label"] == m["label"] for m in reader.messages[1:] if "hop" in m)
    stuck.close()


def test_healthz_turns_503_when_the_input_stalls_and_200_when_it_resumes() -> None:
    daemon = Daemon(
        ["--source", "-", "--samplerate", "16000", "--json", "--http", "127.0.0.1:0", "--http-stall-seconds", "0.8"],
        stdin=subprocess.PIPE,
    )
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype("<i2").tobytes()
    try:
        url = daemon.url
        assert daemon.process.stdin is not None
        daemon.process.stdin.write(tone)
        daemon.process.stdin.flush()
        wait_until(lambda: get(url + "healthz")[0] == 200, 10, "healthy")
        code, _, body = wait_until(lambda: (r := get(url + "healthz"))[0] == 503 and r, 10, "stalled")
        answer = json.loads(body)
        assert answer["ok"] is False and "stalled" in answer["error"] and answer["last_hop_age_s"] >= 0.8
        assert get_json(url + "status")["last_hop_age_s"] >= 0.8
        daemon.process.stdin.write(tone)
        daemon.process.stdin.flush()
        wait_until(lambda: get(url + "healthz")[0] == 200, 10, "healthy again")
        daemon.process.stdin.close()
        assert daemon.finish() == 0
    finally:
        daemon.stop()
    assert daemon.records[-1]["hops"] == 8


def _token_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / f"token-{mode:o}"
    path.write_text("s3cret-token-of-32-characters-ok\n")
    path.chmod(mode)
    return path


def test_a_token_is_required_beyond_loopback(tmp_path: Path) -> None:
    token_file = _token_file(tmp_path, 0o600)
    daemon = Daemon(
        ["--source", "demo", "--json", "--duration", "3", "--http", "0.0.0.0:0", "--http-token-file", str(token_file)]
    )
    try:
        url = daemon.url.replace("0.0.0.0", "127.0.0.1")
        assert daemon.start_record()["http_token"] is True
        for path in ("", "status", "healthz", "metrics", "events"):
            assert get(url + path)[0] == 401, path
            assert get(url + path, token="wrong")[0] == 401, path
            assert get(url + path + "?token=wrong")[0] == 401, path
        code, headers, _ = get(url + "status")
        assert headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert get(url + "status", token="s3cret-token-of-32-characters-ok")[0] == 200
        assert get(url + "?token=s3cret-token-of-32-characters-ok")[0] == 200
        assert get_json(url + "status?token=s3cret-token-of-32-characters-ok")["http"]["unauthorized"] == 16
        assert daemon.finish() == 0
    finally:
        daemon.stop()
    assert not any("warning" in line for line in daemon.stderr)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PULSE_SERVER": "unix:/nonexistent/native"}
    code = "from instrument_ai.device.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "run", *args], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )


def test_bad_http_options_are_one_line_and_exit_2(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    demo = ["--source", "demo", "--fast"]
    cases = [
        ([f"127.0.0.1:{port}"], f"port {port} is already in use"),
        (["no-such-host.invalid:8080"], "cannot resolve host"),
        (["localhost:99999"], "not in 0-65535"),
        (["what?"], "give HOST:PORT or a PORT"),
        (["0.0.0.0:8080"], "reachable from the network; give --http-token-file"),
        (["0.0.0.0:8080", "--http-token-file", str(tmp_path / "missing")], "--http-token-file"),
        (["127.0.0.1:0", "--http-token", "x", "--http-open"], "not both"),
    ]
    try:
        for http_args, fragment in cases:
            result = _run([*demo, "--http", *http_args])
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2, (http_args, result.stderr)
            assert len(lines) == 1 and lines[0].startswith("instrument-ai run: ") and fragment in lines[0], lines
    finally:
        busy.close()
    result = _run([*demo, "--http-token", "x"])
    assert result.returncode == 2 and "applies only with --http" in result.stderr
    assert "no such file" in _run([*demo, "--http", "0.0.0.0:0", "--http-token-file", str(tmp_path / "none")]).stderr


def test_a_world_readable_token_file_is_a_warning(tmp_path: Path) -> None:
    token_file = _token_file(tmp_path, 0o644)
    result = _run(["--source", "demo", "--fast", "--json", "--http", "0.0.0.0:0", "--http-token-file", str(token_file)])
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "readable by every user" in warnings[0] and "chmod 600" in warnings[0]
    assert json.loads(result.stdout.splitlines()[-1])["hops"] == demo_hops()


def test_garbage_and_hundreds_of_connections_do_not_stop_the_daemon() -> None:
    daemon = Daemon(["--source", "demo", "--json", "--every-hop", "--duration", "6", "--http", "127.0.0.1:0"])
    try:
        url = daemon.url
        host, port = "127.0.0.1", int(url.rstrip("/").rsplit(":", 1)[1])
        answers = []
        for garbage in (
            b"\x00\xff\xfe garbage here\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
            b"POST /status HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"DELETE / HTTP/1.1\r\n\r\n",
        ):
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.sendall(garbage)
                answers.append(sock.recv(200).split(b" ", 2)[1])
        with socket.create_connection((host, port), timeout=10) as sock:  # two words, not GET
            sock.sendall(b"\x01\x02 \x03\r\n\r\n")
            assert sock.recv(4000).startswith(b"HTTP/1.1 400 ")
        assert answers[:2] == [b"400", b"505"] and answers[2] in (b"414", b"400")
        assert answers[3] == b"431" and answers[4:] == [b"405", b"405"]
        crowd = []
        for _ in range(300):  # idle connections: the server keeps a bounded number, closes the rest
            sock = socket.socket()
            sock.settimeout(5)
            try:
                sock.connect((host, port))
            except OSError:
                sock.close()
                continue
            crowd.append(sock)
        before = len(daemon.hops())
        daemon.wait_for(lambda: len(daemon.hops()) >= before + 4, 20, "hops during the crowd")
        for sock in crowd:
            sock.close()
        status = wait_until(lambda: get(url + "status")[0] == 200 and get_json(url + "status"), 20, "status")
        assert status["http"]["refused_connections"] > 0 and status["hops"] > before
        assert daemon.finish() == 0
    finally:
        daemon.stop()
    hops = [r["hop"] for r in daemon.hops()]
    assert hops == list(range(24)) and daemon.records[-1]["reason"] == "duration"
    assert not any("Traceback" in line for line in daemon.stderr)


def test_the_page_is_served_from_the_package() -> None:
    from importlib import resources

    page = resources.files("instrument_ai.device.assets").joinpath("page.html").read_text()
    assert '<meta name="viewport"' in page and "<script src" not in page and "<link" not in page


def test_service_install_turns_the_page_and_mqtt_on() -> None:
    from click.testing import CliRunner

    from instrument_ai.device.cli import cli

    args = ["service", "install", "--print", "--executable", "/opt/ia/bin/instrument-ai", "--http", "0.0.0.0:8080"]
    result = CliRunner().invoke(cli, [*args, "--http-token-file", "/etc/instrument-ai/http-token", "--mqtt", "ha.lan"])
    assert result.exit_code == 0, result.output
    exec_start = next(line for line in result.output.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith("--http 0.0.0.0:8080 --http-token-file /etc/instrument-ai/http-token --mqtt ha.lan")
    refused = CliRunner().invoke(cli, ["service", "install", "--print", "--http-token-file", "/etc/t"])
    assert refused.exit_code == 2 and "applies only with --http" in refused.output


def test_a_stuck_client_is_dropped_and_a_reader_gets_every_hop() -> None:
    """200 s of audio on stdin as fast as the daemon goes: the client that never reads falls behind (its queue
    of 256 and a small socket buffer hold far fewer than 800 hops) and is dropped; the one that reads gets
    every hop; the daemon decides all 800 hops."""
    daemon = Daemon(
        ["--source", "-", "--samplerate", "16000", "--json", "--http", "127.0.0.1:0"], stdin=subprocess.PIPE
    )
    try:
        url = daemon.url
        stuck = SseReader(url, recv_buffer=2048)  # never read
        reader = SseReader(url).start()
        wait_until(lambda: get_json(url + "status")["http"]["clients"] == 2, 10, "two live clients")
        tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(16000 * 200) / 16000)).astype("<i2")
        assert daemon.process.stdin is not None
        daemon.process.stdin.write(tone.tobytes())
        daemon.process.stdin.flush()
        status = wait_until(lambda: (s := get_json(url + "status"))["hops"] == 800 and s, 60, "800 hops")
        assert status["http"]["dropped_clients"] == 1
        daemon.process.stdin.close()
        assert daemon.finish() == 0
    finally:
        daemon.stop()
    stuck.close()
    assert reader.closed.wait(10)
    streamed = [m["hop"] for m in reader.messages if m["type"] in ("hop", "change")]
    assert streamed == list(range(800)) and daemon.records[-1]["hops"] == 800

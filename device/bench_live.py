"""`instrument-ai bench live`: what the live page, two SSE clients and MQTT cost the daemon per hop, and its RSS.

Two configurations of the same `instrument-ai run --source - --json` process, run alternately:

* **plain** - no live outputs;
* **live** - `--http` with the page fetched once and two `/events?every_hop=1` clients, one reading and
  one that never reads a byte (a small receive buffer: it falls behind and is dropped), plus `--mqtt` to a
  broker (`--mqtt HOST:PORT`, else a mosquitto started on a free port, else a refusing port).

The clients connect before the first sample: the bench feeds the demo clip (repeated `--loops` times) on
stdin only once they are there. The figure is the daemon's own main-loop time per hop (engine and every
output, `loop_*` of its stop record), printed side by side with the ratio, and the peak RSS of each run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.bench_runtime import _PROBE, HEAVY_MODULES, _demo_audio, _table

RSS_TARGET_MB = 150.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _broker(given: str | None) -> Iterator[tuple[str, str]]:
    """(HOST:PORT, what it is): the given broker, a private mosquitto, or a port that refuses."""
    if given:
        yield given, "given broker"
        return
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if binary is None:
        yield f"127.0.0.1:{_free_port()}", "no broker (mosquitto not installed): a refusing port"
        return
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                time.sleep(0.05)
            yield f"127.0.0.1:{port}", "mosquitto on 127.0.0.1"
        finally:
            process.terminate()
            process.wait(timeout=10)


class _Sse:
    """An /events client on a raw socket; `read=False` never reads (and asks for a tiny receive buffer)."""

    def __init__(self, host: str, port: int, *, read: bool) -> None:
        self.sock = socket.socket()
        if not read:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        self.sock.connect((host, port))
        self.sock.sendall(f"GET /events?every_hop=1 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        self.received = 0
        if read:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(65536):
                self.received += chunk.count(b"\n\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _pcm(loops: int) -> tuple[bytes, int]:
    audio, rate, _ = _demo_audio()
    pcm = (np.clip(np.tile(audio, loops), -1, 1) * 32767).astype("<i2").tobytes()
    return pcm, rate


def run_once(model: Path | None, pcm: bytes, rate: int, live: str | None, realtime: bool) -> dict[str, Any]:
    """One daemon on stdin; `live` is the broker for the live configuration (None: plain)."""
    args = ["run", "--source", "-", "--samplerate", str(rate), "--json"]
    if model is not None:
        args += ["--model", str(model)]
    if live is not None:
        args += ["--http", "127.0.0.1:0", "--mqtt", live, "--mqtt-device", "bench"]
    env = {**os.environ, "PULSE_SERVER": "unix:/nonexistent/native"}
    process = subprocess.Popen(
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY_MODULES), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stderr: list[bytes] = []
    threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True).start()  # type: ignore[arg-type]
    start = json.loads(process.stdout.readline() or b"{}")
    clients: list[_Sse] = []
    result: dict[str, Any] = {"config": "live" if live else "plain"}
    if live is not None and "http" in start:
        host, port = start["http"].split("//")[1].rstrip("/").rsplit(":", 1)
        with urllib.request.urlopen(start["http"], timeout=10) as page:
            result["page_bytes"] = len(page.read())
        clients = [_Sse(host, int(port), read=True), _Sse(host, int(port), read=False)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with urllib.request.urlopen(start["http"] + "status", timeout=10) as answer:
                if json.loads(answer.read())["http"]["clients"] == 2:
                    break
            time.sleep(0.05)
    step = rate // 20 * 2  # 50 ms of 16-bit samples
    try:
        for offset in range(0, len(pcm), step):
            process.stdin.write(pcm[offset : offset + step])
            if realtime:
                time.sleep(0.05)
        if clients:  # once every hop is decided: was the stuck client dropped?
            expected = len(pcm) // 2 // rate * 4 - 1
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with urllib.request.urlopen(start["http"] + "status", timeout=10) as answer:
                    status = json.loads(answer.read())
                if status["hops"] >= expected:
                    break
                time.sleep(0.05)
            result["dropped_clients"] = status["http"]["dropped_clients"]
        process.stdin.close()
    except BrokenPipeError:
        pass
    lines = process.stdout.read().decode().splitlines()
    process.wait(timeout=300)
    for client in clients:
        client.close()
    time.sleep(0.1)
    records = [json.loads(line) for line in lines if line.startswith("{")]
    probe: dict[str, Any] = next(
        (json.loads(s[6:]) for s in (x.decode() for x in stderr) if s.startswith("PROBE=")), {}
    )
    stop = next((r for r in reversed(records) if r.get("type") == "stop"), None)
    if process.returncode != 0 or stop is None:
        tail = b" ".join(stderr[-3:]).decode(errors="replace")[:300]
        return {**result, "error": f"exit {process.returncode}: {tail}"}
    result.update(
        hops=stop["hops"],
        loop_median_ms=stop["loop_median_ms"],
        loop_p99_ms=stop["loop_p99_ms"],
        loop_mean_ms=stop["loop_mean_ms"],
        engine_median_ms=stop["median_ms"],
        peak_rss_mb=probe.get("peak_rss_kb", 0) / 1024.0,
        final_rss_mb=stop.get("rss_mb"),
    )
    if clients:
        result["reader_messages"] = clients[0].received
    return result


def run_live_benchmark(
    model: Path | None, *, runs: int = 2, loops: int = 8, broker: str | None = None, realtime: bool = False
) -> dict[str, Any]:
    """Alternate plain and live runs; the figure of each configuration is the median over its runs."""
    pcm, rate = _pcm(loops)
    report: dict[str, Any] = {
        "benchmark": "live",
        "audio_seconds": round(len(pcm) / 2 / rate, 2),
        "realtime": realtime,
        "runs": runs,
        "rss_target_mb": RSS_TARGET_MB,
    }
    results: dict[str, list[dict[str, Any]]] = {"plain": [], "live": []}
    with _broker(broker) as (address, what):
        report["broker"] = {"address": address, "kind": what}
        for _ in range(runs):
            results["plain"].append(run_once(model, pcm, rate, None, realtime))
            results["live"].append(run_once(model, pcm, rate, address, realtime))
    for name, entries in results.items():
        good = [e for e in entries if "error" not in e]
        if not good:
            report[name] = entries[0]
            continue
        good.sort(key=lambda e: e["loop_median_ms"])
        chosen = dict(good[len(good) // 2])
        chosen["peak_rss_mb"] = max(e["peak_rss_mb"] for e in good)
        report[name] = chosen
    plain, live = report["plain"], report["live"]
    if "error" not in plain and "error" not in live:
        report["ratio_median"] = live["loop_median_ms"] / plain["loop_median_ms"]
        report["ratio_p99"] = live["loop_p99_ms"] / plain["loop_p99_ms"]
        report["rss_met"] = live["peak_rss_mb"] < RSS_TARGET_MB
    return report


def format_live_report(report: dict[str, Any]) -> str:
    lines = [
        f"live outputs benchmark: {report['audio_seconds']} s of demo on stdin "
        f"({'real time' if report['realtime'] else 'as fast as possible'}), {report['runs']} run(s) each; "
        f"MQTT: {report['broker']['kind']} ({report['broker']['address']})"
    ]
    rows: list[tuple[str, ...]]  # the tables have different widths
    rows = [("per hop (main loop, all outputs)", "hops", "median", "p99", "mean", "engine median", "peak RSS")]
    for name, label in (("plain", "plain run"), ("live", "page + 2 SSE (1 stuck) + MQTT")):
        e = report[name]
        if "error" in e:
            rows.append((label, "failed", "", "", "", "", e["error"][:40]))
            continue
        rows.append(
            (
                label,
                str(e["hops"]),
                f"{e['loop_median_ms']:.3f} ms",
                f"{e['loop_p99_ms']:.3f} ms",
                f"{e['loop_mean_ms']:.3f} ms",
                f"{e['engine_median_ms']:.3f} ms",
                f"{e['peak_rss_mb']:.0f} MB",
            )
        )
    lines += _table(rows)
    if "ratio_median" in report:
        live = report["live"]
        lines.append(
            f"ratio live / plain: median {report['ratio_median']:.2f}x, p99 {report['ratio_p99']:.2f}x; "
            f"the reading client got {live.get('reader_messages', 0)} messages, "
            f"clients dropped for falling behind: {live.get('dropped_clients', '?')}"
        )
        lines.append(
            f"target RSS with page + SSE + MQTT: {live['peak_rss_mb']:.0f} MB (need < {RSS_TARGET_MB:g}) "
            f"{'met' if report['rss_met'] else 'MISSED'}"
        )
    return "\n".join(lines)
